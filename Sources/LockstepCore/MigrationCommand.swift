/// Something a person, an agent or the coordinator asks of one migration, which decides it from its own
/// state (`MigrationState.decide`; what needs every migration's view is a `ServiceLeaseCommand`).
///
/// Identities (`startedBy`, `approver`, `groups`) are attested by the engine from authentication,
/// never taken from a request body.
public enum MigrationCommand: Hashable, Sendable {
    /// Start a migration of `plan` under `id`, on behalf of `startedBy`. `zones`: the offsets of every
    /// time zone the plan's windows name, resolved by the engine from its time-zone database.
    case start(id: MigrationID, plan: PlanSnapshot, startedBy: String, zones: [ZoneOffsets] = [])
    /// Grant `agent` a lease on `node`'s next step (forward, or rollback while aborting) for `ttlMillis`,
    /// held by principal `holder` (attested by the engine from authentication; empty when there is none).
    /// `pollID`: the agent's name for the poll, recorded with the lease (`StepLeased.pollID`).
    case leaseStep(node: NodeID, agent: String, ttlMillis: Int64, holder: String = "", pollID: String = "")
    /// The holder of `token` reports `node`'s step done. `by`, like every report's, is the reporting
    /// principal (attested); a lease granted to a named principal takes reports from it only.
    case completeStep(node: NodeID, token: FencingToken, by: String = "", check: CheckReport? = nil)
    /// The holder of `token` reports `node`'s step failed.
    /// `stopped`: the agent stopped the step because a heartbeat told it to (the plan's `on_pause: stop`).
    case failStep(node: NodeID, token: FencingToken, reason: String, retryable: Bool, by: String = "", stopped: Bool = false)
    /// The holder of `token` says it is alive. Validated like any report; it records nothing (the
    /// engine extends the lease on its monotonic clock).
    case heartbeat(node: NodeID, token: FencingToken, by: String = "")
    /// The holder of `token` gives the step back unstarted: the poll that took it went away before the
    /// step reached its agent. The attempt is not counted and the step is offered again at once.
    case returnStep(node: NodeID, token: FencingToken, by: String = "")
    /// The holder of `token` reports progress (`percent` 0...100).
    case reportProgress(node: NodeID, token: FencingToken, percent: UInt8, message: String, by: String = "")
    /// The coordinator's lease timer: the lease with `token` was not renewed within its TTL.
    case expireLease(node: NodeID, token: FencingToken)
    /// The coordinator's timer: the step under `token` has run past its node's `start_to_close` at `now`
    /// (measured from the lease's recorded grant time). Refused when it has not.
    case timeOutStep(node: NodeID, token: FencingToken)
    /// The coordinator's timer: `node`'s step has waited for an agent (ready, holding its services) for
    /// its whole `schedule_to_start`, measured by the engine on its monotonic clock. Pauses the migration.
    case scheduleToStartExceeded(node: NodeID)
    /// `approver`, a member of `groups`, approves `node`'s gate.
    case approve(node: NodeID, approver: String, groups: [String], comment: String)
    /// `approver`, a member of `groups`, rejects `node`'s gate; one rejection blocks the node.
    case reject(node: NodeID, approver: String, groups: [String], comment: String)
    /// Stop handing out new steps; running steps may finish. `lineStop`: the stop-the-line freeze doing it.
    case pause(reason: String, lineStop: String = "")
    /// Hand out steps again after a pause.
    case resume
    /// `by`, an admin when `admin` (attested by the engine from authentication), overrides `scope` for
    /// `node`, saying why (break-glass).
    case breakGlass(node: NodeID, scope: BreakGlassScope, by: String, admin: Bool, justification: String)
    /// Roll back what completed, in reverse completion order, as far as irreversible nodes allow.
    case abort(reason: String)
    /// The coordinator's timer: abort into rollback if a deadline has passed at `now`.
    case enforceDeadlines
    /// A reporter (an agent, or anyone the engine authorized) sends a metric sample for `node`'s bake.
    case recordMetric(node: NodeID, sample: MetricSample)
    /// The coordinator's timer: `node`'s bake is over; judge it by its analysis and act on the outcome.
    case evaluateExposure(node: NodeID)
    /// The coordinator, after opening a log: records the service-lease bookkeeping the migration lacks
    /// (a history written before service leases existed). Refused when there is none to record.
    case reconcileServiceLeases
}

extension MigrationCommand {
    /// The node and token of a lease holder's report (complete, fail, heartbeat, progress), else nil.
    public var report: (node: NodeID, token: FencingToken)? {
        switch self {
        case .completeStep(let node, let token, _, _), .failStep(let node, let token, _, _, _, _), .heartbeat(let node, let token, _),
             .reportProgress(let node, let token, _, _, _), .returnStep(let node, let token, _):
            (node, token)
        default:
            nil
        }
    }

    /// `start` on behalf of nobody in particular (tests, generated load).
    public static func start(id: MigrationID, plan: PlanSnapshot) -> MigrationCommand {
        .start(id: id, plan: plan, startedBy: "")
    }
}

/// Who takes a step lease: the agent named in the poll, the principal it authenticated as (the lease's
/// holder, "" when none), and the agent's name for the poll ("" when none).
struct LeaseTaker {
    var agent: String
    var holder: String
    var pollID: String
}
