/// Every error code Lockstep's API, client and agent speak: one list, so a code is never a literal
/// that can drift (docs/api.md, Errors, lists each; `ErrorCodeTests` checks that it does).
///
/// The raw value is the code on the wire (`ErrorBody.code`, the gRPC `lockstep-error-code` metadata)
/// and is stable: a code is never renamed or reused.
public enum ErrorCode: String, CaseIterable, Hashable, Sendable {
    // The core refused the command (`Rejection`): nothing was appended.
    case migrationAlreadyExists = "migration_already_exists"
    case migrationNotFound = "migration_not_found"
    case invalidPlan = "invalid_plan"
    case invalidArgument = "invalid_argument"
    case unknownNode = "unknown_node"
    case nodeNotReady = "node_not_ready"
    case awaitingApproval = "awaiting_approval"
    case gateRejected = "gate_rejected"
    case retryNotDue = "retry_not_due"
    case migrationNotRunning = "migration_not_running"
    case migrationSettled = "migration_settled"
    case noActiveLease = "no_active_lease"
    case staleFencingToken = "stale_fencing_token"
    case alreadyPaused = "already_paused"
    case notPaused = "not_paused"
    case noGate = "no_gate"
    case requesterCannotApprove = "requester_cannot_approve"
    case notAnApprover = "not_an_approver"
    case alreadyDecided = "already_decided"
    case gateClosed = "gate_closed"
    case gateNotOpen = "gate_not_open"
    case noRollbackDue = "no_rollback_due"
    case noDeadlinePassed = "no_deadline_passed"
    case stepTimeoutNotPassed = "step_timeout_not_passed"
    case notWaitingForAgent = "not_waiting_for_agent"
    case notLeaseHolder = "not_lease_holder"
    case planNotRegistered = "plan_not_registered"
    case waitingForServiceLease = "waiting_for_service_lease"
    case noServiceLeaseRequest = "no_service_lease_request"
    case serviceLeaseNotHeld = "service_lease_not_held"
    case serviceLeaseInUse = "service_lease_in_use"
    case serviceNotLeased = "service_not_leased"
    case noAnalysis = "no_analysis"
    case notBaking = "not_baking"
    case tooManySamples = "too_many_samples"
    case bakeNotOver = "bake_not_over"
    case frozen = "frozen"
    case outsideWindow = "outside_window"
    case unknownTimeZone = "unknown_time_zone"
    case checkFailed = "check_failed"
    case freezeExists = "freeze_exists"
    case freezeNotFound = "freeze_not_found"
    case breakGlassNotAdmin = "break_glass_not_admin"
    case nothingToOverride = "nothing_to_override"

    // The log (`EventLogError`) and the coordinator's own limits.
    case versionConflict = "version_conflict"
    case logCorrupted = "log_corrupted"
    case writesStopped = "writes_stopped"
    case commitOutcomeUnknown = "commit_outcome_unknown"
    case logOverloaded = "log_overloaded"
    case storageFull = "storage_full"
    case storageBusy = "storage_busy"
    case invalidRequest = "invalid_request"
    case storageUnavailable = "storage_unavailable"
    case migrationOverloaded = "migration_overloaded"
    /// Events asked for were archived out of the live log (`lockstep history archive`, docs/history.md).
    case logArchived = "log_archived"

    // The API's edge: requests, principals and per-client limits.
    case malformedRequest = "malformed_request"
    case invalidIdentifier = "invalid_identifier"
    case invalidStream = "invalid_stream"
    case unauthenticated = "unauthenticated"
    case permissionDenied = "permission_denied"
    case unsupportedMediaType = "unsupported_media_type"
    case bodyTooLarge = "body_too_large"
    case requestTimeout = "request_timeout"
    case routeNotFound = "route_not_found"
    case tooManyWatchers = "too_many_watchers"
    /// A request made with the web console's session cookie without the session's CSRF token, or from
    /// another origin (docs/console.md).
    case csrfRejected = "csrf_rejected"
    /// A console sign-in while the server holds its most sessions.
    case tooManySessions = "too_many_sessions"
    /// Too many history calls that read the whole log run at once (overall, or for this principal).
    case tooManyHistoryReads = "too_many_history_reads"
    case shuttingDown = "shutting_down"
    /// A write sent to a replica (one of several coordinators on PostgreSQL that is not the writer): the
    /// answer names the writer's address (`lockstep-writer`), where the call goes instead.
    case notWriter = "not_writer"
    case clientGone = "client_gone"

    // The transport, as the client sees it when no Lockstep code came back (the server was not reached,
    // or the call ended before it answered): the gRPC status, in snake case.
    case unavailable = "unavailable"
    case deadlineExceeded = "deadline_exceeded"
    case cancelled = "cancelled"
    case resourceExhausted = "resource_exhausted"
    case unknown = "unknown"
    case internalError = "internal"
    case unimplemented = "unimplemented"
    case failedPrecondition = "failed_precondition"
    case aborted = "aborted"
    case outOfRange = "out_of_range"
    case dataLoss = "data_loss"
    case notFound = "not_found"
    case alreadyExists = "already_exists"

    /// "Not now" rather than "no": the same call, repeated unchanged later, may succeed. Agents and the
    /// CLI retry these with back-off and give up on everything else. A report repeated after
    /// `commit_outcome_unknown` is safe: if the first was recorded after all, its fencing token refuses
    /// the second (`stale_fencing_token`).
    public var isTransient: Bool {
        switch self {
        case .unavailable, .shuttingDown, .notWriter, .deadlineExceeded, .migrationOverloaded, .logOverloaded, .storageBusy, .storageUnavailable,
             .commitOutcomeUnknown, .tooManyWatchers, .tooManySessions, .tooManyHistoryReads, .requestTimeout:
            true
        default:
            false
        }
    }

    /// Codes only a client makes up (from a gRPC status without a Lockstep code); the server never sends them.
    public var isTransportOnly: Bool {
        switch self {
        case .unavailable, .deadlineExceeded, .cancelled, .resourceExhausted, .unknown, .internalError, .unimplemented,
             .failedPrecondition, .aborted, .outOfRange, .dataLoss, .notFound, .alreadyExists:
            true
        default:
            false
        }
    }
}
