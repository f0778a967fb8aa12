// Progressive exposure, metric analysis and the cohort rule: pure values and functions.
//
// Metric values are fixed-point integers in millionths ("micros": 0.015 is 15,000), converted once at
// the edge, so every comparison and mean here is integer arithmetic: the same samples give the same
// outcome, bytes and digest in every process.

/// One stage of a node's exposure: a percentage of traffic, or a named migration stage.
public struct ExposureStage: Hashable, Sendable {
    /// `"10"` for a percentage stage, or the stage's name (`dual_write`, `shadow`, …).
    public var name: String
    /// The share exposed, 0...100, for percentage stages; nil for named stages.
    public var percent: UInt32?
    public init(name: String, percent: UInt32?) {
        self.name = name
        self.percent = percent
    }

    public static func percent(_ value: UInt32) -> ExposureStage { ExposureStage(name: String(value), percent: value) }
}

/// How a node exposes its change: stages in order, each followed by a bake.
public struct ExposureSpec: Hashable, Sendable {
    public var stages: [ExposureStage]
    /// How long to wait after each stage is set before judging it, in milliseconds.
    public var bakeMillis: Int64
    public init(stages: [ExposureStage], bakeMillis: Int64) {
        self.stages = stages
        self.bakeMillis = bakeMillis
    }

    /// The LaunchDarkly-style migration stages, in order.
    public static let namedStages = ["off", "dual_write", "shadow", "live", "rampdown", "complete"]

    /// The exposure a rollback returns to: 0 % for percentage stages, `off` for named ones.
    public var start: ExposureStage {
        stages.first?.percent != nil ? .percent(0) : ExposureStage(name: "off", percent: nil)
    }
}

/// Which way a metric is good.
public enum MetricDirection: String, Hashable, Sendable, CaseIterable {
    /// Error rates, latencies: at most the threshold passes.
    case lowerIsBetter = "lower_is_better"
    /// Success rates, throughput: at least the threshold passes.
    case higherIsBetter = "higher_is_better"
}

/// One metric a node's analysis judges, by the mean of its samples in a bake.
public struct MetricCheck: Hashable, Sendable {
    public var name: String
    public var direction: MetricDirection
    /// The mean at or better than this passes.
    public var passMicros: Int64
    /// Worse than pass but at or better than this is marginal; worse still fails.
    public var marginalMicros: Int64
    /// Fewer samples than this (in each cohort judged) make the metric inconclusive.
    public var minSamples: UInt32
    /// Also judged relative to the baseline cohort's samples, when set.
    public var baseline: BaselineRule?
    public init(name: String, direction: MetricDirection, passMicros: Int64, marginalMicros: Int64, minSamples: UInt32, baseline: BaselineRule? = nil) {
        self.name = name
        self.direction = direction
        self.passMicros = passMicros
        self.marginalMicros = marginalMicros
        self.minSamples = minSamples
        self.baseline = baseline
    }
}

/// How far the canary's mean may be from the baseline's, in the metric's bad direction: a ratio
/// (`max_ratio: 1.1` for lower-is-better, `min_ratio: 0.9` for higher-is-better) and a difference
/// (`max_increase: 0.005` / `max_decrease`), each in millionths; a limit that is nil does not apply.
public struct BaselineLimits: Hashable, Sendable {
    public var ratioMicros: Int64?
    public var differenceMicros: Int64?
    public init(ratioMicros: Int64? = nil, differenceMicros: Int64? = nil) {
        self.ratioMicros = ratioMicros
        self.differenceMicros = differenceMicros
    }
}

/// A metric judged against the baseline cohort: within `pass` passes, within `marginal` is marginal,
/// beyond it fails.
public struct BaselineRule: Hashable, Sendable {
    public var pass: BaselineLimits
    public var marginal: BaselineLimits
    public init(pass: BaselineLimits, marginal: BaselineLimits) {
        self.pass = pass
        self.marginal = marginal
    }
}

