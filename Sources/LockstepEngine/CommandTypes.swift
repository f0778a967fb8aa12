import LockstepCore
import LockstepStore
import LockstepWire

// What the coordinator is asked with and answers: the command context, its errors, and its results.

/// Who is asking, and why: recorded with every event a command produces.
public struct CommandContext: Hashable, Sendable {
    /// The authenticated principal (never taken from a request body).
    public var actor: Actor
    public var triggeredBy: TriggeredBy
    public var causationID: String
    public var correlationID: String

    public init(actor: Actor, triggeredBy: TriggeredBy, causationID: String = "", correlationID: String = "") {
        self.actor = actor
        self.triggeredBy = triggeredBy
        self.causationID = causationID
        self.correlationID = correlationID
    }
}

/// Why a command did not take effect.
public enum CommandError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The core refused it; nothing was appended.
    case rejected(Rejection)
    /// The log refused or failed the append; nothing was acknowledged (see the error for whether
    /// anything may have been written).
    case storage(EventLogError)
    /// Too many commands are waiting on this stream (a migration or a plan); nothing was done. Retry later.
    case overloaded(stream: String, waitingMax: Int)

    public var errorCode: ErrorCode {
        switch self {
        case .rejected(let rejection): rejection.errorCode
        case .storage(let error): error.errorCode
        case .overloaded: .migrationOverloaded
        }
    }

    /// `errorCode` as it travels.
    public var code: String { errorCode.rawValue }

    public var description: String {
        switch self {
        case .rejected(let rejection): rejection.description
        case .storage(let error): error.description
        case .overloaded(let stream, let waitingMax):
            "migration_overloaded: \(waitingMax) commands are already waiting on \(stream); retry later"
        }
    }
}

extension EventLogError {
    /// The log's error in the API's list of codes (the same strings as `code`, which the log, knowing
    /// nothing of the API, spells itself; `ErrorCodeTests` checks they agree).
    public var errorCode: ErrorCode {
        switch self {
        case .versionConflict: .versionConflict
        case .corrupted: .logCorrupted
        case .writesStopped: .writesStopped
        case .outcomeUnknown: .commitOutcomeUnknown
        case .overloaded: .logOverloaded
        case .storageFull: .storageFull
        case .busy: .storageBusy
        case .invalidRequest: .invalidRequest
        case .unavailable: .storageUnavailable
        case .archived: .logArchived
        }
    }
}

/// What an accepted command recorded.
public struct CommandResult: Hashable, Sendable {
    public var events: [RecordedEvent]
    /// Where the events landed in the log; nil when the command recorded nothing (a heartbeat).
    public var receipt: AppendReceipt?
}

/// A monotonic clock in nanoseconds: never jumps, unrelated to wall time. Lease TTLs run on it.
public typealias MonotonicClock = @Sendable () -> UInt64
