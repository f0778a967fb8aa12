// A migration's `decide`: one exhaustive switch over the commands a migration decides, with the rule
// for steps, gates and aborts beside it. The rules for exposure and analysis are in Decide+Exposure.swift,
// break-glass in Decide+BreakGlass.swift; what needs every migration's view is the lease queue's
// (ServiceLeases.swift) and the freezes' (Freezes.swift); the deciders are composed in Command.swift.
/// What `decide` concluded: the facts to record, or why nothing happens.
public enum Decision: Hashable, Sendable {
    case accepted([MigrationEvent])
    case rejected(Rejection)
}

extension MigrationState {
    /// Decides what `command` means for the migration in `state` (nil when it does not exist yet) at `now`.
    /// The events end with the service-lease bookkeeping they imply (see ServiceLeases.swift).
    ///
    /// Pure: the same arguments always give the same decision. All validation happens here.
    public static func decide(_ state: MigrationState?, _ command: MigrationCommand, now: Instant) -> Decision {
        let decision = decideEvents(state, command, now: now)
        guard case .accepted(let events) = decision, !events.isEmpty else { return decision }
        if let state { return .accepted(state.withServiceLeaseBookkeeping(events)) }
        guard case .migrationStarted(let started) = events[0] else { return decision }
        return .accepted([events[0]] + MigrationState(started: started).withServiceLeaseBookkeeping(Array(events.dropFirst())))
    }

