import LockstepCore
@testable import LockstepEngine
import LockstepStore
import LockstepWire
import Synchronization
import Testing

/// A monotonic clock the test moves by hand.
final class ManualMonotonicClock: Sendable {
    private let nanos = Mutex<UInt64>(0)
    func advance(millis: UInt64) { nanos.withLock { $0 += millis * 1_000_000 } }
    var clock: MonotonicClock { { [self] in nanos.withLock { $0 } } }
}

@Suite struct LeaseTimerTests {
    func running(ttlMillis: Int64, clock: ManualMonotonicClock, log: any EventLog = InMemoryEventLog()) async throws -> Coordinator {
        let coordinator = try await Coordinator.open(log: log, monotonic: clock.clock)
        let plan = ExamplePlans.chain(length: 1)  // step-0, 3 attempts
        _ = try await coordinator.start(MigrationID("m"), plan: plan, context: user, now: t(0))
        _ = try await coordinator.execute(.leaseStep(node: NodeID("step-0"), agent: "agent-1", ttlMillis: ttlMillis), migration: MigrationID("m"),
                                          context: agent, now: t(0))
        return coordinator
    }

    @Test func heartbeatsKeepALeaseAliveAndSilenceExpiresItExactlyAtItsTTL() async throws {
        let clock = ManualMonotonicClock()
        let coordinator = try await running(ttlMillis: 1_000, clock: clock)
        clock.advance(millis: 900)
        try await coordinator.heartbeat(migration: MigrationID("m"), node: NodeID("step-0"), token: FencingToken(1), now: t(1))
        clock.advance(millis: 999)
        #expect(await coordinator.expireDueLeases(now: t(2)).isEmpty)
        clock.advance(millis: 1)
        let expired = await coordinator.expireDueLeases(now: t(2))
        #expect(expired.map(\.1) == [NodeID("step-0")])
        let node = try #require(try await coordinator.readMigration(MigrationID("m"))?.node(NodeID("step-0")))
        #expect(node.status == .pending)
        #expect(node.lastFailure == "lease expired: no heartbeat within its TTL; agent agent-1 taken as lost (1 of 3 not counted against the retry policy)")
        #expect(node.attempts == 0 && node.agentsLost == 1)
    }

    @Test func aSecondAgentTakesOverWithAHigherTokenAndTheFirstIsRefused() async throws {
        let clock = ManualMonotonicClock()
        let coordinator = try await running(ttlMillis: 1_000, clock: clock)
        clock.advance(millis: 1_000)
        _ = await coordinator.expireDueLeases(now: t(1))
        _ = try await coordinator.execute(.leaseStep(node: NodeID("step-0"), agent: "agent-2", ttlMillis: 30_000), migration: MigrationID("m"),
                                          context: agent, now: t(2))
        #expect(try await coordinator.readMigration(MigrationID("m"))?.node(NodeID("step-0"))?.lease?.token == FencingToken(2))
        await #expect(throws: CommandError.rejected(.staleFencingToken(NodeID("step-0"), current: FencingToken(2), presented: FencingToken(1)))) {
            try await coordinator.execute(.completeStep(node: NodeID("step-0"), token: FencingToken(1)), migration: MigrationID("m"), context: agent, now: t(3))
        }
        await #expect(throws: CommandError.rejected(.staleFencingToken(NodeID("step-0"), current: FencingToken(2), presented: FencingToken(1)))) {
            try await coordinator.heartbeat(migration: MigrationID("m"), node: NodeID("step-0"), token: FencingToken(1), now: t(3))
        }
        _ = try await coordinator.execute(.completeStep(node: NodeID("step-0"), token: FencingToken(2)), migration: MigrationID("m"), context: agent, now: t(4))
        #expect(try await coordinator.readMigration(MigrationID("m"))?.status == .succeeded)
        #expect(await coordinator.nextLeaseDeadlineNanos == nil)
    }

    @Test func wallClockJumpsNeitherExpireNorExtendALease() async throws {
        let clock = ManualMonotonicClock()
        let coordinator = try await running(ttlMillis: 1_000, clock: clock)
        // The wall clock leaps a day ahead, then an hour back: no monotonic time passed, nothing expires.
        #expect(await coordinator.expireDueLeases(now: t(86_400)).isEmpty)
        #expect(await coordinator.expireDueLeases(now: t(-3_600)).isEmpty)
        clock.advance(millis: 1_000)
        #expect(await coordinator.expireDueLeases(now: t(-3_600)).count == 1)
    }

    @Test func theExpiryIsRecordedAsTheCoordinatorsWithItsEvidence() async throws {
        let clock = ManualMonotonicClock()
        let log = InMemoryEventLog()
        let coordinator = try await running(ttlMillis: 1_000, clock: clock, log: log)
        clock.advance(millis: 1_000)
        _ = await coordinator.expireDueLeases(now: t(5))
        let last = try #require(try await log.read(after: 0, limit: 100).last)
        let event = try EventRecordCodec.decode(last.record)
        #expect(event.metadata.actor == .coordinator)
        #expect(event.metadata.triggeredBy == .coordinator)
        guard case .stepFailed(let failed) = event.event else { Issue.record("not a step_failed: \(event.event)"); return }
        #expect(failed.leaseExpired && failed.token == FencingToken(1) && failed.retryAt == t(5))
    }

    @Test func afterARestartEveryLiveLeaseGetsAFreshTTL() async throws {
        let path = temporaryDirectory() + "/events.sqlite"
        do {
            let clock = ManualMonotonicClock()
            _ = try await running(ttlMillis: 1_000, clock: clock, log: try SQLiteEventLog(path: path))
        }
        // A new process: its monotonic clock starts anew, and however long the outage was, the holder gets a full TTL to reconnect.
        let clock = ManualMonotonicClock()
        let restarted = try await Coordinator.open(log: try SQLiteEventLog(path: path), monotonic: clock.clock)
        clock.advance(millis: 999)
        #expect(await restarted.expireDueLeases(now: t(10_000)).isEmpty)
        clock.advance(millis: 1)
        #expect(await restarted.expireDueLeases(now: t(10_000)).count == 1)
    }
}

