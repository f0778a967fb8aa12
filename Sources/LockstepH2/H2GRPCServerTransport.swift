import Foundation
import GRPCCore
import Logging
import NIOCore
import NIOPosix
import Synchronization

/// gRPC served by the engine: a grpc-swift-2 `ServerTransport`, so `GRPCServer`, the generated service
/// protocols and interceptors stay as they are while HTTP/2 is libnghttp2's.
///
/// Each request arrives whole (Lockstep's methods are unary and server-streaming: one request message),
/// is checked on the event loop (content-type, encoding, path, message framing and size) and handed to
/// `listen`'s task group as an `RPCStream`. Answers go out through `H2Response`, paced by the client's
/// window; a stream the client resets, or a connection that closes, cancels the RPC's handle, which
/// releases a parked poll or watch.
public final class H2GRPCServerTransport: ServerTransport, Sendable {
    public typealias Bytes = [UInt8]

    public struct Configuration: Sendable {
        public var host: String
        public var port: Int
        public var limits: H2Limits
        /// The largest request message, in bytes (larger: RESOURCE_EXHAUSTED).
        public var messageBytesMax: Int
        /// Run on the listening channel once bound (for example, a connection admission handler).
        public var configureListener: @Sendable (any Channel) -> EventLoopFuture<Void>
        /// Run on each accepted connection before the engine's handler is added, on its event loop (for
        /// example, TLS).
        public var configureConnection: @Sendable (any Channel) throws -> Void
        /// After a graceful shutdown began, connections still open this much later are closed (their
        /// RPCs cancelled).
        public var graceMillis: Int64 = 5_000
        /// Whether `configureConnection` puts TLS under the engine (told to handlers in `Context`).
        public var tls = false
        /// The application's stable error code for each answer the transport gives without a handler:
        /// sent in the `errorCodeTrailer` trailer and before the message (`CODE: sentence`).
        public var refusalCode: @Sendable (Refusal) -> String? = { _ in nil }
        public var errorCodeTrailer = "error-code"
        /// Made for each accepted connection, on its event loop: told when its streams open and close.
        public var makeObserver: @Sendable (any Channel) -> (any H2StreamObserver)?

        public init(host: String, port: Int, limits: H2Limits = H2Limits(), messageBytesMax: Int = 1 << 20,
                    configureListener: @escaping @Sendable (any Channel) -> EventLoopFuture<Void> = { $0.eventLoop.makeSucceededVoidFuture() },
                    configureConnection: @escaping @Sendable (any Channel) throws -> Void = { _ in },
                    makeObserver: @escaping @Sendable (any Channel) -> (any H2StreamObserver)? = { _ in nil }) {
            self.host = host
            self.port = port
            self.limits = limits
            self.messageBytesMax = messageBytesMax
            self.configureListener = configureListener
            self.configureConnection = configureConnection
            self.makeObserver = makeObserver
        }
    }

    /// Why the transport answered a request without a handler.
    public enum Refusal: Sendable {
        /// A message over `messageBytesMax` (RESOURCE_EXHAUSTED).
        case messageTooLarge
        /// A header list over the engine's limits (RESOURCE_EXHAUSTED).
        case headersTooLarge
        /// Compression other than identity (UNIMPLEMENTED).
        case unsupportedEncoding
        /// Metadata or message framing that cannot be read (INVALID_ARGUMENT, INTERNAL).
        case malformed
        /// A path that names no method (UNIMPLEMENTED).
        case noMethod
        /// The server is shutting down (UNAVAILABLE).
        case shuttingDown
    }

    /// What a handler can learn about the transport under its RPC (`ServerContext.transportSpecific`).
    public struct Context: ServerContext.TransportSpecific {
        /// The client's connection (its TLS handler holds the verified client certificate).
        public let channel: any Channel
        /// Whether connections are TLS (`Configuration.tls`): without it there is no certificate to ask for.
        public let tls: Bool
    }

