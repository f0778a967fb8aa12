import Foundation
import LockstepCore
import LockstepEngine
import LockstepStore
import Testing

/// `history explain` and `history diff` (issue 21) against a golden history, with literal expected output.
@Suite struct HistoryExplainDiffTests {
    static func log() throws -> SQLiteEventLog {
        let copy = try copyDatabase("\(GoldenHistoryTests.directory)/scenario-v7.sqlite")
        return try SQLiteEventLog(path: copy + "/events.sqlite", mode: .readOnly)
    }

    static func explain(_ migration: String, _ node: String? = nil) async throws -> [String] {
        let events = try await History.migrationEvents(MigrationID(migration), in: try log())
        return try HistoryExplain.explain(events, node: node.map(NodeID.init)).lines
    }

    @Test func aMetricRollbackIsExplainedByItsAnalysisSamplesAndStage() async throws {
        #expect(try await Self.explain("canary-1") == [
            "canary-1 is rolled_back: the analysis of route failed at stage 100 (error_rate) (plan canary@1)",
            "  #180 2023-11-14T23:40:05.000Z agent:ledger-agent: migration rolled back",
            "  ← #172 2023-11-14T23:40:01.000Z coordinator:lockstep: abort (metric): the analysis of route failed at stage 100 (error_rate); roll back [route, deploy]; nothing to undo -; cannot undo -",
            "  ← #171 2023-11-14T23:40:01.000Z coordinator:lockstep: route: stage 3 analysis fail → rollback; error_rate mean 0.05 of 2 (pass ≤ 0.01, marginal ≤ 0.02): fail",
            "  ← #170 2023-11-14T23:38:59.000Z agent:prober: 2 metric sample(s) of route at stage 3, the newest: route: error_rate = 0.06 from prober (stage 3)",
            "  ← #168 2023-11-14T23:38:57.000Z agent:ledger-agent: route: stage 3 set; bakes until 2023-11-14T23:39:57.000Z",
            "  ← #144 2023-11-14T23:36:41.000Z user:alice: migration canary-1 started by alice: plan canary@1, 2 nodes",
        ])
    }

    @Test func aRejectedGateAFailedCheckAndExhaustedRetriesAreEachTheCause() async throws {
        let rejected = try await Self.explain("ledger-split-rejected")
        #expect(rejected.prefix(3) == [
            "ledger-split-rejected is aborting: gate rejected (plan ledger-split@1)",
            "  #128 2023-11-14T22:30:31.000Z user:alice: abort (operator): gate rejected; roll back [backfill-ledger, dual-write-orders, expand-ledger-schema]; nothing to undo [verify-ledger]; cannot undo -",
            "  ← #126 2023-11-14T22:30:30.000Z user:bob: switch-reads-payments: rejected by bob (p99 doubled)",
        ])
        let check = try await Self.explain("c-2")
        #expect(check[3] == "  ← #243 2026-04-06T18:27:52.000Z agent:ledger-agent: step-0: check backup-verified fail: the check reported failure: backup-verified exited with status 1: no backup since Tuesday")
        let retries = try await Self.explain("index-rebuild-1")
        #expect(retries == [
            "index-rebuild-1 is rolled_back: node step-0 failed after 1 attempt: index corrupt (plan chain-2@1)",
            "  #16 2023-11-14T22:13:25.000Z agent:ledger-agent: migration rolled back",
            "  ← #15 2023-11-14T22:13:25.000Z agent:ledger-agent: abort (retries_exhausted): node step-0 failed after 1 attempt: index corrupt; roll back -; nothing to undo -; cannot undo -; failed [step-0]",
            "  ← #14 2023-11-14T22:13:25.000Z agent:ledger-agent: step-0: attempt 1 failed: index corrupt",
            "  ← #10 2023-11-14T22:13:23.000Z user:alice: migration index-rebuild-1 started by alice: plan chain-2@1, 2 nodes",
        ])
    }

    @Test func aNodesChainRunsFromItsLastEventBackToTheStart() async throws {
        let lines = try await Self.explain("ledger-split-undo", "switch-reads-payments")
        #expect(lines.first == "switch-reads-payments of ledger-split-undo is rolled_back after 1 attempt")
        #expect(lines.map { $0.split(separator: " ").first { $0.hasPrefix("#") } ?? "" } == [
            "", "#89", "#87", "#86", "#85", "#84", "#83", "#82", "#81", "#60",
        ])
        #expect(lines.contains("  ← #81 2023-11-14T22:30:10.000Z user:bob: switch-reads-payments: approved by bob (ok)"))
        #expect(throws: HistoryExplain.Failure.self) {
            try HistoryExplain.explain([], node: nil)
        }
    }

    @Test func aDiffNamesEveryChangeBetweenTwoPoints() async throws {
        let log = try Self.log()
        // One fold, copied at the first point (what the API and the CLI use), equal to two replays.
        let (at79, at90) = try await History.states(log, from: 79, to: 90)
        #expect(at79 == (try await History.replay(log, through: 79, keepingSettled: true)))
        #expect(at90 == (try await History.replay(log, through: 90, keepingSettled: true)))
        await #expect(throws: EventLogError.self) { _ = try await History.states(log, from: 90, to: 79) }
        #expect(HistoryDiff.changes(from: at79, to: at90) == [
            "~ migration ledger-split-undo: running → aborting (error budget burning)",
            "~ ledger-split-undo node verify-ledger: succeeded → rolled_back",
            "~ ledger-split-undo node switch-reads-payments: awaiting_approval → rolled_back; attempts 0 → 1; rollback attempts 0 → 1; approved by bob",
            "~ ledger-split-undo node contract-orders: pending → skipped",
            "~ service ledger: held by ledger-split-undo/verify-ledger → held by ledger-split-undo/backfill-ledger",
        ])
        let at180 = try await History.replay(log, through: 180, keepingSettled: true)
        let at210 = try await History.replay(log, through: 210, keepingSettled: true)
        let later = HistoryDiff.changes(from: at180, to: at210)
        #expect(later.prefix(4) == ["+ plan chain-1@1", "+ plan chain-2@5", "+ plan office-payments@1",
                                     "+ migration billing-1 (plan chain-2@5, started by alice): running"])
        #expect(later.contains("~ orders-1 node step-0: - → succeeded; attempts 0 → 1; break-glass (freeze)"))
        #expect(later.last == "~ service pricing: held by canary-1/deploy → free")
        // One migration only, and nothing between a point and itself.
        #expect(HistoryDiff.changes(from: at180, to: at210, migration: MigrationID("w-1")) == [
            "+ migration w-1 (plan office-payments@1, started by alice): running", "~ w-1 node step-0: - → waiting_for_services",
        ])
        #expect(HistoryDiff.changes(from: at210, to: at210).isEmpty)
    }
}
