import LockstepCore
import LockstepStore
import LockstepWire

/// Reads a log from any position, checking every event on the way: the store checks contiguity and
/// the hash chain; this checks that the stored bytes decode, that they name the stream and version of
/// their row, and that each stream's versions follow on from the state being folded.
public enum History {
    /// Events read per page.
    public static let pageEventsMax = 4_096

    /// Folds the events after `state.lastSequence` up to `through` (or the end) into `state`.
    /// `visit` sees each event after it is checked and before it is folded.
    ///
    /// Pipelined over three stages, so a replay keeps both cores busy: the log reads and
    /// chain-verifies a page on its own queue; the page's records are decoded in `decodeLanes` tasks at
    /// once (decoding depends on nothing folded); and this folds the page before it, in order, checking
    /// each record against the state (`checkOrder`). An event that fails a check stops the fold there,
    /// with everything before it folded.
    public static func fold(
        _ log: any EventLog, into state: inout LogState, through: UInt64? = nil,
        visit: (StoredEvent, LogRecord) throws(EventLogError) -> Void = { _, _ in }
    ) async throws(EventLogError) {
        var position = state.lastSequence
        if let through, through < position {
            throw .invalidRequest("the state is already at sequence \(position), past \(through); fold from an earlier state")
        }
        let read: @Sendable (UInt64) -> Task<Result<[StoredEvent], EventLogError>, Never>? = { sequence in
            let limit = through.map { $0 > sequence ? Int(min(UInt64(pageEventsMax), $0 - sequence)) : 0 } ?? pageEventsMax
            guard limit > 0 else { return nil }
            return Task {
                do throws(EventLogError) { return .success(try await log.read(after: sequence, limit: limit)) } catch {
                    return .failure(error)
                }
            }
        }
        // Decodes a page once it is read, having started reading the page after it.
        let decodeStage: @Sendable (Task<Result<[StoredEvent], EventLogError>, Never>) -> Task<Ahead, Never> = { reading in
            Task {
                switch await reading.value {
                case .failure(let error): return Ahead(decoded: .failure(error), nextRead: nil)
                case .success(let page):
                    // A fold that stopped (an error) cancels this stage: then start no further read.
                    let nextRead = Task.isCancelled ? nil : page.last.flatMap { read($0.sequence) }
                    let decoded = await decode(page)
                    if Task.isCancelled {
                        nextRead?.cancel()
                        return Ahead(decoded: .success(decoded), nextRead: nil)
                    }
                    return Ahead(decoded: .success(decoded), nextRead: nextRead)
                }
            }
        }
        // At most three pages at once: one folding, the next decoding, the one after it reading.
        var ahead = read(position).map(decodeStage)
        while let pending = ahead {
            let stage = await pending.value
            ahead = stage.nextRead.map(decodeStage)
            do throws(EventLogError) {
                let decoded = try stage.decoded.get()
                for (stored, result) in zip(decoded.page, decoded.records) {
                    let record = try result.get()
                    try checkOrder(record, of: stored, against: state)
                    try visit(stored, record)
                    state.evolve(record, sequence: stored.sequence)
                    position = stored.sequence
                }
            } catch {
                ahead?.cancel()
                stage.nextRead?.cancel()
                throw error
            }
        }
        if let through, position < through {
            throw .invalidRequest("the log ends at sequence \(position); there is no event \(through)")
        }
    }

    /// Tasks a page is decoded in at once.
    static let decodeLanes = 2

    struct Ahead: Sendable {
        var decoded: Result<DecodedPage, EventLogError>
        var nextRead: Task<Result<[StoredEvent], EventLogError>, Never>?
    }

    struct DecodedPage: Sendable {
        var page: [StoredEvent]
        var records: [Result<LogRecord, EventLogError>]
    }

    /// Decodes `page` in `decodeLanes` contiguous slices at once.
    static func decode(_ page: [StoredEvent]) async -> DecodedPage {
        let slice = (page.count + decodeLanes - 1) / decodeLanes
        let slices = await withTaskGroup(of: (Int, [Result<LogRecord, EventLogError>]).self) { group in
            for lane in 0..<decodeLanes where lane * slice < page.count {
                group.addTask {
                    let range = (lane * slice)..<min(page.count, (lane + 1) * slice)
                    return (lane, page[range].map { stored in Result { () throws(EventLogError) in try decode(stored) } })
                }
            }
            var slices = [[Result<LogRecord, EventLogError>]](repeating: [], count: decodeLanes)
            for await (lane, records) in group { slices[lane] = records }
            return slices
        }
        return DecodedPage(page: page, records: Array(slices.joined()))
    }

