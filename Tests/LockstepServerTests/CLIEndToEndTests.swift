import Foundation
import LockstepServer
import LockstepTestSupport
import Testing
import LockstepService

/// Issue 6's end-to-end test: the built `lockstep` binary used as a user would, against a real
/// `lockstep serve` on loopback, with reference agents as separate processes.
@Suite(.serialized, .dropsPostgresDatabases) struct CLIEndToEndTests {
    static let tokens = ["alice": "operator-token-aaaaaaaaaaaaaaaa", "bob": "approver-token-bbbbbbbbbbbbbbbb",
                         "ledger-agent": "agent-token-cccccccccccccccccc", "orders-agent": "agent-token-dddddddddddddddddd"]

    static let plan = """
        name: e2e
        services:
          ledger: { owners: [ledger-team] }
          orders: { owners: [orders-team] }
        nodes:
          - id: backfill
            service: ledger
            phase: backfill
            action: copy-rows
            params: { table: ledger_entries }
            timeouts: { heartbeat: 1s }
            retry: { max_attempts: 3, backoff: 1s }
          - id: switch
            service: orders
            phase: live
            action: flip-flag
            needs: [backfill]
            approvals: { minimum: 1 }
        """

    /// The first lease of copy-rows (token 1) hangs (until killed); later ones report progress and finish.
    /// Each run of copy-rows leaves `ran-TOKEN` holding its pid, its attempt and its stdin (the params).
    static let handler = """
        #!/bin/sh
        params=$(cat)
        if [ "$LOCKSTEP_ACTION" = copy-rows ]; then
          echo "$$ attempt=$LOCKSTEP_ATTEMPT $params" > "$(dirname "$0")/../ran-$LOCKSTEP_FENCING_TOKEN"
          if [ "$LOCKSTEP_FENCING_TOKEN" = 1 ]; then sleep 60; fi
        fi
        echo "progress: 50 copying shard 2"
        sleep 1.2
        echo "copied"

        """

    /// A proxy that loses the answer to one gRPC call (`Agents/answer-cutter.py`).

    struct World {
        let server: ServerProcess
        let directory: String
        /// The PostgreSQL address the server's log is on (nil: its data directory).
        var store: String? = nil
        var address: String { server.grpc }

        /// Runs `lockstep ARGUMENTS` as `who` (a token name, or a raw token), bounded in time.
        func lockstep(_ arguments: [String], as who: String? = "alice", server: String? = nil, seconds: Double = 60) async throws -> ProcessOutput {
            try await ChildProcess(try lockstepBinary(), arguments, environment: environment(who, server: server)).wait(seconds: seconds)
        }

        func environment(_ who: String?, server: String? = nil) -> [String: String] {
            ["LOCKSTEP_SERVER": server ?? address, "LOCKSTEP_TOKEN": who.map { CLIEndToEndTests.tokens[$0] ?? $0 } ?? ""]
        }

        func agent(_ service: String, id: String) throws -> ChildProcess {
            try ChildProcess(try lockstepBinary(), ["agent", "--service", service, "--handlers", directory + "/handlers", "--id", id],
                             environment: environment("\(service)-agent"))
        }
    }

