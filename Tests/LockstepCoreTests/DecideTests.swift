import LockstepCore
import Testing

@Suite struct DecideStartTests {
    @Test func startingANewMigrationRecordsThePlan() {
        #expect(MigrationState.decide(nil, .start(id: migrationID, plan: plan), now: t(0)) == .accepted([started, requested("expand", ["orders"])]))
    }

    @Test func startingAnExistingMigrationIsRejected() {
        let state = MigrationState.given([started])
        #expect(MigrationState.decide(state, .start(id: migrationID, plan: plan), now: t(5))
            == .rejected(.migrationAlreadyExists(migrationID)))
    }

    @Test func aCycleIsRejectedNamingIt() {
        var cyclic = plan
        cyclic.nodes[0].needs = [NodeID("contract")]
        let decision = MigrationState.decide(nil, .start(id: migrationID, plan: cyclic), now: t(0))
        #expect(decision == .rejected(.invalidPlan("dependency cycle: expand -> contract -> backfill -> expand")))
    }

    @Test func anUnknownDependencyIsRejected() {
        var broken = plan
        broken.nodes[2].needs = [NodeID("verify")]
        #expect(MigrationState.decide(nil, .start(id: migrationID, plan: broken), now: t(0))
            == .rejected(.invalidPlan("node contract needs verify, which is not in the plan")))
    }

    @Test func aDuplicateNodeIdIsRejected() {
        var duplicated = plan
        duplicated.nodes[1].id = NodeID("expand")
        #expect(MigrationState.decide(nil, .start(id: migrationID, plan: duplicated), now: t(0))
            == .rejected(.invalidPlan("node id expand appears twice")))
    }

    @Test func anEmptyPlanIsRejected() {
        var empty = plan
        empty.nodes = []
        #expect(MigrationState.decide(nil, .start(id: migrationID, plan: empty), now: t(0))
            == .rejected(.invalidPlan("plan orders-split has no nodes")))
    }

    @Test func identifiersAreLimitedInLengthAndAlphabet() {
        let long = MigrationID(String(repeating: "a", count: CoreLimits.identifierBytesMax + 1))
        #expect(MigrationState.decide(nil, .start(id: long, plan: plan), now: t(0))
            == .rejected(.invalidArgument("migration id is 129 bytes long; the limit is 128 bytes")))
        let atLimit = MigrationID(String(repeating: "a", count: CoreLimits.identifierBytesMax))
        #expect(MigrationState.decide(nil, .start(id: atLimit, plan: plan), now: t(0))
            == .accepted([.migrationStarted(MigrationStarted(migration: atLimit, plan: plan, startedAt: t(0))), requested("expand", ["orders"])]))
        #expect(MigrationState.decide(nil, .start(id: MigrationID("a b"), plan: plan), now: t(0))
            == .rejected(.invalidArgument("migration id \"a b\" may only contain letters, digits, '-', '_', '.', '@' and ':'")))
    }

    @Test func thePlanNodeCountIsLimited() {
        var huge = plan
        huge.nodes = (0...CoreLimits.planNodesMax).map { NodeSpec(id: NodeID("n\($0)"), services: ["s"], phase: .custom, action: "a") }
        #expect(MigrationState.decide(nil, .start(id: migrationID, plan: huge), now: t(0))
            == .rejected(.invalidPlan("plan has 1001 nodes; the limit is 1000")))
    }
}

