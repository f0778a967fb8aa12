import NIOConcurrencyHelpers
import NIOCore

/// Notices that an HTTP/1 client has gone away. Hummingbird allows remote half-closure, so a client
/// closing its socket leaves the channel active with only its input closed; a long poll asks this
/// handler before leasing a step, so a step is never leased to a client that is gone. (HTTP/2 streams
/// become inactive when reset, which `Channel.isActive` shows.)
final class ClientPresence: ChannelInboundHandler, RemovableChannelHandler, Sendable {
    typealias InboundIn = ByteBuffer
    private let gone = NIOLockedValueBox(false)
    /// Whether a closed input means the client is gone: true on HTTP/1 connections; false where the
    /// handler may also sit on HTTP/2 streams, whose input closes with every complete request.
    private let inputClosedMeansGone: Bool

    init(inputClosedMeansGone: Bool = true) { self.inputClosedMeansGone = inputClosedMeansGone }

    var isGone: Bool { gone.withLockedValue { $0 } }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if inputClosedMeansGone, case .inputClosed = event as? ChannelEvent { gone.withLockedValue { $0 = true } }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        gone.withLockedValue { $0 = true }
        context.fireChannelInactive()
    }

    /// Whether the client on `channel` has gone away (closed, reset, or its input closed).
    static func goneCheck(for channel: any Channel) async -> @Sendable () -> Bool {
        let presence = try? await channel.pipeline.handler(type: ClientPresence.self).get()
        return { !channel.isActive || (presence?.isGone ?? false) }
    }
}
