import NIOSSL

/// The TLS policy of both listeners: TLS 1.2 and above, forward-secret AEAD suites only.
enum TLSPolicy {
    /// The server configuration for `tls`: TLS 1.2 and 1.3 only; on 1.2, forward-secret key exchange
    /// (ECDHE) with AEAD ciphers only (no RSA key exchange, no CBC; TLS 1.3's suites are all of that kind).
    /// With `clientCA`, mutual TLS: a client without a certificate signed by those CAs does not get
    /// through the handshake. `protocols` are the ALPN names offered (empty: left to the channel).
    static func configuration(_ tls: (certificateChain: String, privateKey: String), clientCA: String?, protocols: [String]) throws
        -> TLSConfiguration {
        let certificates = try NIOSSLCertificate.fromPEMFile(tls.certificateChain).map { NIOSSLCertificateSource.certificate($0) }
        let key = try NIOSSLPrivateKey(file: tls.privateKey, format: .pem)
        var configuration = TLSConfiguration.makeServerConfiguration(certificateChain: certificates, privateKey: .privateKey(key))
        configuration.minimumTLSVersion = .tlsv12
        configuration.cipherSuiteValues = cipherSuites
        if !protocols.isEmpty { configuration.applicationProtocols = protocols }
        if let clientCA {
            configuration.certificateVerification = .noHostnameVerification
            configuration.trustRoots = .file(clientCA)
        }
        return configuration
    }

    static let cipherSuites: [NIOTLSCipher] = [
        .TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, .TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        .TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, .TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        .TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, .TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ]
}
