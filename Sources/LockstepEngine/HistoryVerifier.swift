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
    public static func verify(_ log: any EventLog) async throws(EventLogError) -> VerificationReport {
        // The events first, so a damaged log is reported at the first bad event, whatever a snapshot says.
        let snapshot = try await log.latestSnapshot()
        var state = LogState()
        var head = LogHead.genesis
        var atSnapshot: (link: ChainHash, digest: StateDigest)?
        // Every migration ever started (settled ones leave the live state): each stream starts once.
        var migrations = 0
        func count(_ record: LogRecord) {
            if case .migration(let event) = record, case .migrationStarted = event.event { migrations += 1 }
        }
        if let snapshot {
            // Fold up to the snapshot's event (or as far as the log goes), then the rest.
            do {
                try await History.fold(log, into: &state, through: snapshot.sequence) { stored, record throws(EventLogError) in
                    head = LogHead(sequence: stored.sequence, chainHash: stored.chainHash)
                    count(record)
                }
                atSnapshot = (head.chainHash, state.digest)
            } catch .invalidRequest {
                // The log ends before the snapshot's event: reported below as a truncated tail.
            }
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
        if let snapshot {
            guard let atSnapshot else {
                throw .corrupted(position: head.sequence + 1, reason:
                    "the snapshot names event \(snapshot.sequence) but the log ends at \(head.sequence): the tail was truncated")
            }
            guard atSnapshot.link == snapshot.chainHash else {
                throw .corrupted(position: snapshot.sequence, reason: "the snapshot's chain hash differs from event \(snapshot.sequence)'s")
            }
            guard StateDigest(canonicalBytes: snapshot.state).bytes == snapshot.digest,
                  atSnapshot.digest.bytes == snapshot.digest || !snapshot.isCurrentFormat else {
                throw .corrupted(position: snapshot.sequence, reason: "the snapshot at \(snapshot.sequence) does not match the replayed state")
            }
        }
        return VerificationReport(events: head.sequence, head: head, migrations: migrations, plans: state.plans.count,
                                  snapshotChecked: snapshot?.sequence, digest: state.digest)
    }
}