    private static func decideEvents(_ state: MigrationState?, _ command: MigrationCommand, now: Instant) -> Decision {
        if case .start(let id, let plan, let startedBy, let zones) = command {
            if let state { return .rejected(.migrationAlreadyExists(state.id)) }
            if let problem = validateIdentifier(id.rawValue, what: "migration id") { return .rejected(.invalidArgument(problem)) }
            if let problem = PlanValidation.problem(in: plan) { return .rejected(.invalidPlan(problem)) }
            if let problem = PlanValidation.zonesProblem(zones, for: plan) { return .rejected(.invalidArgument(problem)) }
            return .accepted([.migrationStarted(MigrationStarted(migration: id, plan: plan, startedAt: now, startedBy: startedBy, zones: zones))])
        }
        guard let state else { return .rejected(.invalidArgument("the migration does not exist")) }
        if state.status.isSettled {
            // A late report with a superseded token is told exactly that, even after the migration settled.
            if let (node, token) = command.report, let current = state.node(node)?.lastToken, token != current {
                return .rejected(.staleFencingToken(node, current: current, presented: token))
            }
            return .rejected(.migrationSettled(state.id, status: state.status))
        }
        switch command {
        case .start:
            return .rejected(.migrationAlreadyExists(state.id))
        case .leaseStep(let node, let agent, let ttlMillis, let holder, let pollID):
            if let problem = validateIdentifier(agent, what: "agent id") { return .rejected(.invalidArgument(problem)) }
            if !pollID.isEmpty, let problem = validateIdentifier(pollID, what: "poll id") { return .rejected(.invalidArgument(problem)) }
            let taker = LeaseTaker(agent: agent, holder: holder, pollID: pollID)
            guard (CoreLimits.leaseTTLMillisMin...CoreLimits.leaseTTLMillisMax).contains(ttlMillis) else {
                return .rejected(.invalidArgument(
                    "lease TTL \(ttlMillis) ms is outside \(CoreLimits.leaseTTLMillisMin)...\(CoreLimits.leaseTTLMillisMax) ms"))
            }
            return state.status == .aborting
                ? state.decideRollbackLease(node: node, taker, ttlMillis: ttlMillis, now: now)
                : state.decideLease(node: node, taker, ttlMillis: ttlMillis, now: now)
        case .completeStep(let node, let token, let by, let check):
            if let check {
                if let problem = validateReason(check.evidence) { return .rejected(.invalidArgument(problem)) }
                if let value = check.valueMicros, value.magnitude > CoreLimits.metricMicrosMagnitudeMax.magnitude {
                    return .rejected(.invalidArgument("a check's value must lie within ±\(MetricSample.decimal(CoreLimits.metricMicrosMagnitudeMax))"))
                }
            }
            // A check's report carries its result: a completion without one (a client that knows no checks) passes nothing.
            if check == nil, let lease = state.node(node)?.lease, lease.token == token, lease.kind == .check {
                return .rejected(.invalidArgument("node \(node)'s lease runs check \(lease.check): report its result (check: {ok, value, evidence})"))
            }
            return state.decideReport(node: node, token: token, by: by) { nodeState, lease in
                lease.kind == .check ? state.checkCompletion(of: node, lease: lease, report: check ?? CheckReport(ok: false), now: now)
                    : state.completion(of: node, lease: lease, attempt: nodeState.attempts(of: lease.kind), now: now)
            }
        case .failStep(let node, let token, let reason, let retryable, let by, let stopped):
            if let problem = validateReason(reason) { return .rejected(.invalidArgument(problem)) }
            return state.decideReport(node: node, token: token, by: by) { nodeState, lease in
                // Stopped because a pause said so (its report may come after the resume: the plan's rule is
                // what makes a stop a stop): not counted; it runs again after the resume, keeping its services.
                if stopped, lease.kind == .forward, state.plan.onPause == .stop {
                    let why = state.stopRequested(node, token: token) ?? "migration \(state.id) was paused and its plan says running steps stop (on_pause: stop)"
                    return [.stepFailed(StepFailed(uncountedOf: node, nodeState: nodeState, lease: lease, now: now,
                                                   reason: "stopped: \(why)".prefix(utf8Bytes: CoreLimits.reasonBytesMax), stopped: true))]
                }
                // A check whose agent could not run it (no handler, shutting down: retryable) did not run; one
                // that failed for good is a failed check.
                if lease.kind == .check {
                    return retryable ? state.checkNotRun(of: node, lease: lease, why: reason, now: now)
                        : state.checkCompletion(of: node, lease: lease, report: CheckReport(ok: false, evidence: reason), now: now)
                }
                return state.failure(of: node, nodeState: nodeState, lease: lease, reason: reason, retryable: retryable, now: now)
            }
        case .returnStep(let node, let token, let by):
            return state.decideReport(node: node, token: token, by: by) { nodeState, lease in
                if lease.kind == .check { return state.checkNotRun(of: node, lease: lease, why: "returned unstarted: the poll that took it went away", now: now) }
                return [.stepFailed(StepFailed(uncountedOf: node, nodeState: nodeState, lease: lease, now: now,
                                        reason: "returned unstarted: the poll that took it went away before the step reached its agent", returned: true))]
            }
        case .heartbeat(let node, let token, let by):
            return state.decideReport(node: node, token: token, by: by) { _, _ in [] }
        case .reportProgress(let node, let token, let percent, let message, let by):
            guard percent <= 100 else { return .rejected(.invalidArgument("progress is \(percent)%; it must be 0...100")) }
            if let problem = validateReason(message) { return .rejected(.invalidArgument(problem)) }
            return state.decideReport(node: node, token: token, by: by) { _, _ in
                [.stepProgress(StepProgress(node: node, token: token, percent: percent, message: message))]
            }
        case .expireLease(let node, let token):
            return state.decideReport(node: node, token: token) { nodeState, lease in
                if lease.kind == .check {
                    return state.checkNotRun(of: node, lease: lease, why: "lease expired: no heartbeat within its TTL (agent \(lease.agent) taken as lost)", now: now)
                }
                // Losing an agent (a killed or partitioned process) is not a failure of the step: up to
                // `agentsLostMax` times the attempt is not counted and the step is offered again at once.
                guard nodeState.agentsLost >= CoreLimits.agentsLostMax else {
                    let lost = nodeState.agentsLost + 1
                    return [.stepFailed(StepFailed(
                        uncountedOf: node, nodeState: nodeState, lease: lease, now: now,
                        reason: "lease expired: no heartbeat within its TTL; agent \(lease.agent) taken as lost (\(lost) of \(CoreLimits.agentsLostMax) "
                            + "not counted against the retry policy)",
                        agentLost: true))]
                }
                return state.failure(of: node, nodeState: nodeState, lease: lease,
                                     reason: "lease expired: no heartbeat within its TTL (the node already lost \(CoreLimits.agentsLostMax) agents; "
                                         + "this expiry counts as a failed attempt)",
                                     retryable: true, now: now, leaseExpired: true)
            }
        case .timeOutStep(let node, let token):
            guard let due = state.startToCloseDeadlines.first(where: { $0.node == node && $0.token == token }), due.at <= now,
                  let lease = state.node(node)?.lease else { return .rejected(.stepTimeoutNotPassed(node)) }
            let reason = "start_to_close_exceeded: the step ran past its start_to_close of \(Self.durationText(due.limitMillis)) "
                + "(leased at \(lease.grantedAt)); its lease ends"
            return state.decideReport(node: node, token: token) { nodeState, lease in
                lease.kind == .check ? state.checkCompletion(of: node, lease: lease, report: CheckReport(ok: false, evidence: reason), now: now)
                    : state.failure(of: node, nodeState: nodeState, lease: lease, reason: reason, retryable: true, now: now, startToCloseExceeded: true)
            }
        case .scheduleToStartExceeded(let node):
            guard let spec = state.plan.node(node), let limit = spec.timeouts.scheduleToStartMillis, state.isWaitingForAgent(node, at: now) else {
                return .rejected(.notWaitingForAgent(node))
            }
            return .accepted([.migrationPaused(reason: "schedule_to_start_exceeded: node \(node) was ready for \(Self.durationText(limit)) "
                + "(its schedule_to_start) and no agent of \(spec.stepService) took its step; start one, then resume")])
        case .approve(let node, let approver, let groups, let comment):
            return state.decideGate(node: node, approver: approver, groups: groups, comment: comment, now: now, approve: true)
        case .reject(let node, let approver, let groups, let comment):
            return state.decideGate(node: node, approver: approver, groups: groups, comment: comment, now: now, approve: false)
        case .pause(let reason, let lineStop):
            if let problem = validateReason(reason) { return .rejected(.invalidArgument(problem)) }
            if !lineStop.isEmpty, let problem = validateIdentifier(lineStop, what: "freeze id") { return .rejected(.invalidArgument(problem)) }
            switch state.status {
            // A stop of the line's pause may be taken over: by a person (who then resumes it), or by another stop still in force.
            case .paused where !state.lineStop.isEmpty && state.lineStop != lineStop:
                return .accepted([.migrationPaused(reason: reason, lineStop: lineStop)])
            case .paused: return .rejected(.alreadyPaused(state.id))
            case .aborting: return .rejected(.migrationNotRunning(state.id, status: state.status))
            default: return .accepted([.migrationPaused(reason: reason, lineStop: lineStop)])
            }
        case .resume:
            guard state.status == .paused else { return .rejected(.notPaused(state.id, status: state.status)) }
            if let blocked = state.nodes.first(where: { $0.rejection != nil }) {
                return .rejected(.gateRejected(blocked.id, by: blocked.rejection!.approver))
            }
            // Nodes that failed for good while the plan said "pause" get a fresh set of attempts; nodes
            // whose analysis paused the migration advance (resuming is the person's decision to go on).
            var events: [MigrationEvent] = [.migrationResumed(rearmed: state.nodes.filter { $0.status == .failed }.map(\.id))]
            var after = state
            after.evolve(events[0])
            for node in state.nodes where node.status == .baking && node.exposure.awaitingDecision {
                let overridden = MigrationEvent.analysisOverridden(node: node.id, stage: node.exposure.reached)
                events.append(overridden)
                after.evolve(overridden)
            }
            if events.count > 1 && after.nodes.allSatisfy({ $0.status == .succeeded }) { events.append(.migrationSucceeded) }
            return .accepted(events)
        case .breakGlass(let node, let scope, let by, let admin, let justification):
            return state.decideBreakGlass(node: node, scope: scope, by: by, admin: admin, justification: justification, now: now)
        case .abort(let reason):
            if let problem = validateReason(reason) { return .rejected(.invalidArgument(problem)) }
            guard state.status != .aborting else { return .rejected(.migrationNotRunning(state.id, status: state.status)) }
            return .accepted(state.abort(reason: reason, trigger: .operator))
        case .enforceDeadlines:
            guard state.status == .running || state.status == .paused, let passed = state.passedDeadline(at: now) else {
                return .rejected(.noDeadlinePassed(state.id))
            }
            return .accepted(state.abort(reason: passed, trigger: .deadline))
        case .recordMetric(let node, let sample):
            return state.decideSample(node: node, sample: sample, now: now)
        case .evaluateExposure(let node):
            return state.decideEvaluation(node: node, now: now)
        case .reconcileServiceLeases:
            let events = state.serviceLeaseBookkeeping()
            return events.isEmpty ? .rejected(.invalidArgument("migration \(state.id) has no service-lease bookkeeping to record")) : .accepted(events)
        }
    }

