/// What can go wrong in the log. Each case has a stable `code` and a sentence a person can act on.
public enum EventLogError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The stream was not at the expected version; nothing was appended.
    case versionConflict(stream: String, expected: UInt64, actual: UInt64)
    /// The stored history is broken at `position` (the first bad sequence).
    case corrupted(position: UInt64, reason: String)
    /// An I/O or sync error happened earlier: the log accepts no more writes until restarted and checked.
    case writesStopped(reason: String)
    /// The commit of this append failed with an I/O error: it may or may not be in the log. Writes have stopped.
    case outcomeUnknown(reason: String)
    /// Too many appends are waiting for a commit; nothing was appended. Retry later.
    case overloaded(String)
    /// The disk is full; nothing was appended, reads keep working.
    case storageFull
    /// Another writer holds the database lock past the busy timeout; nothing was appended.
    case busy
    /// The request breaks a limit or is malformed; nothing was appended.
    case invalidRequest(String)
    /// The database could not be opened or read.
    case unavailable(String)
    /// The events asked for (through `through`) were moved out of the live log into archive segments
    /// (`lockstep history archive`, docs/history.md): read them from the segments, or from `through` on.
    case archived(through: UInt64)

    public var code: String {
        switch self {
        case .versionConflict: "version_conflict"
        case .corrupted: "log_corrupted"
        case .writesStopped: "writes_stopped"
        case .outcomeUnknown: "commit_outcome_unknown"
        case .overloaded: "log_overloaded"
        case .storageFull: "storage_full"
        case .busy: "storage_busy"
        case .invalidRequest: "invalid_request"
        case .unavailable: "storage_unavailable"
        case .archived: "log_archived"
        }
    }

    public var description: String {
        switch self {
        case .versionConflict(let stream, let expected, let actual):
            "\(code): stream \(stream) is at version \(actual), the append expected \(expected); reload and retry"
        case .corrupted(let position, let reason):
            "\(code): the log is corrupted at sequence \(position): \(reason)"
        case .writesStopped(let reason) where reason.hasPrefix("deposed"):
            "\(code): this coordinator no longer writes (\(reason)); it stands by, and clients go to the writer"
        case .writesStopped(let reason):
            "\(code): the log stopped accepting writes after a storage error (\(reason)); restart after checking the storage (the disk, or the PostgreSQL database)"
        case .outcomeUnknown(let reason):
            "\(code): the commit failed with a storage error (\(reason)) and may or may not have reached the disk; writes have stopped. Restart and read the log to find out"
        case .overloaded(let why):
            "\(code): \(why); nothing was written. Retry later"
        case .storageFull:
            "\(code): the disk is full, or the log reached its size quota (--log-bytes-max); nothing was written. Free space (or raise the quota) and retry"
        case .busy:
            "\(code): another process holds the database write lock; nothing was written"
        case .invalidRequest(let why):
            "\(code): \(why)"
        case .unavailable(let why):
            "\(code): \(why)"
        case .archived(let through):
            "\(code): events 1 to \(through) were archived out of the live log; read them from the archive segments "
                + "(`lockstep history verify|replay --archive FILE …`), or read from event \(through) on"
        }
    }
}
