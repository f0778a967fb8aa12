import Synchronization
import Testing

/// Drops the PostgreSQL databases a test made (`TestPostgres.makeDatabase`, `makeClient`, `makeLog`)
/// when the test ends, passed or failed. Each database is about 7 MB of catalog before the test writes
/// anything, and the PostgreSQL suites make about fifty: kept to the end of the run, they held 300 MB
/// on a CI machine whose disk ran out. A suite that makes databases carries this trait; making one
/// outside it is recorded as an issue, so a new suite cannot forget it.
public struct DropsPostgresDatabases: TestTrait, SuiteTrait, TestScoping {
    public var isRecursive: Bool { true }

    public func provideScope(for test: Test, testCase: Test.Case?,
                             performing function: @Sendable () async throws -> Void) async throws {
        // A suite's own scope holds no databases; each of its test cases gets one of its own.
        guard testCase != nil else { return try await function() }
        let made = MadeDatabases()
        // In a task of its own: a test cancelled (its time limit) would cancel the drops' waits too.
        let dropAll = { await Task { await made.dropAll() }.value }
        do {
            try await MadeDatabases.$current.withValue(made) { try await function() }
        } catch {
            await dropAll()
            throw error
        }
        await dropAll()
    }
}

extension Trait where Self == DropsPostgresDatabases {
    /// Drops the PostgreSQL databases each test makes when it ends (`DropsPostgresDatabases`).
    public static var dropsPostgresDatabases: Self { DropsPostgresDatabases() }
}

/// The databases made in one test's scope, on whichever cluster made them.
final class MadeDatabases: Sendable {
    @TaskLocal static var current: MadeDatabases?

    private let made = Mutex<[(TestPostgres, String)]>([])

    func add(_ name: String, on postgres: TestPostgres) {
        made.withLock { $0.append((postgres, name)) }
    }

    /// `DROP DATABASE … WITH (FORCE)`: the test's clients and servers may still hold connections.
    /// A failed drop only leaves the database behind; it is not the test's failure.
    func dropAll() async {
        for (postgres, name) in made.withLock({ $0 }) {
            try? await postgres.drop(name)
        }
    }
}
