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
        case .migrationStarted(let e):
            "migration \(e.migration) started by \(e.startedBy.isEmpty ? "?" : e.startedBy): plan \(e.plan.name)@\(e.plan.version), \(e.plan.nodes.count) nodes"
        case .stepLeased(let e): "\(e.node): \(e.kind == .rollback ? "rollback " : "")attempt \(e.attempt) leased to \(e.agent), token \(e.token)"
        case .stepCompleted(let e): "\(e.node): \(e.kind == .rollback ? "rolled back" : "completed") (attempt \(e.attempt), token \(e.token))"
        case .stepFailed(let e):
            "\(e.node): \(e.kind == .rollback ? "rollback " : "")attempt \(e.attempt) \(e.leaseExpired ? "lease expired" : "failed")\(e.retryAt.map { ", retry from \($0)" } ?? ""): \(e.reason)"
        case .stepProgress(let e): "\(e.node): \(e.percent)% \(e.message)"
        case .approvalGranted(let e): "\(e.node): approved by \(e.approver)\(e.comment.isEmpty ? "" : " (\(e.comment))")"
        case .approvalRejected(let e): "\(e.node): rejected by \(e.approver) (\(e.comment))"
        case .migrationPaused(let reason): "migration paused: \(reason)"
        case .migrationResumed(let rearmed): "migration resumed" + (rearmed.isEmpty ? "" : "; fresh attempts for \(list(rearmed))")
        case .migrationAborted(let r):
            "abort: \(r.reason); roll back \(list(r.rollback)); nothing to undo \(list(r.nothingToUndo)); cannot undo \(list(r.cannotUndo))"
                + (r.blockedBy.map { " (blocked by irreversible \($0))" } ?? "") + (r.failed.isEmpty ? "" : "; failed \(list(r.failed))")
        case .migrationRolledBack: "migration rolled back"
        case .migrationSucceeded: "migration succeeded"
        case .migrationFailed(let node, let reason): "migration failed at \(node): \(reason)"
        }
    }
}

private func list(_ nodes: [NodeID]) -> String {
    nodes.isEmpty ? "-" : "[" + nodes.map(\.rawValue).joined(separator: ", ") + "]"
}
