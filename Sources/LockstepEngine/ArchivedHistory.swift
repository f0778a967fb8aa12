import Crypto
import Foundation
import LockstepCore
import LockstepStore
import LockstepWire
import Synchronization

// Archive segments and the live log read as one history (issue 21, docs/history.md, "Archival"):
// `history verify --archive` and `history replay --archive` walk the segments `history archive` wrote,
// then the live log from its base, through the same `EventLog` reads a live log answers, so the
// verifier, the replay and the reports need nothing of their own for archived history.

/// One archive segment: a bundle (`HistoryBundle`) holding the events after `base` through `head`.
public struct ArchiveSegment: Sendable {
    public var path: String
    /// The event before its first (genesis for the first segment), and its chain hash.
    public var base: LogHead
    /// Its last event and chain hash.
    public var head: LogHead

    /// Largest segment file read, in bytes.
    public static let fileBytesMax = 1 << 30

    /// Reads the header of the segment at `path`: its base and head (the body is read by `events()`).
    public static func open(_ path: String) throws(CheckpointError) -> ArchiveSegment {
        guard let handle = FileHandle(forReadingAtPath: path) else { throw CheckpointError("cannot read the archive segment \(path)") }
        defer { try? handle.close() }
        let start = (try? handle.read(upToCount: 4_096)) ?? Data()
        guard let newline = start.firstIndex(of: 0x0A), let header = HistoryBundle.Header(start[..<newline]), header.isArchiveSegment,
              header.head.sequence > header.base.sequence
        else {
            throw CheckpointError("\(path) is not an archive segment (written by `lockstep history archive`), or its header was altered")
        }
        return ArchiveSegment(path: path, base: header.base, head: header.head)
    }

    /// The segment's events, with the body's hash, the chain from its base to its head and each record's
    /// stream and version checked.
    public func events() throws(EventLogError) -> [StoredEvent] {
        let bytes: [UInt8]
        do { bytes = try CheckpointFiles.read(path, limit: Self.fileBytesMax, what: "the archive segment") } catch {
            throw .unavailable(error.description)
        }
        // The header read now must be the one `open` read (the file may have changed since), and cover the body.
        guard let newline = bytes.firstIndex(of: 0x0A), let header = HistoryBundle.Header(bytes[..<newline]), header.isArchiveSegment,
              header.base == base, header.head == head, header.bodySHA256 == Array(SHA256.hash(data: Array(bytes[(newline + 1)...]))).hexString
        else {
            throw .corrupted(position: base.sequence + 1, reason: "the archive segment \(path) was altered (its body does not hash to its header's body_sha256)")
        }
        var events: [StoredEvent] = []
        var chain = ChainVerifier(after: base)
        for line in bytes[(newline + 1)...].split(separator: 0x0A) {
            let object: [String: Any]
            do throws(StrictJSON.Refusal) { object = try StrictJSON.object(line) } catch {
                throw .corrupted(position: chain.head.sequence + 1, reason: "\(path): a line \(error)")
            }
            guard let event = object["event"] as? [String: Any] else { continue }
            guard let sequence = (event["sequence"] as? NSNumber).flatMap({ UInt64(exactly: $0.doubleValue) }),
                  let recordText = event["record"] as? String, let record = Data(base64Encoded: recordText),
                  let hashText = event["chain_hash"] as? String, let hashBytes = [UInt8](hex: hashText), let hash = ChainHash(bytes: hashBytes)
            else {
                throw .corrupted(position: chain.head.sequence + 1, reason: "\(path): an event line needs sequence, chain_hash and record")
            }
            let bytes = [UInt8](record)
            let wire: Lockstep_V1_EventRecord
            do { wire = try EventRecordCodec.decodeRecord(bytes) } catch {
                throw .corrupted(position: sequence, reason: "\(path): the record does not decode: \(error)")
            }
            let stored = StoredEvent(sequence: sequence, stream: wire.stream, streamVersion: wire.streamVersion, record: bytes, chainHash: hash)
            try chain.check(stored)
            events.append(stored)
        }
        guard chain.head == head else {
            throw .corrupted(position: chain.head.sequence + 1, reason: "the archive segment \(path) ends at event \(chain.head.sequence), not at its header's head \(head.sequence) with its hash")
        }
        return events
    }
}

/// Archive segments followed by the live log (or the segments alone), read as one history from genesis.
/// Read-only: appends and snapshots are refused. One segment's events are held in memory at a time.
public final class ArchivedHistory: EventLog, Sendable {
    public let segments: [ArchiveSegment]
    let live: (any EventLog)?
    /// The live log's base, checked to be where the last segment ends.
    public let liveBase: Snapshot?
    private let loaded = Mutex<(index: Int, events: [StoredEvent])?>(nil)

