import Foundation
import LockstepCore
import LockstepEngine
import LockstepTestSupport
import Testing

/// A random plan: a DAG of `count` nodes over three services, each node needing a random subset of
/// earlier ones, with random rollbacks, gates, retry policies and irreversible points.
func randomPlan(_ random: inout SeededGenerator) -> PlanSnapshot {
    let count = Int.random(in: 2...12, using: &random)
    let services = ["orders", "ledger", "payments"]
    var nodes: [NodeSpec] = []
    for index in 0..<count {
        let needs = (0..<index).filter { _ in Int.random(in: 0..<3, using: &random) == 0 }.map { NodeID("n\($0)") }
        let irreversible = Int.random(in: 0..<10, using: &random) == 0
        let gated = irreversible || Int.random(in: 0..<5, using: &random) == 0
        nodes.append(NodeSpec(
            id: NodeID("n\(index)"), services: [services[Int.random(in: 0..<3, using: &random)]],
            phase: [.expand, .dualWrite, .backfill, .verify, .live, .custom][Int.random(in: 0..<6, using: &random)], action: "act",
            needs: needs, retry: RetryPolicy(maxAttempts: UInt32.random(in: 1...3, using: &random), backoffInitialMillis: 1_000,
                                             backoffMaxMillis: 10_000, backoffMultiplier: 2),
            rollback: Int.random(in: 0..<10, using: &random) < 7 ? RollbackSpec(action: "undo") : nil,
            approval: gated ? ApprovalGate(minimum: UInt32.random(in: 1...2, using: &random)) : nil, irreversible: irreversible))
    }
    return PlanSnapshot(name: "random", version: 1, contentHash: "", services: services.map { ServiceSpec(name: $0, owners: ["\($0)-team"]) },
                        nodes: nodes).hashed()
}

@Suite struct RehearsalTests {
    func ledger() -> PlanSnapshot { ExamplePlans.ledgerSplit }

    @Test func theSameSeedGivesTheSameTimeline() async throws {
        var options = Rehearsal.Options()
        options.seed = 42
        options.failures = [NodeID("backfill-ledger"): 1]
        let first = try await Rehearsal(plan: ledger(), options: options).run()
        let second = try await Rehearsal(plan: ledger(), options: options).run()
        #expect(first.timeline == second.timeline)
        #expect(first.digest == second.digest)
        options.seed = 43
        #expect(try await Rehearsal(plan: ledger(), options: options).run().timeline != first.timeline)
    }

    @Test func exhaustedRetriesRollBackInReverseOrder() async throws {
        var options = Rehearsal.Options()
        options.failures = [NodeID("backfill-ledger"): 3]
        let outcome = try await Rehearsal(plan: ledger(), options: options).run()
        #expect(outcome.final.status == .rolledBack)
        let rolledBack = outcome.timeline.compactMap { entry -> String? in
            if case .stepCompleted(let completed) = entry.event, completed.kind == .rollback { return completed.node.rawValue }
            return nil
        }
        #expect(rolledBack == ["dual-write-orders", "expand-ledger-schema"])
    }

    @Test func aRejectedGateEndsInRollback() async throws {
        var options = Rehearsal.Options()
        options.rejections = [NodeID("switch-reads-payments")]
        let outcome = try await Rehearsal(plan: ledger(), options: options).run()
        #expect(outcome.final.status == .rolledBack)
        #expect(outcome.timeline.contains { if case .approvalRejected = $0.event { true } else { false } })
    }

    @Test func aDeadlineFiresOnTheVirtualClock() async throws {
        var plan = ledger()
        plan.nodes[2].deadlineMillis = 60_000  // backfill must be done a minute after start: it cannot be.
        let outcome = try await Rehearsal(plan: plan.hashed(), options: Rehearsal.Options()).run()
        #expect(outcome.final.status == .rolledBack)
        #expect(outcome.final.statusReason == "node backfill-ledger's deadline passed at \(Rehearsal.epoch.adding(milliseconds: 60_000))")
    }

