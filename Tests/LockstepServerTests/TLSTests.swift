import Foundation
import LockstepTestSupport
import Testing

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
}
