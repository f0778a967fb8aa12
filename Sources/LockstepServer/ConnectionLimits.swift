#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import HummingbirdCore
import Logging
import NIOCore
import NIOHTTP2
import NIOHTTPTypes
import Synchronization

/// Open connections on both listeners, overall and per peer address, and the refusal of those over
/// the limits. One gate serves both listeners, so the overall limit is the process's.
///
/// A refused connection is accepted and closed at once (before any byte is read), counted in
/// `lockstep_connections_refused_total{reason}` and logged (at most once a second, with how many were
/// refused since the last line), so an operator sees why a client could not connect.
final class ConnectionGate: Sendable {
    enum Refusal: String, Sendable {
        case overall = "connections_max"
        case perPeer = "connections_per_peer_max"
        case resets = "stream_resets_per_peer_max"
    }

    struct Limits: Hashable, Sendable {
        /// Most connections open at once on both listeners together.
        var connectionsMax: Int
        /// Most connections open at once from one peer address (IP, whatever the port).
        var connectionsPerPeerMax: Int
        /// Most HTTP/2 streams one peer address may reset (or have reset) in `resetWindow`, over all its
        /// connections: past it the peer's connections are closed and new ones refused until the window
        /// ends. NIOHTTP2 limits resets per connection; this is the budget a client cannot escape by
        /// reconnecting (rapid reset, CVE-2023-44487).
        var streamResetsPerPeerMax = 1_000
        var resetWindow: Duration = .seconds(10)
    }

    private struct ResetCount {
        var since: ContinuousClock.Instant
        var count: Int
    }

    private struct State {
        var open = 0
        var perPeer: [String: Int] = [:]
        var refusedSinceLog = 0
        var lastLog: ContinuousClock.Instant?
        /// Resets per peer in the current window; peers over budget, until when.
        var resets: [String: ResetCount] = [:]
        var penalized: [String: ContinuousClock.Instant] = [:]
    }

    /// Peers tracked for resets at most; expired entries are dropped past it.
    static let resetPeersTrackedMax = 4_096

    let limits: Limits
    private let state = Mutex(State())

    init(limits: Limits) { self.limits = limits }

    /// Connections open now (admitted and not yet closed).
    var openCount: Int { state.withLock { $0.open } }

    /// Admits a connection from `peer` (counted until `release`), or says why not.
    func admit(peer: String, now: ContinuousClock.Instant = .now) -> Refusal? {
        state.withLock { state in
            if let until = state.penalized[peer] {
                if now < until { return .resets }
                state.penalized[peer] = nil
            }
            if state.open >= limits.connectionsMax { return .overall }
            let fromPeer = state.perPeer[peer, default: 0]
            if fromPeer >= limits.connectionsPerPeerMax { return .perPeer }
            state.open += 1
            state.perPeer[peer] = fromPeer + 1
            return nil
        }
    }

    /// Counts a stream of `peer` closed by a reset; true when the peer is over its budget now (its
    /// connections should close; new ones are refused until its window ends).
    func noteReset(peer: String, now: ContinuousClock.Instant = .now) -> Bool {
        state.withLock { state in
            if let until = state.penalized[peer], now < until { return true }
            var entry = state.resets[peer] ?? ResetCount(since: now, count: 0)
            if now - entry.since >= limits.resetWindow { entry = ResetCount(since: now, count: 0) }
            entry.count += 1
            state.resets[peer] = entry
            if state.resets.count > Self.resetPeersTrackedMax {
                let window = limits.resetWindow
                state.resets = state.resets.filter { now - $0.value.since < window }
                state.penalized = state.penalized.filter { now < $0.value }
            }
            guard entry.count > limits.streamResetsPerPeerMax else { return false }
            state.penalized[peer] = entry.since + limits.resetWindow
            state.resets[peer] = nil
            return true
        }
    }

    /// Ends the count of a connection `admit` let in.
    func release(peer: String) {
        state.withLock { state in
            state.open -= 1
            let left = state.perPeer[peer, default: 1] - 1
            state.perPeer[peer] = left > 0 ? left : nil
        }
    }

    /// Whether a refusal should be logged now (at most once a second), and how many were refused since
    /// the last line, this one included.
    func refusalToLog(now: ContinuousClock.Instant) -> Int? {
        state.withLock { state in
            state.refusedSinceLog += 1
            if let last = state.lastLog, now - last < .seconds(1) { return nil }
            state.lastLog = now
            defer { state.refusedSinceLog = 0 }
            return state.refusedSinceLog
        }
    }
}

