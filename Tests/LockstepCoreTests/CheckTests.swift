import LockstepCore
import Testing

/// Preflight checks in the composed decide (issue 19), each rule as Given / When / Then on a `LeaseLedger`.
@Suite struct CheckTests {
    let work = NodeID("work")

    /// A one-node plan on `orders` whose node requires `checks` before its forward step.
    func checkPlan(_ name: String = "c", _ checks: [CheckSpec], retry: RetryPolicy = RetryPolicy()) -> PlanSnapshot {
        PlanSnapshot(name: name, version: 1, contentHash: "h-\(name)", nodes: [
            NodeSpec(id: work, services: ["orders"], phase: .expand, action: "work", retry: retry, rollback: RollbackSpec(action: "undo"), checks: checks),
        ])
    }

    let backup = CheckSpec(name: "backup-verified", pass: .ok, freshForMillis: 3_600_000)
    let lag = CheckSpec(name: "replication-lag", pass: .max(5_000_000), freshForMillis: 600_000, recheckMillis: 60_000)

    func lease(_ ledger: inout LeaseLedger, at seconds: Int64) -> StepLeased? {
        guard case .accepted(let events) = ledger.run("m1", .leaseStep(node: work, agent: "agent", ttlMillis: 10_000), at: seconds),
              case .stepLeased(let leased) = events.first else { return nil }
        return leased
    }

    func report(_ ledger: inout LeaseLedger, _ leased: StepLeased, _ report: CheckReport, at seconds: Int64) -> Decision {
        ledger.run("m1", .completeStep(node: work, token: leased.token, check: report), at: seconds)
    }

    @Test func aNodeRunsItsChecksInOrderUnderCheckLeasesThenItsStep() {
        // Given a ready node that requires a verified backup and a replication lag of at most 5 s
        var ledger = LeaseLedger()
        start(&ledger, "m1", checkPlan("c", [backup, lag]))
        // When an agent asks for its step, it is given the first check, under a check lease
        guard let first = lease(&ledger, at: 1) else { Issue.record("nothing leased"); return }
        #expect(first.kind == .check && first.check == "backup-verified" && first.token == FencingToken(1))
        #expect(ledger.migration("m1").nodeDisplayStatus(work) == .checking)
        #expect(ledger.migration("m1").node(work)?.status == .pending, "a check changes nothing")
        // and nothing else while it runs
        guard case .rejected(.nodeNotReady) = ledger.run("m1", .leaseStep(node: work, agent: "other", ttlMillis: 10_000), at: 2) else {
            Issue.record("a second lease while the check runs"); return
        }
        // Then each passing result is recorded with its evidence, and the next check follows
        guard case .accepted(let events) = report(&ledger, first, CheckReport(ok: true, evidence: "backup 2026-12-04 verified"), at: 3),
              case .checkReported(let reported) = events.first else { Issue.record("not reported"); return }
        #expect(reported.outcome == .pass && reported.evidence == "backup 2026-12-04 verified" && reported.at == t(3))
        guard let second = lease(&ledger, at: 4) else { Issue.record("nothing leased"); return }
        #expect(second.kind == .check && second.check == "replication-lag" && second.token == FencingToken(2))
        _ = report(&ledger, second, CheckReport(ok: true, valueMicros: 1_200_000, evidence: "lag 1.2 s"), at: 5)
        // And with every check freshly passing, the forward step starts (attempt 1: checks are not attempts)
        guard let step = lease(&ledger, at: 6) else { Issue.record("the step did not start"); return }
        #expect(step.kind == .forward && step.attempt == 1 && step.token == FencingToken(3))
    }

