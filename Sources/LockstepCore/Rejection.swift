/// Why `decide` refused a command. Each case has a stable `code` and a sentence a person can act on.
public enum Rejection: Error, Hashable, Sendable {
    case migrationAlreadyExists(MigrationID)
    case migrationNotFound(MigrationID)
    case invalidPlan(String)
    case invalidArgument(String)
    case unknownNode(NodeID)
    case nodeNotReady(NodeID, status: NodeStatus, waitingOn: [NodeID])
    case migrationNotRunning(MigrationID, status: MigrationStatus)
    case migrationSettled(MigrationID, status: MigrationStatus)
    case noActiveLease(NodeID)
    case staleFencingToken(NodeID, current: FencingToken, presented: FencingToken)
    case alreadyPaused(MigrationID)
    case notPaused(MigrationID, status: MigrationStatus)

    /// The stable, machine-readable code of this rejection.
    public var code: String {
        switch self {
        case .migrationAlreadyExists: "migration_already_exists"
        case .migrationNotFound: "migration_not_found"
        case .invalidPlan: "invalid_plan"
        case .invalidArgument: "invalid_argument"
        case .unknownNode: "unknown_node"
        case .nodeNotReady: "node_not_ready"
        case .migrationNotRunning: "migration_not_running"
        case .migrationSettled: "migration_settled"
        case .noActiveLease: "no_active_lease"
        case .staleFencingToken: "stale_fencing_token"
        case .alreadyPaused: "already_paused"
        case .notPaused: "not_paused"
        }
    }

    /// What went wrong, in a sentence that names the things involved.
    public var message: String {
        switch self {
        case .migrationAlreadyExists(let id): "migration \(id) already exists; choose another id"
        case .migrationNotFound(let id): "migration \(id) does not exist"
        case .invalidPlan(let why): "the plan is invalid: \(why)"
        case .invalidArgument(let why): why
        case .unknownNode(let node): "node \(node) is not in this migration's plan"
        case .nodeNotReady(let node, let status, let waitingOn):
            waitingOn.isEmpty
                ? "node \(node) is \(status.rawValue), not ready for a new step"
                : "node \(node) is waiting on \(waitingOn.map(\.rawValue).joined(separator: ", "))"
        case .migrationNotRunning(let id, let status): "migration \(id) is \(status.rawValue); resume it before handing out steps"
        case .migrationSettled(let id, let status): "migration \(id) has already \(status.rawValue) and accepts no more commands"
        case .noActiveLease(let node): "node \(node) has no active step lease"
        case .staleFencingToken(let node, let current, let presented):
            "lease \(node) is at token \(current), report carried \(presented)"
        case .alreadyPaused(let id): "migration \(id) is already paused"
        case .notPaused(let id, let status): "migration \(id) is \(status.rawValue), not paused"
        }
    }
}

extension Rejection: CustomStringConvertible {
    public var description: String { "\(code): \(message)" }
}
