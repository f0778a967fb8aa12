import Logging
import LockstepStore
import PostgresNIO

/// Every query Lockstep reads rows from has them collected on its connection's event loop as they arrive
/// (postgres-nio's `EventLoopFuture` query), never through a `PostgresRowSequence`. That sequence's
/// consumer asks for more rows from another thread; when the connection ends (a database restarted, a
/// network cut) while rows wait for that ask, postgres-nio 1.33 traps (`RowStreamStateMachine`: "no read
/// has been forwarded yet") and takes the process with it, even for one row when the connection ends
/// between it and the statement's end. Collected, rows are asked for on the loop as soon as they arrive,
/// so none ever wait, and an ended connection fails the query. What a query can return is bounded in the
/// query itself (a page by `readPageBytesMax`, a list by its `LIMIT`, the webhook cursors by the webhooks
/// configured, the rest one row); a page is held
/// twice while it is decoded (its rows, then its events). The writing statement, prepared, returns no
/// rows at all (`WriteStatement`). `PostgresFaultTests` ends connections in the middle of a page's rows
/// and right after a one-row answer's row.
extension PostgresConnection {
    /// `query`'s rows, all of them, once the database has sent the last. Nothing is sent on a connection
    /// already closed (postgres-nio 1.33 would wait forever for its answer): `storage_unavailable` at once.
    package func rows(_ query: PostgresQuery, logger: Logger) async throws -> [PostgresRow] {
        try await result(query, logger: logger).rows
    }

    /// `query`'s rows and its command tag's count (`metadata.rows`), the same way.
    package func result(_ query: PostgresQuery, logger: Logger) async throws -> PostgresQueryResult {
        try PostgresEventLog.checkOpen(self)
        // Sent from the connection's loop, so the collecting is attached to the query in the same turn of
        // the loop that starts its rows (attached from another thread, it would be queued to the loop,
        // and rows could arrive first with nobody asking for more). The append's calls are on it already.
        let send: @Sendable () -> EventLoopFuture<PostgresQueryResult> = { self.query(query, logger: logger) }
        return try await (eventLoop.inEventLoop ? send() : eventLoop.flatSubmit(send)).get()
    }
}

extension PostgresClient {
    /// `query`'s rows, all of them, on an open connection (`withOpenConnection`).
    package func rows(_ query: PostgresQuery, logger: Logger) async throws -> [PostgresRow] {
        try await withOpenConnection { connection in try await connection.rows(query, logger: logger) }
    }

    /// `query`, whose rows (if any) are not read, on an open connection: a statement or a transaction's
    /// part that returns no rows.
    package func perform(_ query: PostgresQuery, logger: Logger) async throws {
        _ = try await withOpenConnection { connection in try await connection.rows(query, logger: logger) }
    }

    /// `body` in a transaction on an open connection (`withOpenConnection`).
    package func withOpenTransaction<T: Sendable>(logger: Logger, _ body: (PostgresConnection) async throws -> T) async throws -> T {
        try await withOpenConnection { connection in try await connection.withTransaction(logger: logger) { try await body($0) } }
    }

    /// `body` on a leased connection that is open. The pool may hand out a connection that has just
    /// closed (a database restarted, a connection cut, before the pool has seen it end), and postgres-nio
    /// 1.33 waits forever for the answer to anything written on one: it is given back unused and another
    /// is leased after a pause (10 ms, then 40 ms, for the pool to see it), `leasesMax` leases in all;
    /// the last one, closed too, fails at once (`storage_unavailable`). Every call Lockstep makes to
    /// PostgreSQL leases this way but LISTEN (which fails and listens again).
    package func withOpenConnection<T: Sendable>(_ body: (PostgresConnection) async throws -> T) async throws -> T {
        for lease in 1..<Self.leasesMax {
            let result: T? = try await withConnection { connection in connection.isClosed ? nil : try await body(connection) }
            if let result { return result }
            try await Task.sleep(for: .milliseconds(10 * lease * lease))
        }
        return try await withConnection { connection in
            try PostgresEventLog.checkOpen(connection)
            return try await body(connection)
        }
    }

    /// How many connections `withOpenConnection` leases for one call at most, in leases.
    package static let leasesMax = 3
}
