import Foundation
import LockstepServer
import LockstepTestSupport
import Testing
import LockstepService

/// The CLI, the agent and the API after an answer that never came: an HTTP/2 proxy in front of the
/// server (`Agents/answer-cutter.py`) loses the answer to one call, or resets one stream, and the tests
/// check that nothing is run twice, printed twice or stranded. Part of `CLIEndToEndTests` (its worlds
/// and its serialized suite).
extension CLIEndToEndTests {
    /// The proxy: `answer-cutter.py LISTEN_PORT TARGET_PORT [METHOD[#N] [reset-after=K]]`.
    static let answerCutter = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Agents/answer-cutter.py").path

    /// With several servers the CLI runs a command again on the next one after `unavailable`, but only while
    /// nothing of it can have taken effect. Before, a write whose answer was lost (carried out, then the
    /// connection dropped) ran again on the next address: `freeze add` declared two freezes.
    @Test func aWriteWhoseAnswerIsLostIsNotRunAgainOnTheNextServer() async throws {
        let world = try await world()
        let cutterPort = try TestPostgres.freePort()
        let cutter = try ChildProcess("/usr/bin/env", ["python3", Self.answerCutter, "\(cutterPort)", String(world.address.split(separator: ":").last ?? "")])
        defer { cutter.kill(SIGKILL) }
        try await cutter.waitForOutput("ready", seconds: 10)
        let lost = try await world.lockstep(["freeze", "add", "--service", "orders", "--reason", "quarter close"], server: "127.0.0.1:\(cutterPort),\(world.address)")
        #expect(lost.status == 3 && lost.stderr.contains("was lost before the answer") && lost.stderr.contains("may have been carried out"), "\(lost)")
        let listed = try await world.lockstep(["freeze", "list", "--output", "json"])
        #expect(listed.stdout.components(separatedBy: "quarter close").count == 2, "one freeze, not two: \(listed.stdout)")
        // A first address that refuses connections: nothing went out, so the write runs on the next one
        // (this also checks that the transport's wording of a call that never left is still recognised).
        let refused = try await world.lockstep(["freeze", "add", "--service", "orders", "--reason", "year end"], server: "127.0.0.1:\(try TestPostgres.freePort()),\(world.address)")
        #expect(refused.status == 0, "\(refused)")
        #expect(try await world.lockstep(["freeze", "list", "--output", "json"]).stdout.contains("year end"))
    }

