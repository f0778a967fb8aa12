/// The canonical byte encoding of `LogState`: the input of the state digest and the body of snapshots.
///
/// Format (documented in docs/state-digest.md): big-endian fixed-width integers, strings as a UInt32 byte
/// count followed by UTF-8 bytes, optionals as a 0/1 byte then the value, arrays as a UInt32 count then
/// elements. Migrations are sorted by id bytes; nodes keep plan order. Nothing depends on hashing or
/// dictionary order, so the same state gives the same bytes in every process.
public struct CanonicalWriter: Sendable {
    public private(set) var bytes: [UInt8] = []
    /// Writing a plan's content for its hash: fields added after plans were first hashed are written
    /// only when present (behind a marker), so a plan that does not use them keeps its hash.
    var forContentHash = false
    /// The canonical state format being written (`LogState.canonicalFormat`, or an older one still read).
    var format = LogState.canonicalFormat
    public init() {}

    mutating func u8(_ value: UInt8) { bytes.append(value) }
    mutating func u32(_ value: UInt32) { withUnsafeBytes(of: value.bigEndian) { bytes.append(contentsOf: $0) } }
    mutating func u64(_ value: UInt64) { withUnsafeBytes(of: value.bigEndian) { bytes.append(contentsOf: $0) } }
    mutating func i64(_ value: Int64) { u64(UInt64(bitPattern: value)) }
    mutating func bool(_ value: Bool) { u8(value ? 1 : 0) }
    mutating func string(_ value: String) {
        u32(UInt32(value.utf8.count))
        bytes.append(contentsOf: value.utf8)
    }
    mutating func optional<T>(_ value: T?, _ write: (inout CanonicalWriter, T) -> Void) {
        guard let value else { return u8(0) }
        u8(1)
        write(&self, value)
    }
    mutating func array<C: Collection>(_ values: C, _ write: (inout CanonicalWriter, C.Element) -> Void) {
        u32(UInt32(values.count))
        for value in values { write(&self, value) }
    }
}

/// Why canonical bytes could not be decoded.
public enum CanonicalDecodingError: Error, Hashable, Sendable {
    case truncated(offset: Int)
    case badMagic
    case unsupportedFormat(UInt8)
    case invalidValue(offset: Int, what: String)
    case trailingBytes(offset: Int)
}

/// Reads what `CanonicalWriter` wrote, checking every length and tag.
public struct CanonicalReader {
    let bytes: [UInt8]
    public private(set) var offset = 0
    /// The canonical state format being read (set from the state's format byte).
    var format = LogState.canonicalFormat
    public init(_ bytes: [UInt8]) { self.bytes = bytes }

    mutating func take(_ count: Int) throws(CanonicalDecodingError) -> ArraySlice<UInt8> {
        guard count >= 0, bytes.count - offset >= count else { throw .truncated(offset: offset) }
        defer { offset += count }
        return bytes[offset..<offset + count]
    }
    mutating func u8() throws(CanonicalDecodingError) -> UInt8 { try take(1).first! }
    mutating func u32() throws(CanonicalDecodingError) -> UInt32 {
        try take(4).reduce(0) { $0 << 8 | UInt32($1) }
    }
    mutating func u64() throws(CanonicalDecodingError) -> UInt64 {
        try take(8).reduce(0) { $0 << 8 | UInt64($1) }
    }
    mutating func i64() throws(CanonicalDecodingError) -> Int64 { Int64(bitPattern: try u64()) }
    mutating func bool() throws(CanonicalDecodingError) -> Bool {
        let at = offset
        switch try u8() {
        case 0: return false
        case 1: return true
        default: throw .invalidValue(offset: at, what: "boolean")
        }
    }
    mutating func string() throws(CanonicalDecodingError) -> String {
        let count = Int(try u32())
        let at = offset
        let slice = try take(count)
        guard let value = String(validating: slice, as: UTF8.self) else { throw .invalidValue(offset: at, what: "UTF-8 string") }
        return value
    }
    mutating func optional<T>(_ read: (inout CanonicalReader) throws(CanonicalDecodingError) -> T) throws(CanonicalDecodingError) -> T? {
        try bool() ? try read(&self) : nil
    }
    mutating func array<T>(_ read: (inout CanonicalReader) throws(CanonicalDecodingError) -> T) throws(CanonicalDecodingError) -> [T] {
        let count = Int(try u32())
        // Every element takes at least one byte: a count beyond what is left is corrupt, not a reason to allocate.
        guard count <= bytes.count - offset else { throw .truncated(offset: offset) }
        var values: [T] = []
        values.reserveCapacity(count)
        for _ in 0..<count { values.append(try read(&self)) }
        return values
    }
    mutating func enumeration<T: RawRepresentable>(_ type: T.Type) throws(CanonicalDecodingError) -> T where T.RawValue == String {
        let at = offset
        guard let value = T(rawValue: try string()) else { throw .invalidValue(offset: at, what: "\(T.self)") }
        return value
    }
}
