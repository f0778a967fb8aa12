import LockstepCore
import Synchronization

/// The services a poll may find a step for (`LogState.mayHaveStep(forService:)`), readable from any
/// thread without a hop to the coordinator. A step can be leased only for a service whose holding node
/// holds all its services and has no step leased; anything else ends only with an append (a grant, a
/// release, a lease's end), never with the time alone. So a poll for a service outside the set is
/// answered, or parked, where it arrived, or where a change woke it, with no look at the coordinator
/// (unless it is a named poll whose name the service's running lease carries: `hasLease`); and a change
/// wakes no poll of a service outside the set (`Wakeups.signalSteps`): another poll's lease of its step,
/// for one, wakes nobody but the poll parked under the name that lease carries, if any (a send again of
/// the poll that took it: `publish` returns the names it publishes anew).
///
/// Beside the set, the name of the poll that took the step lease running at each service's holder
/// (`hasLease`): a named poll sent again asks the coordinator for its lease only when its name is there.
///
/// The coordinator publishes both after each append is folded in and before the change is signalled
/// (`Coordinator.feed`): a poll that reads the wake-up generation, then finds its service outside here,
/// parks after that generation, and the change that may give the service a step wakes it.
public final class StepServices: Sendable {
    /// What is published: the services that may have a step, and the name of the poll that took each
    /// named step lease running at a service's holder (`LogState.stepsAndLeaseName(ofService:)`).
    private struct Published {
        var steps: Set<String>
        var leasePollIDs: [String: String]
    }

    private let published: Mutex<Published>

    init(_ state: LogState) {
        published = Mutex(Self.published(of: state))
    }

    /// Whether a poll of `service` may find a step now.
    public func contains(_ service: String) -> Bool {
        published.withLock { $0.steps.contains(service) }
    }

    /// For a poll of `service` named `pollID` (may be empty), in one read: whether it may find a step now
    /// (`contains`), and whether the running lease carries its name (`hasLease`).
    public func look(_ service: String, pollID: String) -> (mayHaveStep: Bool, leaseIsItsOwn: Bool) {
        published.withLock { ($0.steps.contains(service), !pollID.isEmpty && $0.leasePollIDs[service] == pollID) }
    }

    /// Whether the step lease running at `service`'s holder was taken by a poll named `pollID`: only
    /// then can a named poll sent again get a lease back (`Coordinator.leaseTakenAgain`), so a named poll
    /// asks the coordinator for it only then, and otherwise looks as an unnamed poll does, with no hop.
    /// A send of the same poll whose lease is appended after this look is not seen by it (as a poll that
    /// asked the coordinator before that append would not see it either).
    public func hasLease(ofService service: String, takenBy pollID: String) -> Bool {
        published.withLock { $0.leasePollIDs[service] == pollID }
    }

    /// Those of `services` that may have a step now (`contains`), in one read (`Wakeups.signalSteps`).
    public func steps(among services: Set<String>) -> Set<String> {
        published.withLock { published in services.filter { published.steps.contains($0) } }
    }

    /// Brings what is published up to date with `state` after `change` was folded in (a change of no
    /// migration, a plan's or a freeze's: all of it is computed again). A follower's page tells one
    /// change per migration it touched, each published in turn.
    ///
    /// Whether a service is in the set, and the name of its holder's lease, depend on its holder and on
    /// the holder's migration alone, and both change only with an append to a migration's stream: the
    /// holder's own (a lease, its end, a release, the migration settling), or the stream of the migration
    /// granted the service (after the holder before released it, in its own append). Either way the
    /// service is one that migration's plan transitions, which `change.services` names. So only those
    /// services are looked at again: a look-up in the holders and, for a held one, the node look-ups of
    /// its holder's migration. The work is the size of one plan's service list, whatever the number of
    /// services and migrations live (it was a pass over every holder, and a copy of the whole set, after
    /// each append). The simulation checks both against the whole state after every step.
    ///
    /// Returns the services whose running step lease this change gave a name (a named poll's lease taken
    /// or claimed), with the name: none for a change of no migration, which takes no lease.
    func publish(_ state: LogState, after change: CoordinatorMachine.Change) -> [String: String] {
        guard change.migration != nil else {
            var next = Self.published(of: state)
            // The old value is released after the lock (`next` holds it then), not while polls wait.
            published.withLock { swap(&$0, &next) }
            return [:]
        }
        var looks: [(service: String, mayHaveStep: Bool, leasePollID: String?)] = []
        looks.reserveCapacity(change.services.count)
        for service in change.services {
            let (mayHaveStep, leasePollID) = state.stepsAndLeaseName(ofService: service)
            looks.append((service, mayHaveStep, leasePollID))
        }
        return published.withLock { published in
            var named: [String: String] = [:]
            for look in looks {
                if look.mayHaveStep { published.steps.insert(look.service) } else { published.steps.remove(look.service) }
                if let name = look.leasePollID {
                    if published.leasePollIDs.updateValue(name, forKey: look.service) != name { named[look.service] = name }
                } else {
                    published.leasePollIDs.removeValue(forKey: look.service)
                }
            }
            return named
        }
    }

    private static func published(of state: LogState) -> Published {
        var published = Published(steps: [], leasePollIDs: [:])
        for service in state.serviceLeases.holders.keys {
            let (mayHaveStep, leasePollID) = state.stepsAndLeaseName(ofService: service)
            if mayHaveStep { published.steps.insert(service) }
            if let leasePollID { published.leasePollIDs[service] = leasePollID }
        }
        return published
    }
}
