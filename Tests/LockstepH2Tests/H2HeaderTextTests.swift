@testable import LockstepH2
import NIOCore
import Testing

/// Header names and values made Strings (`H2HeaderText`): the common ones from its tables, anything else
/// decoded. Either way the String is what `String(decoding:as:)` makes of the bytes.
@Suite struct H2HeaderTextTests {
    /// Every name and value `knownName` and `knownValue` answer with a literal.
    static let knownNames = [
        "te", ":path", "accept", "origin", "cookie", ":method", ":scheme", ":authority", "user-agent", "content-type", "grpc-timeout",
        "authorization", "grpc-encoding", "content-length", "accept-encoding", "grpc-accept-encoding",
    ]
    static let knownValues = [
        "GET", "*/*", "POST", "http", "gzip", "https", "trailers", "identity", "gzip, deflate", "application/grpc", "application/json",
        "application/x-ndjson", "identity,deflate,gzip", "identity, deflate, gzip",
    ]

    func decoded(_ bytes: [UInt8], by text: (UnsafeBufferPointer<UInt8>) -> String) -> String {
        bytes.withUnsafeBufferPointer(text)
    }

    @Test func everyKnownNameAndValueIsALiteralThatReadsAsItsBytes() {
        for name in Self.knownNames {
            #expect(Array(name.utf8).withUnsafeBufferPointer(H2HeaderText.knownName) == name, "\(name) is answered with a literal")
            #expect(decoded(Array(name.utf8), by: H2HeaderText.name) == name)
            #expect(name == name.lowercased(), "HTTP/2 field names are lowercase: \(name)")
        }
        for value in Self.knownValues {
            #expect(Array(value.utf8).withUnsafeBufferPointer(H2HeaderText.knownValue) == value, "\(value) is answered with a literal")
            #expect(decoded(Array(value.utf8), by: H2HeaderText.value) == value)
        }
        // A value is not taken for a name, nor a name for a value.
        #expect(decoded(Array("POST".utf8), by: H2HeaderText.name) == "POST")
        #expect(decoded(Array(":path".utf8), by: H2HeaderText.value) == ":path")
    }

    @Test(arguments: [
        Array("x-request-id".utf8), Array("content-typ".utf8), Array("content-typf".utf8), Array("POSTS".utf8),
        Array("application/grpc+proto".utf8), [], [0xFF, 0xFE, 0x41], Array("ünïcode".utf8),
    ])
    func anythingElseIsDecodedAsBefore(bytes: [UInt8]) {
        #expect(decoded(bytes, by: H2HeaderText.name) == String(decoding: bytes, as: UTF8.self))
        #expect(decoded(bytes, by: H2HeaderText.value) == String(decoding: bytes, as: UTF8.self))
    }

    /// Bytes compared eight at a time and then one by one: equal only when every byte is, at any length and
    /// wherever they differ.
    @Test func sameBytesFindsADifferenceAnywhere() {
        for count in 0...19 {
            let bytes = (0..<count).map { UInt8(truncatingIfNeeded: $0 * 7 + 1) }
            bytes.withUnsafeBufferPointer { mine in
                #expect(mine.sameBytes(as: mine))
                #expect(Array(bytes).withUnsafeBufferPointer { mine.sameBytes(as: $0) })
                #expect(!(bytes + [0]).withUnsafeBufferPointer { mine.sameBytes(as: $0) })
                for position in 0..<count {
                    var other = bytes
                    other[position] ^= 0x20
                    #expect(!other.withUnsafeBufferPointer { mine.sameBytes(as: $0) }, "\(count) bytes, differing at \(position)")
                }
            }
        }
    }

    /// Bytes that differ from a known value only in their last byte are not taken for it.
    @Test func aNearMissIsNotTheKnownValue() {
        var bytes = Array("application/json".utf8)
        bytes[bytes.count - 1] = UInt8(ascii: "x")
        #expect(decoded(bytes, by: H2HeaderText.value) == "application/jsox")
        #expect(decoded(Array("application/json".utf8), by: H2HeaderText.value) == "application/json")
    }

