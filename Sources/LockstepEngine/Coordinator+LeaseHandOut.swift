import LockstepCore
import LockstepStore

// A named poll sent again after its answer was lost gets the lease its first send took (docs/api.md,
// `poll_id`): the hand-out, and the give-back it must exclude. Their state is the actor's `returning`
// (the give-backs in flight) and the mark on the lease's timer (`CoordinatorMachine.renewLease`).
extension Coordinator {
    /// A named poll sent again after its answer was lost (docs/api.md, `poll_id`): the lease its first
    /// send took (`LogState.leaseTaken`), renewed as a heartbeat would renew it (its TTL starts again now,
    /// since the agent counts from the answer), with its TTL in milliseconds and the exposure stage it
    /// sets. Nil when there is none, when the lease timer has it past its deadline (its expiry is under
    /// way), or when the step is being given back (`giveBack`): the two exclude each other, so a step
    /// handed out again is never also offered again.
    public func leaseTakenAgain(forService service: String, agent: String, holder: String, pollID: String)
        -> (migration: MigrationID, node: NodeID, spec: NodeSpec, lease: StepLeased, ttlMillis: Int64, stage: ExposureStage?)? {
        guard let taken = machine.state.leaseTaken(forService: service, agent: agent, holder: holder, pollID: pollID) else { return nil }
        let key = LeaseKey(migration: taken.migration, node: taken.node, token: taken.lease.token)
        let nanos = monotonic()
        guard !returning.contains(key), let deadline = machine.leaseDeadlines[taken.migration]?[taken.node], deadline.token == taken.lease.token,
              deadline.deadlineNanos > nanos else { return nil }
        machine.renewLease(taken.migration, node: taken.node, token: taken.lease.token, nanos: nanos, handedOutAgain: true)
        let stage = taken.lease.kind == .forward && taken.spec.exposure != nil ? machine.state.migrations[taken.migration]?.nextStage(of: taken.node) : nil
        return (taken.migration, taken.node, taken.spec, taken.lease,
                taken.lease.expiresAt.millisecondsSinceEpoch - taken.lease.grantedAt.millisecondsSinceEpoch, stage)
    }

    /// Gives back the step leased under `token` to a poll whose client went before its answer reached it
    /// (`returnStep`, as `by`), unless the lease was handed out again meanwhile (`leaseTakenAgain`): then
    /// nothing is done, however long ago that was while the lease runs (the mark lives with the lease).
    /// Nil when nothing was done.
    public func giveBack(node: NodeID, token: FencingToken, by principal: String, migration id: MigrationID, context: CommandContext,
                         now: Instant) async throws(CommandError) -> CommandResult? {
        let key = LeaseKey(migration: id, node: node, token: token)
        guard !machine.wasHandedOutAgain(id, node: node, token: token), returning.insert(key).inserted else { return nil }
        defer { returning.remove(key) }
        return try await execute(.returnStep(node: node, token: token, by: principal), migration: id, context: context, now: now)
    }
}

/// One step lease: its migration, node and fencing token.
struct LeaseKey: Hashable, Sendable {
    var migration: MigrationID
    var node: NodeID
    var token: FencingToken
}
