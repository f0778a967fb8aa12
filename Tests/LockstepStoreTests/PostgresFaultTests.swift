import Foundation
@testable import LockstepPostgres
import LockstepStore
import LockstepTestSupport
import Testing

/// How the log on PostgreSQL answers when a transaction fails, on a real cluster: a COMMIT whose answer
/// is lost is resolved from the log (committed, or not), storage faults stop writes, a full disk is
/// `storage_full`, and nothing is ever acknowledged that is not there.
@Suite(.serialized, .dropsPostgresDatabases) struct PostgresFaultTests {
    static let cutter = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("commit-cutter.py").path

    func request(_ stream: String, _ expected: UInt64, _ record: String = "r") -> AppendRequest {
        AppendRequest(stream: stream, expectedVersion: expected, records: [Array(record.utf8)])
    }

    /// A log on a new database, reached through `commit-cutter.py`: the database's name, the file that
    /// arms the proxy, and the proxy (the caller's to kill).
    func logBehindTheCutter() async throws -> (PostgresEventLog, database: String, arm: String, proxy: ChildProcess) {
        let postgres = TestPostgres.shared
        let database = try await postgres.makeDatabase()
        let proxyPort = try TestPostgres.freePort()
        let arm = temporaryDirectory() + "/arm"
        let proxy = try ChildProcess("/usr/bin/env", ["python3", Self.cutter, "\(proxyPort)", "\(try await postgres.port())", arm])
        do {
            try await proxy.waitForOutput("ready", seconds: 10)
            return (try await PostgresEventLog.open(client: await postgres.client(database, port: proxyPort)), database, arm, proxy)
        } catch {
            proxy.kill(SIGKILL)
            throw error
        }
    }

    @Test func aCommitWhoseAnswerIsLostIsFoundCommittedAndAcknowledged() async throws {
        let (log, database, arm, proxy) = try await logBehindTheCutter()
        defer { proxy.kill(SIGKILL) }
        _ = try await log.append(request("a", 0))

        // The writer's next batch is sent ahead, committed on its own: its answer is lost. (The statement's
        // name is matched as its Bind has it, after the unnamed portal's zero byte and before the zero high
        // byte of its count of parameter formats: not as its Parse, which prepares it on the connection
        // first, has it, followed by the statement's text.)
        _ = FileManager.default.createFile(atPath: arm, contents: Data([0] + Array(WriteStatement.name.utf8) + [0, 0]))
        let receipt = try await log.append(request("a", 1, "lost answer"))
        #expect(!FileManager.default.fileExists(atPath: arm), "the proxy must have cut the statement sent ahead")
        #expect(receipt == AppendReceipt(firstSequence: 2, lastSequence: 2, streamVersion: 2))
        // After a failure the log takes the locked way (BEGIN ... COMMIT): the COMMIT's answer is lost.
        _ = FileManager.default.createFile(atPath: arm, contents: Data("COMMIT".utf8))
        #expect(try await log.append(request("a", 2, "lost again")) == AppendReceipt(firstSequence: 3, lastSequence: 3, streamVersion: 3))
        #expect(!FileManager.default.fileExists(atPath: arm), "the proxy must have cut a COMMIT")
        #expect(try await TestPostgres.shared.psql(database, "SELECT count(*) FROM lockstep_events") == "3\n")
        // The log goes on, on a fresh connection, dense.
        #expect(try await log.append(request("b", 0)).firstSequence == 4)
        #expect(try await log.head().sequence == 4)
    }

    /// A connection that ends in the middle of a page's rows (a database restarted, a network cut) fails
    /// the read as `storage_unavailable`, and the next read, on a new connection, has the whole page.
    /// postgres-nio 1.33's row stream traps ("no read has been forwarded yet") when the rows still in the
    /// socket arrive with the end of the connection while its consumer has not asked for more: the log's
    /// reads must never leave a page's rows waiting on a consumer.
    @Test(arguments: 0..<8) func aConnectionEndingInTheMiddleOfAPageFailsTheReadAndTheNextOneHasItAll(round: Int) async throws {
        let (log, _, arm, proxy) = try await logBehindTheCutter()
        defer { proxy.kill(SIGKILL) }
        // 3,000 small events: a page of them is about 450 KB of rows, many socket reads.
        let record = [UInt8](repeating: UInt8(ascii: "r"), count: 60)
        for batch in 0..<3 {
            _ = try await log.append(AppendRequest(stream: "s", expectedVersion: UInt64(batch * 1_000),
                                                   records: Array(repeating: record, count: 1_000)))
        }
        // Cut at a different point each round: early in the rows, and deep into them.
        let cut = 8_192 + round * 40_000
        _ = FileManager.default.createFile(atPath: arm, contents: Data("rows:\(cut):row_number()".utf8))
        do {
            let events = try await log.read(after: 0, limit: 4_096)
            Issue.record("a page whose connection ended after \(cut) bytes was read whole: \(events.count) events")
        } catch {
            #expect(error.code == "storage_unavailable", "\(error)")
        }
        #expect(!FileManager.default.fileExists(atPath: arm), "the proxy must have cut the page's rows")
        let events = try await log.read(after: 0, limit: 4_096)
        #expect(events.count == 3_000 && events.last?.sequence == 3_000)
    }

