import LockstepCore
import Testing

@Suite struct EvolveTests {
    @Test func foldingAFailureAndRetryGivesTheExpectedState() {
        let state = MigrationState.folded([
            started, leased("expand", token: 1), completed("expand", token: 1),
            leased("backfill", token: 1, at: 4), failed("backfill", token: 1, retryAt: t(6)), leased("backfill", attempt: 2, token: 2, at: 8),
        ])
        #expect(state == MigrationState(
            id: migrationID, plan: plan, status: .running, startedAt: t(0), statusReason: nil,
            nodes: [
                NodeState(id: NodeID("expand"), status: .succeeded, attempts: 1, lastToken: FencingToken(1)),
                NodeState(id: NodeID("backfill"), status: .running, attempts: 2, lastToken: FencingToken(2),
                          lease: StepLease(token: FencingToken(2), agent: "agent-1", grantedAt: t(8), expiresAt: t(38)),
                          lastFailure: "timeout"),
                NodeState(id: NodeID("contract")),
            ],
            completionOrder: [NodeID("expand")],
            version: 6))
    }

    @Test func evolveIsTotal() {
        // Facts that cannot follow (no migration yet, unknown node) never trap and leave the state unchanged but its version.
        #expect(MigrationState.evolve(nil, .migrationResumed(rearmed: [])) == nil)
        let state = MigrationState.folded([started])!
        var expected = state
        expected.version = 2
        #expect(MigrationState.evolve(state, completed("ghost", token: 9)) == expected)
    }

    @Test func abortReleasesLiveLeases() {
        let state = MigrationState.folded([started, leased("expand", token: 1),
                                          .migrationAborted(AbortReport(reason: "operator", rollback: [NodeID("expand")],
                                                                        abandoned: [NodeID("expand")]))])
        #expect(state?.status == .aborting)
        #expect(state?.statusReason == "operator")
        #expect(state?.rollbackQueue == [NodeID("expand")])
        #expect(state?.node(NodeID("expand")) == NodeState(id: NodeID("expand"), status: .failed, attempts: 1, lastToken: FencingToken(1),
                                                           lastFailure: "abandoned by abort"))
    }

    @Test func theLogStateFoldsMigrationsIndependently() {
        var log = LogState()
        log.evolve(migration: migrationID, sequence: 1, started)
        let other = MigrationID("other")
        log.evolve(migration: other, sequence: 2, .migrationStarted(MigrationStarted(migration: other, plan: plan, startedAt: t(1))))
        log.evolve(migration: migrationID, sequence: 3, leased("expand", token: 1))
        #expect(log.lastSequence == 3)
        #expect(log.migrationsInOrder.map(\.id) == [migrationID, other])  // "orders-…" < "other" in UTF-8 byte order
        #expect(log.migrations[migrationID]?.version == 2)
    }
}
