import LockstepCore
import LockstepStore

/// What a full walk of the log established.
public struct VerificationReport: Hashable, Sendable {
    /// Events checked.
    public var events: UInt64
    /// The last event's sequence and chain hash: publish it, and a later verify proves nothing before it changed.
    public var head: LogHead
    /// Migrations found.
    public var migrations: Int
    /// The sequence of the newest snapshot, if its digest was checked against the replay.
    public var snapshotChecked: UInt64?
    /// The digest of the state after the last event.
    public var digest: StateDigest
}

/// Walks the whole log and checks everything that can be checked: contiguity, the hash chain, that every
/// record decodes and matches its row, stream versions, the head recorded at the last commit (which
/// exposes a truncated tail), and the newest snapshot against a replay to its position.
public enum HistoryVerifier {
    public static func verify(_ log: any EventLog) async throws(EventLogError) -> VerificationReport {
        let snapshot = try await log.latestSnapshot()
        var state = LogState()
        var head = LogHead.genesis
        var snapshotChecked: UInt64?
        // Fold up to the snapshot first so its digest can be compared with the replayed state there.
        if let snapshot {
            try await History.fold(log, into: &state, through: snapshot.sequence) { stored, _ throws(EventLogError) in
                head = LogHead(sequence: stored.sequence, chainHash: stored.chainHash)
            }
            guard state.digest.bytes == snapshot.digest, StateDigest(canonicalBytes: snapshot.state).bytes == snapshot.digest else {
                throw .corrupted(position: snapshot.sequence, reason: "the snapshot at \(snapshot.sequence) does not match the replayed state")
            }
            snapshotChecked = snapshot.sequence
        }
        try await History.fold(log, into: &state) { stored, _ throws(EventLogError) in
            head = LogHead(sequence: stored.sequence, chainHash: stored.chainHash)
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
        return VerificationReport(events: head.sequence, head: head, migrations: state.migrations.count,
                                  snapshotChecked: snapshotChecked, digest: state.digest)
    }
}
