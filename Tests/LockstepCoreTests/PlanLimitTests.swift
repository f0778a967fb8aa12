import LockstepCore
import Testing

/// Every plan limit, just past its value (refused, with the sentence) and at it (accepted).
@Suite struct PlanLimitTests {
    func start(_ plan: PlanSnapshot) -> Decision {
        MigrationState.decide(nil, .start(id: migrationID, plan: plan), now: t(0))
    }

    func accepted(_ plan: PlanSnapshot) -> Bool {
        if case .accepted = start(plan) { return true }
        return false
    }

    @Test func servicesPerNode() {
        var over = plan
        let extra = (0..<CoreLimits.nodeServicesMax).map { ServiceSpec(name: "s\($0)", owners: ["t"]) }
        over.services += extra
        over.nodes[0].services = ["orders"] + extra.map(\.name)
        #expect(start(over) == .rejected(.invalidPlan("node expand names 17 services; the limit is 16")))
        over.nodes[0].services.removeLast()
        #expect(accepted(over))
    }

    @Test func needsPerNode() {
        var over = plan
        over.nodes[0].needs = (0...CoreLimits.nodeNeedsMax).map { NodeID("n\($0)") }
        #expect(start(over) == .rejected(.invalidPlan("node expand needs 65 nodes; the limit is 64")))
    }

    @Test func paramsBytes() {
        var over = plan
        let filler = String(repeating: "x", count: CoreLimits.paramsBytesMax - 8)
        over.nodes[0].paramsJSON = #"{"a":"\#(filler)"}"#  // exactly the limit
        #expect(over.nodes[0].paramsJSON.utf8.count == CoreLimits.paramsBytesMax)
        #expect(accepted(over))
        over.nodes[0].paramsJSON = #"{"a":"\#(filler)x"}"#
        #expect(start(over) == .rejected(.invalidPlan("node expand has 65537 bytes of params; the limit is 65536 bytes")))
    }

    @Test func ownerGroups() {
        var over = plan
        over.owners = (0..<CoreLimits.ownerGroupsMax).map { "g\($0)" }
        #expect(accepted(over))
        over.owners.append("one-more")
        #expect(start(over) == .rejected(.invalidPlan("too many owner groups; the limit is 32 per plan or service")))
        var gate = plan
        gate.nodes[0].approval = ApprovalGate(minimum: 1, from: (0...CoreLimits.ownerGroupsMax).map { "g\($0)" })
        #expect(start(gate) == .rejected(.invalidPlan("node expand's gate names 33 groups; the limit is 32")))
    }

    @Test func descriptionBytes() {
        var over = plan
        over.description = String(repeating: "d", count: CoreLimits.descriptionBytesMax)
        #expect(accepted(over))
        over.description += "d"
        #expect(start(over) == .rejected(.invalidPlan("the description is 4097 bytes; the limit is 4096 bytes")))
    }

    @Test func versionsPerPlan() {
        var log = LogState()
        let metadata = EventMetadata(recordedAt: t(0), actor: Actor(kind: "user", id: "alice"), triggeredBy: .user)
        for version in 1...UInt64(CoreLimits.planVersionsMax) {
            var applied = plan
            applied.version = version
            applied.contentHash = "h\(version)"
            log.evolve(.plan(RecordedPlanEvent(plan: plan.name, streamVersion: version, metadata: metadata, event: .planApplied(applied))),
                       sequence: version)
        }
        var next = plan
        next.contentHash = "new"
        #expect(log.decideApply(next) == .rejected(.invalidArgument("plan orders-split has 10000 versions; the limit is 10000")))
        // The same content as the newest version is still a no-op, limit or not.
        next.contentHash = "h\(CoreLimits.planVersionsMax)"
        #expect(log.decideApply(next) == .unchanged(version: UInt64(CoreLimits.planVersionsMax)))
    }
}
