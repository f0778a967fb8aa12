import LockstepCore
import Testing

/// A plan with a gate and an irreversible node:
/// expand (rollback) → backfill (rollback) → switch (gate: 2 approvals, rollback) → contract (gate, irreversible) → cleanup (rollback)
let gatedPlan = PlanSnapshot(
    name: "gated", version: 1, contentHash: "h",
    services: [ServiceSpec(name: "orders", owners: ["orders-team"]), ServiceSpec(name: "ledger", owners: ["ledger-team", "dba"])],
    nodes: [
        NodeSpec(id: NodeID("expand"), services: ["ledger"], phase: .expand, action: "a", rollback: RollbackSpec(action: "undo-expand")),
        NodeSpec(id: NodeID("backfill"), services: ["ledger"], phase: .backfill, action: "a", needs: [NodeID("expand")],
                 retry: RetryPolicy(maxAttempts: 2), rollback: RollbackSpec(action: "undo-backfill")),
        NodeSpec(id: NodeID("switch"), services: ["orders", "ledger"], phase: .live, action: "a", needs: [NodeID("backfill")],
                 rollback: RollbackSpec(action: "switch-back"), approval: ApprovalGate(minimum: 2)),
        NodeSpec(id: NodeID("contract"), services: ["orders"], phase: .contract, action: "a", needs: [NodeID("switch")],
                 approval: ApprovalGate(minimum: 1, from: ["dba"]), irreversible: true),
        NodeSpec(id: NodeID("cleanup"), services: ["orders"], phase: .cleanup, action: "a", needs: [NodeID("contract")],
                 rollback: RollbackSpec(action: "restore")),
    ])

let gatedID = MigrationID("gated-1")
let gatedStart = MigrationEvent.migrationStarted(MigrationStarted(migration: gatedID, plan: gatedPlan, startedAt: t(0), startedBy: "alice"))

func approved(_ node: String, by approver: String, at seconds: Int64 = 5, comment: String = "ok") -> MigrationEvent {
    .approvalGranted(ApprovalDecision(node: NodeID(node), approver: approver, comment: comment, at: t(seconds)))
}

/// Events that run `nodes` forward to success, one after another.
func ran(_ nodes: [String]) -> [MigrationEvent] {
    nodes.flatMap { [leased($0, token: 1), completed($0, token: 1)] }
}

func decide(_ events: [MigrationEvent], _ command: MigrationCommand, at seconds: Int64 = 10) -> Decision {
    MigrationState.decide(MigrationState.given(events), command, now: t(seconds))
}

@Suite struct ApprovalGateTests {
    let upToSwitch = [gatedStart] + ran(["expand", "backfill"])

