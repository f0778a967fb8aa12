import ArgumentParser
import Foundation
import LockstepClient
import LockstepPlan
import LockstepWire

// `lockstep freeze`, `lockstep line` and `lockstep migration break-glass` (docs/gates.md).

struct FreezeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "freeze",
        abstract: "Declare, list and end freezes: no forward step on the frozen services starts; rollback steps always may.",
        subcommands: [Add.self, List.self, End.self]
    )
}

/// An instant on the command line: ISO 8601 in UTC or with an offset (2026-12-24T00:00:00Z), or "now".
struct InstantArgument: ExpressibleByArgument {
    var millis: Int64

    init?(argument: String) {
        if argument == "now" {
            millis = 0
            return
        }
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime]
        let fractional = ISO8601DateFormatter()
        fractional.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        guard let date = formatter.date(from: argument) ?? fractional.date(from: argument) else { return nil }
        // 0 means "now" (or "until ended") to the API: an instant at or before 1970 is refused here.
        guard date.timeIntervalSince1970 > 0, date.timeIntervalSince1970 < 253_402_300_800 else { return nil }
        millis = Int64((date.timeIntervalSince1970 * 1_000).rounded())
    }

    static var defaultCompletionKind: CompletionKind { .default }
}

/// A duration on the command line, as plans write them: 90s, 30m, 2h, 1d.
struct DurationArgument: ExpressibleByArgument {
    var millis: Int64

    init?(argument: String) {
        guard let millis = PlanDuration.milliseconds(argument), millis > 0 else { return nil }
        self.millis = millis
    }
}

extension FreezeCommand {
    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Declare a freeze of some services, or of every service (operator).",
            discussion: "Forward steps on the frozen services do not start while it is in force (their nodes wait, and say for which freeze); "
                + "rollback steps always may. It ends at --until (or after --for), or when someone ends it.")

        @OptionGroup var server: ServerOptions
        @Option(name: .customLong("service"), help: "A service to freeze (repeat for several; none: every service).") var services: [String] = []
        @Option(help: "When it comes into force: ISO 8601 (2026-12-24T00:00:00Z) or now.") var from: InstantArgument?
        @Option(help: "When it ends: ISO 8601. Without it (and --for), it lasts until ended.") var until: InstantArgument?
        @Option(name: .customLong("for"), help: "How long it lasts from --from: 90m, 2h, 3d.") var duration: DurationArgument?
        @Option(help: "Why (required; recorded with the freeze).") var reason: String
        @Option(help: "Its id (default: freeze- and the log's next sequence).") var id: String = ""
        @Option(help: "Output format: table or json.") var output: OutputFormat = .table

        func validate() throws {
            if until != nil && duration != nil { throw ValidationError("give --until or --for, not both") }
        }

        func run() async throws {
            let from = self.from?.millis ?? 0
            var until = self.until?.millis ?? 0
            if let duration {
                let start = from == 0 ? Int64((Date().timeIntervalSince1970 * 1_000).rounded()) : from
                until = start.addingReportingOverflow(duration.millis).overflow ? Int64.max : start + duration.millis
            }
            try await server.run { lockstep in
                let response = try await lockstep.declareFreeze(.with {
                    $0.id = id
                    $0.services = services
                    $0.fromMs = from
                    $0.untilMs = until
                    $0.reason = reason
                })
                switch output {
                case .json: try printJSON(response)
                case .table: print("declared " + FreezeView.line(response.freeze))
                }
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Freezes declared and not ended, in force or to come.")

        @OptionGroup var server: ServerOptions
        @Option(help: "Output format: table or json.") var output: OutputFormat = .table

        func run() async throws {
            try await server.run { lockstep in
                let freezes = try await lockstep.listFreezes(.init())
                switch output {
                case .json: try printJSON(freezes)
                case .table: print(FreezeView.table(freezes.freezes))
                }
            }
        }
    }

    struct End: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "End a freeze now (operator). Ending a stop of the line resumes the migrations it paused.")

        @OptionGroup var server: ServerOptions
        @Argument(help: "The freeze's id.") var id: String
        @Option(help: "Why (recorded with its end).") var reason: String = ""

        func run() async throws { try await FreezeView.end(id, reason: reason, on: server) }
    }
}

struct LineCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "line",
        abstract: "Stop the line in an incident, and lift the stop.",
        subcommands: [Stop.self, Resume.self]
    )
}

