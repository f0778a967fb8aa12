import Logging
import LockstepStore
import PostgresNIO

/// Every call Lockstep makes to PostgreSQL is bounded in time: postgres-nio 1.33 can leave a query
/// waiting forever (a database that stopped answering, a connection closed under it), and a waiting
/// query cannot be cancelled. So the call runs in a task of its own and a watchdog answers for it after
/// `limit`; the call's task is left to end when the database or the pool lets it (it holds one pooled
/// connection until then). Used by the log's reads (`PostgresEventLog.bounded`), the leadership lease,
/// the log's opening and the webhook cursors.
public enum PostgresDeadline {
    /// The call did not end within its limit.
    public struct Overran: Error, CustomStringConvertible {
        public let limit: Duration
        public var description: String { "PostgreSQL did not answer within \(limit)" }
    }

    /// `body`'s result, or `Overran` once `limit` passed first.
    public static func run<T: Sendable>(within limit: Duration, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
        let answer = PostgresEventLog.OneShot<T>()
        let work = Task {
            do { answer.end(.success(try await body())) } catch { answer.end(.failure(error)) }
        }
        let watchdog = Task {
            guard (try? await Task.sleep(for: limit)) != nil else { return }
            answer.end(.failure(Overran(limit: limit)))
        }
        let result = await answer.wait()
        watchdog.cancel()
        _ = work
        return try result.get()
    }
}
