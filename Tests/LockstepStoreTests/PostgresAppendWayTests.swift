import Foundation
import Logging
@testable import LockstepPostgres
import LockstepStore
import LockstepTestSupport
import Testing

/// The two ways a batch gets into the log on PostgreSQL (PostgresEventLog+Append.swift), on a real
/// cluster: a writer's batch goes ahead in one statement chained onto the head its last commit left, and
/// whenever that is no longer the head, or a stream is not at the version the batch expects, the
/// statement writes nothing and the locked way decides, exactly as if the batch had never gone ahead.
@Suite(.serialized, .dropsPostgresDatabases) struct PostgresAppendWayTests {
    func request(_ stream: String, _ expected: UInt64, _ records: String...) -> AppendRequest {
        AppendRequest(stream: stream, expectedVersion: expected, records: records.map { Array($0.utf8) })
    }

    /// Every event's chain hash follows from the one before, and the sequences are dense from 1.
    func expectChained(_ log: PostgresEventLog, count: Int) async throws {
        let events = try await log.read(after: 0, limit: 1_000)
        #expect(events.count == count)
        var previous = ChainHash.genesis
        for (index, event) in events.enumerated() {
            #expect(event.sequence == UInt64(index + 1))
            let expected = previous.next(sequence: event.sequence, record: event.record)
            #expect(event.chainHash == expected, "event \(event.sequence) does not chain")
            previous = event.chainHash
        }
        #expect(try await log.head() == LogHead(sequence: UInt64(count), chainHash: previous))
    }

    /// A log that has sent a batch ahead (two events, stream `a` at version 2), on a database where every
    /// insert into the log now fails at its commit with a storage fault (SQLSTATE 58030), after
    /// `afterSeconds` in the trigger.
    func aLogWhoseNextCommitFails(afterSeconds: Double = 0) async throws -> (database: String, log: PostgresEventLog) {
        let (database, client) = try await TestPostgres.shared.makeClient()
        let log = try await PostgresEventLog.open(client: client)
        _ = try await log.append(request("a", 0, "a1"))
        _ = try await log.append(request("a", 1, "a2"))
        #expect(await log.committedAhead == 1)
        try await TestPostgres.shared.psql(database, """
            CREATE FUNCTION fault() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(\(afterSeconds)); RAISE EXCEPTION 'simulated' USING ERRCODE = '58030'; END $$;
            CREATE CONSTRAINT TRIGGER io AFTER INSERT ON lockstep_events DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION fault();
            """)
        return (database, log)
    }

    /// The log's next append (stream `a` at version 2) fails `writes_stopped` with the storage fault's
    /// SQLSTATE (58030).
    func expectTheNextAppendStopsWrites(_ log: PostgresEventLog) async {
        do {
            _ = try await log.append(request("a", 2, "a3"))
            Issue.record("an append that hit an I/O error at its commit was acknowledged")
        } catch {
            #expect(error.code == "writes_stopped" && error.description.contains("58030"), "\(error)")
        }
    }

    @Test func aWritersBatchesGoAheadAfterTheFirst() async throws {
        let (_, client) = try await TestPostgres.shared.makeClient()
        let log = try await PostgresEventLog.open(client: client)
        _ = try await log.append(request("a", 0, "a1"))
        #expect(await log.committedAhead == 0, "the first batch takes the locked way: the head is not known yet")
        #expect(try await log.append(request("a", 1, "a2", "a3")) == AppendReceipt(firstSequence: 2, lastSequence: 3, streamVersion: 3))
        #expect(try await log.append(request("b", 0, "b1")) == AppendReceipt(firstSequence: 4, lastSequence: 4, streamVersion: 1))
        #expect(await log.committedAhead == 2)
        #expect(try await log.streamVersion(of: "a") == 3)
        #expect(try await log.streamVersion(of: "b") == 1)
        try await expectChained(log, count: 4)
    }

    @Test func aBatchSentAheadOntoAHeadThatMovedWritesNothingAndTheLockedWayAppendsIt() async throws {
        let (database, client) = try await TestPostgres.shared.makeClient()
        let mine = try await PostgresEventLog.open(client: client)
        let other = try await PostgresEventLog.open(client: await TestPostgres.shared.client(database, port: try await TestPostgres.shared.port()))
        _ = try await mine.append(request("a", 0, "a1"))
        _ = try await other.append(request("b", 0, "b1"))  // the head moves under `mine`
        #expect(try await mine.append(request("a", 1, "a2")) == AppendReceipt(firstSequence: 3, lastSequence: 3, streamVersion: 2))
        #expect(await mine.committedAhead == 0)
        #expect(try await mine.append(request("a", 2, "a3")).firstSequence == 4)
        #expect(await mine.committedAhead == 1, "the locked way taught it the head again")
        try await expectChained(mine, count: 4)
    }

