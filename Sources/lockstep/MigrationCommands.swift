import ArgumentParser
import Foundation
import LockstepClient
import LockstepCore
import LockstepEngine
import LockstepStore
import LockstepWire
import Synchronization

struct MigrationsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "migration",
        abstract: "Start, follow and steer migrations on a server.",
        subcommands: [Start.self, Status.self, List.self, Watch.self, Wait.self, Report.self, Approve.self, Reject.self, Pause.self, Resume.self, Abort.self, BreakGlass.self]
    )
}

extension MigrationsCommand {
    struct Start: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Start a migration of an applied plan; prints its id.",
            discussion: "PLAN is a plan's name (its newest version) or NAME@VERSION.")

        @OptionGroup var server: ServerOptions
        @Argument(help: "PLAN or PLAN@VERSION.") var plan: String
        @Option(help: "The migration's id (default: the server picks PLAN-xxxxxxxx).") var id: String?
        @Flag(help: "Then wait for it as `lockstep migration wait` does (one line per event; the outcome as the exit status).") var wait = false
        @Option(help: "With --wait: give up after this long (90s, 30m, 2h).") var timeout: DurationArgument?

        func run() async throws {
            var name = plan
            var version: UInt64 = 0
            if let at = plan.lastIndex(of: "@") {
                guard let parsed = UInt64(plan[plan.index(after: at)...]), parsed > 0 else {
                    throw ValidationError("the version in \(plan) must be a positive number: PLAN@VERSION")
                }
                name = String(plan[..<at])
                version = parsed
            }
            if timeout != nil && !wait { throw ValidationError("--timeout needs --wait") }
            var outcome = WaitOutcome.succeeded
            var startedID = ""
            try await server.run { lockstep in
                let started = try await lockstep.startMigration(.with {
                    $0.plan = name
                    $0.version = version
                    $0.migrationID = id ?? ""
                })
                print(started.migrationID)
                fflush(nil)
                startedID = started.migrationID
            }
            // The wait on a client of its own: it only reads, so it may run again on the next address
            // (after the last line it printed), where the start must not.
            if wait {
                let printed = PrintedUpTo()
                do {
                    try await server.run { lockstep in outcome = try await waitFor(startedID, lockstep, timeout: timeout, printed: printed) }
                } catch let failure as ExitCode {
                    // The start was carried out: run again, the command would start another.
                    FileHandle.standardError.write(Data("note: migration \(startedID) was started; follow it with `lockstep migration wait \(startedID)`\n".utf8))
                    throw failure
                }
            }
            if outcome.exitCode != 0 { throw ExitCode(outcome.exitCode) }
        }
    }

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "A migration as it stands: every node, its step, lease and gate.")

        @OptionGroup var server: ServerOptions
        @Argument(help: "The migration's id.") var id: String
        @Option(help: "Output format: table or json.") var output: OutputFormat = .table

        func run() async throws {
            try await server.run { lockstep in
                let migration = try await lockstep.migration(.with { $0.migrationID = id })
                switch output {
                case .json: try printJSON(migration)
                case .table: print(MigrationView.render(migration, now: Date()))
                }
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Migrations in id order.")

        @OptionGroup var server: ServerOptions
        @Option(help: "Show at most this many (1...100000).") var limit = 1_000
        @Option(help: "Output format: table or json.") var output: OutputFormat = .table

        func validate() throws {
            guard (1...100_000).contains(limit) else { throw ValidationError("--limit must be 1...100000") }
        }

        func run() async throws {
            try await server.run { lockstep in
                var all: [Lockstep_V1_Migration] = []
                var token = ""
                repeat {
                    let page = try await lockstep.migrations(.with {
                        $0.pageSize = UInt32(min(1_000, limit - all.count))
                        $0.pageToken = token
                    })
                    all += page.migrations
                    // A page that brings nothing, or names itself as the next, would be asked for forever.
                    guard !page.migrations.isEmpty, page.nextPageToken != token else {
                        token = ""
                        break
                    }
                    token = page.nextPageToken
                } while !token.isEmpty && all.count < limit
                switch output {
                case .json:
                    try printJSON(Lockstep_V1_ListMigrationsResponse.with { $0.migrations = all; $0.nextPageToken = token })
                case .table:
                    if all.isEmpty { print("no migrations") }
                    let rows = all.map { migration in
                        let done = migration.nodes.filter { $0.status == .succeeded }.count
                        return [migration.migrationID, "\(migration.plan)@\(migration.planVersion)", migration.status.name,
                                "\(done)/\(migration.nodes.count)", migration.startedBy, isoTime(migration.startedAtMs)]
                    }
                    if !all.isEmpty { print(renderTable(["migration", "plan", "status", "nodes done", "started by", "started at"], rows)) }
                    if !token.isEmpty { print("(more: raise --limit)") }
                }
            }
        }
    }

    struct Watch: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Follow a migration live until it settles.",
            discussion: """
                On a terminal: a live view of every node (progress bars for running steps), who holds which \
                lease, and which gates wait on whom, redrawn as events are recorded. Otherwise (a pipe, a CI \
                log): one line per event, then the final view. With --output json: each event as NDJSON, as \
                `history export` prints it. Exit status 0 when the migration succeeded, 5 when it settled \
                otherwise (rolled back or failed).
                """)

        @OptionGroup var server: ServerOptions
        @Argument(help: "The migration's id.") var id: String
        @Flag(help: "One line per event even on a terminal.") var plain = false
        @Option(help: "Output format: table (the view) or json (NDJSON events).") var output: OutputFormat = .table

        func run() async throws {
            var settled = Lockstep_V1_MigrationStatus.unspecified
            // Run again on the next address, a watch goes on after the last event it printed.
            let printed = PrintedUpTo()
            let shown: FollowOutput = output == .json ? .ndjson : (!plain && isatty(STDOUT_FILENO) == 1 ? .live : .lines)
            try await server.run { lockstep in
                settled = try await follow(id, lockstep, output: shown, printed: printed)
            }
            if settled != .succeeded { throw ExitCode(5) }
        }
    }
}

