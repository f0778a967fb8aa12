import CSQLite
import Dispatch
import Synchronization

/// The durable event log: one SQLite database in WAL mode with `synchronous=FULL`.
///
/// Writes go through one writer connection on one serial queue. Appends that arrive while a commit is
/// in flight are queued and committed together in the next transaction (group commit): one
/// `BEGIN IMMEDIATE … COMMIT` and one fsync for the whole batch, with each append's expected version
/// still checked on its own. An append that finds the log idle and its commits quick is committed on
/// the thread that makes it, still on the queue (`Options.commitsInPlace`). The first I/O or sync
/// error stops writes for good (fail-stop): nothing after it is acknowledged, and nothing is retried. (A checkpoint that fails while a commit is in
/// flight does not take back that commit's acknowledgement: its WAL frames were synced.) Reads use a
/// separate read-only connection, and most of each WAL checkpoint's work runs on a third connection on
/// its own queue, beside the commits.
/// One process writes a data directory at a time: a read-write log holds an exclusive lock on
/// `PATH.lock` for its lifetime.
public final class SQLiteEventLog: EventLog {
    /// The database file.
    public let path: String
    public let mode: Mode
    let options: Options
    let writer: SQLiteConnection?
    let reader: SQLiteConnection
    private let lock: WriterLock?
    let writerQueue = DispatchQueue(label: "lockstep.sqlite.writer")
    let readerQueue = DispatchQueue(label: "lockstep.sqlite.reader")
    /// Passive checkpoints, on their own connection and queue (read-write mode only; SQLiteEventLog+Checkpoints.swift).
    let checkpointer: Checkpointer?
    let checkpointQueue = DispatchQueue(label: "lockstep.sqlite.checkpoint")
    private let pending = Mutex(SQLiteAppendQueue<PendingAppend>())
    /// Touched only on `writerQueue`.
    let writerState = WriterState()
    private let observer: CommitObserver?

    /// What one group commit did (`LogCommit`, shared with the other durable logs).
    public typealias Commit = LogCommit
    /// Told about every successful commit (metrics, benchmarks). Runs on the writer's queue, on the
    /// appending thread when the commit is in place (an event loop, often): keep it short.
    public typealias CommitObserver = @Sendable (LogCommit) -> Void
    /// Receives one call per transaction that failed for a storage reason (disk full, an I/O error):
    /// what the server's readiness and log lines are made of. Runs where the commit ran (the appending
    /// thread, for a commit in place).
    public typealias FailureObserver = @Sendable (EventLogError) -> Void
    let failureObserver: FailureObserver?

    private struct PendingAppend {
        var request: AppendRequest
        var continuation: CheckedContinuation<Result<TimedAppend, EventLogError>, Never>
    }

    /// Writer-side memory. Stream versions spare each append a query; they are trusted only while the
    /// head read at `BEGIN IMMEDIATE` is the head this writer committed last, and are bounded by
    /// `EventLogLimits.streamVersionCacheEntriesMax`.
    final class WriterState: @unchecked Sendable {
        var streamVersions: [String: UInt64] = [:]
        var lastCommittedHead: LogHead?
        var commitsSinceCheckpoint = 0
        /// When the last `COMMIT` returned (`appendTimed`).
        var lastCommitEnd = ContinuousClock.now
        /// How long the last commit took from its `BEGIN` to its `COMMIT` returned (raised, never lowered, by
        /// a failed or empty transaction: `slowedBy`).
        var lastCommitTook: Duration?
    }

