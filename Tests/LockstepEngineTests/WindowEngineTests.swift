import LockstepCore
import LockstepEngine
import LockstepPlan
import LockstepStore
import Testing

/// 2026-03-27T00:00Z, a Friday, plus `hours`: Berlin is at +01:00 until 2026-03-29T01:00Z, +02:00 after.
func march2026(_ hours: Double) -> Instant { Instant(millisecondsSinceEpoch: 1_774_569_600_000 + Int64(hours * 3_600_000)) }

/// A one-node chain on `service` whose node may start on weekdays 09:00-16:00 in Berlin.
func officeHoursPlan(_ name: String, service: String) -> PlanSnapshot {
    var plan = ExamplePlans.chain(length: 1, service: service, name: name)
    guard case .success(let window) = ChangeWindow.parse("Mon-Fri 09:00-16:00 Europe/Berlin") else { preconditionFailure() }
    plan.nodes[0].windows = [window]
    return plan.hashed()
}

/// A history with change windows across a daylight-saving change, behind the golden history scenario-v6:
///
/// - Friday 2026-03-27 15:30Z (16:30 in Berlin): w-1 starts on office hours; its step is refused
///   (`outside_window`) until Monday 09:00 in Berlin, which is 07:00Z (summer time by then).
/// - Saturday 10:00Z: w-2 starts on the same hours; an admin breaks the glass on its window; it runs.
/// - Monday 07:00Z: the timer grants w-1 its service; its step runs.
func recordWindowScenario(on coordinator: Coordinator) async throws {
    let admin = CommandContext(actor: Actor(kind: "user", id: "root"), triggeredBy: .user)
    let step0 = NodeID("step-0")
    let first = MigrationID("w-1"), second = MigrationID("w-2")
    _ = try await coordinator.start(first, plan: officeHoursPlan("office-payments", service: "payments"), context: user, now: march2026(15.5))
    await #expect(throws: CommandError.rejected(.outsideWindow(step0, windows: "Mon-Fri 09:00-16:00 Europe/Berlin", opensAt: march2026(79)))) {
        try await coordinator.execute(.leaseStep(node: step0, agent: "payments-agent", ttlMillis: 10_000), migration: first, context: agent, now: march2026(15.6))
    }
    _ = try await coordinator.start(second, plan: officeHoursPlan("office-invoices", service: "invoices"), context: user, now: march2026(34))
    _ = try await coordinator.execute(.breakGlass(node: step0, scope: .window, by: "root", admin: true, justification: "sev1: the fix cannot wait for Monday"),
                                      migration: second, context: admin, now: march2026(34.1))
    _ = await coordinator.tick(now: march2026(34.1))
    _ = try await coordinator.execute(.leaseStep(node: step0, agent: "invoices-agent", ttlMillis: 10_000), migration: second, context: agent, now: march2026(34.2))
    _ = try await coordinator.execute(.completeStep(node: step0, token: FencingToken(1)), migration: second, context: agent, now: march2026(34.3))
    _ = await coordinator.tick(now: march2026(79))
    _ = try await coordinator.execute(.leaseStep(node: step0, agent: "payments-agent", ttlMillis: 10_000), migration: first, context: agent, now: march2026(79))
    _ = try await coordinator.execute(.completeStep(node: step0, token: FencingToken(1)), migration: first, context: agent, now: march2026(79.1))
}

@Suite struct WindowEngineTests {
    @Test func theTimerWakesWhenAWindowOpensAcrossADaylightSavingChangeAndGrantsTheWaitingNode() async throws {
        let coordinator = try await Coordinator.open(log: InMemoryEventLog(), snapshotIntervalEvents: 0)
        let id = MigrationID("w-1")
        let result = try await coordinator.start(id, plan: officeHoursPlan("office", service: "orders"), context: user, now: march2026(15.5))
        // The start recorded Berlin's offsets from this machine's tzdata: +01:00, then +02:00 from 2026-03-29T01:00Z.
        guard case .migrationStarted(let started) = result.events.first?.event, let berlin = started.zones.first else { Issue.record("no zones"); return }
        #expect(started.zones.map(\.zone) == ["Europe/Berlin"])
        #expect(berlin.offsetSeconds(at: march2026(15.5)) == 3_600 && berlin.offsetSeconds(at: march2026(49)) == 7_200)
        #expect(berlin.changes.first == OffsetChange(at: march2026(49), offsetSeconds: 7_200))
        // Outside the window nothing is granted; the timer's next look is Monday 09:00 in Berlin (07:00Z).
        #expect(await coordinator.state.holder(ofService: "orders") == nil)
        #expect(await coordinator.nextTimerDue(now: march2026(15.6)) == march2026(79))
        _ = await coordinator.tick(now: march2026(78.9))
        #expect(await coordinator.state.holder(ofService: "orders") == nil)
        _ = await coordinator.tick(now: march2026(79))
        #expect(await coordinator.state.holder(ofService: "orders")?.migration == id)
        // With the window open the next look is its close, 16:00 in Berlin (14:00Z).
        #expect(await coordinator.nextTimerDue(now: march2026(79)) == march2026(86))
        // At the close, a node that has not started gives its service back, and asks again.
        _ = await coordinator.tick(now: march2026(86))
        #expect(await coordinator.state.holder(ofService: "orders") == nil)
        #expect(await coordinator.migration(id)?.node(NodeID("step-0"))?.serviceLeases.isRequested == true)
    }

