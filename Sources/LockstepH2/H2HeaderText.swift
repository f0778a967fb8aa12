/// A request's header names and values as Strings, the common ones without making a String.
///
/// Every field of every request became two Strings made from libnghttp2's bytes: UTF-8 checked, and on
/// the heap when over 15 bytes (`application/grpc`, a user agent). That was 4 % of the engine's CPU per
/// request (`perf` of the engine answering inline, docs/benchmarks-api-history.md, session 35). The names
/// and values nearly every request sends are found here instead, by length and then bytes, and answered
/// with a string literal: no allocation, no reference counting, and no table to retain (a switch, not an
/// array). Anything else is decoded as before (invalid UTF-8 repaired, as `String(decoding:as:)` does).
enum H2HeaderText {
    static func name(_ bytes: UnsafeBufferPointer<UInt8>) -> String {
        knownName(bytes) ?? String(decoding: bytes, as: UTF8.self)
    }

    static func value(_ bytes: UnsafeBufferPointer<UInt8>) -> String {
        knownValue(bytes) ?? String(decoding: bytes, as: UTF8.self)
    }

    /// Pseudo-headers and the fields clients of the API send (curl, grpcio, grpc-swift, h2load, browsers),
    /// as literals; nil for any other name.
    static func knownName(_ bytes: UnsafeBufferPointer<UInt8>) -> String? {
        let b = bytes
        switch b.count {
        case 2: if b.is("te") { return "te" }
        case 5: if b.is(":path") { return ":path" }
        case 6:
            if b.is("accept") { return "accept" }
            if b.is("origin") { return "origin" }
            if b.is("cookie") { return "cookie" }
        case 7:
            if b.is(":method") { return ":method" }
            if b.is(":scheme") { return ":scheme" }
        case 10:
            if b.is(":authority") { return ":authority" }
            if b.is("user-agent") { return "user-agent" }
        case 12:
            if b.is("content-type") { return "content-type" }
            if b.is("grpc-timeout") { return "grpc-timeout" }
        case 13:
            if b.is("authorization") { return "authorization" }
            if b.is("grpc-encoding") { return "grpc-encoding" }
        case 14: if b.is("content-length") { return "content-length" }
        case 15: if b.is("accept-encoding") { return "accept-encoding" }
        case 20: if b.is("grpc-accept-encoding") { return "grpc-accept-encoding" }
        default: break
        }
        return nil
    }

    /// Values of those fields that do not vary by request, as literals; nil for any other value.
    static func knownValue(_ bytes: UnsafeBufferPointer<UInt8>) -> String? {
        let b = bytes
        switch b.count {
        case 3:
            if b.is("GET") { return "GET" }
            if b.is("*/*") { return "*/*" }
        case 4:
            if b.is("POST") { return "POST" }
            if b.is("http") { return "http" }
            if b.is("gzip") { return "gzip" }
        case 5: if b.is("https") { return "https" }
        case 8:
            if b.is("trailers") { return "trailers" }
            if b.is("identity") { return "identity" }
        case 13: if b.is("gzip, deflate") { return "gzip, deflate" }
        case 16:
            if b.is("application/grpc") { return "application/grpc" }
            if b.is("application/json") { return "application/json" }
        case 20: if b.is("application/x-ndjson") { return "application/x-ndjson" }
        case 21: if b.is("identity,deflate,gzip") { return "identity,deflate,gzip" }
        case 23: if b.is("identity, deflate, gzip") { return "identity, deflate, gzip" }
        default: break
        }
        return nil
    }

    /// The values of a connection's last request that its next ones mostly repeat: the path (an agent
    /// polls one method), the authority and the user agent, each over 15 bytes as often as not, so a new
    /// String on the heap per request. A value with the same bytes as the last one of its field is that
    /// String again (one retain); any other is made as `value` makes it, and kept in its place. Kept per
    /// connection (by `H2Session`), so one client's values never answer another's; credentials
    /// (`authorization`) are not kept.
    struct Repeated {
        private var path = ""
        private var authority = ""
        private var userAgent = ""

        mutating func value(_ bytes: UnsafeBufferPointer<UInt8>, of name: String) -> String {
            switch name {
            case ":path": Self.reuse(&path, bytes)
            case ":authority": Self.reuse(&authority, bytes)
            case "user-agent": Self.reuse(&userAgent, bytes)
            default: H2HeaderText.value(bytes)
            }
        }

        private static func reuse(_ last: inout String, _ bytes: UnsafeBufferPointer<UInt8>) -> String {
            var same = last.utf8.count == bytes.count
            if same { same = last.utf8.withContiguousStorageIfAvailable { $0.sameBytes(as: bytes) } ?? last.utf8.elementsEqual(bytes) }
            if !same { last = H2HeaderText.value(bytes) }
            return last
        }
    }
}

extension UnsafeBufferPointer<UInt8> {
    /// Whether these bytes are `literal`'s.
    fileprivate func `is`(_ literal: StaticString) -> Bool {
        sameBytes(as: UnsafeBufferPointer(start: literal.utf8Start, count: literal.utf8CodeUnitCount))
    }

    /// Whether these are the same bytes as `other`'s, compared eight at a time (`Sequence.elementsEqual`
    /// goes through iterators a byte at a time: 1.2 % of a gRPC call's samples for its three repeated
    /// fields, docs/benchmarks-api-history.md, session 35).
    func sameBytes(as other: UnsafeBufferPointer<UInt8>) -> Bool {
        guard count == other.count else { return false }
        guard count > 0, let base = baseAddress, let otherBase = other.baseAddress else { return true }
        let (mine, theirs) = (UnsafeRawPointer(base), UnsafeRawPointer(otherBase))
        var offset = 0
        while offset + 8 <= count {
            guard mine.loadUnaligned(fromByteOffset: offset, as: UInt64.self) == theirs.loadUnaligned(fromByteOffset: offset, as: UInt64.self)
            else { return false }
            offset += 8
        }
        while offset < count {
            guard base[offset] == otherBase[offset] else { return false }
            offset += 1
        }
        return true
    }
}
