import Foundation
import LockstepCore
import LockstepTestSupport
import Testing

/// Issue 19's end-to-end test of freezes, with a real server, a real agent and the CLI: a freeze lets a
/// running step finish, holds the next forward step, and lets the rollback through; an operator's
/// break-glass is refused, an admin's lets one node through; a stop of the line pauses what it
/// touches and its lift resumes it; the history and /metrics say all of it.
@Suite(.serialized, .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/curl"), "needs curl (ops/test installs it)"))
struct FreezeEndToEndTests {
    static let plan = """
        name: orders-split
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
            rollback: { action: unbackfill }
        """

    /// Records what it was asked to do; add-column first waits (up to 60 s) for the test to say go.
    static let handler = """
        #!/bin/sh
        cat > /dev/null
        dir="$(dirname "$0")/.."
        if [ "$LOCKSTEP_ACTION" = add-column ]; then
          i=0
          while [ ! -e "$dir/go" ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done
        fi
        echo "$LOCKSTEP_ACTION $LOCKSTEP_STEP_KIND" >> "$dir/ran.log"

        """

    @Test func aFreezeHoldsForwardStepsLetsTheRollbackThroughAndBreakGlassAndStopTheLineAreRecorded() async throws {
        let bench = try await GateBench([.init(name: "olga", role: "operator", token: "operator-token-oooooooooooooooo"),
                                         .init(name: "root", role: "admin", token: "admin-token-rrrrrrrrrrrrrrrrrrr"),
                                         .init(name: "orders-agent", role: "agent", services: ["orders"], token: "agent-token-ooooooooooooooooooo")],
                                        handlers: Dictionary(uniqueKeysWithValues: ["add-column", "drop-column", "backfill", "unbackfill"].map { ($0, Self.handler) }))
        let directory = bench.directory
        try Self.plan.write(toFile: directory + "/plan.yaml", atomically: true, encoding: .utf8)
        func lockstep(_ arguments: [String], as who: String = "olga") async throws -> ProcessOutput { try await bench.lockstep(arguments, as: who) }
        func ran() -> [String] { bench.ran() }
        func status(_ id: String) async throws -> String { try await lockstep(["migration", "status", id]).stdout }

        #expect(try await lockstep(["plan", "apply", directory + "/plan.yaml"]).status == 0)
        #expect(try await lockstep(["migration", "start", "orders-split", "--id", "m1"]).stdout == "m1\n")
        let agent = try bench.agent("orders", as: "orders-agent")
        defer { agent.kill(SIGKILL) }

        // 1. A freeze declared while expand runs: expand finishes and reports; backfill does not start.
        try await eventually("expand runs") { try await status("m1").contains("token 1") }
        let declared = try await lockstep(["freeze", "add", "--service", "orders", "--reason", "quarter close", "--id", "q4"])
        #expect(declared.status == 0 && declared.stdout.contains("declared q4: orders from"), "\(declared)")
        #expect(FileManager.default.createFile(atPath: directory + "/go", contents: Data()))
        try await eventually("backfill is frozen") { try await status("m1").contains("frozen by q4 until it is ended") }
        try await Task.sleep(for: .seconds(2))
        #expect(ran() == ["add-column forward"], "no forward step under the freeze")
        let list = try await lockstep(["freeze", "list"]).stdout
        #expect(list.contains("q4") && list.contains("in force") && list.contains("quarter close"), "\(list)")

        // 2. An operator may not break the glass; the refusal names why.
        let refused = try await lockstep(["migration", "break-glass", "m1", "backfill", "--scope", "freeze", "--justification", "please"])
        #expect(refused.status != 0 && refused.stderr.contains("break_glass_not_admin"), "\(refused)")

        // 3. The rollback passes the freeze.
        #expect(try await lockstep(["migration", "abort", "m1", "--reason", "the backfill waits for Q1"]).status == 0)
        try await eventually("m1 rolled back", seconds: 60) { try await status("m1").contains("rolled_back") }
        #expect(ran() == ["add-column forward", "drop-column rollback"])

        // 4. An admin breaks the glass for m2's expand (only): it runs under the freeze; backfill waits.
        #expect(try await lockstep(["migration", "start", "orders-split", "--id", "m2"]).status == 0)
        try await eventually("m2's expand is frozen") { try await status("m2").contains("frozen by q4") }
        let glass = try await lockstep(["migration", "break-glass", "m2", "expand", "--scope", "freeze", "--justification", "sev1: the fix needs the column"],
                                       as: "root")
        #expect(glass.status == 0 && glass.stdout.contains("break_glass"), "\(glass)")
        try await eventually("m2's expand ran and backfill is frozen") {
            let now = try await status("m2")
            return ran().count == 3 && now.contains("frozen by q4")
        }
        #expect(try await status("m2").contains("BREAK-GLASS: freeze"))

        // 5. Stop the line on orders: m2 is paused; ending q4 does not resume it; lifting the stop does.
        let stop = try await lockstep(["line", "stop", "--service", "orders", "--reason", "incident 9", "--id", "stop-9"])
        #expect(stop.status == 0 && stop.stdout.contains("paused: m2"), "\(stop)")
        #expect(try await status("m2").contains("paused (the line was stopped by olga (freeze stop-9 on orders): incident 9)"))
        #expect(try await lockstep(["freeze", "end", "q4", "--reason", "quarter closed"]).status == 0)
        try await Task.sleep(for: .seconds(1))
        #expect(ran().count == 3, "paused by the stop: nothing starts")
        let lifted = try await lockstep(["line", "resume", "stop-9", "--reason", "incident 9 resolved"])
        #expect(lifted.stdout.contains("resumed: m2"), "\(lifted)")
        try await eventually("m2 succeeded", seconds: 60) { try await status("m2").contains("succeeded") }
        #expect(ran() == ["add-column forward", "drop-column rollback", "add-column forward", "backfill forward"])

        // 6. What a reviewer reads.
        let export = try await lockstep(["history", "export"]).stdout.split(separator: "\n")
        let freezes = export.filter { $0.contains(#""stream":"freeze/"#) }
        #expect(freezes.count == 4, "\(freezes)")
        let breakGlass = try #require(export.first { $0.contains(#""break_glass""#) })
        #expect(breakGlass.contains(#""justification":"sev1: the fix needs the column""#) && breakGlass.contains(#""by":"root""#), "\(breakGlass)")
        #expect(try await lockstep(["history", "verify"]).status == 0)
        let metrics = try await bench.http("/metrics", as: "olga")
        #expect(metrics.contains(#"lockstep_break_glass_total{scope="freeze"} 1"#), "\(metrics)")
        #expect(metrics.contains("lockstep_line_stop_pauses_total 1"))
        #expect(metrics.contains("lockstep_freezes_in_force 0"))
        agent.kill(SIGTERM)
        _ = try await agent.wait(seconds: 30)
    }

    /// Replay never reads a clock or a time-zone database: histories with freezes, a stop of the line
    /// and a break-glass (the golden scenario-v5), and with change windows in Europe/Berlin across a
    /// daylight-saving change (scenario-v6), and with preflight checks that block, pass and roll back
    /// (scenario-v7), replay to the digests recorded with them in processes with
    /// other time zones, no tzdata, and a tzdata whose Europe/Berlin is Tokyo's.
    @Test(arguments: ["scenario-v5", "scenario-v6", "scenario-v7"])
    func replayGivesTheSameDigestUnderAnyTimeZoneAndTzdata(_ history: String) async throws {
        let golden = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("LockstepEngineTests/Golden").path
        let directory = temporaryDirectory()
        try FileManager.default.copyItem(atPath: golden + "/\(history).sqlite", toPath: directory + "/events.sqlite")
        let recorded = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: golden + "/\(history).digests.json"))) as? [String: Any]
        let digests = try #require(recorded?["digests"] as? [String: String])
        let last = try #require(digests.keys.compactMap(Int.init).max())
        // A tzdata that says Berlin is at +09:00.
        let fakeZones = temporaryDirectory()
        try FileManager.default.createDirectory(atPath: fakeZones + "/Europe", withIntermediateDirectories: true)
        if FileManager.default.fileExists(atPath: "/usr/share/zoneinfo/Asia/Tokyo") {
            try FileManager.default.copyItem(atPath: "/usr/share/zoneinfo/Asia/Tokyo", toPath: fakeZones + "/Europe/Berlin")
        }
        for environment in [["TZ": "UTC"], ["TZ": "Pacific/Auckland"], ["TZ": "America/St_Johns", "TZDIR": "/nonexistent"],
                            ["TZ": "Europe/Berlin", "TZDIR": fakeZones]] {
            let run = try await ChildProcess(try lockstepBinary(), ["history", "replay", "--data", directory, "--output", "json"], environment: environment)
                .wait(seconds: 60)
            #expect(run.status == 0, "\(environment): \(run.stderr)")
            #expect(run.stdout.contains("\"digest\" : \"\(digests[String(last)] ?? "?")\""), "\(environment)")
        }
    }
}
