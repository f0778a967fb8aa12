import Foundation
import LockstepServer
import LockstepTestSupport
import Testing
import LockstepService

/// Both listeners over TLS with a certificate made for the test: the JSON side answers HTTP/1.1 and
/// h2 (chosen by ALPN), gRPC answers a client that trusts only that certificate, and plaintext is refused.
@Suite(.serialized, .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/openssl") && pythonHasGRPC,
                             "needs openssl and grpcio (ops/test installs them)"))
struct TLSTests {
    @Test func bothListenersSpeakTLSAndTheJSONSideNegotiatesH2ByALPN() async throws {
        let directory = temporaryDirectory()
        let made = try await ChildProcess("/usr/bin/openssl", [
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", directory + "/key.pem", "-out", directory + "/cert.pem",
            "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
        ]).wait(seconds: 60)
        #expect(made.status == 0, "\(made.stderr)")
        let server = try await ServerProcess(["--dev", "--tls-cert", directory + "/cert.pem", "--tls-key", directory + "/key.pem"])
        #expect(server.url.hasPrefix("https://127.0.0.1:"), "\(server.url)")
        for (flag, version) in [("--http1.1", "1.1"), ("--http2", "2")] {
            let output = try await ChildProcess("/usr/bin/curl", ["-sS", flag, "--cacert", directory + "/cert.pem", "-w", " %{http_version}",
                                                                  server.url + "/healthz"]).wait(seconds: 30).stdout
            #expect(output == "ok\n \(version)", "\(flag): \(output)")
        }
        let plaintext = try await ChildProcess("/usr/bin/curl", ["-sS", "-w", "%{http_code}", server.url.replacingOccurrences(of: "https://", with: "http://")
                                                                 + "/healthz"]).wait(seconds: 30)
        #expect(!plaintext.stdout.hasPrefix("ok"), "plaintext must not be answered: \(plaintext.stdout)")
        let probe = try await ChildProcess("/usr/bin/env", [
            "python3", GRPCTests.testsDirectory.appendingPathComponent("Agents/grpc-tls-probe.py").path, GRPCTests.protos, server.grpc,
            directory + "/cert.pem",
        ]).wait(seconds: 120)
        #expect(probe.stdout == "tls poll retry_after_ms=1000\n", "\(probe.stdout)\n\(probe.stderr)")
        _ = try await server.stop()
    }

