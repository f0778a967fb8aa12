import LockstepCore
import LockstepStore

// A replica's coordinator: it folds what the writer appends to the shared log (docs/operations.md).
extension Coordinator {
    /// Every event up to here is folded into the live state (the sequence a replica has applied).
    public var appliedSequence: UInt64 { machine.foldedThrough }

    /// Reads up to `limit` events after the applied sequence from the log, checks them as a replay does
    /// (bytes, stream versions, the chain the log checks) and folds them in, waking whoever watches what
    /// they change. Returns how many were folded: a full page means more may be waiting. Only for a
    /// coordinator that does not write (a replica): the writer folds its own appends as it makes them.
    /// One caller at a time (the replica's tail); a page another caller folded meanwhile is skipped.
    @discardableResult
    public func follow(limit: Int = History.pageEventsMax) async throws(EventLogError) -> Int {
        let from = machine.foldedThrough
        let page = try await log.read(after: from, limit: max(1, min(limit, History.pageEventsMax)))
        guard !page.isEmpty else { return 0 }
        guard page[0].sequence == from + 1 else {
            throw .corrupted(position: from + 1, reason: "the log's next event after \(from) is \(page[0].sequence)")
        }
        // Another follow may have folded while this one read: the machine skips what it already holds.
        guard machine.foldedThrough == from, followedLink.sequence == from else { return 0 }
        // Chained from the event this coordinator folded last, as it checked it (the log chains the page
        // onto the hash it holds for event `from` now, which a restore or a rewritten row could have changed).
        guard followedLink.chainHash.next(sequence: page[0].sequence, record: page[0].record) == page[0].chainHash else {
            throw .corrupted(position: page[0].sequence, reason: "event \(page[0].sequence) does not chain from event \(from) as this coordinator folded it: "
                             + "the log was rewritten or restored under it; check it (`lockstep history verify --store URL`), then restart this coordinator")
        }
        // Checked as `History.fold` checks, against the live state's stream versions and those the page
        // itself moves (nothing is folded until the whole page checks).
        var versions: [String: UInt64] = [:]
        var events: [CoordinatorMachine.FollowedEvent] = []
        events.reserveCapacity(page.count)
        for stored in page {
            let record = try History.decode(stored)
            try History.checkOrder(record, of: stored, current: versions[stored.stream] ?? machine.state.currentVersion(of: record))
            versions[stored.stream] = record.streamVersion
            events.append(.init(sequence: stored.sequence, record: record))
        }
        feed(.followed(events, nanos: monotonic()))
        // Only what was folded moves the link (the machine folds nothing while an append of its own is in flight).
        let last = page[page.count - 1]
        if machine.foldedThrough == last.sequence { followedLink = LogHead(sequence: last.sequence, chainHash: last.chainHash) }
        return events.count
    }
}
