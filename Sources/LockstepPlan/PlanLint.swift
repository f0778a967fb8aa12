import LockstepCore

/// The rules `lockstep plan lint` applies to a plan that could be read. Errors make a plan unusable;
/// warnings point at something a reviewer should look at twice.
enum PlanLint {
    /// Phases that move a service's readers or writers from the old path to the new one.
    static let movingPhases: Set<Phase> = [.dualWrite, .shadow, .live, .rampdown]
    /// Phases that remove the old path: they must come after every move.
    static let removingPhases: Set<Phase> = [.contract, .cleanup]

    static func findings(_ plan: PlanSnapshot, map: PlanSourceMap) -> [PlanFinding] {
        var out: [PlanFinding] = []
        func error(_ line: Int, _ code: String, _ message: String) { out.append(PlanFinding(.error, line: line, code: code, message)) }
        func warning(_ line: Int, _ code: String, _ message: String) { out.append(PlanFinding(.warning, line: line, code: code, message)) }

        if plan.services.isEmpty { error(1, "no_services", "the plan declares no services (services: NAME: {owners: [...]})") }
        var seen = Set<NodeID>()
        for (index, node) in plan.nodes.enumerated() where !seen.insert(node.id).inserted {
            error(map.line(ofNode: index, field: "id"), "duplicate_node", "node id \(node.id) is used twice (first at line \(map.line(of: node.id, in: plan)))")
        }
        let ids = Set(plan.nodes.map(\.id))
        let declared = Set(plan.services.map(\.name))
        for (index, node) in plan.nodes.enumerated() {
            for need in node.needs where !ids.contains(need) {
                error(index < map.nodes.count ? map.nodes[index].needs[need] ?? map.line(ofNode: index) : 0, "unknown_dependency",
                      "node \(node.id) needs \(need), which is not a node of this plan")
            }
            if !plan.services.isEmpty {
                for service in node.services where !declared.contains(service) {
                    error(map.line(ofNode: index, field: index < map.nodes.count && map.nodes[index].fields["services"] != nil ? "services" : "service"), "unknown_service",
                          "node \(node.id) names service \(service), which the plan does not declare under services")
                }
            }
        }
        let cycle = PlanValidation.cycle(in: plan)
        if let cycle {
            error(map.line(of: cycle[0], in: plan), "dependency_cycle", PlanValidation.cycleMessage(cycle))
        }
        let ancestry = cycle == nil ? Ancestry(plan) : nil
        // The nodes that move each service (at their id's first position, as lookups by id find them), and
        // the irreversible ones, each as a row of bits: a contract node's check is one pass over a row, not
        // a look at every mover (which grew with the square of the plan).
        var movers: [String: [UInt64]] = [:]
        if let ancestry {
            for (index, node) in plan.nodes.enumerated() where movingPhases.contains(node.phase) {
                for service in node.services { ancestry.insert(plan.nodeIndex(node.id) ?? index, into: &movers[service, default: ancestry.emptyRow]) }
            }
        }
        let irreversible = ancestry?.row(where: { plan.nodes[$0].irreversible }) ?? []
        for (index, node) in plan.nodes.enumerated() {
            let line = map.line(ofNode: index)
            if node.irreversible && node.approval == nil {
                error(line, "irreversible_without_gate", "node \(node.id) is irreversible but has no approval gate (add approvals: {minimum: 1})")
            }
            if node.approval != nil && plan.approverGroups(for: node).isEmpty {
                error(map.line(ofNode: index, field: "approvals"), "gate_without_approvers",
                      "node \(node.id) has an approval gate but no owner group can approve it (add from: or owners to its services)")
            }
            // (Positions are a node id's first, as lookups by id find them.)
            let position = plan.nodeIndex(node.id) ?? index
            if let ancestry, removingPhases.contains(node.phase) {
                for service in node.services {
                    guard let row = movers[service] else { continue }
                    let (count, first) = ancestry.notDependedOn(by: position, among: row, naming: Self.moversNamedMax)
                    guard count > 0 else { continue }
                    // One finding per node and service, however many movers it misses (a finding per pair
                    // would grow with the square of the plan).
                    let named = first.map { plan.nodes[$0].id.rawValue }.joined(separator: ", ")
                    let more = count > Self.moversNamedMax ? " (and \(count - Self.moversNamedMax) more)" : ""
                    let (which, them) = count == 1 ? ("moves", "it") : ("move", "them")
                    error(line, "contract_before_move",
                          "\(node.phase.rawValue) node \(node.id) does not depend on \(named)\(more), which \(which) \(service)'s readers or writers; add \(them) to needs")
                }
            }
            let afterIrreversible = ancestry?.depends(position, onAnyOf: irreversible) ?? false
            // An exposure node is undone by its own action returning the exposure to its start.
            if node.rollback == nil && node.exposure == nil && !node.irreversible && !afterIrreversible && node.phase != .verify {
                warning(line, "no_rollback", "node \(node.id) has no rollback action and depends on nothing irreversible: an abort cannot undo it")
            }
            out += timeoutFindings(node, index: index, map: map)
            // At a last stage of 100 % (or `complete`) nothing is left unchanged to be a baseline cohort.
            if let exposure = node.exposure, let last = exposure.stages.last, last.percent == 100 || last.name == "complete",
               let metric = node.analysis?.metrics.first(where: { $0.baseline != nil }) {
                warning(map.line(ofNode: index, field: "analysis"), "baseline_without_source",
                        "\(metric.name) of \(node.id) is judged against a baseline, but at its last stage (\(last.name)) nothing is left "
                            + "unchanged to be one: that bake is inconclusive unless baseline samples come from elsewhere (a kept-back replica)")
            }
            for check in node.checks where check.freshForMillis == nil {
                warning(map.checkLines["\(node.id.rawValue)/\(check.name)"] ?? line, "check_without_freshness",
                        "check \(check.name) of \(node.id) sets no fresh_for: a pass counts however old it is when the step starts (add fresh_for: 1h)")
            }
            if let deadline = node.deadlineMillis, let overall = plan.deadlineMillis, deadline > overall {
                warning(map.line(ofNode: index, field: "deadline"), "deadline_after_migration",
                        "node \(node.id)'s deadline is after the migration's deadline; the migration's fires first")
            }
        }
        return out
    }

