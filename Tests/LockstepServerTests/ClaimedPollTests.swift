import LockstepCore
import LockstepEngine
import LockstepStore
import LockstepTestSupport
import LockstepWire
import Synchronization
import Testing
@testable import LockstepService

/// A parked poll leased the step an append readies, in that append (`Wakeups.claim`, `StepClaim`):
/// answered with no look at the coordinator and no commit of its own.
@Suite struct ClaimedPollTests {
    static let now = Instant(millisecondsSinceEpoch: 1_800_000_000_000)
    static let principal = Principal(name: "orders-agent", roles: [.agent], services: ["orders"])

    /// The wake-ups the agents' API recorded.
    final class WakeUps: Sendable {
        private let seen = Mutex<[Duration]>([])
        func record(_ wake: Duration) { seen.withLock { $0.append(wake) } }
        var count: Int { seen.withLock { $0.count } }
    }

    /// A coordinator on an in-memory log and a wakeup table wired as the server wires them (changes wake
    /// parked polls, readied steps are claimed), with the agents' API on both, recording wake-ups.
    static func wired(limits: APILimits = APILimits(), clock: @escaping @Sendable () -> Instant = { now }) async throws -> (Coordinator, Wakeups, AgentAPI, WakeUps) {
        let coordinator = try await Coordinator.open(log: InMemoryEventLog())
        let wakeups = Wakeups(policy: .oldest, parkedMax: 10, parkedPerOwnerMax: 10)
        await coordinator.observeChanges { change, committedAt in
            wakeups.signalSteps(of: change, committedAt: committedAt, stepServices: coordinator.stepServices)
        }
        await coordinator.claimSteps { wakeups.claim($0) }
        let wakes = WakeUps()
        let agents = AgentAPI(coordinator: coordinator, wakeups: wakeups, limits: limits, clock: clock) { wakes.record($0) }
        return (coordinator, wakeups, agents, wakes)
    }

    static func claim(_ agent: String, told: @escaping @Sendable (String) -> Void) -> StepClaim {
        StepClaim(agent: agent, holder: "orders-agent", context: CommandContext(actor: Actor(kind: "agent", id: "orders-agent"), triggeredBy: .agent),
                  defaultTTLMillis: 1_000) { _ in told(agent) }
    }

    /// The table gives the longest-parked poll of a service to a claim only when it parked with one; a
    /// poll that can only be woken keeps its place; a departed one is passed over; a claimed one's
    /// registration with its client is withdrawn when its `then` is told the claim's end; nobody is claimed once closed.
    @Test func theLongestParkedPollIsClaimedOnlyWhenItParkedWithAClaim() {
        let wakeups = Wakeups(policy: .oldest, parkedMax: 10, parkedPerOwnerMax: 10)
        let outcomes = Mutex<[Wakeups.Outcome]>([])
        let ends = Mutex<[String]>([])
        let record: @Sendable (Wakeups.Outcome) -> Void = { outcome in outcomes.withLock { $0.append(outcome) } }
        let told: @Sendable (String) -> Void = { agent in ends.withLock { $0.append(agent) } }
        #expect(wakeups.claim("orders") == nil)
        // Woken only, then claimable: the first keeps its place and nobody is claimed.
        #expect(wakeups.park(after: wakeups.generation, millis: 600_000, owner: "a", key: "orders", then: record) == nil)
        #expect(wakeups.park(after: wakeups.generation, millis: 600_000, owner: "a", key: "orders", claim: Self.claim("c1", told: told), then: record) == nil)
        #expect(wakeups.claim("orders") == nil && wakeups.parkedCount == 2)
        wakeups.signal(["orders"])
        #expect(outcomes.withLock { $0.count } == 1)
        #expect(wakeups.claim("other") == nil)
        #expect(wakeups.claim("orders")?.agent == "c1" && wakeups.parkedCount == 0)
        #expect(wakeups.claim("orders") == nil)
        // One whose client went is passed over; the claimed one's registration is withdrawn when it is told.
        let gone = WakeupsTests.TestDeparture()
        let stays = WakeupsTests.TestDeparture()
        #expect(wakeups.park(after: wakeups.generation, millis: 600_000, owner: "a", key: "orders", departure: gone, claim: Self.claim("c2", told: told), then: record) == nil)
        #expect(wakeups.park(after: wakeups.generation, millis: 600_000, owner: "a", key: "orders", departure: stays, claim: Self.claim("c3", told: told), then: record) == nil)
        gone.go()
        #expect(outcomes.withLock { $0.count } == 2 && outcomes.withLock { $0[1] } == .lookAgain)
        let claimed = wakeups.claim("orders")
        #expect(claimed?.agent == "c3" && stays.registered == 1)
        claimed?.deliver(.notLeased(changedAt: nil))
        // Its `then` is told how the claim ended (the claim it parked with is not: a parked poll holds no
        // closure for a claim), and its registration is withdrawn.
        #expect(stays.registered == 0 && outcomes.withLock { $0.count } == 3 && outcomes.withLock { $0[2] } == .claimed(.notLeased(changedAt: nil)))
        #expect(ends.withLock { $0 }.isEmpty)
        // Told once: its client going now resumes nothing.
        stays.go()
        #expect(outcomes.withLock { $0.count } == 3)
        // Closed: nobody is claimed.
        #expect(wakeups.park(after: wakeups.generation, millis: 600_000, owner: "a", key: "orders", claim: Self.claim("c4", told: told), then: record) == nil)
        wakeups.close()
        #expect(wakeups.claim("orders") == nil && outcomes.withLock { $0.last } == .closed)
    }

