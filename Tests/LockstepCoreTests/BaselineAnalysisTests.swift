import LockstepCore
import Testing

/// Analysis against a baseline (issue 19): samples carry a cohort; a metric may be judged relative to
/// the baseline cohort's mean as well as absolutely, in integer arithmetic.
@Suite struct BaselineAnalysisTests {
    /// error_rate: absolutely pass ≤ 10 %, marginal ≤ 20 %; against the baseline pass within ×1.1 or
    /// +0.005, marginal within ×1.25; at least 2 samples in each cohort.
    func errorRate(pass: BaselineLimits = BaselineLimits(ratioMicros: 1_100_000, differenceMicros: 5_000),
                   marginal: BaselineLimits = BaselineLimits(ratioMicros: 1_250_000)) -> AnalysisSpec {
        AnalysisSpec(metrics: [MetricCheck(name: "error_rate", direction: .lowerIsBetter, passMicros: 100_000, marginalMicros: 200_000, minSamples: 2,
                                           baseline: BaselineRule(pass: pass, marginal: marginal))])
    }

    func samples(canary: [Int64], baseline: [Int64], name: String = "error_rate") -> [MetricSample] {
        canary.map { MetricSample(name: name, valueMicros: $0, windowStart: t(0), windowEnd: t(60), source: "prober") }
            + baseline.map { MetricSample(name: name, valueMicros: $0, windowStart: t(0), windowEnd: t(60), source: "prober", cohort: .baseline) }
    }

    @Test func withinTheRatioPassesExactlyAtItsBound() {
        // Canary mean 0.011 is exactly 1.1 × the baseline's 0.010 (and 0.001 above it).
        let (outcome, evidence) = errorRate().evaluate(samples(canary: [10_000, 12_000], baseline: [9_000, 11_000]))
        #expect(outcome == .pass)
        #expect(evidence[0].relativeOutcome == .pass && evidence[0].meanMicros == 11_000)
        #expect(evidence[0].baseline == CohortSummary(samples: 2, meanMicros: 10_000, minMicros: 9_000, maxMicros: 11_000))
    }

    @Test func beyondThePassLimitsButWithinTheMarginalOnesIsMarginalAndBeyondThatFails() {
        // 0.048 against 0.04: ×1.2 and +0.008, beyond both pass limits, within the marginal ×1.25.
        #expect(errorRate().evaluate(samples(canary: [48_000, 48_000], baseline: [40_000, 40_000])).outcome == .marginal)
        let (outcome, evidence) = errorRate().evaluate(samples(canary: [60_000, 60_000], baseline: [40_000, 40_000]))
        #expect(outcome == .fail && evidence[0].relativeOutcome == .fail)
        // Absolutely it passes (0.06 ≤ 0.1): the metric is the worse of its two outcomes.
        #expect(evidence[0].meanMicros == 60_000)
    }

    @Test func theDifferenceIsAFloorWhereTheBaselineIsNearZero() {
        // Against a baseline with no errors at all, any ratio allows nothing; +0.005 still allows 0.001.
        #expect(errorRate().evaluate(samples(canary: [1_000, 1_000], baseline: [0, 0])).outcome == .pass)
        #expect(errorRate().evaluate(samples(canary: [6_000, 6_000], baseline: [0, 0])).outcome == .fail)
        // A difference alone: +0.006 is beyond +0.005.
        let analysis = errorRate(pass: BaselineLimits(differenceMicros: 5_000), marginal: BaselineLimits(differenceMicros: 5_000))
        #expect(analysis.evaluate(samples(canary: [16_000, 16_000], baseline: [10_000, 10_000])).outcome == .fail)
        #expect(analysis.evaluate(samples(canary: [15_000, 15_000], baseline: [10_000, 10_000])).outcome == .pass)
    }

    @Test func aRatioIsOfTheBaselinesMagnitudeSoItMeansTheSameForNegativeMeans() {
        let ratioOnly = errorRate(pass: BaselineLimits(ratioMicros: 1_100_000), marginal: BaselineLimits(ratioMicros: 1_100_000))
        // The same values in both cohorts pass, whatever their sign; 10 % of |−0.01| worse passes, 20 % fails.
        #expect(ratioOnly.evaluate(samples(canary: [-10_000, -10_000], baseline: [-10_000, -10_000])).outcome == .pass)
        #expect(ratioOnly.evaluate(samples(canary: [-9_000, -9_000], baseline: [-10_000, -10_000])).outcome == .pass)
        #expect(ratioOnly.evaluate(samples(canary: [-8_000, -8_000], baseline: [-10_000, -10_000])).outcome == .fail)
    }

