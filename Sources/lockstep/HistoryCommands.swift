import ArgumentParser
import Foundation
import LockstepClient
import LockstepCore
import LockstepEngine
import LockstepStore
import LockstepWire

struct HistoryCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "history",
        abstract: "Verify, replay and export the event history (for governance and incident review).",
        subcommands: [Verify.self, Replay.self, Export.self, Explain.self, Diff.self, Archive.self]
    )
}

/// Output formats of read commands.
enum OutputFormat: String, ExpressibleByArgument, CaseIterable {
    case table, json
}

/// Opens the log under `--data` read-only, so governance commands never alter the evidence.
func openReadOnly(_ options: DataOptions) throws -> SQLiteEventLog {
    guard FileManager.default.fileExists(atPath: options.databasePath) else {
        throw CommandFailure(message: "no event log at \(options.databasePath); check --data", exitCode: 2)
    }
    do {
        return try SQLiteEventLog(path: options.databasePath, mode: .readOnly)
    } catch {
        throw CommandFailure(message: "cannot open \(options.databasePath): \(error)", exitCode: 2)
    }
}

/// Runs `body`, turning failures into a message on stderr and a non-zero exit code.
@discardableResult
func reportingFailures<Result>(_ body: () async throws -> Result) async throws -> Result {
    do {
        return try await body()
    } catch let failure as CommandFailure {
        FileHandle.standardError.write(Data("error: \(failure.message)\n".utf8))
        throw ExitCode(failure.exitCode)
    } catch let error as EventLogError {
        FileHandle.standardError.write(Data("error: \(error)\n".utf8))
        if case .corrupted = error { throw ExitCode(1) }
        throw ExitCode(2)
    }
}

extension HistoryCommand {
    struct Replay: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "The state of every migration as of one event, and its digest (on the server, or in --data).")

        @OptionGroup var server: ServerOptions
        @OptionGroup(title: "The log itself, instead of a server") var local: StoreOptions
        @Option(help: "Replay up to and including this sequence (default: the whole log).")
        var at: UInt64?
        @Option(help: "Output format: table or json.")
        var output: OutputFormat = .table
        @OptionGroup(title: "Archive segments, replayed before the log") var archive: ArchiveOptions

        func run() async throws {
            guard let history = try localHistory(local, archive) else {
                return try await server.run { lockstep in
                    // No --at: no point named, which the server answers with the whole log.
                    try print(try await lockstep.state(.with { if let at { $0.sequence = at } }))
                }
            }
            try await reportingFailures {
                try await history.read { log in
                    try print(Lockstep_V1_StateAtResponse(try await History.replay(log, through: at, keepingSettled: true)))
                    if let base = try await log.base() {
                        FileHandle.standardError.write(Data("note: replayed from the live log's base (event \(base.sequence)); migrations settled before it are in the archive segments (--archive SEGMENT …)\n".utf8))
                    }
                }
            }
        }

        private func print(_ report: Lockstep_V1_StateAtResponse) throws {
            switch output {
            case .json: try printJSON(report)
            case .table:
                Swift.print(StateTable.render(report))
            }
        }
    }

    struct Export: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Every event as NDJSON, one per line, payload rendered as JSON; stops at the first bad event.",
            discussion: "From the server, or from the log itself (--data DIR or --store postgres://…). The lines are the same either way.")

        @OptionGroup var server: ServerOptions
        @OptionGroup(title: "The log itself, instead of a server") var local: StoreOptions
        @Option(help: "Start after this sequence.")
        var after: UInt64 = 0
        @Option(help: "Write a bundle instead (the events as stored, checkpoints and keys, verifiable offline); from --data or --store only.")
        var bundle: String?
        @Option(help: "With --bundle: add the checkpoints kept in DIR/checkpoints.ndjson.") var checkpoints: String?
        @Option(help: "With --bundle: add these public keys (a keys file).") var publicKey: String?
        @OptionGroup(title: "Archive segments, exported before the log") var archive: ArchiveOptions

        func run() async throws {
            if let bundle {
                return try await reportingFailures {
                    guard let history = try localHistory(local, archive) else {
                        throw CommandFailure(message: "a bundle holds the events as stored: write it from the log itself, --data DIR or --store URL", exitCode: 64)
                    }
                    let keys = try publicKey.map { path throws in
                        do { return try CheckpointKeys.load(path) } catch { throw CommandFailure(message: String(describing: error), exitCode: 2) }
                    }
                    guard !FileManager.default.fileExists(atPath: bundle) else {
                        throw CommandFailure(message: "\(bundle) exists; a bundle is never written over a file", exitCode: 1)
                    }
                    try await history.read { log in
                        let written = try await HistoryBundle.write(log, to: bundle, checkpointsDirectory: checkpoints, keys: keys)
                        Swift.print("wrote \(bundle): \(counted(written.events, "event")), \(counted(written.checkpoints, "checkpoint")), \(counted(keys?.keys.count ?? 0, "key"))")
                    }
                }
            }
            let out = FileHandle.standardOutput
            guard let history = try localHistory(local, archive) else {
                // Where the export stands: a run on the next address after `unavailable` goes on from there
                // (a page the reads returned is printed; no event twice).
                var position = after
                return try await server.run { lockstep in
                    while true {
                        let page = try await lockstep.events(.with {
                            $0.afterSequence = position
                            $0.pageSize = 1_000
                        })
                        var chunk = ""
                        for envelope in page.events {
                            let hash = envelope.chainHash.hexString
                            chunk += try HistoryExport.line(sequence: envelope.sequence, chainHashHex: hash, record: envelope.record) + "\n"
                        }
                        out.write(Data(chunk.utf8))
                        guard page.nextAfterSequence > position, !page.events.isEmpty else { break }
                        position = page.nextAfterSequence
                    }
                }
            }
            try await reportingFailures {
                try await history.read { log in
                    var position = after
                    while true {
                        // Every intact event before damage is printed, then the damage is reported (exit 1).
                        let (page, damage) = await log.readIntact(after: position, limit: History.pageEventsMax)
                        var chunk = ""
                        for event in page {
                            chunk += try HistoryExport.line(event)
                            chunk += "\n"
                        }
                        out.write(Data(chunk.utf8))
                        if let damage { throw damage }
                        guard let last = page.last else { break }
                        position = last.sequence
                    }
                }
            }
        }
    }
}

