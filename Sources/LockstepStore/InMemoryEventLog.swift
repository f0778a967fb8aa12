/// An event log held in memory: the reference implementation of `EventLog`, for tests and simulation.
///
/// It keeps the same contract as the durable logs (expected versions, gapless sequence, hash chain,
/// verified reads) so one conformance suite runs against all of them.
public actor InMemoryEventLog: EventLog {
    private var events: [StoredEvent] = []
    private var versions: [String: UInt64] = [:]
    /// The positions in `events` of each stream's events, in order.
    private var positions: [String: [Int]] = [:]
    private var snapshots: [Snapshot] = []

    public init() {}

    public func append(_ request: AppendRequest) throws(EventLogError) -> AppendReceipt {
        try request.validate()
        let actual = versions[request.stream, default: 0]
        guard actual == request.expectedVersion else {
            throw .versionConflict(stream: request.stream, expected: request.expectedVersion, actual: actual)
        }
        var head = currentHead
        var version = actual
        let first = head.sequence + 1
        for record in request.records {
            version += 1
            let sequence = head.sequence + 1
            let link = head.chainHash.next(sequence: sequence, record: record)
            positions[request.stream, default: []].append(events.count)
            events.append(StoredEvent(sequence: sequence, stream: request.stream, streamVersion: version, record: record, chainHash: link))
            head = LogHead(sequence: sequence, chainHash: link)
        }
        versions[request.stream] = version
        return AppendReceipt(firstSequence: first, lastSequence: head.sequence, streamVersion: version)
    }

    public func read(after sequence: UInt64, limit: Int) throws(EventLogError) -> [StoredEvent] {
        let limit = min(max(limit, 0), EventLogLimits.readPageEventsMax)
        guard sequence < UInt64(events.count), limit > 0 else { return [] }
        let start = Int(sequence)
        let candidates = events[start..<min(events.count, start + limit)]
        let page = ReadPageBudget.page(of: candidates)
        var verifier = ChainVerifier(after: sequence == 0 ? .genesis : LogHead(sequence: sequence, chainHash: events[start - 1].chainHash))
        for event in page { try verifier.check(event) }
        return page
    }

    public func read(stream: String, after sequence: UInt64, limit: Int) throws(EventLogError) -> [StoredEvent] {
        let limit = min(max(limit, 0), EventLogLimits.readPageEventsMax)
        guard limit > 0, let all = positions[stream] else { return [] }
        // The first of the stream's events after `sequence` (an event's position is its sequence − 1).
        var low = 0, high = all.count
        while low < high {
            let middle = (low + high) / 2
            if UInt64(all[middle]) + 1 <= sequence { low = middle + 1 } else { high = middle }
        }
        var verifier = StreamReadVerifier()
        var page: [StoredEvent] = []
        var budget = ReadPageBudget()
        for position in all[low...].prefix(limit) {
            let event = events[position]
            guard budget.admits(event.record.count) else { break }
            try verifier.check(event, previous: position > 0 ? events[position - 1].chainHash : nil)
            page.append(event)
        }
        return page
    }

    public func head() -> LogHead { currentHead }

    public func streamVersion(of stream: String) -> UInt64 { versions[stream, default: 0] }

    public func streams(withPrefix prefix: String, after: String, limit: Int) -> [String] {
        let limit = min(max(limit, 0), EventLogLimits.streamNamesPageMax)
        return Array(versions.keys.filter { $0.utf8.starts(with: prefix.utf8) && after.utf8.lexicographicallyPrecedes($0.utf8) }
            .sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }.prefix(limit))
    }

    public func saveSnapshot(_ snapshot: Snapshot) throws(EventLogError) {
        try snapshot.validate()
        guard snapshot.sequence >= 1, snapshot.sequence <= UInt64(events.count),
              events[Int(snapshot.sequence) - 1].chainHash == snapshot.chainHash else {
            throw .invalidRequest("snapshot at \(snapshot.sequence) does not match an event of this log")
        }
        snapshots.removeAll { $0.sequence == snapshot.sequence }
        snapshots.append(snapshot)
        snapshots.sort { $0.sequence < $1.sequence }
        if snapshots.count > EventLogLimits.snapshotsRetainedMax {
            snapshots.removeFirst(snapshots.count - EventLogLimits.snapshotsRetainedMax)
        }
    }

    public func latestSnapshot() -> Snapshot? { snapshots.last }

    /// How many snapshots are kept (at most `EventLogLimits.snapshotsRetainedMax`).
    public var snapshotCount: Int { snapshots.count }

    private var currentHead: LogHead {
        events.last.map { LogHead(sequence: $0.sequence, chainHash: $0.chainHash) } ?? .genesis
    }
}

extension Snapshot {
    /// Checks the snapshot's shape before it is stored.
    public func validate() throws(EventLogError) {
        if state.count > EventLogLimits.snapshotBytesMax {
            throw .invalidRequest("snapshot is \(state.count) bytes; the limit is \(EventLogLimits.snapshotBytesMax) bytes")
        }
        if digest.count != 32 { throw .invalidRequest("snapshot digest is \(digest.count) bytes, not 32") }
    }
}
