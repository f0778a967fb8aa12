import CSQLite

/// The SQLite schema of the log and the statements that read and write it.
///
/// `sequence` is the rowid, assigned by the writer (never AUTOINCREMENT) so it is gapless by
/// construction; `UNIQUE(stream, stream_version)` backs the expected-version check; `log_head` records
/// the last committed (sequence, chain hash) in the same transaction, so a truncated tail is detectable.
enum SQLiteSchema {
    static let version = 1

    static let create = """
        CREATE TABLE IF NOT EXISTS meta (
            key TEXT PRIMARY KEY,
            value TEXT NOT NULL
        ) STRICT;
        CREATE TABLE IF NOT EXISTS events (
            sequence INTEGER PRIMARY KEY,
            stream TEXT NOT NULL,
            stream_version INTEGER NOT NULL,
            record BLOB NOT NULL,
            chain_hash BLOB NOT NULL,
            UNIQUE (stream, stream_version)
        ) STRICT;
        CREATE TABLE IF NOT EXISTS log_head (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            sequence INTEGER NOT NULL,
            chain_hash BLOB NOT NULL
        ) STRICT;
        CREATE TABLE IF NOT EXISTS snapshots (
            sequence INTEGER PRIMARY KEY,
            chain_hash BLOB NOT NULL,
            state BLOB NOT NULL,
            digest BLOB NOT NULL
        ) STRICT;
        CREATE TABLE IF NOT EXISTS log_base (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            sequence INTEGER NOT NULL,
            chain_hash BLOB NOT NULL,
            state BLOB NOT NULL,
            digest BLOB NOT NULL
        ) STRICT;
        CREATE TABLE IF NOT EXISTS stream_bases (
            stream TEXT PRIMARY KEY,
            version INTEGER NOT NULL
        ) STRICT;
        """

    /// Creates the schema on a new database, or checks the version of an existing one.
    static func migrate(_ db: SQLiteConnection) throws {
        try db.execute("BEGIN IMMEDIATE")
        do {
            try db.execute(create)
            let statement = try db.statement("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?1)")
            try statement.bind(1, String(version))
            try statement.run()
            let head = try db.statement("INSERT OR IGNORE INTO log_head (id, sequence, chain_hash) VALUES (1, 0, ?1)")
            try head.bind(1, ChainHash.genesis.bytes)
            try head.run()
            try db.execute("COMMIT")
        } catch {
            try? db.execute("ROLLBACK")
            throw error
        }
        try check(db)
    }

    /// Refuses a database whose schema version this build does not know.
    static func check(_ db: SQLiteConnection) throws {
        let found = try db.scalarText("SELECT value FROM meta WHERE key = 'schema_version'")
        guard found == String(version) else {
            throw EventLogError.unavailable("database schema version is \(found ?? "missing"); this build reads version \(version)")
        }
    }

    /// The head recorded by the last commit.
    static func recordedHead(_ db: SQLiteConnection) throws -> LogHead {
        let statement = try db.statement("SELECT sequence, chain_hash FROM log_head WHERE id = 1")
        defer { statement.reset() }
        guard try statement.step() else { throw EventLogError.corrupted(position: 1, reason: "the log_head row is missing") }
        let sequence = statement.uint64(0)
        guard let hash = ChainHash(bytes: statement.blob(1)) else {
            throw EventLogError.corrupted(position: sequence, reason: "the recorded head hash is not 32 bytes")
        }
        return LogHead(sequence: sequence, chainHash: hash)
    }

    static func streamVersion(_ db: SQLiteConnection, _ stream: String) throws(SQLiteError) -> UInt64 {
        let statement = try db.statement("SELECT stream_version FROM events WHERE stream = ?1 ORDER BY stream_version DESC LIMIT 1")
        defer { statement.reset() }
        try statement.bind(1, stream)
        if try statement.step() { return statement.uint64(0) }
        // No live event: the version its archived events left it at, if any were archived.
        guard let archived = try optionalStatement(db, "SELECT version FROM stream_bases WHERE stream = ?1") else { return 0 }
        defer { archived.reset() }
        try archived.bind(1, stream)
        return try archived.step() ? archived.uint64(0) : 0
    }

