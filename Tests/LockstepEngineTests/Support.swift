import CSQLite
import Foundation
import LockstepCore
import LockstepEngine
import LockstepStore
import Synchronization
@_exported import LockstepTestSupport

/// An instant `seconds` after a fixed epoch: tests never read the wall clock for recorded times.
func t(_ seconds: Int64) -> Instant { Instant(millisecondsSinceEpoch: 1_700_000_000_000 + seconds * 1_000) }


let user = CommandContext(actor: Actor(kind: "user", id: "alice"), triggeredBy: .user)
let agent = CommandContext(actor: Actor(kind: "agent", id: "ledger-agent"), triggeredBy: .agent)

/// Runs SQL against a database file directly, as an operator editing it by hand would.
func editDatabase(_ path: String, _ sql: String) throws {
    var db: OpaquePointer?
    guard sqlite3_open(path, &db) == SQLITE_OK else { throw TestFailure("cannot open \(path)") }
    defer { sqlite3_close(db) }
    var message: UnsafeMutablePointer<CChar>?
    guard sqlite3_exec(db, sql, nil, nil, &message) == SQLITE_OK else {
        throw TestFailure("SQL failed: \(message.map { String(cString: $0) } ?? "?")")
    }
}

/// Replaces byte `offset` (0-based) of a BLOB cell with a different value, as a bit flip on disk would.
func flipByte(_ path: String, table: String, column: String, sequence: UInt64, offset: Int) throws {
    var db: OpaquePointer?
    guard sqlite3_open(path, &db) == SQLITE_OK else { throw TestFailure("cannot open \(path)") }
    defer { sqlite3_close(db) }
    var select: OpaquePointer?
    sqlite3_prepare_v2(db, "SELECT \(column) FROM \(table) WHERE sequence = \(sequence)", -1, &select, nil)
    guard sqlite3_step(select) == SQLITE_ROW, let pointer = sqlite3_column_blob(select, 0) else {
        sqlite3_finalize(select)
        throw TestFailure("no \(table) row \(sequence)")
    }
    var blob = Array(UnsafeRawBufferPointer(start: pointer, count: Int(sqlite3_column_bytes(select, 0))))
    sqlite3_finalize(select)
    guard offset < blob.count else { throw TestFailure("row \(sequence) has only \(blob.count) bytes") }
    blob[offset] ^= 0x01
    var update: OpaquePointer?
    sqlite3_prepare_v2(db, "UPDATE \(table) SET \(column) = ?1 WHERE sequence = \(sequence)", -1, &update, nil)
    defer { sqlite3_finalize(update) }
    _ = blob.withUnsafeBytes { sqlite3_bind_blob(update, 1, $0.baseAddress, Int32($0.count), nil) }
    guard sqlite3_step(update) == SQLITE_DONE else { throw TestFailure("update failed") }
}

/// The first column of the first row of `sql`, as text.
func queryText(_ path: String, _ sql: String) throws -> String? {
    var db: OpaquePointer?
    guard sqlite3_open(path, &db) == SQLITE_OK else { throw TestFailure("cannot open \(path)") }
    defer { sqlite3_close(db) }
    var statement: OpaquePointer?
    guard sqlite3_prepare_v2(db, sql, -1, &statement, nil) == SQLITE_OK else { throw TestFailure("bad SQL \(sql)") }
    defer { sqlite3_finalize(statement) }
    guard sqlite3_step(statement) == SQLITE_ROW, let text = sqlite3_column_text(statement, 0) else { return nil }
    return String(cString: text)
}

/// Copies a database with its WAL into a new directory, without opening the original (which may be
/// a fixture in the source tree), then checkpoints the copy so it is one self-contained file.
func copyDatabase(_ path: String) throws -> String {
    let directory = temporaryDirectory()
    for suffix in ["", "-wal"] where FileManager.default.fileExists(atPath: path + suffix) {
        try FileManager.default.copyItem(atPath: path + suffix, toPath: directory + "/events.sqlite" + suffix)
    }
    try editDatabase(directory + "/events.sqlite", "PRAGMA wal_checkpoint(TRUNCATE)")
    return directory
}

/// Events `recordScenario` appends to an empty log.
let scenarioEventCount: UInt64 = 59

