import LockstepStore
import LockstepWire
import SwiftProtobuf

/// Renders stored events as NDJSON lines for reviewers and other tools.
public enum HistoryExport {
    /// One line (without the newline) for `stored`:
    /// `{"sequence":N,"chain_hash":"<hex>","record":<the EventRecord in proto3 JSON, proto field names>}`.
    /// Integers of 64 bits appear as strings inside `record`, as the proto3 JSON mapping says.
    public static func line(_ stored: StoredEvent) throws(EventLogError) -> String {
        do {
            return try line(sequence: stored.sequence, chainHashHex: stored.chainHash.hex, record: EventRecordCodec.decodeRecord(stored.record))
        } catch {
            throw .corrupted(position: stored.sequence, reason: "the record cannot be rendered: \(error)")
        }
    }

    /// The same line for an event read through the API (an `EventEnvelope`'s parts).
    public static func line(sequence: UInt64, chainHashHex: String, record: Lockstep_V1_EventRecord) throws -> String {
        var options = JSONEncodingOptions()
        options.preserveProtoFieldNames = true
        return "{\"sequence\":\(sequence),\"chain_hash\":\"\(chainHashHex)\",\"record\":\(try record.jsonString(options: options))}"
    }
}
