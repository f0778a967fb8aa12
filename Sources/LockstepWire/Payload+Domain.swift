// The wire <-> domain mapping of every event payload, both directions side by side so a field added to
// one is seen missing in the other; plans and what they carry are in Plan+Domain.swift.
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
                $0.zones = started.zones.map(Lockstep_V1_ZoneOffsets.init)
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
                $0.holder = leased.holder
                $0.check = leased.check
                $0.pollID = leased.pollID
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
                $0.startToCloseExceeded = failed.startToCloseExceeded
                $0.agentLost = failed.agentLost
                $0.returned = failed.returned
                $0.stopped = failed.stopped
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
        case .migrationPaused(let reason, let lineStop):
            migrationPaused = .with {
                $0.reason = reason
                $0.lineStop = lineStop
            }
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
                $0.trigger = report.trigger?.rawValue ?? ""
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
        case .exposureStageReached(let reached):
            exposureStageReached = .with {
                $0.nodeID = reached.node.rawValue
                $0.stage = reached.stage
                $0.bakeUntilMs = reached.bakeUntil.millisecondsSinceEpoch
            }
        case .metricSampled(let sampled):
            metricSampled = .with {
                $0.nodeID = sampled.node.rawValue
                $0.stage = sampled.stage
                $0.sample = Lockstep_V1_MetricSample(sampled.sample)
            }
        case .analysisEvaluated(let record):
            analysisEvaluated = .with {
                $0.nodeID = record.node.rawValue
                $0.stage = record.stage
                $0.outcome = record.outcome.rawValue
                $0.decision = record.decision.rawValue
                $0.evidence = record.evidence.map { evidence in
                    .with {
                        $0.check = Lockstep_V1_MetricCheck(evidence.check)
                        $0.samples = evidence.samples
                        $0.meanMicros = evidence.meanMicros
                        $0.minMicros = evidence.minMicros
                        $0.maxMicros = evidence.maxMicros
                        $0.outcome = evidence.outcome.rawValue
                        if let baseline = evidence.baseline {
                            $0.baseline = .with {
                                $0.samples = baseline.samples
                                $0.meanMicros = baseline.meanMicros
                                $0.minMicros = baseline.minMicros
                                $0.maxMicros = baseline.maxMicros
                            }
                        }
                        if let relative = evidence.relativeOutcome { $0.relativeOutcome = relative.rawValue }
                    }
                }
                $0.planContentHash = record.planContentHash
            }
        case .analysisOverridden(let node, let stage):
            analysisOverridden = .with {
                $0.nodeID = node.rawValue
                $0.stage = stage
            }
        case .rollbackReordered(let reordered):
            rollbackReordered = .with {
                $0.nodeID = reordered.node.rawValue
                $0.aheadOf = reordered.aheadOf.rawValue
                $0.services = reordered.services
            }
        case .breakGlass(let override):
            breakGlass = .with {
                $0.nodeID = override.node.rawValue
                $0.scope = override.scope.rawValue
                $0.by = override.by
                $0.justification = override.justification
                $0.atMs = override.at.millisecondsSinceEpoch
            }
        case .checkReported(let reported):
            checkReported = .with {
                $0.nodeID = reported.node.rawValue
                $0.check = reported.check
                $0.fencingToken = reported.token.rawValue
                $0.outcome = reported.outcome.rawValue
                if let value = reported.valueMicros { $0.valueMicros = value }
                $0.evidence = reported.evidence
                $0.atMs = reported.at.millisecondsSinceEpoch
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
                startedAt: Instant(millisecondsSinceEpoch: started.startedAtMs), startedBy: started.startedBy,
                zones: try started.zones.map(ZoneOffsets.init)))
        case .stepLeased(let leased):
            self = .stepLeased(StepLeased(
                node: NodeID(leased.nodeID), attempt: leased.attempt, token: FencingToken(leased.fencingToken),
                agent: leased.agentID, grantedAt: Instant(millisecondsSinceEpoch: leased.grantedAtMs),
                expiresAt: Instant(millisecondsSinceEpoch: leased.expiresAtMs), kind: try StepKind(leased.kind), holder: leased.holder,
                check: leased.check, pollID: leased.pollID))
        case .stepCompleted(let completed):
            self = .stepCompleted(StepCompleted(
                node: NodeID(completed.nodeID), attempt: completed.attempt, token: FencingToken(completed.fencingToken),
                kind: try StepKind(completed.kind)))
        case .stepFailed(let failed):
            self = .stepFailed(StepFailed(
                node: NodeID(failed.nodeID), attempt: failed.attempt, token: FencingToken(failed.fencingToken),
                reason: failed.reason, retryable: failed.retryable, kind: try StepKind(failed.kind),
                retryAt: failed.retryAtMs == 0 ? nil : Instant(millisecondsSinceEpoch: failed.retryAtMs), leaseExpired: failed.leaseExpired,
                startToCloseExceeded: failed.startToCloseExceeded, agentLost: failed.agentLost, returned: failed.returned,
                stopped: failed.stopped))
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
        case .checkpointSigned:
            throw .payloadDoesNotFitStream(stream: "a migration stream", payload: "checkpoint_signed")
        case .migrationPaused(let paused):
            self = .migrationPaused(reason: paused.reason, lineStop: paused.lineStop)
        case .migrationResumed(let resumed):
            self = .migrationResumed(rearmed: resumed.rearmed.map(NodeID.init))
        case .migrationAborted(let aborted):
            self = .migrationAborted(AbortReport(
                reason: aborted.reason, rollback: aborted.rollback.map(NodeID.init), nothingToUndo: aborted.nothingToUndo.map(NodeID.init),
                cannotUndo: aborted.cannotUndo.map(NodeID.init), skipped: aborted.skipped.map(NodeID.init),
                blockedBy: aborted.blockedBy.isEmpty ? nil : NodeID(aborted.blockedBy), abandoned: aborted.abandoned.map(NodeID.init),
                failed: aborted.failed.map(NodeID.init), trigger: try AbortTrigger(wire: aborted.trigger)))
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
        case .exposureStageReached(let reached):
            self = .exposureStageReached(ExposureStageReached(
                node: NodeID(reached.nodeID), stage: reached.stage, bakeUntil: Instant(millisecondsSinceEpoch: reached.bakeUntilMs)))
        case .metricSampled(let sampled):
            self = .metricSampled(MetricSampled(node: NodeID(sampled.nodeID), stage: sampled.stage, sample: try MetricSample(sampled.sample)))
        case .analysisEvaluated(let record):
            guard let outcome = AnalysisOutcome(rawValue: record.outcome) else { throw .invalidField("analysis outcome \"\(record.outcome)\"") }
            guard let decision = AnalysisDecision(rawValue: record.decision) else { throw .invalidField("analysis decision \"\(record.decision)\"") }
            var evidence: [MetricEvidence] = []
            for item in record.evidence {
                guard let metricOutcome = AnalysisOutcome(rawValue: item.outcome) else { throw .invalidField("metric outcome \"\(item.outcome)\"") }
                var relative: AnalysisOutcome?
                if !item.relativeOutcome.isEmpty {
                    guard let outcome = AnalysisOutcome(rawValue: item.relativeOutcome) else { throw .invalidField("relative outcome \"\(item.relativeOutcome.prefix(32))\"") }
                    relative = outcome
                }
                let baseline = item.hasBaseline ? CohortSummary(samples: item.baseline.samples, meanMicros: item.baseline.meanMicros,
                                                                minMicros: item.baseline.minMicros, maxMicros: item.baseline.maxMicros) : nil
                evidence.append(MetricEvidence(check: try MetricCheck(item.check), samples: item.samples, meanMicros: item.meanMicros,
                                               minMicros: item.minMicros, maxMicros: item.maxMicros, outcome: metricOutcome,
                                               baseline: baseline, relativeOutcome: relative))
            }
            self = .analysisEvaluated(AnalysisRecord(node: NodeID(record.nodeID), stage: record.stage, outcome: outcome, decision: decision,
                                                     evidence: evidence, planContentHash: record.planContentHash))
        case .analysisOverridden(let overridden):
            self = .analysisOverridden(node: NodeID(overridden.nodeID), stage: overridden.stage)
        case .rollbackReordered(let reordered):
            self = .rollbackReordered(RollbackReordered(node: NodeID(reordered.nodeID), aheadOf: NodeID(reordered.aheadOf),
                                                        services: reordered.services))
        case .breakGlass(let override):
            guard let scope = BreakGlassScope(rawValue: override.scope) else { throw .invalidField("break_glass scope \"\(override.scope.prefix(32))\"") }
            self = .breakGlass(BreakGlass(node: NodeID(override.nodeID), scope: scope, by: override.by, justification: override.justification,
                                          at: Instant(millisecondsSinceEpoch: override.atMs)))
        case .checkReported(let reported):
            guard let outcome = CheckOutcome(rawValue: reported.outcome) else { throw .invalidField("check outcome \"\(reported.outcome.prefix(32))\"") }
            self = .checkReported(CheckReported(node: NodeID(reported.nodeID), check: reported.check, token: FencingToken(reported.fencingToken),
                                                outcome: outcome, valueMicros: reported.hasValueMicros ? reported.valueMicros : nil,
                                                evidence: reported.evidence, at: Instant(millisecondsSinceEpoch: reported.atMs)))
        case .freezeDeclared:
            throw .payloadDoesNotFitStream(stream: "a migration stream", payload: "freeze_declared")
        case .freezeEnded:
            throw .payloadDoesNotFitStream(stream: "a migration stream", payload: "freeze_ended")
        }
    }
}