/// How `follow` shows a migration: a live view of it, redrawn on a terminal; one line per event, then
/// the final view; or each event as an NDJSON line, as `history export` prints it, and no view.
enum FollowOutput {
    case live, lines, ndjson
}

/// Follows migration `id` until it settles and returns its final status. A live view is redrawn at most
/// ten times a second; the other outputs print every event after `printed`'s, and advance it.
func follow(_ id: String, _ lockstep: LockstepClient, output: FollowOutput, printed: PrintedUpTo = PrintedUpTo()) async throws
    -> Lockstep_V1_MigrationStatus {
    let frames = FrameClock()
    try await lockstep.watch(.with {
        $0.migrationID = id
        if output != .live { $0.afterSequence = printed.value }
    }) { envelope in
        switch output {
        case .live:
            guard frames.due() else { return }
            let migration = try await lockstep.migration(.with { $0.migrationID = id })
            print("\u{1B}[H\u{1B}[2J" + MigrationView.render(migration, now: Date()))
            fflush(nil)
            return
        case .lines:
            let line = (try? EventRecordCodec.domainRecord(envelope.record)).flatMap(EventLine.init) ?? EventLine(envelope)
            print("#\(envelope.sequence) \(line.text)")
        case .ndjson:
            print(try HistoryExport.line(sequence: envelope.sequence, chainHashHex: envelope.chainHash.hexString, record: envelope.record))
        }
        fflush(nil)
        printed.printed(envelope.sequence)
    }
    let migration = try await lockstep.migration(.with { $0.migrationID = id })
    switch output {
    case .live: print("\u{1B}[H\u{1B}[2J" + MigrationView.render(migration, now: Date()))
    case .lines: print("\n" + MigrationView.render(migration, now: Date()))
    case .ndjson: break
    }
    fflush(nil)
    return migration.status
}

/// Redraws at most ten times a second (a migration can record events faster than a terminal redraws).
final class FrameClock: Sendable {
    private let last = Mutex(ContinuousClock.now - .seconds(1))

