import DequeModule
import LockstepCore
import LockstepStore
import LockstepWire

// The engine as one value-type state machine (issue 15, item 1). Commands (deciding, appending,
// folding: CoordinatorMachine+Commands.swift) and the bookkeeping around them (this file) are named
// state changed only by `handle(_:)`, which returns what the shell must do. The `Coordinator` actor is
// the shell: it numbers callers, performs the appends and look-ups the machine asks for, and resumes
// each caller with the word the machine has for it.

/// The coordinator's engine: it reads no clock and performs no I/O.
///
/// - **The live state** (`LogState`), changed only by folding acknowledged appends.
/// - **Commands**: decided with `LogState.decide` (the composed decide) when they get their stream's
///   turn; what they record goes out as an append for the caller to make, and comes back as its
///   acknowledgement (folded, then the caller is answered) or its failure. A command to a migration not
///   in the live state first has the caller look it up in the log (a settled one left the live state).
/// - **Turns per stream**: one command per stream (a migration or a plan) in flight at a time, the rest
///   in line, at most `commandsWaitingPerStreamMax` of them, served in arrival order.
/// - **The fail-stop latch**: once the log fails an append in a way that leaves its state unknown, every
///   later command is refused up front with `writes_stopped`.
/// - **The grant pass**: one pass of the lease queue at a time; a caller that asks while one runs waits
///   for the next, which starts after it and so sees everything folded before the call.
/// - **Folded ranges and the snapshot policy**: appends on different streams are acknowledged out of
///   order; a snapshot is due only when there is no gap, none is being written, and enough events passed.
/// - **The lease timers**: each live step lease's TTL on the monotonic clock (nanoseconds, given with
///   each input), restarted by a heartbeat with the lease's token; a lease not renewed in time is due to
///   expire. After a restart nobody knows how long ago the last heartbeat came: every live lease gets a
///   fresh TTL.
/// - **The schedule_to_start timer**: since when each node that sets one has waited for an agent; not
///   persisted, so after a restart every waiting node gets its whole schedule_to_start again.
public struct CoordinatorMachine: Sendable {
    /// A caller waiting for the machine's word (a command, a grant pass), numbered by the shell.
    public typealias Caller = UInt64

    public enum Input: Hashable, Sendable {
        /// A caller asks for `command` at `now`; what it records carries `metadata`.
        case command(Caller, Command, metadata: EventMetadata, now: Instant)
        /// The append the machine asked `caller` to make was acknowledged, at monotonic `nanos`.
        case appended(Caller, AppendReceipt, nanos: UInt64)
        /// The append the machine asked `caller` to make failed.
        case appendFailed(Caller, EventLogError)
        /// What `caller` found in the log about a migration that is not in the live state.
        case lookedUp(Caller, LookedUp)
        /// The look-up the machine asked `caller` to make failed.
        case lookUpFailed(Caller, EventLogError)
        /// The holder of `migration`/`node`'s lease with `token` (reported by principal `by`) says it is
        /// alive, at `now` and monotonic `nanos`: checked like any report, then its TTL restarts.
        case heartbeat(Caller, MigrationID, node: NodeID, token: FencingToken, by: String, now: Instant, nanos: UInt64)
        /// A caller wants the lease queue to run, recording `now`.
        case grantPassWanted(Caller, now: Instant)
        /// The pass runner finished the pass it was given.
        case grantPassDone
        /// A grant (or the reconciliation of an old history) could not be appended for a reason that is
        /// no refusal: another pass is owed; `reconcile`: the reconciliation must run again.
        case grantOwed(reconcile: Bool)
        /// The shell asks whether a snapshot of the live state is due.
        case snapshotWanted
        /// The snapshot asked for ended as of `sequence`: written, `bytes` long, or failed (nil).
        case snapshotEnded(sequence: UInt64, bytes: Int?)
        /// A snapshot the shell wrote on its own (`Coordinator.saveSnapshot`), `bytes` long, is at `sequence`.
        case snapshotSaved(sequence: UInt64, bytes: Int)
        /// One phase of the timer policy at wall `now` and monotonic `nanos`: what is due, in the order
        /// every shell performs it (see `TimerPhase`).
        case timersDue(TimerPhase, now: Instant, nanos: UInt64)
        /// Events another coordinator appended, read from the shared log in order from `foldedThrough + 1`
        /// (a replica following the writer, docs/operations.md), at monotonic `nanos`.
        case followed([FollowedEvent], nanos: UInt64)
        /// The parked polls `caller` claimed of the steps it was offered (`Word.claimFor`; none claimed: empty).
        case claimed(Caller, [StepClaimed])
    }

