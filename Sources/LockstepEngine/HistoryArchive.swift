import Foundation
import LockstepCore
import LockstepStore
import LockstepWire

// Archival (issue 21, docs/history.md, "Archival"): `lockstep history archive --before SEQ|TIME --to FILE`
// moves the oldest events of the live log into an archive segment, a bundle that ends at a signed
// checkpoint, and the live log then starts at that checkpoint's event (its base), with the state folded
// through it. The cut only ever falls where every migration that started before it has settled, at a
// signed checkpoint, and before any event a webhook has still to deliver.

public enum HistoryArchive {
    /// Most events one segment holds: a larger request archives this many and says so (run it again).
    public static let segmentEventsMax: UInt64 = 1_000_000

    /// Where the cut is asked for: before an event, or before a time (the events recorded before it).
    public enum Before: Hashable, Sendable {
        case sequence(UInt64)
        case time(Instant)
    }

    /// Where a segment will end, and why there.
    public struct Plan: Sendable {
        /// The live log's base now: the segment starts after it.
        public var base: LogHead
        /// The segment's last event.
        public var cut: LogHead
        /// The signed checkpoint of `cut`.
        public var checkpoint: Checkpoint
        /// The migrations whose events the segment holds (all settled by the cut), in id order.
        public var migrations: [MigrationID]
        /// Why the cut is before the one asked for (an unsettled migration, no checkpoint, a webhook, the
        /// segment's size), one sentence each; empty when it is where it was asked for.
        public var heldBack: [String]
        /// The state folded through `cut`: the live log's new base.
        public var state: LogState

        public var events: UInt64 { cut.sequence - base.sequence }
    }

    /// The cut for `before` in `log`: the latest event at or before it that ends a segment by the rules
    /// above, with its checkpoint verified by `keys` (from the log's own checkpoint events, or
    /// `elsewhere`, the checkpoints file). `delivered`: each webhook's cursor, the newest event it has
    /// delivered (nothing it has yet to deliver is archived).
    public static func plan(_ log: any EventLog, before: Before, keys: CheckpointKeys, elsewhere: [Checkpoint] = [], delivered: [String: UInt64] = [:],
                            eventsMax: UInt64 = segmentEventsMax) async throws -> Plan {
        let baseSnapshot = try await log.base()
        let base = baseSnapshot.map { LogHead(sequence: $0.sequence, chainHash: $0.chainHash) } ?? .genesis
        let head = try await log.head()
        var state = try baseSnapshot.map { snapshot throws(EventLogError) in try History.state(at: snapshot) } ?? LogState()
        let baseState = state
        // One walk of the live log from its base: when each migration started and settled, the
        // checkpoints it records, and the last event before the time asked for.
        var started: [MigrationID: UInt64] = [:]
        var settled: [MigrationID: UInt64] = [:]
        var claims = elsewhere
        var beforeTime: UInt64 = base.sequence
        // Where the segment would pass 90 % of the largest file a reader takes (an event's line holds its
        // record in base64, about 4/3 of it, and some 200 bytes of JSON).
        var segmentBytes: UInt64 = 0
        var bytesFull: UInt64?
        var position = base.sequence
        while position < head.sequence {
            let page = try await log.read(after: position, limit: History.pageEventsMax)
            guard !page.isEmpty else { break }
            for stored in page {
                let record = try History.check(stored, against: state)
                segmentBytes += UInt64(stored.record.count) * 4 / 3 + 200
                if bytesFull == nil, segmentBytes > UInt64(ArchiveSegment.fileBytesMax) / 10 * 9 { bytesFull = stored.sequence }
                if case .time(let time) = before, record.metadata.recordedAt < time { beforeTime = stored.sequence }
                state.evolve(record, sequence: stored.sequence)
                switch record {
                case .migration(let event):
                    if case .migrationStarted = event.event { started[event.migration] = stored.sequence }
                    if settled[event.migration] == nil, started[event.migration] != nil, !state.unsettled.contains(event.migration) {
                        settled[event.migration] = stored.sequence
                    }
                case .checkpoint(let recorded): claims.append(recorded.checkpoint)
                case .plan, .freeze: break
                }
                position = stored.sequence
            }
        }
        // The cut asked for, then the limits on it.
        var held: [String] = []
        let asked: UInt64 = switch before {
        case .sequence(let sequence): sequence == 0 ? 0 : sequence - 1
        case .time: beforeTime
        }
        var candidate = asked
        func limit(_ bound: UInt64, _ why: String) {
            if bound < candidate {
                candidate = bound
                held.append(why)
            }
        }
        // The live log keeps at least its last event (what the server's clock starts from).
        limit(head.sequence &- 1, "the live log keeps its last event (\(head.sequence))")
        limit(base.sequence + eventsMax, "a segment holds at most \(eventsMax) events; archive again for the rest")
        if let bytesFull { limit(bytesFull - 1, "a segment file is at most \(ArchiveSegment.fileBytesMax >> 20) MiB; archive again for the rest") }
        // (The first of the slowest in name order, so the sentence is the same every time.)
        if let slowest = delivered.sorted(by: { ($0.value, $0.key) < ($1.value, $1.key) }).first {
            limit(slowest.value, "webhook \(slowest.key) has delivered only up to event \(slowest.value) (a webhook no longer configured keeps its cursor: delete it)")
        }
        guard candidate > base.sequence else {
            throw CheckpointError(asked <= base.sequence
                ? "nothing to archive: the live log already starts after event \(base.sequence)"
                : "nothing can be archived: " + held.joined(separator: "; "))
        }
        // Migrations unsettled at the base started before it (only by an archive made some other way):
        // nothing after the base can go then.
        if let stuck = baseState.unsettledInOrder.first {
            throw CheckpointError("migration \(stuck.id) was not settled at the live log's base (event \(base.sequence)); nothing can be archived until it settles")
        }
        // The latest signed checkpoint at or before the candidate that no unsettled migration straddles.
        let signed = Dictionary(claims.map { ($0.sequence, $0) }, uniquingKeysWith: { first, _ in first })
        var cut = candidate
        var chosen: (LogHead, Checkpoint)?
        var unsettledNamed = false
        var checkpointNamed = false
        while cut > base.sequence {
            // A migration that started by the cut and settled after it (or not yet) moves the cut before its start.
            if let straddling = started.filter({ $0.value <= cut && (settled[$0.key] ?? .max) > cut }).min(by: { $0.value < $1.value }) {
                if !unsettledNamed {
                    held.append("migration \(straddling.key) started at event \(straddling.value) and had not settled by event \(cut)")
                    unsettledNamed = true
                }
                cut = straddling.value - 1
                continue
            }
            guard let sequence = signed.keys.filter({ $0 > base.sequence && $0 <= cut }).max() else { break }
            if sequence < cut, !checkpointNamed {
                held.append("the segment ends at a signed checkpoint; the latest at or before event \(cut) vouches for event \(sequence)")
                checkpointNamed = true
            }
            if sequence < cut {
                cut = sequence
                continue
            }
            let checkpoint = signed[sequence]!
            guard keys.problem(with: checkpoint) == nil, let hash = try await log.chainHash(at: sequence), hash.bytes == checkpoint.chainHash else {
                held.append("the checkpoint of event \(sequence) does not verify with the keys given")
                cut = sequence - 1
                continue
            }
            chosen = (LogHead(sequence: sequence, chainHash: hash), checkpoint)
            break
        }
        guard let (end, checkpoint) = chosen else {
            throw CheckpointError("nothing can be archived before event \(asked + 1): no signed checkpoint at or before it ends a segment by the rules"
                + (held.isEmpty ? "" : " (" + held.joined(separator: "; ") + ")"))
        }
        var cutState = baseState
        try await History.fold(log, into: &cutState, through: end.sequence)
        let migrations = started.filter { $0.value <= end.sequence }.keys.sorted()
        return Plan(base: base, cut: end, checkpoint: checkpoint, migrations: migrations, heldBack: end.sequence < asked ? held : [], state: cutState)
    }

