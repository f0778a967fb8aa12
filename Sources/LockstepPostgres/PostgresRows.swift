import Logging
import LockstepStore
import PostgresNIO

/// Every query Lockstep reads rows from has them collected on its connection's event loop as they arrive
/// (postgres-nio's `EventLoopFuture` query), never through a `PostgresRowSequence`. That sequence's
/// consumer asks for more rows from another thread; when the connection ends (a database restarted, a
/// network cut) while rows wait for that ask, postgres-nio 1.33 traps (`RowStreamStateMachine`: "no read
/// has been forwarded yet") and takes the process with it. Collected, rows are asked for on the loop as
/// soon as they arrive, so none ever wait, and an ended connection fails the query. What a query can
/// return is bounded in the query itself (a page by `readPageBytesMax`, a list by its `LIMIT`, the rest
/// one row). `PostgresFaultTests` ends a page's connection in the middle of its rows.
extension PostgresConnection {
    /// `query`'s rows, all of them, once the database has sent the last. Nothing is sent on a connection
    /// already closed (postgres-nio 1.33 would wait forever for its answer): `storage_unavailable` at once.
    package func rows(_ query: PostgresQuery, logger: Logger) async throws -> [PostgresRow] {
        try PostgresEventLog.checkOpen(self)
        let result: EventLoopFuture<PostgresQueryResult> = self.query(query, logger: logger)
        return try await result.get().rows
    }
}

extension PostgresClient {
    /// `query`'s rows, all of them, on a connection leased for the query. The pool may hand out a
    /// connection that has just closed (a database restarted, a connection cut, before the pool has seen
    /// it end): nothing is sent on it, and another is leased after a pause (10 ms, then 40 ms, for the
    /// pool to see it), `rowsLeasesMax` leases in all.
    package func rows(_ query: PostgresQuery, logger: Logger) async throws -> [PostgresRow] {
        for lease in 1...Self.rowsLeasesMax {
            let last = lease == Self.rowsLeasesMax
            let rows = try await withConnection { connection -> [PostgresRow]? in
                if connection.isClosed, !last { return nil }
                return try await connection.rows(query, logger: logger)
            }
            if let rows { return rows }
            try await Task.sleep(for: .milliseconds(10 * lease * lease))
        }
        throw EventLogError.unavailable("the connection to PostgreSQL closed")
    }

    /// How many connections `rows` leases for one query at most, in leases.
    package static let rowsLeasesMax = 3
}