    /// Migration `migration` of a one-node plan (`switch`, service orders, heartbeat 5 s) started, and an
    /// orders agent reaching the server through `answer-cutter.py`, which loses the answer to the agent's
    /// first call of `method` (Poll, Complete). `parkedFirst`: the agent's poll is parked before the
    /// migration starts, so the start's own append leases it the step (a claim). `cutting`: more of the
    /// proxy's arguments (`reset-after=K`). The proxy's address is `127.0.0.1:cutterPort`.
    static func orderAgentLosingAnAnswer(_ world: World, to method: String, migration: String, parkedFirst: Bool = false, cutting: [String] = []) async throws
        -> (cutter: ChildProcess, agent: ChildProcess, cutterPort: Int) {
        try "name: one\nservices:\n  orders: { owners: [orders-team] }\nnodes:\n  - id: switch\n    service: orders\n    phase: live\n    action: flip-flag\n    timeouts: { heartbeat: 5s }\n"
            .write(toFile: world.directory + "/one.yaml", atomically: true, encoding: .utf8)
        #expect(try await world.lockstep(["plan", "apply", world.directory + "/one.yaml"]).status == 0)
        if !parkedFirst { #expect(try await world.lockstep(["migration", "start", "one@1", "--id", migration]).status == 0) }
        let cutterPort = try TestPostgres.freePort()
        let cutter = try ChildProcess("/usr/bin/env", ["python3", answerCutter, "\(cutterPort)", String(world.address.split(separator: ":").last ?? ""), method] + cutting)
        try await cutter.waitForOutput("ready", seconds: 10)
        let agent = try ChildProcess(try lockstepBinary(), ["agent", "--service", "orders", "--handlers", world.directory + "/handlers", "--id", "orders-1"],
                                     environment: world.environment("orders-agent", server: "127.0.0.1:\(cutterPort)"))
        if parkedFirst {
            try await eventually("the agent's poll is parked") {
                try await ChildProcess("/usr/bin/curl", ["-sS", "-H", "Authorization: Bearer \(tokens["alice"]!)", world.server.url + "/metrics"])
                    .wait(seconds: 30).stdout.contains("lockstep_parked_polls 1")
            }
            #expect(try await world.lockstep(["migration", "start", "one@1", "--id", migration]).status == 0)
        }
        return (cutter, agent, cutterPort)
    }

    /// The reference agent retries a report after `unavailable`; when the first try was carried out and only
    /// its answer was lost, the retry is refused (and the lease has ended): the agent says the report was
    /// most likely taken, not that it was refused or that nothing was reported. The step completes once.
    @Test func anAgentWhoseReportsAnswerIsLostSaysItWasMostLikelyTaken() async throws {
        let world = try await world()
        let (cutter, agent, _) = try await Self.orderAgentLosingAnAnswer(world, to: "Complete", migration: "c1")
        defer { cutter.kill(SIGKILL); agent.kill(SIGKILL) }
        try await eventually("the migration succeeds") {
            try await world.lockstep(["migration", "status", "c1", "--output", "json"]).stdout.contains("MIGRATION_STATUS_SUCCEEDED")
        }
        try await agent.waitForOutput("the report was most likely taken", seconds: 30)
        #expect(!agent.stdout.contains("the report was refused") && !agent.stdout.contains("nothing reported"), "\(agent.stdout)")
        let events = try await world.lockstep(["history", "export"])
        #expect(events.stdout.components(separatedBy: "step_completed").count == 2, "one completion: \(events.stdout)")
    }

    /// The reference agent names each poll (`poll_id`) and sends a poll whose answer was lost again under
    /// the same name: the step that poll leased comes back, and runs at once. Before, the step waited out
    /// its lease (5 s here) and was leased again, its first lease recorded as an agent lost.
    /// Either way a step is leased: by the poll's own look (the migration started first), or in the append
    /// that readied it, to the poll parked on its service (a claim).
    @Test(arguments: [false, true])
    func aPollWhoseAnswerIsLostGetsItsStepBackWhenSentAgain(parkedFirst: Bool) async throws {
        let world = try await world()
        let (cutter, agent, _) = try await Self.orderAgentLosingAnAnswer(world, to: "Poll", migration: "n1", parkedFirst: parkedFirst)
        defer { cutter.kill(SIGKILL); agent.kill(SIGKILL) }
        try await agent.waitForOutput("cannot poll", seconds: 30)
        // The answer lost carried the step (a poll answered with nothing to do is 8 bytes).
        try await cutter.waitForOutput("cut ", seconds: 10)
        let cut = cutter.stdout.split(separator: "\n").first { $0.hasPrefix("cut ") }.flatMap { Int($0.split(separator: " ")[1]) } ?? 0
        #expect(cut > 40, "\(cutter.stdout)")
        try await eventually("the migration succeeds") {
            try await world.lockstep(["migration", "status", "n1", "--output", "json"]).stdout.contains("MIGRATION_STATUS_SUCCEEDED")
        }
        let events = try await world.lockstep(["history", "export"]).stdout
        #expect(events.components(separatedBy: "\"step_leased\"").count == 2, "one lease: \(events)")
        #expect(!events.contains("taken as lost"), "\(events)")
        #expect(events.contains("\"poll_id\":\"poll-"), "the lease records the poll's name: \(events)")
    }

    /// `migration wait` watches the migration while it polls its status: when a transient failure cuts
    /// the watch off (here the proxy resets the watch's stream after two events; the connection and the
    /// status polls go on), the watch is opened again after the last line printed. Before, the event lines
    /// stopped there and the wait still ended with its summary, every line after the cut missing.
    /// `migration watch`, one line per event or NDJSON, goes on after its last line on the next address.
    @Test(arguments: [["migration", "wait", "w1"], ["migration", "watch", "w1", "--plain"], ["migration", "watch", "w1", "--output", "json"]])
    func aWatchCutOffGoesOnAfterItsLastLine(_ command: [String]) async throws {
        let world = try await world()
        let (cutter, agent, cutterPort) = try await Self.orderAgentLosingAnAnswer(world, to: "Watch", migration: "w1", cutting: ["reset-after=2"])
        defer { cutter.kill(SIGKILL); agent.kill(SIGKILL) }
        let waited = try await world.lockstep(command, server: "127.0.0.1:\(cutterPort),\(world.address)")
        #expect(cutter.stdout.contains("reset"), "the watch was cut off: \(cutter.stdout)")
        #expect(waited.status == 0, "\(waited)")
        // The migration's events, as `history export` prints them (the plan's event is not the migration's).
        let exported = try await world.lockstep(["history", "export"]).stdout.split(separator: "\n").dropFirst()
        if command.last == "json" {
            // Each event once, in order, exactly the export's line.
            #expect(waited.stdout.split(separator: "\n").filter { $0.hasPrefix("{") } == Array(exported), "\(waited.stdout)")
        } else {
            let lines = waited.stdout.split(separator: "\n").filter { $0.hasPrefix("#") }
            #expect(Set(lines).count == lines.count, "no line twice: \(waited.stdout)")
            #expect(lines.count == exported.count, "every event of the migration once: \(waited.stdout)")
        }
    }

    /// `history export` from a server reads the log a page (1,000 events) at a time; when a page's call
    /// fails `unavailable`, the export goes on from the last event it printed on the next address. Before,
    /// it started again from the beginning and printed the first page twice.
    @Test func anExportCutOffAfterAPageGoesOnFromThereOnTheNextServer() async throws {
        let directory = temporaryDirectory()
        // Two pages at least: a second of load at a time until the log holds more than 1,000 events (a
        // loaded machine appends fewer in a second).
        var (logged, lines) = ("", 0)
        for run in 1...20 where lines <= 1_000 {
            let load = try await ChildProcess(try lockstepBinary(), ["debug", "append-load", "--data", directory + "/data", "--seconds", "1", "--writers", "2",
                                                                     "--tag", "run\(run)"]).wait(seconds: 60)
            try #require(load.status == 0, "\(load)")
            let local = try await ChildProcess(try lockstepBinary(), ["history", "export", "--data", directory + "/data"]).wait(seconds: 60)
            try #require(local.status == 0, "\(local.stderr)")
            (logged, lines) = (local.stdout, local.stdout.split(separator: "\n").count)
        }
        try #require(lines > 1_000, "two pages at least: \(lines) events")
        let server = try await ServerProcess(data: directory)
        defer { server.process.kill(SIGKILL) }
        let cutterPort = try TestPostgres.freePort()
        let cutter = try ChildProcess("/usr/bin/env", ["python3", Self.answerCutter, "\(cutterPort)", String(server.grpc.split(separator: ":").last ?? ""), "ListEvents#2"])
        defer { cutter.kill(SIGKILL) }
        try await cutter.waitForOutput("ready", seconds: 10)
        let exported = try await ChildProcess(try lockstepBinary(), ["history", "export"], environment: ["LOCKSTEP_SERVER": "127.0.0.1:\(cutterPort),\(server.grpc)"]).wait(seconds: 60)
        #expect(exported.status == 0, "\(exported.stderr)")
        let exportedLines = exported.stdout.split(separator: "\n").count
        #expect(exportedLines == lines, "every event once")
        let same = exported.stdout == logged
        #expect(same, "the export through the servers is the log's own")
    }
}
