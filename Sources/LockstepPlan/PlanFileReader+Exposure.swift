import LockstepCore
import Yams

// The plan reader's part for progressive exposure and its analysis (stages, bakes, metrics, thresholds,
// baseline rules): docs/exposure.md. Each problem is noted at its own line.

extension Reader {
    /// `exposure: { stages: [1, 10, 50, 100], bake: 10m }`, or named stages
    /// `[off, dual_write, shadow, live, rampdown, complete]` (a subset, in that order).
    mutating func exposure(_ node: Node?, node id: NodeID) -> ExposureSpec? {
        guard let node else { return nil }
        guard case .mapping(let mapping) = node else {
            error(node.mark?.line ?? 0, "invalid_value", "exposure of \(id) must be a mapping with stages and bake")
            return nil
        }
        let line = mapping.mark?.line ?? 0
        let fields = self.fields(mapping, allowed: ["stages", "bake"], in: "exposure of \(id)")
        guard let stagesNode = fields["stages"], case .sequence(let sequence) = stagesNode, !sequence.isEmpty else {
            error(fields["stages"]?.mark?.line ?? line, fields["stages"] == nil ? "missing_field" : "invalid_value",
                  "exposure of \(id) needs stages: a list of percentages (1, 10, 50, 100) or of stage names (\(ExposureSpec.namedStages.joined(separator: ", ")))")
            return nil
        }
        guard withinLimit(sequence.count, max: CoreLimits.exposureStagesMax, at: stagesNode.mark?.line ?? line, { "exposure of \(id) has \($0) stages" })
        else { return nil }
        var stages: [ExposureStage] = []
        let percentages = sequence.allSatisfy { Int($0.string ?? "") != nil }
        for item in sequence {
            let text = item.string ?? ""
            if percentages {
                let value = Int(text) ?? -1
                guard (1...100).contains(value), value > Int(stages.last?.percent ?? 0) else {
                    error(item.mark?.line ?? line, "invalid_stage", "exposure stages of \(id) must be percentages 1...100, each larger than the one before; \(text) is not")
                    return nil
                }
                stages.append(.percent(UInt32(value)))
            } else {
                guard let index = ExposureSpec.namedStages.firstIndex(of: text),
                      index > (stages.last.flatMap { ExposureSpec.namedStages.firstIndex(of: $0.name) } ?? -1) else {
                    error(item.mark?.line ?? line, "invalid_stage",
                          "exposure stages of \(id) must all be percentages or all be names from \(ExposureSpec.namedStages.joined(separator: ", ")), in that order; \"\(text)\" is not")
                    return nil
                }
                stages.append(ExposureStage(name: text, percent: nil))
            }
        }
        guard let bake = duration(fields["bake"], what: "bake of \(id)") else {
            if fields["bake"] == nil { error(line, "missing_field", "exposure of \(id) needs bake: how long each stage runs before it is judged (0s for none)") }
            return nil
        }
        return ExposureSpec(stages: stages, bakeMillis: bake)
    }

    /// `analysis: { metrics: [{ name, pass: { max: 0.01 }, marginal: { max: 0.02 }, min_samples: 5 }], on_marginal: advance }`.
    mutating func analysis(_ node: Node?, node id: NodeID) -> AnalysisSpec? {
        guard let node else { return nil }
        guard case .mapping(let mapping) = node else {
            error(node.mark?.line ?? 0, "invalid_value", "analysis of \(id) must be a mapping with metrics (and on_marginal)")
            return nil
        }
        let line = mapping.mark?.line ?? 0
        let fields = self.fields(mapping, allowed: ["metrics", "on_marginal"], in: "analysis of \(id)")
        var onMarginal = MarginalPolicy.advance
        if let text = string(fields["on_marginal"], required: false, what: "on_marginal of \(id)", line: line) {
            if let policy = MarginalPolicy(rawValue: text) { onMarginal = policy } else {
                error(fields["on_marginal"]?.mark?.line ?? line, "invalid_value", "on_marginal of \(id) is \"\(text)\"; use advance or pause")
            }
        }
        guard let metricsNode = fields["metrics"], case .sequence(let sequence) = metricsNode, !sequence.isEmpty else {
            error(fields["metrics"]?.mark?.line ?? line, fields["metrics"] == nil ? "missing_field" : "invalid_value",
                  "analysis of \(id) needs metrics: a list of {name, pass, marginal, min_samples}")
            return nil
        }
        guard withinLimit(sequence.count, max: CoreLimits.analysisMetricsMax, at: metricsNode.mark?.line ?? line, { "analysis of \(id) judges \($0) metrics" })
        else { return nil }
        var checks: [MetricCheck] = []
        for item in sequence {
            guard case .mapping(let metric) = item else {
                error(item.mark?.line ?? line, "invalid_value", "each metric of \(id)'s analysis is a mapping with name, pass, marginal, min_samples")
                continue
            }
            let at = metric.mark?.line ?? line
            let fields = self.fields(metric, allowed: ["name", "pass", "marginal", "min_samples", "baseline"], in: "a metric of \(id)'s analysis")
            guard let name = string(fields["name"], required: true, what: "metric name in \(id)'s analysis", line: at) else { continue }
            if let problem = IdentifierRules.problem(name, what: "metric name") { error(at, "invalid_value", problem) }
            if checks.contains(where: { $0.name == name }) { error(at, "duplicate_metric", "\(id)'s analysis judges \(name) twice") }
            guard let pass = threshold(fields["pass"], what: "pass of \(name) in \(id)", line: at),
                  let marginal = threshold(fields["marginal"], what: "marginal of \(name) in \(id)", line: at) else { continue }
            guard pass.direction == marginal.direction else {
                error(at, "invalid_threshold", "pass and marginal of \(name) in \(id) must both be max (lower is better) or both min (higher is better)")
                continue
            }
            let ordered = pass.direction == .lowerIsBetter ? pass.micros <= marginal.micros : pass.micros >= marginal.micros
            if !ordered {
                error(at, "invalid_threshold", "marginal of \(name) in \(id) must be \(pass.direction == .lowerIsBetter ? "at least" : "at most") its pass threshold")
            }
            let minSamples = integer(fields["min_samples"], what: "min_samples of \(name) in \(id)", in: 1...CoreLimits.metricSamplesPerBakeMax) ?? 1
            var rule: BaselineRule?
            if let node = fields["baseline"] {
                rule = baselineRule(node, direction: pass.direction, what: "baseline of \(name) in \(id)", line: at)
                if rule == nil { continue }
            }
            checks.append(MetricCheck(name: name, direction: pass.direction, passMicros: pass.micros, marginalMicros: marginal.micros,
                                      minSamples: UInt32(minSamples), baseline: rule))
        }
        return AnalysisSpec(metrics: checks, onMarginal: onMarginal)
    }

