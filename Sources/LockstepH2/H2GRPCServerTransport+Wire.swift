import Foundation
import GRPCCore
import NIOCore

extension H2GRPCServerTransport {
    /// What a request is, read as gRPC (public for the fuzz target, `ops/fuzz`).
    public enum Decoded: Sendable {
        /// Not a gRPC request: an HTTP status (415 for another content-type, 405 for a method other than POST).
        case notGRPC(Int)
        /// A gRPC request refused with a status, before any handler.
        case refused(RPCError.Code, String, Refusal)
        case rpc(MethodDescriptor, Metadata, [[UInt8]])
    }

    /// Reads a complete request as gRPC: the head's checks, its metadata, its length-prefixed messages.
    public static func decode(head: H2RequestHead, body: ByteBuffer, messageBytesMax: Int) -> Decoded {
        GRPCRequest.parse(head: head, body: body, messageBytesMax: messageBytesMax)
    }
}

enum GRPCRequest {
    typealias Parsed = H2GRPCServerTransport.Decoded

    /// The method of a connection's last call, which its next calls mostly repeat (an agent polls): a
    /// path the same as the last one is that method again, with no Strings cut from it and no descriptor
    /// made (the path is then the same String too: `H2HeaderText.Repeated`, so comparing it is a pointer
    /// compare). One per connection, used only on the connection's event loop.
    final class LastMethod: @unchecked Sendable {
        fileprivate var path = ""
        fileprivate var descriptor: MethodDescriptor?
    }

    static func parse(head: H2RequestHead, body: ByteBuffer, messageBytesMax: Int, lastMethod: LastMethod? = nil) -> Parsed {
        // application/grpc, or with a suffix (+proto) or parameters; not application/grpc-web.
        guard let contentType = head.first("content-type"),
              contentType == "application/grpc" || contentType.hasPrefix("application/grpc+") || contentType.hasPrefix("application/grpc;") else {
            return .notGRPC(415)
        }
        guard head.method == "POST" else { return .notGRPC(405) }
        if let encoding = head.first("grpc-encoding"), encoding != "identity" {
            return .refused(.unimplemented, "compression \(encoding) is not supported (send identity)", .unsupportedEncoding)
        }
        let descriptor: MethodDescriptor
        if let lastMethod, let last = lastMethod.descriptor, lastMethod.path == head.path {
            descriptor = last
        } else {
            let path = head.path.utf8
            guard path.first == UInt8(ascii: "/"), let slash = path.lastIndex(of: UInt8(ascii: "/")), slash != path.startIndex,
                  path.index(after: slash) != path.endIndex else {
                return .refused(.unimplemented, "the path \(head.path) names no method (/package.Service/Method)", .noMethod)
            }
            descriptor = MethodDescriptor(fullyQualifiedService: String(head.path[head.path.index(after: head.path.startIndex)..<slash]),
                                          method: String(head.path[head.path.index(after: slash)...]))
            if let lastMethod { (lastMethod.path, lastMethod.descriptor) = (head.path, descriptor) }
        }
        var metadata = Metadata()
        for (name, value) in head.headers {
            switch name {
            case "content-type", "te", "grpc-encoding", "grpc-accept-encoding", "user-agent": continue
            default:
                if name.hasSuffix("-bin") {
                    guard let bytes = base64Decode(value) else { return .refused(.invalidArgument, "the metadata \(name) is not base64", .malformed) }
                    metadata.addBinary(bytes, forKey: name)
                } else {
                    metadata.addString(value, forKey: name)
                }
            }
        }
        var body = body
        var messages: [[UInt8]] = []
        while body.readableBytes > 0 {
            guard let flag = body.readInteger(as: UInt8.self), let length = body.readInteger(as: UInt32.self) else {
                return .refused(.internalError, "a message's 5-byte prefix is cut short", .malformed)
            }
            guard flag == 0 else { return .refused(.internalError, "a compressed message, but no compression was agreed", .malformed) }
            guard Int(length) <= messageBytesMax else {
                return .refused(.resourceExhausted, "a message of \(length) bytes is over the limit of \(messageBytesMax)", .messageTooLarge)
            }
            guard let bytes = body.readBytes(length: Int(length)) else { return .refused(.internalError, "a message is cut short", .malformed) }
            messages.append(bytes)
        }
        return .rpc(descriptor, metadata, messages)
    }

    /// A message as gRPC sends it: uncompressed, after its 4-byte length.
    static func framed(_ bytes: [UInt8]) -> ByteBuffer {
        var framed = ByteBuffer()
        framed.reserveCapacity(5 + bytes.count)
        framed.writeInteger(UInt8(0))
        framed.writeInteger(UInt32(truncatingIfNeeded: bytes.count))
        framed.writeBytes(bytes)
        return framed
    }

    /// A whole answer in one HEADERS frame: `:status` 200, the content type and the status.
    static func trailersOnly(code: RPCError.Code, message: String) -> [(String, String)] {
        [("content-type", "application/grpc")] + status(Status(code: Status.Code(code), message: message))
    }

    /// A response's fields, and the trailers of one that succeeded without trailing metadata: made once.
    static let headers = [("content-type", "application/grpc")]
    static let okTrailers = status(Status(code: .ok, message: ""))

    static func status(_ status: Status) -> [(String, String)] {
        var fields = [("grpc-status", String(status.code.rawValue))]
        // At most 1 KiB of UTF-8 (3 KiB once encoded), so the trailers always fit one header block.
        if !status.message.isEmpty { fields.append(("grpc-message", percentEncoded(utf8Prefix(status.message, bytesMax: 1_024)))) }
        return fields
    }

    /// The longest prefix of `text` of at most `bytesMax` UTF-8 bytes that ends on a character.
    static func utf8Prefix(_ text: String, bytesMax: Int) -> String {
        guard text.utf8.count > bytesMax else { return text }
        var end = text.startIndex
        var bytes = 0
        for index in text.indices {
            let next = text.index(after: index)
            bytes += text[index..<next].utf8.count
            guard bytes <= bytesMax else { break }
            end = next
        }
        return String(text[..<end])
    }

    /// Metadata as header fields: binary values base64, reserved and pseudo names left out.
    static func fields(_ metadata: Metadata) -> [(String, String)] {
        metadata.compactMap { key, value in
            let name = key.lowercased()
            // Reserved names are the transport's, except the rich error details an application may send.
            guard !name.hasPrefix(":"), !name.hasPrefix("grpc-") || name == "grpc-status-details-bin", name != "content-type", name != "te" else { return nil }
            switch value {
            case .string(let text): return (name, text)
            case .binary(let bytes): return (name, base64Encode(bytes))
            }
        }
    }

    /// `grpc-message`'s encoding: printable ASCII except `%` as is, everything else as %XX.
    static func percentEncoded(_ message: String) -> String {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(message.utf8.count)
        let hex = Array("0123456789ABCDEF".utf8)
        for byte in message.utf8 {
            if (0x20...0x7e).contains(byte) && byte != UInt8(ascii: "%") {
                bytes.append(byte)
            } else {
                bytes += [UInt8(ascii: "%"), hex[Int(byte >> 4)], hex[Int(byte & 0xf)]]
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    static func base64Encode(_ bytes: [UInt8]) -> String { Data(bytes).base64EncodedString() }

    /// Standard base64, padded or not (gRPC senders may leave the padding out); nil if not base64.
    static func base64Decode(_ text: String) -> [UInt8]? {
        let padding = String(repeating: "=", count: (4 - text.utf8.count % 4) % 4)
        return Data(base64Encoded: text.hasSuffix("=") ? text : text + padding).map { [UInt8]($0) }
    }
}