    @Test func aFailingCheckBlocksTheNodeWithItsEvidenceAndRunsAgainAfterItsRecheck() {
        var ledger = LeaseLedger()
        start(&ledger, "m1", checkPlan("c", [lag]))
        guard let run = lease(&ledger, at: 1) else { Issue.record("nothing leased"); return }
        // When the lag is 42 s (above 5)
        guard case .accepted(let events) = report(&ledger, run, CheckReport(ok: true, valueMicros: 42_000_000, evidence: "replica-2 is 42 s behind"), at: 2),
              case .checkReported(let reported) = events.first else { Issue.record("not reported"); return }
        #expect(reported.outcome == .fail)
        #expect(reported.evidence == "42 is above 5: replica-2 is 42 s behind")
        // Then the node is blocked with the evidence until the recheck (60 s later); a poll waits until then
        let blocked = Rejection.checkFailed(work, check: "replication-lag", evidence: "42 is above 5: replica-2 is 42 s behind", recheckAt: t(62))
        #expect(ledger.run("m1", .leaseStep(node: work, agent: "agent", ttlMillis: 10_000), at: 30) == .rejected(blocked))
        #expect(blocked.code == "check_failed")
        #expect(ledger.state.nodeDisplayStatus(work, of: ledger.migration("m1"), at: t(30)) == .checkFailed)
        #expect(ledger.state.step(forService: "orders", at: t(30)).nextRetry == t(62))
        #expect(ledger.state.step(forService: "orders", at: t(30)).step == nil)
        #expect(!ledger.migration("m1").isWaitingForAgent(work, at: t(30)), "a blocked node does not run out its schedule_to_start")
        // When the recheck is due, the check runs again; passing, the step follows
        guard let again = lease(&ledger, at: 62), again.kind == .check else { Issue.record("the check did not run again"); return }
        _ = report(&ledger, again, CheckReport(ok: true, valueMicros: 800_000), at: 63)
        guard let step = lease(&ledger, at: 64), step.kind == .forward else { Issue.record("the step did not start"); return }
    }

    @Test func aCheckThatGoesStaleBetweenItsRunAndTheStepRunsAgain() {
        // Given a backup verified at 1 s, fresh for an hour, and a gate approved only 2 hours later
        var ledger = LeaseLedger()
        var plan = checkPlan("c", [backup])
        plan.nodes[0].approval = ApprovalGate(minimum: 1, from: ["dba"])
        start(&ledger, "m1", plan)
        #expect(ledger.run("m1", .leaseStep(node: work, agent: "agent", ttlMillis: 10_000), at: 1) == .rejected(.awaitingApproval(work, approvals: 0, needed: 1)))
        ledger.run("m1", .approve(node: work, approver: "dana", groups: ["dba"], comment: ""), at: 2)
        guard let run = lease(&ledger, at: 3) else { Issue.record("nothing leased"); return }
        _ = report(&ledger, run, CheckReport(ok: true, evidence: "verified"), at: 4)
        // When the step is asked for 3 hours later (say, after a freeze), the pass is stale: the check runs again
        guard let later = lease(&ledger, at: 4 + 3_600) else { Issue.record("nothing leased"); return }
        #expect(later.kind == .check && later.check == "backup-verified")
        // Just inside the hour it would not have
        var fresh = LeaseLedger()
        start(&fresh, "m1", checkPlan("c", [backup]))
        guard let run2 = lease(&fresh, at: 1) else { Issue.record("nothing leased"); return }
        _ = report(&fresh, run2, CheckReport(ok: true), at: 2)
        #expect(lease(&fresh, at: 2 + 3_599)?.kind == .forward)
    }

    @Test func aFailingCheckWhosePlanSaysRollbackAbortsTheMigration() {
        var ledger = LeaseLedger()
        var strict = lag
        strict.onFail = .rollback
        start(&ledger, "m1", checkPlan("c", [strict]))
        guard let run = lease(&ledger, at: 1) else { Issue.record("nothing leased"); return }
        guard case .accepted(let events) = report(&ledger, run, CheckReport(ok: false, evidence: "replica unreachable"), at: 2) else { Issue.record("refused"); return }
        guard events.count >= 2, case .migrationAborted(let abort) = events[1] else { Issue.record("no abort: \(events)"); return }
        #expect(abort.trigger == .check)
        #expect(abort.reason == "check replication-lag of work failed: the check reported failure: replica unreachable")
    }

