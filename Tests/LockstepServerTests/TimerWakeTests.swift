@testable import LockstepServer
import Testing

/// The timer service's and the sweeper's sleep: ended by a signal (one that came while nobody waited
/// included), by its timeout, or by cancellation, never slept through. Bounds are generous: a wait that
/// should end early is given 60 s and must end within 10.
@Suite struct TimerWakeTests {
    @Test func aSignalWhileNobodyWaitsEndsTheNextWaitAtOnceAndOnlyThatOne() async {
        let wake = TimerWake()
        wake.signal()
        wake.signal()  // kept once, not counted
        let clock = ContinuousClock()
        #expect(await clock.measure { await wake.wait(upTo: .seconds(60)) } < .seconds(10))
        // The signal was used: the next wait sleeps its whole timeout.
        #expect(await clock.measure { await wake.wait(upTo: .milliseconds(200)) } >= .milliseconds(200))
    }

    @Test func aSignalDuringTheWaitEndsIt() async {
        let wake = TimerWake()
        let clock = ContinuousClock()
        let began = clock.now
        async let waited: Void = wake.wait(upTo: .seconds(60))
        try? await Task.sleep(for: .milliseconds(100))
        wake.signal()
        await waited
        #expect(clock.now - began < .seconds(10))
    }

    @Test func cancellingTheWaiterEndsTheWaitAtOnce() async {
        let wake = TimerWake()
        let clock = ContinuousClock()
        let began = clock.now
        let waiter = Task { await wake.wait(upTo: .seconds(60)) }
        try? await Task.sleep(for: .milliseconds(100))
        waiter.cancel()
        await waiter.value
        #expect(clock.now - began < .seconds(10))
    }

    @Test func manyRoundsNeverSleepThroughASignal() async {
        let wake = TimerWake()
        let clock = ContinuousClock()
        let began = clock.now
        for round in 0..<200 {
            async let waited: Void = wake.wait(upTo: .seconds(60))
            if round % 2 == 0 { await Task.yield() }
            wake.signal()
            await waited
        }
        #expect(clock.now - began < .seconds(30), "a wait slept through its signal")
    }
}