    /// What the caller found: the version of the stream of a migration being started (0: it never
    /// started), or the migration folded from its stream (nil: it never started).
    public enum LookedUp: Hashable, Sendable {
        case streamVersion(UInt64)
        case migration(MigrationState?)
    }

    /// What the machine says to one caller.
    public enum Word: Hashable, Sendable {
        /// Append this, then report `appended` or `appendFailed`.
        case append(AppendRequest)
        /// The command readies these steps: claim the longest-parked poll of each one's service, if any,
        /// then report `claimed` (see CoordinatorMachine+Claims).
        case claimFor([StepOffer])
        /// Read migration `id` from the log, then report `lookedUp` (its stream's version, or when `fold`
        /// the migration folded from its stream) or `lookUpFailed`.
        case lookUp(MigrationID, fold: Bool)
        /// The command is done: what it recorded.
        case performed(Performed)
        /// The heartbeat is accepted; the lease's TTL, in milliseconds, restarted. `stop`: why the step
        /// must stop now (its migration was paused and the plan says `on_pause: stop`), else nil.
        case alive(ttlMillis: Int64, stop: String? = nil)
        /// The command is refused or failed; nothing it decided was recorded.
        case refused(CommandError)
        /// Run a grant pass at `now` (reconciling an old history's bookkeeping first when `reconcile`),
        /// then report `grantPassDone`.
        case runGrantPass(now: Instant, reconcile: Bool)
        /// The grant pass this caller waited for has run.
        case resumed
    }

    /// What a command did.
    public struct Performed: Hashable, Sendable {
        /// The migration events it recorded (none for a plan, a heartbeat or an unchanged plan).
        public var result: CommandResult
        /// For a plan: its version now, and whether this command made it.
        public var plan: PlanVersion?
        /// For each claim reported (`claimed`), in order: the lease recorded for it, or nil (not leased).
        public var claims: [RecordedEvent?] = []
    }

    /// A plan's version after applying it, and whether the application made it.
    public struct PlanVersion: Hashable, Sendable {
        public var version: UInt64
        public var changed: Bool
    }

    /// What an append changed: the migration (nil for a plan) and the services its plan transitions.
    public struct Change: Hashable, Sendable {
        public var migration: MigrationID?
        public var services: Set<String>
        /// The migration events the append recorded (none for a plan), and the command's time.
        public var events: [MigrationEvent] = []
        public var at: Instant?
        /// The services whose running step lease the append gave a poll's name, with the name (set by the
        /// coordinator as it publishes the change: `StepServices.publish`): a send again of that poll
        /// parked under the name is woken (`Wakeups.signalSteps`).
        public var leasesNamed: [String: String] = [:]
    }

    public enum Action: Hashable, Sendable {
        /// Say `word` to `caller` (resume it if it waits).
        case tell(Caller, Word)
        /// An append was folded into the live state: wake whoever watches it.
        case changed(Change)
        /// Write a snapshot of the live state (at `sequence`), then report `snapshotEnded`.
        case writeSnapshot(sequence: UInt64)
        /// A timer's command is due: perform it as the coordinator (a refusal means it lost a race).
        case timer(TimerCommand)
    }

    /// A live lease's timer.
    struct LeaseDeadline: Hashable, Sendable {
        var token: FencingToken
        var ttlMillis: Int64
        var deadlineNanos: UInt64
        /// Whether the lease was handed out again to a named poll sent again (`renewLease`): a give-back
        /// of it must then do nothing. Kept while the lease runs, gone with it.
        var handedOutAgain = false
    }

