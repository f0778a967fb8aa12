import LockstepCore
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
        // Alice's two places and the server's three are taken: refused, for her and for anyone.
        #expect(await Self.refusal(reads, "alice") == .tooManyHistoryReads)
        #expect(await Self.refusal(reads, "carol") == .tooManyHistoryReads)
        held.releaseAll()
        for task in running { try await task.value }
        #expect(reads.running == 0)
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
