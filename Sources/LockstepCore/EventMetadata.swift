/// Who or what caused a change, as recorded with every event.
public enum TriggeredBy: String, Hashable, Sendable, CaseIterable {
    case user, coordinator, metric, agent, deadline, internalError = "internal_error"
}

/// The authenticated principal behind an event: attested by the server, never taken from a request body.
public struct Actor: Hashable, Sendable, CustomStringConvertible {
    /// "user", "agent", "coordinator" or "system".
    public var kind: String
    public var id: String
    public init(kind: String, id: String) {
        self.kind = kind
        self.id = id
    }
    /// The coordinator itself (timers, automatic decisions).
    public static let coordinator = Actor(kind: "coordinator", id: "lockstep")
    public var description: String { "\(kind):\(id)" }
}

/// Everything recorded with an event besides its payload and its place in the log.
public struct EventMetadata: Hashable, Sendable {
    public var recordedAt: Instant
    public var actor: Actor
    public var triggeredBy: TriggeredBy
    /// The command or event that caused this one ("" when none).
    public var causationID: String
    /// Ties together every event of one request or workflow ("" when none).
    public var correlationID: String

    public init(recordedAt: Instant, actor: Actor, triggeredBy: TriggeredBy, causationID: String = "", correlationID: String = "") {
        self.recordedAt = recordedAt
        self.actor = actor
        self.triggeredBy = triggeredBy
        self.causationID = causationID
        self.correlationID = correlationID
    }
}

/// One migration event with its stream position and metadata: what becomes one record in the log.
public struct RecordedEvent: Hashable, Sendable {
    public var migration: MigrationID
    /// Position in the migration's stream, from 1.
    public var streamVersion: UInt64
    public var metadata: EventMetadata
    public var event: MigrationEvent

    public init(migration: MigrationID, streamVersion: UInt64, metadata: EventMetadata, event: MigrationEvent) {
        self.migration = migration
        self.streamVersion = streamVersion
        self.metadata = metadata
        self.event = event
    }

    /// The log stream of migration `id`.
    public static func stream(of id: MigrationID) -> String { "migration/\(id.rawValue)" }

    /// The migration whose stream is `stream`, or nil when it is not a migration stream.
    public static func migration(ofStream stream: String) -> MigrationID? {
        let prefix = "migration/".utf8
        guard stream.utf8.count > prefix.count, stream.utf8.starts(with: prefix) else { return nil }
        return MigrationID(String(decoding: stream.utf8.dropFirst(prefix.count), as: UTF8.self))
    }
}
