import LockstepCore
import LockstepStore
import LockstepWire

// A readied step leased in the append that readies it. When a command's events grant a node its
// services (a hand-over in an agent's report, a grant of the lease queue), the step that node now has is
// offered to the polls parked on its service: the shell claims the longest-parked one, if any, and the
// machine decides that poll's lease on the migration as the events leave it and appends it with them.
// The woken poll then needs no commit of its own: the change and its lease are one commit (docs/api.md,
// `POST /v1/agent/poll`). Pure, like the rest of the machine: the shell does the claiming and reports back.
extension CoordinatorMachine {
    /// A step readied by a command's events, offered to a poll parked on `service` (the node's first
    /// service: the one `LogState.step(forService:at:)` finds it by).
    public struct StepOffer: Hashable, Sendable {
        /// The migration and node whose step it is.
        public var migration: MigrationID
        public var node: NodeID
        /// The node's first service, whose parked polls may claim it.
        public var service: String
        /// The node's spec (what the claiming poll's lease TTL is computed from).
        public var spec: NodeSpec
    }

    /// A parked poll's claim of `offers[offer]`: the lease to decide for it, recorded with `metadata`.
    public struct StepClaimed: Hashable, Sendable {
        /// The offer's index in `claimFor`'s list.
        public var offer: Int
        /// The lease's agent, its holder (the poll's principal) and TTL in milliseconds.
        public var agent: String
        public var holder: String
        public var ttlMillis: Int64
        /// What the lease's event records (the poll's principal as actor, `triggered_by: agent`).
        public var metadata: EventMetadata
        /// The agent's name for the poll ("" when none).
        public var pollID: String

        /// A claim of `offers[offer]` for `agent`.
        public init(offer: Int, agent: String, holder: String, ttlMillis: Int64, metadata: EventMetadata, pollID: String = "") {
            self.offer = offer
            self.agent = agent
            self.holder = holder
            self.ttlMillis = ttlMillis
            self.metadata = metadata
            self.pollID = pollID
        }
    }

    /// The steps `events` (decided for migration `id`, not yet folded) ready: one per node they grant
    /// services to, when the machine offers steps at all.
    func stepOffers(_ id: MigrationID, _ events: [MigrationEvent]) -> [StepOffer] {
        guard offersSteps, let migration = state.migrations[id] else { return [] }
        var offers: [StepOffer] = []
        for case .serviceLeasesGranted(let granted) in events {
            guard let spec = migration.plan.node(granted.node), let service = spec.services.first else { continue }
            offers.append(StepOffer(migration: id, node: granted.node, service: service, spec: spec))
        }
        return offers
    }

    /// The shell claimed `claims` of the steps offered to `caller`: each claim's lease is decided on the
    /// migration as the command's events (and the leases before it) leave it; those accepted join the
    /// append, the others are answered nil (that poll looks again). The caller is then told to append.
    mutating func claimed(_ caller: Caller, _ claims: [StepClaimed]) -> [Action] {
        guard case .offering(let pending, let id, let events, let offers)? = inFlight.removeValue(forKey: caller) else {
            assertionFailure("caller \(caller) reported claims it was not offered")
            return []
        }
        // Writes stopped while it claimed (another stream's append failed): refused, nothing appended.
        if let stopped { return [.tell(caller, .refused(.storage(stopped)))] + advance(pending.command.stream) }
        var records = [(event: MigrationEvent, metadata: EventMetadata)]()
        records.reserveCapacity(events.count + claims.count)
        for event in events { records.append((event, pending.metadata)) }
        var after = state.migrations[id]
        for event in events { after?.evolve(event) }
        var leasedAt: [Int?] = []
        for claim in claims {
            guard offers.indices.contains(claim.offer), var migration = after else {
                leasedAt.append(nil)
                continue
            }
            let decision = state.decideLease(node: offers[claim.offer].node, agent: claim.agent, ttlMillis: claim.ttlMillis, holder: claim.holder,
                                             pollID: claim.pollID, of: migration, now: pending.now)
            // A lease is one event (its bookkeeping is inert); anything else is not a lease this poll can be given.
            guard case .accepted(let leased) = decision, leased.count == 1,
                  case .stepLeased = leased[0] else {
                leasedAt.append(nil)
                continue
            }
            migration.evolve(leased[0])
            after = migration
            leasedAt.append(records.count)
            records.append((leased[0], claim.metadata))
        }
        let base = state.migrations[id]?.version ?? 0
        let logRecords = Self.numbered(records, migration: id, after: base)
        let (actions, inFlight) = append(logRecords, for: pending, after: base, claimed: leasedAt)
        guard inFlight else {
            // Refused before any append (the records did not encode): the stream's next command starts.
            return actions + advance(pending.command.stream)
        }
        return actions
    }
}
