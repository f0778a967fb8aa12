//
// HTTP/1.1 and HTTP/2 with prior knowledge (h2c) on one plaintext port.
//
// `H2CPriorKnowledgeSniffingHandler` looks at the first bytes of a connection and compares them with
// the HTTP/2 client connection preface ("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", RFC 9113 section 3.4):
//   * the first byte that differs from the preface          -> HTTP/1.1 (Hummingbird's HTTP1Channel)
//   * all 24 preface bytes received                         -> HTTP/2 (the engine, LockstepH2)
//   * only a prefix of the preface received so far          -> keep waiting
// It then configures the pipeline for that protocol, replays the bytes it held back (so libnghttp2
// sees the preface), and removes itself. Connections that don't decide within `prefaceReadTimeout`
// are closed. `HTTP1AndEngineChannel` uses it; over TLS, ALPN decides instead.
//
// Note: HTTP/1.1 `Upgrade: h2c` (RFC 7540 section 3.2, removed in RFC 9113) is NOT supported.
// Such requests are answered over HTTP/1.1, and the Upgrade header is ignored.

import HummingbirdCore
import Logging
import NIOCore
import LockstepService

// MARK: - Sniffing handler

/// The protocol detected by ``H2CPriorKnowledgeSniffingHandler``.
public enum H2CSniffedProtocol: Sendable, Hashable {
    /// The first bytes were not the HTTP/2 connection preface.
    case http1
    /// The connection started with the 24-byte HTTP/2 client connection preface.
    case http2
}

/// Errors used to fail ``H2CPriorKnowledgeSniffingHandler/protocolNegotiationResult``.
public enum H2CSniffingError: Error, Sendable, Hashable {
    /// The connection sent no decidable bytes within the configured timeout.
    case prefaceReadTimeout
    /// The peer half-closed its side of the connection before the protocol could be decided.
    case inputClosedBeforeDetection
    /// The connection closed before the protocol could be decided.
    case connectionClosedBeforeDetection
    /// The server started quiescing (graceful shutdown) before the protocol was decided.
    case serverQuiescing
    /// The handler was removed from the pipeline before the protocol was decided.
    case handlerRemovedBeforeDetection
}

/// A `ChannelInboundHandler` that tells plaintext HTTP/1.x apart from HTTP/2 "prior knowledge" (h2c)
/// by checking for the HTTP/2 client connection preface. It works like NIO's
/// `NIOTypedApplicationProtocolNegotiationHandler`, but it is triggered by the bytes it reads, not by a
/// TLS ALPN event.
///
/// Put it before the protocol handlers (handlers that pass everything on may precede it). When the protocol is known, it calls
/// `configurator`, which must add the protocol handlers after it (for example
/// `pipeline.syncOperations.addHandler(...)`, which appends). When the returned future succeeds, the handler
/// succeeds ``protocolNegotiationResult``, replays every inbound read and user event it held back in
/// order, sends `channelReadComplete`, and removes itself.
///
/// At most 24 bytes are inspected. Reads are held back as they arrived (they are not copied or
/// merged), and the first non-matching byte ends the sniff, so memory use stays bounded.
public final class H2CPriorKnowledgeSniffingHandler<Output: Sendable>: ChannelInboundHandler, RemovableChannelHandler {
    public typealias InboundIn = ByteBuffer
    public typealias InboundOut = ByteBuffer