    @Test func aStaleExpectedVersionSentAheadIsAConflictAndWritesNothing() async throws {
        let (_, client) = try await TestPostgres.shared.makeClient()
        let log = try await PostgresEventLog.open(client: client)
        _ = try await log.append(request("a", 0, "a1"))
        _ = try await log.append(request("a", 1, "a2"))
        let head = try await log.head()
        do {
            _ = try await log.append(request("a", 1, "stale"))
            Issue.record("an append expecting a version the stream has left was acknowledged")
        } catch {
            #expect(error == .versionConflict(stream: "a", expected: 1, actual: 2))
        }
        #expect(try await log.head() == head)
        // A stream that does not exist yet, expected at a version it never had: the same.
        do {
            _ = try await log.append(request("new", 3, "x"))
            Issue.record("an append expecting a version an empty stream does not have was acknowledged")
        } catch {
            #expect(error == .versionConflict(stream: "new", expected: 3, actual: 0))
        }
        #expect(try await log.head() == head)
        #expect(try await log.append(request("a", 2, "a3")).firstSequence == 3)
        try await expectChained(log, count: 3)
    }

    /// An error PostgreSQL raises at the commit of a batch sent ahead cannot be read through postgres-nio
    /// (it closes the connection); the locked way runs the batch again and reads it: a storage fault there
    /// stops writes, as it does on the locked way, and nothing is written.
    @Test func aStorageFaultAtTheCommitOfABatchSentAheadStopsWrites() async throws {
        let (database, log) = try await aLogWhoseNextCommitFails()
        await expectTheNextAppendStopsWrites(log)
        #expect(await log.writesStopped != nil)
        #expect(try await TestPostgres.shared.psql(database, "SELECT count(*) FROM lockstep_events") == "2\n")
    }

    /// Whether a batch sent ahead committed may not be readable at once after its commit failed (in CI the
    /// pool handed the read the connection the failure had closed; here another session holds the head
    /// row past the log's `lock_timeout`). A failed read is no answer: the log asks again until the log
    /// shows the batch absent, then runs it the locked way as above and reports the storage fault. (The
    /// first version took a failed read for "committed or not, unknown" and answered "the connection to
    /// PostgreSQL closed".)
    @Test func aBatchSentAheadWhoseOutcomeCannotBeReadAtOnceStillRunsTheLockedWay() async throws {
        let (database, log) = try await aLogWhoseNextCommitFails(afterSeconds: 2)
        // While the batch's commit sleeps in the trigger (2 s), another session queues for the head row the
        // batch updated: it gets the row when the batch fails and holds it for 2.5 s, past the log's
        // lock_timeout (5 s / 3), so the log's first read of the outcome fails.
        async let held: Void = {
            try await TestPostgres.shared.waitForASessionInPgSleep(database)
            try await TestPostgres.shared.psql(database, "BEGIN; SELECT 1 FROM lockstep_head WHERE id = 1 FOR UPDATE; SELECT pg_sleep(2.5); COMMIT;")
        }()
        await expectTheNextAppendStopsWrites(log)
        try await held
        #expect(await log.writesStopped != nil)
        #expect(try await TestPostgres.shared.psql(database, "SELECT count(*) FROM lockstep_events") == "2\n")
    }

    /// A batch counts as sent the moment its statement leaves, so a statement that waited past
    /// `transactionMillisMax` (the head row held by someone's open transaction) could still commit when
    /// the lock goes: an unknown outcome, and writes would stop. The log's session settings end the lock
    /// wait at half the bound (`lock_timeout`), on the server: the append fails, definitely, nothing is
    /// written, writes go on, and the same append succeeds once the lock is gone.
    @Test func aBatchSentAheadWaitingOnAHeldHeadRowFailsWithNothingWrittenAndWritesGoOn() async throws {
        var options = PostgresEventLog.Options()
        options.transactionMillisMax = 1_000
        options.resolveMillisMax = 1_000
        let (database, client) = try await TestPostgres.shared.makeClient(
            parameters: PostgresEventLog.sessionParameters(transactionMillisMax: options.transactionMillisMax))
        let log = try await PostgresEventLog.open(client: client, options: options)
        _ = try await log.append(request("a", 0, "a1"))
        // Held until this test lets it go (a fixed sleep could end before a loaded machine's append arrives).
        async let held = TestPostgres.shared.psql(database, "BEGIN; SELECT 1 FROM lockstep_head FOR UPDATE; SELECT pg_sleep(120); COMMIT;")
        try await eventually("the psql session holds the head row", seconds: 10) {
            try await TestPostgres.shared.psql(database, "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) WHERE a.query LIKE '%pg_sleep(120)%' AND l.mode = 'RowShareLock' AND a.pid <> pg_backend_pid()") != "0\n"
        }
        do {
            _ = try await log.append(request("a", 1, "a2"))
            Issue.record("an append that could not take the head row was acknowledged")
        } catch {
            #expect(error.code == "storage_unavailable" && error.description.contains("lock_timeout"), "\(error)")
        }
        #expect(await log.writesStopped == nil, "nothing of it was written: no reason to stop")
        // Let it go: the session's sleep is cancelled, which ends its transaction (psql reports the cancel).
        _ = try await TestPostgres.shared.psql(database, "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(120)%' AND pid <> pg_backend_pid()")
        _ = try? await held
        #expect(try await log.append(request("a", 1, "a2")) == AppendReceipt(firstSequence: 2, lastSequence: 2, streamVersion: 2))
        try await expectChained(log, count: 2)
    }

