import LockstepCore
import LockstepEngine
import LockstepStore
import LockstepTestSupport
import LockstepWire
import Synchronization
import Testing

@Suite struct ReplayTests {
    @Test func theLiveDigestEqualsTheReplayedDigest() async throws {
        for log: any EventLog in [InMemoryEventLog(), try SQLiteEventLog(path: temporaryDirectory() + "/events.sqlite")] {
            let coordinator = try await Coordinator.open(log: log, snapshotIntervalEvents: 0)
            try await recordScenario(on: coordinator)
            let replayed = try await History.replay(log)
            #expect(replayed == (await coordinator.state))
            #expect(replayed.digest == (await coordinator.digest))
        }
    }

    @Test func replayingAPrefixGivesTheStateAsOfThatEvent() async throws {
        let log = InMemoryEventLog()
        let coordinator = try await Coordinator.open(log: log, snapshotIntervalEvents: 0)
        let id = MigrationID("m")
        var digests: [UInt64: StateDigest] = [:]
        _ = try await coordinator.applyPlan(ExamplePlans.chain(length: 2), context: user, now: t(0))
        let registered = try #require(await coordinator.state.plan(ExamplePlans.chain(length: 2).name))
        let commands: [MigrationCommand] = [
            .start(id: id, plan: registered),
            .leaseStep(node: NodeID("step-0"), agent: "a", ttlMillis: 1_000),
            .completeStep(node: NodeID("step-0"), token: FencingToken(1)),
            .leaseStep(node: NodeID("step-1"), agent: "a", ttlMillis: 1_000),
            .completeStep(node: NodeID("step-1"), token: FencingToken(1)),
        ]
        for (index, command) in commands.enumerated() {
            let result = try await coordinator.execute(command, migration: id, context: agent, now: t(Int64(index)))
            #expect((result.receipt?.lastSequence ?? 0) <= (await coordinator.state.lastSequence))
            digests[await coordinator.state.lastSequence] = await coordinator.digest
        }
        // Event 1 is the plan_applied; then started + step-0's service request (2-3), step-0's grant (4),
        // its lease (5), its completion + release + step-1's request (6-8), step-1's grant (9), lease (10),
        // completion + migration_succeeded + release (11-13). A command returns after the grants it made possible.
        #expect(digests.keys.sorted() == [4, 5, 9, 10, 13])
        for (sequence, digest) in digests {
            #expect(try await History.replay(log, through: sequence).digest == digest)
        }
        await #expect(throws: EventLogError.invalidRequest("the log ends at sequence 13; there is no event 14")) {
            try await History.replay(log, through: 14)
        }
    }

    /// Snapshots are written by whoever runs the coordinator's timers (the server's timer service), in
    /// its own task, when `snapshotIntervalEvents` have been appended since the last: never by a loose
    /// task behind a command, and a failure reaches the caller (it was dropped with `try?`).
    @Test func aDueSnapshotIsWrittenWhenAskedAndAFailureIsReported() async throws {
        let log = GatedEventLog()
        let coordinator = try await Coordinator.open(log: log, snapshotIntervalEvents: 20)
        #expect(try await coordinator.writeSnapshotIfDue() == nil, "nothing appended yet")
        try await recordScenario(on: coordinator)
        #expect(try await log.latestSnapshot() == nil, "commands write no snapshot themselves")
        #expect(try await coordinator.writeSnapshotIfDue() == scenarioEventCount)
        #expect(try await log.latestSnapshot()?.sequence == scenarioEventCount)
        #expect(try await coordinator.writeSnapshotIfDue() == nil, "the next waits another interval")
        // A failing store: the error reaches the caller, and the next attempt waits another interval.
        let id = MigrationID("more")
        _ = try await coordinator.start(id, plan: ExamplePlans.chain(length: 12), context: user, now: t(100))
        for step in 0..<10 {
            let node = NodeID("step-\(step)")
            _ = try await coordinator.execute(.leaseStep(node: node, agent: "a", ttlMillis: 60_000), migration: id, context: agent, now: t(101))
            _ = try await coordinator.execute(.completeStep(node: node, token: FencingToken(1)), migration: id, context: agent, now: t(102))
        }
        await log.failSnapshots(with: .storageFull)
        await #expect(throws: EventLogError.storageFull) { try await coordinator.writeSnapshotIfDue() }
        #expect(try await coordinator.writeSnapshotIfDue() == nil)
    }

    @Test func aSnapshotPlusTheTailEqualsAFullReplay() async throws {
        let path = temporaryDirectory() + "/events.sqlite"
        let log = try SQLiteEventLog(path: path)
        let coordinator = try await Coordinator.open(log: log, snapshotIntervalEvents: 0)
        try await recordScenario(on: coordinator)
        #expect(try await coordinator.saveSnapshot() == scenarioEventCount)
        // A tail after the snapshot.
        let id = MigrationID("after-snapshot")
        _ = try await coordinator.start(id, plan: ExamplePlans.chain(length: 2), context: user, now: t(100))
        _ = try await coordinator.execute(.leaseStep(node: NodeID("step-0"), agent: "a", ttlMillis: 1_000), migration: id, context: agent, now: t(101))
        let snapshot = try #require(try await log.latestSnapshot())
        #expect(snapshot.sequence == scenarioEventCount)
        // plan_applied, migration_started + step-0's service request, the grant, step_leased
        #expect(try await log.head().sequence == scenarioEventCount + 5)
        let restarted = try await Coordinator.open(log: try SQLiteEventLog(path: path, mode: .readOnly))
        let full = try await History.replay(log)
        #expect(await restarted.digest == full.digest)
        #expect(await restarted.digest == (await coordinator.digest))
        #expect(try await HistoryVerifier.verify(log).snapshotChecked == snapshot.sequence)
    }

    @Test func startUpReadsOnlyTheTailAfterTheSnapshot() async throws {
        let path = temporaryDirectory() + "/events.sqlite"
        let coordinator = try await Coordinator.open(log: try SQLiteEventLog(path: path), snapshotIntervalEvents: 0)
        try await recordScenario(on: coordinator)
        #expect(try await coordinator.saveSnapshot() == scenarioEventCount)
        let live = await coordinator.digest
        // Damage an event before the snapshot: a full replay must fail there; start-up must not read it.
        try flipByte(path, table: "events", column: "record", sequence: 3, offset: 5)
        let log = try SQLiteEventLog(path: path, mode: .readOnly)
        await #expect(throws: EventLogError.self) { try await History.replay(log) }
        #expect(await (try Coordinator.open(log: log)).digest == live)
    }

    @Test func aSnapshotWhoseStateWasAlteredIsRefused() async throws {
        let path = temporaryDirectory() + "/events.sqlite"
        let coordinator = try await Coordinator.open(log: try SQLiteEventLog(path: path), snapshotIntervalEvents: 0)
        try await recordScenario(on: coordinator)
        let sequence = try #require(try await coordinator.saveSnapshot())
        try flipByte(path, table: "snapshots", column: "state", sequence: sequence, offset: 20)
        await #expect(throws: EventLogError.corrupted(position: sequence, reason: "the snapshot's digest does not match its state bytes")) {
            try await Coordinator.open(log: try SQLiteEventLog(path: path, mode: .readOnly))
        }
    }

    @Test func concurrentLeasesOfOneNodeGrantExactlyOne() async throws {
        let coordinator = try await Coordinator.open(log: try SQLiteEventLog(path: temporaryDirectory() + "/events.sqlite"))
        let id = MigrationID("race")
        _ = try await coordinator.start(id, plan: ExamplePlans.chain(length: 1), context: user, now: t(0))
        let outcomes = await withTaskGroup(of: CommandError?.self) { group in
            for index in 0..<16 {
                group.addTask {
                    do throws(CommandError) {
                        _ = try await coordinator.execute(.leaseStep(node: NodeID("step-0"), agent: "agent-\(index)", ttlMillis: 1_000),
                                                          migration: id, context: agent, now: t(1))
                        return nil
                    } catch { return error }
                }
            }
            return await group.reduce(into: [CommandError?]()) { $0.append($1) }
        }
        #expect(outcomes.filter { $0 == nil }.count == 1)
        // Every loser was refused by the state machine, never by an optimistic-concurrency conflict.
        #expect(outcomes.compactMap { $0 } == Array(repeating: .rejected(.nodeNotReady(NodeID("step-0"), status: .running, waitingOn: [])), count: 15))
        #expect(await coordinator.state.migrations[id]?.node(NodeID("step-0"))?.lastToken == FencingToken(1))
    }

    @Test func aStartForAnotherMigrationIdIsRejected() async throws {
        let log = InMemoryEventLog()
        let coordinator = try await Coordinator.open(log: log)
        await #expect(throws: CommandError.rejected(.invalidArgument("the start command names migration b but targets a"))) {
            try await coordinator.execute(.start(id: MigrationID("b"), plan: ExamplePlans.chain(length: 1)), migration: MigrationID("a"),
                                          context: user, now: t(0))
        }
        #expect(await log.head().sequence == 0)
    }

    /// A change is told with when its append's commit ended (`EventLog.appendTimed`), not when it was
    /// folded in: where a wake-up's measured time starts.
    @Test func aChangeIsToldWithItsCommitsEnd() async throws {
        let log = GatedEventLog()
        let committed = ContinuousClock.now - .seconds(3_600)
        await log.stampCommits(at: committed)
        let coordinator = try await Coordinator.open(log: log)
        let told = Mutex<[ContinuousClock.Instant]>([])
        await coordinator.observeChanges { _, at in told.withLock { $0.append(at) } }
        _ = try await coordinator.start(MigrationID("m"), plan: ExamplePlans.chain(length: 2), context: user, now: t(0))
        let instants = told.withLock { $0 }
        #expect(!instants.isEmpty && instants.allSatisfy { $0 == committed }, "\(instants)")
    }

    @Test func commandsWaitingOnOneMigrationAreBounded() async throws {
        let log = GatedEventLog()
        let coordinator = try await Coordinator.open(log: log, commandsWaitingPerMigrationMax: 1)
        let id = MigrationID("m")
        _ = try await coordinator.start(id, plan: ExamplePlans.chain(length: 1), context: user, now: t(0))
        await log.close()
        let finished = Counter()
        func pause(_ index: Int) -> Task<String, Never> {
            Task {
                defer { finished.increment() }
                do throws(CommandError) {
                    _ = try await coordinator.execute(.pause(reason: "p\(index)"), migration: id, context: user, now: t(1))
                    return "ok"
                } catch { return error.code }
            }
        }
        // The first command holds the migration while its append waits at the gate.
        let first = pause(0)
        try await waitUntil { await log.held == 1 }
        // Of four more, one may wait for its turn; three are refused at once, with the gate still closed.
        let others = (1...4).map(pause)
        try await waitUntil { finished.value == 3 }
        await log.open()
        var codes = [await first.value]
        for task in others { codes.append(await task.value) }
        #expect(codes.filter { $0 == "ok" }.count == 1)
        #expect(codes.filter { $0 == "migration_overloaded" }.count == 3)
        #expect(codes.filter { $0 == "already_paused" }.count == 1)
    }

    @Test func aRejectedCommandAppendsNothing() async throws {
        let log = InMemoryEventLog()
        let coordinator = try await Coordinator.open(log: log)
        let id = MigrationID("m")
        _ = try await coordinator.start(id, plan: ExamplePlans.chain(length: 1), context: user, now: t(0))
        await #expect(throws: CommandError.rejected(.staleFencingToken(NodeID("step-0"), current: FencingToken(0), presented: FencingToken(3)))) {
            try await coordinator.execute(.completeStep(node: NodeID("step-0"), token: FencingToken(3)), migration: id, context: agent, now: t(1))
        }
        await #expect(throws: CommandError.rejected(.migrationNotFound(MigrationID("ghost")))) {
            try await coordinator.execute(.resume, migration: MigrationID("ghost"), context: user, now: t(1))
        }
        #expect(await log.head().sequence == 4)  // plan_applied, migration_started, step-0's service request and grant
    }
}

