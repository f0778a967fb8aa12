import Foundation
import Logging
import LockstepPostgres
import LockstepStore
import LockstepTestSupport
import Testing

/// One writer at a time on a shared database: the leadership lease says who, the epoch makes sure.
@Suite(.serialized, .dropsPostgresDatabases) struct PostgresFencingTests {
    func request(_ stream: String, _ expected: UInt64, _ record: String) -> AppendRequest {
        AppendRequest(stream: stream, expectedVersion: expected, records: [Array(record.utf8)])
    }

    @Test func aDeposedWritersAppendWritesNothingAndStopsItsLog() async throws {
        let (database, clientA) = try await TestPostgres.shared.makeClient()
        let clientB = await TestPostgres.shared.client(database, port: try await TestPostgres.shared.port())
        let a = try await PostgresEventLog.open(client: clientA)
        let b = try await PostgresEventLog.open(client: clientB)
        // Long TTLs, so a loaded machine cannot make a lease lapse early; A's lapse is made on purpose below.
        let leaderA = PostgresLeadership(client: clientA, holder: "a", address: "a:1", ttlMillis: 60_000, logger: Logger(label: "a"))
        let leaderB = PostgresLeadership(client: clientB, holder: "b", address: "b:1", ttlMillis: 60_000, logger: Logger(label: "b"))

        let epochA = try #require(try await leaderA.tryAcquire())
        await a.fence(epoch: epochA)
        #expect(try await leaderB.tryAcquire() == nil, "a live lease is not taken")
        #expect(try await leaderB.current() == .init(epoch: epochA, holder: "a", address: "a:1", lapsed: false))
        _ = try await a.append(request("s", 0, "a1"))
        #expect(try await leaderA.renew(epoch: epochA, within: .seconds(10)))

        // A's last renewal is for 1 ms (as if it stopped renewing); once the lease lapses by the database's
        // clock, B takes over.
        #expect(try await PostgresLeadership(client: clientA, holder: "a", address: "a:1", ttlMillis: 1, logger: Logger(label: "a")).renew(epoch: epochA, within: .seconds(10)))
        try await Task.sleep(for: .milliseconds(20))
        let epochB = try #require(try await leaderB.tryAcquire())
        #expect(epochB == epochA + 1)
        await b.fence(epoch: epochB)
        do {
            _ = try await a.append(request("s", 1, "a2"))
            Issue.record("a deposed writer's append was acknowledged")
        } catch {
            #expect(error.code == "writes_stopped" && error.description.contains("deposed"), "\(error)")
        }
        #expect(await a.writesStopped != nil)
        #expect(try await leaderA.renew(epoch: epochA, within: .seconds(10)) == false, "the lease is B's now")
        #expect(try await b.append(request("s", 1, "b1")).firstSequence == 2)

        // A graceful stop hands over at once.
        try await leaderB.release(epoch: epochB)
        let leaderC = PostgresLeadership(client: clientA, holder: "c", address: "c:1", ttlMillis: 60_000, logger: Logger(label: "c"))
        #expect(try await leaderC.tryAcquire() == epochB + 1)
    }

