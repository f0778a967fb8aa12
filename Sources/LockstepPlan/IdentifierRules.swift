import LockstepCore

/// The core's identifier rule, for the reader to apply at each value's line.
enum IdentifierRules {
    static func problem(_ value: String, what: String) -> String? {
        // Ask the core with a one-node plan named by the value: one rule, one source of truth.
        let probe = PlanSnapshot(name: value, version: 0, contentHash: "", nodes: [NodeSpec(id: NodeID("n"), services: ["s"], phase: .custom, action: "a")])
        guard let problem = PlanValidation.problem(in: probe) else { return nil }
        return problem.replacingOccurrences(of: "plan name", with: what)
    }
}