    /// A poll driven on an engine transport parks with a claim: the grant that readies its service's
    /// step leases it the step in the same append, and it is answered from there, with no look at the
    /// coordinator, its wake-up recorded. A poll whose client went before it could be answered gives the
    /// step back at once.
    @Test func aDrivenPollIsAnsweredWithTheStepLeasedInTheAppendThatReadiedIt() async throws {
        let (coordinator, wakeups, agents, wakes) = try await Self.wired()
        let now = Self.now
        let principal = Self.principal
        let answers = Mutex<[Result<Lockstep_V1_PollResponse, APIError>]>([])
        let looks = Mutex(0)
        let run: AgentAPI.PollRun = { work, _, _ in
            looks.withLock { $0 += 1 }
            Task { await work() }
        }
        func drive(_ agent: String, run: @escaping AgentAPI.PollRun = run, gone: @escaping @Sendable () -> Bool) throws {
            var poll = try agents.beginPoll(.with { $0.service = "orders"; $0.agentID = agent; $0.waitMs = 60_000 }, principal: principal)
            var found: AgentAPI.PollLook?
            #expect(agents.answerAtOnce(&poll, found: &found) == nil)
            agents.drive(poll, after: found, gone: gone, departure: nil, run: run) { answer in answers.withLock { $0.append(answer) } }
        }
        func answered(_ count: Int) async throws {
            let deadline = ContinuousClock.now + .seconds(10)
            while answers.withLock({ $0.count }) < count {
                guard ContinuousClock.now < deadline else { throw CancellationError() }
                try await Task.sleep(for: .milliseconds(2))
            }
        }
        try drive("a1") { false }
        #expect(wakeups.parkedCount == 1)
        let alice = CommandContext(actor: Actor(kind: "user", id: "alice"), triggeredBy: .user)
        _ = try await coordinator.start(MigrationID("m"), plan: ExamplePlans.chain(length: 2, service: "orders"), context: alice, now: now)
        try await answered(1)
        let step = try answers.withLock { $0[0] }.get().step
        let lease = try #require(await coordinator.state.migrations[MigrationID("m")]?.node(NodeID("step-0"))?.lease)
        #expect(step.leaseID == "m/step-0" && step.fencingToken == lease.token.rawValue && lease.agent == "a1" && lease.holder == "orders-agent")
        #expect(step.action == "work" && step.attempt == 1 && step.ttlMs == UInt32(agents.leaseTTLMillis(ExamplePlans.chain(length: 2, service: "orders").nodes[0])))
        #expect(looks.withLock { $0 } == 0, "the poll looked at the coordinator")
        #expect(wakes.count == 1 && wakeups.parkedCount == 0)

        // The next poll's client goes while it is parked, and its connection takes no more work; the
        // completion readies step-1 and leases it to that poll, which gives it back, unstarted, and is
        // answered with nothing.
        let left = Mutex(false)
        let closing: AgentAPI.PollRun = { _, dropped, _ in dropped() }
        try drive("a2", run: closing) { left.withLock { $0 } }
        #expect(wakeups.parkedCount == 1)
        left.withLock { $0 = true }
        _ = try await coordinator.execute(.completeStep(node: NodeID("step-0"), token: lease.token), migration: MigrationID("m"),
                                          context: CommandContext(actor: principal.agentActor, triggeredBy: .agent), now: now)
        try await answered(2)
        #expect(try answers.withLock { $0[1] }.get().hasStep == false)
        let deadline = ContinuousClock.now + .seconds(10)
        while await coordinator.state.migrations[MigrationID("m")]?.node(NodeID("step-1"))?.lastFailure?.contains("returned unstarted") != true {
            guard ContinuousClock.now < deadline else { Issue.record("the step was not given back"); return }
            try await Task.sleep(for: .milliseconds(2))
        }
        let next = try #require(await coordinator.state.migrations[MigrationID("m")]?.node(NodeID("step-1")))
        #expect(next.lease == nil && next.attempts == 0 && next.lastToken.rawValue == 1, "leased once, then given back")
        #expect(wakes.count == 1)
    }