@Suite struct DecideStepTests {
    @Test func aReadyNodeIsLeasedWithTheNextToken() {
        let state = MigrationState.given([started])
        #expect(MigrationState.decide(state, .leaseStep(node: NodeID("expand"), agent: "agent-1", ttlMillis: 30_000), now: t(1))
            == .accepted([leased("expand", token: 1)]))
    }

    @Test func aNodeWhoseNeedsHaveNotSucceededIsNotReady() {
        let state = MigrationState.given([started])
        #expect(MigrationState.decide(state, .leaseStep(node: NodeID("backfill"), agent: "agent-1", ttlMillis: 30_000), now: t(1))
            == .rejected(.nodeNotReady(NodeID("backfill"), status: .pending, waitingOn: [NodeID("expand")])))
    }

    @Test func aRunningNodeCannotBeLeasedTwice() {
        let state = MigrationState.given([started, leased("expand", token: 1)])
        #expect(MigrationState.decide(state, .leaseStep(node: NodeID("expand"), agent: "agent-2", ttlMillis: 30_000), now: t(2))
            == .rejected(.nodeNotReady(NodeID("expand"), status: .running, waitingOn: [])))
    }

    @Test func leaseTTLIsBounded() {
        let state = MigrationState.given([started])
        #expect(MigrationState.decide(state, .leaseStep(node: NodeID("expand"), agent: "a", ttlMillis: CoreLimits.leaseTTLMillisMax + 1), now: t(1))
            == .rejected(.invalidArgument("lease TTL 86400001 ms is outside 100...86400000 ms")))
        #expect(MigrationState.decide(state, .leaseStep(node: NodeID("expand"), agent: "a", ttlMillis: 99), now: t(1))
            == .rejected(.invalidArgument("lease TTL 99 ms is outside 100...86400000 ms")))
    }

    @Test func anUnknownNodeIsRejected() {
        let state = MigrationState.given([started])
        #expect(MigrationState.decide(state, .leaseStep(node: NodeID("nope"), agent: "a", ttlMillis: 1_000), now: t(1))
            == .rejected(.unknownNode(NodeID("nope"))))
    }

    @Test func completionWithTheCurrentTokenSucceedsTheNode() {
        let state = MigrationState.given([started, leased("expand", token: 1)])
        // The node gives its services back, and the next node asks for them (the lease queue then hands them over).
        #expect(MigrationState.decide(state, .completeStep(node: NodeID("expand"), token: FencingToken(1)), now: t(3))
            == .accepted([completed("expand", token: 1), released("expand", ["orders"], "succeeded"), requested("backfill", ["orders", "ledger"])]))
    }

    @Test func staleTokenIsRejected() {
        let state = MigrationState.given([
            started, leased("expand", token: 1), completed("expand", token: 1),
            leased("backfill", token: 1), failed("backfill", token: 1), leased("backfill", attempt: 2, token: 2),
        ])
        let decision = MigrationState.decide(state, .completeStep(node: NodeID("backfill"), token: FencingToken(1)), now: t(12))
        #expect(decision == .rejected(.staleFencingToken(NodeID("backfill"), current: FencingToken(2), presented: FencingToken(1))))
        #expect(Rejection.staleFencingToken(NodeID("backfill"), current: FencingToken(2), presented: FencingToken(1)).description
            == "stale_fencing_token: lease backfill is at token 2, report carried 1")
    }

    @Test func aReportWithoutALiveLeaseIsRejected() {
        let state = MigrationState.given([started, leased("expand", token: 1), completed("expand", token: 1)])
        #expect(MigrationState.decide(state, .completeStep(node: NodeID("expand"), token: FencingToken(1)), now: t(4))
            == .rejected(.noActiveLease(NodeID("expand"))))
    }

    @Test func completingTheLastNodeSucceedsTheMigration() {
        let state = MigrationState.given([
            started, leased("expand", token: 1), completed("expand", token: 1),
            leased("backfill", token: 1), completed("backfill", token: 1), leased("contract", token: 1),
        ])
        #expect(MigrationState.decide(state, .completeStep(node: NodeID("contract"), token: FencingToken(1)), now: t(9))
            == .accepted([completed("contract", token: 1), .migrationSucceeded, released("contract", ["orders"], "succeeded")]))
    }

    @Test func aRetryableFailureWithAttemptsLeftReturnsTheNodeToReady() {
        let state = MigrationState.given([started, leased("expand", token: 1), completed("expand", token: 1), leased("backfill", token: 1)])
        let decision = MigrationState.decide(
            state, .failStep(node: NodeID("backfill"), token: FencingToken(1), reason: "timeout", retryable: true), now: t(5))
        // Backoff: 2 s after the first failed attempt.
        #expect(decision == .accepted([failed("backfill", token: 1, retryAt: t(7))]))
        let after = MigrationState.given([started, leased("expand", token: 1), completed("expand", token: 1),
                                          leased("backfill", token: 1), failed("backfill", token: 1, retryAt: t(7))])
        #expect(after?.readyNodes == [NodeID("backfill")])
        #expect(MigrationState.decide(after, .leaseStep(node: NodeID("backfill"), agent: "a", ttlMillis: 1_000), now: t(6))
            == .rejected(.retryNotDue(NodeID("backfill"), retryAt: t(7))))
        #expect(MigrationState.decide(after, .leaseStep(node: NodeID("backfill"), agent: "a", ttlMillis: 1_000), now: t(7))
            == .accepted([leased("backfill", attempt: 2, token: 2, at: 7, agent: "a", ttl: 1)]))
    }

    @Test func aNonRetryableFailureAbortsTheMigrationIntoRollback() {
        let state = MigrationState.given([started, leased("expand", token: 1)])
        let decision = MigrationState.decide(
            state, .failStep(node: NodeID("expand"), token: FencingToken(1), reason: "timeout", retryable: false), now: t(5))
        // Nothing completed yet: nothing to roll back, so the migration is rolled back at once.
        #expect(decision == .accepted([
            failed("expand", token: 1, retryable: false, retryAt: nil),
            .migrationAborted(AbortReport(reason: "node expand failed after 1 attempt: timeout",
                                          skipped: [NodeID("backfill"), NodeID("contract")], failed: [NodeID("expand")], trigger: .retriesExhausted)),
            .migrationRolledBack,
            released("expand", ["orders"], "failed"),
        ]))
    }

    @Test func exhaustedRetriesAbortIntoRollbackOfWhatCompleted() {
        let state = MigrationState.given([
            started, leased("expand", token: 1), completed("expand", token: 1),
            leased("backfill", token: 1), failed("backfill", token: 1),
            leased("backfill", attempt: 2, token: 2), failed("backfill", attempt: 2, token: 2),
            leased("backfill", attempt: 3, token: 3),
        ])
        let decision = MigrationState.decide(
            state, .failStep(node: NodeID("backfill"), token: FencingToken(3), reason: "timeout", retryable: true), now: t(20))
        #expect(decision == .accepted([
            failed("backfill", attempt: 3, token: 3, retryAt: nil),
            .migrationAborted(AbortReport(reason: "node backfill failed after 3 attempts: timeout",
                                          rollback: [NodeID("expand")], skipped: [NodeID("contract")], failed: [NodeID("backfill")], trigger: .retriesExhausted)),
            requested("expand", ["orders"], kind: .rollback),
            released("backfill", ["orders", "ledger"], "failed"),
        ]))
    }

    @Test func failureReasonsAreLimited() {
        let state = MigrationState.given([started, leased("expand", token: 1)])
        let reason = String(repeating: "x", count: CoreLimits.reasonBytesMax + 1)
        #expect(MigrationState.decide(state, .failStep(node: NodeID("expand"), token: FencingToken(1), reason: reason, retryable: true), now: t(2))
            == .rejected(.invalidArgument("reason is 1025 bytes long; the limit is 1024 bytes")))
    }
}

