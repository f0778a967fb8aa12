/// Duplicate keys in JSON from outside. The parsers Lockstep reads JSON with keep the last of an
/// object's keys written twice (Foundation's `JSONSerialization`, swift-protobuf's JSON decoding), so a
/// config, a request or a verified file that says one thing twice would mean what its last copy says,
/// whatever a reader (or another tool, which may keep the first) takes it for. Every such input is
/// refused instead: the JSON API's bodies here, every JSON file and line through `StrictJSON`
/// (LockstepEngine: the auth config, the console's sign-in, the checkpoint keys and checkpoint lines,
/// archive segments and history bundles, the webhook cursor file).
public enum JSONKeys {
    /// A key an object in `json` holds twice, or nil. Keys are compared as the strings they stand for,
    /// escapes undone (`"a"` and `"\u0061"` are one key), and as Swift compares strings (canonical
    /// equivalence, as a `[String: Any]` of them does). `json` must already have parsed as JSON: this
    /// follows its structure, it does not check it; on any bytes it answers, without recursion.
    ///
    /// Every JSON body of the API comes through here, so keys of plain ASCII without escapes (every
    /// field name of the API) are compared as bytes where they lie, sorted per object (no hashing, no
    /// copy, two allocations a document); a document with any other key is read again as text.
    ///
    /// `protobufFields`: keys are compared as the protobuf fields they name, as swift-protobuf's JSON
    /// decoding takes them: a field's proto name and its JSON name (`lease_id`, `leaseId`) are one key,
    /// answered by its JSON name. (For a message without map fields, whose keys are all field names.)
    public static func firstRepeated(in json: some Collection<UInt8>, protobufFields: Bool = false) -> String? {
        if let answer = json.withContiguousStorageIfAvailable({ repeated(in: $0, protobufFields) }) { return answer }
        return Array(json).withUnsafeBufferPointer { repeated(in: $0, protobufFields) }
    }

    private static func repeated(in bytes: UnsafeBufferPointer<UInt8>, _ protobufFields: Bool) -> String? {
        switch plainKeys(bytes, protobufFields) {
        case .none: nil
        case .repeated(let key): key
        case .textNeeded: repeatedText(bytes, protobufFields)
        }
    }

    /// A key's bytes as they are, or as the JSON name of the protobuf field they name (protoc's rule:
    /// an underscore dropped and the letter after it upper-cased).
    private struct KeyBytes: Sequence, IteratorProtocol {
        var rest: Slice<UnsafeBufferPointer<UInt8>>
        let protobufFields: Bool

        mutating func next() -> UInt8? {
            guard var byte = rest.popFirst() else { return nil }
            guard protobufFields, byte == UInt8(ascii: "_") else { return byte }
            while byte == UInt8(ascii: "_") {
                guard let after = rest.popFirst() else { return nil }
                byte = after
            }
            return (0x61...0x7A).contains(byte) ? byte - 0x20 : byte
        }
    }

    /// The same for a key read as text.
    private static func fieldName(_ key: String) -> String {
        var name: [UInt8] = []
        var upper = false
        for byte in key.utf8 {
            if byte == UInt8(ascii: "_") {
                upper = true
            } else {
                name.append(upper && (0x61...0x7A).contains(byte) ? byte - 0x20 : byte)
                upper = false
            }
        }
        return String(decoding: name, as: UTF8.self)
    }

    private enum Plain {
        case none
        case repeated(String)
        /// A key with an escape or a byte past ASCII: compared as bytes, it could differ from one that
        /// stands for the same text.
        case textNeeded
    }

    /// The pass over keys that are plain ASCII without escapes.
    private static func plainKeys(_ bytes: UnsafeBufferPointer<UInt8>, _ protobufFields: Bool) -> Plain {
        func key(_ range: Range<Int>) -> KeyBytes { KeyBytes(rest: bytes[range], protobufFields: protobufFields) }
        // The keys of every open object, innermost last, as ranges of `bytes`; one frame per open object
        // or array: where its keys begin, and whether the next string in it is a key.
        var keys: [Range<Int>] = []
        var frames: [(firstKey: Int, object: Bool, keyNext: Bool)] = []
        keys.reserveCapacity(16)
        frames.reserveCapacity(8)
        var index = 0
        while index < bytes.count {
            let byte = bytes[index]
            index += 1
            switch byte {
            case UInt8(ascii: "{"): frames.append((keys.count, true, true))
            case UInt8(ascii: "["): frames.append((keys.count, false, false))
            case UInt8(ascii: "}"), UInt8(ascii: "]"):
                guard let frame = frames.popLast() else { continue }
                if keys.count - frame.firstKey > 1 {
                    keys[frame.firstKey...].sort { key($0).lexicographicallyPrecedes(key($1)) }
                    for at in frame.firstKey..<(keys.count - 1) where key(keys[at]).elementsEqual(key(keys[at + 1])) {
                        return .repeated(String(decoding: Array(key(keys[at])), as: UTF8.self))
                    }
                }
                keys.removeSubrange(frame.firstKey...)
            case UInt8(ascii: ","): if let last = frames.indices.last, frames[last].object { frames[last].keyNext = true }
            case UInt8(ascii: ":"): if let last = frames.indices.last { frames[last].keyNext = false }
            case UInt8(ascii: "\""):
                let start = index
                var plain = true
                while index < bytes.count, bytes[index] != UInt8(ascii: "\"") {
                    if bytes[index] == UInt8(ascii: "\\") || bytes[index] >= 0x80 { plain = false }
                    index += bytes[index] == UInt8(ascii: "\\") ? 2 : 1
                }
                let stop = min(index, bytes.count)
                index += 1
                guard let last = frames.indices.last, frames[last].keyNext else { continue }
                guard plain else { return .textNeeded }
                keys.append(start..<stop)
            default: continue
            }
        }
        return .none
    }