    @Test func aBaselineWithTooFewSamplesIsInconclusive() {
        let (outcome, evidence) = errorRate().evaluate(samples(canary: [10_000, 10_000, 10_000], baseline: [10_000]))
        #expect(outcome == .inconclusive && evidence[0].relativeOutcome == .inconclusive)
        #expect(evidence[0].baseline?.samples == 1)
        #expect(errorRate().evaluate(samples(canary: [10_000], baseline: [10_000, 10_000])).outcome == .inconclusive)
    }

    @Test func baselineSamplesAreNotJudgedAgainstTheAbsoluteThresholds() {
        // A bad baseline (0.5) does not fail the canary's absolute check; against it the canary is far better.
        let (outcome, evidence) = errorRate().evaluate(samples(canary: [5_000, 5_000], baseline: [500_000, 500_000]))
        #expect(outcome == .pass && evidence[0].samples == 2 && evidence[0].meanMicros == 5_000)
        // Without a baseline rule, baseline samples are ignored altogether.
        let absolute = AnalysisSpec(metrics: [MetricCheck(name: "error_rate", direction: .lowerIsBetter, passMicros: 20_000, marginalMicros: 50_000,
                                                          minSamples: 2)])
        let plain = absolute.evaluate(samples(canary: [5_000, 5_000], baseline: [500_000, 500_000]))
        #expect(plain.outcome == .pass && plain.evidence[0].baseline == nil && plain.evidence[0].relativeOutcome == nil)
    }

    @Test func aHigherIsBetterMetricMayNotFallBelowTheBaselineByMoreThanItsLimits() {
        let success = AnalysisSpec(metrics: [MetricCheck(
            name: "success_rate", direction: .higherIsBetter, passMicros: 950_000, marginalMicros: 900_000, minSamples: 1,
            baseline: BaselineRule(pass: BaselineLimits(ratioMicros: 999_000, differenceMicros: 3_000),
                                   marginal: BaselineLimits(ratioMicros: 980_000, differenceMicros: 10_000)))])
        // 0.993 against 0.995: 0.002 lower, within the pass difference (0.003).
        #expect(success.evaluate(samples(canary: [993_000], baseline: [995_000], name: "success_rate")).outcome == .pass)
        // 0.990 against 0.995: 0.005 lower, beyond pass (×0.999, 0.003), within marginal (×0.98).
        #expect(success.evaluate(samples(canary: [990_000], baseline: [995_000], name: "success_rate")).outcome == .marginal)
        // 0.970 against 0.995: ratio 0.975 and 0.025 lower, beyond even the marginal ×0.98 and 0.01.
        #expect(success.evaluate(samples(canary: [970_000], baseline: [995_000], name: "success_rate")).outcome == .fail)
    }

    @Test func extremeValuesAreComparedExactlyWithoutTrapping() {
        let big = CoreLimits.metricMicrosMagnitudeMax
        let canary = Array(repeating: big, count: CoreLimits.metricSamplesPerBakeMax)
        let baseline = Array(repeating: -big, count: CoreLimits.metricSamplesPerBakeMax)
        #expect(errorRate().evaluate(samples(canary: canary, baseline: baseline)).outcome == .fail)
        #expect(errorRate().evaluate(samples(canary: baseline, baseline: canary)).evidence[0].relativeOutcome == .pass)
    }

