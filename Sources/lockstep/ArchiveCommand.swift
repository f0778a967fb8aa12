import ArgumentParser
import Foundation
import LockstepCore
import LockstepEngine
import LockstepPostgres
import LockstepStore
import LockstepWebhooks
import Logging

extension HistoryCommand {
    struct Archive: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Move the oldest settled history out of the live log into a verifiable archive segment.",
            discussion: """
                Archives the events before --before (a sequence, or an RFC 3339 time: the events recorded \
                before it) from the log itself (--data DIR with the coordinator stopped, or --store \
                postgres://… while coordinators run). The segment ends at a signed checkpoint (verified with \
                --public-key) and only where every migration that started before it has settled and every \
                webhook has delivered; the cut moves back to the latest such point and says why. The segment \
                is written, synced and verified before anything is removed; the live log then starts after \
                the segment's last event, with the state folded through it. Verify and replay the whole \
                history with `history verify|replay --archive SEGMENT … --data DIR`. Exits 1 when nothing \
                can be archived (naming why), 2 when the log or a file cannot be used.
                """)

        @OptionGroup(title: "The log itself") var local: StoreOptions
        @Option(help: "Archive the events before this point: a sequence, or an RFC 3339 time.") var before: HistoryPointArgument
        @Option(help: "The archive segment to write (never over an existing file).") var to: String
        @Option(help: "The keys file the checkpoints are verified with (`lockstep keys show`).") var publicKey: String
        @Option(help: "Also use (and put in the segment) the signed checkpoints kept in DIR/checkpoints.ndjson.") var checkpoints: String?
        @Option(help: "Most events one segment holds.") var eventsMax: UInt64 = HistoryArchive.segmentEventsMax
        @Flag(help: "Say where the cut would fall and what would move, and change nothing.") var dryRun = false

        func run() async throws {
            try await reportingFailures {
                guard let location = try local.location(environment: false) else {
                    throw CommandFailure(message: "archival works on the log itself: give --data DIR (the coordinator stopped) or --store postgres://…", exitCode: 64)
                }
                guard eventsMax > 0 else { throw CommandFailure(message: "--events-max must be at least 1", exitCode: 64) }
                let keys: CheckpointKeys
                do { keys = try CheckpointKeys.load(publicKey) } catch { throw CommandFailure(message: String(describing: error), exitCode: 2) }
                var elsewhere: [Checkpoint] = []
                if let checkpoints {
                    do { elsewhere = try CheckpointFiles.load(directory: checkpoints).checkpoints.map(\.checkpoint) } catch {
                        throw CommandFailure(message: String(describing: error), exitCode: 2)
                    }
                }
                guard dryRun || !FileManager.default.fileExists(atPath: to) else {
                    throw CommandFailure(message: "\(to) exists; a segment is never written over a file", exitCode: 2)
                }
                let before: HistoryArchive.Before = self.before.point.timeMs > 0
                    ? .time(Instant(millisecondsSinceEpoch: self.before.point.timeMs)) : .sequence(self.before.point.sequence)
                try await withArchivableLog(location) { log, cursors in
                    // Unreadable cursors are a refusal: what a webhook has yet to deliver must not be archived.
                    let delivered: [String: UInt64]
                    do { delivered = try await cursors?.read() ?? [:] } catch {
                        throw CommandFailure(message: "cannot read the webhook cursors, so nothing was archived: \(error)", exitCode: 2)
                    }
                    let plan: HistoryArchive.Plan
                    do {
                        plan = try await HistoryArchive.plan(log, before: before, keys: keys, elsewhere: elsewhere, delivered: delivered, eventsMax: eventsMax)
                    } catch let error as CheckpointError {
                        throw CommandFailure(message: error.description, exitCode: 1)
                    }
                    for why in plan.heldBack { FileHandle.standardError.write(Data("note: the cut moved back: \(why)\n".utf8)) }
                    let what = "events \(plan.base.sequence + 1) to \(plan.cut.sequence) (\(counted(plan.events, "event")), \(counted(plan.migrations.count, "settled migration")))"
                    if dryRun {
                        print("would archive \(what) to \(to), ending at the checkpoint signed at \(plan.checkpoint.signedAt) with key \(plan.checkpoint.keyID)")
                        return
                    }
                    let outcome: HistoryArchive.Outcome
                    do {
                        outcome = try await HistoryArchive.archive(log, plan: plan, to: to, keys: keys, checkpointsDirectory: checkpoints)
                    } catch let error as CheckpointError {
                        throw CommandFailure(message: error.description, exitCode: 2)
                    }
                    print("archived \(what) to \(to), with \(counted(outcome.checkpointsInSegment, "checkpoint")); the live log now starts after event \(plan.cut.sequence)")
                    print("segment head: \(plan.cut.sequence) \(plan.cut.chainHash.hex)")
                }
            }
        }
    }
}

/// Runs `body` on the log at `location` opened for writing (it must exist) with the webhook cursors kept
/// beside it, if any: SQLite only while no coordinator has the data directory open.
func withArchivableLog<Result>(_ location: StoreOptions.Location, _ body: (any EventLog, (any WebhookCursors)?) async throws -> Result) async throws -> Result {
    switch location {
    case .sqlite(let directory):
        guard let path = location.databasePath, FileManager.default.fileExists(atPath: path) else {
            throw CommandFailure(message: "no event log at \(location.databasePath ?? directory); check --data", exitCode: 2)
        }
        let log: SQLiteEventLog
        do { log = try SQLiteEventLog(path: path) } catch {
            throw CommandFailure(message: "cannot open \(path) for archival (stop the coordinator that has it open first): \(error)", exitCode: 2)
        }
        let cursors = URL(fileURLWithPath: directory).appendingPathComponent("webhooks.cursor.json").path
        return try await body(log, FileManager.default.fileExists(atPath: cursors) ? WebhookCursorFile(path: cursors) : nil)
    case .postgres(let address, let password):
        return try await withPostgresLog(address, password: password, create: false) { log in
            try await body(log, PostgresWebhookCursors(client: log.client))
        }
    }
}
