import Logging
import LockstepStore
import NIOCore
import PostgresNIO

/// An append batch's two ways into the log, sharing one writing statement:
///
/// - **Ahead** (the writer's usual case): the log remembers the head its last commit left (`known`), so
///   it chains the batch before asking anything and sends one statement, committed on its own
///   (PostgreSQL's implicit transaction), that locks the head, checks that it is still that head under
///   this writer's epoch and that every stream is at the version the batch expects, and only then
///   inserts. Two round trips instead of four; see `transaction` for the second (whether it wrote).
/// - **Locked** (the first append, after any failure, and whenever the statement above wrote nothing):
///   BEGIN, read the head `FOR UPDATE` with the versions of the batch's streams, check each request on
///   its own, the same writing statement (unprepared, so whether it wrote is its command tag), COMMIT.
extension PostgresEventLog {
    /// A batch chained onto a head: each request's result, the head it leaves and the head before, and
    /// the rows the writing statement inserts.
    struct Planned: Sendable {
        var results: [Result<AppendReceipt, EventLogError>] = []
        var before: LogHead
        var head: LogHead
        var sequences: [Int64] = [], streams: [String] = [], streamVersions: [Int64] = []
        var records: [ByteBuffer] = [], links: [ByteBuffer] = []
        /// The streams that get events, with the version each is at before the batch and after it.
        var touched: [String] = [], priorVersions: [Int64] = [], newVersions: [Int64] = []

        /// Whether the batch writes anything.
        var writes: Bool { head != before }
    }

    /// Chains `requests` onto `before`, each checked on its own, in order, against `versions` (the
    /// streams' versions before the batch; a stream not there is empty).
    static func chain(_ requests: [AppendRequest], onto before: LogHead, versions start: [String: UInt64]) throws(EventLogError) -> Planned {
        var planned = Planned(before: before, head: before)
        var versions = start
        var touched: [String: UInt64] = [:]
        for request in requests {
            let actual = versions[request.stream] ?? 0
            guard actual == request.expectedVersion else {
                planned.results.append(.failure(.versionConflict(stream: request.stream, expected: request.expectedVersion, actual: actual)))
                continue
            }
            if touched[request.stream] == nil { touched[request.stream] = actual }
            // The head and the versions were read from the database (outside input): a sequence or a version
            // at bigint's end (edited by hand) stops the append, rather than trapping on the next.
            let room = UInt64(Int64.max)
            guard planned.head.sequence < room, UInt64(request.records.count) <= room - planned.head.sequence,
                  actual < room, UInt64(request.records.count) <= room - actual else {
                throw .corrupted(position: planned.head.sequence, reason: "the head's sequence \(planned.head.sequence) or stream \(request.stream)'s version \(actual) leaves no room for \(request.records.count) more events in a bigint")
            }
            let first = planned.head.sequence + 1
            var version = actual
            for record in request.records {
                version += 1
                let sequence = planned.head.sequence + 1
                let link = planned.head.chainHash.next(sequence: sequence, record: record)
                planned.sequences.append(Int64(sequence))
                planned.streams.append(request.stream)
                planned.streamVersions.append(Int64(version))
                planned.records.append(ByteBuffer(bytes: record))
                planned.links.append(ByteBuffer(bytes: link.bytes))
                planned.head = LogHead(sequence: sequence, chainHash: link)
            }
            versions[request.stream] = version
            planned.results.append(.success(AppendReceipt(firstSequence: first, lastSequence: planned.head.sequence, streamVersion: version)))
        }
        for stream in touched.keys.sorted() {
            planned.touched.append(stream)
            planned.priorVersions.append(Int64(touched[stream]!))
            planned.newVersions.append(Int64(versions[stream]!))
        }
        return planned
    }

    /// The batch chained onto the head this writer's last commit left, every request taken to hold: nil
    /// when they cannot all hold together (two requests on one stream that do not follow on), or when
    /// the batch writes nothing. Whether they do hold is the writing statement's to check.
    static func ahead(_ requests: [AppendRequest], onto known: LogHead) -> Planned? {
        var assumed: [String: UInt64] = [:]
        for request in requests where assumed[request.stream] == nil { assumed[request.stream] = request.expectedVersion }
        guard let planned = try? chain(requests, onto: known, versions: assumed) else { return nil }
        guard planned.writes, planned.results.allSatisfy({ if case .success = $0 { true } else { false } }) else { return nil }
        return planned
    }