/// `timeouts.schedule_to_start` (issue 15: parsed, linted and documented, and nothing enforced it): a
/// step that waits for an agent (ready, holding its services) for its whole schedule_to_start, on the
/// monotonic clock, pauses its migration with `schedule_to_start_exceeded`.
@Suite struct ScheduleToStartTests {
    func started(clock: ManualMonotonicClock) async throws -> Coordinator {
        let coordinator = try await Coordinator.open(log: InMemoryEventLog(), monotonic: clock.clock)
        var plan = ExamplePlans.chain(length: 2)
        plan.nodes[0].timeouts = Timeouts(scheduleToStartMillis: 60_000)
        _ = try await coordinator.start(MigrationID("m"), plan: plan.hashed(), context: user, now: t(0))
        return coordinator
    }

    @Test func aStepNoAgentTakesPausesItsMigrationAfterItsScheduleToStart() async throws {
        let clock = ManualMonotonicClock()
        let coordinator = try await started(clock: clock)
        #expect(await coordinator.tracksScheduleToStart)
        #expect(await coordinator.pauseStepsNobodyTook(now: t(0)).isEmpty)  // starts waiting now
        clock.advance(millis: 59_999)
        // (The wall clock is not what it measures: a jump of a day changes nothing.)
        #expect(await coordinator.pauseStepsNobodyTook(now: t(86_400)).isEmpty)
        clock.advance(millis: 1)
        #expect(await coordinator.pauseStepsNobodyTook(now: t(60)) == [MigrationID("m")])
        let paused = try #require(try await coordinator.readMigration(MigrationID("m")))
        #expect(paused.status == .paused)
        #expect(paused.statusReason == "schedule_to_start_exceeded: node step-0 was ready for 1m (its schedule_to_start) and no agent of "
            + "\(ExamplePlans.chain(length: 2).nodes[0].services[0]) took its step; start one, then resume")
        // Resumed, it waits its whole schedule_to_start again.
        _ = try await coordinator.execute(.resume, migration: MigrationID("m"), context: user, now: t(61))
        #expect(await coordinator.pauseStepsNobodyTook(now: t(61)).isEmpty)
        clock.advance(millis: 59_000)
        #expect(await coordinator.pauseStepsNobodyTook(now: t(120)).isEmpty)
    }

    @Test func aStepTakenInTimeIsNotPausedAndTheTimerForgetsIt() async throws {
        let clock = ManualMonotonicClock()
        let coordinator = try await started(clock: clock)
        #expect(await coordinator.pauseStepsNobodyTook(now: t(0)).isEmpty)
        clock.advance(millis: 30_000)
        _ = try await coordinator.execute(.leaseStep(node: NodeID("step-0"), agent: "agent-1", ttlMillis: 300_000), migration: MigrationID("m"),
                                          context: agent, now: t(30))
        clock.advance(millis: 60_000)
        #expect(await coordinator.pauseStepsNobodyTook(now: t(90)).isEmpty)
        #expect(try await coordinator.readMigration(MigrationID("m"))?.status == .running)
        // The command checks the state itself: a node that is not waiting is refused.
        await #expect(throws: CommandError.rejected(.notWaitingForAgent(NodeID("step-0")))) {
            try await coordinator.execute(.scheduleToStartExceeded(node: NodeID("step-0")), migration: MigrationID("m"), context: user, now: t(90))
        }
    }
}