    @Test func aGatedNodeAwaitsApprovalOnceItsNeedsSucceeded() {
        let state = MigrationState.given(upToSwitch)!
        #expect(state.nodeDisplayStatus(NodeID("switch")) == .awaitingApproval)
        #expect(state.readyNodes == [])
        #expect(decide(upToSwitch, .leaseStep(node: NodeID("switch"), agent: "a", ttlMillis: 1_000))
            == .rejected(.awaitingApproval(NodeID("switch"), approvals: 0, needed: 2)))
    }

    @Test func anOwnerApprovesWithAComment() {
        #expect(decide(upToSwitch, .approve(node: NodeID("switch"), approver: "bob", groups: ["orders-team"], comment: "ok"), at: 5)
            == .accepted([approved("switch", by: "bob")]))
    }

    @Test func theRequesterCannotApprove() {
        #expect(decide(upToSwitch, .approve(node: NodeID("switch"), approver: "alice", groups: ["orders-team"], comment: "mine"))
            == .rejected(.requesterCannotApprove(NodeID("switch"), approver: "alice")))
        #expect(Rejection.requesterCannotApprove(NodeID("switch"), approver: "alice").description
            == "requester_cannot_approve: alice started this migration and cannot approve or reject its gate on switch; ask another owner")
    }

    @Test func someoneOutsideTheOwnerGroupsCannotApprove() {
        #expect(decide(upToSwitch, .approve(node: NodeID("switch"), approver: "mallory", groups: ["payments-team"], comment: ""))
            == .rejected(.notAnApprover(NodeID("switch"), approver: "mallory", groups: ["orders-team", "ledger-team", "dba"])))
        // A gate naming its groups accepts only those.
        let upToContract = upToSwitch + [approved("switch", by: "bob"), approved("switch", by: "carol")] + ran(["switch"])
        #expect(decide(upToContract, .approve(node: NodeID("contract"), approver: "bob", groups: ["orders-team"], comment: ""))
            == .rejected(.notAnApprover(NodeID("contract"), approver: "bob", groups: ["dba"])))
    }

    @Test func oneApproverCountsOnce() {
        #expect(decide(upToSwitch + [approved("switch", by: "bob")], .approve(node: NodeID("switch"), approver: "bob", groups: ["dba"], comment: ""))
            == .rejected(.alreadyDecided(NodeID("switch"), approver: "bob")))
    }

    @Test func twoDistinctApprovalsOpenTheGate() {
        let events = upToSwitch + [approved("switch", by: "bob"), approved("switch", by: "carol")]
        #expect(MigrationState.given(events)!.readyNodes == [NodeID("switch")])
        #expect(decide(events, .leaseStep(node: NodeID("switch"), agent: "a", ttlMillis: 30_000), at: 1)
            == .accepted([leased("switch", token: 1, agent: "a")]))
    }

    @Test func oneRejectionBlocksTheNodeAndPausesTheMigration() {
        let decision = decide(upToSwitch + [approved("switch", by: "bob")],
                              .reject(node: NodeID("switch"), approver: "carol", groups: ["ledger-team"], comment: "p99 doubled"), at: 6)
        let rejection = MigrationEvent.approvalRejected(ApprovalDecision(node: NodeID("switch"), approver: "carol", comment: "p99 doubled", at: t(6)))
        #expect(decision == .accepted([rejection, .migrationPaused(reason: "the gate on switch was rejected by carol: p99 doubled")]))
        let after = upToSwitch + [approved("switch", by: "bob"), rejection, .migrationPaused(reason: "x")]
        // The rejection blocks for good: no resume (abort is the way on), no more decisions, shown as rejected.
        #expect(decide(after, .resume) == .rejected(.gateRejected(NodeID("switch"), by: "carol")))
        #expect(Rejection.gateRejected(NodeID("switch"), by: "carol").description
            == "gate_rejected: node switch is blocked: its gate was rejected by carol; abort the migration to roll back")
        #expect(decide(after, .approve(node: NodeID("switch"), approver: "dave", groups: ["dba"], comment: ""))
            == .rejected(.gateRejected(NodeID("switch"), by: "carol")))
        #expect(MigrationState.given(after)!.nodeDisplayStatus(NodeID("switch")) == .rejected)
        // A rejection while already paused records no second pause.
        let pausedFirst = upToSwitch + [.migrationPaused(reason: "maintenance")]
        #expect(decide(pausedFirst, .reject(node: NodeID("switch"), approver: "carol", groups: ["dba"], comment: "no"), at: 6)
            == .accepted([.approvalRejected(ApprovalDecision(node: NodeID("switch"), approver: "carol", comment: "no", at: t(6)))]))
        #expect(decide(upToSwitch, .reject(node: NodeID("switch"), approver: "carol", groups: ["dba"], comment: ""))
            == .rejected(.invalidArgument("a rejection needs a comment saying why")))
    }

    @Test func theGateOpensOnlyWhenTheNodesNeedsSucceeded() {
        // Approving before the evidence exists (backfill not done) is refused, and so is an early rejection.
        #expect(decide([gatedStart] + ran(["expand"]), .approve(node: NodeID("switch"), approver: "bob", groups: ["dba"], comment: ""))
            == .rejected(.gateNotOpen(NodeID("switch"), waitingOn: [NodeID("backfill")])))
        #expect(decide([gatedStart], .reject(node: NodeID("switch"), approver: "bob", groups: ["dba"], comment: "no"))
            == .rejected(.gateNotOpen(NodeID("switch"), waitingOn: [NodeID("backfill")])))
        // Approvals are taken while paused.
        #expect(decide(upToSwitch + [.migrationPaused(reason: "x")], .approve(node: NodeID("switch"), approver: "bob", groups: ["dba"], comment: "ok"), at: 5)
            == .accepted([approved("switch", by: "bob")]))
    }

    @Test func aNodeWithoutAGateTakesNoDecisions() {
        #expect(decide([gatedStart], .approve(node: NodeID("expand"), approver: "bob", groups: ["dba"], comment: ""))
            == .rejected(.noGate(NodeID("expand"))))
    }
}

