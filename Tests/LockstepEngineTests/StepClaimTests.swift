import LockstepCore
@testable import LockstepEngine
import LockstepStore
import LockstepWire
import Synchronization
import Testing

/// A step an append readies is leased, in that append, to a poll parked on its service (the claim;
/// CoordinatorMachine+Claims): the woken poll needs no commit of its own.
@Suite struct StepClaimTests {
    static let agentMetadata = EventMetadata(recordedAt: t(5), actor: Actor(kind: "agent", id: "orders-agent"), triggeredBy: .agent)
    static let first = NodeID("step-0")

    /// The machine offers the step a grant readies, decides each claim's lease on the migration as the
    /// grant leaves it, and appends the accepted lease with the grant; a claim it cannot lease is answered nil.
    @Test func aStepReadiedByAGrantIsOfferedAndTheClaimsLeaseJoinsItsAppend() throws {
        // Without offers (a machine nobody claims for), the grant is appended alone.
        var plain = CoordinatorMachineTests.running()
        let grant = Command.serviceLeases(.grant(migration: CoordinatorMachineTests.a, node: Self.first, through: plain.state.lastSequence))
        guard case .tell(3, .append(let alone))? = plain.handle(.command(3, grant, metadata: CoordinatorMachineTests.metadata, now: t(5))).first else {
            Issue.record("a machine that offers nothing did not just append"); return
        }

        var machine = CoordinatorMachineTests.running()
        machine.offersSteps = true
        let offered = machine.handle(.command(3, grant, metadata: CoordinatorMachineTests.metadata, now: t(5)))
        guard case .tell(3, .claimFor(let offers))? = offered.first, offered.count == 1 else { Issue.record("\(offered)"); return }
        #expect(offers.map(\.node) == [Self.first] && offers.map(\.service) == ["orders"] && offers.map(\.migration) == [CoordinatorMachineTests.a])
        // Two polls claim it: the first gets the lease, the second nothing (the step is leased).
        let claims = ["a1", "a2"].map { CoordinatorMachine.StepClaimed(offer: 0, agent: $0, holder: "orders-agent", ttlMillis: 30_000, metadata: Self.agentMetadata) }
        let told = machine.handle(.claimed(3, claims))
        guard case .tell(3, .append(let request))? = told.first, told.count == 1 else { Issue.record("\(told)"); return }
        #expect(request.records.count == alone.records.count + 1 && Array(request.records.prefix(alone.records.count)) == alone.records)
        #expect(request.expectedVersion == alone.expectedVersion)
        // Nothing is folded before the acknowledgement.
        #expect(machine.state.migrations[CoordinatorMachineTests.a]?.node(Self.first)?.lease == nil)
        let firstSequence = machine.state.lastSequence + 1
        let receipt = AppendReceipt(firstSequence: firstSequence, lastSequence: firstSequence + UInt64(request.records.count) - 1,
                                    streamVersion: request.expectedVersion + UInt64(request.records.count))
        let done = machine.handle(.appended(3, receipt, nanos: 0))
        guard case .changed(let change)? = done.first, case .tell(3, .performed(let performed))? = done.dropFirst().first else { Issue.record("\(done)"); return }
        // The lease is answered apart from the command's own events; watchers are told of every event.
        #expect(performed.claims.count == 2 && performed.claims[1] == nil)
        guard case .stepLeased(let lease)? = performed.claims[0]?.event else { Issue.record("\(performed.claims)"); return }
        #expect(lease.agent == "a1" && lease.holder == "orders-agent" && lease.node == Self.first)
        #expect(performed.claims[0]?.metadata == Self.agentMetadata && performed.claims[0]?.streamVersion == receipt.streamVersion)
        #expect(!performed.result.events.contains { if case .stepLeased = $0.event { true } else { false } })
        #expect(performed.result.events.count == alone.records.count)
        #expect(change.events.count == request.records.count)
        let node = try #require(machine.state.migrations[CoordinatorMachineTests.a]?.node(Self.first))
        #expect(node.lease?.agent == "a1" && node.serviceLeases.isHeld)
    }