    /// The locked way: reads the head `FOR UPDATE` (it serializes appends) with the versions of every
    /// stream the batch touches, chains the requests that hold and writes them. Runs inside a transaction.
    static func locked(_ requests: [AppendRequest], epoch: Int64?, on connection: PostgresConnection, logger: Logger) async throws -> Planned {
        // One statement: one row per stream found (the head's columns repeated), one row when none is.
        let names = Array(Set(requests.map(\.stream))).sorted()
        let rows = try await connection.rows("""
            WITH head AS (SELECT sequence, chain_hash, epoch FROM lockstep_head WHERE id = 1 FOR UPDATE)
            SELECT head.sequence, head.chain_hash, head.epoch, s.stream, s.version
            FROM head LEFT JOIN lockstep_streams s ON s.stream = ANY(\(names))
            """, logger: logger)
        var before: LogHead?
        var versions: [String: UInt64] = [:]
        for row in rows {
            let (sequence, hash, stored, stream, version) = try row.decode((Int64, ByteBuffer, Int64, String?, Int64?).self)
            if let stream, let version { versions[stream] = try Self.stored(version, "stream \(stream)'s version", at: sequence) }
            if before != nil { continue }
            let link = try chainHash(hash, at: sequence, of: "the head's")
            if let epoch, stored != epoch {
                throw EventLogError.writesStopped(reason: "deposed: this coordinator wrote under epoch \(epoch); another took over (epoch \(stored))")
            }
            before = LogHead(sequence: try Self.stored(sequence, "the head's sequence", at: sequence), chainHash: link)
        }
        // The head row is stored bytes too: it must name the last event, with its chain hash (an edited or
        // deleted row would chain the batch onto the wrong event, leave a gap, or collide with an event).
        // Asked in a statement of its own, after the lock: in READ COMMITTED a statement whose FOR UPDATE
        // waited for another append's commit sees the new head row, but its subqueries would not see the
        // events that commit added.
        guard let before else {
            throw EventLogError.corrupted(position: 0, reason: "the log's head row (lockstep_head, id 1) is missing")
        }
        guard before.sequence > 0 || before.chainHash == .genesis else {
            throw EventLogError.corrupted(position: 0, reason: "the head row names no event but its chain hash is not the genesis hash")
        }
        var atHead: (stored: ByteBuffer?, pastIt: Bool) = (nil, false)
        let head = Int64(clamping: before.sequence)
        for row in try await connection.rows("""
            SELECT (SELECT chain_hash FROM lockstep_events WHERE sequence = \(head)), EXISTS (SELECT 1 FROM lockstep_events WHERE sequence > \(head))
            """, logger: logger) {
            atHead = try row.decode((ByteBuffer?, Bool).self)
        }
        guard !atHead.pastIt else {
            throw EventLogError.corrupted(position: before.sequence + 1, reason: "the head row says \(before.sequence), but events follow it")
        }
        if let stored = atHead.stored {
            guard Array(stored.readableBytesView) == before.chainHash.bytes else {
                throw EventLogError.corrupted(position: before.sequence, reason: "the head row's chain hash is not event \(before.sequence)'s")
            }
        } else if before.sequence > 0, try await Self.baseLink(at: before.sequence, on: connection, logger: logger) != before.chainHash {
            // Not stored: archived (the base keeps its link), or missing.
            throw EventLogError.corrupted(position: before.sequence, reason: "the head row names event \(before.sequence), which is neither in the log nor its archived base")
        }
        let planned = try chain(requests, onto: before, versions: versions)
        if planned.writes {
            // Unprepared here (the rarer way: the first batch, after a failure or a conflict), so its
            // result is collected with its command tag: `UPDATE 1` when it wrote, in one round trip.
            let statement = WriteStatement(planned: planned, epoch: epoch)
            let result = try await connection.result(PostgresQuery(unsafeSQL: WriteStatement.sql, binds: try statement.makeBindings()), logger: logger)
            // The head and the versions were read under the head's lock in this transaction.
            guard result.metadata.rows == 1 else {
                throw EventLogError.unavailable("the head or a stream's version changed under the head's lock; nothing was written")
            }
        }
        return planned
    }

    /// The chain hash the archived base keeps for event `sequence`, if the base is that event.
    static func baseLink(at sequence: UInt64, on connection: PostgresConnection, logger: Logger) async throws -> ChainHash? {
        var exists = false
        for row in try await connection.rows("SELECT to_regclass('lockstep_base') IS NOT NULL", logger: logger) { exists = try row.decode(Bool.self) }
        guard exists else { return nil }
        var link: ChainHash?
        for row in try await connection.rows("SELECT chain_hash FROM lockstep_base WHERE id = 1 AND sequence = \(Int64(clamping: sequence))", logger: logger) {
            link = ChainHash(bytes: Array(try row.decode(ByteBuffer.self).readableBytesView))
        }
        return link
    }

