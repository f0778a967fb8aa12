import LockstepCore

/// An instant `seconds` after a fixed epoch: tests never read a clock.
func t(_ seconds: Int64) -> Instant { Instant(millisecondsSinceEpoch: 1_700_000_000_000 + seconds * 1_000) }

let migrationID = MigrationID("orders-split-1")

/// expand → backfill (3 attempts) → contract, on two services.
let plan = PlanSnapshot(
    name: "orders-split", version: 1, contentHash: "abc123",
    nodes: [
        NodeSpec(id: NodeID("expand"), services: ["orders"], phase: .expand, action: "apply-schema"),
        NodeSpec(id: NodeID("backfill"), services: ["orders", "ledger"], phase: .backfill, action: "backfill",
                 needs: [NodeID("expand")], maxAttempts: 3),
        NodeSpec(id: NodeID("contract"), services: ["orders"], phase: .contract, action: "drop-columns",
                 needs: [NodeID("backfill")]),
    ])

let started = MigrationEvent.migrationStarted(MigrationStarted(migration: migrationID, plan: plan, startedAt: t(0)))

func leased(_ node: String, attempt: UInt32 = 1, token: UInt64, at seconds: Int64 = 1, agent: String = "agent-1") -> MigrationEvent {
    .stepLeased(StepLeased(node: NodeID(node), attempt: attempt, token: FencingToken(token), agent: agent,
                           grantedAt: t(seconds), expiresAt: t(seconds + 30)))
}

func completed(_ node: String, attempt: UInt32 = 1, token: UInt64) -> MigrationEvent {
    .stepCompleted(StepCompleted(node: NodeID(node), attempt: attempt, token: FencingToken(token)))
}

func failed(_ node: String, attempt: UInt32 = 1, token: UInt64, retryable: Bool = true) -> MigrationEvent {
    .stepFailed(StepFailed(node: NodeID(node), attempt: attempt, token: FencingToken(token), reason: "timeout", retryable: retryable))
}

extension MigrationState {
    /// The state after folding `events` from nothing.
    static func given(_ events: [MigrationEvent]) -> MigrationState? {
        events.reduce(nil) { evolve($0, $1) }
    }
}
