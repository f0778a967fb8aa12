#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import LockstepCore

/// The coordinator's wall clock: the one place outside tests where "now" comes from.
/// Recorded event times use it; lease TTLs will run on a monotonic clock (see docs/architecture.md).
public enum WallClock {
    public static func now() -> Instant {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        return Instant(millisecondsSinceEpoch: Int64(spec.tv_sec) * 1_000 + Int64(spec.tv_nsec) / 1_000_000)
    }
}