    /// A poll that waits as a task (HTTP/1.1, gRPC off the loop) is claimed the same way: its wait ends
    /// `.claimed` once the append is done, and `poll` answers with the step; one whose caller went gives it back.
    @Test func aPollWaitingAsATaskIsAnsweredWithTheStepLeasedInTheAppendThatReadiedIt() async throws {
        let (coordinator, wakeups, agents, wakes) = try await Self.wired()
        let now = Self.now
        let principal = Self.principal
        func parked() async throws {
            let deadline = ContinuousClock.now + .seconds(10)
            while wakeups.parkedCount == 0 {
                guard ContinuousClock.now < deadline else { throw CancellationError() }
                try await Task.sleep(for: .milliseconds(1))
            }
        }
        let first = Task {
            try await agents.poll(.with { $0.service = "orders"; $0.agentID = "a1"; $0.waitMs = 60_000 }, principal: principal)
        }
        try await parked()
        let alice = CommandContext(actor: Actor(kind: "user", id: "alice"), triggeredBy: .user)
        _ = try await coordinator.start(MigrationID("m"), plan: ExamplePlans.chain(length: 2, service: "orders"), context: alice, now: now)
        let step = try await value(of: first, "the parked poll").step
        let lease = try #require(await coordinator.state.migrations[MigrationID("m")]?.node(NodeID("step-0"))?.lease)
        #expect(step.leaseID == "m/step-0" && step.fencingToken == lease.token.rawValue && lease.agent == "a1")
        #expect(wakes.count == 1 && wakeups.parkedCount == 0)

        // The next poll's caller goes while it waits; the completion leases it step-1, which it gives back.
        let left = Mutex(false)
        let second = Task {
            try await agents.poll(.with { $0.service = "orders"; $0.agentID = "a2"; $0.waitMs = 60_000 }, principal: principal,
                                  clientGone: { left.withLock { $0 } })
        }
        try await parked()
        left.withLock { $0 = true }
        _ = try await coordinator.execute(.completeStep(node: NodeID("step-0"), token: lease.token), migration: MigrationID("m"),
                                          context: CommandContext(actor: principal.agentActor, triggeredBy: .agent), now: now)
        #expect(try await value(of: second, "the poll whose client went").hasStep == false)
        let next = try #require(await coordinator.state.migrations[MigrationID("m")]?.node(NodeID("step-1")))
        #expect(next.lease == nil && next.lastToken.rawValue == 1 && next.lastFailure?.contains("returned unstarted") == true)
        #expect(wakes.count == 1)
    }

