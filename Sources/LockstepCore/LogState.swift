/// The state of every migration in a log: the fold the coordinator keeps live and replay rebuilds.
public struct LogState: Hashable, Sendable {
    /// Migrations by id. Never iterated for anything that matters: use `migrationsInOrder`.
    public private(set) var migrations: [MigrationID: MigrationState]
    /// Applied plans by name, versions oldest first. Never iterated for anything that matters: use `plansInOrder`.
    public private(set) var plans: [String: [PlanSnapshot]]
    /// The highest global sequence folded in (0 = nothing yet).
    public private(set) var lastSequence: UInt64
    /// Who holds which service lease and who waits in line: an index of the nodes' `serviceLeases`.
    public private(set) var serviceLeases: ServiceLeaseIndex
    /// The ids of the migrations not yet settled: an index of `migrations`, so that work done on every
    /// poll or timer tick does not grow with the settled history. Never iterated for anything that
    /// matters: use `unsettledInOrder`.
    public private(set) var unsettled: Set<MigrationID>
    /// Settled migrations that have left `migrations`, kept only by a fold that asked for them
    /// (`init(keepingSettled:)`; nil otherwise, and always in the coordinator): a reviewer's "every
    /// migration as of sequence N". Not part of the canonical bytes, so not of the digest.
    public private(set) var settledKept: [MigrationID: MigrationState]?
    /// Freezes declared and not ended, by id. Never iterated for anything that matters: use `freezesInOrder`.
    public internal(set) var freezes: [String: Freeze]
    /// Which freezes cover which services: built with the state, kept as freezes are declared and ended
    /// (`evolve(freeze:)` changes both; nothing else writes either).
    var freezeIndex = FreezeIndex()

    public init() {
        self.migrations = [:]
        self.plans = [:]
        self.lastSequence = 0
        self.serviceLeases = ServiceLeaseIndex()
        self.unsettled = []
        self.freezes = [:]
    }

    /// An empty state whose fold keeps the settled migrations it retires in `settledKept`.
    public init(keepingSettled: Bool) {
        self.init()
        if keepingSettled { settledKept = [:] }
    }

    /// Keeps the settled migrations the fold retires from now on in `settledKept` (a state decoded from
    /// a log's base, folded on for a reviewer: those settled before the base were archived with it).
    public mutating func keepSettledFromNowOn() {
        if settledKept == nil { settledKept = [:] }
    }

    /// Every migration the fold has seen, the settled ones kept in `settledKept` included, sorted by id.
    public var everyMigrationInOrder: [MigrationState] {
        (Array(migrations.values) + (settledKept.map { Array($0.values) } ?? [])).sorted { $0.id < $1.id }
    }

    init(migrations: [MigrationID: MigrationState], plans: [String: [PlanSnapshot]], freezes: [String: Freeze], lastSequence: UInt64) {
        self.freezes = freezes
        self.freezeIndex = FreezeIndex(freezes)
        self.migrations = migrations
        self.plans = plans
        self.lastSequence = lastSequence
        self.serviceLeases = ServiceLeaseIndex(migrations: migrations.values.sorted { $0.id < $1.id })
        self.unsettled = Set(migrations.values.lazy.filter { !$0.status.isSettled }.map(\.id))
    }

    /// Folds in one record of any stream at global position `sequence`.
    public mutating func evolve(_ record: LogRecord, sequence: UInt64) {
        switch record {
        case .migration(let event):
            evolve(migration: event.migration, sequence: sequence, event.event)
        case .plan(let event):
            switch event.event {
            case .planApplied(let plan): plans[event.plan, default: []].append(plan)
            }
            lastSequence = max(lastSequence, sequence)
        case .freeze(let event):
            evolve(freeze: event)
            lastSequence = max(lastSequence, sequence)
        case .checkpoint:
            // A statement about the log, not part of any state it decides with.
            lastSequence = max(lastSequence, sequence)
        }
    }

