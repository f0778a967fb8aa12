import LockstepCore

// The engine's timers: the one timer policy (which phases, in which order, and what each finds due),
// the lease timers on the monotonic clock, and the schedule_to_start waits. Every shell (the server's
// timer service, the rehearsal, the simulations) runs the phases in `TimerPhase.allCases` order and
// performs what each returns as ordinary commands.
extension CoordinatorMachine {
    /// The timer policy's order: a pass looks at each phase in turn, each on the state the phases before
    /// it left. A deadline fires at its instant whatever else is due, so it comes first.
    public enum TimerPhase: CaseIterable, Hashable, Sendable {
        /// Migrations past their deadline (or a node's) abort into rollback (`triggered_by: deadline`).
        case deadlines
        /// Leases not renewed within their TTL (on the monotonic clock) expire.
        case leaseExpiries
        /// Steps running past their node's start_to_close fail.
        case startToClose
        /// Bakes that ended are judged by their analysis (`triggered_by: metric`).
        case bakeEnds
        /// Steps nobody took within their schedule_to_start pause their migration.
        case scheduleToStart
    }

    /// A command a timer found due, with what its events record as their cause.
    public struct TimerCommand: Hashable, Sendable {
        public var migration: MigrationID
        public var command: MigrationCommand
        public var phase: TimerPhase
        public var triggeredBy: TriggeredBy
        public var causationID: String
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
            // Asked after every append: only the nodes that hold a lease, read in place by index.
            migration.nodes.leased.compactMap { index in
                migration.nodes[index].lease.map { lease in
                    StepLeaseTimer(node: migration.nodes[index].id, token: lease.token, ttlMillis: max(CoreLimits.leaseTTLMillisMin,
                        lease.expiresAt.millisecondsSinceEpoch - lease.grantedAt.millisecondsSinceEpoch))
                }
            }
        }
    }

    /// What each unsettled migration's timers wait for, kept as the migration's events are folded (it
    /// changes only then), so a pass of the timers and `nextTimerDue` cost one look per migration, not a
    /// walk over every node of every plan.
    struct TimerMarks: Hashable, Sendable {
        var deadline: Instant?
        var stepTimeout: Instant?
        var bakeEnd: Instant?
        /// The plan sets a schedule_to_start on some node.
        var schedulesToStart: Bool
        /// The plan, a service or a node declares change windows.
        var hasWindows: Bool

        init(_ migration: MigrationState) {
            deadline = migration.nextDeadline
            stepTimeout = migration.nextStepTimeout
            bakeEnd = migration.nextBakeEnd
            schedulesToStart = migration.plan.schedulesToStart
            hasWindows = migration.plan.hasWindows
        }
    }

    /// Brings migration `id`'s timer marks up to date with the live state (none once it has settled).
    mutating func markTimers(of id: MigrationID) {
        windowChanges[id] = nil
        guard state.unsettled.contains(id), let migration = state.migrations[id] else {
            timerMarks[id] = nil
            return
        }
        timerMarks[id] = TimerMarks(migration)
    }

    /// The unsettled migrations whose mark passes `isDue`, in id order (the order of `unsettledInOrder`).
    private func marked(_ isDue: (TimerMarks) -> Bool) -> [MigrationState] {
        timerMarks.filter { isDue($0.value) }.keys.sorted().compactMap { state.migrations[$0] }
    }

    /// What `phase` finds due at wall `now` and monotonic `nanos`, in (migration, node) order.
    mutating func timersDue(_ phase: TimerPhase, now: Instant, nanos: UInt64) -> [TimerCommand] {
        // The invariant the marks keep: exactly what the live state says (checked in debug builds).
        assert(timerMarks == Dictionary(uniqueKeysWithValues: state.unsettledInOrder.map { ($0.id, TimerMarks($0)) }),
               "the timer marks differ from the live state")
        func due(_ migration: MigrationID, _ command: MigrationCommand, _ triggeredBy: TriggeredBy, _ causation: String) -> TimerCommand {
            TimerCommand(migration: migration, command: command, phase: phase, triggeredBy: triggeredBy, causationID: causation)
        }
        switch phase {
        case .deadlines:
            guard let next = nextDeadline, next <= now else { return [] }
            return marked { ($0.deadline.map { $0 <= now }) ?? false }.map { due($0.id, .enforceDeadlines, .deadline, "deadline") }
        case .leaseExpiries:
            return leasesDue(nanos: nanos).map { due($0.migration, .expireLease(node: $0.node, token: $0.token), .coordinator, "lease-timer") }
        case .startToClose:
            guard let next = nextStepTimeout, next <= now else { return [] }
            return marked { ($0.stepTimeout.map { $0 <= now }) ?? false }.flatMap { migration in
                migration.stepsPastStartToClose(at: now).map { due(migration.id, .timeOutStep(node: $0.node, token: $0.token), .coordinator, "start-to-close") }
            }
        case .bakeEnds:
            guard let next = nextBakeEnd, next <= now else { return [] }
            return marked { ($0.bakeEnd.map { $0 <= now }) ?? false }.flatMap { migration in
                migration.nodes.filter { $0.status == .baking && !$0.exposure.awaitingDecision && ($0.exposure.bakeUntil.map { $0 <= now } ?? false) }
                    .map { due(migration.id, .evaluateExposure(node: $0.id), .metric, "bake-end") }
            }
        case .scheduleToStart:
            guard tracksScheduleToStart || !waitingSince.isEmpty else { return [] }
            var waiting: [WaitingNode] = []
            for migration in marked(\.schedulesToStart) {
                for spec in migration.plan.nodes {
                    // A node a freeze or its windows hold back is not waiting for an agent (nobody may take its step).
                    guard let limit = spec.timeouts.scheduleToStartMillis, migration.isWaitingForAgent(spec.id, at: now),
                          !state.isForwardHeld(spec.id, of: migration, at: now) else { continue }
                    waiting.append(WaitingNode(migration: migration.id, node: spec.id, scheduleToStartMillis: limit))
                }
            }
            return noteWaiting(waiting, nanos: nanos).map { due($0.migration, .scheduleToStartExceeded(node: $0.node), .coordinator, "schedule-to-start") }
        }
    }

    /// The earliest wall instant at which a timer phase has work, seen at wall `now` and monotonic
    /// `nanos`: a deadline, a bake's end, a start_to_close, a lease's expiry or a schedule_to_start (these
    /// two run on the monotonic clock and are placed on the wall clock from `now`). Nil when nothing is due.
    public mutating func nextTimerDue(now: Instant, nanos: UInt64) -> Instant? {
        func wall(_ deadline: UInt64) -> Instant {
            let ahead = deadline > nanos ? deadline - nanos : 0
            return now.adding(milliseconds: Int64(clamping: ahead / 1_000_000) + (ahead % 1_000_000 > 0 ? 1 : 0))
        }
        // A freeze's end time (one whose end failed to record stays due), and the next instant one comes into force.
        let freezes = state.freezes.isEmpty ? [] : [state.freezes.values.compactMap(\.until).min(), state.nextFreezeBoundary(after: now)]
        // The next instant a waiting node's change windows open or close.
        let windows = marked(\.hasWindows).map { windowChange(of: $0, after: now) }
        var due = ([nextDeadline, nextBakeEnd, nextStepTimeout] + freezes + windows).compactMap { $0 }
        if let lease = nextLeaseDeadlineNanos { due.append(wall(lease)) }
        if let waited = nextScheduleToStartNanos { due.append(wall(waited)) }
        return due.min()
    }

    /// When `migration`'s windows next open or close after `now`. Worked out (every waiting node, every
    /// window edge, sorted) only when the migration changed or the last answer has passed: until then,
    /// with nothing changed, the next change is the same instant. An answer of none (nothing waits, or no
    /// change within the search) is kept a minute at most.
    mutating func windowChange(of migration: MigrationState, after now: Instant) -> Instant? {
        if let known = windowChanges[migration.id], known.asOf <= now,
           now < (known.next ?? known.asOf.adding(milliseconds: WindowChange.noneKeptMillis)) {
            return known.next
        }
        let next = migration.nextWindowChange(after: now)
        windowChanges[migration.id] = WindowChange(asOf: now, next: next)
        return next
    }

    /// The next change of a migration's windows, worked out at `asOf`.
    struct WindowChange: Hashable, Sendable {
        var asOf: Instant
        var next: Instant?
        static let noneKeptMillis: Int64 = 60_000
    }

    /// Whether any unsettled migration's plan sets a schedule_to_start (the phase looks only then).
    public var tracksScheduleToStart: Bool { timerMarks.values.contains { $0.schedulesToStart } }

    /// Whether any unsettled migration's plan declares change windows (the timer then looks at them).
    public var tracksWindows: Bool { timerMarks.values.contains { $0.hasWindows } }

    /// The earliest instant at which a running step passes its `start_to_close`, in any migration.
    public var nextStepTimeout: Instant? { timerMarks.values.compactMap(\.stepTimeout).min() }

    /// The earliest end of a bake in any running migration.
    public var nextBakeEnd: Instant? { timerMarks.values.compactMap(\.bakeEnd).min() }

    /// The earliest deadline of any migration.
    public var nextDeadline: Instant? { timerMarks.values.compactMap(\.deadline).min() }

    /// When the schedule_to_start timer should next look, in monotonic nanoseconds.
    public var nextScheduleToStartNanos: UInt64? {
        waitingSince.values.flatMap { $0.values.map { $0.since &+ UInt64(max(0, $0.limitMillis)) &* 1_000_000 } }.min()
    }

    /// Step leases live now.
    public var liveStepLeaseCount: Int { leaseDeadlines.values.reduce(0) { $0 + $1.count } }

    /// When the lease timer should next look, in monotonic nanoseconds.
    public var nextLeaseDeadlineNanos: UInt64? { leaseDeadlines.values.flatMap { $0.values.map(\.deadlineNanos) }.min() }

    /// Makes `migration`'s lease timers match its live `leases` (none: its leases ended, or it left the
    /// live state), at monotonic `nanos`: a new lease starts its TTL, one with the same token keeps its deadline.
    mutating func armLeases(_ migration: MigrationID, leases: [StepLeaseTimer], nanos: UInt64) {
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
    }

    /// `migration`/`node`'s lease with `token` is renewed at monotonic `nanos` (what an accepted heartbeat
    /// does; a heartbeat with another token was refused by the core before it got here). `handedOutAgain`:
    /// it is renewed because it was handed out again to a named poll sent again, and is marked so: a
    /// give-back of it then does nothing while it runs (`wasHandedOutAgain`). The mark lives in the lease's
    /// timer, so it is bounded by the live leases and never forgotten while its lease runs.
    mutating func renewLease(_ migration: MigrationID, node: NodeID, token: FencingToken, nanos: UInt64, handedOutAgain: Bool = false) {
        guard var deadline = leaseDeadlines[migration]?[node], deadline.token == token else { return }
        deadline.deadlineNanos = nanos &+ UInt64(max(0, deadline.ttlMillis)) &* 1_000_000
        if handedOutAgain { deadline.handedOutAgain = true }
        leaseDeadlines[migration]?[node] = deadline
    }

    /// Whether `migration`/`node`'s lease with `token` runs and was handed out again (`renewLease`'s `handedOutAgain`).
    func wasHandedOutAgain(_ migration: MigrationID, node: NodeID, token: FencingToken) -> Bool {
        guard let deadline = leaseDeadlines[migration]?[node], deadline.token == token else { return false }
        return deadline.handedOutAgain
    }

    /// The leases past their deadline at monotonic `nanos`, in (migration, node) order, so every shell
    /// expires them in the same order.
    func leasesDue(nanos: UInt64) -> [(migration: MigrationID, node: NodeID, token: FencingToken)] {
        leaseDeadlines.flatMap { migration, nodes in
            nodes.filter { $0.value.deadlineNanos <= nanos }.map { (migration: migration, node: $0.key, token: $0.value.token) }
        }
        .sorted { ($0.migration, $0.node.rawValue) < ($1.migration, $1.node.rawValue) }
    }

    /// Notes the nodes waiting for an agent now (running, ready, holding their services), each with its
    /// schedule_to_start, at monotonic `nanos`, and returns those that have waited all of it. Nodes no
    /// longer listed are forgotten (leased, paused, released): should they wait again, it starts again.
    mutating func noteWaiting(_ nodes: [WaitingNode], nanos: UInt64) -> [(migration: MigrationID, node: NodeID)] {
        var tracked: [MigrationID: [NodeID: (since: UInt64, limitMillis: Int64)]] = [:]
        var due: [(migration: MigrationID, node: NodeID)] = []
        for waiting in nodes {
            let since = waitingSince[waiting.migration]?[waiting.node]?.since ?? nanos
            tracked[waiting.migration, default: [:]][waiting.node] = (since, waiting.scheduleToStartMillis)
            if nanos &- since >= UInt64(max(0, waiting.scheduleToStartMillis)) &* 1_000_000 { due.append((waiting.migration, waiting.node)) }
        }
        waitingSince = tracked
        return due
    }
}
