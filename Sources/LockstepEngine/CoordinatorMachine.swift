import DequeModule
import LockstepCore
import LockstepStore

/// The coordinator's bookkeeping as one value-type state machine (issue 15, item 1, its first part):
/// what was implicit in the actor's flags and continuations is named state here, changed only by
/// `handle(_:)`, which returns what the shell must do. It reads no clock and performs no I/O; the
/// `Coordinator` actor feeds it inputs and executes its actions (resuming callers, running a grant pass,
/// writing a snapshot). Deciding, appending and folding events stay in the actor for now; the lease and
/// schedule_to_start timers are next.
///
/// - **Turns per stream**: one command per stream (a migration or a plan) at a time, the rest in line,
///   at most `commandsWaitingPerStreamMax` of them, handed over in arrival order.
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
        /// A command on `stream` wants its turn.
        case turnWanted(Caller, stream: String)
        /// The command holding `stream`'s turn is done (appended, refused or failed).
        case turnEnded(stream: String)
        /// An append's events (global sequences `range`) are folded into the live state.
        case folded(ClosedRange<UInt64>)
        /// The log failed an append.
        case appendFailed(EventLogError)
        /// A caller wants the lease queue to run, recording `now`.
        case grantPassWanted(Caller, now: Instant)
        /// The pass runner finished the pass it was given.
        case grantPassDone
        /// A grant (or the reconciliation of an old history) could not be appended for a reason that is
        /// no refusal: another pass is owed; `reconcile`: the reconciliation must run again.
        case grantOwed(reconcile: Bool)
        /// The shell asks whether a snapshot is due, the live state being at `lastSequence`.
        case snapshotWanted(lastSequence: UInt64)
        /// The snapshot asked for ended, written or not, as of `sequence`.
        case snapshotEnded(sequence: UInt64)
        /// A snapshot the shell wrote on its own (`Coordinator.saveSnapshot`) is at `sequence`.
        case snapshotSaved(sequence: UInt64)
        /// `migration`'s live step leases are now `leases` (none: its leases ended, or it left the live
        /// state), at monotonic `nanos`: a new lease starts its TTL, one with the same token keeps its deadline.
        case leasesChanged(MigrationID, leases: [StepLeaseTimer], nanos: UInt64)
        /// The holder of `migration`/`node`'s lease with `token` is alive, at monotonic `nanos`.
        case heartbeat(MigrationID, node: NodeID, token: FencingToken, nanos: UInt64)
        /// The timer looks at monotonic `nanos`: which leases are past their deadline?
        case leasesDue(nanos: UInt64)
        /// The nodes waiting for an agent now (running, ready, holding their services), each with its
        /// schedule_to_start, at monotonic `nanos`: which have waited all of it? Nodes no longer listed
        /// are forgotten (leased, paused, released).
        case waitingForAgents([WaitingNode], nanos: UInt64)
        /// `migration` was paused for a node nobody took: its nodes' waits start again when it resumes.
        case scheduleToStartHandled(MigrationID)
    }

    /// A node waiting for an agent, and how long it may (milliseconds).
    public struct WaitingNode: Hashable, Sendable {
        public var migration: MigrationID
        public var node: NodeID
        public var scheduleToStartMillis: Int64

        public init(migration: MigrationID, node: NodeID, scheduleToStartMillis: Int64) {
            self.migration = migration
            self.node = node
            self.scheduleToStartMillis = scheduleToStartMillis
        }
    }

    /// A live step lease as the timer knows it.
    public struct StepLeaseTimer: Hashable, Sendable {
        public var node: NodeID
        public var token: FencingToken
        public var ttlMillis: Int64

        public init(node: NodeID, token: FencingToken, ttlMillis: Int64) {
            self.node = node
            self.token = token
            self.ttlMillis = ttlMillis
        }

        /// The live leases of `migration`, each with the TTL it was granted with (at least the core's minimum).
        public static func leases(of migration: MigrationState) -> [StepLeaseTimer] {
            migration.nodes.compactMap { node in
                node.lease.map { lease in
                    StepLeaseTimer(node: node.id, token: lease.token, ttlMillis: max(CoreLimits.leaseTTLMillisMin,
                        lease.expiresAt.millisecondsSinceEpoch - lease.grantedAt.millisecondsSinceEpoch))
                }
            }
        }
    }

    public enum Action: Hashable, Sendable {
        /// The caller's turn on its stream: decide and append now.
        case proceed(Caller)
        /// The caller is refused before anything is decided.
        case refuse(Caller, CommandError)
        /// The caller runs a grant pass at `now` (reconciling an old history's bookkeeping first when
        /// `reconcile`), then reports `grantPassDone`.
        case runGrantPass(Caller, now: Instant, reconcile: Bool)
        /// A caller waiting for a grant pass goes on: the pass it waited for has run.
        case resume(Caller)
        /// Write a snapshot of the live state (at `sequence`), then report `snapshotEnded`.
        case writeSnapshot(sequence: UInt64)
        /// The lease of `migration`/`node` with `token` was not renewed within its TTL: record its expiry.
        case expireLease(MigrationID, node: NodeID, token: FencingToken)
        /// `migration`/`node` has waited its whole schedule_to_start: pause the migration (then report
        /// `scheduleToStartHandled`).
        case scheduleToStartExceeded(MigrationID, node: NodeID)
    }

    /// A live lease's timer.
    struct LeaseDeadline: Hashable, Sendable {
        var token: FencingToken
        var ttlMillis: Int64
        var deadlineNanos: UInt64
    }

    /// A stream's turn: absent when nobody holds it.
    enum Turn: Hashable, Sendable {
        /// Held by a command, with the callers in line behind it.
        case held(waiting: Deque<Caller>)
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
    /// A snapshot is due after this many events since the last one (0 = never).
    public let snapshotIntervalEvents: UInt64

    var turns: [String: Turn] = [:]
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

    /// For each node waiting for an agent: since when (monotonic nanoseconds), and for how long it may.
    var waitingSince: [MigrationID: [NodeID: (since: UInt64, limitMillis: Int64)]] = [:]

    /// When the schedule_to_start timer should next look, in monotonic nanoseconds.
    public var nextScheduleToStartNanos: UInt64? {
        waitingSince.values.flatMap { $0.values.map { $0.since &+ UInt64(max(0, $0.limitMillis)) &* 1_000_000 } }.min()
    }

    /// Step leases live now.
    public var liveStepLeaseCount: Int { leaseDeadlines.values.reduce(0) { $0 + $1.count } }

    /// When the lease timer should next look, in monotonic nanoseconds.
    public var nextLeaseDeadlineNanos: UInt64? { leaseDeadlines.values.flatMap { $0.values.map(\.deadlineNanos) }.min() }

    /// A machine for a live state folded through `foldedThrough`, whose newest snapshot is at `snapshotSequence`.
    public init(foldedThrough: UInt64, snapshotSequence: UInt64, commandsWaitingPerStreamMax: Int, snapshotIntervalEvents: UInt64) {
        self.foldedThrough = foldedThrough
        self.lastSnapshotSequence = snapshotSequence
        self.commandsWaitingPerStreamMax = commandsWaitingPerStreamMax
        self.snapshotIntervalEvents = snapshotIntervalEvents
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

    @discardableResult
    public mutating func handle(_ input: Input) -> [Action] {
        switch input {
        case .turnWanted(let caller, let stream):
            if let stopped { return [.refuse(caller, .storage(stopped))] }
            switch turns[stream] {
            case nil:
                turns[stream] = .held(waiting: [])
                return [.proceed(caller)]
            case .held(var waiting):
                guard waiting.count < commandsWaitingPerStreamMax else {
                    return [.refuse(caller, .overloaded(stream: stream, waitingMax: commandsWaitingPerStreamMax))]
                }
                waiting.append(caller)
                turns[stream] = .held(waiting: waiting)
                return []
            }

        case .turnEnded(let stream):
            switch turns[stream] {
            case nil:
                assertionFailure("the turn of \(stream) ended but nobody held it")
                return []
            case .held(var waiting):
                // Handed over in arrival order; the stream stays held.
                guard let next = waiting.popFirst() else {
                    turns[stream] = nil
                    return []
                }
                turns[stream] = .held(waiting: waiting)
                // (A command that waited through the stop is refused when it looks: `perform` checks again.)
                return [.proceed(next)]
            }

        case .folded(let range):
            precondition(range.lowerBound > foldedThrough, "events \(range) were folded twice")
            let index = foldedAhead.firstIndex { $0.lowerBound > range.lowerBound } ?? foldedAhead.endIndex
            foldedAhead.insert(range, at: index)
            while let first = foldedAhead.first, first.lowerBound == foldedThrough + 1 {
                foldedThrough = first.upperBound
                foldedAhead.removeFirst()
            }
            return []

        case .appendFailed(let error):
            switch (latch, error) {
            case (.writing, .writesStopped), (.writing, .outcomeUnknown), (.writing, .corrupted):
                latch = .stopped(.writesStopped(reason: "an earlier append failed: \(error.description)"))
            default:
                // Refusals the log can make without changing (a version conflict, overload, a bad
                // request) leave it writing; a second failure after the stop changes nothing.
                break
            }
            return []

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
                var actions = serving.map(Action.resume)
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

        case .snapshotWanted(let lastSequence):
            guard snapshotIntervalEvents > 0, snapshotting == .idle, isConsistent(lastSequence: lastSequence),
                  foldedThrough >= lastSnapshotSequence &+ snapshotIntervalEvents else { return [] }
            snapshotting = .writing
            return [.writeSnapshot(sequence: foldedThrough)]

        case .snapshotEnded(let sequence):
            assert(snapshotting == .writing, "a snapshot ended that was not being written")
            snapshotting = .idle
            lastSnapshotSequence = max(lastSnapshotSequence, sequence)
            return []

        case .snapshotSaved(let sequence):
            lastSnapshotSequence = max(lastSnapshotSequence, sequence)
            return []

        case .leasesChanged(let migration, let leases, let nanos):
            let existing = leaseDeadlines[migration] ?? [:]
            var live: [NodeID: LeaseDeadline] = [:]
            for lease in leases {
                if let kept = existing[lease.node], kept.token == lease.token {
                    // The same lease: a heartbeat may have extended it.
                    live[lease.node] = kept
                } else {
                    live[lease.node] = LeaseDeadline(token: lease.token, ttlMillis: lease.ttlMillis,
                                                     deadlineNanos: nanos &+ UInt64(max(0, lease.ttlMillis)) &* 1_000_000)
                }
            }
            leaseDeadlines[migration] = live.isEmpty ? nil : live
            return []

        case .heartbeat(let migration, let node, let token, let nanos):
            // (A heartbeat with another token was refused by the core before it got here.)
            guard var deadline = leaseDeadlines[migration]?[node], deadline.token == token else { return [] }
            deadline.deadlineNanos = nanos &+ UInt64(max(0, deadline.ttlMillis)) &* 1_000_000
            leaseDeadlines[migration]?[node] = deadline
            return []

        case .waitingForAgents(let nodes, let nanos):
            var tracked: [MigrationID: [NodeID: (since: UInt64, limitMillis: Int64)]] = [:]
            var due: [Action] = []
            for waiting in nodes {
                let since = waitingSince[waiting.migration]?[waiting.node]?.since ?? nanos
                tracked[waiting.migration, default: [:]][waiting.node] = (since, waiting.scheduleToStartMillis)
                if nanos &- since >= UInt64(max(0, waiting.scheduleToStartMillis)) &* 1_000_000 {
                    due.append(.scheduleToStartExceeded(waiting.migration, node: waiting.node))
                }
            }
            waitingSince = tracked
            return due

        case .scheduleToStartHandled(let migration):
            waitingSince[migration] = nil
            return []

        case .leasesDue(let nanos):
            // In (migration, node) order, so every shell expires them in the same order.
            return leaseDeadlines.flatMap { migration, nodes in
                nodes.filter { $0.value.deadlineNanos <= nanos }.map { (migration: migration, node: $0.key, token: $0.value.token) }
            }
            .sorted { ($0.migration, $0.node.rawValue) < ($1.migration, $1.node.rawValue) }
            .map { Action.expireLease($0.migration, node: $0.node, token: $0.token) }
        }
    }

    /// A pass starts: what was owed is now its work.
    private mutating func startPass(by runner: Caller) -> Action {
        let reconcile = reconcileOwed
        grantPassOwed = false
        reconcileOwed = false
        // (`grantNow` is set: every pass starts from a `grantPassWanted`.)
        return .runGrantPass(runner, now: grantNow ?? Instant(millisecondsSinceEpoch: 0), reconcile: reconcile)
    }
}
