import LockstepCore
import Yams

// The YAML node walker behind `PlanFile` (PlanFile.swift): one method per part of the plan format,
// each noting the line of every problem it finds.
// Exposure and analysis are read in PlanFileReader+Exposure.swift, windows and checks in
// PlanFileReader+Gates.swift.

/// Walks the YAML tree, building the plan and collecting findings.
struct Reader {
    var findings: [PlanFinding] = []
    /// Errors past `PlanFile.findingsMax`: counted, not kept (a 1 MiB file can hold half a million).
    var unshownErrors = 0
    var map = PlanSourceMap()

    mutating func error(_ line: Int, _ code: String, _ message: String) {
        guard findings.count < PlanFile.findingsMax else { return unshownErrors += 1 }
        findings.append(PlanFinding(.error, line: line, code: code, message))
    }

    mutating func plan(_ mapping: Node.Mapping) -> PlanSnapshot? {
        let fields = self.fields(mapping, allowed: PlanFile.planKeys, in: "the plan")
        let name = string(fields["name"], required: true, what: "name", line: mapping.mark?.line ?? 1) ?? ""
        let description = string(fields["description"], required: false, what: "description", line: 0) ?? ""
        let owners = strings(fields["owners"], what: "owners", max: CoreLimits.ownerGroupsMax) ?? []
        let deadline = duration(fields["deadline"], what: "deadline")
        var services: [ServiceSpec] = []
        if let node = fields["services"] {
            if case .mapping(let serviceMap) = node, serviceMap.count > CoreLimits.planNodesMax {
                // Refused before any is read: the lint rules' work grows with the services and nodes.
                error(node.mark?.line ?? 0, "too_many_services", "the plan declares \(serviceMap.count) services; the limit is \(CoreLimits.planNodesMax)")
                return nil
            } else if case .mapping(let serviceMap) = node {
                for (key, value) in serviceMap {
                    guard case .scalar(let scalar) = key else {
                        error(key.mark?.line ?? 0, "invalid_key", "a key under services is a list or a mapping; a service is named by text")
                        continue
                    }
                    let serviceName = scalar.string
                    map.serviceLines[serviceName] = key.mark?.line ?? 0
                    var serviceOwners: [String] = []
                    var serviceWindows: [ChangeWindow] = []
                    if case .mapping(let details) = value {
                        let serviceFields = self.fields(details, allowed: ["owners", "windows"], in: "service \(serviceName)")
                        serviceOwners = strings(serviceFields["owners"], what: "owners of \(serviceName)", max: CoreLimits.ownerGroupsMax) ?? []
                        serviceWindows = windows(serviceFields["windows"], of: "service \(serviceName)")
                    } else if !(value.string ?? "").isEmpty || value.tag.description != "tag:yaml.org,2002:null" {
                        error(value.mark?.line ?? 0, "invalid_value", "service \(serviceName) must be a mapping with owners")
                    }
                    services.append(ServiceSpec(name: serviceName, owners: serviceOwners, windows: serviceWindows))
                }
            } else {
                error(node.mark?.line ?? 0, "invalid_value", "services must map each service name to its owners")
            }
        }
        var nodes: [NodeSpec] = []
        if let node = fields["nodes"] {
            if case .sequence(let sequence) = node, sequence.count > CoreLimits.planNodesMax {
                error(node.mark?.line ?? 0, "too_many_nodes", "the plan has \(sequence.count) nodes; the limit is \(CoreLimits.planNodesMax)")
                return nil
            } else if case .sequence(let sequence) = node {
                for item in sequence {
                    if case .mapping(let nodeMapping) = item, let spec = nodeSpec(nodeMapping) { nodes.append(spec) }
                    else if item.mapping == nil { error(item.mark?.line ?? 0, "invalid_value", "each node must be a mapping") }
                }
            } else {
                error(node.mark?.line ?? 0, "invalid_value", "nodes must be a list")
            }
        } else {
            error(mapping.mark?.line ?? 1, "missing_field", "the plan has no nodes")
        }
        var onPause = PausePolicy.finish
        if let text = string(fields["on_pause"], required: false, what: "on_pause", line: mapping.mark?.line ?? 1) {
            if let policy = PausePolicy(rawValue: text) { onPause = policy } else {
                error(fields["on_pause"]?.mark?.line ?? 1, "invalid_value", "on_pause is \"\(text)\"; use finish (running steps finish) or stop (they are told to stop)")
            }
        }
        return PlanSnapshot(name: name, version: 0, contentHash: "", description: description, owners: owners,
                            services: services, deadlineMillis: deadline, nodes: nodes, windows: windows(fields["windows"], of: "the plan"),
                            onPause: onPause)
    }

