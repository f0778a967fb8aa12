import LockstepEngine
import LockstepPostgres
import LockstepStore
import Logging
import PostgresNIO
import ServiceLifecycle

/// A replica's follower (docs/operations.md): folds what the writer appends into the replica's live
/// state, so its reads and watches are current. It reads the log from its own last sequence whenever
/// the writer's per-commit notification arrives, and every `catchUpMillis` without one (a notification
/// is a hint: those sent while the listener was disconnected are lost). Pages are pulled one at a time
/// at the follower's pace; a page that does not check (a tampered log) is not folded, is logged, is read
/// again on the next round, and `/readyz` says the replica is not following (its reads are stale).
struct ReplicaTail: Service {
    let coordinator: Coordinator
    let client: PostgresClient
    let catchUpMillis: Int
    let logger: Logger
    /// After each round: the sequence applied, and why the log cannot be followed (nil while it can).
    let applied: @Sendable (UInt64, String?) -> Void

    func run() async throws {
        // Rounds to run: at most one waiting, however many notifications arrive meanwhile.
        let (rounds, round) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await listen(round) }
            group.addTask {
                while !Task.isCancelled {
                    round.yield()
                    try? await Task.sleep(for: .milliseconds(max(10, catchUpMillis)))
                }
            }
            await cancelWhenGracefulShutdown {
                var failing: String?
                for await _ in rounds {
                    do throws(EventLogError) {
                        while try await coordinator.follow() > 0 {}
                        if failing != nil { logger.notice("replica: following the log again") }
                        failing = nil
                    } catch {
                        if failing != error.description { logger.error("replica: cannot follow the log: \(error)") }
                        failing = error.description
                    }
                    applied(await coordinator.appliedSequence, failing)
                }
            }
            group.cancelAll()
        }
    }

    /// LISTENs for the writer's commits, again after a pause (1 s) whenever the connection is lost.
    func listen(_ round: AsyncStream<Void>.Continuation) async {
        var said = false
        while !Task.isCancelled {
            do {
                try await PostgresEventLog.listen(client: client, logger: logger, listening: { round.yield() }) { _ in round.yield() }
            } catch {
                if Task.isCancelled { return }
                if !said { logger.warning("replica: the writer's notifications are not arriving (\(PostgresEventLog.describe(error))); reading the log every \(catchUpMillis) ms") }
                said = true
            }
            try? await Task.sleep(for: .seconds(1))
        }
    }
}