@Suite struct PauseAndResumeTests {
    @Test func pauseDuringARunningStepLetsItFinishButHandsOutNothingNew() {
        let events = [gatedStart, leased("expand", token: 1), .migrationPaused(reason: "incident 7")]
        #expect(decide(events, .completeStep(node: NodeID("expand"), token: FencingToken(1)))
            == .accepted([completed("expand", token: 1), released("expand", ["ledger"], "succeeded")]))
        let afterCompletion = events + [completed("expand", token: 1)]
        #expect(MigrationState.given(afterCompletion)!.nodeDisplayStatus(NodeID("backfill")) == .paused)
        #expect(decide(afterCompletion, .leaseStep(node: NodeID("backfill"), agent: "a", ttlMillis: 1_000))
            == .rejected(.migrationNotRunning(gatedID, status: .paused)))
        #expect(decide(afterCompletion + [.migrationResumed(rearmed: [])], .leaseStep(node: NodeID("backfill"), agent: "a", ttlMillis: 30_000), at: 1)
            == .accepted([leased("backfill", token: 1, agent: "a")]))
    }

    @Test func aPausePolicyPausesAndResumeGivesTheNodeFreshAttempts() {
        var plan = gatedPlan
        plan.nodes[0].onFailure = .pause
        let start = MigrationEvent.migrationStarted(MigrationStarted(migration: gatedID, plan: plan, startedAt: t(0), startedBy: "alice"))
        let failure = failed("expand", token: 1, retryable: false, retryAt: nil, reason: "disk")
        let pause = MigrationEvent.migrationPaused(reason: "node expand failed after 1 attempt: disk")
        #expect(decide([start, leased("expand", token: 1)], .failStep(node: NodeID("expand"), token: FencingToken(1), reason: "disk", retryable: false))
            == .accepted([failure, pause, released("expand", ["ledger"], "failed")]))
        let paused = [start, leased("expand", token: 1), failure, pause]
        #expect(decide(paused, .resume) == .accepted([.migrationResumed(rearmed: [NodeID("expand")]), requested("expand", ["ledger"])]))
        let resumed = paused + [.migrationResumed(rearmed: [NodeID("expand")])]
        #expect(MigrationState.given(resumed)!.readyNodes == [NodeID("expand")])
        #expect(decide(resumed, .leaseStep(node: NodeID("expand"), agent: "a", ttlMillis: 30_000), at: 1)
            == .accepted([leased("expand", attempt: 1, token: 2, agent: "a")]))
        // Or the operator aborts: the failed node is reported as failed, not as skipped.
        #expect(decide(paused, .abort(reason: "give up")) == .accepted([
            .migrationAborted(AbortReport(reason: "give up", skipped: [NodeID("backfill"), NodeID("switch"), NodeID("contract"), NodeID("cleanup")],
                                          failed: [NodeID("expand")], trigger: .operator)),
            .migrationRolledBack,
        ]))
    }
}

@Suite struct AbortAndRollbackTests {
    let threeDone = [gatedStart] + ran(["expand", "backfill"]) + [approved("switch", by: "bob"), approved("switch", by: "carol")] + ran(["switch"])