    /// Nodes whose windows (the plan's, their services', their own) are never open together within
    /// `CoreLimits.windowSearchDays` days of `now`: such a node waits for ever unless an admin breaks the glass.
    static func windowFindings(_ plan: PlanSnapshot, map: PlanSourceMap, now: Instant) -> [PlanFinding] {
        guard plan.hasWindows, case .success(let zones) = TimeZoneDatabase.offsets(for: plan, from: now) else { return [] }
        var out: [PlanFinding] = []
        let windowWait = plan.windowWaits(zones: zones, at: now)
        for (index, node) in plan.nodes.enumerated() {
            guard let wait = windowWait(node.id), wait.opensAt == nil else { continue }
            let levels = plan.windowLevels(of: node).map { $0.map(\.description).joined(separator: " or ") }
            out.append(PlanFinding(.warning, line: node.windows.isEmpty ? map.line(ofNode: index) : map.line(ofNode: index, field: "windows"),
                                   code: "window_never_opens",
                                   "node \(node.id)'s windows are never open together within \(CoreLimits.windowSearchDays) days "
                                       + "(\(levels.joined(separator: "; and "))): it would wait for ever unless an admin breaks the glass"))
        }
        return out
    }

    /// Timeouts that contradict each other (errors) or look like a typo (warnings).
    static func timeoutFindings(_ node: NodeSpec, index: Int, map: PlanSourceMap) -> [PlanFinding] {
        var out: [PlanFinding] = []
        let line = map.line(ofNode: index, field: "timeouts")
        let t = node.timeouts
        if let heartbeat = t.heartbeatMillis, let close = t.startToCloseMillis, heartbeat >= close {
            out.append(PlanFinding(.error, line: line, code: "unreasonable_timeout",
                                   "node \(node.id)'s heartbeat timeout (\(heartbeat) ms) is not shorter than its start_to_close (\(close) ms)"))
        }
        if let heartbeat = t.heartbeatMillis, heartbeat < 1_000 {
            out.append(PlanFinding(.warning, line: line, code: "unreasonable_timeout",
                                   "node \(node.id)'s heartbeat timeout is \(heartbeat) ms; agents cannot reliably heartbeat under 1 s"))
        }
        for (name, value) in [("schedule_to_start", t.scheduleToStartMillis), ("start_to_close", t.startToCloseMillis)] {
            guard let value else { continue }
            if value < 1_000 {
                out.append(PlanFinding(.warning, line: line, code: "unreasonable_timeout", "node \(node.id)'s \(name) is \(value) ms; under 1 s is likely a typo"))
            } else if value > 86_400_000 {
                out.append(PlanFinding(.warning, line: line, code: "unreasonable_timeout",
                                       "node \(node.id)'s \(name) is over a day; a step that long should report progress and be split"))
            }
        }
        if node.retry.backoffMaxMillis < node.retry.backoffInitialMillis {
            out.append(PlanFinding(.error, line: map.line(ofNode: index, field: "retry"), code: "unreasonable_backoff",
                                   "node \(node.id)'s max_backoff is shorter than its backoff"))
        }
        return out
    }