    /// `statement(sql)`, or nil when a table it reads does not exist (a database written before
    /// archival existed, opened read-only: nothing was archived from it).
    static func optionalStatement(_ db: SQLiteConnection, _ sql: String) throws(SQLiteError) -> SQLiteConnection.Statement? {
        do { return try db.statement(sql) } catch {
            if error.message.contains("no such table") { return nil }
            throw error
        }
    }

    /// Runs `sql` with `snapshot`'s sequence, chain hash, state and digest bound to ?1 to ?4.
    private static func write(_ snapshot: Snapshot, _ db: SQLiteConnection, _ sql: String) throws {
        let insert = try db.statement(sql)
        try insert.bind(1, snapshot.sequence)
        try insert.bind(2, snapshot.chainHash.bytes)
        try insert.bind(3, snapshot.state)
        try insert.bind(4, snapshot.digest)
        try insert.run()
    }

    /// The log's base (`EventLog.base()`), nil when nothing was archived.
    static func base(_ db: SQLiteConnection) throws(EventLogError) -> Snapshot? {
        try snapshotRow(db, "SELECT sequence, chain_hash, state, digest FROM log_base WHERE id = 1", whose: "the base's", optional: true)
    }

    /// The one row `sql` selects as (sequence, chain_hash, state, digest), its hash's width checked; nil
    /// when there is none (or, `optional`, when its table does not exist).
    private static func snapshotRow(_ db: SQLiteConnection, _ sql: String, whose: String, optional: Bool = false) throws(EventLogError) -> Snapshot? {
        do {
            guard let statement = optional ? try optionalStatement(db, sql) : try db.statement(sql) else { return nil }
            defer { statement.reset() }
            guard try statement.step() else { return nil }
            let sequence = statement.uint64(0)
            guard let hash = ChainHash(bytes: statement.blob(1)) else {
                throw EventLogError.corrupted(position: sequence, reason: "\(whose) chain hash is not 32 bytes")
            }
            return Snapshot(sequence: sequence, chainHash: hash, state: statement.blob(2), digest: statement.blob(3))
        } catch let error as EventLogError {
            throw error
        } catch {
            throw .unavailable(String(describing: error))
        }
    }

    /// Moves the events through `snapshot.sequence` out (`EventLog.archive(through:)`), in one transaction.
    static func archive(_ db: SQLiteConnection, through snapshot: Snapshot, after expected: UInt64) throws {
        try db.execute("BEGIN IMMEDIATE")
        do {
            let head = try recordedHead(db)
            let base = try base(db)
            guard (base?.sequence ?? 0) == expected else {
                throw EventLogError.invalidRequest("the live log's base moved from \(expected) to \(base?.sequence ?? 0) meanwhile (another archival): nothing was archived")
            }
            guard snapshot.sequence > (base?.sequence ?? 0), snapshot.sequence <= head.sequence else {
                throw EventLogError.invalidRequest("cannot archive through event \(snapshot.sequence): the live log holds events \((base?.sequence ?? 0) + 1) to \(head.sequence)")
            }
            let check = try db.statement("SELECT chain_hash FROM events WHERE sequence = ?1")
            try check.bind(1, snapshot.sequence)
            let matches = try check.step() && check.blob(0) == snapshot.chainHash.bytes
            check.reset()
            guard matches else {
                throw EventLogError.invalidRequest("the archive's end does not match event \(snapshot.sequence) of this log")
            }
            // Each stream's version as the archived events leave it (a checkpoint's stream is written once, at
            // a sequence no later checkpoint repeats: none is kept).
            let versions = try db.statement(
                "INSERT OR REPLACE INTO stream_bases (stream, version) SELECT stream, MAX(stream_version) FROM events "
                    + "WHERE sequence <= ?1 AND stream NOT LIKE 'checkpoint/%' GROUP BY stream")
            try versions.bind(1, snapshot.sequence)
            try versions.run()
            let delete = try db.statement("DELETE FROM events WHERE sequence <= ?1")
            try delete.bind(1, snapshot.sequence)
            try delete.run()
            try write(snapshot, db, "INSERT OR REPLACE INTO log_base (id, sequence, chain_hash, state, digest) VALUES (1, ?1, ?2, ?3, ?4)")
            // The coordinator starts from the base: older snapshots name events that are gone.
            let snapshots = try db.statement("DELETE FROM snapshots WHERE sequence < ?1")
            try snapshots.bind(1, snapshot.sequence)
            try snapshots.run()
            try write(snapshot, db, "INSERT OR REPLACE INTO snapshots (sequence, chain_hash, state, digest) VALUES (?1, ?2, ?3, ?4)")
            try db.execute("COMMIT")
        } catch {
            if sqlite3_get_autocommit(db.handle) == 0 { try? db.execute("ROLLBACK") }
            throw error
        }
    }

