import ArgumentParser
import Foundation
import LockstepCore
import LockstepEngine
import LockstepPlan
import LockstepStore
import LockstepWire

struct PlanCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plan",
        abstract: "Check, apply and list plans.",
        subcommands: [Lint.self, Apply.self, Diff.self, List.self]
    )
}

extension PlanCommand {
    struct Lint: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check a plan file: structure, dependencies, services, ordering of contract steps, gates, rollbacks, timeouts.",
            discussion: """
                Prints one line per finding, FILE:LINE: error|warning: sentence [code].
                Exit status: 0 no findings, 1 at least one error, 2 warnings only.
                """)

        @Argument(help: "The plan file (YAML).") var file: String
        @Option(help: "Output format: table or json.") var output: OutputFormat = .table

        func run() async throws {
            let load = try lintPlanFile(file)
            switch output {
            case .table:
                for finding in load.findings { print(finding.formatted(file: file)) }
                if load.findings.isEmpty, let plan = load.plan {
                    print("\(file): ok: plan \(plan.name), \(counted(plan.nodes.count, "node")), \(counted(plan.services.count, "service"))")
                } else {
                    print("\(file): \(load.errorCount) error(s), \(load.warningCount) warning(s)")
                }
            case .json:
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
                let rows = load.findings.map { ["file": file, "line": String($0.line), "severity": $0.severity.rawValue, "code": $0.code, "message": $0.message] }
                print(String(decoding: try encoder.encode(rows), as: UTF8.self))
            }
            if !load.errors.isEmpty { throw ExitCode(1) }
            if !load.warnings.isEmpty { throw ExitCode(2) }
        }
    }
}

extension PlanCommand {
    struct Apply: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Record a plan file as the newest version of its plan (a no-op when the content is unchanged).",
            discussion: """
                On the server (--server, $LOCKSTEP_SERVER), or in the log of a stopped coordinator: its data \
                directory (--data) or its PostgreSQL database (--store). Refuses a plan with lint errors. Prints the plan's name, version and content hash.
                """)

        @OptionGroup var server: ServerOptions
        @OptionGroup(title: "The log itself, instead of a server (the coordinator must not be running)") var local: StoreOptions
        @Argument(help: "The plan file (YAML).") var file: String
        @Option(help: "With --data or --store: who applies it (recorded as the actor; a server records the authenticated principal).")
        var actor: String = NSUserName()

        func run() async throws {
            if let location = try local.location(environment: false) {
                try await applyLocally(location)
                return
            }
            // Linted here first, so the findings name lines of the file as the user wrote it; the text
            // linted is the text sent (the file is read once).
            let text = try await reportingFailures { try usablePlan(file, refusing: "nothing was applied", exitCode: 1).text }
            try await server.run { lockstep in
                let applied = try await lockstep.applyPlan(.with { $0.planYaml = text })
                print("\(applied.name)@\(applied.version) \(applied.changed ? "applied" : "unchanged") (content hash \(applied.contentHash))")
            }
        }

        private func applyLocally(_ location: StoreOptions.Location) async throws {
            try await reportingFailures {
                let plan = try usablePlan(file, refusing: "nothing was applied", exitCode: 1).plan
                try await withWritableLog(location) { log in
                    let coordinator = try await Coordinator.open(log: log)
                    let context = CommandContext(actor: Actor(kind: "user", id: actor), triggeredBy: .user)
                    do {
                        let result = try await coordinator.applyPlan(plan, context: context, now: WallClock.now())
                        let hash = await coordinator.state.plan(plan.name, version: result.version)?.contentHash ?? ""
                        print("\(plan.name)@\(result.version) \(result.changed ? "applied" : "unchanged") (content hash \(hash))")
                    } catch {
                        throw CommandFailure(message: "\(error)", exitCode: 1)
                    }
                }
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List applied plans and their versions (on the server, or in --data or --store).")

        @OptionGroup var server: ServerOptions
        @OptionGroup(title: "The log itself, instead of a server") var local: StoreOptions
        @Option(help: "Output format: table or json.") var output: OutputFormat = .table

        func run() async throws {
            if let location = try local.location(environment: false) {
                try await reportingFailures {
                    // The same message the server answers, so the JSON is the same either way.
                    let state = try await withReadOnlyLog(location) { try await History.replay($0) }
                    try Self.show(Lockstep_V1_ListPlansResponse.with { $0.plans = state.appliedPlanViews }, output)
                }
                return
            }
            try await server.run { lockstep in
                try Self.show(try await lockstep.plans(), output)
            }
        }

        static func show(_ plans: Lockstep_V1_ListPlansResponse, _ output: OutputFormat) throws {
            switch output {
            case .json: try printJSON(plans)
            case .table: print(render(plans))
            }
        }

        static func render(_ plans: Lockstep_V1_ListPlansResponse) -> String {
            let rows = plans.plans.flatMap { plan in
                plan.versions.map { [plan.name, String($0.version), String($0.nodes), $0.contentHash] }
            }
            return rows.isEmpty ? "no plans applied" : renderTable(["plan", "version", "nodes", "content hash"], rows)
        }
    }
}

/// Reads and lints the plan file at `path`; an unreadable file ends the command with exit status 66.
func lintPlanFile(_ path: String) throws -> PlanLoad {
    try readPlanFile(path).load
}

/// The plan file at `path`, read no further than one byte past `PlanFile.fileBytesMax`, and linted: its
/// text and findings, or (over the limit, or not UTF-8) no text and that one finding. An unreadable
/// file ends the command with exit status 66.
func readPlanFile(_ path: String) throws -> (text: String?, load: PlanLoad) {
    switch BoundedFile.read(path, limit: PlanFile.fileBytesMax, what: "the plan file", streams: true) {
    case .failure(let problem) where problem.tooLarge:
        return (nil, .refused("file_too_large", "the plan file is over \(PlanFile.fileBytesMax) bytes, the limit"))
    case .failure(let problem):
        FileHandle.standardError.write(Data("error: \(problem)\n".utf8))
        throw ExitCode(66)
    case .success(let bytes):
        // Never repaired: a byte that is not UTF-8 would be applied as U+FFFD, changing what was written.
        guard let text = String(validating: bytes, as: UTF8.self) else {
            return (nil, .refused("not_utf8", "the plan file is not UTF-8 text"))
        }
        return (text, PlanFile.lint(yaml: text))
    }
}

/// The plan in `path`, and its file's text, when it has no lint errors; otherwise prints them and ends
/// the command.
func usablePlan(_ path: String, refusing consequence: String, exitCode: Int32) throws -> (plan: PlanSnapshot, text: String) {
    let read = try readPlanFile(path)
    let load = read.load
    guard load.errors.isEmpty, let plan = load.plan, let text = read.text else {
        for finding in load.errors { FileHandle.standardError.write(Data((finding.formatted(file: path) + "\n").utf8)) }
        throw CommandFailure(message: "\(path) has \(load.errorCount) lint error(s); \(consequence)", exitCode: exitCode)
    }
    return (plan, text)
}