    // MARK: - Steps

    private func decideLease(node: NodeID, _ taker: LeaseTaker, ttlMillis: Int64, now: Instant) -> Decision {
        guard status == .running else { return .rejected(.migrationNotRunning(id, status: status)) }
        guard let nodeState = self.node(node), let spec = plan.node(node) else { return .rejected(.unknownNode(node)) }
        guard nodeState.status == .pending, needsSatisfied(node) else {
            let waitingOn = nodeState.status == .pending ? spec.needs.filter { self.node($0)?.status != .succeeded } : []
            return .rejected(.nodeNotReady(node, status: nodeState.status, waitingOn: waitingOn))
        }
        if let rejection = nodeState.rejection { return .rejected(.gateRejected(node, by: rejection.approver)) }
        if let gate = spec.approval, nodeState.approvals.count < Int(gate.minimum) {
            return .rejected(.awaitingApproval(node, approvals: nodeState.approvals.count, needed: Int(gate.minimum)))
        }
        if let retryAt = nodeState.retryAt, now < retryAt { return .rejected(.retryNotDue(node, retryAt: retryAt)) }
        guard nodeState.attempts < CoreLimits.attemptsMax else { return .rejected(.nodeNotReady(node, status: nodeState.status, waitingOn: [])) }
        guard nodeState.serviceLeases.isHeld else { return .rejected(.waitingForServices(node, waits: [])) }
        // One of its checks runs now: nothing else until it reports.
        if nodeState.lease != nil { return .rejected(.nodeNotReady(node, status: .running, waitingOn: [])) }
        // Its checks first: the first not freshly passing runs (a check lease), or blocks while it failed.
        if let checking = checkLease(node: node, nodeState: nodeState, before: .forward, taker, ttlMillis: ttlMillis, now: now) {
            return checking
        }
        return .accepted([.stepLeased(StepLeased(
            node: node, attempt: nodeState.attempts + 1, token: nodeState.lastToken.next, agent: taker.agent,
            grantedAt: now, expiresAt: now.adding(milliseconds: ttlMillis), kind: .forward, holder: taker.holder, pollID: taker.pollID))])
    }

