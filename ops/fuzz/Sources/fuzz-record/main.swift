import FuzzDriver
import LockstepCore
import LockstepWire

/// Any bytes as a stored event record and as a stored snapshot: each decodes or is a typed error, and
/// a snapshot that decodes re-encodes to exactly its bytes (the canonical encoding is one-to-one).
// Exported too: libFuzzer's archive brings its own `main`, which names this symbol (ours runs first).
@_cdecl("LLVMFuzzerTestOneInput")
func fuzzRecord(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let input = fuzzInput(data, size)
    let bytes = Array(input)
    if let record = try? EventRecordCodec.decodeAny(bytes) {
        // What decodes is printable (every Instant, whatever its value).
        switch record {
        case .migration(let event): _ = event.metadata.recordedAt.description
        case .plan(let event): _ = event.metadata.recordedAt.description
        case .freeze(let event): _ = event.metadata.recordedAt.description
        case .checkpoint(let event):
            // A checkpoint that decodes has its shape, and its signed message is well formed.
            precondition(event.checkpoint.shapeProblem == nil, "a checkpoint of the wrong shape decoded")
            _ = event.checkpoint.message
            _ = event.checkpoint.signedAt.description
        }
    }
    if let state = try? LogState(canonicalBytes: bytes) {
        precondition(state.canonicalBytes == bytes, "a snapshot decoded from bytes that are not its canonical encoding")
    }
    return 0
}

runFuzzer { data, size in fuzzRecord(data, size) }
