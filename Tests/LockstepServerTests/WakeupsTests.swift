import LockstepCore
@testable import LockstepEngine
@testable import LockstepServer
import LockstepStore
import LockstepTestSupport
import Synchronization
import Testing
@testable import LockstepService
@testable import LockstepHTTP

@Suite struct WakeupsTests {
    /// Parks a caller and waits until it is parked.
    private func park(_ wakeups: Wakeups, owner: String = "a", key: String = "", name: String? = nil, millis: Int = 600_000) async throws
        -> Task<Wakeups.Outcome, Never> {
        let before = wakeups.parkedCount
        let seen = wakeups.generation
        let task = Task { await wakeups.wait(after: seen, millis: millis, owner: owner, key: key, name: name) }
        try await eventually("a caller parked", seconds: 120, every: nil) { wakeups.parkedCount != before }
        return task
    }

    /// Runs `body` with the deadline sweeper running (in the server it is a service of the group).
    private func withSweeper(_ wakeups: Wakeups, _ body: () async throws -> Void) async rethrows {
        let sweeper = Task { await wakeups.run() }
        defer { sweeper.cancel() }
        try await body()
    }

    @Test func parkedCallersAreBoundedInAllAndPerPrincipal() async throws {
        let wakeups = Wakeups(policy: .everyone, parkedMax: 2, parkedPerOwnerMax: 1)
        let seen = wakeups.generation
        let first = try await park(wakeups, owner: "a", key: "k")
        // The same principal again: over its own limit, answered at once.
        #expect(await wakeups.wait(after: seen, millis: 60_000, owner: "a", key: "k") == .full)
        let second = try await park(wakeups, owner: "b", key: "k")
        // A third principal: over the overall limit.
        #expect(await wakeups.wait(after: seen, millis: 60_000, owner: "c", key: "k") == .full)
        wakeups.signal(["k"])
        let woken = (try await value(of: first), try await value(of: second))
        #expect(woken.0.looksAgain && woken.1.looksAgain)
        #expect(wakeups.parkedCount == 0)
        // A caller that looked before a change does not park at all: it looks again.
        #expect(await wakeups.wait(after: seen, millis: 60_000, owner: "a") == .lookAgain)
    }

    /// A woken caller is told when its change happened (the `at` of `signal`), and a wake passed on keeps it.
    @Test func aWakeCarriesWhenItsChangeHappenedAndKeepsItWhenPassedOn() async throws {
        let wakeups = Wakeups(policy: .oldest, parkedMax: 10, parkedPerOwnerMax: 10)
        let changed = ContinuousClock.now - .seconds(60)
        let first = try await park(wakeups)
        let second = try await park(wakeups)
        wakeups.signal([""], at: changed)
        #expect(try await value(of: first) == .woken(changedAt: changed))
        wakeups.passOn("", changedAt: changed)
        #expect(try await value(of: second) == .woken(changedAt: changed))
    }