    private func decideRollbackLease(node: NodeID, _ taker: LeaseTaker, ttlMillis: Int64, now: Instant) -> Decision {
        guard let nodeState = self.node(node) else { return .rejected(.unknownNode(node)) }
        guard rollbackQueue.first == node, nodeState.lease == nil else {
            return .rejected(.noRollbackDue(node, next: rollbackQueue.first == node ? nil : rollbackQueue.first))
        }
        if let retryAt = nodeState.retryAt, now < retryAt { return .rejected(.retryNotDue(node, retryAt: retryAt)) }
        guard nodeState.rollbackAttempts < CoreLimits.attemptsMax else { return .rejected(.noRollbackDue(node, next: nil)) }
        guard nodeState.serviceLeases.isHeld else { return .rejected(.waitingForServices(node, waits: [])) }
        // Its checks before a rollback first, as before a forward step.
        if let checking = checkLease(node: node, nodeState: nodeState, before: .rollback, taker, ttlMillis: ttlMillis, now: now) {
            return checking
        }
        return .accepted([.stepLeased(StepLeased(
            node: node, attempt: nodeState.rollbackAttempts + 1, token: nodeState.lastToken.next, agent: taker.agent,
            grantedAt: now, expiresAt: now.adding(milliseconds: ttlMillis), kind: .rollback, holder: taker.holder, pollID: taker.pollID))])
    }

