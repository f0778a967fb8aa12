import DequeModule
import LockstepCore
import LockstepStore
import LockstepWire

// The engine's commands: a stream's turn, the composed decide (`LogState.decide`), the append the caller
// makes, and the fold of its acknowledgement. Pure, like the rest of the machine: the caller performs
// the I/O it is told to and reports back.
extension CoordinatorMachine {
    /// A command arrives: refused at once when writes stopped or its stream's line is full; started when
    /// its stream is free; else in line.
    mutating func commandWanted(_ pending: Pending) -> [Action] {
        if let stopped { return [.tell(pending.caller, .refused(.storage(stopped)))] }
        let stream = pending.command.stream
        if var waiting = turns[stream] {
            guard waiting.count < commandsWaitingPerStreamMax else {
                return [.tell(pending.caller, .refused(.overloaded(stream: stream, waitingMax: commandsWaitingPerStreamMax)))]
            }
            waiting.append(pending)
            turns[stream] = waiting
            return []
        }
        turns[stream] = []
        let (actions, inFlight) = start(pending)
        return inFlight ? actions : actions + advance(stream)
    }

    /// The command in flight on `stream` is done: starts the next in line, in arrival order, until one is
    /// in flight (appending or looking up) or the line is empty (the stream is free again).
    mutating func advance(_ stream: String) -> [Action] {
        var actions: [Action] = []
        while var waiting = turns[stream] {
            guard let next = waiting.popFirst() else {
                turns[stream] = nil
                break
            }
            turns[stream] = waiting
            let (said, inFlight) = start(next)
            actions += said
            if inFlight { break }
        }
        return actions
    }

    /// `pending` holds its stream's turn: refused when writes stopped while it waited, looked up first
    /// when it names a migration not in the live state, else decided. Also says whether it is now in
    /// flight (holding the turn until the caller reports back).
    mutating func start(_ pending: Pending) -> (actions: [Action], inFlight: Bool) {
        if let stopped { return ([.tell(pending.caller, .refused(.storage(stopped)))], false) }
        if case .migration(let id, let command) = pending.command, state.migrations[id] == nil {
            // Never started, or settled and gone from the live state (its stream says which). A start
            // needs only the stream's version: a settled migration's id stays taken.
            inFlight[pending.caller] = .lookingUp(pending)
            if case .start = command { return ([.tell(pending.caller, .lookUp(id, fold: false))], true) }
            return ([.tell(pending.caller, .lookUp(id, fold: true))], true)
        }
        return decide(pending)
    }

    /// Decides `pending` on the live state: an answer at once (refused, or nothing to record), or the
    /// append that records it, for the caller to make.
    mutating func decide(_ pending: Pending) -> (actions: [Action], inFlight: Bool) {
        let caller = pending.caller
        switch state.decide(pending.command, now: pending.now) {
        case .rejected(let rejection):
            return ([.tell(caller, .refused(.rejected(rejection)))], false)
        case .planUnchanged(let version):
            return ([.tell(caller, .performed(Performed(result: CommandResult(events: [], receipt: nil),
                                                         plan: PlanVersion(version: version, changed: false))))], false)
        case .planEvent(let name, let event):
            let base = UInt64(state.plans[name]?.count ?? 0)
            return append([.plan(RecordedPlanEvent(plan: name, streamVersion: base + 1, metadata: pending.metadata, event: event))],
                          for: pending, after: base)
        case .freezeEvent(let id, let event):
            let base: UInt64 = state.freezes[id] != nil ? 1 : 0
            return append([.freeze(RecordedFreezeEvent(freeze: id, streamVersion: base + 1, metadata: pending.metadata, event: event))],
                          for: pending, after: base)
        case .checkpoint(let checkpoint):
            // Its own stream, written once: a second checkpoint of the same sequence is a conflict.
            return append([.checkpoint(RecordedCheckpoint(streamVersion: 1, metadata: pending.metadata, checkpoint: checkpoint))], for: pending, after: 0)
        case .migrationEvents(let id, let events):
            // Valid, and nothing to record: only a heartbeat, which the shell sends as `heartbeat`.
            guard !events.isEmpty else { return ([.tell(caller, .performed(Performed(result: CommandResult(events: [], receipt: nil))))], false) }
            let offers = stepOffers(id, events)
            if !offers.isEmpty {
                inFlight[caller] = .offering(pending, migration: id, events: events, offers: offers)
                return ([.tell(caller, .claimFor(offers))], true)
            }
            let base = state.migrations[id]?.version ?? 0
            return append(Self.numbered(events.map { ($0, pending.metadata) }, migration: id, after: base), for: pending, after: base)
        }
    }