    /// A command as asked.
    struct Pending: Hashable, Sendable {
        var caller: Caller
        var command: Command
        var metadata: EventMetadata
        var now: Instant
    }

    /// What a caller the machine is waiting for is doing.
    enum Flight: Hashable, Sendable {
        /// Appending `records` for its command, holding the stream's turn; `claimed`: each claim's record
        /// index (nil: not leased), for leases parked polls claimed in the same append.
        case appending(Pending, records: [LogRecord], claimed: [Int?])
        /// Looking up the migration its command names, holding the stream's turn.
        case lookingUp(Pending)
        /// Looking up the migration a heartbeat names (heartbeats take no turn).
        case heartbeatLookingUp(Pending)
        /// Claiming parked polls for the steps `events` (decided for migration `id`) ready, holding the
        /// stream's turn (so the migration is as they were decided on when the claims come back).
        case offering(Pending, migration: MigrationID, events: [MigrationEvent], offers: [StepOffer])
    }

    /// Whether the log still takes writes.
    enum Latch: Hashable, Sendable {
        case writing
        case stopped(EventLogError)
    }

    /// The lease queue's pass.
    enum GrantPass: Hashable, Sendable {
        /// No pass runs.
        case idle
        /// `runner` is running a pass that answers `serving`; `waiters` asked since it began and are
        /// answered by the next pass (the runner runs it too).
        case running(runner: Caller, serving: [Caller], waiters: [Caller])
    }

    /// Whether a snapshot is being written.
    enum Snapshotting: Hashable, Sendable {
        case idle
        case writing
    }

    /// Most commands that may wait for their turn on one stream; more are refused as overloaded.
    public let commandsWaitingPerStreamMax: Int
    /// A snapshot is due after this many events since the last one (0 = never), or, after a large one,
    /// after `snapshotDueEvents`.
    public let snapshotIntervalEvents: UInt64
    /// Bytes of the last snapshot per event the next one waits for (0: the interval alone). A snapshot
    /// encodes, hashes and stores the whole live state, so with the interval alone its cost per event
    /// grows with the state; waiting one event per this many bytes of the last snapshot keeps it at about
    /// this many bytes encoded per event, whatever the state's size. Start-up then replays at most one
    /// event per this many bytes of the snapshot it loads, so opening stays in proportion to the state.
    public let snapshotBytesPerEvent: UInt64
    /// Default for `snapshotBytesPerEvent`.
    public static let defaultSnapshotBytesPerEvent: UInt64 = 64
    /// The size of the last snapshot, in bytes (0: none known).
    public private(set) var lastSnapshotBytes: UInt64
    /// Events after the last snapshot before the next is due: the interval, or one event per
    /// `snapshotBytesPerEvent` bytes of the last snapshot when that is more (0: never).
    public var snapshotDueEvents: UInt64 {
        guard snapshotIntervalEvents > 0, snapshotBytesPerEvent > 0 else { return snapshotIntervalEvents }
        return max(snapshotIntervalEvents, lastSnapshotBytes / snapshotBytesPerEvent)
    }

    /// The live fold of the log.
    public internal(set) var state: LogState
    /// Streams whose turn is held (by the command in flight on it), each with the commands in line behind it.
    var turns: [String: Deque<Pending>] = [:]
    /// Callers doing what the machine asked (an append, a look-up), by number.
    var inFlight: [Caller: Flight] = [:]
    /// Whether steps a command readies are offered to parked polls (`Word.claimFor`): set by a shell
    /// that has polls to claim with (a server's coordinator); off, commands append only their own events.
    var offersSteps = false
    var latch: Latch = .writing
    var grantPass: GrantPass = .idle
    /// The latest time any caller asked for a pass with: what a pass records, so grants never precede
    /// the requests (and other events) before them.
    var grantNow: Instant?
    /// A grant pass is owed: none has run since open (a crash between a request and its grant may have
    /// left work), or a grant failed for a reason other than a refusal.
    public private(set) var grantPassOwed = true
    /// Opening may have found migrations whose service-lease bookkeeping is missing (old histories).
    var reconcileOwed = true
    /// Every event up to here is folded into the live state.
    public private(set) var foldedThrough: UInt64
    /// Folded ranges beyond `foldedThrough`, waiting for an earlier append to be folded (sorted).
    var foldedAhead: [ClosedRange<UInt64>] = []
    public private(set) var lastSnapshotSequence: UInt64
    var snapshotting: Snapshotting = .idle
    /// For each migration with live step leases, each lease's timer.
    var leaseDeadlines: [MigrationID: [NodeID: LeaseDeadline]] = [:]

