/// Structural checks on a plan snapshot: the part of validation that `decide` must do before a migration starts.
public enum PlanValidation {
    /// A sentence naming the first problem in `plan`, or nil when it is structurally sound.
    public static func problem(in plan: PlanSnapshot) -> String? {
        if let problem = MigrationState.validateIdentifier(plan.name, what: "plan name") { return problem }
        if plan.nodes.isEmpty { return "plan \(plan.name) has no nodes" }
        if let problem = planDetailsProblem(plan) { return problem }
        if plan.nodes.count > CoreLimits.planNodesMax {
            return "plan has \(plan.nodes.count) nodes; the limit is \(CoreLimits.planNodesMax)"
        }
        var seen = Set<NodeID>()
        for node in plan.nodes {
            if let problem = MigrationState.validateIdentifier(node.id.rawValue, what: "node id") { return problem }
            if !seen.insert(node.id).inserted { return "node id \(node.id) appears twice" }
            if let problem = MigrationState.validateIdentifier(node.action, what: "action of node \(node.id)") { return problem }
            if node.services.isEmpty { return "node \(node.id) names no service" }
            if node.services.count > CoreLimits.nodeServicesMax {
                return "node \(node.id) names \(node.services.count) services; the limit is \(CoreLimits.nodeServicesMax)"
            }
            for service in node.services {
                if let problem = MigrationState.validateIdentifier(service, what: "service of node \(node.id)") { return problem }
            }
            if node.needs.count > CoreLimits.nodeNeedsMax {
                return "node \(node.id) needs \(node.needs.count) nodes; the limit is \(CoreLimits.nodeNeedsMax)"
            }
            if node.maxAttempts < 1 || node.maxAttempts > CoreLimits.attemptsMax {
                return "node \(node.id) allows \(node.maxAttempts) attempts; it must be 1...\(CoreLimits.attemptsMax)"
            }
            if let problem = nodeDetailsProblem(node, plan: plan) { return problem }
        }
        for node in plan.nodes {
            for need in node.needs where !seen.contains(need) {
                return "node \(node.id) needs \(need), which is not in the plan"
            }
        }
        return cycle(in: plan).map(cycleMessage)
    }

    /// Most nodes a cycle's message names; the rest are counted (a cycle may run through every node).
    public static let cycleNodesNamedMax = 12

    /// "dependency cycle: a -> b -> a", naming at most `cycleNodesNamedMax` nodes before the one it closes on.
    public static func cycleMessage(_ cycle: [NodeID]) -> String {
        let path = cycle.dropLast()
        let named = path.prefix(cycleNodesNamedMax).map(\.rawValue)
        let more = path.count > cycleNodesNamedMax ? ["(\(path.count - cycleNodesNamedMax) more)"] : []
        return "dependency cycle: " + (named + more + cycle.suffix(1).map(\.rawValue)).joined(separator: " -> ")
    }

    /// Problems with a node's params, timeouts, retry policy, rollback, gate and deadline.
    static func exposureProblem(_ node: NodeSpec) -> String? {
        if node.analysis != nil && node.exposure == nil { return "node \(node.id) has an analysis but no exposure" }
        if let exposure = node.exposure {
            if exposure.stages.isEmpty || exposure.stages.count > CoreLimits.exposureStagesMax {
                return "node \(node.id) has \(exposure.stages.count) exposure stages; it must be 1...\(CoreLimits.exposureStagesMax)"
            }
            if exposure.bakeMillis < 0 || exposure.bakeMillis > CoreLimits.durationMillisMax { return "node \(node.id)'s bake is out of range" }
            for stage in exposure.stages {
                if let problem = MigrationState.validateIdentifier(stage.name, what: "exposure stage of \(node.id)") { return problem }
                if let percent = stage.percent, percent > 100 { return "node \(node.id) has an exposure stage of \(percent) %" }
            }
        }
        if let analysis = node.analysis {
            if analysis.metrics.isEmpty || analysis.metrics.count > CoreLimits.analysisMetricsMax {
                return "node \(node.id)'s analysis judges \(analysis.metrics.count) metrics; it must be 1...\(CoreLimits.analysisMetricsMax)"
            }
            var names = Set<String>()
            for check in analysis.metrics {
                if let problem = MigrationState.validateIdentifier(check.name, what: "metric of \(node.id)") { return problem }
                if !names.insert(check.name).inserted { return "node \(node.id)'s analysis judges \(check.name) twice" }
                if max(check.passMicros.magnitude, check.marginalMicros.magnitude) > CoreLimits.metricMicrosMagnitudeMax.magnitude {
                    return "a threshold of \(check.name) in \(node.id) is out of range"
                }
                if check.minSamples < 1 || check.minSamples > UInt32(CoreLimits.metricSamplesPerBakeMax) {
                    return "min_samples of \(check.name) in \(node.id) must be 1...\(CoreLimits.metricSamplesPerBakeMax)"
                }
                if let rule = check.baseline, let problem = baselineProblem(rule, direction: check.direction) {
                    return "the baseline rule of \(check.name) in \(node.id): \(problem)"
                }
            }
        }
        return nil
    }