    /// Decodes `stored` and checks it fits the state folded so far: the bytes parse, name the row's
    /// stream and version, the version follows on, and a migration stream starts with exactly one
    /// `migration_started` naming its own migration.
    public static func check(_ stored: StoredEvent, against state: LogState) throws(EventLogError) -> LogRecord {
        let record = try decode(stored)
        try checkOrder(record, of: stored, against: state)
        return record
    }

    /// Decodes `stored`, checking that the bytes parse and name the row's stream and version. Depends
    /// on nothing folded, so pages are decoded ahead of the fold, in parallel.
    static func decode(_ stored: StoredEvent) throws(EventLogError) -> LogRecord {
        do {
            let wire = try EventRecordCodec.decodeRecord(stored.record)
            guard wire.stream == stored.stream, wire.streamVersion == stored.streamVersion else {
                throw EventLogError.corrupted(position: stored.sequence, reason:
                    "the row says \(stored.stream)@\(stored.streamVersion) but its bytes say \(wire.stream)@\(wire.streamVersion)")
            }
            return try EventRecordCodec.domainRecord(wire)
        } catch let error as EventLogError {
            throw error
        } catch {
            throw .corrupted(position: stored.sequence, reason: "\(error)")
        }
    }

    /// Checks that decoded `record` fits the state folded so far: its stream's version follows on, and
    /// a migration stream starts with exactly one `migration_started` naming its own migration.
    static func checkOrder(_ record: LogRecord, of stored: StoredEvent, against state: LogState) throws(EventLogError) {
        try checkOrder(record, of: stored, current: state.currentVersion(of: record))
    }

    /// `checkOrder` against `current`, the version of the record's stream before it.
    static func checkOrder(_ record: LogRecord, of stored: StoredEvent, current: UInt64) throws(EventLogError) {
        guard record.streamVersion == current + 1 else {
            throw .corrupted(position: stored.sequence, reason: "stream \(stored.stream) jumps from version \(current) to \(record.streamVersion)")
        }
        // A checkpoint vouches for an event before its own.
        if case .checkpoint(let recorded) = record, recorded.checkpoint.sequence >= stored.sequence {
            throw .corrupted(position: stored.sequence, reason: "a checkpoint at sequence \(stored.sequence) vouches for event \(recorded.checkpoint.sequence), which is not before it")
        }
        guard case .migration(let event) = record else { return }
        let isStart: Bool
        if case .migrationStarted(let started) = event.event {
            isStart = true
            guard started.migration == event.migration else {
                throw .corrupted(position: stored.sequence, reason: "migration_started in \(stored.stream) names migration \(started.migration)")
            }
        } else {
            isStart = false
        }
        guard isStart == (current == 0) else {
            throw .corrupted(position: stored.sequence, reason: isStart
                ? "stream \(stored.stream) has a second migration_started at version \(event.streamVersion)"
                : "the first event of \(stored.stream) is not migration_started")
        }
    }

    /// The state a log's base holds (`EventLog.base()`), its digest and position checked: where a
    /// replay of a log whose first events were archived starts.
    public static func state(at base: Snapshot) throws(EventLogError) -> LogState {
        guard StateDigest(canonicalBytes: base.state).bytes == base.digest else {
            throw .corrupted(position: base.sequence, reason: "the base's digest does not match its state bytes")
        }
        let state: LogState
        do { state = try LogState(canonicalBytes: base.state) } catch {
            throw .corrupted(position: base.sequence, reason: "the base's state does not decode: \(error)")
        }
        guard state.lastSequence == base.sequence else {
            throw .corrupted(position: base.sequence, reason: "the base's state is as of \(state.lastSequence), not \(base.sequence)")
        }
        return state
    }

    /// The state as of event `through` (or the end of the log), replayed from the first event.
    /// The time recorded in the log's last event, or nil for an empty log: where the server's clock
    /// starts at the earliest, so recorded times never go backwards across a restart.
    public static func lastRecordedAt(_ log: any EventLog) async throws(EventLogError) -> Instant? {
        let head = try await log.head()
        // (A log whose every event was archived has no time of its own; archival always leaves the
        // checkpoint event after its cut, so this is only a log archived by hand.)
        guard head.sequence > 0, head.sequence > (try await log.baseHead()).sequence,
              let last = try await log.read(after: head.sequence - 1, limit: 1).first else { return nil }
        do {
            return Instant(millisecondsSinceEpoch: try EventRecordCodec.decodeRecord(last.record).recordedAtMs)
        } catch {
            throw .corrupted(position: last.sequence, reason: "the record does not decode: \(error)")
        }
    }

