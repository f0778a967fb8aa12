@testable import LockstepServer
import Testing

@Suite struct WakeupsTests {
    @Test func parkedPollsAreBoundedInAllAndPerPrincipalAndASignalWakesEveryOne() async throws {
        let wakeups = Wakeups(parkedMax: 2, parkedPerOwnerMax: 1)
        let seen = await wakeups.generation
        let first = Task { await wakeups.wait(after: seen, millis: 60_000, owner: "a") }
        while await wakeups.parkedCount < 1 { await Task.yield() }
        // The same principal again: over its own limit, answered at once.
        #expect(await wakeups.wait(after: seen, millis: 60_000, owner: "a") == .full)
        let second = Task { await wakeups.wait(after: seen, millis: 60_000, owner: "b") }
        while await wakeups.parkedCount < 2 { await Task.yield() }
        // A third principal: over the overall limit.
        #expect(await wakeups.wait(after: seen, millis: 60_000, owner: "c") == .full)
        await wakeups.signal()
        let woken = (await first.value, await second.value)
        #expect(woken == (.lookAgain, .lookAgain))
        #expect(await wakeups.parkedCount == 0)
        // A poll that looked before a change does not park at all: it looks again.
        #expect(await wakeups.wait(after: seen, millis: 60_000, owner: "a") == .lookAgain)
    }

    @Test func cancellationAndShutdownEndAParkedWaitAtOnce() async throws {
        let wakeups = Wakeups(parkedMax: 10, parkedPerOwnerMax: 10)
        let seen = await wakeups.generation
        let cancelled = Task { await wakeups.wait(after: seen, millis: 600_000, owner: "a") }
        while await wakeups.parkedCount < 1 { await Task.yield() }
        cancelled.cancel()
        #expect(await cancelled.value == .cancelled)
        #expect(await wakeups.parkedCount == 0)
        let parked = Task { await wakeups.wait(after: await wakeups.generation, millis: 600_000, owner: "a") }
        while await wakeups.parkedCount < 1 { await Task.yield() }
        await wakeups.close()
        #expect(await parked.value == .closed)
        #expect(await wakeups.wait(after: await wakeups.generation, millis: 600_000, owner: "b") == .closed)
    }

    @Test func aParkedPollReturnsAtItsDeadlineAndFreesItsPlace() async throws {
        let wakeups = Wakeups(parkedMax: 1, parkedPerOwnerMax: 1)
        let seen = await wakeups.generation
        #expect(await wakeups.wait(after: seen, millis: 10, owner: "a") == .lookAgain)
        #expect(await wakeups.parkedCount == 0)
        #expect(await wakeups.wait(after: seen, millis: 10, owner: "a") == .lookAgain)
    }

    @Test func aChangeWakesOnlyTheWaitersItConcernsButStopsAnyoneFromParkingOnAStaleLook() async throws {
        let wakeups = Wakeups(parkedMax: 10, parkedPerOwnerMax: 10)
        let seen = await wakeups.generation
        let orders = Task { await wakeups.wait(after: seen, millis: 600_000, owner: "a", key: "orders") }
        let ledger = Task { await wakeups.wait(after: seen, millis: 600_000, owner: "a", key: "ledger") }
        while await wakeups.parkedCount < 2 { await Task.yield() }
        await wakeups.signal(["orders"])
        #expect(await orders.value == .lookAgain)
        #expect(await wakeups.parkedCount == 1)  // ledger's poll sleeps on
        // A caller that looked before that change does not park, whatever its key: it looks again.
        #expect(await wakeups.wait(after: seen, millis: 600_000, owner: "b", key: "payments") == .lookAgain)
        await wakeups.signal([])  // a change concerning no parked caller: nobody wakes
        #expect(await wakeups.parkedCount == 1)
        await wakeups.signal(["ledger"])
        #expect(await ledger.value == .lookAgain)
    }
}