/// The fold reads, decodes and folds different pages at once: what it reports must not depend on that.
@Suite struct PipelinedReplayTests {
    /// A log of `migrations` runs of a 10-node chain (52 events each), appended in batches, as the
    /// coordinator writes them.
    static func fill(_ log: any EventLog, migrations: Int, first: Int = 0) async throws {
        let plan = ExamplePlans.chain(length: 10)
        let metadata = EventMetadata(recordedAt: t(0), actor: Actor(kind: "agent", id: "test"), triggeredBy: .agent)
        for index in first..<(first + migrations) {
            await yieldToOtherTests()
            let id = MigrationID("m-\(index)")
            var events: [MigrationEvent] = [.migrationStarted(MigrationStarted(migration: id, plan: plan, startedAt: t(0)))]
            for node in plan.nodes {
                events.append(.serviceLeasesRequested(ServiceLeasesRequested(node: node.id, services: node.services, kind: .forward)))
                events.append(.serviceLeasesGranted(ServiceLeasesGranted(node: node.id, services: node.services, at: t(0))))
                events.append(.stepLeased(StepLeased(node: node.id, attempt: 1, token: FencingToken(1), agent: "test",
                                                     grantedAt: t(0), expiresAt: t(1))))
                events.append(.stepCompleted(StepCompleted(node: node.id, attempt: 1, token: FencingToken(1))))
                if node.id == plan.nodes.last?.id { events.append(.migrationSucceeded) }
                events.append(.serviceLeasesReleased(ServiceLeasesReleased(node: node.id, services: node.services, reason: "done")))
            }
            let records = try events.enumerated().map { offset, event in
                try EventRecordCodec.encode(RecordedEvent(migration: id, streamVersion: UInt64(offset + 1), metadata: metadata, event: event))
            }
            _ = try await log.append(AppendRequest(stream: RecordedEvent.stream(of: id), expectedVersion: 0, records: records))
        }
    }