    /// A client whose connections have no `lock_timeout` under the bound (one not started with
    /// `sessionParameters`) gets a log that never sends a batch ahead: every append takes the locked way,
    /// whose lock waits are abandoned with nothing written.
    @Test func aClientWithoutTheSessionSettingsNeverSendsABatchAhead() async throws {
        let (_, client) = try await TestPostgres.shared.makeClient(parameters: [])
        let log = try await PostgresEventLog.open(client: client)
        #expect(!log.aheadAllowed)
        for version in 0..<3 { _ = try await log.append(request("a", UInt64(version), "a\(version)")) }
        #expect(await log.committedAhead == 0)
        try await expectChained(log, count: 3)
        let (_, bounded) = try await TestPostgres.shared.makeClient()
        #expect(try await PostgresEventLog.open(client: bounded).aheadAllowed)
    }

    /// Concurrent appends share one batch (group commit); some hold and some do not, in one batch, whichever
    /// way it took: each gets its own answer and only those that hold are written.
    @Test func aBatchMixingAppendsThatHoldAndThatDoNotAnswersEachOnItsOwn() async throws {
        let (_, client) = try await TestPostgres.shared.makeClient()
        let log = try await PostgresEventLog.open(client: client)
        _ = try await log.append(request("s", 0, "s1"))
        let outcomes = await withTaskGroup(of: (Int, Result<AppendReceipt, EventLogError>).self) { group in
            for index in 0..<24 {
                group.addTask {
                    // Every other one expects the version the stream starts at (one of those can hold);
                    // the rest write to streams of their own, which always hold.
                    let request = index.isMultiple(of: 2) ? request("s", 1, "s\(index)") : request("own-\(index)", 0, "o\(index)")
                    do throws(EventLogError) { return (index, .success(try await log.append(request))) } catch { return (index, .failure(error)) }
                }
            }
            return await group.reduce(into: [:]) { $0[$1.0] = $1.1 }
        }
        let shared = outcomes.filter { $0.key.isMultiple(of: 2) }.values
        #expect(shared.filter { if case .success = $0 { true } else { false } }.count == 1, "exactly one append on s at version 1 holds")
        for result in shared {
            if case .failure(let error) = result { #expect(error == .versionConflict(stream: "s", expected: 1, actual: 2)) }
        }
        for (index, result) in outcomes where !index.isMultiple(of: 2) {
            #expect(try result.get().streamVersion == 1, "append \(index)")
        }
        #expect(try await log.streamVersion(of: "s") == 2)
        try await expectChained(log, count: 1 + 1 + 12)
    }
}

/// Stored values at bigint's end (edited by hand) are outside input too: an append onto a head, or a
/// stream version, with no room left, and a leadership take past the last epoch, are refused as a
/// corrupted log instead of trapping the writer.
@Suite(.serialized, .dropsPostgresDatabases) struct PostgresStoredLimitTests {
    @Test func aHeadOrAVersionAtTheEndOfBigintStopsTheAppend() async throws {
        // (A head at the end names no event: found before any arithmetic on it.)
        for (sql, request, found) in [
            ("UPDATE lockstep_head SET sequence = 9223372036854775807",
             AppendRequest(stream: "a", expectedVersion: 1, records: [Array("a2".utf8)]), "neither in the log"),
            ("UPDATE lockstep_streams SET version = 9223372036854775807 WHERE stream = 'a'",
             AppendRequest(stream: "a", expectedVersion: UInt64(Int64.max), records: [Array("a2".utf8)]), "leaves no room"),
        ] {
            let (database, client) = try await TestPostgres.shared.makeClient()
            let log = try await PostgresEventLog.open(client: client)
            _ = try await log.append(AppendRequest(stream: "a", expectedVersion: 0, records: [Array("a1".utf8)]))
            try await TestPostgres.shared.psql(database, sql)
            do {
                _ = try await log.append(request)
                Issue.record("an append past bigint's end was acknowledged (\(sql))")
            } catch {
                #expect(error.code == "log_corrupted" && error.description.contains(found), "\(sql): \(error)")
            }
        }
    }

