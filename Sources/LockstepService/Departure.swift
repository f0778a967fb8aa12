import NIOConcurrencyHelpers

/// Something that may go away while its caller is parked (a client), and says so at once.
public protocol Departure: AnyObject, Sendable {
    /// Runs `action` once, when it goes (at once if it has gone: then the answer is nil); the token
    /// withdraws it.
    func onDeparture(_ action: @escaping @Sendable () -> Void) -> Int?
    func withdraw(_ token: Int)
}

/// A departure that whoever notices it reports (`markGone`): what a connection's presence handler
/// keeps, and what a gRPC call's cancellation handler marks (grpc-swift-2 reports a deadline or a reset
/// stream through the call's context, not by cancelling the handler's task).
package final class DepartureSignal: Departure, Sendable {
    private struct State {
        var gone = false
        var nextID = 0
        /// What to do when it goes: resume a watch's wait, or a parked poll.
        var actions: [Int: @Sendable () -> Void] = [:]
    }

    private let state = NIOLockedValueBox(State())

    package init() {}

    package var isGone: Bool { state.withLockedValue { $0.gone } }

    /// It has gone: every action registered runs now, once; later ones run as they register.
    package func markGone() {
        let actions = state.withLockedValue { state in
            state.gone = true
            defer { state.actions.removeAll() }
            return Array(state.actions.values)
        }
        for action in actions { action() }
    }

    package func onDeparture(_ action: @escaping @Sendable () -> Void) -> Int? {
        let token = state.withLockedValue { state -> Int? in
            guard !state.gone else { return nil }
            defer { state.nextID += 1 }
            state.actions[state.nextID] = action
            return state.nextID
        }
        if token == nil { action() }
        return token
    }

    package func withdraw(_ token: Int) {
        _ = state.withLockedValue { $0.actions.removeValue(forKey: token) }
    }

    /// Returns when it has gone, or when the calling task is cancelled.
    package func waitUntilGone() async {
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
