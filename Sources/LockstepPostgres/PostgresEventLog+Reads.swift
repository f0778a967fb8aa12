import Logging
import LockstepStore
import NIOCore
import PostgresNIO
import Synchronization

/// Reads and snapshots: every page checked link by link against its predecessor's hash.
extension PostgresEventLog {
    // MARK: - Reads

    public func read(after sequence: UInt64, limit: Int) async throws(EventLogError) -> [StoredEvent] {
        let limit = min(max(limit, 0), EventLogLimits.readPageEventsMax)
        guard limit > 0, sequence < UInt64(Int64.max) else { return [] }
        func page() async throws(EventLogError) -> [(StoredEvent, ChainHash?)] {
            try await select("""
                SELECT sequence, stream, stream_version, record, chain_hash, previous, bytes, stream_bytes FROM (
                  SELECT *, row_number() OVER w AS n, sum(octet_length(record)) OVER w AS through FROM (
                    SELECT e.sequence, \(unescaped: Self.boundedColumns), e.chain_hash, p.chain_hash AS previous
                    FROM lockstep_events e LEFT JOIN lockstep_events p ON p.sequence = e.sequence - 1
                    WHERE e.sequence > \(Int64(sequence)) ORDER BY e.sequence LIMIT \(Int64(limit))
                  ) limited WINDOW w AS (ORDER BY sequence)
                ) page WHERE n = 1 OR through <= \(Int64(pageBytesMax)) ORDER BY sequence
                """)
        }
        var events = try await page()
        // Not the event after `sequence` first: archived (before the base), or damage.
        if let first = events.first, first.0.sequence != sequence + 1, let base = try await base(), sequence < base.sequence {
            throw .archived(through: base.sequence)
        }
        if events.isEmpty, try await head().sequence > sequence {
            if let base = try await base(), sequence < base.sequence { throw .archived(through: base.sequence) }
            // Nothing after `sequence` but a head past it: either a commit landed between the two reads
            // (events and head commit together, so a read after the head's sees them), or events are
            // missing. Asked once more, a page still empty is damage.
            events = try await page()
            if events.isEmpty { throw .corrupted(position: sequence + 1, reason: "event \(sequence + 1) is missing") }
        }
        // The page must start right after `sequence` and have no gaps (a deleted row is damage).
        var expected = sequence + 1
        var verifier: ChainVerifier?
        for (event, previous) in events {
            guard event.sequence == expected else { throw .corrupted(position: expected, reason: "event \(expected) is missing") }
            if verifier == nil {
                var link = sequence == 0 ? ChainHash.genesis : previous
                // The event before the page was the last one archived: the base keeps its link. (An archival
                // that committed since the page was read moved the base past it: archived, not damage.)
                if link == nil, let base = try await base() {
                    if base.sequence == sequence { link = base.chainHash }
                    if sequence < base.sequence { throw .archived(through: base.sequence) }
                }
                guard let link else { throw .corrupted(position: sequence, reason: "event \(sequence) is missing") }
                verifier = ChainVerifier(after: LogHead(sequence: sequence, chainHash: link))
            }
            try verifier?.check(event)
            expected += 1
        }
        return events.map(\.0)
    }

