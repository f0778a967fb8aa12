import LockstepCore

// The wire <-> domain mapping of plans and what they carry (nodes, exposure stages, analyses, metric
// samples), both directions side by side; the event payloads that embed them are in Payload+Domain.swift.

extension Lockstep_V1_PlanSnapshot {
    public init(_ plan: PlanSnapshot) {
        self.init()
        name = plan.name
        version = plan.version
        contentHash = plan.contentHash
        description_p = plan.description
        owners = plan.owners
        services = plan.services.map { service in
            .with { $0.name = service.name; $0.owners = service.owners; $0.windows = service.windows.map(Lockstep_V1_ChangeWindow.init) }
        }
        deadlineMs = plan.deadlineMillis ?? 0
        windows = plan.windows.map(Lockstep_V1_ChangeWindow.init)
        // The default is written as nothing, so plans recorded before it keep their bytes.
        if plan.onPause != .finish { onPause = plan.onPause.rawValue }
        nodes = plan.nodes.map { node in
            .with {
                $0.id = node.id.rawValue
                $0.services = node.services
                $0.phase = Lockstep_V1_Phase(node.phase)
                $0.action = node.action
                $0.paramsJson = node.paramsJSON
                $0.needs = node.needs.map(\.rawValue)
                $0.maxAttempts = node.retry.maxAttempts
                $0.backoffInitialMs = node.retry.backoffInitialMillis
                $0.backoffMaxMs = node.retry.backoffMaxMillis
                $0.backoffMultiplier = node.retry.backoffMultiplier
                $0.scheduleToStartMs = node.timeouts.scheduleToStartMillis ?? 0
                $0.startToCloseMs = node.timeouts.startToCloseMillis ?? 0
                $0.heartbeatMs = node.timeouts.heartbeatMillis ?? 0
                $0.rollbackAction = node.rollback?.action ?? ""
                $0.rollbackParamsJson = node.rollback?.paramsJSON ?? ""
                $0.approvalMinimum = node.approval?.minimum ?? 0
                $0.approvalFrom = node.approval?.from ?? []
                $0.deadlineMs = node.deadlineMillis ?? 0
                $0.irreversible = node.irreversible
                $0.onFailure = node.onFailure == .pause ? .pause : .rollback
                if let exposure = node.exposure {
                    $0.exposure = .with { wire in
                        wire.stages = exposure.stages.map { stage in
                            .with {
                                $0.name = stage.name
                                if let percent = stage.percent { $0.percent = percent }
                            }
                        }
                        wire.bakeMs = exposure.bakeMillis
                    }
                }
                if let analysis = node.analysis {
                    $0.analysis = .with {
                        $0.metrics = analysis.metrics.map(Lockstep_V1_MetricCheck.init)
                        $0.onMarginal = analysis.onMarginal.rawValue
                    }
                }
                $0.windows = node.windows.map(Lockstep_V1_ChangeWindow.init)
                $0.checks = node.checks.map(Lockstep_V1_CheckSpec.init)
            }
        }
    }
}

