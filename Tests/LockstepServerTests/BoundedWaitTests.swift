import LockstepTestSupport
import Testing

/// The bounded waits the suites wait through (`ends(_:within:)`, `value(of:within:)`): a task that ends is
/// reported as ended however soon it ends, and one that does not end is reported so after the bound.
@Suite struct BoundedWaitTests {
    /// Tasks that end at once, many times over: each is reported as ended. (The race session 35 fixed, a
    /// cancelled timer answering before the end did, needed the ending thread preempted between two
    /// statements: the whole suite on two cores did that now and then; this test alone does not, and
    /// holds the contract, not that race.)
    @Test func aTaskThatEndsAtOnceIsReportedAsEnded() async throws {
        for round in 0..<500 {
            let ended = await ends(Task {}, within: .seconds(120))
            #expect(ended, "round \(round)")
            if !ended { break }
        }
        #expect(try await value(of: Task { 7 }, within: .seconds(120)) == 7)
    }

    @Test func aTaskThatDoesNotEndIsReportedSoAfterTheBound() async throws {
        let stuck = Task { while !Task.isCancelled { try? await Task.sleep(for: .milliseconds(10)) } }
        let clock = ContinuousClock()
        let began = clock.now
        #expect(await ends(stuck, within: .milliseconds(200)) == false)
        #expect(clock.now - began >= .milliseconds(200))
        await #expect(throws: (any Error).self) { try await value(of: stuck, within: .milliseconds(100), "the stuck task") }
        #expect(stuck.isCancelled)
    }
}
