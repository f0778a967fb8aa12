import Foundation
import LockstepTestSupport
import Testing

/// Webhooks (issue 20, docs/webhooks.md) against a real server, agent and receiver: a Python HTTP server
/// on loopback that verifies every signature as the docs tell receivers to.
@Suite(.serialized, .timeLimit(.minutes(3)))
struct WebhookEndToEndTests {
    static let receiverScript = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Agents/webhook_receiver.py").path

    /// The Python receiver on a loopback port of its own, answering 500 to its first `failFirst` requests.
    /// Down, it keeps the port bound without listening: deliveries are refused, and no other test's server
    /// can take the port before it comes up again (a stopped receiver's port could be).
    struct Receiver {
        let process: ChildProcess
        let port: Int
        let control: String
        let stateFile: String

        init(_ directory: String, failFirst: Int = 0, down: Bool = false) async throws {
            let portFile = directory + "/receiver-port-\(UUID().uuidString)"
            control = portFile + ".down"
            stateFile = portFile + ".state"
            if down { _ = FileManager.default.createFile(atPath: control, contents: nil) }
            process = try ChildProcess("/usr/bin/python3", [WebhookEndToEndTests.receiverScript, "--port-file", portFile, "--out", directory + "/received.jsonl",
                                                            "--secret-file", directory + "/secret", "--fail-first", String(failFirst), "--down-file", control])
            var bound = 0
            try await eventually("the receiver has its port", seconds: 20) {
                bound = Int((try? String(contentsOfFile: portFile, encoding: .utf8)) ?? "") ?? 0
                return bound > 0
            }
            port = bound
            try await settle(down: down)
        }

        /// Takes the receiver down (refusing connections) or up again, on the same port.
        func set(down: Bool) async throws {
            if down {
                _ = FileManager.default.createFile(atPath: control, contents: nil)
            } else {
                try FileManager.default.removeItem(atPath: control)
            }
            try await settle(down: down)
        }

        private func settle(down: Bool) async throws {
            try await eventually("the receiver is \(down ? "down" : "up")", seconds: 20) {
                (try? String(contentsOfFile: stateFile, encoding: .utf8)) == (down ? "down" : "up")
            }
        }

        func stop() { process.kill(SIGKILL) }
    }

    /// Every request the receiver got, oldest first.
    static func received(_ directory: String) -> [[String: Any]] {
        ((try? String(contentsOfFile: directory + "/received.jsonl", encoding: .utf8)) ?? "").split(separator: "\n").compactMap {
            try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        }
    }

