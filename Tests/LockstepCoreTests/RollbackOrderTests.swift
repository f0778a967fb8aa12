import LockstepCore
import Testing

/// Two independent canaries on one service, each exposed in stages with a bake after each.
let twoCanaries = PlanSnapshot(name: "two-canaries", version: 1, contentHash: "h-canaries", nodes: ["blue", "green"].map { name in
    NodeSpec(id: NodeID(name), services: ["orders"], phase: .live, action: "route-\(name)", rollback: RollbackSpec(action: "route-back-\(name)"),
             exposure: ExposureSpec(stages: [10, 100].map(ExposureStage.percent), bakeMillis: 60_000))
})

/// The rollback order after forced releases: the head of a rollback queue never waits for a service
/// that a later node of the same queue holds (it would wait forever: that node keeps its services until
/// it is undone, and it is undone only after the head).
@Suite struct RollbackOrderTests {
    let blue = NodeID("blue"), green = NodeID("green")

    /// Leases `node` and completes its step, which sets its next stage (it then bakes, holding orders).
    func setStage(_ ledger: inout LeaseLedger, _ node: NodeID, at seconds: Int64) {
        guard case .accepted(let events) = ledger.run("m", .leaseStep(node: node, agent: "agent", ttlMillis: 10_000), at: seconds),
              case .stepLeased(let leased) = events.first else { Issue.record("lease \(node) refused"); return }
        ledger.run("m", .completeStep(node: node, token: leased.token), at: seconds)
    }

    /// blue sets 10 % and bakes holding orders; an operator takes orders from it (green has been waiting),
    /// green sets 10 % and bakes; an operator takes orders from green, so blue gets it back. Both are
    /// mid-rollout; green's stage is the newer one, so the abort undoes green first, but blue holds orders.
    func bothMidRolloutThenAbort() -> LeaseLedger {
        var ledger = LeaseLedger()
        start(&ledger, "m", twoCanaries)
        #expect(ledger.holder("orders") == "m/blue")
        setStage(&ledger, blue, at: 1)
        ledger.forceRelease("m", blue, reason: "let green through", at: 2)
        #expect(ledger.holder("orders") == "m/green")
        setStage(&ledger, green, at: 3)
        ledger.forceRelease("m", green, reason: "give blue back its service", at: 4)
        #expect(ledger.holder("orders") == "m/blue")
        #expect(ledger.run("m", .abort(reason: "error budget spent"), at: 5) != .rejected(.migrationNotRunning(MigrationID("m"), status: .aborting)))
        return ledger
    }

    @Test func theHolderOfWhatTheHeadNeedsIsUndoneFirstAndTheReorderIsRecorded() {
        var ledger = bothMidRolloutThenAbort()
        let migration = ledger.migration("m")
        #expect(migration.status == .aborting)
        #expect(migration.rollbackQueue == [blue, green], "blue holds orders, so it is undone first")
        let reordered = ledger.events.compactMap { event -> RollbackReordered? in
            if case .rollbackReordered(let reordered) = event.1 { return reordered } else { return nil }
        }
        #expect(reordered == [RollbackReordered(node: blue, aheadOf: green, services: ["orders"])])
        // The rollback runs to the end: blue's undo releases orders, green gets it and is undone.
        setStage(&ledger, blue, at: 6)
        #expect(ledger.holder("orders") == "m/green")
        setStage(&ledger, green, at: 7)
        #expect(ledger.migration("m").status == .rolledBack)
        #expect(ledger.holder("orders") == nil)
    }

    @Test func withoutAForcedReleaseTheOrderIsNewestFirstAndNothingIsReordered() {
        var ledger = LeaseLedger()
        start(&ledger, "m", twoCanaries)
        setStage(&ledger, blue, at: 1)
        ledger.run("m", .abort(reason: "changed our minds"), at: 2)
        #expect(ledger.migration("m").rollbackQueue == [blue])
        #expect(!ledger.events.contains { $0.1.typeName == "rollback_reordered" })
    }
}
