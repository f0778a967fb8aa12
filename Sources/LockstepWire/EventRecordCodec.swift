import Foundation
import LockstepCore
import SwiftProtobuf

/// Why stored bytes could not be turned back into a domain event.
public enum RecordDecodingError: Error, Hashable, Sendable, CustomStringConvertible {
    case malformed(String)
    case notAMigrationStream(String)
    case payloadDoesNotFitStream(stream: String, payload: String)
    case missingPayload
    case invalidField(String)

    public var description: String {
        switch self {
        case .malformed(let why): "record bytes are not a valid EventRecord: \(why)"
        case .notAMigrationStream(let stream): "stream \"\(stream)\" is neither a migration nor a plan stream"
        case .payloadDoesNotFitStream(let stream, let payload): "a \(payload) payload cannot be in stream \(stream)"
        case .missingPayload: "record has no payload"
        case .invalidField(let what): "record has an invalid \(what)"
        }
    }
}

/// Why a domain event could not be turned into bytes to store (SwiftProtobuf refused to serialize it).
public struct RecordEncodingError: Error, Hashable, Sendable, CustomStringConvertible {
    public var reason: String
    public var description: String { "the event could not be encoded: \(reason)" }
}

/// Maps domain events to the bytes the log stores, and back.
public enum EventRecordCodec {
    /// The bytes to store for `record`. Stored bytes are hashed as they are; they are never re-encoded.
    /// Serializing a message built here should not fail (proto3, no `Any`, every string valid UTF-8 by
    /// construction); if SwiftProtobuf ever refuses, the append is refused with the reason, never given
    /// empty bytes to store.
    public static func encode(_ record: LogRecord) throws(RecordEncodingError) -> [UInt8] {
        do { return try wireRecord(record).serializedBytes() } catch { throw RecordEncodingError(reason: "\(error)") }
    }

    /// The bytes to store for a migration event.
    public static func encode(_ event: RecordedEvent) throws(RecordEncodingError) -> [UInt8] { try encode(.migration(event)) }

    /// The bytes to store for a plan event.
    public static func encode(_ event: RecordedPlanEvent) throws(RecordEncodingError) -> [UInt8] { try encode(.plan(event)) }

    /// The wire form of any record.
    public static func wireRecord(_ record: LogRecord) -> Lockstep_V1_EventRecord {
        var wire = Lockstep_V1_EventRecord()
        wire.stream = record.stream
        wire.streamVersion = record.streamVersion
        let metadata = record.metadata
        wire.recordedAtMs = metadata.recordedAt.millisecondsSinceEpoch
        wire.actor = .with { $0.kind = metadata.actor.kind; $0.id = metadata.actor.id }
        wire.triggeredBy = Lockstep_V1_TriggeredBy(metadata.triggeredBy)
        wire.causationID = metadata.causationID
        wire.correlationID = metadata.correlationID
        switch record {
        case .migration(let event): wire.payload = Lockstep_V1_EventPayload(event.event)
        case .plan(let event):
            switch event.event {
            case .planApplied(let plan): wire.payload.planApplied = .with { $0.plan = Lockstep_V1_PlanSnapshot(plan) }
            }
        case .checkpoint(let event):
            wire.payload.checkpointSigned = .with {
                $0.sequence = event.checkpoint.sequence
                $0.chainHash = Data(event.checkpoint.chainHash)
                $0.signedAtMs = event.checkpoint.signedAt.millisecondsSinceEpoch
                $0.keyID = event.checkpoint.keyID
                $0.signature = Data(event.checkpoint.signature)
            }
        case .freeze(let event):
            switch event.event {
            case .freezeDeclared(let freeze):
                wire.payload.freezeDeclared = .with {
                    $0.id = freeze.id
                    $0.services = freeze.services
                    $0.fromMs = freeze.from.millisecondsSinceEpoch
                    if let until = freeze.until { $0.untilMs = until.millisecondsSinceEpoch }
                    $0.reason = freeze.reason
                    $0.declaredBy = freeze.declaredBy
                    $0.stopsLine = freeze.stopsLine
                }
            case .freezeEnded(let ended):
                wire.payload.freezeEnded = .with {
                    $0.id = ended.id
                    $0.by = ended.by
                    $0.reason = ended.reason
                    $0.atMs = ended.at.millisecondsSinceEpoch
                }
            }
        }
        return wire
    }

    /// Parses stored bytes into their wire record.
    public static func decodeRecord(_ bytes: [UInt8]) throws(RecordDecodingError) -> Lockstep_V1_EventRecord {
        do {
            return try Lockstep_V1_EventRecord(serializedBytes: bytes)
        } catch {
            throw .malformed(String(describing: error))
        }
    }

    /// Parses stored bytes of a migration stream into a domain event, validating every field.
    public static func decode(_ bytes: [UInt8]) throws(RecordDecodingError) -> RecordedEvent {
        try domainEvent(try decodeRecord(bytes))
    }

    /// Parses stored bytes of any stream into a domain record, validating every field.
    public static func decodeAny(_ bytes: [UInt8]) throws(RecordDecodingError) -> LogRecord {
        try domainRecord(try decodeRecord(bytes))
    }

