import Foundation
import LockstepCore
import LockstepEngine
import LockstepStore
import LockstepTestSupport
import Testing

/// The tampering tests on PostgreSQL, through the CLI as an operator would use it: the scenario recorded
/// in a data directory, `lockstep store copy` into a database of its own (the heads must agree), the
/// database edited by hand with psql, then `lockstep history verify --store`: each alteration is found at
/// its exact position, exit 1.
@Suite(.serialized, .dropsPostgresDatabases) struct PostgresTamperingTests {
    /// The scenario's SQLite log, recorded once (with a snapshot at its head).
    static let recorded: Task<String, any Error> = Task {
        let directory = temporaryDirectory()
        let coordinator = try await Coordinator.open(log: try SQLiteEventLog(path: directory + "/events.sqlite"), snapshotIntervalEvents: 0)
        try await recordScenario(on: coordinator)
        _ = try await coordinator.saveSnapshot()
        return directory
    }

    /// A copy of the scenario in a new database, edited by `sql`, then verified: the verify command's output.
    func tamperedCopy(_ sql: String) async throws -> ProcessOutput {
        let database = try await TestPostgres.shared.makeDatabase()
        let url = try await TestPostgres.shared.url(database)
        let copied = try await runLockstep(["store", "copy", "--from", try await Self.recorded.value, "--to", url])
        #expect(copied.status == 0, "\(copied)")
        let heads = copied.stdout.split(separator: "\n").filter { $0.contains(" head: ") }
        #expect(heads.count == 2 && heads[0].dropFirst("source".count) == heads[1].dropFirst("target".count), "\(copied.stdout)")
        try await TestPostgres.shared.psql(database, sql)
        return try await runLockstep(["history", "verify", "--store", url])
    }

    static func flip(_ table: String, _ column: String, sequence: UInt64, offset: Int) -> String {
        "UPDATE \(table) SET \(column) = set_byte(\(column), \(offset), get_byte(\(column), \(offset)) # 1) WHERE sequence = \(sequence)"
    }

    @Test func theCopyVerifiesAndExportsTheSameLinesAsTheDataDirectory() async throws {
        let untouched = try await tamperedCopy("SELECT 1")
        #expect(untouched.status == 0, "\(untouched)")
        #expect(untouched.stdout.contains("ok: \(scenarioEventCount) events, 3 migrations, 3 plans"), "\(untouched.stdout)")
        #expect(untouched.stdout.contains("snapshot checked at: \(scenarioEventCount)"), "the snapshot is copied: \(untouched.stdout)")
        let fromDirectory = try await runLockstep(["history", "verify", "--data", try await Self.recorded.value])
        #expect(fromDirectory.stdout == untouched.stdout, "the same head, hash and digest at both ends")

        let database = try await TestPostgres.shared.makeDatabase()
        let url = try await TestPostgres.shared.url(database)
        #expect(try await runLockstep(["store", "copy", "--from", try await Self.recorded.value, "--to", url]).status == 0)
        let exported = try await runLockstep(["history", "export", "--store", url])
        let expected = try await runLockstep(["history", "export", "--data", try await Self.recorded.value])
        #expect(exported.status == 0 && exported.stdout == expected.stdout && exported.stdout.split(separator: "\n").count == Int(scenarioEventCount))
        let replayed = try await runLockstep(["history", "replay", "--store", url, "--at", "30", "--output", "json"])
        #expect(replayed.stdout == (try await runLockstep(["history", "replay", "--data", try await Self.recorded.value, "--at", "30", "--output", "json"])).stdout)

        // A second copy into a store that holds events is refused, and writes nothing.
        let again = try await runLockstep(["store", "copy", "--from", try await Self.recorded.value, "--to", url])
        #expect(again.status == 2 && again.stderr.contains("already holds \(scenarioEventCount) events"), "\(again)")
        // Back the other way: PostgreSQL to a new data directory, the same head.
        let back = temporaryDirectory()
        let returned = try await runLockstep(["store", "copy", "--from", url, "--to", back])
        #expect(returned.status == 0, "\(returned)")
        #expect(try await runLockstep(["history", "verify", "--data", back]).stdout == fromDirectory.stdout)
    }