    @Test func aCheckWhoseAgentIsLostOrWhoseHandlerFailsIsRecordedAndNeverCountsAsAnAttempt() {
        var ledger = LeaseLedger()
        start(&ledger, "m1", checkPlan("c", [lag], retry: RetryPolicy(maxAttempts: 1)))
        guard let run = lease(&ledger, at: 1) else { Issue.record("nothing leased"); return }
        // A lost agent: not run, offered again at once
        guard case .accepted(let expired) = ledger.run("m1", .expireLease(node: work, token: run.token), at: 20),
              case .checkReported(let notRun) = expired.first else { Issue.record("not recorded"); return }
        #expect(notRun.outcome == .notRun)
        // offered again after a short pause (an agent that cannot run it does not spin)
        #expect(ledger.run("m1", .leaseStep(node: work, agent: "agent", ttlMillis: 10_000), at: 21)
            == .rejected(.checkFailed(work, check: "replication-lag", evidence: notRun.evidence, recheckAt: t(25))))
        guard let again = lease(&ledger, at: 25), again.kind == .check else { Issue.record("not offered again"); return }
        // An agent that could not run it (no handler: a retryable failure): not run either
        guard case .accepted(let unable) = ledger.run("m1", .failStep(node: work, token: again.token, reason: "no handler replication-lag", retryable: true), at: 26),
              case .checkReported(let skipped) = unable.first else { Issue.record("not recorded"); return }
        #expect(skipped.outcome == .notRun && skipped.evidence == "did not run: no handler replication-lag")
        // A check that failed for good: a failed check with the reason as evidence; the node's attempts are untouched
        guard let third = lease(&ledger, at: 31) else { Issue.record("not offered again"); return }
        guard case .accepted(let failed) = ledger.run("m1", .failStep(node: work, token: third.token, reason: "psql: permission denied", retryable: false), at: 32),
              case .checkReported(let reported) = failed.first else { Issue.record("not recorded"); return }
        #expect(reported.outcome == .fail && reported.evidence == "the check reported failure: psql: permission denied")
        #expect(ledger.migration("m1").node(work)?.attempts == 0 && ledger.migration("m1").status == .running)
        // A report that is not the live lease's is refused as any stale report
        #expect(ledger.run("m1", .completeStep(node: work, token: run.token, check: CheckReport(ok: true)), at: 33)
            == .rejected(.staleFencingToken(work, current: third.token, presented: run.token)))
        // A completion that carries no result does not pass a check
        guard let fourth = lease(&ledger, at: 92) else { Issue.record("not offered again"); return }
        guard case .rejected(.invalidArgument) = ledger.run("m1", .completeStep(node: work, token: fourth.token), at: 93) else {
            Issue.record("a check passed without a result"); return
        }
    }

    @Test func anAbortAbandonsARunningCheckAndItsLateReportFindsNoLease() {
        var ledger = LeaseLedger()
        start(&ledger, "m1", checkPlan("c", [backup]))
        guard let run = lease(&ledger, at: 1) else { Issue.record("nothing leased"); return }
        guard case .accepted = ledger.run("m1", .abort(reason: "not today"), at: 2) else { Issue.record("abort refused"); return }
        #expect(ledger.migration("m1").node(work)?.lease == nil)
        #expect(ledger.migration("m1").status == .rolledBack, "nothing completed: nothing to undo")
        guard case .rejected = report(&ledger, run, CheckReport(ok: true), at: 3) else { Issue.record("a late check report was taken"); return }
    }

    @Test func checksAreHeldByFreezesAndWindowsLikeTheStepTheyPrecede() {
        var ledger = LeaseLedger()
        start(&ledger, "m1", checkPlan("c", [backup]))
        ledger.run(.freezes(.declare(Freeze(id: "f1", services: ["orders"], from: t(0), until: nil, reason: "release week", declaredBy: "olga"))), at: 1)
        #expect(ledger.run("m1", .leaseStep(node: work, agent: "agent", ttlMillis: 10_000), at: 2) == .rejected(.frozen(work, freeze: "f1", until: nil)))
    }

    @Test func aCheckBeforeTheRollbackRunsOnlyBeforeTheRollbackStepAndAFailureBlocksTheRollback() {
        // Given a node whose snapshot check must pass before it is undone (not before it is done)
        var ledger = LeaseLedger()
        let snapshot = CheckSpec(name: "snapshot-taken", pass: .ok, freshForMillis: 600_000, recheckMillis: 30_000, onFail: .rollback, before: .rollback)
        start(&ledger, "m1", checkPlan("c", [snapshot]))
        guard let step = lease(&ledger, at: 1), step.kind == .forward else { Issue.record("the forward step waited for a rollback check"); return }
        ledger.run("m1", .completeStep(node: work, token: step.token), at: 2)
        // (A one-node plan succeeds; a second migration aborted after its step shows the rollback.)
        var two = LeaseLedger()
        let plan = PlanSnapshot(name: "two", version: 1, contentHash: "h", nodes: [
            NodeSpec(id: NodeID("first"), services: ["orders"], phase: .expand, action: "a", rollback: RollbackSpec(action: "undo"), checks: [snapshot]),
            NodeSpec(id: NodeID("second"), services: ["orders"], phase: .backfill, action: "b", needs: [NodeID("first")], rollback: RollbackSpec(action: "undo")),
        ])
        start(&two, "r", plan)
        runStep(&two, "r", "first")
        two.run("r", .abort(reason: "undo it"), at: 3)
        // When the rollback is asked for, the check runs first
        guard case .accepted(let events) = two.run("r", .leaseStep(node: NodeID("first"), agent: "a", ttlMillis: 10_000), at: 4),
              case .stepLeased(let check) = events.first else { Issue.record("nothing leased"); return }
        #expect(check.kind == .check && check.check == "snapshot-taken")
        // Then a failure blocks the rollback with its evidence (a failure while rolling back never aborts again)
        guard case .accepted(let failed) = two.run("r", .completeStep(node: NodeID("first"), token: check.token, check: CheckReport(ok: false, evidence: "no snapshot")), at: 5) else {
            Issue.record("refused"); return
        }
        #expect(failed.count == 1 && two.migration("r").status == .aborting)
        #expect(two.run("r", .leaseStep(node: NodeID("first"), agent: "a", ttlMillis: 10_000), at: 6)
            == .rejected(.checkFailed(NodeID("first"), check: "snapshot-taken", evidence: "the check reported failure: no snapshot", recheckAt: t(35))))
        #expect(two.state.step(forService: "orders", at: t(6)).nextRetry == t(35))
        // And once it passes, the rollback step runs
        guard case .accepted(let again) = two.run("r", .leaseStep(node: NodeID("first"), agent: "a", ttlMillis: 10_000), at: 35),
              case .stepLeased(let recheck) = again.first, recheck.kind == .check else { Issue.record("no recheck"); return }
        two.run("r", .completeStep(node: NodeID("first"), token: recheck.token, check: CheckReport(ok: true)), at: 36)
        guard case .accepted(let undo) = two.run("r", .leaseStep(node: NodeID("first"), agent: "a", ttlMillis: 10_000), at: 37),
              case .stepLeased(let rollback) = undo.first else { Issue.record("no rollback step"); return }
        #expect(rollback.kind == .rollback)
    }

    @Test func checkRulesAndValuesAreJudgedExactly() {
        let atMost = CheckSpec(name: "c", pass: .max(5_000_000))
        let atLeast = CheckSpec(name: "c", pass: .min(990_000))
        var ledger = LeaseLedger()
        start(&ledger, "m1", checkPlan("c", [atMost]))
        guard let run = lease(&ledger, at: 1) else { return }
        guard case .accepted(let events) = report(&ledger, run, CheckReport(ok: true, valueMicros: 5_000_000), at: 2), case .checkReported(let exactly) = events.first else { return }
        #expect(exactly.outcome == .pass, "the threshold itself passes")
        var ledger2 = LeaseLedger()
        start(&ledger2, "m1", checkPlan("d", [atLeast]))
        guard let run2 = lease(&ledger2, at: 1) else { return }
        guard case .accepted(let events2) = report(&ledger2, run2, CheckReport(ok: true), at: 2), case .checkReported(let noValue) = events2.first else { return }
        #expect(noValue.outcome == .fail && noValue.evidence == "it reported no value to compare with ≥ 0.99")
        // Out-of-range values and oversized evidence are refused before anything is recorded.
        guard case .rejected(.invalidArgument) = ledger2.run("m1", .completeStep(node: work, token: FencingToken(2), check: CheckReport(ok: true, valueMicros: .max)), at: 3) else {
            Issue.record("an out-of-range value was taken"); return
        }
        guard case .rejected(.invalidArgument) = ledger2.run("m1", .completeStep(node: work, token: FencingToken(2),
                                                                                check: CheckReport(ok: true, evidence: String(repeating: "x", count: 1_025))), at: 3) else {
            Issue.record("oversized evidence was taken"); return
        }
    }

    @Test func aPlanWithChecksThatAreNotRightIsRefusedAndChecksChangeTheContentHashOnlyWhenPresent() {
        var plan = checkPlan("c", [backup, backup])
        #expect(PlanValidation.problem(in: plan)?.contains("twice") == true)
        plan.nodes[0].checks = [CheckSpec(name: "bad name!", pass: .ok)]
        #expect(PlanValidation.problem(in: plan) != nil)
        plan.nodes[0].checks = [CheckSpec(name: "c", pass: .ok, freshForMillis: 0)]
        #expect(PlanValidation.problem(in: plan)?.contains("fresh_for") == true)
        plan.nodes[0].checks = Array(repeating: backup, count: CoreLimits.checksPerNodeMax + 1).enumerated().map { index, check in
            var named = check
            named.name = "c\(index)"
            return named
        }
        #expect(PlanValidation.problem(in: plan)?.contains("the limit is \(CoreLimits.checksPerNodeMax)") == true)
        let without = checkPlan("c", [])
        #expect(without.canonicalContentBytes != checkPlan("c", [backup]).canonicalContentBytes)
        #expect(!without.canonicalContentBytes.contains(0x43) || without.canonicalContentBytes == checkPlan("c", []).canonicalContentBytes)
    }

    @Test func theCanonicalStateCarriesChecksAndTheirResults() throws {
        var ledger = LeaseLedger()
        start(&ledger, "m1", checkPlan("c", [backup, lag]))
        guard let run = lease(&ledger, at: 1) else { return }
        _ = report(&ledger, run, CheckReport(ok: true, evidence: "ok"), at: 2)
        _ = lease(&ledger, at: 3)
        let decoded = try LogState(canonicalBytes: ledger.state.canonicalBytes)
        #expect(decoded == ledger.state)
        #expect(decoded.migrations[MigrationID("m1")]?.node(work)?.lease?.check == "replication-lag")
        #expect(decoded.migrations[MigrationID("m1")]?.node(work)?.checks.first?.evidence == "ok")
    }
}

