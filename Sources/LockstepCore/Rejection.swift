/// Why `decide` refused a command. Each case has a stable `code` and a sentence a person can act on.
public enum Rejection: Error, Hashable, Sendable {
    case migrationAlreadyExists(MigrationID)
    case migrationNotFound(MigrationID)
    case invalidPlan(String)
    case invalidArgument(String)
    case unknownNode(NodeID)
    case nodeNotReady(NodeID, status: NodeStatus, waitingOn: [NodeID])
    case awaitingApproval(NodeID, approvals: Int, needed: Int)
    case gateRejected(NodeID, by: String)
    case retryNotDue(NodeID, retryAt: Instant)
    case migrationNotRunning(MigrationID, status: MigrationStatus)
    case migrationSettled(MigrationID, status: MigrationStatus)
    case noActiveLease(NodeID)
    case staleFencingToken(NodeID, current: FencingToken, presented: FencingToken)
    case alreadyPaused(MigrationID)
    case notPaused(MigrationID, status: MigrationStatus)
    case noGate(NodeID)
    case requesterCannotApprove(NodeID, approver: String)
    case notAnApprover(NodeID, approver: String, groups: [String])
    case alreadyDecided(NodeID, approver: String)
    case gateClosed(NodeID, status: NodeStatus)
    case gateNotOpen(NodeID, waitingOn: [NodeID])
    case noRollbackDue(NodeID, next: NodeID?)
    case noDeadlinePassed(MigrationID)
    case stepTimeoutNotPassed(NodeID)
    case notWaitingForAgent(NodeID)
    case notLeaseHolder(NodeID, holder: String, reporter: String)
    case planNotRegistered(String, version: UInt64)
    case waitingForServices(NodeID, waits: [ServiceWait])
    case noServiceLeaseRequest(NodeID)
    case servicesNotHeld(NodeID)
    case serviceLeaseInUse(NodeID, token: FencingToken, expiresAt: Instant)
    case noAnalysis(NodeID)
    case notBaking(NodeID, status: String)
    case tooManySamples(NodeID, limit: Int)
    case bakeNotOver(NodeID, until: Instant?)
    case serviceNotLeased(String)
    case frozen(NodeID, freeze: String, until: Instant?)
    case outsideWindow(NodeID, windows: String, opensAt: Instant?)
    case unknownTimeZone([String])
    case checkFailed(NodeID, check: String, evidence: String, recheckAt: Instant)
    case freezeExists(String)
    case freezeNotFound(String)
    case breakGlassNotAdmin(String)
    case nothingToOverride(NodeID, scope: BreakGlassScope, why: String)

    /// The stable, machine-readable code of this rejection.
    public var errorCode: ErrorCode {
        switch self {
        case .migrationAlreadyExists: .migrationAlreadyExists
        case .migrationNotFound: .migrationNotFound
        case .invalidPlan: .invalidPlan
        case .invalidArgument: .invalidArgument
        case .unknownNode: .unknownNode
        case .nodeNotReady: .nodeNotReady
        case .awaitingApproval: .awaitingApproval
        case .gateRejected: .gateRejected
        case .retryNotDue: .retryNotDue
        case .migrationNotRunning: .migrationNotRunning
        case .migrationSettled: .migrationSettled
        case .noActiveLease: .noActiveLease
        case .staleFencingToken: .staleFencingToken
        case .alreadyPaused: .alreadyPaused
        case .notPaused: .notPaused
        case .noGate: .noGate
        case .requesterCannotApprove: .requesterCannotApprove
        case .notAnApprover: .notAnApprover
        case .alreadyDecided: .alreadyDecided
        case .gateClosed: .gateClosed
        case .gateNotOpen: .gateNotOpen
        case .noRollbackDue: .noRollbackDue
        case .noDeadlinePassed: .noDeadlinePassed
        case .stepTimeoutNotPassed: .stepTimeoutNotPassed
        case .notWaitingForAgent: .notWaitingForAgent
        case .notLeaseHolder: .notLeaseHolder
        case .planNotRegistered: .planNotRegistered
        case .waitingForServices: .waitingForServiceLease
        case .noServiceLeaseRequest: .noServiceLeaseRequest
        case .servicesNotHeld: .serviceLeaseNotHeld
        case .serviceLeaseInUse: .serviceLeaseInUse
        case .serviceNotLeased: .serviceNotLeased
        case .noAnalysis: .noAnalysis
        case .notBaking: .notBaking
        case .tooManySamples: .tooManySamples
        case .bakeNotOver: .bakeNotOver
        case .frozen: .frozen
        case .outsideWindow: .outsideWindow
        case .unknownTimeZone: .unknownTimeZone
        case .checkFailed: .checkFailed
        case .freezeExists: .freezeExists
        case .freezeNotFound: .freezeNotFound
        case .breakGlassNotAdmin: .breakGlassNotAdmin
        case .nothingToOverride: .nothingToOverride
        }
    }

