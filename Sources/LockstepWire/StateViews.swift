import LockstepCore

// How the state reads on the wire: one mapping from the core's types to the API's messages, used by
// the live API (GetMigration, ListMigrations, ListPlans, ListServiceLeases), by the state at any point
// (GetStateAt) and by the CLI reading a data directory, so each part reads the same everywhere.

extension Lockstep_V1_MigrationStatus {
    public init(_ status: MigrationStatus) {
        switch status {
        case .running: self = .running
        case .paused: self = .paused
        case .aborting: self = .aborting
        case .succeeded: self = .succeeded
        case .failed: self = .failed
        case .rolledBack: self = .rolledBack
        }
    }
}

extension Lockstep_V1_MigrationStatus {
    /// As a person reads it: "running", "rolled_back", ... ("unknown" for a status this build does not know).
    public var name: String { MigrationStatus(self)?.rawValue ?? "unknown" }
}

extension MigrationStatus {
    /// The status a message names; nil for one this build does not know (unspecified or newer).
    public init?(_ status: Lockstep_V1_MigrationStatus) {
        switch status {
        case .running: self = .running
        case .paused: self = .paused
        case .aborting: self = .aborting
        case .succeeded: self = .succeeded
        case .failed: self = .failed
        case .rolledBack: self = .rolledBack
        case .unspecified, .UNRECOGNIZED: return nil
        }
    }
}

extension Lockstep_V1_NodeStatus {
    public init(_ status: NodeDisplayStatus) {
        switch status {
        case .pending: self = .pending
        case .ready: self = .ready
        case .waitingForServices: self = .waitingForServices
        case .awaitingApproval: self = .awaitingApproval
        case .awaitingDecision: self = .awaitingDecision
        case .rejected: self = .rejected
        case .paused: self = .paused
        case .running: self = .running
        case .baking: self = .baking
        case .succeeded: self = .succeeded
        case .failed: self = .failed
        case .rollingBack: self = .rollingBack
        case .rolledBack: self = .rolledBack
        case .skipped: self = .skipped
        case .frozen: self = .frozen
        case .waitingForWindow: self = .waitingForWindow
        case .checking: self = .checking
        case .checkFailed: self = .checkFailed
        case .unknown: self = .unspecified
        }
    }
}

extension Lockstep_V1_NodeStatus {
    /// As a person reads it: "waiting_for_services", "succeeded", ... ("unknown" for one this build does not know).
    public var name: String { NodeDisplayStatus(self).rawValue }
}

extension NodeDisplayStatus {
    /// The status a message names; `.unknown` for one this build does not know (unspecified or newer).
    public init(_ status: Lockstep_V1_NodeStatus) {
        switch status {
        case .pending: self = .pending
        case .ready: self = .ready
        case .waitingForServices: self = .waitingForServices
        case .awaitingApproval: self = .awaitingApproval
        case .awaitingDecision: self = .awaitingDecision
        case .rejected: self = .rejected
        case .paused: self = .paused
        case .running: self = .running
        case .baking: self = .baking
        case .succeeded: self = .succeeded
        case .failed: self = .failed
        case .rollingBack: self = .rollingBack
        case .rolledBack: self = .rolledBack
        case .skipped: self = .skipped
        case .frozen: self = .frozen
        case .waitingForWindow: self = .waitingForWindow
        case .checking: self = .checking
        case .checkFailed: self = .checkFailed
        case .unspecified, .UNRECOGNIZED: self = .unknown
        }
    }
}

extension Lockstep_V1_ServiceLeaseState {
    public init(_ status: ServiceLeaseStatus) {
        switch status {
        case .none: self = .none
        case .requested: self = .requested
        case .held: self = .held
        }
    }
}

extension Lockstep_V1_StepLeaseView {
    public init(_ lease: StepLease) {
        self.init()
        agentID = lease.agent
        fencingToken = lease.token.rawValue
        grantedAtMs = lease.grantedAt.millisecondsSinceEpoch
        expiresAtMs = lease.expiresAt.millisecondsSinceEpoch
        kind = Lockstep_V1_StepKind(lease.kind)
    }
}