/// Sits first on a listening channel: every accepted connection passes through `channelRead`, where the
/// gate admits it (and releases it when it closes) or it is closed at once.
final class ConnectionAdmission: ChannelInboundHandler, Sendable {
    typealias InboundIn = any Channel
    typealias InboundOut = any Channel

    let gate: ConnectionGate
    let listener: String
    let logger: Logger
    let refused: @Sendable (ConnectionGate.Refusal) -> Void

    init(gate: ConnectionGate, listener: String, logger: Logger, refused: @escaping @Sendable (ConnectionGate.Refusal) -> Void) {
        self.gate = gate
        self.listener = listener
        self.logger = logger
        self.refused = refused
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let child = unwrapInboundIn(data)
        let peer = child.remoteAddress?.ipAddress ?? "unknown"
        if let refusal = gate.admit(peer: peer) {
            refused(refusal)
            if let count = gate.refusalToLog(now: .now) {
                let limit = switch refusal {
                case .overall: gate.limits.connectionsMax
                case .perPeer: gate.limits.connectionsPerPeerMax
                case .resets: gate.limits.streamResetsPerPeerMax
                }
                logger.warning("refused \(count) connection(s) on the \(listener) listener, the last from \(peer): \(refusal.rawValue) (\(limit)) reached")
            }
            // Closed before it is registered: no pipeline is set up for it and nothing is read from it.
            child.eventLoop.execute { child.close(promise: nil) }
            return
        }
        let gate = self.gate
        child.closeFuture.whenComplete { _ in gate.release(peer: peer) }
        context.fireChannelRead(data)
    }
}

/// Closes a channel that has been unwritable (its peer not reading what it was sent) for longer than
/// `limit`: a watch or export to a reader that stopped reading holds one flow-control window and then
/// this long, no more. On HTTP/2 it sits on each stream, so only the stalled stream is reset.
final class StalledReaderCutoff: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny
    typealias InboundOut = NIOAny

    private let limit: TimeAmount
    private let cut: @Sendable () -> Void
    private var timer: Scheduled<Void>?

    init(limit: TimeAmount, cut: @escaping @Sendable () -> Void) {
        self.limit = limit
        self.cut = cut
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.fireChannelRead(data)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            timer?.cancel()
            timer = nil
        } else if timer == nil {
            let cut = self.cut
            timer = context.eventLoop.assumeIsolated().scheduleTask(in: limit) {
                cut()
                context.close(promise: nil)
            }
        }
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
    }
}

/// The process's open-file limit: raised to the hard limit at start, since every connection is a file.
enum OpenFileLimit {
    /// The soft and hard limits after raising the soft one to the hard one (as far as the system allows).
    static func raise() -> (soft: UInt64, hard: UInt64)? {
        var limit = rlimit()
        #if canImport(Glibc)
        let resource = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
        #else
        let resource = RLIMIT_NOFILE
        #endif
        guard getrlimit(resource, &limit) == 0 else { return nil }
        if limit.rlim_cur < limit.rlim_max {
            var raised = limit
            raised.rlim_cur = limit.rlim_max
            if setrlimit(resource, &raised) == 0 { limit = raised }
        }
        return (UInt64(limit.rlim_cur), UInt64(limit.rlim_max))
    }

    /// Descriptors kept back from connections for the log, snapshots, handlers' pipes and the runtime.
    static let reserve = 256

    /// The connection limit that fits under `soft` open files with the reserve kept.
    static func connectionsFitting(soft: UInt64, configured: Int) -> Int {
        let room = soft > UInt64(reserve) ? Int(clamping: soft - UInt64(reserve)) : 1
        return max(1, min(configured, room))
    }
}