@Suite struct DecideLifecycleTests {
    @Test func aPausedMigrationHandsOutNoSteps() {
        let state = MigrationState.given([started, .migrationPaused(reason: "incident 42")])
        #expect(MigrationState.decide(state, .leaseStep(node: NodeID("expand"), agent: "a", ttlMillis: 1_000), now: t(2))
            == .rejected(.migrationNotRunning(migrationID, status: .paused)))
    }

    @Test func aRunningStepMayFinishWhilePaused() {
        let state = MigrationState.given([started, leased("expand", token: 1), .migrationPaused(reason: "incident 42")])
        // Paused: the next node does not ask for services until the migration resumes.
        #expect(MigrationState.decide(state, .completeStep(node: NodeID("expand"), token: FencingToken(1)), now: t(3))
            == .accepted([completed("expand", token: 1), released("expand", ["orders"], "succeeded")]))
    }

    @Test func pauseTwiceAndResumeWhileRunningAreRejected() {
        let paused = MigrationState.given([started, .migrationPaused(reason: "x")])
        #expect(MigrationState.decide(paused, .pause(reason: "y"), now: t(2)) == .rejected(.alreadyPaused(migrationID)))
        let running = MigrationState.given([started])
        #expect(MigrationState.decide(running, .resume, now: t(2)) == .rejected(.notPaused(migrationID, status: .running)))
        #expect(MigrationState.decide(paused, .resume, now: t(2)) == .accepted([.migrationResumed(rearmed: []), requested("expand", ["orders"])]))
    }

    @Test func aSettledMigrationAcceptsNothing() {
        let state = MigrationState.given([started, .migrationAborted(AbortReport(reason: "wrong plan")), .migrationRolledBack])
        #expect(MigrationState.decide(state, .resume, now: t(2)) == .rejected(.migrationSettled(migrationID, status: .rolledBack)))
        #expect(MigrationState.decide(state, .abort(reason: "again"), now: t(2)) == .rejected(.migrationSettled(migrationID, status: .rolledBack)))
    }

    @Test func theLogStateKnowsMissingMigrations() {
        #expect(LogState().decide(.migration(migrationID, .resume), now: t(1)) == .rejected(.migrationNotFound(migrationID)))
    }

    @Test func aStartMustNameTheMigrationItTargets() {
        var log = LogState()
        log.evolve(migration: MigrationID("b"), sequence: 1, .migrationStarted(MigrationStarted(migration: MigrationID("b"), plan: plan, startedAt: t(0))))
        #expect(log.decide(.migration(MigrationID("a"), .start(id: MigrationID("b"), plan: plan)), now: t(1))
            == .rejected(.invalidArgument("the start command names migration b but targets a")))
        #expect(log.decide(.migration(MigrationID("b"), .start(id: MigrationID("b"), plan: plan)), now: t(1))
            == .rejected(.migrationAlreadyExists(MigrationID("b"))))
    }
}

