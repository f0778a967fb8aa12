import LockstepCore
import LockstepStore
import LockstepWire

// The coordinator's snapshots: when one is due and how it is written (off the actor, never delaying
// an acknowledgement); start-up reads the newest in `Coordinator.open`.
extension Coordinator {
    /// Saves a snapshot of the live state now, if every appended event is folded in. Returns its sequence.
    @discardableResult
    public func saveSnapshot() async throws(EventLogError) -> UInt64? {
        guard state.lastSequence > 0, machine.isConsistent(lastSequence: state.lastSequence) else { return nil }
        let (sequence, bytes) = try await Self.writeSnapshot(of: state, to: log)
        machine.handle(.snapshotSaved(sequence: sequence, bytes: bytes))
        return sequence
    }

    /// Writes a snapshot when one is due (`CoordinatorMachine.snapshotDueEvents` since the last: the
    /// interval, or more after a large one; every appended event folded in, none being written), in the
    /// caller's task: the server's timer service calls it after each tick, so no command waits for it and
    /// no loose task runs it. The state is copied on the actor (copy-on-write: cheap) and encoded and
    /// stored off it. A failure is thrown to the caller (the server logs it); either way the next snapshot
    /// waits as long again (`snapshotDueEvents`), so a failing one is not retried on every tick. Returns the snapshot's sequence, nil when none was due.
    @discardableResult
    public nonisolated func writeSnapshotIfDue() async throws(EventLogError) -> UInt64? {
        guard let copy = await takeDueSnapshot() else { return nil }
        do {
            let (sequence, bytes) = try await Self.writeSnapshot(of: copy, to: log)
            await snapshotFinished(at: sequence, bytes: bytes)
            return sequence
        } catch {
            await snapshotFinished(at: copy.lastSequence, bytes: nil)
            throw error
        }
    }

    /// A copy of the state to snapshot, if one is due; marks a snapshot in flight.
    private func takeDueSnapshot() -> LogState? {
        guard case .writeSnapshot = machine.handle(.snapshotWanted).first else { return nil }
        return state
    }

    private func snapshotFinished(at sequence: UInt64, bytes: Int?) {
        machine.handle(.snapshotEnded(sequence: sequence, bytes: bytes))
    }

    /// Encodes `state` and stores it as the snapshot at its last sequence; returns that sequence and the
    /// state's size in bytes.
    private static func writeSnapshot(of state: LogState, to log: any EventLog) async throws(EventLogError) -> (sequence: UInt64, bytes: Int) {
        let sequence = state.lastSequence
        let bytes = state.canonicalBytes
        // (The base's link when nothing was appended since events were archived.)
        guard let chainHash = try await log.chainHash(at: sequence) else {
            throw .corrupted(position: sequence, reason: "event \(sequence) could not be read back for the snapshot")
        }
        try await log.saveSnapshot(Snapshot(sequence: sequence, chainHash: chainHash, state: bytes,
                                            digest: StateDigest(canonicalBytes: bytes).bytes))
        return (sequence, bytes.count)
    }
}