    /// `baseline: { pass: { max_ratio: 1.1, max_increase: 0.005 }, marginal: { max_ratio: 1.25 } }` for a
    /// lower-is-better metric (`min_ratio` and `max_decrease` for higher-is-better); marginal defaults to pass.
    mutating func baselineRule(_ node: Node, direction: MetricDirection, what: String, line: Int) -> BaselineRule? {
        guard case .mapping(let mapping) = node else {
            error(node.mark?.line ?? line, "invalid_value", "\(what) must be a mapping with pass (and marginal)")
            return nil
        }
        let fields = self.fields(mapping, allowed: ["pass", "marginal"], in: what)
        guard let passNode = fields["pass"] else {
            error(node.mark?.line ?? line, "missing_field", "\(what) needs pass: { \(direction == .lowerIsBetter ? "max_ratio, max_increase" : "min_ratio, max_decrease") }")
            return nil
        }
        guard let pass = baselineLimits(passNode, direction: direction, what: "pass of \(what)", line: line) else { return nil }
        var marginal = pass
        if let marginalNode = fields["marginal"] {
            guard let limits = baselineLimits(marginalNode, direction: direction, what: "marginal of \(what)", line: line) else { return nil }
            marginal = limits
        }
        let rule = BaselineRule(pass: pass, marginal: marginal)
        if let problem = PlanValidation.baselineProblem(rule, direction: direction) {
            error(node.mark?.line ?? line, "invalid_threshold", "\(what): \(problem)")
            return nil
        }
        return rule
    }

    mutating func baselineLimits(_ node: Node, direction: MetricDirection, what: String, line: Int) -> BaselineLimits? {
        let (ratioKey, differenceKey) = direction == .lowerIsBetter ? ("max_ratio", "max_increase") : ("min_ratio", "max_decrease")
        guard case .mapping(let mapping) = node else {
            error(node.mark?.line ?? line, "invalid_threshold", "\(what) must be a mapping with \(ratioKey) and/or \(differenceKey)")
            return nil
        }
        let fields = self.fields(mapping, allowed: [ratioKey, differenceKey], in: what)
        var limits = BaselineLimits()
        for (key, value) in fields.sorted(by: { $0.key < $1.key }) {
            guard let text = value.string, let number = Self.decimal(text), let micros = MetricSample.micros(number) else {
                error(value.mark?.line ?? line, "invalid_threshold", "\(key) of \(what) must be a number")
                return nil
            }
            if key == ratioKey { limits.ratioMicros = micros } else { limits.differenceMicros = micros }
        }
        if limits.ratioMicros == nil && limits.differenceMicros == nil {
            error(node.mark?.line ?? line, "invalid_threshold", "\(what) sets neither \(ratioKey) nor \(differenceKey)")
            return nil
        }
        return limits
    }

    /// `text` as a decimal number (`0.5`, `-2`, `1e-3`), nil for anything else `Double` would also take:
    /// hexadecimal (`0x10`, which the plan's YAML reads as text), `inf`, `nan`.
    static func decimal(_ text: String) -> Double? {
        guard let first = text.utf8.first, first != UInt8(ascii: "e"), first != UInt8(ascii: "E"),
              text.utf8.allSatisfy({ (0x30...0x39).contains($0) || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "+") || $0 == UInt8(ascii: "-")
                  || $0 == UInt8(ascii: "e") || $0 == UInt8(ascii: "E") }) else { return nil }
        return Double(text)
    }

    /// `{ max: 0.01 }` (lower is better) or `{ min: 0.99 }` (higher is better), as millionths.
    mutating func threshold(_ node: Node?, what: String, line: Int) -> (direction: MetricDirection, micros: Int64)? {
        guard let node else {
            error(line, "missing_field", "\(what) is missing: { max: VALUE } or { min: VALUE }")
            return nil
        }
        guard case .mapping(let mapping) = node, mapping.count == 1, let (key, value) = mapping.first, let bound = key.string,
              bound == "max" || bound == "min" else {
            error(node.mark?.line ?? line, "invalid_threshold", "\(what) must be { max: VALUE } (lower is better) or { min: VALUE } (higher is better)")
            return nil
        }
        guard let text = value.string, let number = Self.decimal(text), let micros = MetricSample.micros(number) else {
            error(value.mark?.line ?? line, "invalid_threshold", "\(what) must be a number within ±\(CoreLimits.metricMicrosMagnitudeMax / 1_000_000)")
            return nil
        }
        return (bound == "max" ? .lowerIsBetter : .higherIsBetter, micros)
    }
}
