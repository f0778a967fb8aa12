import LockstepCore
import SwiftProtobuf

/// Why stored bytes could not be turned back into a domain event.
public enum RecordDecodingError: Error, Hashable, Sendable, CustomStringConvertible {
    case malformed(String)
    case notAMigrationStream(String)
    case missingPayload
    case invalidField(String)

    public var description: String {
        switch self {
        case .malformed(let why): "record bytes are not a valid EventRecord: \(why)"
        case .notAMigrationStream(let stream): "stream \"\(stream)\" is not a migration stream"
        case .missingPayload: "record has no payload"
        case .invalidField(let what): "record has an invalid \(what)"
        }
    }
}

/// Maps domain events to the bytes the log stores, and back.
public enum EventRecordCodec {
    /// The bytes to store for `event`. Stored bytes are hashed as they are; they are never re-encoded.
    public static func encode(_ event: RecordedEvent) -> [UInt8] {
        let record = wireRecord(event)
        // Serializing a message we built ourselves cannot fail: every string field is valid UTF-8 by construction.
        return (try? record.serializedBytes()) ?? []
    }

    /// The wire form of `event`.
    public static func wireRecord(_ event: RecordedEvent) -> Lockstep_V1_EventRecord {
        var record = Lockstep_V1_EventRecord()
        record.stream = RecordedEvent.stream(of: event.migration)
        record.streamVersion = event.streamVersion
        record.recordedAtMs = event.metadata.recordedAt.millisecondsSinceEpoch
        record.actor = .with { $0.kind = event.metadata.actor.kind; $0.id = event.metadata.actor.id }
        record.triggeredBy = Lockstep_V1_TriggeredBy(event.metadata.triggeredBy)
        record.causationID = event.metadata.causationID
        record.correlationID = event.metadata.correlationID
        record.payload = Lockstep_V1_EventPayload(event.event)
        return record
    }

    /// Parses stored bytes into their wire record.
    public static func decodeRecord(_ bytes: [UInt8]) throws(RecordDecodingError) -> Lockstep_V1_EventRecord {
        do {
            return try Lockstep_V1_EventRecord(serializedBytes: bytes)
        } catch {
            throw .malformed(String(describing: error))
        }
    }

    /// Parses stored bytes into a domain event, validating every field.
    public static func decode(_ bytes: [UInt8]) throws(RecordDecodingError) -> RecordedEvent {
        try domainEvent(try decodeRecord(bytes))
    }

    /// The domain event a wire record describes.
    public static func domainEvent(_ record: Lockstep_V1_EventRecord) throws(RecordDecodingError) -> RecordedEvent {
        guard let migration = RecordedEvent.migration(ofStream: record.stream) else { throw .notAMigrationStream(record.stream) }
        guard record.streamVersion >= 1 else { throw .invalidField("stream_version 0") }
        guard let triggeredBy = TriggeredBy(record.triggeredBy) else { throw .invalidField("triggered_by") }
        let metadata = EventMetadata(
            recordedAt: Instant(millisecondsSinceEpoch: record.recordedAtMs),
            actor: Actor(kind: record.actor.kind, id: record.actor.id), triggeredBy: triggeredBy,
            causationID: record.causationID, correlationID: record.correlationID)
        guard let kind = record.payload.kind else { throw .missingPayload }
        return RecordedEvent(migration: migration, streamVersion: record.streamVersion, metadata: metadata, event: try MigrationEvent(kind))
    }
}
