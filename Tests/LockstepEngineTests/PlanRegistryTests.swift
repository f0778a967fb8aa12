import LockstepCore
import LockstepEngine
import LockstepStore
import LockstepWire
import Testing

@Suite struct PlanRegistryTests {
    let plan = ExamplePlans.chain(length: 2, service: "orders")

    @Test func applyingTheSameContentTwiceIsANoOpAndAChangeIsANewVersion() async throws {
        let log = InMemoryEventLog()
        let coordinator = try await Coordinator.open(log: log)
        #expect(try await coordinator.applyPlan(plan, context: user, now: t(0)) == (1, true))
        #expect(try await coordinator.applyPlan(plan, context: user, now: t(1)) == (1, false))
        #expect(await log.head().sequence == 1)
        var changed = plan
        changed.nodes[1].action = "other-work"
        #expect(try await coordinator.applyPlan(changed, context: user, now: t(2)) == (2, true))
        // Going back to the first content is a change too: versions only grow.
        #expect(try await coordinator.applyPlan(plan, context: user, now: t(3)) == (3, true))
        let versions = await coordinator.state.plans[plan.name]!
        #expect(versions.map(\.version) == [1, 2, 3])
        #expect(versions[0].contentHash == versions[2].contentHash)
        #expect(versions[0].contentHash != versions[1].contentHash)
    }

    @Test func aRunningMigrationStaysOnTheVersionItStartedWith() async throws {
        let coordinator = try await Coordinator.open(log: InMemoryEventLog())
        _ = try await coordinator.applyPlan(plan, context: user, now: t(0))
        _ = try await coordinator.startMigration(MigrationID("m1"), plan: plan.name, context: user, now: t(1))
        var changed = plan
        changed.nodes.append(NodeSpec(id: NodeID("step-2"), services: ["orders"], phase: .custom, action: "more", needs: [NodeID("step-1")]))
        _ = try await coordinator.applyPlan(changed, context: user, now: t(2))
        _ = try await coordinator.startMigration(MigrationID("m2"), plan: plan.name, context: user, now: t(3))
        _ = try await coordinator.startMigration(MigrationID("m3"), plan: plan.name, version: 1, context: user, now: t(4))
        #expect(try await coordinator.readMigration(MigrationID("m1"))?.plan.version == 1)
        #expect(try await coordinator.readMigration(MigrationID("m1"))?.nodes.count == 2)
        #expect(try await coordinator.readMigration(MigrationID("m2"))?.plan.version == 2)
        #expect(try await coordinator.readMigration(MigrationID("m3"))?.plan.version == 1)
        #expect(try await coordinator.readMigration(MigrationID("m1"))?.startedBy == "alice")
    }

    @Test func startingFromAnUnknownPlanOrVersionIsRefused() async throws {
        let coordinator = try await Coordinator.open(log: InMemoryEventLog())
        await #expect(throws: CommandError.rejected(.invalidArgument("no plan named nope has been applied"))) {
            try await coordinator.startMigration(MigrationID("m"), plan: "nope", context: user, now: t(0))
        }
        _ = try await coordinator.applyPlan(plan, context: user, now: t(0))
        await #expect(throws: CommandError.rejected(.invalidArgument("plan \(plan.name) has no version 7"))) {
            try await coordinator.startMigration(MigrationID("m"), plan: plan.name, version: 7, context: user, now: t(0))
        }
    }

    @Test func anInvalidPlanIsNotApplied() async throws {
        let log = InMemoryEventLog()
        let coordinator = try await Coordinator.open(log: log)
        var cyclic = plan
        cyclic.nodes[0].needs = [NodeID("step-1")]
        await #expect(throws: CommandError.rejected(.invalidPlan("dependency cycle: step-0 -> step-1 -> step-0"))) {
            try await coordinator.applyPlan(cyclic, context: user, now: t(0))
        }
        #expect(await log.head().sequence == 0)
    }

    @Test func plansReplayAndSurviveSnapshots() async throws {
        let path = temporaryDirectory() + "/events.sqlite"
        let coordinator = try await Coordinator.open(log: try SQLiteEventLog(path: path), snapshotIntervalEvents: 0)
        _ = try await coordinator.applyPlan(plan, context: user, now: t(0))
        _ = try await coordinator.startMigration(MigrationID("m1"), plan: plan.name, context: user, now: t(1))
        _ = try await coordinator.saveSnapshot()
        var changed = plan
        changed.description = "second version"
        _ = try await coordinator.applyPlan(changed, context: user, now: t(2))
        let log = try SQLiteEventLog(path: path, mode: .readOnly)
        let replayed = try await History.replay(log)
        #expect(replayed.digest == (await coordinator.digest))
        #expect(replayed.plans[plan.name]?.map(\.version) == [1, 2])
        #expect(await (try Coordinator.open(log: log)).digest == replayed.digest)
        #expect(try await HistoryVerifier.verify(log).plans == 1)
    }
}