    /// Nobody claims: the grant is appended alone, as without offers.
    @Test func anOfferNobodyClaimsAppendsTheCommandAlone() {
        var machine = CoordinatorMachineTests.running()
        machine.offersSteps = true
        let grant = Command.serviceLeases(.grant(migration: CoordinatorMachineTests.a, node: Self.first, through: machine.state.lastSequence))
        _ = machine.handle(.command(3, grant, metadata: CoordinatorMachineTests.metadata, now: t(5)))
        let told = machine.handle(.claimed(3, []))
        guard case .tell(3, .append(let request))? = told.first else { Issue.record("\(told)"); return }
        let receipt = AppendReceipt(firstSequence: machine.state.lastSequence + 1, lastSequence: machine.state.lastSequence + UInt64(request.records.count),
                                    streamVersion: request.expectedVersion + UInt64(request.records.count))
        let done = machine.handle(.appended(3, receipt, nanos: 0))
        guard case .tell(3, .performed(let performed))? = done.dropFirst().first else { Issue.record("\(done)"); return }
        #expect(performed.claims.isEmpty && machine.state.migrations[CoordinatorMachineTests.a]?.node(Self.first)?.lease == nil)
    }

    /// The coordinator: a start's grant and a completion's hand-over each lease the readied step to the
    /// claiming poll in their own append (one append each, no lease append); a failed append tells the
    /// claim it was not leased.
    @Test func theCoordinatorLeasesTheReadiedStepInTheAppendThatReadiesIt() async throws {
        let log = GatedEventLog()
        let coordinator = try await Coordinator.open(log: log)
        let ended = Mutex<[StepClaimEnd]>([])
        let asked = Mutex<[String]>([])
        let context = CommandContext(actor: Actor(kind: "agent", id: "orders-agent"), triggeredBy: .agent)
        await coordinator.claimSteps { service in
            asked.withLock { $0.append(service) }
            return StepClaim(agent: "a\(asked.withLock { $0.count })", holder: "orders-agent", context: context, defaultTTLMillis: 20_000) { end in
                ended.withLock { $0.append(end) }
            }
        }
        let alice = CommandContext(actor: Actor(kind: "user", id: "alice"), triggeredBy: .user)
        let plan = ExamplePlans.chain(length: 3, service: "orders")
        _ = try await coordinator.applyPlan(plan, context: alice, now: t(1))
        let before = await log.appendCount
        let started = ContinuousClock.now
        _ = try await coordinator.startMigration(MigrationID("m"), plan: plan.name, context: alice, now: t(2))
        // The start (requests), then the grant pass's grant with the lease: two appends.
        #expect(await log.appendCount == before + 2)
        #expect(asked.withLock { $0 } == ["orders"])
        guard case .leased(let leased)? = ended.withLock({ $0.first }) else { Issue.record("\(ended.withLock { $0 })"); return }
        #expect(leased.migration == MigrationID("m") && leased.node == Self.first && leased.ttlMillis == 20_000 && leased.committedAt >= started)
        #expect(leased.lease.agent == "a1" && leased.lease.holder == "orders-agent" && leased.lease.expiresAt.millisecondsSinceEpoch == t(2).millisecondsSinceEpoch + 20_000)
        let migration = try #require(await coordinator.state.migrations[MigrationID("m")])
        #expect(migration.node(Self.first)?.lease?.token == leased.lease.token)
        // Recorded as the agent's, right after the grant.
        let events = try await log.read(after: 0, limit: 100).map { try EventRecordCodec.decodeAny($0.record) }
        guard case .migration(let last)? = events.last, case .stepLeased = last.event, case .migration(let grant)? = events.dropLast().last,
              case .serviceLeasesGranted = grant.event else { Issue.record("\(events.suffix(2))"); return }
        #expect(last.metadata.actor == context.actor && last.metadata.triggeredBy == .agent)

        // A completion hands the service over to the next node and leases its step in the same append.
        let appendsBefore = await log.appendCount
        _ = try await coordinator.execute(.completeStep(node: Self.first, token: leased.lease.token), migration: MigrationID("m"),
                                          context: context, now: t(3))
        #expect(await log.appendCount == appendsBefore + 1)
        guard ended.withLock({ $0.count }) == 2, case .leased(let next) = ended.withLock({ $0[1] }) else { Issue.record("\(ended.withLock { $0 })"); return }
        #expect(next.node == NodeID("step-1") && next.lease.agent == "a2")

        // The log fails: the claim is told its step was not leased, and the command fails as before.
        await log.failAppends(with: .unavailable("the test's disk"))
        await #expect(throws: CommandError.self) {
            _ = try await coordinator.execute(.completeStep(node: NodeID("step-1"), token: next.lease.token), migration: MigrationID("m"),
                                              context: context, now: t(4))
        }
        guard ended.withLock({ $0.count }) == 3, case .notLeased(changedAt: nil) = ended.withLock({ $0[2] }) else { Issue.record("\(ended.withLock { $0 })"); return }
    }
}
