import LockstepCore
import LockstepEngine
import LockstepTestSupport
import LockstepWire
import Synchronization
import Testing
@testable import LockstepService

/// A named poll (`poll_id`) looks as an unnamed one does, on the caller's thread with no hop to the
/// coordinator, unless the step lease running at its service's holder was taken under its name
/// (`StepServices.hasLease`): only then may it get a lease back, and only then does it ask.
@Suite struct NamedPollLookTests {
    @Test func aNamedPollAsksTheCoordinatorOnlyWhenTheRunningLeaseCarriesItsName() async throws {
        let (coordinator, wakeups, agents, _) = try await ClaimedPollTests.wired()
        let principal = ClaimedPollTests.principal
        let alice = CommandContext(actor: Actor(kind: "user", id: "alice"), triggeredBy: .user)
        _ = try await coordinator.start(MigrationID("m"), plan: ExamplePlans.chain(length: 2, service: "orders"), context: alice, now: ClaimedPollTests.now)
        func poll(_ name: String, agent: String = "a1") throws -> AgentAPI.PollCursor {
            try agents.beginPoll(.with { $0.service = "orders"; $0.agentID = agent; $0.waitMs = 60_000; $0.pollID = name }, principal: principal)
        }
        func parksAtOnce(_ poll: inout AgentAPI.PollCursor) -> Bool {
            if case .park = agents.lookAtOnce(&poll) { return true }
            return false
        }

        // The step is free: a poll looks at the coordinator, named or not, and leases it under its name.
        var first = try poll("p-1")
        #expect(agents.lookAtOnce(&first) == nil)
        guard case .answer(let answer) = try await agents.look(&first, clientGone: { false }) else { Issue.record("the first poll got no step"); return }
        #expect(answer.step.leaseID == "m/step-0")
        #expect(coordinator.stepServices.hasLease(ofService: "orders", takenBy: "p-1"))
        #expect(!coordinator.stepServices.hasLease(ofService: "orders", takenBy: "p-2") && !coordinator.stepServices.hasLease(ofService: "other", takenBy: "p-1"))

        // Another name, or none: no lease to get back and the step is leased, so it parks where it is.
        var other = try poll("p-2")
        #expect(parksAtOnce(&other) && !other.askedForItsLease)
        var unnamed = try poll("")
        #expect(parksAtOnce(&unnamed))

        // The same name sent again asks, and gets the same step back; asked once, it does not ask again.
        var again = try poll("p-1")
        #expect(agents.lookAtOnce(&again) == nil)
        guard case .answer(let same) = try await agents.look(&again, clientGone: { false }) else { Issue.record("the poll sent again got nothing"); return }
        #expect(same == answer && again.askedForItsLease)
        #expect(parksAtOnce(&again))

        // The same name from another agent asks once, gets nothing back (the lease is not its own), and parks.
        var impostor = try poll("p-1", agent: "a2")
        #expect(agents.lookAtOnce(&impostor) == nil)
        guard case .park = try await agents.look(&impostor, clientGone: { false }) else { Issue.record("another agent's poll got the step"); return }
        #expect(impostor.askedForItsLease && parksAtOnce(&impostor))

        // A poll named p-3 looks while nothing runs under its name, and may park after the generation it
        // read; before it parks, step-0 completes and an earlier send of p-3 leases step-1 (its answer
        // lost). The park is refused (changes came after that generation), and the next look finds the
        // name published, asks, and gets step-1 back.
        var late = try poll("p-3")
        guard case .park(let seen, _) = agents.lookAtOnce(&late) else { Issue.record("p-3 did not park at once"); return }
        let lease = try #require(await coordinator.state.migrations[MigrationID("m")]?.node(NodeID("step-0"))?.lease)
        _ = try await coordinator.execute(.completeStep(node: NodeID("step-0"), token: lease.token), migration: MigrationID("m"),
                                          context: CommandContext(actor: principal.agentActor, triggeredBy: .agent), now: ClaimedPollTests.now)
        #expect(!coordinator.stepServices.hasLease(ofService: "orders", takenBy: "p-1"), "step-0's name went with its lease")
        _ = try await coordinator.execute(.leaseStep(node: NodeID("step-1"), agent: "a1", ttlMillis: 30_000, holder: principal.name, pollID: "p-3"),
                                          migration: MigrationID("m"), context: CommandContext(actor: principal.agentActor, triggeredBy: .agent),
                                          now: ClaimedPollTests.now)
        #expect(wakeups.park(after: seen, millis: 60_000, owner: principal.name, key: "orders") { _ in } == .lookAgain)
        #expect(agents.lookAtOnce(&late) == nil)
        guard case .answer(let got) = try await agents.look(&late, clientGone: { false }) else { Issue.record("p-3 did not get its lease back"); return }
        #expect(got.step.leaseID == "m/step-1")
    }

