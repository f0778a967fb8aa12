/// An append-only, hash-chained event log: the storage port every adapter (in-memory, SQLite) implements.
///
/// The log stores opaque record bytes. It assigns the gapless global sequence, enforces the expected
/// stream version of every append, links every record into the hash chain, and checks both on read.
public protocol EventLog: Sendable {
    /// Appends `request.records` to `request.stream` if the stream is at `request.expectedVersion`.
    /// Returns only once the events are durable. A conflict appends nothing.
    func append(_ request: AppendRequest) async throws(EventLogError) -> AppendReceipt

    /// `append`, and when its commit ended on the monotonic clock: where a wake-up's measured time starts
    /// (`lockstep_poll_wakeup_seconds`). By default, when the append returned; a log that can tell the
    /// moment its commit ended, before handing the answer over, says that.
    func appendTimed(_ request: AppendRequest) async throws(EventLogError) -> TimedAppend

    /// Up to `limit` events with sequence greater than `sequence`, in order, with contiguity and the
    /// hash chain verified from event `sequence` on. A page also stops before the event that would take
    /// its records past `EventLogLimits.readPageBytesMax` (it always has the first): so it may be short
    /// while more events follow, and only an empty page says there is nothing after `sequence`.
    func read(after sequence: UInt64, limit: Int) async throws(EventLogError) -> [StoredEvent]

    /// Up to `limit` events of `stream` with a global sequence greater than `sequence`, in order: what a
    /// watch or a migration's history reads, at the cost of that stream, not of the whole log. Each event's
    /// link is checked against its predecessor's (the chain cannot be walked across other streams'
    /// events), and the stream's versions must follow one another. Bounded in bytes as `read(after:limit:)` is.
    func read(stream: String, after sequence: UInt64, limit: Int) async throws(EventLogError) -> [StoredEvent]
    /// The head the log recorded at its last commit (sequence 0 and the genesis hash when empty).
    func head() async throws(EventLogError) -> LogHead

    /// The current version of `stream` (0 when it has no events).
    func streamVersion(of stream: String) async throws(EventLogError) -> UInt64

    /// Up to `limit` (at most `EventLogLimits.streamNamesPageMax`) names of streams that have events, start
    /// with `prefix` and sort after `after`, in UTF-8 byte order: how migrations that have left the live
    /// state are listed (their streams stay).
    func streams(withPrefix prefix: String, after: String, limit: Int) async throws(EventLogError) -> [String]

    /// Stores `snapshot`, which must name an event of this log by its sequence and chain hash.
    func saveSnapshot(_ snapshot: Snapshot) async throws(EventLogError)

    /// The newest snapshot as stored (its own shape checked), or nil when there is none. Callers check
    /// it against the event it names when they read that event (see `Coordinator.open`, `HistoryVerifier`),
    /// so a damaged log is reported at the event's position, not the snapshot's.
    func latestSnapshot() async throws(EventLogError) -> Snapshot?

    /// Where the live log starts, when events were archived out of it (`archive(through:)`): the last
    /// archived event's sequence and chain link (the next event's chain check starts there) with the
    /// state folded through it. Nil when nothing was archived (the log starts at genesis).
    func base() async throws(EventLogError) -> Snapshot?

    /// Moves every event through `snapshot.sequence` out of the live log, in one transaction, once they
    /// are safely written elsewhere (an archive segment, `HistoryArchive`): the snapshot, the state
    /// folded through that event, becomes the log's base; the versions the archived events left each
    /// stream at are kept, so appends go on from them and a settled migration's id is never reused.
    /// Reads before the base then fail with `archived`. `expected`: the base the segment starts after
    /// (0: genesis); another archival that moved it meanwhile makes this refuse, archiving nothing.
    func archive(through snapshot: Snapshot, after expected: UInt64) async throws(EventLogError)
}

extension EventLog {
    /// A log that cannot archive starts at genesis.
    public func base() async throws(EventLogError) -> Snapshot? { nil }

    public func archive(through snapshot: Snapshot, after expected: UInt64) async throws(EventLogError) {
        throw .invalidRequest("this log does not archive events")
    }

    /// The chain hash of event `sequence` (at least 1), the base's when it is the base's event; nil when
    /// the log holds no such event.
    public func chainHash(at sequence: UInt64) async throws(EventLogError) -> ChainHash? {
        if let base = try await base(), base.sequence == sequence { return base.chainHash }
        return try await read(after: sequence - 1, limit: 1).first.flatMap { $0.sequence == sequence ? $0.chainHash : nil }
    }