    @Test func deliveriesAreSignedRetriedAfter500AndNoneIsLostWhileTheReceiverIsDown() async throws {
        var receiver: Receiver?
        let bench = try await GateBench(
            [.init(name: "olga", role: "operator", token: "operator-token-oooooooooooooooo"),
             .init(name: "ann", role: "approver", token: "approver-token-aaaaaaaaaaaaaaaa", groups: ["orders-team"]),
             .init(name: "orders-agent", role: "agent", services: ["orders"], token: "agent-token-ooooooooooooooooooo")],
            handlers: Dictionary(uniqueKeysWithValues: ["add-column", "drop-column", "backfill", "unbackfill"].map { ($0, WaitEndToEndTests.handler) }),
            serverArguments: ["--webhooks", "DIR/webhooks.yaml"],
            prepare: { directory in
                try "0123456789abcdef0123456789abcdef\n".write(toFile: directory + "/secret", atomically: true, encoding: .utf8)
                let receiving = try await Receiver(directory, failFirst: 2)
                receiver = receiving
                try """
                    webhooks:
                      - name: oncall
                        url: http://127.0.0.1:\(receiving.port)/hooks/lockstep
                        secret_file: secret
                        backoff: 100ms
                        max_backoff: 2s
                        timeout: 5s
                      - name: chat
                        url: http://127.0.0.1:\(receiving.port)/hooks/slack
                        secret_file: secret
                        format: slack
                        events: [migration_succeeded]
                        backoff: 100ms
                        max_backoff: 2s
                    """.write(toFile: directory + "/webhooks.yaml", atomically: true, encoding: .utf8)
            })
        defer { receiver?.stop() }
        let directory = bench.directory
        try WaitEndToEndTests.plan("gated", gated: true).write(toFile: directory + "/gated.yaml", atomically: true, encoding: .utf8)
        #expect(try await bench.lockstep(["plan", "apply", directory + "/gated.yaml"], as: "olga").status == 0)
        let agent = try bench.agent("orders", as: "orders-agent")
        defer { agent.kill(SIGKILL) }
        #expect(try await bench.lockstep(["migration", "start", "gated", "--id", "m1"], as: "olga").status == 0)

        // The gate's notification: refused twice with 500, delivered on the third attempt, signed each time.
        try await eventually("approval_needed delivered", seconds: 60) {
            Self.received(directory).contains { $0["event"] as? String == "approval_needed" && $0["status"] as? Int == 204 }
        }
        let gate = Self.received(directory).filter { $0["event"] as? String == "approval_needed" }
        #expect(gate.map { $0["status"] as? Int } == [500, 500, 204], "\(gate)")
        #expect(gate.map { $0["attempt"] as? String } == ["1", "2", "3"], "\(gate)")
        #expect(gate.allSatisfy { $0["verified"] as? Bool == true }, "every signature verifies")
        #expect(Set(gate.compactMap { $0["delivery"] as? String }).count == 1, "one delivery id across its attempts")
        let body = try #require(gate.last?["body"] as? [String: Any])
        #expect(body["migration"] as? String == "m1" && body["node"] as? String == "backfill" && body["plan"] as? String == "gated")
        let links = try #require(body["links"] as? [String: String])
        #expect(links["command"] == "lockstep migration approve m1 backfill")
        #expect(links["console"] == bench.server.url + "/ui#/migration/m1")

        // The receiver goes down; the approval lets the migration succeed meanwhile.
        try await receiver?.set(down: true)
        #expect(try await bench.lockstep(["migration", "approve", "m1", "backfill"], as: "ann").status == 0)
        try await eventually("m1 succeeded", seconds: 60) {
            try await bench.lockstep(["migration", "status", "m1"], as: "olga").stdout.contains("succeeded")
        }
        // Both webhooks hold the success as pending, retrying, and say why.
        try await eventually("pending deliveries show the refusal", seconds: 30) {
            let pending = try await bench.lockstep(["webhook", "deliveries", "--status", "pending", "--output", "json"], as: "olga").stdout
            return pending.contains("migration_succeeded") && pending.contains("connection refused") && pending.contains("\"chat\"")
                && pending.contains("\"oncall\"")
        }
        // The appends went on regardless: the history verifies, and the migration settled while nobody listened.
        #expect(try await bench.lockstep(["history", "verify"], as: "olga").status == 0)

        // Back on the same port: nothing is lost.
        try await receiver?.set(down: false)
        try await eventually("the success delivered to both webhooks", seconds: 60) {
            let delivered = Self.received(directory).filter { $0["event"] as? String == "migration_succeeded" && $0["status"] as? Int == 204 }
            return delivered.count == 2
        }
        let all = Self.received(directory)
        #expect(all.allSatisfy { $0["verified"] as? Bool == true })
        let delivered = Set(all.filter { $0["status"] as? Int == 204 }.compactMap { $0["delivery"] as? String })
        #expect(delivered.count == 2, "one approval_needed and one migration_succeeded id: \(delivered)")
        let slack = try #require(all.last { ($0["body"] as? [String: Any])?["blocks"] != nil }?["body"] as? [String: Any])
        #expect((slack["text"] as? String)?.hasPrefix("Migration succeeded: m1") == true, "\(slack)")

        let table = try await bench.lockstep(["webhook", "deliveries"], as: "olga").stdout
        #expect(table.contains("webhooks: oncall, chat"), "\(table)")
        #expect(!table.contains("pending") && !table.contains("failed"), "\(table)")
        let metrics = try await bench.http("/metrics", as: "olga")
        #expect(metrics.contains(#"lockstep_webhook_deliveries_total{webhook="oncall",outcome="delivered"} 2"#), "\(metrics)")
        #expect(metrics.contains(#"lockstep_webhook_deliveries_total{webhook="chat",outcome="delivered"} 1"#), "\(metrics)")
        #expect(metrics.contains(#"lockstep_webhook_attempts_total{webhook="oncall",result="http_error"} 2"#), "\(metrics)")
        #expect(metrics.contains(#"lockstep_webhook_attempts_total{webhook="oncall",result="connection_error"}"#), "\(metrics)")
        let stopped = try await bench.server.stop()
        #expect(stopped.status == 0 && !stopped.stderr.contains("finished unexpectedly"), "\(stopped.stderr.suffix(2_000))")
    }

