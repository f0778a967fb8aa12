import LockstepStore
import Logging
import Synchronization

/// Whether appends are succeeding, for `/readyz` and the log: a commit that failed for lack of space
/// makes the server not ready (and says so once in the log) until a commit succeeds again. Reads and
/// polls keep working meanwhile; fail-stop (an I/O error) is the coordinator's own latch.
package final class WriteHealth: Sendable {
    private struct State {
        var failing: EventLogError?
        var failures = 0
    }

    private let state = Mutex(State())
    private let logger: Logger

    package init(logger: Logger) { self.logger = logger }

    /// Why appends are failing now, if they are.
    package var failing: EventLogError? { state.withLock { $0.failing } }

    /// A commit failed with `error`.
    package func failed(_ error: EventLogError) {
        let first = state.withLock { state in
            defer {
                state.failing = error
                state.failures += 1
            }
            return state.failing == nil
        }
        if first {
            logger.error("appends are failing: \(error.description); reads, polls and watches keep working. /readyz answers 503 until an append succeeds")
        }
    }

    /// A commit succeeded.
    package func committed() {
        let recovered = state.withLock { state -> Int? in
            guard state.failing != nil else { return nil }
            defer {
                state.failing = nil
                state.failures = 0
            }
            return state.failures
        }
        if let recovered { logger.notice("appends succeed again after \(recovered) failed commit(s)") }
    }
}
