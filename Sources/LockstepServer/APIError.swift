import LockstepCore
import LockstepEngine
import LockstepStore
import LockstepWire

/// Every error the API returns: a stable code, a sentence a person can act on, and the HTTP status
/// (the gRPC status follows from the same classification).
public struct APIError: Error, Hashable, Sendable, CustomStringConvertible {
    public var code: String
    public var message: String
    public var kind: Kind

    public enum Kind: Hashable, Sendable {
        case badRequest, unauthenticated, forbidden, notFound, conflict, alreadyExists, tooLarge, unsupportedMediaType, overloaded, unavailable
        /// The request did not arrive in time (its body trickled in).
        case requestTimeout
        /// The write may or may not have happened (never safe to retry blindly).
        case outcomeUnknown

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

    public init(_ kind: Kind, code: String, _ message: String) {
        self.kind = kind
        self.code = code
        self.message = message
    }

    public var description: String { "\(code): \(message)" }

    /// The wire form of the error (the JSON side's body).
    public var body: Lockstep_V1_ErrorBody { .with { $0.code = code; $0.message = message } }

    public static func malformed(_ what: String) -> APIError { APIError(.badRequest, code: "malformed_request", what) }

    /// Checks an identifier from a request (migration, node, service, plan, agent) before it is looked up
    /// or echoed: required, at most `CoreLimits.identifierBytesMax` bytes, of the allowed characters. An
    /// error names the field and never echoes more than a bounded prefix of the value.
    public static func checkIdentifier(_ value: String, _ field: String) throws(APIError) {
        if value.isEmpty { throw invalid("\(field) is required") }
        if let problem = MigrationState.identifierProblem(value, what: field) {
            // The core's sentence quotes the value only when it is within the length limit.
            throw APIError(.badRequest, code: "invalid_identifier", problem)
        }
    }

    /// Checks a history `stream` filter: empty (every stream), `migration/ID` or `plan/NAME`.
    public static func checkStream(_ stream: String) throws(APIError) {
        if stream.isEmpty { return }
        if let id = RecordedEvent.migration(ofStream: stream) { return try checkIdentifier(id.rawValue, "stream's migration id") }
        if let plan = RecordedPlanEvent.plan(ofStream: stream) { return try checkIdentifier(plan, "stream's plan name") }
        throw APIError(.badRequest, code: "invalid_stream", "stream \"\(stream.prefix(64))\" is not migration/ID or plan/NAME")
    }
    public static func invalid(_ what: String) -> APIError { APIError(.badRequest, code: "invalid_argument", what) }

    /// The API error for a coordinator's refusal or failure.
    public init(_ error: CommandError) {
        switch error {
        case .rejected(let rejection):
            self.init(Self.kind(of: rejection), code: rejection.code, rejection.message)
        case .storage(let storage):
            // The sentence without the code in front (the code travels on its own).
            let sentence = Self.withoutCode(storage.description, storage.code)
            switch storage {
            case .overloaded, .busy:
                self.init(.overloaded, code: storage.code, sentence)
            case .invalidRequest(let why):
                self.init(.badRequest, code: "invalid_argument", why)
            case .versionConflict:
                self.init(.conflict, code: storage.code, sentence)
            case .outcomeUnknown:
                self.init(.outcomeUnknown, code: storage.code, sentence)
            default:
                self.init(.unavailable, code: storage.code, sentence)
            }
        case .overloaded:
            self.init(.overloaded, code: error.code, Self.withoutCode(error.description, error.code))
        }
    }

    static func withoutCode(_ description: String, _ code: String) -> String {
        description.hasPrefix(code + ": ") ? String(description.dropFirst(code.count + 2)) : description
    }

    static func kind(of rejection: Rejection) -> Kind {
        switch rejection {
        case .migrationAlreadyExists: .alreadyExists
        case .migrationNotFound, .unknownNode, .serviceNotLeased: .notFound
        case .invalidArgument, .invalidPlan: .badRequest
        case .requesterCannotApprove, .notAnApprover, .notLeaseHolder: .forbidden
        default: .conflict
        }
    }
}