extension PlanSnapshot {
    init(_ wire: Lockstep_V1_PlanSnapshot) throws(RecordDecodingError) {
        func positive(_ millis: Int64) -> Int64? { millis == 0 ? nil : millis }
        var nodes: [NodeSpec] = []
        for node in wire.nodes {
            guard let phase = Phase(node.phase) else { throw .invalidField("phase of node \(node.id)") }
            // Validated when recorded; a stored node without a service was written by something else.
            guard !node.services.isEmpty else { throw .invalidField("services of node \(node.id) (none)") }
            let onFailure: FailurePolicy
            switch node.onFailure {
            case .rollback: onFailure = .rollback
            case .pause: onFailure = .pause
            case .UNRECOGNIZED: throw .invalidField("on_failure of node \(node.id)")
            }
            nodes.append(NodeSpec(
                id: NodeID(node.id), services: node.services, phase: phase, action: node.action,
                // Plans recorded before params existed carry none: an empty object.
                paramsJSON: node.paramsJson.isEmpty ? "{}" : node.paramsJson, needs: node.needs.map(NodeID.init),
                timeouts: Timeouts(scheduleToStartMillis: positive(node.scheduleToStartMs), startToCloseMillis: positive(node.startToCloseMs),
                                   heartbeatMillis: positive(node.heartbeatMs)),
                retry: RetryPolicy(maxAttempts: node.maxAttempts, backoffInitialMillis: node.backoffInitialMs,
                                   backoffMaxMillis: node.backoffMaxMs, backoffMultiplier: max(1, node.backoffMultiplier)),
                rollback: node.rollbackAction.isEmpty ? nil
                    : RollbackSpec(action: node.rollbackAction, paramsJSON: node.rollbackParamsJson.isEmpty ? "{}" : node.rollbackParamsJson),
                approval: node.approvalMinimum == 0 ? nil : ApprovalGate(minimum: node.approvalMinimum, from: node.approvalFrom),
                deadlineMillis: positive(node.deadlineMs), irreversible: node.irreversible, onFailure: onFailure,
                exposure: node.hasExposure
                    ? ExposureSpec(stages: node.exposure.stages.map { ExposureStage(name: $0.name, percent: $0.hasPercent ? $0.percent : nil) },
                                   bakeMillis: node.exposure.bakeMs)
                    : nil,
                analysis: node.hasAnalysis ? try AnalysisSpec(node.analysis) : nil, windows: try node.windows.map(ChangeWindow.init),
                checks: try node.checks.map(CheckSpec.init)))
            if let problem = PlanValidation.checksProblem(nodes[nodes.count - 1]) { throw .invalidField(problem) }
        }
        var services: [ServiceSpec] = []
        for service in wire.services {
            services.append(ServiceSpec(name: service.name, owners: service.owners, windows: try service.windows.map(ChangeWindow.init)))
        }
        guard let onPause = wire.onPause.isEmpty ? .finish : PausePolicy(rawValue: wire.onPause) else {
            throw .invalidField("on_pause \"\(wire.onPause.prefix(32))\"")
        }
        self.init(name: wire.name, version: wire.version, contentHash: wire.contentHash, description: wire.description_p,
                  owners: wire.owners, services: services, deadlineMillis: positive(wire.deadlineMs), nodes: nodes,
                  windows: try wire.windows.map(ChangeWindow.init), onPause: onPause)
    }
}

extension Lockstep_V1_ChangeWindow {
    public init(_ window: ChangeWindow) {
        self.init()
        days = UInt32(window.days)
        startMinute = UInt32(window.startMinute)
        endMinute = UInt32(window.endMinute)
        zone = window.zone
    }
}

extension ChangeWindow {
    /// Narrowed without trapping; whether it is a window at all is the plan validation's to say.
    init(_ wire: Lockstep_V1_ChangeWindow) throws(RecordDecodingError) {
        guard let days = UInt8(exactly: wire.days), (1...0x7F).contains(days), let start = UInt16(exactly: wire.startMinute), start < 1_440,
              let end = UInt16(exactly: wire.endMinute), (1...1_440).contains(end), start != end, ChangeWindow.zoneNameProblem(wire.zone) == nil else {
            throw .invalidField("window \(wire.days) \(wire.startMinute)-\(wire.endMinute) \(wire.zone.prefix(64))")
        }
        self.init(days: days, startMinute: start, endMinute: end, zone: wire.zone)
    }
}

extension Lockstep_V1_CheckSpec {
    public init(_ check: CheckSpec) {
        self.init()
        name = check.name
        paramsJson = check.paramsJSON
        switch check.pass {
        case .ok: pass = "ok"
        case .max(let micros): pass = "max"; thresholdMicros = micros
        case .min(let micros): pass = "min"; thresholdMicros = micros
        }
        freshForMs = check.freshForMillis ?? 0
        recheckMs = check.recheckMillis
        onFail = check.onFail.rawValue
        if check.before != .forward { before = check.before.rawValue }
    }
}

