import Logging
import LockstepStore
import NIOCore
import PostgresNIO
import Synchronization

/// The event log on PostgreSQL (issue 16), through postgres-nio: the same log port, record bytes and
/// hash chain as the SQLite log, so the same conformance suite holds it and `history verify|replay|export`
/// read it unchanged.
///
/// One head row (`lockstep_head`, id 1) is read `FOR UPDATE` and rewritten inside every append
/// transaction: it serializes writers, so sequences are dense and visible in commit order, and it is where
/// the previous chain hash is read and the new one written (no sequence object, no high-water mark).
/// Appends that arrive while a commit is in flight share the next transaction (group commit), each
/// checked against its expected stream version on its own. A COMMIT whose outcome is unknown (the
/// connection lost during it) is resolved by reading the head, never by guessing; when even that fails
/// the log stops taking writes (fail-stop).
///
/// A failure PostgreSQL reports as a storage fault (SQLSTATE class 58, system errors such as an I/O
/// error, or XX, internal errors such as corrupted data) stops writes (fail-stop), as an I/O error does
/// on SQLite; a full disk (53100) is `storage_full`; a lost or refused connection is `storage_unavailable`
/// and the next append tries again on a fresh connection (nothing of a transaction that did not reach
/// COMMIT is kept).
///
/// The caller owns the `PostgresClient` and runs it (`client.run()`, or as a service) for the log's lifetime.
public actor PostgresEventLog: EventLog {
    public struct Options: Sendable {
        /// Told about every successful commit (metrics, benchmarks).
        public var observer: (@Sendable (LogCommit) -> Void)?
        /// Told about every transaction that failed for a storage reason (readiness, log lines).
        public var failureObserver: (@Sendable (EventLogError) -> Void)?
        /// How long a commit whose outcome is unknown is resolved for, reading the head with back-off
        /// (100 ms doubling to 2 s), before writes stop, in milliseconds: a database restart shorter than
        /// this costs a wait, not a stop.
        public var resolveMillisMax: Int64 = 30_000
        /// The longest an append transaction may take, in milliseconds: past it its connection is closed
        /// from this side, which fails whatever it waits for (a query on a connection whose server died
        /// can otherwise wait forever in postgres-nio 1.33), and the outcome is resolved from the log.
        public var transactionMillisMax: Int64 = 5_000

        public init() {}
    }

    private let client: PostgresClient
    private let logger: Logger
    private let options: Options
    /// Appends waiting for the next transaction (the drainer's own has no continuation).
    private var queue: [(request: AppendRequest, continuation: CheckedContinuation<Result<AppendReceipt, EventLogError>, Never>?)] = []
    private var queuedEvents = 0
    private var draining = false
    private var stopped: EventLogError?
    /// The writer's epoch this log appends under (`fence`); nil: unfenced (one coordinator, tools).
    private var epoch: Int64?

    /// From now on every append checks, in its transaction, that the log's epoch is still `epoch`; when
    /// another coordinator has taken over (a higher epoch), the append writes nothing and the log stops
    /// taking writes: a deposed writer can never interleave with the new one.
    public func fence(epoch: Int64) {
        self.epoch = epoch
    }

    /// Why writes stopped (a storage fault, an unknown outcome, deposition), nil while they go on.
    public var writesStopped: EventLogError? { stopped }

    /// Opens the log on `client`'s database, creating its tables when they do not exist yet (`create`), or
    /// refusing a database without them (governance commands, which never alter what they read).
    public static func open(client: PostgresClient, options: Options = Options(), create: Bool = true,
                            logger: Logger = Logger(label: "lockstep.postgres")) async throws(EventLogError) -> PostgresEventLog {
        do {
            if create {
                // One transaction, serialized between coordinators starting together (concurrent CREATE
                // TABLE IF NOT EXISTS can collide); the lock is the transaction's, released at its end.
                try await client.withTransaction(logger: logger) { connection in
                    try await connection.query("SELECT pg_advisory_xact_lock(7475012016)", logger: logger)
                    for statement in schema { try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger) }
                }
            } else {
                var found = false
                for try await present in try await client.query("SELECT to_regclass('lockstep_head') IS NOT NULL", logger: logger).decode(Bool.self) {
                    found = present
                }
                guard found else { throw EventLogError.invalidRequest("this database holds no Lockstep log (no lockstep_head table)") }
            }
        } catch let error as EventLogError {
            throw error
        } catch {
            throw .unavailable("the PostgreSQL schema could not be \(create ? "prepared" : "read"): \(Self.describe(error))")
        }
        return PostgresEventLog(client: client, options: options, logger: logger)
    }

    /// Runs `body` with the log on a client of its own, running only for the call (one-shot commands:
    /// history, copies); the client's connections are closed when it returns.
    public static func withLog<Result>(_ configuration: PostgresClient.Configuration, create: Bool,
                                       _ body: (PostgresEventLog) async throws -> Result) async throws -> Result {
        var quiet = Logger(label: "lockstep.postgres")
        quiet.logLevel = .warning
        let client = PostgresClient(configuration: configuration, backgroundLogger: quiet)
        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await client.run() }
            defer { group.cancelAll() }
            let log = try await open(client: client, create: create, logger: quiet)
            return try await body(log)
        }
    }

    private init(client: PostgresClient, options: Options, logger: Logger) {
        self.client = client
        self.options = options
        self.logger = logger
    }

    static let schema = [
        """
        CREATE TABLE IF NOT EXISTS lockstep_head (
            id integer PRIMARY KEY CHECK (id = 1), sequence bigint NOT NULL, chain_hash bytea NOT NULL)
        """,
        "INSERT INTO lockstep_head (id, sequence, chain_hash) VALUES (1, 0, decode(repeat('00', 32), 'hex')) ON CONFLICT (id) DO NOTHING",
        // The writer's epoch (PostgresLeadership): bumped by a coordinator that takes over, checked by every
        // append of a fenced log in the transaction that writes.
        "ALTER TABLE lockstep_head ADD COLUMN IF NOT EXISTS epoch bigint NOT NULL DEFAULT 0",
        """
        CREATE TABLE IF NOT EXISTS lockstep_leader (
            id integer PRIMARY KEY CHECK (id = 1), epoch bigint NOT NULL, holder text NOT NULL, address text NOT NULL,
            expires_at timestamptz NOT NULL)
        """,
        "INSERT INTO lockstep_leader (id, epoch, holder, address, expires_at) VALUES (1, 0, '', '', '-infinity') ON CONFLICT (id) DO NOTHING",
        """
        CREATE TABLE IF NOT EXISTS lockstep_events (
            sequence bigint PRIMARY KEY, stream text NOT NULL, stream_version bigint NOT NULL,
            record bytea NOT NULL, chain_hash bytea NOT NULL, UNIQUE (stream, stream_version))
        """,
        "CREATE TABLE IF NOT EXISTS lockstep_streams (stream text COLLATE \"C\" PRIMARY KEY, version bigint NOT NULL)",
        """
        CREATE TABLE IF NOT EXISTS lockstep_snapshots (
            sequence bigint PRIMARY KEY, chain_hash bytea NOT NULL, state bytea NOT NULL, digest bytea NOT NULL)
        """,
    ]

    // MARK: - Appends

    public func append(_ request: AppendRequest) async throws(EventLogError) -> AppendReceipt {
        try request.validate()
        if let stopped { throw stopped }
        guard queuedEvents + request.records.count <= EventLogLimits.appendQueueEventsMax else {
            throw .overloaded("\(queuedEvents) events are waiting for a commit; the limit is \(EventLogLimits.appendQueueEventsMax)")
        }
        queuedEvents += request.records.count
        if draining {
            // A commit is in flight: this append joins the next transaction, which the drainer runs.
            return try await withCheckedContinuation { queue.append((request, $0)) }.get()
        }
        // This caller commits, batch after batch, until nothing waits (no task of the log's own).
        draining = true
        queue.append((request, nil))
        var own: Result<AppendReceipt, EventLogError>?
        while !queue.isEmpty {
            var events = 0
            var count = 0
            while count < queue.count, count == 0 || events + queue[count].request.records.count <= EventLogLimits.commitBatchEventsMax {
                events += queue[count].request.records.count
                count += 1
            }
            let batch = Array(queue.prefix(count))
            queue.removeFirst(count)
            queuedEvents -= events
            let results = await commit(batch.map(\.request))
            for (entry, result) in zip(batch, results) {
                if let continuation = entry.continuation { continuation.resume(returning: result) } else { own = result }
            }
        }
        draining = false
        guard let own else { preconditionFailure("the drainer's own append was not committed") }
        return try own.get()
    }

    /// One transaction for `requests`.
    private func commit(_ requests: [AppendRequest]) async -> [Result<AppendReceipt, EventLogError>] {
        if let stopped { return requests.map { _ in .failure(stopped) } }
        let began = ContinuousClock.now
        let progress = TransactionProgress()
        do {
            try await transaction(requests, progress)
        } catch {
            let failure = Self.failure(error)
            if case .versionConflict = failure {} else { options.failureObserver?(failure) }
            if case .writesStopped = failure, stopped == nil { stopped = failure }
            guard let inserted = progress.state.withLock({ $0.planned }) else { return requests.map { _ in .failure(failure) } }
            return await resolve(inserted, failure: failure, commitMayStillLand: error is TransactionOverran)
        }
        guard let inserted = progress.state.withLock({ $0.planned }) else { return requests.map { _ in .failure(.unavailable("the transaction ran no inserts")) } }
        let events = inserted.head.sequence - inserted.before.sequence
        if events > 0, let observer = options.observer {
            let elapsed = ContinuousClock.now - began
            let nanos = UInt64(max(0, elapsed.components.seconds)) * 1_000_000_000 + UInt64(max(0, elapsed.components.attoseconds / 1_000_000_000))
            observer(LogCommit(events: Int(events), appends: requests.count, durationNanos: nanos))
        }
        return inserted.results
    }

    /// A query written to a connection already closed waits forever in postgres-nio 1.33; asking first
    /// turns nearly all of those into a prompt `storage_unavailable` (the watchdog answers for the rest).
    private static func checkOpen(_ connection: PostgresConnection) throws {
        guard !connection.isClosed else { throw EventLogError.unavailable("the connection to PostgreSQL closed") }
    }

    /// Runs one read (or a snapshot's write) on the client, bounded by `transactionMillisMax` for the same
    /// reason as a transaction: past it the read is abandoned and fails as `storage_unavailable`.
    private func bounded<T: Sendable>(_ body: @escaping @Sendable (PostgresClient, Logger) async throws -> T) async throws -> T {
        let answer = OneShot<T>()
        let limit = Duration.milliseconds(options.transactionMillisMax)
        let work = Task { [client, logger] in
            do { answer.end(.success(try await body(client, logger))) } catch { answer.end(.failure(error)) }
        }
        let watchdog = Task {
            guard (try? await Task.sleep(for: limit)) != nil else { return }
            answer.end(.failure(EventLogError.unavailable("PostgreSQL did not answer within \(limit)")))
        }
        let result = await answer.wait()
        watchdog.cancel()
        _ = work
        return try result.get()
    }

    /// What a transaction has got to, shared between it and its watchdog.
    final class TransactionProgress: Sendable {
        struct State {
            /// Set once the inserts are done, before postgres-nio sends COMMIT: a failure after it leaves
            /// the outcome to be read from the log.
            var planned: Planned?
            /// Set by the watchdog when the transaction overran before its inserts were done: it must not
            /// commit any more (it rolls back if it ever gets that far).
            var abandoned = false
        }
        let state = Mutex(State())
        let answer = OneShot<Void>()
        func end(_ result: Result<Void, any Error>) { answer.end(result) }
        func wait() async -> Result<Void, any Error> { await answer.wait() }
    }

    /// One answer, from whichever side gives it first (the work, or its watchdog).
    final class OneShot<T: Sendable>: Sendable {
        private struct State {
            var waiter: CheckedContinuation<Result<T, any Error>, Never>?
            var result: Result<T, any Error>?
        }
        private let state = Mutex(State())

        func end(_ result: Result<T, any Error>) {
            let waiter = state.withLock { state -> CheckedContinuation<Result<T, any Error>, Never>? in
                guard state.result == nil else { return nil }
                state.result = result
                defer { state.waiter = nil }
                return state.waiter
            }
            waiter?.resume(returning: result)
        }

        func wait() async -> Result<T, any Error> {
            await withCheckedContinuation { continuation in
                let now = state.withLock { state -> Result<T, any Error>? in
                    if let result = state.result { return result }
                    state.waiter = continuation
                    return nil
                }
                if let now { continuation.resume(returning: now) }
            }
        }
    }

    /// The transaction outlived `transactionMillisMax`.
    struct TransactionOverran: Error, CustomStringConvertible {
        var description: String
    }

    /// Runs one append transaction, bounded in time. postgres-nio 1.33 can leave a query waiting forever
    /// when its connection closes under it (the database crashed), and a waiting query cannot be
    /// cancelled; so the transaction runs in a task of its own and a watchdog answers for it after
    /// `transactionMillisMax`: before its inserts were done, it is abandoned (it can never commit: it
    /// rolls back if it wakes) and nothing was written; after them, its COMMIT may still land, and the
    /// outcome is read from the log. An abandoned task holds one pooled connection until the pool
    /// notices it closed; there is at most one per overrun.
    private func transaction(_ requests: [AppendRequest], _ progress: TransactionProgress) async throws {
        let epoch = self.epoch
        let logger = self.logger
        let limit = Duration.milliseconds(options.transactionMillisMax)
        let work = Task { [client] in
            do {
                try await client.withTransaction(logger: logger) { connection in
                    let planned = try await Self.insert(requests, epoch: epoch, on: connection, logger: logger)
                    try progress.state.withLock { state in
                        guard !state.abandoned else { throw TransactionOverran(description: "abandoned after \(limit)") }
                        state.planned = planned
                    }
                }
                progress.end(.success(()))
            } catch {
                progress.end(.failure(error))
            }
        }
        let watchdog = Task {
            guard (try? await Task.sleep(for: limit)) != nil else { return }
            let inserted = progress.state.withLock { state in
                if state.planned == nil { state.abandoned = true }
                return state.planned != nil
            }
            logger.warning("an append transaction took longer than \(limit)\(inserted ? " after its inserts; its outcome is read from the log" : "; abandoned, nothing written")")
            progress.end(.failure(TransactionOverran(description: "the transaction took longer than \(limit)")))
        }
        let result = await progress.wait()
        watchdog.cancel()
        _ = work
        try result.get()
    }

    /// What a transaction's inserts did: each request's result, the head they leave and the head before.
    typealias Planned = (results: [Result<AppendReceipt, EventLogError>], head: LogHead, before: LogHead)

    /// An error of a transaction as the log reports it (see the type's comment).
    static func failure(_ error: any Error) -> EventLogError {
        let error = cause(error)
        if let error = error as? EventLogError { return error }
        if let error = error as? PSQLError, let state = error.serverInfo?[.sqlState] {
            if state == "53100" { return .storageFull }
            if state.hasPrefix("58") || state.hasPrefix("XX") {
                return .writesStopped(reason: "PostgreSQL reported a storage fault (SQLSTATE \(state)): \(describe(error))")
            }
        }
        return .unavailable(describe(error))
    }

    /// Inserts every request whose expected version holds, chaining each event to the one before, and
    /// moves the head. Returns each request's result, the new head and the head before.
    private static func insert(_ requests: [AppendRequest], epoch: Int64?, on connection: PostgresConnection, logger: Logger) async throws -> Planned {
        try checkOpen(connection)
        let rows = try await connection.query("SELECT sequence, chain_hash, epoch FROM lockstep_head WHERE id = 1 FOR UPDATE", logger: logger)
        var before = LogHead.genesis
        for try await (sequence, hash, stored) in rows.decode((Int64, ByteBuffer, Int64).self) {
            guard let link = ChainHash(bytes: Array(hash.readableBytesView)) else { throw EventLogError.corrupted(position: UInt64(sequence), reason: "the head's chain hash is not 32 bytes") }
            if let epoch, stored != epoch {
                throw EventLogError.writesStopped(reason: "deposed: this coordinator wrote under epoch \(epoch); another took over (epoch \(stored))")
            }
            before = LogHead(sequence: UInt64(sequence), chainHash: link)
        }
        // The versions of every stream the batch touches, in one query.
        var versions: [String: UInt64] = [:]
        let names = Array(Set(requests.map(\.stream))).sorted()
        try checkOpen(connection)
        for try await (stream, version) in try await connection.query("SELECT stream, version FROM lockstep_streams WHERE stream = ANY(\(names))",
                                                                      logger: logger).decode((String, Int64).self) {
            versions[stream] = UInt64(version)
        }
        // Each request checked on its own, in order; the events of those that hold, chained.
        var head = before
        var results: [Result<AppendReceipt, EventLogError>] = []
        var sequences: [Int64] = [], streams: [String] = [], streamVersions: [Int64] = [], records: [ByteBuffer] = [], links: [ByteBuffer] = []
        for request in requests {
            let actual = versions[request.stream] ?? 0
            guard actual == request.expectedVersion else {
                results.append(.failure(.versionConflict(stream: request.stream, expected: request.expectedVersion, actual: actual)))
                continue
            }
            let first = head.sequence + 1
            var version = actual
            for record in request.records {
                version += 1
                let sequence = head.sequence + 1
                let link = head.chainHash.next(sequence: sequence, record: record)
                sequences.append(Int64(sequence))
                streams.append(request.stream)
                streamVersions.append(Int64(version))
                records.append(ByteBuffer(bytes: record))
                links.append(ByteBuffer(bytes: link.bytes))
                head = LogHead(sequence: sequence, chainHash: link)
            }
            versions[request.stream] = version
            results.append(.success(AppendReceipt(firstSequence: first, lastSequence: head.sequence, streamVersion: version)))
        }
        if head != before {
            // Three statements, whatever the batch's size: the events, the streams' versions, the head.
            try checkOpen(connection)
            try await connection.query("""
                INSERT INTO lockstep_events (sequence, stream, stream_version, record, chain_hash)
                SELECT * FROM unnest(\(sequences)::bigint[], \(streams)::text[], \(streamVersions)::bigint[], \(records)::bytea[], \(links)::bytea[])
                """, logger: logger)
            let touched = names.filter { versions[$0] != nil }
            try checkOpen(connection)
            try await connection.query("""
                INSERT INTO lockstep_streams (stream, version) SELECT * FROM unnest(\(touched)::text[], \(touched.map { Int64(versions[$0]!) })::bigint[])
                ON CONFLICT (stream) DO UPDATE SET version = EXCLUDED.version
                """, logger: logger)
            try checkOpen(connection)
            try await connection.query("UPDATE lockstep_head SET sequence = \(Int64(head.sequence)), chain_hash = \(ByteBuffer(bytes: head.chainHash.bytes)) WHERE id = 1",
                                       logger: logger)
        }
        return (results, head, before)
    }

    /// The transaction failed after its inserts (at COMMIT, or on the way to it): whether it committed is
    /// read from the log. Heads only grow, so it committed exactly when the event at the sequence it would
    /// have ended on is there with the chain hash it computed; otherwise nothing of it was written (another
    /// writer's events there, or none). While the log cannot be read (the database restarting) it is asked again
    /// with back-off for `resolveMillisMax`; then nobody knows, and the log stops taking writes.
    private func resolve(_ planned: Planned, failure: EventLogError, commitMayStillLand: Bool = false) async -> [Result<AppendReceipt, EventLogError>] {
        let reason = failure.description
        let deadline = ContinuousClock.now + .milliseconds(options.resolveMillisMax)
        var pause = Duration.milliseconds(100)
        while true {
            do {
                // Heads only grow: it committed exactly when its last event is in the log with its chain hash.
                let now = try await head()
                if planned.head.sequence > planned.before.sequence, now.sequence >= planned.head.sequence,
                   try await read(after: planned.head.sequence - 1, limit: 1).first?.chainHash == planned.head.chainHash {
                    logger.notice("a commit's acknowledgement was lost; the head shows it committed", metadata: ["head": "\(planned.head.sequence)"])
                    return planned.results
                }
                // Not there. A COMMIT that overran may still land, so that is no answer; otherwise it never will.
                if commitMayStillLand { break }
                return planned.results.map { result in
                    if case .failure = result { return result }
                    return .failure(stopped ?? failure)
                }
            } catch {
                guard ContinuousClock.now + pause < deadline else { break }
                try? await Task.sleep(for: pause)
                pause = min(pause * 2, .seconds(2))
            }
        }
        let stop = EventLogError.writesStopped(reason: "a commit's outcome is unknown and the head could not tell: \(reason)")
        if stopped == nil { stopped = stop }
        options.failureObserver?(stop)
        return planned.results.map { result in
            if case .failure = result { return result }
            return .failure(.outcomeUnknown(reason: reason))
        }
    }

    // MARK: - Reads

    public func read(after sequence: UInt64, limit: Int) async throws(EventLogError) -> [StoredEvent] {
        let limit = min(max(limit, 0), EventLogLimits.readPageEventsMax)
        guard limit > 0, sequence < UInt64(Int64.max) else { return [] }
        let events = try await select("""
            SELECT e.sequence, e.stream, e.stream_version, e.record, e.chain_hash, p.chain_hash
            FROM lockstep_events e LEFT JOIN lockstep_events p ON p.sequence = e.sequence - 1
            WHERE e.sequence > \(Int64(sequence)) ORDER BY e.sequence LIMIT \(Int64(limit))
            """)
        // The page must start right after `sequence` and have no gaps (a deleted row is damage).
        var expected = sequence + 1
        var verifier: ChainVerifier?
        for (event, previous) in events {
            guard event.sequence == expected else { throw .corrupted(position: expected, reason: "event \(expected) is missing") }
            if verifier == nil {
                guard sequence == 0 || previous != nil else { throw .corrupted(position: sequence, reason: "event \(sequence) is missing") }
                verifier = ChainVerifier(after: sequence == 0 ? .genesis : LogHead(sequence: sequence, chainHash: previous!))
            }
            try verifier?.check(event)
            expected += 1
        }
        if events.isEmpty, sequence > 0 {
            // Nothing after `sequence`: it must be the head, or events are missing before it.
            let head = try await head()
            if head.sequence > sequence { throw .corrupted(position: sequence + 1, reason: "event \(sequence + 1) is missing") }
        }
        return events.map(\.0)
    }

    public func read(stream: String, after sequence: UInt64, limit: Int) async throws(EventLogError) -> [StoredEvent] {
        let limit = min(max(limit, 0), EventLogLimits.readPageEventsMax)
        guard limit > 0, sequence < UInt64(Int64.max), !stream.isEmpty, stream.utf8.count <= EventLogLimits.streamNameBytesMax else { return [] }
        let events = try await select("""
            SELECT e.sequence, e.stream, e.stream_version, e.record, e.chain_hash, p.chain_hash
            FROM lockstep_events e LEFT JOIN lockstep_events p ON p.sequence = e.sequence - 1
            WHERE e.stream = \(stream) AND e.sequence > \(Int64(sequence)) ORDER BY e.sequence LIMIT \(Int64(limit))
            """)
        var verifier = StreamReadVerifier()
        for (event, previous) in events { try verifier.check(event, previous: previous) }
        return events.map(\.0)
    }

    private func select(_ query: PostgresQuery) async throws(EventLogError) -> [(StoredEvent, ChainHash?)] {
        do {
            return try await bounded { client, logger in
                var events: [(StoredEvent, ChainHash?)] = []
                let rows = try await client.query(query, logger: logger)
                for try await (sequence, stream, version, record, hash, previous) in rows.decode((Int64, String, Int64, ByteBuffer, ByteBuffer, ByteBuffer?).self) {
                    guard let link = ChainHash(bytes: Array(hash.readableBytesView)) else {
                        throw EventLogError.corrupted(position: UInt64(sequence), reason: "its chain hash is not 32 bytes")
                    }
                    let before = previous.flatMap { ChainHash(bytes: Array($0.readableBytesView)) }
                    events.append((StoredEvent(sequence: UInt64(sequence), stream: stream, streamVersion: UInt64(version),
                                               record: Array(record.readableBytesView), chainHash: link), before))
                }
                return events
            }
        } catch let error as EventLogError {
            throw error
        } catch {
            throw .unavailable(Self.describe(error))
        }
    }

    public func head() async throws(EventLogError) -> LogHead {
        do {
            return try await bounded { client, logger in
                let rows = try await client.query("SELECT sequence, chain_hash FROM lockstep_head WHERE id = 1", logger: logger)
                for try await (sequence, hash) in rows.decode((Int64, ByteBuffer).self) {
                    guard let link = ChainHash(bytes: Array(hash.readableBytesView)) else {
                        throw EventLogError.corrupted(position: UInt64(sequence), reason: "the head's chain hash is not 32 bytes")
                    }
                    return LogHead(sequence: UInt64(sequence), chainHash: link)
                }
                throw EventLogError.corrupted(position: 0, reason: "the head row is missing")
            }
        } catch let error as EventLogError {
            throw error
        } catch {
            throw .unavailable(Self.describe(error))
        }
    }

    public func streamVersion(of stream: String) async throws(EventLogError) -> UInt64 {
        do {
            return try await bounded { client, logger in
                for try await version in try await client.query("SELECT version FROM lockstep_streams WHERE stream = \(stream)", logger: logger)
                    .decode(Int64.self) { return UInt64(version) }
                return 0
            }
        } catch {
            throw .unavailable(Self.describe(error))
        }
    }

    public func streams(withPrefix prefix: String, after: String, limit: Int) async throws(EventLogError) -> [String] {
        let limit = min(max(limit, 0), EventLogLimits.streamNamesPageMax)
        guard limit > 0 else { return [] }
        do {
            return try await bounded { client, logger in
                // UTF-8 byte order: the column's collation is "C"; the prefix is matched as a string, not a LIKE pattern.
                var names: [String] = []
                let rows = try await client.query("""
                    SELECT stream FROM lockstep_streams WHERE stream > \(after) AND starts_with(stream, \(prefix))
                    ORDER BY stream LIMIT \(Int64(limit))
                    """, logger: logger)
                for try await name in rows.decode(String.self) { names.append(name) }
                return names
            }
        } catch {
            throw .unavailable(Self.describe(error))
        }
    }

    // MARK: - Snapshots

    public func saveSnapshot(_ snapshot: Snapshot) async throws(EventLogError) {
        try snapshot.validate()
        if let stopped { throw stopped }
        let named = try await read(after: snapshot.sequence &- 1, limit: 1).first
        guard snapshot.sequence >= 1, let named, named.sequence == snapshot.sequence, named.chainHash == snapshot.chainHash else {
            throw .invalidRequest("snapshot at \(snapshot.sequence) does not match an event of this log")
        }
        do {
            // A snapshot abandoned by the bound may still land later: harmless, it is verified when read.
            try await bounded { client, logger in
                try await client.withTransaction(logger: logger) { connection in
                    try Self.checkOpen(connection)
                    try await connection.query("""
                        INSERT INTO lockstep_snapshots (sequence, chain_hash, state, digest)
                        VALUES (\(Int64(snapshot.sequence)), \(ByteBuffer(bytes: snapshot.chainHash.bytes)), \(ByteBuffer(bytes: snapshot.state)),
                                \(ByteBuffer(bytes: snapshot.digest)))
                        ON CONFLICT (sequence) DO UPDATE SET chain_hash = EXCLUDED.chain_hash, state = EXCLUDED.state, digest = EXCLUDED.digest
                        """, logger: logger)
                    try Self.checkOpen(connection)
                    try await connection.query("""
                        DELETE FROM lockstep_snapshots WHERE sequence NOT IN
                            (SELECT sequence FROM lockstep_snapshots ORDER BY sequence DESC LIMIT \(Int64(EventLogLimits.snapshotsRetainedMax)))
                        """, logger: logger)
                }
            }
        } catch {
            throw .unavailable(Self.describe(error))
        }
    }

    public func latestSnapshot() async throws(EventLogError) -> Snapshot? {
        do {
            return try await bounded { client, logger in
                let rows = try await client.query(
                    "SELECT sequence, chain_hash, state, digest FROM lockstep_snapshots ORDER BY sequence DESC LIMIT 1", logger: logger)
                for try await (sequence, hash, state, digest) in rows.decode((Int64, ByteBuffer, ByteBuffer, ByteBuffer).self) {
                    guard let link = ChainHash(bytes: Array(hash.readableBytesView)) else {
                        throw EventLogError.corrupted(position: UInt64(sequence), reason: "the snapshot's chain hash is not 32 bytes")
                    }
                    return Snapshot(sequence: UInt64(sequence), chainHash: link, state: Array(state.readableBytesView), digest: Array(digest.readableBytesView))
                }
                return nil
            }
        } catch let error as EventLogError {
            throw error
        } catch {
            throw .unavailable(Self.describe(error))
        }
    }

    /// How many snapshots are stored (at most `EventLogLimits.snapshotsRetainedMax`).
    public func snapshotCount() async throws(EventLogError) -> Int {
        do {
            return try await bounded { client, logger in
                for try await count in try await client.query("SELECT count(*) FROM lockstep_snapshots", logger: logger).decode(Int64.self) {
                    return Int(count)
                }
                return 0
            }
        } catch {
            throw .unavailable(Self.describe(error))
        }
    }

    /// An error in words, without the query's bound values.
    public static func describe(_ error: any Error) -> String {
        let error = cause(error)
        if let error = error as? PSQLError {
            if let message = error.serverInfo?[.message] { return "PostgreSQL: \(message)" + (error.serverInfo?[.sqlState].map { " (SQLSTATE \($0))" } ?? "") }
            return "PostgreSQL: \(error.code)" + (error.underlying.map { " (\($0))" } ?? "")
        }
        if let error = error as? EventLogError { return error.description }
        if error is PostgresTransactionError { return "a transaction failed" }
        return "\(error)"
    }

    /// What went wrong first in a transaction (postgres-nio wraps it with where it happened).
    static func cause(_ error: any Error) -> any Error {
        guard let wrapped = error as? PostgresTransactionError else { return error }
        return wrapped.beginError ?? wrapped.closureError ?? wrapped.commitError ?? wrapped.rollbackError ?? error
    }
}