    /// The head the live log starts after: the base's, or genesis.
    public func baseHead() async throws(EventLogError) -> LogHead {
        try await base().map { LogHead(sequence: $0.sequence, chainHash: $0.chainHash) } ?? .genesis
    }
}

/// One atomic append to one stream.
public struct AppendRequest: Hashable, Sendable {
    public var stream: String
    /// The version the stream must be at (0 = the stream must be empty).
    public var expectedVersion: UInt64
    /// The record bytes to store, in order; they get versions expectedVersion+1, +2, ...
    public var records: [[UInt8]]

    public init(stream: String, expectedVersion: UInt64, records: [[UInt8]]) {
        self.stream = stream
        self.expectedVersion = expectedVersion
        self.records = records
    }
}

/// An append's receipt and when its commit ended (`EventLog.appendTimed`).
public struct TimedAppend: Sendable {
    public var receipt: AppendReceipt
    public var committedAt: ContinuousClock.Instant
    public init(receipt: AppendReceipt, committedAt: ContinuousClock.Instant) {
        self.receipt = receipt
        self.committedAt = committedAt
    }
}

extension EventLog {
    public func appendTimed(_ request: AppendRequest) async throws(EventLogError) -> TimedAppend {
        TimedAppend(receipt: try await append(request), committedAt: .now)
    }
}

/// Where an acknowledged append landed.
public struct AppendReceipt: Hashable, Sendable {
    public var firstSequence: UInt64
    public var lastSequence: UInt64
    /// The stream's version after the append.
    public var streamVersion: UInt64
    public init(firstSequence: UInt64, lastSequence: UInt64, streamVersion: UInt64) {
        self.firstSequence = firstSequence
        self.lastSequence = lastSequence
        self.streamVersion = streamVersion
    }
}

/// One event as read back from the log.
public struct StoredEvent: Hashable, Sendable {
    public var sequence: UInt64
    public var stream: String
    public var streamVersion: UInt64
    /// The bytes exactly as stored and hashed.
    public var record: [UInt8]
    public var chainHash: ChainHash

    public init(sequence: UInt64, stream: String, streamVersion: UInt64, record: [UInt8], chainHash: ChainHash) {
        self.sequence = sequence
        self.stream = stream
        self.streamVersion = streamVersion
        self.record = record
        self.chainHash = chainHash
    }
}

/// The newest position of the log and its chain hash.
public struct LogHead: Hashable, Sendable {
    public var sequence: UInt64
    public var chainHash: ChainHash
    public init(sequence: UInt64, chainHash: ChainHash) {
        self.sequence = sequence
        self.chainHash = chainHash
    }
    /// The head of an empty log.
    public static let genesis = LogHead(sequence: 0, chainHash: .genesis)
}

/// A saved fold of the log up to `sequence`, so start-up replays only the tail.
public struct Snapshot: Hashable, Sendable {
    public var sequence: UInt64
    /// The chain hash of event `sequence`: ties the snapshot to one exact history.
    public var chainHash: ChainHash
    /// The canonical state bytes.
    public var state: [UInt8]
    /// SHA-256 of `state`.
    public var digest: [UInt8]

    public init(sequence: UInt64, chainHash: ChainHash, state: [UInt8], digest: [UInt8]) {
        self.sequence = sequence
        self.chainHash = chainHash
        self.state = state
        self.digest = digest
    }
}

