import LockstepCore
import LockstepEngine
import Synchronization
import Testing

/// The server's clock: the wall clock at start advanced by the monotonic clock (issue 14: retry
/// back-offs, bakes, lease-expiry records and deadlines followed wall-clock jumps).
struct CoordinatorClockTests {
    /// A wall clock and a monotonic clock the test moves by hand.
    final class Clocks: Sendable {
        let wallMillis = Mutex<Int64>(1_800_000_000_000)
        let monotonicNanos = Mutex<UInt64>(5_000_000_000)

        func advance(millis: Int64) {
            wallMillis.withLock { $0 += millis }
            monotonicNanos.withLock { $0 += UInt64(millis) * 1_000_000 }
        }

        func jumpWall(millis: Int64) { wallMillis.withLock { $0 += millis } }

        func clock(notBefore: Instant? = nil) -> CoordinatorClock {
            CoordinatorClock(wall: { Instant(millisecondsSinceEpoch: self.wallMillis.withLock { $0 }) },
                             monotonic: { self.monotonicNanos.withLock { $0 } }, notBefore: notBefore)
        }
    }

    @Test func timePassesAtTheMonotonicPaceWhateverTheWallClockDoes() {
        let clocks = Clocks()
        let clock = clocks.clock()
        #expect(clock.now() == Instant(millisecondsSinceEpoch: 1_800_000_000_000))
        clocks.advance(millis: 10_000)
        #expect(clock.now() == Instant(millisecondsSinceEpoch: 1_800_000_010_000))
        // +1 h, then -1 h, then +24 h on the wall clock: Lockstep's clock does not move with it.
        for jump: Int64 in [3_600_000, -7_200_000, 86_400_000 + 3_600_000] {
            clocks.jumpWall(millis: jump)
            #expect(clock.now() == Instant(millisecondsSinceEpoch: 1_800_000_010_000))
        }
        clocks.advance(millis: 250)
        #expect(clock.now() == Instant(millisecondsSinceEpoch: 1_800_000_010_250))
    }

    @Test func aWallClockStepIsReportedOnceWithItsSizeAndSign() {
        let clocks = Clocks()
        let clock = clocks.clock()
        #expect(clock.wallClockStep(thresholdMillis: 1_000) == nil)
        clocks.jumpWall(millis: 500)
        #expect(clock.wallClockStep(thresholdMillis: 1_000) == nil, "a step within the threshold is not reported")
        clocks.jumpWall(millis: 3_600_000)
        #expect(clock.wallClockStep(thresholdMillis: 1_000) == 3_600_500)
        #expect(clock.wallClockStep(thresholdMillis: 1_000) == nil, "the same offset is not reported twice")
        clocks.jumpWall(millis: -7_200_000)
        #expect(clock.wallClockStep(thresholdMillis: 1_000) == -7_200_000)
    }

    /// Recorded times never go backwards: across a restart whose wall clock is behind the log's last
    /// recorded time, the clock starts at that time.
    @Test func aRestartBehindTheLogStartsAtTheLogsLastTime() {
        let clocks = Clocks()
        let last = Instant(millisecondsSinceEpoch: 1_800_000_900_000)
        let clock = clocks.clock(notBefore: last)
        #expect(clock.now() == last)
        clocks.advance(millis: 1)
        #expect(clock.now() == Instant(millisecondsSinceEpoch: 1_800_000_900_001))
        // A wall clock ahead of the log starts the clock at the wall clock.
        #expect(Clocks().clock(notBefore: Instant(millisecondsSinceEpoch: 0)).now() == Instant(millisecondsSinceEpoch: 1_800_000_000_000))
    }

    /// The retry back-off is measured through recorded instants: with the server's clock, a wall jump
    /// of +1 h does not make attempt 2 of a 10 s back-off due early (the landed build offered it after
    /// 0.21 s), and -1 h does not hold it past 10 s.
    @Test func aBackoffDueTimeIsUnmovedByWallClockJumps() {
        let clocks = Clocks()
        let clock = clocks.clock()
        let retryAt = clock.now().adding(milliseconds: 10_000)
        clocks.jumpWall(millis: 3_600_000)
        clocks.advance(millis: 210)
        #expect(clock.now() < retryAt)
        clocks.jumpWall(millis: -7_200_000)
        clocks.advance(millis: 9_790)
        #expect(clock.now() == retryAt)
    }
}
