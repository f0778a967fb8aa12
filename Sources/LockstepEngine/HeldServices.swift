import LockstepCore
import Synchronization

/// The services some node holds now (service leases), readable from any thread without a hop to the
/// coordinator. A step can be leased only for a service that a node holds (`LogState.step(forService:at:)`
/// starts from the holder and finds nothing, and no retry to wait for, without one), so a poll for a
/// service nobody holds is answered, or parked, where it arrived.
///
/// The coordinator publishes the set after each append is folded in and before the change is signalled
/// (`Coordinator.feed`): a poll that reads the wake-up generation, then finds its service free here,
/// parks after that generation, and the change that makes the service held wakes it.
public final class HeldServices: Sendable {
    private let held: Mutex<Set<String>>

    init(_ holders: [String: ServiceHolder]) {
        held = Mutex(Set(holders.keys))
    }

    /// Whether a node holds `service` now.
    public func contains(_ service: String) -> Bool {
        held.withLock { $0.contains(service) }
    }

    /// Replaces the set with the holders' services (the set is left alone when they are the same).
    func publish(_ holders: [String: ServiceHolder]) {
        held.withLock { held in
            guard held.count != holders.count || !holders.keys.allSatisfy(held.contains) else { return }
            held = Set(holders.keys)
        }
    }
}
