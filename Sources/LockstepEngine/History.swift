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
    /// Pipelined: while this folds one page, the log reads and chain-verifies the next on its own queue.
    public static func fold(
        _ log: any EventLog, into state: inout LogState, through: UInt64? = nil,
        visit: (StoredEvent, RecordedEvent) throws(EventLogError) -> Void = { _, _ in }
    ) async throws(EventLogError) {
        var position = state.lastSequence
        if let through, through < position {
            throw .invalidRequest("the state is already at sequence \(position), past \(through); fold from an earlier state")
        }
        func prefetch(after sequence: UInt64) -> Task<Result<[StoredEvent], EventLogError>, Never>? {
            let limit = through.map { $0 > sequence ? Int(min(UInt64(pageEventsMax), $0 - sequence)) : 0 } ?? pageEventsMax
            guard limit > 0 else { return nil }
            return Task {
                do throws(EventLogError) { return .success(try await log.read(after: sequence, limit: limit)) } catch {
                    return .failure(error)
                }
            }
        }
        var next = prefetch(after: position)
        while let pending = next {
            let page = try await pending.value.get()
            guard let last = page.last else { break }
            next = prefetch(after: last.sequence)
            do throws(EventLogError) {
                for stored in page {
                    let event = try check(stored, against: state)
                    try visit(stored, event)
                    state.evolve(migration: event.migration, sequence: stored.sequence, event.event)
                    position = stored.sequence
                }
            } catch {
                next?.cancel()
                throw error
            }
        }
        if let through, position < through {
            throw .invalidRequest("the log ends at sequence \(position); there is no event \(through)")
        }
    }

    /// Decodes `stored` and checks it fits the state folded so far.
    public static func check(_ stored: StoredEvent, against state: LogState) throws(EventLogError) -> RecordedEvent {
        let event: RecordedEvent
        do {
            let record = try EventRecordCodec.decodeRecord(stored.record)
            guard record.stream == stored.stream, record.streamVersion == stored.streamVersion else {
                throw EventLogError.corrupted(position: stored.sequence, reason:
                    "the row says \(stored.stream)@\(stored.streamVersion) but its bytes say \(record.stream)@\(record.streamVersion)")
            }
            event = try EventRecordCodec.domainEvent(record)
        } catch let error as EventLogError {
            throw error
        } catch {
            throw .corrupted(position: stored.sequence, reason: "\(error)")
        }
        let stream = stored.stream
        let current = state.migrations[event.migration]?.version ?? 0
        guard event.streamVersion == current + 1 else {
            throw .corrupted(position: stored.sequence, reason:
                "stream \(stream) jumps from version \(current) to \(event.streamVersion)")
        }
        let isStart: Bool
        if case .migrationStarted(let started) = event.event {
            isStart = true
            guard started.migration == event.migration else {
                throw .corrupted(position: stored.sequence, reason: "migration_started in \(stream) names migration \(started.migration)")
            }
        } else {
            isStart = false
        }
        guard isStart == (current == 0) else {
            throw .corrupted(position: stored.sequence, reason: isStart
                ? "stream \(stream) has a second migration_started at version \(event.streamVersion)"
                : "the first event of \(stream) is not migration_started")
        }
        return event
    }

    /// The state as of event `through` (or the end of the log), replayed from the first event.
    public static func replay(_ log: any EventLog, through: UInt64? = nil) async throws(EventLogError) -> LogState {
        var state = LogState()
        try await fold(log, into: &state, through: through)
        return state
    }
}
