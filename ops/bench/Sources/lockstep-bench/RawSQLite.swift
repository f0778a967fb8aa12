import CSQLite
import Foundation

/// The reference: the same schema and durability driven straight through the SQLite C API, one
/// thread, no hashing, no version checks, no concurrency machinery. What SQLite alone costs.
enum RawSQLite {
    static func open(_ path: String) -> OpaquePointer {
        var db: OpaquePointer?
        precondition(sqlite3_open(path, &db) == SQLITE_OK)
        exec(db!, "PRAGMA journal_mode=WAL")
        exec(db!, "PRAGMA synchronous=FULL")
        return db!
    }

    static func exec(_ db: OpaquePointer, _ sql: String) {
        var message: UnsafeMutablePointer<CChar>?
        guard sqlite3_exec(db, sql, nil, nil, &message) == SQLITE_OK else {
            fatalError("raw SQLite failed: \(String(cString: message!)) in \(sql)")
        }
    }

    /// Appends `events` rows of `record` in transactions of `batch` rows (plus the head update each
    /// commit, as Lockstep does) into a database created by Lockstep (same schema). Returns events/s.
    /// `events` inserts committed `batch` at a time on average: a fractional batch (2.5) alternates
    /// commit sizes (2, 3, 2, 3, ...) so the reference commits exactly as often as the run it mirrors.
    static func appends(path: String, events: Int, batch: Double, streams: Int, record: [UInt8]) -> Double {
        withAppendStatements(path) { db, insert, head in
            let hash = [UInt8](repeating: 0xAB, count: 32)
            let names = (0..<streams).map { "raw-\($0)" }
            var versions = [Int64](repeating: 0, count: streams)
            var sequence: Int64 = 0
            let start = Date()
            var commitsDone = 0.0
            while sequence < Int64(events) {
                exec(db, "BEGIN IMMEDIATE")
                commitsDone += 1
                let upTo = min(Int64(events), max(sequence + 1, Int64((commitsDone * max(1, batch)).rounded(.down))))
                while sequence < upTo {
                    sequence += 1
                    let stream = Int(sequence) % streams
                    versions[stream] += 1
                    insertRow(insert, sequence: sequence, stream: names[stream], version: versions[stream], record: record, hash: hash)
                }
                updateHead(head, sequence: sequence, hash: hash)
                exec(db, "COMMIT")
            }
            return Double(events) / Date().timeIntervalSince(start)
        }
    }

    /// Commits `commits` single-row transactions (plus the head update) with SQLite's own
    /// auto-checkpoint, which runs inside `COMMIT`. Returns each commit's latency in milliseconds, sorted.
    static func commitLatencies(path: String, commits: Int, record: [UInt8]) -> [Double] {
        withAppendStatements(path) { db, insert, head in
            exec(db, "PRAGMA wal_autocheckpoint=1000")
            let hash = [UInt8](repeating: 0xAB, count: 32)
            var samples: [Double] = []
            samples.reserveCapacity(commits)
            for sequence in Int64(1)...Int64(max(1, commits)) {
                let began = ContinuousClock.now
                exec(db, "BEGIN IMMEDIATE")
                insertRow(insert, sequence: sequence, stream: "raw", version: sequence, record: record, hash: hash)
                updateHead(head, sequence: sequence, hash: hash)
                exec(db, "COMMIT")
                samples.append(milliseconds(ContinuousClock.now - began))
            }
            return samples.sorted()
        }
    }

    /// Runs `body` with a connection to `path` and the two statements of an append, then closes them.
    static func withAppendStatements<T>(_ path: String, _ body: (OpaquePointer, OpaquePointer, OpaquePointer) -> T) -> T {
        let db = open(path)
        defer { sqlite3_close(db) }
        var insert: OpaquePointer?
        sqlite3_prepare_v2(db, "INSERT INTO events (sequence, stream, stream_version, record, chain_hash) VALUES (?1, ?2, ?3, ?4, ?5)", -1, &insert, nil)
        var head: OpaquePointer?
        sqlite3_prepare_v2(db, "UPDATE log_head SET sequence = ?1, chain_hash = ?2 WHERE id = 1", -1, &head, nil)
        defer { sqlite3_finalize(insert); sqlite3_finalize(head) }
        return body(db, insert!, head!)
    }

    /// One event row through the prepared `INSERT`.
    static func insertRow(_ insert: OpaquePointer, sequence: Int64, stream: String, version: Int64, record: [UInt8], hash: [UInt8]) {
        sqlite3_reset(insert)
        sqlite3_bind_int64(insert, 1, sequence)
        sqlite3_bind_text(insert, 2, stream, -1, nil)
        sqlite3_bind_int64(insert, 3, version)
        record.withUnsafeBytes { _ = sqlite3_bind_blob(insert, 4, $0.baseAddress, Int32($0.count), nil) }
        hash.withUnsafeBytes { _ = sqlite3_bind_blob(insert, 5, $0.baseAddress, Int32($0.count), nil) }
        precondition(sqlite3_step(insert) == SQLITE_DONE)
    }

    /// The head row's update, as each of Lockstep's commits makes it.
    static func updateHead(_ head: OpaquePointer, sequence: Int64, hash: [UInt8]) {
        sqlite3_reset(head)
        sqlite3_bind_int64(head, 1, sequence)
        hash.withUnsafeBytes { _ = sqlite3_bind_blob(head, 2, $0.baseAddress, Int32($0.count), nil) }
        precondition(sqlite3_step(head) == SQLITE_DONE)
    }

    /// Scans every event row in order, touching every column. Returns rows/s.
    static func scan(path: String) -> (rows: Int, perSecond: Double) {
        var db: OpaquePointer?
        precondition(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, nil) == SQLITE_OK)
        defer { sqlite3_close(db) }
        var select: OpaquePointer?
        sqlite3_prepare_v2(db, "SELECT sequence, stream, stream_version, record, chain_hash FROM events ORDER BY sequence", -1, &select, nil)
        defer { sqlite3_finalize(select) }
        var rows = 0
        var bytes = 0
        let start = Date()
        while sqlite3_step(select) == SQLITE_ROW {
            rows += 1
            _ = sqlite3_column_int64(select, 0)
            bytes &+= Int(sqlite3_column_bytes(select, 1))
            _ = sqlite3_column_int64(select, 2)
            if sqlite3_column_blob(select, 3) != nil { bytes &+= Int(sqlite3_column_bytes(select, 3)) }
            if sqlite3_column_blob(select, 4) != nil { bytes &+= Int(sqlite3_column_bytes(select, 4)) }
        }
        precondition(bytes > 0)
        return (rows, Double(rows) / Date().timeIntervalSince(start))
    }
}
