import LockstepCore
import LockstepStore
import LockstepWire
import Synchronization

/// The rehearsal's monotonic clock: it moves only when the rehearsal moves it, with the virtual wall clock.
final class VirtualMonotonicClock: Sendable {
    private let nanos = Mutex<UInt64>(0)
    var now: UInt64 { nanos.withLock { $0 } }
    func advance(byMillis millis: Int64) { nanos.withLock { $0 &+= UInt64(max(0, millis)) &* 1_000_000 } }
}

/// Runs a whole plan on a virtual clock with simulated agents and approvers, through the real
/// coordinator and core, and returns the timeline. Same plan, options and seed: same timeline.
///
/// The coordinator's timers run exactly as in the server (`Coordinator.tick`, one timer policy: deadlines,
/// lease expiry, start_to_close, bake ends, schedule_to_start, grants), on a virtual wall clock and a
/// virtual monotonic clock that move together, straight to the next thing due.
public struct Rehearsal: Sendable {
    /// What to make go wrong.
    public struct Options: Sendable {
        public var seed: UInt64 = 1
        /// The virtual wall clock's start: where a plan's change windows are read from (docs/gates.md).
        public var start: Instant = Rehearsal.epoch
        /// Node → how many of its attempts fail (retryable) before it succeeds; more than its retry
        /// policy allows makes it fail for good.
        public var failures: [NodeID: UInt32] = [:]
        /// Node → how many of its forward attempts hang: the simulated agent heartbeats and never
        /// reports, so only the node's `start_to_close` ends them (callers check that it has one).
        public var hangs: [NodeID: UInt32] = [:]
        /// Node → how many of its forward attempts lose their agent: the simulated agent dies right after
        /// taking the step (no heartbeat, no report), so the lease expires after its TTL (the node's
        /// `timeouts.heartbeat`, or 30 s) and the coordinator offers the step again.
        public var losses: [NodeID: UInt32] = [:]
        /// Gates that an approver rejects.
        public var rejections: Set<NodeID> = []
        /// Node → how many of its rollback attempts fail (retryable).
        public var rollbackFailures: [NodeID: UInt32] = [:]
        /// Also ask for leases on random nodes each round, as a confused or hostile agent would; the
        /// coordinator must refuse every one that is not due (tests check what it accepted).
        public var adversarialLeases = false
        /// Node → metric → the value reported during the bake of each stage (millionths; the last
        /// value holds for later stages). Each bake gets `min_samples` samples of it; a metric without
        /// a trace reports exactly its pass threshold.
        public var metrics: [NodeID: [String: [Int64]]] = [:]
        /// The same for the baseline cohort of metrics with a baseline rule; without a trace, the
        /// baseline reports what the canary does.
        public var baselines: [NodeID: [String: [Int64]]] = [:]
        /// Node → check → what each run of it reports, in order (the last one holds for later runs).
        /// A check without a trace reports success with exactly its threshold (or no value for `ok`).
        public var checks: [NodeID: [String: [CheckReport]]] = [:]
        public init() {}
    }

    /// One line of the timeline.
    public struct Entry: Hashable, Sendable {
        /// Milliseconds since the rehearsal started.
        public var offsetMillis: Int64
        public var sequence: UInt64
        public var event: MigrationEvent
        public var actor: String
    }

    public struct Outcome: Sendable {
        public var timeline: [Entry]
        public var final: MigrationState
        /// The coordinator's live digest at the end.
        public var digest: StateDigest
        /// The digest of a full replay of the rehearsal's log: equal to `digest` when replay is faithful.
        public var replayDigest: StateDigest
    }

    /// Coordinator commands one rehearsal may issue per plan node (the budget scales with the plan).
    public static let commandsPerNodeMax = 200
    /// The TTL a doomed agent's lease asks for when its node sets no heartbeat timeout (the server's default).
    public static let lostAgentTTLMillis: Int64 = 30_000
    /// The virtual clock's default start: 2026-01-01T00:00:00Z.
    public static let epoch = Instant(millisecondsSinceEpoch: 1_767_225_600_000)

    public let plan: PlanSnapshot
    public let options: Options

    public init(plan: PlanSnapshot, options: Options) {
        self.plan = plan
        self.options = options
    }

