import LockstepCore
import LockstepStore
import LockstepWire

// The coordinator's timers: the one timer policy (`tick`) every shell runs, each timer's work, and
// when the next is due. The lease timers they read are armed in Coordinator.swift as leases change.
extension Coordinator {
    /// The timer's work: aborts into rollback every migration whose deadline (or a node's) has passed
    /// at `now`, as the coordinator with `triggered_by: deadline`. Returns them in id order.
    @discardableResult
    public func enforceDeadlines(now: Instant) async -> [MigrationID] {
        let due = state.unsettledInOrder.filter { ($0.nextDeadline.map { $0 <= now }) ?? false }.map(\.id)
        var aborted: [MigrationID] = []
        for id in due {
            let context = CommandContext(actor: .coordinator, triggeredBy: .deadline, causationID: "deadline")
            if await timerExecute(.enforceDeadlines, migration: id, context: context, now: now) { aborted.append(id) }
        }
        return aborted
    }

    /// The timer's work: judges every bake that has ended by `now` (the node's analysis decides: advance,
    /// pause, or abort into rollback with `triggered_by: metric`), as the coordinator. Returns how many.
    @discardableResult
    public func evaluateDueBakes(now: Instant) async -> Int {
        var judged = 0
        for migration in state.unsettledInOrder where (migration.nextBakeEnd.map { $0 <= now }) ?? false {
            for node in migration.nodes where node.status == .baking && !node.exposure.awaitingDecision && (node.exposure.bakeUntil.map { $0 <= now } ?? false) {
                let context = CommandContext(actor: .coordinator, triggeredBy: .metric, causationID: "bake-end")
                if await timerExecute(.evaluateExposure(node: node.id), migration: migration.id, context: context, now: now) { judged += 1 }
            }
        }
        return judged
    }

    /// The timer's work: every step running past its node's `start_to_close` at `now` fails with
    /// `start_to_close_exceeded`, as the coordinator; its lease ends (the agent's next report or heartbeat
    /// is refused) and the node's retry policy applies, as for any retryable failure. Returns how many.
    @discardableResult
    public func timeOutDueSteps(now: Instant) async -> Int {
        var timedOut = 0
        for migration in state.unsettledInOrder {
            for step in migration.stepsPastStartToClose(at: now) {
                let context = CommandContext(actor: .coordinator, triggeredBy: .coordinator, causationID: "start-to-close")
                if await timerExecute(.timeOutStep(node: step.node, token: step.token), migration: migration.id, context: context, now: now) {
                    timedOut += 1
                }
            }
        }
        return timedOut
    }

    /// The timer's work for `timeouts.schedule_to_start`: notes, on the monotonic clock, when each node
    /// that sets one starts waiting for an agent (running, ready at `now`, holding its services), forgets
    /// it when it stops waiting (leased, paused, released), and pauses the migration of a node that has
    /// waited its whole schedule_to_start (`schedule_to_start_exceeded`, as the coordinator): no agent of
    /// its service is taking steps, and a person should look. Returns the migrations paused, in id order.
    @discardableResult
    public func pauseStepsNobodyTook(now: Instant) async -> [MigrationID] {
        var waiting: [CoordinatorMachine.WaitingNode] = []
        for migration in state.unsettledInOrder where migration.plan.nodes.contains(where: { $0.timeouts.scheduleToStartMillis != nil }) {
            for spec in migration.plan.nodes {
                guard let limit = spec.timeouts.scheduleToStartMillis, migration.isWaitingForAgent(spec.id, at: now) else { continue }
                waiting.append(.init(migration: migration.id, node: spec.id, scheduleToStartMillis: limit))
            }
        }
        var paused: [MigrationID] = []
        for action in machine.handle(.waitingForAgents(waiting, nanos: monotonic())) {
            guard case .scheduleToStartExceeded(let id, let node) = action, !paused.contains(id) else { continue }
            let context = CommandContext(actor: .coordinator, triggeredBy: .coordinator, causationID: "schedule-to-start")
            if await timerExecute(.scheduleToStartExceeded(node: node), migration: id, context: context, now: now) {
                paused.append(id)
                machine.handle(.scheduleToStartHandled(id))
            }
        }
        return paused
    }