    /// The head row is stored bytes too: deleted, moved back over events, moved forward past them, or
    /// given another hash, it stops the append (it chained onto genesis, collided with an event, or left a gap).
    @Test(arguments: [("DELETE FROM lockstep_head", "head row (lockstep_head, id 1) is missing"),
                      ("UPDATE lockstep_head SET sequence = 1", "but events follow it"),
                      ("UPDATE lockstep_head SET sequence = 5", "neither in the log nor its archived base"),
                      ("UPDATE lockstep_head SET chain_hash = decode(repeat('11', 32), 'hex')", "chain hash is not event 2's")])
    func aHeadRowThatDoesNotNameTheLastEventStopsTheAppend(sql: String, found: String) async throws {
        let (database, client) = try await TestPostgres.shared.makeClient()
        let log = try await PostgresEventLog.open(client: client)
        _ = try await log.append(AppendRequest(stream: "a", expectedVersion: 0, records: [Array("a1".utf8), Array("a2".utf8)]))
        try await TestPostgres.shared.psql(database, sql)
        do {
            _ = try await log.append(AppendRequest(stream: "a", expectedVersion: 2, records: [Array("a3".utf8)]))
            Issue.record("an append onto a head row edited by hand was acknowledged (\(sql))")
        } catch {
            #expect(error.code == "log_corrupted" && error.description.contains(found), "\(sql): \(error)")
        }
        let count = try await TestPostgres.shared.psql(database, "SELECT count(*) FROM lockstep_events").trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(count == "2", "nothing was appended")
    }

    /// A record or a stream name edited past what an append may write is found before it is fetched (a
    /// page's first row is always in it, whatever its size: a 500 MB row would be read whole).
    @Test(arguments: [("UPDATE lockstep_events SET record = decode(repeat('00', 2097152), 'hex') WHERE sequence = 1", "its record is 2097152 bytes"),
                      ("UPDATE lockstep_events SET stream = repeat('s', 300) WHERE sequence = 1", "its stream name is 300 bytes")])
    func anOversizedStoredRowIsDamageNotARead(sql: String, found: String) async throws {
        let (database, client) = try await TestPostgres.shared.makeClient()
        let log = try await PostgresEventLog.open(client: client)
        _ = try await log.append(AppendRequest(stream: "a", expectedVersion: 0, records: [Array("a1".utf8)]))
        try await TestPostgres.shared.psql(database, "ALTER TABLE lockstep_events DROP CONSTRAINT IF EXISTS lockstep_events_stream_stream_version_key; \(sql)")
        do {
            _ = try await log.read(after: 0, limit: 10)
            Issue.record("an oversized row was read (\(sql))")
        } catch {
            #expect(error.code == "log_corrupted" && error.description.contains(found), "\(sql): \(error)")
        }
        if !sql.contains("stream =") {
            do {
                _ = try await log.read(stream: "a", after: 0, limit: 10)
                Issue.record("an oversized row was read by its stream (\(sql))")
            } catch {
                #expect(error.code == "log_corrupted" && error.description.contains(found), "\(sql): \(error)")
            }
        }
    }

    @Test func aLeadershipTakePastTheLastEpochIsRefused() async throws {
        let (database, client) = try await TestPostgres.shared.makeClient()
        _ = try await PostgresEventLog.open(client: client)
        let leader = PostgresLeadership(client: client, holder: "a", address: "a:1", ttlMillis: 60_000, logger: Logger(label: "a"))
        try await TestPostgres.shared.psql(database, "UPDATE lockstep_leader SET epoch = 9223372036854775807, expires_at = clock_timestamp() - interval '1 second' WHERE id = 1")
        func expectRefused(_ why: String, saying found: String) async {
            do {
                _ = try await leader.tryAcquire()
                Issue.record("\(why): the take succeeded")
            } catch {
                #expect("\(error)".contains(found), "\(why): \(error)")
            }
        }
        await expectRefused("a take past the last epoch", saying: "at its limit")
        // The lease's row deleted: said, not a standby that waits for ever without a word.
        try await TestPostgres.shared.psql(database, "DELETE FROM lockstep_leader")
        await expectRefused("a take with no lease row", saying: "row (lockstep_leader, id 1) is missing")
    }
}
