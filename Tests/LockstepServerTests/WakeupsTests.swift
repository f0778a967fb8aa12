@testable import LockstepServer
import Testing

@Suite struct WakeupsTests {
    @Test func parkedPollsAreBoundedInAllAndPerPrincipalAndASignalWakesEveryOne() async throws {
        let wakeups = Wakeups(parkedMax: 2, parkedPerOwnerMax: 1)
        let seen = await wakeups.generation
        let first = Task { await wakeups.wait(after: seen, millis: 60_000, owner: "a") }
        while await wakeups.parkedCount < 1 { await Task.yield() }
        // The same principal again: over its own limit, answered at once.
        #expect(await wakeups.wait(after: seen, millis: 60_000, owner: "a") == false)
        let second = Task { await wakeups.wait(after: seen, millis: 60_000, owner: "b") }
        while await wakeups.parkedCount < 2 { await Task.yield() }
        // A third principal: over the overall limit.
        #expect(await wakeups.wait(after: seen, millis: 60_000, owner: "c") == false)
        await wakeups.signal()
        let woken = (await first.value, await second.value)
        #expect(woken == (true, true))
        #expect(await wakeups.parkedCount == 0)
        // A poll that looked before a change does not park at all: it looks again.
        #expect(await wakeups.wait(after: seen, millis: 60_000, owner: "a"))
    }

    @Test func aParkedPollReturnsAtItsDeadlineAndFreesItsPlace() async throws {
        let wakeups = Wakeups(parkedMax: 1, parkedPerOwnerMax: 1)
        let seen = await wakeups.generation
        #expect(await wakeups.wait(after: seen, millis: 10, owner: "a"))
        #expect(await wakeups.parkedCount == 0)
        #expect(await wakeups.wait(after: seen, millis: 10, owner: "a"))
    }
}
