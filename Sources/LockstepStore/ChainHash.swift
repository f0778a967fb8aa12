import Crypto

/// One link of the log's hash chain: `hash(n) = SHA-256(hash(n-1) ‖ UInt64(n) big-endian ‖ stored bytes of n)`.
///
/// The 32 bytes are held inline (four words, no heap allocation): replay computes and compares one
/// per event.
public struct ChainHash: Hashable, Sendable, CustomStringConvertible {
    private var words: (UInt64, UInt64, UInt64, UInt64)

    /// Wraps 32 stored bytes; nil when the count is wrong.
    public init?(bytes: [UInt8]) {
        guard bytes.count == 32 else { return nil }
        self = bytes.withUnsafeBytes { ChainHash(unchecked: $0) }
    }

    /// Reads 32 bytes from `buffer`, which must hold exactly 32.
    init(unchecked buffer: UnsafeRawBufferPointer) {
        words = (buffer.loadUnaligned(fromByteOffset: 0, as: UInt64.self), buffer.loadUnaligned(fromByteOffset: 8, as: UInt64.self),
                 buffer.loadUnaligned(fromByteOffset: 16, as: UInt64.self), buffer.loadUnaligned(fromByteOffset: 24, as: UInt64.self))
    }

    /// The 32 digest bytes.
    public var bytes: [UInt8] {
        withUnsafeBytes(of: words) { Array($0) }
    }

    /// The link before the first event: 32 zero bytes.
    public static let genesis = ChainHash(bytes: [UInt8](repeating: 0, count: 32))!

    /// The link of event `sequence` whose stored bytes are `record`, following `self`.
    public func next(sequence: UInt64, record: [UInt8]) -> ChainHash {
        record.withUnsafeBytes { next(sequence: sequence, record: $0) }
    }

    /// The link of event `sequence` whose stored bytes are in `record`, following `self`.
    public func next(sequence: UInt64, record: UnsafeRawBufferPointer) -> ChainHash {
        var hasher = SHA256()
        withUnsafeBytes(of: words) { hasher.update(bufferPointer: $0) }
        withUnsafeBytes(of: sequence.bigEndian) { hasher.update(bufferPointer: $0) }
        hasher.update(bufferPointer: record)
        return hasher.finalize().withUnsafeBytes { ChainHash(unchecked: $0) }
    }

    public static func == (lhs: ChainHash, rhs: ChainHash) -> Bool {
        lhs.words.0 == rhs.words.0 && lhs.words.1 == rhs.words.1 && lhs.words.2 == rhs.words.2 && lhs.words.3 == rhs.words.3
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(words.0)
        hasher.combine(words.1)
        hasher.combine(words.2)
        hasher.combine(words.3)
    }

    /// Lower-case hex.
    public var hex: String { bytes.hexString }
    public var description: String { hex }
}

extension Sequence<UInt8> {
    /// Lower-case hex of these bytes.
    public var hexString: String {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        for byte in self {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0x0F)])
        }
        return String(decoding: out, as: UTF8.self)
    }
}

/// Walks stored events in order and checks contiguity and the chain, naming the first bad position.
public struct ChainVerifier: Sendable {
    public private(set) var head: LogHead

    /// Starts after `head` (the genesis head for a walk from the beginning).
    public init(after head: LogHead = .genesis) { self.head = head }

    /// Checks that `event` is the next one and that its stored link is the one its bytes give.
    public mutating func check(_ event: StoredEvent) throws(EventLogError) {
        let outcome = event.record.withUnsafeBytes { record -> EventLogError? in
            do throws(EventLogError) {
                try check(sequence: event.sequence, record: record, chainHash: event.chainHash)
                return nil
            } catch {
                return error
            }
        }
        if let outcome { throw outcome }
    }

    /// Checks event `sequence` with stored bytes `record` and stored link `chainHash`.
    public mutating func check(sequence: UInt64, record: UnsafeRawBufferPointer, chainHash: ChainHash) throws(EventLogError) {
        let expected = head.sequence + 1
        guard sequence == expected else {
            throw sequence > expected
                ? .corrupted(position: expected, reason: "event \(expected) is missing (the next stored event is \(sequence))")
                : .corrupted(position: sequence, reason: "event \(sequence) is out of order after \(head.sequence)")
        }
        let link = head.chainHash.next(sequence: sequence, record: record)
        guard link == chainHash else {
            throw .corrupted(position: sequence, reason: "the chain hash does not match the stored bytes (altered, replaced or reordered)")
        }
        head = LogHead(sequence: sequence, chainHash: link)
    }
}