    @Test func aLogOfManyPagesReplaysToTheStateFoldedOneEventAtATime() async throws {
        let log = InMemoryEventLog()
        try await Self.fill(log, migrations: 200)  // 10,400 events: three pages
        #expect(History.pageEventsMax < 10_400 / 2)
        var expected = LogState()
        var position: UInt64 = 0
        while let page = Optional(try await log.read(after: position, limit: 1_000)), let last = page.last {
            await yieldToOtherTests()
            for stored in page { expected.evolve(try History.check(stored, against: expected), sequence: stored.sequence) }
            position = last.sequence
        }
        let replayed = try await History.replay(log)
        #expect(replayed == expected)
        #expect(replayed.lastSequence == 10_400)
        #expect(replayed.unsettled.isEmpty)
        #expect(try await History.replay(log, through: 9_000).lastSequence == 9_000)
    }

    @Test(arguments: [
        ("bytes that do not decode", [UInt8]([0xFF, 0xFF, 0xFF])),
        ("a record of another stream", try EventRecordCodec.encode(RecordedEvent(
            migration: MigrationID("elsewhere"), streamVersion: 1,
            metadata: EventMetadata(recordedAt: t(0), actor: Actor(kind: "agent", id: "test"), triggeredBy: .agent),
            event: .migrationSucceeded))),
    ])
    func aBadEventOnALaterPageStopsTheFoldThereWithEverythingBeforeItFolded(_ what: String, _ bad: [UInt8]) async throws {
        let log = InMemoryEventLog()
        try await Self.fill(log, migrations: 180)  // 9,360 events, then the bad one on the third page, then more
        _ = try await log.append(AppendRequest(stream: "migration/bad", expectedVersion: 0, records: [bad]))
        try await Self.fill(log, migrations: 1, first: 180)
        var visited: [UInt64] = []
        var state = LogState()
        await #expect(throws: EventLogError.self, "\(what)") {
            try await History.fold(log, into: &state) { stored, _ throws(EventLogError) in visited.append(stored.sequence) }
        }
        #expect(visited.count == 9_360)
        #expect(visited.last == 9_360)
        #expect(state.lastSequence == 9_360)
        do {
            _ = try await History.replay(log)
            Issue.record("\(what) replayed")
        } catch {
            guard case .corrupted(let position, _) = error else { Issue.record("\(what): \(error)"); return }
            #expect(position == 9_361)
        }
    }
}
