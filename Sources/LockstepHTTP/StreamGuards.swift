import Logging
import HTTPTypes
import NIOCore
import NIOHTTPTypes
import LockstepH2
import LockstepService

/// Closes a channel that has been unwritable (its peer not reading what it was sent) for longer than
/// `limit`: a watch or export to a reader that stopped reading holds one flow-control window and then
/// this long, no more. On HTTP/2 it sits on each stream, so only the stalled stream is reset.
package final class StalledReaderCutoff: ChannelInboundHandler, RemovableChannelHandler {
    package typealias InboundIn = NIOAny
    package typealias InboundOut = NIOAny

    private let limit: TimeAmount
    private let cut: @Sendable () -> Void
    private var timer = ConnectionTimer()

    package init(limit: TimeAmount, cut: @escaping @Sendable () -> Void) {
        self.limit = limit
        self.cut = cut
    }

    package func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.fireChannelRead(data)
    }

    package func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            timer.cancel()
        } else if !timer.isArmed {
            let cut = self.cut
            timer.arm(context.eventLoop.assumeIsolated().scheduleTask(in: limit) {
                cut()
                context.close(promise: nil)
            })
        }
        context.fireChannelWritabilityChanged()
    }

    package func channelInactive(context: ChannelHandlerContext) {
        timer.cancel()
        context.fireChannelInactive()
    }

    package func handlerRemoved(context: ChannelHandlerContext) { timer.cancel() }
}

/// Closes a JSON-port connection still open `grace` after a graceful shutdown began
/// (`ChannelShouldQuiesceEvent`), whatever it has in flight. Hummingbird closes an HTTP/1.1 connection
/// once its request in flight is answered; a watch or an export whose client reads nothing is never
/// answered to the end, and would hold the shutdown until the stalled-reader cut.
/// Sits first in the connection's pipeline, before TLS: it sees the event before any handler that keeps
/// or drops it (a TLS handshake still running passes it on unbuffered), and its close skips the TLS
/// close_notify. On a connection the HTTP/2 engine serves, the engine closes at the same grace itself,
/// draining what it can (`H2Limits.shutdownGraceMillis`): there this waits `engineBackstop` longer, for
/// an event the engine never saw (one that arrived during the handshake).
package final class ShutdownGraceCloser: ChannelInboundHandler, RemovableChannelHandler {
    package typealias InboundIn = NIOAny
    package typealias InboundOut = NIOAny

    private var grace: TimeAmount
    private let logger: Logger
    private var timer = ConnectionTimer()
    /// How much later than the grace it closes a connection the HTTP/2 engine serves (past the engine's
    /// own close and its linger).
    static let engineBackstop = TimeAmount.seconds(3)

    package init(grace: TimeAmount, logger: Logger) {
        self.grace = grace
        self.logger = logger
    }

    package func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ChannelShouldQuiesceEvent, !timer.isArmed {
            let grace = self.grace, logger = self.logger
            timer.arm(context.eventLoop.assumeIsolated().scheduleTask(in: grace) {
                // (A timer already taken off the queue runs even if cancelled in the same pass.)
                guard context.channel.isActive else { return }
                logger.notice("closing a connection still open \(grace.nanoseconds / 1_000_000) ms after the shutdown began (shutdown_grace)")
                context.close(promise: nil)
            })
        }
        context.fireUserInboundEventTriggered(event)
    }

    package func channelInactive(context: ChannelHandlerContext) {
        timer.cancel()
        context.fireChannelInactive()
    }

    package func handlerRemoved(context: ChannelHandlerContext) { timer.cancel() }

    /// The connection is now served by the HTTP/2 engine, which closes it at the grace itself: unless
    /// the shutdown already began, this closes it only `engineBackstop` after the grace.
    package func engineServes() {
        if !timer.isArmed { grace = grace + Self.engineBackstop }
    }
}

