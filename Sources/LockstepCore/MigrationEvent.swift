/// Whether a step does a node's work or undoes it.
public enum StepKind: String, Hashable, Sendable, CaseIterable {
    case forward, rollback
    /// A preflight check run before the forward step (see Checks.swift): it changes nothing.
    case check
}

/// A fact about one migration. Payloads carry everything `evolve` needs, including any time involved.
public enum MigrationEvent: Hashable, Sendable {
    case migrationStarted(MigrationStarted)
    case stepLeased(StepLeased)
    case stepCompleted(StepCompleted)
    case stepFailed(StepFailed)
    case stepProgress(StepProgress)
    case approvalGranted(ApprovalDecision)
    case approvalRejected(ApprovalDecision)
    /// `lineStop`: the stop-the-line freeze that paused it ("" for any other pause); its end resumes it.
    case migrationPaused(reason: String, lineStop: String = "")
    /// Steps are handed out again; `rearmed` nodes (failed under `on_failure: pause`) get fresh attempts.
    case migrationResumed(rearmed: [NodeID])
    case migrationAborted(AbortReport)
    case migrationRolledBack
    case migrationSucceeded
    case migrationFailed(node: NodeID, reason: String)
    /// A node joined the queues of the services it transitions (see docs/state-machine.md, service leases).
    case serviceLeasesRequested(ServiceLeasesRequested)
    /// A node left those queues without being granted (its migration paused, aborted or moved on).
    case serviceLeasesWithdrawn(node: NodeID, reason: String)
    /// A node now holds all its services at once; its steps may be handed out.
    case serviceLeasesGranted(ServiceLeasesGranted)
    /// A node gave its services back: it settled, or an operator forced the release.
    case serviceLeasesReleased(ServiceLeasesReleased)
    /// An exposure node's step set stage number `stage` (1-based); its bake runs until `bakeUntil`.
    case exposureStageReached(ExposureStageReached)
    /// A metric sample for the current bake of an exposure node.
    case metricSampled(MetricSampled)
    /// The decision record at the end of a bake: the outcome, what was done, and the evidence.
    case analysisEvaluated(AnalysisRecord)
    /// A person resumed a migration its analysis had paused: the node advances (an override).
    case analysisOverridden(node: NodeID, stage: UInt32)
    /// An aborting migration undoes a node that holds what the head of its rollback queue waits for
    /// first (see `RollbackReordered`).
    case rollbackReordered(RollbackReordered)
    /// An admin overrode a freeze or a bake for one node, with a justification (break-glass).
    case breakGlass(BreakGlass)
    /// A preflight check ran (or did not run to a result) under a check lease.
    case checkReported(CheckReported)

    /// A stable name for the event type (also its name on the wire and in exports).
    public var typeName: String {
        switch self {
        case .migrationStarted: "migration_started"
        case .stepLeased: "step_leased"
        case .stepCompleted: "step_completed"
        case .stepFailed: "step_failed"
        case .stepProgress: "step_progress"
        case .approvalGranted: "approval_granted"
        case .approvalRejected: "approval_rejected"
        case .migrationPaused: "migration_paused"
        case .migrationResumed: "migration_resumed"
        case .migrationAborted: "migration_aborted"
        case .migrationRolledBack: "migration_rolled_back"
        case .migrationSucceeded: "migration_succeeded"
        case .migrationFailed: "migration_failed"
        case .serviceLeasesRequested: "service_leases_requested"
        case .serviceLeasesWithdrawn: "service_leases_withdrawn"
        case .serviceLeasesGranted: "service_leases_granted"
        case .serviceLeasesReleased: "service_leases_released"
        case .exposureStageReached: "exposure_stage_reached"
        case .metricSampled: "metric_sampled"
        case .analysisEvaluated: "analysis_evaluated"
        case .analysisOverridden: "analysis_overridden"
        case .rollbackReordered: "rollback_reordered"
        case .breakGlass: "break_glass"
        case .checkReported: "check_reported"
        }
    }
}