    /// Opens (and in `.readWrite` mode creates) the log at `path`, verifying that the durability
    /// settings took effect and that the stored tail matches the head recorded at the last commit.
    public init(path: String, mode: Mode = .readWrite, options: Options = Options(), observer: CommitObserver? = nil,
                failureObserver: FailureObserver? = nil) throws(EventLogError) {
        self.path = path
        self.mode = mode
        self.options = options
        self.observer = observer
        self.failureObserver = failureObserver
        do {
            if mode == .readWrite {
                lock = options.exclusiveWriter ? try WriterLock(path: path + ".lock") : nil
                let writer = try Self.openForWriting(path, options)
                if let bytes = options.databaseBytesMax { try Self.limitSize(writer, bytes: bytes) }
                try SQLiteSchema.migrate(writer)
                try SQLiteSchema.checkTailMatchesHead(writer)
                self.writer = writer
                checkpointer = Checkpointer(connection: try Self.openForWriting(path, options))
            } else {
                lock = nil
                self.writer = nil
                checkpointer = nil
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

    /// A read-write connection with the log's durability settings (the writer's, the checkpointer's).
    private static func openForWriting(_ path: String, _ options: Options) throws -> SQLiteConnection {
        let connection = try SQLiteConnection(path: path, readOnly: false)
        try configureDurability(connection, synchronous: options.unsafeSkipCommitSyncForTesting ? "NORMAL" : "FULL",
                                walBytesMax: options.walBytesMax)
        return connection
    }

    /// The database's page size, in bytes (4,096 if it cannot be read).
    static func pageSize(of db: SQLiteConnection) -> Int64 {
        ((try? db.scalarText("PRAGMA page_size")) ?? nil).flatMap { Int64($0) } ?? 4_096
    }

    /// WAL and `synchronous=FULL`, each read back: a setting that did not take is a refusal to start.
    /// Auto-checkpoints are off; `checkpointIfDue` runs them where a sync error can stop writes. A WAL
    /// reset leaves the file at most `walBytesMax` bytes (`journal_size_limit`).
    private static func configureDurability(_ db: SQLiteConnection, synchronous level: String, walBytesMax: Int64) throws {
        let journal = try db.scalarText("PRAGMA journal_mode=WAL")
        guard journal?.lowercased() == "wal" else {
            throw EventLogError.unavailable("journal_mode reads back \(journal ?? "nothing"), not wal")
        }
        try db.execute("PRAGMA synchronous=\(level)")
        let synchronous = try db.scalarText("PRAGMA synchronous")
        let expected = level == "FULL" ? "2" : "1"
        guard synchronous == expected else {
            throw EventLogError.unavailable("synchronous reads back \(synchronous ?? "nothing"), not \(expected) (\(level))")
        }
        try db.execute("PRAGMA wal_autocheckpoint=0")
        let autocheckpoint = try db.scalarText("PRAGMA wal_autocheckpoint")
        guard autocheckpoint == "0" else {
            throw EventLogError.unavailable("wal_autocheckpoint reads back \(autocheckpoint ?? "nothing"), not 0")
        }
        let walLimit = try db.scalarText("PRAGMA journal_size_limit = \(max(0, walBytesMax))")
        guard walLimit == String(max(0, walBytesMax)) else {
            throw EventLogError.unavailable("journal_size_limit reads back \(walLimit ?? "nothing"), not \(walBytesMax)")
        }
    }

    /// Sets `max_page_count` to `bytes` worth of pages and reads it back (never below the pages in use:
    /// SQLite keeps the current size then, and the next append that grows the file is refused).
    private static func limitSize(_ db: SQLiteConnection, bytes: Int64) throws {
        let pages = max(1, bytes / max(pageSize(of: db), 1))
        let set = try db.scalarText("PRAGMA max_page_count = \(pages)")
        guard let set, Int64(set) != nil else { throw EventLogError.unavailable("max_page_count reads back \(set ?? "nothing")") }
    }

    /// The durability pragmas as the writer connection reports them now: (journal_mode, synchronous).
    public func durabilitySettings() async throws(EventLogError) -> (journalMode: String, synchronous: Int) {
        guard let writer else { throw .writesStopped(reason: "the log was opened read-only") }
        return try await onWriterQueue { () throws(EventLogError) in
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
        try await appendTimed(request).receipt
    }

    /// `append`, with the moment its transaction's `COMMIT` returned, taken on the writer's queue
    /// before the answers are handed back.
    public func appendTimed(_ request: AppendRequest) async throws(EventLogError) -> TimedAppend {
        try request.validate()
        guard writer != nil else { throw .writesStopped(reason: "the log was opened read-only") }
        let limit = options.appendQueueEventsMax
        let rule = options.commitsInPlace
        let result = await withCheckedContinuation { (continuation: CheckedContinuation<Result<TimedAppend, EventLogError>, Never>) in
            let start = pending.withLock { queue in
                // Read under the lock: a drain that started a checkpoint set `running` before it took
                // the lock to go idle.
                let checkpointRunning = checkpointer?.running.load(ordering: .acquiring) ?? false
                return queue.enqueue(PendingAppend(request: request, continuation: continuation), events: request.records.count,
                                     limit: limit, rule: rule, checkpointRunning: checkpointRunning, now: .now)
            }
            switch start {
            case .refuse(let refusal): continuation.resume(returning: .failure(refusal))
            case .queued: break
            case .wakeWriter: writerQueue.async { self.drain() }
            // `sync` runs the work on this thread. Nothing else is on the queue: no drain, and other work
            // arriving from now on is held until the commit in place ends.
            case .commitInPlace: writerQueue.sync { self.commitInPlace() }
            }
        }
        return try result.get()
    }

    /// Commits queued appends, batch after batch, until the queue is empty. Runs on `writerQueue`.
    private func drain() {
        while commitNextBatch() {
            // After the answers: a checkpoint that waits for readers delays no acknowledgement.
            if let writer { checkpointIfDue(writer) }
        }
    }

    /// One batch committed by the appending thread, on `writerQueue` (`Options.commitsInPlace`): appends
    /// queued meanwhile, and a checkpoint due, are left to the writer's queue, so the caller is held for
    /// one commit, never for a checkpoint that waits for readers; other work held meanwhile is enqueued.
    private func commitInPlace() {
        if let begun = beginWithoutWaiting() { _ = commitNextBatch(begun: begun) }
        let due = checkpointDue
        let lastCommitTook = writerState.lastCommitTook
        // Other work held meanwhile first, in the order it came (a drain handed on may run long), then the
        // drain. Enqueued under the lock, so work arriving once the commit has ended comes after both.
        pending.withLock { state in
            let (handOn, held) = state.endCommitInPlace(checkpointDue: due, lastCommitTook: lastCommitTook, now: .now)
            for work in held { writerQueue.async(execute: work) }
            guard handOn else { return }
            writerQueue.async {
                if let writer = self.writer, due { self.checkpointIfDue(writer) }
                self.drain()
            }
        }
    }

    /// `BEGIN IMMEDIATE` on the writer connection without waiting for a lock, for a commit in place: it
    /// began then (nil: another process holds the write lock, a tool or its truncating checkpoint, or
    /// writes stopped; the batch is left queued, for the writer's queue, which waits for the lock).
    private func beginWithoutWaiting() -> ContinuousClock.Instant? {
        guard let writer, writesStopped == nil else { return nil }
        let began = ContinuousClock.now
        sqlite3_busy_timeout(writer.handle, 0)
        defer { sqlite3_busy_timeout(writer.handle, SQLiteConnection.busyTimeoutMillis) }
        return (try? writer.execute("BEGIN IMMEDIATE")) == nil ? nil : began
    }

    /// Commits the next batch and answers its appends; false when there was none (the drain is over).
    /// `begun`: its transaction was begun then (`beginWithoutWaiting`).
    private func commitNextBatch(begun: ContinuousClock.Instant? = nil) -> Bool {
        let batch = takeBatch()
        if batch.isEmpty {
            if begun != nil { try? writer?.execute("ROLLBACK") }
            return false
        }
        let results = commit(batch.map(\.request), begun: begun)
        // Successes exist only when this batch's COMMIT returned, which set the stamp.
        let committedAt = writerState.lastCommitEnd
        for (item, result) in zip(batch, results) {
            item.continuation.resume(returning: result.map { TimedAppend(receipt: $0, committedAt: committedAt) })
        }
        return true
    }

    /// The queued appends for the next transaction (at most `commitBatchEventsMax` events, at least one
    /// append); an empty batch ends the drain.
    private func takeBatch() -> [PendingAppend] {
        let lastCommitTook = writerState.lastCommitTook
        return pending.withLock { $0.takeBatch(eventsMax: EventLogLimits.commitBatchEventsMax, lastCommitTook: lastCommitTook, now: .now) }
    }

    /// One transaction for `requests`: each is checked against its expected version on its own.
    /// `begun`: the transaction was begun then (a commit in place).
    private func commit(_ requests: [AppendRequest], begun: ContinuousClock.Instant? = nil) -> [Result<AppendReceipt, EventLogError>] {
        guard let db = writer else { return requests.map { _ in .failure(.writesStopped(reason: "read-only")) } }
        if let stopped = pending.withLock({ $0.stopped }) {
            if begun != nil { try? db.execute("ROLLBACK") }
            return requests.map { _ in .failure(stopped) }
        }
        var committing = false
        var results: [Result<AppendReceipt, EventLogError>] = []
        let began = begun ?? ContinuousClock.now
        do {
            if begun == nil { try db.execute("BEGIN IMMEDIATE") }
            let written = try insert(requests, into: db)
            results = written.results
            if written.events == 0 {
                try db.execute("ROLLBACK")
                slowedBy(began)
                return results
            }
            let update = try db.statement("UPDATE log_head SET sequence = ?1, chain_hash = ?2 WHERE id = 1")
            try update.bind(1, written.head.sequence)
            try update.bind(2, written.head.chainHash.bytes)
            try update.run()
            committing = true
            try db.execute("COMMIT")
            writerState.lastCommitEnd = ContinuousClock.now
            writerState.lastCommitTook = began.duration(to: writerState.lastCommitEnd)
            remember(written.versions, head: written.head)
            if let observer {
                observer(Commit(events: written.events, appends: requests.count, durationNanos: LogCommit.nanoseconds(since: began)))
            }
        } catch {
            slowedBy(began)
            if sqlite3_get_autocommit(db.handle) == 0 { try? db.execute("ROLLBACK") }
            let failure = (error as? SQLiteError)?.logError ?? .writesStopped(reason: String(describing: error))
            failureObserver?(failure)
            guard case .writesStopped(let reason) = failure else { return requests.map { _ in .failure(failure) } }
            stopWrites(failure)
            guard committing else { return requests.map { _ in .failure(failure) } }
            // A failed COMMIT may still have reached the disk: say so instead of claiming nothing was written.
            return results.map { result in
                if case .failure = result { return result }
                return .failure(.outcomeUnknown(reason: reason))
            }
        }
        return results
    }

    /// A transaction begun at `began` ended without a commit (a failure, or only version conflicts): it
    /// can only raise the forecast `lastCommitTook` (one that waited out a lock sends the next idle append
    /// to the writer's queue, as a slow commit does); a quick one, with no fsync, lowers nothing, and
    /// before the first commit there is nothing to raise.
    private func slowedBy(_ began: ContinuousClock.Instant) {
        guard let last = writerState.lastCommitTook else { return }
        writerState.lastCommitTook = max(last, began.duration(to: .now))
    }

    /// Inserts every request whose expected version holds, chaining each event to the one before.
    private func insert(_ requests: [AppendRequest], into db: SQLiteConnection) throws
        -> (results: [Result<AppendReceipt, EventLogError>], head: LogHead, versions: [String: UInt64], events: Int) {
        var head = try SQLiteSchema.recordedHead(db)
        if head != writerState.lastCommittedHead { writerState.streamVersions.removeAll() }
        var versions: [String: UInt64] = [:]
        var results: [Result<AppendReceipt, EventLogError>] = []
        var events = 0
        let sql = "INSERT INTO events (sequence, stream, stream_version, record, chain_hash) VALUES (?1, ?2, ?3, ?4, ?5)"
        for request in requests {
            let actual = try versions[request.stream] ?? writerState.streamVersions[request.stream]
                ?? SQLiteSchema.streamVersion(db, request.stream)
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
                let statement = try db.statement(sql)
                try statement.bind(1, sequence)
                try statement.bind(2, request.stream)
                try statement.bind(3, version)
                try statement.bind(4, record)
                try statement.bind(5, link.bytes)
                try statement.run()
                head = LogHead(sequence: sequence, chainHash: link)
            }
            versions[request.stream] = version
            events += request.records.count
            results.append(.success(AppendReceipt(firstSequence: first, lastSequence: head.sequence, streamVersion: version)))
        }
        return (results, head, versions, events)
    }

    /// After a commit: remember the stream versions it wrote and the head it left.
    private func remember(_ versions: [String: UInt64], head: LogHead) {
        if writerState.streamVersions.count + versions.count > EventLogLimits.streamVersionCacheEntriesMax {
            writerState.streamVersions.removeAll()
        }
        writerState.streamVersions.merge(versions) { _, new in new }
        writerState.lastCommittedHead = head
        writerState.commitsSinceCheckpoint += 1
    }

    /// Appends waiting for a commit, and other work on the writer's queue (tests).
    var queuedAppends: Int { pending.withLock { $0.queued.count } }
    var drainingOnTheQueue: Bool { pending.withLock { $0.phase == .draining } }
    var otherWriterWork: Int { pending.withLock { $0.otherWork } }

    /// Runs `body` on the writer's queue, counted as other work there while it is queued or runs (no
    /// append commits in place meanwhile: it would wait behind `body`), and held while a commit in place
    /// runs (enqueued when it ends).
    func onWriterQueue<T: Sendable>(_ body: @escaping @Sendable () throws(EventLogError) -> T) async throws(EventLogError) -> T {
        try await run({ () throws(EventLogError) in
            // Ended before its caller is resumed.
            defer { self.pending.withLock { $0.otherWorkEnded() } }
            return try body()
        }, enqueue: { work in
            // Enqueued under the lock, as held work is: other work keeps the order it arrived in.
            pending.withLock { state in
                if let runNow = state.otherWorkArrives(work) { writerQueue.async(execute: runNow) }
            }
        })
    }

    /// Fail-stop: refuses every queued and later write. Never retried, never undone until restart.
    /// Why writes stopped (fail-stop), nil while they go on.
    var writesStopped: EventLogError? { pending.withLock { $0.stopped } }

    func stopWrites(_ failure: EventLogError) {
        let queued = pending.withLock { $0.stop(failure) }
        for item in queued { item.continuation.resume(returning: .failure(failure)) }
    }
}
