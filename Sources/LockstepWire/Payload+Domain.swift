import LockstepCore

extension Lockstep_V1_EventPayload {
    /// The wire payload of a domain event.
    public init(_ event: MigrationEvent) {
        self.init()
        switch event {
        case .migrationStarted(let started):
            migrationStarted = .with {
                $0.migrationID = started.migration.rawValue
                $0.plan = Lockstep_V1_PlanSnapshot(started.plan)
                $0.startedAtMs = started.startedAt.millisecondsSinceEpoch
            }
        case .stepLeased(let leased):
            stepLeased = .with {
                $0.nodeID = leased.node.rawValue
                $0.attempt = leased.attempt
                $0.fencingToken = leased.token.rawValue
                $0.agentID = leased.agent
                $0.grantedAtMs = leased.grantedAt.millisecondsSinceEpoch
                $0.expiresAtMs = leased.expiresAt.millisecondsSinceEpoch
            }
        case .stepCompleted(let completed):
            stepCompleted = .with {
                $0.nodeID = completed.node.rawValue
                $0.attempt = completed.attempt
                $0.fencingToken = completed.token.rawValue
            }
        case .stepFailed(let failed):
            stepFailed = .with {
                $0.nodeID = failed.node.rawValue
                $0.attempt = failed.attempt
                $0.fencingToken = failed.token.rawValue
                $0.reason = failed.reason
                $0.retryable = failed.retryable
            }
        case .migrationPaused(let reason):
            migrationPaused = .with { $0.reason = reason }
        case .migrationResumed:
            migrationResumed = .init()
        case .migrationAborted(let reason):
            migrationAborted = .with { $0.reason = reason }
        case .migrationSucceeded:
            migrationSucceeded = .init()
        case .migrationFailed(let node, let reason):
            migrationFailed = .with {
                $0.nodeID = node.rawValue
                $0.reason = reason
            }
        }
    }
}

extension MigrationEvent {
    /// The domain event a wire payload describes.
    init(_ kind: Lockstep_V1_EventPayload.OneOf_Kind) throws(RecordDecodingError) {
        switch kind {
        case .migrationStarted(let started):
            self = .migrationStarted(MigrationStarted(
                migration: MigrationID(started.migrationID), plan: try PlanSnapshot(started.plan),
                startedAt: Instant(millisecondsSinceEpoch: started.startedAtMs)))
        case .stepLeased(let leased):
            self = .stepLeased(StepLeased(
                node: NodeID(leased.nodeID), attempt: leased.attempt, token: FencingToken(leased.fencingToken),
                agent: leased.agentID, grantedAt: Instant(millisecondsSinceEpoch: leased.grantedAtMs),
                expiresAt: Instant(millisecondsSinceEpoch: leased.expiresAtMs)))
        case .stepCompleted(let completed):
            self = .stepCompleted(StepCompleted(
                node: NodeID(completed.nodeID), attempt: completed.attempt, token: FencingToken(completed.fencingToken)))
        case .stepFailed(let failed):
            self = .stepFailed(StepFailed(
                node: NodeID(failed.nodeID), attempt: failed.attempt, token: FencingToken(failed.fencingToken),
                reason: failed.reason, retryable: failed.retryable))
        case .migrationPaused(let paused):
            self = .migrationPaused(reason: paused.reason)
        case .migrationResumed:
            self = .migrationResumed
        case .migrationAborted(let aborted):
            self = .migrationAborted(reason: aborted.reason)
        case .migrationSucceeded:
            self = .migrationSucceeded
        case .migrationFailed(let failed):
            self = .migrationFailed(node: NodeID(failed.nodeID), reason: failed.reason)
        }
    }
}

extension Lockstep_V1_PlanSnapshot {
    public init(_ plan: PlanSnapshot) {
        self.init()
        name = plan.name
        version = plan.version
        contentHash = plan.contentHash
        nodes = plan.nodes.map { node in
            .with {
                $0.id = node.id.rawValue
                $0.services = node.services
                $0.phase = Lockstep_V1_Phase(node.phase)
                $0.action = node.action
                $0.needs = node.needs.map(\.rawValue)
                $0.maxAttempts = node.maxAttempts
            }
        }
    }
}

extension PlanSnapshot {
    init(_ wire: Lockstep_V1_PlanSnapshot) throws(RecordDecodingError) {
        var nodes: [NodeSpec] = []
        for node in wire.nodes {
            guard let phase = Phase(node.phase) else { throw .invalidField("phase of node \(node.id)") }
            nodes.append(NodeSpec(
                id: NodeID(node.id), services: node.services, phase: phase, action: node.action,
                needs: node.needs.map(NodeID.init), maxAttempts: node.maxAttempts))
        }
        self.init(name: wire.name, version: wire.version, contentHash: wire.contentHash, nodes: nodes)
    }
}

extension Lockstep_V1_Phase {
    public init(_ phase: Phase) {
        switch phase {
        case .expand: self = .expand
        case .dualWrite: self = .dualWrite
        case .backfill: self = .backfill
        case .verify: self = .verify
        case .shadow: self = .shadow
        case .live: self = .live
        case .rampdown: self = .rampdown
        case .contract: self = .contract
        case .cleanup: self = .cleanup
        case .custom: self = .custom
        }
    }
}

extension Phase {
    /// The domain phase of a wire phase; nil for unspecified or unknown values.
    public init?(_ wire: Lockstep_V1_Phase) {
        switch wire {
        case .expand: self = .expand
        case .dualWrite: self = .dualWrite
        case .backfill: self = .backfill
        case .verify: self = .verify
        case .shadow: self = .shadow
        case .live: self = .live
        case .rampdown: self = .rampdown
        case .contract: self = .contract
        case .cleanup: self = .cleanup
        case .custom: self = .custom
        case .unspecified, .UNRECOGNIZED: return nil
        }
    }
}

extension Lockstep_V1_TriggeredBy {
    public init(_ triggeredBy: TriggeredBy) {
        switch triggeredBy {
        case .user: self = .user
        case .coordinator: self = .coordinator
        case .metric: self = .metric
        case .agent: self = .agent
        case .deadline: self = .deadline
        case .internalError: self = .internalError
        }
    }
}

extension TriggeredBy {
    /// The domain value of a wire value; nil for unspecified or unknown values.
    public init?(_ wire: Lockstep_V1_TriggeredBy) {
        switch wire {
        case .user: self = .user
        case .coordinator: self = .coordinator
        case .metric: self = .metric
        case .agent: self = .agent
        case .deadline: self = .deadline
        case .internalError: self = .internalError
        case .unspecified, .UNRECOGNIZED: return nil
        }
    }
}