/// Limits of the log. Units are in the names.
public enum EventLogLimits {
    /// Most events in one append request.
    public static let appendRequestEventsMax = 1_000
    /// Largest stored record, in bytes.
    public static let recordBytesMax = 1 << 20
    /// Longest stream name, in UTF-8 bytes.
    public static let streamNameBytesMax = 256
    /// Most events committed in one group-commit transaction (one fsync).
    public static let commitBatchEventsMax = 4_096
    /// Most events one read returns.
    public static let readPageEventsMax = 10_000
    /// Most record bytes one read returns, past its first event (`ReadPageBudget`): by count alone, a
    /// page of `readPageEventsMax` events of `recordBytesMax` each would be 10 GiB.
    public static let readPageBytesMax = 16 << 20
    /// Most stream names one `streams(withPrefix:after:limit:)` call returns.
    public static let streamNamesPageMax = 1_000
    /// Largest snapshot state, in bytes.
    public static let snapshotBytesMax = 256 << 20
    /// Most events waiting for a group commit; further appends are refused with `overloaded`.
    public static let appendQueueEventsMax = 65_536
    /// Commits between explicit WAL checkpoints of the SQLite log.
    public static let checkpointIntervalCommits = 1_000
    /// Largest the SQLite log's WAL may stay after a checkpoint, in bytes (`SQLiteEventLog.Options.walBytesMax`).
    public static let walBytesMax: Int64 = 64 << 20
    /// Streams whose versions the SQLite writer remembers between commits (the cache is cleared past it).
    public static let streamVersionCacheEntriesMax = 100_000
    /// Snapshots kept; older ones are deleted when a new one is saved.
    public static let snapshotsRetainedMax = 3
    /// How long since the SQLite writer's last commit (its last drain's end) for an append to be
    /// committed in place (`SQLiteEventLog.CommitsInPlace.idleAtLeast`).
    public static let commitInPlaceIdleMin: Duration = .microseconds(150)
    /// Longest the SQLite log's last commit may have taken for the next to be committed in place
    /// (`SQLiteEventLog.CommitsInPlace.lastCommitAtMost`).
    public static let commitInPlaceLastCommitMax: Duration = .milliseconds(1)
}

extension AppendRequest {
    /// Checks the request against `EventLogLimits` before anything is queued.
    public func validate() throws(EventLogError) {
        if stream.isEmpty { throw .invalidRequest("stream name is empty") }
        if stream.utf8.count > EventLogLimits.streamNameBytesMax {
            throw .invalidRequest("stream name is \(stream.utf8.count) bytes; the limit is \(EventLogLimits.streamNameBytesMax) bytes")
        }
        if records.isEmpty { throw .invalidRequest("append to \(stream) carries no events") }
        if records.count > EventLogLimits.appendRequestEventsMax {
            throw .invalidRequest("append carries \(records.count) events; the limit is \(EventLogLimits.appendRequestEventsMax) events")
        }
        if let large = records.firstIndex(where: { $0.count > EventLogLimits.recordBytesMax }) {
            throw .invalidRequest("event \(large) is \(records[large].count) bytes; the limit is \(EventLogLimits.recordBytesMax) bytes")
        }
        if records.contains(where: \.isEmpty) { throw .invalidRequest("an event has no bytes") }
    }
}

extension EventLog {
    /// Like `read`, but damage ends the page instead of losing it: the intact events before the first
    /// damaged one come back with the error that names its position, so a reviewer exporting or paging
    /// a damaged history still gets every event up to the damage (and then the damage, at its place).
    public func readIntact(after sequence: UInt64, limit: Int) async -> (events: [StoredEvent], damage: EventLogError?) {
        do {
            return (try await read(after: sequence, limit: limit), nil)
        } catch {
            guard case .corrupted(let position, _) = error, position > sequence &+ 1 else { return ([], error) }
            let intact = min(UInt64(max(limit, 0)), position - sequence - 1)
            do {
                // A page its bytes cut short stops before the damage: the damage is for a later read.
                let page = try await read(after: sequence, limit: Int(intact))
                return (page, UInt64(page.count) == intact ? error : nil)
            } catch {
                return ([], error)
            }
        }
    }
}

extension EventLog {
    /// `read(stream:after:limit:)`, but at damage the intact events of the stream before it are returned
    /// with the error (found one event at a time: only a damaged log pays for it). Bounded as a page is,
    /// in events and bytes; a page that stops before it reaches the damage leaves it to a later read.
    public func readIntact(stream: String, after sequence: UInt64, limit: Int) async -> (events: [StoredEvent], damage: EventLogError?) {
        do {
            return (try await read(stream: stream, after: sequence, limit: limit), nil)
        } catch {
            var intact: [StoredEvent] = []
            var budget = ReadPageBudget()
            var versions = StreamReadVerifier()
            while intact.count < min(max(limit, 0), EventLogLimits.readPageEventsMax) {
                do {
                    // (The stream ended without damage found one event at a time: the page's error stands.)
                    guard let next = try await read(stream: stream, after: intact.last?.sequence ?? sequence, limit: 1).first else { return (intact, error) }
                    // Each read checks its one event: the versions between them are checked here.
                    try versions.checkVersion(next.streamVersion, at: next.sequence)
                    guard budget.admits(next.record.count) else { return (intact, nil) }
                    intact.append(next)
                } catch {
                    return (intact, error)
                }
            }
            // Stopped on its count before the damage: the damage is for a later page.
            return (intact, nil)
        }
    }
}

