import CSQLite
import Dispatch

// The log's reads and snapshots (appends, group commit and fail-stop are in SQLiteEventLog.swift).
// Reads run on the reader connection's queue; a snapshot is written on the writer's, after the
// fail-stop check, so it can never follow a commit that failed.
extension SQLiteEventLog {
    // MARK: - Reads

    public func read(after sequence: UInt64, limit: Int) async throws(EventLogError) -> [StoredEvent] {
        let limit = min(max(limit, 0), EventLogLimits.readPageEventsMax)
        // SQLite integers are signed: no stored sequence exceeds Int64.max, so nothing comes after one
        // that does (binding it would wrap negative and read as a missing event, a false tamper alarm).
        guard limit > 0, sequence < UInt64(Int64.max) else { return [] }
        let reader = self.reader
        return try await onQueue(readerQueue) { () throws(EventLogError) in
            try SQLiteSchema.readVerified(reader, after: sequence, limit: limit)
        }
    }

    public func read(stream: String, after sequence: UInt64, limit: Int) async throws(EventLogError) -> [StoredEvent] {
        let limit = min(max(limit, 0), EventLogLimits.readPageEventsMax)
        // (A sequence past Int64.max binds negative: nothing is stored after it.)
        guard limit > 0, sequence < UInt64(Int64.max), !stream.isEmpty, stream.utf8.count <= EventLogLimits.streamNameBytesMax else { return [] }
        let reader = self.reader
        return try await onQueue(readerQueue) { () throws(EventLogError) in
            try SQLiteSchema.readStreamVerified(reader, stream: stream, after: sequence, limit: limit)
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

    public func streams(withPrefix prefix: String, after: String, limit: Int) async throws(EventLogError) -> [String] {
        let limit = min(max(limit, 0), EventLogLimits.streamNamesPageMax)
        guard limit > 0 else { return [] }
        let reader = self.reader
        return try await onQueue(readerQueue) { () throws(EventLogError) in
            do throws(SQLiteError) { return try SQLiteSchema.streams(reader, withPrefix: prefix, after: after, limit: limit) } catch {
                throw .unavailable(error.description)
            }
        }
    }

    public func streamVersion(of stream: String) async throws(EventLogError) -> UInt64 {
        let reader = self.reader
        return try await onQueue(readerQueue) { () throws(EventLogError) in
            do throws(SQLiteError) { return try SQLiteSchema.streamVersion(reader, stream) } catch { throw .unavailable(error.description) }
        }
    }

    // MARK: - Snapshots

    public func saveSnapshot(_ snapshot: Snapshot) async throws(EventLogError) {
        try snapshot.validate()
        try await onWriter { writer in try SQLiteSchema.saveSnapshot(writer, snapshot) }
    }

    /// Runs `body` on the writer connection's queue, after the fail-stop check there (so a commit that
    /// failed just before cannot be followed by this write); a storage fault in it stops writes.
    private func onWriter(_ body: @escaping @Sendable (SQLiteConnection) throws -> Void) async throws(EventLogError) {
        guard let writer else { throw .writesStopped(reason: "the log was opened read-only") }
        try await onWriterQueue { () throws(EventLogError) in
            if let stopped = self.writesStopped { throw stopped }
            do {
                try body(writer)
            } catch let error as EventLogError {
                throw error
            } catch {
                let failure = (error as? SQLiteError)?.logError ?? .writesStopped(reason: "\(error)")
                if case .writesStopped = failure { self.stopWrites(failure) }
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

    // MARK: - Archival

    public func base() async throws(EventLogError) -> Snapshot? {
        let reader = self.reader
        return try await onQueue(readerQueue) { () throws(EventLogError) in try SQLiteSchema.base(reader) }
    }

    public func archive(through snapshot: Snapshot, after expected: UInt64) async throws(EventLogError) {
        try snapshot.validate()
        try await onWriter { writer in try SQLiteSchema.archive(writer, through: snapshot, after: expected) }
    }

    /// How many snapshots are stored (at most `EventLogLimits.snapshotsRetainedMax`).
    public func snapshotCount() async throws(EventLogError) -> Int {
        let reader = self.reader
        return try await onQueue(readerQueue) { () throws(EventLogError) in
            do throws(SQLiteError) { return Int(try reader.scalarText("SELECT COUNT(*) FROM snapshots") ?? "0") ?? 0 } catch {
                throw .unavailable(error.description)
            }
        }
    }

    /// Runs `body` on `queue` and hands back its result.
    func onQueue<T: Sendable>(_ queue: DispatchQueue, _ body: @escaping @Sendable () throws(EventLogError) -> T) async throws(EventLogError) -> T {
        try await run(body) { queue.async(execute: $0) }
    }

    /// Hands `enqueue` the work that runs `body` and resumes the caller with its result, and waits for it.
    func run<T: Sendable>(_ body: @escaping @Sendable () throws(EventLogError) -> T,
                          enqueue: (@escaping @Sendable () -> Void) -> Void) async throws(EventLogError) -> T {
        let result = await withCheckedContinuation { (continuation: CheckedContinuation<Result<T, EventLogError>, Never>) in
            enqueue {
                do throws(EventLogError) { continuation.resume(returning: .success(try body())) } catch {
                    continuation.resume(returning: .failure(error))
                }
            }
        }
        return try result.get()
    }
}