    private let configuration: Configuration
    private let logger: Logger
    private let accepted: AsyncStream<Accepted>
    private let acceptor: AsyncStream<Accepted>.Continuation
    private let state = Mutex(State())
    private let address: EventLoopPromise<SocketAddress>

    struct State {
        var listener: (any Channel)?
        var connections: [ObjectIdentifier: any Channel] = [:]
        var shuttingDown = false
    }

    public init(configuration: Configuration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
        // Bounded by the streams the engine lets in: connections × concurrent streams each.
        (accepted, acceptor) = AsyncStream.makeStream(of: Accepted.self)
        address = MultiThreadedEventLoopGroup.singleton.any().makePromise(of: SocketAddress.self)
    }

    /// The address the listener bound (a port of 0 is chosen by the system), once it has.
    public var listeningAddress: SocketAddress {
        get async throws { try await address.futureResult.get() }
    }

    public func listen(streamHandler: @escaping @Sendable (RPCStream<Inbound, Outbound>, ServerContext) async -> Void) async throws {
        let responder = GRPCResponder(transport: self)
        let limits = configuration.limits
        let logger = logger
        let configuration = configuration
        let listener: any Channel
        do {
            listener = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .serverChannelOption(.backlog, value: 256)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .serverChannelInitializer { configuration.configureListener($0) }
                .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
                .childChannelInitializer { [self] channel in
                    channel.eventLoop.makeCompletedFuture {
                        try configuration.configureConnection(channel)
                        try channel.pipeline.syncOperations.addHandler(H2ServerHandler(limits: limits, responder: responder, logger: logger,
                                                                                       observer: configuration.makeObserver(channel)))
                        track(channel)
                    }
                }
                .bind(host: configuration.host, port: configuration.port).get()
        } catch {
            address.fail(error)
            throw error
        }
        let stop = state.withLock { state in
            state.listener = listener
            return state.shuttingDown
        }
        if let bound = listener.localAddress { address.succeed(bound) } else { address.fail(ChannelError.unknownLocalAddress) }
        if stop { beginGracefulShutdown() }
        let localPeer = Self.peer(listener.localAddress)
        await withTaskCancellationHandler {
            await withDiscardingTaskGroup { group in
                for await rpc in accepted {
                    group.addTask { await Self.run(rpc, localPeer: localPeer, tls: configuration.tls, streamHandler) }
                }
            }
        } onCancel: {
            listener.close(promise: nil)
            acceptor.finish()
            closeConnections()
        }
        // Every RPC has ended: no connection outlives the transport (after a graceful shutdown they have
        // had their GOAWAY; a client that keeps one open is not served by a transport that stopped).
        listener.close(promise: nil)
        closeConnections()
        try? await listener.closeFuture.get()
    }

    private func closeConnections() {
        for connection in state.withLock({ Array($0.connections.values) }) { connection.close(promise: nil) }
    }

