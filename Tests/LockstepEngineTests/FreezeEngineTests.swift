import LockstepCore
import LockstepEngine
import LockstepStore
import LockstepWire
import Testing

/// A history with freezes, a stop of the line and a break-glass, at fixed instants: behind the golden
/// history scenario-v5 and the tests below.
///
/// - orders-1 runs on orders, billing-1 on billing, both ready at 0 s.
/// - 1 s: freeze f-orders on orders until 100 s; orders-1's step is refused, billing-1's runs.
/// - 3 s: an admin breaks the glass for orders-1/step-0, which then runs and completes.
/// - 5 s: the line stops on billing: billing-1 is paused (its running step finishes and reports).
/// - 8 s: the stop is lifted: billing-1 resumes.
/// - 100 s: the coordinator's timer ends f-orders.
func recordFreezeScenario(on coordinator: Coordinator) async throws {
    let admin = CommandContext(actor: Actor(kind: "user", id: "root"), triggeredBy: .user)
    let orders = MigrationID("orders-1")
    let billing = MigrationID("billing-1")
    let step0 = NodeID("step-0")
    _ = try await coordinator.start(orders, plan: ExamplePlans.chain(length: 1, service: "orders"), context: user, now: t(0))
    _ = try await coordinator.start(billing, plan: ExamplePlans.chain(length: 2, service: "billing"), context: user, now: t(0))
    try await coordinator.declareFreeze(Freeze(id: "f-orders", services: ["orders"], from: t(0), until: t(100), reason: "quarter close", declaredBy: ""),
                                        context: user, now: t(1))
    await #expect(throws: CommandError.rejected(.frozen(step0, freeze: "f-orders", until: t(100)))) {
        try await coordinator.execute(.leaseStep(node: step0, agent: "orders-agent", ttlMillis: 10_000), migration: orders, context: agent, now: t(2))
    }
    _ = try await coordinator.execute(.leaseStep(node: step0, agent: "billing-agent", ttlMillis: 10_000), migration: billing, context: agent, now: t(2))
    _ = try await coordinator.execute(.breakGlass(node: step0, scope: .freeze, by: "root", admin: true, justification: "sev1: the fix needs this index"),
                                      migration: orders, context: admin, now: t(3))
    _ = try await coordinator.execute(.leaseStep(node: step0, agent: "orders-agent", ttlMillis: 10_000), migration: orders, context: agent, now: t(4))
    _ = try await coordinator.execute(.completeStep(node: step0, token: FencingToken(1)), migration: orders, context: agent, now: t(4))
    _ = try await coordinator.stopTheLine(id: "stop-1", services: ["billing"], reason: "incident 42", context: user, now: t(5))
    _ = try await coordinator.execute(.completeStep(node: step0, token: FencingToken(1)), migration: billing, context: agent, now: t(6))
    _ = try await coordinator.endFreeze("stop-1", reason: "incident 42 resolved", context: user, now: t(8))
    _ = await coordinator.tick(now: t(100))
}

