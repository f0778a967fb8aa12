import Foundation
import LockstepTestSupport
import Testing

/// A running `lockstep serve --dev` on loopback, started on a free port; stopped with SIGTERM.
final class ServerProcess: @unchecked Sendable {
    let process: ChildProcess
    let data: String
    let url: String
    /// The gRPC listener, HOST:PORT.
    let grpc: String

    /// `mode` is `--dev`, or `--config FILE`; `store` a PostgreSQL address (nil: a data directory, `data`
    /// or a new one).
    init(_ mode: [String] = ["--dev"], store: String? = nil, data: String? = nil) async throws {
        let data = data ?? temporaryDirectory()
        self.data = data
        try? FileManager.default.removeItem(atPath: data + "/ready.json")
        let ready = data + "/ready.json"
        let log = store.map { ["--store", $0] } ?? ["--data", data + "/data"]
        // A server with an authorization config signs checkpoints or says it does not (docs/history.md).
        let mode = mode.contains("--config") && !mode.contains("--signing-key") && !mode.contains("--no-signing") ? mode + ["--no-signing"] : mode
        process = try ChildProcess(try lockstepBinary(), ["serve"] + log + ["--http-listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0", "--ready-file", ready] + mode)
        let deadline = Date().addingTimeInterval(30)
        while !FileManager.default.fileExists(atPath: ready) {
            guard Date() < deadline else { throw TestFailure("the server never became ready; stderr: \(process.stderr)") }
            try await Task.sleep(for: .milliseconds(20))
        }
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: ready))) as? [String: String]
        url = try #require(json?["http"])
        grpc = try #require(json?["grpc"])
    }

    /// POSTs `body` (JSON) to `path` with curl, with a bearer `token` if given; returns curl's output
    /// (the response body, a newline, the HTTP status).
    func post(_ path: String, _ body: String, token: String? = nil) async throws -> String {
        let auth = token.map { ["-H", "authorization: Bearer \($0)"] } ?? []
        return try await ChildProcess("/usr/bin/curl", ["-sS", "-X", "POST", "-H", "content-type: application/json"] + auth
                                      + ["--data-binary", body, "-w", "\n%{http_code}", url + path]).wait(seconds: 30).stdout
    }

    func stop() async throws -> ProcessOutput {
        process.kill(SIGTERM)
        return try await process.wait(seconds: 30)
    }
}

/// Issue 4's end-to-end test with real processes on loopback: an agent holding a lease is stopped with
/// SIGSTOP past its TTL, a second agent takes the step over with a higher token and completes it, and
/// the first, resumed, has its completion refused with `stale_fencing_token`.
@Suite(.serialized) struct FencingEndToEndTests {
    static let agentScript = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Agents/one-step-agent.py").path

    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/curl"), "needs curl (ops/test installs it)"))
    func aStoppedAgentIsFencedOutByTheOneThatTookOver() async throws {
        let server = try await ServerProcess()
        let plan = """
            name: fenced
            services:
              orders: { owners: [orders-team] }
            nodes:
              - id: backfill
                service: orders
                phase: backfill
                action: copy-rows
                timeouts: { heartbeat: 1s }
                retry: { max_attempts: 3, backoff: 1s }
            """
        let planBody = String(decoding: try JSONSerialization.data(withJSONObject: ["plan_yaml": plan]), as: UTF8.self)
        #expect(try await server.post("/v1/plans", planBody).hasSuffix("\n200"))
        let started = try await server.post("/v1/migrations", #"{"plan": "fenced", "migration_id": "m1"}"#)
        #expect(started.hasSuffix("\n200"), "\(started)")

        // The first agent takes the step (token 1, TTL 1 s) and is frozen before it can report (it holds
        // the step 10 s, so even a loaded machine freezes it in time).
        let first = try ChildProcess("/usr/bin/env", ["python3", Self.agentScript, server.url, "orders", "agent-1", "10"])
        try await first.waitForOutput("leased m1/backfill 1 ttl 1000", seconds: 30)
        first.kill(SIGSTOP)
        // Its lease expires on the server's clock; the retry (after its 1 s backoff) goes to a second agent.
        let second = try ChildProcess("/usr/bin/env", ["python3", Self.agentScript, server.url, "orders", "agent-2", "0"])
        let secondOutput = try await second.wait(seconds: 30)
        #expect(secondOutput.stdout.contains("leased m1/backfill 2 ttl 1000"), "\(secondOutput.stdout) \(secondOutput.stderr)")
        #expect(secondOutput.stdout.contains("complete 200"), "\(secondOutput.stdout)")
        // The first agent wakes up and reports with its old token: refused, naming both tokens.
        first.kill(SIGCONT)
        let firstOutput = try await first.wait(seconds: 30)
        #expect(firstOutput.stdout.contains("complete 409 stale_fencing_token lease backfill is at token 2, report carried 1"), "\(firstOutput.stdout)")

        let stopped = try await server.stop()
        #expect(stopped.status == 0, "\(stopped.stderr)")
        // The history says what happened, in order, and verifies.
        let verify = try await runLockstep(["history", "verify", "--data", server.data + "/data"])
        #expect(verify.status == 0, "\(verify.stderr)")
        let export = try await runLockstep(["history", "export", "--data", server.data + "/data"])
        let types = export.stdout.split(separator: "\n").compactMap { line -> String? in
            guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                  let record = object["record"] as? [String: Any], let payload = record["payload"] as? [String: Any] else { return nil }
            return payload.keys.first
        }
        #expect(types == ["plan_applied", "migration_started", "service_leases_requested", "service_leases_granted",
                          "step_leased", "step_failed", "step_leased", "step_completed", "migration_succeeded", "service_leases_released"],
                "\(types)")
        #expect(export.stdout.contains("\"lease_expired\":true"), "\(export.stdout)")
    }
}