/// Which group a sample measures: the canary (the changed part, the default) or the baseline (the
/// unchanged part it is compared with).
public enum SampleCohort: String, Hashable, Sendable, CaseIterable {
    case canary, baseline
}

/// A cohort's samples of one metric in a bake, summarized.
public struct CohortSummary: Hashable, Sendable {
    public var samples: UInt32
    /// Integer mean, rounded toward zero (0 with no samples).
    public var meanMicros: Int64
    public var minMicros: Int64
    public var maxMicros: Int64
    public init(samples: UInt32, meanMicros: Int64, minMicros: Int64, maxMicros: Int64) {
        self.samples = samples
        self.meanMicros = meanMicros
        self.minMicros = minMicros
        self.maxMicros = maxMicros
    }
}

/// What a marginal outcome does.
public enum MarginalPolicy: String, Hashable, Sendable, CaseIterable {
    /// Advance, with the warning recorded.
    case advance
    /// Pause and ask a person.
    case pause
}

/// How a node's exposure is judged at the end of each bake.
public struct AnalysisSpec: Hashable, Sendable {
    public var metrics: [MetricCheck]
    public var onMarginal: MarginalPolicy
    public init(metrics: [MetricCheck], onMarginal: MarginalPolicy = .advance) {
        self.metrics = metrics
        self.onMarginal = onMarginal
    }
}

/// One measurement of a metric over a window, sent by an agent or another authorized reporter.
public struct MetricSample: Hashable, Sendable {
    /// A fixed-point value in millionths as a decimal: 15000 → "0.015".
    public static func decimal(_ micros: Int64) -> String {
        let sign = micros < 0 ? "-" : ""
        let magnitude = micros.magnitude
        var fraction = String(magnitude % 1_000_000)
        while fraction.utf8.count < 6 { fraction = "0" + fraction }
        let trimmed = fraction.reversed().drop { $0 == "0" }.reversed()
        return "\(sign)\(magnitude / 1_000_000)" + (trimmed.isEmpty ? "" : "." + String(trimmed))
    }

    /// `value` as millionths, rounded to the nearest; nil when it is not a finite number within
    /// ±`CoreLimits.metricMicrosMagnitudeMax` µ. The one conversion from a decimal, at every edge.
    public static func micros(_ value: Double) -> Int64? {
        guard value.isFinite, (value * 1_000_000).magnitude <= Double(CoreLimits.metricMicrosMagnitudeMax) else { return nil }
        return Int64((value * 1_000_000).rounded())
    }

    public var name: String
    public var valueMicros: Int64
    public var windowStart: Instant
    public var windowEnd: Instant
    /// Who measured it (a dashboard, a prober, an agent): free text, for the reader of the record.
    public var source: String
    public var cohort: SampleCohort
    public init(name: String, valueMicros: Int64, windowStart: Instant, windowEnd: Instant, source: String, cohort: SampleCohort = .canary) {
        self.name = name
        self.valueMicros = valueMicros
        self.windowStart = windowStart
        self.windowEnd = windowEnd
        self.source = source
        self.cohort = cohort
    }
}

/// The outcome of an analysis, best first.
public enum AnalysisOutcome: String, Hashable, Sendable, CaseIterable {
    case pass, marginal, inconclusive, fail
}

/// The evidence for one metric: its samples' summary next to the thresholds it was judged by.
public struct MetricEvidence: Hashable, Sendable {
    public var check: MetricCheck
    public var samples: UInt32
    /// Integer mean of the samples (rounded toward zero); 0 with no samples.
    public var meanMicros: Int64
    public var minMicros: Int64
    public var maxMicros: Int64
    public var outcome: AnalysisOutcome
    /// With a baseline rule: the baseline cohort's summary, and the outcome against it alone (`outcome`
    /// is the worse of it and the absolute one).
    public var baseline: CohortSummary?
    public var relativeOutcome: AnalysisOutcome?
    public init(check: MetricCheck, samples: UInt32, meanMicros: Int64, minMicros: Int64, maxMicros: Int64, outcome: AnalysisOutcome,
                baseline: CohortSummary? = nil, relativeOutcome: AnalysisOutcome? = nil) {
        self.check = check
        self.samples = samples
        self.meanMicros = meanMicros
        self.minMicros = minMicros
        self.maxMicros = maxMicros
        self.outcome = outcome
        self.baseline = baseline
        self.relativeOutcome = relativeOutcome
    }
}