    /// What an archive run did.
    public struct Outcome: Sendable {
        public var plan: Plan
        public var checkpointsInSegment: Int
    }

    /// Writes the segment `plan` names to `path` (created, never over a file, and synced), reads it back
    /// and verifies it with `keys`, and only then moves its events out of `log` (`EventLog.archive`).
    public static func archive(_ log: any EventLog, plan: Plan, to path: String, keys: CheckpointKeys,
                               checkpointsDirectory: String?) async throws -> Outcome {
        let written = try await HistoryBundle.write(log, to: path, checkpointsDirectory: checkpointsDirectory, keys: keys, through: plan.cut,
                                                    endCheckpoint: plan.checkpoint)
        let bytes = try CheckpointFiles.read(path, limit: ArchiveSegment.fileBytesMax, what: "the archive segment")
        let report = await HistoryBundle.verify(bytes, keys: keys)
        guard report.problems.isEmpty, report.baseSequence == plan.base.sequence, report.headSequence == plan.cut.sequence else {
            throw CheckpointError("the segment written to \(path) does not verify, so nothing was archived: " + report.problems.joined(separator: "; "))
        }
        // The verification read every event (chain, records, end checkpoint); the segment reader's header check
        // is all that is left, not a second parse of the whole file.
        _ = try ArchiveSegment.open(path)
        guard report.isArchiveSegment, report.events == plan.events else {
            throw CheckpointError("the segment written to \(path) holds \(report.events) events, not \(plan.events); nothing was archived")
        }
        let bytesOfState = plan.state.canonicalBytes
        do {
            try await log.archive(through: Snapshot(sequence: plan.cut.sequence, chainHash: plan.cut.chainHash, state: bytesOfState,
                                                    digest: StateDigest(canonicalBytes: bytesOfState).bytes), after: plan.base.sequence)
        } catch .invalidRequest(let why) {
            // Refused inside a transaction that rolled back: nothing moved, the segment is not needed.
            try? FileManager.default.removeItem(atPath: path)
            throw CheckpointError("nothing was archived: \(why)")
        } catch {
            // The store may have committed after all (a bound that ran out, a lost answer): the segment is whole
            // and verified, and may now be the only copy of its events.
            throw CheckpointError("the segment \(path) was written and verified, but moving its events out of the live log failed: \(error). "
                + "Keep the segment: if the deletion committed after all, it holds the only copy of events \(plan.base.sequence + 1) to \(plan.cut.sequence) "
                + "(`lockstep history verify --archive \(path) …` tells); else delete it and archive again")
        }
        return Outcome(plan: plan, checkpointsInSegment: written.checkpoints)
    }
}
