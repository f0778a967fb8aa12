import Logging
import LockstepStore
import PostgresNIO
import Synchronization

/// Every call Lockstep makes to PostgreSQL is bounded in time: postgres-nio 1.33 can leave a query
/// waiting forever (a database that stopped answering, a connection closed under it), and a waiting
/// query cannot be cancelled. So the call runs in a task of its own and a watchdog answers for it after
/// `limit`; the call's task is left to end when the database or the pool lets it (it holds one pooled
/// connection, or a place in the pool's queue, until then). Used by the log's reads
/// (`PostgresEventLog.bounded`), the leadership lease, the log's opening and the webhook cursors.
///
/// Calls left running that way are counted (`Overruns`): while a database hangs, reads, a standby's
/// takes and looks would otherwise pile up tasks for as long as it hangs. At `Overruns.callsMax` a new call
/// fails at once, sending nothing, until some of them end or are presumed lost (10 minutes past their
/// bound: postgres-nio may never end one whose connection closed under it, and a count that never came
/// down would refuse every call until a restart).
public enum PostgresDeadline {
    /// The call did not end within its limit.
    public struct Overran: Error, CustomStringConvertible {
        public let limit: Duration
        public var description: String { "PostgreSQL did not answer within \(limit)" }
    }

    /// Not sent: `count` calls are still running past their bound.
    public struct TooManyOverrun: Error, CustomStringConvertible {
        public let count: Int
        public var description: String { "\(count) calls to PostgreSQL are still running past their time bound; not sending another until some end" }
    }

    /// The calls still running after their watchdog (or their caller's cancellation) answered for them.
    public final class Overruns: Sendable {
        /// The process's count for the log's reads, shared by every call that names no other (the
        /// leadership lease and the webhook cursors keep their own).
        public static let shared = Overruns(callsMax: 256)

        /// How many may run past their bound at once, in calls.
        public let callsMax: Int
        /// How long a call may run past its bound before it is presumed lost for good (postgres-nio may
        /// never end a query whose connection closed under it) and no longer counted.
        public let presumedLostAfter: Duration
        private struct State {
            var running: [UInt64: ContinuousClock.Instant] = [:]
            var next: UInt64 = 0
        }
        private let state = Mutex(State())

        public init(callsMax: Int, presumedLostAfter: Duration = .seconds(600)) {
            self.callsMax = callsMax
            self.presumedLostAfter = presumedLostAfter
        }

        /// How many run past their bound now (those presumed lost left out).
        public var count: Int {
            let now = ContinuousClock.now
            return state.withLock { state in
                state.running = state.running.filter { now - $0.value < presumedLostAfter }
                return state.running.count
            }
        }

        func began() -> UInt64 {
            state.withLock { state in
                state.next += 1
                state.running[state.next] = ContinuousClock.now
                return state.next
            }
        }

        func ended(_ id: UInt64) { _ = state.withLock { $0.running.removeValue(forKey: id) } }
    }

    /// One call's overrun, between the side that answered for it and the call's own end: exactly one of
    /// them takes it out of the count.
    private final class Overrun: Sendable {
        private let state = Mutex<(id: UInt64?, callEnded: Bool)>((nil, false))
        /// Counted as `id`; whether the call had ended meanwhile (the caller then takes it out).
        func counted(_ id: UInt64) -> Bool { state.withLock { $0.id = id; return $0.callEnded } }
        /// The call ended; its id if it was counted.
        func callEnded() -> UInt64? { state.withLock { $0.callEnded = true; return $0.id } }
    }

    /// `body`'s result, or `Overran` once `limit` passed first (a `CancellationError` once the caller
    /// is cancelled first: the call is still sent, and runs on, so a last write made while stopping, a
    /// webhook cursor's, still goes out); `TooManyOverrun`, without running `body`, while `overruns` is at its limit.
    public static func run<T: Sendable>(within limit: Duration, overruns: Overruns = .shared,
                                        _ body: @escaping @Sendable () async throws -> T) async throws -> T {
        let stuck = overruns.count
        guard stuck < overruns.callsMax else { throw TooManyOverrun(count: stuck) }
        let answer = PostgresEventLog.OneShot<T>()
        let overrun = Overrun()
        Task {
            let result: Result<T, any Error>
            do { result = .success(try await body()) } catch { result = .failure(error) }
            // Answered for already, and counted: out of the count now.
            if !answer.end(result), let id = overrun.callEnded() { overruns.ended(id) }
        }
        @Sendable func answerFor(_ error: any Error) {
            // Counted before the answer wakes the caller, so the caller sees it counted.
            let id = overruns.began()
            guard answer.end(.failure(error)) else { return overruns.ended(id) }
            if overrun.counted(id) { overruns.ended(id) }
        }
        let watchdog = Task {
            guard (try? await Task.sleep(for: limit)) != nil else { return }
            answerFor(Overran(limit: limit))
        }
        let result = await withTaskCancellationHandler {
            await answer.wait()
        } onCancel: {
            answerFor(CancellationError())
        }
        watchdog.cancel()
        return try result.get()
    }
}