    mutating func nodeSpec(_ mapping: Node.Mapping) -> NodeSpec? {
        let line = mapping.mark?.line ?? 0
        let fields = self.fields(mapping, allowed: PlanFile.nodeKeys, in: "a node")
        guard let idText = string(fields["id"], required: true, what: "node id", line: line) else { return nil }
        let id = NodeID(idText)
        var lines: [String: Int] = [:]
        for (key, value) in mapping { if let name = key.string { lines[name] = key.mark?.line ?? value.mark?.line ?? line } }
        var nodeLines = PlanSourceMap.NodeLines(line: line, fields: lines)
        defer { map.nodes.append(nodeLines) }

        let listed = strings(fields["services"], what: "services of \(id)", max: CoreLimits.nodeServicesMax)
        var services = listed ?? []
        if let single = string(fields["service"], required: false, what: "service of \(id)", line: line) { services.insert(single, at: 0) }
        // (A list refused for its length has said so already.)
        if services.isEmpty, listed != nil {
            error(line, "missing_field", "node \(id) names no service (service: NAME or services: [A, B])")
        }
        var phase = Phase.custom
        if let text = string(fields["phase"], required: true, what: "phase of \(id)", line: line) {
            if let known = Phase(rawValue: text) { phase = known } else {
                error(lines["phase"] ?? line, "invalid_value",
                      "node \(id) has phase \"\(text)\"; use one of \(Phase.allCases.map(\.rawValue).joined(separator: ", "))")
            }
        }
        let action = string(fields["action"], required: true, what: "action of \(id)", line: line) ?? ""
        let params = self.params(fields["params"], of: "node \(id)")
        if let params = fields["params"], params.mapping == nil {
            error(lines["params"] ?? line, "invalid_value", "params of node \(id) must be a mapping")
        }
        var needs: [NodeID] = []
        if let needsNode = fields["needs"],
           withinLimit(needsNode.sequence?.count ?? 0, max: CoreLimits.nodeNeedsMax, at: needsNode.mark?.line ?? line, { "needs of \(id) lists \($0) nodes" }) {
            if needsNode.mapping != nil { error(needsNode.mark?.line ?? line, "invalid_value", "needs of \(id) must be a list of node ids") }
            for entry in needsNode.sequence.map(Array.init) ?? (needsNode.mapping == nil ? [needsNode] : []) {
                guard case .scalar = entry, let need = entry.string, !need.isEmpty else {
                    error(entry.mark?.line ?? line, "invalid_value", "needs of \(id) must list node ids, not \(entry.mapping != nil ? "a mapping" : "a list")")
                    continue
                }
                needs.append(NodeID(need))
                nodeLines.needs[NodeID(need)] = entry.mark?.line ?? line
            }
        }
        let timeouts = self.timeouts(fields["timeouts"], node: id)
        let retry = self.retry(fields["retry"], node: id)
        let rollback = self.rollback(fields["rollback"], node: id)
        let approval = self.approvals(fields["approvals"], node: id)
        let deadline = duration(fields["deadline"], what: "deadline of \(id)")
        let irreversible = bool(fields["irreversible"], what: "irreversible of \(id)") ?? false
        var onFailure = FailurePolicy.rollback
        if let text = string(fields["on_failure"], required: false, what: "on_failure of \(id)", line: line) {
            if let policy = FailurePolicy(rawValue: text) { onFailure = policy } else {
                error(lines["on_failure"] ?? line, "invalid_value", "node \(id) has on_failure \"\(text)\"; use rollback or pause")
            }
        }
        let exposure = self.exposure(fields["exposure"], node: id)
        let analysis = self.analysis(fields["analysis"], node: id)
        let windows = self.windows(fields["windows"], of: "node \(id)")
        let checks = self.checks(fields["checks"], node: id)
        if analysis != nil && fields["exposure"] == nil {
            error(lines["analysis"] ?? line, "analysis_without_exposure", "node \(id) has an analysis but no exposure; analyses judge the bake after each exposure stage")
        }
        let spec = NodeSpec(id: id, services: services, phase: phase, action: action, paramsJSON: params, needs: needs, timeouts: timeouts,
                            retry: retry, rollback: rollback, approval: approval, deadlineMillis: deadline, irreversible: irreversible,
                            onFailure: onFailure, exposure: exposure, analysis: analysis, windows: windows, checks: checks)
        checkValues(spec, lines: lines, line: line)
        return spec
    }

