import CSQLite
import Dispatch
import Synchronization

/// The durable event log: one SQLite database in WAL mode with `synchronous=FULL`.
///
/// Writes go through one writer connection on one serial queue. Appends that arrive while a commit is
/// in flight are queued and committed together in the next transaction (group commit): one
/// `BEGIN IMMEDIATE … COMMIT` and one fsync for the whole batch, with each append's expected version
/// still checked on its own. The first I/O or sync error stops writes for good (fail-stop): nothing
/// after it is acknowledged, and nothing is retried. Reads use a separate read-only connection.
public final class SQLiteEventLog: EventLog {
    /// How the database is opened.
    public enum Mode: Sendable {
        /// Creates the database if needed and accepts appends.
        case readWrite
        /// Only reads; used by governance commands so they never alter the evidence.
        case readOnly
    }

    /// The database file.
    public let path: String
    public let mode: Mode
    private let writer: SQLiteConnection?
    private let reader: SQLiteConnection
    private let writerQueue = DispatchQueue(label: "lockstep.sqlite.writer")
    private let readerQueue = DispatchQueue(label: "lockstep.sqlite.reader")
    private let pending = Mutex(PendingAppends())
    /// Touched only on `writerQueue`.
    private let writerState = WriterState()
    private let observer: CommitObserver?

    /// Receives one call per committed transaction: events committed and appends batched together.
    public typealias CommitObserver = @Sendable (_ events: Int, _ appends: Int) -> Void

    private struct PendingAppend {
        var request: AppendRequest
        var continuation: CheckedContinuation<Result<AppendReceipt, EventLogError>, Never>
    }

    /// Stream versions known to the writer, so an append need not query its stream's version. Trusted
    /// only while the head read at `BEGIN IMMEDIATE` is the head this writer committed last (no other
    /// process wrote in between); otherwise cleared. Bounded by `EventLogLimits.streamVersionCacheEntriesMax`.
    private final class WriterState: @unchecked Sendable {
        var streamVersions: [String: UInt64] = [:]
        var lastCommittedHead: LogHead?
    }

    private struct PendingAppends {
        var queue: [PendingAppend] = []
        var draining = false
        var stopped: EventLogError?
    }

    /// Opens (and in `.readWrite` mode creates) the log at `path`, verifying that the durability
    /// settings took effect.
    public init(path: String, mode: Mode = .readWrite, observer: CommitObserver? = nil) throws(EventLogError) {
        self.path = path
        self.mode = mode
        self.observer = observer
        do {
            if mode == .readWrite {
                let writer = try SQLiteConnection(path: path, readOnly: false)
                try Self.configureDurability(writer)
                try SQLiteSchema.migrate(writer)
                self.writer = writer
            } else {
                self.writer = nil
            }
            reader = try SQLiteConnection(path: path, readOnly: true)
            try SQLiteSchema.check(reader)
        } catch let error as SQLiteError {
            throw .unavailable(error.description)
        } catch let error as EventLogError {
            throw error
        } catch {
            throw .unavailable(String(describing: error))
        }
    }

    /// WAL and `synchronous=FULL`, each read back: a setting that did not take is a refusal to start.
    private static func configureDurability(_ db: SQLiteConnection) throws {
        let journal = try db.scalarText("PRAGMA journal_mode=WAL")
        guard journal?.lowercased() == "wal" else {
            throw EventLogError.unavailable("journal_mode reads back \(journal ?? "nothing"), not wal")
        }
        try db.execute("PRAGMA synchronous=FULL")
        let synchronous = try db.scalarText("PRAGMA synchronous")
        guard synchronous == "2" else {
            throw EventLogError.unavailable("synchronous reads back \(synchronous ?? "nothing"), not 2 (FULL)")
        }
    }

    /// The durability pragmas as the writer connection reports them now: (journal_mode, synchronous).
    public func durabilitySettings() async throws(EventLogError) -> (journalMode: String, synchronous: Int) {
        guard let writer else { throw .writesStopped(reason: "the log was opened read-only") }
        return try await onQueue(writerQueue) { () throws(EventLogError) in
            do throws(SQLiteError) {
                let journal = try writer.scalarText("PRAGMA journal_mode") ?? ""
                let synchronous = Int(try writer.scalarText("PRAGMA synchronous") ?? "") ?? -1
                return (journal, synchronous)
            } catch {
                throw error.logError
            }
        }
    }

