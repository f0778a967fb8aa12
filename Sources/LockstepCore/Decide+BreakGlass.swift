// Break-glass, decided by one migration: an admin's override of a freeze, a change window or a bake for
// one node (docs/gates.md). Its effect on freezes is read in Freezes.swift, on windows in Windows.swift.
extension MigrationState {
    /// An admin overrides a freeze (the node's forward steps start under any freeze), its windows (they
    /// start outside them) or a bake (it ends
    /// now and the node advances without its analysis) for one node, saying why. Never silent: the
    /// override is an event of its own, with who and why.
    func decideBreakGlass(node: NodeID, scope: BreakGlassScope, by: String, admin: Bool, justification: String, now: Instant) -> Decision {
        if let problem = Self.validateIdentifier(by, what: "admin") { return .rejected(.invalidArgument(problem)) }
        guard admin else { return .rejected(.breakGlassNotAdmin(by)) }
        if let problem = Self.validateReason(justification) { return .rejected(.invalidArgument(problem)) }
        if justification.utf8.allSatisfy({ $0 == 0x20 || $0 == 0x09 || $0 == 0x0A }) {
            return .rejected(.invalidArgument("a break-glass needs a justification saying why"))
        }
        guard let nodeState = self.node(node), plan.node(node) != nil else { return .rejected(.unknownNode(node)) }
        guard status == .running || status == .paused else { return .rejected(.migrationNotRunning(id, status: status)) }
        let override = MigrationEvent.breakGlass(BreakGlass(node: node, scope: scope, by: by, justification: justification, at: now))
        switch scope {
        case .freeze, .window:
            if nodeState.breakGlass.contains(scope) { return .rejected(.nothingToOverride(node, scope: scope, why: "it already has a \(scope.rawValue) break-glass")) }
            guard nodeState.status == .pending || nodeState.status == .baking else {
                return .rejected(.nothingToOverride(node, scope: scope, why: "it is \(nodeDisplayStatus(node).rawValue); only a node with forward steps to come waits for a \(scope.rawValue)"))
            }
            if scope == .window, let spec = plan.node(node), plan.windowLevels(of: spec).isEmpty {
                return .rejected(.nothingToOverride(node, scope: scope, why: "neither the plan, its services nor the node declare change windows"))
            }
            return .accepted([override])
        case .bake:
            guard status == .running, nodeState.status == .baking, !nodeState.exposure.awaitingDecision else {
                let why = nodeState.exposure.awaitingDecision ? "its analysis already decided and waits for a person (resume to advance)"
                    : status == .paused ? "the migration is paused; resume it first" : "it is \(nodeDisplayStatus(node).rawValue), not baking"
                return .rejected(.nothingToOverride(node, scope: scope, why: why))
            }
            var after = self
            after.evolve(override)
            let advanced = MigrationEvent.analysisOverridden(node: node, stage: nodeState.exposure.reached)
            after.evolve(advanced)
            return .accepted([override, advanced] + (after.nodes.allSatisfy { $0.status == .succeeded } ? [.migrationSucceeded] : []))
        }
    }
}