    public enum Failure: Error, CustomStringConvertible {
        case refused(CommandError)
        case tooLong(Int)
        case stuck(MigrationStatus)
        public var description: String {
            switch self {
            case .refused(let error): "the coordinator refused a rehearsal command: \(error)"
            case .tooLong(let commands): "the rehearsal did not settle within \(commands) commands"
            case .stuck(let status): "the rehearsal stopped with the migration \(status.rawValue) and nothing left to happen"
            }
        }
    }

    public func run() async throws -> Outcome {
        let log = InMemoryEventLog()
        let monotonic = VirtualMonotonicClock()
        let coordinator = try await Coordinator.open(log: log, snapshotIntervalEvents: 0, grantAppendsInFlightMax: 1,
                                                     monotonic: { monotonic.now })
        let id = MigrationID("rehearsal")
        var random = SplitMix64(seed: options.seed)
        var now = options.start
        var timeline: [Entry] = []
        var commands = 0
        let commandsMax = max(1_000, plan.nodes.count * Self.commandsPerNodeMax)
        var failuresLeft = options.failures
        var hangsLeft = options.hangs
        var lossesLeft = options.losses
        // Steps whose simulated agent keeps heartbeating and never reports (hung), by token.
        var hung: [(node: NodeID, token: FencingToken)] = []
        var rollbackFailuresLeft = options.rollbackFailures
        // Steps in flight: when each finishes, and how.
        var inFlight: [(at: Instant, node: NodeID, token: FencingToken, succeeds: Bool, check: CheckReport?)] = []
        // Runs of each check so far, by "node/check".
        var checkRuns: [String: Int] = [:]

        func execute(_ command: MigrationCommand, as actor: Actor, _ trigger: TriggeredBy) async throws -> Bool {
            commands += 1
            guard commands <= commandsMax else { throw Failure.tooLong(commandsMax) }
            do throws(CommandError) {
                _ = try await coordinator.execute(command, migration: id, context: CommandContext(actor: actor, triggeredBy: trigger), now: now)
            } catch {
                if case .rejected = error { return false }
                throw Failure.refused(error)
            }
            try await readTimeline()
            return true
        }
        // Everything appended since the timeline's last entry (a command's events, the grants after it, the timers').
        func readTimeline() async throws {
            do throws(EventLogError) {
                // Page after page until none is left (a page may be cut short by its bytes).
                var position = timeline.last?.sequence ?? 0
                while true {
                    let page = try await log.read(after: position, limit: EventLogLimits.readPageEventsMax)
                    guard let last = page.last else { break }
                    for stored in page {
                        // A record that does not decode is damage, never skipped (plan records are not the timeline's).
                        let decoded: LogRecord
                        do { decoded = try EventRecordCodec.decodeAny(stored.record) } catch {
                            throw .corrupted(position: stored.sequence, reason: "the record does not decode: \(error)")
                        }
                        guard case .migration(let recorded) = decoded else { continue }
                        timeline.append(Entry(offsetMillis: now.millisecondsSinceEpoch - options.start.millisecondsSinceEpoch,
                                              sequence: stored.sequence, event: recorded.event, actor: recorded.metadata.actor.description))
                    }
                    position = last.sequence
                }
            } catch {
                throw Failure.refused(.storage(error))
            }
        }
        let owner = Actor(kind: "user", id: "rehearsal-owner")
        let applied: (version: UInt64, changed: Bool)
        do { applied = try await coordinator.applyPlan(plan, context: CommandContext(actor: owner, triggeredBy: .user), now: now) } catch {
            throw Failure.refused(error)
        }
        let registered = await coordinator.state.plan(plan.name, version: applied.version)!
        guard try await execute(.start(id: id, plan: registered, startedBy: owner.id), as: owner, .user),
              await coordinator.migration(id) != nil else {
            throw Failure.refused(.rejected(.invalidArgument("the plan could not be started")))
        }
        func state() async throws(Failure) -> MigrationState { try await Self.migration(id, of: coordinator) }
        while !(try await state()).status.isSettled {
            // Agents that are alive have heartbeated all along (also through the clock's jump); then the
            // coordinator's timers run, as the server runs them.
            var migration = try await state()
            for (node, token) in inFlight.map({ ($0.node, $0.token) }) + hung.map({ ($0.node, $0.token) }) where migration.node(node)?.lease?.token == token {
                do throws(CommandError) {
                    try await coordinator.heartbeat(migration: id, node: node, token: token, now: now)
                } catch {
                    throw Failure.refused(error)
                }
            }
            let ticked = await coordinator.tick(now: now)
            if let failure = ticked.failures.first { throw Failure.refused(failure) }
            if ticked.didWork {
                commands += 1
                guard commands <= commandsMax else { throw Failure.tooLong(commandsMax) }
                try await readTimeline()
                continue
            }
            // A bake that just began gets its samples; one that has ended is judged.
            var sampled = false
            for (spec, node) in zip(plan.nodes, migration.nodes)
            where migration.status == .running && node.status == .baking && !node.exposure.awaitingDecision && node.exposure.samples.isEmpty {
                for check in spec.analysis?.metrics ?? [] {
                    let stage = Int(node.exposure.reached)
                    let trace = options.metrics[spec.id]?[check.name] ?? []
                    let value = trace.isEmpty ? check.passMicros : trace[min(stage, trace.count) - 1]
                    let baselineTrace = options.baselines[spec.id]?[check.name] ?? []
                    let cohorts: [(SampleCohort, Int64)] = [(.canary, value)]
                        + (check.baseline == nil ? [] : [(.baseline, baselineTrace.isEmpty ? value : baselineTrace[min(stage, baselineTrace.count) - 1])])
                    for (cohort, value) in cohorts {
                        for index in 0..<max(1, check.minSamples) {
                            let sample = MetricSample(name: check.name, valueMicros: value, windowStart: now.adding(milliseconds: Int64(index)),
                                                      windowEnd: now.adding(milliseconds: Int64(index) + 1), source: "rehearsal", cohort: cohort)
                            sampled = try await execute(.recordMetric(node: spec.id, sample: sample), as: Actor(kind: "agent", id: "metrics-reporter"), .metric) || sampled
                        }
                    }
                }
            }
            if sampled { continue }
            // Gates: distinct approvers from the allowed groups (never the requester); or a rejection.
            for spec in plan.nodes where migration.nodeDisplayStatus(spec.id) == .awaitingApproval {
                let groups = plan.approverGroups(for: spec)
                if options.rejections.contains(spec.id) {
                    let approver = Actor(kind: "user", id: "approver-1")
                    _ = try await execute(.reject(node: spec.id, approver: approver.id, groups: groups, comment: "rehearsed rejection"), as: approver, .user)
                } else {
                    let have = migration.node(spec.id)?.approvals.count ?? 0
                    for index in have..<Int(spec.approval?.minimum ?? 0) {
                        let approver = Actor(kind: "user", id: "approver-\(index + 1)")
                        _ = try await execute(.approve(node: spec.id, approver: approver.id, groups: groups, comment: "rehearsed"), as: approver, .user)
                    }
                }
            }
            migration = try await state()
            // A rejected gate pauses the migration: the rehearsed operator aborts it. A failure under
            // `on_failure: pause` pauses it too: the operator resumes, which gives the node fresh attempts.
            if migration.status == .paused {
                if migration.nodes.contains(where: { $0.rejection != nil }) {
                    _ = try await execute(.abort(reason: "rehearsal: \(migration.statusReason ?? "paused")"), as: owner, .user)
                } else {
                    _ = try await execute(.resume, as: owner, .user)
                }
                continue
            }
            // Steps whose lease ended (an abort, a timeout) are gone: their agents' reports would be refused anyway.
            inFlight.removeAll { migration.node($0.node)?.lease?.token != $0.token }
            hung.removeAll { migration.node($0.node)?.lease?.token != $0.token }
            // Hand out every step that may start now.
            let candidates = migration.status == .aborting
                ? Array(migration.rollbackQueue.prefix(1))
                : migration.nodes.map(\.id).filter { migration.isReady($0, at: now) }
            var requests = candidates
            if options.adversarialLeases, !plan.nodes.isEmpty {
                requests.append(plan.nodes[Int(random.next() % UInt64(plan.nodes.count))].id)
            }
            for node in requests where !inFlight.contains(where: { $0.node == node }) {
                let spec = plan.node(node)!
                let agent = Actor(kind: "agent", id: "\(spec.stepService)-agent")
                let forward = migration.status != .aborting
                // An agent that will die asks for the TTL a real agent would (the node's heartbeat timeout);
                // live ones heartbeat, so theirs never runs out.
                let dies = forward && (lossesLeft[node] ?? 0) > 0
                let ttl = dies ? (spec.timeouts.heartbeatMillis ?? Self.lostAgentTTLMillis) : CoreLimits.leaseTTLMillisMax
                guard try await execute(.leaseStep(node: node, agent: agent.id, ttlMillis: ttl), as: agent, .agent) else { continue }
                let leasedNode = (try await state()).node(node)
                let token = leasedNode!.lastToken
                // A check lease: the simulated agent runs the check for a few seconds and reports the next result of its trace.
                if let lease = leasedNode?.lease, lease.kind == .check, let check = spec.checks.first(where: { $0.name == lease.check }) {
                    let key = "\(node.rawValue)/\(check.name)"
                    let trace = options.checks[node]?[check.name] ?? []
                    let run = checkRuns[key, default: 0]
                    checkRuns[key] = run + 1
                    let report = trace.isEmpty ? Self.passing(check) : trace[min(run, trace.count - 1)]
                    inFlight.append((now.adding(milliseconds: 1_000 + Int64(random.next() % 9_000)), node, token, true, report))
                    continue
                }
                if dies {
                    lossesLeft[node]! -= 1
                    continue  // never heartbeats nor reports: its lease expires
                }
                if forward, let hangs = hangsLeft[node], hangs > 0 {
                    hangsLeft[node] = hangs - 1
                    hung.append((node, token))
                    continue  // heartbeats and never reports: its start_to_close ends it
                }
                let fails = forward ? (failuresLeft[node] ?? 0) > 0 : (rollbackFailuresLeft[node] ?? 0) > 0
                if fails && forward { failuresLeft[node]! -= 1 }
                if fails && !forward { rollbackFailuresLeft[node]! -= 1 }
                inFlight.append((now.adding(milliseconds: duration(of: spec, rollback: !forward, random: &random)), node, token, !fails, nil))
            }
            // Advance the clock to the next thing that happens.
            migration = try await state()
            // A failed check blocks its node until it runs again.
            let retries = migration.nodes.compactMap { $0.retryAt }.filter { $0 > now }
                + migration.nodes.compactMap { migration.checkBlock($0.id, at: now)?.recheckAt }
            let timers = await coordinator.nextTimerDue(now: now)
            let nextTimes = (inFlight.map(\.at) + retries + [timers].compactMap { $0 }).filter { $0 > now }
            guard let next = nextTimes.min() else {
                if (try await state()).status.isSettled { break }
                throw Failure.stuck((try await state()).status)
            }
            monotonic.advance(byMillis: next.millisecondsSinceEpoch - now.millisecondsSinceEpoch)
            now = max(now, next)
            inFlight.sort { ($0.at, $0.node.rawValue) < ($1.at, $1.node.rawValue) }
            while let step = inFlight.first, step.at <= now {
                inFlight.removeFirst()
                let agent = Actor(kind: "agent", id: "\(plan.node(step.node)?.stepService ?? "")-agent")
                let command: MigrationCommand = step.succeeds
                    ? .completeStep(node: step.node, token: step.token, check: step.check)
                    : .failStep(node: step.node, token: step.token, reason: "rehearsed failure", retryable: true)
                _ = try await execute(command, as: agent, .agent)
            }
        }
        let final = try await state()
        return Outcome(timeline: timeline, final: final, digest: await coordinator.digest, replayDigest: try await History.replay(log).digest)
    }

