import ArgumentParser
import Foundation
import LockstepCore
import LockstepEngine
import LockstepPlan

struct Rehearse: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a plan end to end on a virtual clock with simulated agents and approvers, and print the timeline.",
        discussion: """
            Uses the real coordinator and state machine over an in-memory log. Same file, options and seed:
            same output. Exit status: 0 when the migration succeeds, 1 when it rolls back or fails, 2 when the
            plan has lint errors.
            """)

    @Argument(help: "The plan file (YAML).") var file: String
    @Option(help: "Seed for step durations.") var seed: UInt64 = 1
    @Option(help: ArgumentHelp(
        "When the virtual clock starts: ISO 8601 (2026-12-07T07:30:00Z) or now; default 2026-01-01T00:00:00Z.",
        discussion: "A plan's change windows are read from there (docs/gates.md)."))
    var start: InstantArgument?
    @Option(name: .customLong("fail"), help: "NODE[:N]: the first N attempts of NODE fail (default 1). Repeatable.")
    var failures: [String] = []
    @Option(name: .customLong("hang"), help: ArgumentHelp(
        "NODE[:N]: the first N attempts of NODE never end (default 1); the node's start_to_close times them out. Repeatable.",
        discussion: "NODE must set timeouts.start_to_close: a hung handler's agent keeps heartbeating, so only that ends it."))
    var hangs: [String] = []
    @Option(name: .customLong("lose"), help: ArgumentHelp(
        "NODE[:N]: the agents of the first N attempts of NODE die right after taking the step (default 1). Repeatable.",
        discussion: "Their leases expire after the node's timeouts.heartbeat (30 s without one); the first 3 per node are not counted against its retry policy."))
    var losses: [String] = []
    @Option(name: .customLong("reject"), help: "GATE: an approver rejects the gate of node GATE. Repeatable.")
    var rejections: [String] = []
    @Option(name: .customLong("metric"), help: ArgumentHelp(
        "NODE:METRIC=V1,V2,...: the value METRIC reports during the bake of each exposure stage of NODE. Repeatable.",
        discussion: "The last value holds for later stages; a metric without a trace reports exactly its pass threshold."))
    var metrics: [String] = []
    @Option(name: .customLong("baseline"), help: ArgumentHelp(
        "NODE:METRIC=V1,V2,...: the same for the baseline cohort of a metric with a baseline rule. Repeatable.",
        discussion: "Without a trace, the baseline reports what the canary does."))
    var baselines: [String] = []
    @Option(name: .customLong("check"), help: ArgumentHelp(
        "NODE:CHECK=R1,R2,...: what each run of a preflight check of NODE reports: ok, fail, or a number (ok with that value). Repeatable.",
        discussion: "The last result holds for later runs; a check without a trace passes (at exactly its threshold)."))
    var checks: [String] = []
    @Option(help: "Output format: table or json.") var output: OutputFormat = .table

    /// `NODE:CHECK=R1,R2,...` traces, checked against the plan's checks.
    static func checkTraces(_ traces: [String], plan: PlanSnapshot) throws -> [NodeID: [String: [CheckReport]]] {
        var result: [NodeID: [String: [CheckReport]]] = [:]
        for trace in traces {
            guard let colon = trace.firstIndex(of: ":"), let equals = trace.firstIndex(of: "="), colon < equals else {
                throw ValidationError("--check \(trace): write NODE:CHECK=ok,fail,12.5")
            }
            let node = NodeID(String(trace[..<colon]))
            let name = String(trace[trace.index(after: colon)..<equals])
            guard let checks = plan.node(node)?.checks, !checks.isEmpty else { throw ValidationError("--check names \(node), which has no checks") }
            guard checks.contains(where: { $0.name == name }) else {
                throw ValidationError("--check: \(node)'s checks are \(checks.map(\.name).joined(separator: ", ")), not \(name)")
            }
            var reports: [CheckReport] = []
            for text in trace[trace.index(after: equals)...].split(separator: ",") {
                switch text {
                case "ok": reports.append(CheckReport(ok: true, evidence: "rehearsed: ok"))
                case "fail": reports.append(CheckReport(ok: false, evidence: "rehearsed: failed"))
                default:
                    guard let micros = Double(text).flatMap(MetricSample.micros) else {
                        throw ValidationError("--check \(trace): \(text) is neither ok, fail nor a number within ±\(CoreLimits.metricMicrosMagnitudeMax / 1_000_000)")
                    }
                    reports.append(CheckReport(ok: true, valueMicros: micros, evidence: "rehearsed: \(text)"))
                }
            }
            guard !reports.isEmpty else { throw ValidationError("--check \(trace): give at least one result") }
            result[node, default: [:]][name] = reports
        }
        return result
    }

    /// `NODE:METRIC=V1,V2,...` traces (of `flag`), checked against the plan's analyses.
    static func traces(_ traces: [String], flag: String, plan: PlanSnapshot) throws -> [NodeID: [String: [Int64]]] {
        var result: [NodeID: [String: [Int64]]] = [:]
        for trace in traces {
            guard let colon = trace.firstIndex(of: ":"), let equals = trace.firstIndex(of: "="), colon < equals else {
                throw ValidationError("\(flag) \(trace): write NODE:METRIC=V1,V2,...")
            }
            let node = NodeID(String(trace[..<colon]))
            let name = String(trace[trace.index(after: colon)..<equals])
            guard let checks = plan.node(node)?.analysis?.metrics else { throw ValidationError("\(flag) names \(node), which has no analysis") }
            guard checks.contains(where: { $0.name == name }) else {
                throw ValidationError("\(flag): \(node)'s analysis judges \(checks.map(\.name).joined(separator: ", ")), not \(name)")
            }
            var values: [Int64] = []
            for text in trace[trace.index(after: equals)...].split(separator: ",") {
                guard let micros = Double(text).flatMap(MetricSample.micros) else {
                    throw ValidationError("\(flag) \(trace): \(text) is not a number within ±\(CoreLimits.metricMicrosMagnitudeMax / 1_000_000)")
                }
                values.append(micros)
            }
            guard !values.isEmpty else { throw ValidationError("\(flag) \(trace): give at least one value") }
            result[node, default: [:]][name] = values
        }
        return result
    }

    func run() async throws {
        try await reportingFailures { try await rehearse(usablePlan(file, refusing: "nothing was rehearsed", exitCode: 2).plan.hashed()) }
    }

    /// `NODE[:N]` given to `flag`: a node of `plan` and a count (1 when absent).
    static func nodeAndCount(_ value: String, flag: String, plan: PlanSnapshot) throws -> (NodeID, NodeSpec, UInt32) {
        let parts = value.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
        guard !parts[0].isEmpty else { throw ValidationError("\(flag) \"\(value)\": write NODE or NODE:N") }
        let node = NodeID(String(parts[0]))
        guard let spec = plan.node(node) else { throw ValidationError("\(flag) names \(node), which is not a node of \(plan.name)") }
        guard let count = parts.count == 2 ? UInt32(parts[1]) : 1 else { throw ValidationError("\(flag) \(value): the count must be a number") }
        return (node, spec, count)
    }

    private func rehearse(_ plan: PlanSnapshot) async throws {
        var options = Rehearsal.Options()
        options.seed = seed
        if let start {
            options.start = Instant(millisecondsSinceEpoch: start.millis == 0 ? Int64((Date().timeIntervalSince1970 * 1_000).rounded()) : start.millis)
        }
        for failure in failures {
            let (node, _, count) = try Self.nodeAndCount(failure, flag: "--fail", plan: plan)
            options.failures[node] = count
        }
        for hang in hangs {
            let (node, spec, count) = try Self.nodeAndCount(hang, flag: "--hang", plan: plan)
            guard spec.timeouts.startToCloseMillis != nil else {
                throw ValidationError("--hang names \(node), which has no timeouts.start_to_close: nothing would end a hung step")
            }
            options.hangs[node] = count
        }
        for loss in losses {
            let (node, _, count) = try Self.nodeAndCount(loss, flag: "--lose", plan: plan)
            options.losses[node] = count
        }
        for gate in rejections {
            guard plan.node(NodeID(gate))?.approval != nil else { throw ValidationError("--reject names \(gate), which has no approval gate") }
            options.rejections.insert(NodeID(gate))
        }
        options.metrics = try Self.traces(metrics, flag: "--metric", plan: plan)
        options.baselines = try Self.traces(baselines, flag: "--baseline", plan: plan)
        options.checks = try Self.checkTraces(checks, plan: plan)
        for (node, names) in options.baselines {
            for name in names.keys where plan.node(node)?.analysis?.metrics.first(where: { $0.name == name })?.baseline == nil {
                throw ValidationError("--baseline: \(name) of \(node) has no baseline rule")
            }
        }
        let outcome = try await Rehearsal(plan: plan, options: options).run()
        switch output {
        case .table:
            print("rehearsal of \(plan.name) (\(counted(plan.nodes.count, "node"))), seed \(seed), from \(options.start)")
            for entry in outcome.timeline {
                let clock = Self.clock(entry.offsetMillis)
                print("\(clock)  #\(String(entry.sequence).padding(toLength: 4, withPad: " ", startingAt: 0)) \(entry.event.typeName.padding(toLength: 25, withPad: " ", startingAt: 0)) \(entry.event.summary)")
            }
            let elapsed = Self.clock(outcome.timeline.last?.offsetMillis ?? 0)
            print("\nresult: \(outcome.final.status.rawValue) after \(elapsed) (virtual time); state digest \(outcome.digest.hex)")
        case .json:
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
            let rows = outcome.timeline.map { ["offset_ms": String($0.offsetMillis), "sequence": String($0.sequence), "type": $0.event.typeName,
                                               "summary": $0.event.summary, "actor": $0.actor] }
            print(String(decoding: try encoder.encode(rows), as: UTF8.self))
        }
        if outcome.final.status != .succeeded { throw ExitCode(1) }
    }

    /// `+HH:MM:SS` (days become extra hours).
    static func clock(_ millis: Int64) -> String {
        let seconds = millis / 1_000
        return String(format: "+%02lld:%02lld:%02lld", seconds / 3_600, seconds / 60 % 60, seconds % 60)
    }
}
