import LockstepCore

/// Plans built into the binary, used by `lockstep demo`, load generators and tests until plan files
/// (YAML) arrive.
public enum ExamplePlans {
    /// Moving ledger entries out of the orders database: expand, dual-write, backfill, switch reads,
    /// contract, across three services.
    public static let ledgerSplit = PlanSnapshot(
        name: "ledger-split", version: 1, contentHash: "",
        nodes: [
            NodeSpec(id: NodeID("expand-ledger-schema"), services: ["ledger"], phase: .expand, action: "apply-schema"),
            NodeSpec(id: NodeID("dual-write-orders"), services: ["orders", "ledger"], phase: .dualWrite, action: "enable-dual-write",
                     needs: [NodeID("expand-ledger-schema")]),
            NodeSpec(id: NodeID("backfill-ledger"), services: ["ledger"], phase: .backfill, action: "backfill",
                     needs: [NodeID("dual-write-orders")], maxAttempts: 3),
            NodeSpec(id: NodeID("verify-ledger"), services: ["ledger"], phase: .verify, action: "compare-rows",
                     needs: [NodeID("backfill-ledger")]),
            NodeSpec(id: NodeID("switch-reads-payments"), services: ["payments"], phase: .live, action: "switch-reads",
                     needs: [NodeID("verify-ledger")]),
            NodeSpec(id: NodeID("contract-orders"), services: ["orders"], phase: .contract, action: "drop-old-columns",
                     needs: [NodeID("switch-reads-payments")]),
        ]
    ).hashed()

    /// A straight chain of `length` nodes on one service, for load generation.
    public static func chain(length: Int, service: String = "load") -> PlanSnapshot {
        let nodes = (0..<max(1, length)).map { index in
            NodeSpec(id: NodeID("step-\(index)"), services: [service], phase: .custom, action: "work",
                     needs: index == 0 ? [] : [NodeID("step-\(index - 1)")], maxAttempts: 3)
        }
        return PlanSnapshot(name: "chain-\(nodes.count)", version: 1, contentHash: "", nodes: nodes).hashed()
    }
}

extension MigrationEvent {
    /// A one-line human description (for terminals; exports use the JSON record).
    public var summary: String {
        switch self {
        case .migrationStarted(let e): "migration \(e.migration) started: plan \(e.plan.name)@\(e.plan.version), \(e.plan.nodes.count) nodes"
        case .stepLeased(let e): "\(e.node): attempt \(e.attempt) leased to \(e.agent), token \(e.token)"
        case .stepCompleted(let e): "\(e.node): attempt \(e.attempt) completed (token \(e.token))"
        case .stepFailed(let e): "\(e.node): attempt \(e.attempt) failed\(e.retryable ? " (retryable)" : ""): \(e.reason)"
        case .migrationPaused(let reason): "migration paused: \(reason)"
        case .migrationResumed: "migration resumed"
        case .migrationAborted(let reason): "migration aborted: \(reason)"
        case .migrationSucceeded: "migration succeeded"
        case .migrationFailed(let node, let reason): "migration failed at \(node): \(reason)"
        }
    }
}
