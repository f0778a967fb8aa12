import Foundation
import LockstepCore
import LockstepService
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

    static let tokens = ["olga": "operator-token-oooooooooooooooo", "root": "admin-token-rrrrrrrrrrrrrrrrrrr",
                         "orders-agent": "agent-token-ooooooooooooooooooo"]

    @Test func aNodeWaitsForItsWindowAndAnAdminsBreakGlassLetsItThrough() async throws {
        let directory = temporaryDirectory()
        let t = Self.tokens
        try """
            {"principals": [
              {"name": "olga", "roles": ["operator"], "token_sha256": "\(AuthConfig.hash(t["olga"]!))"},
              {"name": "root", "roles": ["admin"], "token_sha256": "\(AuthConfig.hash(t["root"]!))"},
              {"name": "orders-agent", "roles": ["agent"], "services": ["orders"], "token_sha256": "\(AuthConfig.hash(t["orders-agent"]!))"}
            ]}
            """.write(toFile: directory + "/auth.json", atomically: true, encoding: .utf8)
        let server = try await ServerProcess(["--config", directory + "/auth.json"])
        try FileManager.default.createDirectory(atPath: directory + "/handlers", withIntermediateDirectories: true)
        for action in ["add-column", "drop-column", "backfill", "unbackfill"] {
            try "#!/bin/sh\ncat > /dev/null\necho \"$LOCKSTEP_ACTION $LOCKSTEP_STEP_KIND\" >> \"$(dirname \"$0\")/../ran.log\"\n"
                .write(toFile: directory + "/handlers/" + action, atomically: true, encoding: .utf8)
            try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: directory + "/handlers/" + action)
        }
        let window = Self.closedWindow
        try Self.plan(window: window).write(toFile: directory + "/plan.yaml", atomically: true, encoding: .utf8)
        try Self.plan(window: "Mon-Fri 09:00-16:00 Mars/Olympus_Mons").write(toFile: directory + "/mars.yaml", atomically: true, encoding: .utf8)
        func lockstep(_ arguments: [String], as who: String = "olga") async throws -> ProcessOutput {
            try await ChildProcess(try lockstepBinary(), arguments, environment: ["LOCKSTEP_SERVER": server.grpc, "LOCKSTEP_TOKEN": t[who]!])
                .wait(seconds: 60)
        }
        func ran() throws -> [String] {
            ((try? String(contentsOfFile: directory + "/ran.log", encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
        }
        func status(_ id: String) async throws -> String { try await lockstep(["migration", "status", id]).stdout }

        // 1. A zone nobody knows is refused with its code, before anything is recorded.
        let mars = try await lockstep(["plan", "apply", directory + "/mars.yaml"])
        #expect(mars.status != 0 && (mars.stdout + mars.stderr).contains("unknown_time_zone"), "\(mars)")

        // 2. Outside its window the node waits, saying which window and until when; the agent runs nothing.
        #expect(try await lockstep(["plan", "apply", directory + "/plan.yaml"]).status == 0)
        #expect(try await lockstep(["migration", "start", "windowed", "--id", "m1"]).stdout == "m1\n")
        let agent = try ChildProcess(try lockstepBinary(), ["agent", "--service", "orders", "--handlers", directory + "/handlers", "--id", "orders-1"],
                                     environment: ["LOCKSTEP_SERVER": server.grpc, "LOCKSTEP_TOKEN": t["orders-agent"]!])
        defer { agent.kill(SIGKILL) }
        try await eventually("expand waits for its window") {
            let now = try await status("m1")
            return now.contains("waiting_for_window") && now.contains("window closed (\(window)) until ")
        }
        let listed = try await ChildProcess("/usr/bin/curl", ["-sS", "-H", "authorization: Bearer \(t["olga"]!)", "-H", "content-type: application/json",
                                                             "-d", #"{"migration_id": "m1"}"#, server.url + "/v1/migrations/get"]).wait(seconds: 30).stdout
        #expect(listed.contains("NODE_STATUS_WAITING_FOR_WINDOW") && listed.contains(#""window_closed":"\#(window)""#), "\(listed)")
        try await Task.sleep(for: .seconds(2))
        #expect(try ran().isEmpty, "no forward step outside the window")
        let metrics = try await ChildProcess("/usr/bin/curl", ["-sS", "-H", "authorization: Bearer \(t["olga"]!)", server.url + "/metrics"])
            .wait(seconds: 30).stdout
        #expect(metrics.contains("lockstep_nodes_waiting_for_window 1"), "\(metrics)")

        // 3. An operator may not break the glass; an admin may, and the node runs, then the rest of the plan.
        let refused = try await lockstep(["migration", "break-glass", "m1", "expand", "--scope", "window", "--justification", "please"])
        #expect(refused.status != 0 && refused.stderr.contains("break_glass_not_admin"), "\(refused)")
        let glass = try await lockstep(["migration", "break-glass", "m1", "expand", "--scope", "window", "--justification", "sev1: ship the fix now"],
                                       as: "root")
        #expect(glass.status == 0, "\(glass)")
        try await eventually("m1 succeeded", seconds: 60) { try await status("m1").contains("succeeded") }
        #expect(try ran() == ["add-column forward", "backfill forward"])

        // 4. What a reviewer reads: the recorded zone offsets and the override, with who and why.
        let export = try await lockstep(["history", "export"]).stdout.split(separator: "\n")
        let started = try #require(export.first { $0.contains(#""migration_started""#) })
        #expect(started.contains(#""zones":[{"zone":"UTC"}]"#), "UTC recorded, at offset 0 with no changes: \(started)")
        let breakGlass = try #require(export.first { $0.contains(#""break_glass""#) })
        #expect(breakGlass.contains(#""scope":"window""#) && breakGlass.contains(#""by":"root""#), "\(breakGlass)")
        #expect(try await lockstep(["history", "verify"]).status == 0)
        let after = try await ChildProcess("/usr/bin/curl", ["-sS", "-H", "authorization: Bearer \(t["olga"]!)", server.url + "/metrics"])
            .wait(seconds: 30).stdout
        #expect(after.contains(#"lockstep_break_glass_total{scope="window"} 1"#), "\(after)")
        agent.kill(SIGTERM)
        _ = try await agent.wait(seconds: 30)
    }
}