    /// The version of `record`'s stream before it: what the record's own version must follow.
    public func currentVersion(of record: LogRecord) -> UInt64 {
        switch record {
        // Borrowed through the index (`Values` reads in place): `migrations[id]?.version` would copy the migration.
        case .migration(let event): migrations.index(forKey: event.migration).map { migrations.values[$0].version } ?? 0
        case .plan(let event): UInt64(plans[event.plan]?.count ?? 0)
        // A freeze's stream holds its declaration and, once, its end (after which it leaves the state).
        case .freeze(let event): freezes[event.freeze] != nil ? 1 : 0
        // Each checkpoint has a stream of its own, written once.
        case .checkpoint: 0
        }
    }

    /// Migrations sorted by id (UTF-8 byte order): the one order anything observable uses.
    public var migrationsInOrder: [MigrationState] {
        migrations.values.sorted { $0.id < $1.id }
    }

    /// The migrations not yet settled, sorted by id: what timers and polls look at.
    public var unsettledInOrder: [MigrationState] {
        unsettled.sorted().compactMap { migrations[$0] }
    }

    /// Folds in one event of migration `id` recorded at global position `sequence`.
    public mutating func evolve(migration id: MigrationID, sequence: UInt64, _ event: MigrationEvent) {
        // In place through the dictionary's modify accessor (no copy of the migration's arrays), one lookup.
        var settled = false
        if let status = migrations[id]?.evolvedStatus(event) {
            // Settling is final (a settled migration refuses every command), so the index only shrinks
            // here; events after the settling one (releases in the same append) find it gone.
            if status.isSettled { unsettled.remove(id) }
            settled = status.isSettled
        } else if let started = MigrationState.evolve(nil, event) {
            migrations[id] = started
            if !started.status.isSettled { unsettled.insert(id) }
        }
        switch event {
        case .serviceLeasesRequested(let requested):
            // A node's place in line is the global sequence of its request, which only the log knows.
            if migrations[id]?.node(requested.node) != nil { migrations[id]?.stampRequest(requested.node, sequence: sequence) }
            serviceLeases.apply(event, of: id, sequence: sequence)
        case .serviceLeasesWithdrawn, .serviceLeasesGranted, .serviceLeasesReleased:
            serviceLeases.apply(event, of: id, sequence: sequence)
        default:
            break
        }
        if settled { retireIfDone(id) }
        lastSequence = max(lastSequence, sequence)
    }

    /// Folds the events of one migration's stream (with their global sequences, in order) into its state,
    /// settled or not: how a migration that has left the live state is read. For a migration still in
    /// the live state it gives the same value as `migrations[id]` at the same point of the log.
    public static func migration(replaying events: some Sequence<(sequence: UInt64, event: MigrationEvent)>) -> MigrationState? {
        var state: MigrationState?
        for (sequence, event) in events {
            if state != nil {
                _ = state?.evolvedStatus(event)
            } else {
                state = MigrationState.evolve(nil, event)
            }
            if case .serviceLeasesRequested(let requested) = event, state?.node(requested.node) != nil {
                state?.stampRequest(requested.node, sequence: sequence)
            }
        }
        return state
    }

    /// A settled migration that neither holds nor waits for a service leaves the live state (canonical
    /// format 6): nothing can change it any more (every command to it is refused, its stream takes no
    /// more events), so keeping it would only make snapshots and every copy of the state grow with
    /// history. Its status and events stay in its stream (`migration/ID`), which is where readers of a
    /// settled migration find it. One still holding a service (an old history, or releases that follow
    /// in the same append) leaves when its last release is folded.
    private mutating func retireIfDone(_ id: MigrationID) {
        guard let index = migrations.index(forKey: id) else { return }
        let migration = migrations.values[index]
        guard migration.status.isSettled, migration.nodes.allSatisfy({ $0.serviceLeases == .none }) else { return }
        migrations.remove(at: index)
        settledKept?[migration.id] = migration
    }
}