    /// The next window change is kept while nothing changes (the timer asks after every pass), so a
    /// change to the migration must forget it: here an admin breaks the glass on its window. (That the
    /// answer is kept, not worked out again, is not visible here: the answer is the same.)
    @Test func aChangeToTheMigrationForgetsItsNextWindowChange() async throws {
        let coordinator = try await Coordinator.open(log: InMemoryEventLog(), snapshotIntervalEvents: 0)
        let id = MigrationID("w-1")
        _ = try await coordinator.start(id, plan: officeHoursPlan("office", service: "orders"), context: user, now: march2026(15.5))
        #expect(await coordinator.nextTimerDue(now: march2026(15.6)) == march2026(79))
        #expect(await coordinator.nextTimerDue(now: march2026(40)) == march2026(79))
        let admin = CommandContext(actor: Actor(kind: "user", id: "root"), triggeredBy: .user)
        _ = try await coordinator.execute(.breakGlass(node: NodeID("step-0"), scope: .window, by: "root", admin: true, justification: "sev1"),
                                          migration: id, context: admin, now: march2026(40.1))
        // Its window no longer holds the node: nothing is due at Monday's opening any more.
        #expect(await coordinator.nextTimerDue(now: march2026(40.2)) == nil)
    }

    @Test func aPlanNamingAZoneThisMachineDoesNotKnowIsRefusedAtApply() async throws {
        let coordinator = try await Coordinator.open(log: InMemoryEventLog(), snapshotIntervalEvents: 0)
        var plan = ExamplePlans.chain(length: 1, service: "orders", name: "mars")
        plan.windows = [ChangeWindow(days: 0x1F, startMinute: 540, endMinute: 960, zone: "Mars/Olympus_Mons")]
        await #expect(throws: CommandError.rejected(.unknownTimeZone(["Mars/Olympus_Mons"]))) {
            try await coordinator.start(MigrationID("m"), plan: plan, context: user, now: march2026(1))
        }
        #expect(await coordinator.state.plans.isEmpty)
    }

    @Test func aHistoryWithWindowsReplaysToTheLiveStateAndTheStartIgnoresZonesFromTheCaller() async throws {
        let log = InMemoryEventLog()
        let coordinator = try await Coordinator.open(log: log, snapshotIntervalEvents: 0)
        try await recordWindowScenario(on: coordinator)
        #expect(await coordinator.migration(MigrationID("w-1"))?.status == nil, "settled and gone from the live state")
        let replayed = try await History.replay(log)
        #expect(replayed.digest == (await coordinator.digest))
        // A caller's zones are never recorded: the coordinator reads its own.
        _ = try await coordinator.applyPlan(officeHoursPlan("office-x", service: "x"), context: user, now: march2026(90))
        let plan = await coordinator.state.plan("office-x")!
        let forged = ZoneOffsets(zone: "Europe/Berlin", initialOffsetSeconds: -36_000)
        let result = try await coordinator.execute(.start(id: MigrationID("x"), plan: plan, startedBy: "alice", zones: [forged]),
                                                   migration: MigrationID("x"), context: user, now: march2026(90))
        guard case .migrationStarted(let started) = result.events.first?.event else { Issue.record("not started"); return }
        #expect(started.zones.first?.initialOffsetSeconds == 7_200)
    }

    @Test func aRehearsalFromAFridayEveningStartsTheStepAtMondaysOpening() async throws {
        var options = Rehearsal.Options()
        options.start = march2026(15.5)
        let outcome = try await Rehearsal(plan: officeHoursPlan("office", service: "orders"), options: options).run()
        #expect(outcome.final.status == .succeeded)
        let leased = outcome.timeline.first { if case .stepLeased = $0.event { true } else { false } }
        #expect(leased?.offsetMillis == march2026(79).millisecondsSinceEpoch - march2026(15.5).millisecondsSinceEpoch)
        #expect(outcome.digest == outcome.replayDigest)
    }
}
