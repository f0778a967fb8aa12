import NIOConcurrencyHelpers
import NIOCore

/// Notices that a client has gone away, and tells those waiting on it at once. Hummingbird allows
/// remote half-closure, so an HTTP/1 client closing its socket leaves the channel active with only its
/// input closed; on an HTTP/2 stream a reset makes the stream channel inactive. Long polls and watches
/// run under `cancellingWhenGone`, so a departed client's poll or watch leaves its place (and its
/// principal's count) the moment the client goes, not at the end of its wait; and a poll checks
/// `isGone` before leasing, so a step is never leased to a client that is gone.
final class ClientPresence: ChannelInboundHandler, RemovableChannelHandler, Sendable {
    typealias InboundIn = NIOAny
    typealias InboundOut = NIOAny

    private struct State {
        var gone = false
        var nextID = 0
        var waiters: [Int: CheckedContinuation<Void, Never>] = [:]
    }

    private let state = NIOLockedValueBox(State())
    /// Whether a closed input means the client is gone: true on HTTP/1 connections; false where the
    /// handler may also sit on HTTP/2 streams, whose input closes with every complete request.
    private let inputClosedMeansGone: Bool

    init(inputClosedMeansGone: Bool = true) { self.inputClosedMeansGone = inputClosedMeansGone }

    var isGone: Bool { state.withLockedValue { $0.gone } }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.fireChannelRead(data)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if inputClosedMeansGone, case .inputClosed = event as? ChannelEvent { markGone() }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        markGone()
        context.fireChannelInactive()
    }

    private func markGone() {
        let waiters = state.withLockedValue { state in
            state.gone = true
            defer { state.waiters.removeAll() }
            return Array(state.waiters.values)
        }
        for waiter in waiters { waiter.resume() }
    }

    /// Returns when the client is gone, or when the calling task is cancelled.
    func waitUntilGone() async {
        let id = state.withLockedValue { state in
            defer { state.nextID += 1 }
            return state.nextID
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let resumeNow = state.withLockedValue { state in
                    if state.gone || Task.isCancelled { return true }
                    state.waiters[id] = continuation
                    return false
                }
                if resumeNow { continuation.resume() }
            }
        } onCancel: {
            state.withLockedValue { $0.waiters.removeValue(forKey: id) }?.resume()
        }
    }

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

    /// Runs `body`, cancelled as soon as the client `presence` watches goes away; then the answer is
    /// `client_gone` (nobody reads it). Without a presence handler it simply runs `body`.
    static func cancellingWhenGone<T: Sendable>(_ presence: ClientPresence?,
                                                _ body: @escaping @Sendable () async throws(APIError) -> T) async throws(APIError) -> T {
        guard let presence else { return try await body() }
        let outcome = await withTaskGroup(of: Result<T, APIError>?.self) { group in
            group.addTask {
                do throws(APIError) { return .success(try await body()) } catch { return .failure(error) }
            }
            group.addTask {
                await presence.waitUntilGone()
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first
        }
        guard let outcome else { throw APIError(.clientGone, "the client went away before the answer") }
        return try outcome.get()
    }
}
