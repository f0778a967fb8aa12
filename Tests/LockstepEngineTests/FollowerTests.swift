import LockstepCore
import LockstepEngine
import LockstepStore
import LockstepTestSupport
import Synchronization
import Testing

/// A replica's coordinator follows what another coordinator appends to a shared log (issue 16): its live
/// state equals the writer's at every point it has applied, byte for byte; it wakes watchers of what the
/// events change; a replica opened late starts from the newest snapshot and follows the tail.
enum Following {
    /// Runs the three recorded scenarios on `writer`, letting `replica` follow after each; returns the
    /// changes the replica announced (migration ids, in order).
    static func check(writer: Coordinator, replica: Coordinator, log: any EventLog) async throws -> [String] {
        let changes = Mutex<[String]>([])
        await replica.observeChanges { change, _ in changes.withLock { $0.append(change.migration?.rawValue ?? "plans") } }
        try await recordScenario(on: writer)
        try await followToTheHead(replica, log: log)
        #expect(await replica.digest == writer.digest, "after the first scenario")
        try await recordExposureScenario(on: writer)
        try await recordOrchestrationScenario(on: writer)
        try await followToTheHead(replica, log: log)
        #expect(await replica.digest == writer.digest, "after all three")
        #expect(await replica.appliedSequence == (try await log.head()).sequence)
        // Following again with nothing new is a no-op.
        #expect(try await replica.follow() == 0)
        return changes.withLock { $0 }
    }

    /// Follows page by page (a small page, so pages split appends) until the head; after each page, the
    /// services the replica publishes as having a step for polls are what its state says.
    static func followToTheHead(_ replica: Coordinator, log: any EventLog) async throws {
        while try await replica.follow(limit: 7) > 0 {
            let state = await replica.state
            let services = Set(state.migrations.values.flatMap { $0.plan.nodes.flatMap(\.services) }).union(state.serviceLeases.holders.keys)
            for service in services {
                #expect(replica.stepServices.contains(service) == state.mayHaveStep(forService: service), "\(service) at \(state.lastSequence)")
            }
        }
        #expect(await replica.appliedSequence == (try await log.head()).sequence)
    }

    /// A replica opened after a snapshot: from it plus the tail, then following, equal to the writer.
    static func checkLateReplica(writer: Coordinator, log: any EventLog) async throws {
        try await recordScenario(on: writer)
        let snapshot = try #require(try await writer.saveSnapshot())
        try await recordExposureScenario(on: writer)
        let late = try await Coordinator.open(log: log)
        #expect(await late.digest == writer.digest, "opened from the snapshot at \(snapshot) plus the tail")
        try await recordOrchestrationScenario(on: writer)
        try await followToTheHead(late, log: log)
        #expect(await late.digest == writer.digest)
    }
}

@Suite struct FollowerTests {
    @Test func aReplicaFollowingTheLogHasTheWritersStateAndAnnouncesTheChanges() async throws {
        let log = InMemoryEventLog()
        let writer = try await Coordinator.open(log: log)
        let replica = try await Coordinator.open(log: log)
        let changes = try await Following.check(writer: writer, replica: replica, log: log)
        #expect(changes.contains("ledger-split-1") && changes.contains("cache-warmup-1") && changes.contains("index-rebuild-1"), "\(changes)")
    }

    @Test func aLateReplicaStartsFromTheSnapshotAndFollowsTheTail() async throws {
        let log = InMemoryEventLog()
        try await Following.checkLateReplica(writer: try await Coordinator.open(log: log), log: log)
    }

    /// A page that does not follow on from the replica's state (a tampered log) is refused whole, and
    /// nothing of it is folded.
    @Test func aPageThatDoesNotCheckIsNotFolded() async throws {
        let log = InMemoryEventLog()
        let writer = try await Coordinator.open(log: log)
        let replica = try await Coordinator.open(log: log)
        try await recordScenario(on: writer)
        // A second migration_started in an existing stream, appended behind the coordinators' backs.
        let bogus = try #require(try await log.read(after: 0, limit: 1).first)
        let head = await log.head()
        _ = try await log.append(AppendRequest(stream: bogus.stream, expectedVersion: await log.streamVersion(of: bogus.stream), records: [bogus.record]))
        await #expect(throws: EventLogError.self) { try await replica.follow() }
        #expect(await replica.appliedSequence == 0)
        #expect(head.sequence > 0)
    }
}

