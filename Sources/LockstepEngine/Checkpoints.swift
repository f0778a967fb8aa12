import Crypto
import Foundation
import LockstepCore
import LockstepPlan
import LockstepStore

// Signed checkpoints, the engine's side (docs/history.md, "Signed checkpoints"): the signing key, the
// public keys with their validity ranges, the file checkpoints are kept in outside the log, and the
// audit that compares checkpoints with a log.

/// Why a key, a keys file or a checkpoints file cannot be used.
public struct CheckpointError: Error, Equatable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// The coordinator's Ed25519 signing key, read from a file at start.
///
/// The file is two lines: `lockstep-signing-key v1` and the base64 of the 32-byte private key (seed).
public struct CheckpointSigner: Sendable {
    /// The 32-byte private key (its seed); the key itself is made from it when it signs.
    let seed: [UInt8]
    var key: Curve25519.Signing.PrivateKey? {
        // The seed was checked when it was read or made: 32 bytes.
        try? Curve25519.Signing.PrivateKey(rawRepresentation: seed)
    }

    public init(key: Curve25519.Signing.PrivateKey) { self.seed = Array(key.rawRepresentation) }

    public static let header = "lockstep-signing-key v1"

    /// Reads the key at `path` (a regular file of at most 4 KiB).
    public init(file path: String) throws(CheckpointError) {
        let bytes = try CheckpointFiles.read(path, limit: 4_096, what: "the signing key")
        let lines = String(decoding: bytes, as: UTF8.self).split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }
        guard lines.count == 2, lines[0] == Self.header, let seed = Data(base64Encoded: lines[1]), seed.count == 32,
              let key = try? Curve25519.Signing.PrivateKey(rawRepresentation: seed)
        else {
            throw CheckpointError("\(path) is not a Lockstep signing key (two lines: \"\(Self.header)\" and the base64 of 32 bytes; `lockstep keys generate` writes one)")
        }
        self.init(key: key)
    }

    /// A new key.
    public static func generate() -> CheckpointSigner { CheckpointSigner(key: Curve25519.Signing.PrivateKey()) }

    /// Writes the key file at `path`: created with mode 0600 (never readable by others, not even for a
    /// moment), and never over an existing file.
    public func write(to path: String) throws(CheckpointError) {
        let descriptor = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else {
            throw CheckpointError(errno == EEXIST ? "\(path) exists; a key is never overwritten" : "cannot create \(path): \(String(cString: strerror(errno)))")
        }
        defer { close(descriptor) }
        let bytes = Array(fileText.utf8)
        let written = bytes.withUnsafeBytes { Foundation.write(descriptor, $0.baseAddress, $0.count) }
        guard written == bytes.count, fsync(descriptor) == 0 else { throw CheckpointError("cannot write \(path) (\(written) of \(bytes.count) bytes written)") }
        CheckpointFiles.syncDirectory(of: path)
    }

    /// The key file's text.
    public var fileText: String { "\(Self.header)\n\(Data(seed).base64EncodedString())\n" }

    public var publicKey: [UInt8] { key.map { Array($0.publicKey.rawRepresentation) } ?? [] }
    public var keyID: String { CheckpointKeys.keyID(of: publicKey) }

    /// The checkpoint of event `sequence` (chain hash `chainHash`), signed at `at`.
    public func sign(sequence: UInt64, chainHash: [UInt8], at: Instant) throws(CheckpointError) -> Checkpoint {
        let message = Checkpoint.message(sequence: sequence, chainHash: chainHash, signedAtMillis: at.millisecondsSinceEpoch)
        guard let key else { throw CheckpointError("the signing key is not a key") }
        let signature: Data
        do { signature = try key.signature(for: message) } catch { throw CheckpointError("signing failed: \(error)") }
        return Checkpoint(sequence: sequence, chainHash: chainHash, signedAt: at, keyID: keyID, signature: [UInt8](signature))
    }
}

/// The public keys checkpoints are verified with, each valid for a range of signing times (keys rotate).
///
/// A keys file is JSON: `{"keys": [{"key_id", "public_key" (base64 of 32 bytes), "valid_from_ms",
/// "valid_until_ms" (absent: still valid)}]}`.
public struct CheckpointKeys: Hashable, Sendable {
    public struct Key: Hashable, Sendable {
        public var keyID: String
        public var publicKey: [UInt8]
        public var validFrom: Instant
        public var validUntil: Instant?

