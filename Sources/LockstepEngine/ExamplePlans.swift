import LockstepCore

/// Plans built into the binary, used by `lockstep demo`, load generators and tests until plan files
/// (YAML) arrive.
public enum ExamplePlans {
    /// Moving ledger entries out of the orders database: expand, dual-write, backfill, switch reads,
    /// contract, across three services.
    public static let ledgerSplit = PlanSnapshot(
        name: "ledger-split", version: 1, contentHash: "",
        description: "Move ledger entries out of the orders database into the ledger service.",
        owners: ["platform"],
        services: [
            ServiceSpec(name: "payments", owners: ["payments-team"]),
            ServiceSpec(name: "orders", owners: ["orders-team"]),
            ServiceSpec(name: "ledger", owners: ["ledger-team"]),
        ],
        nodes: [
            NodeSpec(id: NodeID("expand-ledger-schema"), services: ["ledger"], phase: .expand, action: "apply-schema",
                     rollback: RollbackSpec(action: "drop-schema")),
            NodeSpec(id: NodeID("dual-write-orders"), services: ["orders", "ledger"], phase: .dualWrite, action: "enable-dual-write",
                     needs: [NodeID("expand-ledger-schema")], rollback: RollbackSpec(action: "disable-dual-write")),
            NodeSpec(id: NodeID("backfill-ledger"), services: ["ledger"], phase: .backfill, action: "backfill",
                     needs: [NodeID("dual-write-orders")],
                     retry: RetryPolicy(maxAttempts: 3, backoffInitialMillis: 1_000, backoffMaxMillis: 30_000, backoffMultiplier: 2),
                     rollback: RollbackSpec(action: "truncate-ledger")),
            NodeSpec(id: NodeID("verify-ledger"), services: ["ledger"], phase: .verify, action: "compare-rows",
                     needs: [NodeID("backfill-ledger")]),
            NodeSpec(id: NodeID("switch-reads-payments"), services: ["payments"], phase: .live, action: "switch-reads",
                     needs: [NodeID("verify-ledger")], rollback: RollbackSpec(action: "switch-reads-back"),
                     approval: ApprovalGate(minimum: 1)),
            NodeSpec(id: NodeID("contract-orders"), services: ["orders"], phase: .contract, action: "drop-old-columns",
                     needs: [NodeID("switch-reads-payments")], approval: ApprovalGate(minimum: 1), irreversible: true),
        ]
    ).hashed()

    /// A straight chain of `length` nodes on one service, for load generation, named `name` (default `chain-LENGTH`).
    public static func chain(length: Int, service: String = "load", name: String? = nil) -> PlanSnapshot {
        let nodes = (0..<max(1, length)).map { index in
            NodeSpec(id: NodeID("step-\(index)"), services: [service], phase: .custom, action: "work",
                     needs: index == 0 ? [] : [NodeID("step-\(index - 1)")], maxAttempts: 3)
        }
        return PlanSnapshot(name: name ?? "chain-\(nodes.count)", version: 1, contentHash: "", nodes: nodes).hashed()
    }
}
