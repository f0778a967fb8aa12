import Foundation
import LockstepCore
import LockstepEngine
import LockstepPlan
import LockstepStore
import LockstepWire
import Synchronization

// lockstep-bench: durable append throughput (group commit), lease cycles through the coordinator and
// replay speed, each against the raw SQLite C API measured in the same run. Usage: lockstep-bench
//   [--quick] [--runs N] [--seconds S] [--replay-events N] [--dir DIR] [--only appends|append-latency|lease-cycles|replay]
//   [--latency-appends N]
//   [--agents N] [--snapshot-interval EVENTS]

let arguments = CommandLine.arguments
func option(_ name: String) -> String? {
    arguments.firstIndex(of: name).flatMap { $0 + 1 < arguments.count ? arguments[$0 + 1] : nil }
}
let quick = arguments.contains("--quick")
let runs = option("--runs").flatMap(Int.init) ?? (quick ? 1 : 3)
let seconds = option("--seconds").flatMap(Double.init) ?? (quick ? 1 : 3)
let replayEvents = option("--replay-events").flatMap(Int.init) ?? (quick ? 100_000 : 1_000_000)
let root = option("--dir") ?? FileManager.default.temporaryDirectory.appendingPathComponent("lockstep-bench-\(getpid())").path
try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
let runCounter = Mutex(0)
func freshPath() -> String {
    let run = runCounter.withLock { $0 += 1; return $0 }
    let directory = "\(root)/run-\(run)"
    try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    return directory + "/events.sqlite"
}

/// A realistic stored event: a step completion as the coordinator encodes it.
let sampleRecord = try EventRecordCodec.encode(RecordedEvent(
    migration: MigrationID("orders-split-1"), streamVersion: 7,
    metadata: EventMetadata(recordedAt: Instant(millisecondsSinceEpoch: 1_700_000_000_000),
                            actor: Actor(kind: "agent", id: "orders-agent-1"), triggeredBy: .agent,
                            causationID: "cmd-1", correlationID: "orders-split-1"),
    event: .stepCompleted(StepCompleted(node: NodeID("backfill-orders"), attempt: 1, token: FencingToken(7)))))

if let path = option("--replay-only") {
    // Profiling aid: replay an existing log `runs` times, nothing else.
    for _ in 0..<runs {
        let log = try SQLiteEventLog(path: path, mode: .readOnly)
        let (state, elapsed) = try await timed { try await History.replay(log) }
        print("replayed \(state.lastSequence) events at \(format(Double(state.lastSequence) / elapsed)) events/s, digest \(state.digest.hex)")
    }
    exit(0)
}

print("lockstep-bench: \(runs) run(s) per figure, \(seconds) s per append run, \(replayEvents) events replayed")
print("machine: \(ProcessInfo.processInfo.activeProcessorCount) cores, record \(sampleRecord.count) bytes, data in \(root)\n")

// MARK: Appends

/// `writers` tasks append one event at a time to their own streams for `seconds`. Returns (events/s, events per commit).
func lockstepAppends(writers: Int) async throws -> (perSecond: Double, eventsPerCommit: Double) {
    let commits = Mutex((commits: 0, events: 0))
    let log = try SQLiteEventLog(path: freshPath()) { commit in commits.withLock { $0.commits += 1; $0.events += commit.events } }
    let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1_000))
    let (count, elapsed) = try await timed {
        try await withThrowingTaskGroup(of: Int.self) { group in
            for writer in 0..<writers {
                group.addTask {
                    var version: UInt64 = 0
                    while ContinuousClock.now < deadline {
                        _ = try await log.append(AppendRequest(stream: "w\(writer)", expectedVersion: version, records: [sampleRecord]))
                        version += 1
                    }
                    return Int(version)
                }
            }
            return try await group.reduce(0, +)
        }
    }
    let totals = commits.withLock { $0 }
    return (Double(count) / elapsed, Double(totals.events) / Double(max(1, totals.commits)))
}

