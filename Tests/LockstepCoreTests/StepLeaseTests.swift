import LockstepCore
import Testing

@Suite struct StepLeaseTests {
    let running = [gatedStart, leased("expand", token: 1)]

    @Test func aHeartbeatFromTheHolderIsAcceptedAndRecordsNothing() {
        #expect(decide(running, .heartbeat(node: NodeID("expand"), token: FencingToken(1))) == .accepted([]))
    }

    @Test func aHeartbeatWithAStaleTokenOrWithoutALeaseIsRefused() {
        #expect(decide(running, .heartbeat(node: NodeID("expand"), token: FencingToken(0)))
            == .rejected(.staleFencingToken(NodeID("expand"), current: FencingToken(1), presented: FencingToken(0))))
        #expect(decide(running + [completed("expand", token: 1)], .heartbeat(node: NodeID("expand"), token: FencingToken(1)))
            == .rejected(.noActiveLease(NodeID("expand"))))
    }

    @Test func aLateReportAfterTheMigrationSettledIsToldItsTokenIsStale() {
        // One node, taken over after an expiry (token 2) and completed: the migration succeeded.
        let single = PlanSnapshot(name: "one", version: 1, contentHash: "h", nodes: [
            NodeSpec(id: NodeID("work"), services: ["orders"], phase: .custom, action: "w", maxAttempts: 2)])
        let settled: [MigrationEvent] = [
            .migrationStarted(MigrationStarted(migration: migrationID, plan: single, startedAt: t(0))),
            leased("work", token: 1), failed("work", token: 1), leased("work", attempt: 2, token: 2), completed("work", attempt: 2, token: 2),
            .migrationSucceeded,
        ]
        #expect(MigrationState.given(settled)?.status == .succeeded)
        for command: MigrationCommand in [.completeStep(node: NodeID("work"), token: FencingToken(1)),
                                          .failStep(node: NodeID("work"), token: FencingToken(1), reason: "late", retryable: true),
                                          .heartbeat(node: NodeID("work"), token: FencingToken(1))] {
            #expect(decide(settled, command) == .rejected(.staleFencingToken(NodeID("work"), current: FencingToken(2), presented: FencingToken(1))))
        }
        #expect(decide(settled, .completeStep(node: NodeID("work"), token: FencingToken(2))) == .rejected(.migrationSettled(migrationID, status: .succeeded)))
        #expect(decide(settled, .pause(reason: "")) == .rejected(.migrationSettled(migrationID, status: .succeeded)))
    }

    @Test func progressIsRecordedForTheLiveStepAndClearedWhenItEnds() {
        let progress = StepProgress(node: NodeID("expand"), token: FencingToken(1), percent: 40, message: "shard 3")
        #expect(decide(running, .reportProgress(node: NodeID("expand"), token: FencingToken(1), percent: 40, message: "shard 3"))
            == .accepted([.stepProgress(progress)]))
        #expect(MigrationState.given(running + [.stepProgress(progress)])!.node(NodeID("expand"))?.progress == progress)
        #expect(MigrationState.given(running + [.stepProgress(progress), completed("expand", token: 1)])!.node(NodeID("expand"))?.progress == nil)
        #expect(decide(running, .reportProgress(node: NodeID("expand"), token: FencingToken(1), percent: 101, message: ""))
            == .rejected(.invalidArgument("progress is 101%; it must be 0...100")))
        #expect(decide(running, .reportProgress(node: NodeID("expand"), token: FencingToken(9), percent: 1, message: ""))
            == .rejected(.staleFencingToken(NodeID("expand"), current: FencingToken(1), presented: FencingToken(9))))
    }

    static func lost(_ node: String, attempt: UInt32 = 1, token: UInt64, agent: String = "agent-1", count: Int, at seconds: Int64) -> MigrationEvent {
        .stepFailed(StepFailed(
            node: NodeID(node), attempt: attempt, token: FencingToken(token),
            reason: "lease expired: no heartbeat within its TTL; agent \(agent) taken as lost (\(count) of 3 not counted against the retry policy)",
            retryable: true, retryAt: t(seconds), leaseExpired: true, agentLost: true))
    }

    @Test func anExpiredLeaseIsALostAgentTheAttemptIsNotCountedAndTheStepIsOfferedAgainWithANewToken() {
        let upToBackfill = [gatedStart] + ran(["expand"]) + [leased("backfill", token: 1)]
        let expiry = Self.lost("backfill", token: 1, count: 1, at: 40)
        #expect(decide(upToBackfill, .expireLease(node: NodeID("backfill"), token: FencingToken(1)), at: 40) == .accepted([expiry]))
        let expired = upToBackfill + [expiry]
        #expect(MigrationState.given(expired)?.node(NodeID("backfill"))?.agentsLost == 1)
        // The late holder is refused before and after the new grant, which repeats attempt 1 under token 2.
        #expect(decide(expired, .completeStep(node: NodeID("backfill"), token: FencingToken(1))) == .rejected(.noActiveLease(NodeID("backfill"))))
        #expect(decide(expired, .leaseStep(node: NodeID("backfill"), agent: "agent-2", ttlMillis: 30_000), at: 41)
            == .accepted([leased("backfill", attempt: 1, token: 2, at: 41, agent: "agent-2")]))
        let retaken = expired + [leased("backfill", attempt: 1, token: 2, at: 41, agent: "agent-2")]
        #expect(decide(retaken, .completeStep(node: NodeID("backfill"), token: FencingToken(1)))
            == .rejected(.staleFencingToken(NodeID("backfill"), current: FencingToken(2), presented: FencingToken(1))))
        // An expiry naming an old token changes nothing.
        #expect(decide(retaken, .expireLease(node: NodeID("backfill"), token: FencingToken(1)))
            == .rejected(.staleFencingToken(NodeID("backfill"), current: FencingToken(2), presented: FencingToken(1))))
    }

    /// Issue 15: under the default policy of one attempt, a killed agent process rolled the whole
    /// migration back. Three lost agents are not counted; the fourth expiry is a failed attempt.
    @Test func aSingleAttemptNodeSurvivesThreeLostAgentsAndTheFourthExpiryCountsAsItsFailure() {
        var events = running  // expand: one attempt (the default policy)
        for lost in 1...3 {
            let token = UInt64(lost)
            #expect(decide(events, .expireLease(node: NodeID("expand"), token: FencingToken(token)), at: Int64(10 * lost))
                == .accepted([Self.lost("expand", token: token, count: lost, at: 10 * Int64(lost))]))
            events += [Self.lost("expand", token: token, count: lost, at: 10 * Int64(lost)),
                       leased("expand", attempt: 1, token: token + 1, at: 10 * Int64(lost) + 1)]
            #expect(MigrationState.given(events)?.status == .running)
        }
        #expect(decide(events, .expireLease(node: NodeID("expand"), token: FencingToken(4)), at: 50) == .accepted([
            .stepFailed(StepFailed(node: NodeID("expand"), attempt: 1, token: FencingToken(4),
                                   reason: "lease expired: no heartbeat within its TTL (the node already lost 3 agents; this expiry counts as a failed attempt)",
                                   retryable: true, leaseExpired: true)),
            .migrationAborted(AbortReport(reason: "node expand failed after 1 attempt: lease expired: no heartbeat within its TTL (the node already lost 3 agents; this expiry counts as a failed attempt)",
                                          skipped: [NodeID("backfill"), NodeID("switch"), NodeID("contract"), NodeID("cleanup")],
                                          failed: [NodeID("expand")], trigger: .retriesExhausted)),
            .migrationRolledBack,
            released("expand", ["ledger"], "failed"),
        ]))
    }
}

