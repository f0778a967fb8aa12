@testable import LockstepServer
import LockstepCore
import LockstepEngine
import LockstepStore
import Synchronization
import Testing
@testable import LockstepService
@testable import LockstepHTTP

/// Issue 15: a poll whose client went away just after its step was leased left the lease to expire and
/// burned an attempt. Now the step is given back at once, unstarted, and the attempt is not counted.
/// In process, so the client can leave exactly between the lease and the answer.
@Suite struct ReturnedStepTests {
    @Test func aPollWhoseClientLeftAsItsStepWasLeasedGivesTheStepBackAtOnce() async throws {
        let coordinator = try await Coordinator.open(log: InMemoryEventLog())
        let now = Instant(millisecondsSinceEpoch: 1_800_000_000_000)
        let plan = ExamplePlans.chain(length: 1, service: "orders")
        _ = try await coordinator.start(MigrationID("m"), plan: plan, context: CommandContext(actor: Actor(kind: "user", id: "alice"), triggeredBy: .user), now: now)
        let agents = AgentAPI(coordinator: coordinator, wakeups: Wakeups(policy: .oldest, parkedMax: 10, parkedPerOwnerMax: 10),
                              limits: APILimits(), clock: { now })
        let principal = Principal(name: "orders-agent", roles: [.agent], services: ["orders"])
        // The client is there for the poll loop and the check before the lease, and gone right after it.
        let checks = Mutex(0)
        let gone: @Sendable () -> Bool = { checks.withLock { $0 += 1; return $0 > 2 } }
        let first = try await agents.poll(.with { $0.service = "orders"; $0.agentID = "a1"; $0.waitMs = 0 }, principal: principal, clientGone: gone)
        #expect(!first.hasStep)
        let node = try #require(try await coordinator.readMigration(MigrationID("m"))?.node(NodeID("step-0")))
        #expect(node.status == .pending && node.attempts == 0 && node.lease == nil && node.agentsLost == 0 && node.lastToken == FencingToken(1))
        #expect(node.lastFailure == "returned unstarted: the poll that took it went away before the step reached its agent")
        // The next poll gets the same attempt at once, under a new token.
        let second = try await agents.poll(.with { $0.service = "orders"; $0.agentID = "a2"; $0.waitMs = 0 }, principal: principal)
        #expect(second.step.attempt == 1 && second.step.fencingToken == 2, "\(second)")
    }
}
