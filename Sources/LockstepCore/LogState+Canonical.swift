extension LogState {
    /// Leading bytes of every canonical state encoding.
    public static let canonicalMagic: [UInt8] = Array("LSST".utf8)
    /// Version of the canonical format; bump it (and keep reading the old one) on any change.
    public static let canonicalFormat: UInt8 = 8

    /// The canonical bytes of this state (see `CanonicalWriter`).
    public var canonicalBytes: [UInt8] {
        var writer = CanonicalWriter()
        for byte in Self.canonicalMagic { writer.u8(byte) }
        writer.u8(Self.canonicalFormat)
        writer.u64(lastSequence)
        writer.array(migrationsInOrder) { $0.migration($1) }
        writer.array(plansInOrder) { w, entry in
            w.string(entry.name)
            w.array(entry.versions) { $0.plan($1) }
        }
        writer.array(freezesInOrder) { $0.freeze($1) }
        return writer.bytes
    }

    /// Rebuilds a state from its canonical bytes, rejecting anything malformed or not canonical.
    public init(canonicalBytes bytes: [UInt8]) throws(CanonicalDecodingError) {
        var reader = CanonicalReader(bytes)
        for expected in Self.canonicalMagic where try reader.u8() != expected { throw .badMagic }
        let format = try reader.u8()
        guard format == Self.canonicalFormat else { throw .unsupportedFormat(format) }
        let lastSequence = try reader.u64()
        let list = try reader.array { (r: inout CanonicalReader) throws(CanonicalDecodingError) in try r.migration() }
        let planList = try reader.array { (r: inout CanonicalReader) throws(CanonicalDecodingError) -> (String, [PlanSnapshot]) in
            (try r.string(), try r.array { (r: inout CanonicalReader) throws(CanonicalDecodingError) in try r.plan() })
        }
        let freezeList = try reader.array { (r: inout CanonicalReader) throws(CanonicalDecodingError) in try r.freeze() }
        guard reader.offset == bytes.count else { throw .trailingBytes(offset: reader.offset) }
        var migrations: [MigrationID: MigrationState] = [:]
        for migration in list {
            // No fold keeps a settled migration that holds and waits for nothing (format 6).
            if migration.status.isSettled, migration.nodes.allSatisfy({ $0.serviceLeases == .none }) {
                throw .invalidValue(offset: 0, what: "settled migration \(migration.id) in the live state")
            }
            migrations[migration.id] = migration
        }
        var plans: [String: [PlanSnapshot]] = [:]
        for (name, versions) in planList { plans[name] = versions }
        var freezes: [String: Freeze] = [:]
        for freeze in freezeList { freezes[freeze.id] = freeze }
        self.init(migrations: migrations, plans: plans, freezes: freezes, lastSequence: lastSequence)
        // Canonical means one encoding per state: duplicates or a different order would re-encode differently.
        guard canonicalBytes == bytes else { throw .invalidValue(offset: 0, what: "non-canonical migration order") }
    }
}

extension CanonicalWriter {
    mutating func migration(_ m: MigrationState) {
        string(m.id.rawValue)
        plan(m.plan)
        string(m.status.rawValue)
        i64(m.startedAt.millisecondsSinceEpoch)
        string(m.startedBy)
        optional(m.statusReason) { $0.string($1) }
        array(m.nodes) { $0.node($1) }
        array(m.completionOrder) { $0.string($1.rawValue) }
        array(m.rollbackQueue) { $0.string($1.rawValue) }
        array(m.cannotUndo) { $0.string($1.rawValue) }
        u64(m.version)
        string(m.lineStop)
        array(m.zones) { w, zone in
            w.string(zone.zone)
            w.i64(Int64(zone.initialOffsetSeconds))
            w.array(zone.changes) { w, change in
                w.i64(change.at.millisecondsSinceEpoch)
                w.i64(Int64(change.offsetSeconds))
            }
        }
    }

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

