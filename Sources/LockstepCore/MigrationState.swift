/// Where a migration as a whole stands.
public enum MigrationStatus: String, Hashable, Sendable, CaseIterable {
    case running, paused, succeeded, failed, aborted

    /// A settled migration accepts no further commands.
    public var isSettled: Bool { self == .succeeded || self == .failed || self == .aborted }
}

/// Where one node stands. `ready` is not stored: it is derived from `needs` (see `MigrationState.isReady`).
public enum NodeStatus: String, Hashable, Sendable, CaseIterable {
    case pending, running, succeeded, failed
}

/// The step lease a node's current attempt runs under.
public struct StepLease: Hashable, Sendable {
    public var token: FencingToken
    public var agent: String
    public var grantedAt: Instant
    public var expiresAt: Instant
    public init(token: FencingToken, agent: String, grantedAt: Instant, expiresAt: Instant) {
        self.token = token
        self.agent = agent
        self.grantedAt = grantedAt
        self.expiresAt = expiresAt
    }
}

/// One node of a running migration.
public struct NodeState: Hashable, Sendable {
    public var id: NodeID
    public var status: NodeStatus
    /// Attempts started so far.
    public var attempts: UInt32
    /// The highest fencing token ever issued for this node (0 = none yet).
    public var lastToken: FencingToken
    /// The live lease while `status == .running`.
    public var lease: StepLease?
    /// Why the last attempt failed, if it did.
    public var lastFailure: String?

    public init(id: NodeID, status: NodeStatus = .pending, attempts: UInt32 = 0, lastToken: FencingToken = FencingToken(0),
                lease: StepLease? = nil, lastFailure: String? = nil) {
        self.id = id
        self.status = status
        self.attempts = attempts
        self.lastToken = lastToken
        self.lease = lease
        self.lastFailure = lastFailure
    }
}

/// The state of one migration: a pure fold of its events (see `evolve`).
public struct MigrationState: Hashable, Sendable {
    public var id: MigrationID
    public var plan: PlanSnapshot
    public var status: MigrationStatus
    public var startedAt: Instant
    /// Why the migration is paused, aborted or failed.
    public var statusReason: String?
    /// Node states in plan order.
    public var nodes: [NodeState]
    /// Events folded into this migration so far: the version of its stream.
    public var version: UInt64

    public init(id: MigrationID, plan: PlanSnapshot, status: MigrationStatus, startedAt: Instant,
                statusReason: String?, nodes: [NodeState], version: UInt64) {
        self.id = id
        self.plan = plan
        self.status = status
        self.startedAt = startedAt
        self.statusReason = statusReason
        self.nodes = nodes
        self.version = version
    }

    /// Index of node `id` in `nodes` (which follows plan order).
    public func nodeIndex(_ id: NodeID) -> Int? { nodes.firstIndex { $0.id == id } }

    /// The state of node `id`.
    public func node(_ id: NodeID) -> NodeState? { nodeIndex(id).map { nodes[$0] } }

    /// A node is ready when it is pending and everything it needs has succeeded.
    public func isReady(_ id: NodeID) -> Bool {
        guard let index = nodeIndex(id), nodes[index].status == .pending, let spec = plan.node(id) else { return false }
        return spec.needs.allSatisfy { node($0)?.status == .succeeded }
    }

    /// Ready nodes, in plan order.
    public var readyNodes: [NodeID] { nodes.map(\.id).filter(isReady) }
}
