#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import LockstepCore
import Synchronization

/// The coordinator's wall clock: the one place outside tests where "now" comes from.
/// Recorded event times use it; lease TTLs will run on a monotonic clock (see docs/architecture.md).
public enum WallClock {
    public static func now() -> Instant {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        return Instant(millisecondsSinceEpoch: Int64(spec.tv_sec) * 1_000 + Int64(spec.tv_nsec) / 1_000_000)
    }
}

/// The server's clock: the wall clock read once at start, then advanced by the monotonic clock, and
/// never earlier than the last time already recorded in the log.
///
/// Every duration the coordinator measures through recorded instants (retry back-offs, bakes, lease
/// expiry records, deadlines counted from a migration's start) therefore runs at the monotonic clock's
/// pace: stepping the wall clock forward or back while the server runs moves none of them, and recorded
/// times never go backwards. A step of the wall clock shows as a difference between the two, which
/// `wallClockStep` reports so the server logs and counts it; the step is taken up at the next start
/// (and even then, a wall clock behind the log's last recorded time does not move recorded time back).
public final class CoordinatorClock: Sendable {
    private struct State {
        var anchorWallMillis: Int64
        var anchorMonotonicNanos: UInt64
        var lastMillis: Int64
        /// The wall clock's offset from this clock when it was last reported, in milliseconds.
        var reportedOffsetMillis: Int64 = 0
    }

    private let state: Mutex<State>
    private let wall: @Sendable () -> Instant
    private let monotonic: MonotonicClock

    /// - Parameters:
    ///   - notBefore: the last time recorded in the log, if any: this clock starts no earlier.
    public init(wall: @escaping @Sendable () -> Instant = WallClock.now, monotonic: @escaping MonotonicClock = systemMonotonicClock,
                notBefore: Instant? = nil) {
        self.wall = wall
        self.monotonic = monotonic
        let start = max(wall().millisecondsSinceEpoch, notBefore?.millisecondsSinceEpoch ?? .min)
        state = Mutex(State(anchorWallMillis: start, anchorMonotonicNanos: monotonic(), lastMillis: start))
    }

    /// Now: the start's wall time plus the monotonic time since, never before the last answer.
    public func now() -> Instant {
        let nanos = monotonic()
        return state.withLock { state in
            let elapsedMillis = Int64(clamping: (nanos &- state.anchorMonotonicNanos) / 1_000_000)
            let (sum, overflow) = state.anchorWallMillis.addingReportingOverflow(elapsedMillis)
            state.lastMillis = max(state.lastMillis, overflow ? .max : sum)
            return Instant(millisecondsSinceEpoch: state.lastMillis)
        }
    }

    /// How far the wall clock has stepped away from this clock since the last report, in milliseconds
    /// (positive: the wall clock jumped forward), when that is more than `thresholdMillis`; else nil.
    public func wallClockStep(thresholdMillis: Int64) -> Int64? {
        let ours = now().millisecondsSinceEpoch
        let theirs = wall().millisecondsSinceEpoch
        let offset = theirs.subtractingReportingOverflow(ours).partialValue
        return state.withLock { state in
            let step = offset.subtractingReportingOverflow(state.reportedOffsetMillis).partialValue
            guard step.magnitude > thresholdMillis.magnitude else { return nil }
            state.reportedOffsetMillis = offset
            return step
        }
    }
}
