import Logging
import LockstepStore
import NIOCore
import PostgresNIO
import Synchronization

/// Every call PostgresEventLog makes to the database is bounded in time: postgres-nio 1.33 can leave a
/// query waiting forever when its connection closes under it, and a waiting query cannot be cancelled.
extension PostgresEventLog {
    /// A query written to a connection already closed waits forever in postgres-nio 1.33; asking first
    /// turns nearly all of those into a prompt `storage_unavailable` (the watchdog answers for the rest).
    static func checkOpen(_ connection: PostgresConnection) throws {
        guard !connection.isClosed else { throw EventLogError.unavailable("the connection to PostgreSQL closed") }
    }

    /// Runs one read (or a snapshot's write) on the client, bounded by `transactionMillisMax` for the same
    /// reason as a transaction: past it the read is abandoned and fails as `storage_unavailable`.
    /// `millis`: another bound than `transactionMillisMax` (an archival's one long transaction).
    func bounded<T: Sendable>(millis: Int64? = nil, _ body: @escaping @Sendable (PostgresClient, Logger) async throws -> T) async throws(EventLogError) -> T {
        let (client, logger) = (client, logger)
        do {
            return try await PostgresDeadline.run(within: .milliseconds(millis ?? options.transactionMillisMax)) { try await body(client, logger) }
        } catch let error as EventLogError {
            throw error
        } catch {
            throw .unavailable(Self.describe(error))
        }
    }

    /// What a transaction has got to, shared between it and its watchdog.
    final class TransactionProgress: Sendable {
        struct State {
            /// Set once the inserts are sent (ahead) or done (locked, before COMMIT): a failure after it
            /// leaves the outcome to be read from the log.
            var planned: Planned?
            /// Set by the watchdog when the transaction overran before its inserts were done: it must not
            /// commit any more (it rolls back if it ever gets that far).
            var abandoned = false
            /// Set once a batch sent ahead was executed and whether it landed is being asked (its commit waited for).
            var syncing = false
            /// Set by the watchdog when it answered for the transaction, whatever it had got to.
            var overran = false
        }
        let state = Mutex(State())
        let answer = OneShot<Bool>()
        /// The inserts of `planned` are sent (or, on the locked way, done): from here a failure leaves the
        /// outcome to be read from the log. Throws when the watchdog abandoned the transaction first.
        func sending(_ planned: Planned, limit: Duration) throws {
            try state.withLock { state in
                guard !state.abandoned else { throw TransactionOverran.abandoned(after: limit) }
                state.planned = planned
            }
        }
        /// The watchdog answers for the transaction: abandoned when its inserts were not sent (it can
        /// never commit). Whether they were (its outcome is then read from the log).
        func overrun() -> Bool {
            state.withLock { state in
                state.overran = true
                if state.planned == nil { state.abandoned = true }
                return state.planned != nil
            }
        }
        /// Throws when the watchdog abandoned the transaction: nothing more of it is sent.
        func checkNotAbandoned(limit: Duration) throws {
            guard !state.withLock({ $0.abandoned }) else { throw TransactionOverran.abandoned(after: limit) }
        }
        /// The statement sent ahead checked and wrote nothing: nothing of it can commit. Once the watchdog
        /// answered for the transaction (its caller already reading the outcome from the log), the locked
        /// way must not run it any more: abandoned.
        func wroteNothing() {
            state.withLock { state in
                state.planned = nil
                state.syncing = false
                if state.overran { state.abandoned = true }
            }
        }
        func end(_ result: Result<Bool, any Error>) { answer.end(result) }
        func wait() async -> Result<Bool, any Error> { await answer.wait() }
    }

    /// One answer, from whichever side gives it first (the work, its watchdog, or its caller's cancellation).
    final class OneShot<T: Sendable>: Sendable {
        private struct State {
            var waiter: CheckedContinuation<Result<T, any Error>, Never>?
            var result: Result<T, any Error>?
        }
        private let state = Mutex(State())

        /// Gives `result` as the answer unless one was given already; whether it was.
        @discardableResult
        func end(_ result: Result<T, any Error>) -> Bool {
            let (first, waiter) = state.withLock { state -> (Bool, CheckedContinuation<Result<T, any Error>, Never>?) in
                guard state.result == nil else { return (false, nil) }
                state.result = result
                defer { state.waiter = nil }
                return (true, state.waiter)
            }
            waiter?.resume(returning: result)
            return first
        }