    /// The end of a retry backoff appends nothing, so only the poll woken by the failure waits for it.
    /// When that poll's client goes before the backoff ends, the next parked poll takes the wait over
    /// (before, it slept until its own deadline, up to 30 s) and leases the step once the backoff is over.
    @Test func whenThePollWaitingForARetryLeavesTheNextParkedPollTakesTheWaitOver() async throws {
        let time = Mutex(Self.now)
        // The parked polls may wait 600 s, far past the test's bound (120 s, what a loaded machine's
        // thread pool has needed): a poll that slept on after a1 left is told apart from a slow machine.
        var limits = APILimits()
        limits.pollWaitMillisMax = 600_000
        let (coordinator, wakeups, agents, _) = try await Self.wired(limits: limits) { time.withLock { $0 } }
        let sweeper = Task { await wakeups.run() }
        defer { sweeper.cancel() }
        let node = NodeSpec(id: NodeID("step-0"), services: ["orders"], phase: .custom, action: "work",
                            retry: RetryPolicy(maxAttempts: 3, backoffInitialMillis: 300, backoffMaxMillis: 300))
        let plan = PlanSnapshot(name: "retried", version: 1, contentHash: "", nodes: [node]).hashed()
        let alice = CommandContext(actor: Actor(kind: "user", id: "alice"), triggeredBy: .user)
        _ = try await coordinator.start(MigrationID("m"), plan: plan, context: alice, now: Self.now)
        let first = try await agents.poll(.with { $0.service = "orders"; $0.agentID = "a0"; $0.waitMs = 0 }, principal: Self.principal)
        #expect(first.hasStep)
        // Two polls park while the step runs.
        let answers = Mutex<[String: Lockstep_V1_PollResponse]>([:])
        let looks = Mutex(0)
        let leaving = WakeupsTests.TestDeparture()
        let left = Mutex(false)
        for agent in ["a1", "a2"] {
            var poll = try agents.beginPoll(.with { $0.service = "orders"; $0.agentID = agent; $0.waitMs = 600_000 }, principal: Self.principal)
            var found: AgentAPI.PollLook?
            #expect(agents.answerAtOnce(&poll, found: &found) == nil)
            agents.drive(poll, after: found, gone: { agent == "a1" && left.withLock { $0 } }, departure: agent == "a1" ? leaving : nil, run: { work, _, _ in
                looks.withLock { $0 += 1 }
                Task { await work() }
            }) { answer in answers.withLock { $0[agent] = try? answer.get() } }
        }
        #expect(wakeups.parkedCount == 2)
        // The step fails, to be retried after 300 ms: the failure wakes a1 only, which waits for the backoff.
        _ = try await coordinator.execute(.failStep(node: NodeID("step-0"), token: FencingToken(first.step.fencingToken), reason: "flaky", retryable: true),
                                          migration: MigrationID("m"), context: CommandContext(actor: Self.principal.agentActor, triggeredBy: .agent),
                                          now: Self.now)
        let deadline = ContinuousClock.now + .seconds(120)
        while looks.withLock({ $0 }) < 1 || wakeups.parkedCount < 2 {
            guard ContinuousClock.now < deadline else { Issue.record("a1 never looked and parked again"); return }
            try await Task.sleep(for: .milliseconds(1))
        }
        // a1's client goes; the backoff passes (on the API's clock): a2 takes the wait over and leases the step.
        left.withLock { $0 = true }
        leaving.go()
        time.withLock { $0 = Instant(millisecondsSinceEpoch: $0.millisecondsSinceEpoch + 301) }
        while answers.withLock({ $0["a2"] }) == nil {
            guard ContinuousClock.now < deadline else { Issue.record("a2 slept on after a1 left"); return }
            try await Task.sleep(for: .milliseconds(5))
        }
        #expect(answers.withLock { $0["a2"]?.step.attempt } == 2 && answers.withLock { $0["a1"]?.hasStep } == false)
    }
}
