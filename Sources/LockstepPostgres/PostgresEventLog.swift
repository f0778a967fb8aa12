import Logging
import LockstepStore
import NIOCore
import PostgresNIO
import Synchronization

/// The event log on PostgreSQL (issue 16), through postgres-nio: the same log port, record bytes and
/// hash chain as the SQLite log, so the same conformance suite holds it and `history verify|replay|export`
/// read it unchanged.
///
/// One head row (`lockstep_head`, id 1) is locked and rewritten inside every append transaction: it
/// serializes writers, so sequences are dense and visible in commit order, and it is where the previous
/// chain hash is checked or read and the new one written (no sequence object, no high-water mark). A
/// writer chains a batch onto the head its last commit left and sends it in one statement that writes
/// only when that is still the head; otherwise (and first) it reads the head `FOR UPDATE` in a
/// transaction (`PostgresEventLog+Append.swift`).
/// Appends that arrive while a commit is in flight share the next transaction (group commit), each
/// checked against its expected stream version on its own. A COMMIT whose outcome is unknown (the
/// connection lost during it) is resolved by reading the head, never by guessing; when even that fails
/// the log stops taking writes (fail-stop).
///
/// A failure PostgreSQL reports as a storage fault (SQLSTATE class 58, system errors such as an I/O
/// error, or XX, internal errors such as corrupted data) stops writes (fail-stop), as an I/O error does
/// on SQLite; a full disk (53100) is `storage_full`; a lost or refused connection is `storage_unavailable`
/// and the next append tries again on a fresh connection (nothing of a transaction that did not reach
/// COMMIT is kept).
///
/// The caller owns the `PostgresClient` and runs it (`client.run()`, or as a service) for the log's lifetime.
public actor PostgresEventLog: EventLog {
    public struct Options: Sendable {
        /// Told about every successful commit (metrics, benchmarks).
        public var observer: (@Sendable (LogCommit) -> Void)?
        /// Told about every transaction that failed for a storage reason (readiness, log lines).
        public var failureObserver: (@Sendable (EventLogError) -> Void)?
        /// How long a commit whose outcome is unknown is resolved for, reading the head with back-off
        /// (100 ms doubling to 2 s), before writes stop, in milliseconds: a database restart shorter than
        /// this costs a wait, not a stop.
        public var resolveMillisMax: Int64 = 30_000
        /// The longest an append transaction may take, in milliseconds: past it its connection is closed
        /// from this side, which fails whatever it waits for (a query on a connection whose server died
        /// can otherwise wait forever in postgres-nio 1.33), and the outcome is resolved from the log.
        public var transactionMillisMax: Int64 = 5_000
        /// Record bytes one read returns at most, past its first event (`EventLogLimits.readPageBytesMax`,
        /// and never more; lower only in tests, whose pages then need not move tens of megabytes).
        package var readPageBytesMax = EventLogLimits.readPageBytesMax

        public init() {}
    }

    /// The session settings a client for the log must start its connections with (its configuration's
    /// `options.additionalStartupParameters`): `lock_timeout` at a third of `transactionMillisMax`, so a
    /// statement waiting for a lock (the head row held by someone's open transaction) is ended by the
    /// server, with nothing written, before the transaction's own bound leaves its outcome unknown. A
    /// third, not a half: the limit is per lock wait, and a statement queued behind another waiter can
    /// wait twice. A log opened on a client without it never sends a batch ahead (it says so at open).
    public static func sessionParameters(transactionMillisMax: Int64 = Options().transactionMillisMax) -> [(String, String)] {
        [("lock_timeout", "\(max(1, transactionMillisMax / 3))")]
    }

    package let client: PostgresClient
    /// The event loop an append transaction starts on and its watchdog is scheduled on.
    let loop: any EventLoop = PostgresClient.defaultEventLoopGroup.any()
    let logger: Logger
    let options: Options
    /// Appends waiting for the next transaction (the drainer's own has no continuation).
    private var queue: [(request: AppendRequest, continuation: CheckedContinuation<Result<AppendReceipt, EventLogError>, Never>?)] = []
    private var queuedEvents = 0
    private var draining = false
    var stopped: EventLogError?
    /// The writer's epoch this log appends under (`fence`); nil: unfenced (one coordinator, tools).
    var epoch: Int64?
    /// The head this log's last commit left, while nothing has failed since: the next batch is chained
    /// onto it and sent ahead in one statement (`PostgresEventLog+Append.swift`); nil: the locked way.
    var known: LogHead?
    /// How many batches went ahead and committed (the rest took the locked way).
    private(set) var committedAhead = 0
    /// Whether batches may go ahead: only when the server ends a lock wait before `transactionMillisMax`
    /// (`sessionParameters`), since a batch sent ahead counts as sent the moment its statement leaves.
    nonisolated let aheadAllowed: Bool

    /// From now on every append checks, in its transaction, that the log's epoch is still `epoch`; when
    /// another coordinator has taken over (a higher epoch), the append writes nothing and the log stops
    /// taking writes: a deposed writer can never interleave with the new one.
    public func fence(epoch: Int64) {
        self.epoch = epoch
        known = nil
    }

    /// Why writes stopped (a storage fault, an unknown outcome, deposition), nil while they go on.
    public var writesStopped: EventLogError? { stopped }

    /// The bound on opening (`open`), in milliseconds: its transaction waits for another coordinator
    /// preparing the schema, which takes well under a second.
    static let openMillisMax: Int64 = 60_000

    /// Opens the log on `client`'s database, creating its tables when they do not exist yet (`create`), or
    /// refusing a database without them (governance commands, which never alter what they read).
    public static func open(client: PostgresClient, options: Options = Options(), create: Bool = true,
                            logger: Logger = Logger(label: "lockstep.postgres")) async throws(EventLogError) -> PostgresEventLog {
        let lockTimeoutMillis: Int64
        do {
            // Bounded (`PostgresDeadline`): a database that stopped answering fails the start instead of holding it.
            lockTimeoutMillis = try await PostgresDeadline.run(within: .milliseconds(openMillisMax)) { () async throws -> Int64 in
                var lockTimeoutMillis: Int64 = 0
                if create {
                    // One transaction, serialized between coordinators starting together (concurrent CREATE
                    // TABLE IF NOT EXISTS can collide); the lock is the transaction's, released at its end.
                    // A schema already in place is left untouched: its DDL (ALTER TABLE takes an exclusive
                    // lock even when the column exists) would queue behind a running writer's locks and make
                    // the writer's next statement queue behind it, a deadlock PostgreSQL broke by failing this
                    // coordinator's start (a CI run: three coordinators starting on one database).
                    try await client.withOpenTransaction(logger: logger) { connection in
                        // Another coordinator preparing the schema is waited for, whatever the session's lock_timeout.
                        try await connection.query("SET LOCAL lock_timeout = 0", logger: logger)
                        _ = try await connection.rows("SELECT pg_advisory_xact_lock(7475012016)", logger: logger)
                        var ready = false
                        for row in try await connection.rows(PostgresQuery(unsafeSQL: schemaReady), logger: logger) {
                            ready = try row.decode(Bool.self)
                        }
                        guard !ready else { return }
                        for statement in schema { try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger) }
                    }
                } else {
                    var found = false
                    for row in try await client.rows("SELECT to_regclass('lockstep_head') IS NOT NULL", logger: logger) {
                        found = try row.decode(Bool.self)
                    }
                    guard found else { throw EventLogError.invalidRequest("this database holds no Lockstep log (no lockstep_head table)") }
                }
                for row in try await client.rows("SELECT setting::bigint FROM pg_settings WHERE name = 'lock_timeout'", logger: logger) {
                    lockTimeoutMillis = try row.decode(Int64.self)
                }
                return lockTimeoutMillis
            }
        } catch let error as EventLogError {
            throw error
        } catch {
            throw .unavailable("the PostgreSQL schema could not be \(create ? "prepared" : "read"): \(Self.describe(error))")
        }
        let aheadAllowed = lockTimeoutMillis > 0 && lockTimeoutMillis <= max(1, options.transactionMillisMax / 3)
        if create, !aheadAllowed {
            logger.warning("lock_timeout is \(lockTimeoutMillis) ms on this client (0: none), not at most a third of transactionMillisMax (\(options.transactionMillisMax) ms): every append takes the locked way; start the client with PostgresEventLog.sessionParameters")
        }
        return PostgresEventLog(client: client, options: options, logger: logger, aheadAllowed: aheadAllowed)
    }

    /// Runs `body` with the log on a client of its own, running only for the call (one-shot commands:
    /// history, copies); the client's connections are closed when it returns.
    public static func withLog<Result>(_ configuration: PostgresClient.Configuration, create: Bool,
                                       _ body: (PostgresEventLog) async throws -> Result) async throws -> Result {
        var quiet = Logger(label: "lockstep.postgres")
        quiet.logLevel = .warning
        let client = PostgresClient(configuration: configuration, backgroundLogger: quiet)
        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await client.run() }
            defer { group.cancelAll() }
            let log = try await open(client: client, create: create, logger: quiet)
            return try await body(log)
        }
    }

    private init(client: PostgresClient, options: Options, logger: Logger, aheadAllowed: Bool) {
        self.aheadAllowed = aheadAllowed
        self.client = client
        self.options = options
        self.logger = logger
    }

    /// True when every table and column `schema` makes is there (its last changes: the snapshots table,
    /// the head's epoch column).
    static let schemaReady = """
        SELECT to_regclass('lockstep_snapshots') IS NOT NULL AND to_regclass('lockstep_streams') IS NOT NULL
            AND to_regclass('lockstep_leader') IS NOT NULL AND to_regclass('lockstep_events') IS NOT NULL
            AND EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass('lockstep_head') AND attname = 'epoch' AND NOT attisdropped)
        """

    static let schema = [
        """
        CREATE TABLE IF NOT EXISTS lockstep_head (
            id integer PRIMARY KEY CHECK (id = 1), sequence bigint NOT NULL, chain_hash bytea NOT NULL)
        """,
        "INSERT INTO lockstep_head (id, sequence, chain_hash) VALUES (1, 0, decode(repeat('00', 32), 'hex')) ON CONFLICT (id) DO NOTHING",
        // The writer's epoch (PostgresLeadership): bumped by a coordinator that takes over, checked by every
        // append of a fenced log in the transaction that writes.
        "ALTER TABLE lockstep_head ADD COLUMN IF NOT EXISTS epoch bigint NOT NULL DEFAULT 0",
        """
        CREATE TABLE IF NOT EXISTS lockstep_leader (
            id integer PRIMARY KEY CHECK (id = 1), epoch bigint NOT NULL, holder text NOT NULL, address text NOT NULL,
            expires_at timestamptz NOT NULL)
        """,
        "INSERT INTO lockstep_leader (id, epoch, holder, address, expires_at) VALUES (1, 0, '', '', '-infinity') ON CONFLICT (id) DO NOTHING",
        """
        CREATE TABLE IF NOT EXISTS lockstep_events (
            sequence bigint PRIMARY KEY, stream text NOT NULL, stream_version bigint NOT NULL,
            record bytea NOT NULL, chain_hash bytea NOT NULL, UNIQUE (stream, stream_version))
        """,
        "CREATE TABLE IF NOT EXISTS lockstep_streams (stream text COLLATE \"C\" PRIMARY KEY, version bigint NOT NULL)",
        """
        CREATE TABLE IF NOT EXISTS lockstep_snapshots (
            sequence bigint PRIMARY KEY, chain_hash bytea NOT NULL, state bytea NOT NULL, digest bytea NOT NULL)
        """,
    ]

    // MARK: - Appends

    public func append(_ request: AppendRequest) async throws(EventLogError) -> AppendReceipt {
        try request.validate()
        if let stopped { throw stopped }
        guard queuedEvents + request.records.count <= EventLogLimits.appendQueueEventsMax else {
            throw .overloaded("\(queuedEvents) events are waiting for a commit; the limit is \(EventLogLimits.appendQueueEventsMax)")
        }
        queuedEvents += request.records.count
        if draining {
            // A commit is in flight: this append joins the next transaction, which the drainer runs.
            return try await withCheckedContinuation { queue.append((request, $0)) }.get()
        }
        // This caller commits, batch after batch, until nothing waits (no task of the log's own).
        draining = true
        queue.append((request, nil))
        var own: Result<AppendReceipt, EventLogError>?
        while !queue.isEmpty {
            var events = 0
            var count = 0
            while count < queue.count, count == 0 || events + queue[count].request.records.count <= EventLogLimits.commitBatchEventsMax {
                events += queue[count].request.records.count
                count += 1
            }
            let batch = Array(queue.prefix(count))
            queue.removeFirst(count)
            queuedEvents -= events
            let results = await commit(batch.map(\.request))
            for (entry, result) in zip(batch, results) {
                if let continuation = entry.continuation { continuation.resume(returning: result) } else { own = result }
            }
        }
        draining = false
        guard let own else { preconditionFailure("the drainer's own append was not committed") }
        return try own.get()
    }

    /// One transaction for `requests`. `reruns`: 0 for the first run; from 1, the locked way's runs of a
    /// batch sent ahead that did not commit.
    private func commit(_ requests: [AppendRequest], reruns: Int = 0) async -> [Result<AppendReceipt, EventLogError>] {
        if let stopped { return requests.map { _ in .failure(stopped) } }
        let began = ContinuousClock.now
        let progress = TransactionProgress()
        do {
            if try await transaction(requests, ahead: aheadAllowed ? known.flatMap { Self.ahead(requests, onto: $0) } : nil, progress) { committedAhead += 1 }
        } catch {
            known = nil
            let failure = Self.failure(error)
            if case .versionConflict = failure {} else { options.failureObserver?(failure) }
            if case .writesStopped = failure, stopped == nil { stopped = failure }
            guard let inserted = progress.state.withLock({ $0.planned }) else {
                // The locked way's run of a batch sent ahead failed before its inserts were done (most
                // often: the pool handed it the connection the batch's failure closed, not yet dropped).
                // That transaction commits nothing, and nothing of the batch landed: it runs again (twice
                // at most) to read the reason.
                if (1...2).contains(reruns), stopped == nil, case .unavailable = failure {
                    try? await Task.sleep(for: .milliseconds(50 * reruns))
                    return await commit(requests, reruns: reruns + 1)
                }
                return requests.map { _ in .failure(failure) }
            }
            // A batch sent ahead that failed at its commit, where postgres-nio cannot read PostgreSQL's error
            // (it closes the connection), runs again the locked way once the log shows nothing of it was
            // written, to report the reason with its SQLSTATE (a storage fault there stops writes).
            let rerun = progress.state.withLock({ $0.syncing }) && !(error is TransactionOverran) && reruns == 0
            return await resolve(inserted, failure: failure, commitMayStillLand: error is TransactionOverran, rerunIfAbsent: rerun ? requests : nil)
        }
        guard let inserted = progress.state.withLock({ $0.planned }) else { return requests.map { _ in .failure(.unavailable("the transaction ran no inserts")) } }
        known = inserted.head
        let events = inserted.head.sequence - inserted.before.sequence
        if events > 0, let observer = options.observer {
            observer(LogCommit(events: Int(events), appends: requests.count, durationNanos: LogCommit.nanoseconds(since: began)))
        }
        return inserted.results
    }

    /// An error of a transaction as the log reports it (see the type's comment).
    static func failure(_ error: any Error) -> EventLogError {
        let error = cause(error)
        if let error = error as? EventLogError { return error }
        if let error = error as? PSQLError, let state = error.serverInfo?[.sqlState] {
            if state == "53100" { return .storageFull }
            if state == "55P03" {
                return .unavailable("a lock the append needs (the log's head row) was held by another session past lock_timeout; nothing was written (pg_locks and pg_stat_activity name the session holding lockstep_head; end its transaction): \(describe(error))")
            }
            if state.hasPrefix("58") || state.hasPrefix("XX") {
                return .writesStopped(reason: "PostgreSQL reported a storage fault (SQLSTATE \(state)): \(describe(error))")
            }
        }
        return .unavailable(describe(error))
    }

    /// Whether `planned` is in the log. Heads only grow: it committed exactly when its last event is there
    /// with its chain hash.
    private func landed(_ planned: Planned) async throws(EventLogError) -> Bool {
        let now = try await settledHead()
        guard planned.head.sequence > planned.before.sequence, now.sequence >= planned.head.sequence else { return false }
        return try await chainHash(at: planned.head.sequence) == planned.head.chainHash
    }

    /// The transaction failed after its inserts (at COMMIT, or on the way to it): whether it committed is
    /// read from the log. Heads only grow, so it committed exactly when the event at the sequence it would
    /// have ended on is there with the chain hash it computed; otherwise nothing of it was written (another
    /// writer's events there, or none). While the log cannot be read (the database restarting) it is asked again
    /// with back-off for `resolveMillisMax`; then nobody knows, and the log stops taking writes.
    /// `rerunIfAbsent`: a batch sent ahead that failed at its commit; when the log shows it absent it runs
    /// again the locked way (however long the log took to answer: the pool may hand out the closed
    /// connection first).
    private func resolve(_ planned: Planned, failure: EventLogError, commitMayStillLand: Bool = false, rerunIfAbsent requests: [AppendRequest]? = nil) async -> [Result<AppendReceipt, EventLogError>] {
        let reason = failure.description
        let deadline = ContinuousClock.now + .milliseconds(options.resolveMillisMax)
        var pause = Duration.milliseconds(100)
        while true {
            do {
                if try await landed(planned) {
                    logger.notice("a commit's acknowledgement was lost; the head shows it committed", metadata: ["head": "\(planned.head.sequence)"])
                    return planned.results
                }
                // Not there. A COMMIT that overran may still land, so that is no answer; otherwise it never will.
                if commitMayStillLand { break }
                if let requests, stopped == nil {
                    logger.notice("a batch sent ahead did not commit; the locked way runs it again", metadata: ["error": "\(failure)"])
                    return await commit(requests, reruns: 1)
                }
                return planned.results.map { result in
                    if case .failure = result { return result }
                    return .failure(stopped ?? failure)
                }
            } catch {
                guard ContinuousClock.now + pause < deadline else { break }
                try? await Task.sleep(for: pause)
                pause = min(pause * 2, .seconds(2))
            }
        }
        let stop = EventLogError.writesStopped(reason: "a commit's outcome is unknown and the head could not tell: \(reason)")
        if stopped == nil { stopped = stop }
        options.failureObserver?(stop)
        return planned.results.map { result in
            if case .failure = result { return result }
            return .failure(.outcomeUnknown(reason: reason))
        }
    }

}