    /// Checks that a report comes from the live lease holder (its token, and its principal when the lease
    /// names one and the report says who sent it), then lets `events` say what it means.
    private func decideReport(node: NodeID, token: FencingToken, by reporter: String = "",
                              events: (NodeState, StepLease) -> [MigrationEvent]) -> Decision {
        guard let nodeState = self.node(node) else { return .rejected(.unknownNode(node)) }
        guard token == nodeState.lastToken else {
            return .rejected(.staleFencingToken(node, current: nodeState.lastToken, presented: token))
        }
        guard let lease = nodeState.lease else { return .rejected(.noActiveLease(node)) }
        if !lease.holder.isEmpty, !reporter.isEmpty, reporter != lease.holder {
            return .rejected(.notLeaseHolder(node, holder: lease.holder, reporter: reporter))
        }
        return .accepted(events(nodeState, lease))
    }

    private func completion(of node: NodeID, lease: StepLease, attempt: UInt32, now: Instant) -> [MigrationEvent] {
        var events: [MigrationEvent] = [.stepCompleted(StepCompleted(node: node, attempt: attempt, token: lease.token, kind: lease.kind))]
        switch lease.kind {
        case .forward where plan.node(node)?.exposure != nil && status != .aborting:
            // An exposure node's step set its next stage: it bakes, and its analysis decides what follows.
            let bake = plan.node(node)?.exposure?.bakeMillis ?? 0
            let reached = (self.node(node)?.exposure.reached ?? 0) + 1
            events.append(.exposureStageReached(ExposureStageReached(node: node, stage: reached, bakeUntil: now.adding(milliseconds: bake))))
        case .forward:
            if status != .aborting && nodes.indices.allSatisfy({ nodes[$0].status == .succeeded || nodes[$0].id == node }) { events.append(.migrationSucceeded) }
        case .rollback:
            if rollbackQueue == [node] { events.append(.migrationRolledBack) }
        case .check:
            break  // (routed to `checkCompletion` before)
        }
        return events
    }

    private func failure(of node: NodeID, nodeState: NodeState, lease: StepLease, reason: String, retryable: Bool, now: Instant,
                         leaseExpired: Bool = false, startToCloseExceeded: Bool = false) -> [MigrationEvent] {
        let retry = plan.node(node)?.retry ?? RetryPolicy()
        let attempt = nodeState.attempts(of: lease.kind)
        // Undoing matters more than doing: rollback steps get at least `rollbackAttemptsMin` attempts.
        let allowed = lease.kind == .forward ? retry.maxAttempts : max(retry.maxAttempts, CoreLimits.rollbackAttemptsMin)
        let willRetry = retryable && attempt < allowed
        let retryAt = willRetry ? now.adding(milliseconds: retry.backoffMillis(afterAttempt: attempt)) : nil
        let failed = MigrationEvent.stepFailed(StepFailed(
            node: node, attempt: attempt, token: lease.token, reason: reason, retryable: retryable, kind: lease.kind, retryAt: retryAt,
            leaseExpired: leaseExpired, startToCloseExceeded: startToCloseExceeded))
        if willRetry { return [failed] }
        switch lease.kind {
        case .check:
            return [failed]  // (routed to `checkCompletion` before)
        case .rollback:
            return [failed, .migrationFailed(node: node, reason: "its rollback failed: \(reason). \(serviceAccount(failing: node))")]
        case .forward:
            if status == .aborting { return [failed] }  // a step abandoned by the abort reported late: nothing more
            var after = self
            after.evolve(failed)
            let why = "node \(node) failed after \(attempt) attempt\(attempt == 1 ? "" : "s"): \(reason)"
            guard plan.node(node)?.onFailure == .pause else { return [failed] + after.abort(reason: why, trigger: .retriesExhausted) }
            // Paused by a stop of the line: the pause becomes a person's, so the stop's lift does not re-arm the node.
            return status == .paused && lineStop.isEmpty ? [failed] : [failed, .migrationPaused(reason: why)]
        }
    }

