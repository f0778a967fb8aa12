import Foundation
import LockstepCore
import LockstepTestSupport
import Testing

/// Issue 19's end-to-end test of change windows, with a real server, a real agent and the CLI: a node
/// outside its window waits (status and the API say until when, the agent runs nothing); an operator's
/// break-glass is refused, an admin's lets it through; the rest of the plan runs; the history records
/// the zones and the override; a plan naming a zone nobody knows is refused.
@Suite(.serialized, .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/curl"), "needs curl (ops/test installs it)"))
struct WindowEndToEndTests {
    /// A one-hour window three days from today (UTC): closed now, and open within the week.
    static var closedWindow: String {
        let days = Int(floor(Date().timeIntervalSince1970 / 86_400))
        // 1970-01-01 was a Thursday (index 3, Monday being 0).
        let weekday = (days + 3 + 3) % 7
        return "\(ChangeWindow.dayNames[weekday]) 12:00-13:00 UTC"
    }

    static func plan(window: String) -> String {
        """
        name: windowed
        services:
          orders: { owners: [orders-team] }
        nodes:
          - id: expand
            service: orders
            phase: expand
            action: add-column
            windows: ["\(window)"]
            rollback: { action: drop-column }
          - id: backfill
            service: orders
            phase: backfill
            action: backfill
            needs: [expand]
            rollback: { action: unbackfill }
        """
    }

    @Test func aNodeWaitsForItsWindowAndAnAdminsBreakGlassLetsItThrough() async throws {
        let step = "#!/bin/sh\ncat > /dev/null\necho \"$LOCKSTEP_ACTION $LOCKSTEP_STEP_KIND\" >> \"$(dirname \"$0\")/../ran.log\"\n"
        let bench = try await GateBench([.init(name: "olga", role: "operator", token: "operator-token-oooooooooooooooo"),
                                         .init(name: "root", role: "admin", token: "admin-token-rrrrrrrrrrrrrrrrrrr"),
                                         .init(name: "orders-agent", role: "agent", services: ["orders"], token: "agent-token-ooooooooooooooooooo")],
                                        handlers: ["add-column": step, "drop-column": step, "backfill": step, "unbackfill": step])
        let directory = bench.directory
        let window = Self.closedWindow
        try Self.plan(window: window).write(toFile: directory + "/plan.yaml", atomically: true, encoding: .utf8)
        try Self.plan(window: "Mon-Fri 09:00-16:00 Mars/Olympus_Mons").write(toFile: directory + "/mars.yaml", atomically: true, encoding: .utf8)
        func lockstep(_ arguments: [String], as who: String = "olga") async throws -> ProcessOutput { try await bench.lockstep(arguments, as: who) }
        func ran() -> [String] { bench.ran() }
        func status(_ id: String) async throws -> String { try await lockstep(["migration", "status", id]).stdout }

        // 1. A zone nobody knows is refused with its code, before anything is recorded.
        let mars = try await lockstep(["plan", "apply", directory + "/mars.yaml"])
        #expect(mars.status != 0 && (mars.stdout + mars.stderr).contains("unknown_time_zone"), "\(mars)")

        // 2. Outside its window the node waits, saying which window and until when; the agent runs nothing.
        #expect(try await lockstep(["plan", "apply", directory + "/plan.yaml"]).status == 0)
        #expect(try await lockstep(["migration", "start", "windowed", "--id", "m1"]).stdout == "m1\n")
        let agent = try bench.agent("orders", as: "orders-agent")
        defer { agent.kill(SIGKILL) }
        try await eventually("expand waits for its window") {
            let now = try await status("m1")
            return now.contains("waiting_for_window") && now.contains("window closed (\(window)) until ")
        }
        let listed = try await bench.http("/v1/migrations/get", as: "olga", body: #"{"migration_id": "m1"}"#)
        #expect(listed.contains("NODE_STATUS_WAITING_FOR_WINDOW") && listed.contains(#""window_closed":"\#(window)""#), "\(listed)")
        try await Task.sleep(for: .seconds(2))
        #expect(ran().isEmpty, "no forward step outside the window")
        let metrics = try await bench.http("/metrics", as: "olga")
        #expect(metrics.contains("lockstep_nodes_waiting_for_window 1"), "\(metrics)")

        // 3. An operator may not break the glass; an admin may, and the node runs, then the rest of the plan.
        let refused = try await lockstep(["migration", "break-glass", "m1", "expand", "--scope", "window", "--justification", "please"])
        #expect(refused.status != 0 && refused.stderr.contains("break_glass_not_admin"), "\(refused)")
        let glass = try await lockstep(["migration", "break-glass", "m1", "expand", "--scope", "window", "--justification", "sev1: ship the fix now"],
                                       as: "root")
        #expect(glass.status == 0, "\(glass)")
        try await eventually("m1 succeeded", seconds: 60) { try await status("m1").contains("succeeded") }
        #expect(ran() == ["add-column forward", "backfill forward"])

        // 4. What a reviewer reads: the recorded zone offsets and the override, with who and why.
        let export = try await lockstep(["history", "export"]).stdout.split(separator: "\n")
        let started = try #require(export.first { $0.contains(#""migration_started""#) })
        #expect(started.contains(#""zones":[{"zone":"UTC"}]"#), "UTC recorded, at offset 0 with no changes: \(started)")
        let breakGlass = try #require(export.first { $0.contains(#""break_glass""#) })
        #expect(breakGlass.contains(#""scope":"window""#) && breakGlass.contains(#""by":"root""#), "\(breakGlass)")
        #expect(try await lockstep(["history", "verify"]).status == 0)
        let after = try await bench.http("/metrics", as: "olga")
        #expect(after.contains(#"lockstep_break_glass_total{scope="window"} 1"#), "\(after)")
        agent.kill(SIGTERM)
        _ = try await agent.wait(seconds: 30)
    }
}