/// Issue 15, item 3: one decide, composed in `LogState.decide`; each command reaches only its decider.
@Suite struct OneDecideTests {
    @Test func aStartRunsOnlyARegisteredPlanExactlyAsRegistered() {
        var log = LogState()
        let id = MigrationID("m")
        #expect(log.decide(.migration(id, .start(id: id, plan: plan)), now: t(1)) == .rejected(.planNotRegistered(plan.name, version: 1)))
        guard case .planEvent(let name, let event) = log.decide(.plans(.apply(plan)), now: t(1)) else { Issue.record("apply refused"); return }
        #expect(name == plan.name && event == .planApplied(plan))
        log.evolve(.plan(RecordedPlanEvent(plan: name, streamVersion: 1, metadata: EventMetadata(recordedAt: t(1), actor: .coordinator, triggeredBy: .user),
                                           event: event)), sequence: 1)
        // The same content again changes nothing; a start on it is decided by the migration.
        #expect(log.decide(.plans(.apply(plan)), now: t(2)) == .planUnchanged(version: 1))
        #expect(log.decide(.migration(id, .start(id: id, plan: plan)), now: t(2))
            == .migrationEvents(id, [.migrationStarted(MigrationStarted(migration: id, plan: plan, startedAt: t(2))), requested("expand", ["orders"])]))
        // Content or a hash other than the registered version's is not that version.
        var altered = plan
        altered.nodes[0].action = "something-else"
        var forged = plan
        forged.contentHash = "forged"
        for candidate in [altered, forged] {
            #expect(log.decide(.migration(id, .start(id: id, plan: candidate)), now: t(2)) == .rejected(.planNotRegistered(plan.name, version: 1)))
        }
    }

    @Test func theLeaseQueuesCommandsNeedALiveHolderOrRequest() {
        let log = LogState()
        let id = MigrationID("gone")
        #expect(log.decide(.serviceLeases(.forceRelease(migration: id, node: NodeID("a"), reason: "r")), now: t(1)) == .rejected(.servicesNotHeld(NodeID("a"))))
        #expect(log.decide(.serviceLeases(.grant(migration: id, node: NodeID("a"), through: 0)), now: t(1)) == .rejected(.noServiceLeaseRequest(NodeID("a"))))
        #expect(Command.serviceLeases(.grant(migration: id, node: NodeID("a"), through: 0)).stream == "migration/gone")
        #expect(Command.plans(.apply(plan)).stream == "plan/orders-split")
    }
}
