import LockstepCore
import Synchronization

/// The services a poll may find a step for (`LogState.mayHaveStep(forService:)`), readable from any
/// thread without a hop to the coordinator. A step can be leased only for a service whose holding node
/// holds all its services and has no step leased; anything else ends only with an append (a grant, a
/// release, a lease's end), never with the time alone. So a poll for a service outside the set is
/// answered, or parked, where it arrived, or where a change woke it, with no look at the coordinator;
/// and a change wakes no poll of a service outside the set (`Wakeups.signalSteps`): another poll's
/// lease of its step, for one, wakes nobody.
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

    /// Brings the set up to date with `state` after `change` was folded in (a change of no migration, a
    /// plan's or a freeze's: the whole set is computed again). A follower's page tells one change per
    /// migration it touched, each published in turn.
    ///
    /// Whether a service is in the set depends on its holder and on the holder's migration alone, and
    /// both change only with an append to a migration's stream: the holder's own (a lease, its end, a
    /// release, the migration settling), or the stream of the migration granted the service (after the
    /// holder before released it, in its own append). Either way the service is one that migration's plan
    /// transitions, which `change.services` names. So only those services are looked at again: a look-up
    /// in the holders and, for a held one, the node look-ups of its holder's migration. The work is the
    /// size of one plan's service list, whatever the number of services and migrations live (it was a
    /// pass over every holder, and a copy of the whole set, after each append). The simulation checks the
    /// set against the whole state after every step.
    func publish(_ state: LogState, after change: CoordinatorMachine.Change) {
        guard change.migration != nil else {
            let next = Self.services(of: state)
            services.withLock { if $0 != next { $0 = next } }
            return
        }
        var present: [String] = []
        var absent: [String] = []
        for service in change.services {
            if state.mayHaveStep(forService: service) { present.append(service) } else { absent.append(service) }
        }
        services.withLock { set in
            for service in absent { set.remove(service) }
            for service in present { set.insert(service) }
        }
    }

    private static func services(of state: LogState) -> Set<String> {
        Set(state.serviceLeases.holders.keys.filter { state.mayHaveStep(forService: $0) })
    }
}