extension AnalysisSpec {
    /// Judges `samples` (those of one bake): each metric by the mean of its canary samples against its
    /// thresholds, and, with a baseline rule, against the baseline cohort's mean too; inconclusive with
    /// too few samples in a cohort judged. A metric is the worse of its two outcomes; the whole is the
    /// worst of its metrics, where fail is worse than inconclusive, which is worse than marginal.
    /// Samples of metrics the analysis does not name are ignored. Integer arithmetic throughout.
    public func evaluate(_ samples: [MetricSample]) -> (outcome: AnalysisOutcome, evidence: [MetricEvidence]) {
        var evidence: [MetricEvidence] = []
        for check in metrics {
            let canary = Array(samples.lazy.filter { $0.name == check.name && $0.cohort == .canary }.map(\.valueMicros))
            let sum = Self.saturatingSum(canary)
            let count = canary.count
            func scaled(_ threshold: Int64) -> Int64 {
                let (product, overflow) = threshold.multipliedReportingOverflow(by: Int64(count))
                return overflow ? (threshold < 0 ? .min : .max) : product
            }
            let enough = { (n: Int) in UInt32(clamping: n) >= max(1, check.minSamples) }
            var outcome: AnalysisOutcome
            if !enough(count) {
                outcome = .inconclusive
            } else {
                // Exact: the sum against threshold × count, never a rounded mean.
                switch check.direction {
                case .lowerIsBetter: outcome = sum <= scaled(check.passMicros) ? .pass : sum <= scaled(check.marginalMicros) ? .marginal : .fail
                case .higherIsBetter: outcome = sum >= scaled(check.passMicros) ? .pass : sum >= scaled(check.marginalMicros) ? .marginal : .fail
                }
            }
            var baseline: CohortSummary?
            var relative: AnalysisOutcome?
            if let rule = check.baseline {
                let values = Array(samples.lazy.filter { $0.name == check.name && $0.cohort == .baseline }.map(\.valueMicros))
                let baselineSum = Self.saturatingSum(values)
                baseline = CohortSummary(samples: UInt32(clamping: values.count), meanMicros: values.isEmpty ? 0 : baselineSum / Int64(values.count),
                                         minMicros: values.min() ?? 0, maxMicros: values.max() ?? 0)
                if !enough(count) || !enough(values.count) {
                    relative = .inconclusive
                } else {
                    let within = { (limits: BaselineLimits) in
                        Self.within(limits, direction: check.direction, canary: (sum, count), baseline: (baselineSum, values.count))
                    }
                    relative = within(rule.pass) ? .pass : within(rule.marginal) ? .marginal : .fail
                }
                outcome = [outcome, relative!].max { Self.severity($0) < Self.severity($1) }!
            }
            evidence.append(MetricEvidence(check: check, samples: UInt32(clamping: count), meanMicros: count == 0 ? 0 : sum / Int64(count),
                                           minMicros: canary.min() ?? 0, maxMicros: canary.max() ?? 0, outcome: outcome,
                                           baseline: baseline, relativeOutcome: relative))
        }
        let overall = evidence.map(\.outcome).max { Self.severity($0) < Self.severity($1) } ?? .pass
        return (overall, evidence)
    }

    /// pass < marginal < inconclusive < fail.
    static func severity(_ outcome: AnalysisOutcome) -> Int {
        switch outcome {
        case .pass: 0
        case .marginal: 1
        case .inconclusive: 2
        case .fail: 3
        }
    }

