import HummingbirdCore
import LockstepH2
import Logging
import NIOCore
import NIOSSL
import NIOTLS

/// One port for HTTP/1.1 and HTTP/2. HTTP/1.1 runs on Hummingbird's `HTTP1Channel`; HTTP/2 runs on the
/// engine (`H2ServerHandler` over libnghttp2), with no channel per stream. Plaintext connections are
/// told apart by their first bytes (the h2c preface, `H2CPriorKnowledgeSniffingHandler`, which replays
/// what it read, so libnghttp2 sees the preface); TLS connections by ALPN (`h2`, else HTTP/1.1). Both
/// versions serve the one route table: Hummingbird's responder for HTTP/1.1, `JSONOnEngine` over the
/// same router for HTTP/2.
package struct HTTP1AndEngineChannel: HTTPChannelHandler {
    package enum Value: ServerChildChannelValue {
        case http1(HTTP1Channel.Value)
        /// An HTTP/2 connection on the engine, and the work of its requests.
        case engine(any Channel, AsyncStream<@Sendable () async -> Void>)
        case pending(EventLoopFuture<Value>, any Channel)

        package var channel: any Channel {
            switch self {
            case .http1(let value): value.channel
            case .engine(let channel, _), .pending(_, let channel): channel
            }
        }
    }

    private let http1: HTTP1Channel
    /// The engine for one connection (its limits, the JSON responder handing its requests' work to
    /// the given continuation, the connection's stream observer).
    private let makeEngine: @Sendable (any Channel, JSONOnEngine.Work) throws -> H2ServerHandler
    private let tls: NIOSSLContext?
    /// How long a plaintext connection may take to send enough bytes to tell its protocol.
    private let prefaceReadTimeout: TimeAmount
    /// How long a connection may stay open once a graceful shutdown began (`ShutdownGraceCloser`).
    private let shutdownGrace: TimeAmount

    package var responder: Responder { http1.responder }

    package init(responder: @escaping Responder, http1: HTTP1Channel.Configuration, tls: NIOSSLContext?, prefaceReadTimeout: TimeAmount,
                 shutdownGrace: TimeAmount, makeEngine: @escaping @Sendable (any Channel, JSONOnEngine.Work) throws -> H2ServerHandler) {
        self.http1 = HTTP1Channel(responder: responder, configuration: http1)
        self.makeEngine = makeEngine
        self.tls = tls
        self.prefaceReadTimeout = prefaceReadTimeout
        self.shutdownGrace = shutdownGrace
    }

    package func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        channel.eventLoop.makeCompletedFuture {
            // First, before TLS and the protocol's choice: it sees a shutdown however far the connection
            // got (a TLS handshake still running passes the event on unbuffered), and its close does not
            // wait for a TLS close_notify the stalled client would never answer.
            try channel.pipeline.syncOperations.addHandler(ShutdownGraceCloser(grace: shutdownGrace, logger: logger))
            let decided: EventLoopFuture<Value>
            if let tls {
                try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls))
                let alpn = NIOTypedApplicationProtocolNegotiationHandler<Value> { result, channel in
                    if case .negotiated("h2") = result { return configureEngine(channel) }
                    return configureHTTP1(channel, logger: logger)
                }
                try channel.pipeline.syncOperations.addHandler(alpn)
                decided = alpn.protocolNegotiationResult
            } else {
                let sniffer = H2CPriorKnowledgeSniffingHandler<Value>(eventLoop: channel.eventLoop, timeout: prefaceReadTimeout) { detected, channel in
                    switch detected {
                    case .http1: configureHTTP1(channel, logger: logger)
                    case .http2: configureEngine(channel)
                    }
                }
                do {
                    try channel.pipeline.syncOperations.addHandler(sniffer)
                } catch {
                    sniffer.notAdded(error)
                    throw error
                }
                decided = sniffer.protocolNegotiationResult
            }
            return .pending(decided, channel)
        }
    }

    private func configureHTTP1(_ channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        http1.setup(channel: channel, logger: logger).map { .http1($0) }
    }

    private func configureEngine(_ channel: any Channel) -> EventLoopFuture<Value> {
        channel.eventLoop.makeCompletedFuture {
            // At most one entry per stream the engine lets run at once, so the buffer is bounded by the
            // engine's stream limit, not by this stream.
            let (requests, work) = AsyncStream.makeStream(of: (@Sendable () async -> Void).self)
            try channel.pipeline.syncOperations.addHandler(try makeEngine(channel, work))
            try channel.pipeline.syncOperations.handler(type: ShutdownGraceCloser.self).engineServes()
            channel.closeFuture.whenComplete { _ in work.finish() }
            return .engine(channel, requests)
        }
    }

    /// HTTP/1.1 is served by Hummingbird's loop over the connection's requests; an HTTP/2 connection's
    /// requests run here, in a task group that ends once the connection has closed and its last
    /// request has ended (a parked poll ends when its stream does).
    package func handle(value: Value, logger: Logger) async {
        switch value {
        case .http1(let http1):
            await self.http1.handle(value: http1, logger: logger)
        case .engine(let channel, let requests):
            // On the connection's own loop: a request reaches its route, and the coordinator, on the
            // thread that read it (`LoopTaskExecutor`).
            await withTaskExecutorPreference(LoopTaskExecutor(channel.eventLoop)) {
                await withDiscardingTaskGroup { group in
                    for await work in requests { group.addTask { await work() } }
                }
            }
        case .pending(let decided, _):
            do {
                let value = try await decided.get()
                if case .pending = value { return }
                await handle(value: value, logger: logger)
            } catch {
                logger.debug("closing a connection before its HTTP version was known: \(error)")
            }
        }
    }
}
