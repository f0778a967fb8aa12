import Foundation
import LockstepCore
import LockstepEngine
import LockstepStore
import LockstepTestSupport
import LockstepWire
import Testing

/// An in-memory log that fails on purpose, from a seed: some appends are refused before anything is
/// written (`storage_busy`: retry later), some fail with `commit_outcome_unknown` after the events were
/// written, some with the same error before. The coordinator must stop on the unknown outcomes, and a
/// restarted coordinator must rebuild exactly what the log holds.
actor FaultyEventLog: EventLog {
    let base = InMemoryEventLog()
    private var random: SeededGenerator
    /// Out of 1,000 appends, how many fail each way.
    private let busyPerMille: Int
    private let unknownPerMille: Int
    private(set) var faults = 0

    init(seed: UInt64, busyPerMille: Int = 30, unknownPerMille: Int = 15) {
        random = SeededGenerator(seed: seed ^ 0xFA17)
        self.busyPerMille = busyPerMille
        self.unknownPerMille = unknownPerMille
    }

    func append(_ request: AppendRequest) async throws(EventLogError) -> AppendReceipt {
        let roll = Int.random(in: 0..<1_000, using: &random)
        if roll < busyPerMille {
            faults += 1
            throw .busy
        }
        if roll < busyPerMille + unknownPerMille {
            faults += 1
            // Half of the unknown outcomes did reach the log.
            if Bool.random(using: &random) { _ = try await base.append(request) }
            throw .outcomeUnknown(reason: "simulated I/O error during COMMIT")
        }
        return try await base.append(request)
    }

    func read(after sequence: UInt64, limit: Int) async throws(EventLogError) -> [StoredEvent] { try await base.read(after: sequence, limit: limit) }
    func read(stream: String, after sequence: UInt64, limit: Int) async throws(EventLogError) -> [StoredEvent] {
        try await base.read(stream: stream, after: sequence, limit: limit)
    }
    func head() async throws(EventLogError) -> LogHead { await base.head() }
    func streamVersion(of stream: String) async throws(EventLogError) -> UInt64 { await base.streamVersion(of: stream) }
    func streams(withPrefix prefix: String, after: String, limit: Int) async throws(EventLogError) -> [String] {
        await base.streams(withPrefix: prefix, after: after, limit: limit)
    }
    func saveSnapshot(_ snapshot: Snapshot) async throws(EventLogError) { try await base.saveSnapshot(snapshot) }
    func latestSnapshot() async throws(EventLogError) -> Snapshot? { await base.latestSnapshot() }
}

/// A seeded simulation of several migrations contending for a few services: agents take steps,
/// heartbeat, stall, crash (and never come back), report late, twice or with an old token; operators
/// pause, resume, abort and force-release; the log fails on purpose and the coordinator is restarted
/// when it stops. Every event of the resulting history is checked against the lease invariants; a
/// failure names its seed, and the same seed replays the same run.
@Suite struct ServiceLeaseSimulationTests {
    /// CI runs 4 batches of 12 seeds; `LOCKSTEP_PROPERTY_BATCHES=N` runs more.
    static let batches = Int(ProcessInfo.processInfo.environment["LOCKSTEP_PROPERTY_BATCHES"] ?? "") ?? 4
    static let seedsPerBatch = 12
    static let services = ["orders", "ledger", "payments"]

    struct Held { var migration: MigrationID; var node: NodeID; var token: FencingToken; var agent: String }

    struct Counts {
        var contended = 0, staleRefused = 0, restarts = 0, forcedReleases = 0, expiries = 0, settled = 0
        /// Looks at a held service with no step for a poll (its node's step leased, or waiting for a grant).
        var heldWithoutStep = 0
        /// Looks at a service whose holder's step lease was taken by a named poll, and at a lease a named
        /// poll sent again would get back.
        var namedLeases = 0, namedLeasesFound = 0
        mutating func add(_ other: Counts) {
            contended += other.contended; staleRefused += other.staleRefused; restarts += other.restarts
            forcedReleases += other.forcedReleases; expiries += other.expiries; settled += other.settled
            heldWithoutStep += other.heldWithoutStep; namedLeases += other.namedLeases; namedLeasesFound += other.namedLeasesFound
        }
    }