var rows: [Row] = []
/// `--only appends|append-latency|lease-cycles|replay` runs one section (profiling aid).
let only = option("--only")
func wanted(_ section: String) -> Bool { only == nil || only == section }
for writers in [1, 16, 64] where wanted("appends") {
    var ours: [Double] = []
    var reference: [Double] = []
    var batches: [Double] = []
    for _ in 0..<runs {
        let (perSecond, batch) = try await lockstepAppends(writers: writers)
        ours.append(perSecond)
        batches.append(batch)
        // The reference commits the same batch size, for about the same number of events.
        let referencePath = freshPath()
        _ = try SQLiteEventLog(path: referencePath)  // creates the identical schema, then closes
        let events = max(200, Int(perSecond * seconds))
        reference.append(RawSQLite.appends(path: referencePath, events: events, batch: batch, streams: writers, record: sampleRecord))
    }
    let batch = Figure(samples: batches).median
    rows.append(Row(name: "durable appends/s, \(writers) writer\(writers == 1 ? "" : "s") (batch \(String(format: "%.1f", batch)))",
                    ours: Figure(samples: ours), reference: Figure(samples: reference),
                    referenceName: "raw SQLite, same batch", target: writers == 64 ? 0.8 : nil))
    print("appends with \(writers) writers: done")
}

// MARK: Append latency

/// One writer appends `count` single events back to back, each waiting for the one before: every
/// append is its own commit, so every checkpoint lands between two of them. Returns each append's
/// latency (call → answer, monotonic clock) in milliseconds, sorted.
func appendLatencies(count: Int) async throws -> [Double] {
    let log = try SQLiteEventLog(path: freshPath())
    var samples: [Double] = []
    samples.reserveCapacity(count)
    for version in 0..<count {
        let began = ContinuousClock.now
        _ = try await log.append(AppendRequest(stream: "latency", expectedVersion: UInt64(version), records: [sampleRecord]))
        samples.append(milliseconds(ContinuousClock.now - began))
    }
    return samples.sorted()
}

func milliseconds(_ duration: Duration) -> Double { seconds(duration) * 1_000 }

/// `sorted`'s value at quantile `q` (nearest rank).
func quantile(_ sorted: [Double], _ q: Double) -> Double {
    sorted.isEmpty ? 0 : sorted[min(sorted.count - 1, Int((Double(sorted.count) * q).rounded(.up)) - 1)]
}

if only == "append-latency" || only == nil {
    let count = option("--latency-appends").flatMap(Int.init) ?? (quick ? 3_000 : 10_000)
    print("append latency: \(count) appends of one event, one writer, each its own commit (ms)")
    print("run | p50 | p99 | p99.9 | max | over 2 ms || raw SQLite, auto-checkpoint in COMMIT: p50 | p99 | p99.9 | max | over 2 ms")
    for run in 1...runs {
        let ours = try await appendLatencies(count: count)
        let referencePath = freshPath()
        _ = try SQLiteEventLog(path: referencePath)  // the identical schema
        let raw = RawSQLite.commitLatencies(path: referencePath, commits: count, record: sampleRecord)
        let cells = [ours, raw].map { samples in
            [0.5, 0.99, 0.999, 1].map { String(format: "%.3f", quantile(samples, $0)) }.joined(separator: " | ")
                + " | \(samples.filter { $0 > 2 }.count)"
        }
        print("\(run) | \(cells[0]) || \(cells[1])")
    }
    print("")
}

// MARK: Lease cycles

