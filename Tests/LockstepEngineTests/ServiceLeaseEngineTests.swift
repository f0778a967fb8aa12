import LockstepCore
import LockstepEngine
import LockstepStore
import LockstepWire
import Synchronization
import Testing

/// Service leases through the coordinator on the SQLite log: contention from concurrent callers, the
/// grant pass owed after a crash, and the operator's forced release.
@Suite struct ServiceLeaseEngineTests {
    let operatorContext = CommandContext(actor: Actor(kind: "user", id: "olga"), triggeredBy: .user)

    @Test func concurrentMigrationsOnOneServiceTakeTurns() async throws {
        let log = try SQLiteEventLog(path: temporaryDirectory() + "/events.sqlite")
        let coordinator = try await Coordinator.open(log: log)
        let ids = (0..<8).map { MigrationID("m\($0)") }
        let plan = ExamplePlans.chain(length: 2, service: "orders", name: "shared")
        // Started concurrently; each agent loops until its migration succeeds, leasing whatever it may.
        try await withThrowingTaskGroup(of: Void.self) { group in
            for id in ids {
                group.addTask {
                    _ = try await coordinator.start(id, plan: plan, context: user, now: t(0))
                    // Bounded by time, not by rounds: how many rounds a waiter takes depends on how fast
                    // the holder's appends reach the disk.
                    let deadline = ContinuousClock.now + .seconds(120)
                    while try await coordinator.readMigration(id)?.status != .succeeded {
                        #expect(ContinuousClock.now < deadline, "\(id) never got through")
                        guard ContinuousClock.now < deadline else { return }
                        let ready = try await coordinator.readMigration(id)!.nodes.first { $0.status == .pending }!.id
                        do throws(CommandError) {
                            let leased = try await coordinator.execute(.leaseStep(node: ready, agent: "agent-\(id)", ttlMillis: 60_000),
                                                                       migration: id, context: agent, now: t(1))
                            guard case .stepLeased(let step) = leased.events.first?.event else { continue }
                            _ = try await coordinator.execute(.completeStep(node: ready, token: step.token), migration: id, context: agent, now: t(2))
                        } catch {
                            #expect(error.code == "waiting_for_service_lease")
                            await Task.yield()
                        }
                    }
                }
            }
            try await group.waitForAll()
        }
        try await ServiceLeaseSimulationTests.checkHistory(of: log, seed: 0)
        #expect(await coordinator.state.holder(ofService: "orders") == nil)
        #expect(try await History.replay(log) == (await coordinator.state))
    }

    /// `StepServices`, which polls read without a hop to the coordinator: a service is in it while its
    /// holding node may have a step, and out of it while nobody holds it or its step is leased; published
    /// with every fold and before the change is signalled (the observer, which wakes polls, already sees
    /// the grant, the lease, its end), and from the state a coordinator opens with.
    @Test func theServicesWithAStepFollowEveryGrantLeaseAndReleaseAndArePublishedBeforeTheChangeIsSignalled() async throws {
        let log = InMemoryEventLog()
        let coordinator = try await Coordinator.open(log: log)
        let seen = Mutex<[Bool]>([])
        await coordinator.observeChanges { _, _ in seen.withLock { $0.append(coordinator.stepServices.contains("orders")) } }
        #expect(!coordinator.stepServices.contains("orders"))
        let id = MigrationID("m")
        _ = try await coordinator.start(id, plan: ExamplePlans.chain(length: 2, service: "orders"), context: user, now: t(0))
        #expect(coordinator.stepServices.contains("orders") && !coordinator.stepServices.contains("load"))
        #expect(seen.withLock { $0.last } == true)
        // A coordinator opened on the log starts from what the log holds.
        #expect(try await Coordinator.open(log: log).stepServices.contains("orders"))
        let node = try #require(await coordinator.readMigration(id)?.nodes.first?.id)
        let leased = try await coordinator.execute(.leaseStep(node: node, agent: "a", ttlMillis: 60_000), migration: id, context: agent, now: t(1))
        guard case .stepLeased(let step) = leased.events.first?.event else { Issue.record("not leased: \(leased.events)"); return }
        // Held, but its step is leased: nothing for another poll until the lease ends (an append).
        #expect(await coordinator.state.holder(ofService: "orders") != nil)
        #expect(!coordinator.stepServices.contains("orders"))
        #expect(seen.withLock { $0.last } == false)
        #expect(try await !Coordinator.open(log: log).stepServices.contains("orders"))
        // Given back: the step is there again, for the next poll.
        _ = try await coordinator.execute(.returnStep(node: node, token: step.token, by: "a"), migration: id, context: agent, now: t(2))
        #expect(coordinator.stepServices.contains("orders"))
        #expect(seen.withLock { $0.last } == true)
        // Leased again and completed: the next node of the chain holds the service, its step free to lease.
        let again = try await coordinator.execute(.leaseStep(node: node, agent: "a", ttlMillis: 60_000), migration: id, context: agent, now: t(3))
        guard case .stepLeased(let second) = again.events.first?.event else { Issue.record("not leased: \(again.events)"); return }
        #expect(!coordinator.stepServices.contains("orders"))
        _ = try await coordinator.execute(.completeStep(node: node, token: second.token), migration: id, context: agent, now: t(4))
        #expect(coordinator.stepServices.contains("orders"))
        let last = try #require(await coordinator.readMigration(id)?.nodes.last?.id)
        let third = try await coordinator.execute(.leaseStep(node: last, agent: "a", ttlMillis: 60_000), migration: id, context: agent, now: t(5))
        guard case .stepLeased(let final) = third.events.first?.event else { Issue.record("not leased: \(third.events)"); return }
        _ = try await coordinator.execute(.completeStep(node: last, token: final.token), migration: id, context: agent, now: t(6))
        // Settled: nobody holds it.
        #expect(await coordinator.state.holder(ofService: "orders") == nil)
        #expect(!coordinator.stepServices.contains("orders"))
        #expect(seen.withLock { $0.last } == false)
    }