    /// The core's per-value rules, reported here at the value's own line (the core would only name the first).
    mutating func checkValues(_ spec: NodeSpec, lines: [String: Int], line: Int) {
        func at(_ field: String) -> Int { lines[field] ?? line }
        let names: [(String, String, String)] = [("id", spec.id.rawValue, "node id"), ("action", spec.action, "action of \(spec.id)")]
            + spec.services.map { (lines["services"] != nil ? "services" : "service", $0, "service of \(spec.id)") }
            + (spec.rollback.map { [("rollback", $0.action, "rollback action of \(spec.id)")] } ?? [])
            + (spec.approval?.from.map { ("approvals", $0, "approver group of \(spec.id)") } ?? [])
        for (field, value, what) in names where !value.isEmpty {
            if let problem = IdentifierRules.problem(value, what: what) { error(at(field), "invalid_value", problem) }
        }
        if spec.paramsJSON.utf8.count > CoreLimits.paramsBytesMax || (spec.rollback?.paramsJSON.utf8.count ?? 0) > CoreLimits.paramsBytesMax {
            error(at("params"), "invalid_value", "params of \(spec.id) are over \(CoreLimits.paramsBytesMax) bytes of JSON")
        }
    }

    mutating func timeouts(_ node: Node?, node id: NodeID) -> Timeouts {
        guard let node, case .mapping(let mapping) = node else { return Timeouts() }
        let fields = self.fields(mapping, allowed: ["schedule_to_start", "start_to_close", "heartbeat"], in: "timeouts of \(id)")
        return Timeouts(scheduleToStartMillis: duration(fields["schedule_to_start"], what: "schedule_to_start of \(id)"),
                        startToCloseMillis: duration(fields["start_to_close"], what: "start_to_close of \(id)"),
                        heartbeatMillis: duration(fields["heartbeat"], what: "heartbeat of \(id)"))
    }

    mutating func retry(_ node: Node?, node id: NodeID) -> RetryPolicy {
        guard let node, case .mapping(let mapping) = node else { return RetryPolicy() }
        let fields = self.fields(mapping, allowed: ["max_attempts", "backoff", "max_backoff", "multiplier"], in: "retry of \(id)")
        let attempts = integer(fields["max_attempts"], what: "max_attempts of \(id)", in: 1...Int(CoreLimits.attemptsMax)) ?? 1
        let multiplier = integer(fields["multiplier"], what: "multiplier of \(id)", in: 1...1_000) ?? 2
        let initial = duration(fields["backoff"], what: "backoff of \(id)") ?? 0
        return RetryPolicy(maxAttempts: UInt32(attempts), backoffInitialMillis: initial,
                           backoffMaxMillis: duration(fields["max_backoff"], what: "max_backoff of \(id)") ?? initial,
                           backoffMultiplier: UInt32(multiplier))
    }

    mutating func rollback(_ node: Node?, node id: NodeID) -> RollbackSpec? {
        guard let node, case .mapping(let mapping) = node else {
            if let node { error(node.mark?.line ?? 0, "invalid_value", "rollback of \(id) must be a mapping with action (and params)") }
            return nil
        }
        let fields = self.fields(mapping, allowed: ["action", "params"], in: "rollback of \(id)")
        guard let action = string(fields["action"], required: true, what: "rollback action of \(id)", line: mapping.mark?.line ?? 0) else { return nil }
        return RollbackSpec(action: action, paramsJSON: params(fields["params"], of: "the rollback of \(id)"))
    }

    mutating func approvals(_ node: Node?, node id: NodeID) -> ApprovalGate? {
        guard let node, case .mapping(let mapping) = node else {
            if let node { error(node.mark?.line ?? 0, "invalid_value", "approvals of \(id) must be a mapping with minimum (and from)") }
            return nil
        }
        let fields = self.fields(mapping, allowed: ["minimum", "from"], in: "approvals of \(id)")
        let minimum = integer(fields["minimum"], what: "approvals minimum of \(id)", in: 1...Int(CoreLimits.approvalsMax)) ?? 1
        return ApprovalGate(minimum: UInt32(minimum), from: strings(fields["from"], what: "approvals from of \(id)", max: CoreLimits.ownerGroupsMax) ?? [])
    }

    // MARK: - Values