    @Test func cancellationAndShutdownEndAParkedWaitAtOnce() async throws {
        let wakeups = Wakeups(policy: .oldest, parkedMax: 10, parkedPerOwnerMax: 10)
        let cancelled = try await park(wakeups)
        cancelled.cancel()
        #expect(try await value(of: cancelled) == .cancelled(wokenBy: nil))
        #expect(wakeups.parkedCount == 0)
        // Cancelled before it parks: it does not park.
        let early = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            return await wakeups.wait(after: wakeups.generation, millis: 600_000, owner: "a")
        }
        #expect(try await value(of: early) == .cancelled(wokenBy: nil))
        let parked = try await park(wakeups)
        wakeups.close()
        #expect(try await value(of: parked) == .closed)
        #expect(await wakeups.wait(after: wakeups.generation, millis: 600_000, owner: "b") == .closed)
        #expect(wakeups.parkedCount == 0)
    }

    @Test func aParkedCallerReturnsAtItsDeadlineAndFreesItsPlace() async throws {
        let wakeups = Wakeups(policy: .oldest, parkedMax: 1, parkedPerOwnerMax: 1)
        await withSweeper(wakeups) {
            let seen = wakeups.generation
            #expect(await wakeups.wait(after: seen, millis: 10, owner: "a") == .lookAgain)
            #expect(wakeups.parkedCount == 0)
            #expect(await wakeups.wait(after: seen, millis: 10, owner: "a") == .lookAgain)
        }
    }

    @Test func aChangeWakesOnlyTheCallersItConcernsButStopsAnyoneFromParkingOnAStaleLook() async throws {
        let wakeups = Wakeups(policy: .everyone, parkedMax: 10, parkedPerOwnerMax: 10)
        let seen = wakeups.generation
        let orders = try await park(wakeups, key: "orders")
        let ledger = try await park(wakeups, key: "ledger")
        wakeups.signal(["orders"])
        guard case .woken = try await value(of: orders) else { Issue.record("orders' caller was not woken by the change"); return }
        #expect(wakeups.parkedCount == 1)  // ledger's caller sleeps on
        // A caller that looked before that change does not park, whatever its key: it looks again.
        #expect(await wakeups.wait(after: seen, millis: 600_000, owner: "b", key: "payments") == .lookAgain)
        wakeups.signal([])  // a change concerning no parked caller: nobody wakes
        #expect(wakeups.parkedCount == 1)
        wakeups.signal(["ledger"])
        guard case .woken = try await value(of: ledger) else { Issue.record("ledger's caller was not woken"); return }
    }

    @Test func everyoneWakesEveryCallerOfTheKey() async throws {
        let wakeups = Wakeups(policy: .everyone, parkedMax: 10, parkedPerOwnerMax: 10)
        var watchers: [Task<Wakeups.Outcome, Never>] = []
        for _ in 0..<3 { watchers.append(try await park(wakeups, key: "m1")) }
        wakeups.signal(["m1"])
        for watcher in watchers {
            let outcome = try await value(of: watcher)
            #expect(outcome.looksAgain)
        }
        #expect(wakeups.parkedCount == 0)
    }

    @Test func oldestWakesOnlyTheLongestParkedCallerOfEachKeyAndAPassOnWakesTheNext() async throws {
        let wakeups = Wakeups(policy: .oldest, parkedMax: 10, parkedPerOwnerMax: 10)
        let first = try await park(wakeups, key: "orders")
        let second = try await park(wakeups, key: "orders")
        let third = try await park(wakeups, key: "orders")
        let other = try await park(wakeups, key: "ledger")
        wakeups.signal(["orders", "ledger"])
        guard case .woken = try await value(of: first), case .woken = try await value(of: other) else {
            Issue.record("the longest-parked caller of each key was not woken")
            return
        }
        #expect(wakeups.parkedCount == 2)  // the second and third sleep on
        // A caller that left after its timer does not take a wake: the next live one does.
        wakeups.passOn("orders", changedAt: .now)
        guard case .woken = try await value(of: second) else { Issue.record("pass-on did not wake the next caller"); return }
        #expect(wakeups.parkedCount == 1)
        third.cancel()
        #expect(try await value(of: third) == .cancelled(wokenBy: nil))
        wakeups.passOn("orders", changedAt: .now)  // nobody left: nothing happens
        #expect(wakeups.parkedCount == 0)
    }

    @Test func callersThatTimedOutAreSkippedAndTheirLineStaysBounded() async throws {
        let wakeups = Wakeups(policy: .oldest, parkedMax: 1_000, parkedPerOwnerMax: 1_000)
        try await withSweeper(wakeups) {
            let survivor = try await park(wakeups, key: "orders")
            // Many callers park and time out behind it; the line is compacted as they leave.
            for _ in 0..<100 {
                #expect(await wakeups.wait(after: wakeups.generation, millis: 1, owner: "a", key: "orders") == .lookAgain)
            }
            #expect(wakeups.parkedCount == 1)
            #expect(wakeups.lineLength(of: "orders") <= 2 * 1 + 64)
            wakeups.signal(["orders"])
            guard case .woken = try await value(of: survivor) else { Issue.record("the survivor was not woken"); return }
            #expect(wakeups.lineLength(of: "orders") == 0)
        }
    }

    /// A named caller (a poll that may get a lease back under its name) is woken by a change naming it on
    /// its key, whatever the policy and its place in the line, and told to look again (it holds no wake
    /// of its key's to pass on); the name on another key wakes nobody; and the table of names holds only
    /// parked callers, however they leave.
    @Test func aNamedCallerIsWokenByItsNameOnItsKeyAndItsNameGoesWithIt() async throws {
        let wakeups = Wakeups(policy: .oldest, parkedMax: 1_000, parkedPerOwnerMax: 1_000)
        try await withSweeper(wakeups) {
            let oldest = try await park(wakeups, key: "orders")
            let named = try await park(wakeups, key: "orders", name: "p-1")
            let elsewhere = try await park(wakeups, key: "ledger", name: "p-1")
            #expect(wakeups.namedEntries == 2)
            wakeups.signal([], names: ["orders": "p-1"])
            #expect(try await value(of: named) == .lookAgain, "the named caller was not woken to look again")
            #expect(wakeups.parkedCount == 2 && wakeups.namedEntries == 1, "only the named caller of that key was woken")
            wakeups.signal([], names: ["orders": "p-1", "ledger": "p-2"])
            #expect(wakeups.parkedCount == 2, "nobody else is named so")
            // Woken by its key, cancelled or timed out: its name goes with it.
            wakeups.signal(["ledger"])
            guard case .woken = try await value(of: elsewhere) else { Issue.record("the key's caller was not woken"); return }
            let cancelled = try await park(wakeups, key: "orders", name: "p-3")
            cancelled.cancel()
            _ = await cancelled.value
            for index in 0..<100 {
                #expect(await wakeups.wait(after: wakeups.generation, millis: 1, owner: "a", key: "orders", name: "p-\(index)") == .lookAgain)
            }
            #expect(wakeups.parkedCount == 1 && wakeups.namedEntries == 0)
            // Two parked under one name: the newer is woken by it; the older's wake comes by its key.
            let older = try await park(wakeups, key: "orders", name: "p-4")
            let newer = try await park(wakeups, key: "orders", name: "p-4")
            wakeups.signal([], names: ["orders": "p-4"])
            #expect(try await value(of: newer) == .lookAgain, "the newer was not woken")
            #expect(wakeups.parkedCount == 2 && wakeups.namedEntries == 0)
            wakeups.signal(["orders"])
            wakeups.signal(["orders"])
            _ = try await value(of: oldest)
            _ = try await value(of: older)
            #expect(wakeups.parkedCount == 0)
            // Claimed, or there at shutdown: its name goes too.
            let ignore: @Sendable (Wakeups.Outcome) -> Void = { _ in }
            #expect(wakeups.park(after: wakeups.generation, millis: 600_000, owner: "a", key: "orders", name: "p-5",
                                 claim: ClaimedPollTests.claim("c1") { _ in }, then: ignore) == nil)
            #expect(wakeups.namedEntries == 1)
            #expect(wakeups.claim("orders") != nil && wakeups.namedEntries == 0)
            #expect(wakeups.park(after: wakeups.generation, millis: 600_000, owner: "a", key: "orders", name: "p-6", then: ignore) == nil)
            #expect(wakeups.namedEntries == 1)
            wakeups.close()
            #expect(wakeups.namedEntries == 0 && wakeups.parkedCount == 0)
        }
    }

    @Test func deadlinesOfCallersWokenEarlyDoNotPileUp() async throws {
        let wakeups = Wakeups(policy: .oldest, parkedMax: 10, parkedPerOwnerMax: 10)
        try await withSweeper(wakeups) {
            // 3,000 callers park for 10 minutes and are each woken at once by a change.
            for _ in 0..<3_000 {
                let caller = try await park(wakeups, key: "orders")
                wakeups.signal(["orders"])
                _ = try await value(of: caller)
            }
            #expect(wakeups.parkedCount == 0)
            // Departures compact the departed callers' deadlines (the sweeper sleeps until the earliest).
            let deadline = ContinuousClock.now + .seconds(10)
            while wakeups.deadlineEntries > 1_024 && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(5)) }
            #expect(wakeups.deadlineEntries <= 1_024)
        }
    }

    /// A client that can go, as `ClientPresence` does for a connection or stream.
    final class TestDeparture: Departure {
        private let state = Mutex<(gone: Bool, actions: [Int: @Sendable () -> Void], next: Int)>((false, [:], 0))
        func onDeparture(_ action: @escaping @Sendable () -> Void) -> Int? {
            let token = state.withLock { state -> Int? in
                guard !state.gone else { return nil }
                defer { state.next += 1 }
                state.actions[state.next] = action
                return state.next
            }
            if token == nil { action() }
            return token
        }
        func withdraw(_ token: Int) { _ = state.withLock { $0.actions.removeValue(forKey: token) } }
        func go() { for action in state.withLock({ state in state.gone = true; defer { state.actions = [:] }; return Array(state.actions.values) }) { action() } }
        var registered: Int { state.withLock { $0.actions.count } }
    }

    @Test func aCallerWhoseClientGoesLeavesAtOnceWithNoTaskWaitingForIt() async throws {
        let wakeups = Wakeups(policy: .oldest, parkedMax: 10, parkedPerOwnerMax: 10)
        let client = TestDeparture()
        let seen = wakeups.generation
        let parked = Task { await wakeups.wait(after: seen, millis: 600_000, owner: "a", key: "orders", departure: client) }
        // The caller parks under the table's lock and then registers with its client: wait for both.
        try await eventually("the caller parked and registered", seconds: 120, every: nil) { wakeups.parkedCount > 0 && client.registered > 0 }
        #expect(client.registered == 1)
        client.go()
        #expect(try await value(of: parked) == .lookAgain)
        #expect(wakeups.parkedCount == 0 && client.registered == 0)
        // Gone before it parks: it does not stay parked. Woken by a change: its registration is withdrawn.
        #expect(await wakeups.wait(after: wakeups.generation, millis: 600_000, owner: "a", departure: client) == .lookAgain)
        #expect(wakeups.parkedCount == 0)
        let other = TestDeparture()
        let woken = Task { await wakeups.wait(after: wakeups.generation, millis: 600_000, owner: "a", key: "orders", departure: other) }
        try await eventually("the caller parked", seconds: 120, every: nil) { wakeups.parkedCount > 0 }
        wakeups.signal(["orders"])
        _ = try await value(of: woken)
        #expect(other.registered == 0)
    }
    /// `park`: the same wait as an entry with a callback, no task. Each way it can end calls back once
    /// with what `wait` would answer; the limits, a stale look and shutdown answer at once without parking.
    @Test func aParkedEntryIsCalledBackOnceForEachWayItsWaitEnds() async throws {
        let wakeups = Wakeups(policy: .oldest, parkedMax: 2, parkedPerOwnerMax: 2)
        let outcomes = Mutex<[Wakeups.Outcome]>([])
        let record: @Sendable (Wakeups.Outcome) -> Void = { outcome in outcomes.withLock { $0.append(outcome) } }
        func recorded(_ count: Int) async throws { try await eventually("\(count) callbacks", seconds: 120, every: nil) { outcomes.withLock({ $0.count }) >= count } }
        // Woken by a change of its key.
        #expect(wakeups.park(after: wakeups.generation, millis: 600_000, owner: "a", key: "orders", then: record) == nil)
        #expect(wakeups.parkedCount == 1)
        wakeups.signal(["orders"])
        try await recorded(1)
        guard case .woken = outcomes.withLock({ $0[0] }) else { Issue.record("\(outcomes.withLock { $0 })"); return }
        // Its client goes: look again (the caller then sees it gone); the registration is spent.
        let client = TestDeparture()
        #expect(wakeups.park(after: wakeups.generation, millis: 600_000, owner: "a", key: "orders", departure: client, then: record) == nil)
        #expect(client.registered == 1)
        client.go()
        try await recorded(2)
        #expect(outcomes.withLock { $0[1] } == .lookAgain && client.registered == 0)
        // Its deadline passes (the sweeper resumes it).
        try await withSweeper(wakeups) {
            #expect(wakeups.park(after: wakeups.generation, millis: 50, owner: "a", then: record) == nil)
            try await recorded(3)
        }
        #expect(outcomes.withLock { $0[2] } == .lookAgain)
        // At once, without parking: a stale look, then the limits.
        #expect(wakeups.park(after: wakeups.generation &- 1, millis: 600_000, owner: "a", then: record) == .lookAgain)
        #expect(wakeups.park(after: wakeups.generation, millis: 600_000, owner: "a", then: record) == nil)
        #expect(wakeups.park(after: wakeups.generation, millis: 600_000, owner: "a", then: record) == nil)
        #expect(wakeups.park(after: wakeups.generation, millis: 600_000, owner: "b", then: record) == .full)
        // Shutdown: both parked entries are told it is closed; nobody parks afterwards.
        wakeups.close()
        try await recorded(5)
        #expect(outcomes.withLock { Array($0[3...]) } == [.closed, .closed])
        #expect(wakeups.park(after: wakeups.generation, millis: 600_000, owner: "c", then: record) == .closed)
        #expect(wakeups.parkedCount == 0 && outcomes.withLock { $0.count } == 5)
    }

    /// `signalSteps` wakes polls only of services that may have a step now (`StepServices`): a change that
    /// leaves a service without one (nobody holds it, its node waits for a grant) wakes none of its polls,
    /// which keep their place; the generation moves all the same, so a poll in the middle of a look looks again.
    @Test func aChangeWakesOnlyPollsOfServicesThatMayHaveAStep() async throws {
        let coordinator = try await Coordinator.open(log: InMemoryEventLog())
        let wakeups = Wakeups(policy: .oldest, parkedMax: 10, parkedPerOwnerMax: 10)
        let outcomes = Mutex<[Wakeups.Outcome]>([])
        let record: @Sendable (Wakeups.Outcome) -> Void = { outcome in outcomes.withLock { $0.append(outcome) } }
        #expect(wakeups.park(after: wakeups.generation, millis: 600_000, owner: "a", key: "orders", then: record) == nil)
        let change = Coordinator.Change(migration: nil, services: ["orders", "billing"])
        let before = wakeups.generation
        wakeups.signalSteps(of: change, committedAt: .now, stepServices: coordinator.stepServices)
        #expect(wakeups.generation != before && outcomes.withLock { $0.isEmpty } && wakeups.parkedCount == 1)
        // Its node holds orders with no step leased (no claimer: the step is left for a poll to take).
        let alice = CommandContext(actor: Actor(kind: "user", id: "alice"), triggeredBy: .user)
        _ = try await coordinator.start(MigrationID("m"), plan: ExamplePlans.chain(length: 1, service: "orders"), context: alice,
                                        now: Instant(millisecondsSinceEpoch: 1_800_000_000_000))
        #expect(coordinator.stepServices.contains("orders"))
        wakeups.signalSteps(of: change, committedAt: .now, stepServices: coordinator.stepServices)
        guard case .woken? = outcomes.withLock({ $0.first }), wakeups.parkedCount == 0 else { Issue.record("\(outcomes.withLock { $0 })"); return }
    }
}