@Suite struct DeadlineTimerTests {
    @Test func theTimerAbortsExactlyTheMigrationsWhoseDeadlinePassed() async throws {
        let log = InMemoryEventLog()
        let coordinator = try await Coordinator.open(log: log)
        var short = ExamplePlans.chain(length: 2, service: "orders")
        short.deadlineMillis = 10_000
        var long = short
        long.deadlineMillis = 60_000
        _ = try await coordinator.start(MigrationID("short"), plan: short, context: user, now: t(0))
        _ = try await coordinator.start(MigrationID("long"), plan: long, context: user, now: t(0))
        #expect(await coordinator.nextDeadline == t(10))
        #expect(await coordinator.enforceDeadlines(now: t(9)) == [])
        #expect(await coordinator.enforceDeadlines(now: t(10)) == [MigrationID("short")])
        #expect(try await coordinator.readMigration(MigrationID("short"))?.status == .rolledBack)
        #expect(try await coordinator.readMigration(MigrationID("long"))?.status == .running)
        #expect(await coordinator.nextDeadline == t(60))
        // The abort is recorded as the coordinator's, triggered by the deadline.
        let all = try await log.read(after: 0, limit: 100)
        let records = try all.suffix(4).map { try EventRecordCodec.decode($0.record) }
        #expect(records.prefix(3).allSatisfy { $0.migration == MigrationID("short") && $0.metadata.triggeredBy == .deadline && $0.metadata.actor == .coordinator })
        #expect(records.map(\.event.typeName) == ["migration_aborted", "migration_rolled_back", "service_leases_released", "service_leases_granted"])
        // Both plans transition `orders`: the abort gave it back, and the waiting migration got it at once.
        #expect(records[3].migration == MigrationID("long") && records[3].metadata.triggeredBy == .coordinator)
        #expect(await coordinator.state.holder(ofService: "orders")?.migration == MigrationID("long"))
    }
}

@Suite struct RegisteredPlansOnlyTests {
    @Test func aMigrationStartsOnlyFromARegisteredPlanWithItsOwnHash() async throws {
        let log = InMemoryEventLog()
        let coordinator = try await Coordinator.open(log: log)
        let plan = ExamplePlans.chain(length: 2)
        // Never applied: refused, nothing written.
        await #expect(throws: CommandError.rejected(.planNotRegistered(plan.name, version: 1))) {
            var unregistered = plan
            unregistered.version = 1
            _ = try await coordinator.execute(.start(id: MigrationID("m"), plan: unregistered, startedBy: "alice"), migration: MigrationID("m"),
                                              context: user, now: t(0))
        }
        #expect(await log.head().sequence == 0)
        _ = try await coordinator.applyPlan(plan, context: user, now: t(1))
        let registered = try #require(await coordinator.state.plan(plan.name))
        // A forged hash or altered content under a registered name and version is refused too.
        var forged = registered
        forged.contentHash = String(repeating: "0", count: 64)
        var altered = registered
        altered.nodes[0].action = "something-else"
        for candidate in [forged, altered] {
            await #expect(throws: CommandError.rejected(.planNotRegistered(plan.name, version: 1))) {
                _ = try await coordinator.execute(.start(id: MigrationID("m"), plan: candidate, startedBy: "alice"), migration: MigrationID("m"),
                                                  context: user, now: t(2))
            }
        }
        _ = try await coordinator.execute(.start(id: MigrationID("m"), plan: registered, startedBy: "alice"), migration: MigrationID("m"),
                                          context: user, now: t(3))
        // Applied through the general command path too, a plan's hash is the engine's, never the caller's.
        var claimed = ExamplePlans.chain(length: 3)
        claimed.contentHash = String(repeating: "0", count: 64)
        _ = try await coordinator.execute(.plans(.apply(claimed)), context: user, now: t(4))
        #expect(try #require(await coordinator.state.plan(claimed.name)).contentHash == claimed.hashed().contentHash)
        // And nobody asks the lease queue for a grant.
        await #expect(throws: CommandError.rejected(.invalidArgument("service leases are granted by the coordinator's lease queue, not on request"))) {
            _ = try await coordinator.execute(.serviceLeases(.grant(migration: MigrationID("m"), node: registered.nodes[0].id, through: 1)),
                                              context: user, now: t(5))
        }
        #expect(try await coordinator.readMigration(MigrationID("m"))?.plan.contentHash == registered.contentHash)
    }
}