    /// A standby's take of a lease that is running takes no lock on the lease row, so a standby frozen in
    /// the middle of one cannot hold the writer's renewals (before, it locked the row first: frozen there,
    /// the writer's renewals waited until the database ended the standby's transaction, half a TTL or more,
    /// and a healthy writer could lose its lease). Here another session holds the row locked, past B's
    /// lock_timeout: B still sees the lease held, where the locking take failed.
    @Test func aStandbysLookAtARunningLeaseTakesNoLock() async throws {
        let (database, clientA) = try await TestPostgres.shared.makeClient()
        let clientB = await TestPostgres.shared.client(database, port: try await TestPostgres.shared.port())
        _ = try await PostgresEventLog.open(client: clientA)
        let leaderA = PostgresLeadership(client: clientA, holder: "a", address: "a:1", ttlMillis: 60_000, logger: Logger(label: "a"))
        // B's TTL bounds its take (1.6 s: room for a loaded machine) and sets its lock_timeout (400 ms), both
        // shorter than the 2 s the other session holds the row.
        let leaderB = PostgresLeadership(client: clientB, holder: "b", address: "b:1", ttlMillis: 1_600, logger: Logger(label: "b"))
        let epoch = try #require(try await leaderA.tryAcquire())
        async let held = TestPostgres.shared.psql(database, "BEGIN; SELECT 1 FROM lockstep_leader WHERE id = 1 FOR UPDATE; SELECT pg_sleep(2); COMMIT;")
        try await TestPostgres.shared.waitForASessionInPgSleep(database)
        #expect(try await leaderB.tryAcquire() == nil, "a running lease is not taken")
        #expect(try await leaderB.current()?.holder == "a")
        _ = try await held
        #expect(try await leaderA.renew(epoch: epoch, within: .seconds(10)))
    }

    /// A writer appending as fast as it can while another takes over: every append the old writer had
    /// acknowledged is in the log, and none of its events comes after the new writer's first.
    @Test func appendsRacingATakeoverNeverInterleave() async throws {
        let (database, clientA) = try await TestPostgres.shared.makeClient()
        let clientB = await TestPostgres.shared.client(database, port: try await TestPostgres.shared.port())
        let a = try await PostgresEventLog.open(client: clientA)
        let b = try await PostgresEventLog.open(client: clientB)
        let leaderA = PostgresLeadership(client: clientA, holder: "a", address: "", ttlMillis: 1_000, logger: Logger(label: "a"))
        let leaderB = PostgresLeadership(client: clientB, holder: "b", address: "", ttlMillis: 200, logger: Logger(label: "b"))
        await a.fence(epoch: try #require(try await leaderA.tryAcquire()))

        let acknowledged = try await withThrowingTaskGroup(of: [UInt64].self) { group in
            for writer in 0..<8 {
                group.addTask {
                    var sequences: [UInt64] = []
                    var version: UInt64 = 0
                    while true {
                        do throws(EventLogError) {
                            let receipt = try await a.append(request("a-\(writer)", version, "a"))
                            sequences.append(receipt.firstSequence)
                            version += 1
                        } catch {
                            #expect(error.code == "writes_stopped", "\(error)")
                            return sequences
                        }
                    }
                }
            }
            group.addTask {
                // Once A has written something (however loaded the machine), B waits for A's lease to lapse.
                while try await a.head().sequence < 20 { try await Task.sleep(for: .milliseconds(10)) }
                for _ in 0..<600 {  // 30 s at most
                    try await Task.sleep(for: .milliseconds(50))
                    // A take that gets no answer within its bound (B's TTL, 200 ms: on a loaded
                    // machine beside eight writers) is tried again, as the leadership keeper does; one
                    // that committed all the same costs B its own TTL, never a second writer.
                    if let epoch = try? await leaderB.tryAcquire() {
                        await b.fence(epoch: epoch)
                        for round in 0..<20 { _ = try await b.append(request("b", UInt64(round), "b")) }
                        return []
                    }
                }
                throw TestFailure("B did not take over within 30 s")
            }
            return try await group.reduce(into: [UInt64]()) { $0 += $1 }
        }
        var events: [StoredEvent] = []
        var position: UInt64 = 0
        while case let page = try await b.read(after: position, limit: 1_000), let last = page.last {
            events += page
            position = last.sequence
        }
        let firstOfB = try #require(events.firstIndex { $0.stream == "b" })
        #expect(events[firstOfB...].allSatisfy { $0.stream == "b" }, "the deposed writer's events must all come before the new writer's")
        #expect(events.count == acknowledged.count + 20)
        #expect(Set(acknowledged) == Set(events[..<firstOfB].map(\.sequence)), "every acknowledged append is there, and nothing else")
        #expect(acknowledged.count >= 20, "the old writer wrote before it was deposed")
    }
}