    /// Every key read as the text it stands for: the first one an object holds twice.
    private static func repeatedText(_ json: UnsafeBufferPointer<UInt8>, _ protobufFields: Bool) -> String? {
        // One frame per open object or array: an object's keys so far (nil for an array), and whether
        // the next string in it is a key.
        var frames: [(keys: Set<String>?, keyNext: Bool)] = []
        var bytes = json.makeIterator()
        while let byte = bytes.next() {
            switch byte {
            case UInt8(ascii: "{"): frames.append(([], true))
            case UInt8(ascii: "["): frames.append((nil, false))
            case UInt8(ascii: "}"), UInt8(ascii: "]"): _ = frames.popLast()
            case UInt8(ascii: ","): if let last = frames.indices.last, frames[last].keys != nil { frames[last].keyNext = true }
            case UInt8(ascii: ":"): if let last = frames.indices.last { frames[last].keyNext = false }
            case UInt8(ascii: "\""):
                guard let last = frames.indices.last, frames[last].keyNext else {
                    skipString(&bytes)
                    continue
                }
                let key = protobufFields ? fieldName(readString(&bytes)) : readString(&bytes)
                guard frames[last].keys?.insert(key).inserted != false else { return key }
            default: continue
            }
        }
        return nil
    }

    /// Past the closing quote of a string whose opening quote was read.
    private static func skipString<Bytes: IteratorProtocol<UInt8>>(_ bytes: inout Bytes) {
        while let byte = bytes.next() {
            if byte == UInt8(ascii: "\\") { _ = bytes.next() } else if byte == UInt8(ascii: "\"") { return }
        }
    }

    /// The text of a string whose opening quote was read, through its closing quote, escapes undone
    /// (a lone surrogate is U+FFFD).
    private static func readString<Bytes: IteratorProtocol<UInt8>>(_ bytes: inout Bytes) -> String {
        var text: [UInt8] = []
        var pendingHigh: UInt32?
        func append(_ scalar: UInt32) { UTF8.encode(Unicode.Scalar(scalar) ?? "\u{FFFD}") { text.append($0) } }
        func flushHigh() {
            if pendingHigh != nil { append(0xFFFD) }
            pendingHigh = nil
        }
        while let byte = bytes.next(), byte != UInt8(ascii: "\"") {
            guard byte == UInt8(ascii: "\\"), let escaped = bytes.next() else {
                flushHigh()
                text.append(byte)
                continue
            }
            guard escaped == UInt8(ascii: "u") else {
                flushHigh()
                text.append(Self.simpleEscapes[escaped] ?? escaped)
                continue
            }
            var unit: UInt32 = 0
            for _ in 0..<4 { unit = unit << 4 | UInt32(hexValue(bytes.next())) }
            switch unit {
            case 0xD800...0xDBFF:
                flushHigh()
                pendingHigh = unit
            case 0xDC00...0xDFFF:
                if let high = pendingHigh {
                    append(0x10000 + (high - 0xD800) << 10 + (unit - 0xDC00))
                    pendingHigh = nil
                } else {
                    append(0xFFFD)
                }
            default:
                flushHigh()
                append(unit)
            }
        }
        flushHigh()
        return String(decoding: text, as: UTF8.self)
    }

    /// What `\b`, `\f`, `\n`, `\r` and `\t` stand for (`\"`, `\\` and `\/` stand for themselves).
    private static let simpleEscapes: [UInt8: UInt8] = [
        UInt8(ascii: "b"): 0x08, UInt8(ascii: "f"): 0x0C, UInt8(ascii: "n"): 0x0A, UInt8(ascii: "r"): 0x0D, UInt8(ascii: "t"): 0x09,
    ]

    private static func hexValue(_ byte: UInt8?) -> UInt8 {
        switch byte {
        case let digit? where (0x30...0x39).contains(digit): digit - 0x30
        case let letter? where (0x61...0x66).contains(letter | 0x20): (letter | 0x20) - 0x61 + 10
        default: 0
        }
    }
}