    @Test(arguments: 0..<ServiceLeaseSimulationTests.batches)
    func serviceAndStepLeaseInvariantsHold(batch: Int) async throws {
        var total = Counts()
        for seed in UInt64(5_000 + batch * Self.seedsPerBatch)..<UInt64(5_000 + (batch + 1) * Self.seedsPerBatch) {
            await yieldToOtherTests()
            total.add(try await run(seed: seed).counts)
        }
        print("service-lease simulation batch \(batch): \(total)")
        // The generator must exercise what it claims to, or the invariants are checked on nothing.
        #expect(total.contended > 0, "batch \(batch): no node ever waited for a service")
        #expect(total.staleRefused > 0, "batch \(batch): no stale report was tried")
        #expect(total.restarts > 0, "batch \(batch): the coordinator never had to restart")
        #expect(total.expiries > 0, "batch \(batch): no lease expired")
        #expect(total.settled > 0, "batch \(batch): no migration settled")
        #expect(total.heldWithoutStep > 0, "batch \(batch): no held service was ever without a step for a poll")
        #expect(total.namedLeases > 0 && total.namedLeasesFound > 0, "batch \(batch): no running lease was ever taken by a named poll")
    }

    @Test func theSameSeedGivesTheSameHistory() async throws {
        let first = try await run(seed: 5_003)
        let second = try await run(seed: 5_003)
        #expect(first.head == second.head)
        #expect(first.counts.restarts == second.counts.restarts)
    }

