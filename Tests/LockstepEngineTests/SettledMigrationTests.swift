import LockstepCore
import LockstepEngine
import LockstepStore
import Testing

/// Settled migrations leave the live state (issue 15): the state, and so every snapshot and every copy
/// of it, is bounded by unsettled work, while a settled migration stays readable from its stream, its
/// id stays taken, and commands to it are answered as they were while it was live.
@Suite struct SettledMigrationTests {
    /// Runs migration `id` on the two-step chain to success.
    static func runToSuccess(_ id: MigrationID, on coordinator: Coordinator, at seconds: Int64) async throws {
        _ = try await coordinator.startMigration(id, plan: ExamplePlans.chain(length: 2).name, context: user, now: t(seconds))
        for node in ["step-0", "step-1"] {
            _ = try await coordinator.execute(.leaseStep(node: NodeID(node), agent: "a", ttlMillis: 10_000), migration: id, context: agent, now: t(seconds))
            _ = try await coordinator.execute(.completeStep(node: NodeID(node), token: FencingToken(1)), migration: id, context: agent, now: t(seconds))
        }
    }

    @Test func theLiveStateAndItsSnapshotsDoNotGrowWithSettledHistory() async throws {
        let log = try SQLiteEventLog(path: temporaryDirectory() + "/events.sqlite")
        let coordinator = try await Coordinator.open(log: log, snapshotIntervalEvents: 1, snapshotBytesPerEvent: 0)
        _ = try await coordinator.applyPlan(ExamplePlans.chain(length: 2), context: user, now: t(0))
        try await Self.runToSuccess(MigrationID("m-000"), on: coordinator, at: 1)
        let afterOne = await coordinator.state.canonicalBytes.count
        for index in 1..<40 {
            try await Self.runToSuccess(MigrationID("m-\(String(index + 1000).dropFirst())"), on: coordinator, at: Int64(index + 1))
        }
        // 40 settled migrations weigh what one does (nothing): the state holds the plan and the sequence.
        #expect(await coordinator.state.canonicalBytes.count == afterOne)
        #expect(await coordinator.state.migrations.isEmpty)
        _ = try await coordinator.writeSnapshotIfDue()
        let snapshot = try #require(try await log.latestSnapshot())
        #expect(snapshot.state.count == afterOne)
        // Unsettled work is what the state holds.
        _ = try await coordinator.startMigration(MigrationID("live"), plan: ExamplePlans.chain(length: 2).name, context: user, now: t(100))
        #expect(await coordinator.state.canonicalBytes.count > afterOne)
        #expect(await coordinator.state.migrations.keys.map(\.rawValue) == ["live"])
        // A restart from that snapshot plus the tail is the same state, and replay agrees byte for byte.
        let reopened = try await Coordinator.open(log: log, snapshotIntervalEvents: 0)
        #expect(await reopened.state == (await coordinator.state))
        #expect(try await History.replay(log).digest == (await coordinator.digest))
    }

    @Test func aSettledMigrationStaysReadableListedAndItsIdTaken() async throws {
        let log = InMemoryEventLog()
        let coordinator = try await Coordinator.open(log: log, snapshotIntervalEvents: 0)
        _ = try await coordinator.applyPlan(ExamplePlans.chain(length: 2), context: user, now: t(0))
        try await Self.runToSuccess(MigrationID("b-done"), on: coordinator, at: 1)
        _ = try await coordinator.startMigration(MigrationID("a-live"), plan: ExamplePlans.chain(length: 2).name, context: user, now: t(2))
        _ = try await coordinator.startMigration(MigrationID("c-aborted"), plan: ExamplePlans.chain(length: 2).name, context: user, now: t(3))
        _ = try await coordinator.execute(.abort(reason: "not today"), migration: MigrationID("c-aborted"), context: user, now: t(4))

        #expect(await coordinator.migration(MigrationID("b-done")) == nil)
        let done = try #require(try await coordinator.readMigration(MigrationID("b-done")))
        #expect(done.status == .succeeded && done.nodes.allSatisfy { $0.status == .succeeded } && done.startedBy == "alice")
        #expect(try await coordinator.readMigration(MigrationID("c-aborted"))?.status == .rolledBack)
        #expect(try await coordinator.readMigration(MigrationID("never")) == nil)

        // Listed in id order with the live ones, and paged.
        let (all, _) = try await coordinator.listMigrations(after: MigrationID(""), limit: 10)
        #expect(all.map(\.id.rawValue) == ["a-live", "b-done", "c-aborted"])
        #expect(all.map(\.status) == [.running, .succeeded, .rolledBack])
        let (rest, _) = try await coordinator.listMigrations(after: MigrationID("a-live"), limit: 1)
        #expect(rest.map(\.id.rawValue) == ["b-done"])

        // A reviewer's state-at replay keeps them (every migration started by then), with the same digest.
        let replayed = try await History.replay(log, keepingSettled: true)
        #expect(replayed.everyMigrationInOrder == all)
        #expect(replayed.migrations.keys.map(\.rawValue) == ["a-live"])
        #expect(replayed.digest == (await coordinator.digest))
        let atStart = try await History.replay(log, through: 2, keepingSettled: true)
        #expect(atStart.everyMigrationInOrder.map(\.status) == [.running])

        // Its id stays taken; commands to it are answered as while it was live; nothing is appended.
        let head = await log.head()
        await #expect(throws: CommandError.rejected(.migrationAlreadyExists(MigrationID("b-done")))) {
            _ = try await coordinator.startMigration(MigrationID("b-done"), plan: ExamplePlans.chain(length: 2).name, context: user, now: t(5))
        }
        await #expect(throws: CommandError.rejected(.migrationSettled(MigrationID("b-done"), status: .succeeded))) {
            _ = try await coordinator.execute(.pause(reason: "too late"), migration: MigrationID("b-done"), context: user, now: t(5))
        }
        await #expect(throws: CommandError.rejected(.staleFencingToken(NodeID("step-0"), current: FencingToken(1), presented: FencingToken(7)))) {
            _ = try await coordinator.execute(.completeStep(node: NodeID("step-0"), token: FencingToken(7)), migration: MigrationID("b-done"), context: agent, now: t(5))
        }
        await #expect(throws: CommandError.rejected(.migrationSettled(MigrationID("b-done"), status: .succeeded))) {
            try await coordinator.heartbeat(migration: MigrationID("b-done"), node: NodeID("step-1"), token: FencingToken(1), now: t(5))
        }
        await #expect(throws: CommandError.rejected(.migrationNotFound(MigrationID("never")))) {
            _ = try await coordinator.execute(.resume, migration: MigrationID("never"), context: user, now: t(5))
        }
        #expect(await log.head() == head)
    }
}
