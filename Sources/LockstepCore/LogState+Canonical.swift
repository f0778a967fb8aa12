extension LogState {
    /// Leading bytes of every canonical state encoding.
    public static let canonicalMagic: [UInt8] = Array("LSST".utf8)
    /// Version of the canonical format; bump it (and keep reading the old one) on any change.
    public static let canonicalFormat: UInt8 = 1

    /// The canonical bytes of this state (see `CanonicalWriter`).
    public var canonicalBytes: [UInt8] {
        var writer = CanonicalWriter()
        for byte in Self.canonicalMagic { writer.u8(byte) }
        writer.u8(Self.canonicalFormat)
        writer.u64(lastSequence)
        writer.array(migrationsInOrder) { $0.migration($1) }
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
        guard reader.offset == bytes.count else { throw .trailingBytes(offset: reader.offset) }
        var migrations: [MigrationID: MigrationState] = [:]
        for migration in list { migrations[migration.id] = migration }
        self.init(migrations: migrations, lastSequence: lastSequence)
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
        optional(m.statusReason) { $0.string($1) }
        array(m.nodes) { $0.node($1) }
        u64(m.version)
    }

    mutating func plan(_ p: PlanSnapshot) {
        string(p.name)
        u64(p.version)
        string(p.contentHash)
        array(p.nodes) { w, n in
            w.string(n.id.rawValue)
            w.array(n.services) { $0.string($1) }
            w.string(n.phase.rawValue)
            w.string(n.action)
            w.array(n.needs) { $0.string($1.rawValue) }
            w.u32(n.maxAttempts)
        }
    }

    mutating func node(_ n: NodeState) {
        string(n.id.rawValue)
        string(n.status.rawValue)
        u32(n.attempts)
        u64(n.lastToken.rawValue)
        optional(n.lease) { w, lease in
            w.u64(lease.token.rawValue)
            w.string(lease.agent)
            w.i64(lease.grantedAt.millisecondsSinceEpoch)
            w.i64(lease.expiresAt.millisecondsSinceEpoch)
        }
        optional(n.lastFailure) { $0.string($1) }
    }
}

extension CanonicalReader {
    mutating func migration() throws(CanonicalDecodingError) -> MigrationState {
        let id = MigrationID(try string())
        let plan = try plan()
        let status = try enumeration(MigrationStatus.self)
        let startedAt = Instant(millisecondsSinceEpoch: try i64())
        let reason = try optional { (r: inout CanonicalReader) throws(CanonicalDecodingError) in try r.string() }
        let nodes = try array { (r: inout CanonicalReader) throws(CanonicalDecodingError) in try r.node() }
        let version = try u64()
        return MigrationState(id: id, plan: plan, status: status, startedAt: startedAt, statusReason: reason, nodes: nodes, version: version)
    }

    mutating func plan() throws(CanonicalDecodingError) -> PlanSnapshot {
        let name = try string()
        let version = try u64()
        let hash = try string()
        let nodes = try array { (r: inout CanonicalReader) throws(CanonicalDecodingError) -> NodeSpec in
            let id = NodeID(try r.string())
            let services = try r.array { (r: inout CanonicalReader) throws(CanonicalDecodingError) in try r.string() }
            let phase = try r.enumeration(Phase.self)
            let action = try r.string()
            let needs = try r.array { (r: inout CanonicalReader) throws(CanonicalDecodingError) in NodeID(try r.string()) }
            let maxAttempts = try r.u32()
            return NodeSpec(id: id, services: services, phase: phase, action: action, needs: needs, maxAttempts: maxAttempts)
        }
        return PlanSnapshot(name: name, version: version, contentHash: hash, nodes: nodes)
    }

    mutating func node() throws(CanonicalDecodingError) -> NodeState {
        let id = NodeID(try string())
        let status = try enumeration(NodeStatus.self)
        let attempts = try u32()
        let lastToken = FencingToken(try u64())
        let lease = try optional { (r: inout CanonicalReader) throws(CanonicalDecodingError) -> StepLease in
            StepLease(token: FencingToken(try r.u64()), agent: try r.string(),
                      grantedAt: Instant(millisecondsSinceEpoch: try r.i64()), expiresAt: Instant(millisecondsSinceEpoch: try r.i64()))
        }
        let failure = try optional { (r: inout CanonicalReader) throws(CanonicalDecodingError) in try r.string() }
        return NodeState(id: id, status: status, attempts: attempts, lastToken: lastToken, lease: lease, lastFailure: failure)
    }
}
