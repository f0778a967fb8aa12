import LockstepStore
import LockstepWire
import SwiftProtobuf

/// Renders stored events as NDJSON lines for reviewers and other tools.
public enum HistoryExport {
    /// One line (without the newline) for `stored`:
    /// `{"sequence":N,"chain_hash":"<hex>","record":<the EventRecord in proto3 JSON, proto field names>}`.
    /// Integers of 64 bits appear as strings inside `record`, as the proto3 JSON mapping says.
    public static func line(_ stored: StoredEvent) throws(EventLogError) -> String {
        let record: String
        do {
            var options = JSONEncodingOptions()
            options.preserveProtoFieldNames = true
            record = try EventRecordCodec.decodeRecord(stored.record).jsonString(options: options)
        } catch {
            throw .corrupted(position: stored.sequence, reason: "the record cannot be rendered: \(error)")
        }
        return "{\"sequence\":\(stored.sequence),\"chain_hash\":\"\(stored.chainHash.hex)\",\"record\":\(record)}"
    }
}
