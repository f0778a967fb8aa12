import ArgumentParser
import Foundation
import LockstepPlan

struct PlanCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plan",
        abstract: "Check plan files.",
        subcommands: [Lint.self]
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
            guard let data = FileManager.default.contents(atPath: file) else {
                FileHandle.standardError.write(Data("error: cannot read \(file)\n".utf8))
                throw ExitCode(66)
            }
            let load = PlanFile.lint(yaml: String(decoding: data, as: UTF8.self))
            switch output {
            case .table:
                for finding in load.findings { print(finding.formatted(file: file)) }
                if load.findings.isEmpty, let plan = load.plan {
                    print("\(file): ok: plan \(plan.name), \(plan.nodes.count) nodes, \(plan.services.count) services")
                } else {
                    print("\(file): \(load.errors.count) error(s), \(load.warnings.count) warning(s)")
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