        public init(publicKey: [UInt8], validFrom: Instant = Instant(millisecondsSinceEpoch: 0), validUntil: Instant? = nil) {
            self.publicKey = publicKey
            self.keyID = CheckpointKeys.keyID(of: publicKey)
            self.validFrom = validFrom
            self.validUntil = validUntil
        }

        public var json: [String: Any] {
            var object: [String: Any] = ["key_id": keyID, "public_key": Data(publicKey).base64EncodedString(), "valid_from_ms": validFrom.millisecondsSinceEpoch]
            if let validUntil { object["valid_until_ms"] = validUntil.millisecondsSinceEpoch }
            return object
        }
    }

    public var keys: [Key]
    public init(keys: [Key]) { self.keys = keys }

    /// The first 16 hex digits of the SHA-256 of a raw public key.
    public static func keyID(of publicKey: [UInt8]) -> String {
        String(Array(SHA256.hash(data: publicKey)).hexString.prefix(16))
    }

    /// The most keys one file lists.
    public static let keysMax = 256

    public static func load(_ path: String) throws(CheckpointError) -> CheckpointKeys {
        let bytes = try CheckpointFiles.read(path, limit: 256 * 1024, what: "the keys file")
        do throws(CheckpointError) { return try parse(bytes) } catch { throw CheckpointError("\(path): \(error.description)") }
    }

    public static func parse(_ bytes: [UInt8]) throws(CheckpointError) -> CheckpointKeys {
        let shape = "a keys file is a JSON object with a list `keys` (`lockstep keys show` prints an entry)"
        let object: [String: Any]
        do throws(StrictJSON.Refusal) { object = try StrictJSON.object(bytes) } catch {
            if case .repeated = error { throw CheckpointError("a keys file \(error)") }
            throw CheckpointError(shape)
        }
        guard let list = object["keys"] as? [[String: Any]] else { throw CheckpointError(shape) }
        guard !list.isEmpty, list.count <= keysMax else { throw CheckpointError("a keys file lists 1 to \(keysMax) keys, not \(list.count)") }
        var keys: [Key] = []
        for (index, entry) in list.enumerated() {
            guard let text = entry["public_key"] as? String, let raw = Data(base64Encoded: text), raw.count == 32,
                  (try? Curve25519.Signing.PublicKey(rawRepresentation: raw)) != nil
            else { throw CheckpointError("keys[\(index)]: public_key must be the base64 of a 32-byte Ed25519 public key") }
            var key = Key(publicKey: [UInt8](raw))
            if let claimed = entry["key_id"] as? String, claimed != key.keyID {
                throw CheckpointError("keys[\(index)]: key_id \(claimed.prefix(32)) is not this key's id, \(key.keyID)")
            }
            func millis(_ field: String) throws(CheckpointError) -> Int64? {
                guard let value = entry[field], !(value is NSNull) else { return nil }
                guard let number = value as? NSNumber, let exact = Int64(exactly: number.doubleValue) else {
                    throw CheckpointError("keys[\(index)]: \(field) must be milliseconds since 1970")
                }
                return exact
            }
            if let from = try millis("valid_from_ms") { key.validFrom = Instant(millisecondsSinceEpoch: from) }
            if let until = try millis("valid_until_ms") { key.validUntil = Instant(millisecondsSinceEpoch: until) }
            if let until = key.validUntil, until <= key.validFrom { throw CheckpointError("keys[\(index)]: valid_until_ms must be after valid_from_ms") }
            keys.append(key)
        }
        return CheckpointKeys(keys: keys)
    }

    public var json: String {
        let data = (try? JSONSerialization.data(withJSONObject: ["keys": keys.map(\.json)], options: [.prettyPrinted, .sortedKeys])) ?? Data()
        return String(decoding: data, as: UTF8.self)
    }

    /// Whether `checkpoint`'s signature verifies with a key valid when it was signed; else why not.
    public func problem(with checkpoint: Checkpoint) -> CheckpointFinding.Kind? {
        let candidates = keys.filter { $0.keyID == checkpoint.keyID }
        guard !candidates.isEmpty else { return .unknownKey }
        let message = checkpoint.message
        let verifying = candidates.filter { key in
            (try? Curve25519.Signing.PublicKey(rawRepresentation: key.publicKey))?.isValidSignature(checkpoint.signature, for: message) == true
        }
        guard !verifying.isEmpty else { return .badSignature }
        let inRange = verifying.contains { $0.validFrom <= checkpoint.signedAt && ($0.validUntil.map { checkpoint.signedAt < $0 } ?? true) }
        return inRange ? nil : .keyNotValid
    }
}

