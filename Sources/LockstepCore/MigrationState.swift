/// Where a migration as a whole stands.
public enum MigrationStatus: String, Hashable, Sendable, CaseIterable {
    case running, paused, succeeded, failed, aborting, rolledBack = "rolled_back"

    /// A settled migration accepts no further commands.
    public var isSettled: Bool { self == .succeeded || self == .failed || self == .rolledBack }
}

/// Where one node stands, as stored. `ready`, `awaiting_approval` and `paused` are derived from these
/// and the plan (see `MigrationState.displayStatus`), so they can never disagree with the facts.
public enum NodeStatus: String, Hashable, Sendable, CaseIterable {
    case pending, running, succeeded, failed, rollingBack = "rolling_back", rolledBack = "rolled_back", skipped
    /// An exposure node between stages: its stage is set and it waits out the bake, then its analysis.
    case baking
}

/// A node's status as the API and the CLI show it (the `status` string of a migration's node): every
/// `NodeStatus`, and for a pending node what it waits for. Clients parse the string into this instead
/// of comparing literals (issue 15: the CLI compared with "completed", which no status ever is).
public enum NodeDisplayStatus: String, Hashable, Sendable, CaseIterable {
    case pending, running, succeeded, failed, rollingBack = "rolling_back", rolledBack = "rolled_back", skipped, baking
    case rejected, awaitingDecision = "awaiting_decision", awaitingApproval = "awaiting_approval", paused, ready
    case waitingForServices = "waiting_for_services", unknown
    /// Ready or waiting for its services, but a freeze holds its forward step (`LogState.nodeDisplayStatus`).
    case frozen
    /// Ready or waiting for its services, but its change windows are closed (`LogState.nodeDisplayStatus`).
    case waitingForWindow = "waiting_for_window"
    /// Ready, and an agent runs one of its preflight checks.
    case checking
    /// Ready, but a preflight check failed: it waits until the check runs again (`LogState.nodeDisplayStatus`).
    case checkFailed = "check_failed"

    public init(_ status: NodeStatus) {
        switch status {
        case .pending: self = .pending
        case .running: self = .running
        case .succeeded: self = .succeeded
        case .failed: self = .failed
        case .rollingBack: self = .rollingBack
        case .rolledBack: self = .rolledBack
        case .skipped: self = .skipped
        case .baking: self = .baking
        }
    }
}

/// How far a node's exposure has come.
public struct ExposureProgress: Hashable, Sendable {
    /// Stages reached so far (0 = none): the current stage is `stages[reached - 1]`.
    public var reached: UInt32
    /// The end of the current bake, while baking.
    public var bakeUntil: Instant?
    /// Samples recorded during the current bake, in order.
    public var samples: [MetricSample]
    /// Its analysis paused the migration: resuming advances it (an override, recorded).
    public var awaitingDecision: Bool

    public init(reached: UInt32 = 0, bakeUntil: Instant? = nil, samples: [MetricSample] = [], awaitingDecision: Bool = false) {
        self.reached = reached
        self.bakeUntil = bakeUntil
        self.samples = samples
        self.awaitingDecision = awaitingDecision
    }
}