@Suite struct FreezeEngineTests {
    @Test func stoppingTheLinePausesWhatItTouchesAndItsLiftResumesOnlyThose() async throws {
        let coordinator = try await Coordinator.open(log: InMemoryEventLog(), snapshotIntervalEvents: 0)
        for (id, service) in [("a-1", "orders"), ("b-1", "billing"), ("c-1", "orders")] {
            _ = try await coordinator.start(MigrationID(id), plan: ExamplePlans.chain(length: 2, service: service), context: user, now: t(0))
        }
        // c-1 was paused by a person before: the stop leaves it, and its lift does not resume it.
        _ = try await coordinator.execute(.pause(reason: "waiting for a DBA"), migration: MigrationID("c-1"), context: user, now: t(1))
        let stop = try await coordinator.stopTheLine(id: "stop-7", services: ["orders"], reason: "incident 7", context: user, now: t(2))
        #expect(stop.paused == [MigrationID("a-1")])
        #expect(stop.freeze.stopsLine && stop.freeze.declaredBy == "alice" && stop.freeze.until == nil)
        let paused = await coordinator.migration(MigrationID("a-1"))
        #expect(paused?.status == .paused && paused?.lineStop == "stop-7")
        #expect(paused?.statusReason == "the line was stopped by alice (freeze stop-7 on orders): incident 7")
        #expect(await coordinator.migration(MigrationID("b-1"))?.status == .running)
        let end = try await coordinator.endFreeze("stop-7", reason: "resolved", context: user, now: t(3))
        #expect(end.resumed == [MigrationID("a-1")] && end.notResumed.isEmpty)
        #expect(await coordinator.migration(MigrationID("a-1"))?.status == .running)
        #expect(await coordinator.migration(MigrationID("c-1"))?.status == .paused)
        await #expect(throws: CommandError.rejected(.freezeNotFound("stop-7"))) {
            try await coordinator.endFreeze("stop-7", reason: "again", context: user, now: t(4))
        }
    }

    @Test func theTimerEndsAFreezeAtItsEndTimeAndTheWaitingNodeGetsItsServices() async throws {
        let coordinator = try await Coordinator.open(log: InMemoryEventLog(), snapshotIntervalEvents: 0)
        let step0 = NodeID("step-0")
        try await coordinator.declareFreeze(Freeze(id: "f1", services: [], from: t(0), until: t(50), reason: "release week", declaredBy: ""),
                                            context: user, now: t(0))
        #expect(await coordinator.nextTimerDue(now: t(1)) == t(50))
        _ = try await coordinator.start(MigrationID("m-1"), plan: ExamplePlans.chain(length: 1, service: "orders"), context: user, now: t(1))
        // Frozen before it was granted its service: set aside, so not granted.
        #expect(await coordinator.state.holder(ofService: "orders") == nil)
        #expect(await coordinator.tick(now: t(49)).freezesEnded == 0)
        #expect(await coordinator.tick(now: t(50)).freezesEnded == 1)
        #expect(await coordinator.state.freezes.isEmpty)
        #expect(await coordinator.state.holder(ofService: "orders")?.node == step0)
        let result = try await coordinator.execute(.leaseStep(node: step0, agent: "a", ttlMillis: 10_000), migration: MigrationID("m-1"), context: agent, now: t(51))
        guard case .stepLeased = result.events.first?.event else { Issue.record("not leased after the freeze ended"); return }
    }

    @Test func aHistoryWithFreezesReplaysToTheLiveStateAndSaysWhatHappened() async throws {
        let log = InMemoryEventLog()
        let coordinator = try await Coordinator.open(log: log, snapshotIntervalEvents: 0)
        try await recordFreezeScenario(on: coordinator)
        let live = await coordinator.state
        #expect(live.freezes.isEmpty)
        let replayed = try await History.replay(log)
        #expect(replayed.digest == live.digest)
        let records = try await log.read(after: 0, limit: 1_000).map { try EventRecordCodec.decodeAny($0.record) }
        let freezeLines = records.compactMap { record -> String? in
            guard case .freeze(let event) = record else { return nil }
            return "\(event.metadata.actor.id): \(event.event.summary)"
        }
        #expect(freezeLines == [
            "alice: freeze f-orders by alice on orders from 2023-11-14T22:13:20.000Z until 2023-11-14T22:15:00.000Z: quarter close",
            "alice: line stopped stop-1 by alice on billing from 2023-11-14T22:13:25.000Z until ended: incident 42",
            "alice: freeze stop-1 ended by alice: incident 42 resolved",
            "lockstep: freeze f-orders ended by lockstep: its end time (2023-11-14T22:15:00.000Z) passed",
        ])
        let glass = records.compactMap { record -> String? in
            guard case .migration(let event) = record, case .breakGlass = event.event else { return nil }
            return event.event.summary
        }
        #expect(glass == ["step-0: BREAK-GLASS by root overrides its freeze: sev1: the fix needs this index"])
    }

    @Test func aLiftLeavesToAnotherStopInForceWhatItCoversAndAnEndedIDStaysTaken() async throws {
        let coordinator = try await Coordinator.open(log: InMemoryEventLog(), snapshotIntervalEvents: 0)
        _ = try await coordinator.start(MigrationID("a-1"), plan: ExamplePlans.chain(length: 2, service: "orders"), context: user, now: t(0))
        #expect(try await coordinator.stopTheLine(id: "stop-a", services: ["orders"], reason: "incident a", context: user, now: t(1)).paused == [MigrationID("a-1")])
        _ = try await coordinator.stopTheLine(id: "stop-b", services: [], reason: "incident b", context: user, now: t(2))
        let first = try await coordinator.endFreeze("stop-a", reason: "a resolved", context: user, now: t(3))
        #expect(first.resumed.isEmpty && first.notResumed.map(\.migration) == [MigrationID("a-1")])
        #expect(await coordinator.migration(MigrationID("a-1"))?.lineStop == "stop-b")
        #expect(try await coordinator.endFreeze("stop-b", reason: "b resolved", context: user, now: t(4)).resumed == [MigrationID("a-1")])
        // stop-a's id was used: declaring it again is refused as such, not as a storage conflict.
        await #expect(throws: CommandError.rejected(.freezeExists("stop-a"))) {
            try await coordinator.declareFreeze(Freeze(id: "stop-a", services: [], from: t(5), until: nil, reason: "again", declaredBy: ""),
                                                context: user, now: t(5))
        }
    }

    @Test func aFreezeThatComesIntoForceLaterMakesAHolderThatHasNotStartedGiveItsServicesBack() async throws {
        let coordinator = try await Coordinator.open(log: InMemoryEventLog(), snapshotIntervalEvents: 0)
        _ = try await coordinator.start(MigrationID("m-1"), plan: ExamplePlans.chain(length: 1, service: "orders"), context: user, now: t(0))
        #expect(await coordinator.state.holder(ofService: "orders")?.migration == MigrationID("m-1"))
        try await coordinator.declareFreeze(Freeze(id: "f1", services: ["orders"], from: t(10), until: t(20), reason: "release week", declaredBy: ""),
                                            context: user, now: t(1))
        #expect(await coordinator.nextTimerDue(now: t(1)) == t(10), "the timer wakes when it comes into force")
        _ = await coordinator.tick(now: t(9))
        #expect(await coordinator.state.holder(ofService: "orders") != nil)
        _ = await coordinator.tick(now: t(10))
        #expect(await coordinator.state.holder(ofService: "orders") == nil, "given back when the freeze came into force")
        _ = await coordinator.tick(now: t(20))
        #expect(await coordinator.state.holder(ofService: "orders")?.migration == MigrationID("m-1"), "granted again at its end")
    }
}
