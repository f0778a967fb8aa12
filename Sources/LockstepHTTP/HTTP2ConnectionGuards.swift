import HummingbirdCore
import Logging
import NIOCore
import NIOHTTP2
import LockstepService

/// Closes an HTTP/2 connection that has had no open stream for `limit`. Hummingbird's idle timeout
/// sends GOAWAY and a PING and then waits for the PING's acknowledgement, which a client that reads
/// nothing never sends: this is the backstop that closes such a connection outright (its limit is the
/// idle timeout plus a grace period, so a cooperating client closes first). Sits on the connection;
/// its streams' `HTTP2StreamTracker`s tell it when they open and close.
///
/// It also counts the streams its connection's peer resets against the peer's budget in the gate, and
/// closes the connection once the peer is over it (rapid reset across reconnections).
package final class HTTP2IdleBackstop: ChannelInboundHandler, RemovableChannelHandler {
    package typealias InboundIn = NIOAny
    package typealias InboundOut = NIOAny

    private let limit: TimeAmount
    private let gate: ConnectionGate?
    private let peer: String
    private let overBudget: @Sendable () -> Void
    private var open = 0
    private var timer: Scheduled<Void>?
    /// Unarmed until a first stream opens (on a connection whose protocol is not known yet: TLS ALPN).
    package var armsOnFirstStream = false

    package init(limit: TimeAmount, gate: ConnectionGate? = nil, peer: String = "", overBudget: @escaping @Sendable () -> Void = {}) {
        self.limit = limit
        self.gate = gate
        self.peer = peer
        self.overBudget = overBudget
    }

    package func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if !armsOnFirstStream { arm(context) }
    }

    package func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        self.context = nil
    }

    package func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.fireChannelRead(data)
    }

    /// A stream of this connection opened (told by its `HTTP2StreamTracker`, on this event loop: the
    /// inline stream multiplexer keeps stream events from the connection's pipeline).
    package func streamOpened() {
        open += 1
        timer?.cancel()
        timer = nil
    }

    /// A stream of this connection closed, reset if `reset`.
    package func streamClosed(reset: Bool) {
        guard let context else { return }
        open = max(0, open - 1)
        if open == 0 { arm(context) }
        if reset, let gate, gate.noteReset(peer: peer) {
            overBudget()
            context.close(promise: nil)
        }
    }

    private var context: ChannelHandlerContext?

    package func channelInactive(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        context.fireChannelInactive()
    }

    private func arm(_ context: ChannelHandlerContext) {
        timer?.cancel()
        timer = context.eventLoop.assumeIsolated().scheduleTask(in: limit) { context.close(promise: nil) }
    }
}

/// Sits on each HTTP/2 stream and tells its connection's `HTTP2IdleBackstop` (if it has one) that the
/// stream opened and how it closed (a reset counts against the peer's reset budget).
package final class HTTP2StreamTracker: ChannelInboundHandler, RemovableChannelHandler {
    package init() {}

    package typealias InboundIn = NIOAny
    package typealias InboundOut = NIOAny

    private var backstop: HTTP2IdleBackstop?
    private var closed = false
    /// Whether the peer reset this stream (NIOHTTP2 tells the stream channel with an error before it
    /// becomes inactive).
    private var resetByPeer = false

    package func handlerAdded(context: ChannelHandlerContext) {
        // On an HTTP/2 stream the parent is its connection, on the same event loop. (Over TLS the same
        // handlers also sit on HTTP/1.1 connections, whose parent is the listener, elsewhere: nothing to tell.)
        guard let parent = context.channel.parent, parent.eventLoop.inEventLoop else { return }
        backstop = try? parent.pipeline.syncOperations.handler(type: HTTP2IdleBackstop.self)
        backstop?.streamOpened()
    }

    package func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.fireChannelRead(data)
    }

    package func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? StreamClosedEvent { close(reset: event.reason != nil) }
        context.fireUserInboundEventTriggered(event)
    }

    package func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if error is NIOHTTP2Errors.StreamClosed { resetByPeer = true }
        context.fireErrorCaught(error)
    }

    package func channelInactive(context: ChannelHandlerContext) {
        close(reset: resetByPeer)
        context.fireChannelInactive()
    }

    package func handlerRemoved(context: ChannelHandlerContext) {
        close(reset: resetByPeer)
    }

    private func close(reset: Bool) {
        guard !closed else { return }
        closed = true
        backstop?.streamClosed(reset: reset)
    }
}

/// Hummingbird's TLS channel (HTTP/1.1 and h2 by ALPN) with an `HTTP2IdleBackstop` on each connection,
/// so h2 over TLS counts stream resets against the peer's budget like h2c and gRPC. The protocol is only
/// known after the handshake, so the backstop starts unarmed and arms once an HTTP/2 stream has been
/// seen (an HTTP/1.1 connection never arms it, and keeps Hummingbird's own idle handling).
package struct GuardedHTTPChannel<Inner: HTTPChannelHandler>: HTTPChannelHandler {
    package typealias Value = Inner.Value
    package let inner: Inner
    package let makeBackstop: @Sendable (any Channel) -> HTTP2IdleBackstop

    package var responder: Responder { inner.responder }

    package func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        inner.setup(channel: channel, logger: logger).flatMapThrowing { value in
            let backstop = makeBackstop(channel)
            backstop.armsOnFirstStream = true
            try channel.pipeline.syncOperations.addHandler(backstop)
            return value
        }
    }

    package func handle(value: Value, logger: Logger) async {
        await inner.handle(value: value, logger: logger)
    }

    package init(inner: Inner, makeBackstop: @escaping @Sendable (any Channel) -> HTTP2IdleBackstop) {
        self.inner = inner
        self.makeBackstop = makeBackstop
    }
}