    // MARK: - Gates

    private func decideGate(node: NodeID, approver: String, groups: [String], comment: String, now: Instant, approve: Bool) -> Decision {
        if let problem = Self.validateIdentifier(approver, what: "approver") { return .rejected(.invalidArgument(problem)) }
        if let problem = Self.validateReason(comment) { return .rejected(.invalidArgument(problem)) }
        if !approve && comment.isEmpty { return .rejected(.invalidArgument("a rejection needs a comment saying why")) }
        guard let nodeState = self.node(node), let spec = plan.node(node) else { return .rejected(.unknownNode(node)) }
        guard spec.approval != nil else { return .rejected(.noGate(node)) }
        guard status == .running || status == .paused else { return .rejected(.migrationNotRunning(id, status: status)) }
        guard nodeState.status == .pending, nodeState.exposure.reached == 0 else {
            // (Between exposure stages a node is pending again, but its gate was decided before its first.)
            return .rejected(.gateClosed(node, status: nodeState.exposure.reached > 0 ? .running : nodeState.status))
        }
        // Decide on evidence: the gate opens when everything the node needs has succeeded.
        guard needsSatisfied(node) else {
            return .rejected(.gateNotOpen(node, waitingOn: spec.needs.filter { self.node($0)?.status != .succeeded }))
        }
        if let rejection = nodeState.rejection { return .rejected(.gateRejected(node, by: rejection.approver)) }
        guard approver != startedBy else { return .rejected(.requesterCannotApprove(node, approver: approver)) }
        let allowed = plan.approverGroups(for: spec)
        guard groups.contains(where: allowed.contains) else { return .rejected(.notAnApprover(node, approver: approver, groups: allowed)) }
        guard !nodeState.approvals.contains(where: { $0.approver == approver }) else { return .rejected(.alreadyDecided(node, approver: approver)) }
        let decision = ApprovalDecision(node: node, approver: approver, comment: comment, at: now)
        guard approve else {
            let reason = "the gate on \(node) was rejected by \(approver): \(comment)"
            return .accepted(status == .paused ? [.approvalRejected(decision)] : [.approvalRejected(decision), .migrationPaused(reason: reason)])
        }
        return .accepted([.approvalGranted(decision)])
    }

    // MARK: - Abort and deadlines

