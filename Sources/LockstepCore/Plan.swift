/// The migration vocabulary: what kind of work a node does.
public enum Phase: String, CaseIterable, Sendable {
    case expand, dualWrite = "dual_write", backfill, verify, shadow, live, rampdown, contract, cleanup, custom
}

/// One unit of work in a plan, as frozen into a migration when it starts.
public struct NodeSpec: Hashable, Sendable {
    public var id: NodeID
    /// The services this node transitions; more than one makes it a cross-service transition.
    public var services: [String]
    public var phase: Phase
    /// What the agent runs.
    public var action: String
    /// Nodes that must succeed before this one may start.
    public var needs: [NodeID]
    /// Attempts allowed before the node fails for good (1 = no retry).
    public var maxAttempts: UInt32

    public init(id: NodeID, services: [String], phase: Phase, action: String, needs: [NodeID] = [], maxAttempts: UInt32 = 1) {
        self.id = id
        self.services = services
        self.phase = phase
        self.action = action
        self.needs = needs
        self.maxAttempts = maxAttempts
    }
}

/// The plan version a migration runs, carried whole in its `migrationStarted` event so replay needs nothing else.
public struct PlanSnapshot: Hashable, Sendable {
    public var name: String
    public var version: UInt64
    /// Content hash of the plan definition (hex SHA-256), computed outside the core.
    public var contentHash: String
    /// Nodes in plan order; order is part of the plan and decides tie-breaks.
    public var nodes: [NodeSpec]

    public init(name: String, version: UInt64, contentHash: String, nodes: [NodeSpec]) {
        self.name = name
        self.version = version
        self.contentHash = contentHash
        self.nodes = nodes
    }

    /// The node with `id`, if the plan has one.
    public func node(_ id: NodeID) -> NodeSpec? { nodes.first { $0.id == id } }
}

extension PlanSnapshot {
    /// The canonical bytes of the plan's content (name and nodes; not version or hash): what its
    /// content hash is computed over, so the same content always gets the same hash.
    public var canonicalContentBytes: [UInt8] {
        var writer = CanonicalWriter()
        var content = self
        content.version = 0
        content.contentHash = ""
        writer.plan(content)
        return writer.bytes
    }
}
