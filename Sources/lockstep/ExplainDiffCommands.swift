import ArgumentParser
import Foundation
import LockstepClient
import LockstepCore
import LockstepEngine
import LockstepStore
import LockstepWire

// `lockstep history explain` and `history diff` (issue 21, docs/history.md): "why is it so" and "what
// changed", answered from the log, on the server or in the log itself.

/// A point of the log on the command line: a sequence (a number) or a time (ISO 8601).
struct HistoryPointArgument: ExpressibleByArgument {
    var point: Lockstep_V1_HistoryPoint

    init?(argument: String) {
        if let sequence = UInt64(argument) {
            point = .with { $0.sequence = sequence }
        } else if let time = InstantArgument(argument: argument), time.millis > 0 {
            point = .with { $0.timeMs = time.millis }
        } else {
            return nil
        }
    }
}

extension HistoryCommand {
    struct Explain: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Why a migration (or one of its nodes) is where it is: the chain of decisions back to its start.",
            discussion: "Each line: the event's sequence, time and actor, what it says; each is caused by the lines after it.")

        @OptionGroup var server: ServerOptions
        @OptionGroup(title: "The log itself, instead of a server") var local: StoreOptions
        @Argument(help: "The migration's id.") var migration: String
        @Argument(help: "One of its nodes (default: the migration as a whole).") var node: String?
        @Option(help: "Output format: table or json.") var output: OutputFormat = .table
        @OptionGroup(title: "Archive segments, read before the log") var archive: ArchiveOptions

        func run() async throws {
            let request = Lockstep_V1_ExplainRequest.with {
                $0.migrationID = migration
                $0.nodeID = node ?? ""
            }
            guard let history = try localHistory(local, archive) else {
                return try await server.run { lockstep in try show(try await lockstep.explain(request)) }
            }
            try await reportingFailures {
                try await history.read { log in
                    let events = try await History.migrationEvents(MigrationID(migration), in: log)
                    guard !events.isEmpty else {
                        throw CommandFailure(message: "\(ErrorCode.migrationNotFound.rawValue): migration \(migration) is not in this history", exitCode: 1)
                    }
                    let explanation: HistoryExplain.Explanation
                    do { explanation = try HistoryExplain.explain(events, node: node.map(NodeID.init)) } catch {
                        throw CommandFailure(message: String(describing: error), exitCode: 1)
                    }
                    try show(Lockstep_V1_ExplainResponse(explanation))
                }
            }
        }

        func show(_ response: Lockstep_V1_ExplainResponse) throws {
            switch output {
            case .json: try printJSON(response)
            case .table:
                print(response.headline)
                for (index, link) in response.links.enumerated() {
                    print("  \(index == 0 ? "" : "← ")#\(link.sequence) \(Instant(millisecondsSinceEpoch: link.atMs)) \(link.actor): \(link.text)")
                }
            }
        }
    }

    struct Diff: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "What changed between two points of the log: migrations, nodes, service leases, gates, exposure, freezes, plans.",
            discussion: """
                --at A --at B: each a sequence (after that event) or an ISO 8601 time (after the last event recorded \
                by then). One line per change: + added, - ended, ~ changed. Exit 0 whether or not anything changed.
                """)

        @OptionGroup var server: ServerOptions
        @OptionGroup(title: "The log itself, instead of a server") var local: StoreOptions
        @Option(help: "The two points: --at A --at B.") var at: [HistoryPointArgument] = []
        @Option(help: "Only this migration (and the services its plan names).") var migration: String?
        @Option(help: "Output format: table or json.") var output: OutputFormat = .table
        @OptionGroup(title: "Archive segments, read before the log") var archive: ArchiveOptions

        func validate() throws {
            guard at.count == 2 else { throw ValidationError("give two points: --at A --at B (a sequence, or an ISO 8601 time)") }
        }

        func run() async throws {
            let request = Lockstep_V1_DiffHistoryRequest.with {
                $0.from = at[0].point
                $0.to = at[1].point
                $0.migrationID = migration ?? ""
            }
            guard let history = try localHistory(local, archive) else {
                return try await server.run { lockstep in try show(try await lockstep.diff(request)) }
            }
            try await reportingFailures {
                try await history.read { log in
                    func sequence(_ point: Lockstep_V1_HistoryPoint) async throws -> UInt64 {
                        switch point.at {
                        case .sequence(let sequence)?: sequence
                        case .timeMs(let time)?: try await History.lastSequence(in: log, recordedAtOrBefore: Instant(millisecondsSinceEpoch: time))
                        case nil: 0
                        }
                    }
                    let from = try await sequence(request.from)
                    let to = try await sequence(request.to)
                    guard from <= to else { throw CommandFailure(message: "the first point (sequence \(from)) comes after the second (\(to))", exitCode: 64) }
                    let (old, new) = try await History.states(log, from: from, to: to)
                    if let migration, !new.everyMigrationInOrder.contains(where: { $0.id.rawValue == migration }) {
                        throw CommandFailure(message: "\(ErrorCode.migrationNotFound.rawValue): migration \(migration) is not in the log by sequence \(to)", exitCode: 1)
                    }
                    try show(.with {
                        $0.fromSequence = from
                        $0.toSequence = to
                        $0.changes = HistoryDiff.changes(from: old, to: new, migration: migration.map(MigrationID.init))
                    })
                }
            }
        }

        func show(_ response: Lockstep_V1_DiffHistoryResponse) throws {
            switch output {
            case .json: try printJSON(response)
            case .table:
                print("from sequence \(response.fromSequence) to \(response.toSequence): \(counted(response.changes.count, "change"))")
                for line in response.changes { print(line) }
            }
        }
    }
}
