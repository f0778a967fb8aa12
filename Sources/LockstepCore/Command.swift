// The one decide: every command the engine is asked to record, grouped by who decides it, composed in
// `LogState.decide` (docs/architecture.md, "One decide"). No decider receives a command it can only refuse.

/// Everything the engine can be asked to record, by who decides it.
public enum Command: Hashable, Sendable {
    /// Decided by one migration from its own state; the lease queue then adds any hand-over it allows.
    case migration(MigrationID, MigrationCommand)
    /// Decided by the lease queue, which sees every migration's place in line for a service.
    case serviceLeases(ServiceLeaseCommand)
    /// Decided by the plan registry.
    case plans(PlanCommand)
    /// Decided by the freezes.
    case freezes(FreezeCommand)
    /// Signed checkpoints (Checkpoint.swift).
    case checkpoints(CheckpointCommand)

    /// The stream the command's events go to: one command per stream is decided and appended at a time.
    public var stream: String {
        switch self {
        case .migration(let id, _): RecordedEvent.stream(of: id)
        case .serviceLeases(let command): RecordedEvent.stream(of: command.migration)
        case .plans(.apply(let plan)): RecordedPlanEvent.stream(of: plan.name)
        case .freezes(let command): RecordedFreezeEvent.stream(of: command.id)
        case .checkpoints(.record(let checkpoint)): RecordedCheckpoint.stream(of: checkpoint.sequence)
        }
    }
}

/// What the lease queue decides: who gets a service, and an operator taking one back.
public enum ServiceLeaseCommand: Hashable, Sendable {
    /// Grant `node` of `migration` all its services, if its request is first in line for each of them
    /// among the requests recorded up to global sequence `through` and none is held.
    case grant(migration: MigrationID, node: NodeID, through: UInt64)
    /// An operator forces `node` of `migration` to give back its services (allowed when no step of it is
    /// running, including in a migration that failed while holding them).
    case forceRelease(migration: MigrationID, node: NodeID, reason: String)
    /// The coordinator: `node` of `migration` holds its services but a freeze holds its forward step and it
    /// has not started transitioning them; it gives them back and asks again (docs/gates.md), so the
    /// freeze holds up nobody else, a rollback least of all.
    case yieldToFreeze(migration: MigrationID, node: NodeID)

    /// The migration whose stream records the decision.
    public var migration: MigrationID {
        switch self {
        case .grant(let migration, _, _), .forceRelease(let migration, _, _), .yieldToFreeze(let migration, _): migration
        }
    }
}

/// What the plan registry decides.
public enum PlanCommand: Hashable, Sendable {
    /// Apply `plan`'s content (its `contentHash` set by the engine) as the next version of its name,
    /// unless the newest version already has that content.
    case apply(PlanSnapshot)
}

/// What `LogState.decide` concluded for a command.
public enum Ruling: Hashable, Sendable {
    /// Append `events` to migration `id`'s stream. None: the command is valid and records nothing (a
    /// heartbeat: the engine extends the lease on its monotonic clock).
    case migrationEvents(MigrationID, [MigrationEvent])
    /// Append `event` to plan `name`'s stream.
    case planEvent(String, PlanEvent)
    /// Append `event` to freeze `id`'s stream.
    case freezeEvent(String, FreezeEvent)
    /// Append `checkpoint` to its own stream (`checkpoint/SEQUENCE`, version 1).
    case checkpoint(Checkpoint)
    /// The plan's newest version already has this content: nothing to record.
    case planUnchanged(version: UInt64)
    /// Nothing happens, and why.
    case rejected(Rejection)
}

extension LogState {
    /// Decides `command` at `now`: the one place the deciders are composed.
    ///
    /// - A migration's own commands go to `MigrationState.decide` (which appends the service-lease
    ///   bookkeeping they imply), then to the lease queue's hand-over (`handOver`). Starting one also
    ///   needs the plan registry: only a registered plan version, exactly as registered, may run.
    /// - Grants and forced releases go to the lease queue (`decideServiceLeases`).
    /// - Applying a plan goes to the registry (`decideApply`).
    ///
    /// Pure: the same state, command and instant always give the same ruling.
    public func decide(_ command: Command, now: Instant) -> Ruling {
        switch command {
        case .plans(.apply(let plan)):
            switch decideApply(plan) {
            case .accepted(let event): return .planEvent(plan.name, event)
            case .unchanged(let version): return .planUnchanged(version: version)
            case .rejected(let rejection): return .rejected(rejection)
            }
        case .freezes(let command):
            switch decideFreeze(command, now: now) {
            case .success(let event): return .freezeEvent(command.id, event)
            case .failure(let rejection): return .rejected(rejection)
            }
        case .serviceLeases(let command):
            return ruling(decideServiceLeases(command, now: now), migration: command.migration)
        case .migration(let id, let command):
            return ruling(decideMigration(id, command, now: now), migration: id)
        case .checkpoints(let command):
            return decideCheckpoint(command)
        }
    }

