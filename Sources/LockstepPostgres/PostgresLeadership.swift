import Logging
import LockstepStore
import PostgresNIO

/// Which of several coordinators on one database writes: a lease row (`lockstep_leader`) with a TTL,
/// as River and Oban elect. The lease says who *should* write; what makes a deposed writer harmless is
/// the epoch (`PostgresEventLog.fence`): taking the lease bumps the epoch in the head row, in the same
/// transaction, and every append of a fenced log checks it in its own transaction.
///
/// Times are the database's (`clock_timestamp()`), so coordinators on hosts whose clocks disagree
/// still agree on when a lease lapsed. Not session advisory locks: they break behind transaction-mode
/// poolers and say nothing across a database failover.
public struct PostgresLeadership: Sendable {
    /// Who holds the lease, as the table says.
    public struct Holder: Sendable, Equatable {
        public var epoch: Int64
        /// The holder's name (`--coordinator-id`), empty when nobody ever held it.
        public var holder: String
        /// The address its clients reach it at (`--advertise`).
        public var address: String
        /// Whether the lease has lapsed (by the database's clock).
        public var lapsed: Bool

        public init(epoch: Int64, holder: String, address: String, lapsed: Bool) {
            self.epoch = epoch
            self.holder = holder
            self.address = address
            self.lapsed = lapsed
        }
    }

    let client: PostgresClient
    /// This coordinator's name: unique per process run.
    public let holder: String
    public let address: String
    /// How long a lease lasts without renewal, in milliseconds.
    public let ttlMillis: Int64
    let logger: Logger
    /// The lease's own budget of calls running past their bound (`PostgresDeadline.Overruns`): reads
    /// piling up on a database that restarted must not leave a coordinator unable to renew or take it.
    private let overruns = PostgresDeadline.Overruns(callsMax: 64)

    public init(client: PostgresClient, holder: String, address: String, ttlMillis: Int64, logger: Logger) {
        self.client = client
        self.holder = holder
        self.address = address
        self.ttlMillis = ttlMillis
        self.logger = logger
    }

    /// Takes the lease if nobody holds it (or its holder let it lapse): the epoch goes up by one in the
    /// lease row and the head row, in one transaction. Returns the new epoch, or nil if another holds it.
    ///
    /// Bounded by a TTL (`takeLimit`; it may wait up to a quarter TTL for each of two locks). A take that
    /// gave up here but committed there leaves the lease in this coordinator's name, never used, until it
    /// lapses a TTL later (its next take finds it held and waits): a TTL without a writer, never two
    /// writers. (Taking such an epoch up was tried and dropped: by name and number alone it cannot be told
    /// from another process's under the same `--coordinator-id`.)
    ///
    /// A lease that is running is seen without a lock: a standby's look must never hold the lease row, or
    /// one frozen in the middle of it (a pause, SIGSTOP) would hold the writer's renewals until the
    /// database ended its transaction (`idleInTransactionMillis`, half a TTL or more) and depose a healthy
    /// writer. Only a lapsed lease is locked and taken.
    public func tryAcquire() async throws -> Int64? {
        let (client, logger, holder, address, ttlMillis) = (client, logger, holder, address, ttlMillis)
        return try await PostgresDeadline.run(within: takeLimit, overruns: overruns) {
            if let held = try await Self.look(client, logger), !held.lapsed { return nil }
            return try await client.withOpenTransaction(logger: logger) { connection -> Int64? in
                // A writer frozen inside an append holds the head row; wait a quarter TTL at most, then ask
                // again later (the database ends that transaction: `idleInTransactionMillis`).
                try await connection.query(PostgresQuery(unsafeSQL: "SET LOCAL lock_timeout = \(max(50, ttlMillis / 4))"), logger: logger)
                var current: (epoch: Int64, lapsed: Bool)?
                for row in try await connection.rows(
                    "SELECT epoch, expires_at < clock_timestamp() FROM lockstep_leader WHERE id = 1 FOR UPDATE", logger: logger) {
                    current = try row.decode((Int64, Bool).self)
                }
                guard let current else {
                    throw EventLogError.corrupted(position: 0, reason: "the leadership lease's row (lockstep_leader, id 1) is missing, so no coordinator can take it: "
                                                  + "restore it with the epoch lockstep_head holds (INSERT INTO lockstep_leader (id, epoch, holder, address, expires_at) "
                                                  + "SELECT 1, epoch, '', '', clock_timestamp() FROM lockstep_head)")
                }
                guard current.lapsed else { return nil }
                // A stored value (outside input): an epoch at bigint's end, edited by hand, stops the take here.
                let (epoch, overflow) = current.epoch.addingReportingOverflow(1)
                guard !overflow else {
                    throw EventLogError.corrupted(position: 0, reason: "the leadership lease's epoch is \(current.epoch), at its limit: no coordinator can take it (reset lockstep_leader.epoch and lockstep_head.epoch together)")
                }
                try await connection.query("""
                    UPDATE lockstep_leader SET epoch = \(epoch), holder = \(holder), address = \(address),
                        expires_at = clock_timestamp() + \(ttlMillis) * interval '1 millisecond' WHERE id = 1
                    """, logger: logger)
                // The fence: from this commit on, an append under an older epoch writes nothing.
                try await connection.query("UPDATE lockstep_head SET epoch = \(epoch) WHERE id = 1", logger: logger)
                return epoch
            }
        }
    }