    @Test func aRestartGoesOnFromTheCursorAndDeliversWhatWasPending() async throws {
        try await Self.restart(store: nil)
    }

    /// With the receiver down, a freeze's notification is pending when the server stops; the receiver
    /// comes up, a server starts again on the same log (`store`: PostgreSQL; nil: the same data
    /// directory), and the notification arrives, once.
    static func restart(store: String?) async throws {
        let directory = temporaryDirectory()
        try "0123456789abcdef0123456789abcdef\n".write(toFile: directory + "/secret", atomically: true, encoding: .utf8)
        // A port where nobody listens yet: the receiver's, down.
        let receiver = try await Receiver(directory, down: true)
        defer { receiver.stop() }
        try """
            webhooks:
              - name: oncall
                url: http://127.0.0.1:\(receiver.port)/hooks
                secret_file: secret
                events: [freeze_started]
                backoff: 100ms
                max_backoff: 500ms
            """.write(toFile: directory + "/webhooks.yaml", atomically: true, encoding: .utf8)
        let first = try await ServerProcess(["--dev", "--webhooks", directory + "/webhooks.yaml"], store: store)
        let cli = { (arguments: [String], server: ServerProcess) in
            try await ChildProcess(try lockstepBinary(), arguments, environment: ["LOCKSTEP_SERVER": server.grpc]).wait(seconds: 60)
        }
        #expect(try await cli(["freeze", "add", "--service", "orders", "--reason", "quarter close", "--id", "q4"], first).status == 0)
        try await eventually("the freeze's notification is pending, refused by the closed port", seconds: 30) {
            let pending = try await cli(["webhook", "deliveries", "--status", "pending", "--output", "json"], first).stdout
            return pending.contains("freeze_started") && pending.contains("connection refused")
        }
        // Stopped with a delivery pending: a clean stop, and the cursor still before it.
        let stopped = try await first.stop()
        #expect(stopped.status == 0 && !stopped.stderr.contains("finished unexpectedly"), "\(stopped.stderr.suffix(2_000))")
        if store == nil {
            let cursor = try String(contentsOfFile: first.data + "/data/webhooks.cursor.json", encoding: .utf8)
            #expect(cursor.contains("\"oncall\""), "\(cursor)")
        }

        // The receiver comes up, then the server again on the same log: the pending notification arrives.
        try await receiver.set(down: false)
        let second = try await ServerProcess(["--dev", "--webhooks", directory + "/webhooks.yaml"], store: store, data: first.data)
        try await eventually("the freeze's notification delivered after the restart", seconds: 30) {
            Self.received(directory).contains { $0["event"] as? String == "freeze_started" && $0["status"] as? Int == 204 }
        }
        let got = Self.received(directory)
        #expect(got.count == 1 && got.allSatisfy { $0["verified"] as? Bool == true }, "\(got)")
        let body = try #require(got.first?["body"] as? [String: Any])
        #expect((body["summary"] as? String)?.hasPrefix("freeze q4 on orders by") == true && (body["links"] as? [String: String])?["command"] == "lockstep freeze end q4",
                "\(body)")
        let again = try await second.stop()
        #expect(again.status == 0, "\(again.stderr.suffix(2_000))")
    }

    @Test func aBadWebhooksFileStopsTheServerWithWhatIsWrong() async throws {
        let directory = temporaryDirectory()
        try "short\n".write(toFile: directory + "/secret", atomically: true, encoding: .utf8)
        try "webhooks:\n  - name: oncall\n    url: http://127.0.0.1:1/x\n    secret_file: secret\n"
            .write(toFile: directory + "/webhooks.yaml", atomically: true, encoding: .utf8)
        let serve = try await ChildProcess(try lockstepBinary(), ["serve", "--dev", "--data", directory + "/data", "--http-listen", "127.0.0.1:0",
                                                                  "--grpc-listen", "127.0.0.1:0", "--webhooks", directory + "/webhooks.yaml"])
            .wait(seconds: 30)
        #expect(serve.status == 2)
        #expect(serve.stderr.contains("webhook oncall: the secret in secret has 5 bytes; at least 16"), "\(serve.stderr)")
    }
}