    /// Stream names with `prefix` after `after` (byte order: SQLite's BINARY collation compares UTF-8
    /// bytes). One index seek per name on `UNIQUE(stream, stream_version)`, so a page costs its names,
    /// not the events of the streams it passes.
    static func streams(_ db: SQLiteConnection, withPrefix prefix: String, after: String, limit: Int) throws(SQLiteError) -> [String] {
        let next = try db.statement("SELECT stream FROM events WHERE stream > ?1 ORDER BY stream LIMIT 1")
        let first = try db.statement("SELECT stream FROM events WHERE stream >= ?1 ORDER BY stream LIMIT 1")
        defer { next.reset(); first.reset() }
        var names: [String] = []
        // Start at the prefix itself when `after` sorts before it.
        var inclusive = after.utf8.lexicographicallyPrecedes(prefix.utf8)
        var cursor = inclusive ? prefix : after
        while names.count < limit {
            let statement = inclusive ? first : next
            inclusive = false
            statement.reset()
            try statement.bind(1, cursor)
            guard try statement.step() else { break }
            let name = statement.text(0)
            guard name.utf8.starts(with: prefix.utf8) else { break }
            names.append(name)
            cursor = name
        }
        return names
    }

    /// Events after `sequence`, checked for contiguity and chain links from event `sequence` on.
    static func readVerified(_ db: SQLiteConnection, after sequence: UInt64, limit: Int) throws(EventLogError) -> [StoredEvent] {
        do {
            let statement = try db.statement(
                "SELECT sequence, stream, stream_version, \(boundedRecord("record")), chain_hash, length(record) FROM events WHERE sequence >= ?1 ORDER BY sequence LIMIT ?2")
            defer { statement.reset() }
            // Read event `sequence` too: its stored link is where the chain check of this page starts.
            try statement.bind(1, sequence == 0 ? 1 : sequence)
            try statement.bind(2, Int64(limit) + (sequence == 0 ? 0 : 1))
            var verifier = ChainVerifier(after: .genesis)
            var events: [StoredEvent] = []
            events.reserveCapacity(limit)
            var budget = ReadPageBudget()
            var first = true
            while try statement.step() {
                let row = try verifiedRow(statement, recordLength: 5)
                if first {
                    first = false
                    if sequence > 0, row.sequence == sequence {
                        // Event `sequence` itself: its stored link is where this page's chain check starts.
                        verifier = ChainVerifier(after: LogHead(sequence: row.sequence, chainHash: row.chainHash))
                        continue
                    }
                    if sequence > 0 || row.sequence != 1 {
                        // The event the page starts after is not stored: archived (the base names it) or missing.
                        verifier = try startAfterMissing(db, sequence)
                    }
                }
                // (A page that starts at the base read one row more than it returns.)
                if events.count == limit || !budget.admits(row.record.count) { break }
                // Check the link on SQLite's own buffer, then copy the bytes once.
                try verifier.check(sequence: row.sequence, record: row.record, chainHash: row.chainHash)
                events.append(StoredEvent(sequence: row.sequence, stream: statement.text(1), streamVersion: statement.uint64(2),
                                          record: Array(row.record), chainHash: row.chainHash))
            }
            // Nothing stored after `sequence`: past the head, or every event there was archived.
            if first, let base = try base(db), sequence < base.sequence { throw EventLogError.archived(through: base.sequence) }
            return events
        } catch {
            throw readFailure(error, after: sequence)
        }
    }