    mutating func freeze(_ f: Freeze) {
        string(f.id)
        array(f.services) { $0.string($1) }
        i64(f.from.millisecondsSinceEpoch)
        optional(f.until) { $0.i64($1.millisecondsSinceEpoch) }
        string(f.reason)
        string(f.declaredBy)
        bool(f.stopsLine)
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

    mutating func node(_ n: NodeState) {
        string(n.id.rawValue)
        string(n.status.rawValue)
        u32(n.attempts)
        u32(n.rollbackAttempts)
        u32(n.agentsLost)
        u64(n.lastToken.rawValue)
        optional(n.lease) { w, lease in
            w.u64(lease.token.rawValue)
            w.string(lease.agent)
            w.i64(lease.grantedAt.millisecondsSinceEpoch)
            w.i64(lease.expiresAt.millisecondsSinceEpoch)
            w.string(lease.kind.rawValue)
            w.string(lease.holder)
            w.string(lease.check)
        }
        optional(n.lastFailure) { $0.string($1) }
        optional(n.retryAt) { $0.i64($1.millisecondsSinceEpoch) }
        array(n.approvals) { $0.gateDecision($1) }
        optional(n.rejection) { $0.gateDecision($1) }
        optional(n.progress) { w, progress in
            w.u64(progress.token.rawValue)
            w.u8(progress.percent)
            w.string(progress.message)
        }
        switch n.serviceLeases {
        case .none:
            u8(0)
        case .requested(let kind, let sequence):
            u8(1)
            string(kind.rawValue)
            u64(sequence)
        case .held(let since):
            u8(2)
            i64(since.millisecondsSinceEpoch)
        }
        u32(n.exposure.reached)
        optional(n.exposure.bakeUntil) { $0.i64($1.millisecondsSinceEpoch) }
        array(n.exposure.samples) { w, sample in
            w.string(sample.name)
            w.i64(sample.valueMicros)
            w.i64(sample.windowStart.millisecondsSinceEpoch)
            w.i64(sample.windowEnd.millisecondsSinceEpoch)
            w.string(sample.source)
            w.string(sample.cohort.rawValue)
        }
        bool(n.exposure.awaitingDecision)
        array(n.breakGlass) { $0.string($1.rawValue) }
        array(n.checks) { w, result in
            w.string(result.check)
            w.string(result.outcome.rawValue)
            w.optional(result.valueMicros) { $0.i64($1) }
            w.string(result.evidence)
            w.i64(result.at.millisecondsSinceEpoch)
        }
        bool(n.stopped)
    }

    mutating func gateDecision(_ d: GateDecision) {
        string(d.approver)
        string(d.comment)
        i64(d.at.millisecondsSinceEpoch)
    }
}

extension CanonicalReader {
    mutating func strings() throws(CanonicalDecodingError) -> [String] {
        try array { (r: inout CanonicalReader) throws(CanonicalDecodingError) in try r.string() }
    }
    mutating func nodeIDs() throws(CanonicalDecodingError) -> [NodeID] { try strings().map(NodeID.init) }
    mutating func optionalI64() throws(CanonicalDecodingError) -> Int64? {
        try optional { (r: inout CanonicalReader) throws(CanonicalDecodingError) in try r.i64() }
    }
    mutating func optionalString() throws(CanonicalDecodingError) -> String? {
        try optional { (r: inout CanonicalReader) throws(CanonicalDecodingError) in try r.string() }
    }

    mutating func migration() throws(CanonicalDecodingError) -> MigrationState {
        let id = MigrationID(try string())
        let plan = try plan()
        let status = try enumeration(MigrationStatus.self)
        let startedAt = Instant(millisecondsSinceEpoch: try i64())
        let startedBy = try string()
        let reason = try optionalString()
        let nodes = try array { (r: inout CanonicalReader) throws(CanonicalDecodingError) in try r.node() }
        let completionOrder = try nodeIDs()
        let rollbackQueue = try nodeIDs()
        let cannotUndo = try nodeIDs()
        let version = try u64()
        var migration = MigrationState(id: id, plan: plan, status: status, startedAt: startedAt, startedBy: startedBy, statusReason: reason,
                                       nodes: nodes, completionOrder: completionOrder, rollbackQueue: rollbackQueue, cannotUndo: cannotUndo,
                                       version: version)
        migration.lineStop = try string()
        migration.zones = try array { (r: inout CanonicalReader) throws(CanonicalDecodingError) -> ZoneOffsets in
            let zone = ZoneOffsets(zone: try r.string(), initialOffsetSeconds: try r.i32(),
                                   changes: try r.array { (r: inout CanonicalReader) throws(CanonicalDecodingError) -> OffsetChange in
                                       OffsetChange(at: Instant(millisecondsSinceEpoch: try r.i64()), offsetSeconds: try r.i32())
                                   })
            if let problem = zone.problem() { throw .invalidValue(offset: r.offset, what: problem) }
            return zone
        }
        return migration
    }