/// The step lease a node's current attempt runs under.
public struct StepLease: Hashable, Sendable {
    public var token: FencingToken
    public var agent: String
    public var grantedAt: Instant
    public var expiresAt: Instant
    public var kind: StepKind
    /// The principal the lease was granted to ("" when none was recorded): reports from others are refused.
    public var holder: String
    /// For a check lease: the check it runs ("" otherwise).
    public var check: String
    /// The agent's name for the poll it answered ("" when none): `StepLeased.pollID`.
    public var pollID: String
    public init(token: FencingToken, agent: String, grantedAt: Instant, expiresAt: Instant, kind: StepKind = .forward, holder: String = "",
                check: String = "", pollID: String = "") {
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

/// Where a node stands with the leases of the services it transitions.
public enum ServiceLeaseStatus: Hashable, Sendable {
    /// Neither asked for nor held.
    case none
    /// In the queues of its services since global sequence `sequence` (first come, first served).
    case requested(kind: StepKind, sequence: UInt64)
    /// Holds all of them since `since`.
    case held(since: Instant)

    public var isHeld: Bool { if case .held = self { true } else { false } }
    public var isRequested: Bool { if case .requested = self { true } else { false } }
}

/// One approval or rejection of a node's gate.
public struct GateDecision: Hashable, Sendable {
    public var approver: String
    public var comment: String
    public var at: Instant
    public init(approver: String, comment: String, at: Instant) {
        self.approver = approver
        self.comment = comment
        self.at = at
    }
}

/// One node of a running migration.
public struct NodeState: Hashable, Sendable {
    public var id: NodeID
    public var status: NodeStatus
    /// Forward attempts started so far.
    public var attempts: UInt32
    /// Rollback attempts started so far.
    public var rollbackAttempts: UInt32
    /// The highest fencing token ever issued for this node (0 = none yet), forward or rollback.
    public var lastToken: FencingToken
    /// The live lease while a step runs.
    public var lease: StepLease?
    /// No new attempt before this instant (retry backoff).
    public var retryAt: Instant?
    /// Leases that expired without their attempt being counted (lost agents; `CoreLimits.agentsLostMax`).
    public var agentsLost: UInt32
    /// The node's claim on its services' transition leases.
    public var serviceLeases: ServiceLeaseStatus
    /// Its last step was stopped by a pause (`on_pause: stop`): it may be halfway through changing its
    /// services, so it keeps them until its next step.
    public var stopped = false
    /// The fields most nodes never set, behind one shared reference until one of them changes: a copy of
    /// a migration's nodes (a command folds its events into one to decide its bookkeeping) retains one
    /// thing per node for them, not seven.
    private var rare = RareNodeFields.Shared()

    /// Why the last attempt failed, if it did.
    public var lastFailure: String? {
        get { rare.fields.lastFailure }
        set { if newValue != rare.fields.lastFailure { rare.fields.lastFailure = newValue } }
    }
    /// Approvals of the node's gate, in the order given.
    public var approvals: [GateDecision] {
        get { rare.fields.approvals }
        _modify { yield &rare.fields.approvals }
    }
    /// The rejection that blocks the node, if any.
    public var rejection: GateDecision? {
        get { rare.fields.rejection }
        set { if newValue != rare.fields.rejection { rare.fields.rejection = newValue } }
    }
    /// The latest progress report of the live step.
    public var progress: StepProgress? {
        get { rare.fields.progress }
        set { if newValue != rare.fields.progress { rare.fields.progress = newValue } }
    }
    /// An exposure node's stages and bake.
    public var exposure: ExposureProgress {
        get { rare.fields.exposure }
        _modify { yield &rare.fields.exposure }
    }
    /// What admins overrode for this node (break-glass), sorted, each once.
    public var breakGlass: [BreakGlassScope] {
        get { rare.fields.breakGlass }
        _modify { yield &rare.fields.breakGlass }
    }
    /// The latest result of each of its checks, in the order they first reported.
    public var checks: [CheckResult] {
        get { rare.fields.checks }
        _modify { yield &rare.fields.checks }
    }

    public init(id: NodeID, status: NodeStatus = .pending, attempts: UInt32 = 0, rollbackAttempts: UInt32 = 0,
                lastToken: FencingToken = FencingToken(0), lease: StepLease? = nil, lastFailure: String? = nil,
                retryAt: Instant? = nil, approvals: [GateDecision] = [], rejection: GateDecision? = nil, progress: StepProgress? = nil,
                serviceLeases: ServiceLeaseStatus = .none, exposure: ExposureProgress = ExposureProgress(), agentsLost: UInt32 = 0) {
        self.id = id
        self.agentsLost = agentsLost
        self.status = status
        self.attempts = attempts
        self.rollbackAttempts = rollbackAttempts
        self.lastToken = lastToken
        self.lease = lease
        self.retryAt = retryAt
        self.serviceLeases = serviceLeases
        let fields = RareNodeFields(lastFailure: lastFailure, approvals: approvals, rejection: rejection, progress: progress, exposure: exposure)
        // A node that sets none of them shares the one empty box (a plan of 1,000 nodes starts 1,000 of them).
        if fields != RareNodeFields() { rare.fields = fields }
    }
}

/// `NodeState`'s rarely set fields, and the copy-on-write reference that holds them.
struct RareNodeFields: Hashable, Sendable {
    var lastFailure: String?
    var approvals: [GateDecision] = []
    var rejection: GateDecision?
    var progress: StepProgress?
    var exposure = ExposureProgress()
    var breakGlass: [BreakGlassScope] = []
    var checks: [CheckResult] = []

    /// Shared by every copy until one of them changes a field (then that one gets its own). Compared and
    /// hashed by the fields, so a node's equality is what it was with the fields in place.
    struct Shared: Hashable, Sendable {
        // Mutated only through `fields`' modify, which first makes it the sole reference: the usual
        // copy-on-write discipline, so no two threads ever write one box or read one being written.
        private final class Box: @unchecked Sendable {
            var fields: RareNodeFields
            init(_ fields: RareNodeFields) { self.fields = fields }
        }
        /// The box of a node that has set none of them (never written: every write first copies it).
        private static let none = Box(RareNodeFields())
        private var box = Shared.none

        var fields: RareNodeFields {
            get { box.fields }
            _modify {
                if !isKnownUniquelyReferenced(&box) { box = Box(box.fields) }
                yield &box.fields
            }
        }

        static func == (lhs: Shared, rhs: Shared) -> Bool { lhs.box === rhs.box || lhs.box.fields == rhs.box.fields }
        func hash(into hasher: inout Hasher) { box.fields.hash(into: &hasher) }
    }
}

extension NodeState {
    /// Attempts of `kind` started so far.
    public func attempts(of kind: StepKind) -> UInt32 { kind == .forward ? attempts : rollbackAttempts }
}

/// The state of one migration: a pure fold of its events (see `evolve`).
public struct MigrationState: Hashable, Sendable {
    public var id: MigrationID
    public var plan: PlanSnapshot
    public var status: MigrationStatus
    public var startedAt: Instant
    /// Who started the migration (may not approve its gates).
    public var startedBy: String
    /// Why the migration is paused, aborting, rolled back or failed.
    public var statusReason: String?
    /// Node states in plan order.
    public var nodes: NodeStates
    /// Nodes in the order they succeeded: rollback runs in the reverse of it.
    public var completionOrder: [NodeID]
    /// While aborting: the rollback steps still to run, next first.
    public var rollbackQueue: [NodeID]
    /// What the abort could not undo (an irreversible node and everything completed before it).
    public var cannotUndo: [NodeID]
    /// Events folded into this migration so far: the version of its stream.
    public var version: UInt64
    /// While paused by a stop-the-line freeze: its id ("" otherwise). The freeze's end resumes it.
    public var lineStop: String = ""
    /// The offsets of the time zones the plan's windows name, recorded at the start (see Windows.swift).
    public var zones: [ZoneOffsets] = []

    public init(id: MigrationID, plan: PlanSnapshot, status: MigrationStatus, startedAt: Instant, startedBy: String = "",
                statusReason: String?, nodes: [NodeState], completionOrder: [NodeID] = [], rollbackQueue: [NodeID] = [],
                cannotUndo: [NodeID] = [], version: UInt64) {
        self.id = id
        self.plan = plan
        self.status = status
        self.startedAt = startedAt
        self.startedBy = startedBy
        self.statusReason = statusReason
        self.nodes = NodeStates(nodes)
        self.completionOrder = completionOrder
        self.rollbackQueue = rollbackQueue
        self.cannotUndo = cannotUndo
        self.version = version
    }

    /// Index of node `id` in `nodes` (which follows plan order).
    ///
    /// The walks over `nodes` on the command path go by index and read fields in place: iterating them
    /// (`for node in nodes`, `map`, `compactMap`, `allSatisfy`) copies each `NodeState` out, with a
    /// retain for each of its reference-counted fields.
    /// A node's state sits at its spec's index in the plan, which the plan finds by id at once; searched
    /// in order only if that ever did not hold (never, in a state folded from a valid log).
    public func nodeIndex(_ id: NodeID) -> Int? {
        if let spec = plan.nodeIndex(id) {
            if nodes.indices.contains(spec), nodes[spec].id == id { return spec }
        } else if nodes.count == plan.nodes.count {
            return nil  // an id the plan does not have is not among nodes built from it either
        }
        return nodes.indices.first { nodes[$0].id == id }
    }

    /// `nodeIndex`, trying `hint` first (the index of its spec in the plan, where it always is).
    func nodeIndex(_ id: NodeID, hint: Int) -> Int? {
        if nodes.indices.contains(hint), nodes[hint].id == id { return hint }
        return nodeIndex(id)
    }

    /// The state of node `id`.
    public func node(_ id: NodeID) -> NodeState? { nodeIndex(id).map { nodes[$0] } }

    /// Whether everything node `id` needs has succeeded.
    public func needsSatisfied(_ id: NodeID) -> Bool {
        guard let spec = plan.node(id) else { return false }
        return spec.needs.allSatisfy { node($0)?.status == .succeeded }
    }

    /// Whether node `id`'s approval gate (if any) is satisfied: enough distinct approvals, no rejection.
    public func gateSatisfied(_ id: NodeID) -> Bool {
        guard let spec = plan.node(id), let state = node(id) else { return false }
        guard let gate = spec.approval else { return true }
        return state.rejection == nil && state.approvals.count >= Int(gate.minimum)
    }

    /// A node is ready when it is pending, its needs succeeded and its gate is satisfied.
    /// (Retry backoff is a matter of time: see `isReady(_:at:)`.)
    public func isReady(_ id: NodeID) -> Bool {
        node(id)?.status == .pending && needsSatisfied(id) && gateSatisfied(id)
    }

    /// Waiting for an agent to take its step: the migration runs, the node is ready at `now` and holds its
    /// services (what `timeouts.schedule_to_start` measures).
    public func isWaitingForAgent(_ id: NodeID, at now: Instant) -> Bool {
        status == .running && isReady(id, at: now) && (node(id)?.serviceLeases.isHeld ?? false) && node(id)?.lease == nil && checkBlock(id, at: now) == nil
    }

    /// Ready, and past any retry backoff at `now`.
    public func isReady(_ id: NodeID, at now: Instant) -> Bool {
        isReady(id) && (node(id)?.retryAt.map { $0 <= now } ?? true)
    }

    /// The stage an exposure node's next forward step sets (nil when it has none, or none is left).
    public func nextStage(of id: NodeID) -> ExposureStage? {
        guard let stages = plan.node(id)?.exposure?.stages, let reached = node(id)?.exposure.reached, Int(reached) < stages.count else { return nil }
        return stages[Int(reached)]
    }

    /// The stage an exposure node is at now: the last one set (nil before the first).
    public func currentStage(of id: NodeID) -> ExposureStage? {
        guard let stages = plan.node(id)?.exposure?.stages, let reached = node(id)?.exposure.reached, reached > 0 else { return nil }
        return stages[min(Int(reached), stages.count) - 1]
    }

    /// The earliest end of a bake, for the engine's timer (running migrations only).
    public var nextBakeEnd: Instant? {
        guard status == .running else { return nil }
        var earliest: Instant?
        for index in nodes.indices where nodes[index].status == .baking && !nodes[index].exposure.awaitingDecision {
            guard let until = nodes[index].exposure.bakeUntil else { continue }
            earliest = min(earliest ?? until, until)
        }
        return earliest
    }

    /// Whether node `id` has not started transitioning its services (pending, no attempt, no stage, no
    /// step running): it may give them back to a freeze and ask again later without harm.
    public func yieldsToFreeze(_ id: NodeID) -> Bool {
        guard let node = node(id) else { return false }
        return node.status == .pending && node.lease == nil && node.attempts == 0 && node.exposure.reached == 0 && node.retryAt == nil && !node.stopped
    }

    /// Ready nodes, in plan order.
    public var readyNodes: [NodeID] { nodes.map(\.id).filter(isReady) }

    /// The node's status as people see it: the stored one, `rejected` for a node whose gate was
    /// rejected, `awaiting_decision` for a bake whose analysis waits for a person, or `ready`,
    /// `awaiting_approval`, `waiting_for_services` (its service leases are not granted yet) or `paused`
    /// derived for a pending node whose needs have succeeded.
    public func nodeDisplayStatus(_ id: NodeID) -> NodeDisplayStatus {
        guard let state = node(id) else { return .unknown }
        if state.rejection != nil && state.status == .pending { return .rejected }
        if state.status == .baking && state.exposure.awaitingDecision { return .awaitingDecision }
        guard state.status == .pending, needsSatisfied(id), status == .running || status == .paused else { return NodeDisplayStatus(state.status) }
        if !gateSatisfied(id) { return .awaitingApproval }
        if status == .paused { return .paused }
        if state.lease?.kind == .check { return .checking }
        return state.serviceLeases.isHeld ? .ready : .waitingForServices
    }
}
