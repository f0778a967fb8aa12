import LockstepCore
import LockstepStore
import LockstepWire

/// A parked poll the coordinator may lease a step to in the append that readies the step
/// (CoordinatorMachine+Claims): who would hold the lease, and how the poll is told.
public struct StepClaim: Sendable {
    /// The same claim, told through `deliver` instead.
    public func delivering(to deliver: @escaping @Sendable (StepClaimEnd) -> Void) -> StepClaim {
        var claim = self
        claim.deliver = deliver
        return claim
    }

    /// The agent the step is leased to (the poll's `agent_id`).
    public var agent: String
    /// The principal the lease is granted to.
    public var holder: String
    /// The agent's name for the poll ("" when none), recorded with the lease.
    public var pollID: String
    /// What the lease's event records as its actor and cause (the poll's principal, `triggered_by: agent`).
    public var context: CommandContext
    /// The lease's TTL for a node whose spec sets no heartbeat timeout, in milliseconds (`ttlMillis(_:)`).
    public var defaultTTLMillis: Int64
    /// Told once, from the coordinator, how a claim handed to it ended. Must not block. (A claim a poll
    /// parks with in a wakeup table is not told: the table hands over one that resumes the poll.)
    public var deliver: @Sendable (StepClaimEnd) -> Void

    /// Every parked poll that may be claimed holds one, so a claim holds values and only the closure it is
    /// told through (a poll parked in a wakeup table gives `{ _ in }`, which allocates nothing).
    public init(agent: String, holder: String, pollID: String = "", context: CommandContext, defaultTTLMillis: Int64,
                deliver: @escaping @Sendable (StepClaimEnd) -> Void) {
        self.agent = agent
        self.holder = holder
        self.pollID = pollID
        self.context = context
        self.defaultTTLMillis = defaultTTLMillis
        self.deliver = deliver
    }

    /// The lease's TTL for a node with `spec`, in milliseconds: as a poll's own lease would have it
    /// (`NodeSpec.leaseTTLMillis(default:)`).
    public func ttlMillis(_ spec: NodeSpec) -> Int64 { spec.leaseTTLMillis(default: defaultTTLMillis) }
}

/// How a claim ended: the step leased to it, in an append whose commit ended at `committedAt`; or not
/// leased, and the poll looks again: woken by the change whose commit ended at `changedAt` (its lease was
/// refused: a freeze, a closed window, a gate), or with no change (nil: the command was refused or its
/// append failed; after an unknown commit outcome writes have stopped, and a lease that did land expires).
public enum StepClaimEnd: Hashable, Sendable {
    /// The step was leased to the claim, in the append that readied it.
    case leased(LeasedClaim)
    /// No step was leased to it; `changedAt`: when the change it was claimed for committed (nil: none did).
    case notLeased(changedAt: ContinuousClock.Instant?)
}

/// A step leased to a claiming poll: what its answer is built from.
public struct LeasedClaim: Hashable, Sendable {
    /// The migration and node whose step was leased, and the node's spec.
    public var migration: MigrationID
    public var node: NodeID
    public var spec: NodeSpec
    /// The lease as recorded (`step_leased`), and its TTL in milliseconds.
    public var lease: StepLeased
    public var ttlMillis: Int64
    /// The exposure stage a forward step sets next (read after the lease, which holds it still).
    public var nextStage: ExposureStage?
    /// When the commit of the append that readied the step, and leased it, ended.
    public var committedAt: ContinuousClock.Instant
}

extension Coordinator {
    /// Sets who is asked for a parked poll when a command readies a step: `claim` takes the
    /// longest-parked claimable poll of a service out of its table (nil: none), or is nil to stop.
    public func claimSteps(with claim: (@Sendable (String) -> StepClaim?)?) {
        stepClaimer = claim
        machine.offersSteps = claim != nil
    }

    /// Claims a parked poll for each offered step the claimer has one for; reports them to the machine.
    func claim(_ offers: [CoordinatorMachine.StepOffer], for caller: CoordinatorMachine.Caller, now: Instant,
               into claims: inout [(StepClaim, ttlMillis: Int64)]) -> Word {
        var claimed: [CoordinatorMachine.StepClaimed] = []
        if let stepClaimer {
            for (index, offer) in offers.enumerated() {
                guard let claim = stepClaimer(offer.service) else { continue }
                let ttl = claim.ttlMillis(offer.spec)
                claims.append((claim, ttl))
                let metadata = EventMetadata(recordedAt: now, actor: claim.context.actor, triggeredBy: claim.context.triggeredBy,
                                             causationID: claim.context.causationID, correlationID: claim.context.correlationID)
                claimed.append(.init(offer: index, agent: claim.agent, holder: claim.holder, ttlMillis: ttl, metadata: metadata, pollID: claim.pollID))
            }
        }
        return report(.claimed(caller, claimed), for: caller)
    }

    /// Tells each claim how it ended: its lease (in `performed.claims`, by position), or not leased.
    func settle(_ claims: [(StepClaim, ttlMillis: Int64)], _ performed: CoordinatorMachine.Performed?, committedAt: ContinuousClock.Instant?) {
        for (index, (claim, ttl)) in claims.enumerated() {
            guard let performed, let committedAt, performed.claims.indices.contains(index), let recorded = performed.claims[index],
                  case .stepLeased(let lease) = recorded.event, let migration = machine.state.migrations[recorded.migration],
                  let spec = migration.plan.node(lease.node) else {
                claim.deliver(.notLeased(changedAt: performed == nil ? nil : committedAt))
                continue
            }
            let stage = lease.kind == .forward && spec.exposure != nil ? migration.nextStage(of: lease.node) : nil
            claim.deliver(.leased(LeasedClaim(migration: recorded.migration, node: lease.node, spec: spec, lease: lease, ttlMillis: ttl,
                                              nextStage: stage, committedAt: committedAt)))
        }
    }
}