    /// The events that begin an abort: the report of what will be undone, and `migrationRolledBack`
    /// at once when no rollback step is needed.
    func abort(reason: String, trigger: AbortTrigger) -> [MigrationEvent] {
        var report = AbortReport(reason: reason, trigger: trigger)
        // Steps running now may have done part of their work: undo them first, each on its own merits
        // (a running irreversible step cannot be undone, but it completed nothing, so it blocks nothing).
        report.abandoned = nodes.filter { $0.status == .running }.map(\.id)
        for id in report.abandoned {
            guard let spec = plan.node(id) else { continue }
            if spec.irreversible || !Self.canUndo(spec) { report.cannotUndo.append(id) } else { report.rollback.append(id) }
        }
        // Then completed nodes, most recent first, until the first completed irreversible node.
        var blocked = false
        for id in completionOrder.reversed() where !report.abandoned.contains(id) {
            guard let spec = plan.node(id) else { continue }
            if blocked {
                report.cannotUndo.append(id)
            } else if spec.irreversible {
                report.cannotUndo.append(id)
                report.blockedBy = id
                blocked = true
            } else if !Self.canUndo(spec) {
                report.nothingToUndo.append(id)
            } else {
                report.rollback.append(id)
            }
        }
        // Nodes with failed attempts did not complete; nodes that never started are skipped.
        // (An exposure node that set a stage is undone above, whatever its status now.)
        report.failed = nodes.filter { $0.exposure.reached == 0 && ($0.status == .failed || ($0.status == .pending && $0.attempts > 0)) }.map(\.id)
        report.skipped = nodes.filter { $0.exposure.reached == 0 && $0.status == .pending && $0.attempts == 0 }.map(\.id)
        return report.rollback.isEmpty ? [.migrationAborted(report), .migrationRolledBack] : [.migrationAborted(report)]
    }

    /// Where each service stands when a rollback gives up: per service (plan order), its nodes that did
    /// something, each rolled back, not undone (with its exposure stage), kept (irreversible), or the
    /// one whose rollback failed. Recorded in `migration_failed`, for the people who take it from there.
    func serviceAccount(failing: NodeID) -> String {
        var parts: [String] = []
        for service in plan.services.map(\.name) {
            var states: [String] = []
            for (spec, node) in zip(plan.nodes, nodes) where spec.services.contains(service) {
                let stage = currentStage(of: node.id).map { " at stage \($0.name)" } ?? ""
                if node.id == failing {
                    states.append("\(node.id) rollback failed\(stage)")
                } else if node.status == .rolledBack {
                    states.append("\(node.id) rolled back")
                } else if rollbackQueue.contains(node.id) {
                    states.append("\(node.id) not undone\(stage)")
                } else if cannotUndo.contains(node.id) {
                    states.append("\(node.id) kept (cannot be undone)")
                } else if node.status == .failed {
                    states.append("\(node.id) failed before completing")
                }
            }
            if !states.isEmpty { parts.append("\(service): \(states.joined(separator: ", "))") }
        }
        let account = "Services: " + (parts.isEmpty ? "none changed" : parts.joined(separator: "; "))
        return account.prefix(utf8Bytes: CoreLimits.reasonBytesMax)
    }

    /// Whether a rollback step can undo `spec`: it has a rollback action, or it is an exposure node (whose
    /// own action returns the exposure to its start when it has no rollback action).
    static func canUndo(_ spec: NodeSpec) -> Bool { spec.rollback != nil || spec.exposure != nil }

    // MARK: - Input checks

    /// A sentence saying what is wrong with `value` as an identifier (migration, node, service, agent
    /// ids), or nil when it is fine: what every edge checks before anything reaches `decide`.
    public static func identifierProblem(_ value: String, what: String) -> String? { validateIdentifier(value, what: what) }

    /// A sentence saying what is wrong with `value` as an identifier, or nil when it is fine.
    static func validateIdentifier(_ value: String, what: String) -> String? {
        if value.isEmpty { return "\(what) is empty" }
        if value.utf8.count > CoreLimits.identifierBytesMax {
            return "\(what) is \(value.utf8.count) bytes long; the limit is \(CoreLimits.identifierBytesMax) bytes"
        }
        let allowed = value.utf8.allSatisfy { byte in
            (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A)
                || byte == 0x2D || byte == 0x5F || byte == 0x2E || byte == 0x40 || byte == 0x3A
        }
        return allowed ? nil : "\(what) \"\(value.quotable)\" may only contain letters, digits, '-', '_', '.', '@' and ':'"
    }

    static func validateReason(_ reason: String) -> String? {
        reason.utf8.count > CoreLimits.reasonBytesMax
            ? "reason is \(reason.utf8.count) bytes long; the limit is \(CoreLimits.reasonBytesMax) bytes" : nil
    }
}
