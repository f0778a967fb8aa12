import CSQLite

/// An error from SQLite with its extended result code.
struct SQLiteError: Error, CustomStringConvertible {
    var code: Int32
    var message: String
    /// The primary result code (the low byte of the extended code).
    var primary: Int32 { code & 0xFF }
    var description: String { "SQLite error \(code): \(message)" }

    /// How the log must react: I/O and corruption stop writes for good; a full disk or a busy lock does not.
    var logError: EventLogError {
        switch primary {
        case SQLITE_FULL: .storageFull
        case SQLITE_BUSY, SQLITE_LOCKED: .busy
        default: .writesStopped(reason: description)
        }
    }
}

private let transientDestructor = unsafeBitCast(-1, to: sqlite3_destructor_type.self)

/// One SQLite connection. Not thread-safe: each is owned by exactly one serial queue (see `SQLiteEventLog`).
final class SQLiteConnection: @unchecked Sendable {
    /// How long a connection waits for another's lock before giving up with SQLITE_BUSY, in milliseconds.
    static let busyTimeoutMillis: Int32 = 5_000

    let handle: OpaquePointer
    private var statements: [String: OpaquePointer] = [:]

    init(path: String, readOnly: Bool) throws(SQLiteError) {
        var db: OpaquePointer?
        let flags = (readOnly ? SQLITE_OPEN_READONLY : (SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE)) | SQLITE_OPEN_NOMUTEX
        let rc = sqlite3_open_v2(path, &db, flags, nil)
        guard rc == SQLITE_OK, let db else {
            let message = db.map { String(cString: sqlite3_errmsg($0)) } ?? "out of memory"
            if let db { sqlite3_close_v2(db) }
            throw SQLiteError(code: rc, message: "cannot open \(path): \(message)")
        }
        handle = db
        sqlite3_extended_result_codes(db, 1)
        sqlite3_busy_timeout(db, Self.busyTimeoutMillis)
    }

    deinit {
        for statement in statements.values { sqlite3_finalize(statement) }
        sqlite3_close_v2(handle)
    }

    private func error(_ rc: Int32) -> SQLiteError {
        SQLiteError(code: rc, message: String(cString: sqlite3_errmsg(handle)))
    }

    /// Runs SQL that returns no rows (may hold several statements).
    func execute(_ sql: String) throws(SQLiteError) {
        let rc = sqlite3_exec(handle, sql, nil, nil, nil)
        guard rc == SQLITE_OK else { throw error(rc) }
    }

    /// A cached prepared statement for `sql`, reset and with its bindings cleared.
    func statement(_ sql: String) throws(SQLiteError) -> Statement {
        if let cached = statements[sql] {
            sqlite3_reset(cached)
            sqlite3_clear_bindings(cached)
            return Statement(handle: cached, connection: self)
        }
        var statement: OpaquePointer?
        let rc = sqlite3_prepare_v3(handle, sql, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &statement, nil)
        guard rc == SQLITE_OK, let statement else { throw error(rc) }
        statements[sql] = statement
        return Statement(handle: statement, connection: self)
    }

    /// The first column of the first row of a pragma or query, as text.
    func scalarText(_ sql: String) throws(SQLiteError) -> String? {
        let statement = try statement(sql)
        defer { statement.reset() }
        return try statement.step() ? statement.text(0) : nil
    }

    /// A prepared statement; valid until the next `statement(_:)` call for the same SQL.
    struct Statement {
        let handle: OpaquePointer
        let connection: SQLiteConnection

        func bind(_ index: Int32, _ value: Int64) throws(SQLiteError) {
            let rc = sqlite3_bind_int64(handle, index, value)
            guard rc == SQLITE_OK else { throw connection.error(rc) }
        }
        func bind(_ index: Int32, _ value: UInt64) throws(SQLiteError) {
            try bind(index, Int64(bitPattern: value))
        }
        func bind(_ index: Int32, _ value: String) throws(SQLiteError) {
            let rc = sqlite3_bind_text(handle, index, value, -1, transientDestructor)
            guard rc == SQLITE_OK else { throw connection.error(rc) }
        }
        func bind(_ index: Int32, _ value: [UInt8]) throws(SQLiteError) {
            let rc = value.withUnsafeBytes { buffer in
                sqlite3_bind_blob(handle, index, buffer.baseAddress ?? UnsafeRawPointer(bitPattern: 1), Int32(buffer.count), transientDestructor)
            }
            guard rc == SQLITE_OK else { throw connection.error(rc) }
        }

        /// Advances to the next row; false when done.
        func step() throws(SQLiteError) -> Bool {
            let rc = sqlite3_step(handle)
            switch rc {
            case SQLITE_ROW: return true
            case SQLITE_DONE: return false
            default: throw connection.error(rc)
            }
        }

        /// Ends the current execution so the statement holds no read or write lock (call after partial reads).
        func reset() { sqlite3_reset(handle) }

        /// Runs a statement that returns no rows.
        func run() throws(SQLiteError) {
            _ = try step()
        }

        func int64(_ column: Int32) -> Int64 { sqlite3_column_int64(handle, column) }
        func uint64(_ column: Int32) -> UInt64 { UInt64(bitPattern: int64(column)) }
        func isNull(_ column: Int32) -> Bool { sqlite3_column_type(handle, column) == SQLITE_NULL }
        func text(_ column: Int32) -> String {
            guard let pointer = sqlite3_column_text(handle, column) else { return "" }
            let count = Int(sqlite3_column_bytes(handle, column))
            return String(decoding: UnsafeBufferPointer(start: pointer, count: count), as: UTF8.self)
        }
        /// The bytes of a BLOB column, in SQLite's buffer: valid only until the next step, reset or column call.
        func blobBuffer(_ column: Int32) -> UnsafeRawBufferPointer {
            let pointer = sqlite3_column_blob(handle, column)
            let count = Int(sqlite3_column_bytes(handle, column))
            return UnsafeRawBufferPointer(start: pointer, count: pointer == nil ? 0 : count)
        }
        func blob(_ column: Int32) -> [UInt8] {
            let count = Int(sqlite3_column_bytes(handle, column))
            guard count > 0, let pointer = sqlite3_column_blob(handle, column) else { return [] }
            return Array(UnsafeRawBufferPointer(start: pointer, count: count))
        }
        /// The storage class of a column (SQLITE_INTEGER, SQLITE_BLOB, ...).
        func type(_ column: Int32) -> Int32 { sqlite3_column_type(handle, column) }
    }
}