    /// Most movers one `contract_before_move` finding names; the rest are counted.
    static let moversNamedMax = 5
}

/// Which nodes each node of an acyclic plan depends on, directly or through others: a row of bits per
/// node (bit j: the node at index j), each row the union of its needs' rows, filled needs first. For
/// 1,000 nodes that is 16 words per row and per dependency, where a set of ids per node grew with the
/// square of the plan (and a lookup by id per ancestor with its cube).
struct Ancestry {
    private let count: Int
    private let words: Int
    private var bits: [UInt64]

    /// `plan` should have no cycle (`PlanValidation.cycle`); on one, the rows stop short instead of
    /// looping. Needs resolve to a node id's first position; needs that name no node are left out.
    init(_ plan: PlanSnapshot) {
        count = plan.nodes.count
        words = (count + 63) / 64
        bits = Array(repeating: 0, count: words * count)
        var entered = [Bool](repeating: false, count: count)
        // Depth first without recursion: a node's row is filled once every node it needs has its own.
        for root in plan.nodes.indices where !entered[root] {
            entered[root] = true
            var stack = [(node: root, next: 0)]
            while let top = stack.last {
                let needs = plan.nodes[top.node].needs
                if top.next < needs.count {
                    stack[stack.count - 1].next += 1
                    if let need = plan.nodeIndex(needs[top.next]), !entered[need] {
                        entered[need] = true
                        stack.append((need, 0))
                    }
                    continue
                }
                stack.removeLast()
                for need in needs {
                    guard let index = plan.nodeIndex(need) else { continue }
                    for word in 0..<words { bits[top.node * words + word] |= bits[index * words + word] }
                    bits[top.node * words + index / 64] |= 1 << UInt64(index % 64)
                }
            }
        }
    }

    /// Whether the node at `node` depends on the node at `other`.
    func depends(_ node: Int, on other: Int) -> Bool {
        bits[node * words + other / 64] & (1 << UInt64(other % 64)) != 0
    }

    /// Whether the node at `node` depends on any node of `mask` (a `row(where:)`).
    func depends(_ node: Int, onAnyOf mask: [UInt64]) -> Bool {
        (0..<words).contains { bits[node * words + $0] & mask[$0] != 0 }
    }

    /// A row with no bit set.
    var emptyRow: [UInt64] { [UInt64](repeating: 0, count: words) }

    /// Sets `position`'s bit in `row`.
    func insert(_ position: Int, into row: inout [UInt64]) {
        row[position / 64] |= 1 << UInt64(position % 64)
    }

    /// The positions of `row` that the node at `node` neither is nor depends on: how many, and the first
    /// `naming` of them in plan order.
    func notDependedOn(by node: Int, among row: [UInt64], naming: Int) -> (count: Int, first: [Int]) {
        var count = 0
        var first: [Int] = []
        for word in 0..<words {
            var left = row[word] & ~bits[node * words + word]
            if word == node / 64 { left &= ~(1 << UInt64(node % 64)) }
            count += left.nonzeroBitCount
            while left != 0 && first.count < naming {
                first.append(word * 64 + left.trailingZeroBitCount)
                left &= left - 1
            }
        }
        return (count, first)
    }

    /// A row with the bits of the positions `include` takes.
    func row(where include: (Int) -> Bool) -> [UInt64] {
        var row = [UInt64](repeating: 0, count: words)
        for position in 0..<count where include(position) { row[position / 64] |= 1 << UInt64(position % 64) }
        return row
    }
}