    /// A hung step is ended by its start_to_close on the virtual clock, as on the server (issue 15).
    @Test func hungAttemptsAreTimedOutByStartToCloseAndRetried() async throws {
        var plan = ledger()
        plan.nodes[2].timeouts = Timeouts(startToCloseMillis: 12 * 3_600_000)  // backfill-ledger: 3 attempts
        var options = Rehearsal.Options()
        options.hangs = [NodeID("backfill-ledger"): 2]
        let outcome = try await Rehearsal(plan: plan.hashed(), options: options).run()
        let timedOut = outcome.timeline.compactMap { entry -> (Int64, StepFailed)? in
            if case .stepFailed(let failed) = entry.event, failed.startToCloseExceeded { return (entry.offsetMillis, failed) }
            return nil
        }
        #expect(timedOut.map(\.1.attempt) == [1, 2])
        #expect(outcome.final.status == .succeeded)
        // Each ended exactly 12 h after its lease.
        let leases = outcome.timeline.compactMap { entry -> Int64? in
            if case .stepLeased(let leased) = entry.event, leased.node == NodeID("backfill-ledger") { return entry.offsetMillis }
            return nil
        }
        #expect(zip(leases, timedOut).allSatisfy { $1.0 - $0 == 12 * 3_600_000 }, "\(leases) \(timedOut.map(\.0))")
        options.hangs = [NodeID("backfill-ledger"): 3]
        #expect(try await Rehearsal(plan: plan.hashed(), options: options).run().final.status == .rolledBack)
    }

    /// Lease expiry runs in the rehearsal as in the server (one timer policy, `Coordinator.tick`): an
    /// agent that dies after taking a step loses its lease one TTL later on the virtual monotonic clock,
    /// the loss is not counted (up to `agentsLostMax` per node), and the step is offered again at once.
    @Test func lostAgentsAreExpiredOnTheVirtualClockAndRetriedWithoutUsingAttempts() async throws {
        var plan = ledger()
        let backfill = NodeID("backfill-ledger")
        plan.nodes[2].timeouts = Timeouts(heartbeatMillis: 20_000)
        var options = Rehearsal.Options()
        options.losses = [backfill: 2]
        let outcome = try await Rehearsal(plan: plan.hashed(), options: options).run()
        #expect(outcome.final.status == .succeeded)
        #expect(outcome.digest == outcome.replayDigest)
        let failed = outcome.timeline.compactMap { entry -> (Int64, StepFailed)? in
            if case .stepFailed(let failed) = entry.event { return (entry.offsetMillis, failed) } else { return nil }
        }
        #expect(failed.map(\.1.agentLost) == [true, true])
        #expect(failed.allSatisfy { $0.1.node == backfill && $0.1.attempt == 1 }, "a lost agent's attempt is not counted")
        let leases = outcome.timeline.compactMap { entry -> (Int64, StepLeased)? in
            if case .stepLeased(let leased) = entry.event, leased.node == backfill { return (entry.offsetMillis, leased) } else { return nil }
        }
        #expect(leases.map(\.1.attempt) == [1, 1, 1])
        // Each expiry comes exactly one TTL after its lease, and the next lease at the same instant.
        #expect(zip(leases, failed).allSatisfy { $1.0 - $0.0 == 20_000 }, "\(leases.map(\.0)) \(failed.map(\.0))")
        #expect(zip(failed, leases.dropFirst()).allSatisfy { $0.0 == $1.0 })
        // Past the budget a loss counts: with one attempt (the plan's default) the fourth rolls back.
        options.losses = [backfill: CoreLimits.agentsLostMax + 1]
        plan.nodes[2].retry = RetryPolicy(maxAttempts: 1)
        let exhausted = try await Rehearsal(plan: plan.hashed(), options: options).run()
        #expect(exhausted.final.status == .rolledBack)
        #expect(exhausted.timeline.filter { if case .stepFailed(let failed) = $0.event { failed.agentLost } else { false } }.count
            == Int(CoreLimits.agentsLostMax))
    }
}

@Suite struct OrchestrationPropertyTests {
    /// Over random plans and outcomes: no node starts before its needs succeeded; rollback steps run in
    /// the reverse of completion order; replaying the log gives the live digest. A failure names its seed.
    /// CI runs 8 batches of 25 seeds; `LOCKSTEP_PROPERTY_BATCHES=N` runs more (the sweep before a release).
    static let batches = Int(ProcessInfo.processInfo.environment["LOCKSTEP_PROPERTY_BATCHES"] ?? "") ?? 8