/// Drives a deterministic history with fixed instants: the scenario behind the golden histories.
/// `clockStart` shifts every recorded time: the same story, other bytes (a forgery's).
func recordScenario(on coordinator: Coordinator, clockStart: Int64 = 0) async throws {
    let split = MigrationID("ledger-split-1")
    let side = MigrationID("cache-warmup-1")
    let doomed = MigrationID("index-rebuild-1")
    let plan = ExamplePlans.ledgerSplit
    var clock: Int64 = clockStart
    func now() -> Instant { clock += 1; return t(clock) }
    func run(_ command: MigrationCommand, _ id: MigrationID, _ context: CommandContext) async throws {
        _ = try await coordinator.execute(command, migration: id, context: context, now: now())
    }
    let bob = CommandContext(actor: Actor(kind: "user", id: "bob"), triggeredBy: .user)
    _ = try await coordinator.start(split, plan: plan, context: user, now: now())
    _ = try await coordinator.start(side, plan: ExamplePlans.chain(length: 3, service: "cache"), context: user, now: now())
    _ = try await coordinator.start(doomed, plan: ExamplePlans.chain(length: 2, service: "search"), context: user, now: now())
    try await run(.leaseStep(node: NodeID("step-0"), agent: "search-agent", ttlMillis: 10_000), doomed, agent)
    try await run(.failStep(node: NodeID("step-0"), token: FencingToken(1), reason: "index corrupt", retryable: false), doomed, agent)
    try await run(.pause(reason: "waiting for the ledger split"), side, user)
    for node in plan.nodes {
        if node.approval != nil {
            try await run(.approve(node: node.id, approver: "bob", groups: plan.approverGroups(for: node), comment: "looks good"), split, bob)
        }
        try await run(.leaseStep(node: node.id, agent: "ledger-agent", ttlMillis: 30_000), split, agent)
        if node.phase == .backfill {
            try await run(.failStep(node: node.id, token: FencingToken(1), reason: "shard 3 timed out", retryable: true), split, agent)
            try await run(.leaseStep(node: node.id, agent: "ledger-agent", ttlMillis: 30_000), split, agent)
            try await run(.completeStep(node: node.id, token: FencingToken(2)), split, agent)
        } else {
            try await run(.completeStep(node: node.id, token: FencingToken(1)), split, agent)
        }
    }
    try await run(.resume, side, user)
    try await run(.leaseStep(node: NodeID("step-0"), agent: "cache-agent", ttlMillis: 5_000), side, agent)
    try await run(.abort(reason: "superseded by plan v2"), side, user)
}

/// A canary with exposure stages and analysis: a pass, an inconclusive bake resumed by a person (the
/// override), a breach that rolls back by itself (`triggered_by: metric`). Fixed instants.
func recordExposureScenario(on coordinator: Coordinator) async throws {
    var clock: Int64 = 5_000
    func now() -> Instant { clock += 1; return t(clock) }
    func run(_ command: MigrationCommand, _ id: MigrationID, _ context: CommandContext) async throws {
        _ = try await coordinator.execute(command, migration: id, context: context, now: now())
    }
    let timer = CommandContext(actor: .coordinator, triggeredBy: .metric)
    let prober = CommandContext(actor: Actor(kind: "agent", id: "prober"), triggeredBy: .metric)
    let plan = PlanSnapshot(
        name: "canary", version: 0, contentHash: "",
        services: [ServiceSpec(name: "pricing", owners: ["pricing-team"]), ServiceSpec(name: "checkout", owners: ["checkout-team"])],
        nodes: [
            NodeSpec(id: NodeID("deploy"), services: ["pricing"], phase: .expand, action: "deploy", rollback: RollbackSpec(action: "undeploy")),
            NodeSpec(id: NodeID("route"), services: ["checkout"], phase: .live, action: "set-weight", needs: [NodeID("deploy")],
                     exposure: ExposureSpec(stages: [10, 50, 100].map(ExposureStage.percent), bakeMillis: 60_000),
                     analysis: AnalysisSpec(metrics: [MetricCheck(name: "error_rate", direction: .lowerIsBetter, passMicros: 10_000,
                                                                  marginalMicros: 20_000, minSamples: 2)])),
        ]).hashed()
    let id = MigrationID("canary-1")
    let route = NodeID("route")
    _ = try await coordinator.start(id, plan: plan, context: user, now: now())
    try await run(.leaseStep(node: NodeID("deploy"), agent: "pricing-agent", ttlMillis: 30_000), id, agent)
    try await run(.completeStep(node: NodeID("deploy"), token: FencingToken(1)), id, agent)
    var token: UInt64 = 0
    func stage(_ values: [Int64]) async throws {
        token += 1
        try await run(.leaseStep(node: route, agent: "checkout-agent", ttlMillis: 30_000), id, agent)
        try await run(.completeStep(node: route, token: FencingToken(token)), id, agent)
        for value in values {
            try await run(.recordMetric(node: route, sample: MetricSample(name: "error_rate", valueMicros: value, windowStart: t(clock - 1),
                                                                          windowEnd: t(clock), source: "prober")), id, prober)
        }
        clock += 61
        try await run(.evaluateExposure(node: route), id, timer)
    }
    try await stage([2_000, 3_000])  // 10 %: pass
    try await stage([2_000])  // 50 %: one sample, inconclusive: paused
    try await run(.resume, id, user)  // a person decides to go on: the override
    try await stage([40_000, 60_000])  // 100 %: breach, rollback
    for node in [route, NodeID("deploy")] {
        try await run(.leaseStep(node: node, agent: "rollback-agent", ttlMillis: 30_000), id, agent)
        let current = await coordinator.state.migrations[id]!.node(node)!.lastToken
        try await run(.completeStep(node: node, token: current), id, agent)
    }
}