extension CheckSpec {
    init(_ wire: Lockstep_V1_CheckSpec) throws(RecordDecodingError) {
        let pass: CheckRule
        switch wire.pass {
        case "ok": pass = .ok
        case "max": pass = .max(wire.thresholdMicros)
        case "min": pass = .min(wire.thresholdMicros)
        default: throw .invalidField("check rule \"\(wire.pass.prefix(32))\"")
        }
        guard let onFail = CheckFailurePolicy(rawValue: wire.onFail) else { throw .invalidField("check on_fail \"\(wire.onFail.prefix(32))\"") }
        guard let before = wire.before.isEmpty ? .forward : CheckBefore(rawValue: wire.before) else { throw .invalidField("check before \"\(wire.before.prefix(32))\"") }
        self.init(name: wire.name, paramsJSON: wire.paramsJson.isEmpty ? "{}" : wire.paramsJson, pass: pass,
                  freshForMillis: wire.freshForMs == 0 ? nil : wire.freshForMs, recheckMillis: wire.recheckMs, onFail: onFail, before: before)
    }
}

extension Lockstep_V1_ZoneOffsets {
    public init(_ offsets: ZoneOffsets) {
        self.init()
        zone = offsets.zone
        initialOffsetSeconds = offsets.initialOffsetSeconds
        changes = offsets.changes.map { change in .with { $0.atMs = change.at.millisecondsSinceEpoch; $0.offsetSeconds = change.offsetSeconds } }
    }
}

extension ZoneOffsets {
    init(_ wire: Lockstep_V1_ZoneOffsets) throws(RecordDecodingError) {
        self.init(zone: wire.zone, initialOffsetSeconds: wire.initialOffsetSeconds,
                  changes: wire.changes.map { OffsetChange(at: Instant(millisecondsSinceEpoch: $0.atMs), offsetSeconds: $0.offsetSeconds) })
        if let problem = problem() { throw .invalidField(problem) }
    }
}

extension Lockstep_V1_MetricCheck {
    public init(_ check: MetricCheck) {
        self.init()
        name = check.name
        direction = check.direction.rawValue
        passMicros = check.passMicros
        marginalMicros = check.marginalMicros
        minSamples = check.minSamples
        if let rule = check.baseline {
            baseline = .with {
                $0.pass = Lockstep_V1_BaselineLimits(rule.pass)
                $0.marginal = Lockstep_V1_BaselineLimits(rule.marginal)
            }
        }
    }
}

extension Lockstep_V1_BaselineLimits {
    init(_ limits: BaselineLimits) {
        self.init()
        if let ratio = limits.ratioMicros { ratioMicros = ratio }
        if let difference = limits.differenceMicros { differenceMicros = difference }
    }
}

extension BaselineLimits {
    init(_ wire: Lockstep_V1_BaselineLimits) {
        self.init(ratioMicros: wire.hasRatioMicros ? wire.ratioMicros : nil, differenceMicros: wire.hasDifferenceMicros ? wire.differenceMicros : nil)
    }
}

extension MetricCheck {
    init(_ wire: Lockstep_V1_MetricCheck) throws(RecordDecodingError) {
        guard let direction = MetricDirection(rawValue: wire.direction) else { throw .invalidField("metric direction \"\(wire.direction)\"") }
        self.init(name: wire.name, direction: direction, passMicros: wire.passMicros, marginalMicros: wire.marginalMicros, minSamples: wire.minSamples,
                  baseline: wire.hasBaseline ? BaselineRule(pass: BaselineLimits(wire.baseline.pass), marginal: BaselineLimits(wire.baseline.marginal)) : nil)
    }
}

extension AnalysisSpec {
    init(_ wire: Lockstep_V1_Analysis) throws(RecordDecodingError) {
        guard let onMarginal = MarginalPolicy(rawValue: wire.onMarginal) else { throw .invalidField("on_marginal \"\(wire.onMarginal)\"") }
        var metrics: [MetricCheck] = []
        for check in wire.metrics { metrics.append(try MetricCheck(check)) }
        self.init(metrics: metrics, onMarginal: onMarginal)
    }
}