    /// Migration `id` as of global sequence `through` (or the end of the log), folded from its own
    /// stream: how a settled migration, gone from the live state, is read, at the cost of its stream.
    /// Every event is checked as a full replay checks it (bytes, stream and version, the start).
    /// Nil when the stream has no event at or before `through`.
    public static func migration(_ id: MigrationID, in log: any EventLog, through: UInt64? = nil) async throws(EventLogError) -> MigrationState? {
        // Read and folded on Swift's global executor, as `migrationEvents` says why.
        try await withTaskExecutorPreference(globalConcurrentExecutor) { () async throws(EventLogError) in
            LogState.migration(replaying: try await readMigrationEvents(id, in: log, through: through).map { ($0.sequence, $0.event.event) })
        }
    }

    /// Migration `id`'s events up to global sequence `through` (or the end of the log), checked as
    /// `migration(_:in:through:)` checks them, with their global sequences (what a report is drawn from).
    public static func migrationEvents(_ id: MigrationID, in log: any EventLog, through: UInt64? = nil) async throws(EventLogError)
        -> [(sequence: UInt64, event: RecordedEvent)]
    {
        // A stream has no length limit (progress and metric samples pile up while a migration runs): its
        // decoding runs on Swift's global executor, never on the event loop a request (a late report to a
        // settled migration) arrived on.
        try await withTaskExecutorPreference(globalConcurrentExecutor) { () async throws(EventLogError) in
            try await readMigrationEvents(id, in: log, through: through)
        }
    }

    private static func readMigrationEvents(_ id: MigrationID, in log: any EventLog, through: UInt64?) async throws(EventLogError)
        -> [(sequence: UInt64, event: RecordedEvent)]
    {
        let stream = RecordedEvent.stream(of: id)
        var events: [(sequence: UInt64, event: RecordedEvent)] = []
        var after: UInt64 = 0
        reading: while true {
            let page = try await log.read(stream: stream, after: after, limit: pageEventsMax)
            for stored in page {
                if let through, stored.sequence > through { break reading }
                guard case .migration(let recorded) = try decode(stored), recorded.migration == id else {
                    throw .corrupted(position: stored.sequence, reason: "an event of \(stream) is not an event of migration \(id)")
                }
                guard recorded.streamVersion == UInt64(events.count) + 1 else {
                    throw .corrupted(position: stored.sequence, reason: "stream \(stream) jumps from version \(events.count) to \(recorded.streamVersion)")
                }
                let isStart = if case .migrationStarted = recorded.event { true } else { false }
                guard isStart == events.isEmpty else {
                    throw .corrupted(position: stored.sequence, reason: "stream \(stream) does not start with exactly one migration_started")
                }
                events.append((stored.sequence, recorded))
            }
            guard let last = page.last else { break }
            after = last.sequence
        }
        return events
    }

    /// `keepingSettled`: keep the migrations that settled on the way in `LogState.settledKept` (what a
    /// reviewer's state-at shows), at the cost of holding every migration of the history.
    ///
    /// On a log whose first events were archived, a replay to a point at or after its base starts from the
    /// state kept there (the migrations settled before it are in the archive segments, not in `settledKept`);
    /// one before the base fails with `archived` (read the segments too: `ArchivedHistory`).
    public static func replay(_ log: any EventLog, through: UInt64? = nil, keepingSettled: Bool = false) async throws(EventLogError) -> LogState {
        var state = try await start(of: log, through: through ?? .max, keepingSettled: keepingSettled)
        try await fold(log, into: &state, through: through)
        return state
    }

    /// The state a fold of `log` up to `through` starts from: empty, or the base's when the log has one
    /// at or before `through`.
    static func start(of log: any EventLog, through: UInt64, keepingSettled: Bool) async throws(EventLogError) -> LogState {
        guard let base = try await log.base() else { return LogState(keepingSettled: keepingSettled) }
        guard base.sequence <= through else { throw .archived(through: base.sequence) }
        var state = try state(at: base)
        if keepingSettled { state.keepSettledFromNowOn() }
        return state
    }
}
