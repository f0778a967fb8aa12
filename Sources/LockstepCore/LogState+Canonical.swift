// The canonical state encoding: one byte sequence per state (the digest is its SHA-256), written and
// read back with every value checked. Plans and their nodes are in LogState+CanonicalPlan.swift.

extension LogState {
    /// Leading bytes of every canonical state encoding.
    public static let canonicalMagic: [UInt8] = Array("LSST".utf8)
    /// Version of the canonical format; bump it (and keep reading the old one) on any change.
    /// 9: a step lease records its poll's name. 8 is still read: an archived log's base state may be in it
    /// (docs/history.md), and its leases have no name.
    public static let canonicalFormat: UInt8 = 9
    /// The formats read (`init(canonicalBytes:)`): this one and the older ones still read.
    public static let canonicalFormatsRead: ClosedRange<UInt8> = 8...9

    /// The canonical bytes of this state (see `CanonicalWriter`).
    public var canonicalBytes: [UInt8] { canonicalBytes(format: Self.canonicalFormat) }

    /// The canonical bytes of this state in `format` (one of `canonicalFormatsRead`): what a state read
    /// in an older format re-encodes to, to check it was canonical. Format 8 drops the leases' poll names.
    public func canonicalBytes(format: UInt8) -> [UInt8] {
        precondition(Self.canonicalFormatsRead.contains(format), "format \(format) is not one this build reads")
        var writer = CanonicalWriter()
        writer.format = format
        for byte in Self.canonicalMagic { writer.u8(byte) }
        writer.u8(format)
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
        guard Self.canonicalFormatsRead.contains(format) else { throw .unsupportedFormat(format) }
        reader.format = format
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
        guard canonicalBytes(format: format) == bytes else { throw .invalidValue(offset: 0, what: "non-canonical migration order") }
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

    mutating func freeze(_ f: Freeze) {
        string(f.id)
        array(f.services) { $0.string($1) }
        i64(f.from.millisecondsSinceEpoch)
        optional(f.until) { $0.i64($1.millisecondsSinceEpoch) }
        string(f.reason)
        string(f.declaredBy)
        bool(f.stopsLine)
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
            if w.format >= 9 { w.string(lease.pollID) }
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
        // Node states follow the plan, one per node in its order (the service-lease index and every
        // lookup by id rely on it): a state where they do not was not made by a fold.
        guard nodes.count == plan.nodes.count, zip(nodes, plan.nodes).allSatisfy({ $0.id == $1.id }) else {
            throw .invalidValue(offset: offset, what: "node states of migration \(id) that do not follow its plan's nodes")
        }
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

    /// An i64 that must fit an i32 (a zone's offset in seconds).
    mutating func i32() throws(CanonicalDecodingError) -> Int32 {
        let value = try i64()
        guard let narrow = Int32(exactly: value) else { throw .invalidValue(offset: offset, what: "offset \(value) s") }
        return narrow
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
                      kind: try r.enumeration(StepKind.self), holder: try r.string(), check: try r.string(), pollID: try r.format >= 9 ? r.string() : "")
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
        let breakGlass = try array { (r: inout CanonicalReader) throws(CanonicalDecodingError) in try r.enumeration(BreakGlassScope.self) }
        let checks = try array { (r: inout CanonicalReader) throws(CanonicalDecodingError) -> CheckResult in
            CheckResult(check: try r.string(), outcome: try r.enumeration(CheckOutcome.self), valueMicros: try r.optionalI64(), evidence: try r.string(),
                        at: Instant(millisecondsSinceEpoch: try r.i64()))
        }
        // Written only when set: a node that sets none of its rarely set fields keeps sharing the empty box.
        if !breakGlass.isEmpty { node.breakGlass = breakGlass }
        if !checks.isEmpty { node.checks = checks }
        node.stopped = try bool()
        return node
    }

    mutating func gateDecision() throws(CanonicalDecodingError) -> GateDecision {
        GateDecision(approver: try string(), comment: try string(), at: Instant(millisecondsSinceEpoch: try i64()))
    }
}