    /// A saturating sum: absurd values must not trap. Within the limits (±10^15 per value, 1,000 samples)
    /// nothing saturates.
    static func saturatingSum(_ values: [Int64]) -> Int64 {
        values.reduce(Int64(0)) { total, value in
            let (next, overflow) = total.addingReportingOverflow(value)
            return overflow ? (value < 0 ? .min : .max) : next
        }
    }

    /// Whether the canary's mean is within `limits` of the baseline's: within its ratio or within its
    /// difference (the looser of the two, so the difference is a floor for baselines near zero, where
    /// any ratio of them is tiny); a limit that is not set does not count. The ratio is taken of the
    /// baseline's magnitude, so it means the same for negative means: lower-is-better allows
    /// `canary − baseline ≤ |baseline| × (ratio − 1)`, higher-is-better `baseline − canary ≤ |baseline| × (1 − ratio)`.
    ///
    /// Exact: the means are compared as fractions (sum / count), cross-multiplied in 128-bit integers.
    /// The limits are clamped to the ranges validation allows (a ratio up to 1000, a difference up to
    /// the metric range), so even a rule read from a damaged log cannot overflow: sums within Int64 ×
    /// counts × 10^9 stay far below 2^127.
    static func within(_ limits: BaselineLimits, direction: MetricDirection, canary: (sum: Int64, count: Int), baseline: (sum: Int64, count: Int)) -> Bool {
        let c = Int128(canary.sum) * Int128(baseline.count)     // canary mean × both counts
        let b = Int128(baseline.sum) * Int128(canary.count)     // baseline mean × both counts
        let counts = Int128(canary.count) * Int128(baseline.count)
        // How much worse the canary is (negative: better), in units of both counts.
        let worse = direction == .lowerIsBetter ? c - b : b - c
        var checked = false
        if let ratio = limits.ratioMicros {
            checked = true
            let clamped = Int128(min(max(ratio, 0), 1_000_000_000))
            let allowance = direction == .lowerIsBetter ? clamped - 1_000_000 : 1_000_000 - clamped   // per million of |baseline|
            if worse * 1_000_000 <= b.magnitude128 * allowance { return true }
        }
        if let difference = limits.differenceMicros {
            checked = true
            if worse <= Int128(min(max(difference, 0), CoreLimits.metricMicrosMagnitudeMax)) * counts { return true }
        }
        return !checked
    }
}

extension Int128 {
    /// The magnitude as an Int128 (every value here is far from Int128.min).
    fileprivate var magnitude128: Int128 { self < 0 ? -self : self }
}

/// The deterministic cohort rule: whether a caller's key falls inside a percentage of a node's
/// exposure. Every replica of a service that asks with the same key gets the same answer, and a key
/// inside 10 % is inside every larger percentage (its bucket does not move; only the cut-off does).
public enum Cohort {
    /// Buckets per 100 %: a key's bucket is 0..<10,000, so percentages resolve to 0.01 %.
    public static let buckets: UInt64 = 10_000

    /// The key's bucket for `node` of `migration`: FNV-1a over the UTF-8 bytes of
    /// "migration/node/key", finished with the SplitMix64 mixer, modulo `buckets`. Documented so other
    /// languages can compute it too (docs/exposure.md).
    public static func bucket(migration: MigrationID, node: NodeID, key: String) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in "\(migration.rawValue)/\(node.rawValue)/\(key)".utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x0000_0100_0000_01b3
        }
        hash = (hash ^ (hash >> 30)) &* 0xbf58_476d_1ce4_e5b9
        hash = (hash ^ (hash >> 27)) &* 0x94d0_49bb_1331_11eb
        hash ^= hash >> 31
        return hash % buckets
    }

    /// Whether `key` is exposed at `percent` (0...100).
    public static func isExposed(migration: MigrationID, node: NodeID, key: String, percent: UInt32) -> Bool {
        bucket(migration: migration, node: node, key: key) < UInt64(min(percent, 100)) * (buckets / 100)
    }
}