    /// Runs a timer's command. A refusal means the timer lost a race (the step reported, the migration
    /// moved on since it looked) and is nothing to do; any other failure (storage: the coordinator has
    /// stopped) is kept for `tick` to report, never dropped.
    func timerExecute(_ command: MigrationCommand, migration id: MigrationID, context: CommandContext, now: Instant) async -> Bool {
        do throws(CommandError) {
            _ = try await execute(command, migration: id, context: context, now: now)
            return true
        } catch {
            if case .rejected = error { return false }
            timerFailures.append(error)
            return false
        }
    }

    /// What one pass of the timers did.
    public struct TimerReport: Hashable, Sendable {
        public var deadlinesPassed = 0
        public var leasesExpired = 0
        public var stepsTimedOut = 0
        public var bakesJudged = 0
        public var pausedForScheduleToStart = 0
        /// Failures other than a lost race (storage: the coordinator stopped), in order.
        public var failures: [CommandError] = []

        /// Whether the pass recorded anything.
        public var didWork: Bool { deadlinesPassed + leasesExpired + stepsTimedOut + bakesJudged + pausedForScheduleToStart > 0 }
    }

    /// The timer policy, in one place, for every shell (the server's timer service and the rehearsal):
    /// at `now` (wall) and the monotonic clock's reading, in this order: migrations past their deadline
    /// abort (a deadline fires at its instant whatever else is due); leases not renewed within their TTL
    /// expire; steps past their start_to_close fail; bakes that ended are judged; steps nobody took within
    /// their schedule_to_start pause their migration; and a grant pass runs when one is owed.
    public func tick(now: Instant) async -> TimerReport {
        var report = TimerReport()
        if let deadline = nextDeadline, deadline <= now { report.deadlinesPassed = await enforceDeadlines(now: now).count }
        report.leasesExpired = await expireDueLeases(now: now).count
        if let timeout = nextStepTimeout, timeout <= now { report.stepsTimedOut = await timeOutDueSteps(now: now) }
        if let bakeEnd = nextBakeEnd, bakeEnd <= now { report.bakesJudged = await evaluateDueBakes(now: now) }
        if tracksScheduleToStart { report.pausedForScheduleToStart = await pauseStepsNobodyTook(now: now).count }
        if machine.grantPassOwed { await grantServiceLeases(now: now) }
        report.failures = timerFailures
        timerFailures = []
        return report
    }

    /// The earliest wall instant at which `tick` has work, seen at `now`: a deadline, a bake's end, a
    /// start_to_close, a lease's expiry or a schedule_to_start (these two run on the monotonic clock and
    /// are placed on the wall clock from `now`). A rehearsal sleeps exactly until it; nil when nothing is due.
    public func nextTimerDue(now: Instant) -> Instant? {
        let clock = monotonic()
        func wall(_ nanos: UInt64) -> Instant {
            now.adding(milliseconds: Int64(clamping: (nanos > clock ? nanos - clock : 0) / 1_000_000) + (nanos > clock && (nanos - clock) % 1_000_000 > 0 ? 1 : 0))
        }
        var due = [nextDeadline, nextBakeEnd, nextStepTimeout].compactMap { $0 }
        if let lease = nextLeaseDeadlineNanos { due.append(wall(lease)) }
        if let waited = machine.nextScheduleToStartNanos { due.append(wall(waited)) }
        return due.min()
    }

    /// Whether any unsettled migration's plan sets a schedule_to_start (the timer runs its check only then).
    public var tracksScheduleToStart: Bool {
        state.unsettled.contains { state.migrations[$0]?.plan.nodes.contains { $0.timeouts.scheduleToStartMillis != nil } ?? false }
    }

    /// The earliest instant at which a running step passes its `start_to_close`, in any migration.
    public var nextStepTimeout: Instant? { state.unsettled.compactMap { state.migrations[$0]?.nextStepTimeout }.min() }

    /// The earliest end of a bake in any running migration.
    public var nextBakeEnd: Instant? { state.unsettled.compactMap { state.migrations[$0]?.nextBakeEnd }.min() }

    /// The earliest deadline of any migration, for the engine's timer to sleep until.
    public var nextDeadline: Instant? { state.unsettled.compactMap { state.migrations[$0]?.nextDeadline }.min() }
}