    @Test func abortRollsBackCompletedNodesInReverseCompletionOrder() {
        let report = AbortReport(reason: "error budget", rollback: [NodeID("switch"), NodeID("backfill"), NodeID("expand")],
                                 skipped: [NodeID("contract"), NodeID("cleanup")], trigger: .operator)
        #expect(decide(threeDone, .abort(reason: "error budget"))
            == .accepted([.migrationAborted(report), requested("switch", ["orders", "ledger"], kind: .rollback)]))
        let aborting = threeDone + [.migrationAborted(report)]
        // Only the next one in the queue may be leased, as a rollback step with a new token.
        #expect(decide(aborting, .leaseStep(node: NodeID("expand"), agent: "a", ttlMillis: 30_000))
            == .rejected(.noRollbackDue(NodeID("expand"), next: NodeID("switch"))))
        #expect(decide(aborting, .leaseStep(node: NodeID("switch"), agent: "a", ttlMillis: 30_000), at: 1)
            == .accepted([leased("switch", token: 2, agent: "a", kind: .rollback)]))
        let undone = aborting + [leased("switch", token: 2, kind: .rollback), completed("switch", token: 2, kind: .rollback),
                                 leased("backfill", token: 2, kind: .rollback), completed("backfill", token: 2, kind: .rollback),
                                 leased("expand", token: 2, kind: .rollback)]
        #expect(decide(undone, .completeStep(node: NodeID("expand"), token: FencingToken(2)))
            == .accepted([completed("expand", token: 2, kind: .rollback), .migrationRolledBack, released("expand", ["ledger"], "rolled back")]))
        let final = MigrationState.given(undone + [completed("expand", token: 2, kind: .rollback), .migrationRolledBack])!
        #expect(final.status == .rolledBack)
        #expect(final.nodes.map(\.status) == [.rolledBack, .rolledBack, .rolledBack, .skipped, .skipped])
    }

    @Test func anIrreversibleNodeStopsTheRollbackAndTheReportSaysWhatCannotBeUndone() {
        let contractDone = threeDone + [approved("contract", by: "dan")] + ran(["contract"]) + [leased("cleanup", token: 1)]
        #expect(decide(contractDone, .abort(reason: "late regression")) == .accepted([.migrationAborted(AbortReport(
            reason: "late regression", rollback: [NodeID("cleanup")],
            cannotUndo: [NodeID("contract"), NodeID("switch"), NodeID("backfill"), NodeID("expand")],
            blockedBy: NodeID("contract"), abandoned: [NodeID("cleanup")], trigger: .operator))]))
    }

    @Test func aLateReportFromAnAbandonedStepIsRefused() {
        let events = [gatedStart, leased("expand", token: 1)]
        guard case .accepted(let abort) = decide(events, .abort(reason: "stop")) else { Issue.record("abort refused"); return }
        let after = events + abort
        // The abandoned step's lease is gone, and the rollback step will carry a higher token.
        #expect(decide(after, .completeStep(node: NodeID("expand"), token: FencingToken(1))) == .rejected(.noActiveLease(NodeID("expand"))))
        #expect(decide(after, .leaseStep(node: NodeID("expand"), agent: "a", ttlMillis: 30_000), at: 1)
            == .accepted([leased("expand", token: 2, agent: "a", kind: .rollback)]))
    }

    @Test func aRunningIrreversibleStepIsNotUndoneButBlocksNothing() {
        let events = threeDone + [approved("contract", by: "dan"), leased("contract", token: 1)]
        #expect(decide(events, .abort(reason: "stop")) == .accepted([.migrationAborted(AbortReport(
            reason: "stop", rollback: [NodeID("switch"), NodeID("backfill"), NodeID("expand")], cannotUndo: [NodeID("contract")],
            skipped: [NodeID("cleanup")], abandoned: [NodeID("contract")], trigger: .operator)),
            requested("switch", ["orders", "ledger"], kind: .rollback), released("contract", ["orders"], "failed")]))
    }

    @Test func aFailedRollbackStepIsRetriedThenFailsTheMigration() {
        let report = AbortReport(reason: "stop", rollback: [NodeID("backfill"), NodeID("expand")], skipped: [NodeID("switch"), NodeID("contract"), NodeID("cleanup")])
        let aborting = [gatedStart] + ran(["expand", "backfill"]) + [.migrationAborted(report), leased("backfill", token: 2, kind: .rollback)]
        // backfill allows 2 attempts: the first rollback failure is retried (no backoff configured: at once).
        #expect(decide(aborting, .failStep(node: NodeID("backfill"), token: FencingToken(2), reason: "locked", retryable: true), at: 3)
            == .accepted([failed("backfill", token: 2, retryAt: t(3), kind: .rollback, reason: "locked")]))
        // Rollback steps get at least 3 attempts, though backfill's own policy allows 2.
        let retried = aborting + [failed("backfill", token: 2, retryAt: t(3), kind: .rollback), leased("backfill", attempt: 2, token: 3, kind: .rollback),
                                  failed("backfill", attempt: 2, token: 3, retryAt: t(4), kind: .rollback), leased("backfill", attempt: 3, token: 4, kind: .rollback)]
        #expect(decide(retried, .failStep(node: NodeID("backfill"), token: FencingToken(4), reason: "locked", retryable: true), at: 5)
            == .accepted([failed("backfill", attempt: 3, token: 4, retryAt: nil, kind: .rollback, reason: "locked"),
                          .migrationFailed(node: NodeID("backfill"), reason:
                            "its rollback failed: locked. Services: ledger: expand not undone, backfill rollback failed")]))
    }

    @Test func abortingTwiceAndPausingARollbackAreRefused() {
        let aborting = threeDone + [.migrationAborted(AbortReport(reason: "x", rollback: [NodeID("switch")]))]
        #expect(decide(aborting, .abort(reason: "again")) == .rejected(.migrationNotRunning(gatedID, status: .aborting)))
        #expect(decide(aborting, .pause(reason: "wait")) == .rejected(.migrationNotRunning(gatedID, status: .aborting)))
    }
}