/// A log that can be swapped for another under its readers: a database restored, or rewritten, under a
/// running replica.
final class SwappableLog: EventLog, Sendable {
    let current: Mutex<any EventLog>
    init(_ log: any EventLog) { current = Mutex(log) }
    func swap(to log: any EventLog) { current.withLock { $0 = log } }
    var log: any EventLog { current.withLock { $0 } }
    func append(_ request: AppendRequest) async throws(EventLogError) -> AppendReceipt { try await log.append(request) }
    func read(after sequence: UInt64, limit: Int) async throws(EventLogError) -> [StoredEvent] { try await log.read(after: sequence, limit: limit) }
    func read(stream: String, after sequence: UInt64, limit: Int) async throws(EventLogError) -> [StoredEvent] {
        try await log.read(stream: stream, after: sequence, limit: limit)
    }
    func head() async throws(EventLogError) -> LogHead { try await log.head() }
    func streamVersion(of stream: String) async throws(EventLogError) -> UInt64 { try await log.streamVersion(of: stream) }
    func streams(withPrefix prefix: String, after: String, limit: Int) async throws(EventLogError) -> [String] {
        try await log.streams(withPrefix: prefix, after: after, limit: limit)
    }
    func saveSnapshot(_ snapshot: Snapshot) async throws(EventLogError) { try await log.saveSnapshot(snapshot) }
    func latestSnapshot() async throws(EventLogError) -> Snapshot? { try await log.latestSnapshot() }
}

@Suite struct FollowerRewriteTests {
    /// The log rewritten under a replica (a restore, an edited row): its event N differs from the one the
    /// replica folded, and event N + 1 chains from the new one, so the log itself reads as sound. The
    /// replica checks the chain from what it folded, and refuses the page.
    @Test func aReplicaRefusesALogRewrittenUnderIt() async throws {
        let original = InMemoryEventLog()
        let writer = try await Coordinator.open(log: original)
        try await recordScenario(on: writer)
        let log = SwappableLog(original)
        let replica = try await Coordinator.open(log: log)
        let folded = await replica.appliedSequence
        try await recordExposureScenario(on: writer)
        // The same history with event `folded` altered, and what followed it chained onto the altered one.
        let rewritten = InMemoryEventLog()
        var after: UInt64 = 0
        while true {
            let page = try await original.read(after: after, limit: 500)
            guard !page.isEmpty else { break }
            for event in page {
                let record = event.sequence == folded ? event.record + [0x20] : event.record
                _ = try await rewritten.append(AppendRequest(stream: event.stream, expectedVersion: event.streamVersion - 1, records: [record]))
            }
            after = page.last?.sequence ?? after
        }
        log.swap(to: rewritten)
        do {
            _ = try await replica.follow()
            Issue.record("a replica folded a page chained onto an event it never folded")
        } catch {
            #expect(error.description.contains("does not chain from event \(folded) as this coordinator folded it"), "\(error)")
        }
        #expect(await replica.appliedSequence == folded)
    }
}

@Suite(.serialized, .dropsPostgresDatabases) struct PostgresFollowerTests {
    @Test func aReplicaOnPostgreSQLFollowsTheWriter() async throws {
        let database = try await TestPostgres.shared.makeDatabase()
        let log = try await TestPostgres.shared.openLog(database)
        let writer = try await Coordinator.open(log: log)
        // The replica reads through a log of its own (another pool), as another process would.
        let replica = try await Coordinator.open(log: try await TestPostgres.shared.openLog(database))
        _ = try await Following.check(writer: writer, replica: replica, log: log)
    }

    /// Issue 16: a new replica started against a long history catches up from a snapshot plus the tail.
    @Test func aNewReplicaCatchesUpFromTheSnapshotPlusTheTail() async throws {
        let database = try await TestPostgres.shared.makeDatabase()
        let log = try await TestPostgres.shared.openLog(database)
        try await Following.checkLateReplica(writer: try await Coordinator.open(log: log), log: log)
    }
}