    /// A step's simulated duration: 20–60% of its start-to-close timeout, or 1–5 minutes without one.
    /// Migration `id` as it stands; settled, it has left the live state and is read from its stream.
    static func migration(_ id: MigrationID, of coordinator: Coordinator) async throws(Failure) -> MigrationState {
        let found: MigrationState?
        do { found = try await coordinator.readMigration(id) } catch { throw .refused(.storage(error)) }
        guard let found else { throw .refused(.rejected(.migrationNotFound(id))) }
        return found
    }

    /// What a check reports when the rehearsal has no trace for it: a pass, exactly at its threshold.
    static func passing(_ check: CheckSpec) -> CheckReport {
        switch check.pass {
        case .ok: CheckReport(ok: true, evidence: "rehearsed")
        case .max(let micros), .min(let micros): CheckReport(ok: true, valueMicros: micros, evidence: "rehearsed")
        }
    }

    func duration(of spec: NodeSpec, rollback: Bool, random: inout SplitMix64) -> Int64 {
        let budget = spec.timeouts.startToCloseMillis ?? 300_000
        let low = max(1_000, budget / 5), high = max(low + 1, budget * 3 / 5)
        let millis = low + Int64(random.next() % UInt64(high - low))
        return rollback ? max(1_000, millis / 2) : millis
    }
}

/// SplitMix64: small, fast and seeded; the same seed gives the same sequence everywhere.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
