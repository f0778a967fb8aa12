// The coordinator actor: its state, opening (snapshot + tail), commands (decide → append → evolve,
// one turn per stream), heartbeats and lease timers. By concern beside it: Coordinator+ServiceLeases
// (the grant pass), Coordinator+Timers (the timer policy), Coordinator+Snapshots, Coordinator+Reads
// (settled migrations, from their streams) and CommandTypes (what commands are asked with and answer).
// Its bookkeeping (turns, the fail-stop latch, the grant pass, folded ranges, the snapshot policy, the
// lease and schedule_to_start timers) is the value-type CoordinatorMachine, which this actor drives;
// deciding and appending move there next (issue 15).
import LockstepCore
import LockstepStore
import LockstepWire

/// The process's monotonic clock.
public let systemMonotonicClock: MonotonicClock = {
    let origin = ContinuousClock.now
    return { @Sendable in
        let elapsed = ContinuousClock.now - origin
        return UInt64(max(0, elapsed.components.seconds)) * 1_000_000_000 + UInt64(max(0, elapsed.components.attoseconds / 1_000_000_000))
    }
}()

/// The engine around the pure core: decide → append (expected version checked in the same transaction)
/// → evolve. One command per migration runs at a time; commands on different migrations overlap, so
/// their appends share group commits.
public actor Coordinator {
    public let log: any EventLog
    /// The live fold of the log.
    public private(set) var state: LogState
    /// The bookkeeping as a value-type state machine: turns per stream, the fail-stop latch, the grant
    /// pass, folded ranges and the snapshot policy. This actor feeds it inputs and performs its actions.
    var machine: CoordinatorMachine
    /// Callers waiting for the machine's word, by number.
    private var parked: [CoordinatorMachine.Caller: CheckedContinuation<Word, Never>] = [:]
    private var nextCaller: CoordinatorMachine.Caller = 0

    /// What the machine said to a caller.
    enum Word {
        case proceed
        case refused(CommandError)
        case runGrantPass(now: Instant, reconcile: Bool)
        case resumed
    }

    /// A snapshot is saved after this many events since the last one (0 = never).
    public let snapshotIntervalEvents: UInt64
    /// Where lease TTLs are measured.
    public let monotonic: MonotonicClock

    /// What an append changed: the migration (nil for a plan) and the services its plan transitions.
    public struct Change: Sendable {
        public var migration: MigrationID?
        public var services: Set<String>
        /// The migration events the append recorded (none for a plan), and the command's time.
        public var events: [MigrationEvent] = []
        public var at: Instant?
    }

    /// Called after every append is folded in (the server wakes parked polls and watches with it). Must not block.
    private var changeObserver: (@Sendable (Change) -> Void)?

    /// Sets the function called after every append is folded into the live state.
    public func observeChanges(_ observer: @escaping @Sendable (Change) -> Void) { changeObserver = observer }

    /// Failures the timers met since the last `tick` (other than lost races).
    var timerFailures: [CommandError] = []

    /// The log stopped taking writes (fail-stop): this coordinator refuses every command at once, before
    /// deciding anything, so callers see the storage failure, not its side effects; restart it (open the log again).
    public var isStopped: Bool { machine.stopped != nil }

    /// Feeds `input` to the machine and performs its actions: each word goes to the caller it names
    /// (resumed if parked); the word for `caller`, the one feeding, is returned instead.
    @discardableResult
    func feed(_ input: CoordinatorMachine.Input, for caller: CoordinatorMachine.Caller? = nil) -> Word? {
        var mine: Word?
        for action in machine.handle(input) {
            let (target, word): (CoordinatorMachine.Caller, Word)
            switch action {
            case .proceed(let who): (target, word) = (who, .proceed)
            case .refuse(let who, let error): (target, word) = (who, .refused(error))
            case .runGrantPass(let who, let now, let reconcile): (target, word) = (who, .runGrantPass(now: now, reconcile: reconcile))
            case .resume(let who): (target, word) = (who, .resumed)
            case .writeSnapshot, .expireLease, .scheduleToStartExceeded:
                // Asked for only by `takeDueSnapshot` and the timers, which perform them themselves.
                assertionFailure("\(action) reached feed")
                continue
            }
            if target == caller {
                mine = word
            } else if let continuation = parked.removeValue(forKey: target) {
                continuation.resume(returning: word)
            } else {
                assertionFailure("the machine spoke to caller \(target), who is not waiting")
            }
        }
        return mine
    }

    /// Feeds `input` on behalf of a new caller and waits for the machine's word to it.
    func ask(_ input: (CoordinatorMachine.Caller) -> CoordinatorMachine.Input) async -> (CoordinatorMachine.Caller, Word) {
        let caller = nextCaller
        nextCaller += 1
        if let word = feed(input(caller), for: caller) { return (caller, word) }
        return (caller, await withCheckedContinuation { parked[caller] = $0 })
    }

    /// Most grant appends a pass keeps in flight at once.
    public let grantAppendsInFlightMax: Int
    /// Default for `grantAppendsInFlightMax`.
    public static let defaultGrantAppendsInFlightMax = 16

    /// Most commands that may wait for their turn on one stream (a migration or a plan); more are refused as overloaded.
    public let commandsWaitingPerMigrationMax: Int

    /// Default snapshot interval, in events.
    public static let defaultSnapshotIntervalEvents: UInt64 = 10_000
    /// Default for `commandsWaitingPerMigrationMax`.
    public static let defaultCommandsWaitingPerMigrationMax = 1_024

    private init(log: any EventLog, state: LogState, snapshotSequence: UInt64, snapshotIntervalEvents: UInt64,
                 commandsWaitingPerMigrationMax: Int, grantAppendsInFlightMax: Int, monotonic: @escaping MonotonicClock) {
        self.log = log
        self.grantAppendsInFlightMax = max(1, grantAppendsInFlightMax)
        self.state = state
        self.monotonic = monotonic
        self.machine = CoordinatorMachine(foldedThrough: state.lastSequence, snapshotSequence: snapshotSequence,
                                          commandsWaitingPerStreamMax: commandsWaitingPerMigrationMax, snapshotIntervalEvents: snapshotIntervalEvents)
        self.snapshotIntervalEvents = snapshotIntervalEvents
        self.commandsWaitingPerMigrationMax = commandsWaitingPerMigrationMax
        // After a restart nobody knows how long ago the last heartbeat came: every live lease gets a fresh TTL.
        let clock = monotonic()
        for migration in state.migrationsInOrder {
            machine.handle(.leasesChanged(migration.id, leases: CoordinatorMachine.StepLeaseTimer.leases(of: migration), nanos: clock))
        }
    }

    /// Opens a coordinator on `log`: loads the newest snapshot (checking its digest) and replays only
    /// the tail after it.
    public static func open(log: any EventLog, snapshotIntervalEvents: UInt64 = defaultSnapshotIntervalEvents,
                            commandsWaitingPerMigrationMax: Int = defaultCommandsWaitingPerMigrationMax,
                            grantAppendsInFlightMax: Int = defaultGrantAppendsInFlightMax,
                            monotonic: @escaping MonotonicClock = systemMonotonicClock) async throws(EventLogError) -> Coordinator {
        var state = LogState()
        var snapshotSequence: UInt64 = 0
        if let snapshot = try await log.latestSnapshot(), snapshot.isCurrentFormat {
            // (A snapshot written by an older build, in an older canonical format, is skipped: full replay.)
            guard StateDigest(canonicalBytes: snapshot.state).bytes == snapshot.digest else {
                throw .corrupted(position: snapshot.sequence, reason: "the snapshot's digest does not match its state bytes")
            }
            do {
                state = try LogState(canonicalBytes: snapshot.state)
            } catch {
                throw .corrupted(position: snapshot.sequence, reason: "the snapshot's state does not decode: \(error)")
            }
            guard state.lastSequence == snapshot.sequence else {
                throw .corrupted(position: snapshot.sequence, reason: "the snapshot's state is as of \(state.lastSequence), not \(snapshot.sequence)")
            }
            // The snapshot must belong to this history: its event must exist with the same chain link.
            let named = try await log.read(after: snapshot.sequence - 1, limit: 1).first
            guard let named, named.sequence == snapshot.sequence, named.chainHash == snapshot.chainHash else {
                throw .corrupted(position: snapshot.sequence, reason: named == nil
                    ? "the snapshot names event \(snapshot.sequence), which is missing" : "the snapshot's chain hash differs from event \(snapshot.sequence)'s")
            }
            snapshotSequence = snapshot.sequence
        }
        try await History.fold(log, into: &state)
        return Coordinator(log: log, state: state, snapshotSequence: snapshotSequence, snapshotIntervalEvents: snapshotIntervalEvents,
                           commandsWaitingPerMigrationMax: commandsWaitingPerMigrationMax, grantAppendsInFlightMax: grantAppendsInFlightMax,
                           monotonic: monotonic)
    }

    /// Decides `command` for migration `id` at `now`, appends what it decided, and folds it in.
    ///
    /// When the events change a service queue (a request, a withdrawal or a release), the lease queue
    /// grants what has become grantable before this returns (see `grantServiceLeases`). A heartbeat
    /// records nothing: it goes the heartbeat's way (`heartbeat`) and returns no events.
    public func execute(_ command: MigrationCommand, migration id: MigrationID, context: CommandContext, now: Instant) async throws(CommandError) -> CommandResult {
        try await execute(.migration(id, command), context: context, now: now)
    }

    /// Decides `command` (whoever decides it) at `now`, appends what was decided to the command's stream,
    /// folds it in, and runs the grant pass it may have made possible.
    public func execute(_ command: Command, context: CommandContext, now: Instant) async throws(CommandError) -> CommandResult {
        if case .migration(let id, .heartbeat(let node, let token, let by)) = command {
            try await heartbeat(migration: id, node: node, token: token, by: by, now: now)
            return CommandResult(events: [], receipt: nil)
        }
        // First what opening the log left owed (bookkeeping an old history lacks, grants a crash cut off),
        // so the command is decided on a consistent state.
        if machine.grantPassOwed { await grantServiceLeases(now: now) }
        let result = try await perform(command, context: context, now: now).result
        // (Nothing can be granted while nobody waits: a hand-over already granted in the same append.)
        if machine.grantPassOwed || (!state.serviceLeases.queue.isEmpty && result.events.contains(where: { $0.event.changesServiceQueues })) {
            await grantServiceLeases(now: now)
        }
        return result
    }

    /// What one command did.
    struct Performed {
        /// The migration events it recorded (none for a plan, or for a command that records nothing).
        var result: CommandResult
        /// For a plan: its version now, and whether this command made it.
        var plan: (version: UInt64, changed: Bool)?
    }

    /// The one command path: waits for the stream's turn, decides (`LogState.decide`, the composed
    /// decide), appends with the stream's version as expected version, folds the events in and tells the
    /// change observer. Rejections, storage failures and overload are thrown; nothing is appended then.
    func perform(_ command: Command, context: CommandContext, now: Instant) async throws(CommandError) -> Performed {
        let stream = command.stream
        try await takeTurn(on: stream)
        defer { feed(.turnEnded(stream: stream)) }
        if case .migration(let id, let migrationCommand) = command, state.migrations[id] == nil {
            if case .start = migrationCommand {
                // A settled migration has left the live state but not the log: its id stays taken.
                // (The append's expected version 0 would refuse it too, as a conflict.)
                let version: UInt64
                do { version = try await log.streamVersion(of: stream) } catch { throw .storage(error) }
                if version > 0 { throw .rejected(.migrationAlreadyExists(id)) }
            } else {
                throw .rejected(try await absence(of: id, migrationCommand, now: now))
            }
        }
        let metadata = EventMetadata(recordedAt: now, actor: context.actor, triggeredBy: context.triggeredBy,
                                     causationID: context.causationID, correlationID: context.correlationID)
        switch state.decide(command, now: now) {
        case .rejected(let rejection):
            throw .rejected(rejection)
        case .planUnchanged(let version):
            return Performed(result: CommandResult(events: [], receipt: nil), plan: (version, false))
        case .planEvent(let name, let event):
            let base = UInt64(state.plans[name]?.count ?? 0)
            let record = RecordedPlanEvent(plan: name, streamVersion: base + 1, metadata: metadata, event: event)
            let receipt = try await append([.plan(record)], to: stream, after: base)
            state.evolve(.plan(record), sequence: receipt.firstSequence)
            feed(.folded(receipt.firstSequence...receipt.lastSequence))
            changeObserver?(Change(migration: nil, services: []))
            let version = switch event { case .planApplied(let applied): applied.version }
            return Performed(result: CommandResult(events: [], receipt: receipt), plan: (version, true))
        case .migrationEvents(let id, let events):
            // Valid, and nothing to record (only a heartbeat, which `execute` sends the heartbeat's way).
            guard !events.isEmpty else { return Performed(result: CommandResult(events: [], receipt: nil)) }
            let base = state.migrations[id]?.version ?? 0
            let recorded = events.enumerated().map { offset, event in
                RecordedEvent(migration: id, streamVersion: base + UInt64(offset) + 1, metadata: metadata, event: event)
            }
            let receipt = try await append(recorded.map(LogRecord.migration), to: stream, after: base)
            // The plan, read before the fold: an append that settles the migration takes it out of the live state.
            var plan = state.migrations[id]?.plan
            for (offset, event) in recorded.enumerated() {
                state.evolve(migration: id, sequence: receipt.firstSequence + UInt64(offset), event.event)
            }
            feed(.folded(receipt.firstSequence...receipt.lastSequence))
            armLeases(of: id)
            if plan == nil { plan = state.migrations[id]?.plan }
            if let changeObserver, let plan {
                changeObserver(Change(migration: id, services: Set(plan.nodes.flatMap(\.services)), events: events, at: now))
            }
            return Performed(result: CommandResult(events: recorded, receipt: receipt))
        }
    }

    /// Encodes `records` and appends them to `stream` expecting its version to be `base`; a failure
    /// reaches the machine (it may latch the fail-stop) before it is thrown.
    private func append(_ records: [LogRecord], to stream: String, after base: UInt64) async throws(CommandError) -> AppendReceipt {
        let bytes: [[UInt8]]
        do {
            bytes = try records.map { record throws(RecordEncodingError) in try EventRecordCodec.encode(record) }
        } catch {
            throw .storage(.invalidRequest(error.description))
        }
        do {
            return try await log.append(AppendRequest(stream: stream, expectedVersion: base, records: bytes))
        } catch {
            feed(.appendFailed(error))
            throw .storage(error)
        }
    }

    /// Applies a plan's content (hashed here): a no-op returning the current version when the newest
    /// version has the same content, else a `plan_applied` event and the new version.
    public func applyPlan(_ plan: PlanSnapshot, context: CommandContext, now: Instant) async throws(CommandError) -> (version: UInt64, changed: Bool) {
        let performed = try await perform(.plans(.apply(plan.hashed())), context: context, now: now)
        return performed.plan ?? (0, false)
    }

    // MARK: - Step leases

    /// The lease holder is alive: checked like any report (current token, live lease), then the lease's
    /// TTL restarts on the monotonic clock. Records nothing. Returns the lease's TTL in milliseconds.
    @discardableResult
    public func heartbeat(migration id: MigrationID, node: NodeID, token: FencingToken, by reporter: String = "", now: Instant) async throws(CommandError) -> Int64 {
        guard state.migrations[id] != nil else {
            throw .rejected(try await absence(of: id, .heartbeat(node: node, token: token, by: reporter), now: now))
        }
        if case .rejected(let rejection) = state.decide(.migration(id, .heartbeat(node: node, token: token, by: reporter)), now: now) {
            throw .rejected(rejection)
        }
        let ttl = state.migrations[id]?.node(node)?.lease.map { $0.expiresAt.millisecondsSinceEpoch - $0.grantedAt.millisecondsSinceEpoch } ?? 0
        machine.handle(.heartbeat(id, node: node, token: token, nanos: monotonic()))
        return ttl
    }

    /// `LogState.step(forService:at:)` on the live state, in one hop: small values back, no copy of the state.
    public func leasableStep(forService service: String, at now: Instant) -> (step: (MigrationID, NodeID, NodeSpec)?, nextRetry: Instant?) {
        state.step(forService: service, at: now)
    }

    /// The lease timer's work: every lease not renewed within its TTL (on the monotonic clock) becomes a
    /// `step_failed` with `lease_expired`, recorded as the coordinator; the step is offered again as a new
    /// attempt with a new token if the retry policy allows. Returns the expired (migration, node) pairs in order.
    @discardableResult
    public func expireDueLeases(now: Instant) async -> [(MigrationID, NodeID)] {
        var expired: [(MigrationID, NodeID)] = []
        for action in machine.handle(.leasesDue(nanos: monotonic())) {
            guard case .expireLease(let migration, let node, let token) = action else { continue }
            let context = CommandContext(actor: .coordinator, triggeredBy: .coordinator, causationID: "lease-timer")
            if await timerExecute(.expireLease(node: node, token: token), migration: migration, context: context, now: now) {
                expired.append((migration, node))
            }
        }
        return expired
    }

    /// Step leases live now (for metrics).
    public var liveStepLeaseCount: Int { machine.liveStepLeaseCount }

    /// When the lease timer should next look, in monotonic nanoseconds.
    public var nextLeaseDeadlineNanos: UInt64? { machine.nextLeaseDeadlineNanos }

    /// Makes the timer match migration `id`'s live leases: new leases start their TTL now, ended ones are
    /// dropped (all of them when it settled and left the live state).
    private func armLeases(of id: MigrationID) {
        let leases = state.migrations[id].map(CoordinatorMachine.StepLeaseTimer.leases(of:)) ?? []
        machine.handle(.leasesChanged(id, leases: leases, nanos: monotonic()))
    }

    /// Applies `plan` (a no-op when its content is already the newest version) and starts migration `id`
    /// on that version, on behalf of `context.actor`.
    public func start(_ id: MigrationID, plan: PlanSnapshot, context: CommandContext, now: Instant) async throws(CommandError) -> CommandResult {
        let applied = try await applyPlan(plan, context: context, now: now)
        return try await startMigration(id, plan: plan.name, version: applied.version, context: context, now: now)
    }

    /// Starts migration `id` on version `version` (the newest when nil) of the applied plan `name`.
    public func startMigration(_ id: MigrationID, plan name: String, version: UInt64? = nil, context: CommandContext,
                               now: Instant) async throws(CommandError) -> CommandResult {
        guard let plan = state.plan(name, version: version) else {
            throw .rejected(.invalidArgument(version.map { "plan \(name) has no version \($0)" } ?? "no plan named \(name) has been applied"))
        }
        return try await execute(.start(id: id, plan: plan, startedBy: context.actor.id), migration: id, context: context, now: now)
    }

    /// Waits for `stream`'s turn (one command per stream at a time): refused at once when the log has
    /// stopped taking writes or `commandsWaitingPerMigrationMax` commands already wait. The caller must
    /// end its turn (`turnEnded`) whatever happens next.
    private func takeTurn(on stream: String) async throws(CommandError) {
        switch await ask({ .turnWanted($0, stream: stream) }).1 {
        case .proceed: return
        case .refused(let error): throw error
        case .runGrantPass, .resumed: preconditionFailure("a turn was answered with a grant pass's word")
        }
    }
}

extension MigrationEvent {
    /// Whether the event changes a service's queue or frees a service (so a grant may have become possible).
    var changesServiceQueues: Bool {
        switch self {
        case .serviceLeasesRequested, .serviceLeasesWithdrawn, .serviceLeasesReleased: true
        default: false
        }
    }
}