@Suite struct WhilePausedTests {
    @Test func theLastStepCompletingWhilePausedSucceedsTheMigration() {
        let plan = PlanSnapshot(name: "one", version: 1, contentHash: "h", services: [ServiceSpec(name: "orders", owners: ["t"])],
                                nodes: [NodeSpec(id: NodeID("only"), services: ["orders"], phase: .custom, action: "a")])
        let id = MigrationID("one-1")
        let events: [MigrationEvent] = [.migrationStarted(MigrationStarted(migration: id, plan: plan, startedAt: t(0))),
                                        leased("only", token: 1), .migrationPaused(reason: "x")]
        #expect(MigrationState.decide(MigrationState.given(events), .completeStep(node: NodeID("only"), token: FencingToken(1)), now: t(5))
            == .accepted([completed("only", token: 1), .migrationSucceeded, released("only", ["orders"], "succeeded")]))
    }

    @Test func aPausePolicyFailureWhileAlreadyPausedRecordsNoSecondPause() {
        var plan = gatedPlan
        plan.nodes[0].onFailure = .pause
        let start = MigrationEvent.migrationStarted(MigrationStarted(migration: gatedID, plan: plan, startedAt: t(0), startedBy: "alice"))
        #expect(decide([start, leased("expand", token: 1), .migrationPaused(reason: "maintenance")],
                       .failStep(node: NodeID("expand"), token: FencingToken(1), reason: "disk", retryable: false))
            == .accepted([failed("expand", token: 1, retryable: false, retryAt: nil, reason: "disk"), released("expand", ["ledger"], "failed")]))
    }

    @Test func aDeadlineFiresWhilePaused() {
        var plan = gatedPlan
        plan.deadlineMillis = 10_000
        let events: [MigrationEvent] = [.migrationStarted(MigrationStarted(migration: gatedID, plan: plan, startedAt: t(0), startedBy: "alice")),
                                        .migrationPaused(reason: "x")]
        #expect(decide(events, .enforceDeadlines, at: 10) == .accepted([
            .migrationAborted(AbortReport(reason: "the migration's deadline passed at \(t(10))",
                                          skipped: [NodeID("expand"), NodeID("backfill"), NodeID("switch"), NodeID("contract"), NodeID("cleanup")], trigger: .deadline)),
            .migrationRolledBack,
        ]))
    }

    @Test func aRollbackRetryWaitsForItsBackoff() {
        var plan = gatedPlan
        plan.nodes[0].retry = RetryPolicy(maxAttempts: 1, backoffInitialMillis: 5_000, backoffMaxMillis: 5_000, backoffMultiplier: 1)
        let start = MigrationEvent.migrationStarted(MigrationStarted(migration: gatedID, plan: plan, startedAt: t(0), startedBy: "alice"))
        let aborting: [MigrationEvent] = [start, leased("expand", token: 1), completed("expand", token: 1),
                                          .migrationAborted(AbortReport(reason: "x", rollback: [NodeID("expand")])),
                                          leased("expand", token: 2, kind: .rollback)]
        #expect(decide(aborting, .failStep(node: NodeID("expand"), token: FencingToken(2), reason: "busy", retryable: true), at: 10)
            == .accepted([failed("expand", token: 2, retryAt: t(15), kind: .rollback, reason: "busy")]))
        let waiting = aborting + [failed("expand", token: 2, retryAt: t(15), kind: .rollback, reason: "busy")]
        #expect(decide(waiting, .leaseStep(node: NodeID("expand"), agent: "a", ttlMillis: 1_000), at: 14)
            == .rejected(.retryNotDue(NodeID("expand"), retryAt: t(15))))
        #expect(decide(waiting, .leaseStep(node: NodeID("expand"), agent: "a", ttlMillis: 30_000), at: 15)
            == .accepted([leased("expand", attempt: 2, token: 3, at: 15, agent: "a", kind: .rollback)]))
    }
}