    public func read(stream: String, after sequence: UInt64, limit: Int) async throws(EventLogError) -> [StoredEvent] {
        let limit = min(max(limit, 0), EventLogLimits.readPageEventsMax)
        guard limit > 0, sequence < UInt64(Int64.max), !stream.isEmpty, stream.utf8.count <= EventLogLimits.streamNameBytesMax else { return [] }
        let events = try await select("""
            SELECT sequence, stream, stream_version, record, chain_hash, previous, bytes, stream_bytes FROM (
              SELECT *, row_number() OVER w AS n, sum(octet_length(record)) OVER w AS through FROM (
                SELECT e.sequence, \(unescaped: Self.boundedColumns), e.chain_hash, p.chain_hash AS previous
                FROM lockstep_events e LEFT JOIN lockstep_events p ON p.sequence = e.sequence - 1
                WHERE e.stream = \(stream) AND e.sequence > \(Int64(sequence)) ORDER BY e.sequence LIMIT \(Int64(limit))
              ) limited WINDOW w AS (ORDER BY sequence)
            ) page WHERE n = 1 OR through <= \(Int64(pageBytesMax)) ORDER BY sequence
            """)
        var verifier = StreamReadVerifier()
        var base: Snapshot??
        for (event, previous) in events {
            var previous = previous
            if previous == nil, event.sequence > 1 {
                // The event before it is not stored: the base's when it was the last one archived.
                if base == nil { base = .some(try await self.base()) }
                if let known = base ?? nil, known.sequence == event.sequence - 1 { previous = known.chainHash }
                // (Archived meanwhile, past this event: the page is stale, not damaged.)
                if let known = base ?? nil, known.sequence >= event.sequence { throw .archived(through: known.sequence) }
            }
            try verifier.check(event, previous: previous)
        }
        return events.map(\.0)
    }

    /// A page's stream and record columns, each only when within what an append may write (else NULL,
    /// and its length tells how far over it is), then their lengths.
    static let boundedColumns = "CASE WHEN octet_length(e.stream) <= \(EventLogLimits.streamNameBytesMax) THEN e.stream END AS stream, e.stream_version, "
        + "CASE WHEN octet_length(e.record) <= \(EventLogLimits.recordBytesMax) THEN e.record END AS record, "
        + "octet_length(e.record) AS bytes, octet_length(e.stream) AS stream_bytes"

    /// `Options.readPageBytesMax`, within 1 byte and `EventLogLimits.readPageBytesMax` (what `ListEvents`
    /// judges a cut page by). The limit goes first in each query, the running sum after it (a window
    /// ahead of the limit would sort the whole tail of a stream first).
    var pageBytesMax: Int { min(max(options.readPageBytesMax, 1), EventLogLimits.readPageBytesMax) }

    /// The rows of a page query. The page's bytes are bounded in the query itself (a running sum of the
    /// records' lengths, `Options.readPageBytesMax`, the first row always in), as `ReadPageBudget`
    /// bounds the other stores' pages, and its rows are collected as they arrive (`PostgresRows.swift`:
    /// a connection ending in the middle of them fails the read instead of trapping in postgres-nio).
    func select(_ query: PostgresQuery) async throws(EventLogError) -> [(StoredEvent, ChainHash?)] {
        return try await bounded { client, logger in
            var events: [(StoredEvent, ChainHash?)] = []
            for row in try await client.rows(query, logger: logger) {
                let (sequence, name, version, bytes, hash, previous, recordLength, streamLength) = try row.decode(
                    (Int64, String?, Int64, ByteBuffer?, ByteBuffer, ByteBuffer?, Int64, Int64).self)
                // Stored bytes past what an append may write (a row edited by hand) are damage, found before
                // they are fetched: the page's first row is always in it, whatever its size.
                guard let record = bytes else {
                    throw EventLogError.corrupted(position: UInt64(clamping: sequence), reason: "its record is \(recordLength) bytes, over the \(EventLogLimits.recordBytesMax) a record may have")
                }
                guard let stream = name else {
                    throw EventLogError.corrupted(position: UInt64(clamping: sequence), reason: "its stream name is \(streamLength) bytes, over the \(EventLogLimits.streamNameBytesMax) a name may have")
                }
                let link = try Self.chainHash(hash, at: sequence, of: "its")
                let before = previous.flatMap { ChainHash(bytes: Array($0.readableBytesView)) }
                events.append((StoredEvent(sequence: try Self.stored(sequence, "its sequence", at: sequence), stream: stream,
                                           streamVersion: try Self.stored(version, "its stream version", at: sequence),
                                           record: Array(record.readableBytesView), chainHash: link), before))
            }
            return events
        }
    }

