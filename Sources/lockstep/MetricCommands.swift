import ArgumentParser
import Foundation
import LockstepClient

struct MetricCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "metric",
        abstract: "Report metric samples for the bake of an exposure node (docs/exposure.md).",
        subcommands: [Record.self]
    )
}

extension MetricCommand {
    struct Record: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Record one sample: METRIC had VALUE over a window, for NODE's current bake.",
            discussion: "As an agent of the node's service or an operator. Refused outside a bake (not_baking) and for metrics the analysis does not judge.")

        @OptionGroup var server: ServerOptions
        @Argument(help: "The migration's id.") var id: String
        @Argument(help: "The exposure node.") var node: String
        @Argument(help: "A metric the node's analysis judges.") var name: String
        @Argument(help: "Its value (six decimals are kept).") var value: Double
        @Option(help: "Who measured it (a dashboard, a prober).") var source = "cli"
        @Option(help: "Start of the measured window, ms since the Unix epoch (default: now).") var windowStartMs: Int64 = 0
        @Option(help: "End of the measured window, ms since the Unix epoch (default: now).") var windowEndMs: Int64 = 0
        @Option(help: "Which group it measures: canary (the changed part) or baseline (the unchanged part it is compared with).") var cohort = "canary"

        func run() async throws {
            try await server.run { lockstep in
                let recorded = try await lockstep.recordMetric(.with {
                    $0.migrationID = id
                    $0.nodeID = node
                    $0.name = name
                    $0.value = value
                    $0.source = source
                    $0.windowStartMs = windowStartMs
                    $0.windowEndMs = windowEndMs
                    $0.cohort = cohort
                })
                print("\(id)/\(node): \(name) = \(value) recorded for the bake of stage \(recorded.stage) (\(recorded.samples) sample\(recorded.samples == 1 ? "" : "s") so far)")
            }
        }
    }
}