    @Test func readingADatabaseWithoutALogWritesNothingAndSaysSo() async throws {
        let database = try await TestPostgres.shared.makeDatabase()
        let result = try await runLockstep(["history", "verify", "--store", try await TestPostgres.shared.url(database)])
        #expect(result.status == 2 && result.stderr.contains("holds no Lockstep log"), "\(result)")
        #expect(try await TestPostgres.shared.psql(database, "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'lockstep%'") == "0\n")
        let password = try await runLockstep(["history", "verify", "--store", "postgres://lockstep:hunter2@127.0.0.1/\(database)"])
        #expect(password.status != 0 && password.stderr.contains("invalid_store") && password.stderr.contains("carries a password"), "\(password)")
        #expect(!password.stderr.contains("hunter2"))
    }

    @Test(arguments: [(10, 7), (0, 1), (39, 25)])
    func aFlippedByteIsFoundAtItsEvent(offset: Int, sequence: UInt64) async throws {
        let result = try await tamperedCopy(Self.flip("lockstep_events", "record", sequence: sequence, offset: offset))
        #expect(result.status == 1)
        #expect(result.stderr.contains("corrupted at sequence \(sequence): the chain hash does not match the stored bytes"), "\(result.stderr)")
    }

    @Test func aFlippedByteInAStoredHashIsFound() async throws {
        let result = try await tamperedCopy(Self.flip("lockstep_events", "chain_hash", sequence: 18, offset: 31))
        #expect(result.status == 1)
        #expect(result.stderr.contains("corrupted at sequence 18:"), "\(result.stderr)")
    }

    @Test func aDeletedRowIsFoundAtItsPosition() async throws {
        let result = try await tamperedCopy("DELETE FROM lockstep_events WHERE sequence = 5")
        #expect(result.status == 1)
        #expect(result.stderr.contains("corrupted at sequence 5: event 5 is missing"), "\(result.stderr)")
    }

    @Test func swappedRowsAreFoundAtTheFirstOfThem() async throws {
        let result = try await tamperedCopy("""
            UPDATE lockstep_events SET sequence = -1 WHERE sequence = 9;
            UPDATE lockstep_events SET sequence = 9 WHERE sequence = 10;
            UPDATE lockstep_events SET sequence = 10 WHERE sequence = -1;
            """)
        #expect(result.status == 1)
        #expect(result.stderr.contains("corrupted at sequence 9: the chain hash does not match"), "\(result.stderr)")
    }

    @Test func aTruncatedTailIsFoundAtTheFirstMissingEvent() async throws {
        let result = try await tamperedCopy("DELETE FROM lockstep_events WHERE sequence > 20")
        #expect(result.status == 1)
        #expect(result.stderr.contains("corrupted at sequence 21:"), "\(result.stderr)")
    }

    @Test func anAlteredSnapshotIsFoundAtItsSequence() async throws {
        let result = try await tamperedCopy(Self.flip("lockstep_snapshots", "state", sequence: scenarioEventCount, offset: 30))
        #expect(result.status == 1)
        #expect(result.stderr.contains("corrupted at sequence \(scenarioEventCount): the snapshot at \(scenarioEventCount) does not match the replayed state"),
                "\(result.stderr)")
    }

    @Test func anEditedVersionColumnIsFound() async throws {
        let result = try await tamperedCopy("UPDATE lockstep_events SET stream_version = 99 WHERE sequence = 14")
        #expect(result.status == 1)
        #expect(result.stderr.contains("corrupted at sequence 14:"), "\(result.stderr)")
    }

    /// A sequence or version edited below 0 (the columns are signed) is a corrupted log at its row, not
    /// a process that traps converting it (and, for the head, read on every start, one that crash-loops).
    @Test(arguments: [("UPDATE lockstep_events SET stream_version = -1 WHERE sequence = 14", "corrupted at sequence 14: its stream version is -1, below 0"),
                      ("UPDATE lockstep_head SET sequence = -5", "corrupted at sequence 0: the head's sequence is -5, below 0")])
    func aNegativeSequenceOrVersionIsFound(sql: String, found: String) async throws {
        let result = try await tamperedCopy(sql)
        #expect(result.status == 1 && result.stderr.contains(found), "\(result)")
    }

    @Test func aRowAddedAfterTheHeadIsFound() async throws {
        let result = try await tamperedCopy("""
            INSERT INTO lockstep_events (sequence, stream, stream_version, record, chain_hash)
              SELECT sequence + 1, stream, stream_version + 1, record, chain_hash FROM lockstep_events WHERE sequence = \(scenarioEventCount)
            """)
        #expect(result.status == 1)
        #expect(result.stderr.contains("corrupted at sequence \(scenarioEventCount + 1):"), "\(result.stderr)")
    }
}
