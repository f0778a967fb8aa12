import Foundation
import LockstepTestSupport
import Testing

/// A coordinator on a PostgreSQL database that stops answering (every process of a private cluster
/// frozen with SIGSTOP: connections stay open, nothing answers). Before, its leadership renewals waited
/// for ever, so it never stood down, and SIGTERM never ended the process: the lease's release and a
/// request's append waited on the database. Now every query is bounded (`PostgresDeadline`), a renewal
/// never past the lease's end, and a graceful stop by `--stop-timeout-ms` (`runWithStopBound`).
@Suite(.serialized, .dropsPostgresDatabases) struct PostgresStopTests {
    /// One cluster for both tests (a cluster of its own: freezing the shared one would stall the other
    /// suites' tests).
    static let postgres = TestPostgres()

    /// A coordinator on a new database of the cluster, serving, with one plan applied.
    struct World {
        let server: ChildProcess
        let store: String
        let directory = temporaryDirectory()
        let environment: [String: String]

        init(_ flags: [String]) async throws {
            store = try await postgres.url(try await postgres.makeDatabase())
            let (grpc, http) = (try TestPostgres.freePort(), try TestPostgres.freePort())
            server = try ChildProcess(try lockstepBinary(), [
                "serve", "--store", store, "--dev", "--grpc-listen", "127.0.0.1:\(grpc)", "--http-listen", "127.0.0.1:\(http)",
            ] + flags)
            environment = ["LOCKSTEP_SERVER": "127.0.0.1:\(grpc)", "LOCKSTEP_TOKEN": ""]
            let environment = environment
            try await eventually("the coordinator serves", seconds: 60) {
                try await ChildProcess(try lockstepBinary(), ["plan", "list"], environment: environment).wait(seconds: 30).status == 0
            }
            let applied = try await apply("first").wait(seconds: 30)
            #expect(applied.status == 0, "\(applied)")
        }

        /// `lockstep plan apply` of a one-node plan named `name`, running.
        func apply(_ name: String) throws -> ChildProcess {
            try "name: \(name)\nservices:\n  orders: { owners: [team] }\nnodes:\n  - { id: n1, service: orders, phase: expand, action: a }\n"
                .write(toFile: directory + "/\(name).yaml", atomically: true, encoding: .utf8)
            return try ChildProcess(try lockstepBinary(), ["plan", "apply", directory + "/\(name).yaml"], environment: environment)
        }

        /// Runs `body` with the cluster frozen, thawing it on every way out; then checks the log.
        func whileFrozen(_ body: () async throws -> Void) async throws {
            try await postgres.freeze()
            do {
                try await body()
            } catch {
                try await postgres.thaw()
                throw error
            }
            try await postgres.thaw()
            // The database back: the log verifies (an append cut off landed whole or not at all).
            let verified = try await runLockstep(["history", "verify", "--store", store])
            #expect(verified.status == 0, "\(verified)")
        }
    }

    @Test(.timeLimit(.minutes(3)))
    func aStopWhileTheDatabaseHangsEndsWithinItsBound() async throws {
        // A long lease: nothing but the stop's bound ends this stop.
        let world = try await World(["--leadership-ttl-ms", "60000", "--stop-timeout-ms", "6000"])
        defer { world.server.kill(SIGKILL) }
        try await world.whileFrozen {
            let stuck = try world.apply("second")
            defer { stuck.kill(SIGKILL) }
            // The request's append waits on the database (its transaction's bound, then up to 30 s for
            // its outcome), and holds the gRPC server's stop.
            try await eventually("the append waits on the database", seconds: 30) {
                world.server.stderr.contains("an append transaction took longer than")
            }
            let asked = ContinuousClock.now
            world.server.kill(SIGTERM)
            let stopped = try await world.server.wait(seconds: 60)
            let took = ContinuousClock.now - asked
            #expect(stopped.stderr.contains("SIGTERM: stopping gracefully, for 6000 ms at most"), "\(stopped.stderr.suffix(3_000))")
            #expect(stopped.status == 1, "\(stopped.stderr.suffix(3_000))")
            #expect(stopped.stderr.contains("the graceful stop did not end within 6000 ms"), "\(stopped.stderr.suffix(3_000))")
            #expect(took >= .seconds(5.5) && took < .seconds(20), "the stop took \(took)")
        }
    }

    @Test(.timeLimit(.minutes(3)))
    func aWriterWhoseDatabaseHangsStandsDownWhenItsLeaseEnds() async throws {
        let world = try await World(["--leadership-ttl-ms", "1000"])
        defer { world.server.kill(SIGKILL) }
        // Only what it says from the freeze on counts (a loaded machine may have made it stand down once
        // before, for a slow renewal).
        let before = world.server.stderr.utf8.count
        try await world.whileFrozen {
            let frozen = ContinuousClock.now
            func since() -> String { String(decoding: world.server.stderr.utf8.dropFirst(before), as: UTF8.self) }
            // Its renewals give up when the lease ends (no later than a TTL after the last one that
            // succeeded), and it stands down.
            try await eventually("the writer stands down", seconds: 30) { since().contains("deposed as the writer") }
            let after = ContinuousClock.now - frozen
            #expect(after < .seconds(5), "stood down \(after) after the database hung, with a 1 s lease")
            #expect(since().contains("the lease could not be renewed for 1.0 seconds"), "\(since().suffix(3_000))")
            // A standby now: SIGTERM ends it while the database still hangs.
            let asked = ContinuousClock.now
            world.server.kill(SIGTERM)
            let stopped = try await world.server.wait(seconds: 60)
            let took = ContinuousClock.now - asked
            #expect(stopped.status == 0, "\(stopped.stderr.suffix(3_000))")
            #expect(took < .seconds(15), "the stop took \(took)")
        }
    }
}