@Suite struct DeadlineTests {
    func plan(migrationDeadline: Int64? = nil, nodeDeadline: Int64? = nil) -> [MigrationEvent] {
        var plan = gatedPlan
        plan.deadlineMillis = migrationDeadline
        plan.nodes[1].deadlineMillis = nodeDeadline
        return [.migrationStarted(MigrationStarted(migration: gatedID, plan: plan, startedAt: t(0), startedBy: "alice"))]
    }

    @Test func nothingHappensBeforeADeadline() {
        #expect(decide(plan(migrationDeadline: 60_000), .enforceDeadlines, at: 59) == .rejected(.noDeadlinePassed(gatedID)))
        #expect(MigrationState.given(plan(migrationDeadline: 60_000))!.nextDeadline == t(60))
    }

    @Test func aMigrationDeadlineAbortsIntoRollbackExactlyAtItsInstant() {
        let events = plan(migrationDeadline: 60_000) + ran(["expand"])
        #expect(decide(events, .enforceDeadlines, at: 60) == .accepted([.migrationAborted(AbortReport(
            reason: "the migration's deadline passed at \(t(60))", rollback: [NodeID("expand")],
            skipped: [NodeID("backfill"), NodeID("switch"), NodeID("contract"), NodeID("cleanup")], trigger: .deadline)),
            requested("expand", ["ledger"], kind: .rollback), released("backfill", ["ledger"], "was skipped")]))
    }

    @Test func aNodeDeadlineCountsOnlyUntilTheNodeSucceeded() {
        let events = plan(nodeDeadline: 30_000) + ran(["expand"])
        #expect(decide(events, .enforceDeadlines, at: 31) == .accepted([.migrationAborted(AbortReport(
            reason: "node backfill's deadline passed at \(t(30))", rollback: [NodeID("expand")],
            skipped: [NodeID("backfill"), NodeID("switch"), NodeID("contract"), NodeID("cleanup")], trigger: .deadline)),
            requested("expand", ["ledger"], kind: .rollback), released("backfill", ["ledger"], "was skipped")]))
        let done = events + ran(["backfill"])
        #expect(decide(done, .enforceDeadlines, at: 31) == .rejected(.noDeadlinePassed(gatedID)))
        #expect(MigrationState.given(done)!.nextDeadline == nil)
    }
}

@Suite struct RetryPolicyTests {
    @Test func backoffGrowsByTheMultiplierUpToTheCap() {
        let policy = RetryPolicy(maxAttempts: 10, backoffInitialMillis: 1_000, backoffMaxMillis: 5_000, backoffMultiplier: 2)
        #expect((1...6).map { policy.backoffMillis(afterAttempt: $0) } == [1_000, 2_000, 4_000, 5_000, 5_000, 5_000])
        #expect(RetryPolicy(maxAttempts: 3).backoffMillis(afterAttempt: 2) == 0)
        let huge = RetryPolicy(maxAttempts: 100, backoffInitialMillis: CoreLimits.durationMillisMax, backoffMaxMillis: CoreLimits.durationMillisMax,
                               backoffMultiplier: 1_000_000)
        #expect(huge.backoffMillis(afterAttempt: 100) == CoreLimits.durationMillisMax)
    }
}
