// The coordinator actor: its state, opening (snapshot + tail), commands (decide → append → evolve,
// one turn per stream), heartbeats and lease timers. By concern beside it: Coordinator+ServiceLeases
// (the grant pass), Coordinator+Timers (the timer policy), Coordinator+Snapshots, Coordinator+Reads
// (settled migrations, from their streams) and CommandTypes (what commands are asked with and answer).
// The engine itself (the live state, commands decided and folded, turns, the fail-stop latch, the grant
// pass, folded ranges, the snapshot policy, the lease and schedule_to_start timers) is the value-type
// CoordinatorMachine; this actor is its shell: it performs the appends and look-ups the machine asks for
// and resumes each caller with the machine's word for it.
import LockstepCore
import LockstepPlan
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
    /// The log (within the package: the history and watch APIs read it directly, as any reader of
    /// the log may; nothing outside writes around the machine).
    package let log: any EventLog
    /// The last event folded and its chain hash, as this coordinator checked it: what a replica's next
    /// page must chain from (the log checks a page against the hash it holds now, which a restore or a
    /// rewritten row could have changed since).
    var followedLink: LogHead
    /// The engine: the live state and everything around it. This actor feeds it inputs and performs its actions.
    var machine: CoordinatorMachine
    /// Callers waiting for the machine's word, by number.
    private var parked: [CoordinatorMachine.Caller: CheckedContinuation<Word, Never>] = [:]
    private var nextCaller: CoordinatorMachine.Caller = 0
    /// Step leases being given back (`giveBack`, Coordinator+LeaseHandOut.swift; as many as give-backs in
    /// flight, one per lease): none of them is handed out again to a named poll (`leaseTakenAgain`), as a
    /// lease handed out again (marked on its timer, `CoordinatorMachine.renewLease`) is never given back.
    var returning: Set<LeaseKey> = []

    /// What the machine says to a caller.
    typealias Word = CoordinatorMachine.Word
    /// What an append changed (what the change observer is told).
    public typealias Change = CoordinatorMachine.Change

    /// A copy of the live fold of the log (within the package: the API's views of plans, leases and
    /// migrations; copy-on-write, so a copy costs nothing until the machine changes the state).
    package var state: LogState { machine.state }

    /// A snapshot is saved after this many events since the last one (0 = never), or later after a large
    /// one (`CoordinatorMachine.snapshotDueEvents`).
    public let snapshotIntervalEvents: UInt64
    /// Where lease TTLs are measured.
    public let monotonic: MonotonicClock

    /// The services a poll may find a step for, and the names of the polls that took the running step
    /// leases, published after every fold for readers on any thread (polls).
    public nonisolated let stepServices: StepServices

    /// Called after every append is folded in (the server wakes parked polls and watches with it). Must not block.
    private var changeObserver: (@Sendable (Change, ContinuousClock.Instant) -> Void)?
    /// When the commit being folded in ended (`EventLog.appendTimed`), while its append's report is fed.
    private var foldingCommitEnd: ContinuousClock.Instant?
    /// Takes a parked poll of a service out of its table, for a step a command readies (`claimSteps`).
    var stepClaimer: (@Sendable (String) -> StepClaim?)?

    /// Sets the function called after every append is folded into the live state, with when that
    /// append's commit ended on the monotonic clock (for a change this coordinator did not append, a
    /// follower's page: when it was folded in).
    public func observeChanges(_ observer: @escaping @Sendable (Change, ContinuousClock.Instant) -> Void) { changeObserver = observer }

    /// Failures the timers met since the last `tick` (other than lost races).
    var timerFailures: [CommandError] = []

    /// The log stopped taking writes (fail-stop): this coordinator refuses every command at once, before
    /// deciding anything, so callers see the storage failure, not its side effects; restart it (open the log again).
    public var isStopped: Bool { machine.stopped != nil }

    /// Feeds `input` to the machine and performs its actions: each word goes to the caller it names
    /// (resumed if parked; the word for `caller`, the one feeding, is returned instead), changes go to
    /// the change observer.
    @discardableResult
    func feed(_ input: CoordinatorMachine.Input, for caller: CoordinatorMachine.Caller? = nil) -> Word? {
        var mine: Word?
        for action in machine.handle(input) {
            switch action {
            case .tell(let target, let word):
                if target == caller {
                    mine = word
                } else if let continuation = parked.removeValue(forKey: target) {
                    continuation.resume(returning: word)
                } else {
                    assertionFailure("the machine spoke to caller \(target), who is not waiting")
                }
            case .changed(var change):
                // Before the change is signalled: whoever it wakes finds the services as they are now.
                change.leasesNamed = stepServices.publish(machine.state, after: change)
                changeObserver?(change, foldingCommitEnd ?? .now)
            case .writeSnapshot, .timer:
                // Asked for only by `takeDueSnapshot` and `runTimers`, which perform them themselves.
                assertionFailure("\(action) reached feed")
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

    /// Feeds what `caller` reports (the outcome of what the machine asked of it); the machine always answers it.
    func report(_ input: CoordinatorMachine.Input, for caller: CoordinatorMachine.Caller) -> Word {
        guard let word = feed(input, for: caller) else { preconditionFailure("the machine left caller \(caller) without a word after \(input)") }
        return word
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

    private init(log: any EventLog, state: LogState, link: LogHead, snapshotSequence: UInt64, snapshotBytes: Int, snapshotIntervalEvents: UInt64,
                 snapshotBytesPerEvent: UInt64,
                 commandsWaitingPerMigrationMax: Int, grantAppendsInFlightMax: Int, monotonic: @escaping MonotonicClock) {
        self.log = log
        self.followedLink = link
        self.grantAppendsInFlightMax = max(1, grantAppendsInFlightMax)
        self.monotonic = monotonic
        // After a restart nobody knows how long ago the last heartbeat came: every live lease gets a fresh TTL.
        self.stepServices = StepServices(state)
        self.machine = CoordinatorMachine(state: state, snapshotSequence: snapshotSequence, snapshotBytes: snapshotBytes,
                                          commandsWaitingPerStreamMax: commandsWaitingPerMigrationMax,
                                          snapshotIntervalEvents: snapshotIntervalEvents, snapshotBytesPerEvent: snapshotBytesPerEvent,
                                          nanos: monotonic())
        self.snapshotIntervalEvents = snapshotIntervalEvents
        self.commandsWaitingPerMigrationMax = commandsWaitingPerMigrationMax
    }

    /// Opens a coordinator on `log`: loads the newest snapshot (checking its digest) and replays only
    /// the tail after it.
    public static func open(log: any EventLog, snapshotIntervalEvents: UInt64 = defaultSnapshotIntervalEvents,
                            snapshotBytesPerEvent: UInt64 = CoordinatorMachine.defaultSnapshotBytesPerEvent,
                            commandsWaitingPerMigrationMax: Int = defaultCommandsWaitingPerMigrationMax,
                            grantAppendsInFlightMax: Int = defaultGrantAppendsInFlightMax,
                            monotonic: @escaping MonotonicClock = systemMonotonicClock) async throws(EventLogError) -> Coordinator {
        var state = LogState()
        var snapshotSequence: UInt64 = 0
        var snapshotBytes = 0
        // The chain hash of the last event folded (a replica checks that what it follows chains from it).
        var link = LogHead.genesis
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
            // (At the base, the event was archived: the base keeps its link.)
            let base = try await log.base()
            let named = base?.sequence == snapshot.sequence ? base.map { StoredEvent(sequence: $0.sequence, stream: "", streamVersion: 0, record: [], chainHash: $0.chainHash) }
                : try await log.read(after: snapshot.sequence - 1, limit: 1).first
            guard let named, named.sequence == snapshot.sequence, named.chainHash == snapshot.chainHash else {
                throw .corrupted(position: snapshot.sequence, reason: named == nil
                    ? "the snapshot names event \(snapshot.sequence), which is missing" : "the snapshot's chain hash differs from event \(snapshot.sequence)'s")
            }
            snapshotSequence = snapshot.sequence
            snapshotBytes = snapshot.state.count
            link = LogHead(sequence: snapshot.sequence, chainHash: snapshot.chainHash)
        } else if let base = try await log.base() {
            // Events were archived (and the snapshot at the base is of an older format): start from the base.
            state = try History.state(at: base)
            snapshotSequence = base.sequence
            link = LogHead(sequence: base.sequence, chainHash: base.chainHash)
        }
        try await History.fold(log, into: &state) { stored, _ throws(EventLogError) in link = LogHead(sequence: stored.sequence, chainHash: stored.chainHash) }
        return Coordinator(log: log, state: state, link: link, snapshotSequence: snapshotSequence, snapshotBytes: snapshotBytes,
                           snapshotIntervalEvents: snapshotIntervalEvents, snapshotBytesPerEvent: snapshotBytesPerEvent,
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
        var command = command
        switch command {
        case .migration(let id, .heartbeat(let node, let token, let by)):
            try await heartbeat(migration: id, node: node, token: token, by: by, now: now)
            return CommandResult(events: [], receipt: nil)
        case .serviceLeases(.grant):
            throw .rejected(.invalidArgument("service leases are granted by the coordinator's lease queue, not on request"))
        case .plans(.apply(let plan)):
            // The content hash is evidence: computed here, never taken from the caller.
            try Self.checkTimeZones(of: plan)
            command = .plans(.apply(plan.hashed()))
        case .migration(let id, .start(let started, let plan, let startedBy, _)):
            // So are a start's zone offsets: read here, from this machine's time-zone database, and recorded.
            switch TimeZoneDatabase.offsets(for: plan, from: now) {
            case .success(let zones): command = .migration(id, .start(id: started, plan: plan, startedBy: startedBy, zones: zones))
            case .failure(let unknown): throw .rejected(.unknownTimeZone(unknown.zones))
            }
        case .migration, .serviceLeases(.forceRelease), .serviceLeases(.yieldToFreeze), .freezes, .checkpoints:
            break
        }
        // First what opening the log left owed (bookkeeping an old history lacks, grants a crash cut off),
        // so the command is decided on a consistent state.
        if machine.grantPassOwed { await grantServiceLeases(now: now) }
        let result = try await perform(command, context: context, now: now).result
        // (Nothing can be granted while nobody waits: a hand-over already granted in the same append.)
        // A freeze's end (or a break-glass) may let a request set aside under it be granted.
        let mayGrant = command.changesFreezes ? machine.state.serviceLeases.hasRequests : mayHaveMadeGrantsPossible(result.events)
        if machine.grantPassOwed || mayGrant {
            await grantServiceLeases(now: now)
        }
        return result
    }

    /// The one command path: the machine decides the command when its stream's turn comes (with
    /// `LogState.decide`, the composed decide) and says what to do; this performs it (the append, with
    /// the stream's version as expected version; a look-up in the log) and reports back, until the
    /// machine answers. Rejections, storage failures and overload are thrown; nothing is appended then.
    func perform(_ command: Command, context: CommandContext, now: Instant) async throws(CommandError) -> CoordinatorMachine.Performed {
        let metadata = EventMetadata(recordedAt: now, actor: context.actor, triggeredBy: context.triggeredBy,
                                     causationID: context.causationID, correlationID: context.correlationID)
        var (caller, word) = await ask { .command($0, command, metadata: metadata, now: now) }
        // Parked polls claimed for steps this command readies: each is told how it ended, whatever the command's end.
        var claims: [(StepClaim, ttlMillis: Int64)] = []
        var committedAt: ContinuousClock.Instant?
        while true {
            switch word {
            case .performed(let performed):
                if !claims.isEmpty { settle(claims, performed, committedAt: committedAt) }
                return performed
            case .refused(let error):
                if !claims.isEmpty { settle(claims, nil, committedAt: nil) }
                throw error
            case .claimFor(let offers):
                word = claim(offers, for: caller, now: now, into: &claims)
            case .append(let request):
                do {
                    let timed = try await log.appendTimed(request)
                    committedAt = timed.committedAt
                    foldingCommitEnd = timed.committedAt
                    word = report(.appended(caller, timed.receipt, nanos: monotonic()), for: caller)
                    foldingCommitEnd = nil
                } catch {
                    word = report(.appendFailed(caller, error), for: caller)
                }
            case .lookUp(let id, let fold):
                word = await lookUp(id, fold: fold, for: caller)
            case .alive, .runGrantPass, .resumed:
                preconditionFailure("a command was answered with \(word)")
            }
        }
    }

    /// Reads what the machine asked `caller` to look up and reports it.
    private func lookUp(_ id: MigrationID, fold: Bool, for caller: CoordinatorMachine.Caller) async -> Word {
        do throws(EventLogError) {
            let found: CoordinatorMachine.LookedUp = fold
                ? .migration(try await History.migration(id, in: log))
                : .streamVersion(try await log.streamVersion(of: RecordedEvent.stream(of: id)))
            return report(.lookedUp(caller, found), for: caller)
        } catch {
            return report(.lookUpFailed(caller, error), for: caller)
        }
    }

    /// Applies a plan's content (hashed here): a no-op returning the current version when the newest
    /// version has the same content, else a `plan_applied` event and the new version.
    public func applyPlan(_ plan: PlanSnapshot, context: CommandContext, now: Instant) async throws(CommandError) -> (version: UInt64, changed: Bool) {
        try Self.checkTimeZones(of: plan)
        let performed = try await perform(.plans(.apply(plan.hashed())), context: context, now: now)
        guard let plan = performed.plan else { preconditionFailure("applying a plan answered without its version") }
        return (plan.version, plan.changed)
    }

    /// Refuses a plan whose windows name a zone this machine's time-zone database does not know (its
    /// migrations could not start here).
    static func checkTimeZones(of plan: PlanSnapshot) throws(CommandError) {
        let unknown = TimeZoneDatabase.unknown(plan.windowZones)
        if !unknown.isEmpty { throw .rejected(.unknownTimeZone(unknown)) }
    }

    // MARK: - Step leases

    /// What a heartbeat is answered: the lease's TTL in milliseconds, and why the step must stop now
    /// (its migration was paused under `on_pause: stop`), if it must.
    public struct HeartbeatAnswer: Hashable, Sendable {
        public var ttlMillis: Int64
        public var stop: String?
    }

    /// The lease holder is alive: checked like any report (current token, live lease), then the lease's
    /// TTL restarts on the monotonic clock. Records nothing.
    @discardableResult
    public func heartbeat(migration id: MigrationID, node: NodeID, token: FencingToken, by reporter: String = "", now: Instant) async throws(CommandError) -> HeartbeatAnswer {
        var (caller, word) = await ask { .heartbeat($0, id, node: node, token: token, by: reporter, now: now, nanos: monotonic()) }
        while true {
            switch word {
            case .alive(let ttlMillis, let stop): return HeartbeatAnswer(ttlMillis: ttlMillis, stop: stop)
            case .refused(let error): throw error
            case .lookUp(let id, let fold): word = await lookUp(id, fold: fold, for: caller)
            case .append, .claimFor, .performed, .runGrantPass, .resumed: preconditionFailure("a heartbeat was answered with \(word)")
            }
        }
    }

    /// `heartbeat`, when migration `id` is live and `permitted` accepts the node's spec, checked in the same
    /// turn: one hop for a caller that must be allowed to report on the node. Nil, with nothing done, when
    /// the migration is not live (settled, unknown), the node unknown, or not permitted: the caller checks
    /// the slow way, which says why.
    public func heartbeat(migration id: MigrationID, node: NodeID, token: FencingToken, by reporter: String = "", now: Instant,
                          ifPermitted permitted: @Sendable (NodeSpec) -> Bool) async throws(CommandError) -> HeartbeatAnswer? {
        guard livePermits(id, node, permitted) else { return nil }
        return try await heartbeat(migration: id, node: node, token: token, by: reporter, now: now)
    }

    /// `execute`, likewise: only when migration `id` is live and `permitted` accepts node `node`'s spec.
    public func execute(_ command: MigrationCommand, migration id: MigrationID, node: NodeID, context: CommandContext, now: Instant,
                        ifPermitted permitted: @Sendable (NodeSpec) -> Bool) async throws(CommandError) -> CommandResult? {
        guard livePermits(id, node, permitted) else { return nil }
        return try await execute(command, migration: id, context: context, now: now)
    }

    /// Whether migration `id` is live, has node `node`, and `permitted` accepts its spec.
    private func livePermits(_ id: MigrationID, _ node: NodeID, _ permitted: (NodeSpec) -> Bool) -> Bool {
        machine.state.migrations[id]?.plan.node(node).map(permitted) ?? false
    }

    /// `LogState.step(forService:at:)` on the live state, in one hop: small values back, no copy of the state.
    public func leasableStep(forService service: String, at now: Instant) -> (step: (MigrationID, NodeID, NodeSpec)?, nextRetry: Instant?) {
        machine.state.step(forService: service, at: now)
    }

    /// Step leases live now (for metrics).
    public var liveStepLeaseCount: Int { machine.liveStepLeaseCount }

    /// When the lease timer should next look, in monotonic nanoseconds.
    public var nextLeaseDeadlineNanos: UInt64? { machine.nextLeaseDeadlineNanos }

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
}

extension Command {
    /// Whether it changes which requests a freeze sets aside.
    var changesFreezes: Bool {
        switch self {
        case .freezes, .migration(_, .breakGlass(_, .freeze, _, _, _)), .migration(_, .breakGlass(_, .window, _, _, _)): true
        default: false
        }
    }
}

extension Coordinator {
    /// Whether `events`, folded in, may have made a service-lease request grantable: they freed services,
    /// took a request out of line or put one in, or changed a migration's status (which decides whether
    /// a freeze sets its forward requests aside), and somebody is in line for one of those services (for
    /// a status, of the migration's plan). A request is grantable only at the head of each of its
    /// services' lines with none of them held and past the set-aside ones, so nothing else can change
    /// that but the time and freezes (the timer's passes, `changesFreezes`); a command far from every
    /// line runs no grant pass (it used to run one whenever anybody anywhere was in line, and its caller
    /// waited for that pass's grants).
    func mayHaveMadeGrantsPossible(_ events: [RecordedEvent]) -> Bool {
        let leases = machine.state.serviceLeases
        guard leases.hasRequests else { return false }
        for recorded in events {
            switch recorded.event {
            case .serviceLeasesRequested(let requested):
                if leases.hasRequests(forAnyOf: requested.services) { return true }
            case .serviceLeasesReleased(let released):
                if leases.hasRequests(forAnyOf: released.services) { return true }
            case .serviceLeasesWithdrawn(let node, _):
                // The services of the node's request, from its plan (any line, should its migration have
                // left the live state with the withdrawal).
                guard let services = machine.state.migrations[recorded.migration]?.plan.node(node)?.services else { return true }
                if leases.hasRequests(forAnyOf: services) { return true }
            case .migrationPaused, .migrationResumed, .migrationAborted, .migrationRolledBack, .migrationSucceeded, .migrationFailed:
                // A request of this migration may no longer be set aside, or may be now (and free those
                // behind it): any line of its plan's services.
                guard let plan = machine.state.migrations[recorded.migration]?.plan else { return true }
                if leases.hasRequests(forAnyOf: plan.transitionedServices) { return true }
            default:
                continue
            }
        }
        return false
    }
}
