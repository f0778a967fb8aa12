// Exposure and analysis, decided by one migration: metric samples during a bake, and the judgement at
// its end (docs/exposure.md). The analysis itself is pure arithmetic in Exposure.swift.
extension MigrationState {
    func decideSample(node: NodeID, sample: MetricSample, now: Instant) -> Decision {
        if let problem = Self.validateIdentifier(sample.name, what: "metric name") { return .rejected(.invalidArgument(problem)) }
        if let problem = Self.validateReason(sample.source) { return .rejected(.invalidArgument(problem)) }
        guard sample.valueMicros.magnitude <= CoreLimits.metricMicrosMagnitudeMax.magnitude else {
            return .rejected(.invalidArgument("metric value \(sample.valueMicros) µ is beyond ±\(CoreLimits.metricMicrosMagnitudeMax) µ"))
        }
        for instant in [sample.windowStart, sample.windowEnd] where !(0...CoreLimits.instantMillisMax).contains(instant.millisecondsSinceEpoch) {
            return .rejected(.invalidArgument("a sample's window must lie between 1970 and the year 9999; \(instant.millisecondsSinceEpoch) ms is outside"))
        }
        guard sample.windowStart <= sample.windowEnd else {
            return .rejected(.invalidArgument("the sample's window ends (\(sample.windowEnd)) before it starts (\(sample.windowStart))"))
        }
        guard let nodeState = self.node(node), let spec = plan.node(node) else { return .rejected(.unknownNode(node)) }
        guard let analysis = spec.analysis else { return .rejected(.noAnalysis(node)) }
        guard analysis.metrics.contains(where: { $0.name == sample.name }) else {
            return .rejected(.invalidArgument(
                "the analysis of \(node) judges \(analysis.metrics.map(\.name).joined(separator: ", ")), not \(sample.name)"))
        }
        if sample.cohort == .baseline, analysis.metrics.first(where: { $0.name == sample.name })?.baseline == nil {
            return .rejected(.invalidArgument("the analysis of \(node) judges \(sample.name) without a baseline rule: a baseline sample would count for nothing"))
        }
        guard status == .running || status == .paused, nodeState.status == .baking, !nodeState.exposure.awaitingDecision else {
            return .rejected(.notBaking(node, status: status == .running || status == .paused ? nodeDisplayStatus(node).rawValue : status.rawValue))
        }
        // A sample after the bake's end would be judged with a bake it did not belong to.
        if let until = nodeState.exposure.bakeUntil, now > until { return .rejected(.notBaking(node, status: "being judged (its bake ended at \(until))")) }
        // Per cohort: a flood of canary samples must not lock the baseline out (nor the other way round).
        guard nodeState.exposure.samples.lazy.filter({ $0.name == sample.name && $0.cohort == sample.cohort }).count < CoreLimits.metricSamplesPerBakeMax else {
            return .rejected(.tooManySamples(node, limit: CoreLimits.metricSamplesPerBakeMax))
        }
        return .accepted([.metricSampled(MetricSampled(node: node, stage: nodeState.exposure.reached, sample: sample))])
    }

    /// The end of a bake: the analysis judges the samples and the decision follows from the outcome
    /// (pass: advance; marginal: advance with a warning, or pause if the plan says so; inconclusive:
    /// pause; fail: abort and roll back). The record carries the evidence.
    func decideEvaluation(node: NodeID, now: Instant) -> Decision {
        guard let nodeState = self.node(node), let spec = plan.node(node), let exposure = spec.exposure else { return .rejected(.unknownNode(node)) }
        guard status == .running else { return .rejected(.migrationNotRunning(id, status: status)) }
        guard nodeState.status == .baking, !nodeState.exposure.awaitingDecision, let until = nodeState.exposure.bakeUntil, until <= now else {
            return .rejected(.bakeNotOver(node, until: nodeState.status == .baking ? nodeState.exposure.bakeUntil : nil))
        }
        let (outcome, evidence) = spec.analysis?.evaluate(nodeState.exposure.samples) ?? (.pass, [])
        let decision: AnalysisDecision = switch outcome {
        case .pass: .advance
        case .marginal: spec.analysis?.onMarginal == .pause ? .pause : .advanceWithWarning
        case .inconclusive: .pause
        case .fail: .rollback
        }
        let stage = nodeState.exposure.reached
        let record = MigrationEvent.analysisEvaluated(AnalysisRecord(
            node: node, stage: stage, outcome: outcome, decision: decision, evidence: evidence, planContentHash: plan.contentHash))
        let stageName = Int(stage) <= exposure.stages.count && stage > 0 ? exposure.stages[Int(stage) - 1].name : "?"
        var after = self
        after.evolve(record)
        switch decision {
        case .advance, .advanceWithWarning:
            let done = after.nodes.allSatisfy { $0.status == .succeeded }
            return .accepted(done ? [record, .migrationSucceeded] : [record])
        case .pause:
            let why = outcome == .inconclusive
                ? "the analysis of \(node) at stage \(stageName) is inconclusive (too few samples); decide, then resume or abort"
                : "the analysis of \(node) at stage \(stageName) is marginal and the plan says pause; decide, then resume or abort"
            return .accepted([record, .migrationPaused(reason: why)])
        case .rollback:
            let failing = evidence.filter { $0.outcome == .fail }.map(\.check.name).joined(separator: ", ")
            return .accepted([record] + after.abort(reason: "the analysis of \(node) failed at stage \(stageName) (\(failing))", trigger: .metric))
        }
    }
}
