import NIOConcurrencyHelpers
import NIOCore

/// Notices that a client has gone away, and tells those waiting on it at once. Hummingbird allows
/// remote half-closure, so an HTTP/1 client closing its socket leaves the channel active with only its
/// input closed; on an HTTP/2 stream a reset makes the stream channel inactive. Long polls and watches
/// leave their place (and their principal's count) the moment the client goes, not at the end of their
/// wait: a parked poll is resumed by the presence itself (`Departure`, no task per poll), a watch waits
/// on `waitUntilGone`; and a poll checks `isGone` before leasing, so a step is never leased to a client
/// that is gone.
final class ClientPresence: ChannelInboundHandler, RemovableChannelHandler, Departure, Sendable {
    typealias InboundIn = NIOAny
    typealias InboundOut = NIOAny

    private let signal = DepartureSignal()
    /// Whether a closed input means the client is gone: true on HTTP/1 connections; false where the
    /// handler may also sit on HTTP/2 streams, whose input closes with every complete request.
    private let inputClosedMeansGone: Bool

    init(inputClosedMeansGone: Bool = true) { self.inputClosedMeansGone = inputClosedMeansGone }

    var isGone: Bool { signal.isGone }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.fireChannelRead(data)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if inputClosedMeansGone, case .inputClosed = event as? ChannelEvent { signal.markGone() }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        signal.markGone()
        context.fireChannelInactive()
    }

    public func onDeparture(_ action: @escaping @Sendable () -> Void) -> Int? { signal.onDeparture(action) }

    public func withdraw(_ token: Int) { signal.withdraw(token) }

    /// Returns when the client is gone, or when the calling task is cancelled.
    func waitUntilGone() async { await signal.waitUntilGone() }

    /// The presence handler on `channel` (HTTP/1 connections and HTTP/2 streams have one), if any.
    static func of(_ channel: any Channel) async -> ClientPresence? {
        try? await channel.pipeline.handler(type: ClientPresence.self).get()
    }

    /// Whether the client on `channel` has gone away (closed, reset, or its input closed).
    static func goneCheck(for channel: any Channel) async -> @Sendable () -> Bool {
        goneCheck(for: channel, presence: await of(channel))
    }

    /// The same, with the presence handler already looked up.
    static func goneCheck(for channel: any Channel, presence: ClientPresence?) -> @Sendable () -> Bool {
        { !channel.isActive || (presence?.isGone ?? false) }
    }
}

/// A departure that whoever notices it reports (`markGone`): what a connection's presence handler
/// keeps, and what a gRPC call's cancellation handler marks (grpc-swift-2 reports a deadline or a reset
/// stream through the call's context, not by cancelling the handler's task).
final class DepartureSignal: Departure, Sendable {
    private struct State {
        var gone = false
        var nextID = 0
        /// What to do when it goes: resume a watch's wait, or a parked poll.
        var actions: [Int: @Sendable () -> Void] = [:]
    }

    private let state = NIOLockedValueBox(State())

    var isGone: Bool { state.withLockedValue { $0.gone } }

    /// It has gone: every action registered runs now, once; later ones run as they register.
    func markGone() {
        let actions = state.withLockedValue { state in
            state.gone = true
            defer { state.actions.removeAll() }
            return Array(state.actions.values)
        }
        for action in actions { action() }
    }

    func onDeparture(_ action: @escaping @Sendable () -> Void) -> Int? {
        let token = state.withLockedValue { state -> Int? in
            guard !state.gone else { return nil }
            defer { state.nextID += 1 }
            state.actions[state.nextID] = action
            return state.nextID
        }
        if token == nil { action() }
        return token
    }

    func withdraw(_ token: Int) {
        _ = state.withLockedValue { $0.actions.removeValue(forKey: token) }
    }

    /// Returns when it has gone, or when the calling task is cancelled.
    func waitUntilGone() async {
        let id = state.withLockedValue { state in
            defer { state.nextID += 1 }
            return state.nextID
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let resumeNow = state.withLockedValue { state in
                    if state.gone || Task.isCancelled { return true }
                    state.actions[id] = { continuation.resume() }
                    return false
                }
                if resumeNow { continuation.resume() }
            }
        } onCancel: {
            state.withLockedValue { $0.actions.removeValue(forKey: id) }?()
        }
    }
}

/// Something that may go away while its caller is parked (a client), and says so at once.
public protocol Departure: Sendable {
    /// Runs `action` once, when it goes (at once if it has gone: then the answer is nil); the token
    /// withdraws it.
    func onDeparture(_ action: @escaping @Sendable () -> Void) -> Int?
    func withdraw(_ token: Int)
}
