/// A fact about one migration. Payloads carry everything `evolve` needs, including any time involved.
public enum MigrationEvent: Hashable, Sendable {
    case migrationStarted(MigrationStarted)
    case stepLeased(StepLeased)
    case stepCompleted(StepCompleted)
    case stepFailed(StepFailed)
    case migrationPaused(reason: String)
    case migrationResumed
    case migrationAborted(reason: String)
    case migrationSucceeded
    case migrationFailed(node: NodeID, reason: String)

    /// A stable name for the event type (also its name on the wire and in exports).
    public var typeName: String {
        switch self {
        case .migrationStarted: "migration_started"
        case .stepLeased: "step_leased"
        case .stepCompleted: "step_completed"
        case .stepFailed: "step_failed"
        case .migrationPaused: "migration_paused"
        case .migrationResumed: "migration_resumed"
        case .migrationAborted: "migration_aborted"
        case .migrationSucceeded: "migration_succeeded"
        case .migrationFailed: "migration_failed"
        }
    }
}

/// A migration began running `plan`.
public struct MigrationStarted: Hashable, Sendable {
    public var migration: MigrationID
    public var plan: PlanSnapshot
    public var startedAt: Instant
    public init(migration: MigrationID, plan: PlanSnapshot, startedAt: Instant) {
        self.migration = migration
        self.plan = plan
        self.startedAt = startedAt
    }
}

/// An agent was granted a step lease for a node.
public struct StepLeased: Hashable, Sendable {
    public var node: NodeID
    public var attempt: UInt32
    public var token: FencingToken
    public var agent: String
    public var grantedAt: Instant
    public var expiresAt: Instant
    public init(node: NodeID, attempt: UInt32, token: FencingToken, agent: String, grantedAt: Instant, expiresAt: Instant) {
        self.node = node
        self.attempt = attempt
        self.token = token
        self.agent = agent
        self.grantedAt = grantedAt
        self.expiresAt = expiresAt
    }
}

/// The lease holder reported the step done.
public struct StepCompleted: Hashable, Sendable {
    public var node: NodeID
    public var attempt: UInt32
    public var token: FencingToken
    public init(node: NodeID, attempt: UInt32, token: FencingToken) {
        self.node = node
        self.attempt = attempt
        self.token = token
    }
}

/// The lease holder reported the step failed.
public struct StepFailed: Hashable, Sendable {
    public var node: NodeID
    public var attempt: UInt32
    public var token: FencingToken
    public var reason: String
    public var retryable: Bool
    public init(node: NodeID, attempt: UInt32, token: FencingToken, reason: String, retryable: Bool) {
        self.node = node
        self.attempt = attempt
        self.token = token
        self.reason = reason
        self.retryable = retryable
    }
}