    func due() -> Bool {
        last.withLock { last in
            let now = ContinuousClock.now
            guard now - last >= .milliseconds(100) else { return false }
            last = now
            return true
        }
    }
}

/// One event as a line: its type and what it says.
struct EventLine {
    var text: String

    init?(_ record: LogRecord) {
        switch record {
        case .migration(let recorded):
            text = "\(recorded.event.typeName.padding(toLength: 25, withPad: " ", startingAt: 0)) \(recorded.event.summary)  (\(recorded.metadata.actor.kind) \(recorded.metadata.actor.id))"
        case .freeze(let recorded):
            text = "\(recorded.event.typeName.padding(toLength: 25, withPad: " ", startingAt: 0)) \(recorded.event.summary)  (\(recorded.metadata.actor.kind) \(recorded.metadata.actor.id))"
        case .plan, .checkpoint:
            return nil
        }
    }

    init(_ envelope: Lockstep_V1_EventEnvelope) {
        text = "event in \(envelope.record.stream)"
    }
}

extension MigrationsCommand {
    struct Approve: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Approve a node's gate (as an approver of its owner groups).")

        @OptionGroup var server: ServerOptions
        @Argument(help: "The migration's id.") var id: String
        @Argument(help: "The gated node.") var node: String
        @Option(help: "Recorded with the approval.") var comment = ""

        func run() async throws {
            try await server.run { lockstep in
                printChange(try await lockstep.approve(.with { $0.migrationID = id; $0.nodeID = node; $0.comment = comment }))
            }
        }
    }

    struct Reject: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Reject a node's gate: the migration rolls back.")

        @OptionGroup var server: ServerOptions
        @Argument(help: "The migration's id.") var id: String
        @Argument(help: "The gated node.") var node: String
        @Option(help: "Why (required; recorded with the rejection).") var comment: String

        func run() async throws {
            try await server.run { lockstep in
                printChange(try await lockstep.reject(.with { $0.migrationID = id; $0.nodeID = node; $0.comment = comment }))
            }
        }
    }

    struct Pause: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Pause a migration: no new steps start; running steps finish.")

        @OptionGroup var server: ServerOptions
        @Argument(help: "The migration's id.") var id: String
        @Option(help: "Recorded with the pause.") var reason = ""

        func run() async throws {
            try await server.run { lockstep in
                printChange(try await lockstep.pause(.with { $0.migrationID = id; $0.reason = reason }))
            }
        }
    }

    struct Resume: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Resume a paused migration.")

        @OptionGroup var server: ServerOptions
        @Argument(help: "The migration's id.") var id: String

        func run() async throws {
            try await server.run { lockstep in
                printChange(try await lockstep.resume(.with { $0.migrationID = id }))
            }
        }
    }

    struct Abort: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Abort a migration: what was done is rolled back, newest first.")

        @OptionGroup var server: ServerOptions
        @Argument(help: "The migration's id.") var id: String
        @Option(help: "Why (required; recorded with the abort).") var reason: String

        func run() async throws {
            try await server.run { lockstep in
                printChange(try await lockstep.abort(.with { $0.migrationID = id; $0.reason = reason }))
            }
        }
    }
}

/// `m1: approval_granted, service_leases_requested (running)`.
func printChange(_ change: Lockstep_V1_ChangeResponse) {
    let events = change.events.isEmpty ? "nothing recorded" : change.events.joined(separator: ", ")
    print("\(change.migrationID.isEmpty ? "recorded" : change.migrationID): \(events)\(change.status == .unspecified ? "" : " (\(change.status.name))")")
}

/// A migration as a terminal shows it: a heading, then one row per node with its step, lease,
/// progress bar, gate or wait.
enum MigrationView {
    static func render(_ migration: Lockstep_V1_Migration, now: Date) -> String {
        var heading = "migration \(migration.migrationID)  plan \(migration.plan)@\(migration.planVersion)  \(migration.status.name)"
        if !migration.statusReason.isEmpty { heading += " (\(migration.statusReason))" }
        var lines = [heading, "started by \(migration.startedBy.isEmpty ? "?" : migration.startedBy) at \(isoTime(migration.startedAtMs))", ""]
        let rows = migration.nodes.map { node in
            [node.nodeID, node.phase, node.services.joined(separator: ","), node.status.name, String(node.attempts),
             node.serviceLeases == .held ? node.services.joined(separator: ",") : "-", detail(node, now: now)]
        }
        lines.append(renderTable(["node", "phase", "services", "status", "attempts", "holds", "step / gate / wait"], rows))
        return lines.joined(separator: "\n")
    }