    /// Stops accepting connections, tells every connection to finish its streams (GOAWAY), closes those
    /// still open after `graceMillis`, and lets `listen` return once every RPC has ended.
    public func beginGracefulShutdown() {
        let (listener, connections) = state.withLock { state in
            state.shuttingDown = true
            return (state.listener, Array(state.connections.values))
        }
        guard let listener else {
            // Never listened (a server shut down before it served): whoever waits for the address stops.
            address.fail(ChannelError.ioOnClosedChannel)
            return
        }
        listener.close(promise: nil)
        for connection in connections { connection.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent()) }
        acceptor.finish()
        // RPCs that outlast the grace period are cut: their connections close, which cancels them.
        listener.eventLoop.scheduleTask(in: .milliseconds(configuration.graceMillis)) { [self] in closeConnections() }
    }

    private func track(_ channel: any Channel) {
        let id = ObjectIdentifier(channel)
        state.withLock { $0.connections[id] = channel }
        channel.closeFuture.whenComplete { [self] _ in _ = state.withLock { $0.connections.removeValue(forKey: id) } }
    }

    // MARK: One RPC

    struct Accepted: Sendable {
        let descriptor: MethodDescriptor
        let metadata: Metadata
        let messages: [[UInt8]]
        let response: H2Response
        let channel: any Channel
    }

    private static func run(_ rpc: Accepted, localPeer: String, tls: Bool,
                            _ streamHandler: @Sendable (RPCStream<Inbound, Outbound>, ServerContext) async -> Void) async {
        await withServerContextRPCCancellationHandle { handle in
            let writer = GRPCWriter(response: rpc.response)
            // A reset stream or a closed connection before the status went out cancels the RPC.
            rpc.response.closed.whenSuccess { _ in
                if !writer.statusSent { handle.cancel() }
            }
            let (inbound, parts) = AsyncThrowingStream.makeStream(of: RPCRequestPart<[UInt8]>.self, throwing: (any Error).self)
            parts.yield(.metadata(rpc.metadata))
            for message in rpc.messages { parts.yield(.message(message)) }
            parts.finish()
            var context = ServerContext(descriptor: rpc.descriptor, remotePeer: peer(rpc.channel.remoteAddress), localPeer: localPeer, cancellation: handle)
            context.transportSpecific = Context(channel: rpc.channel, tls: tls)
            await streamHandler(RPCStream(descriptor: rpc.descriptor, inbound: RPCAsyncSequence(wrapping: inbound),
                                          outbound: RPCWriter.Closable(wrapping: writer)), context)
            // A handler that returned without a status (it should not) leaves no stream open.
            if !writer.statusSent { rpc.response.reset(.internalError) }
        }
    }

    static func peer(_ address: SocketAddress?) -> String {
        switch address {
        case .v4(let v4)?: "ipv4:\(v4.host):\(address?.port ?? 0)"
        case .v6(let v6)?: "ipv6:[\(v6.host)]:\(address?.port ?? 0)"
        case .unixDomainSocket?: "unix:\(address?.pathname ?? "")"
        case nil: "unknown"
        }
    }

    /// Checks a request on the event loop and hands it to `listen`.
    struct GRPCResponder: H2Responder {
        let transport: H2GRPCServerTransport

        func respond(to request: H2Request, _ response: H2Response) {
            switch GRPCRequest.parse(head: request.head, body: request.body, messageBytesMax: transport.configuration.messageBytesMax) {
            case .notGRPC(let status):
                response.send(status: status, headers: [("content-length", "0")], body: nil)
            case .refused(let code, let message, let why):
                response.head(status: 200, headers: trailersOnly(code, message, why), body: false)
            case .rpc(let descriptor, let metadata, let messages):
                let rpc = Accepted(descriptor: descriptor, metadata: metadata, messages: messages, response: response, channel: request.channel)
                if case .terminated = transport.acceptor.yield(rpc) {
                    response.head(status: 200, headers: trailersOnly(.unavailable, "the server is shutting down", .shuttingDown), body: false)
                }
            }
        }

        func refusal(status: Int) -> (status: Int, headers: [(String, String)]) {
            if status == 431 {
                return (200, trailersOnly(.resourceExhausted, "the request's header list is over the server's limit", .headersTooLarge))
            }
            return (200, trailersOnly(.resourceExhausted, "the request message is over the limit of \(transport.configuration.messageBytesMax) bytes",
                                      .messageTooLarge))
        }

        private func trailersOnly(_ code: RPCError.Code, _ message: String, _ why: Refusal) -> [(String, String)] {
            guard let stable = transport.configuration.refusalCode(why) else { return GRPCRequest.trailersOnly(code: code, message: message) }
            return GRPCRequest.trailersOnly(code: code, message: "\(stable): \(message)") + [(transport.configuration.errorCodeTrailer, stable)]
        }
    }
}

