import ArgumentParser
import Foundation
import LockstepEngine
import LockstepPostgres
import LockstepStore

/// `lockstep store`: moving a history between stores.
struct StoreCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "store",
        abstract: "Move a history between stores (a data directory, a PostgreSQL database).",
        subcommands: [Copy.self]
    )
}

extension StoreCommand {
    struct Copy: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Copy a whole log into an empty store, event by event, and prove both ends have the same head.",
            discussion: """
                Each end is a data directory (SQLite) or postgres://USER@HOST:PORT/DB (the password from \
                $LOCKSTEP_STORE_PASSWORD or --store-password-file). The source is only read (and verified as it is \
                read); the target must hold no events. The records and their order are kept, so the chain \
                hashes are the same; the newest snapshot is copied too. Prints the head at both ends and exits \
                1 if they differ, 2 if either end cannot be used. Stop the coordinator on the source first: \
                events appended during the copy are not copied.
                """)

        @Option(help: "The log to copy: a data directory or postgres://….") var from: String
        @Option(help: "Where to: a data directory or postgres://… (holding no events).") var to: String
        @Option(help: "A file holding the PostgreSQL password (or $LOCKSTEP_STORE_PASSWORD_FILE).") var storePasswordFile: String?

        func location(_ text: String) throws -> StoreOptions.Location {
            let end = text.hasPrefix("postgres://") || text.hasPrefix("postgresql://") ? ["--store", text] : ["--data", text]
            return try StoreOptions.parse(end + (storePasswordFile.map { ["--store-password-file", $0] } ?? [])).location(environment: false)!
        }

        func run() async throws {
            let source = try location(from)
            let target = try location(to)
            try await reportingFailures {
                try await withReadOnlyLog(source) { source in
                    try await withWritableLog(target) { target in
                        try await Self.copy(from: source, to: target)
                    }
                }
            }
        }

        static func copy(from source: any EventLog, to target: any EventLog) async throws {
            if let base = try await source.base() {
                throw CommandFailure(message: "the source log starts after event \(base.sequence): events 1 to \(base.sequence) were archived (lockstep history archive). "
                    + "store copy copies whole logs; an archived log stays where it is (its segments hold the rest)", exitCode: 2)
            }
            let before = try await target.head()
            guard before.sequence == 0 else {
                throw CommandFailure(message: "the target already holds \(before.sequence) events; copy only into an empty store", exitCode: 2)
            }
            var position: UInt64 = 0
            while true {
                let page = try await source.read(after: position, limit: EventLogLimits.readPageEventsMax)
                guard let last = page.last else { break }
                // Consecutive events of one stream go in one append (at most appendRequestEventsMax).
                var start = page.startIndex
                while start < page.endIndex {
                    var end = start + 1
                    while end < page.endIndex, page[end].stream == page[start].stream, end - start < EventLogLimits.appendRequestEventsMax { end += 1 }
                    let run = page[start..<end]
                    let first = run.first!
                    // Stored bytes are outside input: the chain covers records, not stream versions. The target
                    // numbers the batch from its first, so every one after it must follow on.
                    guard first.streamVersion >= 1 else {
                        throw CommandFailure(message: "event \(first.sequence) of the source has stream version 0; the source log is damaged", exitCode: 1)
                    }
                    if let (offset, skipped) = run.enumerated().first(where: { $0.element.streamVersion != first.streamVersion &+ UInt64($0.offset) }) {
                        throw CommandFailure(message: "event \(skipped.sequence) of the source has stream version \(skipped.streamVersion) where \(first.streamVersion &+ UInt64(offset)) "
                                             + "follows; the source log is damaged", exitCode: 1)
                    }
                    let receipt = try await target.append(AppendRequest(stream: first.stream, expectedVersion: first.streamVersion - 1,
                                                                        records: run.map(\.record)))
                    guard receipt.firstSequence == first.sequence, receipt.lastSequence == run.last!.sequence else {
                        throw CommandFailure(message: "the target numbered events \(first.sequence)... as \(receipt.firstSequence)...: was it written to during the copy?",
                                             exitCode: 1)
                    }
                    start = end
                }
                position = last.sequence
                if position / 10_000 != (position - UInt64(page.count)) / 10_000 {
                    FileHandle.standardError.write(Data("copied \(position) events\n".utf8))
                }
            }
            if let snapshot = try await source.latestSnapshot() { try await target.saveSnapshot(snapshot) }
            let from = try await source.head()
            let to = try await target.head()
            print("source head: \(from.sequence) \(from.chainHash.hex)")
            print("target head: \(to.sequence) \(to.chainHash.hex)")
            guard from == to else { throw CommandFailure(message: "the heads differ: the copy is not the same history", exitCode: 1) }
            let report = try await HistoryVerifier.verify(target)
            print("copied \(report.events) events; the target verifies (state digest \(report.digest.hex))")
        }
    }
}

/// Runs `body` on the log at `location`, opened for writing (created when it does not exist).
func withWritableLog<Result>(_ location: StoreOptions.Location, _ body: (any EventLog) async throws -> Result) async throws -> Result {
    switch location {
    case .sqlite(let directory):
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        return try await body(try SQLiteEventLog(path: location.databasePath!))
    case .postgres(let address, let password):
        return try await withPostgresLog(address, password: password, create: true) { try await body($0) }
    }
}
