import Foundation
import LockstepTestSupport
import Testing

/// Issue 16's failover test with real processes: three `lockstep serve --store` coordinators on one
/// PostgreSQL database, reference agents given all three addresses, a migration running; the writer is
/// SIGKILLed mid-step, again and again. Each time another takes over, the agents follow by themselves,
/// the migration finishes, the history verifies, and no step completes twice.
@Suite(.serialized) struct FailoverTests {
    static let plan = """
        name: failover
        services:
          orders: { owners: [orders-team] }
        nodes:
          - { id: n1, service: orders, phase: backfill, action: work, timeouts: { heartbeat: 2s } }
          - { id: n2, service: orders, phase: backfill, action: work, needs: [n1], timeouts: { heartbeat: 2s } }
          - { id: n3, service: orders, phase: backfill, action: work, needs: [n2], timeouts: { heartbeat: 2s } }
          - { id: n4, service: orders, phase: backfill, action: work, needs: [n3], timeouts: { heartbeat: 2s } }
          - { id: n5, service: orders, phase: backfill, action: work, needs: [n4], timeouts: { heartbeat: 2s } }
          - { id: n6, service: orders, phase: backfill, action: work, needs: [n5], timeouts: { heartbeat: 2s } }
          - { id: n7, service: orders, phase: backfill, action: work, needs: [n6], timeouts: { heartbeat: 2s } }
          - { id: n8, service: orders, phase: backfill, action: work, needs: [n7], timeouts: { heartbeat: 2s } }
        """

    /// One coordinator slot: its ports stay the same when its process is replaced.
    struct Slot {
        var grpc: Int
        var http: Int
        var process: ChildProcess?
        var address: String { "127.0.0.1:\(grpc)" }
    }

    func start(_ slot: inout Slot, name: String, store: String, directory: String) throws {
        slot.process = try ChildProcess(try lockstepBinary(), [
            "serve", "--store", store, "--dev", "--grpc-listen", slot.address, "--http-listen", "127.0.0.1:\(slot.http)",
            "--coordinator-id", name, "--leadership-ttl-ms", "1000", "--ready-file", directory + "/\(name).ready",
        ])
    }

    @Test(.timeLimit(.minutes(3)))
    func killingTheWriterRepeatedlyLosesNothingAndTheMigrationFinishes() async throws {
        let postgres = TestPostgres.shared
        let database = try await postgres.makeDatabase()
        let store = try await postgres.url(database)
        let directory = temporaryDirectory()
        try Self.plan.write(toFile: directory + "/plan.yaml", atomically: true, encoding: .utf8)
        try FileManager.default.createDirectory(atPath: directory + "/handlers", withIntermediateDirectories: true)
        try "#!/bin/sh\nsleep 0.6\necho done\n".write(toFile: directory + "/handlers/work", atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: directory + "/handlers/work")

        var slots = try (0..<3).map { _ in Slot(grpc: try TestPostgres.freePort(), http: try TestPostgres.freePort()) }
        var names: [String] = []
        for index in slots.indices {
            names.append("c\(index)")
            try start(&slots[index], name: names[index], store: store, directory: directory)
        }
        defer { for slot in slots { slot.process?.kill(SIGKILL) } }
        let servers = slots.map(\.address).joined(separator: ",")
        let environment = ["LOCKSTEP_SERVER": servers, "LOCKSTEP_TOKEN": ""]
        func lockstep(_ arguments: [String]) async throws -> ProcessOutput {
            try await ChildProcess(try lockstepBinary(), arguments, environment: environment).wait(seconds: 60)
        }
        /// The holder of the live leadership lease ("" while none).
        func writer() async throws -> String {
            try await postgres.psql(database, "SELECT holder FROM lockstep_leader WHERE expires_at > clock_timestamp()")
                .trimmingCharacters(in: .whitespacesAndNewlines)
        }
        try await eventually("a writer serves", seconds: 30) { await ((try? writer()) ?? "") != "" }
        let applied = try await lockstep(["plan", "apply", directory + "/plan.yaml"])
        #expect(applied.status == 0, "\(applied)")
        let begun = try await lockstep(["migration", "start", "failover@1", "--id", "f1"])
        #expect(begun.status == 0, "\(begun)")
        let agents = try (1...2).map { number in
            try ChildProcess(try lockstepBinary(), ["agent", "--service", "orders", "--handlers", directory + "/handlers", "--id", "agent-\(number)",
                                                    "--poll-wait-ms", "2000"], environment: environment)
        }
        defer { for agent in agents { agent.kill(SIGKILL) } }

        var deposed: [String] = []
        for round in 0..<3 {
            // A step is running (each takes 0.6 s): kill the writer in the middle of it, with no goodbye.
            try await Task.sleep(for: .milliseconds(1_200 + 250 * round))
            let doomed = try await writer()
            let slot = try #require(names.firstIndex(of: doomed), "the writer \(doomed) is one of ours: \(names)")
            slots[slot].process?.kill(SIGKILL)
            _ = try await slots[slot].process?.wait(seconds: 10)
            deposed.append(doomed)
            // Another takes over; the killed one is replaced by a new process on the same ports.
            try await eventually("a standby takes over from \(doomed)", seconds: 20) {
                let now = try await writer()
                return !now.isEmpty && now != doomed
            }
            names[slot] = "c\(names.count + round)-r"
            try start(&slots[slot], name: names[slot], store: store, directory: directory)
        }
        try await eventually("the migration succeeds", seconds: 90) {
            try await lockstep(["migration", "status", "f1", "--output", "json"]).stdout.contains("MIGRATION_STATUS_SUCCEEDED")
        }
        #expect(Set(deposed).count == 3, "three different writers were killed: \(deposed)")

        let verified = try await runLockstep(["history", "verify", "--store", store])
        #expect(verified.status == 0, "\(verified)")
        let exported = try await runLockstep(["history", "export", "--store", store])
        let completions = exported.stdout.split(separator: "\n").filter { $0.contains(#""step_completed":{"#) }
        for node in 1...8 {
            let count = completions.filter { $0.contains(#""node_id":"n\#(node)""#) }.count
            #expect(count == 1, "n\(node) completed \(count) times")
        }
        // What the agents saw acknowledged (each "completed") is in the log, once each.
        let said = agents.map(\.stdout).joined().split(separator: "\n").filter { $0.hasSuffix(": completed") }
        #expect(said.count <= 8 && said.count >= 5, "\(said)")
        let epochs = try await postgres.psql(database, "SELECT epoch FROM lockstep_head")
        #expect(Int(epochs.trimmingCharacters(in: .whitespacesAndNewlines)) == 4, "one epoch per writer: \(epochs)")
    }
}
