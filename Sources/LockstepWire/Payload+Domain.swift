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
                $0.startedBy = started.startedBy
            }
        case .stepLeased(let leased):
            stepLeased = .with {
                $0.nodeID = leased.node.rawValue
                $0.attempt = leased.attempt
                $0.fencingToken = leased.token.rawValue
                $0.agentID = leased.agent
                $0.grantedAtMs = leased.grantedAt.millisecondsSinceEpoch
                $0.expiresAtMs = leased.expiresAt.millisecondsSinceEpoch
                $0.kind = Lockstep_V1_StepKind(leased.kind)
            }
        case .stepCompleted(let completed):
            stepCompleted = .with {
                $0.nodeID = completed.node.rawValue
                $0.attempt = completed.attempt
                $0.fencingToken = completed.token.rawValue
                $0.kind = Lockstep_V1_StepKind(completed.kind)
            }
        case .stepFailed(let failed):
            stepFailed = .with {
                $0.nodeID = failed.node.rawValue
                $0.attempt = failed.attempt
                $0.fencingToken = failed.token.rawValue
                $0.reason = failed.reason
                $0.retryable = failed.retryable
                $0.kind = Lockstep_V1_StepKind(failed.kind)
                $0.retryAtMs = failed.retryAt?.millisecondsSinceEpoch ?? 0
                $0.leaseExpired = failed.leaseExpired
            }
        case .stepProgress(let progress):
            stepProgress = .with {
                $0.nodeID = progress.node.rawValue
                $0.fencingToken = progress.token.rawValue
                $0.percent = UInt32(progress.percent)
                $0.message = progress.message
            }
        case .approvalGranted(let decision):
            approvalGranted = .with {
                $0.nodeID = decision.node.rawValue
                $0.approver = decision.approver
                $0.comment = decision.comment
                $0.atMs = decision.at.millisecondsSinceEpoch
            }
        case .approvalRejected(let decision):
            approvalRejected = .with {
                $0.nodeID = decision.node.rawValue
                $0.approver = decision.approver
                $0.comment = decision.comment
                $0.atMs = decision.at.millisecondsSinceEpoch
            }
        case .migrationPaused(let reason):
            migrationPaused = .with { $0.reason = reason }
        case .migrationResumed(let rearmed):
            migrationResumed = .with { $0.rearmed = rearmed.map(\.rawValue) }
        case .migrationAborted(let report):
            migrationAborted = .with {
                $0.reason = report.reason
                $0.rollback = report.rollback.map(\.rawValue)
                $0.nothingToUndo = report.nothingToUndo.map(\.rawValue)
                $0.cannotUndo = report.cannotUndo.map(\.rawValue)
                $0.skipped = report.skipped.map(\.rawValue)
                $0.blockedBy = report.blockedBy?.rawValue ?? ""
                $0.abandoned = report.abandoned.map(\.rawValue)
                $0.failed = report.failed.map(\.rawValue)
            }
        case .migrationRolledBack:
            migrationRolledBack = .init()
        case .migrationSucceeded:
            migrationSucceeded = .init()
        case .migrationFailed(let node, let reason):
            migrationFailed = .with {
                $0.nodeID = node.rawValue
                $0.reason = reason
            }
        case .serviceLeasesRequested(let requested):
            serviceLeasesRequested = .with {
                $0.nodeID = requested.node.rawValue
                $0.services = requested.services
                $0.kind = Lockstep_V1_StepKind(requested.kind)
            }
        case .serviceLeasesWithdrawn(let node, let reason):
            serviceLeasesWithdrawn = .with {
                $0.nodeID = node.rawValue
                $0.reason = reason
            }
        case .serviceLeasesGranted(let granted):
            serviceLeasesGranted = .with {
                $0.nodeID = granted.node.rawValue
                $0.services = granted.services
                $0.atMs = granted.at.millisecondsSinceEpoch
            }
        case .serviceLeasesReleased(let released):
            serviceLeasesReleased = .with {
                $0.nodeID = released.node.rawValue
                $0.services = released.services
                $0.reason = released.reason
                $0.forced = released.forced
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
                startedAt: Instant(millisecondsSinceEpoch: started.startedAtMs), startedBy: started.startedBy))
        case .stepLeased(let leased):
            self = .stepLeased(StepLeased(
                node: NodeID(leased.nodeID), attempt: leased.attempt, token: FencingToken(leased.fencingToken),
                agent: leased.agentID, grantedAt: Instant(millisecondsSinceEpoch: leased.grantedAtMs),
                expiresAt: Instant(millisecondsSinceEpoch: leased.expiresAtMs), kind: try StepKind(leased.kind)))
        case .stepCompleted(let completed):
            self = .stepCompleted(StepCompleted(
                node: NodeID(completed.nodeID), attempt: completed.attempt, token: FencingToken(completed.fencingToken),
                kind: try StepKind(completed.kind)))
        case .stepFailed(let failed):
            self = .stepFailed(StepFailed(
                node: NodeID(failed.nodeID), attempt: failed.attempt, token: FencingToken(failed.fencingToken),
                reason: failed.reason, retryable: failed.retryable, kind: try StepKind(failed.kind),
                retryAt: failed.retryAtMs == 0 ? nil : Instant(millisecondsSinceEpoch: failed.retryAtMs), leaseExpired: failed.leaseExpired))
        case .stepProgress(let progress):
            guard progress.percent <= 100 else { throw .invalidField("progress percent \(progress.percent)") }
            self = .stepProgress(StepProgress(node: NodeID(progress.nodeID), token: FencingToken(progress.fencingToken),
                                              percent: UInt8(progress.percent), message: progress.message))
        case .approvalGranted(let decision):
            self = .approvalGranted(ApprovalDecision(node: NodeID(decision.nodeID), approver: decision.approver,
                                                     comment: decision.comment, at: Instant(millisecondsSinceEpoch: decision.atMs)))
        case .approvalRejected(let decision):
            self = .approvalRejected(ApprovalDecision(node: NodeID(decision.nodeID), approver: decision.approver,
                                                      comment: decision.comment, at: Instant(millisecondsSinceEpoch: decision.atMs)))
        case .migrationRolledBack:
            self = .migrationRolledBack
        case .planApplied:
            throw .payloadDoesNotFitStream(stream: "a migration stream", payload: "plan_applied")
        case .migrationPaused(let paused):
            self = .migrationPaused(reason: paused.reason)
        case .migrationResumed(let resumed):
            self = .migrationResumed(rearmed: resumed.rearmed.map(NodeID.init))
        case .migrationAborted(let aborted):
            self = .migrationAborted(AbortReport(
                reason: aborted.reason, rollback: aborted.rollback.map(NodeID.init), nothingToUndo: aborted.nothingToUndo.map(NodeID.init),
                cannotUndo: aborted.cannotUndo.map(NodeID.init), skipped: aborted.skipped.map(NodeID.init),
                blockedBy: aborted.blockedBy.isEmpty ? nil : NodeID(aborted.blockedBy), abandoned: aborted.abandoned.map(NodeID.init),
                failed: aborted.failed.map(NodeID.init)))
        case .migrationSucceeded:
            self = .migrationSucceeded
        case .migrationFailed(let failed):
            self = .migrationFailed(node: NodeID(failed.nodeID), reason: failed.reason)
        case .serviceLeasesRequested(let requested):
            self = .serviceLeasesRequested(ServiceLeasesRequested(
                node: NodeID(requested.nodeID), services: requested.services, kind: try StepKind(requested.kind)))
        case .serviceLeasesWithdrawn(let withdrawn):
            self = .serviceLeasesWithdrawn(node: NodeID(withdrawn.nodeID), reason: withdrawn.reason)
        case .serviceLeasesGranted(let granted):
            self = .serviceLeasesGranted(ServiceLeasesGranted(
                node: NodeID(granted.nodeID), services: granted.services, at: Instant(millisecondsSinceEpoch: granted.atMs)))
        case .serviceLeasesReleased(let released):
            self = .serviceLeasesReleased(ServiceLeasesReleased(
                node: NodeID(released.nodeID), services: released.services, reason: released.reason, forced: released.forced))
        }
    }
}