    /// What is wrong with a baseline rule: a ratio outside (0, 1000], a negative or out-of-range
    /// difference, a pass with no limit, or a marginal limit stricter than its pass limit.
    public static func baselineProblem(_ rule: BaselineRule, direction: MetricDirection) -> String? {
        for limits in [rule.pass, rule.marginal] {
            if let ratio = limits.ratioMicros, !(1...1_000_000_000).contains(ratio) { return "a ratio must be above 0 and at most 1000" }
            if let difference = limits.differenceMicros, !(0...CoreLimits.metricMicrosMagnitudeMax).contains(difference) {
                return "a difference must be 0 or more, within the metric range"
            }
        }
        if rule.pass.ratioMicros == nil && rule.pass.differenceMicros == nil { return "its pass sets no limit" }
        // (A plan file's marginal defaults to its pass; one with no limit would never fail.)
        if rule.marginal.ratioMicros == nil && rule.marginal.differenceMicros == nil { return "its marginal sets no limit" }
        if let pass = rule.pass.ratioMicros, let marginal = rule.marginal.ratioMicros,
           direction == .lowerIsBetter ? marginal < pass : marginal > pass {
            return "its marginal ratio is stricter than its pass ratio"
        }
        if let pass = rule.pass.differenceMicros, let marginal = rule.marginal.differenceMicros, marginal < pass {
            return "its marginal difference is stricter than its pass difference"
        }
        return nil
    }

    static func nodeDetailsProblem(_ node: NodeSpec, plan: PlanSnapshot) -> String? {
        if let problem = exposureProblem(node) { return problem }
        if let problem = windowsProblem(node.windows, of: "node \(node.id)") { return problem }
        if let problem = checksProblem(node) { return problem }
        for json in [node.paramsJSON, node.rollback?.paramsJSON ?? "{}"] where json.utf8.count > CoreLimits.paramsBytesMax {
            return "node \(node.id) has \(json.utf8.count) bytes of params; the limit is \(CoreLimits.paramsBytesMax) bytes"
        }
        let durations: [(String, Int64?)] = [
            ("schedule-to-start timeout", node.timeouts.scheduleToStartMillis), ("start-to-close timeout", node.timeouts.startToCloseMillis),
            ("heartbeat timeout", node.timeouts.heartbeatMillis), ("deadline", node.deadlineMillis),
            ("initial backoff", node.retry.backoffInitialMillis), ("maximum backoff", node.retry.backoffMaxMillis),
        ]
        for (what, millis) in durations {
            guard let millis else { continue }
            if millis < 0 || millis > CoreLimits.durationMillisMax {
                return "node \(node.id) has a \(what) of \(millis) ms; it must be 0...\(CoreLimits.durationMillisMax) ms"
            }
        }
        if let deadline = node.deadlineMillis, deadline <= 0 {
            return "node \(node.id) has a deadline of \(deadline) ms; it must be at least 1 ms after the start"
        }
        if let rollback = node.rollback, let problem = MigrationState.validateIdentifier(rollback.action, what: "rollback action of node \(node.id)") {
            return problem
        }
        if let gate = node.approval {
            if gate.minimum < 1 || gate.minimum > CoreLimits.approvalsMax {
                return "node \(node.id) requires \(gate.minimum) approvals; it must be 1...\(CoreLimits.approvalsMax)"
            }
            if gate.from.count > CoreLimits.ownerGroupsMax {
                return "node \(node.id)'s gate names \(gate.from.count) groups; the limit is \(CoreLimits.ownerGroupsMax)"
            }
            for group in gate.from {
                if let problem = MigrationState.validateIdentifier(group, what: "approver group of node \(node.id)") { return problem }
            }
            if plan.approverGroups(for: node).isEmpty {
                return "node \(node.id) has an approval gate but no owner group may approve it (name `from`, or owners for its services)"
            }
        }
        if !plan.services.isEmpty {
            for service in node.services where !plan.declares(service: service) {
                return "node \(node.id) names service \(service), which the plan does not declare"
            }
        }
        return nil
    }

    /// Problems with the plan-level fields.
    static func planDetailsProblem(_ plan: PlanSnapshot) -> String? {
        if plan.description.utf8.count > CoreLimits.descriptionBytesMax {
            return "the description is \(plan.description.utf8.count) bytes; the limit is \(CoreLimits.descriptionBytesMax) bytes"
        }
        if plan.owners.count > CoreLimits.ownerGroupsMax || plan.services.contains(where: { $0.owners.count > CoreLimits.ownerGroupsMax }) {
            return "too many owner groups; the limit is \(CoreLimits.ownerGroupsMax) per plan or service"
        }
        if plan.services.count > CoreLimits.planNodesMax { return "plan declares \(plan.services.count) services; the limit is \(CoreLimits.planNodesMax)" }
        var names = Set<String>()
        for service in plan.services {
            if let problem = MigrationState.validateIdentifier(service.name, what: "service name") { return problem }
            if !names.insert(service.name).inserted { return "service \(service.name) is declared twice" }
            for owner in service.owners {
                if let problem = MigrationState.validateIdentifier(owner, what: "owner group of \(service.name)") { return problem }
            }
        }
        if let millis = plan.deadlineMillis, millis <= 0 || millis > CoreLimits.durationMillisMax {
            return "the migration deadline is \(millis) ms; it must be 1...\(CoreLimits.durationMillisMax) ms"
        }
        if let problem = windowsProblem(plan.windows, of: "the plan") { return problem }
        for service in plan.services {
            if let problem = windowsProblem(service.windows, of: "service \(service.name)") { return problem }
        }
        return nil
    }

