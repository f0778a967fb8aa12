import DequeModule
import Synchronization

/// At most `limit` pieces of poll work run at once over all connections; the rest wait here as closures,
/// in arrival order, each handed to its own connection when a place frees. A burst of polls (100,000
/// agents arriving within a second) then costs closures while it waits for the coordinator, which takes
/// one look at a time anyway, not a task each: at that peak a task in flight held about 20 KB, and the
/// allocator kept that RSS after the polls had parked (docs/benchmarks-api-history.md).
package final class PollLane: Sendable {
    private struct Waiting: Sendable {
        let work: @Sendable () async -> Void
        /// Hands the (wrapped) work to its connection; false when the connection no longer takes work.
        let deliver: @Sendable (@escaping @Sendable () async -> Void) -> Bool
        let dropped: @Sendable () -> Void
    }

    private struct State {
        var running = 0
        var waiting = Deque<Waiting>()
    }

    private let state = Mutex(State())
    package let limit: Int

    package init(limit: Int) { self.limit = max(1, limit) }

    /// Pieces of work waiting for a place (for tests and metrics).
    package var waitingCount: Int { state.withLock { $0.waiting.count } }
    package var runningCount: Int { state.withLock { $0.running } }

    package func submit(_ work: @escaping @Sendable () async -> Void, deliver: @escaping @Sendable (@escaping @Sendable () async -> Void) -> Bool,
                        dropped: @escaping @Sendable () -> Void) {
        let item = Waiting(work: work, deliver: deliver, dropped: dropped)
        let now = state.withLock { state -> Bool in
            guard state.running < limit else {
                state.waiting.append(item)
                return false
            }
            state.running += 1
            return true
        }
        if now { start(item) }
    }

    /// Runs `item` in the place it holds; when its connection takes no more work, the place goes to the
    /// next waiting item.
    private func start(_ item: Waiting) {
        var next: Waiting? = item
        while let current = next {
            if current.deliver({ [self] in
                await current.work()
                finished()
            }) { return }
            current.dropped()
            next = handOn()
        }
    }

    private func finished() {
        if let next = handOn() { start(next) }
    }

    /// The next waiting item keeps the place that freed; none waiting: the place is given back.
    private func handOn() -> Waiting? {
        state.withLock { state in
            if let next = state.waiting.popFirst() { return next }
            state.running -= 1
            return nil
        }
    }
}