    /// Migration `id`'s records of `events`, each with its metadata, numbered on from stream version `base`.
    static func numbered(_ events: [(event: MigrationEvent, metadata: EventMetadata)], migration id: MigrationID, after base: UInt64) -> [LogRecord] {
        events.enumerated().map { offset, record in
            LogRecord.migration(RecordedEvent(migration: id, streamVersion: base + UInt64(offset) + 1, metadata: record.metadata, event: record.event))
        }
    }

    /// Asks the caller to append `records` to its command's stream, expecting the stream at `base`
    /// (`claimed`: where the leases claimed with the command are among them, `CoordinatorMachine+Claims`).
    mutating func append(_ records: [LogRecord], for pending: Pending, after base: UInt64, claimed: [Int?] = []) -> (actions: [Action], inFlight: Bool) {
        let bytes: [[UInt8]]
        do {
            bytes = try records.map { record throws(RecordEncodingError) in try EventRecordCodec.encode(record) }
        } catch {
            return ([.tell(pending.caller, .refused(.storage(.invalidRequest(error.description))))], false)
        }
        inFlight[pending.caller] = .appending(pending, records: records, claimed: claimed)
        return ([.tell(pending.caller, .append(AppendRequest(stream: pending.command.stream, expectedVersion: base, records: bytes)))], true)
    }

    /// The caller's append is acknowledged: its events are folded in at their global sequences, the
    /// lease timers follow the migration's leases, watchers are told, the caller is answered, and the
    /// stream's next command starts.
    mutating func appended(_ caller: Caller, _ receipt: AppendReceipt, nanos: UInt64) -> [Action] {
        guard case .appending(let pending, let records, let claimed)? = inFlight.removeValue(forKey: caller) else {
            assertionFailure("caller \(caller) reported an append it was not asked for")
            return []
        }
        var change: Change?
        var recorded: [RecordedEvent] = []
        var plan: PlanVersion?
        switch pending.command {
        case .plans:
            for (offset, record) in records.enumerated() {
                state.evolve(record, sequence: receipt.firstSequence + UInt64(offset))
                if case .plan(let event) = record, case .planApplied(let applied) = event.event {
                    plan = PlanVersion(version: applied.version, changed: true)
                }
            }
            change = Change(migration: nil, services: [])
        case .freezes:
            var services = Set<String>()
            for (offset, record) in records.enumerated() {
                if case .freeze(let event) = record { services.formUnion(frozenServices(event.event)) }
                state.evolve(record, sequence: receipt.firstSequence + UInt64(offset))
            }
            change = Change(migration: nil, services: services, at: pending.now)
        case .checkpoints:
            for (offset, record) in records.enumerated() { state.evolve(record, sequence: receipt.firstSequence + UInt64(offset)) }
        case .migration(let id, _), .serviceLeases(.grant(let id, _, _)), .serviceLeases(.forceRelease(let id, _, _)),
             .serviceLeases(.yieldToFreeze(let id, _)):
            // The plan, read before the fold: an append that settles the migration takes it out of the live state.
            let migrationPlan = state.migrations[id]?.plan
            for (offset, record) in records.enumerated() {
                guard case .migration(let event) = record else { continue }
                state.evolve(migration: id, sequence: receipt.firstSequence + UInt64(offset), event.event)
                recorded.append(event)
            }
            let leases = state.migrations[id].map(StepLeaseTimer.leases(of:)) ?? []
            armLeases(id, leases: leases, nanos: nanos)
            markTimers(of: id)
            // A pause for a node nobody took: the migration's waits start again when it resumes.
            if case .migration(_, .scheduleToStartExceeded) = pending.command { waitingSince[id] = nil }
            if let transitions = migrationPlan ?? state.migrations[id]?.plan {
                change = Change(migration: id, services: transitions.transitionedServices, events: recorded.map(\.event), at: pending.now)
            }
        }
        noteFolded(receipt.firstSequence...receipt.lastSequence)
        // Leases claimed by parked polls went into the append too: answered to the shell apart, not as the command's own events.
        var claims: [RecordedEvent?] = []
        if !claimed.isEmpty {
            claims = claimed.map { $0.flatMap { recorded.indices.contains($0) ? recorded[$0] : nil } }
            let leases = Set(claimed.compactMap { $0 })
            recorded = recorded.indices.filter { !leases.contains($0) }.map { recorded[$0] }
        }
        var actions: [Action] = change.map { [.changed($0)] } ?? []
        actions.append(.tell(caller, .performed(Performed(result: CommandResult(events: recorded, receipt: receipt), plan: plan, claims: claims))))
        return actions + advance(pending.command.stream)
    }

