import ArgumentParser
import Foundation
import LockstepCore
import LockstepEngine
import LockstepStore
import LockstepWire

struct HistoryCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "history",
        abstract: "Verify, replay and export the event history (for governance and incident review).",
        subcommands: [Verify.self, Replay.self, Export.self]
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
    struct Verify: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Walk the whole log: contiguity, hash chain, records, stream versions, recorded head, snapshot.",
            discussion: """
                On the server (--server, $LOCKSTEP_SERVER), or in the log itself: a data directory with --data \
                (read-only), or a PostgreSQL database with --store (nothing written). \
                Prints the head sequence and hash. Exits 1 naming the first bad position, 2 if the log cannot \
                be read (3 or 4 when the server cannot be reached or refuses).
                """)

        @OptionGroup var server: ServerOptions
        @OptionGroup(title: "The log itself, instead of a server") var local: StoreOptions
        @Option(help: "Output format: table or json.") var output: OutputFormat = .table

        func run() async throws {
            guard let location = try local.location(environment: false) else {
                return try await server.run { lockstep in
                    let verification = Verification(try await lockstep.verify())
                    try verification.print(output)
                }
            }
            try await reportingFailures {
                try await withReadOnlyLog(location) { log in
                    let verification: Verification
                    do {
                        verification = Verification(try await HistoryVerifier.verify(log))
                    } catch EventLogError.corrupted(let position, let reason) {
                        // The same answer as the server's for a broken history: ok false, the code, where.
                        verification = Verification(problemCode: ErrorCode.logCorrupted.rawValue, problem: "the log is corrupted at sequence \(position): \(reason)")
                    }
                    try verification.print(output)
                }
            }
        }
    }

    struct Replay: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "The state of every migration as of one event, and its digest (on the server, or in --data).")

        @OptionGroup var server: ServerOptions
        @OptionGroup(title: "The log itself, instead of a server") var local: StoreOptions
        @Option(help: "Replay up to and including this sequence (default: the whole log).")
        var at: UInt64?
        @Option(help: "Output format: table or json.")
        var output: OutputFormat = .table

        func run() async throws {
            guard let location = try local.location(environment: false) else {
                return try await server.run { lockstep in
                    // No --at: no point named, which the server answers with the whole log.
                    try print(try await lockstep.state(.with { if let at { $0.sequence = at } }))
                }
            }
            try await reportingFailures {
                try await withReadOnlyLog(location) { log in
                    try print(Lockstep_V1_StateAtResponse(try await History.replay(log, through: at, keepingSettled: true)))
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

        func run() async throws {
            let out = FileHandle.standardOutput
            guard let location = try local.location(environment: false) else {
                return try await server.run { lockstep in
                    var position = after
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
                try await withReadOnlyLog(location) { log in
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

/// What `history verify` prints, the same whether the server verified or the data directory was read
/// (and in the demo): a table, or one JSON object with numbers as numbers and hashes in hex. A broken
/// history prints `ok: false` (JSON) or nothing on stdout (table), names the problem on stderr, exit 1.
struct Verification {
    var ok: Bool
    var events: UInt64 = 0
    var migrations: UInt64 = 0
    var plans: UInt64 = 0
    var headSequence: UInt64 = 0
    var headChainHash = ""
    var digest = ""
    var snapshotChecked: UInt64 = 0
    var problemCode = ""
    var problem = ""

    init(_ report: VerificationReport) {
        ok = true
        events = report.events
        migrations = UInt64(report.migrations)
        plans = UInt64(report.plans)
        headSequence = report.head.sequence
        headChainHash = report.head.chainHash.hex
        digest = report.digest.hex
        snapshotChecked = report.snapshotChecked ?? 0
    }

    init(_ response: Lockstep_V1_VerifyHistoryResponse) {
        ok = response.ok
        events = response.events
        migrations = response.migrations
        plans = response.plans
        headSequence = response.headSequence
        headChainHash = response.headChainHash.hexString
        digest = response.digest
        snapshotChecked = response.snapshotChecked
        problemCode = response.problemCode
        problem = response.problem
    }

    init(problemCode: String, problem: String) {
        ok = false
        self.problemCode = problemCode
        self.problem = problem
    }

    /// The table lines (a verified history only).
    var table: [String] {
        var lines = ["ok: \(counted(events, "event")), \(counted(migrations, "migration")), \(counted(plans, "plan"))", "head sequence: \(headSequence)",
                     "head hash: \(headChainHash)", "state digest: \(digest)"]
        if snapshotChecked > 0 { lines.append("snapshot checked at: \(snapshotChecked)") }
        return lines
    }

    var json: String {
        var object: [String: Any] = ["ok": ok]
        if ok {
            object.merge(["events": events, "migrations": migrations, "plans": plans, "head_sequence": headSequence,
                          "head_chain_hash": headChainHash, "digest": digest, "snapshot_checked": snapshotChecked]) { _, new in new }
        } else {
            object.merge(["problem_code": problemCode, "problem": problem]) { _, new in new }
        }
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])) ?? Data()
        return String(decoding: data, as: UTF8.self)
    }

    /// Prints it as `output` asks; a broken history is a `CommandFailure` (stderr, exit 1) after its JSON.
    func print(_ output: OutputFormat) throws {
        switch output {
        case .json: Swift.print(json)
        case .table: if ok { Swift.print(table.joined(separator: "\n")) }
        }
        guard ok else {
            let position = problemCode == ErrorCode.logCorrupted.rawValue ? problem.replacingOccurrences(of: "the log is corrupted at", with: "corrupted at") : problem
            throw CommandFailure(message: position, exitCode: 1)
        }
    }
}