    @Test func baselineRulesAreValidated() {
        let problem = { (rule: BaselineRule, direction: MetricDirection) in PlanValidation.baselineProblem(rule, direction: direction) }
        #expect(problem(BaselineRule(pass: BaselineLimits(), marginal: BaselineLimits()), .lowerIsBetter) == "its pass sets no limit")
        #expect(problem(BaselineRule(pass: BaselineLimits(ratioMicros: 0), marginal: BaselineLimits(ratioMicros: 0)), .lowerIsBetter)
            == "a ratio must be above 0 and at most 1000")
        #expect(problem(BaselineRule(pass: BaselineLimits(ratioMicros: 1_200_000), marginal: BaselineLimits(ratioMicros: 1_100_000)), .lowerIsBetter)
            == "its marginal ratio is stricter than its pass ratio")
        #expect(problem(BaselineRule(pass: BaselineLimits(ratioMicros: 900_000), marginal: BaselineLimits(ratioMicros: 950_000)), .higherIsBetter)
            == "its marginal ratio is stricter than its pass ratio")
        #expect(problem(BaselineRule(pass: BaselineLimits(differenceMicros: -1), marginal: BaselineLimits(differenceMicros: 5)), .lowerIsBetter)
            == "a difference must be 0 or more, within the metric range")
        #expect(problem(BaselineRule(pass: BaselineLimits(ratioMicros: 1_100_000), marginal: BaselineLimits()), .lowerIsBetter)
            == "its marginal sets no limit")
        #expect(problem(BaselineRule(pass: BaselineLimits(ratioMicros: 1_100_000), marginal: BaselineLimits(ratioMicros: 1_100_000)), .lowerIsBetter) == nil)
        // A rule read from a damaged log, outside every range, is judged without trapping.
        let absurd = AnalysisSpec(metrics: [MetricCheck(name: "error_rate", direction: .lowerIsBetter, passMicros: 1, marginalMicros: 1, minSamples: 1,
                                                        baseline: BaselineRule(pass: BaselineLimits(ratioMicros: .max, differenceMicros: .max),
                                                                               marginal: BaselineLimits(ratioMicros: .min, differenceMicros: .min)))])
        let big = CoreLimits.metricMicrosMagnitudeMax
        #expect(absurd.evaluate(samples(canary: Array(repeating: big, count: 1_000), baseline: Array(repeating: -big, count: 1_000))).evidence.count == 1)
    }

    @Test func aBaselineRuleSurvivesTheCanonicalStateBytes() throws {
        var plan = exposurePlan()
        plan.nodes[1].analysis?.metrics[0].baseline = BaselineRule(pass: BaselineLimits(ratioMicros: 1_100_000), marginal: BaselineLimits(differenceMicros: 5))
        var state = LogState()
        state.evolve(migration: MigrationID("m1"), sequence: 1, .migrationStarted(MigrationStarted(migration: MigrationID("m1"), plan: plan, startedAt: t(0))))
        #expect(try LogState(canonicalBytes: state.canonicalBytes) == state)
        #expect(plan.canonicalContentBytes != exposurePlan().canonicalContentBytes)
    }

    @Test func eachCohortHasItsOwnSampleLimitAndBaselineSamplesNeedARule() {
        let rollout = NodeID("rollout")
        var plan = exposurePlan()
        plan.nodes[1].analysis?.metrics[0].baseline = BaselineRule(pass: BaselineLimits(ratioMicros: 1_100_000), marginal: BaselineLimits(ratioMicros: 1_100_000))
        let baking = [exposureStarted(plan), leased("expand", token: 1), completed("expand", token: 1), leased("rollout", token: 1, at: 10),
                      completed("rollout", token: 1), .exposureStageReached(ExposureStageReached(node: rollout, stage: 1, bakeUntil: t(70)))]
        let full = baking + (0..<CoreLimits.metricSamplesPerBakeMax).map { _ in
            MigrationEvent.metricSampled(MetricSampled(node: rollout, stage: 1, sample: sample(5_000)))
        }
        var baselineSample = sample(5_000)
        baselineSample.cohort = .baseline
        #expect(decide(full, .recordMetric(node: rollout, sample: sample(5_000)), at: 20) == .rejected(.tooManySamples(rollout, limit: CoreLimits.metricSamplesPerBakeMax)))
        #expect(decide(full, .recordMetric(node: rollout, sample: baselineSample), at: 20)
            == .accepted([.metricSampled(MetricSampled(node: rollout, stage: 1, sample: baselineSample))]))
        // Without a baseline rule, a baseline sample is refused: it would count for nothing.
        let plain = [exposureStarted()] + baking.dropFirst()
        guard case .rejected(.invalidArgument(let why)) = decide(Array(plain), .recordMetric(node: rollout, sample: baselineSample), at: 20) else {
            Issue.record("a baseline sample without a rule was taken"); return
        }
        #expect(why.contains("without a baseline rule"))
    }
}