    public func head() async throws(EventLogError) -> LogHead {
        try await headRow("SELECT sequence, chain_hash FROM lockstep_head WHERE id = 1")
    }

    /// The head once no transaction holds its row: a commit still under way (its connection lost on this
    /// side while the server finishes it) is waited for, so what it shows is that commit's outcome.
    func settledHead() async throws(EventLogError) -> LogHead {
        try await headRow("SELECT sequence, chain_hash FROM lockstep_head WHERE id = 1 FOR SHARE")
    }

    private func headRow(_ query: PostgresQuery) async throws(EventLogError) -> LogHead {
        return try await bounded { client, logger in
            for row in try await client.rows(query, logger: logger) {
                let (sequence, hash) = try row.decode((Int64, ByteBuffer).self)
                return LogHead(sequence: try Self.stored(sequence, "the head's sequence", at: sequence),
                               chainHash: try Self.chainHash(hash, at: sequence, of: "the head's"))
            }
            throw EventLogError.corrupted(position: 0, reason: "the head row is missing")
        }
    }

    public func streamVersion(of stream: String) async throws(EventLogError) -> UInt64 {
        return try await bounded { client, logger in
            for row in try await client.rows("SELECT version FROM lockstep_streams WHERE stream = \(stream)", logger: logger) {
                return try Self.stored(try row.decode(Int64.self), "stream \(stream)'s version", at: 0)
            }
            return 0
        }
    }

    public func streams(withPrefix prefix: String, after: String, limit: Int) async throws(EventLogError) -> [String] {
        let limit = min(max(limit, 0), EventLogLimits.streamNamesPageMax)
        guard limit > 0 else { return [] }
        return try await bounded { client, logger in
            // UTF-8 byte order: the column's collation is "C"; the prefix is matched as a string, not a LIKE pattern.
            var names: [String] = []
            // (Streams whose every event was archived keep their version here but are not listed.)
            let rows = try await client.rows("""
                SELECT s.stream FROM lockstep_streams s WHERE s.stream > \(after) AND starts_with(s.stream, \(prefix))
                    AND EXISTS (SELECT 1 FROM lockstep_events e WHERE e.stream = s.stream)
                ORDER BY s.stream LIMIT \(Int64(limit))
                """, logger: logger)
            for row in rows { names.append(try row.decode(String.self)) }
            return names
        }
    }

    // MARK: - Snapshots

    public func saveSnapshot(_ snapshot: Snapshot) async throws(EventLogError) {
        try snapshot.validate()
        if let stopped { throw stopped }
        guard snapshot.sequence >= 1, try await chainHash(at: snapshot.sequence) == snapshot.chainHash else {
            throw .invalidRequest("snapshot at \(snapshot.sequence) does not match an event of this log")
        }
        // A snapshot abandoned by the bound may still land later: harmless, it is verified when read.
        try await bounded { client, logger in
            try await client.withOpenTransaction(logger: logger) { connection in
                try Self.checkOpen(connection)
                try await connection.query("""
                    INSERT INTO lockstep_snapshots (sequence, chain_hash, state, digest)
                    VALUES (\(Int64(snapshot.sequence)), \(ByteBuffer(bytes: snapshot.chainHash.bytes)), \(ByteBuffer(bytes: snapshot.state)),
                            \(ByteBuffer(bytes: snapshot.digest)))
                    ON CONFLICT (sequence) DO UPDATE SET chain_hash = EXCLUDED.chain_hash, state = EXCLUDED.state, digest = EXCLUDED.digest
                    """, logger: logger)
                try Self.checkOpen(connection)
                try await connection.query("""
                    DELETE FROM lockstep_snapshots WHERE sequence NOT IN
                        (SELECT sequence FROM lockstep_snapshots ORDER BY sequence DESC LIMIT \(Int64(EventLogLimits.snapshotsRetainedMax)))
                    """, logger: logger)
            }
        }
    }

