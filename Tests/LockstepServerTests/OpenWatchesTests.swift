import LockstepCore
import LockstepEngine
import LockstepStore
import LockstepWire
import Testing
@testable import LockstepService

/// The watch limits (`APILimits.watchesMax`, `watchesPerPrincipalMax`) hold for every open watch, not
/// only those parked: one reading its pages, or waiting for a client that reads nothing, counts too
/// (a review found a watch admitted by its first park only, which a busy server's commits let by).
@Suite struct OpenWatchesTests {
    static let now = Instant(millisecondsSinceEpoch: 1_800_000_000_000)
    static func principal(_ name: String) -> Principal { Principal(name: name, roles: [.auditor]) }

    static func watching(openMax: Int, perPrincipalMax: Int) async throws -> WatchAPI {
        let coordinator = try await Coordinator.open(log: InMemoryEventLog())
        _ = try await coordinator.start(MigrationID("m"), plan: ExamplePlans.chain(length: 1, service: "orders"),
                                        context: CommandContext(actor: Actor(kind: "user", id: "alice"), triggeredBy: .user), now: now)
        return WatchAPI(coordinator: coordinator, wakeups: Wakeups(policy: .everyone, parkedMax: openMax, parkedPerOwnerMax: perPrincipalMax),
                        open: OpenWatches(openMax: openMax, perPrincipalMax: perPrincipalMax))
    }

    static func refusal(_ open: () async throws(APIError) -> WatchEvents) async -> ErrorCode? {
        do throws(APIError) {
            _ = try await open()
            return nil
        } catch {
            return error.errorCode
        }
    }

    @Test func aWatchHoldsItsPlaceUntilItsEventsAreDroppedWhetherOrNotItEverParked() async throws {
        let watches = try await Self.watching(openMax: 3, perPrincipalMax: 2)
        let request = Lockstep_V1_WatchRequest.with { $0.migrationID = "m" }
        // Two of alice's, opened and never read: nothing parked, both count.
        var held = [try await watches.events(request, principal: Self.principal("alice")),
                    try await watches.events(request, principal: Self.principal("alice"))]
        #expect(watches.wakeups.parkedCount == 0 && watches.open.count == 2)
        #expect(await Self.refusal { () throws(APIError) in try await watches.events(request, principal: Self.principal("alice")) } == .tooManyWatchers)
        // Bob has a place of his own, and then the server's are all taken.
        let bobs = try await watches.events(request, principal: Self.principal("bob"))
        #expect(await Self.refusal { () throws(APIError) in try await watches.events(request, principal: Self.principal("carol")) } == .tooManyWatchers)
        // One of alice's read to its first event, then dropped: its place is free again, for anyone.
        var read: WatchEvents.Iterator? = held.removeLast().makeAsyncIterator()
        #expect(try await read?.next() != nil)
        read = nil
        #expect(watches.open.count == 2)
        let iterator = try await watches.events(request, principal: Self.principal("alice")).makeAsyncIterator()
        #expect(watches.open.count == 3)
        held = []
        #expect(watches.open.count == 2)
        #expect(await Self.refusal { () throws(APIError) in try await watches.events(request, principal: Self.principal("carol")) } == nil)
        // Bob's and the last of alice's hold their places to here (whatever the optimizer would end sooner).
        withExtendedLifetime((bobs, iterator)) {}
    }

    @Test func aWatchOfAMigrationThatIsNotThereGivesItsPlaceBack() async throws {
        let watches = try await Self.watching(openMax: 1, perPrincipalMax: 1)
        let missing = Lockstep_V1_WatchRequest.with { $0.migrationID = "nowhere" }
        #expect(await Self.refusal { () throws(APIError) in try await watches.events(missing, principal: Self.principal("alice")) } != .tooManyWatchers)
        #expect(watches.open.count == 0)
        _ = try await watches.events(.with { $0.migrationID = "m" }, principal: Self.principal("alice"))
    }
}
