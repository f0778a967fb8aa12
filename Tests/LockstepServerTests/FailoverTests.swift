import Foundation
import LockstepTestSupport
import Testing

/// Issue 16's failover test with real processes: three `lockstep serve --store` coordinators on one
/// PostgreSQL database, reference agents given all three addresses, a migration running; the writer is
/// SIGKILLed mid-step, again and again. Each time another takes over, the agents follow by themselves,
/// the migration finishes, the history verifies, and no step completes twice.
@Suite(.serialized, .dropsPostgresDatabases) struct FailoverTests {
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

    /// Three coordinators on one database (each slot keeps its ports when its process is replaced),
    /// the plan applied and migration f1 started, two agents given every address.
    final class World: @unchecked Sendable {
        let postgres = TestPostgres.shared
        let database: String
        let store: String
        let directory = temporaryDirectory()
        var ports: [(grpc: Int, http: Int)] = []
        var processes: [ChildProcess?] = []
        var names: [String] = []
        var agents: [ChildProcess] = []
        var servers: String { ports.map { "127.0.0.1:\($0.grpc)" }.joined(separator: ",") }
        var environment: [String: String] { ["LOCKSTEP_SERVER": servers, "LOCKSTEP_TOKEN": ""] }

        /// The coordinators' leadership TTL: short where a takeover is what is tested, long where a
        /// writer that a loaded machine stalls past it would change hands mid-test for no reason.
        let leadershipTTLMillis: Int

        init(leadershipTTLMillis: Int = 1_000) async throws {
            self.leadershipTTLMillis = leadershipTTLMillis
            database = try await postgres.makeDatabase()
            store = try await postgres.url(database)
            try FailoverTests.plan.write(toFile: directory + "/plan.yaml", atomically: true, encoding: .utf8)
            try FileManager.default.createDirectory(atPath: directory + "/handlers", withIntermediateDirectories: true)
            try "#!/bin/sh\nsleep 0.6\necho done\n".write(toFile: directory + "/handlers/work", atomically: true, encoding: .utf8)
            try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: directory + "/handlers/work")
            for index in 0..<3 {
                ports.append((try TestPostgres.freePort(), try TestPostgres.freePort()))
                processes.append(nil)
                names.append("c\(index)")
                try start(index)
            }
            // The lease is taken before the writer has caught up and listens: wait until it answers.
            try await eventually("a writer serves", seconds: 60) { try await self.lockstep(["plan", "list"]).status == 0 }
            let applied = try await lockstep(["plan", "apply", directory + "/plan.yaml"])
            #expect(applied.status == 0, "\(applied)")
            let begun = try await lockstep(["migration", "start", "failover@1", "--id", "f1"])
            #expect(begun.status == 0, "\(begun)")
            agents = try (1...2).map { number in
                try ChildProcess(try lockstepBinary(), ["agent", "--service", "orders", "--handlers", directory + "/handlers", "--id", "agent-\(number)",
                                                        "--poll-wait-ms", "2000"], environment: environment)
            }
        }

        func stop() {
            for process in processes { process?.kill(SIGKILL) }
            for agent in agents { agent.kill(SIGKILL) }
        }

        /// Starts slot `index`'s coordinator as `names[index]`.
        func start(_ index: Int) throws {
            processes[index] = try ChildProcess(try lockstepBinary(), [
                "serve", "--store", store, "--dev", "--grpc-listen", "127.0.0.1:\(ports[index].grpc)", "--http-listen", "127.0.0.1:\(ports[index].http)",
                "--coordinator-id", names[index], "--leadership-ttl-ms", "\(leadershipTTLMillis)",
            ])
        }

        func lockstep(_ arguments: [String]) async throws -> ProcessOutput {
            try await ChildProcess(try lockstepBinary(), arguments, environment: environment).wait(seconds: 60)
        }

        /// The holder of the live leadership lease ("" while none).
        /// The writer, waiting (up to 20 s) while the lease is between holders: on a loaded machine a
        /// renewal can come after the lease lapsed, and nobody holds it for a moment.
        func writer() async throws -> String { try await writer(other: nil) }

        /// Waits for a writer other than `old`; returns it.
        func takeover(from old: String) async throws -> String { try await writer(other: old) }

        private func writer(other old: String?) async throws -> String {
            var found = ""
            try await eventually(old.map { "a standby takes over from \($0)" } ?? "a writer holds the lease", seconds: 20) {
                found = (try? await postgres.psql(database, "SELECT holder FROM lockstep_leader WHERE expires_at > clock_timestamp()")
                    .trimmingCharacters(in: .whitespacesAndNewlines)) ?? ""
                return !found.isEmpty && found != old
            }
            return found
        }

