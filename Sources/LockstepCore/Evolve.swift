extension MigrationState {
    /// Applies one fact. Total: it never fails and never validates (that is `decide`'s job).
    ///
    /// Facts that do not fit the state (which a valid log never holds) leave the state unchanged
    /// except for its version, so replay of any log always finishes.
    public static func evolve(_ state: MigrationState?, _ event: MigrationEvent) -> MigrationState? {
        if case .migrationStarted(let started) = event { return MigrationState(started: started) }
        guard var state else { return nil }
        state.evolve(event)
        return state
    }

    /// Folds `event` in and returns the status after it (one access where the state is stored).
    mutating func evolvedStatus(_ event: MigrationEvent) -> MigrationStatus {
        evolve(event)
        return status
    }

    /// Applies one fact in place (the same fold as the static `evolve`, without copying the state).
    public mutating func evolve(_ event: MigrationEvent) {
        if case .migrationStarted(let started) = event {
            self = MigrationState(started: started)
            return
        }
        apply(event)
        version += 1
    }

    /// The state right after `started`.
    init(started: MigrationStarted) {
        self.init(
            id: started.migration, plan: started.plan, status: .running, startedAt: started.startedAt, startedBy: started.startedBy,
            statusReason: nil, nodes: started.plan.nodes.map { NodeState(id: $0.id) }, version: 1)
        zones = started.zones
    }

    private mutating func apply(_ event: MigrationEvent) {
        switch event {
        case .migrationStarted:
            break
        case .stepLeased(let leased):
            updateNode(leased.node) { node in
                node.lastToken = max(node.lastToken, leased.token)
                node.lease = StepLease(token: leased.token, agent: leased.agent, grantedAt: leased.grantedAt,
                                       expiresAt: leased.expiresAt, kind: leased.kind, holder: leased.holder, check: leased.check,
                                       pollID: leased.pollID)
                // A check changes nothing: the node stays pending, its attempts and backoff as they were.
                if leased.kind == .check { return }
                node.retryAt = nil
                node.stopped = false
                switch leased.kind {
                case .forward:
                    node.status = .running
                    node.attempts = max(node.attempts, leased.attempt)
                case .rollback:
                    node.status = .rollingBack
                    node.rollbackAttempts = max(node.rollbackAttempts, leased.attempt)
                case .check:
                    break
                }
            }
        case .stepCompleted(let completed):
            guard nodeIndex(completed.node) != nil, completed.kind != .check else { break }
            // An exposure node's forward step set a stage: it bakes (its first stage makes it something to undo).
            let exposes = completed.kind == .forward && plan.node(completed.node)?.exposure != nil
            updateNode(completed.node) { node in
                node.lease = nil
                node.progress = nil
                node.status = completed.kind == .forward ? (exposes ? .baking : .succeeded) : .rolledBack
            }
            switch completed.kind {
            case .forward: if !completionOrder.contains(completed.node) { completionOrder.append(completed.node) }
            case .rollback: rollbackQueue.removeAll { $0 == completed.node }
            case .check: break  // (never recorded: a check's end is `check_reported`)
            }
        case .exposureStageReached(let reached):
            updateNode(reached.node) { node in
                node.status = .baking
                node.exposure = ExposureProgress(reached: reached.stage, bakeUntil: reached.bakeUntil)
            }
            // Its newest change is now: an abort undoes it before anything completed while it rolled out.
            if completionOrder.contains(reached.node) {
                completionOrder.removeAll { $0 == reached.node }
                completionOrder.append(reached.node)
            }
        case .metricSampled(let sampled):
            updateNode(sampled.node) { node in
                if node.exposure.reached == sampled.stage { node.exposure.samples.append(sampled.sample) }
            }
        case .analysisEvaluated(let record):
            switch record.decision {
            case .advance, .advanceWithWarning:
                advanceExposure(record.node)
            case .pause:
                updateNode(record.node) { node in
                    node.exposure.bakeUntil = nil
                    node.exposure.awaitingDecision = true
                }
            case .rollback:
                updateNode(record.node) { $0.exposure.bakeUntil = nil }
            }
        case .analysisOverridden(let node, _):
            advanceExposure(node)
        case .rollbackReordered(let reordered):
            if let index = rollbackQueue.firstIndex(of: reordered.node) {
                rollbackQueue.remove(at: index)
                rollbackQueue.insert(reordered.node, at: 0)
            }
        case .stepFailed(let failed) where failed.kind != .check:
            updateNode(failed.node) { node in
                node.lease = nil
                node.progress = nil
                node.lastFailure = failed.reason
                node.retryAt = failed.retryAt
                node.stopped = failed.stopped
                if failed.agentLost || failed.returned || failed.stopped {
                    // Not counted: the next lease repeats this attempt's number.
                    if failed.agentLost { node.agentsLost = node.agentsLost &+ 1 }
                    switch failed.kind {
                    case .forward: node.attempts = node.attempts > 0 ? node.attempts - 1 : 0
                    case .rollback: node.rollbackAttempts = node.rollbackAttempts > 0 ? node.rollbackAttempts - 1 : 0
                    case .check: break
                    }
                }
                switch failed.kind {
                // A retry makes the node pending again; otherwise it failed for good.
                case .forward: node.status = failed.retryAt != nil ? .pending : .failed
                // It stays at the front of the rollback queue; a retry leases it from there.
                case .rollback: node.status = .failed
                case .check: break  // (never recorded: a check's end is `check_reported`)
                }
            }
        case .stepFailed:
            break  // (never recorded for a check: its end is `check_reported`)
        case .stepProgress(let progress):
            updateNode(progress.node) { node in
                if node.lease?.token == progress.token { node.progress = progress }
            }
        case .approvalGranted(let decision):
            updateNode(decision.node) { node in
                node.approvals.append(GateDecision(approver: decision.approver, comment: decision.comment, at: decision.at))
            }
        case .approvalRejected(let decision):
            updateNode(decision.node) { node in
                node.rejection = GateDecision(approver: decision.approver, comment: decision.comment, at: decision.at)
            }
        case .migrationPaused(let reason, let stop):
            status = .paused
            statusReason = reason
            lineStop = stop
        case .migrationResumed(let rearmed):
            status = .running
            statusReason = nil
            lineStop = ""
            for id in rearmed {
                updateNode(id) { node in
                    node.status = .pending
                    node.attempts = 0
                    node.agentsLost = 0
                    node.retryAt = nil
                }
            }
        case .migrationAborted(let report):
            status = .aborting
            statusReason = report.reason
            lineStop = ""
            rollbackQueue = report.rollback
            cannotUndo = report.cannotUndo
            // No bake is judged and no decision awaited any more; a rollback does not wait out a
            // forward retry's backoff.
            let undoing = Set(report.rollback)
            for index in nodes.indices {
                // (Written only where set: a node's rarely set fields stay shared until one changes.)
                if nodes[index].exposure.bakeUntil != nil { nodes[index].exposure.bakeUntil = nil }
                if nodes[index].exposure.awaitingDecision { nodes[index].exposure.awaitingDecision = false }
                // A check running now is abandoned: its report, if it comes, finds no lease.
                if nodes[index].lease?.kind == .check {
                    nodes[index].lease = nil
                    nodes[index].progress = nil
                }
                if undoing.contains(nodes[index].id) { nodes[index].retryAt = nil }
            }
            for id in report.abandoned {
                updateNode(id) { node in
                    node.lease = nil
                    node.status = .failed
                    node.lastFailure = "abandoned by abort"
                }
            }
            for id in report.skipped { updateNode(id) { $0.status = .skipped } }
            for id in report.failed { updateNode(id) { $0.status = .failed } }
            for id in report.nothingToUndo { updateNode(id) { $0.status = .rolledBack } }
        case .migrationRolledBack:
            status = .rolledBack
            rollbackQueue = []
        case .migrationSucceeded:
            status = .succeeded
            statusReason = nil
        case .migrationFailed(let node, let reason):
            status = .failed
            statusReason = "node \(node) failed: \(reason)"
            for index in nodes.leased {
                nodes[index].lease = nil
                nodes[index].status = .failed
            }
        case .serviceLeasesRequested(let requested):
            // The global sequence is not known here; `LogState` stamps it (it orders the queues).
            updateNode(requested.node) { $0.serviceLeases = .requested(kind: requested.kind, sequence: 0) }
        case .serviceLeasesWithdrawn(let node, _):
            updateNode(node) { $0.serviceLeases = .none }
        case .serviceLeasesGranted(let granted):
            updateNode(granted.node) { $0.serviceLeases = .held(since: granted.at) }
        case .serviceLeasesReleased(let released):
            updateNode(released.node) { $0.serviceLeases = .none }
        case .breakGlass(let override):
            updateNode(override.node) { node in
                if !node.breakGlass.contains(override.scope) { node.breakGlass = (node.breakGlass + [override.scope]).sorted() }
            }
        case .checkReported(let reported):
            updateNode(reported.node) { node in
                if node.lease?.token == reported.token {
                    node.lease = nil
                    node.progress = nil
                }
                let result = CheckResult(check: reported.check, outcome: reported.outcome, valueMicros: reported.valueMicros,
                                         evidence: reported.evidence, at: reported.at)
                if let index = node.checks.firstIndex(where: { $0.check == reported.check }) { node.checks[index] = result } else { node.checks.append(result) }
            }
        }
    }

    /// An exposure node's bake is judged good enough: on to its next stage, or done after the last.
    private mutating func advanceExposure(_ id: NodeID) {
        let stages = UInt32(plan.node(id)?.exposure?.stages.count ?? 0)
        updateNode(id) { node in
            node.exposure.bakeUntil = nil
            node.exposure.samples = []
            node.exposure.awaitingDecision = false
            if node.exposure.reached >= stages {
                node.status = .succeeded
            } else {
                node.status = .pending
                node.attempts = 0
                node.retryAt = nil
            }
        }
    }

    /// Records the global sequence of node `id`'s service-lease request (its place in line).
    mutating func stampRequest(_ id: NodeID, sequence: UInt64) {
        updateNode(id) { node in
            if case .requested(let kind, _) = node.serviceLeases { node.serviceLeases = .requested(kind: kind, sequence: sequence) }
        }
    }

    private mutating func updateNode(_ id: NodeID, _ change: (inout NodeState) -> Void) {
        guard let index = nodeIndex(id) else { return }
        change(&nodes[index])
    }
}