    mutating func freeze() throws(CanonicalDecodingError) -> Freeze {
        Freeze(id: try string(), services: try strings(), from: Instant(millisecondsSinceEpoch: try i64()),
               until: try optionalI64().map(Instant.init(millisecondsSinceEpoch:)), reason: try string(), declaredBy: try string(),
               stopsLine: try bool())
    }

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
        let nodes = try array { (r: inout CanonicalReader) throws(CanonicalDecodingError) in try r.nodeSpec() }
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

    /// An i64 that must fit an i32 (a zone's offset in seconds).
    mutating func i32() throws(CanonicalDecodingError) -> Int32 {
        let value = try i64()
        guard let narrow = Int32(exactly: value) else { throw .invalidValue(offset: offset, what: "offset \(value) s") }
        return narrow
    }

    mutating func nodeSpec() throws(CanonicalDecodingError) -> NodeSpec {
        let id = NodeID(try string())
        let services = try strings()
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

    mutating func node() throws(CanonicalDecodingError) -> NodeState {
        let id = NodeID(try string())
        let status = try enumeration(NodeStatus.self)
        let attempts = try u32()
        let rollbackAttempts = try u32()
        let agentsLost = try u32()
        let lastToken = FencingToken(try u64())
        let lease = try optional { (r: inout CanonicalReader) throws(CanonicalDecodingError) -> StepLease in
            StepLease(token: FencingToken(try r.u64()), agent: try r.string(),
                      grantedAt: Instant(millisecondsSinceEpoch: try r.i64()), expiresAt: Instant(millisecondsSinceEpoch: try r.i64()),
                      kind: try r.enumeration(StepKind.self), holder: try r.string(), check: try r.string())
        }
        let failure = try optionalString()
        let retryAt = try optionalI64().map(Instant.init(millisecondsSinceEpoch:))
        let approvals = try array { (r: inout CanonicalReader) throws(CanonicalDecodingError) in try r.gateDecision() }
        let rejection = try optional { (r: inout CanonicalReader) throws(CanonicalDecodingError) in try r.gateDecision() }
        let progress = try optional { (r: inout CanonicalReader) throws(CanonicalDecodingError) -> StepProgress in
            StepProgress(node: id, token: FencingToken(try r.u64()), percent: try r.u8(), message: try r.string())
        }
        let serviceLeases: ServiceLeaseStatus
        let tagOffset = offset
        switch try u8() {
        case 0: serviceLeases = .none
        case 1: serviceLeases = .requested(kind: try enumeration(StepKind.self), sequence: try u64())
        case 2: serviceLeases = .held(since: Instant(millisecondsSinceEpoch: try i64()))
        default: throw .invalidValue(offset: tagOffset, what: "service lease status")
        }
        let reached = try u32()
        let bakeUntil = try optionalI64().map(Instant.init(millisecondsSinceEpoch:))
        let samples = try array { (r: inout CanonicalReader) throws(CanonicalDecodingError) -> MetricSample in
            MetricSample(name: try r.string(), valueMicros: try r.i64(), windowStart: Instant(millisecondsSinceEpoch: try r.i64()),
                         windowEnd: Instant(millisecondsSinceEpoch: try r.i64()), source: try r.string(), cohort: try r.enumeration(SampleCohort.self))
        }
        let exposure = ExposureProgress(reached: reached, bakeUntil: bakeUntil, samples: samples, awaitingDecision: try bool())
        var node = NodeState(id: id, status: status, attempts: attempts, rollbackAttempts: rollbackAttempts, lastToken: lastToken,
                             lease: lease, lastFailure: failure, retryAt: retryAt, approvals: approvals, rejection: rejection, progress: progress,
                             serviceLeases: serviceLeases, exposure: exposure, agentsLost: agentsLost)
        node.breakGlass = try array { (r: inout CanonicalReader) throws(CanonicalDecodingError) in try r.enumeration(BreakGlassScope.self) }
        node.checks = try array { (r: inout CanonicalReader) throws(CanonicalDecodingError) -> CheckResult in
            CheckResult(check: try r.string(), outcome: try r.enumeration(CheckOutcome.self), valueMicros: try r.optionalI64(), evidence: try r.string(),
                        at: Instant(millisecondsSinceEpoch: try r.i64()))
        }
        node.stopped = try bool()
        return node
    }

    mutating func gateDecision() throws(CanonicalDecodingError) -> GateDecision {
        GateDecision(approver: try string(), comment: try string(), at: Instant(millisecondsSinceEpoch: try i64()))
    }
}