/// The checks of a read of one stream, shared by the adapters: each event's link against its
/// predecessor's (`previous`: nil for the first event of the log), and versions that follow one another.
public struct StreamReadVerifier: Sendable {
    private var lastVersion: UInt64?
    public init() {}

    /// `check` for a stored event.
    public mutating func check(_ event: StoredEvent, previous: ChainHash?) throws(EventLogError) {
        var verifier = self
        let failure = event.record.withUnsafeBytes { record -> EventLogError? in
            do throws(EventLogError) {
                try verifier.check(sequence: event.sequence, streamVersion: event.streamVersion, record: record, chainHash: event.chainHash,
                                   previous: previous)
                return nil
            } catch {
                return error
            }
        }
        self = verifier
        if let failure { throw failure }
    }

    /// Versions follow one another: `streamVersion` (at `sequence`) comes right after the last one checked.
    public mutating func checkVersion(_ streamVersion: UInt64, at sequence: UInt64) throws(EventLogError) {
        if let lastVersion, streamVersion != lastVersion &+ 1 {
            throw .corrupted(position: sequence, reason: "stream version \(streamVersion) follows \(lastVersion) (a version is missing or repeated)")
        }
        lastVersion = streamVersion
    }

    public mutating func check(sequence: UInt64, streamVersion: UInt64, record: UnsafeRawBufferPointer, chainHash: ChainHash,
                               previous: ChainHash?) throws(EventLogError) {
        try checkVersion(streamVersion, at: sequence)
        guard streamVersion >= 1 else { throw .corrupted(position: sequence, reason: "stream version 0 is stored") }
        let before: LogHead
        if sequence == 1 {
            before = .genesis
        } else if let previous {
            before = LogHead(sequence: sequence - 1, chainHash: previous)
        } else {
            throw .corrupted(position: sequence - 1, reason: "event \(sequence - 1) is missing")
        }
        var verifier = ChainVerifier(after: before)
        try verifier.check(sequence: sequence, record: record, chainHash: chainHash)
    }
}

/// What one group commit of a durable log did: told to its commit observer (metrics, benchmarks).
public struct LogCommit: Sendable {
    /// Events written.
    public var events: Int
    /// Appends (callers) served.
    public var appends: Int
    /// From BEGIN to the end of COMMIT, including the durable write, in nanoseconds.
    public var durationNanos: UInt64

    /// Nanoseconds from `start` to now on the monotonic clock (a commit's duration).
    public static func nanoseconds(since start: ContinuousClock.Instant) -> UInt64 {
        let elapsed = ContinuousClock.now - start
        return UInt64(max(0, elapsed.components.seconds)) * 1_000_000_000 + UInt64(max(0, elapsed.components.attoseconds / 1_000_000_000))
    }

    public init(events: Int, appends: Int, durationNanos: UInt64) {
        self.events = events
        self.appends = appends
        self.durationNanos = durationNanos
    }
}

/// A read page's record bytes, counted against `EventLogLimits.readPageBytesMax`: every store's reads
/// stop before the event that would pass it, and always take the first.
public struct ReadPageBudget: Sendable {
    private var bytes = 0
    private var taken = false

    public init() {}

    /// Whether an event of `recordBytes` still fits the page; counted when it does.
    public mutating func admits(_ recordBytes: Int) -> Bool {
        let total = bytes.addingReportingOverflow(recordBytes)
        guard !taken || (!total.overflow && total.partialValue <= EventLogLimits.readPageBytesMax) else { return false }
        bytes = total.overflow ? .max : total.partialValue
        taken = true
        return true
    }

    /// Whether a page of `events` may have been cut short by its bytes (more may follow it, however few
    /// events it has): its records are within one largest record of the limit.
    public static func mayBeCut(_ events: some Sequence<StoredEvent>) -> Bool {
        events.reduce(0) { $0.addingReportingOverflow($1.record.count).partialValue } > EventLogLimits.readPageBytesMax - EventLogLimits.recordBytesMax
    }

    /// The events of `events`, from the first, that still fit the page; counted.
    public mutating func take(_ events: some Sequence<StoredEvent>) -> [StoredEvent] {
        var taken: [StoredEvent] = []
        for event in events {
            guard admits(event.record.count) else { break }
            taken.append(event)
        }
        return taken
    }

    /// The events of `events`, from the first, that fit one page.
    public static func page(of events: some Sequence<StoredEvent>) -> [StoredEvent] {
        var budget = ReadPageBudget()
        return budget.take(events)
    }
}
