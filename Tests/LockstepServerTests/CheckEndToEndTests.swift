import Foundation
import LockstepCore
import LockstepTestSupport
import Testing

/// Issue 19's end-to-end test of preflight checks, with a real server, a real agent and the CLI: the
/// agent runs a `replication-lag` check from its handlers directory before the step; while the lag is
/// too high the node is blocked with the check's evidence (status, API, history, metrics) and the step
/// does not run; once the lag is low again, the recheck passes and the step runs.
@Suite(.serialized, .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/curl"), "needs curl (ops/test installs it)"))
struct CheckEndToEndTests {
    static let plan = """
        name: checked
        services:
          ledger: { owners: [ledger-team] }
        nodes:
          - id: backfill
            service: ledger
            phase: backfill
            action: backfill
            checks:
              - name: replication-lag
                params: { database: ledger }
                pass: { max: 5 }
                fresh_for: 10m
                recheck: 2s
            rollback: { action: unbackfill }
        """

    /// Reports the lag written in ../lag (the test changes it), as the example handler does.
    static let check = """
        #!/bin/sh
        cat > /dev/null
        dir="$(dirname "$0")/.."
        lag=$(cat "$dir/lag")
        echo "value=$lag"
        echo "slowest replica is $lag s behind"
        echo "check $lag" >> "$dir/ran.log"

        """

    @Test func aFailingReplicationLagCheckBlocksTheNodeWithItsEvidenceUntilItPasses() async throws {
        let step = "#!/bin/sh\ncat > /dev/null\necho \"$LOCKSTEP_ACTION $LOCKSTEP_STEP_KIND\" >> \"$(dirname \"$0\")/../ran.log\"\n"
        let bench = try await GateBench([.init(name: "olga", role: "operator", token: "operator-token-oooooooooooooooo"),
                                         .init(name: "ledger-agent", role: "agent", services: ["ledger"], token: "agent-token-lllllllllllllllllll")],
                                        handlers: ["replication-lag": Self.check, "backfill": step, "unbackfill": step])
        let directory = bench.directory
        try "42\n".write(toFile: directory + "/lag", atomically: true, encoding: .utf8)
        try Self.plan.write(toFile: directory + "/plan.yaml", atomically: true, encoding: .utf8)
        func lockstep(_ arguments: [String]) async throws -> ProcessOutput { try await bench.lockstep(arguments, as: "olga") }
        func ran() -> [String] { bench.ran() }
        func status() async throws -> String { try await lockstep(["migration", "status", "m1"]).stdout }

        #expect(try await lockstep(["plan", "apply", directory + "/plan.yaml"]).status == 0)
        #expect(try await lockstep(["migration", "start", "checked", "--id", "m1"]).stdout == "m1\n")
        let agent = try bench.agent("ledger", as: "ledger-agent")
        defer { agent.kill(SIGKILL) }

        // 1. The check runs first and fails: the node is blocked with its evidence; the step does not run.
        // (One status holding both: on a loaded machine a recheck may be under way between two reads.)
        try await eventually("the check failed") {
            let shown = try await status()
            return shown.contains("check replication-lag failed (42 is above 5: slowest replica is 42 s behind); runs again at ") && shown.contains("check_failed")
        }
        let viewed = try await bench.http("/v1/migrations/get", as: "olga", body: #"{"migration_id": "m1"}"#)
        #expect(viewed.contains(#""outcome":"fail""#) && viewed.contains(#""value":"42""#) && viewed.contains(#""rule":"≤ 5""#), "\(viewed)")
        #expect(ran().allSatisfy { $0.hasPrefix("check ") }, "no step while the check fails")

        // 2. The lag comes down: the recheck passes and the step runs.
        try "1.5\n".write(toFile: directory + "/lag", atomically: true, encoding: .utf8)
        try await eventually("m1 succeeded", seconds: 60) { try await status().contains("succeeded") }
        let log = ran()
        #expect(log.first == "check 42" && log.suffix(2) == ["check 1.5", "backfill forward"], "\(log)")

        // 3. What a reviewer reads: each check result with its value and evidence, in the history.
        let export = try await lockstep(["history", "export"]).stdout.split(separator: "\n")
        let results = export.filter { $0.contains(#""check_reported""#) }
        #expect(results.count >= 2, "\(results)")
        let failed = try #require(results.first)
        #expect(failed.contains(#""outcome":"fail""#) && failed.contains(#""value_micros":"42000000""#)
            && failed.contains("42 is above 5: slowest replica is 42 s behind"), "\(failed)")
        #expect(results.last?.contains(#""outcome":"pass""#) == true)
        #expect(try await lockstep(["history", "verify"]).status == 0)
        let metrics = try await bench.http("/metrics", as: "olga")
        #expect(metrics.contains(#"lockstep_check_results_total{outcome="fail"}"#) && metrics.contains(#"lockstep_check_results_total{outcome="pass"} 1"#), "\(metrics)")
        agent.kill(SIGTERM)
        _ = try await agent.wait(seconds: 30)
    }
}
