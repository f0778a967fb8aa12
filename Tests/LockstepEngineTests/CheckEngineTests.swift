import LockstepCore
import LockstepEngine
import LockstepStore
import Testing

/// April 2026, after the window scenario, plus `seconds`.
func april2026(_ seconds: Int64) -> Instant { Instant(millisecondsSinceEpoch: 1_775_500_000_000 + seconds * 1_000) }

/// A one-node chain on `service` whose node requires `check` first.
func checkedPlan(_ name: String, service: String, _ check: CheckSpec) -> PlanSnapshot {
    var plan = ExamplePlans.chain(length: 1, service: service, name: name)
    plan.nodes[0].checks = [check]
    return plan.hashed()
}

/// A history with preflight checks, behind the golden history scenario-v7:
///
/// - c-1 requires replication-lag ≤ 5 (fresh for 10 minutes, recheck after a minute): the first run
///   reports 42 and blocks the node; a minute later it reports 1.2, and the step runs.
/// - c-2 requires backup-verified with `on_fail: rollback`: its handler fails, and the migration rolls back.
func recordCheckScenario(on coordinator: Coordinator) async throws {
    let step0 = NodeID("step-0")
    let lag = CheckSpec(name: "replication-lag", paramsJSON: #"{"database":"ledger"}"#, pass: .max(5_000_000), freshForMillis: 600_000, recheckMillis: 60_000)
    let first = MigrationID("c-1"), second = MigrationID("c-2")
    _ = try await coordinator.start(first, plan: checkedPlan("lagged", service: "ledger-db", lag), context: user, now: april2026(0))
    func lease(_ id: MigrationID, at seconds: Int64) async throws -> StepLeased? {
        let result = try await coordinator.execute(.leaseStep(node: step0, agent: "db-agent", ttlMillis: 10_000), migration: id, context: agent, now: april2026(seconds))
        if case .stepLeased(let leased) = result.events.first?.event { return leased }
        return nil
    }
    let run = try #require(try await lease(first, at: 1))
    _ = try await coordinator.execute(.completeStep(node: step0, token: run.token, check: CheckReport(ok: true, valueMicros: 42_000_000, evidence: "replica-2 is 42 s behind")),
                                      migration: first, context: agent, now: april2026(2))
    await #expect(throws: CommandError.rejected(.checkFailed(step0, check: "replication-lag", evidence: "42 is above 5: replica-2 is 42 s behind", recheckAt: april2026(62)))) {
        try await coordinator.execute(.leaseStep(node: step0, agent: "db-agent", ttlMillis: 10_000), migration: first, context: agent, now: april2026(30))
    }
    let again = try #require(try await lease(first, at: 62))
    _ = try await coordinator.execute(.completeStep(node: step0, token: again.token, check: CheckReport(ok: true, valueMicros: 1_200_000, evidence: "1.2 s")),
                                      migration: first, context: agent, now: april2026(63))
    let step = try #require(try await lease(first, at: 64))
    _ = try await coordinator.execute(.completeStep(node: step0, token: step.token), migration: first, context: agent, now: april2026(65))

    var backup = CheckSpec(name: "backup-verified", pass: .ok, freshForMillis: 3_600_000)
    backup.onFail = .rollback
    _ = try await coordinator.start(second, plan: checkedPlan("backed-up", service: "vault-db", backup), context: user, now: april2026(70))
    let check = try #require(try await lease(second, at: 71))
    _ = try await coordinator.execute(.failStep(node: step0, token: check.token, reason: "backup-verified exited with status 1: no backup since Tuesday", retryable: false),
                                      migration: second, context: agent, now: april2026(72))
}

@Suite struct CheckEngineTests {
    @Test func aHistoryWithChecksReplaysToTheLiveStateAndSaysWhatHappened() async throws {
        let log = InMemoryEventLog()
        let coordinator = try await Coordinator.open(log: log, snapshotIntervalEvents: 0)
        try await recordCheckScenario(on: coordinator)
        let replayed = try await History.replay(log)
        #expect(replayed.digest == (await coordinator.digest))
        let first = try #require(try await coordinator.readMigration(MigrationID("c-1")))
        #expect(first.status == .succeeded)
        #expect(first.node(NodeID("step-0"))?.checks.map(\.outcome) == [.pass])
        let second = try #require(try await coordinator.readMigration(MigrationID("c-2")))
        #expect(second.status == .rolledBack)
        #expect(second.statusReason == "check backup-verified of step-0 failed: the check reported failure: backup-verified exited with status 1: no backup since Tuesday")
    }

    @Test func aRehearsalRunsChecksFromTheirTracesAndWaitsForTheRecheck() async throws {
        let lag = CheckSpec(name: "replication-lag", pass: .max(5_000_000), freshForMillis: 600_000, recheckMillis: 120_000)
        var options = Rehearsal.Options()
        options.checks = [NodeID("step-0"): ["replication-lag": [CheckReport(ok: true, valueMicros: 42_000_000), CheckReport(ok: true, valueMicros: 3_000_000)]]]
        let outcome = try await Rehearsal(plan: checkedPlan("lagged", service: "ledger-db", lag), options: options).run()
        #expect(outcome.final.status == .succeeded)
        let reported = outcome.timeline.compactMap { entry -> CheckReported? in if case .checkReported(let r) = entry.event { r } else { nil } }
        #expect(reported.map(\.outcome) == [.fail, .pass])
        #expect(reported[1].at.millisecondsSinceEpoch - reported[0].at.millisecondsSinceEpoch >= 120_000, "the second run waited for the recheck")
        #expect(outcome.digest == outcome.replayDigest)
    }
}