    // MARK: - Appends

    public func append(_ request: AppendRequest) async throws(EventLogError) -> AppendReceipt {
        try request.validate()
        guard writer != nil else { throw .writesStopped(reason: "the log was opened read-only") }
        let result = await withCheckedContinuation { (continuation: CheckedContinuation<Result<AppendReceipt, EventLogError>, Never>) in
            let action: (startDrain: Bool, refusal: EventLogError?) = pending.withLock { state in
                if let stopped = state.stopped { return (false, stopped) }
                state.queue.append(PendingAppend(request: request, continuation: continuation))
                if state.draining { return (false, nil) }
                state.draining = true
                return (true, nil)
            }
            if let refusal = action.refusal {
                continuation.resume(returning: .failure(refusal))
            } else if action.startDrain {
                writerQueue.async { self.drain() }
            }
        }
        return try result.get()
    }

    /// Commits queued appends, batch after batch, until the queue is empty. Runs on `writerQueue`.
    private func drain() {
        while true {
            let batch: [PendingAppend] = pending.withLock { state in
                var events = 0
                var taken = 0
                for item in state.queue {
                    if taken > 0 && events + item.request.records.count > EventLogLimits.commitBatchEventsMax { break }
                    events += item.request.records.count
                    taken += 1
                }
                let batch = Array(state.queue.prefix(taken))
                state.queue.removeFirst(taken)
                if batch.isEmpty { state.draining = false }
                return batch
            }
            if batch.isEmpty { return }
            let results = commit(batch.map(\.request))
            for (item, result) in zip(batch, results) { item.continuation.resume(returning: result) }
        }
    }