/// A migration began running `plan`.
public struct MigrationStarted: Hashable, Sendable {
    public var migration: MigrationID
    public var plan: PlanSnapshot
    public var startedAt: Instant
    /// Who started it; they may not approve its gates.
    public var startedBy: String
    /// The offsets of each time zone the plan's windows name, sorted by zone, as the coordinator's
    /// time-zone database gave them at the start: what windows are read with, on any machine.
    public var zones: [ZoneOffsets]
    public init(migration: MigrationID, plan: PlanSnapshot, startedAt: Instant, startedBy: String = "", zones: [ZoneOffsets] = []) {
        self.migration = migration
        self.plan = plan
        self.startedAt = startedAt
        self.startedBy = startedBy
        self.zones = zones
    }
}

/// An agent was granted a step lease for a node.
public struct StepLeased: Hashable, Sendable {
    public var node: NodeID
    public var attempt: UInt32
    public var token: FencingToken
    public var agent: String
    public var grantedAt: Instant
    public var expiresAt: Instant
    public var kind: StepKind
    /// The principal the lease was granted to (authenticated); its reports only are taken. Empty when
    /// none was recorded (histories before it, callers without a principal).
    public var holder: String
    /// For a check lease: the check to run ("" otherwise).
    public var check: String
    /// The agent's name for the poll the lease answered ("" when it gave none): a poll sent again with
    /// the same name, after its answer was lost, gets this lease again.
    public var pollID: String
    public init(node: NodeID, attempt: UInt32, token: FencingToken, agent: String, grantedAt: Instant, expiresAt: Instant, kind: StepKind = .forward,
                holder: String = "", check: String = "", pollID: String = "") {
        self.node = node
        self.attempt = attempt
        self.token = token
        self.agent = agent
        self.grantedAt = grantedAt
        self.expiresAt = expiresAt
        self.kind = kind
        self.holder = holder
        self.check = check
        self.pollID = pollID
    }
}

extension StepFailed {
    /// An attempt that ended without counting against the retry policy (a lost agent, a step given back
    /// unstarted): retryable, offered again at `now`, the next lease repeating its attempt number.
    init(uncountedOf node: NodeID, nodeState: NodeState, lease: StepLease, now: Instant, reason: String,
         agentLost: Bool = false, returned: Bool = false, stopped: Bool = false) {
        self.init(node: node, attempt: nodeState.attempts(of: lease.kind), token: lease.token, reason: reason, retryable: true,
                  kind: lease.kind, retryAt: now, leaseExpired: agentLost, agentLost: agentLost, returned: returned, stopped: stopped)
    }
}

/// The lease holder reported the step done.
public struct StepCompleted: Hashable, Sendable {
    public var node: NodeID
    public var attempt: UInt32
    public var token: FencingToken
    public var kind: StepKind
    public init(node: NodeID, attempt: UInt32, token: FencingToken, kind: StepKind = .forward) {
        self.node = node
        self.attempt = attempt
        self.token = token
        self.kind = kind
    }
}

/// The lease holder reported the step failed.
public struct StepFailed: Hashable, Sendable {
    public var node: NodeID
    public var attempt: UInt32
    public var token: FencingToken
    public var reason: String
    public var retryable: Bool
    public var kind: StepKind
    /// When the next attempt may start; nil when there will be none.
    public var retryAt: Instant?
    /// The coordinator ended the attempt because its lease was not renewed in time.
    public var leaseExpired: Bool
    /// The coordinator ended the attempt because it ran past its node's `start_to_close`.
    public var startToCloseExceeded: Bool
    /// The lease expired and the node's lost-agent budget had room: the attempt is not counted against
    /// the retry policy (the next lease repeats its number) and the step is offered again at once.
    public var agentLost: Bool
    /// The holder gave the step back unstarted (its poll's client went away): the attempt is not counted.
    public var returned: Bool
    /// The holder stopped the step because its migration was paused under `on_pause: stop`: the attempt
    /// is not counted, and the node keeps its services (it may be halfway through changing them).
    public var stopped: Bool
    public init(node: NodeID, attempt: UInt32, token: FencingToken, reason: String, retryable: Bool, kind: StepKind = .forward,
                retryAt: Instant? = nil, leaseExpired: Bool = false, startToCloseExceeded: Bool = false, agentLost: Bool = false,
                returned: Bool = false, stopped: Bool = false) {
        self.node = node
        self.attempt = attempt
        self.token = token
        self.reason = reason
        self.retryable = retryable
        self.kind = kind
        self.retryAt = retryAt
        self.leaseExpired = leaseExpired
        self.startToCloseExceeded = startToCloseExceeded
        self.agentLost = agentLost
        self.returned = returned
        self.stopped = stopped
    }
}