    /// Where a page's chain check starts when event `sequence` (the one it reads after) is not stored:
    /// at the base when that is the base's event, `archived` before it, else the event is missing.
    private static func startAfterMissing(_ db: SQLiteConnection, _ sequence: UInt64) throws(EventLogError) -> ChainVerifier {
        let base = try base(db)
        if let base, sequence < base.sequence { throw .archived(through: base.sequence) }
        if let base, sequence == base.sequence { return ChainVerifier(after: LogHead(sequence: base.sequence, chainHash: base.chainHash)) }
        if sequence == 0 { return ChainVerifier(after: .genesis) }
        throw .corrupted(position: sequence, reason: "event \(sequence) is missing")
    }

    /// A read's failure as the log reports it: SQLite's corruption codes as `corrupted` after `sequence`.
    private static func readFailure(_ error: any Error, after sequence: UInt64) -> EventLogError {
        switch error {
        case let error as EventLogError: error
        case let error as SQLiteError:
            error.primary == SQLITE_CORRUPT || error.primary == SQLITE_NOTADB
                ? .corrupted(position: sequence + 1, reason: error.description) : .unavailable(error.description)
        default: .unavailable(String(describing: error))
        }
    }

    /// Up to `limit` events of `stream` after global sequence `sequence`, each with its predecessor's
    /// link to check it against (the `UNIQUE(stream, stream_version)` index finds and orders them).
    static func readStreamVerified(_ db: SQLiteConnection, stream: String, after sequence: UInt64, limit: Int) throws(EventLogError) -> [StoredEvent] {
        do {
            let statement = try db.statement(
                "SELECT e.sequence, e.stream, e.stream_version, \(boundedRecord("e.record")), e.chain_hash, p.chain_hash, "
                    + "length(e.record) FROM events e "
                    + "LEFT JOIN events p ON p.sequence = e.sequence - 1 WHERE e.stream = ?1 AND e.sequence > ?2 ORDER BY e.stream_version LIMIT ?3")
            defer { statement.reset() }
            try statement.bind(1, stream)
            try statement.bind(2, sequence)
            try statement.bind(3, Int64(limit))
            var verifier = StreamReadVerifier()
            var events: [StoredEvent] = []
            var budget = ReadPageBudget()
            var base: Snapshot??
            while try statement.step() {
                let row = try verifiedRow(statement, recordLength: 6)
                guard budget.admits(row.record.count) else { break }
                var previous: ChainHash?
                if statement.type(5) == SQLITE_BLOB {
                    let hash = statement.blobBuffer(5)
                    guard hash.count == 32 else {
                        throw EventLogError.corrupted(position: row.sequence - 1, reason: "the stored chain hash is not 32 bytes")
                    }
                    previous = ChainHash(unchecked: hash)
                } else if row.sequence > 1 {
                    // The event before it is not stored: the base's when it was the last one archived.
                    if base == nil { base = .some(try Self.base(db)) }
                    if let known = base ?? nil, known.sequence == row.sequence - 1 { previous = known.chainHash }
                }
                let version = statement.uint64(2)
                try verifier.check(sequence: row.sequence, streamVersion: version, record: row.record, chainHash: row.chainHash, previous: previous)
                events.append(StoredEvent(sequence: row.sequence, stream: statement.text(1), streamVersion: version,
                                          record: Array(row.record), chainHash: row.chainHash))
            }
            return events
        } catch {
            throw readFailure(error, after: sequence)
        }
    }

    /// The record column of a page, only when within what an append may write (else NULL, its length in
    /// a column of its own): a row edited past it is damage found before its bytes are read into memory.
    static func boundedRecord(_ column: String) -> String { "CASE WHEN length(\(column)) <= \(EventLogLimits.recordBytesMax) THEN \(column) END" }