/// An in-memory log whose appends can be held at a gate, so a test can see what happens while a
/// commit is in flight. Reads pass straight through.
actor GatedEventLog: EventLog {
    private let inner = InMemoryEventLog()
    private var isOpen = true
    private var waiters: [CheckedContinuation<Void, Never>] = []
    /// Appends currently held at the gate.
    private(set) var held = 0

    func close() { isOpen = false }

    func open() {
        isOpen = true
        for waiter in waiters { waiter.resume() }
        waiters.removeAll()
    }

    /// What `appendTimed` says as the commit's end; nil: when the append returned.
    private var commitEnd: ContinuousClock.Instant?
    func stampCommits(at instant: ContinuousClock.Instant) { commitEnd = instant }

    func appendTimed(_ request: AppendRequest) async throws(EventLogError) -> TimedAppend {
        TimedAppend(receipt: try await append(request), committedAt: commitEnd ?? .now)
    }

    /// Appends made (acknowledged or failed).
    private(set) var appendCount = 0
    private var appendFailure: EventLogError?
    /// Every later append fails with `error` (nil: they succeed again).
    func failAppends(with error: EventLogError?) { appendFailure = error }

    func append(_ request: AppendRequest) async throws(EventLogError) -> AppendReceipt {
        if !isOpen {
            held += 1
            await withCheckedContinuation { waiters.append($0) }
            held -= 1
        }
        appendCount += 1
        if let appendFailure { throw appendFailure }
        return try await inner.append(request)
    }

    func read(after sequence: UInt64, limit: Int) async throws(EventLogError) -> [StoredEvent] {
        try await inner.read(after: sequence, limit: limit)
    }
    func read(stream: String, after sequence: UInt64, limit: Int) async throws(EventLogError) -> [StoredEvent] {
        try await inner.read(stream: stream, after: sequence, limit: limit)
    }
    func head() async throws(EventLogError) -> LogHead { await inner.head() }
    func streamVersion(of stream: String) async throws(EventLogError) -> UInt64 { await inner.streamVersion(of: stream) }
    func streams(withPrefix prefix: String, after: String, limit: Int) async throws(EventLogError) -> [String] {
        await inner.streams(withPrefix: prefix, after: after, limit: limit)
    }
    private var snapshotFailure: EventLogError?
    /// Every later `saveSnapshot` fails with `error`.
    func failSnapshots(with error: EventLogError) { snapshotFailure = error }
    func saveSnapshot(_ snapshot: Snapshot) async throws(EventLogError) {
        if let snapshotFailure { throw snapshotFailure }
        try await inner.saveSnapshot(snapshot)
    }
    func latestSnapshot() async throws(EventLogError) -> Snapshot? { await inner.latestSnapshot() }
}