/// A named poll sent again gets the lease its first send took (`Coordinator.leaseTakenAgain`): renewed
/// then, since its agent counts the TTL from that answer; never once the lease timer has it past its
/// deadline; a give-back of a lease handed out again does nothing, and a lease being given back is not
/// handed out.
@Suite struct LeaseTakenAgainTests {
    func named(ttlMillis: Int64, clock: ManualMonotonicClock, log: any EventLog = InMemoryEventLog()) async throws -> Coordinator {
        let coordinator = try await Coordinator.open(log: log, monotonic: clock.clock)
        _ = try await coordinator.start(MigrationID("m"), plan: ExamplePlans.chain(length: 1), context: user, now: t(0))
        _ = try await coordinator.execute(.leaseStep(node: NodeID("step-0"), agent: "agent-1", ttlMillis: ttlMillis, holder: "bot", pollID: "poll-1"),
                                          migration: MigrationID("m"), context: agent, now: t(0))
        return coordinator
    }

    @Test func theLeaseHandedOutAgainIsRenewedAsByAHeartbeat() async throws {
        let clock = ManualMonotonicClock()
        let coordinator = try await named(ttlMillis: 1_000, clock: clock)
        clock.advance(millis: 900)
        let again = try #require(await coordinator.leaseTakenAgain(forService: "load", agent: "agent-1", holder: "bot", pollID: "poll-1"))
        #expect(again.lease.token == FencingToken(1) && again.ttlMillis == 1_000 && again.lease.attempt == 1)
        // Its TTL started again at 900 ms: not due at 1,899 ms, due at 1,900.
        clock.advance(millis: 999)
        #expect(await coordinator.expireDueLeases(now: t(2)).isEmpty)
        clock.advance(millis: 1)
        #expect(await coordinator.expireDueLeases(now: t(2)).map(\.1) == [NodeID("step-0")])
        #expect(await coordinator.leaseTakenAgain(forService: "load", agent: "agent-1", holder: "bot", pollID: "poll-1") == nil, "expired: gone")
    }

    @Test func aLeasePastItsDeadlineIsNotHandedOutAgain() async throws {
        let clock = ManualMonotonicClock()
        let coordinator = try await named(ttlMillis: 1_000, clock: clock)
        clock.advance(millis: 1_000)  // due, its expiry not appended yet
        #expect(await coordinator.leaseTakenAgain(forService: "load", agent: "agent-1", holder: "bot", pollID: "poll-1") == nil)
    }

    @Test func aGiveBackOfALeaseHandedOutAgainDoesNothing() async throws {
        let clock = ManualMonotonicClock()
        let coordinator = try await named(ttlMillis: 10_000, clock: clock)
        #expect(await coordinator.leaseTakenAgain(forService: "load", agent: "agent-1", holder: "bot", pollID: "poll-1") != nil)
        let returned = try await coordinator.giveBack(node: NodeID("step-0"), token: FencingToken(1), by: "bot", migration: MigrationID("m"), context: agent, now: t(1))
        #expect(returned == nil)
        #expect(try await coordinator.readMigration(MigrationID("m"))?.node(NodeID("step-0"))?.lease?.token == FencingToken(1), "still leased")
    }

    @Test func aLeaseBeingGivenBackIsNotHandedOutAgain() async throws {
        let clock = ManualMonotonicClock()
        let log = GatedEventLog()
        let coordinator = try await named(ttlMillis: 10_000, clock: clock, log: log)
        await log.close()
        let giving = Task {
            try await coordinator.giveBack(node: NodeID("step-0"), token: FencingToken(1), by: "bot", migration: MigrationID("m"), context: agent, now: t(1))
        }
        try await waitUntil { await log.held == 1 }
        #expect(await coordinator.leaseTakenAgain(forService: "load", agent: "agent-1", holder: "bot", pollID: "poll-1") == nil, "handed out while being given back")
        await log.open()
        #expect(try await giving.value != nil, "the give-back went on")
        #expect(try await coordinator.readMigration(MigrationID("m"))?.node(NodeID("step-0"))?.lease == nil, "given back")
        #expect(await coordinator.leaseTakenAgain(forService: "load", agent: "agent-1", holder: "bot", pollID: "poll-1") == nil)
    }
}

