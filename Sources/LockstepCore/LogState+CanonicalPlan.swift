// The canonical encoding of plans (LogState+Canonical.swift encodes the state around them): a plan, its
// nodes, their windows, checks, exposure and analysis, written and read back. In content-hash mode
// (`CanonicalWriter.forContentHash`) what a plan written before a field existed lacks is left out, after
// a marker byte, so its hash stays the same.

extension CanonicalWriter {
    /// One level's windows. In a content hash, only when there are any, after `marker` ('W' for a service
    /// or a node, 'P' for the plan, which follows the last node), so plans written before windows keep
    /// their hash (a marker cannot begin what may follow: a length, whose first byte is 0x00, an
    /// optional's flag, 0x00 or 0x01, or the other marker).
    mutating func windows(_ windows: [ChangeWindow], marker: UInt8 = 0x57) {
        if forContentHash {
            guard !windows.isEmpty else { return }
            u8(marker)
        }
        array(windows) { w, window in
            w.u8(window.days)
            w.u32(UInt32(window.startMinute))
            w.u32(UInt32(window.endMinute))
            w.string(window.zone)
        }
    }

    mutating func plan(_ p: PlanSnapshot) {
        string(p.name)
        u64(p.version)
        string(p.contentHash)
        string(p.description)
        array(p.owners) { $0.string($1) }
        array(p.services) { w, service in
            w.string(service.name)
            w.array(service.owners) { $0.string($1) }
            w.windows(service.windows)
        }
        optional(p.deadlineMillis) { $0.i64($1) }
        array(p.nodes) { $0.nodeSpec($1) }
        windows(p.windows, marker: 0x50)
        // In a content hash only when it is not the default, after 'S' (which neither 'P' nor a node's end can be).
        if forContentHash {
            guard p.onPause != .finish else { return }
            u8(0x53)
        }
        string(p.onPause.rawValue)
    }

    mutating func nodeSpec(_ n: NodeSpec) {
        string(n.id.rawValue)
        array(n.services) { $0.string($1) }
        string(n.phase.rawValue)
        string(n.action)
        string(n.paramsJSON)
        array(n.needs) { $0.string($1.rawValue) }
        optional(n.timeouts.scheduleToStartMillis) { $0.i64($1) }
        optional(n.timeouts.startToCloseMillis) { $0.i64($1) }
        optional(n.timeouts.heartbeatMillis) { $0.i64($1) }
        u32(n.retry.maxAttempts)
        i64(n.retry.backoffInitialMillis)
        i64(n.retry.backoffMaxMillis)
        u32(n.retry.backoffMultiplier)
        optional(n.rollback) { w, rollback in
            w.string(rollback.action)
            w.string(rollback.paramsJSON)
        }
        optional(n.approval) { w, gate in
            w.u32(gate.minimum)
            w.array(gate.from) { $0.string($1) }
        }
        optional(n.deadlineMillis) { $0.i64($1) }
        bool(n.irreversible)
        string(n.onFailure.rawValue)
        // In a content hash, only when set: 0xE1 cannot begin the next node (an id's length, big-endian,
        // starts with 0x00), nor the windows' marker.
        if !forContentHash || n.exposure != nil || n.analysis != nil {
            if forContentHash { u8(0xE1) }
            optional(n.exposure) { w, exposure in
                w.array(exposure.stages) { w, stage in
                    w.string(stage.name)
                    w.optional(stage.percent) { $0.u32($1) }
                }
                w.i64(exposure.bakeMillis)
            }
            optional(n.analysis) { w, analysis in
                w.array(analysis.metrics) { $0.metricCheck($1) }
                w.string(analysis.onMarginal.rawValue)
            }
        }
        windows(n.windows)
        // Checks, likewise only when there are any in a content hash, after 'C'.
        if forContentHash {
            guard !n.checks.isEmpty else { return }
            u8(0x43)
        }
        array(n.checks) { $0.checkSpec($1) }
    }

    mutating func checkSpec(_ c: CheckSpec) {
        string(c.name)
        string(c.paramsJSON)
        switch c.pass {
        case .ok: u8(0)
        case .max(let micros): u8(1); i64(micros)
        case .min(let micros): u8(2); i64(micros)
        }
        optional(c.freshForMillis) { $0.i64($1) }
        i64(c.recheckMillis)
        string(c.onFail.rawValue)
        string(c.before.rawValue)
    }

    mutating func metricCheck(_ c: MetricCheck) {
        string(c.name)
        string(c.direction.rawValue)
        i64(c.passMicros)
        i64(c.marginalMicros)
        u32(c.minSamples)
        if forContentHash {
            // Only when set, so plans written before baselines keep their content hash. 0xB1 cannot begin
            // what follows a check (the next check's name or the marginal policy: lengths start with 0x00).
            guard let baseline = c.baseline else { return }
            u8(0xB1)
            baselineRule(baseline)
        } else {
            optional(c.baseline) { $0.baselineRule($1) }
        }
    }

    mutating func baselineRule(_ rule: BaselineRule) {
        for limits in [rule.pass, rule.marginal] {
            optional(limits.ratioMicros) { $0.i64($1) }
            optional(limits.differenceMicros) { $0.i64($1) }
        }
    }
}