/// `agents` agents, each on its own service with its own migrations of a 100-node chain, run lease →
/// heartbeat → complete cycles through the coordinator for `seconds`. Each cycle appends its
/// step_leased, then step_completed + the node's service release + the next node's request, then the
/// next node's grant (the lease queue): 5 events in 3 appends. Returns cycles/s, events/s, events per commit.
func leaseCycles(agents: Int, chain: Int = 100) async throws -> (cyclesPerSecond: Double, eventsPerCycle: Double, eventsPerCommit: Double) {
    let commits = Mutex((commits: 0, events: 0))
    let log = try SQLiteEventLog(path: freshPath()) { commit in commits.withLock { $0.commits += 1; $0.events += commit.events } }
    let coordinator = try await Coordinator.open(log: log, snapshotIntervalEvents: UInt64(option("--snapshot-interval").flatMap(Int.init) ?? 10_000))
    let operatorContext = CommandContext(actor: Actor(kind: "user", id: "bench"), triggeredBy: .user)
    var plans: [PlanSnapshot] = []
    for agent in 0..<agents {
        let plan = ExamplePlans.chain(length: chain, service: "service-\(agent)", name: "cycle-\(agent)")
        let applied = try await coordinator.applyPlan(plan, context: operatorContext, now: WallClock.now())
        plans.append(await coordinator.state.plan(plan.name, version: applied.version)!)
    }
    let before = try await log.head().sequence
    commits.withLock { $0 = (0, 0) }
    let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1_000))
    let (cycles, elapsed) = try await timed {
        try await withThrowingTaskGroup(of: Int.self) { group in
            for agent in 0..<agents {
                let plan = plans[agent]
                group.addTask {
                    let context = CommandContext(actor: Actor(kind: "agent", id: "agent-\(agent)"), triggeredBy: .agent)
                    var cycles = 0
                    var round = 0
                    while ContinuousClock.now < deadline {
                        let id = MigrationID("cycle-\(agent)-\(round)")
                        round += 1
                        _ = try await coordinator.startMigration(id, plan: plan.name, version: plan.version, context: operatorContext, now: WallClock.now())
                        for node in plan.nodes where ContinuousClock.now < deadline {
                            let leased = try await coordinator.execute(.leaseStep(node: node.id, agent: "agent-\(agent)", ttlMillis: 60_000),
                                                                       migration: id, context: context, now: WallClock.now())
                            guard case .stepLeased(let step) = leased.events.first?.event else { fatalError("no lease") }
                            try await coordinator.heartbeat(migration: id, node: node.id, token: step.token, now: WallClock.now())
                            _ = try await coordinator.execute(.completeStep(node: node.id, token: step.token), migration: id, context: context,
                                                              now: WallClock.now())
                            cycles += 1
                        }
                    }
                    return cycles
                }
            }
            return try await group.reduce(0, +)
        }
    }
    let events = try await log.head().sequence - before
    let totals = commits.withLock { $0 }
    return (Double(cycles) / elapsed, Double(events) / Double(max(1, cycles)), Double(totals.events) / Double(max(1, totals.commits)))
}

for agents in (option("--agents").map { [Int($0) ?? 1] } ?? [1, 64]) where wanted("lease-cycles") {
    var ours: [Double] = []
    var reference: [Double] = []
    var perCycle: [Double] = []
    var batches: [Double] = []
    for _ in 0..<runs {
        let result = try await leaseCycles(agents: agents)
        ours.append(result.cyclesPerSecond)
        perCycle.append(result.eventsPerCycle)
        batches.append(result.eventsPerCommit)
        // The reference appends the same events (a cycle's worth per cycle) with the raw C API at the
        // same commit batch size; its events/s divided by events per cycle is the cycles/s the disk allows.
        let referencePath = freshPath()
        _ = try SQLiteEventLog(path: referencePath)
        let events = max(200, Int(result.cyclesPerSecond * result.eventsPerCycle * seconds))
        let raw = RawSQLite.appends(path: referencePath, events: events, batch: result.eventsPerCommit, streams: agents, record: sampleRecord)
        reference.append(raw / result.eventsPerCycle)
    }
    rows.append(Row(name: "lease cycles/s (acquire, heartbeat, complete), \(agents) agent\(agents == 1 ? "" : "s") "
                        + "(\(String(format: "%.1f", Figure(samples: perCycle).median)) events/cycle, batch \(String(format: "%.1f", Figure(samples: batches).median)))",
                    ours: Figure(samples: ours), reference: Figure(samples: reference),
                    referenceName: "raw SQLite appends of the same events", target: 0.7))
    print("lease cycles with \(agents) agents: done")
}

