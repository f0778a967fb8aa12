import LockstepCore
import Synchronization

/// The services a poll may find a step for (`LogState.mayHaveStep(forService:)`), readable from any
/// thread without a hop to the coordinator. A step can be leased only for a service whose holding node
/// holds all its services and has no step leased; anything else ends only with an append (a grant, a
/// release, a lease's end), never with the time alone. So a poll for a service outside the set is
/// answered, or parked, where it arrived, or where a change woke it: the change that wakes the
/// longest-parked poll of a service when another poll leases its step costs that poll no look at the
/// coordinator.
///
/// The coordinator publishes the set after each append is folded in and before the change is signalled
/// (`Coordinator.feed`): a poll that reads the wake-up generation, then finds its service outside here,
/// parks after that generation, and the change that may give the service a step wakes it.
public final class StepServices: Sendable {
    private let services: Mutex<Set<String>>

    init(_ state: LogState) {
        services = Mutex(Self.services(of: state))
    }

    /// Whether a poll of `service` may find a step now.
    public func contains(_ service: String) -> Bool {
        services.withLock { $0.contains(service) }
    }

    /// Replaces the set with `state`'s (the set is left alone when it is the same). Costs a look-up or
    /// three per held service.
    func publish(_ state: LogState) {
        let current = services.withLock { $0 }
        var same = true
        var count = 0
        for service in state.serviceLeases.holders.keys where state.mayHaveStep(forService: service) {
            count += 1
            if !current.contains(service) {
                same = false
                break
            }
        }
        guard !same || count != current.count else { return }
        let next = Self.services(of: state)
        services.withLock { $0 = next }
    }

    private static func services(of state: LogState) -> Set<String> {
        Set(state.serviceLeases.holders.keys.filter { state.mayHaveStep(forService: $0) })
    }
}