    private func ruling(_ decision: Decision, migration id: MigrationID) -> Ruling {
        switch decision {
        case .accepted(let events): .migrationEvents(id, events)
        case .rejected(let rejection): .rejected(rejection)
        }
    }

    private func decideMigration(_ id: MigrationID, _ command: MigrationCommand, now: Instant) -> Decision {
        decideMigration(id, command, on: migrations[id], now: now)
    }

    /// Decides leasing node `node`'s step to `agent` (principal `holder`, for `ttlMillis`) in migration
    /// `migration` as the events of an append not yet folded leave it (`MigrationState.evolve`), with this
    /// state's freezes and windows: the lease the engine adds to the append that readies the step, for a
    /// poll parked on its service. Decided exactly as that poll's own `leaseStep`.
    public func decideLease(node: NodeID, agent: String, ttlMillis: Int64, holder: String, pollID: String = "", of migration: MigrationState, now: Instant) -> Decision {
        decideMigration(migration.id, .leaseStep(node: node, agent: agent, ttlMillis: ttlMillis, holder: holder, pollID: pollID), on: migration, now: now)
    }

    /// `decideMigration` on `current`, the migration as the command finds it (nil: not live).
    private func decideMigration(_ id: MigrationID, _ command: MigrationCommand, on current: MigrationState?, now: Instant) -> Decision {
        if case .start(let started, let plan, _, _) = command {
            // The events land in `id`'s stream: a start naming another migration would write a log
            // that replay must refuse.
            guard started == id else {
                return .rejected(.invalidArgument("the start command names migration \(started) but targets \(id)"))
            }
            // A migration runs only a plan version from the registry, exactly as registered (its content
            // hash, computed by the engine when it was applied, is evidence: never taken from a caller).
            if current == nil, self.plan(plan.name, version: plan.version) != plan {
                return .rejected(.planNotRegistered(plan.name, version: plan.version))
            }
        } else if current == nil {
            return .rejected(.migrationNotFound(id))
        }
        if case .pause(_, let stop) = command, !stop.isEmpty, freezes[stop]?.stopsLine != true {
            return .rejected(.invalidArgument("freeze \(stop) is not a stop of the line in force; a pause may name only one"))
        }
        // A node a freeze or its windows hold is not waiting for an agent: nobody may take its step.
        if case .scheduleToStartExceeded(let node) = command, let migration = current, isForwardHeld(node, of: migration, at: now) {
            return .rejected(.notWaitingForAgent(node))
        }
        var decision = handOver(MigrationState.decide(current, command, now: now), migration: id, now: now)
        // A node that gave its services back to a freeze or a closed window waits for that, not for the services.
        if case .leaseStep(let node, _, _, _, _) = command, case .rejected(.waitingForServices) = decision, let migration = current,
           migration.status == .running, let hold = forwardHold(node, of: migration, at: now) {
            return .rejected(hold.rejection(of: node))
        }
        // No forward step starts under a freeze or outside its windows (rollback steps always may), unless
        // an admin broke the glass for its node.
        if case .accepted(let events) = decision, let migration = current {
            for case .stepLeased(let leased) in events where leased.kind != .rollback {
                if let hold = forwardHold(leased.node, of: migration, at: now) { decision = .rejected(hold.rejection(of: leased.node)) }
            }
        }
        // Name who holds what a node waits for (the migration alone knows only that it waits).
        if case .rejected(.waitingForServices(let node, let waits)) = decision, waits.isEmpty,
           let spec = current?.plan.node(node) {
            return .rejected(.waitingForServices(node, waits: serviceLeases.waits(migration: id, node: node, services: spec.services)))
        }
        return decision
    }
}
