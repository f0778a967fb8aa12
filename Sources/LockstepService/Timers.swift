import LockstepCore
import LockstepEngine
import LockstepStore
import Synchronization

/// Ends the timer service's sleep early when the log changed (a new lease, bake or deadline may be due
/// sooner than it planned). A signal while nobody waits is kept: the next wait returns at once.
package final class TimerWake: Sendable {
    package init() {}

    private struct State {
        var signaled = false
        var cancelled = false
        var waiter: CheckedContinuation<Void, Never>?
    }
    private let state = Mutex(State())

    package func signal() {
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            guard let waiter = state.waiter else {
                state.signaled = true
                return nil
            }
            state.waiter = nil
            return waiter
        }
        waiter?.resume()
    }

    /// Why a wait ended.
    package enum Ending: Sendable, Equatable {
        /// A signal ended it.
        case signalled
        /// `timeout` passed first.
        case timedOut
        /// The waiting task was cancelled.
        case cancelled
    }

    /// Returns at a signal (at once if one came since the last wait), after `timeout`, or when cancelled.
    @discardableResult
    package func wait(upTo timeout: Duration) async -> Ending {
        await withTaskGroup(of: Ending.self) { group in
            group.addTask {
                do {
                    try await Task.sleep(for: timeout)
                    return .timedOut
                } catch {
                    return .cancelled
                }
            }
            group.addTask {
                await self.signalled()
                return Task.isCancelled ? .cancelled : .signalled
            }
            let ending = await group.next() ?? .signalled
            group.cancelAll()
            return ending
        }
    }

    private func signalled() async {
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let now = state.withLock { state -> Bool in
                    if state.signaled || state.cancelled {
                        state.signaled = false
                        state.cancelled = false
                        return true
                    }
                    state.waiter = continuation
                    return false
                }
                if now { continuation.resume() }
            }
        } onCancel: {
            let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
                // Cancelled before the wait parked: it must not park (a later wait may see the flag once; a spurious wake is harmless).
                guard let waiter = state.waiter else {
                    state.cancelled = true
                    return nil
                }
                state.waiter = nil
                return waiter
            }
            waiter?.resume()
        }
    }
}

/// The coordinator's timers as the server runs them.
package enum CoordinatorTimers {
    /// The timer service: runs the coordinator's timer policy (`Coordinator.tick`: deadlines, lease
    /// expiry, start_to_close, bake ends, schedule_to_start, an owed grant pass), writes a snapshot when
    /// one is due, and runs `everyRun` (the wall-clock step check), then sleeps until the next thing is
    /// due (`Coordinator.nextTimerDue`), at least `tickMillis` and at most `idleMillisMax`, woken early
    /// by a change to the log. It does not poll: an idle server runs it once a second.
    package static func run(_ coordinator: Coordinator, clock: CoordinatorClock, tickMillis: Int, idleMillisMax: Int = 1_000, wake: TimerWake,
                          everyRun: @Sendable () async -> Void, expired: @Sendable (Int) -> Void,
                          failed: @Sendable (CommandError) -> Void, snapshotFailed: @Sendable (EventLogError) -> Void) async {
        while !Task.isCancelled {
            let report = await coordinator.tick(now: clock.now())
            if report.leasesExpired > 0 { expired(report.leasesExpired) }
            for failure in report.failures { failed(failure) }
            do throws(EventLogError) {
                try await coordinator.writeSnapshotIfDue()
            } catch {
                // Costs only start-up time (the events are durable); the next one waits as long again (`snapshotDueEvents`).
                snapshotFailed(error)
            }
            await everyRun()
            do { try await Task.sleep(for: .milliseconds(tickMillis)) } catch { return }
            let now = clock.now()
            let due = await coordinator.nextTimerDue(now: now).map { $0.millisecondsSinceEpoch - now.millisecondsSinceEpoch } ?? Int64(idleMillisMax)
            if due > 0 { await wake.wait(upTo: .milliseconds(min(due, Int64(idleMillisMax)))) }
        }
    }
}