/// The lease holder reported how far a step has come.
public struct StepProgress: Hashable, Sendable {
    public var node: NodeID
    public var token: FencingToken
    /// 0...100.
    public var percent: UInt8
    public var message: String
    public init(node: NodeID, token: FencingToken, percent: UInt8, message: String) {
        self.node = node
        self.token = token
        self.percent = percent
        self.message = message
    }
}

/// An approver's decision on a node's gate, with their comment.
public struct ApprovalDecision: Hashable, Sendable {
    public var node: NodeID
    public var approver: String
    public var comment: String
    public var at: Instant
    public init(node: NodeID, approver: String, comment: String, at: Instant) {
        self.node = node
        self.approver = approver
        self.comment = comment
        self.at = at
    }
}

/// What an abort will undo, in what order, and what it cannot: recorded as evidence when it begins.
public struct AbortReport: Hashable, Sendable {
    public var reason: String
    /// Rollback steps to run, in this order (reverse completion order).
    public var rollback: [NodeID]
    /// Completed nodes without a rollback action.
    public var nothingToUndo: [NodeID]
    /// An irreversible node and everything completed before it.
    public var cannotUndo: [NodeID]
    /// Nodes that never started.
    public var skipped: [NodeID]
    /// The irreversible node that stops the rollback.
    public var blockedBy: NodeID?
    /// Nodes whose running step the abort abandoned.
    public var abandoned: [NodeID]
    /// Nodes whose attempts failed and that did not complete.
    public var failed: [NodeID]
    /// What set the abort off (nil in histories recorded before triggers were).
    public var trigger: AbortTrigger?

    public init(reason: String, rollback: [NodeID] = [], nothingToUndo: [NodeID] = [], cannotUndo: [NodeID] = [],
                skipped: [NodeID] = [], blockedBy: NodeID? = nil, abandoned: [NodeID] = [], failed: [NodeID] = [],
                trigger: AbortTrigger? = nil) {
        self.reason = reason
        self.rollback = rollback
        self.nothingToUndo = nothingToUndo
        self.cannotUndo = cannotUndo
        self.skipped = skipped
        self.blockedBy = blockedBy
        self.abandoned = abandoned
        self.failed = failed
        self.trigger = trigger
    }
}

/// What set an abort (and so a rollback) off.
public enum AbortTrigger: String, Hashable, Sendable, CaseIterable {
    /// A person asked for it.
    case `operator`
    /// A node's analysis failed at the end of a bake.
    case metric
    /// A node ran out of attempts.
    case retriesExhausted = "retries_exhausted"
    /// A node's or the migration's deadline passed.
    case deadline
    /// A preflight check whose plan says `on_fail: rollback` failed.
    case check
}

/// An exposure node's step set a stage.
public struct ExposureStageReached: Hashable, Sendable {
    public var node: NodeID
    /// Stages reached, counting this one (1 = the first).
    public var stage: UInt32
    public var bakeUntil: Instant
    public init(node: NodeID, stage: UInt32, bakeUntil: Instant) {
        self.node = node
        self.stage = stage
        self.bakeUntil = bakeUntil
    }
}

/// A metric sample, recorded for the bake of `stage`.
public struct MetricSampled: Hashable, Sendable {
    public var node: NodeID
    public var stage: UInt32
    public var sample: MetricSample
    public init(node: NodeID, stage: UInt32, sample: MetricSample) {
        self.node = node
        self.stage = stage
        self.sample = sample
    }
}

/// What an analysis led to.
public enum AnalysisDecision: String, Hashable, Sendable, CaseIterable {
    /// On to the next stage (or done after the last).
    case advance
    /// On, with the marginal result recorded as a warning.
    case advanceWithWarning = "advance_with_warning"
    /// The migration pauses for a person to decide (inconclusive, or marginal where the plan says so).
    case pause
    /// The migration aborts and rolls back (`triggered_by: metric`).
    case rollback
}