/// Renders the state at a point as a table for terminals.
enum StateTable {
    static func render(_ report: Lockstep_V1_StateAtResponse) -> String {
        var lines = ["as of sequence \(report.sequence)", "state digest \(report.digest)"]
        if report.migrations.isEmpty { lines.append("no migrations") }
        for migration in report.migrations {
            lines.append("")
            var heading = "migration \(migration.migrationID)  plan \(migration.plan)@\(migration.planVersion)  \(migration.status.name)"
            if !migration.statusReason.isEmpty { heading += " (\(migration.statusReason))" }
            lines.append(heading)
            let header = ["node", "phase", "services", "status", "attempts", "token", "lease"]
            let rows = migration.nodes.map { node in
                [node.nodeID, node.phase, node.services.joined(separator: ","),
                 node.status.name, String(node.attempts), String(node.fencingToken),
                 node.hasLease ? "\(node.lease.agentID) until \(Instant(millisecondsSinceEpoch: node.lease.expiresAtMs))" : "-"]
            }
            lines.append(renderTable(header, rows, indent: "  "))
        }
        return lines.joined(separator: "\n")
    }
}

/// Archive segments (`lockstep history archive`) read before the log: `--archive FILE`, repeated.
struct ArchiveOptions: ParsableArguments {
    @Option(name: .customLong("archive"), help: ArgumentHelp("An archive segment (`history archive`), read before the log given (if any); repeat for each, in any order.",
                                                              valueName: "segment"))
    var archives: [String] = []
}

/// Runs `body` on the archive segments at `paths` followed by the log `local` names (read-only), or on
/// the segments alone when it names none.
func withArchivedHistory<Result>(_ paths: [String], local: StoreOptions, _ body: (ArchivedHistory) async throws -> Result) async throws -> Result {
    func open(_ live: (any EventLog)?) async throws -> ArchivedHistory {
        do { return try await ArchivedHistory.open(segments: paths, live: live) } catch let error as CheckpointError {
            throw CommandFailure(message: error.description, exitCode: 1)
        }
    }
    guard let location = try local.location(environment: false) else { return try await body(try await open(nil)) }
    return try await withReadOnlyLog(location) { log in try await body(try await open(log)) }
}

/// The history the flags name, read directly (read-only): the archive segments, then the log `local`
/// names; nil when they name neither (the command asks the server instead).
func localHistory(_ local: StoreOptions, _ archive: ArchiveOptions) throws -> LocalHistory? {
    let location = try local.location(environment: false)
    guard location != nil || !archive.archives.isEmpty else { return nil }
    return LocalHistory(location: location, archives: archive.archives, local: local)
}

struct LocalHistory {
    var location: StoreOptions.Location?
    var archives: [String]
    var local: StoreOptions

    /// Runs `body` on it.
    func read<Result>(_ body: (any EventLog) async throws -> Result) async throws -> Result {
        if archives.isEmpty, let location { return try await withReadOnlyLog(location, body) }
        return try await withArchivedHistory(archives, local: local) { try await body($0) }
    }
}