extension CanonicalReader {
    mutating func plan() throws(CanonicalDecodingError) -> PlanSnapshot {
        let name = try string()
        let version = try u64()
        let hash = try string()
        let description = try string()
        let owners = try strings()
        let services = try array { (r: inout CanonicalReader) throws(CanonicalDecodingError) -> ServiceSpec in
            ServiceSpec(name: try r.string(), owners: try r.strings(), windows: try r.windows())
        }
        let deadline = try optionalI64()
        let nodesOffset = offset
        let nodes = try array { (r: inout CanonicalReader) throws(CanonicalDecodingError) in try r.nodeSpec() }
        // As PlanValidation insists for a plan applied: the walks over a migration's nodes find a node by
        // its id, near its dependents first (ServiceLeases.swift), which is one answer only when ids are unique.
        var ids = Set<NodeID>()
        for node in nodes where !ids.insert(node.id).inserted {
            throw .invalidValue(offset: nodesOffset, what: "plan \(name) lists node \(node.id) twice")
        }
        return PlanSnapshot(name: name, version: version, contentHash: hash, description: description, owners: owners,
                            services: services, deadlineMillis: deadline, nodes: nodes, windows: try windows(),
                            onPause: try enumeration(PausePolicy.self))
    }

    mutating func windows() throws(CanonicalDecodingError) -> [ChangeWindow] {
        try array { (r: inout CanonicalReader) throws(CanonicalDecodingError) -> ChangeWindow in
            let days = try r.u8()
            let start = try r.u32(), end = try r.u32()
            guard (1...0x7F).contains(days), start < 1_440, (1...1_440).contains(end), start != end else {
                throw .invalidValue(offset: r.offset, what: "window days \(days), minutes \(start)-\(end)")
            }
            let window = ChangeWindow(days: days, startMinute: UInt16(start), endMinute: UInt16(end), zone: try r.string())
            if ChangeWindow.zoneNameProblem(window.zone) != nil { throw .invalidValue(offset: r.offset, what: "window zone") }
            return window
        }
    }

    mutating func nodeSpec() throws(CanonicalDecodingError) -> NodeSpec {
        let id = NodeID(try string())
        let services = try strings()
        // Validated when recorded; a snapshot's node without a service was written by something else.
        if services.isEmpty { throw .invalidValue(offset: offset, what: "services of node \(id.rawValue.quotable) (none)") }
        let phase = try enumeration(Phase.self)
        let action = try string()
        let params = try string()
        let needs = try nodeIDs()
        let timeouts = Timeouts(scheduleToStartMillis: try optionalI64(), startToCloseMillis: try optionalI64(), heartbeatMillis: try optionalI64())
        let retry = RetryPolicy(maxAttempts: try u32(), backoffInitialMillis: try i64(), backoffMaxMillis: try i64(), backoffMultiplier: try u32())
        let rollback = try optional { (r: inout CanonicalReader) throws(CanonicalDecodingError) -> RollbackSpec in
            RollbackSpec(action: try r.string(), paramsJSON: try r.string())
        }
        let approval = try optional { (r: inout CanonicalReader) throws(CanonicalDecodingError) -> ApprovalGate in
            ApprovalGate(minimum: try r.u32(), from: try r.strings())
        }
        let deadline = try optionalI64()
        let irreversible = try bool()
        let onFailure = try enumeration(FailurePolicy.self)
        let exposure = try optional { (r: inout CanonicalReader) throws(CanonicalDecodingError) -> ExposureSpec in
            let stages = try r.array { (r: inout CanonicalReader) throws(CanonicalDecodingError) -> ExposureStage in
                ExposureStage(name: try r.string(), percent: try r.optional { (r: inout CanonicalReader) throws(CanonicalDecodingError) in try r.u32() })
            }
            return ExposureSpec(stages: stages, bakeMillis: try r.i64())
        }
        let analysis = try optional { (r: inout CanonicalReader) throws(CanonicalDecodingError) -> AnalysisSpec in
            let metrics = try r.array { (r: inout CanonicalReader) throws(CanonicalDecodingError) in try r.metricCheck() }
            return AnalysisSpec(metrics: metrics, onMarginal: try r.enumeration(MarginalPolicy.self))
        }
        let spec = NodeSpec(id: id, services: services, phase: phase, action: action, paramsJSON: params, needs: needs, timeouts: timeouts,
                        retry: retry, rollback: rollback, approval: approval, deadlineMillis: deadline, irreversible: irreversible,
                        onFailure: onFailure, exposure: exposure, analysis: analysis, windows: try windows(),
                        checks: try array { (r: inout CanonicalReader) throws(CanonicalDecodingError) in try r.checkSpec() })
        if let problem = PlanValidation.checksProblem(spec) { throw .invalidValue(offset: offset, what: problem) }
        return spec
    }

    mutating func checkSpec() throws(CanonicalDecodingError) -> CheckSpec {
        let name = try string()
        let params = try string()
        let ruleOffset = offset
        let pass: CheckRule
        switch try u8() {
        case 0: pass = .ok
        case 1: pass = .max(try i64())
        case 2: pass = .min(try i64())
        default: throw .invalidValue(offset: ruleOffset, what: "check rule")
        }
        return CheckSpec(name: name, paramsJSON: params, pass: pass, freshForMillis: try optionalI64(), recheckMillis: try i64(),
                         onFail: try enumeration(CheckFailurePolicy.self), before: try enumeration(CheckBefore.self))
    }

    mutating func metricCheck() throws(CanonicalDecodingError) -> MetricCheck {
        MetricCheck(name: try string(), direction: try enumeration(MetricDirection.self), passMicros: try i64(), marginalMicros: try i64(),
                    minSamples: try u32(), baseline: try optional { (r: inout CanonicalReader) throws(CanonicalDecodingError) -> BaselineRule in
                        BaselineRule(pass: BaselineLimits(ratioMicros: try r.optionalI64(), differenceMicros: try r.optionalI64()),
                                     marginal: BaselineLimits(ratioMicros: try r.optionalI64(), differenceMicros: try r.optionalI64()))
                    })
    }
}
