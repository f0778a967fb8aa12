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
        visit: (StoredEvent, LogRecord) throws(EventLogError) -> Void = { _, _ in }
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
                    let record = try check(stored, against: state)
                    try visit(stored, record)
                    state.evolve(record, sequence: stored.sequence)
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

    /// Decodes `stored` and checks it fits the state folded so far: the bytes parse, name the row's
    /// stream and version, the version follows on, and a migration stream starts with exactly one
    /// `migration_started` naming its own migration.
    public static func check(_ stored: StoredEvent, against state: LogState) throws(EventLogError) -> LogRecord {
        let record: LogRecord
        do {
            let wire = try EventRecordCodec.decodeRecord(stored.record)
            guard wire.stream == stored.stream, wire.streamVersion == stored.streamVersion else {
                throw EventLogError.corrupted(position: stored.sequence, reason:
                    "the row says \(stored.stream)@\(stored.streamVersion) but its bytes say \(wire.stream)@\(wire.streamVersion)")
            }
            record = try EventRecordCodec.domainRecord(wire)
        } catch let error as EventLogError {
            throw error
        } catch {
            throw .corrupted(position: stored.sequence, reason: "\(error)")
        }
        let current = state.currentVersion(of: record)
        guard record.streamVersion == current + 1 else {
            throw .corrupted(position: stored.sequence, reason: "stream \(stored.stream) jumps from version \(current) to \(record.streamVersion)")
        }
        guard case .migration(let event) = record else { return record }
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
        return record
    }

    /// The state as of event `through` (or the end of the log), replayed from the first event.
    public static func replay(_ log: any EventLog, through: UInt64? = nil) async throws(EventLogError) -> LogState {
        var state = LogState()
        try await fold(log, into: &state, through: through)
        return state
    }
}
