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
    /// Fewer samples than this make the metric inconclusive.
    public var minSamples: UInt32
    public init(name: String, direction: MetricDirection, passMicros: Int64, marginalMicros: Int64, minSamples: UInt32) {
        self.name = name
        self.direction = direction
        self.passMicros = passMicros
        self.marginalMicros = marginalMicros
        self.minSamples = minSamples
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
    public init(name: String, valueMicros: Int64, windowStart: Instant, windowEnd: Instant, source: String) {
        self.name = name
        self.valueMicros = valueMicros
        self.windowStart = windowStart
        self.windowEnd = windowEnd
        self.source = source
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
    public init(check: MetricCheck, samples: UInt32, meanMicros: Int64, minMicros: Int64, maxMicros: Int64, outcome: AnalysisOutcome) {
        self.check = check
        self.samples = samples
        self.meanMicros = meanMicros
        self.minMicros = minMicros
        self.maxMicros = maxMicros
        self.outcome = outcome
    }
}

extension AnalysisSpec {
    /// Judges `samples` (those of one bake): each metric by its mean against its thresholds, or
    /// inconclusive with too few samples. The whole is the worst of its metrics, where fail is worse
    /// than inconclusive, which is worse than marginal. Samples of metrics the analysis does not
    /// name are ignored.
    public func evaluate(_ samples: [MetricSample]) -> (outcome: AnalysisOutcome, evidence: [MetricEvidence]) {
        var evidence: [MetricEvidence] = []
        for check in metrics {
            let values = samples.lazy.filter { $0.name == check.name }.map(\.valueMicros)
            let count = values.count
            // Saturating sum: a mean of absurd values must not trap. Within the limits (±10^15 per value,
            // 1,000 samples) nothing saturates, and the comparisons below are exact: sum against
            // threshold × count, never a rounded mean.
            let sum = values.reduce(Int64(0)) { total, value in
                let (next, overflow) = total.addingReportingOverflow(value)
                return overflow ? (value < 0 ? .min : .max) : next
            }
            let mean = count == 0 ? 0 : sum / Int64(count)
            func scaled(_ threshold: Int64) -> Int64 {
                let (product, overflow) = threshold.multipliedReportingOverflow(by: Int64(count))
                return overflow ? (threshold < 0 ? .min : .max) : product
            }
            let outcome: AnalysisOutcome
            if UInt32(clamping: count) < max(1, check.minSamples) {
                outcome = .inconclusive
            } else {
                switch check.direction {
                case .lowerIsBetter: outcome = sum <= scaled(check.passMicros) ? .pass : sum <= scaled(check.marginalMicros) ? .marginal : .fail
                case .higherIsBetter: outcome = sum >= scaled(check.passMicros) ? .pass : sum >= scaled(check.marginalMicros) ? .marginal : .fail
                }
            }
            evidence.append(MetricEvidence(check: check, samples: UInt32(clamping: count), meanMicros: mean,
                                           minMicros: values.min() ?? 0, maxMicros: values.max() ?? 0, outcome: outcome))
        }
        let outcomes = Set(evidence.map(\.outcome))
        let overall: AnalysisOutcome = outcomes.contains(.fail) ? .fail
            : outcomes.contains(.inconclusive) ? .inconclusive
            : outcomes.contains(.marginal) ? .marginal : .pass
        return (overall, evidence)
    }
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