    /// The same right after a one-row answer's row, before its statement's end: the read fails, the
    /// process lives, the next read has it. And an append whose connection ends right after its writing
    /// statement's answer (which carries no rows) is acknowledged from the log.
    @Test(arguments: 0..<6) func aConnectionEndingRightAfterAOneRowAnswersRowFailsTheRead(round: Int) async throws {
        let (log, _, arm, proxy) = try await logBehindTheCutter()
        defer { proxy.kill(SIGKILL) }
        _ = try await log.append(request("a", 0))
        _ = FileManager.default.createFile(atPath: arm, contents: Data("rows:row:SELECT sequence, chain_hash FROM lockstep_head".utf8))
        do {
            let head = try await log.head()
            Issue.record("a head whose connection ended after its row was read: \(head)")
        } catch {
            #expect(error.code == "storage_unavailable", "\(error)")
        }
        #expect(!FileManager.default.fileExists(atPath: arm), "the proxy must have cut the head's answer")
        #expect(try await log.head().sequence == 1)
        _ = FileManager.default.createFile(atPath: arm, contents: Data("rows:row:\(WriteStatement.name)".utf8))
        #expect(try await log.append(request("a", 1, "cut")) == AppendReceipt(firstSequence: 2, lastSequence: 2, streamVersion: 2))
        #expect(!FileManager.default.fileExists(atPath: arm), "the proxy must have cut the append's answer")
        #expect(try await log.read(after: 0, limit: 10).count == 2)
    }

    @Test func aConnectionLostDuringACommitThatDidNotCommitIsRefusedAndNothingIsWritten() async throws {
        let (database, client) = try await TestPostgres.shared.makeClient()
        let log = try await PostgresEventLog.open(client: client)
        _ = try await log.append(request("a", 0))
        // A deferred trigger runs inside COMMIT: this one ends its own backend there.
        try await TestPostgres.shared.psql(database, """
            CREATE FUNCTION die() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_terminate_backend(pg_backend_pid()); RETURN NULL; END $$;
            CREATE CONSTRAINT TRIGGER die AFTER INSERT ON lockstep_events DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION die();
            """)
        await #expect(throws: EventLogError.self) { try await log.append(request("a", 1, "never")) }
        do {
            _ = try await log.append(request("a", 1, "never"))
        } catch {
            #expect(error.code == "storage_unavailable", "\(error)")
        }
        #expect(try await TestPostgres.shared.psql(database, "SELECT count(*) FROM lockstep_events") == "1\n")
        try await TestPostgres.shared.psql(database, "DROP TRIGGER die ON lockstep_events")
        #expect(try await log.append(request("a", 1, "now")) == AppendReceipt(firstSequence: 2, lastSequence: 2, streamVersion: 2))
    }

    @Test func aStorageFaultStopsWritesAndAFullDiskIsStorageFull() async throws {
        let (database, client) = try await TestPostgres.shared.makeClient()
        let log = try await PostgresEventLog.open(client: client)
        _ = try await log.append(request("a", 0))
        try await TestPostgres.shared.psql(database, """
            CREATE FUNCTION fault() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'simulated' USING ERRCODE = TG_ARGV[0]; END $$;
            CREATE TRIGGER disk_full BEFORE INSERT ON lockstep_events FOR EACH ROW EXECUTE FUNCTION fault('53100');
            """)
        do {
            _ = try await log.append(request("a", 1))
            Issue.record("an append on a full disk was acknowledged")
        } catch {
            #expect(error == .storageFull)
        }
        try await TestPostgres.shared.psql(database, """
            DROP TRIGGER disk_full ON lockstep_events;
            CREATE CONSTRAINT TRIGGER io AFTER INSERT ON lockstep_events DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION fault('58030');
            """)
        // A full disk is passing: the log still writes. An I/O error at COMMIT stops it.
        do {
            _ = try await log.append(request("a", 1))
            Issue.record("an append that hit an I/O error was acknowledged")
        } catch {
            #expect(error.code == "writes_stopped", "\(error)")
        }
        try await TestPostgres.shared.psql(database, "DROP TRIGGER io ON lockstep_events")
        do {
            _ = try await log.append(request("b", 0))
            Issue.record("a stopped log took an append")
        } catch {
            #expect(error.code == "writes_stopped", "\(error)")
        }
        #expect(try await log.head().sequence == 1)
        #expect(try await log.read(after: 0, limit: 10).count == 1)
    }
}