    /// The segments at `paths` (in any order) and the live log, checked to join up: the first segment
    /// starts at genesis, each starts where the one before ends (sequence and chain hash), and the live
    /// log's base is the last segment's end.
    public static func open(segments paths: [String], live: (any EventLog)?) async throws -> ArchivedHistory {
        let segments = try paths.map { path throws in try ArchiveSegment.open(path) }.sorted { $0.base.sequence < $1.base.sequence }
        var end = LogHead.genesis
        for segment in segments {
            guard segment.base == end else {
                throw CheckpointError(segment.base.sequence == end.sequence
                    ? "\(segment.path) starts after event \(end.sequence) with a different chain hash than the segment before ends with: they are not of one history"
                    : "the segments do not join up: events \(end.sequence + 1) to \(segment.base.sequence) are in none of them (\(segment.path) starts after \(segment.base.sequence))")
            }
            end = segment.head
        }
        let liveBase = try await live?.base()
        if let live {
            let base = liveBase.map { LogHead(sequence: $0.sequence, chainHash: $0.chainHash) } ?? .genesis
            guard base == end else {
                throw CheckpointError(base.sequence > end.sequence
                    ? "the live log starts after event \(base.sequence), but the segments end at \(end.sequence): a segment is missing"
                    : base.sequence == end.sequence ? "the live log's base differs from the last segment's end (event \(end.sequence)): they are not of one history"
                    : "the segments go on past the live log's base (event \(base.sequence)) to \(end.sequence): give only the segments archived from this log")
            }
            _ = try await live.head()
        }
        return ArchivedHistory(segments: segments, live: live, liveBase: liveBase)
    }

    private init(segments: [ArchiveSegment], live: (any EventLog)?, liveBase: Snapshot?) {
        self.segments = segments
        self.live = live
        self.liveBase = liveBase
    }

    /// Where the segments end.
    var segmentsEnd: UInt64 { segments.last?.head.sequence ?? 0 }

    /// Segment `index`'s events (loaded once, kept until another segment is read).
    private func events(of index: Int) throws(EventLogError) -> [StoredEvent] {
        if let cached = loaded.withLock({ $0 }), cached.index == index { return cached.events }
        let events = try segments[index].events()
        loaded.withLock { $0 = (index, events) }
        return events
    }

    public func read(after sequence: UInt64, limit: Int) async throws(EventLogError) -> [StoredEvent] {
        let limit = min(max(limit, 0), EventLogLimits.readPageEventsMax)
        guard limit > 0 else { return [] }
        guard sequence < segmentsEnd else { return try await live?.read(after: sequence, limit: limit) ?? [] }
        // The segment holding event sequence+1; a page ends at a segment's end.
        guard let index = segments.firstIndex(where: { $0.base.sequence <= sequence && sequence < $0.head.sequence }) else { return [] }
        let events = try events(of: index)
        let first = Int(sequence - segments[index].base.sequence)
        let candidates = events[first..<min(events.count, first + limit)]
        return ReadPageBudget.page(of: candidates)
    }

    public func read(stream: String, after sequence: UInt64, limit: Int) async throws(EventLogError) -> [StoredEvent] {
        let limit = min(max(limit, 0), EventLogLimits.readPageEventsMax)
        var found: [StoredEvent] = []
        for index in segments.indices where segments[index].head.sequence > sequence && found.count < limit {
            found += try events(of: index).lazy.filter { $0.sequence > sequence && $0.stream == stream }.prefix(limit - found.count)
        }
        // Within the page's bytes: only a page the segments left room in goes on into the live log, with
        // the room they left.
        var budget = ReadPageBudget()
        let archived = budget.take(found)
        guard archived.count == found.count, found.count < limit, let live else { return archived }
        return archived + budget.take(try await live.read(stream: stream, after: max(sequence, segmentsEnd), limit: limit - found.count))
    }

    public func head() async throws(EventLogError) -> LogHead {
        if let live { return try await live.head() }
        return segments.last?.head ?? .genesis
    }

    public func streamVersion(of stream: String) async throws(EventLogError) -> UInt64 {
        if let live { return try await live.streamVersion(of: stream) }
        var version: UInt64 = 0
        for index in segments.indices {
            version = try events(of: index).last(where: { $0.stream == stream })?.streamVersion ?? version
        }
        return version
    }

    public func streams(withPrefix prefix: String, after: String, limit: Int) async throws(EventLogError) -> [String] {
        let limit = min(max(limit, 0), EventLogLimits.streamNamesPageMax)
        var names = Set<String>()
        for index in segments.indices {
            for event in try events(of: index) where event.stream.utf8.starts(with: prefix.utf8) && after.utf8.lexicographicallyPrecedes(event.stream.utf8) {
                names.insert(event.stream)
            }
        }
        var cursor = after
        while let live {
            let page = try await live.streams(withPrefix: prefix, after: cursor, limit: EventLogLimits.streamNamesPageMax)
            names.formUnion(page)
            guard let last = page.last else { break }
            cursor = last
        }
        return Array(names.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }.prefix(limit))
    }

    public func append(_ request: AppendRequest) async throws(EventLogError) -> AppendReceipt {
        throw .writesStopped(reason: "archive segments are read-only")
    }

    public func saveSnapshot(_ snapshot: Snapshot) async throws(EventLogError) {
        throw .writesStopped(reason: "archive segments are read-only")
    }

    /// The live log's newest snapshot (the segments hold none).
    public func latestSnapshot() async throws(EventLogError) -> Snapshot? {
        try await live?.latestSnapshot()
    }
}