    @Test(arguments: 0..<OrchestrationPropertyTests.batches)
    func invariantsHoldOverRandomPlans(batch: Int) async throws {
        var statuses: [MigrationStatus] = []
        var rollbackFailures = 0
        var rollbackSteps = 0
        defer {
            // The generator must reach both endings, or the properties are tested on nothing.
            #expect(statuses.contains(.succeeded) && statuses.contains(.rolledBack), "batch \(batch): \(statuses)")
            #expect(rollbackSteps > 0, "batch \(batch) ran no rollback step")
            #expect(rollbackFailures > 0, "batch \(batch) never failed a rollback step")
        }
        for seed in UInt64(batch * 25)..<UInt64(batch * 25 + 25) {
            await yieldToOtherTests()
            var random = SeededGenerator(seed: seed)
            let plan = randomPlan(&random)
            var options = Rehearsal.Options()
            options.seed = seed
            for node in plan.nodes where Int.random(in: 0..<4, using: &random) == 0 {
                options.failures[node.id] = UInt32.random(in: 1...3, using: &random)
            }
            for node in plan.nodes where node.approval != nil && Int.random(in: 0..<8, using: &random) == 0 {
                options.rejections.insert(node.id)
            }
            for node in plan.nodes where Int.random(in: 0..<6, using: &random) == 0 {
                options.rollbackFailures[node.id] = UInt32.random(in: 1...4, using: &random)
            }
            options.adversarialLeases = true
            let outcome = try await Rehearsal(plan: plan, options: options).run()
            statuses.append(outcome.final.status)
            #expect(outcome.final.status.isSettled, "seed \(seed)")
            #expect(outcome.digest == outcome.replayDigest, "seed \(seed): replay differs from the live state")

            var succeeded: Set<NodeID> = []
            var completionOrder: [NodeID] = []
            var rollbackOrder: [NodeID] = []
            var report: AbortReport?
            var completedAtAbort: [NodeID] = []
            var runningAtAbort: [NodeID] = []
            var running: [NodeID] = []
            for entry in outcome.timeline {
                switch entry.event {
                case .stepLeased(let leased) where leased.kind == .forward:
                    let needs = plan.node(leased.node)!.needs
                    #expect(needs.allSatisfy(succeeded.contains), "seed \(seed): \(leased.node) started before its needs \(needs)")
                    running.append(leased.node)
                case .stepCompleted(let completed) where completed.kind == .forward:
                    succeeded.insert(completed.node)
                    completionOrder.append(completed.node)
                    running.removeAll { $0 == completed.node }
                case .stepFailed(let failed) where failed.kind == .forward:
                    running.removeAll { $0 == failed.node }
                case .stepCompleted(let completed):
                    rollbackOrder.append(completed.node)
                case .stepFailed:
                    rollbackFailures += 1
                case .migrationAborted(let aborted):
                    report = aborted
                    completedAtAbort = completionOrder
                    runningAtAbort = plan.nodes.map(\.id).filter(running.contains)
                default:
                    break
                }
            }
            rollbackSteps += rollbackOrder.count
            guard let report else { continue }
            // An independent oracle for what the abort must roll back: abandoned steps that can be undone,
            // then completed nodes most recent first, up to the first completed irreversible node.
            var oracle = runningAtAbort.filter { plan.node($0)!.rollback != nil && !plan.node($0)!.irreversible }
            for id in completedAtAbort.reversed() {
                let spec = plan.node(id)!
                if spec.irreversible { break }
                if spec.rollback != nil { oracle.append(id) }
            }
            #expect(report.rollback == oracle, "seed \(seed): the abort planned \(report.rollback), expected \(oracle)")
            #expect(report.abandoned == runningAtAbort, "seed \(seed)")
            // Rollback steps ran exactly in the planned order: all of them when rolled back, a prefix when a rollback failed.
            if outcome.final.status == .rolledBack {
                #expect(rollbackOrder == report.rollback, "seed \(seed): rolled back \(rollbackOrder), planned \(report.rollback)")
            } else {
                #expect(Array(report.rollback.prefix(rollbackOrder.count)) == rollbackOrder, "seed \(seed)")
            }
        }
    }
}
