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
        /// The write may or may not have happened (never safe to retry blindly).
        case outcomeUnknown

        public var httpStatus: Int {
            switch self {
            case .badRequest: 400
            case .unauthenticated: 401
            case .forbidden: 403
            case .notFound: 404
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
        case .requesterCannotApprove, .notAnApprover: .forbidden
        default: .conflict
        }
    }
}