    /// A poll sent again while its first send is still parked (its client lost the connection, the server
    /// has not noticed): the append that readies the step leases it to the first send (a claim) and
    /// leaves the service with no step, which wakes no poll of the service; the poll sent again parked
    /// under its name is woken by that append all the same, asks, and gets the same step back at once,
    /// waiting as a task or driven as an entry in the table (before, it waited out its whole wait).
    @Test(arguments: [false, true]) func aNamedPollParkedBeforeItsLeaseIsCommittedIsWokenByThatCommit(driven: Bool) async throws {
        let (coordinator, wakeups, agents, _) = try await ClaimedPollTests.wired()
        let principal = ClaimedPollTests.principal
        let answers = Collected<Lockstep_V1_PollResponse>()
        func send(_ agent: String) throws {
            let request = Lockstep_V1_PollRequest.with { $0.service = "orders"; $0.agentID = agent; $0.waitMs = 60_000; $0.pollID = "p-1" }
            if driven {
                var poll = try agents.beginPoll(request, principal: principal)
                var found: AgentAPI.PollLook?
                #expect(agents.answerAtOnce(&poll, found: &found) == nil)
                agents.drive(poll, after: found, gone: { false }, departure: nil, run: { work, _, _ in Task { await work() } }) { answer in
                    if case .success(let answer) = answer { answers.items.withLock { $0.append(answer) } }
                }
            } else {
                Task { [agents, answers] in
                    let answer = try await agents.poll(request, principal: principal)
                    answers.items.withLock { $0.append(answer) }
                }
            }
        }
        try send("a1")
        try await eventually("the first send parked", seconds: 10, every: .milliseconds(2)) { wakeups.parkedCount == 1 }
        try send("a1")
        try await eventually("the send again parked", seconds: 10, every: .milliseconds(2)) { wakeups.parkedCount == 2 }
        // Another poll of the service, parked behind both: the commit leaves the service with no step, so
        // nothing may wake it, neither the commit nor the send again when it ends (it holds no wake of a step).
        let bystander = Collected<Wakeups.Outcome>()
        #expect(wakeups.park(after: wakeups.generation, millis: 60_000, owner: principal.name, key: "orders") { outcome in
            bystander.items.withLock { $0.append(outcome) }
        } == nil)
        let alice = CommandContext(actor: Actor(kind: "user", id: "alice"), triggeredBy: .user)
        _ = try await coordinator.start(MigrationID("m"), plan: ExamplePlans.chain(length: 2, service: "orders"), context: alice, now: ClaimedPollTests.now)
        try await eventually("both sends answered", seconds: 10, every: .milliseconds(2)) { answers.items.withLock { $0.count } == 2 }
        let both = answers.items.withLock { $0 }
        #expect(both[0].step.leaseID == "m/step-0" && both[0] == both[1], "the send again got the first send's step")
        #expect(wakeups.parkedCount == 1 && bystander.items.withLock { $0.isEmpty }, "the poll parked behind was woken")
        let lease = try #require(await coordinator.state.migrations[MigrationID("m")]?.node(NodeID("step-0"))?.lease)
        #expect(lease.token.rawValue == both[0].step.fencingToken && lease.pollID == "p-1")
    }
}

/// What concurrent work hands back (answers, outcomes), in the order it came.
private final class Collected<Element: Sendable>: Sendable {
    let items = Mutex<[Element]>([])
}
