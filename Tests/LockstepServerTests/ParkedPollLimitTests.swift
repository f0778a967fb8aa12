import LockstepCore
import LockstepEngine
import LockstepStore
import LockstepWire
import Synchronization
import Testing
@testable import LockstepService

/// The parked-poll limits (`APILimits.parkedPollsMax`, `parkedPollsPerPrincipalMax`) through the agents'
/// API, not only the wake-up table's: a poll past them is answered at once, empty, with when to retry.
@Suite(.timeLimit(.minutes(1))) struct ParkedPollLimitTests {
    @Test func aPollPastTheParkedLimitsIsAnsweredAtOnceWithARetry() async throws {
        let now = Instant(millisecondsSinceEpoch: 1_800_000_000_000)
        let wakeups = Wakeups(policy: .oldest, parkedMax: 2, parkedPerOwnerMax: 1)
        let agents = AgentAPI(coordinator: try await Coordinator.open(log: InMemoryEventLog()), wakeups: wakeups, limits: APILimits(), clock: { now })
        func agent(_ name: String) -> Principal { Principal(name: name, roles: [.agent], services: ["orders"]) }
        func poll(_ principal: Principal, _ id: String) async throws -> Lockstep_V1_PollResponse {
            try await agents.poll(.with { $0.service = "orders"; $0.agentID = id; $0.waitMs = 60_000 }, principal: principal)
        }
        func parked(_ count: Int) async throws {
            let deadline = ContinuousClock.now + .seconds(20)
            while wakeups.parkedCount < count, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(5)) }
            #expect(wakeups.parkedCount == count)
        }
        let first = Task { try await poll(agent("a"), "a1") }
        try await parked(1)
        // Principal a's one place is taken: its second poll does not wait its 60 s.
        let began = ContinuousClock.now
        let refused = try await poll(agent("a"), "a2")
        #expect(!refused.hasStep && refused.retryAfterMs > 0 && ContinuousClock.now - began < .seconds(20), "\(refused)")
        // Another principal parks, and then the server's two places are taken.
        let second = Task { try await poll(agent("b"), "b1") }
        try await parked(2)
        let full = try await poll(agent("c"), "c1")
        #expect(!full.hasStep && full.retryAfterMs > 0 && wakeups.parkedCount == 2)
        first.cancel()
        second.cancel()
        _ = await first.result
        _ = await second.result
    }

    @Test func aPollThePollLaneHasNoRoomForIsAnsweredAtOnceWithARetry() async throws {
        let agents = AgentAPI(coordinator: try await Coordinator.open(log: InMemoryEventLog()), wakeups: Wakeups(policy: .oldest, parkedMax: 2, parkedPerOwnerMax: 1),
                              limits: APILimits(), clock: { Instant(millisecondsSinceEpoch: 1_800_000_000_000) })
        let principal = Principal(name: "a", roles: [.agent], services: ["orders"])
        let poll = try agents.beginPoll(.with { $0.service = "orders"; $0.agentID = "a1"; $0.waitMs = 60_000 }, principal: principal)
        let ended = Mutex<[Lockstep_V1_PollResponse]>([])
        // A look that must wait for a place in the lane, whose line is full: it is never run, and the
        // poll ends at once, empty, with when to retry (not left unanswered, nor answered as shutting down).
        agents.drive(poll, after: nil, gone: { false }, departure: nil, run: { _, _, overflowed in overflowed() }) { end in
            guard case .success(let response) = end else {
                Issue.record("\(end)")
                return
            }
            ended.withLock { $0.append(response) }
        }
        let answers = ended.withLock { $0 }
        #expect(answers.count == 1 && !answers[0].hasStep && answers[0].retryAfterMs > 0, "\(answers)")
    }

    /// A woken poll the lane has no room for does not pass its wake on: the next parked poll would resume
    /// in the same call, find the line as full and pass it on again, through every poll parked on the
    /// service in one call stack (a review's finding: 10,000 parked polls deep).
    @Test func aWokenPollThePollLaneHasNoRoomForDoesNotPassItsWakeOn() async throws {
        let wakeups = Wakeups(policy: .oldest, parkedMax: 10, parkedPerOwnerMax: 10)
        let agents = AgentAPI(coordinator: try await Coordinator.open(log: InMemoryEventLog()), wakeups: wakeups,
                              limits: APILimits(), clock: { Instant(millisecondsSinceEpoch: 1_800_000_000_000) })
        let resumed = Mutex(0)
        for _ in 0..<3 {
            #expect(wakeups.park(after: wakeups.generation, millis: 600_000, owner: "b", key: "orders") { _ in resumed.withLock { $0 += 1 } } == nil)
        }
        var poll = try agents.beginPoll(.with { $0.service = "orders"; $0.agentID = "a1"; $0.waitMs = 60_000 },
                                        principal: Principal(name: "a", roles: [.agent], services: ["orders"]))
        poll.wokenAt = .now
        let answered = Mutex(0)
        agents.drive(poll, after: nil, gone: { false }, departure: nil, run: { _, _, overflowed in overflowed() }) { _ in answered.withLock { $0 += 1 } }
        #expect(answered.withLock { $0 } == 1)
        #expect(resumed.withLock { $0 } == 0 && wakeups.parkedCount == 3, "the parked polls keep their places")
    }
}