extension Lockstep_V1_MetricSample {
    public init(_ sample: MetricSample) {
        self.init()
        name = sample.name
        valueMicros = sample.valueMicros
        windowStartMs = sample.windowStart.millisecondsSinceEpoch
        windowEndMs = sample.windowEnd.millisecondsSinceEpoch
        source = sample.source
        // The default cohort is written as nothing, so samples recorded before cohorts keep their bytes.
        if sample.cohort != .canary { cohort = sample.cohort.rawValue }
    }
}

extension SampleCohort {
    /// The cohort a request or record names: "" or "canary" is the canary.
    public init?(wire: String) {
        if wire.isEmpty { self = .canary } else if let cohort = SampleCohort(rawValue: wire) { self = cohort } else { return nil }
    }
}

extension MetricSample {
    public init(_ wire: Lockstep_V1_MetricSample) throws(RecordDecodingError) {
        guard let cohort = SampleCohort(wire: wire.cohort) else { throw .invalidField("sample cohort \"\(wire.cohort.prefix(32))\"") }
        self.init(name: wire.name, valueMicros: wire.valueMicros, windowStart: Instant(millisecondsSinceEpoch: wire.windowStartMs),
                  windowEnd: Instant(millisecondsSinceEpoch: wire.windowEndMs), source: wire.source, cohort: cohort)
    }
}

extension AbortTrigger {
    /// The trigger a wire value names; nil for the empty value of histories recorded before triggers.
    init?(wire: String) throws(RecordDecodingError) {
        if wire.isEmpty { return nil }
        guard let trigger = AbortTrigger(rawValue: wire) else { throw .invalidField("abort trigger \"\(wire)\"") }
        self = trigger
    }
}

extension Lockstep_V1_StepKind {
    public init(_ kind: StepKind) {
        switch kind {
        case .forward: self = .forward
        case .rollback: self = .rollback
        case .check: self = .check
        }
    }
}

extension StepKind {
    init(_ wire: Lockstep_V1_StepKind) throws(RecordDecodingError) {
        switch wire {
        case .forward: self = .forward
        case .rollback: self = .rollback
        case .check: self = .check
        case .UNRECOGNIZED: throw .invalidField("step kind")
        }
    }
}

extension Lockstep_V1_Phase {
    public init(_ phase: Phase) {
        switch phase {
        case .expand: self = .expand
        case .dualWrite: self = .dualWrite
        case .backfill: self = .backfill
        case .verify: self = .verify
        case .shadow: self = .shadow
        case .live: self = .live
        case .rampdown: self = .rampdown
        case .contract: self = .contract
        case .cleanup: self = .cleanup
        case .custom: self = .custom
        }
    }
}

extension Phase {
    /// The domain phase of a wire phase; nil for unspecified or unknown values.
    public init?(_ wire: Lockstep_V1_Phase) {
        switch wire {
        case .expand: self = .expand
        case .dualWrite: self = .dualWrite
        case .backfill: self = .backfill
        case .verify: self = .verify
        case .shadow: self = .shadow
        case .live: self = .live
        case .rampdown: self = .rampdown
        case .contract: self = .contract
        case .cleanup: self = .cleanup
        case .custom: self = .custom
        case .unspecified, .UNRECOGNIZED: return nil
        }
    }
}

extension Lockstep_V1_TriggeredBy {
    public init(_ triggeredBy: TriggeredBy) {
        switch triggeredBy {
        case .user: self = .user
        case .coordinator: self = .coordinator
        case .metric: self = .metric
        case .agent: self = .agent
        case .deadline: self = .deadline
        case .internalError: self = .internalError
        }
    }
}

extension TriggeredBy {
    /// The domain value of a wire value; nil for unspecified or unknown values.
    public init?(_ wire: Lockstep_V1_TriggeredBy) {
        switch wire {
        case .user: self = .user
        case .coordinator: self = .coordinator
        case .metric: self = .metric
        case .agent: self = .agent
        case .deadline: self = .deadline
        case .internalError: self = .internalError
        case .unspecified, .UNRECOGNIZED: return nil
        }
    }
}
