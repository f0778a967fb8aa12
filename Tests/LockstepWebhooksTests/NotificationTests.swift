import Foundation
import LockstepCore
import LockstepEngine
import LockstepStore
import LockstepWebhooks
import Testing

/// Which notifications a log makes (docs/webhooks.md), read from the golden histories the engine's tests keep.
@Suite struct NotificationTests {
    static let golden = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("LockstepEngineTests/Golden").path

    /// Every notification of a golden history, derived from the empty state on.
    static func notifications(_ history: String) async throws -> [Notice] {
        let directory = NSTemporaryDirectory() + "notifications-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: "\(golden)/\(history).sqlite", toPath: directory + "/events.sqlite")
        let log = try SQLiteEventLog(path: directory + "/events.sqlite", mode: .readOnly)
        var deriver = NotificationDeriver(state: LogState())
        var notes: [Notice] = []
        var after: UInt64 = 0
        while true {
            let page = try await log.read(after: after, limit: 500)
            guard let last = page.last else { break }
            for stored in page { notes += deriver.take(try History.check(stored, against: deriver.state), sequence: stored.sequence) }
            after = last.sequence
        }
        return notes
    }

    @Test func aGoldenHistorysNotificationsAreTheseExactly() async throws {
        let notes = try await Self.notifications("scenario-v7")
        #expect(notes.map(\.id) == [
            "15-rollback_started", "16-migration_rolled_back", "18-migration_paused",
            "38-approval_needed-switch-reads-payments", "44-approval_needed-contract-orders", "51-migration_succeeded",
            "57-rollback_started", "58-migration_rolled_back",
            "79-approval_needed-switch-reads-payments", "85-rollback_started", "103-migration_rolled_back",
            "124-approval_needed-switch-reads-payments", "127-migration_paused", "128-rollback_started",
            "135-rollback_started", "136-migration_rolled_back",
            "163-migration_paused", "171-analysis_failed-route", "172-rollback_started", "180-migration_rolled_back",
            "190-freeze_started", "198-migration_succeeded", "200-freeze_started", "201-migration_paused",
            "219-migration_succeeded", "224-migration_succeeded",
            "231-check_failed-step-0", "236-migration_succeeded",
            "243-check_failed-step-0", "244-rollback_started", "245-migration_rolled_back",
        ])
        let gate = try #require(notes.first { $0.id == "79-approval_needed-switch-reads-payments" })
        #expect(gate.migration == "ledger-split-undo" && gate.plan == "ledger-split" && gate.planVersion == 1 && gate.node == "switch-reads-payments")
        #expect(gate.summary == "ledger-split-undo: switch-reads-payments awaits approval (0 of 1)")
        #expect(gate.command == "lockstep migration approve ledger-split-undo switch-reads-payments")
        #expect(gate.consolePath == "/ui#/migration/ledger-split-undo")
        let check = try #require(notes.first { $0.id == "231-check_failed-step-0" })
        #expect(check.summary == "c-1: check replication-lag of step-0 failed; the node waits for the check to pass")
        #expect(check.evidence.contains("replication-lag fail"), "\(check.evidence)")
        let lineStop = try #require(notes.first { $0.id == "201-migration_paused" })
        #expect(lineStop.command == "lockstep line resume stop-1")
        let freeze = try #require(notes.first { $0.id == "190-freeze_started" })
        #expect(freeze.migration.isEmpty && freeze.command == "lockstep freeze end f-orders" && freeze.actor == "user:alice")
        let analysis = try #require(notes.first { $0.id == "171-analysis_failed-route" })
        #expect(analysis.evidence.contains("error_rate mean"), "\(analysis.evidence)")
    }

    @Test func theSameLogGivesTheSameNotificationsFromAnyStartingPoint() async throws {
        // A dispatcher that starts at sequence 100 (a restart's cursor) derives what a whole run derives from there.
        let whole = try await Self.notifications("scenario-v7")
        let directory = NSTemporaryDirectory() + "notifications-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: "\(Self.golden)/scenario-v7.sqlite", toPath: directory + "/events.sqlite")
        let log = try SQLiteEventLog(path: directory + "/events.sqlite", mode: .readOnly)
        var deriver = NotificationDeriver(state: try await History.replay(log, through: 100))
        var later: [Notice] = []
        for stored in try await log.read(after: 100, limit: 1_000) {
            later += deriver.take(try History.check(stored, against: deriver.state), sequence: stored.sequence)
        }
        #expect(later == whole.filter { $0.sequence > 100 })
    }
}