    public func latestSnapshot() async throws(EventLogError) -> Snapshot? {
        return try await bounded { client, logger in
            let rows = try await client.rows(
                "SELECT sequence, chain_hash, state, digest FROM lockstep_snapshots ORDER BY sequence DESC LIMIT 1", logger: logger)
            for row in rows {
                let (sequence, hash, state, digest) = try row.decode((Int64, ByteBuffer, ByteBuffer, ByteBuffer).self)
                return Snapshot(sequence: try Self.stored(sequence, "the snapshot's sequence", at: sequence),
                                chainHash: try Self.chainHash(hash, at: sequence, of: "the snapshot's"),
                                state: Array(state.readableBytesView), digest: Array(digest.readableBytesView))
            }
            return nil
        }
    }

    // MARK: - Archival

    public func base() async throws(EventLogError) -> Snapshot? {
        return try await bounded { client, logger in
            // The table is made by the first archival: a log never archived has none.
            for row in try await client.rows("SELECT to_regclass('lockstep_base') IS NOT NULL", logger: logger)
                where !(try row.decode(Bool.self)) { return nil }
            for row in try await client.rows("SELECT sequence, chain_hash, state, digest FROM lockstep_base WHERE id = 1", logger: logger) {
                let (sequence, hash, state, digest) = try row.decode((Int64, ByteBuffer, ByteBuffer, ByteBuffer).self)
                return Snapshot(sequence: try Self.stored(sequence, "the base's sequence", at: sequence),
                                chainHash: try Self.chainHash(hash, at: sequence, of: "the base's"),
                                state: Array(state.readableBytesView), digest: Array(digest.readableBytesView))
            }
            return nil
        }
    }

    /// Moves the events through `snapshot.sequence` out, in one transaction that takes no lock appends
    /// wait for (it deletes rows before the head; appends add rows after it), so coordinators run on.
    public func archive(through snapshot: Snapshot, after expected: UInt64) async throws(EventLogError) {
        try snapshot.validate()
        if let stopped { throw stopped }
        let sequence = Int64(clamping: snapshot.sequence)
        // Deleting up to a segment's worth of rows may take far longer than an append's bound.
        try await bounded(millis: Self.archiveMillisMax) { client, logger in
            try await client.withOpenTransaction(logger: logger) { connection in
                try await connection.query("""
                    CREATE TABLE IF NOT EXISTS lockstep_base (
                        id integer PRIMARY KEY CHECK (id = 1), sequence bigint NOT NULL, chain_hash bytea NOT NULL, state bytea NOT NULL,
                        digest bytea NOT NULL)
                    """, logger: logger)
                var base: Int64 = 0
                for row in try await connection.rows("SELECT sequence FROM lockstep_base WHERE id = 1 FOR UPDATE", logger: logger) {
                    base = try row.decode(Int64.self)
                }
                var head: Int64 = 0
                for row in try await connection.rows("SELECT sequence FROM lockstep_head WHERE id = 1", logger: logger) {
                    head = try row.decode(Int64.self)
                }
                guard base == Int64(clamping: expected) else {
                    throw EventLogError.invalidRequest("the live log's base moved from \(expected) to \(base) meanwhile (another archival): nothing was archived")
                }
                guard sequence > base, sequence <= head else {
                    throw EventLogError.invalidRequest("cannot archive through event \(sequence): the live log holds the events after \(base) to \(head)")
                }
                var matches = false
                for row in try await connection.rows("SELECT chain_hash FROM lockstep_events WHERE sequence = \(sequence)", logger: logger) {
                    matches = Array(try row.decode(ByteBuffer.self).readableBytesView) == snapshot.chainHash.bytes
                }
                guard matches else { throw EventLogError.invalidRequest("the archive's end does not match event \(sequence) of this log") }
                // Streams keep their versions in lockstep_streams; a checkpoint's stream is written once, at a
                // sequence no later checkpoint repeats, so the archived ones are dropped from it.
                try await connection.query("""
                    DELETE FROM lockstep_streams WHERE starts_with(stream, 'checkpoint/')
                        AND stream IN (SELECT stream FROM lockstep_events WHERE sequence <= \(sequence))
                    """, logger: logger)
                try await connection.query("DELETE FROM lockstep_events WHERE sequence <= \(sequence)", logger: logger)
                try await connection.query("""
                    INSERT INTO lockstep_base (id, sequence, chain_hash, state, digest)
                    VALUES (1, \(sequence), \(ByteBuffer(bytes: snapshot.chainHash.bytes)), \(ByteBuffer(bytes: snapshot.state)), \(ByteBuffer(bytes: snapshot.digest)))
                    ON CONFLICT (id) DO UPDATE SET sequence = EXCLUDED.sequence, chain_hash = EXCLUDED.chain_hash, state = EXCLUDED.state,
                        digest = EXCLUDED.digest
                    """, logger: logger)
                try await connection.query("DELETE FROM lockstep_snapshots WHERE sequence < \(sequence)", logger: logger)
                try await connection.query("""
                    INSERT INTO lockstep_snapshots (sequence, chain_hash, state, digest)
                    VALUES (\(sequence), \(ByteBuffer(bytes: snapshot.chainHash.bytes)), \(ByteBuffer(bytes: snapshot.state)), \(ByteBuffer(bytes: snapshot.digest)))
                    ON CONFLICT (sequence) DO UPDATE SET chain_hash = EXCLUDED.chain_hash, state = EXCLUDED.state, digest = EXCLUDED.digest
                    """, logger: logger)
            }
        }
    }