        /// The migration succeeded, the history verifies, no step completed twice, and every step an agent
        /// said was completed is in the log once.
        func checkTheEnd() async throws {
            try await eventually("the migration succeeds", seconds: 90) {
                try await self.lockstep(["migration", "status", "f1", "--output", "json"]).stdout.contains("MIGRATION_STATUS_SUCCEEDED")
            }
            let verified = try await runLockstep(["history", "verify", "--store", store])
            #expect(verified.status == 0, "\(verified)")
            let exported = try await runLockstep(["history", "export", "--store", store])
            let completions = exported.stdout.split(separator: "\n").filter { $0.contains(#""step_completed":{"#) }
            for node in 1...8 {
                let count = completions.filter { $0.contains(#""node_id":"n\#(node)""#) }.count
                #expect(count == 1, "n\(node) completed \(count) times")
            }
            let said = agents.map(\.stdout).joined().split(separator: "\n").filter { $0.hasSuffix(": completed") }
            #expect(said.count <= 8 && said.count >= 5, "\(said)")
        }
    }

    @Test(.timeLimit(.minutes(3)))
    func killingTheWriterRepeatedlyLosesNothingAndTheMigrationFinishes() async throws {
        let world = try await World()
        defer { world.stop() }
        var deposed: [String] = []
        for round in 0..<3 {
            // A step is running (each takes 0.6 s): kill the writer in the middle of it, with no goodbye.
            try await Task.sleep(for: .milliseconds(1_200 + 250 * round))
            let doomed = try await world.writer()
            let slot = try #require(world.names.firstIndex(of: doomed), "the writer \(doomed) is one of ours: \(world.names)")
            world.processes[slot]?.kill(SIGKILL)
            _ = try await world.processes[slot]?.wait(seconds: 10)
            deposed.append(doomed)
            _ = try await world.takeover(from: doomed)
            // The killed one is replaced by a new process on the same ports.
            world.names[slot] = "c\(world.names.count + round)-r"
            try world.start(slot)
        }
        try await world.checkTheEnd()
        #expect(Set(deposed).count == 3, "three different writers were killed: \(deposed)")
        let epoch = try await world.postgres.psql(world.database, "SELECT epoch FROM lockstep_head")
        // One epoch per term as the writer: at least four (a loaded machine may see an extra takeover).
        #expect((Int(epoch.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0) >= 4, "\(epoch)")
    }

    /// The writer frozen (SIGSTOP) past its lease, another takes over, the old one thawed (SIGCONT): none
    /// of its appends land, it says it was deposed and stands by, and the clients go on with the new writer.
    @Test(.timeLimit(.minutes(3)))
    func aFrozenWriterThawedAfterATakeoverIsFencedOutAndStandsBy() async throws {
        let world = try await World()
        defer { world.stop() }
        try await Task.sleep(for: .milliseconds(1_500))
        let frozen = try await world.writer()
        // A standby says so on its JSON port, naming the writer (ReplicaTests covers what it serves).
        let standby = try #require(world.names.indices.first { world.names[$0] != frozen })
        let base = "http://127.0.0.1:\(world.ports[standby].http)"
        try await eventually("the standby names the writer", seconds: 10) {
            let ready = try await ChildProcess("/usr/bin/curl", ["-sS", "-w", " %{http_code}", base + "/readyz"]).wait(seconds: 10).stdout
            return ready.contains("standby: the writer is \(frozen)") && ready.hasSuffix(" 503")
        }
        let slot = try #require(world.names.firstIndex(of: frozen))
        let process = try #require(world.processes[slot])
        process.kill(SIGSTOP)
        let successor = try await world.takeover(from: frozen)
        try await Task.sleep(for: .milliseconds(1_000))
        process.kill(SIGCONT)
        try await eventually("the thawed writer says it was deposed", seconds: 15) { process.stderr.contains("deposed as the writer") }
        // Not `== successor`: on a loaded machine a third process may take over from the successor too.
        #expect(try await world.writer() != frozen, "the thawed one does not take the lease back (the successor was \(successor))")
        try await world.checkTheEnd()
        // Every event after the takeover was written under the successor's epoch: the log verifies as one
        // chain, and the thawed process wrote nothing after it stood down.
        #expect(process.stderr.contains("now a standby"), "\(process.stderr.suffix(2_000))")
    }
}

/// A coordinator that takes the leadership lease and cannot catch up (here the log is damaged: a byte
/// of its last event's chain hash flipped) hands the lease back at once and stands by again, instead of ending
/// with the lease held for a TTL.
@Suite(.serialized, .dropsPostgresDatabases) struct TakeoverFailureTests {
    @Test(.timeLimit(.minutes(2)))
    func aTakeoverThatCannotCatchUpReleasesTheLeaseAndStandsBy() async throws {
        let postgres = TestPostgres.shared
        let database = try await postgres.makeDatabase()
        let store = try await postgres.url(database)
        let first = try await ServerProcess(["--dev", "--leadership-ttl-ms", "2000"], store: store)
        let body = String(decoding: try JSONSerialization.data(withJSONObject: ["plan_yaml": FailoverTests.plan]), as: UTF8.self)
        #expect(try await first.post("/v1/plans", body).hasSuffix("\n200"))
        #expect(try await first.stop().status == 0)
        // The last event's chain hash flipped: found by a replay and by a snapshot naming that event alike.
        _ = try await postgres.psql(database, "UPDATE lockstep_events SET chain_hash = set_byte(chain_hash, 0, get_byte(chain_hash, 0) # 1) WHERE sequence = (SELECT max(sequence) FROM lockstep_events)")

        let second = try ChildProcess(try lockstepBinary(), ["serve", "--store", store, "--dev", "--grpc-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
                                                             "--leadership-ttl-ms", "2000"])
        defer { second.kill(SIGKILL) }
        try await eventually("the takeover failed, and the lease was handed back", seconds: 60) {
            second.stderr.contains("the takeover failed") && second.stderr.contains("released the leadership lease")
        }
        // Standing by, not ended: still running a second later, the lease free or taken again to try once more.
        try await Task.sleep(for: .seconds(1))
        #expect(kill(second.pid, 0) == 0, "the coordinator ended: \(second.stderr.suffix(2_000))")
        second.kill(SIGTERM)
        let stopped = try await second.wait(seconds: 30)
        #expect(stopped.status == 0, "\(stopped.stderr.suffix(2_000))")
    }
}