extension Lockstep_V1_PlanSnapshot {
    public init(_ plan: PlanSnapshot) {
        self.init()
        name = plan.name
        version = plan.version
        contentHash = plan.contentHash
        description_p = plan.description
        owners = plan.owners
        services = plan.services.map { service in .with { $0.name = service.name; $0.owners = service.owners } }
        deadlineMs = plan.deadlineMillis ?? 0
        nodes = plan.nodes.map { node in
            .with {
                $0.id = node.id.rawValue
                $0.services = node.services
                $0.phase = Lockstep_V1_Phase(node.phase)
                $0.action = node.action
                $0.paramsJson = node.paramsJSON
                $0.needs = node.needs.map(\.rawValue)
                $0.maxAttempts = node.retry.maxAttempts
                $0.backoffInitialMs = node.retry.backoffInitialMillis
                $0.backoffMaxMs = node.retry.backoffMaxMillis
                $0.backoffMultiplier = node.retry.backoffMultiplier
                $0.scheduleToStartMs = node.timeouts.scheduleToStartMillis ?? 0
                $0.startToCloseMs = node.timeouts.startToCloseMillis ?? 0
                $0.heartbeatMs = node.timeouts.heartbeatMillis ?? 0
                $0.rollbackAction = node.rollback?.action ?? ""
                $0.rollbackParamsJson = node.rollback?.paramsJSON ?? ""
                $0.approvalMinimum = node.approval?.minimum ?? 0
                $0.approvalFrom = node.approval?.from ?? []
                $0.deadlineMs = node.deadlineMillis ?? 0
                $0.irreversible = node.irreversible
                $0.onFailure = node.onFailure == .pause ? .pause : .rollback
            }
        }
    }
}

