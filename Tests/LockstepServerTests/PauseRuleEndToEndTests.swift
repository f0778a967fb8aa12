import Foundation
import LockstepCore
import LockstepTestSupport
import Testing

/// Issue 19's end-to-end test of the plan's pause rule, with a real server, a real agent and the CLI:
/// under `on_pause: stop`, stopping the line tells the running step (on its next heartbeat) to stop; the
/// agent stops its handler and reports it stopped, which is not an attempt; lifting the stop runs it again.
@Suite(.serialized, .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/curl"), "needs curl (ops/test installs it)"))
struct PauseRuleEndToEndTests {
    static let plan = """
        name: stoppable
        on_pause: stop
        services:
          orders: { owners: [orders-team] }
        nodes:
          - id: backfill
            service: orders
            phase: backfill
            action: backfill
            timeouts: { heartbeat: 3s }
            rollback: { action: unbackfill }
        """

    /// Writes "started"; then, on its first run, waits (up to 60 s) to be stopped; a later run finishes at once.
    static let handler = """
        #!/bin/sh
        cat > /dev/null
        dir="$(dirname "$0")/.."
        trap 'echo "stopped $LOCKSTEP_ATTEMPT" >> "$dir/ran.log"; exit 143' TERM
        echo "started $LOCKSTEP_ATTEMPT" >> "$dir/ran.log"
        if [ ! -e "$dir/once" ]; then
          touch "$dir/once"
          i=0
          while [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done
        fi
        echo "finished $LOCKSTEP_ATTEMPT" >> "$dir/ran.log"

        """

    @Test func stoppingTheLineStopsTheRunningStepWithoutCountingItAndTheLiftRunsItAgain() async throws {
        let bench = try await GateBench([.init(name: "olga", role: "operator", token: "operator-token-oooooooooooooooo"),
                                         .init(name: "orders-agent", role: "agent", services: ["orders"], token: "agent-token-ooooooooooooooooooo")],
                                        handlers: ["backfill": Self.handler, "unbackfill": Self.handler])
        try Self.plan.write(toFile: bench.directory + "/plan.yaml", atomically: true, encoding: .utf8)
        func lockstep(_ arguments: [String]) async throws -> ProcessOutput { try await bench.lockstep(arguments, as: "olga") }
        func ran() -> [String] { bench.ran() }
        func status() async throws -> String { try await lockstep(["migration", "status", "m1"]).stdout }

        #expect(try await lockstep(["plan", "apply", bench.directory + "/plan.yaml"]).status == 0)
        #expect(try await lockstep(["migration", "start", "stoppable", "--id", "m1"]).stdout == "m1\n")
        let agent = try bench.agent("orders", as: "orders-agent")
        defer { agent.kill(SIGKILL) }

        // 1. The step runs; the line stops: the next heartbeat tells the agent to stop it, and it does.
        try await eventually("the step runs") { ran() == ["started 1"] }
        let stop = try await lockstep(["line", "stop", "--service", "orders", "--reason", "incident 11", "--id", "stop-11"])
        #expect(stop.status == 0 && stop.stdout.contains("paused: m1"), "\(stop)")
        try await eventually("the handler was stopped", seconds: 30) { ran() == ["started 1", "stopped 1"] }
        try await eventually("its stop was reported") {
            let now = try await status()
            return now.contains("paused") && now.contains("backfill") && !now.contains("token 1 ")
        }

        // 2. The stop is in the history, given back and not counted.
        let export = try await lockstep(["history", "export"]).stdout.split(separator: "\n")
        let stopped = try #require(export.first { $0.contains(#""step_failed""#) })
        #expect(stopped.contains("stopped: migration m1 was paused") && stopped.contains("on_pause: stop") && stopped.contains(#""stopped":true"#), "\(stopped)")

        // 3. The lift resumes the migration: the step runs again, as attempt 1, to its end.
        #expect(try await lockstep(["line", "resume", "stop-11", "--reason", "incident 11 resolved"]).status == 0)
        try await eventually("m1 succeeded", seconds: 60) { try await status().contains("succeeded") }
        #expect(ran() == ["started 1", "stopped 1", "started 1", "finished 1"])
        agent.kill(SIGTERM)
        _ = try await agent.wait(seconds: 30)
    }
}