    /// A connection's repeated values: each value read is the String of its own bytes, whether it repeats
    /// the field's last value or not (invalid UTF-8 repaired, and the repaired text not taken for the bytes).
    @Test func aRepeatedValueIsTheSameTextAndAChangedOneIsNew() {
        var repeated = H2HeaderText.Repeated()
        let sequence: [(String, [UInt8])] = [
            (":path", Array("/lockstep.v1.AgentService/Poll".utf8)), (":path", Array("/lockstep.v1.AgentService/Poll".utf8)),
            (":path", Array("/lockstep.v1.AgentService/Complete".utf8)), (":path", Array("/v1/agent/poll".utf8)),
            (":authority", Array("127.0.0.1:8443".utf8)), (":authority", Array("127.0.0.1:8444".utf8)),
            ("user-agent", [0x61, 0xFF, 0x62]), ("user-agent", [0x61, 0xFF, 0x62]),
            ("user-agent", Array("a\u{FFFD}b".utf8)), ("user-agent", []), ("x-other", Array("anything at all, and long".utf8)),
            (":path", Array("/lockstep.v1.AgentService/Poll".utf8)),
        ]
        for (name, bytes) in sequence {
            let text = bytes.withUnsafeBufferPointer { repeated.value($0, of: name) }
            #expect(text == String(decoding: bytes, as: UTF8.self), "\(name)")
        }
        // Reused, not made again: a value over 15 bytes (on the heap) read twice is one String's storage.
        func storage(_ text: String) -> UnsafeRawPointer? {
            var text = text
            return text.withUTF8 { UnsafeRawPointer($0.baseAddress) }
        }
        let path = Array("/lockstep.v1.AgentService/Poll".utf8)
        let first = path.withUnsafeBufferPointer { repeated.value($0, of: ":path") }
        let second = path.withUnsafeBufferPointer { repeated.value($0, of: ":path") }
        #expect(storage(first) != nil && storage(first) == storage(second))
        let other = Array("/lockstep.v1.AgentService/Fail".utf8)
        #expect(storage(other.withUnsafeBufferPointer { repeated.value($0, of: ":path") }) != storage(first))
    }
}

/// A connection's last gRPC method (`GRPCRequest.LastMethod`): a call to the same path is read as the same
/// method, a call to another path as its own, and a path that names no method is refused however many
/// good calls came before it.
@Suite struct GRPCLastMethodTests {
    func head(_ path: String) -> H2RequestHead {
        H2RequestHead(method: "POST", scheme: "http", authority: "localhost", path: path, headers: [("content-type", "application/grpc")])
    }

    func method(_ path: String, _ last: GRPCRequest.LastMethod) -> String? {
        guard case .rpc(let descriptor, _, _) = GRPCRequest.parse(head: head(path), body: ByteBuffer(), messageBytesMax: 1_024, lastMethod: last)
        else { return nil }
        return descriptor.fullyQualifiedMethod
    }

    @Test func theSamePathIsTheSameMethodAndAnotherIsItsOwn() {
        let last = GRPCRequest.LastMethod()
        #expect(method("/lockstep.v1.AgentService/Poll", last) == "lockstep.v1.AgentService/Poll")
        #expect(method("/lockstep.v1.AgentService/Poll", last) == "lockstep.v1.AgentService/Poll")
        #expect(method("/lockstep.v1.AgentService/Complete", last) == "lockstep.v1.AgentService/Complete")
        #expect(method("/lockstep.v1.MigrationService/Complete", last) == "lockstep.v1.MigrationService/Complete")
        for bad in ["/nothing", "lockstep.v1.AgentService/Poll", "/lockstep.v1.AgentService/", ""] {
            guard case .refused(.unimplemented, _, .noMethod) = GRPCRequest.parse(head: head(bad), body: ByteBuffer(), messageBytesMax: 1_024,
                                                                                 lastMethod: last) else {
                Issue.record("\(bad) was not refused")
                continue
            }
        }
        #expect(method("/lockstep.v1.AgentService/Poll", last) == "lockstep.v1.AgentService/Poll")
    }
}

/// A gRPC message framed once and sent to many calls (`H2GRPCServerTransport.FramedMessage`).
@Suite struct GRPCFramedMessageTests {
    /// A message framed once: gRPC's prefix (uncompressed, its length big-endian) then the message;
    /// reading a copy of it leaves it whole for the next call.
    @Test func aFramedMessageIsPrefixedAndReusable() {
        let message = H2GRPCServerTransport.FramedMessage([7, 8, 9])
        var first = message.buffer
        #expect(first.readBytes(length: first.readableBytes) == [0, 0, 0, 0, 3, 7, 8, 9])
        #expect(message.buffer.readableBytes == 8)
        #expect(H2GRPCServerTransport.FramedMessage([]).buffer.readableBytesView.elementsEqual([0, 0, 0, 0, 0]))
        let large = [UInt8](repeating: 1, count: 70_000)
        #expect(Array(H2GRPCServerTransport.FramedMessage(large).buffer.readableBytesView.prefix(5)) == [0, 0, 1, 0x11, 0x70])
    }
}
