/// What `decide` concluded: the facts to record, or why nothing happens.
public enum Decision: Hashable, Sendable {
    case accepted([MigrationEvent])
    case rejected(Rejection)
}

extension MigrationState {
    /// Decides what `command` means for the migration in `state` (nil when it does not exist yet) at `now`.
    ///
    /// Pure: the same arguments always give the same decision. All validation happens here.
    public static func decide(_ state: MigrationState?, _ command: MigrationCommand, now: Instant) -> Decision {
        if case .start(let id, let plan) = command {
            if let state { return .rejected(.migrationAlreadyExists(state.id)) }
            if let problem = validateIdentifier(id.rawValue, what: "migration id") { return .rejected(.invalidArgument(problem)) }
            if let problem = PlanValidation.problem(in: plan) { return .rejected(.invalidPlan(problem)) }
            return .accepted([.migrationStarted(MigrationStarted(migration: id, plan: plan, startedAt: now))])
        }
        guard let state else { return .rejected(.invalidArgument("the migration does not exist")) }
        if state.status.isSettled { return .rejected(.migrationSettled(state.id, status: state.status)) }
        switch command {
        case .start:
            return .rejected(.migrationAlreadyExists(state.id))
        case .leaseStep(let node, let agent, let ttlMillis):
            return state.decideLease(node: node, agent: agent, ttlMillis: ttlMillis, now: now)
        case .completeStep(let node, let token):
            return state.decideReport(node: node, token: token) { nodeState in
                var events: [MigrationEvent] = [.stepCompleted(StepCompleted(node: node, attempt: nodeState.attempts, token: token))]
                let othersDone = state.nodes.allSatisfy { $0.id == node || $0.status == .succeeded }
                if othersDone { events.append(.migrationSucceeded) }
                return events
            }
        case .failStep(let node, let token, let reason, let retryable):
            if let problem = validateReason(reason) { return .rejected(.invalidArgument(problem)) }
            return state.decideReport(node: node, token: token) { nodeState in
                let failed = StepFailed(node: node, attempt: nodeState.attempts, token: token, reason: reason, retryable: retryable)
                let maxAttempts = state.plan.node(node)?.maxAttempts ?? 1
                guard retryable && nodeState.attempts < maxAttempts else {
                    return [.stepFailed(failed), .migrationFailed(node: node, reason: reason)]
                }
                return [.stepFailed(failed)]
            }
        case .pause(let reason):
            if let problem = validateReason(reason) { return .rejected(.invalidArgument(problem)) }
            if state.status == .paused { return .rejected(.alreadyPaused(state.id)) }
            return .accepted([.migrationPaused(reason: reason)])
        case .resume:
            guard state.status == .paused else { return .rejected(.notPaused(state.id, status: state.status)) }
            return .accepted([.migrationResumed])
        case .abort(let reason):
            if let problem = validateReason(reason) { return .rejected(.invalidArgument(problem)) }
            return .accepted([.migrationAborted(reason: reason)])
        }
    }

    private func decideLease(node: NodeID, agent: String, ttlMillis: Int64, now: Instant) -> Decision {
        if let problem = Self.validateIdentifier(agent, what: "agent id") { return .rejected(.invalidArgument(problem)) }
        guard (CoreLimits.leaseTTLMillisMin...CoreLimits.leaseTTLMillisMax).contains(ttlMillis) else {
            return .rejected(.invalidArgument(
                "lease TTL \(ttlMillis) ms is outside \(CoreLimits.leaseTTLMillisMin)...\(CoreLimits.leaseTTLMillisMax) ms"))
        }
        guard status == .running else { return .rejected(.migrationNotRunning(id, status: status)) }
        guard let nodeState = self.node(node), let spec = plan.node(node) else { return .rejected(.unknownNode(node)) }
        guard isReady(node) else {
            let waitingOn = nodeState.status == .pending ? spec.needs.filter { self.node($0)?.status != .succeeded } : []
            return .rejected(.nodeNotReady(node, status: nodeState.status, waitingOn: waitingOn))
        }
        let leased = StepLeased(
            node: node, attempt: nodeState.attempts + 1, token: nodeState.lastToken.next, agent: agent,
            grantedAt: now, expiresAt: now.adding(milliseconds: ttlMillis))
        return .accepted([.stepLeased(leased)])
    }

    /// Checks that a report comes from the live lease holder, then lets `events` say what it means.
    private func decideReport(node: NodeID, token: FencingToken, events: (NodeState) -> [MigrationEvent]) -> Decision {
        guard let nodeState = self.node(node) else { return .rejected(.unknownNode(node)) }
        guard token == nodeState.lastToken else {
            return .rejected(.staleFencingToken(node, current: nodeState.lastToken, presented: token))
        }
        guard nodeState.status == .running, nodeState.lease != nil else { return .rejected(.noActiveLease(node)) }
        return .accepted(events(nodeState))
    }

    /// A sentence saying what is wrong with `value` as an identifier, or nil when it is fine.
    static func validateIdentifier(_ value: String, what: String) -> String? {
        if value.isEmpty { return "\(what) is empty" }
        if value.utf8.count > CoreLimits.identifierBytesMax {
            return "\(what) is \(value.utf8.count) bytes long; the limit is \(CoreLimits.identifierBytesMax) bytes"
        }
        let allowed = value.utf8.allSatisfy { byte in
            (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A)
                || byte == 0x2D || byte == 0x5F || byte == 0x2E
        }
        return allowed ? nil : "\(what) \"\(value)\" may only contain letters, digits, '-', '_' and '.'"
    }

    static func validateReason(_ reason: String) -> String? {
        reason.utf8.count > CoreLimits.reasonBytesMax
            ? "reason is \(reason.utf8.count) bytes long; the limit is \(CoreLimits.reasonBytesMax) bytes" : nil
    }
}