    static func detail(_ node: Lockstep_V1_MigrationNode, now: Date) -> String {
        let stage = exposure(node, now: now)
        let frozen = node.frozenBy.isEmpty ? "" : "frozen by \(node.frozenBy) " + (node.frozenUntilMs == 0 ? "until it is ended" : "until \(isoTime(node.frozenUntilMs))")
        let window = node.windowClosed.isEmpty ? ""
            : "window closed (\(node.windowClosed)) " + (node.windowOpensMs == 0 ? "and not open within 8 days" : "until \(isoTime(node.windowOpensMs))")
        let failing = node.status == .checkFailed ? node.checks.first { $0.outcome == "fail" && $0.recheckAtMs > 0 } : nil
        let check = failing.map { "check \($0.check) failed (\($0.evidence.isEmpty ? "no evidence" : $0.evidence)); runs again at \(isoTime($0.recheckAtMs))" } ?? ""
        let rest = stepDetail(node, now: now)
        let glass = node.breakGlass.isEmpty ? "" : "BREAK-GLASS: " + node.breakGlass.joined(separator: ", ")
        return [stage, frozen, window, check, rest, glass].filter { !$0.isEmpty }.joined(separator: "; ")
    }

    /// `stage 10 %, baking 42 s more (3 samples)` for exposure nodes.
    static func exposure(_ node: Lockstep_V1_MigrationNode, now: Date) -> String {
        guard !node.stage.isEmpty else { return "" }
        var text = "stage " + (node.hasStagePercent ? "\(node.stagePercent) %" : node.stage)
        if node.status == .baking && node.bakeUntilMs > 0 {
            let left = max(0, Double(node.bakeUntilMs) / 1_000 - now.timeIntervalSince1970)
            text += ", baking \(String(format: "%.0f", left)) s more (\(node.bakeSamples) sample\(node.bakeSamples == 1 ? "" : "s"))"
        } else if node.status == .awaitingDecision {
            text += ", its analysis asks a person to decide: resume (go on) or abort (roll back)"
        }
        return text
    }

    static func stepDetail(_ node: Lockstep_V1_MigrationNode, now: Date) -> String {
        if node.hasLease {
            let left = max(0, Double(node.lease.expiresAtMs) / 1_000 - now.timeIntervalSince1970)
            let kind = node.lease.kind == .rollback ? "rollback " : node.lease.kind == .check ? "check " : ""
            var text = "\(kind)\(bar(node.progressPercent)) \(node.progressPercent)% \(node.lease.agentID) token \(node.lease.fencingToken), lease \(String(format: "%.0f", left)) s left"
            if !node.progressMessage.isEmpty { text += ": \(node.progressMessage)" }
            return text
        }
        if node.approvalsNeeded > 0 && node.status == .awaitingApproval {
            var text = "gate: \(node.approvals)/\(node.approvalsNeeded) approvals from \(node.approversFrom.joined(separator: ", "))"
            if !node.approvedBy.isEmpty { text += " (approved by \(node.approvedBy.joined(separator: ", ")))" }
            return text
        }
        if !node.waitingFor.isEmpty { return "waits: " + node.waitingFor.joined(separator: "; ") }
        // A node that succeeded after a failed attempt does not dwell on it.
        if !node.lastFailure.isEmpty && node.status != .succeeded { return "last failure: \(node.lastFailure)" }
        return ""
    }

    /// `[########------------]` for 0...100 percent.
    static func bar(_ percent: UInt32) -> String {
        let filled = Int(min(percent, 100)) / 5
        return "[" + String(repeating: "#", count: filled) + String(repeating: "-", count: 20 - filled) + "]"
    }
}
