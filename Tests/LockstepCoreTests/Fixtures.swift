import LockstepCore

/// An instant `seconds` after a fixed epoch: tests never read a clock.
func t(_ seconds: Int64) -> Instant { Instant(millisecondsSinceEpoch: 1_700_000_000_000 + seconds * 1_000) }

let migrationID = MigrationID("orders-split-1")

/// expand → backfill (3 attempts, backoff 2 s doubling to 8 s) → contract, on two services.
let plan = PlanSnapshot(
    name: "orders-split", version: 1, contentHash: "abc123",
    services: [ServiceSpec(name: "orders", owners: ["orders-team"]), ServiceSpec(name: "ledger", owners: ["ledger-team"])],
    nodes: [
        NodeSpec(id: NodeID("expand"), services: ["orders"], phase: .expand, action: "apply-schema",
                 rollback: RollbackSpec(action: "drop-schema")),
        NodeSpec(id: NodeID("backfill"), services: ["orders", "ledger"], phase: .backfill, action: "backfill",
                 needs: [NodeID("expand")],
                 retry: RetryPolicy(maxAttempts: 3, backoffInitialMillis: 2_000, backoffMaxMillis: 8_000, backoffMultiplier: 2)),
        NodeSpec(id: NodeID("contract"), services: ["orders"], phase: .contract, action: "drop-columns",
                 needs: [NodeID("backfill")]),
    ])

let started = MigrationEvent.migrationStarted(MigrationStarted(migration: migrationID, plan: plan, startedAt: t(0)))

func leased(_ node: String, attempt: UInt32 = 1, token: UInt64, at seconds: Int64 = 1, agent: String = "agent-1",
            ttl: Int64 = 30, kind: StepKind = .forward) -> MigrationEvent {
    .stepLeased(StepLeased(node: NodeID(node), attempt: attempt, token: FencingToken(token), agent: agent,
                           grantedAt: t(seconds), expiresAt: t(seconds + ttl), kind: kind))
}

func completed(_ node: String, attempt: UInt32 = 1, token: UInt64, kind: StepKind = .forward) -> MigrationEvent {
    .stepCompleted(StepCompleted(node: NodeID(node), attempt: attempt, token: FencingToken(token), kind: kind))
}

/// A failed attempt; `retryAt` defaults to "a retry is due at once" so folds return the node to pending.
func failed(_ node: String, attempt: UInt32 = 1, token: UInt64, retryable: Bool = true, retryAt: Instant? = t(0),
            kind: StepKind = .forward, reason: String = "timeout") -> MigrationEvent {
    .stepFailed(StepFailed(node: NodeID(node), attempt: attempt, token: FencingToken(token), reason: reason, retryable: retryable,
                           kind: kind, retryAt: retryAt))
}

extension MigrationState {
    /// The state after folding exactly `events` from nothing (no service-lease bookkeeping).
    static func folded(_ events: [MigrationEvent]) -> MigrationState? {
        events.reduce(nil) { evolve($0, $1) }
    }

    /// The state after folding `events` from nothing, with service leases handled as an uncontended
    /// lease queue would: after each event, the bookkeeping it implies, and a grant for every request.
    /// (Service leases themselves are tested in ServiceLeaseTests, against `LogState`.)
    static func given(_ events: [MigrationEvent]) -> MigrationState? {
        events.reduce(nil) { state, event in
            guard var next = evolve(state, event) else { return nil }
            next.settleServiceLeases()
            return next
        }
    }

    /// Applies the service-lease bookkeeping and grants every request, until nothing changes.
    mutating func settleServiceLeases() {
        for event in serviceLeaseBookkeeping() { evolve(event) }
        for (spec, node) in zip(plan.nodes, nodes) where node.serviceLeases.isRequested {
            evolve(.serviceLeasesGranted(ServiceLeasesGranted(node: node.id, services: spec.services, at: startedAt)))
        }
    }
}


/// The bookkeeping event: `node` gives back `services` (its reason: "node NODE `status`").
func released(_ node: String, _ services: [String], _ status: String) -> MigrationEvent {
    .serviceLeasesReleased(ServiceLeasesReleased(node: NodeID(node), services: services, reason: "node \(node) \(status)"))
}

/// The bookkeeping event: `node` asks for `services` for a step of `kind`.
func requested(_ node: String, _ services: [String], kind: StepKind = .forward) -> MigrationEvent {
    .serviceLeasesRequested(ServiceLeasesRequested(node: NodeID(node), services: services, kind: kind))
}

/// A generator that is the same on every machine (no system randomness), for the suites that change
/// states at random.
struct Seeded {
    var state: UInt64
    mutating func next(_ bound: Int) -> Int {
        state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
        return Int((state >> 33) % UInt64(bound))
    }
}
