import LockstepCore
import Testing

/// `timeouts.start_to_close` (issue 15: parsed, linted and documented, and nothing enforced it; a
/// handler that heartbeats forever never timed out). Measured from the lease's recorded grant time.
@Suite struct StepTimeoutTests {
    /// work (2 attempts, 5 s backoff, start_to_close 60 s) → last (1 attempt, start_to_close 10 s, no rollback).
    static let timed = PlanSnapshot(name: "timed", version: 1, contentHash: "h", nodes: [
        NodeSpec(id: NodeID("work"), services: ["orders"], phase: .backfill, action: "copy",
                 timeouts: Timeouts(startToCloseMillis: 60_000), retry: RetryPolicy(maxAttempts: 2, backoffInitialMillis: 5_000),
                 rollback: RollbackSpec(action: "uncopy")),
        NodeSpec(id: NodeID("last"), services: ["orders"], phase: .contract, action: "drop", needs: [NodeID("work")],
                 timeouts: Timeouts(startToCloseMillis: 10_000)),
    ])
    static let start = MigrationEvent.migrationStarted(MigrationStarted(migration: migrationID, plan: timed, startedAt: t(0)))
    let running = [start, leased("work", token: 1, at: 1, ttl: 30)]

    @Test func aStepIsTimedOutOnlyOnceItsStartToClosePassed() {
        let timeOut = MigrationCommand.timeOutStep(node: NodeID("work"), token: FencingToken(1))
        #expect(MigrationState.given(running)?.nextStepTimeout == t(61))
        #expect(MigrationState.given(running)?.stepsPastStartToClose(at: t(60)).isEmpty == true)
        #expect(decide(running, timeOut, at: 60) == .rejected(.stepTimeoutNotPassed(NodeID("work"))))
        #expect(decide(running, .timeOutStep(node: NodeID("work"), token: FencingToken(2)), at: 90) == .rejected(.stepTimeoutNotPassed(NodeID("work"))))
        #expect(decide(running, .timeOutStep(node: NodeID("last"), token: FencingToken(0)), at: 90) == .rejected(.stepTimeoutNotPassed(NodeID("last"))))
        let failure = MigrationEvent.stepFailed(StepFailed(
            node: NodeID("work"), attempt: 1, token: FencingToken(1),
            reason: "start_to_close_exceeded: the step ran past its start_to_close of 1m (leased at 2023-11-14T22:13:21.000Z); its lease ends",
            retryable: true, retryAt: t(66), startToCloseExceeded: true))
        #expect(decide(running, timeOut, at: 61) == .accepted([failure]))
        let timedOut = MigrationState.given(running + [failure])!
        // The late holder is refused; the step is offered again after the backoff, with a new token.
        #expect(decide(running + [failure], .completeStep(node: NodeID("work"), token: FencingToken(1)), at: 62)
            == .rejected(.noActiveLease(NodeID("work"))))
        #expect(timedOut.node(NodeID("work"))?.status == .pending && timedOut.nextStepTimeout == nil)
        #expect(decide(running + [failure], .leaseStep(node: NodeID("work"), agent: "agent-2", ttlMillis: 30_000), at: 66)
            == .accepted([leased("work", attempt: 2, token: 2, at: 66, agent: "agent-2")]))
    }

    @Test func aStepThatHeartbeatsButNeverEndsExhaustsItsAttemptsAndTheMigrationRollsBack() {
        // The last attempt times out: no attempts left, so on_failure (rollback) applies.
        let secondAttempt = running + [
            .stepFailed(StepFailed(node: NodeID("work"), attempt: 1, token: FencingToken(1), reason: "start_to_close_exceeded: …",
                                   retryable: true, retryAt: t(66), startToCloseExceeded: true)),
            leased("work", attempt: 2, token: 2, at: 66),
        ]
        #expect(decide(secondAttempt, .heartbeat(node: NodeID("work"), token: FencingToken(2)), at: 125) == .accepted([]))
        guard case .accepted(let events) = decide(secondAttempt, .timeOutStep(node: NodeID("work"), token: FencingToken(2)), at: 126) else {
            Issue.record("the second timeout was refused")
            return
        }
        let abort = events.lazy.compactMap { event -> AbortReport? in
            if case .migrationAborted(let report) = event { report } else { nil }
        }.first
        guard case .stepFailed(let failed) = events.first, let abort else {
            Issue.record("\(events)")
            return
        }
        #expect(failed.startToCloseExceeded && failed.retryAt == nil && failed.attempt == 2)
        #expect(abort.trigger == .retriesExhausted && abort.reason.contains("start_to_close_exceeded") && abort.failed == [NodeID("work")])
        // Nothing had completed: nothing to undo, so it rolled back at once and gave its service back.
        #expect(Array(events.suffix(2)) == [.migrationRolledBack, released("work", ["orders"], "failed")])
    }

    @Test func rollbackStepsAreTimedOutToo() {
        let rollingBack = running + [completed("work", token: 1), leased("last", token: 1, at: 20)]
        guard case .accepted(let aborted) = decide(rollingBack, .abort(reason: "stop"), at: 21) else { Issue.record("abort refused"); return }
        let state = MigrationState.given(rollingBack + aborted + [leased("work", attempt: 1, token: 2, at: 22, kind: .rollback)])!
        #expect(state.nextStepTimeout == t(82))
        #expect(state.stepsPastStartToClose(at: t(82)).map(\.node) == [NodeID("work")])
    }
}