/// Issue 15: a report was checked against the lease's token but not against the principal that took
/// the lease, so another agent principal of the same service holding the token could report on it.
@Suite struct LeaseHolderTests {
    let held = [gatedStart, MigrationEvent.stepLeased(StepLeased(node: NodeID("expand"), attempt: 1, token: FencingToken(1), agent: "a1",
                                                                 grantedAt: t(1), expiresAt: t(31), holder: "orders-agent"))]

    @Test func theLeaseRecordsItsHolderAndTakesReportsFromItOnly() {
        #expect(decide([gatedStart], .leaseStep(node: NodeID("expand"), agent: "a1", ttlMillis: 30_000, holder: "orders-agent"), at: 1)
            == .accepted([held[1]]))
        #expect(MigrationState.given(held)?.node(NodeID("expand"))?.lease?.holder == "orders-agent")
        let refused = Rejection.notLeaseHolder(NodeID("expand"), holder: "orders-agent", reporter: "other-agent")
        for command: MigrationCommand in [.completeStep(node: NodeID("expand"), token: FencingToken(1), by: "other-agent"),
                                          .failStep(node: NodeID("expand"), token: FencingToken(1), reason: "x", retryable: true, by: "other-agent"),
                                          .heartbeat(node: NodeID("expand"), token: FencingToken(1), by: "other-agent"),
                                          .reportProgress(node: NodeID("expand"), token: FencingToken(1), percent: 5, message: "", by: "other-agent")] {
            #expect(decide(held, command) == .rejected(refused), "\(command)")
        }
        #expect(decide(held, .returnStep(node: NodeID("expand"), token: FencingToken(1), by: "other-agent")) == .rejected(refused))
        #expect(refused.code == "not_lease_holder")
        #expect(decide(held, .completeStep(node: NodeID("expand"), token: FencingToken(1), by: "orders-agent"))
            == .accepted([completed("expand", token: 1), released("expand", ["ledger"], "succeeded"), requested("backfill", ["ledger"])]))
        // A stale token is still told so first, whoever sends it.
        #expect(decide(held, .completeStep(node: NodeID("expand"), token: FencingToken(0), by: "other-agent"))
            == .rejected(.staleFencingToken(NodeID("expand"), current: FencingToken(1), presented: FencingToken(0))))
    }

    @Test func aLeaseWithoutARecordedHolderTakesReportsAsBefore() {
        // Histories recorded before the holder was, and callers without a principal (the rehearsal).
        let unnamed = [gatedStart, leased("expand", token: 1)]
        let handOver = [released("expand", ["ledger"], "succeeded"), requested("backfill", ["ledger"])]
        #expect(decide(unnamed, .completeStep(node: NodeID("expand"), token: FencingToken(1), by: "anyone"))
            == .accepted([completed("expand", token: 1)] + handOver))
        #expect(decide(held, .completeStep(node: NodeID("expand"), token: FencingToken(1))) == .accepted([completed("expand", token: 1)] + handOver))
    }
}

/// The node statuses people read (issue 15: the CLI compared a status with "completed", which no
/// status ever is; the wire now carries an enum, StateViewTests): every core status has its display
/// status of the same name, and none is "completed".
@Test func everyNodeStatusHasADisplayStatusOfTheSameName() {
    for status in NodeStatus.allCases {
        #expect(NodeDisplayStatus(status).rawValue == status.rawValue)
        #expect(NodeDisplayStatus(rawValue: status.rawValue) == NodeDisplayStatus(status))
    }
    #expect(NodeDisplayStatus(rawValue: "completed") == nil)
    #expect(Set(NodeDisplayStatus.allCases.map(\.rawValue)).count == NodeDisplayStatus.allCases.count)
}
