@testable import LockstepServer
import Testing
@testable import LockstepService
@testable import LockstepHTTP

/// The timer service's and the sweeper's sleep: ended by a signal (one that came while nobody waited
/// included), by its timeout, or by cancellation, never slept through. Bounds are generous: a wait that
/// should end early is given 10 minutes and must end within 60 s (the machines are shared: a test
/// process starved of threads can take seconds to resume a task; sleeping through takes 10 minutes).
@Suite(.timeLimit(.minutes(3))) struct TimerWakeTests {
    @Test func aSignalWhileNobodyWaitsEndsTheNextWaitAtOnceAndOnlyThatOne() async {
        let wake = TimerWake()
        wake.signal()
        wake.signal()  // kept once, not counted
        let clock = ContinuousClock()
        #expect(await clock.measure { await wake.wait(upTo: .seconds(600)) } < .seconds(60))
        // The signal was used: the next wait sleeps its whole timeout.
        #expect(await clock.measure { await wake.wait(upTo: .milliseconds(200)) } >= .milliseconds(200))
    }

    @Test func aSignalDuringTheWaitEndsIt() async {
        let wake = TimerWake()
        let clock = ContinuousClock()
        let began = clock.now
        async let waited: Void = wake.wait(upTo: .seconds(600))
        try? await Task.sleep(for: .milliseconds(100))
        wake.signal()
        await waited
        #expect(clock.now - began < .seconds(60))
    }

    @Test func cancellingTheWaiterEndsTheWaitAtOnce() async {
        let wake = TimerWake()
        let clock = ContinuousClock()
        let began = clock.now
        let waiter = Task { await wake.wait(upTo: .seconds(600)) }
        try? await Task.sleep(for: .milliseconds(100))
        waiter.cancel()
        await waiter.value
        #expect(clock.now - began < .seconds(60))
    }

    @Test func manyRoundsNeverSleepThroughASignal() async {
        let wake = TimerWake()
        let clock = ContinuousClock()
        let began = clock.now
        for round in 0..<200 {
            async let waited: Void = wake.wait(upTo: .seconds(600))
            if round % 2 == 0 { await Task.yield() }
            wake.signal()
            await waited
        }
        #expect(clock.now - began < .seconds(120), "a wait slept through its signal")
    }
}