    func run(seed: UInt64) async throws -> (counts: Counts, head: LogHead) {
        var random = SeededGenerator(seed: seed)
        let log = FaultyEventLog(seed: seed)
        let clock = ManualMonotonicClock()
        func open() async throws -> Coordinator {
            try await Coordinator.open(log: log, snapshotIntervalEvents: 50, snapshotBytesPerEvent: 0, grantAppendsInFlightMax: 1, monotonic: clock.clock)
        }
        var coordinator = try await open()
        var counts = Counts()
        var wall: Int64 = 0
        var held: [Held] = []
        var crashed: Set<String> = []
        var pollNames: Set<String> = []
        let agents = ["agent-a", "agent-b", "agent-c", "agent-d"]
        var ids: [MigrationID] = []
        let migrationsMax = Int.random(in: 2...4, using: &random)

        for _ in 0..<500 {
            await yieldToOtherTests()
            let state = await coordinator.state
            switch Int.random(in: 0..<20, using: &random) {
            case 0 where ids.count < migrationsMax, 1 where ids.count < migrationsMax:
                let id = MigrationID("m\(ids.count)")
                var plan = randomPlan(&random)
                plan.name = "plan-\(id)"
                // Some nodes transition two services at once.
                for index in plan.nodes.indices where Int.random(in: 0..<4, using: &random) == 0 {
                    let extra = Self.services.filter { !plan.nodes[index].services.contains($0) }.randomElement(using: &random)!
                    plan.nodes[index].services.append(extra)
                }
                do throws(CommandError) {
                    _ = try await coordinator.start(id, plan: plan, context: user, now: t(wall))
                    ids.append(id)
                } catch {
                    if case .storage = error { ids.append(id) }  // it may have reached the log
                }
            case 0...3:
                // Time passes; the timers run: lease expiry, deadlines, and any grant pass owed.
                let millis = UInt64.random(in: 0...1_500, using: &random)
                clock.advance(millis: millis)
                wall += Int64(millis / 1_000 + 1)
                counts.expiries += await coordinator.expireDueLeases(now: t(wall)).count
                _ = await coordinator.enforceDeadlines(now: t(wall))
                if await coordinator.grantPassIsOwed { await coordinator.grantServiceLeases(now: t(wall)) }
            case 4...8:
                guard let id = ids.randomElement(using: &random), let migration = state.migrations[id] else { continue }
                let node = migration.nodes.randomElement(using: &random)!.id
                let agent = agents.randomElement(using: &random)!
                guard !crashed.contains(agent) else { continue }
                if !state.serviceWaits(migration: id, node: node).isEmpty { counts.contended += 1 }
                if let result = try? await coordinator.execute(.leaseStep(node: node, agent: agent, ttlMillis: 1_000, pollID: Self.pollName(id, node, agent)), migration: id,
                                                                context: agentContext(agent), now: t(wall)),
                   case .stepLeased(let leased) = result.events.first?.event {
                    held.append(Held(migration: id, node: node, token: leased.token, agent: agent))
                    if !leased.pollID.isEmpty { pollNames.insert(leased.pollID) }
                }
            case 9:
                // Operators: approve what waits for approval, pause, resume, abort, force-release what a failed migration holds.
                guard let id = ids.randomElement(using: &random), let migration = state.migrations[id] else { continue }
                let command: Command
                switch Int.random(in: 0..<6, using: &random) {
                case 0: command = .migration(id, .pause(reason: "operator"))
                case 1: command = .migration(id, .resume)
                case 2: command = .migration(id, .abort(reason: "operator"))
                case 3:
                    guard let node = migration.nodes.first(where: { $0.serviceLeases.isHeld && $0.lease == nil }) else { continue }
                    command = .serviceLeases(.forceRelease(migration: id, node: node.id, reason: "operator checked the service"))
                default:
                    for spec in migration.plan.nodes where migration.nodeDisplayStatus(spec.id) == .awaitingApproval {
                        for index in 0..<Int(spec.approval?.minimum ?? 0) {
                            _ = try? await coordinator.execute(.approve(node: spec.id, approver: "owner-\(index)", groups: migration.plan.approverGroups(for: spec),
                                                                        comment: ""), migration: id, context: user, now: t(wall))
                        }
                    }
                    continue
                }
                if (try? await coordinator.execute(command, context: user, now: t(wall))) != nil,
                   case .serviceLeases(.forceRelease) = command { counts.forcedReleases += 1 }
            case 10:
                // An agent crashes: it never reports again; its leases can only expire.
                if let agent = agents.randomElement(using: &random), crashed.count < agents.count - 1 { crashed.insert(agent) }
            default:
                // A holder (current or long superseded) reports; sometimes twice, sometimes with a token one too old.
                guard let holder = held.randomElement(using: &random), !crashed.contains(holder.agent) else { continue }
                let oldToken = Int.random(in: 0..<5, using: &random) == 0 && holder.token.rawValue > 1
                let token = oldToken ? FencingToken(holder.token.rawValue - 1) : holder.token
                let command: MigrationCommand
                switch Int.random(in: 0..<4, using: &random) {
                case 0: command = .completeStep(node: holder.node, token: token)
                case 1: command = .failStep(node: holder.node, token: token, reason: "flaky", retryable: Bool.random(using: &random))
                case 2: command = .reportProgress(node: holder.node, token: token, percent: 50, message: "")
                default:
                    do { try await coordinator.heartbeat(migration: holder.migration, node: holder.node, token: token, now: t(wall)) } catch { counts.staleRefused += 1 }
                    continue
                }
                for _ in 0..<(Int.random(in: 0..<4, using: &random) == 0 ? 2 : 1) {
                    do throws(CommandError) {
                        _ = try await coordinator.execute(command, migration: holder.migration, context: agentContext(holder.agent), now: t(wall))
                    } catch {
                        if case .rejected = error { counts.staleRefused += 1 }
                    }
                }
            }
            // Snapshots as the server's timer service writes them (every 50 events), so restarts load one.
            _ = try? await coordinator.writeSnapshotIfDue()
            // The log failed with an unknown outcome: the coordinator stopped; restart it from the log.
            if await coordinator.isStopped {
                counts.restarts += 1
                coordinator = try await open()
                #expect(await coordinator.digest == (try await History.replay(log)).digest, "seed \(seed): restart differs from replay")
            }
            // The live index always agrees with the migrations it indexes.
            let live = await coordinator.state
            #expect((try? LogState(canonicalBytes: live.canonicalBytes)) == live, "seed \(seed): the service-lease index drifted")
            #expect(live.unsettled == Set(live.migrations.values.filter { !$0.status.isSettled }.map(\.id)), "seed \(seed): the unsettled index drifted")
            // No rollback waits on itself: the head of a rollback queue never waits for a service that a
            // later node of the same queue holds (that node keeps it until it is undone, after the head).
            for migration in live.migrationsInOrder where migration.status == .aborting {
                guard let head = migration.rollbackQueue.first, migration.node(head)?.serviceLeases.isHeld == false,
                      let wanted = migration.plan.node(head)?.services else { continue }
                let blockers = migration.rollbackQueue.dropFirst().filter { id in
                    migration.node(id)?.serviceLeases.isHeld == true && (migration.plan.node(id)?.services.contains(where: wanted.contains) ?? false)
                }
                #expect(blockers.isEmpty, "seed \(seed): \(migration.id)'s rollback head \(head) waits for \(blockers), later in its own queue")
            }
            // What a poll finds through the holder index is what a scan of every migration finds.
            for service in Self.services {
                let (step, nextRetry) = live.step(forService: service, at: t(wall))
                let scanned = Self.scanForSteps(live, service: service, now: t(wall))
                #expect(step.map { [$0.0.rawValue, $0.1.rawValue] } == scanned.steps.first.map { [$0.0.rawValue, $0.1.rawValue] },
                        "seed \(seed): \(service): the step found through the holder differs from the scan")
                #expect(scanned.steps.count <= 1, "seed \(seed): \(service) has two steps at once")
                #expect(nextRetry == scanned.nextRetry, "seed \(seed): \(service): the retry found through the holder differs from the scan")
                // A service a poll parks on without asking the coordinator has no step at any time
                // until the log changes; and the coordinator published what its state says.
                let mayHaveStep = live.mayHaveStep(forService: service)
                #expect(coordinator.stepServices.contains(service) == mayHaveStep, "seed \(seed): \(service): the published set differs from the state")
                let (steps, named) = live.stepsAndLeaseName(ofService: service)
                #expect(steps == mayHaveStep, "seed \(seed): \(service): the combined look differs")
                for name in pollNames.union(named.map { [$0] } ?? []) {
                    #expect(coordinator.stepServices.hasLease(ofService: service, takenBy: name) == (named == name),
                            "seed \(seed): \(service): the published lease name differs from the state (\(name), \(named ?? "none"))")
                }
                if named != nil { counts.namedLeases += 1 }
                // Every lease a named poll sent again would get back (`leaseTaken`) is published under its name.
                for lease in held {
                    let name = Self.pollName(lease.migration, lease.node, lease.agent)
                    guard !name.isEmpty, live.migrations[lease.migration]?.plan.node(lease.node)?.services.first == service,
                          live.leaseTaken(forService: service, agent: lease.agent, holder: "", pollID: name) != nil else { continue }
                    counts.namedLeasesFound += 1
                    #expect(coordinator.stepServices.hasLease(ofService: service, takenBy: name), "seed \(seed): \(service): \(name) can be got back but is not published")
                }
                if !mayHaveStep {
                    if live.holder(ofService: service) != nil { counts.heldWithoutStep += 1 }
                    for later in [wall, wall + 1_000, wall + 3_600_000, wall + 400 * 86_400_000] {
                        #expect(live.step(forService: service, at: t(later)).step == nil && Self.scanForSteps(live, service: service, now: t(later)).steps.isEmpty,
                                "seed \(seed): \(service) has a step at \(later) though no poll asks for it")
                    }
                }
            }
        }
        // Settled migrations that hold nothing have left the live state; every migration, live or not,
        // folds from its own stream to what the live state holds of it.
        let live = await coordinator.state
        let (all, _) = try await coordinator.listMigrations(after: MigrationID(""), limit: 1_000)
        for migration in all {
            let folded = try await History.migration(migration.id, in: log)
            #expect(folded == migration, "seed \(seed): \(migration.id) folded from its stream differs")
            if let kept = live.migrations[migration.id] {
                #expect(kept == migration && (!kept.status.isSettled || kept.nodes.contains { $0.serviceLeases != .none }),
                        "seed \(seed): \(migration.id) is settled and holds nothing, yet stays in the live state")
            } else {
                #expect(migration.status.isSettled, "seed \(seed): \(migration.id) left the live state unsettled")
            }
        }
        #expect(all.count == live.migrations.count + all.filter { live.migrations[$0.id] == nil }.count)
        counts.settled = all.filter(\.status.isSettled).count
        try await Self.checkHistory(of: log, seed: seed)
        #expect(try await History.replay(log).digest == (await coordinator.digest), "seed \(seed): replay differs from the live state")
        return (counts, try await log.head())
    }

    /// The oracle for `LogState.step(forService:at:)`: every node of every migration looked at (the
    /// poll's old way). Retries count only for nodes holding their services: one that lost them needs a
    /// grant first, and a grant wakes parked polls anyway.
    static func scanForSteps(_ state: LogState, service: String, now: Instant) -> (steps: [(MigrationID, NodeID)], nextRetry: Instant?) {
        var steps: [(MigrationID, NodeID)] = []
        var nextRetry: Instant?
        for migration in state.migrationsInOrder where migration.status == .running || migration.status == .aborting {
            for (spec, node) in zip(migration.plan.nodes, migration.nodes) where spec.services.first == service && node.serviceLeases.isHeld {
                if let retryAt = node.retryAt, retryAt > now, nextRetry.map({ retryAt < $0 }) ?? true { nextRetry = retryAt }
                guard node.lease == nil else { continue }
                if migration.status == .running ? migration.isReady(node.id, at: now)
                    : migration.rollbackQueue.first == node.id && (node.retryAt.map { $0 <= now } ?? true) {
                    steps.append((migration.id, node.id))
                }
            }
        }
        return (steps, nextRetry)
    }

    /// The name the simulated agent gives the poll that leases `node` (agent-d names none).
    static func pollName(_ migration: MigrationID, _ node: NodeID, _ agent: String) -> String {
        agent == "agent-d" ? "" : "poll-\(migration.rawValue)-\(node.rawValue)-\(agent)"
    }

    func agentContext(_ agent: String) -> CommandContext { CommandContext(actor: Actor(kind: "agent", id: agent), triggeredBy: .agent) }

    /// Reads the whole log back and checks, event by event: one live holder per service and per step,
    /// steps only under all their services, growing tokens, no stale report accepted, needs first.
    static func checkHistory(of log: any EventLog, seed: UInt64) async throws {
        struct Key: Hashable { var migration: MigrationID; var node: NodeID }
        var plans: [MigrationID: PlanSnapshot] = [:]
        var serviceHolder: [String: Key] = [:]
        var lastToken: [Key: FencingToken] = [:]
        var liveLease: [Key: FencingToken] = [:]
        var succeeded: Set<Key> = []
        var position: UInt64 = 0
        while true {
            let page = try await log.read(after: position, limit: EventLogLimits.readPageEventsMax)
            guard let last = page.last else { break }
            position = last.sequence
            for stored in page {
                guard case .migration(let recorded) = try EventRecordCodec.decodeAny(stored.record) else { continue }
                let id = recorded.migration
                let at = "seed \(seed), sequence \(stored.sequence)"
                switch recorded.event {
                case .migrationStarted(let started):
                    plans[id] = started.plan
                case .serviceLeasesGranted(let granted):
                    for service in granted.services {
                        #expect(serviceHolder[service] == nil, "\(at): \(service) granted to \(id)/\(granted.node) while \(String(describing: serviceHolder[service])) holds it")
                        serviceHolder[service] = Key(migration: id, node: granted.node)
                    }
                case .serviceLeasesReleased(let released):
                    for service in released.services where serviceHolder[service] == Key(migration: id, node: released.node) { serviceHolder[service] = nil }
                    #expect(liveLease[Key(migration: id, node: released.node)] == nil, "\(at): services released under a running step")
                case .stepLeased(let leased):
                    let key = Key(migration: id, node: leased.node)
                    #expect(liveLease[key] == nil, "\(at): \(key) leased while a lease was live")
                    #expect(leased.token > lastToken[key, default: FencingToken(0)], "\(at): token did not grow")
                    for service in plans[id]?.node(leased.node)?.services ?? [] {
                        #expect(serviceHolder[service] == key, "\(at): \(id)/\(leased.node) stepped without holding \(service)")
                    }
                    if leased.kind == .forward {
                        #expect(plans[id]!.node(leased.node)!.needs.allSatisfy { succeeded.contains(Key(migration: id, node: $0)) }, "\(at): started before its needs")
                    }
                    lastToken[key] = leased.token
                    liveLease[key] = leased.token
                case .stepCompleted(let report):
                    let key = Key(migration: id, node: report.node)
                    #expect(liveLease[key] == report.token, "\(at): a completion with token \(report.token) was accepted")
                    liveLease[key] = nil
                    if report.kind == .forward { succeeded.insert(key) }
                case .stepFailed(let report):
                    let key = Key(migration: id, node: report.node)
                    #expect(liveLease[key] == report.token, "\(at): a failure with token \(report.token) was accepted")
                    liveLease[key] = nil
                case .stepProgress(let report):
                    #expect(liveLease[Key(migration: id, node: report.node)] == report.token, "\(at): progress with a stale token was accepted")
                case .migrationAborted(let report):
                    for node in report.abandoned { liveLease[Key(migration: id, node: node)] = nil }
                case .migrationFailed:
                    for key in liveLease.keys where key.migration == id { liveLease[key] = nil }
                default:
                    break
                }
            }
        }
    }
}
