import LockstepCore
import LockstepEngine
import LockstepStore
import LockstepWire
import Testing

/// Histories written before service leases existed must keep working when a coordinator continues
/// them: the coordinator records the bookkeeping they lack (found in review).
@Suite struct OldHistoryTests {
    func write(_ log: InMemoryEventLog, _ id: String, _ events: [MigrationEvent]) async throws {
        let metadata = EventMetadata(recordedAt: t(0), actor: Actor(kind: "user", id: "alice"), triggeredBy: .user)
        let records = try events.enumerated().map {
            try EventRecordCodec.encode(RecordedEvent(migration: MigrationID(id), streamVersion: UInt64($0.offset + 1), metadata: metadata, event: $0.element))
        }
        _ = try await log.append(AppendRequest(stream: "migration/\(id)", expectedVersion: 0, records: records))
    }

    @Test func aRunningOldStepHoldsItsServiceAndAReadyOldNodeGetsItsOwn() async throws {
        let log = InMemoryEventLog()
        try await write(log, "running", [
            .migrationStarted(MigrationStarted(migration: MigrationID("running"), plan: ExamplePlans.chain(length: 2, service: "orders", name: "old"), startedAt: t(0))),
            .stepLeased(StepLeased(node: NodeID("step-0"), attempt: 1, token: FencingToken(1), agent: "a", grantedAt: t(0), expiresAt: t(600))),
        ])
        try await write(log, "ready", [
            .migrationStarted(MigrationStarted(migration: MigrationID("ready"), plan: ExamplePlans.chain(length: 1, service: "billing", name: "old2"), startedAt: t(0))),
        ])
        let coordinator = try await Coordinator.open(log: log)
        // The first command runs what opening owed: the bookkeeping, then the grants.
        _ = try await coordinator.start(MigrationID("new"), plan: ExamplePlans.chain(length: 1, service: "orders", name: "n"), context: user, now: t(3))
        #expect(await coordinator.state.holder(ofService: "orders")?.migration == MigrationID("running"))
        #expect(await coordinator.state.holder(ofService: "billing")?.migration == MigrationID("ready"))
        // So the new migration on orders waits for the old step instead of running beside it.
        await #expect(throws: CommandError.self) {
            try await coordinator.execute(.leaseStep(node: NodeID("step-0"), agent: "b", ttlMillis: 10_000), migration: MigrationID("new"), context: agent, now: t(4))
        }
        let leased = try await coordinator.execute(.leaseStep(node: NodeID("step-0"), agent: "c", ttlMillis: 10_000), migration: MigrationID("ready"),
                                                   context: agent, now: t(5))
        #expect(leased.events.first?.event.typeName == "step_leased")
        #expect(try await History.replay(log) == (await coordinator.state))
    }

    @Test func everyLiveMigrationOfTheGoldenV2HistoryCanBeDrivenToTheEnd() async throws {
        let copy = try copyDatabase(GoldenHistoryTests.directory + "/scenario-v2.sqlite")
        let log = try SQLiteEventLog(path: copy + "/events.sqlite")
        let coordinator = try await Coordinator.open(log: log)
        await coordinator.grantServiceLeases(now: t(100_000))
        var clock: Int64 = 100_001
        // An operator aborts whatever is still live; agents then run every rollback step they may.
        let live = await coordinator.state.migrationsInOrder.filter { !$0.status.isSettled }
        #expect(live.count >= 2)
        for migration in live where migration.status != .aborting {
            _ = try await coordinator.execute(.abort(reason: "retire the golden scenario"), migration: migration.id, context: user, now: t(clock))
        }
        for _ in 0..<50 {
            for migration in live {
                clock += 100
                guard let current = try await coordinator.readMigration(migration.id), !current.status.isSettled,
                      let head = current.rollbackQueue.first else { continue }
                // A step may have to wait for a service another migration still holds: that is the point.
                if let lease = current.node(head)?.lease {
                    _ = try? await coordinator.execute(.completeStep(node: head, token: lease.token), migration: migration.id, context: agent, now: t(clock))
                } else {
                    _ = try? await coordinator.execute(.leaseStep(node: head, agent: "a", ttlMillis: 10_000), migration: migration.id, context: agent, now: t(clock))
                }
            }
        }
        for migration in live { #expect(try await coordinator.readMigration(migration.id)?.status == .rolledBack, "\(migration.id)") }
        #expect(try await History.replay(log) == (await coordinator.state))
    }
}
