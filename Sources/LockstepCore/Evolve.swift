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
            id: started.migration, plan: started.plan, status: .running, startedAt: started.startedAt,
            statusReason: nil, nodes: started.plan.nodes.map { NodeState(id: $0.id) }, version: 1)
    }

    private mutating func apply(_ event: MigrationEvent) {
        switch event {
        case .migrationStarted:
            break
        case .stepLeased(let leased):
            updateNode(leased.node) { node in
                node.status = .running
                node.attempts = max(node.attempts, leased.attempt)
                node.lastToken = max(node.lastToken, leased.token)
                node.lease = StepLease(token: leased.token, agent: leased.agent, grantedAt: leased.grantedAt, expiresAt: leased.expiresAt)
            }
        case .stepCompleted(let completed):
            updateNode(completed.node) { node in
                node.status = .succeeded
                node.lease = nil
            }
        case .stepFailed(let failed):
            let maxAttempts = plan.node(failed.node)?.maxAttempts ?? 1
            updateNode(failed.node) { node in
                node.lease = nil
                node.lastFailure = failed.reason
                node.status = failed.retryable && node.attempts < maxAttempts ? .pending : .failed
            }
        case .migrationPaused(let reason):
            status = .paused
            statusReason = reason
        case .migrationResumed:
            status = .running
            statusReason = nil
        case .migrationAborted(let reason):
            status = .aborted
            statusReason = reason
            releaseLeases()
        case .migrationSucceeded:
            status = .succeeded
            statusReason = nil
        case .migrationFailed(let node, let reason):
            status = .failed
            statusReason = "node \(node) failed: \(reason)"
            releaseLeases()
        }
    }

    private mutating func updateNode(_ id: NodeID, _ change: (inout NodeState) -> Void) {
        guard let index = nodeIndex(id) else { return }
        change(&nodes[index])
    }

    private mutating func releaseLeases() {
        for index in nodes.indices where nodes[index].status == .running {
            nodes[index].status = .pending
            nodes[index].lease = nil
        }
    }
}
