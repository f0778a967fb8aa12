import LockstepCore
import LockstepStore
import LockstepWire

// The coordinator's timers, the shell's side: the machine's timer policy (CoordinatorMachine+Timers)
// says what each phase finds due, in order; this performs each as an ordinary command, as the coordinator.
extension Coordinator {
    /// Runs one phase of the timer policy at `now`: performs, in order, every command the machine finds
    /// due, each as the coordinator with the trigger and causation the phase records. Returns the ones
    /// that took effect (a refusal means the timer lost a race: the step reported, the migration moved on
    /// since the machine looked). Any other failure (storage: the coordinator has stopped) is kept for
    /// `tick` to report, never dropped.
    func runTimers(_ phase: CoordinatorMachine.TimerPhase, now: Instant) async -> [CoordinatorMachine.TimerCommand] {
        var performed: [CoordinatorMachine.TimerCommand] = []
        for action in machine.handle(.timersDue(phase, now: now, nanos: monotonic())) {
            guard case .timer(let due) = action else { continue }
            let context = CommandContext(actor: .coordinator, triggeredBy: due.triggeredBy, causationID: due.causationID)
            do throws(CommandError) {
                _ = try await execute(due.command, migration: due.migration, context: context, now: now)
                performed.append(due)
            } catch {
                if case .rejected = error { continue }
                timerFailures.append(error)
            }
        }
        return performed
    }

    /// The deadline phase alone: aborts into rollback every migration whose deadline (or a node's) has
    /// passed at `now`, with `triggered_by: deadline`. Returns them in id order.
    @discardableResult
    public func enforceDeadlines(now: Instant) async -> [MigrationID] {
        await runTimers(.deadlines, now: now).map(\.migration)
    }

    /// The lease phase alone: every lease not renewed within its TTL (on the monotonic clock) becomes a
    /// `step_failed` with `lease_expired`; the step is offered again as a new attempt with a new token if
    /// the policy allows (a lost agent is not counted, up to `CoreLimits.agentsLostMax`). Returns the
    /// expired (migration, node) pairs in order.
    @discardableResult
    public func expireDueLeases(now: Instant) async -> [(MigrationID, NodeID)] {
        await runTimers(.leaseExpiries, now: now).compactMap { due in
            guard case .expireLease(let node, _) = due.command else { return nil }
            return (due.migration, node)
        }
    }

    /// The start_to_close phase alone: every step running past its node's `start_to_close` at `now` fails
    /// with `start_to_close_exceeded`; its lease ends and the node's retry policy applies. Returns how many.
    @discardableResult
    public func timeOutDueSteps(now: Instant) async -> Int {
        await runTimers(.startToClose, now: now).count
    }

    /// The bake phase alone: judges every bake that has ended by `now` (the node's analysis decides:
    /// advance, pause, or abort into rollback with `triggered_by: metric`). Returns how many.
    @discardableResult
    public func evaluateDueBakes(now: Instant) async -> Int {
        await runTimers(.bakeEnds, now: now).count
    }

    /// The schedule_to_start phase alone: pauses the migration of a node that has waited its whole
    /// schedule_to_start for an agent (`schedule_to_start_exceeded`); no agent of its service is taking
    /// steps, and a person should look. Returns the migrations paused, in id order.
    @discardableResult
    public func pauseStepsNobodyTook(now: Instant) async -> [MigrationID] {
        var paused: [MigrationID] = []
        for due in await runTimers(.scheduleToStart, now: now) where !paused.contains(due.migration) { paused.append(due.migration) }
        return paused
    }

    /// What one pass of the timers did.
    public struct TimerReport: Hashable, Sendable {
        public var deadlinesPassed = 0
        public var leasesExpired = 0
        public var stepsTimedOut = 0
        public var bakesJudged = 0
        public var pausedForScheduleToStart = 0
        public var freezesEnded = 0
        /// Failures other than a lost race (storage: the coordinator stopped), in order.
        public var failures: [CommandError] = []

        /// Whether the pass recorded anything.
        public var didWork: Bool { deadlinesPassed + leasesExpired + stepsTimedOut + bakesJudged + pausedForScheduleToStart + freezesEnded > 0 }
    }

    /// The timer policy, for every shell (the server's timer service, the rehearsal, the simulations):
    /// at `now` (wall) and the monotonic clock's reading, each phase in the machine's order
    /// (`CoordinatorMachine.TimerPhase`), then the end of freezes whose end time passed, then a grant
    /// pass when one is owed.
    public func tick(now: Instant) async -> TimerReport {
        var report = TimerReport()
        for phase in CoordinatorMachine.TimerPhase.allCases {
            let performed = await runTimers(phase, now: now)
            switch phase {
            case .deadlines: report.deadlinesPassed = performed.count
            case .leaseExpiries: report.leasesExpired = performed.count
            case .startToClose: report.stepsTimedOut = performed.count
            case .bakeEnds: report.bakesJudged = performed.count
            case .scheduleToStart: report.pausedForScheduleToStart = Set(performed.map(\.migration)).count
            }
        }
        report.freezesEnded = await endFreezesPastTheirEnd(now: now)
        // A freeze that came into force since (its `from` passed), or a window that closed, may hold nodes
        // that hold their services.
        let windows = machine.tracksWindows
        if !state.freezes.isEmpty || windows { await yieldServicesToFreezes(now: now) }
        // A window that opened may let a request set aside under it be granted (nothing records its opening).
        if machine.grantPassOwed || (windows && state.serviceLeases.hasRequests) { await grantServiceLeases(now: now) }
        report.failures = timerFailures
        timerFailures = []
        return report
    }

    /// The earliest wall instant at which `tick` has work, seen at `now` (see
    /// `CoordinatorMachine.nextTimerDue`). A rehearsal sleeps exactly until it; nil when nothing is due.
    public func nextTimerDue(now: Instant) -> Instant? { machine.nextTimerDue(now: now, nanos: monotonic()) }

    /// Whether any unsettled migration's plan sets a schedule_to_start.
    public var tracksScheduleToStart: Bool { machine.tracksScheduleToStart }

    /// The earliest instant at which a running step passes its `start_to_close`, in any migration.
    public var nextStepTimeout: Instant? { machine.nextStepTimeout }

    /// The earliest end of a bake in any running migration.
    public var nextBakeEnd: Instant? { machine.nextBakeEnd }

    /// The earliest deadline of any migration, for the engine's timer to sleep until.
    public var nextDeadline: Instant? { machine.nextDeadline }
}