    /// One transaction for `requests`: each is checked against its expected version on its own.
    private func commit(_ requests: [AppendRequest]) -> [Result<AppendReceipt, EventLogError>] {
        if let stopped = pending.withLock({ $0.stopped }) { return requests.map { _ in .failure(stopped) } }
        guard let db = writer else { return requests.map { _ in .failure(.writesStopped(reason: "read-only")) } }
        var results: [Result<AppendReceipt, EventLogError>] = []
        do {
            try db.execute("BEGIN IMMEDIATE")
            var head = try SQLiteSchema.recordedHead(db)
            if head != writerState.lastCommittedHead { writerState.streamVersions.removeAll() }
            var versions: [String: UInt64] = [:]
            var committedEvents = 0
            let insert = "INSERT INTO events (sequence, stream, stream_version, record, chain_hash) VALUES (?1, ?2, ?3, ?4, ?5)"
            for request in requests {
                let actual: UInt64
                if let known = versions[request.stream] ?? writerState.streamVersions[request.stream] {
                    actual = known
                } else {
                    actual = try SQLiteSchema.streamVersion(db, request.stream)
                }
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
                    let statement = try db.statement(insert)
                    try statement.bind(1, sequence)
                    try statement.bind(2, request.stream)
                    try statement.bind(3, version)
                    try statement.bind(4, record)
                    try statement.bind(5, link.bytes)
                    try statement.run()
                    head = LogHead(sequence: sequence, chainHash: link)
                }
                versions[request.stream] = version
                committedEvents += request.records.count
                results.append(.success(AppendReceipt(firstSequence: first, lastSequence: head.sequence, streamVersion: version)))
            }
            if committedEvents == 0 {
                try db.execute("ROLLBACK")
                return results
            }
            let update = try db.statement("UPDATE log_head SET sequence = ?1, chain_hash = ?2 WHERE id = 1")
            try update.bind(1, head.sequence)
            try update.bind(2, head.chainHash.bytes)
            try update.run()
            try db.execute("COMMIT")
            if writerState.streamVersions.count + versions.count > EventLogLimits.streamVersionCacheEntriesMax {
                writerState.streamVersions.removeAll()
            }
            writerState.streamVersions.merge(versions) { _, new in new }
            writerState.lastCommittedHead = head
            observer?(committedEvents, requests.count)
            return results
        } catch {
            let failure = (error as? SQLiteError)?.logError ?? .writesStopped(reason: String(describing: error))
            if sqlite3_get_autocommit(db.handle) == 0 { try? db.execute("ROLLBACK") }
            if case .writesStopped = failure {
                // Fail-stop: never retry a failed sync and then acknowledge; refuse every later write.
                let queued: [PendingAppend] = pending.withLock { state in
                    state.stopped = failure
                    defer { state.queue.removeAll() }
                    return state.queue
                }
                for item in queued { item.continuation.resume(returning: .failure(failure)) }
            }
            return requests.map { _ in .failure(failure) }
        }
    }

    // MARK: - Reads

    public func read(after sequence: UInt64, limit: Int) async throws(EventLogError) -> [StoredEvent] {
        let limit = min(max(limit, 0), EventLogLimits.readPageEventsMax)
        guard limit > 0 else { return [] }
        let reader = self.reader
        return try await onQueue(readerQueue) { () throws(EventLogError) in
            try SQLiteSchema.readVerified(reader, after: sequence, limit: limit)
        }
    }

    public func head() async throws(EventLogError) -> LogHead {
        let reader = self.reader
        return try await onQueue(readerQueue) { () throws(EventLogError) in
            do { return try SQLiteSchema.recordedHead(reader) } catch let error as SQLiteError {
                throw .unavailable(error.description)
            } catch let error as EventLogError { throw error } catch { throw .unavailable("\(error)") }
        }
    }

    public func streamVersion(of stream: String) async throws(EventLogError) -> UInt64 {
        let reader = self.reader
        return try await onQueue(readerQueue) { () throws(EventLogError) in
            do throws(SQLiteError) { return try SQLiteSchema.streamVersion(reader, stream) } catch { throw .unavailable(error.description) }
        }
    }

    /// The sequence of the last stored event (which differs from `head()` only when rows were removed or added by hand).
    public func lastStoredSequence() async throws(EventLogError) -> UInt64 {
        let reader = self.reader
        return try await onQueue(readerQueue) { () throws(EventLogError) in
            do throws(SQLiteError) {
                let statement = try reader.statement("SELECT COALESCE(MAX(sequence), 0) FROM events")
                defer { statement.reset() }
                return try statement.step() ? statement.uint64(0) : 0
            } catch { throw .unavailable(error.description) }
        }
    }

    // MARK: - Snapshots

    public func saveSnapshot(_ snapshot: Snapshot) async throws(EventLogError) {
        try snapshot.validate()
        guard let writer else { throw .writesStopped(reason: "the log was opened read-only") }
        if let stopped = pending.withLock({ $0.stopped }) { throw stopped }
        try await onQueue(writerQueue) { () throws(EventLogError) in
            do {
                try SQLiteSchema.saveSnapshot(writer, snapshot)
            } catch let error as EventLogError {
                throw error
            } catch {
                let failure = (error as? SQLiteError)?.logError ?? .writesStopped(reason: "\(error)")
                if case .writesStopped = failure { self.pending.withLock { $0.stopped = failure } }
                throw failure
            }
        }
    }

    public func latestSnapshot() async throws(EventLogError) -> Snapshot? {
        let reader = self.reader
        return try await onQueue(readerQueue) { () throws(EventLogError) in
            try SQLiteSchema.latestSnapshot(reader)
        }
    }

    /// Runs `body` on `queue` and hands back its result.
    private func onQueue<T: Sendable>(_ queue: DispatchQueue, _ body: @escaping @Sendable () throws(EventLogError) -> T) async throws(EventLogError) -> T {
        let result = await withCheckedContinuation { (continuation: CheckedContinuation<Result<T, EventLogError>, Never>) in
            queue.async {
                do throws(EventLogError) { continuation.resume(returning: .success(try body())) } catch {
                    continuation.resume(returning: .failure(error))
                }
            }
        }
        return try result.get()
    }
}
