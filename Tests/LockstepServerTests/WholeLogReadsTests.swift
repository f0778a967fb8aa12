import LockstepCore
import LockstepEngine
import LockstepStore
import LockstepTestSupport
import LockstepWire
import LockstepService
import Synchronization
import Testing

/// `WholeLogReads`: the history calls that read the whole log run at most `max` at once, and
/// `perPrincipalMax` per principal; past either a call is refused at once with `too_many_history_reads`
/// (not queued), and a place is given back when its call ends, however it ends.
@Suite(.timeLimit(.minutes(1))) struct WholeLogReadsTests {
    /// A call that runs until released.
    final class Held: Sendable {
        private let waiting = Mutex<[CheckedContinuation<Void, Never>]>([])
        var count: Int { waiting.withLock { $0.count } }
        func hold() async { await withCheckedContinuation { continuation in waiting.withLock { $0.append(continuation) } } }
        func releaseAll() { for continuation in waiting.withLock({ list in defer { list = [] }; return list }) { continuation.resume() } }
    }

    static func refusal(_ reads: WholeLogReads, _ principal: String) async -> ErrorCode? {
        do throws(APIError) {
            try await reads.run(for: principal) { () async throws(APIError) in }
            return nil
        } catch {
            return error.errorCode
        }
    }

    @Test func pastTheLimitsACallIsRefusedAtOnceAndEndedCallsGiveTheirPlacesBack() async throws {
        let reads = WholeLogReads(max: 3, perPrincipalMax: 2)
        let held = Held()
        let running = (0..<3).map { index in
            Task { try await reads.run(for: index < 2 ? "alice" : "bob") { () async throws(APIError) in await held.hold() } }
        }
        while held.count < 3 { try await Task.sleep(for: .milliseconds(5)) }
        #expect(reads.running == 3)
        #expect(!reads.hasRoom(for: "carol") && reads.refusal.errorCode == .tooManyHistoryReads)
        // Alice's two places and the server's three are taken: refused, for her and for anyone.
        #expect(await Self.refusal(reads, "alice") == .tooManyHistoryReads)
        #expect(await Self.refusal(reads, "carol") == .tooManyHistoryReads)
        held.releaseAll()
        for task in running { try await task.value }
        #expect(reads.running == 0 && reads.hasRoom(for: "alice"))
        // Freed: a call runs; one that fails gives its place back too.
        #expect(await Self.refusal(reads, "alice") == nil)
        let failed = await { () async -> Bool in
            do throws(APIError) {
                try await reads.run(for: "alice") { () async throws(APIError) in throw APIError.invalid("no") }
                return false
            } catch { return true }
        }()
        #expect(failed && reads.running == 0)
        // Per principal, with the server's places free: Alice's two taken, her third is refused, Bob's runs.
        let alices = (0..<2).map { _ in Task { try await reads.run(for: "alice") { () async throws(APIError) in await held.hold() } } }
        while held.count < 2 { try await Task.sleep(for: .milliseconds(5)) }
        #expect(reads.running == 2)
        #expect(await Self.refusal(reads, "alice") == .tooManyHistoryReads)
        #expect(await Self.refusal(reads, "bob") == nil)
        held.releaseAll()
        for task in alices { try await task.value }
        #expect(reads.running == 0)
    }
}

/// The history API's whole-log calls go through their limits: a state at a point, a verification and a
/// diff through the replays' (here taken up by hand), an export through the exports' (held open by its
/// reader), each refused with `too_many_history_reads` and nothing else happening.
@Suite(.timeLimit(.minutes(1))) struct HistoryAPIReadLimitTests {
    static let reviewer = Principal(name: "rita", roles: [.auditor])

    static func history() async throws -> HistoryAPI {
        let coordinator = try await Coordinator.open(log: InMemoryEventLog())
        let alice = CommandContext(actor: Actor(kind: "user", id: "alice"), triggeredBy: .user)
        _ = try await coordinator.start(MigrationID("m"), plan: ExamplePlans.chain(length: 2, service: "orders"), context: alice,
                                        now: Instant(millisecondsSinceEpoch: 1_800_000_000_000))
        var limits = APILimits()
        limits.historyReadsMax = 1
        limits.exportsMax = 1
        return HistoryAPI(coordinator: coordinator, limits: limits)
    }

    static func code(_ call: () async throws -> Void) async -> ErrorCode? {
        do {
            try await call()
            return nil
        } catch let error as APIError {
            return error.errorCode
        } catch {
            return .unknown
        }
    }

    @Test func replaysVerificationsAndDiffsPastTheLimitAreRefused() async throws {
        let history = try await Self.history()
        #expect(await Self.code { _ = try await history.stateAt(.init(), principal: Self.reviewer) } == nil)
        try history.wholeLogReads.enter(for: "someone-else")
        #expect(await Self.code { _ = try await history.stateAt(.init(), principal: Self.reviewer) } == .tooManyHistoryReads)
        #expect(await Self.code { _ = try await history.verify(.init(), principal: Self.reviewer) } == .tooManyHistoryReads)
        #expect(await Self.code {
            _ = try await history.diff(.with { $0.from.sequence = 1; $0.to.sequence = 2 }, principal: Self.reviewer)
        } == .tooManyHistoryReads)
        history.wholeLogReads.leave(for: "someone-else")
        #expect(await Self.code { _ = try await history.verify(.init(), principal: Self.reviewer) } == nil)
    }

    @Test func anExportHoldsItsPlaceWhileItsReaderReads() async throws {
        let history = try await Self.history()
        let held = WholeLogReadsTests.Held()
        let first = Task {
            try await history.export(.init(), principal: Self.reviewer) { _ in await held.hold() }
        }
        while held.count < 1 { try await Task.sleep(for: .milliseconds(5)) }
        #expect(await Self.code { try await history.export(.init(), principal: Self.reviewer) { _ in } } == .tooManyHistoryReads)
        held.releaseAll()
        try await first.value
        #expect(history.exports.running == 0)
        #expect(await Self.code { try await history.export(.init(), principal: Self.reviewer) { _ in } } == nil)
    }
}