    /// The one writing statement: when the head is still `planned.before` under `epoch` (nil: any) and
    /// every touched stream is at its prior version, inserts the events, moves the streams' versions and
    /// the head, and tells replicas (one notification per committed batch, delivered at commit; a hint
    /// only: a replica that misses it reads from its last sequence anyway). Sent ahead, prepared: whether
    /// it wrote is asked afterwards (`landed(_:on:)`): the statement returns no rows, since a prepared statement's rows come
    /// through postgres-nio's row sequence, which traps when the connection ends right after a row
    /// (`PostgresRows.swift`), and its command tag cannot be read without a row sequence (1.33.2's
    /// `execute` for statements without rows traps reading it).
    static func write(_ planned: Planned, epoch: Int64?, on connection: PostgresConnection, logger: Logger) async throws {
        try checkOpen(connection)
        // No rows: the sequence ends as it is made, and an error of the statement (a constraint, a
        // trigger, the disk) fails the call instead.
        for try await _ in try await connection.execute(WriteStatement(planned: planned, epoch: epoch), logger: logger) {}
    }

    /// Whether `planned`'s last event is in the log with its chain hash, asked on `connection` after the
    /// writing statement sent ahead (postgres-nio sends this only once that statement's implicit commit
    /// was answered): the hash is the batch's own, so it is there exactly when the batch committed.
    static func landed(_ planned: Planned, on connection: PostgresConnection, logger: Logger) async throws -> Bool {
        let rows = try await connection.rows("SELECT chain_hash FROM lockstep_events WHERE sequence = \(Int64(planned.head.sequence))", logger: logger)
        return try rows.first.map { Array(try $0.decode(ByteBuffer.self).readableBytesView) == planned.head.chainHash.bytes } ?? false
    }
}

/// The writing statement, prepared once per connection (PostgreSQL parses it once; each append only binds).
struct WriteStatement: PostgresPreparedStatement {
    static let name = "lockstep_write_v2"
    // Every data-modifying part of a WITH runs to completion whether or not the query reads it; each
    // reads `ready`, which has one row when the checks hold and none otherwise. In READ COMMITTED the
    // head's lock waits for any other writer and then sees its row as committed, so a head that still
    // matches means nothing was appended since, and the streams' versions read are current.
    static let sql = """
        WITH head AS (
            SELECT id FROM lockstep_head
            WHERE id = 1 AND sequence = $1 AND chain_hash = $2 AND ($3::bigint IS NULL OR epoch = $3::bigint)
            FOR UPDATE),
        ready AS (
            SELECT id FROM head WHERE NOT EXISTS (
                SELECT FROM unnest($4::text[], $5::bigint[]) AS x(stream, version)
                LEFT JOIN lockstep_streams s ON s.stream = x.stream WHERE coalesce(s.version, 0) <> x.version)),
        events AS (
            INSERT INTO lockstep_events (sequence, stream, stream_version, record, chain_hash)
            SELECT e.* FROM ready, unnest($6::bigint[], $7::text[], $8::bigint[], $9::bytea[], $10::bytea[])
                AS e(sequence, stream, stream_version, record, chain_hash)),
        versions AS (
            INSERT INTO lockstep_streams (stream, version)
            SELECT v.* FROM ready, unnest($4::text[], $11::bigint[]) AS v(stream, version)
            ON CONFLICT (stream) DO UPDATE SET version = EXCLUDED.version),
        notified AS (
            SELECT id, pg_notify('\(PostgresEventLog.notificationChannel)', $12::bigint::text) FROM ready)
        UPDATE lockstep_head SET sequence = $12, chain_hash = $13 FROM notified WHERE lockstep_head.id = notified.id
        """

    /// No rows (`PostgresEventLog.write`).
    typealias Row = ()

    let planned: PostgresEventLog.Planned
    let epoch: Int64?

    func makeBindings() throws -> PostgresBindings {
        var bindings = PostgresBindings(capacity: 13)
        bindings.append(Int64(planned.before.sequence))
        bindings.append(ByteBuffer(bytes: planned.before.chainHash.bytes))
        bindings.append(epoch)
        bindings.append(planned.touched)
        bindings.append(planned.priorVersions)
        bindings.append(planned.sequences)
        bindings.append(planned.streams)
        bindings.append(planned.streamVersions)
        bindings.append(planned.records)
        bindings.append(planned.links)
        bindings.append(planned.newVersions)
        bindings.append(Int64(planned.head.sequence))
        bindings.append(ByteBuffer(bytes: planned.head.chainHash.bytes))
        return bindings
    }

    func decodeRow(_ row: PostgresRow) throws {}
}
