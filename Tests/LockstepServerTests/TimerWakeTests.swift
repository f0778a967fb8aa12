@testable import LockstepServer
import Testing
@testable import LockstepService
@testable import LockstepHTTP

/// The timer service's and the sweeper's sleep: ended by a signal (one that came while nobody waited
/// included), by its timeout, or by cancellation, never slept through. Each wait says why it ended, so
/// no test judges by the clock: a test process starved of threads under the whole suite has taken
/// 0.6 s a round to resume its tasks (the many-rounds test once took 146 s), which is not a sleep-through.
@Suite struct TimerWakeTests {
    @Test(.timeLimit(.minutes(3))) func aSignalWhileNobodyWaitsEndsTheNextWaitAtOnceAndOnlyThatOne() async {
        let wake = TimerWake()
        wake.signal()
        wake.signal()  // kept once, not counted
        #expect(await wake.wait(upTo: .seconds(600)) == .signalled)
        // The signal was used: the next wait sleeps its whole timeout.
        let clock = ContinuousClock()
        let began = clock.now
        #expect(await wake.wait(upTo: .milliseconds(200)) == .timedOut)
        #expect(clock.now - began >= .milliseconds(200))
    }

    @Test(.timeLimit(.minutes(3))) func aSignalDuringTheWaitEndsIt() async {
        let wake = TimerWake()
        async let waited = wake.wait(upTo: .seconds(600))
        try? await Task.sleep(for: .milliseconds(100))
        wake.signal()
        #expect(await waited == .signalled)
    }

    @Test(.timeLimit(.minutes(3))) func cancellingTheWaiterEndsTheWaitAtOnce() async {
        let wake = TimerWake()
        let waiter = Task { await wake.wait(upTo: .seconds(600)) }
        try? await Task.sleep(for: .milliseconds(100))
        waiter.cancel()
        #expect(await waiter.value == .cancelled)
    }

    /// Signals racing waits: each of 200 rounds must end by its signal. A round that slept through would
    /// time out after 60 s and say so; the time limit only bounds a starved run.
    @Test(.timeLimit(.minutes(10))) func manyRoundsNeverSleepThroughASignal() async {
        let wake = TimerWake()
        var sleptThrough: [Int] = []
        for round in 0..<200 {
            async let waited = wake.wait(upTo: .seconds(60))
            if round % 2 == 0 { await Task.yield() }
            wake.signal()
            if await waited == .timedOut { sleptThrough.append(round) }
        }
        #expect(sleptThrough.isEmpty, "rounds \(sleptThrough) slept through their signal")
    }
}
