import ArgumentParser
import Foundation
import LockstepClient
import LockstepWire

struct LeaseCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lease",
        abstract: "See who holds which service, and force a holder to give one back.",
        subcommands: [List.self, Release.self]
    )
}

extension LeaseCommand {
    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Held services (holder, since, the step running under it), then who waits in line.")

        @OptionGroup var server: ServerOptions
        @Option(help: "Output format: table or json.") var output: OutputFormat = .table

        func run() async throws {
            try await server.run { lockstep in
                let leases = try await lockstep.serviceLeases()
                switch output {
                case .json:
                    try printJSON(leases)
                case .table:
                    print(Self.render(leases, now: Date()))
                }
            }
        }

        static func render(_ leases: Lockstep_V1_ListServiceLeasesResponse, now: Date) -> String {
            var lines: [String] = []
            if leases.held.isEmpty {
                lines.append("no service is held")
            } else {
                let rows = leases.held.map { held in
                    var step = "-"
                    if held.hasStep {
                        let left = max(0, Double(held.step.expiresAtMs) / 1_000 - now.timeIntervalSince1970)
                        step = "\(held.step.agentID) token \(held.step.fencingToken), \(String(format: "%.0f", left)) s left"
                    }
                    return [held.service, "\(held.migrationID)/\(held.nodeID)", isoTime(held.sinceMs), held.quarantined ? "quarantined" : "held", step]
                }
                lines.append(renderTable(["service", "holder", "since", "state", "running step"], rows))
            }
            if !leases.waiting.isEmpty {
                lines.append("")
                lines.append("waiting, first in line first:")
                lines.append(renderTable(["request", "services", "step"], leases.waiting.map {
                    ["\($0.migrationID)/\($0.nodeID)", $0.services.joined(separator: ","), $0.kind == .rollback ? "rollback" : $0.kind == .check ? "check" : "forward"]
                }, indent: "  "))
            }
            return lines.joined(separator: "\n")
        }
    }

    struct Release: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Force the holder of a service to give it back (operator).",
            discussion: "Refused while a step runs under it (service_lease_in_use names the token and when its lease expires).")

        @OptionGroup var server: ServerOptions
        @Argument(help: "The service.") var service: String
        @Option(help: "Why (required; recorded with the forced release).") var reason: String

        func run() async throws {
            try await server.run { lockstep in
                printChange(try await lockstep.releaseServiceLease(.with { $0.service = service; $0.reason = reason }))
            }
        }
    }
}