/// Polls `condition` every 5 ms until it holds; fails after `seconds`.
func waitUntil(seconds: Double = 10, _ condition: () async -> Bool) async throws {
    let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1_000))
    while !(await condition()) {
        guard ContinuousClock.now < deadline else { throw TestFailure("condition not met within \(seconds) s") }
        try await Task.sleep(for: .milliseconds(5))
    }
}

/// A thread-safe count, for tasks to report progress to a test.
final class Counter: Sendable {
    private let count = Mutex(0)
    func increment() { count.withLock { $0 += 1 } }
    var value: Int { count.withLock { $0 } }
}

/// A second deterministic history that exercises orchestration: a rejected gate, a deadline, and an
/// abort that rolls back in reverse completion order and stops at an irreversible node.
func recordOrchestrationScenario(on coordinator: Coordinator) async throws {
    var clock: Int64 = 1_000
    func now() -> Instant { clock += 1; return t(clock) }
    func run(_ command: MigrationCommand, _ id: MigrationID, _ context: CommandContext) async throws {
        _ = try await coordinator.execute(command, migration: id, context: context, now: now())
    }
    let bob = CommandContext(actor: Actor(kind: "user", id: "bob"), triggeredBy: .user)
    let plan = ExamplePlans.ledgerSplit
    // 1. Run up to the irreversible contract, then abort: rollback stops at nothing (contract not done).
    let undo = MigrationID("ledger-split-undo")
    _ = try await coordinator.start(undo, plan: plan, context: user, now: now())
    for node in plan.nodes.prefix(4) {
        try await run(.leaseStep(node: node.id, agent: "ledger-agent", ttlMillis: 30_000), undo, agent)
        try await run(.completeStep(node: node.id, token: FencingToken(1)), undo, agent)
    }
    try await run(.approve(node: plan.nodes[4].id, approver: "bob", groups: ["payments-team"], comment: "ok"), undo, bob)
    try await run(.leaseStep(node: plan.nodes[4].id, agent: "payments-agent", ttlMillis: 30_000), undo, agent)
    try await run(.abort(reason: "error budget burning"), undo, user)
    for node in [NodeID("switch-reads-payments"), NodeID("backfill-ledger"), NodeID("dual-write-orders"), NodeID("expand-ledger-schema")] {
        try await run(.leaseStep(node: node, agent: "rollback-agent", ttlMillis: 30_000), undo, agent)
        let token = await coordinator.state.migrations[undo]!.node(node)!.lastToken
        try await run(.completeStep(node: node, token: token), undo, agent)
    }
    // 2. A rejected gate pauses the migration; the operator aborts.
    let rejected = MigrationID("ledger-split-rejected")
    _ = try await coordinator.start(rejected, plan: plan, context: user, now: now())
    for node in plan.nodes.prefix(4) {
        try await run(.leaseStep(node: node.id, agent: "ledger-agent", ttlMillis: 30_000), rejected, agent)
        try await run(.completeStep(node: node.id, token: FencingToken(1)), rejected, agent)
    }
    try await run(.reject(node: plan.nodes[4].id, approver: "bob", groups: ["payments-team"], comment: "p99 doubled"), rejected, bob)
    try await run(.abort(reason: "gate rejected"), rejected, user)
    // 3. A deadline passes.
    var late = ExamplePlans.chain(length: 2, service: "search")
    late.deadlineMillis = 5_000
    let deadline = MigrationID("search-reindex")
    _ = try await coordinator.start(deadline, plan: late.hashed(), context: user, now: now())
    clock += 10
    let timer = CommandContext(actor: .coordinator, triggeredBy: .deadline)
    try await run(.enforceDeadlines, deadline, timer)
    // 4. The plan registry: apply, apply again (no event), change, and start on the older version.
    var registered = ExamplePlans.chain(length: 2, service: "orders")
    _ = try await coordinator.applyPlan(registered, context: user, now: now())
    _ = try await coordinator.applyPlan(registered, context: user, now: now())
    registered.description = "now with a description"
    _ = try await coordinator.applyPlan(registered, context: user, now: now())
    _ = try await coordinator.startMigration(MigrationID("orders-chain-1"), plan: registered.name, version: 1, context: user, now: now())
}