    /// The current row's sequence, record (SQLite's buffer, valid until the next step) and link, with
    /// column types, the record's size and the hash width checked: the read side of the disk boundary.
    private static func verifiedRow(_ statement: SQLiteConnection.Statement, recordLength: Int32) throws(EventLogError)
        -> (sequence: UInt64, record: UnsafeRawBufferPointer, chainHash: ChainHash) {
        let sequence = statement.uint64(0)
        if statement.type(3) == SQLITE_NULL, statement.type(recordLength) == SQLITE_INTEGER {
            throw .corrupted(position: sequence, reason: "its record is \(statement.int64(recordLength)) bytes, over the \(EventLogLimits.recordBytesMax) a record may have")
        }
        guard statement.type(1) == SQLITE_TEXT, statement.type(2) == SQLITE_INTEGER, statement.type(3) == SQLITE_BLOB,
              statement.type(4) == SQLITE_BLOB else {
            throw .corrupted(position: sequence, reason: "a column has the wrong type")
        }
        let hash = statement.blobBuffer(4)
        guard hash.count == 32 else {
            throw .corrupted(position: sequence, reason: "the stored chain hash is not 32 bytes")
        }
        return (sequence, statement.blobBuffer(3), ChainHash(unchecked: hash))
    }

    static func saveSnapshot(_ db: SQLiteConnection, _ snapshot: Snapshot) throws {
        try db.execute("BEGIN IMMEDIATE")
        do {
            let check = try db.statement("SELECT chain_hash FROM events WHERE sequence = ?1")
            try check.bind(1, snapshot.sequence)
            var matches = try check.step() && check.blob(0) == snapshot.chainHash.bytes
            check.reset()
            if !matches, let base = try base(db) {
                matches = base.sequence == snapshot.sequence && base.chainHash == snapshot.chainHash
            }
            guard matches else {
                throw EventLogError.invalidRequest("snapshot at \(snapshot.sequence) does not match an event of this log")
            }
            try write(snapshot, db, "INSERT OR REPLACE INTO snapshots (sequence, chain_hash, state, digest) VALUES (?1, ?2, ?3, ?4)")
            let prune = try db.statement(
                "DELETE FROM snapshots WHERE sequence NOT IN (SELECT sequence FROM snapshots ORDER BY sequence DESC LIMIT ?1)")
            try prune.bind(1, Int64(EventLogLimits.snapshotsRetainedMax))
            try prune.run()
            try db.execute("COMMIT")
        } catch {
            if sqlite3_get_autocommit(db.handle) == 0 { try? db.execute("ROLLBACK") }
            throw error
        }
    }

    /// The newest snapshot row, with its own shape checked (not yet against the event it names).
    static func latestSnapshot(_ db: SQLiteConnection) throws(EventLogError) -> Snapshot? {
        try snapshotRow(db, "SELECT sequence, chain_hash, state, digest FROM snapshots ORDER BY sequence DESC LIMIT 1", whose: "the snapshot's")
    }

    /// Refuses to write on after a tail that differs from the head recorded at the last commit (rows
    /// removed, added or replaced by hand): appending there would bury the damage.
    static func checkTailMatchesHead(_ db: SQLiteConnection) throws {
        let head = try recordedHead(db)
        let statement = try db.statement("SELECT sequence, chain_hash FROM events ORDER BY sequence DESC LIMIT 1")
        defer { statement.reset() }
        // With every event archived, the last one is the base's.
        let last = try statement.step() ? LogHead(sequence: statement.uint64(0), chainHash: ChainHash(bytes: statement.blob(1)) ?? .genesis)
            : try base(db).map { LogHead(sequence: $0.sequence, chainHash: $0.chainHash) } ?? .genesis
        guard last != head else { return }
        let position = min(last.sequence, head.sequence) + (last.sequence == head.sequence ? 0 : 1)
        throw EventLogError.corrupted(position: position, reason:
            "the last stored event is \(last.sequence) but the last commit recorded \(head.sequence) (or a different hash); "
                + "refusing to write. Run `lockstep history verify` on this data directory")
    }
}
