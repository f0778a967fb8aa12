import FuzzDriver
import LockstepCore

/// Bytes as a sequence of commands (two migrations of one plan, three services, gates, retries, a
/// rollback, an irreversible node) against the live state through `LogState.decide` and `evolve`, on a
/// clock that only moves forward. After every accepted command the invariants of docs/state-machine.md
/// are checked: fencing tokens only grow, no node starts before what it needs succeeded, under a freeze or outside its
/// change windows (the clock starts on Friday 2027-01-15 08:00Z, and the windows open and close within minutes), or
/// without a fresh pass of each of its preflight checks, at most one
/// holder per service, and the canonical encoding round-trips the state exactly.
// Exported too: libFuzzer's archive brings its own `main`, which names this symbol (ours runs first).
@_cdecl("LLVMFuzzerTestOneInput")
func fuzzDecide(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let input = fuzzInput(data, size)
    var reader = Input(bytes: input)
    var state = LogState()
    var sequence: UInt64 = 0
    var now = Instant(millisecondsSinceEpoch: 1_800_000_000_000)
    var tokens: [String: FencingToken] = [:]
    /// Migrations whose stream has events (in the log, whether or not still in the live state).
    var streams: Set<MigrationID> = []
    var freezesDeclared = 0
    let migrations = [MigrationID("m1"), MigrationID("m2")]
    // The plan is registered first: a start runs only a registered version.
    guard case .planEvent(let name, let applied) = state.decide(.plans(.apply(Plan.snapshot)), now: now) else { preconditionFailure("the plan is refused") }
    sequence += 1
    state.evolve(.plan(RecordedPlanEvent(plan: name, streamVersion: 1, metadata: EventMetadata(recordedAt: now, actor: .coordinator, triggeredBy: .user),
                                         event: applied)), sequence: sequence)
    // At most 64 commands per input: bounded work whatever the length.
    for _ in 0..<64 {
        guard let op = reader.next() else { break }
        let migration = migrations[Int(op >> 7)]
        let node = Plan.nodes[Int(reader.next() ?? 0) % Plan.nodes.count].id
        now = now.adding(milliseconds: Int64(reader.next() ?? 0) * 100)
        let token = FencingToken(UInt64(reader.next() ?? 0) % 8)
        let command: Command
        switch op % 16 {
        case 0: command = .migration(migration, .start(id: migration, plan: state.plan(Plan.snapshot.name)!, startedBy: "alice", zones: Plan.zones))
        case 1, 2: command = .migration(migration, .leaseStep(node: node, agent: "agent", ttlMillis: 1_000))
        case 3: command = .migration(migration, .completeStep(node: node, token: token))
        case 4:
            // A check's report (or a step's completion carrying one): ok or not, a value or none.
            let value = reader.next() ?? 0
            command = .migration(migration, .completeStep(node: node, token: token, check: CheckReport(
                ok: op & 0x20 != 0, valueMicros: value & 1 == 0 ? nil : Int64(value) * 100_000, evidence: "e")))
        case 5: command = .migration(migration, .failStep(node: node, token: token, reason: "boom", retryable: op & 0x20 != 0))
        case 6: command = .migration(migration, op & 0x20 != 0 ? .returnStep(node: node, token: token) : .heartbeat(node: node, token: token))
        case 7: command = .migration(migration, .reportProgress(node: node, token: token, percent: UInt8((reader.next() ?? 0) % 120), message: "p"))
        case 8: command = .migration(migration, op & 0x20 != 0 ? .timeOutStep(node: node, token: token) : .expireLease(node: node, token: token))
        case 9: command = .migration(migration, .approve(node: node, approver: op & 0x20 != 0 ? "bob" : "alice", groups: ["orders-team", "ledger-team"], comment: ""))
        case 10: command = .migration(migration, .reject(node: node, approver: "carol", groups: ["ledger-team"], comment: "no"))
        case 11: command = .migration(migration, op & 0x20 != 0 ? .pause(reason: "p") : .resume)
        case 12: command = .migration(migration, .abort(reason: "stop"))
        case 13: command = .migration(migration, op & 0x20 != 0 ? .scheduleToStartExceeded(node: node) : .enforceDeadlines)
        case 14 where op & 0x20 == 0: command = .serviceLeases(.grant(migration: migration, node: node, through: sequence))
        case 14 where op & 0x40 == 0:
            // Freezes: declare one over the node's first service (ids never reused, as the log requires), or end the oldest.
            if let oldest = state.freezesInOrder.first, op & 0x10 != 0 {
                command = .freezes(.end(id: oldest.id, by: "olga", reason: ""))
            } else {
                freezesDeclared += 1
                let services = op & 0x08 != 0 ? [] : [Plan.snapshot.node(node)!.services[0]]
                command = .freezes(.declare(Freeze(id: "f\(freezesDeclared)", services: services, from: now,
                                                   until: op & 0x04 != 0 ? nil : now.adding(milliseconds: Int64(reader.next() ?? 1) * 1_000),
                                                   reason: "r", declaredBy: "olga")))
            }
        case 14:
            command = op & 0x10 != 0 ? .serviceLeases(.yieldToFreeze(migration: migration, node: node))
                : .migration(migration, .breakGlass(node: node, scope: op & 0x08 != 0 ? .freeze : op & 0x02 != 0 ? .window : .bake, by: "root", admin: op & 0x04 != 0, justification: "j"))
        default: command = .serviceLeases(.forceRelease(migration: migration, node: node, reason: "force"))
        }
        // The log's expected stream version refuses a second start of an id whose stream exists: a
        // settled migration has left the live state (format 6), so the core alone would accept it.
        if case .migration(_, .start) = command, streams.contains(migration) { continue }
        let ruling = state.decide(command, now: now)
        if case .freezeEvent(let id, let event) = ruling {
            sequence += 1
            state.evolve(.freeze(RecordedFreezeEvent(freeze: id, streamVersion: state.freezes[id] == nil ? 1 : 2,
                                                     metadata: EventMetadata(recordedAt: now, actor: .coordinator, triggeredBy: .user), event: event)),
                         sequence: sequence)
            continue
        }
        guard case .migrationEvents(_, let events) = ruling else { continue }
        streams.insert(migration)
        for event in events {
            if case .stepLeased(let leased) = event, leased.kind == .forward, let live = state.migrations[migration] {
                precondition(state.forwardHold(leased.node, of: live, at: now) == nil, "\(leased.node)'s forward step started under a freeze or outside its windows")
                precondition(live.checkDue(leased.node, at: now) == nil, "\(leased.node)'s forward step started without a fresh pass of each check")
            }
            if case .stepLeased(let leased) = event, leased.kind == .rollback, let live = state.migrations[migration] {
                precondition(live.checkDue(leased.node, at: now, before: .rollback) == nil, "\(leased.node)'s rollback step started without a fresh pass of each check before it")
            }
            if case .stepLeased(let leased) = event, leased.kind == .forward, let spec = Plan.snapshot.node(leased.node) {
                for need in spec.needs {
                    precondition(state.migrations[migration]?.node(need)?.status == .succeeded, "\(leased.node) started before \(need) succeeded")
                }
            }
            sequence += 1
            state.evolve(migration: migration, sequence: sequence, event)
        }
        for id in migrations {
            // Gone from the live state only once settled and holding nothing.
            precondition(state.migrations[id] != nil || !state.unsettled.contains(id), "\(id) left the live state unsettled")
            for node in state.migrations[id]?.nodes ?? [] {
                let key = "\(id)/\(node.id)"
                precondition(node.lastToken >= tokens[key, default: FencingToken(0)], "the fencing token of \(key) went backwards")
                tokens[key] = node.lastToken
            }
        }
        precondition(Set(state.serviceLeases.holders.keys).count == state.serviceLeases.holders.count)
        let bytes = state.canonicalBytes
        guard let decoded = try? LogState(canonicalBytes: bytes) else { preconditionFailure("the canonical encoding of a live state does not decode") }
        precondition(decoded.canonicalBytes == bytes, "the canonical encoding does not round-trip")
    }
    return 0
}