    /// What each unsettled migration's timers wait for (see `TimerMarks`).
    var timerMarks: [MigrationID: TimerMarks] = [:]
    /// The next change of each windowed migration's change windows, as last worked out (`nextTimerDue`);
    /// forgotten when the migration changes.
    var windowChanges: [MigrationID: WindowChange] = [:]
    /// For each node waiting for an agent: since when (monotonic nanoseconds), and for how long it may.
    var waitingSince: [MigrationID: [NodeID: (since: UInt64, limitMillis: Int64)]] = [:]

    /// A machine for the live state `state` (folded from the log), whose newest snapshot is at
    /// `snapshotSequence` and `snapshotBytes` long (0: unknown), at monotonic `nanos`: every live lease
    /// starts a fresh TTL.
    public init(state: LogState, snapshotSequence: UInt64, snapshotBytes: Int = 0, commandsWaitingPerStreamMax: Int,
                snapshotIntervalEvents: UInt64, snapshotBytesPerEvent: UInt64 = defaultSnapshotBytesPerEvent, nanos: UInt64) {
        self.state = state
        self.foldedThrough = state.lastSequence
        self.lastSnapshotSequence = snapshotSequence
        self.lastSnapshotBytes = UInt64(max(0, snapshotBytes))
        self.snapshotBytesPerEvent = snapshotBytesPerEvent
        self.commandsWaitingPerStreamMax = commandsWaitingPerStreamMax
        self.snapshotIntervalEvents = snapshotIntervalEvents
        for migration in state.migrationsInOrder {
            armLeases(migration.id, leases: StepLeaseTimer.leases(of: migration), nanos: nanos)
            markTimers(of: migration.id)
        }
    }

    /// The failure that stopped writes, if the log stopped taking them.
    public var stopped: EventLogError? {
        switch latch {
        case .writing: nil
        case .stopped(let error): error
        }
    }

    /// Whether every appended event is folded in, with the live state at `lastSequence`: a snapshot of it
    /// now names a consistent point of the log.
    public func isConsistent(lastSequence: UInt64) -> Bool {
        foldedAhead.isEmpty && foldedThrough == lastSequence
    }

    /// Notes that an append's events (global sequences `range`) are folded into the live state.
    mutating func noteFolded(_ range: ClosedRange<UInt64>) {
        precondition(range.lowerBound > foldedThrough, "events \(range) were folded twice")
        let index = foldedAhead.firstIndex { $0.lowerBound > range.lowerBound } ?? foldedAhead.endIndex
        foldedAhead.insert(range, at: index)
        while let first = foldedAhead.first, first.lowerBound == foldedThrough + 1 {
            foldedThrough = first.upperBound
            foldedAhead.removeFirst()
        }
    }