    /// The HTTP/2 client connection preface, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".
    public static var http2ClientPreface: [UInt8] { Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8) }

    /// An inbound event that arrived before the new pipeline was ready and must be replayed.
    private enum BufferedEvent {
        case read(NIOAny)
        case userEvent(Any)
    }

    private enum State {
        /// Still reading the preface. `matched` counts the preface bytes seen so far.
        case sniffing(matched: Int, buffered: [BufferedEvent])
        /// The protocol is decided and the configurator future has not completed yet.
        case configuring(buffered: [BufferedEvent])
        /// The held-back events are being replayed.
        case unbuffering
        /// Finished: the promise is complete and the handler is removed or being removed.
        case done
    }

    private let preface: [UInt8] = H2CPriorKnowledgeSniffingHandler.http2ClientPreface
    private let timeout: TimeAmount?
    private let configurator: (H2CSniffedProtocol, any Channel) -> EventLoopFuture<Output>
    private let promise: EventLoopPromise<Output>
    private var state: State = .sniffing(matched: 0, buffered: [])
    private var timeoutTask: Scheduled<Void>?

    /// A future that completes with the configurator's result after the protocol is detected and the pipeline is
    /// configured. It fails if detection or configuration fails, or if the connection closes first.
    public var protocolNegotiationResult: EventLoopFuture<Output> {
        self.promise.futureResult
    }

    /// - Parameters:
    ///   - eventLoop: The channel's event loop (used to create ``protocolNegotiationResult``).
    ///   - timeout: How long to wait for enough bytes to decide before closing the connection. `nil` waits forever.
    ///   - configurator: Called once, on the event loop, with the detected protocol. It must configure the pipeline
    ///     and return a future that completes when that is done.
    public init(
        eventLoop: any EventLoop,
        timeout: TimeAmount?,
        configurator: @escaping (H2CSniffedProtocol, any Channel) -> EventLoopFuture<Output>
    ) {
        self.promise = eventLoop.makePromise(of: Output.self)
        self.timeout = timeout
        self.configurator = configurator
    }

    // MARK: Lifecycle

    public func handlerAdded(context: ChannelHandlerContext) {
        guard let timeout = self.timeout else { return }
        // The timer can start before the channel is active; the connection has been accepted at this point.
        self.timeoutTask = context.eventLoop.assumeIsolated().scheduleTask(in: timeout) {
            self.sniffTimedOut(context: context)
        }
    }

    public func handlerRemoved(context: ChannelHandlerContext) {
        self.finish(failingWith: .handlerRemovedBeforeDetection)
    }

    public func channelInactive(context: ChannelHandlerContext) {
        self.finish(failingWith: .connectionClosedBeforeDetection)
        context.fireChannelInactive()
    }

    /// Fails the promise of a handler that could not be added to its pipeline (the connection closed
    /// first, for example refused by the connection limits): a promise must never be left uncompleted.
    public func notAdded(_ error: any Error) {
        guard case .sniffing = self.state else { return }
        self.state = .done
        self.promise.fail(error)
    }

    /// Ends sniffing: fails the promise with `error` unless a protocol was already chosen.
    private func finish(failingWith error: H2CSniffingError) {
        self.cancelTimeout()
        switch self.state {
        case .done:
            break
        case .unbuffering:
            // The promise has already succeeded.
            self.state = .done
        case .sniffing, .configuring:
            self.state = .done
            self.promise.fail(error)
        }
    }

    // MARK: Inbound

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch self.state {
        case .sniffing(var matched, var buffered):
            let bytes = self.unwrapInboundIn(data).readableBytesView
            var index = bytes.startIndex
            var mismatch = false
            while matched < self.preface.count, index < bytes.endIndex {
                if bytes[index] != self.preface[matched] {
                    mismatch = true
                    break
                }
                matched += 1
                index = bytes.index(after: index)
            }
            buffered.append(.read(data))

            if mismatch {
                self.decide(.http1, buffered: buffered, context: context)
            } else if matched == self.preface.count {
                self.decide(.http2, buffered: buffered, context: context)
            } else {
                // Still a (possibly empty) prefix of the preface: wait for more bytes.
                self.state = .sniffing(matched: matched, buffered: buffered)
            }

        case .configuring(var buffered):
            buffered.append(.read(data))
            self.state = .configuring(buffered: buffered)

        case .unbuffering, .done:
            context.fireChannelRead(data)
        }
    }

    public func channelReadComplete(context: ChannelHandlerContext) {
        switch self.state {
        case .sniffing, .configuring:
            // Held back. A `channelReadComplete` is sent after the replay.
            break
        case .unbuffering, .done:
            context.fireChannelReadComplete()
        }
    }

    public func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        switch self.state {
        case .sniffing:
            switch event {
            case let channelEvent as ChannelEvent where channelEvent == .inputClosed:
                // Half-closure (Hummingbird enables allowRemoteHalfClosure) before the protocol was known:
                // no request can arrive any more, so give up.
                self.failAndClose(H2CSniffingError.inputClosedBeforeDetection, context: context)
            case is ChannelShouldQuiesceEvent:
                // Graceful shutdown: nothing is in flight on this connection, so close it now.
                self.failAndClose(H2CSniffingError.serverQuiescing, context: context)
            default:
                context.fireUserInboundEventTriggered(event)
            }

        case .configuring(var buffered):
            buffered.append(.userEvent(event))
            self.state = .configuring(buffered: buffered)

        case .unbuffering, .done:
            context.fireUserInboundEventTriggered(event)
        }
    }

    public func errorCaught(context: ChannelHandlerContext, error: any Error) {
        switch self.state {
        case .sniffing:
            // No protocol handlers exist yet that could deal with this (for example ECONNRESET).
            self.failAndClose(error, context: context)
        case .configuring, .unbuffering, .done:
            context.fireErrorCaught(error)
        }
    }

    // MARK: Private

    private func decide(_ detected: H2CSniffedProtocol, buffered: [BufferedEvent], context: ChannelHandlerContext) {
        self.cancelTimeout()
        self.state = .configuring(buffered: buffered)

        // Hummingbird's setup functions return futures that are already complete, so the callback below normally
        // runs right away, inside this `channelRead`.
        self.configurator(detected, context.channel)
            .hop(to: context.eventLoop)
            .assumeIsolated()
            .whenComplete { result in
                self.configurationCompleted(result, context: context)
            }
    }

    private func configurationCompleted(_ result: Result<Output, any Error>, context: ChannelHandlerContext) {
        guard case .configuring(let buffered) = self.state else {
            // The channel closed, or the handler was removed, while the configurator was running.
            return
        }
        switch result {
        case .success(let output):
            // Complete the promise first, so anything that waits on it sees the final pipeline before the data.
            self.state = .unbuffering
            self.promise.succeed(output)
            for event in buffered {
                switch event {
                case .read(let data):
                    context.fireChannelRead(data)
                case .userEvent(let event):
                    context.fireUserInboundEventTriggered(event)
                }
            }
            context.fireChannelReadComplete()
            if case .unbuffering = self.state {
                self.state = .done
                context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
            }

        case .failure(let error):
            self.failAndClose(error, context: context)
        }
    }

    private func sniffTimedOut(context: ChannelHandlerContext) {
        self.timeoutTask = nil
        guard case .sniffing = self.state else { return }
        self.failAndClose(H2CSniffingError.prefaceReadTimeout, context: context)
    }

    private func failAndClose(_ error: any Error, context: ChannelHandlerContext) {
        self.cancelTimeout()
        self.state = .done
        self.promise.fail(error)
        context.close(promise: nil)
    }

    private func cancelTimeout() {
        self.timeoutTask?.cancel()
        self.timeoutTask = nil
    }
}

@available(*, unavailable)
extension H2CPriorKnowledgeSniffingHandler: Sendable {}