/// The same restart on PostgreSQL: the cursor is in the log's database (`lockstep_webhook_cursors`), so
/// the next writer goes on from it. (Named for the suite's PostgreSQL group, ops/test.)
@Suite(.serialized, .timeLimit(.minutes(3)), .dropsPostgresDatabases)
struct WebhookPostgresTests {
    @Test func aWriterOnTheSameDatabaseGoesOnFromTheCursor() async throws {
        let postgres = TestPostgres.shared
        let store = try await postgres.url(try await postgres.makeDatabase())
        try await WebhookEndToEndTests.restart(store: store)
    }
}

/// Receivers that misbehave (`Agents/webhook_hostile.py`): one that never answers costs each attempt its
/// `timeout` and is retried; a 410 is a refusal for good and the webhook goes on; a 301 is a failed
/// attempt and is not followed; a 200 whose body is 1 GiB, trickled, is delivered without reading it;
/// and the server stops promptly with a request hanging.
@Suite(.serialized) struct WebhookHostileReceiverTests {
    static let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Agents/webhook_hostile.py").path

    struct Delivery: Decodable {
        let webhook: String
        let status: String
        let attempts: Int?
        let last_result: String?
    }

    @Test(.timeLimit(.minutes(3)))
    func hangingRefusingRedirectingAndFloodingReceiversAreBounded() async throws {
        let directory = temporaryDirectory()
        let receiver = try ChildProcess("/usr/bin/env", ["python3", Self.script, "--port-file", directory + "/port", "--out", directory + "/requests"])
        defer { receiver.kill(SIGKILL) }
        try await eventually("the receiver listens", seconds: 30) { FileManager.default.fileExists(atPath: directory + "/port") }
        let port = try String(contentsOfFile: directory + "/port", encoding: .utf8)
        try "0123456789abcdef0123456789abcdef\n".write(toFile: directory + "/secret", atomically: true, encoding: .utf8)
        let hooks = ["hang", "gone", "moved", "huge"].map { name in
            "  - name: \(name)\n    url: http://127.0.0.1:\(port)/\(name)\n    secret_file: secret\n    events: [freeze_started]\n"
                + "    timeout: 500ms\n    backoff: 100ms\n    max_backoff: 200ms\n"
        }
        try ("webhooks:\n" + hooks.joined()).write(toFile: directory + "/webhooks.yaml", atomically: true, encoding: .utf8)
        let server = try await ServerProcess(["--dev", "--webhooks", directory + "/webhooks.yaml"])
        #expect(try await server.post("/v1/freezes", #"{"reason": "a hostile receiver test"}"#).hasSuffix("\n200"))

        func deliveries() async throws -> [String: Delivery] {
            let answer = try await server.post("/v1/webhooks/deliveries", "{}")
            struct Page: Decodable { let deliveries: [Delivery]? }
            let page = try JSONDecoder().decode(Page.self, from: Data(answer.dropLast(4).utf8))
            return Dictionary((page.deliveries ?? []).map { ($0.webhook, $0) }) { _, last in last }
        }
        try await eventually("each receiver was tried and judged", seconds: 60) {
            let seen = try await deliveries()
            return seen["gone"]?.status == "failed" && seen["huge"]?.status == "delivered"
                && (seen["hang"]?.attempts ?? 0) >= 2 && (seen["moved"]?.attempts ?? 0) >= 2
        }
        let seen = try await deliveries()
        #expect(seen["hang"]?.status == "pending" && seen["hang"]?.last_result?.contains("timed out after 500 ms") == true, "\(String(describing: seen["hang"]))")
        #expect(seen["moved"]?.status == "pending" && seen["moved"]?.last_result == "HTTP 301", "\(String(describing: seen["moved"]))")
        #expect(seen["gone"]?.attempts == 1 && seen["gone"]?.last_result == "HTTP 410", "\(String(describing: seen["gone"]))")
        #expect(seen["huge"]?.attempts == 1, "\(String(describing: seen["huge"]))")
        let requests = (try? String(contentsOfFile: directory + "/requests", encoding: .utf8)) ?? ""
        #expect(!requests.contains("/target"), "the redirect was followed: \(requests)")

        // A request hanging does not hold the stop.
        let asked = ContinuousClock.now
        let stopped = try await server.stop()
        #expect(stopped.status == 0 && ContinuousClock.now - asked < .seconds(20), "\(stopped.stderr.suffix(1_000))")
    }
}
