import Foundation
import LockstepTestSupport
import Testing

/// Issue 20's `migration start --wait` and `migration wait` against a real server with a real agent: one
/// plain line per event (no terminal control sequences), and an exit status per outcome: 0 succeeded,
/// 5 rolled back, 7 paused, 8 still waiting at a gate when the timeout passed.
@Suite(.serialized, .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/curl"), "needs curl (ops/test installs it)"))
struct WaitEndToEndTests {
    /// A two-node plan: `expand` then `backfill`, whose handler fails for good when DIR/fail exists; with
    /// `gated`, backfill needs an approval.
    static func plan(_ name: String, gated: Bool = false) -> String {
        """
        name: \(name)
        services:
          orders: { owners: [orders-team] }
        nodes:
          - id: expand
            service: orders
            phase: expand
            action: add-column
            rollback: { action: drop-column }
          - id: backfill
            service: orders
            phase: backfill
            action: backfill
            needs: [expand]
        \(gated ? "    approvals: { minimum: 1 }" : "")
            rollback: { action: unbackfill }
        """
    }

    static let handler = """
        #!/bin/sh
        cat > /dev/null
        dir="$(dirname "$0")/.."
        echo "$LOCKSTEP_ACTION $LOCKSTEP_STEP_KIND" >> "$dir/ran.log"
        if [ "$LOCKSTEP_ACTION" = backfill ] && [ -e "$dir/fail" ]; then echo "backfill broke" >&2; exit 1; fi

        """

    @Test func waitAnswersWithAnExitStatusPerOutcome() async throws {
        let bench = try await GateBench([.init(name: "olga", role: "operator", token: "operator-token-oooooooooooooooo"),
                                         .init(name: "orders-agent", role: "agent", services: ["orders"], token: "agent-token-ooooooooooooooooooo")],
                                        handlers: Dictionary(uniqueKeysWithValues: ["add-column", "drop-column", "backfill", "unbackfill"].map { ($0, Self.handler) }))
        let directory = bench.directory
        for (name, gated) in [("plain", false), ("gated", true)] {
            try Self.plan(name, gated: gated).write(toFile: directory + "/\(name).yaml", atomically: true, encoding: .utf8)
            #expect(try await bench.lockstep(["plan", "apply", directory + "/\(name).yaml"], as: "olga").status == 0)
        }
        let agent = try bench.agent("orders", as: "orders-agent")
        defer { agent.kill(SIGKILL) }

        // Succeeded: 0, with one plain line per event and the outcome last.
        let good = try await bench.lockstep(["migration", "start", "plain", "--id", "m1", "--wait", "--timeout", "60s"], as: "olga")
        #expect(good.status == 0, "\(good)")
        let lines = good.stdout.split(separator: "\n")
        #expect(lines.first == "m1" && lines.last == "m1: succeeded", "\(good.stdout)")
        #expect(lines.contains { $0.hasPrefix("#") && $0.contains("step_completed") && $0.contains("backfill") }, "\(good.stdout)")
        #expect(!good.stdout.contains("\u{1B}"), "no terminal control sequences in a pipe")

        // Rolled back: 5.
        #expect(FileManager.default.createFile(atPath: directory + "/fail", contents: Data()))
        let bad = try await bench.lockstep(["migration", "start", "plain", "--id", "m2", "--wait"], as: "olga")
        #expect(bad.status == 5, "\(bad)")
        #expect(bad.stdout.split(separator: "\n").last?.hasPrefix("m2: rolled back: node backfill failed after 1 attempt") == true, "\(bad.stdout)")
        try FileManager.default.removeItem(atPath: directory + "/fail")

        // At a gate nobody approves: 8 when the timeout passes, saying who must act.
        let gated = try await bench.lockstep(["migration", "start", "gated", "--id", "m3", "--wait", "--timeout", "10s"], as: "olga")
        #expect(gated.status == 8, "\(gated)")
        #expect(gated.stdout.contains("m3: still running when the timeout passed: backfill awaits approval (0 of 1; lockstep migration approve m3 backfill)"),
                "\(gated.stdout)")

        // Paused: 7, naming the command that resumes it.
        #expect(try await bench.lockstep(["migration", "pause", "m3", "--reason", "release freeze"], as: "olga").status == 0)
        let paused = try await bench.lockstep(["migration", "wait", "m3"], as: "olga")
        #expect(paused.status == 7, "\(paused)")
        #expect(paused.stdout.contains("m3: paused, waiting for a person: release freeze (lockstep migration resume m3, or abort)"), "\(paused.stdout)")

        // A migration that already settled answers at once.
        let again = try await bench.lockstep(["migration", "wait", "m1"], as: "olga")
        #expect(again.status == 0 && again.stdout.hasSuffix("m1: succeeded\n"), "\(again)")
        agent.kill(SIGTERM)
        _ = try await agent.wait(seconds: 30)
    }
}
