import Foundation
import LockstepTestSupport
import Testing

/// A coordinator on a PostgreSQL database that stops answering (every process of a private cluster
/// frozen with SIGSTOP: connections stay open, nothing answers). Before, its leadership renewals waited
/// for ever, so it never noticed its lease lapse, and SIGTERM never ended the process: the lease's release
/// and a request's append waited on the database. Now every call to PostgreSQL is bounded
/// (`PostgresDeadline`) and a graceful stop takes 15 s at most (`runWithStopBound`).
@Suite(.serialized, .dropsPostgresDatabases) struct PostgresStopTests {
    @Test(.timeLimit(.minutes(3)))
    func aStopWhileTheDatabaseHangsEndsWithinItsBound() async throws {
        // A cluster of its own: freezing the shared one would stall the other suites' tests.
        let postgres = TestPostgres()
        let database = try await postgres.makeDatabase()
        let store = try await postgres.url(database)
        let directory = temporaryDirectory()
        let (grpc, http) = (try TestPostgres.freePort(), try TestPostgres.freePort())
        let server = try ChildProcess(try lockstepBinary(), [
            "serve", "--store", store, "--dev", "--grpc-listen", "127.0.0.1:\(grpc)", "--http-listen", "127.0.0.1:\(http)",
            "--leadership-ttl-ms", "1000",
        ])
        var frozen = false
        defer {
            server.kill(SIGKILL)
            if frozen { Task { try? await postgres.thaw() } }
        }
        let environment = ["LOCKSTEP_SERVER": "127.0.0.1:\(grpc)", "LOCKSTEP_TOKEN": ""]
        func lockstep(_ arguments: [String]) throws -> ChildProcess {
            try ChildProcess(try lockstepBinary(), arguments, environment: environment)
        }
        try await eventually("the coordinator serves", seconds: 60) { try await lockstep(["plan", "list"]).wait(seconds: 30).status == 0 }
        try "name: first\nservices:\n  orders: { owners: [team] }\nnodes:\n  - { id: n1, service: orders, phase: expand, action: a }\n"
            .write(toFile: directory + "/first.yaml", atomically: true, encoding: .utf8)
        try "name: second\nservices:\n  orders: { owners: [team] }\nnodes:\n  - { id: n1, service: orders, phase: expand, action: a }\n"
            .write(toFile: directory + "/second.yaml", atomically: true, encoding: .utf8)
        let first = try await lockstep(["plan", "apply", directory + "/first.yaml"]).wait(seconds: 30)
        #expect(first.status == 0, "\(first)")

        try await postgres.freeze()
        frozen = true
        // An append now waits on the database.
        let stuck = try lockstep(["plan", "apply", directory + "/second.yaml"])
        // The renewals give up on their own (a third of the TTL each), so the writer sees its lease lapse.
        try await eventually("a renewal gives up", seconds: 20) { server.stderr.contains("the leadership lease could not be renewed: PostgreSQL did not answer within") }
        let asked = ContinuousClock.now
        server.kill(SIGTERM)
        let stopped = try await server.wait(seconds: 60)
        let took = ContinuousClock.now - asked
        #expect(stopped.stderr.contains("SIGTERM: stopping gracefully, for 15 s at most"), "\(stopped.stderr.suffix(3_000))")
        // The request's append waits up to 30 s for its outcome: the bound ends the stop first.
        #expect(stopped.status == 1, "\(stopped.stderr.suffix(3_000))")
        #expect(stopped.stderr.contains("the graceful stop did not end within 15 s"), "\(stopped.stderr.suffix(3_000))")
        #expect(took >= .seconds(14) && took < .seconds(30), "the stop took \(took)")
        _ = try? await stuck.wait(seconds: 30)

        // The database back: the log verifies (the stuck append landed whole or not at all).
        try await postgres.thaw()
        frozen = false
        let verified = try await runLockstep(["history", "verify", "--store", store])
        #expect(verified.status == 0, "\(verified)")
    }
}