struct Input {
    let bytes: UnsafeBufferPointer<UInt8>
    var index = 0
    init(bytes: UnsafeBufferPointer<UInt8>) { self.bytes = bytes }
    mutating func next() -> UInt8? {
        guard index < bytes.count else { return nil }
        defer { index += 1 }
        return bytes[index]
    }
}

enum Plan {
    static let nodes: [NodeSpec] = [
        NodeSpec(id: NodeID("expand"), services: ["orders"], phase: .expand, action: "a",
                 timeouts: Timeouts(scheduleToStartMillis: 60_000),
                 retry: RetryPolicy(maxAttempts: 3, backoffInitialMillis: 1_000, backoffMaxMillis: 4_000, backoffMultiplier: 2),
                 rollback: RollbackSpec(action: "undo")),
        NodeSpec(id: NodeID("backfill"), services: ["ledger"], phase: .backfill, action: "b", needs: [NodeID("expand")],
                 timeouts: Timeouts(startToCloseMillis: 5_000), retry: RetryPolicy(maxAttempts: 2, backoffInitialMillis: 1_000),
                 rollback: RollbackSpec(action: "undo")),
        NodeSpec(id: NodeID("switch"), services: ["orders", "ledger"], phase: .live, action: "c", needs: [NodeID("backfill")],
                 approval: ApprovalGate(minimum: 1), deadlineMillis: 3_600_000),
        NodeSpec(id: NodeID("contract"), services: ["payments"], phase: .contract, action: "d", needs: [NodeID("switch")],
                 approval: ApprovalGate(minimum: 1), irreversible: true),
    ]
    static func window(_ text: String) -> ChangeWindow {
        guard case .success(let window) = ChangeWindow.parse(text) else { preconditionFailure(text) }
        return window
    }
    static let snapshot: PlanSnapshot = {
        var windowed = nodes
        windowed[2].windows = [window("Fri 09:05-09:15 Europe/Berlin"), window("Fri 09:25-09:40 Europe/Berlin")]
        // Checks: a lag check that blocks (fresh for 5 s, recheck after 2 s), and one that rolls back.
        windowed[0].checks = [CheckSpec(name: "lag", pass: .max(5_000_000), freshForMillis: 5_000, recheckMillis: 2_000)]
        windowed[1].checks = [CheckSpec(name: "backup", pass: .ok, freshForMillis: 60_000, onFail: .rollback, before: .both)]
        return PlanSnapshot(name: "fuzz", version: 1, contentHash: "fuzz", services: [
            ServiceSpec(name: "orders", owners: ["orders-team"]), ServiceSpec(name: "ledger", owners: ["ledger-team"], windows: [window("daily 08:10-08:20 UTC")]),
            ServiceSpec(name: "payments", owners: ["payments-team"]),
        ], nodes: windowed)
    }()
    /// Berlin at +01:00, as a start in January records it.
    static let zones = [ZoneOffsets(zone: "Europe/Berlin", initialOffsetSeconds: 3_600), ZoneOffsets(zone: "UTC", initialOffsetSeconds: 0)]
}

runFuzzer { data, size in fuzzDecide(data, size) }