// MARK: Plan size

/// A plan of `nodes` nodes, each transitioning 16 of `nodes` declared services and needing the 40 nodes
/// before it (as YAML, about 380 KB at 1,000 nodes: within the 1 MiB a plan file may have).
func widePlanYAML(nodes: Int) -> String {
    var yaml = "name: wide\nservices:\n"
    for index in 0..<nodes { yaml += "  s\(index): { owners: [t\(index % 50)] }\n" }
    yaml += "nodes:\n"
    for index in 0..<nodes {
        let services = (0..<16).map { "s\((index * 16 + $0) % nodes)" }.joined(separator: ",")
        let needs = (max(0, index - 40)..<index).map { "n\($0)" }.joined(separator: ",")
        yaml += "  - {id: n\(index),services: [\(services)],phase: custom,action: w,approvals: {minimum: 1}"
            + (needs.isEmpty ? "" : ",needs: [\(needs)]") + "}\n"
    }
    return yaml
}

/// Nodes per second read, linted and validated (`PlanFile.lint`, what applying a plan runs) for a plan of `nodes` nodes.
func planNodesPerSecond(nodes: Int) -> Double {
    let yaml = widePlanYAML(nodes: nodes)
    let (load, elapsed) = timedSync { PlanFile.lint(yaml: yaml) }
    precondition(load.plan?.nodes.count == nodes && load.errors.isEmpty, "the plan did not read: \(load.errors.prefix(3))")
    return Double(nodes) / elapsed
}

if wanted("plan-size") {
    // The cost of a plan should grow with its size, not its square: a ratio near 1 says linear.
    var large: [Double] = []
    var small: [Double] = []
    for _ in 0..<max(3, runs) {
        small.append(planNodesPerSecond(nodes: 100))
        large.append(planNodesPerSecond(nodes: CoreLimits.planNodesMax))
    }
    rows.append(Row(name: "plan read + lint + validation, nodes/s, \(CoreLimits.planNodesMax) nodes (16 services, 40 needs each)",
                    ours: Figure(samples: large), reference: Figure(samples: small), referenceName: "the same shape at 100 nodes", target: 0.5))
    var long: [Double] = []
    var short: [Double] = []
    for _ in 0..<runs {
        short.append(try await leaseCycles(agents: 64, chain: 100).cyclesPerSecond)
        long.append(try await leaseCycles(agents: 64, chain: CoreLimits.planNodesMax).cyclesPerSecond)
    }
    rows.append(Row(name: "lease cycles/s, 64 agents, chains of \(CoreLimits.planNodesMax) nodes", ours: Figure(samples: long),
                    reference: Figure(samples: short), referenceName: "the same with chains of 100 nodes", target: 0.8))
    print("plan size: done")
}

// MARK: Replay