    /// The domain record a wire record describes, for any stream.
    public static func domainRecord(_ record: Lockstep_V1_EventRecord) throws(RecordDecodingError) -> LogRecord {
        if let freeze = RecordedFreezeEvent.freeze(ofStream: record.stream) { return .freeze(try freezeEvent(record, freeze: freeze)) }
        if record.stream.hasPrefix("checkpoint/") { return .checkpoint(try checkpointEvent(record)) }
        guard let plan = RecordedPlanEvent.plan(ofStream: record.stream) else { return .migration(try domainEvent(record)) }
        let metadata = try metadata(of: record)
        guard case .planApplied(let applied) = record.payload.kind else {
            throw .payloadDoesNotFitStream(stream: record.stream, payload: record.payload.kind == nil ? "missing" : "migration event")
        }
        return .plan(RecordedPlanEvent(plan: plan, streamVersion: record.streamVersion, metadata: metadata,
                                       event: .planApplied(try PlanSnapshot(applied.plan))))
    }

    /// The checkpoint a wire record of a checkpoint stream describes: version 1 of `checkpoint/SEQUENCE`,
    /// naming its own sequence, its fields the right shape.
    static func checkpointEvent(_ record: Lockstep_V1_EventRecord) throws(RecordDecodingError) -> RecordedCheckpoint {
        guard let sequence = RecordedCheckpoint.sequence(ofStream: record.stream) else {
            throw .invalidField("a checkpoint stream is named checkpoint/SEQUENCE, not \(record.stream.prefix(128))")
        }
        let metadata = try metadata(of: record)
        guard case .checkpointSigned(let signed) = record.payload.kind else {
            throw .payloadDoesNotFitStream(stream: record.stream, payload: record.payload.kind == nil ? "missing" : "not a checkpoint")
        }
        guard record.streamVersion == 1 else { throw .invalidField("a checkpoint stream holds one checkpoint, at version 1") }
        guard signed.sequence == sequence else { throw .invalidField("checkpoint_signed names sequence \(signed.sequence), not the stream's \(sequence)") }
        let checkpoint = Checkpoint(sequence: signed.sequence, chainHash: [UInt8](signed.chainHash), signedAt: Instant(millisecondsSinceEpoch: signed.signedAtMs),
                                    keyID: signed.keyID, signature: [UInt8](signed.signature))
        if let problem = checkpoint.shapeProblem { throw .invalidField(problem) }
        return RecordedCheckpoint(streamVersion: record.streamVersion, metadata: metadata, checkpoint: checkpoint)
    }

    /// The domain event a wire record of freeze `id`'s stream describes: a declaration first, then its end,
    /// each naming the stream's freeze.
    static func freezeEvent(_ record: Lockstep_V1_EventRecord, freeze id: String) throws(RecordDecodingError) -> RecordedFreezeEvent {
        let metadata = try metadata(of: record)
        let event: FreezeEvent
        switch record.payload.kind {
        case .freezeDeclared(let declared) where record.streamVersion == 1:
            guard declared.id == id else { throw .invalidField("freeze_declared names freeze \(declared.id.prefix(128)), not the stream's \(id)") }
            event = .freezeDeclared(Freeze(
                id: declared.id, services: declared.services, from: Instant(millisecondsSinceEpoch: declared.fromMs),
                until: declared.hasUntilMs ? Instant(millisecondsSinceEpoch: declared.untilMs) : nil, reason: declared.reason,
                declaredBy: declared.declaredBy, stopsLine: declared.stopsLine))
        case .freezeEnded(let ended) where record.streamVersion == 2:
            guard ended.id == id else { throw .invalidField("freeze_ended names freeze \(ended.id.prefix(128)), not the stream's \(id)") }
            event = .freezeEnded(FreezeEnded(id: ended.id, by: ended.by, reason: ended.reason, at: Instant(millisecondsSinceEpoch: ended.atMs)))
        case .freezeDeclared, .freezeEnded:
            throw .invalidField("a freeze stream holds its declaration at version 1 and its end at version 2; version \(record.streamVersion) is neither")
        default:
            throw .payloadDoesNotFitStream(stream: record.stream, payload: record.payload.kind == nil ? "missing" : "not a freeze event")
        }
        return RecordedFreezeEvent(freeze: id, streamVersion: record.streamVersion, metadata: metadata, event: event)
    }

    /// A record's metadata, once its stream version and trigger are checked (every stream's).
    private static func metadata(of record: Lockstep_V1_EventRecord) throws(RecordDecodingError) -> EventMetadata {
        guard record.streamVersion >= 1 else { throw .invalidField("stream_version 0") }
        guard let triggeredBy = TriggeredBy(record.triggeredBy) else { throw .invalidField("triggered_by") }
        return EventMetadata(
            recordedAt: Instant(millisecondsSinceEpoch: record.recordedAtMs),
            actor: Actor(kind: record.actor.kind, id: record.actor.id), triggeredBy: triggeredBy,
            causationID: record.causationID, correlationID: record.correlationID)
    }

    /// The domain event a wire record of a migration stream describes.
    public static func domainEvent(_ record: Lockstep_V1_EventRecord) throws(RecordDecodingError) -> RecordedEvent {
        guard let migration = RecordedEvent.migration(ofStream: record.stream) else { throw .notAMigrationStream(record.stream) }
        let metadata = try metadata(of: record)
        guard let kind = record.payload.kind else { throw .missingPayload }
        return RecordedEvent(migration: migration, streamVersion: record.streamVersion, metadata: metadata, event: try MigrationEvent(kind))
    }
}