/// The plan's pause rule (issue 19): `on_pause: stop` tells running forward steps to stop when the
/// migration is paused; a step stopped that way is given back, not counted, and runs again after the resume.
@Suite struct PauseRuleTests {
    let work = NodeID("work")

    func plan(_ policy: PausePolicy) -> PlanSnapshot {
        var plan = servicePlan("p-\(policy.rawValue)", ["orders"])
        plan.onPause = policy
        return plan
    }

    @Test func underOnPauseStopARunningForwardStepIsToldToStopAndItsStopIsNotAnAttempt() {
        // Given a running step of a plan whose running steps stop on a pause
        var ledger = LeaseLedger()
        start(&ledger, "m1", plan(.stop))
        guard case .accepted(let events) = ledger.run("m1", .leaseStep(node: work, agent: "a", ttlMillis: 10_000), at: 1),
              case .stepLeased(let leased) = events.first else { Issue.record("not leased"); return }
        #expect(ledger.migration("m1").stopRequested(work, token: leased.token) == nil, "running: nothing to stop")
        // When the migration is paused, its heartbeats are told why to stop
        ledger.run("m1", .pause(reason: "incident 7"), at: 2)
        let why = ledger.migration("m1").stopRequested(work, token: leased.token)
        #expect(why == "migration m1 was paused (incident 7) and its plan says running steps stop (on_pause: stop)")
        // Then the agent's report that it stopped is recorded as given back: no attempt counted
        guard case .accepted(let stopped) = ledger.run("m1", .failStep(node: work, token: leased.token, reason: "work was stopped", retryable: true, stopped: true), at: 3),
              case .stepFailed(let failed) = stopped.first else { Issue.record("not recorded"); return }
        #expect(failed.stopped && failed.reason == "stopped: \(why ?? "")")
        #expect(ledger.migration("m1").node(work)?.attempts == 0 && ledger.migration("m1").node(work)?.status == .pending)
        // It may be halfway through changing its services: it keeps them while paused, and gives them to no freeze
        #expect(ledger.holder("orders") == "m1/work")
        #expect(!ledger.migration("m1").yieldsToFreeze(work))
        // And after the resume the step runs again as attempt 1
        ledger.run("m1", .resume, at: 4)
        guard case .accepted(let again) = ledger.run("m1", .leaseStep(node: work, agent: "a", ttlMillis: 10_000), at: 5),
              case .stepLeased(let second) = again.first else { Issue.record("not leased again"); return }
        #expect(second.attempt == 1)
        // A stop reported after a resume (the agent was still stopping its handler) is a stop too, not an attempt
        ledger.run("m1", .pause(reason: "incident 8"), at: 6)
        ledger.run("m1", .resume, at: 7)
        guard case .accepted(let late) = ledger.run("m1", .failStep(node: work, token: second.token, reason: "work was stopped", retryable: true, stopped: true), at: 8),
              case .stepFailed(let lateStop) = late.first else { Issue.record("not recorded"); return }
        #expect(lateStop.stopped && ledger.migration("m1").node(work)?.attempts == 0)
    }

