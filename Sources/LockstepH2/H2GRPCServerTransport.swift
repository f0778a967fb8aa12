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
        /// Unary calls the application answers where they arrive, on the connection's event loop, with no
        /// task and no thread switch (`OnLoopCall`); nil for a call it leaves to the server and its handlers.
        public var onLoop: (@Sendable (OnLoopCall) -> OnLoopAnswer?)?
        /// Who the client is, read from its connection on the connection's event loop as each RPC is
        /// accepted (for example, a fingerprint of its TLS certificate) and handed to its handler in
        /// `Context.clientIdentity`: the handler, in a task, then needs no hop back onto the loop to ask.
        /// Nil: not read (a handler asks the channel itself).
        public var clientIdentity: (@Sendable (any Channel) -> String?)?
        /// Whether an RPC (its method, and the bytes of its request messages) runs on its connection's
        /// event loop (`LoopTaskExecutor`: no thread switch to the handler, nor to a default actor it
        /// calls); false, the default: on Swift's global executor. For small, bounded calls only: work or
        /// a message that may be large must not hold a loop.
        public var runsOnLoop: @Sendable (_ method: MethodDescriptor, _ messageBytes: Int) -> Bool = { _, _ in false }

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
        /// The request message did not end within the engine's `requestBodyMillisMax` (DEADLINE_EXCEEDED).
        case requestTimeout
    }

    /// What a handler can learn about the transport under its RPC (`ServerContext.transportSpecific`).
    public struct Context: ServerContext.TransportSpecific {
        /// The client's connection (its TLS handler holds the verified client certificate).
        public let channel: any Channel
        /// Whether connections are TLS (`Configuration.tls`): without it there is no certificate to ask for.
        public let tls: Bool
        /// What `Configuration.clientIdentity` read as the RPC was accepted.
        public let clientIdentity: PeerIdentity
    }

    /// Whether the transport read who the client is (`Configuration.clientIdentity`), and what it found
    /// (nil: nobody, for example no certificate).
    public enum PeerIdentity: Sendable {
        case notRead
        case read(String?)
    }

    private let configuration: Configuration
    private let logger: Logger
    private let accepted: AsyncStream<Item>
    private let acceptor: AsyncStream<Item>.Continuation

    /// What the transport's task group runs: each connection's RPCs and work, in a task group of its own
    /// on the connection's event loop (`LoopTaskExecutor`), so an RPC reaches its handler, and the
    /// coordinator, without a thread switch.
    enum Item: Sendable {
        case connection(AsyncStream<ConnectionItem>, any EventLoop)
    }

    /// What a connection's task group runs: an RPC for the server, or a piece of an on-loop call's work.
    enum ConnectionItem: Sendable {
        case rpc(Accepted)
        case work(@Sendable () async -> Void)
    }
    private let state = Mutex(State())
    private let address: EventLoopPromise<SocketAddress>

    struct State {
        var listener: (any Channel)?
        var connections: [ObjectIdentifier: any Channel] = [:]
        /// Where each open connection hands its RPCs; finished when it closes or the transport shuts down.
        var rpcs: [ObjectIdentifier: AsyncStream<ConnectionItem>.Continuation] = [:]
        var shuttingDown = false
    }

    public init(configuration: Configuration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
        // Bounded by the streams the engine lets in: connections × concurrent streams each.
        (accepted, acceptor) = AsyncStream.makeStream(of: Item.self)
        address = MultiThreadedEventLoopGroup.singleton.any().makePromise(of: SocketAddress.self)
    }

    /// The address the listener bound (a port of 0 is chosen by the system), once it has.
    public var listeningAddress: SocketAddress {
        get async throws { try await address.futureResult.get() }
    }

    public func listen(streamHandler: @escaping @Sendable (RPCStream<Inbound, Outbound>, ServerContext) async -> Void) async throws {
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
                        let rpcs = track(channel)
                        try channel.pipeline.syncOperations.addHandler(H2ServerHandler(limits: limits, responder: GRPCResponder(transport: self, rpcs: rpcs),
                                                                                       logger: logger, observer: configuration.makeObserver(channel)))
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
                for await item in accepted {
                    switch item {
                    case .connection(let rpcs, let loop):
                        group.addTask(executorPreference: LoopTaskExecutor(loop)) {
                            await withDiscardingTaskGroup { connection in
                                for await item in rpcs {
                                    switch item {
                                    case .rpc(let rpc) where configuration.runsOnLoop(rpc.descriptor, rpc.messages.reduce(0) { $0 + $1.count }):
                                        connection.addTask { await Self.run(rpc, localPeer: localPeer, tls: configuration.tls, streamHandler) }
                                    case .rpc(let rpc):
                                        connection.addTask(executorPreference: globalConcurrentExecutor) {
                                            await Self.run(rpc, localPeer: localPeer, tls: configuration.tls, streamHandler)
                                        }
                                    case .work(let work): connection.addTask { await work() }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        } onCancel: {
            listener.close(promise: nil)
            finishAccepting()
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
        finishAccepting()
        // RPCs that outlast the grace period are cut: their connections close, which cancels them.
        listener.eventLoop.scheduleTask(in: .milliseconds(configuration.graceMillis)) { [self] in closeConnections() }
    }

    /// Takes no more RPCs or work: what was handed over still runs; what comes now is told the server is
    /// shutting down.
    private func finishAccepting() {
        acceptor.finish()
        for rpcs in state.withLock({ Array($0.rpcs.values) }) { rpcs.finish() }
    }

    /// Tracks `channel` until it closes, and gives it where its RPCs go: a stream run by a task group of
    /// its own on the connection's loop (finished at once when the transport no longer takes work).
    private func track(_ channel: any Channel) -> AsyncStream<ConnectionItem>.Continuation {
        let id = ObjectIdentifier(channel)
        // Bounded by the streams the engine lets in on one connection.
        let (rpcs, sink) = AsyncStream.makeStream(of: ConnectionItem.self)
        let shuttingDown = state.withLock { state in
            state.connections[id] = channel
            state.rpcs[id] = sink
            return state.shuttingDown
        }
        // Accepted as the listener closed: its RPCs are told the server is shutting down, and it is told
        // to finish (GOAWAY), as the connections open when the shutdown began were.
        if shuttingDown {
            sink.finish()
            channel.eventLoop.execute { channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent()) }
        } else if case .terminated = acceptor.yield(.connection(rpcs, channel.eventLoop)) {
            sink.finish()
        }
        channel.closeFuture.whenComplete { [self] _ in
            let closed = state.withLock { state in
                state.connections.removeValue(forKey: id)
                return state.rpcs.removeValue(forKey: id)
            }
            closed?.finish()
        }
        return sink
    }

    // MARK: One RPC

    struct Accepted: Sendable {
        let descriptor: MethodDescriptor
        let metadata: Metadata
        let messages: [[UInt8]]
        let response: H2Response
        /// `response.closed`, asked for on the loop when the RPC arrived (asked later from a task off the
        /// loop, it would cost a promise and a hop more).
        let closed: EventLoopFuture<UInt32>
        let channel: any Channel
        let clientIdentity: PeerIdentity
    }

    private static func run(_ rpc: Accepted, localPeer: String, tls: Bool,
                            _ streamHandler: @Sendable (RPCStream<Inbound, Outbound>, ServerContext) async -> Void) async {
        await withServerContextRPCCancellationHandle { handle in
            let writer = GRPCWriter(response: rpc.response)
            // A reset stream or a closed connection before the status went out cancels the RPC.
            rpc.closed.whenSuccess { _ in
                if !writer.statusSent { handle.cancel() }
            }
            let (inbound, parts) = AsyncThrowingStream.makeStream(of: RPCRequestPart<[UInt8]>.self, throwing: (any Error).self)
            parts.yield(.metadata(rpc.metadata))
            for message in rpc.messages { parts.yield(.message(message)) }
            parts.finish()
            var context = ServerContext(descriptor: rpc.descriptor, remotePeer: peer(rpc.channel.remoteAddress), localPeer: localPeer, cancellation: handle)
            context.transportSpecific = Context(channel: rpc.channel, tls: tls, clientIdentity: rpc.clientIdentity)
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
        /// The connection's RPCs and work (`track`).
        let rpcs: AsyncStream<ConnectionItem>.Continuation
        /// The method of this connection's last call (`GRPCRequest.LastMethod`).
        let lastMethod = GRPCRequest.LastMethod()

        func respond(to request: H2Request, _ response: H2Response) {
            // The engine calls its responder on the connection's loop, the only place `lastMethod` is used
            // (checked in release builds too: it is a thread-local compare).
            request.channel.eventLoop.preconditionInEventLoop()
            switch GRPCRequest.parse(head: request.head, body: request.body, messageBytesMax: transport.configuration.messageBytesMax,
                                     lastMethod: lastMethod) {
            case .notGRPC(let status):
                response.send(status: status, headers: [("content-length", "0")], body: nil)
            case .refused(let code, let message, let why):
                response.head(status: 200, headers: trailersOnly(code, message, why), body: false)
            case .rpc(let descriptor, let metadata, let messages):
                if messages.count == 1, let onLoop = transport.configuration.onLoop,
                   let answer = onLoop(OnLoopCall(descriptor: descriptor, metadata: metadata, message: messages[0], channel: request.channel,
                                                  tls: transport.configuration.tls, response: response, connection: rpcs)) {
                    return Self.send(answer, to: response)
                }
                let identity: PeerIdentity = transport.configuration.clientIdentity.map { .read($0(request.channel)) } ?? .notRead
                let rpc = Accepted(descriptor: descriptor, metadata: metadata, messages: messages, response: response, closed: response.closed,
                                   channel: request.channel, clientIdentity: identity)
                if case .terminated = rpcs.yield(.rpc(rpc)) {
                    response.head(status: 200, headers: trailersOnly(.unavailable, "the server is shutting down", .shuttingDown), body: false)
                }
            }
        }

        /// An answer made on the loop: HEADERS, the length-prefixed message and the trailers; or an error,
        /// trailers only.
        static func send(_ answer: OnLoopAnswer, to response: H2Response) {
            switch answer {
            case .message(let bytes, let trailing):
                // Whole, in one hop onto the loop, with nothing waiting on the client's window.
                response.send(status: 200, headers: GRPCRequest.headers, body: GRPCRequest.framed(bytes),
                              trailers: trailing.isEmpty ? GRPCRequest.okTrailers : GRPCRequest.okTrailers + GRPCRequest.fields(trailing))
            case .framed(let message):
                // The buffer is shared, copied on write: the engine only reads it.
                response.send(status: 200, headers: GRPCRequest.headers, body: message.buffer, trailers: GRPCRequest.okTrailers)
            case .failure(let error):
                response.head(status: 200, headers: GRPCRequest.trailersOnly(code: error.code, message: error.message) + GRPCRequest.fields(error.metadata),
                              body: false)
            case .later:
                break
            }
        }

        func refusal(status: Int) -> H2Refusal {
            if status == 431 {
                return H2Refusal(status: 200, headers: trailersOnly(.resourceExhausted, "the request's header list is over the server's limit", .headersTooLarge))
            }
            if status == 408 {
                return H2Refusal(status: 200, headers: trailersOnly(.deadlineExceeded, "the request message did not arrive within \(transport.configuration.limits.requestBodyMillisMax ?? 0) ms of its head", .requestTimeout))
            }
            return H2Refusal(status: 200, headers: trailersOnly(.resourceExhausted, "the request message is over the limit of \(transport.configuration.messageBytesMax) bytes",
                                                                .messageTooLarge))
        }

        private func trailersOnly(_ code: RPCError.Code, _ message: String, _ why: Refusal) -> [(String, String)] {
            guard let stable = transport.configuration.refusalCode(why) else { return GRPCRequest.trailersOnly(code: code, message: message) }
            return GRPCRequest.trailersOnly(code: code, message: "\(stable): \(message)") + [(transport.configuration.errorCodeTrailer, stable)]
        }
    }
}