    /// The services whose polls a freeze event concerns: its own, or for a freeze of every service, those
    /// of every live migration (read before the fold, while an ending freeze is still in the state).
    func frozenServices(_ event: FreezeEvent) -> Set<String> {
        let freeze: Freeze? = switch event {
        case .freezeDeclared(let declared): declared
        case .freezeEnded(let ended): state.freezes[ended.id]
        }
        guard let freeze else { return [] }
        if !freeze.services.isEmpty { return Set(freeze.services) }
        return Set(state.unsettled.compactMap { state.migrations[$0] }.flatMap { $0.plan.nodes.flatMap(\.services) })
    }

    /// The caller found what the log holds of a migration absent from the live state.
    mutating func lookedUp(_ caller: Caller, _ found: LookedUp) -> [Action] {
        switch inFlight.removeValue(forKey: caller) {
        case .lookingUp(let pending)?:
            guard case .migration(let id, let command) = pending.command else { preconditionFailure("only a migration's command is looked up") }
            // Writes may have stopped while it looked (another stream's append failed): refused, not decided.
            if let stopped { return [.tell(caller, .refused(.storage(stopped)))] + advance(pending.command.stream) }
            switch (command, found) {
            case (.start, .streamVersion(let version)) where version == 0:
                let (actions, inFlight) = decide(pending)
                return inFlight ? actions : actions + advance(pending.command.stream)
            case (.start, _):
                // A settled migration has left the live state but not the log: its id stays taken.
                // (The append's expected version 0 would refuse it too, as a conflict.)
                return [.tell(caller, .refused(.rejected(.migrationAlreadyExists(id))))] + advance(pending.command.stream)
            default:
                return [.tell(caller, .refused(.rejected(Self.absence(of: id, command, found: found, now: pending.now))))]
                    + advance(pending.command.stream)
            }
        case .heartbeatLookingUp(let pending)?:
            guard case .migration(let id, let command) = pending.command else { preconditionFailure("a heartbeat names a migration") }
            return [.tell(caller, .refused(.rejected(Self.absence(of: id, command, found: found, now: pending.now))))]
        case .appending?, .offering?, nil:
            assertionFailure("caller \(caller) reported a look-up it was not asked for")
            return []
        }
    }

    /// Why `command` to `id`, which is not in the live state, cannot run: it never started, or it has
    /// settled and left the live state. Then the core decides the command against the migration folded
    /// from its stream, so the answer is the one it gave while the migration was live (a late report
    /// with a superseded token is told so; anything else, that the migration settled).
    static func absence(of id: MigrationID, _ command: MigrationCommand, found: LookedUp, now: Instant) -> Rejection {
        guard case .migration(let settled?) = found else { return .migrationNotFound(id) }
        if case .rejected(let rejection) = MigrationState.decide(settled, command, now: now) { return rejection }
        return .migrationSettled(id, status: settled.status)
    }

    /// A heartbeat: checked like any report (current token, live lease, its holder), then the lease's
    /// TTL restarts at `nanos`. Takes no turn and records nothing.
    mutating func heartbeat(_ pending: Pending, nanos: UInt64) -> [Action] {
        guard case .migration(let id, .heartbeat(let node, let token, _)) = pending.command else { preconditionFailure("not a heartbeat") }
        guard let migration = state.migrations[id] else {
            inFlight[pending.caller] = .heartbeatLookingUp(pending)
            return [.tell(pending.caller, .lookUp(id, fold: true))]
        }
        if case .rejected(let rejection) = state.decide(pending.command, now: pending.now) {
            return [.tell(pending.caller, .refused(.rejected(rejection)))]
        }
        let ttl = migration.node(node)?.lease.map { $0.expiresAt.millisecondsSinceEpoch - $0.grantedAt.millisecondsSinceEpoch } ?? 0
        renewLease(id, node: node, token: token, nanos: nanos)
        return [.tell(pending.caller, .alive(ttlMillis: ttl, stop: migration.stopRequested(node, token: token)))]
    }
}
