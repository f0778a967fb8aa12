import NIOConcurrencyHelpers
import NIOCore
import LockstepService

/// Notices that a client has gone away, and tells those waiting on it at once. Hummingbird allows
/// remote half-closure, so an HTTP/1 client closing its socket leaves the channel active with only its
/// input closed; on an HTTP/2 stream a reset makes the stream channel inactive. Long polls and watches
/// leave their place (and their principal's count) the moment the client goes, not at the end of their
/// wait: a parked poll is resumed by the presence itself (`Departure`, no task per poll), a watch waits
/// on `waitUntilGone`; and a poll checks `isGone` before leasing, so a step is never leased to a client
/// that is gone.
package final class ClientPresence: ChannelInboundHandler, RemovableChannelHandler, Departure, Sendable {
    package typealias InboundIn = NIOAny
    package typealias InboundOut = NIOAny

    private let signal = DepartureSignal()
    /// Whether a closed input means the client is gone: true on HTTP/1 connections; false where the
    /// handler may also sit on HTTP/2 streams, whose input closes with every complete request.
    private let inputClosedMeansGone: Bool

    package init(inputClosedMeansGone: Bool = true) { self.inputClosedMeansGone = inputClosedMeansGone }

    package var isGone: Bool { signal.isGone }

    /// The client went (an HTTP/2 stream on the engine closed: reset, or its connection ended).
    package func markGone() { signal.markGone() }

    package func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.fireChannelRead(data)
    }

    package func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if inputClosedMeansGone, case .inputClosed = event as? ChannelEvent { signal.markGone() }
        context.fireUserInboundEventTriggered(event)
    }

    package func channelInactive(context: ChannelHandlerContext) {
        signal.markGone()
        context.fireChannelInactive()
    }

    public func onDeparture(_ action: @escaping @Sendable () -> Void) -> Int? { signal.onDeparture(action) }

    public func withdraw(_ token: Int) { signal.withdraw(token) }

    /// Returns when the client is gone, or when the calling task is cancelled.
    package func waitUntilGone() async { await signal.waitUntilGone() }

    /// The presence handler on `channel` (HTTP/1 connections and HTTP/2 streams have one), if any.
    package static func of(_ channel: any Channel) async -> ClientPresence? {
        try? await channel.pipeline.handler(type: ClientPresence.self).get()
    }

    /// Whether the client on `channel` has gone away (closed, reset, or its input closed).
    package static func goneCheck(for channel: any Channel) async -> @Sendable () -> Bool {
        goneCheck(for: channel, presence: await of(channel))
    }

    /// The same, with the presence handler already looked up.
    package static func goneCheck(for channel: any Channel, presence: ClientPresence?) -> @Sendable () -> Bool {
        { !channel.isActive || (presence?.isGone ?? false) }
    }
}
