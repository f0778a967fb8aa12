import LockstepCore
import LockstepEngine
import LockstepStore
import LockstepWire
import Testing

/// Statuses travel as proto enums (issue 15: they were strings, and the CLI compared a node's with
/// "completed", which no status ever was). Every status has exactly one wire value and back, and a
/// value this build does not know reads as unknown, never as some other status.
@Suite struct StateViewTests {
    @Test func everyMigrationStatusHasOneWireValueAndBack() {
        let wire = MigrationStatus.allCases.map { Lockstep_V1_MigrationStatus($0) }
        #expect(Set(wire).count == MigrationStatus.allCases.count)
        #expect(!wire.contains(.unspecified))
        for status in MigrationStatus.allCases {
            #expect(MigrationStatus(Lockstep_V1_MigrationStatus(status)) == status)
            #expect(Lockstep_V1_MigrationStatus(status).name == status.rawValue)
        }
        // Every wire value but the zero one is a status this build knows.
        for value in Lockstep_V1_MigrationStatus.allCases where value != .unspecified { #expect(MigrationStatus(value) != nil, "\(value)") }
        #expect(MigrationStatus(.unspecified) == nil && MigrationStatus(.UNRECOGNIZED(99)) == nil)
        #expect(Lockstep_V1_MigrationStatus.UNRECOGNIZED(99).name == "unknown")
    }

    @Test func everyNodeStatusHasOneWireValueAndBack() {
        let known = NodeDisplayStatus.allCases.filter { $0 != .unknown }
        #expect(Set(known.map { Lockstep_V1_NodeStatus($0) }).count == known.count)
        for status in known {
            #expect(Lockstep_V1_NodeStatus(status) != .unspecified)
            #expect(NodeDisplayStatus(Lockstep_V1_NodeStatus(status)) == status)
            #expect(Lockstep_V1_NodeStatus(status).name == status.rawValue)
        }
        for value in Lockstep_V1_NodeStatus.allCases where value != .unspecified { #expect(NodeDisplayStatus(value) != .unknown, "\(value)") }
        #expect(Lockstep_V1_NodeStatus(NodeDisplayStatus.unknown) == .unspecified)
        #expect(NodeDisplayStatus(Lockstep_V1_NodeStatus.UNRECOGNIZED(99)) == .unknown)
    }

    @Test func theStateAtAPointShowsEachMigrationAsTheLiveAPIDoes() async throws {
        let coordinator = try await Coordinator.open(log: InMemoryEventLog())
        let user = CommandContext(actor: Actor(kind: "user", id: "alice"), triggeredBy: .user)
        let now = Instant(millisecondsSinceEpoch: 1_800_000_000_000)
        _ = try await coordinator.start(MigrationID("a"), plan: ExamplePlans.chain(length: 2, service: "orders"), context: user, now: now)
        _ = try await coordinator.start(MigrationID("b"), plan: ExamplePlans.chain(length: 1, service: "orders", name: "b"), context: user, now: now)
        let state = await coordinator.state
        let report = Lockstep_V1_StateAtResponse(state)
        #expect(report.sequence == state.lastSequence && report.digest == state.digest.hex)
        #expect(report.migrations == state.migrationsInOrder.map { Lockstep_V1_Migration($0, in: state) })
        #expect(report.migrations.map(\.status) == [.running, .running])
        // a holds orders and its first node is ready; b waits in line behind it.
        #expect(report.migrations[0].nodes.map(\.status) == [.ready, .pending])
        #expect(report.migrations[0].nodes[0].serviceLeases == .held)
        #expect(report.migrations[1].nodes[0].status == .waitingForServices && report.migrations[1].nodes[0].serviceLeases == .requested)
        #expect(report.serviceLeases.map(\.migrationID) == ["a"] && report.serviceQueue.map(\.migrationID) == ["b"])
        #expect(report.serviceQueue[0].sequence > 0)
    }
}
