import ArgumentParser
import Foundation
import LockstepClient
import LockstepCore
import LockstepEngine
import LockstepStore
import LockstepWire

// `lockstep migration report` (issue 20): a migration's retrospective from its events, on the server or
// in the log itself; the same report either way (docs/cli.md).

/// The forms of a report.
enum ReportFormat: String, ExpressibleByArgument, CaseIterable {
    case md, html, json
}

extension MigrationsCommand {
    struct Report: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "A migration's report: who did what, a timeline per node, rollbacks, analyses, and the history's integrity.",
            discussion: """
                Drawn only from the migration's events (from the server, or the log itself with --data or --store), \
                after the whole history is verified: the same report from any replica or exported history. \
                --format md (default), html (one page with a Gantt chart, no script) or json. \
                Exit 1 if the history has no such migration, or does not verify (the report is still written, marked NOT verified).
                """)

        @OptionGroup var server: ServerOptions
        @OptionGroup(title: "The log itself, instead of a server") var local: StoreOptions
        @Argument(help: "The migration's id.") var id: String
        @Option(help: "md, html or json.") var format: ReportFormat = .md
        @Option(help: "Write it to this file instead of standard output.") var out: String?
        @OptionGroup(title: "Archive segments, read before the log") var archive: ArchiveOptions

        func run() async throws {
            guard !id.isEmpty, id.utf8.count <= 256, !id.contains("/") else { throw ValidationError("\(id) is not a migration id") }
            let migration = MigrationID(id)
            let drawn: (events: [(sequence: UInt64, event: RecordedEvent)], integrity: MigrationReport.Integrity)
            if let history = try localHistory(local, archive) {
                drawn = try await reportingFailures {
                    try await history.read { log in
                        let integrity: MigrationReport.Integrity
                        do {
                            let verified = try await HistoryVerifier.verify(log)
                            integrity = .init(headSequence: verified.head.sequence, headHashHex: verified.head.chainHash.hex, verified: true)
                        } catch EventLogError.corrupted(let position, let reason) {
                            let head = try await log.head()
                            integrity = .init(headSequence: head.sequence, headHashHex: head.chainHash.hex, verified: false,
                                              problem: "the log is corrupted at sequence \(position): \(reason)")
                        }
                        // Only what the verification covered, even if the log grew meanwhile.
                        return (try await History.migrationEvents(migration, in: log, through: integrity.headSequence), integrity)
                    }
                }
            } else {
                var fetched: (events: [(sequence: UInt64, event: RecordedEvent)], integrity: MigrationReport.Integrity)?
                try await server.run { lockstep in fetched = try await Self.fetch(migration, lockstep) }
                guard let fetched else { throw ExitCode(3) }
                drawn = fetched
            }
            let report: MigrationReport
            do {
                report = try MigrationReport(events: drawn.events, integrity: drawn.integrity)
            } catch {
                FileHandle.standardError.write(Data("error: \(ErrorCode.migrationNotFound.rawValue): migration \(id) is not in this history\n".utf8))
                throw ExitCode(1)
            }
            let text = switch format {
            case .md: report.markdown
            case .html: report.html
            case .json: report.json
            }
            if let out {
                try await reportingFailures {
                    do { try Data(text.utf8).write(to: URL(fileURLWithPath: out)) } catch {
                        throw CommandFailure(message: "cannot write \(out): \(error.localizedDescription)", exitCode: 2)
                    }
                }
            } else {
                FileHandle.standardOutput.write(Data(text.utf8))
            }
            if !report.integrity.verified {
                FileHandle.standardError.write(Data("error: \(report.integrity.problem)\n".utf8))
                throw ExitCode(1)
            }
        }

        /// The migration's events from the server, each decoded and checked in order, and the server's verification.
        static func fetch(_ migration: MigrationID, _ lockstep: LockstepClient) async throws
            -> (events: [(sequence: UInt64, event: RecordedEvent)], integrity: MigrationReport.Integrity)
        {
            let verified = try await lockstep.verify()
            let integrity = MigrationReport.Integrity(
                headSequence: verified.headSequence, headHashHex: verified.headChainHash.hexString, verified: verified.ok,
                problem: verified.ok ? "" : verified.problem)
            var events: [(sequence: UInt64, event: RecordedEvent)] = []
            // Only what the verification covered, even if the log grew meanwhile.
            try await eachEvent(lockstep, stream: RecordedEvent.stream(of: migration), through: integrity.headSequence) { envelope in
                guard case .migration(let recorded) = try EventRecordCodec.domainRecord(envelope.record), recorded.migration == migration,
                      recorded.streamVersion == UInt64(events.count) + 1
                else {
                    throw CommandFailure(message: "the server sent event \(envelope.sequence) out of migration \(migration)'s order", exitCode: 1)
                }
                events.append((envelope.sequence, recorded))
            }
            return (events, integrity)
        }
    }
}
