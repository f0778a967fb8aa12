import ArgumentParser
import Foundation
import LockstepPostgres
import LockstepStore
import LockstepPlan

/// Where the log is: a data directory (`--data`, SQLite, the default) or PostgreSQL (`--store
/// postgres://…`). The PostgreSQL password never comes from a flag: `$LOCKSTEP_STORE_PASSWORD`, or the
/// file `--store-password-file` or `$LOCKSTEP_STORE_PASSWORD_FILE` names.
struct StoreOptions: ParsableArguments {
    @Option(help: "The coordinator's data directory (the SQLite log, the default store).")
    var data: String?
    @Option(help: ArgumentHelp("The log on PostgreSQL: postgres://USER@HOST[:PORT]/DATABASE[?sslmode=disable|prefer|require|verify-full].",
                               discussion: "The password from $LOCKSTEP_STORE_PASSWORD or a file (--store-password-file); never in the address."))
    var store: String?
    @Option(help: "A file holding the PostgreSQL password (or $LOCKSTEP_STORE_PASSWORD_FILE).")
    var storePasswordFile: String?

    enum Location {
        case sqlite(directory: String)
        case postgres(PostgresAddress, password: String?)

        var databasePath: String? {
            guard case .sqlite(let directory) = self else { return nil }
            return directory.hasSuffix("/") ? directory + "events.sqlite" : directory + "/events.sqlite"
        }

        /// How a person would name it (log lines, messages): the directory, or the address without secrets.
        var shown: String {
            switch self {
            case .sqlite(let directory): directory
            case .postgres(let address, _): address.description
            }
        }
    }

    /// The location the flags name; with `environment`, `$LOCKSTEP_STORE` when neither flag is given
    /// (serve). nil when nothing names one (the command then asks a server, or refuses).
    func location(environment: Bool) throws -> Location? {
        let variables = ProcessInfo.processInfo.environment
        let store = self.store ?? (environment && data == nil ? variables["LOCKSTEP_STORE"].flatMap { $0.isEmpty ? nil : $0 } : nil)
        switch (data, store) {
        case (nil, nil): return nil
        case (.some, .some): throw ValidationError("--data (SQLite) and --store (PostgreSQL) exclude each other\(self.store == nil ? " ($LOCKSTEP_STORE is set)" : "")")
        case (let directory?, nil):
            guard !directory.isEmpty else { throw ValidationError("--data must name a directory") }
            return .sqlite(directory: directory)
        case (nil, let text?):
            let address: PostgresAddress
            do {
                address = try PostgresAddress.parse(text)
            } catch {
                throw ValidationError("\(PostgresAddressError.code): \(error.message)")
            }
            return .postgres(address, password: try password(variables))
        }
    }

    private func password(_ variables: [String: String]) throws -> String? {
        if let file = storePasswordFile ?? variables["LOCKSTEP_STORE_PASSWORD_FILE"].flatMap({ $0.isEmpty ? nil : $0 }) {
            let bytes: [UInt8]
            switch BoundedFile.read(file, limit: 4_096, what: "the password file") {
            case .success(let read): bytes = read
            case .failure(let problem): throw ValidationError("\(problem)")
            }
            guard var text = String(validating: bytes, as: UTF8.self) else {
                throw ValidationError("the password file \(file) must be UTF-8")
            }
            while text.hasSuffix("\n") || text.hasSuffix("\r") { text.removeLast() }
            guard !text.isEmpty else { throw ValidationError("the password file \(file) is empty") }
            return text
        }
        return variables["LOCKSTEP_STORE_PASSWORD"].flatMap { $0.isEmpty ? nil : $0 }
    }
}

/// Runs `body` on the log at `location`, opened so that nothing is written: the SQLite file read-only,
/// a PostgreSQL database refused unless it holds a log already. For governance commands.
func withReadOnlyLog<Result>(_ location: StoreOptions.Location, _ body: (any EventLog) async throws -> Result) async throws -> Result {
    switch location {
    case .sqlite(let directory):
        return try await body(try openReadOnly(try DataOptions.at(directory)))
    case .postgres(let address, let password):
        return try await withPostgresLog(address, password: password, create: false) { try await body($0) }
    }
}

/// Runs `body` on the log in the PostgreSQL database at `address` (its tables made first with `create`);
/// a log that cannot be used is a `CommandFailure` naming the address (exit 2), a corrupted one stays
/// `corrupted` (exit 1).
func withPostgresLog<Result>(_ address: PostgresAddress, password: String?, create: Bool,
                             _ body: (PostgresEventLog) async throws -> Result) async throws -> Result {
    do {
        return try await PostgresEventLog.withLog(address.configuration(password: password), create: create) { try await body($0) }
    } catch let error as EventLogError {
        if case .corrupted = error { throw error }
        throw CommandFailure(message: "\(address): \(error)", exitCode: 2)
    }
}