    /// What is wrong with one level's windows (`what` owns them): too many, or one that is not a window
    /// (no day, a minute out of range, an empty span, a badly spelled zone).
    static func windowsProblem(_ windows: [ChangeWindow], of what: String) -> String? {
        if windows.count > CoreLimits.windowsPerLevelMax {
            return "\(what) declares \(windows.count) windows; the limit is \(CoreLimits.windowsPerLevelMax)"
        }
        for window in windows {
            if window.days == 0 || window.days > 0x7F { return "a window of \(what) names no day of the week (or a day that is not one)" }
            if window.startMinute >= ChangeWindow.minutesPerDay || window.endMinute == 0 || window.endMinute > ChangeWindow.minutesPerDay
                || window.startMinute == window.endMinute {
                return "a window of \(what) runs from minute \(window.startMinute) to \(window.endMinute) of the day; it must open at 0...1439 and close at another minute, 1...1440"
            }
            if let problem = ChangeWindow.zoneNameProblem(window.zone) { return "a window of \(what): \(problem)" }
        }
        return nil
    }

    /// What is wrong with a node's checks: too many, a name twice, a name that is not an identifier,
    /// params too large, a threshold out of range, a freshness or recheck outside 1 ms...30 days.
    public static func checksProblem(_ node: NodeSpec) -> String? {
        if node.checks.count > CoreLimits.checksPerNodeMax {
            return "node \(node.id) has \(node.checks.count) checks; the limit is \(CoreLimits.checksPerNodeMax)"
        }
        var names = Set<String>()
        for check in node.checks {
            if let problem = MigrationState.validateIdentifier(check.name, what: "check of node \(node.id)") { return problem }
            if !names.insert(check.name).inserted { return "node \(node.id) names check \(check.name) twice" }
            if check.paramsJSON.utf8.count > CoreLimits.paramsBytesMax {
                return "check \(check.name) of \(node.id) has \(check.paramsJSON.utf8.count) bytes of params; the limit is \(CoreLimits.paramsBytesMax) bytes"
            }
            switch check.pass {
            case .ok: break
            case .max(let micros), .min(let micros):
                if micros.magnitude > CoreLimits.metricMicrosMagnitudeMax.magnitude { return "the threshold of check \(check.name) in \(node.id) is out of range" }
            }
            for (what, millis) in [("fresh_for", check.freshForMillis), ("recheck", Optional(check.recheckMillis))] {
                if let millis, !(1...CoreLimits.durationMillisMax).contains(millis) {
                    return "check \(check.name) of \(node.id) has a \(what) of \(millis) ms; it must be 1...\(CoreLimits.durationMillisMax) ms"
                }
            }
        }
        return nil
    }

    /// What is wrong with the zone offsets a start carries for `plan`: they must be exactly the zones its
    /// windows name, sorted, each once and well formed.
    public static func zonesProblem(_ zones: [ZoneOffsets], for plan: PlanSnapshot) -> String? {
        let named = plan.windowZones
        guard zones.map(\.zone) == named else {
            return "the start carries offsets for zones [\(zones.map(\.zone).joined(separator: ", "))]; the plan's windows name [\(named.joined(separator: ", "))]"
        }
        return zones.lazy.compactMap { $0.problem() }.first
    }

    /// The first dependency cycle found walking nodes in plan order, or nil.
    public static func cycle(in plan: PlanSnapshot) -> [NodeID]? {
        enum Mark { case visiting, done }
        var marks: [NodeID: Mark] = [:]
        var path: [NodeID] = []
        let needs = Dictionary(plan.nodes.map { ($0.id, $0.needs) }, uniquingKeysWith: { first, _ in first })

        func visit(_ id: NodeID) -> [NodeID]? {
            switch marks[id] {
            case .done: return nil
            case .visiting:
                let start = path.firstIndex(of: id) ?? 0
                return Array(path[start...]) + [id]
            case nil: break
            }
            marks[id] = .visiting
            path.append(id)
            for need in needs[id] ?? [] {
                if let found = visit(need) { return found }
            }
            path.removeLast()
            marks[id] = .done
            return nil
        }
        for node in plan.nodes {
            if let found = visit(node.id) { return found }
        }
        return nil
    }
}
