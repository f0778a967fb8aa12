import GRPCCore
import LockstepH2
import NIOCore
import NIOSSL
import LockstepService

/// The identity of a client that presented a certificate under mutual TLS: the hex SHA-256 of the
/// certificate's DER, which the authorization config names (`client_certificate_sha256`).
package enum ClientIdentity {
    /// On the JSON side: the certificate the TLS handshake of `channel`'s connection verified (an
    /// HTTP/2 stream asks its parent connection), or nil.
    package static func fingerprint(of channel: any Channel) async -> String? {
        for candidate in [channel, channel.parent].compactMap({ $0 }) {
            if let certificate = try? await candidate.nioSSL_peerCertificate().get(), let der = try? certificate.toDERBytes() {
                return AuthConfig.hash(bytes: der)
            }
        }
        return nil
    }

    /// The same, read on `connection`'s event loop (where the HTTP/2 engine serves its requests) from its
    /// TLS handler, without a hop; nil off that loop, without TLS, or with no certificate.
    package static func fingerprintOnLoop(of connection: any Channel) -> String? {
        guard connection.eventLoop.inEventLoop, let certificate = try? connection.pipeline.syncOperations.nioSSL_peerCertificate(),
              let der = try? certificate.toDERBytes() else { return nil }
        return AuthConfig.hash(bytes: der)
    }

    /// On gRPC: the certificate the TLS handshake of the RPC's connection verified, or nil.
    package static func fingerprint(of context: ServerContext) async -> String? {
        guard let transport = context.transportSpecific as? H2GRPCServerTransport.Context, transport.tls else { return nil }
        // Read on the event loop as the RPC was accepted (`Configuration.clientIdentity`): no hop.
        if case .read(let fingerprint) = transport.clientIdentity { return fingerprint }
        return await fingerprint(of: transport.channel)
    }
}