    /// Regression (issue 14): the JSON listener accepted TLS 1.0 and 1.1, RSA key exchange and CBC-SHA1
    /// suites, and the gRPC listener RSA key exchange and CBC. Now TLS 1.2+ with ECDHE and AEAD only on both.
    @Test func onlyModernTLSIsAccepted() async throws {
        let directory = temporaryDirectory()
        try await openssl(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", directory + "/key.pem", "-out", directory + "/cert.pem",
                           "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"])
        let server = try await ServerProcess(["--dev", "--tls-cert", directory + "/cert.pem", "--tls-key", directory + "/key.pem"])
        let json = String(server.url.dropFirst("https://".count))
        func handshake(_ address: String, _ arguments: [String]) async throws -> Bool {
            try await ChildProcess("/usr/bin/openssl", ["s_client", "-connect", address] + arguments).wait(seconds: 30).status == 0
        }
        let old = [["-tls1", "-cipher", "DEFAULT@SECLEVEL=0"], ["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"]]
        let weak = [["-tls1_2", "-cipher", "AES128-SHA"], ["-tls1_2", "-cipher", "AES128-GCM-SHA256"], ["-tls1_2", "-cipher", "ECDHE-RSA-AES128-SHA"]]
        let strong = [["-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256"], ["-tls1_2", "-cipher", "ECDHE-RSA-CHACHA20-POLY1305"], ["-tls1_3"]]
        for arguments in old + weak { #expect(try await !handshake(json, arguments), "JSON listener accepted \(arguments)") }
        for arguments in strong { #expect(try await handshake(json, arguments), "JSON listener refused \(arguments)") }
        for arguments in old + weak { #expect(try await !handshake(server.grpc, arguments), "gRPC listener accepted \(arguments)") }
        for arguments in strong { #expect(try await handshake(server.grpc, arguments + ["-alpn", "h2"]), "gRPC listener refused \(arguments)") }
        _ = try await server.stop()
    }

    /// The reset budget per address holds over TLS too (h2 by ALPN): a client resetting streams and
    /// reconnecting is cut off, refused for the rest of the window, admitted after it; and HTTP/1.1 over
    /// the same listener is unaffected (its connections carry the same per-stream handlers).
    @Test(.enabled(if: pythonHas("h2"), "needs python3 with h2 (ops/test installs it)"))
    func rapidResetOverTLSIsCutOffPerAddress() async throws {
        let directory = temporaryDirectory()
        try await openssl(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", directory + "/key.pem", "-out", directory + "/cert.pem",
                           "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"])
        let server = try await ServerProcess(["--dev", "--tls-cert", directory + "/cert.pem", "--tls-key", directory + "/key.pem",
                                              "--stream-resets-per-peer-max", "300"])
        let http1 = try await ChildProcess("/usr/bin/curl", ["-sS", "--http1.1", "--cacert", directory + "/cert.pem", server.url + "/healthz"])
            .wait(seconds: 30).stdout
        #expect(http1 == "ok\n")
        let script = GRPCTests.testsDirectory.appendingPathComponent("Agents/connection_limits.py").path
        let run = try await ChildProcess("/usr/bin/env", ["python3", script, String(server.url.dropFirst("https://".count)), server.grpc,
                                                          "--checks", "resets", "--per-peer", "8", "--idle-ms", "60000", "--body-ms", "10000",
                                                          "--stall-ms", "30000", "--resets", "300", "--tls", directory + "/cert.pem"]).wait(seconds: 120)
        let stopped = try await server.stop()
        #expect(run.status == 0, "\(run.stdout)\n\(run.stderr)\nserver: \(stopped.stderr.suffix(2_000))")
        #expect(stopped.status == 0, "the server stopped cleanly: \(stopped.stderr.suffix(2_000))")
    }

    func openssl(_ arguments: [String]) async throws {
        let made = try await ChildProcess("/usr/bin/openssl", arguments).wait(seconds: 60)
        #expect(made.status == 0, "openssl \(arguments.joined(separator: " ")): \(made.stderr)")
    }

    /// A CA, a server certificate and a client certificate it signed: a principal named by its
    /// certificate's SHA-256 gets in with no token, on both transports; without a certificate, nobody does.
    @Test func mutualTLSNamesPrincipalsByTheirClientCertificate() async throws {
        let d = temporaryDirectory()
        try "subjectAltName=IP:127.0.0.1\n".write(toFile: d + "/san.ext", atomically: true, encoding: .utf8)
        try await openssl(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", d + "/ca.key", "-out", d + "/ca.pem", "-days", "1", "-subj", "/CN=lockstep-test-ca"])
        for (name, subject, ext) in [("server", "/CN=127.0.0.1", true), ("client", "/CN=alice", false)] {
            try await openssl(["req", "-newkey", "rsa:2048", "-nodes", "-keyout", d + "/\(name).key", "-out", d + "/\(name).csr", "-subj", subject])
            try await openssl(["x509", "-req", "-in", d + "/\(name).csr", "-CA", d + "/ca.pem", "-CAkey", d + "/ca.key", "-CAcreateserial",
                               "-out", d + "/\(name).pem", "-days", "1"] + (ext ? ["-extfile", d + "/san.ext"] : []))
        }
        try await openssl(["x509", "-in", d + "/client.pem", "-outform", "der", "-out", d + "/client.der"])
        let fingerprint = AuthConfig.hash(bytes: Array(try Data(contentsOf: URL(fileURLWithPath: d + "/client.der"))))
        try """
            {"principals": [{"name": "alice", "roles": ["operator"], "client_certificate_sha256": "\(fingerprint)"}]}
            """.write(toFile: d + "/auth.json", atomically: true, encoding: .utf8)
        let server = try await ServerProcess(["--config", d + "/auth.json", "--tls-cert", d + "/server.pem", "--tls-key", d + "/server.key",
                                              "--tls-client-ca", d + "/ca.pem"])
        // JSON: alice by her certificate, no token.
        let body = String(decoding: try JSONSerialization.data(withJSONObject: ["plan_yaml": OperatorAPITests.plan]), as: UTF8.self)
        let applied = try await ChildProcess("/usr/bin/curl", ["-sS", "--cacert", d + "/ca.pem", "--cert", d + "/client.pem", "--key", d + "/client.key",
                                                               "-X", "POST", "-H", "content-type: application/json", "--data-binary", body,
                                                               "-w", "\n%{http_code}", server.url + "/v1/plans"]).wait(seconds: 30).stdout
        #expect(applied.hasSuffix("\n200") && applied.contains(#""name":"gated""#), "\(applied)")
        #expect(try await ChildProcess("/usr/bin/curl", ["-sS", "--cacert", d + "/ca.pem", "--cert", d + "/client.pem", "--key", d + "/client.key",
                                                         "-X", "POST", "-H", "content-type: application/json", "--data-binary", #"{"plan": "gated", "migration_id": "m1"}"#,
                                                         "-w", "\n%{http_code}", server.url + "/v1/migrations"]).wait(seconds: 30).stdout.hasSuffix("\n200"))
        // Without a client certificate the handshake fails: nothing is answered.
        let anonymous = try await ChildProcess("/usr/bin/curl", ["-sS", "--cacert", d + "/ca.pem", "-w", "%{http_code}", server.url + "/healthz"]).wait(seconds: 30)
        #expect(anonymous.status != 0 || !anonymous.stdout.hasPrefix("ok"), "\(anonymous.stdout)")
        // gRPC: the same certificate names alice.
        let probe = try await ChildProcess("/usr/bin/env", [
            "python3", GRPCTests.testsDirectory.appendingPathComponent("Agents/grpc-tls-probe.py").path, GRPCTests.protos, server.grpc,
            d + "/ca.pem", d + "/client.pem", d + "/client.key",
        ]).wait(seconds: 120)
        #expect(probe.stdout == "mtls list 1 m1\nmtls heartbeat PERMISSION_DENIED PERMISSION_DENIED\n", "\(probe.stdout)\n\(probe.stderr)")
        _ = try await server.stop()
        let export = try await runLockstep(["history", "export", "--data", server.data + "/data"]).stdout
        #expect(export.contains(#""actor":{"kind":"user","id":"alice"}"#))
    }
}