/// A lease handed out again is marked on its own timer, not in a list of recent hand-outs: its give-back
/// does nothing however many other leases were handed out again meanwhile, and the mark goes with the lease.
@Suite struct HandedOutAgainMarkTests {
    @Test func aGiveBackLongAfterTheHandOutStillDoesNothing() async throws {
        let clock = ManualMonotonicClock()
        let coordinator = try await LeaseTakenAgainTests().named(ttlMillis: 600_000, clock: clock)
        #expect(await coordinator.leaseTakenAgain(forService: "load", agent: "agent-1", holder: "bot", pollID: "poll-1") != nil)
        // More leases handed out again, one after another, than the 1,024 the mark's old list remembered.
        // Plans have at most 1,000 nodes: two migrations of 550 steps, one after the other.
        for run in 0..<2 {
            let other = MigrationID("other-\(run)")
            _ = try await coordinator.start(other, plan: ExamplePlans.chain(length: 550, service: "other"), context: user, now: t(0))
            for index in 0..<550 {
                let node = NodeID("step-\(index)")
                let name = "p-\(run)-\(index)"
                _ = try await coordinator.execute(.leaseStep(node: node, agent: "agent-2", ttlMillis: 600_000, holder: "bot-2", pollID: name),
                                                  migration: other, context: agent, now: t(0))
                let again = try #require(await coordinator.leaseTakenAgain(forService: "other", agent: "agent-2", holder: "bot-2", pollID: name))
                _ = try await coordinator.execute(.completeStep(node: node, token: again.lease.token), migration: other, context: agent, now: t(0))
            }
        }
        #expect(await coordinator.machine.liveStepLeaseCount == 1, "the marks went with their leases")
        // Its own migration appends meanwhile (its timers are matched to its leases again after each).
        _ = try await coordinator.execute(.reportProgress(node: NodeID("step-0"), token: FencingToken(1), percent: 50, message: "half"),
                                          migration: MigrationID("m"), context: agent, now: t(1))
        _ = try await coordinator.execute(.heartbeat(node: NodeID("step-0"), token: FencingToken(1)), migration: MigrationID("m"), context: agent, now: t(1))
        let returned = try await coordinator.giveBack(node: NodeID("step-0"), token: FencingToken(1), by: "bot", migration: MigrationID("m"),
                                                      context: agent, now: t(1))
        #expect(returned == nil)
        #expect(try await coordinator.readMigration(MigrationID("m"))?.node(NodeID("step-0"))?.lease?.token == FencingToken(1), "still leased")
    }

    @Test func theMarkGoesWithItsLease() async throws {
        let clock = ManualMonotonicClock()
        let coordinator = try await LeaseTakenAgainTests().named(ttlMillis: 1_000, clock: clock)
        #expect(await coordinator.leaseTakenAgain(forService: "load", agent: "agent-1", holder: "bot", pollID: "poll-1") != nil)
        #expect(await coordinator.machine.wasHandedOutAgain(MigrationID("m"), node: NodeID("step-0"), token: FencingToken(1)))
        clock.advance(millis: 1_000)
        #expect(await coordinator.expireDueLeases(now: t(1)).map(\.1) == [NodeID("step-0")])
        #expect(await !coordinator.machine.wasHandedOutAgain(MigrationID("m"), node: NodeID("step-0"), token: FencingToken(1)))
        // Leased again (a new token, unmarked): its give-back goes ahead.
        _ = try await coordinator.execute(.leaseStep(node: NodeID("step-0"), agent: "agent-1", ttlMillis: 1_000, holder: "bot", pollID: "poll-2"),
                                          migration: MigrationID("m"), context: agent, now: t(2))
        let token = try #require(try await coordinator.readMigration(MigrationID("m"))?.node(NodeID("step-0"))?.lease?.token)
        #expect(await !coordinator.machine.wasHandedOutAgain(MigrationID("m"), node: NodeID("step-0"), token: token))
        #expect(try await coordinator.giveBack(node: NodeID("step-0"), token: token, by: "bot", migration: MigrationID("m"), context: agent, now: t(2)) != nil)
        #expect(try await coordinator.readMigration(MigrationID("m"))?.node(NodeID("step-0"))?.lease == nil, "given back")
    }
}