/// Something a checkpoint shows about a log.
public struct CheckpointFinding: Hashable, Sendable, CustomStringConvertible {
    public enum Kind: String, Hashable, Sendable {
        /// The log ends before an event a checkpoint vouches for: its newest events were deleted.
        case truncated
        /// The log's event at a checkpoint's sequence has another chain hash: rewritten or replaced.
        case forked
        /// The signature does not verify with the key it names.
        case badSignature = "bad_signature"
        /// No key listed has its key id.
        case unknownKey = "unknown_key"
        /// It verifies, but its key was not valid when it says it was signed.
        case keyNotValid = "key_not_valid"
        /// A line of a checkpoints file that is not a checkpoint.
        case malformed
    }

    public var kind: Kind
    public var sequence: UInt64
    /// Where the checkpoint came from: "log", or FILE:LINE.
    public var source: String
    public var detail: String

    public var description: String { "\(kind.rawValue) at sequence \(sequence) (\(source)): \(detail)" }
}

/// Checkpoints kept outside the log: one JSON object per line in `DIR/checkpoints.ndjson`, appended and
/// synced, never rewritten: `{"sequence", "chain_hash" (hex), "signed_at_ms", "key_id", "signature" (base64)}`.
public enum CheckpointFiles {
    public static let fileName = "checkpoints.ndjson"

    /// At most `limit` bytes of the regular file at `path`.
    public static func read(_ path: String, limit: Int, what: String) throws(CheckpointError) -> [UInt8] {
        switch BoundedFile.read(path, limit: limit, what: what) {
        case .success(let bytes): return bytes
        case .failure(let problem): throw CheckpointError(problem.description)
        }
    }

    public static func line(_ checkpoint: Checkpoint) -> String {
        let object: [String: Any] = [
            "sequence": checkpoint.sequence, "chain_hash": checkpoint.chainHash.hexString, "signed_at_ms": checkpoint.signedAt.millisecondsSinceEpoch,
            "key_id": checkpoint.keyID, "signature": Data(checkpoint.signature).base64EncodedString(),
        ]
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data()
        return String(decoding: data, as: UTF8.self)
    }

    /// The checkpoint a line describes, or why not.
    public static func parse(line: Substring) -> Result<Checkpoint, CheckpointError> {
        let object: [String: Any]
        do throws(StrictJSON.Refusal) { object = try StrictJSON.object(line.utf8) } catch {
            if case .repeated = error { return .failure(CheckpointError("a checkpoint line \(error)")) }
            return .failure(CheckpointError("not a checkpoint line"))
        }
        guard let sequence = (object["sequence"] as? NSNumber).flatMap({ UInt64(exactly: $0.doubleValue) }),
              let hashHex = object["chain_hash"] as? String, let chainHash = [UInt8](hex: hashHex),
              let signedAt = (object["signed_at_ms"] as? NSNumber).flatMap({ Int64(exactly: $0.doubleValue) }),
              let keyID = object["key_id"] as? String,
              let signatureText = object["signature"] as? String, let signature = Data(base64Encoded: signatureText)
        else { return .failure(CheckpointError("not a checkpoint line")) }
        let checkpoint = Checkpoint(sequence: sequence, chainHash: chainHash, signedAt: Instant(millisecondsSinceEpoch: signedAt), keyID: keyID,
                                    signature: [UInt8](signature))
        if let problem = checkpoint.shapeProblem { return .failure(CheckpointError(problem)) }
        return .success(checkpoint)
    }

    /// Appends `checkpoint` to DIR/checkpoints.ndjson (created if need be) with one `write` in append mode,
    /// and syncs it to disk: writers sharing the file never overwrite each other, and a line a crash cut
    /// short is ended before the next, so it costs only itself.
    public static func append(_ checkpoint: Checkpoint, directory: String) throws(CheckpointError) {
        let path = directory + "/" + fileName
        let created = !FileManager.default.fileExists(atPath: path)
        let descriptor = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else { throw CheckpointError("cannot open \(path) to append: \(String(cString: strerror(errno)))") }
        defer { close(descriptor) }
        var text = line(checkpoint) + "\n"
        let size = lseek(descriptor, 0, SEEK_END)
        if size > 0 {
            var last: UInt8 = 0
            let reader = open(path, O_RDONLY | O_CLOEXEC)
            if reader >= 0 {
                if pread(reader, &last, 1, size - 1) == 1, last != 0x0A { text = "\n" + text }
                close(reader)
            }
        }
        let bytes = Array(text.utf8)
        let written = bytes.withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
        guard written == bytes.count, fsync(descriptor) == 0 else {
            throw CheckpointError("cannot append to \(path) (\(written) of \(bytes.count) bytes written)")
        }
        if created { syncDirectory(of: path) }
    }

