/// Structural checks on a plan snapshot: the part of validation that `decide` must do before a migration starts.
enum PlanValidation {
    /// A sentence naming the first problem in `plan`, or nil when it is structurally sound.
    static func problem(in plan: PlanSnapshot) -> String? {
        if let problem = MigrationState.validateIdentifier(plan.name, what: "plan name") { return problem }
        if plan.nodes.isEmpty { return "plan \(plan.name) has no nodes" }
        if plan.nodes.count > CoreLimits.planNodesMax {
            return "plan has \(plan.nodes.count) nodes; the limit is \(CoreLimits.planNodesMax)"
        }
        var seen = Set<NodeID>()
        for node in plan.nodes {
            if let problem = MigrationState.validateIdentifier(node.id.rawValue, what: "node id") { return problem }
            if !seen.insert(node.id).inserted { return "node id \(node.id) appears twice" }
            if let problem = MigrationState.validateIdentifier(node.action, what: "action of node \(node.id)") { return problem }
            if node.services.isEmpty { return "node \(node.id) names no service" }
            if node.services.count > CoreLimits.nodeServicesMax {
                return "node \(node.id) names \(node.services.count) services; the limit is \(CoreLimits.nodeServicesMax)"
            }
            for service in node.services {
                if let problem = MigrationState.validateIdentifier(service, what: "service of node \(node.id)") { return problem }
            }
            if node.needs.count > CoreLimits.nodeNeedsMax {
                return "node \(node.id) needs \(node.needs.count) nodes; the limit is \(CoreLimits.nodeNeedsMax)"
            }
            if node.maxAttempts < 1 || node.maxAttempts > CoreLimits.attemptsMax {
                return "node \(node.id) allows \(node.maxAttempts) attempts; it must be 1...\(CoreLimits.attemptsMax)"
            }
        }
        for node in plan.nodes {
            for need in node.needs where !seen.contains(need) {
                return "node \(node.id) needs \(need), which is not in the plan"
            }
        }
        return cycle(in: plan).map { "dependency cycle: \($0.map(\.rawValue).joined(separator: " -> "))" }
    }

    /// The first dependency cycle found walking nodes in plan order, or nil.
    static func cycle(in plan: PlanSnapshot) -> [NodeID]? {
        enum Mark { case visiting, done }
        var marks: [NodeID: Mark] = [:]
        var path: [NodeID] = []
        let needs = Dictionary(plan.nodes.map { ($0.id, $0.needs) }, uniquingKeysWith: { first, _ in first })

        func visit(_ id: NodeID) -> [NodeID]? {
            switch marks[id] {
            case .done: return nil
            case .visiting:
                let start = path.firstIndex(of: id) ?? 0
                return Array(path[start...]) + [id]
            case nil: break
            }
            marks[id] = .visiting
            path.append(id)
            for need in needs[id] ?? [] {
                if let found = visit(need) { return found }
            }
            path.removeLast()
            marks[id] = .done
            return nil
        }
        for node in plan.nodes {
            if let found = visit(node.id) { return found }
        }
        return nil
    }
}
