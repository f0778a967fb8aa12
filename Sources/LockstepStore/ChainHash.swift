import Crypto

/// One link of the log's hash chain: `hash(n) = SHA-256(hash(n-1) ‖ UInt64(n) big-endian ‖ stored bytes of n)`.
public struct ChainHash: Hashable, Sendable, CustomStringConvertible {
    /// The 32 digest bytes.
    public let bytes: [UInt8]

    /// Wraps 32 stored bytes; nil when the count is wrong.
    public init?(bytes: [UInt8]) {
        guard bytes.count == 32 else { return nil }
        self.bytes = bytes
    }

    private init(unchecked bytes: [UInt8]) { self.bytes = bytes }

    /// The link before the first event: 32 zero bytes.
    public static let genesis = ChainHash(unchecked: [UInt8](repeating: 0, count: 32))

    /// The link of event `sequence` whose stored bytes are `record`, following `self`.
    public func next(sequence: UInt64, record: [UInt8]) -> ChainHash {
        var hasher = SHA256()
        hasher.update(data: bytes)
        withUnsafeBytes(of: sequence.bigEndian) { hasher.update(bufferPointer: $0) }
        hasher.update(data: record)
        return ChainHash(unchecked: Array(hasher.finalize()))
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
        let expected = head.sequence + 1
        guard event.sequence == expected else {
            throw event.sequence > expected
                ? .corrupted(position: expected, reason: "event \(expected) is missing (the next stored event is \(event.sequence))")
                : .corrupted(position: event.sequence, reason: "event \(event.sequence) is out of order after \(head.sequence)")
        }
        let link = head.chainHash.next(sequence: event.sequence, record: event.record)
        guard link == event.chainHash else {
            throw .corrupted(position: event.sequence, reason: "the chain hash does not match the stored bytes (altered, replaced or reordered)")
        }
        head = LogHead(sequence: event.sequence, chainHash: link)
    }
}