    /// `errorCode` as it travels.
    public var code: String { errorCode.rawValue }

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
        case .awaitingApproval(let node, let approvals, let needed):
            "node \(node) is awaiting approval (\(approvals) of \(needed))"
        case .gateRejected(let node, let by): "node \(node) is blocked: its gate was rejected by \(by); abort the migration to roll back"
        case .retryNotDue(let node, let retryAt): "node \(node) may be retried from \(retryAt) on (backoff)"
        case .migrationNotRunning(let id, let status): "migration \(id) is \(status.rawValue); it hands out no steps now"
        case .migrationSettled(let id, let status): "migration \(id) has already \(status.rawValue) and accepts no more commands"
        case .noActiveLease(let node): "node \(node) has no active step lease"
        case .staleFencingToken(let node, let current, let presented):
            "lease \(node) is at token \(current), report carried \(presented)"
        case .alreadyPaused(let id): "migration \(id) is already paused"
        case .notPaused(let id, let status): "migration \(id) is \(status.rawValue), not paused"
        case .noGate(let node): "node \(node) has no approval gate"
        case .requesterCannotApprove(let node, let approver):
            "\(approver) started this migration and cannot approve or reject its gate on \(node); ask another owner"
        case .notAnApprover(let node, let approver, let groups):
            "\(approver) is not in an owner group that may approve \(node) (\(groups.joined(separator: ", ")))"
        case .alreadyDecided(let node, let approver): "\(approver) has already decided on \(node)'s gate"
        case .gateClosed(let node, let status): "node \(node) is \(status.rawValue); its gate no longer takes decisions"
        case .gateNotOpen(let node, let waitingOn):
            "the gate on \(node) opens when \(waitingOn.map(\.rawValue).joined(separator: ", ")) succeeded; decide on that evidence then"
        case .noRollbackDue(let node, let next):
            next.map { "node \(node) is not next to roll back; \($0) is" } ?? "node \(node) is not due for a rollback step (it is rolling back or done)"
        case .noDeadlinePassed(let id): "no deadline of migration \(id) has passed"
        case .stepTimeoutNotPassed(let node): "node \(node) has no step running past its start_to_close"
        case .notLeaseHolder(let node, let holder, let reporter):
            "the lease on \(node) was granted to \(holder); \(reporter) may not report on it (it holds the current token, but not the lease)"
        case .notWaitingForAgent(let node): "node \(node) is not waiting for an agent to take its step, or has no schedule_to_start"
        case .planNotRegistered(let name, let version):
            "plan \(name)@\(version) with this content is not applied; apply it (lockstep plan apply) and start from its version"
        case .waitingForServices(let node, let waits):
            waits.isEmpty
                ? "node \(node) is waiting for the leases of its services"
                : "node \(node) is waiting for its services: \(waits.map(\.description).joined(separator: "; "))"
        case .noServiceLeaseRequest(let node): "node \(node) has not asked for its services (it is not ready, or already holds them)"
        case .servicesNotHeld(let node): "node \(node) holds no service leases"
        case .serviceLeaseInUse(let node, let token, let expiresAt):
            "a step of node \(node) is running under token \(token) until \(expiresAt) at the latest; wait for it to end or expire, or abort the migration, then release"
        case .serviceNotLeased(let service): "nobody holds the lease of service \(service)"
        case .noAnalysis(let node): "node \(node) has no analysis; its plan judges no metrics"
        case .notBaking(let node, let status):
            "node \(node) is \(status), not baking; samples count only during a bake (after a stage is set, before it is judged)"
        case .tooManySamples(let node, let limit): "node \(node) already has \(limit) samples for this bake (the limit); send summaries instead"
        case .bakeNotOver(let node, let until):
            until.map { "node \(node) bakes until \($0)" } ?? "node \(node) is not baking"
        case .frozen(let node, let freeze, let until):
            "node \(node)'s forward step waits: freeze \(freeze) is in force \(until.map { "until \($0)" } ?? "until it is ended")"
                + " (lockstep freeze list); rollback steps are not held"
        case .outsideWindow(let node, let windows, let opensAt):
            "node \(node)'s forward step waits for its change window (\(windows)): "
                + (opensAt.map { "it opens at \($0)" } ?? "they are not open together within \(CoreLimits.windowSearchDays) days; "
                    + "fix the plan's windows, or an admin may override them for this node (lockstep migration break-glass ... --scope window)") + "; rollback steps are not held"
        case .unknownTimeZone(let zones):
            "this coordinator's time-zone database does not know \(zones.joined(separator: ", ")); name an IANA zone such as Europe/Berlin, or UTC"
        case .checkFailed(let node, let check, let evidence, let recheckAt):
            "node \(node)'s forward step waits: its check \(check) failed (\(evidence.isEmpty ? "no evidence given" : evidence)); it runs again at \(recheckAt)"
        case .freezeExists(let id): "freeze \(id) already exists; choose another id"
        case .freezeNotFound(let id): "no freeze \(id) is in force or declared (it never was, or it has ended)"
        case .breakGlassNotAdmin(let who): "\(who) may not break the glass: only an admin may override a freeze, a window or a bake"
        case .nothingToOverride(let node, let scope, let why): "node \(node) has no \(scope.rawValue) to override: \(why)"
        }
    }
}

extension Rejection: CustomStringConvertible {
    public var description: String { "\(code): \(message)" }
}