    /// Syncs the directory holding `path`, so a file just created there survives a power cut.
    static func syncDirectory(of path: String) {
        let directory = URL(fileURLWithPath: path).deletingLastPathComponent().path
        let descriptor = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard descriptor >= 0 else { return }
        _ = fsync(descriptor)
        close(descriptor)
    }

    /// Every line of DIR/checkpoints.ndjson: checkpoints with their FILE:LINE, and the lines that are not.
    public static func load(directory: String) throws(CheckpointError) -> (checkpoints: [(source: String, checkpoint: Checkpoint)], malformed: [CheckpointFinding]) {
        let path = directory + "/" + fileName
        let bytes = try read(path, limit: 256 * 1024 * 1024, what: "the checkpoints file")
        var checkpoints: [(source: String, checkpoint: Checkpoint)] = []
        var malformed: [CheckpointFinding] = []
        for (index, line) in String(decoding: bytes, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).enumerated()
            where !line.isEmpty {
            switch parse(line: line) {
            case .success(let checkpoint): checkpoints.append(("\(path):\(index + 1)", checkpoint))
            case .failure(let error): malformed.append(CheckpointFinding(kind: .malformed, sequence: 0, source: "\(path):\(index + 1)", detail: error.description))
            }
        }
        return (checkpoints, malformed)
    }
}

/// Compares checkpoints with a log.
public enum CheckpointAudit {
    /// What `checkpoints` show about a log whose head is `head` and whose chain hash at a sequence is
    /// `chainHash(at:)`: each checkpoint's signature (with `keys`), then whether the log still holds the
    /// event it vouches for, with the same chain hash.
    /// `base`: the last event archived out of the log; a checkpoint before it vouches for an event only
    /// the archive segments hold (its signature is still checked).
    public static func audit(_ checkpoints: [(source: String, checkpoint: Checkpoint)], keys: CheckpointKeys, head: UInt64, base: UInt64 = 0,
                             chainHash: (UInt64) async throws -> [UInt8]?) async rethrows -> [CheckpointFinding] {
        var findings: [CheckpointFinding] = []
        for (source, checkpoint) in checkpoints {
            if let problem = keys.problem(with: checkpoint) {
                let detail = switch problem {
                case .unknownKey: "signed with key \(checkpoint.keyID), which no key listed has"
                case .badSignature: "the signature does not verify with key \(checkpoint.keyID)"
                case .keyNotValid: "key \(checkpoint.keyID) was not valid at \(checkpoint.signedAt), when it says it signed"
                default: problem.rawValue
                }
                findings.append(CheckpointFinding(kind: problem, sequence: checkpoint.sequence, source: source, detail: detail))
                continue
            }
            if checkpoint.sequence < base { continue }
            guard checkpoint.sequence <= head else {
                findings.append(CheckpointFinding(kind: .truncated, sequence: checkpoint.sequence, source: source,
                                                  detail: "the log ends at sequence \(head), but a checkpoint signed at \(checkpoint.signedAt) vouches for event \(checkpoint.sequence): its newest events are gone"))
                continue
            }
            let found = try await chainHash(checkpoint.sequence)
            if found != checkpoint.chainHash {
                findings.append(CheckpointFinding(kind: .forked, sequence: checkpoint.sequence, source: source,
                                                  detail: "the log's event \(checkpoint.sequence) has chain hash \(found?.hexString ?? "(none)"), but the checkpoint signed at \(checkpoint.signedAt) vouches for \(checkpoint.chainHash.hexString): the history was rewritten or replaced"))
            }
        }
        return findings
    }
}

extension Array where Element == UInt8 {
    /// The bytes of a lower-case hex string with an even number of digits (the one spelling Lockstep
    /// writes: another would let one text stand for the same bytes as another).
    public init?(hex: String) {
        let digits = Array(hex.utf8)
        guard digits.count % 2 == 0, digits.count <= 1_024 else { return nil }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(digits.count / 2)
        func value(_ digit: UInt8) -> UInt8? {
            switch digit {
            case 0x30...0x39: digit - 0x30
            case 0x61...0x66: digit - 0x61 + 10
            default: nil
            }
        }
        var index = 0
        while index < digits.count {
            guard let high = value(digits[index]), let low = value(digits[index + 1]) else { return nil }
            bytes.append(high << 4 | low)
            index += 2
        }
        self = bytes
    }
}
