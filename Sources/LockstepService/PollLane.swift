import DequeModule
import Metrics
import Synchronization

/// At most `limit` pieces of poll work run at once over all connections; the rest wait here as closures,
/// in arrival order, each handed to its own connection when a place frees. A burst of polls (100,000
/// agents arriving within a second) then costs closures while it waits for the coordinator, which takes
/// one look at a time anyway, not a task each: at that peak a task in flight held about 20 KB, and the
/// allocator kept that RSS after the polls had parked (docs/benchmarks-api-history.md). At most
/// `waitingMax` wait: past that a piece is refused (`overflowed`): a poll's look is answered at once as
/// one that found nothing, with `retry_after_ms` (as a poll past the parked limit is); a step's give-back
/// runs from a task of its own.
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
    /// Pieces of work running at once, in pieces.
    package let limit: Int
    /// Pieces of work waiting for a place at once, in pieces (polls).
    package let waitingMax: Int
    /// Counts the pieces refused with `waitingMax` waiting (`lockstep_poll_lane_overflows_total`).
    private let overflows: Metrics.Counter?

    /// `waitingMax` 131,072 by default, the server's (with `limit` 256): a burst of 100,000 agents
    /// polling at once waits whole; each waiting poll is a few hundred bytes of closures.
    package init(limit: Int, waitingMax: Int = 131_072, overflows: Metrics.Counter? = nil) {
        self.limit = max(1, limit)
        self.waitingMax = max(0, waitingMax)
        self.overflows = overflows
    }

    /// Pieces of work waiting for a place (for tests and metrics).
    package var waitingCount: Int { state.withLock { $0.waiting.count } }
    package var runningCount: Int { state.withLock { $0.running } }

    /// Runs `work` through `deliver` (its connection) once a place is free; `dropped` when its connection
    /// takes no more work; `overflowed` (and nothing else) when `waitingMax` pieces wait already.
    package func submit(_ work: @escaping @Sendable () async -> Void, deliver: @escaping @Sendable (@escaping @Sendable () async -> Void) -> Bool,
                        dropped: @escaping @Sendable () -> Void, overflowed: @Sendable () -> Void) {
        let item = Waiting(work: work, deliver: deliver, dropped: dropped)
        enum Admission { case now, waiting, full }
        let admission = state.withLock { state -> Admission in
            guard state.running < limit else {
                guard state.waiting.count < waitingMax else { return .full }
                state.waiting.append(item)
                return .waiting
            }
            state.running += 1
            return .now
        }
        switch admission {
        case .now: start(item)
        case .waiting: break
        case .full:
            overflows?.increment()
            overflowed()
        }
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