/// Closes the connection (HTTP/1.1) or resets the stream (HTTP/2) right after a `413` or `408` answer
/// is written, so the rest of a body that was refused is not read: the client is told to stop, and the
/// server does not drain megabytes it has already said no to. Sits after the HTTP codec.
package final class RefusedBodyCloser: ChannelOutboundHandler, RemovableChannelHandler {
    package init() {}

    package typealias OutboundIn = HTTPResponsePart
    package typealias OutboundOut = HTTPResponsePart

    private var closeAfterEnd = false

    package func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case .head(let head):
            closeAfterEnd = head.status.code == 413 || head.status.code == 408
            context.write(data, promise: promise)
        case .body:
            context.write(data, promise: promise)
        case .end:
            guard closeAfterEnd else { return context.write(data, promise: promise) }
            closeAfterEnd = false
            writeThenClose(context, data, promise: promise)
        }
    }
}

/// Writes and flushes `data` (an answer's last part) from `context`, and closes its channel (the
/// connection, or the HTTP/2 stream) once it is written, whether or not the write succeeded.
func writeThenClose(_ context: ChannelHandlerContext, _ data: NIOAny, promise: EventLoopPromise<Void>?) {
    let written = context.eventLoop.makePromise(of: Void.self)
    written.futureResult.cascade(to: promise)
    context.writeAndFlush(data, promise: written)
    let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
    written.futureResult.whenComplete { _ in loopBound.value.close(promise: nil) }
}

/// A connection handler's one timer: armed once, cancelled when the connection or the handler goes.
struct ConnectionTimer {
    private var scheduled: Scheduled<Void>?
    var isArmed: Bool { scheduled != nil }
    mutating func arm(_ timer: Scheduled<Void>) { scheduled = timer }
    mutating func cancel() {
        scheduled?.cancel()
        scheduled = nil
    }
}

/// Holds an HTTP/1.1 request's header list to the limits the HTTP/2 engine holds one to
/// (`H2Limits.headerListBytesMax`, `headerFieldsMax`, counted as RFC 9113 §6.5.2 counts a list, the
/// method, target and authority as its pseudo-headers): over them, the request is answered 431 with the
/// `ErrorBody` the engine sends, its body is not read, and the connection closes. (swift-nio's decoder
/// itself answers 400 and closes past about 80 KiB of head, before this sees it.) Sits after the codec.
/// (Inbound only: its refusal is written from its place, so the responses it lets through pass it by.)
package final class HeaderListLimit: ChannelInboundHandler, RemovableChannelHandler {
    package typealias InboundIn = HTTPRequestPart
    package typealias InboundOut = HTTPRequestPart

    private let limits: H2Limits
    private let refusalBody: ByteBuffer
    /// A request was refused: the connection is closing, and every part after it (the rest of that
    /// request, and any request pipelined behind it) is dropped.
    private var refusing = false

    package init(limits: H2Limits, refusalBody: ByteBuffer) {
        self.limits = limits
        self.refusalBody = refusalBody
    }

    /// Whether `request`'s list is within the limits, counted field by field as the engine counts a block
    /// (`H2HeaderBudget`), the method, target and authority as its pseudo-headers.
    package static func fits(_ request: HTTPRequest, limits: H2Limits) -> Bool {
        var budget = H2HeaderBudget()
        func keeps(_ name: Int, _ value: Int) -> Bool { budget.count(nameBytes: name, valueBytes: value, limits: limits) == .keep }
        guard keeps(7, request.method.rawValue.utf8.count), keeps(5, request.path?.utf8.count ?? 0) else { return false }
        if let authority = request.authority, !keeps(10, authority.utf8.count) { return false }
        return request.headerFields.allSatisfy { keeps($0.name.rawName.utf8.count, $0.value.utf8.count) }
    }

    package func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !refusing else { return }
        switch unwrapInboundIn(data) {
        case .head(let request):
            guard !Self.fits(request, limits: limits) else { return context.fireChannelRead(data) }
            refusing = true
            var head = HTTPResponse(status: .init(code: 431))
            head.headerFields[.contentType] = "application/json"
            head.headerFields[.contentLength] = String(refusalBody.readableBytes)
            head.headerFields[.connection] = "close"
            context.write(NIOAny(HTTPResponsePart.head(head)), promise: nil)
            context.write(NIOAny(HTTPResponsePart.body(refusalBody)), promise: nil)
            writeThenClose(context, NIOAny(HTTPResponsePart.end(nil)), promise: nil)
        case .body, .end:
            context.fireChannelRead(data)
        }
    }
}