/// The decision record at the end of a bake: everything a reviewer needs to see why.
public struct AnalysisRecord: Hashable, Sendable {
    public var node: NodeID
    /// The stage that was judged (1-based).
    public var stage: UInt32
    public var outcome: AnalysisOutcome
    public var decision: AnalysisDecision
    /// Per metric: the samples' summary and the thresholds (the plan's, as it was run).
    public var evidence: [MetricEvidence]
    /// The content hash of the plan version the thresholds come from.
    public var planContentHash: String
    public init(node: NodeID, stage: UInt32, outcome: AnalysisOutcome, decision: AnalysisDecision, evidence: [MetricEvidence], planContentHash: String) {
        self.node = node
        self.stage = stage
        self.outcome = outcome
        self.decision = decision
        self.evidence = evidence
        self.planContentHash = planContentHash
    }
}

/// A node asks for the leases of all the services it transitions, for a forward or a rollback step.
public struct ServiceLeasesRequested: Hashable, Sendable {
    public var node: NodeID
    /// In the order the plan lists them.
    public var services: [String]
    public var kind: StepKind
    public init(node: NodeID, services: [String], kind: StepKind) {
        self.node = node
        self.services = services
        self.kind = kind
    }
}

/// The coordinator granted a node the leases of all its services at once.
public struct ServiceLeasesGranted: Hashable, Sendable {
    public var node: NodeID
    public var services: [String]
    public var at: Instant
    public init(node: NodeID, services: [String], at: Instant) {
        self.node = node
        self.services = services
        self.at = at
    }
}

/// A node gave back the leases of its services.
public struct ServiceLeasesReleased: Hashable, Sendable {
    public var node: NodeID
    public var services: [String]
    public var reason: String
    /// An operator released them (the actor in the event's metadata), not the node settling.
    public var forced: Bool
    public init(node: NodeID, services: [String], reason: String, forced: Bool = false) {
        self.node = node
        self.services = services
        self.reason = reason
        self.forced = forced
    }
}

/// `node` moves to the head of the rollback queue, ahead of `aheadOf`: the head waited for `services`,
/// which `node` holds and keeps until it is undone (possible only after forced releases). A node that
/// holds its services has not completed, so no node of the queue depends on it: undoing it first keeps
/// the rollback's dependency order.
public struct RollbackReordered: Hashable, Sendable {
    public var node: NodeID
    public var aheadOf: NodeID
    public var services: [String]
    public init(node: NodeID, aheadOf: NodeID, services: [String]) {
        self.node = node
        self.aheadOf = aheadOf
        self.services = services
    }
}

/// What a break-glass overrides for its node.
public enum BreakGlassScope: String, Hashable, Sendable, CaseIterable, Comparable {
    /// Its forward steps start under any freeze (until the migration settles).
    case freeze
    /// Its current bake ends now and the node advances, without its analysis.
    case bake
    /// Its forward steps start outside its change windows (until the migration settles).
    case window

    public static func < (lhs: BreakGlassScope, rhs: BreakGlassScope) -> Bool {
        allCases.firstIndex(of: lhs)! < allCases.firstIndex(of: rhs)!
    }
}

/// An admin's override of a freeze or a bake for one node.
public struct BreakGlass: Hashable, Sendable {
    public var node: NodeID
    public var scope: BreakGlassScope
    /// The admin (attested by the engine).
    public var by: String
    public var justification: String
    public var at: Instant
    public init(node: NodeID, scope: BreakGlassScope, by: String, justification: String, at: Instant) {
        self.node = node
        self.scope = scope
        self.by = by
        self.justification = justification
        self.at = at
    }
}

extension MigrationEvent {
    /// The node an event concerns, if any.
    public var reportNode: NodeID? {
        switch self {
        case .stepLeased(let e): e.node
        case .stepCompleted(let e): e.node
        case .stepFailed(let e): e.node
        case .stepProgress(let e): e.node
        case .approvalGranted(let e), .approvalRejected(let e): e.node
        case .migrationFailed(let node, _): node
        case .serviceLeasesRequested(let e): e.node
        case .serviceLeasesWithdrawn(let node, _): node
        case .serviceLeasesGranted(let e): e.node
        case .serviceLeasesReleased(let e): e.node
        case .exposureStageReached(let e): e.node
        case .metricSampled(let e): e.node
        case .analysisEvaluated(let e): e.node
        case .analysisOverridden(let node, _): node
        case .rollbackReordered(let e): e.node
        case .breakGlass(let e): e.node
        case .checkReported(let e): e.node
        case .migrationStarted, .migrationPaused, .migrationResumed, .migrationAborted, .migrationRolledBack, .migrationSucceeded: nil
        }
    }
}