    @Test func underOnPauseFinishNothingIsToldToStopAndAClaimedStopIsAnOrdinaryFailure() {
        var ledger = LeaseLedger()
        start(&ledger, "m1", plan(.finish))
        guard case .accepted(let events) = ledger.run("m1", .leaseStep(node: work, agent: "a", ttlMillis: 10_000), at: 1),
              case .stepLeased(let leased) = events.first else { Issue.record("not leased"); return }
        ledger.run("m1", .pause(reason: "incident 7"), at: 2)
        #expect(ledger.migration("m1").stopRequested(work, token: leased.token) == nil)
        guard case .accepted(let failed) = ledger.run("m1", .failStep(node: work, token: leased.token, reason: "gave up", retryable: false, stopped: true), at: 3),
              case .stepFailed(let step) = failed.first else { Issue.record("not recorded"); return }
        #expect(!step.stopped && ledger.migration("m1").node(work)?.status == .failed)
    }

    @Test func rollbackStepsAlwaysFinishAndTheRuleChangesTheContentHashOnlyWhenItIsStop() {
        var ledger = LeaseLedger()
        start(&ledger, "m1", twoStepPlan)
        #expect(plan(.finish).canonicalContentBytes == servicePlan("p-finish", ["orders"]).canonicalContentBytes)
        #expect(plan(.stop).canonicalContentBytes != servicePlan("p-stop", ["orders"]).canonicalContentBytes)
        var stopping = twoStepPlan
        stopping.name = "two-stop"
        stopping.onPause = .stop
        var rollback = LeaseLedger()
        start(&rollback, "r", stopping)
        runStep(&rollback, "r", "first")
        rollback.run("r", .abort(reason: "undo"), at: 2)
        guard case .accepted(let events) = rollback.run("r", .leaseStep(node: NodeID("first"), agent: "a", ttlMillis: 10_000), at: 3),
              case .stepLeased(let leased) = events.first, leased.kind == .rollback else { Issue.record("no rollback step"); return }
        #expect(rollback.migration("r").stopRequested(NodeID("first"), token: leased.token) == nil)
    }
}
