import LockstepCore
import LockstepEngine
import LockstepWire

// What a leased step gives its agent, however it was leased (a poll's own lease, or a claim in the
// append that readied it): the step's answer, the lease's TTL, and the give-back when the agent went.
extension AgentAPI {
    /// The step a lease gives its agent: what to run (a forward step, its rollback, or a check), with the
    /// params, the exposure stage it sets (`nextStage`, for a forward step), and the lease's terms.
    static func step(migration: MigrationID, node: NodeID, spec: NodeSpec, lease leased: StepLeased, ttlMillis ttl: Int64,
                     nextStage: ExposureStage?) -> Lockstep_V1_Step {
        // A rollback returns an exposure node to its start (with the node's own action when it has no rollback action).
        let stage = switch leased.kind {
        case .forward: nextStage
        case .rollback: spec.exposure?.start
        case .check: ExposureStage?.none
        }
        // A check runs its own action (the check's name) with its own params.
        let check = spec.checks.first { $0.name == leased.check }
        return .with {
            $0.migrationID = migration.rawValue
            $0.nodeID = node.rawValue
            $0.kind = Lockstep_V1_StepKind(leased.kind)
            switch leased.kind {
            case .forward:
                $0.action = spec.action
                $0.paramsJson = spec.paramsJSON
            case .rollback:
                $0.action = spec.rollback?.action ?? (spec.exposure != nil ? spec.action : "")
                $0.paramsJson = spec.rollback?.paramsJSON ?? (spec.exposure != nil ? spec.paramsJSON : "{}")
            case .check:
                $0.action = leased.check
                $0.paramsJson = check?.paramsJSON ?? "{}"
            }
            if let stage {
                $0.stage = stage.name
                if let percent = stage.percent { $0.stagePercent = percent }
            }
            $0.attempt = leased.attempt
            $0.leaseID = "\(migration.rawValue)/\(node.rawValue)"
            $0.fencingToken = leased.token.rawValue
            $0.ttlMs = UInt32(clamping: ttl)
            $0.heartbeatIntervalMs = UInt32(clamping: max(1, ttl / 3))
        }
    }

    /// The answer to a poll leased a step in the append that readied it (a claim), with the poll's
    /// wake-up dated from that append's commit (`answered`).
    func answer(_ poll: inout PollCursor, claimed leased: LeasedClaim) -> Lockstep_V1_PollResponse {
        poll.wokenAt = nil
        poll.watchesRetry = false
        poll.answersWakeOf = leased.committedAt
        return .with { $0.step = Self.step(leased) }
    }

    /// The step of a lease made in the append that readied it (a claim).
    static func step(_ leased: LeasedClaim) -> Lockstep_V1_Step {
        step(migration: leased.migration, node: leased.node, spec: leased.spec, lease: leased.lease, ttlMillis: leased.ttlMillis, nextStage: leased.nextStage)
    }

    /// How a poll parked now may be leased the step an append readies, in that append (`Wakeups.claim`):
    /// its agent, its principal as the lease's holder and the event's actor, the lease's TTL. The wakeup
    /// table tells the poll how the claim ended (`Wakeups.Outcome.claimed`).
    func stepClaim(for poll: PollCursor) -> StepClaim {
        StepClaim(agent: poll.request.agentID, holder: poll.owner, pollID: poll.request.pollID,
                  context: CommandContext(actor: poll.principal.agentActor, triggeredBy: .agent),
                  defaultTTLMillis: limits.defaultLeaseTTLMillis) { _ in }
    }

    /// A step lease's TTL for a node with `spec`, in milliseconds: the node's heartbeat timeout, else the
    /// server's default, within the core's bounds (the same as a claim's, `StepClaim.ttlMillis`).
    func leaseTTLMillis(_ spec: NodeSpec) -> Int64 { spec.leaseTTLMillis(default: limits.defaultLeaseTTLMillis) }

    /// Gives back a step leased to a caller that went away before its answer could be handed over, so it
    /// need not wait for the lease to expire (its attempt is not counted).
    func giveBack(_ leased: StepLeased, migration: MigrationID, principal: Principal) async {
        do throws(CommandError) {
            _ = try await coordinator.giveBack(node: leased.node, token: leased.token, by: principal.name, migration: migration,
                                               context: CommandContext(actor: principal.agentActor, triggeredBy: .agent), now: clock())
        } catch {
            // Refused (the migration moved on) or not recorded (storage): the lease then expires as any lost agent's.
        }
    }
}