/// Closes an HTTP/2 connection that has had no open stream for `limit`. Hummingbird's idle timeout
/// sends GOAWAY and a PING and then waits for the PING's acknowledgement, which a client that reads
/// nothing never sends: this is the backstop that closes such a connection outright (its limit is the
/// idle timeout plus a grace period, so a cooperating client closes first). Sits on the connection;
/// its streams' `HTTP2StreamTracker`s tell it when they open and close.
///
/// It also counts the streams its connection's peer resets against the peer's budget in the gate, and
/// closes the connection once the peer is over it (rapid reset across reconnections).
final class HTTP2IdleBackstop: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny
    typealias InboundOut = NIOAny

    private let limit: TimeAmount
    private let gate: ConnectionGate?
    private let peer: String
    private let overBudget: @Sendable () -> Void
    private var open = 0
    private var timer: Scheduled<Void>?
    /// Unarmed until a first stream opens (on a connection whose protocol is not known yet: TLS ALPN).
    var armsOnFirstStream = false

    init(limit: TimeAmount, gate: ConnectionGate? = nil, peer: String = "", overBudget: @escaping @Sendable () -> Void = {}) {
        self.limit = limit
        self.gate = gate
        self.peer = peer
        self.overBudget = overBudget
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if !armsOnFirstStream { arm(context) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        self.context = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.fireChannelRead(data)
    }

    /// A stream of this connection opened (told by its `HTTP2StreamTracker`, on this event loop: the
    /// inline stream multiplexer keeps stream events from the connection's pipeline).
    func streamOpened() {
        open += 1
        timer?.cancel()
        timer = nil
    }

    /// A stream of this connection closed, reset if `reset`.
    func streamClosed(reset: Bool) {
        guard let context else { return }
        open = max(0, open - 1)
        if open == 0 { arm(context) }
        if reset, let gate, gate.noteReset(peer: peer) {
            overBudget()
            context.close(promise: nil)
        }
    }

    private var context: ChannelHandlerContext?

    func channelInactive(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        context.fireChannelInactive()
    }

    private func arm(_ context: ChannelHandlerContext) {
        timer?.cancel()
        timer = context.eventLoop.assumeIsolated().scheduleTask(in: limit) { context.close(promise: nil) }
    }
}

/// Closes the connection (HTTP/1.1) or resets the stream (HTTP/2) right after a `413` or `408` answer
/// is written, so the rest of a body that was refused is not read: the client is told to stop, and the
/// server does not drain megabytes it has already said no to. Sits after the HTTP codec.
final class RefusedBodyCloser: ChannelOutboundHandler, RemovableChannelHandler {
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    private var closeAfterEnd = false

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case .head(let head):
            closeAfterEnd = head.status.code == 413 || head.status.code == 408
            context.write(data, promise: promise)
        case .body:
            context.write(data, promise: promise)
        case .end:
            guard closeAfterEnd else { return context.write(data, promise: promise) }
            closeAfterEnd = false
            let written = context.eventLoop.makePromise(of: Void.self)
            written.futureResult.cascade(to: promise)
            context.writeAndFlush(data, promise: written)
            let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
            written.futureResult.whenComplete { _ in loopBound.value.close(promise: nil) }
        }
    }
}

/// Sits on each HTTP/2 stream and tells its connection's `HTTP2IdleBackstop` (if it has one) that the
/// stream opened and how it closed (a reset counts against the peer's reset budget).
final class HTTP2StreamTracker: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny
    typealias InboundOut = NIOAny

    private var backstop: HTTP2IdleBackstop?
    private var closed = false
    /// Whether the peer reset this stream (NIOHTTP2 tells the stream channel with an error before it
    /// becomes inactive).
    private var resetByPeer = false

    func handlerAdded(context: ChannelHandlerContext) {
        // On an HTTP/2 stream the parent is its connection, on the same event loop. (Over TLS the same
        // handlers also sit on HTTP/1.1 connections, whose parent is the listener, elsewhere: nothing to tell.)
        guard let parent = context.channel.parent, parent.eventLoop.inEventLoop else { return }
        backstop = try? parent.pipeline.syncOperations.handler(type: HTTP2IdleBackstop.self)
        backstop?.streamOpened()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.fireChannelRead(data)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? StreamClosedEvent { close(reset: event.reason != nil) }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if error is NIOHTTP2Errors.StreamClosed { resetByPeer = true }
        context.fireErrorCaught(error)
    }

    func channelInactive(context: ChannelHandlerContext) {
        close(reset: resetByPeer)
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
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
struct GuardedHTTPChannel<Inner: HTTPChannelHandler>: HTTPChannelHandler {
    typealias Value = Inner.Value
    let inner: Inner
    let makeBackstop: @Sendable (any Channel) -> HTTP2IdleBackstop

    var responder: Responder { inner.responder }

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        inner.setup(channel: channel, logger: logger).flatMapThrowing { value in
            let backstop = makeBackstop(channel)
            backstop.armsOnFirstStream = true
            try channel.pipeline.syncOperations.addHandler(backstop)
            return value
        }
    }

    func handle(value: Value, logger: Logger) async {
        await inner.handle(value: value, logger: logger)
    }
}
