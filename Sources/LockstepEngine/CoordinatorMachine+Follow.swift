import LockstepCore
import LockstepStore

// A replica's machine: it never appends; it folds what the writer appended, read from the shared log
// (docs/operations.md). The same fold as the writer's own appends, so a replica's live state at
// sequence N is the writer's at N, byte for byte (`LogState.digest`).
extension CoordinatorMachine {
    /// One event of the shared log, decoded and checked (`History`), at its global sequence.
    public struct FollowedEvent: Hashable, Sendable {
        public var sequence: UInt64
        public var record: LogRecord
        public init(sequence: UInt64, record: LogRecord) {
            self.sequence = sequence
            self.record = record
        }
    }

    /// Folds `events`, which must follow on from `foldedThrough` without a gap (anything already folded
    /// is skipped, so a page read twice is harmless; a gap folds nothing and says so with no change).
    /// Lease timers and waits follow each migration touched, and one change per migration (and one for
    /// plans) wakes whoever watches it, in the order the migrations were first touched.
    mutating func followed(_ events: [FollowedEvent], nanos: UInt64) -> [Action] {
        let fresh = events.drop { $0.sequence <= foldedThrough }
        guard let first = fresh.first, first.sequence == foldedThrough + 1, !inFlightAppends else { return [] }
        var expected = first.sequence
        var touched: [MigrationID] = []
        var recorded: [MigrationID: [MigrationEvent]] = [:]
        var services: [MigrationID: Set<String>] = [:]
        var plans = false
        var frozen = Set<String>()
        for event in fresh {
            guard event.sequence == expected else { break }
            switch event.record {
            case .plan:
                plans = true
                state.evolve(event.record, sequence: event.sequence)
            case .freeze(let freezeEvent):
                frozen.formUnion(frozenServices(freezeEvent.event))
                state.evolve(event.record, sequence: event.sequence)
            case .checkpoint:
                state.evolve(event.record, sequence: event.sequence)
            case .migration(let migrationEvent):
                let id = migrationEvent.migration
                if recorded[id] == nil {
                    touched.append(id)
                    recorded[id] = []
                }
                // The plan, read before the fold: an event that settles the migration takes it out of the live state.
                let before = state.migrations[id]?.plan
                state.evolve(migration: id, sequence: event.sequence, migrationEvent.event)
                if let plan = before ?? state.migrations[id]?.plan { services[id, default: []].formUnion(plan.transitionedServices) }
                recorded[id, default: []].append(migrationEvent.event)
            }
            expected += 1
        }
        noteFolded(first.sequence...(expected - 1))
        var actions: [Action] = plans || !frozen.isEmpty ? [.changed(Change(migration: nil, services: frozen))] : []
        for id in touched {
            armLeases(id, leases: state.migrations[id].map(StepLeaseTimer.leases(of:)) ?? [], nanos: nanos)
            markTimers(of: id)
            actions.append(.changed(Change(migration: id, services: services[id] ?? [], events: recorded[id] ?? [])))
        }
        return actions
    }

    /// Whether an append the machine asked for is in flight: a follower has none (it never appends).
    var inFlightAppends: Bool {
        inFlight.values.contains { if case .appending = $0 { true } else { false } }
    }
}