/// The writer behind an RPC's `Outbound`: response parts to HEADERS, length-prefixed DATA and trailers.
final class GRPCWriter: ClosableRPCWriterProtocol, Sendable {
    typealias Element = RPCResponsePart<[UInt8]>
    let response: H2Response
    private let phase = Mutex(Phase.idle)

    enum Phase { case idle, headersSent, statusSent }

    init(response: H2Response) { self.response = response }

    var statusSent: Bool { phase.withLock { $0 == .statusSent } }

    func write(_ element: Element) async throws {
        switch element {
        case .metadata(let metadata):
            let send = phase.withLock { phase in
                guard phase == .idle else { return false }
                phase = .headersSent
                return true
            }
            if send { response.head(status: 200, headers: [("content-type", "application/grpc")] + GRPCRequest.fields(metadata), body: true) }
        case .message(let bytes):
            let headersFirst = phase.withLock { phase in
                guard phase == .idle else { return false }
                phase = .headersSent
                return true
            }
            if headersFirst { response.head(status: 200, headers: [("content-type", "application/grpc")], body: true) }
            var framed = ByteBuffer()
            framed.reserveCapacity(5 + bytes.count)
            framed.writeInteger(UInt8(0))
            framed.writeInteger(UInt32(truncatingIfNeeded: bytes.count))
            framed.writeBytes(bytes)
            do {
                try await response.write(framed).get()
            } catch {
                throw RPCError(code: .cancelled, message: "the client's stream closed")
            }
        case .status(let status, let metadata):
            let before = phase.withLock { phase in
                let before = phase
                phase = .statusSent
                return before
            }
            let trailers = GRPCRequest.status(status) + GRPCRequest.fields(metadata)
            switch before {
            case .idle: response.head(status: 200, headers: [("content-type", "application/grpc")] + trailers, body: false)
            case .headersSent: response.finish(trailers: trailers)
            case .statusSent: break
            }
        }
    }

    func write(contentsOf elements: some Sequence<Element>) async throws {
        for element in elements { try await write(element) }
    }

    func finish() async {
        if !statusSent { response.reset(.internalError) }
    }

    func finish(throwing error: any Error) async {
        if !statusSent { response.reset(.internalError) }
    }
}

/// gRPC's wire format over HTTP/2 (the PROTOCOL-HTTP2 document of grpc/grpc), as far as a server reads it.
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

    static func parse(head: H2RequestHead, body: ByteBuffer, messageBytesMax: Int) -> Parsed {
        // application/grpc, or with a suffix (+proto) or parameters; not application/grpc-web.
        guard let contentType = head.first("content-type"),
              contentType == "application/grpc" || contentType.hasPrefix("application/grpc+") || contentType.hasPrefix("application/grpc;") else {
            return .notGRPC(415)
        }
        guard head.method == "POST" else { return .notGRPC(405) }
        if let encoding = head.first("grpc-encoding"), encoding != "identity" {
            return .refused(.unimplemented, "compression \(encoding) is not supported (send identity)", .unsupportedEncoding)
        }
        let path = head.path.utf8
        guard path.first == UInt8(ascii: "/"), let slash = path.lastIndex(of: UInt8(ascii: "/")), slash != path.startIndex,
              path.index(after: slash) != path.endIndex else {
            return .refused(.unimplemented, "the path \(head.path) names no method (/package.Service/Method)", .noMethod)
        }
        let service = String(head.path[head.path.index(after: head.path.startIndex)..<slash])
        let method = String(head.path[head.path.index(after: slash)...])
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
        return .rpc(MethodDescriptor(fullyQualifiedService: service, method: method), metadata, messages)
    }

    /// A whole answer in one HEADERS frame: `:status` 200, the content type and the status.
    static func trailersOnly(code: RPCError.Code, message: String) -> [(String, String)] {
        [("content-type", "application/grpc")] + status(Status(code: Status.Code(code), message: message))
    }

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