    func world(onPostgres: Bool = false) async throws -> World {
        let directory = temporaryDirectory()
        let t = Self.tokens
        try """
            {"principals": [
              {"name": "alice", "roles": ["operator"], "token_sha256": "\(AuthConfig.hash(t["alice"]!))"},
              {"name": "bob", "roles": ["approver"], "owner_groups": ["orders-team"], "token_sha256": "\(AuthConfig.hash(t["bob"]!))"},
              {"name": "ledger-agent", "roles": ["agent"], "services": ["ledger"], "token_sha256": "\(AuthConfig.hash(t["ledger-agent"]!))"},
              {"name": "orders-agent", "roles": ["agent"], "services": ["orders"], "token_sha256": "\(AuthConfig.hash(t["orders-agent"]!))"}
            ]}
            """.write(toFile: directory + "/auth.json", atomically: true, encoding: .utf8)
        try Self.plan.write(toFile: directory + "/plan.yaml", atomically: true, encoding: .utf8)
        try FileManager.default.createDirectory(atPath: directory + "/handlers", withIntermediateDirectories: true)
        for action in ["copy-rows", "flip-flag"] {
            try Self.handler.write(toFile: directory + "/handlers/" + action, atomically: true, encoding: .utf8)
            try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: directory + "/handlers/" + action)
        }
        let store = onPostgres ? try await TestPostgres.shared.url(try await TestPostgres.shared.makeDatabase()) : nil
        return World(server: try await ServerProcess(["--config", directory + "/auth.json"], store: store), directory: directory, store: store)
    }

    /// On both stores: the data directory, and `serve --store postgres://…` on the test cluster.
    @Test(arguments: [false, true])
    func aMigrationRunsEndToEndThroughTheCLIAndAKilledAgentsStepIsRetriedByAnother(onPostgres: Bool) async throws {
        let world = try await world(onPostgres: onPostgres)
        let applied = try await world.lockstep(["plan", "apply", world.directory + "/plan.yaml"])
        #expect(applied.status == 0 && applied.stdout.hasPrefix("e2e@1 applied"), "\(applied)")
        let started = try await world.lockstep(["migration", "start", "e2e@1", "--id", "m1"])
        #expect(started.status == 0 && started.stdout == "m1\n", "\(started)")

        // The first ledger agent takes the step and is killed mid-step (SIGKILL: no goodbye).
        let doomed = try world.agent("ledger", id: "ledger-1")
        try await eventually("the first attempt ran") { FileManager.default.fileExists(atPath: world.directory + "/ran-1") }
        let status = try await world.lockstep(["migration", "status", "m1"])
        #expect(status.stdout.contains("ledger-1 token 1"), "\(status.stdout)")
        doomed.kill(SIGKILL)
        _ = try await doomed.wait(seconds: 10)
        if let orphan = Int32((try String(contentsOfFile: world.directory + "/ran-1", encoding: .utf8)).split(separator: " ")[0]) { kill(orphan, SIGKILL) }

        // Another agent takes the step once the lease has expired (TTL 1 s): the agent was lost, so the
        // attempt is not counted (issue 15): it is attempt 1 again, under token 2.
        let rescuer = try world.agent("ledger", id: "ledger-2")
        let orders = try world.agent("orders", id: "orders-1")
        let watch = try ChildProcess(try lockstepBinary(), ["migration", "watch", "m1", "--plain"], environment: world.environment("alice"))
        try await eventually("the gate waits") {
            try await world.lockstep(["migration", "status", "m1", "--output", "json"]).stdout.contains("NODE_STATUS_AWAITING_APPROVAL")
        }
        let ran2 = try String(contentsOfFile: world.directory + "/ran-2", encoding: .utf8)
        #expect(ran2.contains(#"{"table":"ledger_entries"}"#), "the handler got the params on stdin: \(ran2)")
        #expect(ran2.contains("attempt=1 "), "a lost agent's attempt is not counted: \(ran2)")

        // alice started it, so she may not approve; bob may.
        let selfApproval = try await world.lockstep(["migration", "approve", "m1", "switch"], as: "alice")
        #expect(selfApproval.status == 4 && selfApproval.stderr.contains("permission_denied"), "\(selfApproval)")
        let approved = try await world.lockstep(["migration", "approve", "m1", "switch", "--comment", "dashboards green"], as: "bob")
        #expect(approved.status == 0 && approved.stdout.contains("approval_granted"), "\(approved)")

        // The watch ends by itself when the migration settles, with status 0 for success.
        let watched = try await watch.wait(seconds: 60)
        #expect(watched.status == 0, "\(watched)")
        for line in ["step_leased               backfill: attempt 1 leased to ledger-1", "backfill: attempt 1 agent lost",
                     "backfill: attempt 1 leased to ledger-2, token 2", "backfill: 50% copying shard 2", "switch: approved by bob (dashboards green)",
                     "migration_succeeded"] {
            #expect(watched.stdout.contains(line), "watch output lacks \(line): \(watched.stdout)")
        }
        #expect(watched.stdout.contains("migration m1  plan e2e@1  succeeded"))
        // backfill succeeded after its first agent was lost: its status does not dwell on that failure
        // (the CLI compared the status with "completed", which no status is, so it always did).
        let final = try await world.lockstep(["migration", "status", "m1"])
        #expect(final.status == 0 && final.stdout.contains("backfill") && !final.stdout.contains("last failure"), "\(final.stdout)")

        // Agents stop gracefully on SIGTERM.
        for agent in [rescuer, orders] {
            agent.kill(SIGTERM)
            let stopped = try await agent.wait(seconds: 30)
            #expect(stopped.status == 0 && stopped.stdout.contains(": stopped"), "\(stopped)")
        }
        #expect(rescuer.stdout.contains("m1/backfill: completed"))

        // The history, from the server: verified, and replayed as of a middle sequence.
        let verified = try await world.lockstep(["history", "verify"])
        #expect(verified.status == 0 && verified.stdout.hasPrefix("ok: "), "\(verified)")
        let head = try #require(verified.stdout.split(separator: "\n").first { $0.hasPrefix("head sequence: ") }.flatMap { UInt64($0.split(separator: " ").last!) })
        let middle = head / 2
        let replayed = try await world.lockstep(["history", "replay", "--at", String(middle)])
        #expect(replayed.status == 0 && replayed.stdout.hasPrefix("as of sequence \(middle)\n"), "\(replayed)")
        #expect(replayed.stdout.contains("migration m1  plan e2e@1  running"), "\(replayed)")
        let exported = try await world.lockstep(["history", "export"])
        #expect(exported.stdout.split(separator: "\n").count == Int(head))
        // Machine-readable: the migration's events as NDJSON (the export's lines), the verification as JSON.
        let ndjson = try await world.lockstep(["migration", "watch", "m1", "--output", "json"])
        let streamLines = exported.stdout.split(separator: "\n").filter { $0.contains(#""stream":"migration/m1""#) }
        #expect(ndjson.status == 0 && ndjson.stdout.split(separator: "\n") == streamLines, "\(ndjson)")
        let verifiedJSON = try await world.lockstep(["history", "verify", "--output", "json"])
        let report = try JSONSerialization.jsonObject(with: Data(verifiedJSON.stdout.utf8)) as? [String: Any]
        #expect(report?["ok"] as? Bool == true && report?["head_sequence"] as? Int == Int(head), "\(verifiedJSON)")
        // The same JSON from the data directory, once the server has stopped (issue 14: three forms).
        let verifiedHere = verifiedJSON.stdout
        // The state as of a point and the plans are the API's own messages (typed statuses, no JSON
        // inside protobuf), printed the same from the server and from the data directory (issue 15).
        let replayedJSON = try await world.lockstep(["history", "replay", "--at", String(middle), "--output", "json"])
        #expect(replayedJSON.stdout.contains(#""status" : "MIGRATION_STATUS_RUNNING""#) && !replayedJSON.stdout.contains("report_json"), "\(replayedJSON)")
        let plansJSON = try await world.lockstep(["plan", "list", "--output", "json"])
        #expect(plansJSON.status == 0 && plansJSON.stdout.contains(#""name" : "e2e""#), "\(plansJSON)")
        _ = try await world.server.stop()
        // The same, from the log itself (the data directory, or the database).
        let store = world.store.map { ["--store", $0] } ?? ["--data", world.server.data + "/data"]
        let local = try await world.lockstep(["history", "export"] + store, as: nil)
        #expect(local.stdout == exported.stdout)
        let localReplay = try await world.lockstep(["history", "replay"] + store + ["--at", String(middle)], as: nil)
        #expect(localReplay.stdout == replayed.stdout)
        let localReplayJSON = try await world.lockstep(["history", "replay"] + store + ["--at", String(middle), "--output", "json"], as: nil)
        #expect(localReplayJSON.stdout == replayedJSON.stdout, "\(localReplayJSON.stdout) vs \(replayedJSON.stdout)")
        let localPlans = try await world.lockstep(["plan", "list"] + store + ["--output", "json"], as: nil)
        #expect(localPlans.stdout == plansJSON.stdout, "\(localPlans.stdout) vs \(plansJSON.stdout)")
        let localVerify = try await world.lockstep(["history", "verify"] + store + ["--output", "json"], as: nil)
        #expect(localVerify.stdout == verifiedHere, "\(localVerify.stdout) vs \(verifiedHere)")
        let localTable = try await world.lockstep(["history", "verify"] + store, as: nil)
        #expect(localTable.stdout == verified.stdout, "\(localTable.stdout) vs \(verified.stdout)")
    }

    @Test func cliErrorsSayWhatIsWrongWithTheAPIsCodeAndAStableExitStatus() async throws {
        let world = try await world()
        // An unknown migration: refused by the server.
        let unknown = try await world.lockstep(["migration", "status", "nope"])
        #expect(unknown.status == 1 && unknown.stderr == "error: migration_not_found: migration nope does not exist\n", "\(unknown)")
        // A bad plan: its findings, FILE:LINE, and nothing applied.
        try "name: broken\nservices:\n  orders: { owners: [o] }\nnodes:\n  - id: a\n    service: ghost\n    phase: expand\n    action: x\n"
            .write(toFile: world.directory + "/bad.yaml", atomically: true, encoding: .utf8)
        let bad = try await world.lockstep(["plan", "apply", world.directory + "/bad.yaml"])
        #expect(bad.status == 1 && bad.stderr.contains("bad.yaml:6: error:") && bad.stderr.contains("ghost"), "\(bad)")
        #expect(bad.stderr.contains("has 1 lint error(s); nothing was applied"), "\(bad)")
        #expect(try await world.lockstep(["plan", "list"]).stdout == "no plans applied\n")
        // A wrong token, and a right token without the role.
        let wrong = try await world.lockstep(["migration", "list"], as: "not-a-token-at-all")
        #expect(wrong.status == 4 && wrong.stderr.contains("error: unauthenticated: the bearer token is not known to this server"), "\(wrong)")
        let agentStarting = try await world.lockstep(["migration", "start", "e2e"], as: "ledger-agent")
        #expect(agentStarting.status == 4 && agentStarting.stderr.contains("error: permission_denied: ledger-agent may not"), "\(agentStarting)")
        // Bad input on the command line: the parser's usage error.
        let usage = try await world.lockstep(["migration", "start", "e2e@zero"])
        #expect(usage.status == 64 && usage.stderr.contains("PLAN@VERSION"), "\(usage)")
        let badTimeout = try await world.lockstep(["migration", "list", "--call-timeout-ms", "5"])
        #expect(badTimeout.status == 64 && badTimeout.stderr.contains("--call-timeout-ms (or $LOCKSTEP_CALL_TIMEOUT_MS) must be 100...86400000, not 5"), "\(badTimeout)")
        let badStop = try await world.lockstep(["serve", "--dev", "--data", world.directory + "/unused", "--stop-timeout-ms", "999"])
        #expect(badStop.status == 64 && badStop.stderr.contains("--stop-timeout-ms must be 1000...3600000, not 999"), "\(badStop)")
        // The server frozen (SIGSTOP: its connections stay open, nothing answers): the call gives up at its
        // deadline and says so. Before, it waited for ever.
        world.server.process.kill(SIGSTOP)
        let askedFrozen = Date()
        let frozen = try await world.lockstep(["migration", "list", "--call-timeout-ms", "1500"], seconds: 60)
        world.server.process.kill(SIGCONT)
        #expect(frozen.status == 3 && frozen.stderr.contains("deadline_exceeded: the Lockstep server at \(world.address) did not answer in time"), "\(frozen)")
        #expect(Date().timeIntervalSince(askedFrozen) < 20)
        _ = try await world.server.stop()
        // The server down: said so, with where we looked, promptly.
        let began = Date()
        let down = try await world.lockstep(["migration", "list"], seconds: 30)
        #expect(down.status == 3 && down.stderr.contains("unavailable: cannot reach the Lockstep server at \(world.address)"), "\(down)")
        #expect(Date().timeIntervalSince(began) < 20)
    }

    @Test func migrationListShowsAtMostItsLimitAndSaysWhenThereIsMore() async throws {
        let world = try await world()
        #expect(try await world.lockstep(["plan", "apply", world.directory + "/plan.yaml"]).status == 0)
        for id in ["m-1", "m-2", "m-3"] {
            let started = try await world.lockstep(["migration", "start", "e2e", "--id", id])
            #expect(started.status == 0, "\(started)")
        }
        let two = try await world.lockstep(["migration", "list", "--limit", "2"])
        #expect(two.status == 0 && two.stdout.contains("m-1") && two.stdout.contains("m-2") && !two.stdout.contains("m-3"), "\(two)")
        #expect(two.stdout.hasSuffix("(more: raise --limit)\n"), "\(two)")
        let all = try await world.lockstep(["migration", "list", "--limit", "3"])
        #expect(all.status == 0 && all.stdout.contains("m-3") && !all.stdout.contains("more"), "\(all)")
        // The limit's own bounds: 1...100000, a usage error past them.
        #expect(try await world.lockstep(["migration", "list", "--limit", "1"]).stdout.contains("m-1"))
        #expect(try await world.lockstep(["migration", "list", "--limit", "100000"]).status == 0)
        for outside in ["0", "100001"] {
            let refused = try await world.lockstep(["migration", "list", "--limit", outside])
            #expect(refused.status == 64 && refused.stderr.contains("--limit must be 1...100000"), "\(refused)")
        }
        _ = try await world.server.stop()
    }

    @Test func shellCompletionScriptsCoverTheCommands() async throws {
        for shell in ["bash", "zsh", "fish"] {
            let script = try await runLockstep(["--generate-completion-script", shell])
            #expect(script.status == 0)
            for word in ["migration", "approve", "lease", "agent", "handlers", "history"] {
                #expect(script.stdout.contains(word), "the \(shell) completion lacks \(word)")
            }
        }
    }

    /// The README's first command: the whole product, bounded in time, ending in a verified history.
    @Test func theDemoRunsAMigrationToTheEndWithAgentProcessesAndAnApproverAndVerifiesIt() async throws {
        let directory = temporaryDirectory() + "/demo"
        let demo = try await runLockstep(["demo", "--plain", "--data", directory], seconds: 120)
        #expect(demo.status == 0, "\(demo)")
        for line in ["alice (operator): migration start → ledger-split-demo-1", "backfill-ledger: attempt 1 failed",
                     "bob (approver): migration approve ledger-split-demo-1 switch-reads-payments", "migration_succeeded",
                     "$ lockstep history verify\nok: ", "(sign in as bob, the approver, within 5 minutes: http://127.0.0.1:", "/ui#code=",
                     "The migration succeeded. Everything is kept in \(directory)"] {
            #expect(demo.stdout.contains(line), "the demo's output lacks \(line)")
        }
        let verified = try await runLockstep(["history", "verify", "--data", directory + "/data"])
        #expect(verified.status == 0)
        // Its server signed checkpoints (issue 21), kept outside the log too: the log verifies against them.
        let checked = try await runLockstep(["history", "verify", "--data", directory + "/data", "--checkpoints", directory + "/checkpoints",
                                             "--public-key", directory + "/keys.json"])
        #expect(checked.status == 0 && checked.stdout.contains("kept elsewhere"), "\(checked)")
        #expect(!checked.stdout.contains("checkpoints: 0 checked"), "\(checked.stdout)")
        // Its report (issue 20) accounts for every event of the migration's history, and says what happened.
        let report = try await runLockstep(["migration", "report", "ledger-split-demo-1", "--data", directory + "/data", "--format", "json"])
        #expect(report.status == 0, "\(report.stderr)")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(report.stdout.utf8)) as? [String: Any])
        let reported = (object["timeline"] as? [[String: Any]] ?? []).compactMap { ($0["sequence"] as? NSNumber)?.uint64Value }
        let export = try await runLockstep(["history", "export", "--data", directory + "/data"])
        let history = export.stdout.split(separator: "\n").compactMap { line -> UInt64? in
            guard line.contains(#""stream":"migration/ledger-split-demo-1""#),
                  let event = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else { return nil }
            return (event["sequence"] as? NSNumber)?.uint64Value
        }
        #expect(!history.isEmpty && reported == history, "every event of the migration is in the report's timeline, in order")
        #expect(object["status"] as? String == "succeeded")
        #expect((object["integrity"] as? [String: Any])?["verified"] as? Bool == true)
        let nodes = object["nodes"] as? [[String: Any]] ?? []
        #expect(nodes.first { $0["node"] as? String == "backfill-ledger" }?["failed_attempts"] as? Int == 1, "\(nodes)")
        let people = (object["people"] as? [[String: Any]] ?? []).map { "\($0["who"] ?? "") \($0["action"] ?? "")" }
        #expect(people.contains("bob approved"), "\(people)")
        let html = try await runLockstep(["migration", "report", "ledger-split-demo-1", "--data", directory + "/data", "--format", "html"])
        #expect(html.status == 0 && html.stdout.contains("<svg") && !html.stdout.contains("<script"))
        // Its agents were separate processes, and stopped.
        for service in ["payments", "orders", "ledger"] {
            let log = try String(contentsOfFile: "\(directory)/agent-\(service).log", encoding: .utf8)
            #expect(log.contains("\(service)-agent: stopped"), "\(log)")
        }
    }
}