    @Test func aRequestLeftWithoutAGrantByACrashIsGrantedAfterRestart() async throws {
        let log = InMemoryEventLog()
        // What a coordinator that crashed right after appending a start (with its request) leaves behind.
        let plan = ExamplePlans.chain(length: 1, service: "orders").hashed()
        var state = LogState()
        guard case .accepted(let events) = MigrationState.decide(nil, .start(id: MigrationID("m"), plan: plan), now: t(0)) else {
            Issue.record("start refused"); return
        }
        #expect(events.map(\.typeName) == ["migration_started", "service_leases_requested"])
        let metadata = EventMetadata(recordedAt: t(0), actor: Actor(kind: "user", id: "alice"), triggeredBy: .user)
        let records = try events.enumerated().map { try EventRecordCodec.encode(RecordedEvent(migration: MigrationID("m"), streamVersion: UInt64($0.offset + 1), metadata: metadata, event: $0.element)) }
        _ = try await log.append(AppendRequest(stream: "migration/m", expectedVersion: 0, records: records))
        for (offset, event) in events.enumerated() { state.evolve(migration: MigrationID("m"), sequence: UInt64(offset + 1), event) }

        let coordinator = try await Coordinator.open(log: log)
        #expect(await coordinator.grantPassIsOwed)
        #expect(await coordinator.state.holder(ofService: "orders") == nil)
        await coordinator.grantServiceLeases(now: t(1))
        #expect(await coordinator.state.holder(ofService: "orders")?.migration == MigrationID("m"))
        #expect(await !coordinator.grantPassIsOwed)
        let grant = try #require(try await log.read(after: 2, limit: 1).first)
        let recorded = try EventRecordCodec.decode(grant.record)
        #expect(recorded.event.typeName == "service_leases_granted" && recorded.metadata.actor == .coordinator)
    }

    @Test func anOperatorForceReleasesAServiceAndTheEventNamesThem() async throws {
        let log = InMemoryEventLog()
        let coordinator = try await Coordinator.open(log: log)
        _ = try await coordinator.start(MigrationID("stuck"), plan: ExamplePlans.chain(length: 1, service: "orders", name: "a"), context: user, now: t(0))
        _ = try await coordinator.execute(.pause(reason: "owner left"), migration: MigrationID("stuck"), context: user, now: t(1))
        // Paused before its step started: it gave orders back on its own.
        #expect(await coordinator.state.holder(ofService: "orders") == nil)
        await #expect(throws: CommandError.rejected(.serviceNotLeased("orders"))) {
            try await coordinator.forceReleaseService("orders", reason: "gone", context: operatorContext, now: t(2))
        }
        _ = try await coordinator.execute(.resume, migration: MigrationID("stuck"), context: user, now: t(3))
        let leased = try await coordinator.execute(.leaseStep(node: NodeID("step-0"), agent: "a", ttlMillis: 1_000), migration: MigrationID("stuck"),
                                                   context: agent, now: t(4))
        guard case .stepLeased(let step) = leased.events.first?.event else { Issue.record("no lease"); return }
        await #expect(throws: CommandError.rejected(.serviceLeaseInUse(NodeID("step-0"), token: step.token, expiresAt: step.expiresAt))) {
            try await coordinator.forceReleaseService("orders", reason: "gone", context: operatorContext, now: t(5))
        }
        // The step fails (retry pending): the node keeps orders between attempts; then the migration is paused and abandoned.
        _ = try await coordinator.execute(.failStep(node: NodeID("step-0"), token: step.token, reason: "agent lost", retryable: true),
                                          migration: MigrationID("stuck"), context: agent, now: t(6))
        _ = try await coordinator.execute(.pause(reason: "team gone"), migration: MigrationID("stuck"), context: user, now: t(7))
        #expect(await coordinator.state.holder(ofService: "orders")?.migration == MigrationID("stuck"))
        _ = try await coordinator.start(MigrationID("next"), plan: ExamplePlans.chain(length: 1, service: "orders", name: "b"), context: user, now: t(8))
        let waits = await coordinator.state.serviceWaits(migration: MigrationID("next"), node: NodeID("step-0"))
        #expect(waits.map(\.description) == ["orders is held by migration stuck (node step-0)"])
        let report = Lockstep_V1_StateAtResponse(await coordinator.state)
        #expect(report.migrations.first { $0.migrationID == "next" }?.nodes.first?.waitingFor == ["orders is held by migration stuck (node step-0)"])
        #expect(report.migrations.first { $0.migrationID == "next" }?.nodes.first?.status == .waitingForServices)
        #expect(report.serviceLeases.map(\.service) == ["orders"])
        #expect(report.serviceQueue.map(\.migrationID) == ["next"])

        let result = try await coordinator.forceReleaseService("orders", reason: "stuck's team disbanded; orders verified", context: operatorContext, now: t(9))
        // The node is between retries, so it asks again at once, behind the migration already waiting.
        #expect(result.events.map(\.event.typeName) == ["service_leases_released", "service_leases_requested"])
        #expect(result.events[0].metadata.actor == Actor(kind: "user", id: "olga"))
        #expect(result.events[0].event == .serviceLeasesReleased(ServiceLeasesReleased(
            node: NodeID("step-0"), services: ["orders"], reason: "stuck's team disbanded; orders verified", forced: true)))
        #expect(await coordinator.state.holder(ofService: "orders")?.migration == MigrationID("next"))
    }
}
