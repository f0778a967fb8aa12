// Signed checkpoints (issue 21, docs/history.md): a coordinator's signed statement that event `sequence`
// of its log has chain hash `chainHash`, made at `signedAt` with key `keyID`. A hash chain shows the middle
// of a history was not altered; a checkpoint kept elsewhere also shows its newest events were not
// deleted and the whole was not replaced by a consistent forgery. Each is recorded in the log too, in
// its own stream `checkpoint/SEQUENCE` (one checkpoint per sequence).

/// A signed statement about one point of the log.
public struct Checkpoint: Hashable, Sendable {
    /// The event it vouches for (its global sequence).
    public var sequence: UInt64
    /// That event's chain hash: 32 bytes.
    public var chainHash: [UInt8]
    public var signedAt: Instant
    /// Which key signed it: the first 16 hex digits of the SHA-256 of its raw Ed25519 public key.
    public var keyID: String
    /// The Ed25519 signature of `message`: 64 bytes.
    public var signature: [UInt8]

    public init(sequence: UInt64, chainHash: [UInt8], signedAt: Instant, keyID: String, signature: [UInt8]) {
        self.sequence = sequence
        self.chainHash = chainHash
        self.signedAt = signedAt
        self.keyID = keyID
        self.signature = signature
    }

    /// The bytes a checkpoint's signature covers, in ASCII:
    /// `lockstep-checkpoint-v1 SEQUENCE CHAIN_HASH_HEX SIGNED_AT_MS` (decimal numbers, lower-case hex).
    public static func message(sequence: UInt64, chainHash: [UInt8], signedAtMillis: Int64) -> [UInt8] {
        Array("lockstep-checkpoint-v1 \(sequence) \(hex(chainHash)) \(signedAtMillis)".utf8)
    }

    public var message: [UInt8] { Self.message(sequence: sequence, chainHash: chainHash, signedAtMillis: signedAt.millisecondsSinceEpoch) }

    /// What is wrong with its shape (lengths, the key id), or nil: checked wherever one is read.
    public var shapeProblem: String? {
        if chainHash.count != 32 { return "a checkpoint's chain hash has 32 bytes, not \(chainHash.count)" }
        if signature.count != 64 { return "a checkpoint's signature has 64 bytes, not \(signature.count)" }
        if keyID.utf8.count != 16 || !keyID.utf8.allSatisfy({ (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }) {
            return "a checkpoint's key id is 16 lower-case hex digits"
        }
        if sequence == 0 { return "a checkpoint vouches for an event: its sequence is at least 1" }
        return nil
    }

    static func hex(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count * 2)
        for byte in bytes {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0x0F)])
        }
        return String(decoding: out, as: UTF8.self)
    }
}

/// A checkpoint as recorded in the log.
public struct RecordedCheckpoint: Hashable, Sendable {
    public var streamVersion: UInt64
    public var metadata: EventMetadata
    public var checkpoint: Checkpoint

    public init(streamVersion: UInt64 = 1, metadata: EventMetadata, checkpoint: Checkpoint) {
        self.streamVersion = streamVersion
        self.metadata = metadata
        self.checkpoint = checkpoint
    }

    /// The stream of the checkpoint of `sequence`.
    public static func stream(of sequence: UInt64) -> String { "checkpoint/\(sequence)" }

    /// The sequence whose checkpoint stream is `stream`, or nil when it is not one.
    public static func sequence(ofStream stream: String) -> UInt64? {
        let prefix = "checkpoint/".utf8
        guard stream.utf8.count > prefix.count, stream.utf8.starts(with: prefix) else { return nil }
        let digits = stream.utf8.dropFirst(prefix.count)
        guard digits.first != 0x30, digits.allSatisfy({ (0x30...0x39).contains($0) }) else { return nil }
        return UInt64(String(decoding: digits, as: UTF8.self))
    }
}

/// What the checkpoints decide: record one.
public enum CheckpointCommand: Hashable, Sendable {
    case record(Checkpoint)
}

extension LogState {
    /// A checkpoint may be recorded when its shape is right and it vouches for an event already folded.
    /// (Its signature is the signer's business and the verifier's: the core holds no keys.)
    func decideCheckpoint(_ command: CheckpointCommand) -> Ruling {
        switch command {
        case .record(let checkpoint):
            if let problem = checkpoint.shapeProblem { return .rejected(.invalidArgument(problem)) }
            guard checkpoint.sequence <= lastSequence else {
                return .rejected(.invalidArgument("a checkpoint of sequence \(checkpoint.sequence) vouches for an event the log does not hold yet (it is at \(lastSequence))"))
            }
            return .checkpoint(checkpoint)
        }
    }
}