extension Lockstep_V1_Migration {
    /// A migration as it stands in `state` (which says who holds the services its nodes wait for), and
    /// at `now` which of its nodes a freeze holds (none when nil: a view of the past).
    public init(_ migration: MigrationState, in state: LogState, at now: Instant? = nil) {
        self.init()
        migrationID = migration.id.rawValue
        plan = migration.plan.name
        planVersion = migration.plan.version
        planContentHash = migration.plan.contentHash
        status = Lockstep_V1_MigrationStatus(migration.status)
        statusReason = migration.statusReason ?? ""
        startedAtMs = migration.startedAt.millisecondsSinceEpoch
        startedBy = migration.startedBy
        version = migration.version
        nodes = zip(migration.plan.nodes, migration.nodes).map { spec, node in
            .with {
                $0.nodeID = node.id.rawValue
                $0.phase = spec.phase.rawValue
                $0.services = spec.services
                $0.needs = spec.needs.map(\.rawValue)
                $0.status = Lockstep_V1_NodeStatus(now.map { state.nodeDisplayStatus(node.id, of: migration, at: $0) } ?? migration.nodeDisplayStatus(node.id))
                if $0.status == .frozen || $0.status == .waitingForWindow, let now, let hold = state.forwardHold(node.id, of: migration, at: now) {
                    switch hold {
                    case .freeze(let freeze):
                        $0.frozenBy = freeze.id
                        $0.frozenUntilMs = freeze.until?.millisecondsSinceEpoch ?? 0
                    case .window(let wait):
                        $0.windowClosed = wait.windows
                        $0.windowOpensMs = wait.opensAt?.millisecondsSinceEpoch ?? 0
                    }
                }
                $0.breakGlass = node.breakGlass.map(\.rawValue)
                $0.checks = spec.checks.compactMap { check in
                    node.checks.first { $0.check == check.name }.map { result in
                        .with {
                            $0.check = result.check
                            $0.outcome = result.outcome.rawValue
                            $0.value = result.valueMicros.map(MetricSample.decimal) ?? ""
                            $0.evidence = result.evidence
                            $0.atMs = result.at.millisecondsSinceEpoch
                            $0.rule = check.ruleText
                            if result.outcome == .fail { $0.recheckAtMs = result.at.adding(milliseconds: check.recheckMillis).millisecondsSinceEpoch }
                            if result.outcome == .pass, let fresh = check.freshForMillis { $0.freshUntilMs = result.at.adding(milliseconds: fresh).millisecondsSinceEpoch }
                        }
                    }
                }
                $0.attempts = node.attempts
                $0.fencingToken = node.lastToken.rawValue
                if let lease = node.lease { $0.lease = Lockstep_V1_StepLeaseView(lease) }
                $0.lastFailure = node.lastFailure ?? ""
                $0.serviceLeases = Lockstep_V1_ServiceLeaseState(node.serviceLeases)
                $0.waitingFor = state.serviceWaits(migration: migration.id, node: node.id).map(\.description)
                $0.approvals = UInt32(clamping: node.approvals.count)
                $0.approvalsNeeded = spec.approval?.minimum ?? 0
                if let progress = node.progress {
                    $0.progressPercent = UInt32(progress.percent)
                    $0.progressMessage = progress.message
                }
                if spec.approval != nil { $0.approversFrom = migration.plan.approverGroups(for: spec) }
                $0.approvedBy = node.approvals.map(\.approver)
                if let stage = migration.currentStage(of: node.id) {
                    $0.stage = stage.name
                    if let percent = stage.percent { $0.stagePercent = percent }
                }
                $0.bakeUntilMs = node.exposure.bakeUntil?.millisecondsSinceEpoch ?? 0
                $0.bakeSamples = UInt32(clamping: node.exposure.samples.count)
            }
        }
    }
}

extension LogState {
    /// Applied plans by name, each with its versions oldest first.
    public var appliedPlanViews: [Lockstep_V1_AppliedPlan] {
        plansInOrder.map { entry in
            .with {
                $0.name = entry.name
                $0.versions = entry.versions.map { version in
                    .with {
                        $0.version = version.version
                        $0.contentHash = version.contentHash
                        $0.nodes = UInt32(clamping: version.nodes.count)
                    }
                }
            }
        }
    }

    /// Every held service by name, with its holder and the step running under it.
    public var heldServiceViews: [Lockstep_V1_ServiceLeaseView] {
        serviceLeases.holdersInOrder.map { service, holder in
            let migration = migrations[holder.migration]
            return .with {
                $0.service = service
                $0.migrationID = holder.migration.rawValue
                $0.nodeID = holder.node.rawValue
                $0.sinceMs = holder.since.millisecondsSinceEpoch
                $0.quarantined = migration?.status == .failed
                if let lease = migration?.node(holder.node)?.lease { $0.step = Lockstep_V1_StepLeaseView(lease) }
            }
        }
    }

    /// The requests waiting for services, first in line first.
    public var serviceQueueViews: [Lockstep_V1_ServiceLeaseRequestView] {
        serviceLeases.queue.map { request in
            .with {
                $0.migrationID = request.migration.rawValue
                $0.nodeID = request.node.rawValue
                $0.services = request.services
                $0.kind = Lockstep_V1_StepKind(request.kind)
                $0.sequence = request.sequence
            }
        }
    }
}

extension Lockstep_V1_StateAtResponse {
    /// The whole of `state`, whose digest is `digest` (hex; the engine computes it).
    public init(_ state: LogState, digest: String) {
        self.init()
        sequence = state.lastSequence
        self.digest = digest
        // Settled ones too when the fold kept them (a state-at replay keeps them).
        migrations = state.everyMigrationInOrder.map { Lockstep_V1_Migration($0, in: state) }
        plans = state.appliedPlanViews
        serviceLeases = state.heldServiceViews
        serviceQueue = state.serviceQueueViews
    }
}