        func wait() async -> Result<T, any Error> {
            await withCheckedContinuation { continuation in
                let now = state.withLock { state -> Result<T, any Error>? in
                    if let result = state.result { return result }
                    state.waiter = continuation
                    return nil
                }
                if let now { continuation.resume(returning: now) }
            }
        }
    }

    /// The transaction outlived `transactionMillisMax`.
    struct TransactionOverran: Error, CustomStringConvertible {
        var description: String

        /// The watchdog answered for the transaction before this part of it began.
        static func abandoned(after limit: Duration) -> TransactionOverran { TransactionOverran(description: "abandoned after \(limit)") }
    }

    /// Runs one append transaction, bounded in time. postgres-nio 1.33 can leave a query waiting forever
    /// when its connection closes under it (the database crashed), and a waiting query cannot be
    /// cancelled; so the transaction runs in a task of its own and a watchdog answers for it after
    /// `transactionMillisMax`: before its inserts were sent, it is abandoned (it can never commit: it
    /// rolls back if it wakes) and nothing was written; after them, its commit may still land, and the
    /// outcome is read from the log. An abandoned task holds one pooled connection until the pool
    /// notices it closed; there is at most one per overrun.
    ///
    /// `ahead` (see `PostgresEventLog+Append.swift`) is tried first, as one statement PostgreSQL commits on
    /// its own at the end of the exchange; postgres-nio hands back its answer before that commit is
    /// answered, so a query follows on the same connection, which postgres-nio sends only once the
    /// commit was answered without an error (an error there closes the connection, failing the query, and
    /// the outcome is read from the log): whether the batch's last event is there with its chain hash
    /// (`landed(_:on:)`; the statement itself returns no rows). When `ahead` wrote nothing, the locked way runs.
    ///
    /// The task runs on a SwiftNIO event loop (`EventLoopTaskExecutor`): the log's own loop while it leases
    /// a connection, then the connection's, so its round trips resume without a switch of threads; its
    /// watchdog is a task scheduled on the log's loop (a timer in the loop's queue, no task or thread of
    /// its own). Returns whether the batch went ahead (false: the locked way).
    func transaction(_ requests: [AppendRequest], ahead: Planned?, _ progress: TransactionProgress) async throws -> Bool {
        let epoch = self.epoch
        let logger = self.logger
        let limit = Duration.milliseconds(options.transactionMillisMax)
        let amount = TimeAmount.milliseconds(options.transactionMillisMax)
        let loop = self.loop
        let work = Task(executorPreference: EventLoopTaskExecutor(loop)) { [client] in
            let watchdog = loop.scheduleTask(in: amount) {
                let inserted = progress.overrun()
                logger.warning("an append transaction took longer than \(limit)\(inserted ? " after its inserts; its outcome is read from the log" : "; abandoned, nothing written")")
                progress.end(.failure(TransactionOverran(description: "the transaction took longer than \(limit)")))
            }
            defer { watchdog.cancel() }
            do {
                let wentAhead = try await client.withOpenConnection { connection in
                    try await withTaskExecutorPreference(EventLoopTaskExecutor(connection.eventLoop)) {
                        if let ahead {
                            try progress.sending(ahead, limit: limit)
                            do {
                                try await Self.write(ahead, epoch: epoch, on: connection, logger: logger)
                            } catch let error as PSQLError where error.code == .server {
                                // PostgreSQL refused the statement while running it (a lock wait past
                                // lock_timeout, a constraint, a storage fault): its implicit transaction
                                // rolled back and nothing of it was written. (An error at its commit comes
                                // after the statement's end, which postgres-nio has answered: it reports it
                                // as an unexpected message and closes the connection, failing `landed`.)
                                progress.wroteNothing()
                                throw error
                            }
                            // Whether it wrote, asked once its commit was answered: a failure from here
                            // leaves the outcome to be read from the log.
                            progress.state.withLock { $0.syncing = true }
                            if try await Self.landed(ahead, on: connection, logger: logger) { return true }
                            progress.wroteNothing()
                        }
                        // Not begun at all once the watchdog answered for the batch (`wroteNothing`).
                        try progress.checkNotAbandoned(limit: limit)
                        try await connection.withTransaction(logger: logger) { connection in
                            try progress.sending(try await Self.locked(requests, epoch: epoch, on: connection, logger: logger), limit: limit)
                        }
                        return false
                    }
                }
                progress.end(.success(wentAhead))
            } catch {
                progress.end(.failure(error))
            }
        }
        let result = await progress.wait()
        _ = work
        return try result.get()
    }
}