/// Fills a log with `count` valid events: migrations of a 10-node chain, run to success with their
/// service-lease bookkeeping, as the coordinator writes them (52 events each).
func fillForReplay(_ path: String, count: Int) async throws -> Double {
    let log = try SQLiteEventLog(path: path)
    let plan = ExamplePlans.chain(length: 10)
    let perMigration = 2 + plan.nodes.count * 5
    let migrations = (count + perMigration - 1) / perMigration
    let metadata = EventMetadata(recordedAt: Instant(millisecondsSinceEpoch: 1_700_000_000_000),
                                 actor: Actor(kind: "agent", id: "bench"), triggeredBy: .agent)
    func records(_ index: Int) throws -> [[UInt8]] {
        let id = MigrationID("m-\(index)")
        var events: [MigrationEvent] = [.migrationStarted(MigrationStarted(migration: id, plan: plan, startedAt: metadata.recordedAt))]
        for node in plan.nodes {
            events.append(.serviceLeasesRequested(ServiceLeasesRequested(node: node.id, services: node.services, kind: .forward)))
            events.append(.serviceLeasesGranted(ServiceLeasesGranted(node: node.id, services: node.services, at: metadata.recordedAt)))
            events.append(.stepLeased(StepLeased(node: node.id, attempt: 1, token: FencingToken(1), agent: "bench",
                                                 grantedAt: metadata.recordedAt, expiresAt: metadata.recordedAt.adding(milliseconds: 1_000))))
            events.append(.stepCompleted(StepCompleted(node: node.id, attempt: 1, token: FencingToken(1))))
            if node.id == plan.nodes.last?.id { events.append(.migrationSucceeded) }
            events.append(.serviceLeasesReleased(ServiceLeasesReleased(node: node.id, services: node.services, reason: "node \(node.id) succeeded")))
        }
        return try events.enumerated().map { offset, event in
            try EventRecordCodec.encode(RecordedEvent(migration: id, streamVersion: UInt64(offset + 1), metadata: metadata, event: event))
        }
    }
    let (_, elapsed) = try await timed {
        try await withThrowingTaskGroup(of: Void.self) { group in
            let lanes = 32
            for lane in 0..<lanes {
                group.addTask {
                    for index in stride(from: lane, to: migrations, by: lanes) {
                        _ = try await log.append(AppendRequest(stream: RecordedEvent.stream(of: MigrationID("m-\(index)")),
                                                               expectedVersion: 0, records: records(index)))
                    }
                }
            }
            try await group.waitForAll()
        }
    }
    return Double(migrations * perMigration) / elapsed
}

if wanted("replay") {
    let replayPath = freshPath()
    let fillRate = try await fillForReplay(replayPath, count: replayEvents)
    print("filled \(replayEvents) events for replay at \(format(fillRate)) events/s (batched appends)")
    var replay: [Double] = []
    var readVerify: [Double] = []
    var scan: [Double] = []
    var digest = ""
    for _ in 0..<runs {
        let log = try SQLiteEventLog(path: replayPath, mode: .readOnly)
        let (state, elapsed) = try await timed { try await History.replay(log) }
        replay.append(Double(state.lastSequence) / elapsed)
        digest = state.digest.hex
        let (read, readElapsed) = try await timed { () async throws -> UInt64 in
            var position: UInt64 = 0
            while let last = try await log.read(after: position, limit: History.pageEventsMax).last { position = last.sequence }
            return position
        }
        readVerify.append(Double(read) / readElapsed)
        scan.append(RawSQLite.scan(path: replayPath).perSecond)
    }
    rows.append(Row(name: "replay events/s from disk (read, verify chain, decode, fold)", ours: Figure(samples: replay),
                    reference: Figure(samples: scan), referenceName: "raw SELECT scan", target: 0.5))
    rows.append(Row(name: "  of which: read + verify chain only", ours: Figure(samples: readVerify),
                    reference: Figure(samples: scan), referenceName: "raw SELECT scan", target: nil))
    print("replay digest \(digest)\n")
}
printTable(rows)
// `--json FILE`: the same rows, for ops/bench/compare.
if let path = option("--json") {
    let objects: [[String: Any]] = rows.map { row in
        ["name": row.name, "reference_name": row.referenceName, "ratio": row.ratio, "target": row.target as Any,
         "ours": ["median": row.ours.median, "min": row.ours.min, "max": row.ours.max, "samples": row.ours.samples],
         "reference": ["median": row.reference.median, "min": row.reference.min, "max": row.reference.max, "samples": row.reference.samples]]
    }
    let data = try JSONSerialization.data(withJSONObject: objects, options: [.prettyPrinted, .sortedKeys])
    try data.write(to: URL(fileURLWithPath: path))
}
if option("--dir") == nil { try? FileManager.default.removeItem(atPath: root) }