extension LineCommand {
    struct Stop: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Freeze some services (or all) until lifted, and pause every running migration touching them (operator).",
            discussion: "Recorded with who and why: a freeze (stops_line) and a pause of each migration. Running steps finish and report; "
                + "no new step starts. Rollback steps still may (abort a migration to roll it back). Lift it with `lockstep line resume ID`.")

        @OptionGroup var server: ServerOptions
        @Option(name: .customLong("service"), help: "A service (repeat for several; none: every service).") var services: [String] = []
        @Option(help: "Why (required; recorded with the freeze and each pause).") var reason: String
        @Option(help: "Its id (default: line-stop- and the log's next sequence).") var id: String = ""

        func run() async throws {
            try await server.run { lockstep in
                let response = try await lockstep.stopLine(.with { $0.services = services; $0.reason = reason; $0.id = id })
                print("line stopped: " + FreezeView.line(response.freeze))
                print(response.migrations.isEmpty ? "no running migration touches it" : "paused: " + response.migrations.joined(separator: ", "))
                for line in response.notPaused { print("not paused: \(line)") }
            }
        }
    }

    struct Resume: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Lift a stop of the line: end its freeze and resume the migrations it paused (operator).")

        @OptionGroup var server: ServerOptions
        @Argument(help: "The stop's id (lockstep freeze list).") var id: String
        @Option(help: "Why (recorded with its end).") var reason: String = ""

        func run() async throws { try await FreezeView.end(id, reason: reason, on: server) }
    }
}

extension MigrationsCommand {
    struct BreakGlass: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "break-glass",
            abstract: "Override a freeze, a change window or a bake for one node, with a justification (admins only).",
            discussion: "--scope freeze: the node's forward steps start under any freeze. --scope window: they start outside its change windows. "
                + "--scope bake: its current bake ends now and it "
                + "advances without its analysis. Recorded as a break_glass event with who and why, and shown in status, history and metrics.")

        @OptionGroup var server: ServerOptions
        @Argument(help: "The migration.") var migration: String
        @Argument(help: "The node.") var node: String
        @Option(help: "What to override: freeze, window or bake.") var scope: String
        @Option(help: "Why (required; recorded).") var justification: String

        func run() async throws {
            try await server.run { lockstep in
                printChange(try await lockstep.breakGlass(.with {
                    $0.migrationID = migration
                    $0.nodeID = node
                    $0.scope = scope
                    $0.justification = justification
                }))
            }
        }
    }
}

enum FreezeView {
    static func line(_ freeze: Lockstep_V1_FreezeInfo) -> String {
        let scope = freeze.services.isEmpty ? "every service" : freeze.services.joined(separator: ", ")
        let until = freeze.untilMs == 0 ? "until ended" : "until \(isoTime(freeze.untilMs))"
        return "\(freeze.id): \(scope) from \(isoTime(freeze.fromMs)) \(until) (\(freeze.active ? "in force" : "not in force")), by \(freeze.declaredBy): \(freeze.reason)"
    }

    static func table(_ freezes: [Lockstep_V1_FreezeInfo]) -> String {
        guard !freezes.isEmpty else { return "no freeze is declared" }
        return renderTable(["id", "services", "from", "until", "state", "by", "reason"], freezes.map { freeze in
            [freeze.id, freeze.services.isEmpty ? "(all)" : freeze.services.joined(separator: ","), isoTime(freeze.fromMs),
             freeze.untilMs == 0 ? "until ended" : isoTime(freeze.untilMs),
             (freeze.active ? "in force" : "to come") + (freeze.stopsLine ? ", line stop" : ""), freeze.declaredBy, freeze.reason]
        })
    }

    /// Ends freeze `id` and says what it resumed (`freeze end` and `line resume`).
    static func end(_ id: String, reason: String, on server: ServerOptions) async throws {
        try await server.run { lockstep in
            printEnd(try await lockstep.endFreeze(.with { $0.id = id; $0.reason = reason }))
        }
    }

    static func printEnd(_ response: Lockstep_V1_FreezeResponse) {
        print("ended \(response.freeze.id)")
        if !response.migrations.isEmpty { print("resumed: " + response.migrations.joined(separator: ", ")) }
        for line in response.notResumed { print("still paused: \(line)") }
    }
}