    @discardableResult
    public mutating func handle(_ input: Input) -> [Action] {
        switch input {
        case .command(let caller, let command, let metadata, let now):
            return commandWanted(Pending(caller: caller, command: command, metadata: metadata, now: now))

        case .appended(let caller, let receipt, let nanos):
            return appended(caller, receipt, nanos: nanos)

        case .appendFailed(let caller, let error):
            switch (latch, error) {
            case (.writing, .writesStopped), (.writing, .outcomeUnknown), (.writing, .corrupted):
                latch = .stopped(.writesStopped(reason: "an earlier append failed: \(error.description)"))
            default:
                // Refusals the log can make without changing (a version conflict, overload, a bad
                // request) leave it writing; a second failure after the stop changes nothing.
                break
            }
            guard case .appending(let pending, _, _)? = inFlight.removeValue(forKey: caller) else {
                assertionFailure("caller \(caller) reported an append it was not asked for")
                return []
            }
            return [.tell(caller, .refused(.storage(error)))] + advance(pending.command.stream)

        case .lookedUp(let caller, let found):
            return lookedUp(caller, found)

        case .lookUpFailed(let caller, let error):
            switch inFlight.removeValue(forKey: caller) {
            case .lookingUp(let pending)?: return [.tell(caller, .refused(.storage(error)))] + advance(pending.command.stream)
            case .heartbeatLookingUp?: return [.tell(caller, .refused(.storage(error)))]
            case .appending?, .offering?, nil:
                assertionFailure("caller \(caller) reported a look-up it was not asked for")
                return []
            }

        case .heartbeat(let caller, let migration, let node, let token, let by, let now, let nanos):
            return heartbeat(Pending(caller: caller, command: .migration(migration, .heartbeat(node: node, token: token, by: by)),
                                     metadata: EventMetadata(recordedAt: now, actor: .coordinator, triggeredBy: .agent), now: now), nanos: nanos)

        case .grantPassWanted(let caller, let now):
            grantNow = max(grantNow ?? now, now)
            switch grantPass {
            case .idle:
                grantPass = .running(runner: caller, serving: [], waiters: [])
                return [startPass(by: caller)]
            case .running(let runner, let serving, var waiters):
                // Waits for the next pass, which starts after this one and so sees everything folded before the call.
                waiters.append(caller)
                grantPass = .running(runner: runner, serving: serving, waiters: waiters)
                return []
            }

        case .grantPassDone:
            switch grantPass {
            case .idle:
                assertionFailure("a grant pass ended that never started")
                return []
            case .running(let runner, let serving, let waiters):
                var actions = serving.map { Action.tell($0, .resumed) }
                if waiters.isEmpty {
                    grantPass = .idle
                } else {
                    // The runner runs the next pass too, for those who asked during the last one.
                    grantPass = .running(runner: runner, serving: waiters, waiters: [])
                    actions.append(startPass(by: runner))
                }
                return actions
            }

        case .grantOwed(let reconcile):
            grantPassOwed = true
            if reconcile { reconcileOwed = true }
            return []

        case .snapshotWanted:
            // (Saturating: an interval from the configuration may be as large as UInt64 allows.)
            let (due, overflow) = lastSnapshotSequence.addingReportingOverflow(snapshotDueEvents)
            guard snapshotIntervalEvents > 0, snapshotting == .idle, isConsistent(lastSequence: state.lastSequence),
                  !overflow, foldedThrough >= due else { return [] }
            snapshotting = .writing
            return [.writeSnapshot(sequence: foldedThrough)]

        case .snapshotEnded(let sequence, let bytes):
            assert(snapshotting == .writing, "a snapshot ended that was not being written")
            snapshotting = .idle
            lastSnapshotSequence = max(lastSnapshotSequence, sequence)
            if let bytes { lastSnapshotBytes = UInt64(max(0, bytes)) }
            return []

        case .snapshotSaved(let sequence, let bytes):
            lastSnapshotSequence = max(lastSnapshotSequence, sequence)
            lastSnapshotBytes = UInt64(max(0, bytes))
            return []

        case .followed(let events, let nanos):
            return followed(events, nanos: nanos)

        case .claimed(let caller, let claims):
            return claimed(caller, claims)

        case .timersDue(let phase, let now, let nanos):
            return timersDue(phase, now: now, nanos: nanos).map(Action.timer)
        }
    }

    /// A pass starts: what was owed is now its work.
    private mutating func startPass(by runner: Caller) -> Action {
        let reconcile = reconcileOwed
        grantPassOwed = false
        reconcileOwed = false
        // (`grantNow` is set: every pass starts from a `grantPassWanted`.)
        return .tell(runner, .runGrantPass(now: grantNow ?? Instant(millisecondsSinceEpoch: 0), reconcile: reconcile))
    }
}