    /// The bound on an archival's transaction, in milliseconds.
    static let archiveMillisMax: Int64 = 600_000

    /// How many snapshots are stored (at most `EventLogLimits.snapshotsRetainedMax`).
    public func snapshotCount() async throws(EventLogError) -> Int {
        return try await bounded { client, logger in
            for row in try await client.rows("SELECT count(*) FROM lockstep_snapshots", logger: logger) {
                return Int(clamping: try row.decode(Int64.self))
            }
            return 0
        }
    }

    /// A stored chain hash (of the event, head or snapshot at `sequence`; `whose` says which, "its" for an
    /// event); one that is not 32 bytes is damage there.
    /// A sequence or version read back from the database, which the schema keeps at 0 or more: a row
    /// edited or damaged below 0 is a corrupted log, not a trap.
    static func stored(_ value: Int64, _ what: String, at sequence: Int64) throws(EventLogError) -> UInt64 {
        guard let stored = UInt64(exactly: value) else {
            throw .corrupted(position: UInt64(clamping: sequence), reason: "\(what) is \(value), below 0")
        }
        return stored
    }

    static func chainHash(_ bytes: ByteBuffer, at sequence: Int64, of whose: String) throws(EventLogError) -> ChainHash {
        guard let link = ChainHash(bytes: Array(bytes.readableBytesView)) else {
            throw .corrupted(position: UInt64(clamping: sequence), reason: "\(whose) chain hash is not 32 bytes")
        }
        return link
    }

    /// An error in words, without the query's bound values.
    public static func describe(_ error: any Error) -> String {
        let error = cause(error)
        if let error = error as? PSQLError {
            if let message = error.serverInfo?[.message] { return "PostgreSQL: \(message)" + (error.serverInfo?[.sqlState].map { " (SQLSTATE \($0))" } ?? "") }
            return "PostgreSQL: \(error.code)" + (error.underlying.map { " (\($0))" } ?? "")
        }
        if let error = error as? EventLogError { return error.description }
        if error is PostgresTransactionError { return "a transaction failed" }
        return "\(error)"
    }

    /// What went wrong first in a transaction (postgres-nio wraps it with where it happened).
    static func cause(_ error: any Error) -> any Error {
        guard let wrapped = error as? PostgresTransactionError else { return error }
        return wrapped.beginError ?? wrapped.closureError ?? wrapped.commitError ?? wrapped.rollbackError ?? error
    }
}
