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
/// Calls left running that way are counted (`Overruns`): while a database hangs, a renewal every third
/// of a TTL would otherwise pile up tasks for as long as it hangs. At `Overruns.callsMax` a new call
/// fails at once, sending nothing, until some of them end.
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

    /// The calls still running after their watchdog answered for them.
    public final class Overruns: Sendable {
        /// The process's count, shared by every call that names no other.
        public static let shared = Overruns(callsMax: 256)

        /// How many may run past their bound at once, in calls.
        public let callsMax: Int
        private let running = Atomic<Int>(0)

        public init(callsMax: Int) { self.callsMax = callsMax }

        /// How many run past their bound now.
        public var count: Int { running.load(ordering: .relaxed) }

        func began() { running.add(1, ordering: .relaxed) }
        func ended() { running.subtract(1, ordering: .relaxed) }
    }

    /// `body`'s result, or `Overran` once `limit` passed first; `TooManyOverrun`, without running `body`,
    /// while `overruns` is at its limit.
    public static func run<T: Sendable>(within limit: Duration, overruns: Overruns = .shared,
                                        _ body: @escaping @Sendable () async throws -> T) async throws -> T {
        let stuck = overruns.count
        guard stuck < overruns.callsMax else { throw TooManyOverrun(count: stuck) }
        let answer = PostgresEventLog.OneShot<T>()
        let work = Task {
            let result: Result<T, any Error>
            do { result = .success(try await body()) } catch { result = .failure(error) }
            // Its watchdog answered first and counted it: it ends now.
            if !answer.end(result) { overruns.ended() }
        }
        let watchdog = Task {
            guard (try? await Task.sleep(for: limit)) != nil else { return }
            if answer.end(.failure(Overran(limit: limit))) { overruns.began() }
        }
        let result = await answer.wait()
        watchdog.cancel()
        _ = work
        return try result.get()
    }
}
