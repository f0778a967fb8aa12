import LockstepClient
import LockstepCore
import LockstepEngine
import LockstepPlan
import LockstepWire
import Synchronization
import Testing

/// One engine, two shells (issue 15): the server (a real log, real clocks, agents and an approver over
/// gRPC) and the rehearsal (an in-memory log, a virtual clock, simulated agents) record the same events,
/// in the same order, for the same plan and the same things going wrong. Times, agents and tokens'
/// owners differ; what happened, to which node, in which order, must not.
@Suite struct ShellAgreementTests {
    static let plan = """
        name: agreement
        services:
          orders: { owners: [orders-team] }
          ledger: { owners: [ledger-team] }
        nodes:
          - id: expand
            service: orders
            phase: expand
            action: apply-schema
            retry: { max_attempts: 2, backoff: 1s }
            rollback: { action: drop-schema }
          - id: switch
            service: ledger
            phase: live
            action: switch-reads
            needs: [expand]
            approvals: { minimum: 1 }
            rollback: { action: switch-reads-back }
          - id: contract
            service: orders
            phase: contract
            action: drop-old-column
            needs: [switch]
        """

    /// What an event says happened, without when, by whom, or under which lease id.
    static func what(_ event: MigrationEvent) -> String {
        switch event {
        case .stepLeased(let leased): "step_leased \(leased.node) \(leased.kind)"
        case .stepCompleted(let completed): "step_completed \(completed.node)"
        case .stepFailed(let failed): "step_failed \(failed.node) retryable=\(failed.retryable)"
        case .approvalGranted(let granted): "approval_granted \(granted.node)"
        case .approvalRejected(let rejected): "approval_rejected \(rejected.node)"
        default: event.typeName
        }
    }

    /// Approved: expand's first attempt fails (retryable), then all succeed. Rejected: the approver
    /// rejects the gate, the operator aborts, and what completed is rolled back.
    @Test(arguments: [false, true]) func theServerAndTheRehearsalRecordTheSameEvents(rejected: Bool) async throws {
        let snapshot = try #require(PlanFile.lint(yaml: Self.plan).plan)
        var options = Rehearsal.Options()
        options.failures = [NodeID("expand"): 1]
        if rejected { options.rejections = [NodeID("switch")] }
        let rehearsed = try await Rehearsal(plan: snapshot, options: options).run()
        #expect(rehearsed.final.status == (rejected ? .rolledBack : .succeeded))
        let rehearsal = rehearsed.timeline.map { Self.what($0.event) }

        // The server: the same plan, the same failure, an agent per service, an approver and an
        // operator, over gRPC.
        let served = try await withServedRun(rejecting: rejected)
        #expect(served == rehearsal, "server:\n\(served.joined(separator: "\n"))\nrehearsal:\n\(rehearsal.joined(separator: "\n"))")
        #expect(served.contains("step_failed expand retryable=true") && served.last == "service_leases_released")
        #expect(served.contains("step_leased expand rollback") == rejected)
    }

    func withServedRun(rejecting: Bool) async throws -> [String] {
        let recorded = Mutex<[String]>([])
        try await InProcessServerTests.withServer { grpc, _ in
            try await LockstepClient.connect(to: grpc, token: "as:alice") { alice in
                _ = try await alice.applyPlan(.with { $0.planYaml = Self.plan })
                _ = try await alice.startMigration(.with { $0.plan = "agreement"; $0.migrationID = "m1" })
                var failedOnce = false
                for _ in 0..<100 {
                    let migration = try await alice.migration(.with { $0.migrationID = "m1" })
                    if MigrationStatus(migration.status)?.isSettled ?? true { break }
                    for node in migration.nodes where node.status == .awaitingApproval {
                        _ = try await LockstepClient.connect(to: grpc, token: "as:bob") { bob in
                            let decision = Lockstep_V1_GateDecisionRequest.with { $0.migrationID = "m1"; $0.nodeID = node.nodeID; $0.comment = "not now" }
                            return rejecting ? try await bob.reject(decision) : try await bob.approve(decision)
                        }
                    }
                    // A rejected gate pauses the migration: the operator aborts it.
                    if migration.status == .paused && migration.nodes.contains(where: { $0.status == .rejected }) {
                        _ = try await alice.abort(.with { $0.migrationID = "m1"; $0.reason = "the gate was rejected" })
                        continue
                    }
                    for service in ["orders", "ledger"] {
                        let answer = try await alice.poll(.with { $0.service = service; $0.agentID = "\(service)-agent"; $0.waitMs = 200 })
                        guard answer.hasStep else { continue }
                        let step = answer.step
                        if step.nodeID == "expand" && !failedOnce {
                            failedOnce = true
                            _ = try await alice.fail(.with { $0.leaseID = step.leaseID; $0.fencingToken = step.fencingToken; $0.reason = "lock timeout"; $0.retryable = true })
                        } else {
                            _ = try await alice.complete(.with { $0.leaseID = step.leaseID; $0.fencingToken = step.fencingToken })
                        }
                    }
                }
                let events = try await alice.events(.with { $0.stream = "migration/m1"; $0.pageSize = 1_000 }).events
                let whats = try events.map { envelope -> String in
                    guard case .migration(let recorded) = try EventRecordCodec.domainRecord(envelope.record) else { return "not a migration event" }
                    return Self.what(recorded.event)
                }
                recorded.withLock { $0 = whats }
            }
        }
        return recorded.withLock { $0 }
    }
}