    /// Extends the lease held under `epoch` by a TTL from now, waiting `limit` at most (the keeper gives
    /// at most the time left on the lease). False: it is no longer ours (another coordinator took over, it
    /// lapsed, or this one released it); throws when the database cannot be asked.
    public func renew(epoch: Int64, within limit: Duration) async throws -> Bool {
        let (client, logger, holder, ttlMillis) = (client, logger, holder, ttlMillis)
        return try await PostgresDeadline.run(within: limit, overruns: overruns) {
            // Only a lease still running: a renewal that gave up here and reaches the database after the
            // lease lapsed, or after the release (`-infinity`), must not bring it back, or a standby would
            // wait out another TTL for a coordinator that stood down.
            let rows = try await client.rows("""
                UPDATE lockstep_leader SET expires_at = clock_timestamp() + \(ttlMillis) * interval '1 millisecond'
                WHERE id = 1 AND epoch = \(epoch) AND holder = \(holder) AND expires_at > clock_timestamp() RETURNING epoch
                """, logger: logger)
            return !rows.isEmpty
        }
    }

    /// How long the database lets a writer's transaction sit idle before it ends it (and its locks),
    /// in milliseconds: a writer frozen in the middle of an append (a pause, SIGSTOP) must not hold the
    /// head row past its lease, or no standby could take over. Set on the writer's connections
    /// (`idle_in_transaction_session_timeout`); appends never idle that long on their own.
    public static func idleInTransactionMillis(ttlMillis: Int64) -> Int64 { max(500, ttlMillis / 2) }

    /// Gives the lease up at once (a graceful stop), so a standby need not wait out the TTL.
    public func release(epoch: Int64) async throws {
        let (client, logger, holder) = (client, logger, holder)
        try await PostgresDeadline.run(within: releaseLimit, overruns: overruns) {
            try await client.perform("UPDATE lockstep_leader SET expires_at = '-infinity' WHERE id = 1 AND epoch = \(epoch) AND holder = \(holder)",
                                     logger: logger)
        }
    }

    /// The lease as the table has it now.
    public func current() async throws -> Holder? {
        let (client, logger) = (client, logger)
        return try await PostgresDeadline.run(within: lookLimit, overruns: overruns) { try await Self.look(client, logger) }
    }

    /// The lease row, read without a lock.
    private static func look(_ client: PostgresClient, _ logger: Logger) async throws -> Holder? {
        for row in try await client.rows("SELECT epoch, holder, address, expires_at < clock_timestamp() FROM lockstep_leader WHERE id = 1", logger: logger) {
            let (epoch, holder, address, lapsed) = try row.decode((Int64, String, String, Bool).self)
            return Holder(epoch: epoch, holder: holder, address: address, lapsed: lapsed)
        }
        return nil
    }

    /// The bound on a release (`PostgresDeadline`): a graceful stop does not wait long on a database
    /// that stopped answering (a standby then waits out the TTL instead).
    var releaseLimit: Duration { .milliseconds(min(2_000, max(100, ttlMillis / 3))) }
    /// The bound on a take: a TTL (it may wait up to a quarter TTL for each of two locks).
    var takeLimit: Duration { .milliseconds(ttlMillis) }
    /// The bound on a look at the holder: half the TTL.
    var lookLimit: Duration { .milliseconds(max(200, ttlMillis / 2)) }
}