    /// The fields of a mapping by name, reporting unknown and duplicate keys. (The YAML parser refuses a
    /// key written twice the same way, `yaml_syntax`; one written with a tag the second time, `!x id`, is
    /// a different key to it and reaches here.)
    mutating func fields(_ mapping: Node.Mapping, allowed: Set<String>, in context: String) -> [String: Node] {
        var result: [String: Node] = [:]
        for (key, value) in mapping {
            let line = key.mark?.line ?? 0
            guard case .scalar(let scalar) = key else {
                error(line, "invalid_key", "\(context) has a key that is a list or a mapping; fields are named by text")
                continue
            }
            let name = scalar.string
            if !allowed.contains(name) {
                error(line, "unknown_field", "\(context) has an unknown field \"\(name)\"; known fields are \(allowed.sorted().joined(separator: ", "))")
                continue
            }
            if result[name] != nil { error(line, "duplicate_field", "\(context) has \"\(name)\" twice") }
            result[name] = value
        }
        return result
    }

    /// Params as canonical JSON ("{}" when there are none); a key JSON could not keep as written is an error.
    mutating func params(_ node: Node?, of what: String) -> String {
        guard let node else { return "{}" }
        if let (line, problem) = CanonicalJSON.keyProblem(in: node) { error(line, "invalid_key", "the params of \(what) \(problem)") }
        return CanonicalJSON.render(node)
    }

    mutating func string(_ node: Node?, required: Bool, what: String, line: Int) -> String? {
        guard let node else {
            if required { error(line, "missing_field", "\(what) is missing") }
            return nil
        }
        guard case .scalar(let scalar) = node, !scalar.string.isEmpty else {
            error(node.mark?.line ?? line, "invalid_value", "\(what) must be a non-empty string")
            return nil
        }
        return scalar.string
    }

    /// Whether a list of `count` entries is within its limit, `max`; past it `too_many_entries` is noted
    /// at `line`, saying `counted(count)` ("needs of a lists 65 nodes"), and the caller reads none of its
    /// entries (each would be parsed and judged on its own, and the lint rules' work grows with them).
    mutating func withinLimit(_ count: Int, max: Int, at line: Int, _ counted: (Int) -> String) -> Bool {
        guard count > max else { return true }
        error(line, "too_many_entries", "\(counted(count)); the limit is \(max)")
        return false
    }

    /// A list of names (or one name); nil when it is longer than `max` (`too_many_entries`, none read).
    mutating func strings(_ node: Node?, what: String, max: Int = CoreLimits.planNodesMax) -> [String]? {
        guard let node else { return [] }
        guard case .sequence(let sequence) = node else {
            if let single = node.string, !single.isEmpty { return [single] }
            error(node.mark?.line ?? 0, "invalid_value", "\(what) must be a list of names")
            return []
        }
        guard withinLimit(sequence.count, max: max, at: node.mark?.line ?? 0, { "\(what) lists \($0) entries" }) else { return nil }
        return sequence.compactMap { item in
            guard let text = item.string, !text.isEmpty else {
                error(item.mark?.line ?? 0, "invalid_value", "\(what) must contain names")
                return nil
            }
            return text
        }
    }

    mutating func integer(_ node: Node?, what: String, in range: ClosedRange<Int>) -> Int? {
        guard let node else { return nil }
        guard case .scalar(let scalar) = node, let value = Int(scalar.string) else {
            error(node.mark?.line ?? 0, "invalid_value", "\(what) must be a whole number")
            return nil
        }
        guard range.contains(value) else {
            error(node.mark?.line ?? 0, "invalid_value", "\(what) is \(value); it must be \(range.lowerBound)...\(range.upperBound)")
            return nil
        }
        return value
    }

    mutating func bool(_ node: Node?, what: String) -> Bool? {
        guard let node else { return nil }
        guard let value = node.bool else {
            error(node.mark?.line ?? 0, "invalid_value", "\(what) must be true or false")
            return nil
        }
        return value
    }

    mutating func duration(_ node: Node?, what: String) -> Int64? {
        guard let node else { return nil }
        let text = node.string ?? ""
        switch PlanDuration.parse(text) {
        case .milliseconds(let millis) where millis <= CoreLimits.durationMillisMax:
            return millis
        case .milliseconds, .overflow:
            // (At most 32 characters of it quoted: a run of digits can be most of a file.)
            let shown = text.count > 32 ? text.prefix(32) + "…" : Substring(text)
            error(node.mark?.line ?? 0, "invalid_duration", "\(what) is \(shown); durations are at most \(CoreLimits.durationMillisMax / 86_400_000)d")
        case .notADuration:
            error(node.mark?.line ?? 0, "invalid_duration", "\(what) must be a duration such as 500ms, 30s, 10m, 2h or 1d")
        }
        return nil
    }
}