extension PlanSnapshot {
    init(_ wire: Lockstep_V1_PlanSnapshot) throws(RecordDecodingError) {
        func positive(_ millis: Int64) -> Int64? { millis == 0 ? nil : millis }
        var nodes: [NodeSpec] = []
        for node in wire.nodes {
            guard let phase = Phase(node.phase) else { throw .invalidField("phase of node \(node.id)") }
            let onFailure: FailurePolicy
            switch node.onFailure {
            case .rollback: onFailure = .rollback
            case .pause: onFailure = .pause
            case .UNRECOGNIZED: throw .invalidField("on_failure of node \(node.id)")
            }
            nodes.append(NodeSpec(
                id: NodeID(node.id), services: node.services, phase: phase, action: node.action,
                // Plans recorded before params existed carry none: an empty object.
                paramsJSON: node.paramsJson.isEmpty ? "{}" : node.paramsJson, needs: node.needs.map(NodeID.init),
                timeouts: Timeouts(scheduleToStartMillis: positive(node.scheduleToStartMs), startToCloseMillis: positive(node.startToCloseMs),
                                   heartbeatMillis: positive(node.heartbeatMs)),
                retry: RetryPolicy(maxAttempts: node.maxAttempts, backoffInitialMillis: node.backoffInitialMs,
                                   backoffMaxMillis: node.backoffMaxMs, backoffMultiplier: max(1, node.backoffMultiplier)),
                rollback: node.rollbackAction.isEmpty ? nil
                    : RollbackSpec(action: node.rollbackAction, paramsJSON: node.rollbackParamsJson.isEmpty ? "{}" : node.rollbackParamsJson),
                approval: node.approvalMinimum == 0 ? nil : ApprovalGate(minimum: node.approvalMinimum, from: node.approvalFrom),
                deadlineMillis: positive(node.deadlineMs), irreversible: node.irreversible, onFailure: onFailure))
        }
        self.init(name: wire.name, version: wire.version, contentHash: wire.contentHash, description: wire.description_p,
                  owners: wire.owners, services: wire.services.map { ServiceSpec(name: $0.name, owners: $0.owners) },
                  deadlineMillis: positive(wire.deadlineMs), nodes: nodes)
    }
}

extension Lockstep_V1_StepKind {
    public init(_ kind: StepKind) {
        self = kind == .forward ? .forward : .rollback
    }
}

extension StepKind {
    init(_ wire: Lockstep_V1_StepKind) throws(RecordDecodingError) {
        switch wire {
        case .forward: self = .forward
        case .rollback: self = .rollback
        case .UNRECOGNIZED: throw .invalidField("step kind")
        }
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
