import LockstepCore
import LockstepStore

/// What a full walk of the log established.
public struct VerificationReport: Hashable, Sendable {
    /// Events checked (after `base`).
    public var events: UInt64
    /// The last event's sequence and chain hash: publish it, and a later verify proves nothing before it changed.
    public var head: LogHead
    /// The last archived event the walk started after (0: the log starts at genesis).
    public var base: UInt64 = 0
    /// Migrations found.
    public var migrations: Int
    /// Plans found (each with one or more versions).
    public var plans: Int
    /// The sequence of the newest snapshot, if its digest was checked against the replay.
    public var snapshotChecked: UInt64?
    /// The digest of the state after the last event.
    public var digest: StateDigest
}

/// Walks the whole log and checks everything that can be checked: contiguity, the hash chain, that every
/// record decodes and matches its row, stream versions, the head recorded at the last commit (which
/// exposes a truncated tail), and the newest snapshot against a replay to its position.
public enum HistoryVerifier {
    /// `also`: further snapshots to check against the replay at their positions (the live log's base,
    /// when archive segments and the live log are verified as one history).
    public static func verify(_ log: any EventLog, also: [Snapshot] = []) async throws(EventLogError) -> VerificationReport {
        // The events first, so a damaged log is reported at the first bad event, whatever a snapshot says.
        let snapshot = try await log.latestSnapshot()
        // A log whose first events were archived is walked from its base (`history verify --archive`
        // walks the segments too).
        let base = try await log.base()
        var state = try base.map { base throws(EventLogError) in try History.state(at: base) } ?? LogState()
        var head = base.map { LogHead(sequence: $0.sequence, chainHash: $0.chainHash) } ?? .genesis
        // Every migration ever started (settled ones leave the live state): each stream starts once.
        var migrations = 0
        func count(_ record: LogRecord) {
            if case .migration(let event) = record, case .migrationStarted = event.event { migrations += 1 }
        }
        // Fold up to each snapshot's event (or as far as the log goes), checking it there, then the rest.
        var stops = also.filter { $0.sequence > head.sequence }
        if let snapshot, snapshot.sequence >= head.sequence { stops.append(snapshot) }
        stops.sort { $0.sequence < $1.sequence }
        var checked: [UInt64] = []
        for stop in stops {
            do {
                try await History.fold(log, into: &state, through: stop.sequence) { stored, record throws(EventLogError) in
                    head = LogHead(sequence: stored.sequence, chainHash: stored.chainHash)
                    count(record)
                }
            } catch .invalidRequest {
                // The log ends before the snapshot's event: reported below as a truncated tail.
                break
            }
            guard head.chainHash == stop.chainHash else {
                throw .corrupted(position: stop.sequence, reason: "the snapshot's chain hash differs from event \(stop.sequence)'s")
            }
            guard StateDigest(canonicalBytes: stop.state).bytes == stop.digest, state.digest.bytes == stop.digest || !stop.isCurrentFormat else {
                throw .corrupted(position: stop.sequence, reason: "the snapshot at \(stop.sequence) does not match the replayed state")
            }
            checked.append(stop.sequence)
        }
        try await History.fold(log, into: &state) { stored, record throws(EventLogError) in
            head = LogHead(sequence: stored.sequence, chainHash: stored.chainHash)
            count(record)
        }
        let recorded = try await log.head()
        if head.sequence < recorded.sequence {
            throw .corrupted(position: head.sequence + 1, reason:
                "the log ends at event \(head.sequence) but its last commit recorded event \(recorded.sequence): the tail was truncated")
        }
        if head.sequence > recorded.sequence {
            throw .corrupted(position: recorded.sequence + 1, reason:
                "events follow the head recorded at the last commit (\(recorded.sequence)): they were added outside Lockstep")
        }
        if head.chainHash != recorded.chainHash {
            throw .corrupted(position: head.sequence, reason: "the last event's chain hash differs from the head recorded at commit")
        }
        if let stop = stops.first(where: { !checked.contains($0.sequence) }) {
            throw .corrupted(position: head.sequence + 1, reason:
                "the snapshot names event \(stop.sequence) but the log ends at \(head.sequence): the tail was truncated")
        }
        return VerificationReport(events: head.sequence - (base?.sequence ?? 0), head: head, base: base?.sequence ?? 0, migrations: migrations,
                                  plans: state.plans.count, snapshotChecked: snapshot.flatMap { checked.contains($0.sequence) ? $0.sequence : nil },
                                  digest: state.digest)
    }
}
