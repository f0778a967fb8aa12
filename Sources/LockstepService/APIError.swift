import LockstepCore
import LockstepEngine
import LockstepStore
import LockstepWire

/// Every error the API returns: a stable code, a sentence a person can act on, and the HTTP status
/// (the gRPC status follows from the same classification).
public struct APIError: Error, Hashable, Sendable, CustomStringConvertible {
    public var errorCode: ErrorCode
    public var message: String
    /// Follows from the code, so the two never disagree.
    public var kind: Kind { Kind(errorCode) }

    /// `errorCode` as it travels.
    public var code: String { errorCode.rawValue }

    public enum Kind: Hashable, Sendable {
        case badRequest, unauthenticated, forbidden, notFound, conflict, alreadyExists, tooLarge, unsupportedMediaType, overloaded, unavailable
        /// The request did not arrive in time (its body trickled in).
        case requestTimeout
        /// The write may or may not have happened (never safe to retry blindly).
        case outcomeUnknown

        /// What `code` says about the request: the HTTP status and gRPC status follow from it.
        public init(_ code: ErrorCode) {
            switch code {
            case .malformedRequest, .invalidArgument, .invalidIdentifier, .invalidStream, .invalidPlan, .invalidRequest, .clientGone, .outOfRange,
                 .unknownTimeZone:
                self = .badRequest
            case .unauthenticated:
                self = .unauthenticated
            case .permissionDenied, .requesterCannotApprove, .notAnApprover, .notLeaseHolder, .csrfRejected, .breakGlassNotAdmin:
                self = .forbidden
            case .migrationNotFound, .unknownNode, .serviceNotLeased, .routeNotFound, .notFound, .freezeNotFound, .logArchived:
                self = .notFound
            case .migrationAlreadyExists, .alreadyExists, .freezeExists:
                self = .alreadyExists
            case .nodeNotReady, .awaitingApproval, .gateRejected, .retryNotDue, .migrationNotRunning, .migrationSettled, .noActiveLease,
                 .staleFencingToken, .alreadyPaused, .notPaused, .noGate, .alreadyDecided, .gateClosed, .gateNotOpen, .noRollbackDue,
                 .noDeadlinePassed, .stepTimeoutNotPassed, .notWaitingForAgent, .planNotRegistered, .waitingForServiceLease,
                 .noServiceLeaseRequest, .serviceLeaseNotHeld, .serviceLeaseInUse, .noAnalysis, .notBaking, .tooManySamples, .bakeNotOver,
                 .frozen, .outsideWindow, .checkFailed, .nothingToOverride, .versionConflict, .failedPrecondition, .aborted:
                self = .conflict
            case .bodyTooLarge, .resourceExhausted:
                self = .tooLarge
            case .unsupportedMediaType:
                self = .unsupportedMediaType
            case .migrationOverloaded, .logOverloaded, .storageBusy, .tooManyWatchers, .tooManySessions, .tooManyHistoryReads:
                self = .overloaded
            case .requestTimeout, .deadlineExceeded:
                self = .requestTimeout
            case .commitOutcomeUnknown:
                self = .outcomeUnknown
            case .writesStopped, .notWriter, .logCorrupted, .storageFull, .storageUnavailable, .shuttingDown, .unavailable, .cancelled, .unknown,
                 .internalError, .unimplemented, .dataLoss:
                self = .unavailable
            }
        }

        public var httpStatus: Int {
            switch self {
            case .badRequest: 400
            case .unauthenticated: 401
            case .forbidden: 403
            case .notFound: 404
            case .requestTimeout: 408
            case .conflict, .alreadyExists: 409
            case .tooLarge: 413
            case .unsupportedMediaType: 415
            case .overloaded: 429
            case .unavailable: 503
            case .outcomeUnknown: 500
            }
        }
    }

    /// With `not_writer`: the writer's address (gRPC `HOST:PORT`), sent as the `lockstep-writer` header
    /// or trailer so a client can go there (empty while no coordinator holds the leadership lease).
    public var writer: String?

    /// `message` may quote what a client sent: its control characters are written escaped (`quotable`),
    /// here, for every answer, so no site that quotes has to remember it.
    public init(_ code: ErrorCode, _ message: String) {
        self.errorCode = code
        self.message = message.quotable
    }

    /// A write refused by a replica, naming the writer it should go to.
    public static func notWriter(_ message: String, writer: String) -> APIError {
        var error = APIError(.notWriter, message)
        error.writer = writer
        return error
    }

    public var description: String { "\(code): \(message)" }

    /// The wire form of the error (the JSON side's body).
    public var body: Lockstep_V1_ErrorBody { .with { $0.code = code; $0.message = message } }

    public static func malformed(_ what: String) -> APIError { APIError(.malformedRequest, what) }

    /// Checks an identifier from a request (migration, node, service, plan, agent) before it is looked up
    /// or echoed: required, at most `CoreLimits.identifierBytesMax` bytes, of the allowed characters. An
    /// error names the field and never echoes more than a bounded prefix of the value.
    public static func checkIdentifier(_ value: String, _ field: String) throws(APIError) {
        if value.isEmpty { throw invalid("\(field) is required") }
        if let problem = MigrationState.identifierProblem(value, what: field) {
            // The core's sentence quotes the value only when it is within the length limit.
            throw APIError(.invalidIdentifier, problem)
        }
    }

    /// Checks a history `stream` filter: empty (every stream), `migration/ID`, `plan/NAME` or `freeze/ID`.
    public static func checkStream(_ stream: String) throws(APIError) {
        if stream.isEmpty { return }
        if let id = RecordedEvent.migration(ofStream: stream) { return try checkIdentifier(id.rawValue, "stream's migration id") }
        if let plan = RecordedPlanEvent.plan(ofStream: stream) { return try checkIdentifier(plan, "stream's plan name") }
        if let freeze = RecordedFreezeEvent.freeze(ofStream: stream) { return try checkIdentifier(freeze, "stream's freeze id") }
        throw APIError(.invalidStream, "stream \"\(stream.prefix(64))\" is not migration/ID, plan/NAME or freeze/ID")
    }
    public static func invalid(_ what: String) -> APIError { APIError(.invalidArgument, what) }

    /// Runs a read of the log, answering its failure as the storage error it is.
    package static func reading<T>(_ read: () async throws(EventLogError) -> T) async throws(APIError) -> T {
        do { return try await read() } catch { throw APIError(.storage(error)) }
    }

    /// The API error for a coordinator's refusal or failure.
    public init(_ error: CommandError) {
        switch error {
        case .rejected(let rejection):
            self.init(rejection.errorCode, rejection.message)
        case .storage(.invalidRequest(let why)):
            // The log's refusal of a malformed append: the request's fault, said as the API says it.
            self.init(.invalidArgument, why)
        case .storage(let storage):
            // The sentence without the code in front (the code travels on its own).
            self.init(storage.errorCode, Self.withoutCode(storage.description, storage.code))
        case .overloaded:
            self.init(error.errorCode, Self.withoutCode(error.description, error.code))
        }
    }

    package static func withoutCode(_ description: String, _ code: String) -> String {
        description.hasPrefix(code + ": ") ? String(description.dropFirst(code.count + 2)) : description
    }

}
