import LockstepCore
@testable import LockstepEngine
import LockstepStore
import Testing

/// The coordinator's bookkeeping machine on its own: inputs in, actions out, no actor, no clock, no log.
@Suite struct CoordinatorMachineTests {
    static func machine(waitingMax: Int = 2, snapshotInterval: UInt64 = 10) -> CoordinatorMachine {
        CoordinatorMachine(state: LogState(), snapshotSequence: 0, commandsWaitingPerStreamMax: waitingMax, snapshotIntervalEvents: snapshotInterval, nanos: 0)
    }

    static let metadata = EventMetadata(recordedAt: t(0), actor: Actor(kind: "user", id: "alice"), triggeredBy: .user)
    static let plan = ExamplePlans.chain(length: 2, service: "orders").hashed()
    static let a = MigrationID("a")

    /// The shell's part, done by hand: performs what the machine asks of `caller` (appends at the next
    /// global sequences, look-ups finding nothing) until it answers.
    static func drive(_ machine: inout CoordinatorMachine, _ caller: CoordinatorMachine.Caller, _ first: [CoordinatorMachine.Action]) -> CoordinatorMachine.Word? {
        var actions = first
        while true {
            guard let word = actions.lazy.compactMap({ action -> CoordinatorMachine.Word? in
                if case .tell(caller, let word) = action { word } else { nil }
            }).first else { return nil }
            switch word {
            case .append(let request):
                let first = machine.state.lastSequence + 1
                let receipt = AppendReceipt(firstSequence: first, lastSequence: first + UInt64(request.records.count) - 1,
                                            streamVersion: request.expectedVersion + UInt64(request.records.count))
                actions = machine.handle(.appended(caller, receipt, nanos: 0))
            case .lookUp(_, let fold):
                actions = machine.handle(.lookedUp(caller, fold ? .migration(nil) : .streamVersion(0)))
            default:
                return word
            }
        }
    }

    /// A machine whose live state has the plan applied and migration `a` started on it.
    static func running(waitingMax: Int = 2, snapshotInterval: UInt64 = 10) -> CoordinatorMachine {
        var machine = Self.machine(waitingMax: waitingMax, snapshotInterval: snapshotInterval)
        _ = drive(&machine, 1, machine.handle(.command(1, .plans(.apply(plan)), metadata: metadata, now: t(0))))
        _ = drive(&machine, 2, machine.handle(.command(2, .migration(a, .start(id: a, plan: plan, startedBy: "alice")), metadata: metadata, now: t(0))))
        return machine
    }

    @Test func aCommandIsDecidedThenAppendedByItsCallerAndFoldedWhenAcknowledged() throws {
        var machine = Self.machine()
        // The plan registry decides: the caller is told what to append, and nothing is folded yet.
        let apply = machine.handle(.command(1, .plans(.apply(Self.plan)), metadata: Self.metadata, now: t(0)))
        guard case .tell(1, .append(let request))? = apply.first, apply.count == 1 else { Issue.record("\(apply)"); return }
        #expect(request.stream == "plan/\(Self.plan.name)" && request.expectedVersion == 0 && request.records.count == 1)
        #expect(machine.state.plans.isEmpty)
        // Acknowledged: folded, watchers told, the caller answered with the new version.
        let done = machine.handle(.appended(1, AppendReceipt(firstSequence: 1, lastSequence: 1, streamVersion: 1), nanos: 0))
        #expect(done == [.changed(.init(migration: nil, services: [])),
                         .tell(1, .performed(.init(result: CommandResult(events: [], receipt: AppendReceipt(firstSequence: 1, lastSequence: 1, streamVersion: 1)),
                                                   plan: .init(version: 1, changed: true))))])
        #expect(machine.state.plan(Self.plan.name) == Self.plan && machine.foldedThrough == 1)
        // A migration not in the live state is looked up first: for a start, its stream's version.
        let start = machine.handle(.command(2, .migration(Self.a, .start(id: Self.a, plan: Self.plan, startedBy: "alice")), metadata: Self.metadata, now: t(1)))
        #expect(start == [.tell(2, .lookUp(Self.a, fold: false))])
        let started = machine.handle(.lookedUp(2, .streamVersion(0)))
        guard case .tell(2, .append(let startRequest))? = started.first else { Issue.record("\(started)"); return }
        #expect(startRequest.stream == "migration/a" && startRequest.records.count == 2)  // migration_started, service_leases_requested
        guard case .tell(2, .performed(let performed))? = machine.handle(.appended(2, AppendReceipt(firstSequence: 2, lastSequence: 3, streamVersion: 2), nanos: 0)).last else {
            Issue.record("not performed"); return
        }
        #expect(performed.result.events.map(\.event.typeName) == ["migration_started", "service_leases_requested"])
        #expect(machine.state.migrations[Self.a] != nil && machine.foldedThrough == 3)
        // A settled migration's id stays taken; a command to a migration that never started is told so.
        let b = MigrationID("b")
        #expect(machine.handle(.command(3, .migration(b, .start(id: b, plan: Self.plan, startedBy: "alice")), metadata: Self.metadata, now: t(2)))
            == [.tell(3, .lookUp(b, fold: false))])
        #expect(machine.handle(.lookedUp(3, .streamVersion(5))) == [.tell(3, .refused(.rejected(.migrationAlreadyExists(b))))])
        #expect(machine.handle(.command(4, .migration(b, .resume), metadata: Self.metadata, now: t(2))) == [.tell(4, .lookUp(b, fold: true))])
        #expect(machine.handle(.lookedUp(4, .migration(nil))) == [.tell(4, .refused(.rejected(.migrationNotFound(b))))])
        // A refusal appends nothing.
        #expect(machine.handle(.command(5, .migration(Self.a, .resume), metadata: Self.metadata, now: t(2)))
            == [.tell(5, .refused(.rejected(.notPaused(Self.a, status: .running))))])
        #expect(machine.turns.isEmpty && machine.inFlight.isEmpty)
    }

    @Test func oneCommandPerStreamTheRestInLineInArrivalOrderAndBounded() {
        var machine = Self.running(waitingMax: 2)
        let pause = Command.migration(Self.a, .pause(reason: "p")), resume = Command.migration(Self.a, .resume)
        guard case .tell(10, .append)? = machine.handle(.command(10, pause, metadata: Self.metadata, now: t(1))).first else { Issue.record("no append"); return }
        // In line behind it, decided only when their turn comes; the line is bounded.
        #expect(machine.handle(.command(11, resume, metadata: Self.metadata, now: t(1))) == [])
        #expect(machine.handle(.command(12, pause, metadata: Self.metadata, now: t(1))) == [])
        #expect(machine.handle(.command(13, pause, metadata: Self.metadata, now: t(1))) == [.tell(13, .refused(.overloaded(stream: "migration/a", waitingMax: 2)))])
        // Another stream is independent.
        #expect(machine.handle(.command(14, .plans(.apply(Self.plan)), metadata: Self.metadata, now: t(1)))
            == [.tell(14, .performed(.init(result: CommandResult(events: [], receipt: nil), plan: .init(version: 1, changed: false))))])
        // The pause is acknowledged: the resume is decided on the paused state and goes out.
        let first = machine.state.lastSequence + 1
        let acknowledged = machine.handle(.appended(10, AppendReceipt(firstSequence: first, lastSequence: first, streamVersion: 3), nanos: 0))
        guard case .tell(11, .append)? = acknowledged.last else { Issue.record("\(acknowledged)"); return }
        // Its append fails without stopping the log: it is refused, and the next pause is decided on a
        // state that is still paused.
        let conflict = EventLogError.versionConflict(stream: "migration/a", expected: 3, actual: 4)
        #expect(machine.handle(.appendFailed(11, conflict))
            == [.tell(11, .refused(.storage(conflict))), .tell(12, .refused(.rejected(.alreadyPaused(Self.a))))])
        #expect(machine.stopped == nil && machine.turns.isEmpty)
        // Free: the next command is decided at once.
        guard case .tell(15, .append)? = machine.handle(.command(15, resume, metadata: Self.metadata, now: t(2))).first else { Issue.record("no append"); return }
    }

    @Test func aFailureThatLeavesTheLogUnknownStopsEveryLaterCommandAndOthersDoNot() {
        var machine = Self.running(waitingMax: 4)
        let pause = Command.migration(Self.a, .pause(reason: "p"))
        _ = machine.handle(.command(10, pause, metadata: Self.metadata, now: t(1)))
        _ = machine.handle(.command(11, pause, metadata: Self.metadata, now: t(1)))
        // A start looking its stream up while the stop comes.
        let c = MigrationID("c")
        #expect(machine.handle(.command(13, .migration(c, .start(id: c, plan: Self.plan, startedBy: "alice")), metadata: Self.metadata, now: t(1)))
            == [.tell(13, .lookUp(c, fold: false))])
        let unknown = EventLogError.outcomeUnknown(reason: "fsync failed")
        let stopped = EventLogError.writesStopped(reason: "an earlier append failed: \(unknown.description)")
        // The one in line is refused with the stop, not decided.
        #expect(machine.handle(.appendFailed(10, unknown)) == [.tell(10, .refused(.storage(unknown))), .tell(11, .refused(.storage(stopped)))])
        #expect(machine.stopped == stopped)
        #expect(machine.handle(.command(12, .plans(.apply(Self.plan)), metadata: Self.metadata, now: t(1))) == [.tell(12, .refused(.storage(stopped)))])
        // The start's look-up comes back after the stop: refused, never decided into an append.
        #expect(machine.handle(.lookedUp(13, .streamVersion(0))) == [.tell(13, .refused(.storage(stopped)))])
        #expect(machine.turns.isEmpty && machine.inFlight.isEmpty)
    }

    @Test func aHeartbeatIsCheckedLikeAReportAndTakesNoTurn() {
        var machine = Self.running()
        let node = Self.plan.nodes[0].id
        // (The lease queue's pass, by hand: the node gets its service.)
        _ = Self.drive(&machine, 9, machine.handle(.command(9, .serviceLeases(.grant(migration: Self.a, node: node, through: machine.state.lastSequence)),
                                                            metadata: Self.metadata, now: t(1))))
        guard case .performed(let leased)? = Self.drive(&machine, 10, machine.handle(.command(10, .migration(Self.a, .leaseStep(node: node, agent: "x", ttlMillis: 2_000, holder: "bot")),
                                                                                         metadata: Self.metadata, now: t(1)))),
              case .stepLeased(let lease) = leased.result.events.first?.event else { Issue.record("not leased"); return }
        #expect(machine.liveStepLeaseCount == 1 && machine.nextLeaseDeadlineNanos == 2_000_000_000)
        // A command in flight on the stream does not hold a heartbeat up.
        _ = machine.handle(.command(11, .migration(Self.a, .pause(reason: "p")), metadata: Self.metadata, now: t(1)))
        #expect(machine.handle(.heartbeat(12, Self.a, node: node, token: lease.token, by: "bot", now: t(2), nanos: 1_000_000_000)) == [.tell(12, .alive(ttlMillis: 2_000))])
        #expect(machine.nextLeaseDeadlineNanos == 3_000_000_000)
        #expect(machine.handle(.heartbeat(13, Self.a, node: node, token: lease.token, by: "other", now: t(2), nanos: 1_000_000_000))
            == [.tell(13, .refused(.rejected(.notLeaseHolder(node, holder: "bot", reporter: "other"))))])
        // A migration not in the live state is looked up: settled, it answers what it answered while live.
        let gone = MigrationID("gone")
        #expect(machine.handle(.heartbeat(14, gone, node: node, token: lease.token, by: "bot", now: t(2), nanos: 0)) == [.tell(14, .lookUp(gone, fold: true))])
        #expect(machine.handle(.lookedUp(14, .migration(nil))) == [.tell(14, .refused(.rejected(.migrationNotFound(gone))))])
    }

    @Test func oneGrantPassAtATimeAndWhoAsksDuringOneIsAnsweredByTheNext() {
        var machine = Self.machine()
        #expect(machine.grantPassOwed)
        // The first pass after open reconciles old histories' bookkeeping.
        #expect(machine.handle(.grantPassWanted(1, now: Instant(millisecondsSinceEpoch: 10))) == [.tell(1, .runGrantPass(now: Instant(millisecondsSinceEpoch: 10), reconcile: true))])
        #expect(!machine.grantPassOwed)
        // Two callers ask while it runs, one with an older time.
        #expect(machine.handle(.grantPassWanted(2, now: Instant(millisecondsSinceEpoch: 12))) == [])
        #expect(machine.handle(.grantPassWanted(3, now: Instant(millisecondsSinceEpoch: 11))) == [])
        // The runner runs the next pass for them, at the latest time asked with; then they are answered.
        #expect(machine.handle(.grantPassDone) == [.tell(1, .runGrantPass(now: Instant(millisecondsSinceEpoch: 12), reconcile: false))])
        #expect(machine.handle(.grantPassDone) == [.tell(2, .resumed), .tell(3, .resumed)])
        // Idle again: a caller runs its own pass; a time before the latest is never recorded.
        #expect(machine.handle(.grantPassWanted(4, now: Instant(millisecondsSinceEpoch: 5))) == [.tell(4, .runGrantPass(now: Instant(millisecondsSinceEpoch: 12), reconcile: false))])
        // A grant that failed on storage owes another pass (and the reconciliation, when it failed).
        machine.handle(.grantOwed(reconcile: true))
        #expect(machine.grantPassOwed)
        #expect(machine.handle(.grantPassDone) == [])
        #expect(machine.handle(.grantPassWanted(5, now: Instant(millisecondsSinceEpoch: 20))) == [.tell(5, .runGrantPass(now: Instant(millisecondsSinceEpoch: 20), reconcile: true))])
    }

    @Test func aSnapshotIsDueOnlyWithoutGapsNotWhileOneIsWrittenAndAfterTheInterval() {
        // Ranges folded out of order (group commits acknowledge appends on different streams in any order).
        var ranges = Self.machine()
        ranges.noteFolded(1...4)
        ranges.noteFolded(6...9)
        #expect(ranges.foldedThrough == 4 && !ranges.isConsistent(lastSequence: 9))
        ranges.noteFolded(5...5)
        #expect(ranges.foldedThrough == 9 && ranges.isConsistent(lastSequence: 9))

        // Through commands: the plan (1), migration a (2...3) and b (4...5), then a pause on each.
        var machine = Self.running(waitingMax: 2, snapshotInterval: 5)
        let b = MigrationID("b")
        _ = Self.drive(&machine, 3, machine.handle(.command(3, .migration(b, .start(id: b, plan: Self.plan, startedBy: "alice")), metadata: Self.metadata, now: t(0))))
        #expect(machine.state.lastSequence == 5)
        guard case .tell(20, .append(let pauseA))? = machine.handle(.command(20, .migration(Self.a, .pause(reason: "p")), metadata: Self.metadata, now: t(1))).first,
              case .tell(21, .append(let pauseB))? = machine.handle(.command(21, .migration(b, .pause(reason: "p")), metadata: Self.metadata, now: t(1))).first else {
            Issue.record("no appends"); return
        }
        let (countA, countB) = (UInt64(pauseA.records.count), UInt64(pauseB.records.count))
        // b's append is acknowledged first, after a's: a's events are not folded yet, so no snapshot.
        _ = machine.handle(.appended(21, AppendReceipt(firstSequence: 6 + countA, lastSequence: 5 + countA + countB, streamVersion: 2 + countB), nanos: 0))
        #expect(machine.foldedThrough == 5)
        #expect(machine.handle(.snapshotWanted) == [])
        _ = machine.handle(.appended(20, AppendReceipt(firstSequence: 6, lastSequence: 5 + countA, streamVersion: 2 + countA), nanos: 0))
        let through = 5 + countA + countB
        #expect(machine.foldedThrough == through)
        #expect(machine.handle(.snapshotWanted) == [.writeSnapshot(sequence: through)])
        // One at a time.
        _ = Self.drive(&machine, 22, machine.handle(.command(22, .migration(Self.a, .resume), metadata: Self.metadata, now: t(2))))
        #expect(machine.handle(.snapshotWanted) == [])
        // It ended (written or failed) as of `through`: the next waits another interval from there.
        machine.handle(.snapshotEnded(sequence: through, bytes: 100))
        #expect(machine.lastSnapshotSequence == through && machine.state.lastSequence < through + 5)
        #expect(machine.handle(.snapshotWanted) == [])
        // Never, with interval 0.
        var never = Self.running(snapshotInterval: 0)
        #expect(never.handle(.snapshotWanted) == [])
    }

    /// A snapshot encodes the whole live state: after a large one the next waits one event per
    /// `snapshotBytesPerEvent` bytes of it when that is more than the interval, so the snapshots' cost
    /// per event stays the same whatever the state's size. A failed write keeps the last size known;
    /// the size read at open counts like a written one; and no interval, however large, wraps around.
    @Test func aLargeSnapshotPutsTheNextOneFurtherOff() {
        let perEvent = CoordinatorMachine.defaultSnapshotBytesPerEvent
        // The plan (1), then migration a (2...3): 3 events, with an interval of 2.
        var machine = Self.running(snapshotInterval: 2)
        #expect(machine.handle(.snapshotWanted) == [.writeSnapshot(sequence: 3)])
        // A snapshot of 3 events' worth of bytes: the next is due 3 events later, not 2.
        machine.handle(.snapshotEnded(sequence: 3, bytes: Int(3 * perEvent)))
        #expect(machine.snapshotDueEvents == 3 && machine.lastSnapshotBytes == 3 * perEvent)
        let b = MigrationID("b")
        _ = Self.drive(&machine, 3, machine.handle(.command(3, .migration(b, .start(id: b, plan: Self.plan, startedBy: "alice")), metadata: Self.metadata, now: t(0))))
        #expect(machine.foldedThrough == 5)
        #expect(machine.handle(.snapshotWanted) == [])
        _ = Self.drive(&machine, 4, machine.handle(.command(4, .migration(b, .pause(reason: "p")), metadata: Self.metadata, now: t(1))))
        #expect(machine.foldedThrough >= 6)
        #expect(machine.handle(.snapshotWanted) == [.writeSnapshot(sequence: machine.foldedThrough)])
        // A failed write: the size known stays, and the next waits from where it was asked.
        machine.handle(.snapshotEnded(sequence: machine.foldedThrough, bytes: nil))
        #expect(machine.snapshotDueEvents == 3)
        // A small snapshot: back to the interval.
        machine.handle(.snapshotSaved(sequence: machine.foldedThrough, bytes: 10))
        #expect(machine.snapshotDueEvents == 2)

        // The size of the snapshot read at open counts.
        let opened = CoordinatorMachine(state: LogState(), snapshotSequence: 0, snapshotBytes: Int(1_000 * perEvent), commandsWaitingPerStreamMax: 2,
                                        snapshotIntervalEvents: 10, nanos: 0)
        #expect(opened.snapshotDueEvents == 1_000)
        // With no bytes per event, the interval alone (the simulations keep their cadence so).
        let fixed = CoordinatorMachine(state: LogState(), snapshotSequence: 0, snapshotBytes: Int(1_000 * perEvent), commandsWaitingPerStreamMax: 2,
                                       snapshotIntervalEvents: 10, snapshotBytesPerEvent: 0, nanos: 0)
        #expect(fixed.snapshotDueEvents == 10)
        // An interval as large as UInt64 allows never comes due (it does not wrap around to "now").
        var huge = Self.running(snapshotInterval: .max)
        huge.handle(.snapshotSaved(sequence: 1, bytes: 10))
        #expect(huge.foldedThrough == 3 && huge.handle(.snapshotWanted) == [])
    }

    @Test func theTimerPolicyIsOneOrderOfPhasesAndEachFindsItsDueCommands() {
        #expect(CoordinatorMachine.TimerPhase.allCases == [.deadlines, .leaseExpiries, .startToClose, .bakeEnds, .scheduleToStart])
        var machine = Self.running()
        let node = Self.plan.nodes[0].id
        _ = Self.drive(&machine, 9, machine.handle(.command(9, .serviceLeases(.grant(migration: Self.a, node: node, through: machine.state.lastSequence)),
                                                            metadata: Self.metadata, now: t(1))))
        guard case .performed(let leased)? = Self.drive(&machine, 10, machine.handle(.command(10, .migration(Self.a, .leaseStep(node: node, agent: "x", ttlMillis: 2_000)),
                                                                                         metadata: Self.metadata, now: t(1)))),
              case .stepLeased(let lease) = leased.result.events.first?.event else { Issue.record("not leased"); return }
        // Leased at monotonic 0 with a 2 s TTL: due at 2 s on the monotonic clock, whatever the wall clock says.
        #expect(machine.nextTimerDue(now: t(100), nanos: 500_000_000) == t(100).adding(milliseconds: 1_500))
        #expect(machine.handle(.timersDue(.leaseExpiries, now: t(100), nanos: 1_999_999_999)) == [])
        #expect(machine.handle(.timersDue(.leaseExpiries, now: t(1), nanos: 2_000_000_000)) == [.timer(.init(
            migration: Self.a, command: .expireLease(node: node, token: lease.token), phase: .leaseExpiries, triggeredBy: .coordinator, causationID: "lease-timer"))])
        for phase in [CoordinatorMachine.TimerPhase.deadlines, .startToClose, .bakeEnds, .scheduleToStart] {
            #expect(machine.handle(.timersDue(phase, now: t(1_000_000), nanos: 2_000_000_000)) == [], "\(phase)")
        }
    }

    @Test func leasesExpireOnTheMonotonicClockUnlessAHeartbeatWithTheirTokenRenewsThem() {
        var machine = Self.machine()
        let second: UInt64 = 1_000_000_000
        let b = MigrationID("b"), a = MigrationID("a")
        machine.armLeases(b, leases: [.init(node: NodeID("x"), token: FencingToken(1), ttlMillis: 2_000)], nanos: 0)
        machine.armLeases(a, leases: [.init(node: NodeID("y"), token: FencingToken(4), ttlMillis: 1_000),
                                                  .init(node: NodeID("x"), token: FencingToken(2), ttlMillis: 1_000)], nanos: 0)
        #expect(machine.liveStepLeaseCount == 3 && machine.nextLeaseDeadlineNanos == 1 * second)
        #expect(machine.leasesDue(nanos: 1 * second - 1).isEmpty)
        // A heartbeat with another token renews nothing; with the lease's token, a whole TTL from now.
        machine.renewLease(a, node: NodeID("y"), token: FencingToken(3), nanos: second / 2)
        machine.renewLease(a, node: NodeID("x"), token: FencingToken(2), nanos: second / 2)
        // Due ones in (migration, node) order, whatever order they were armed in.
        #expect(Self.due(machine, 2 * second) == ["a/x@2", "a/y@4", "b/x@1"])
        #expect(Self.due(machine, second + second / 2 - 1) == ["a/y@4"])
        // Re-arming with the same token keeps the deadline; a new token starts a whole TTL; ended leases go.
        machine.armLeases(a, leases: [.init(node: NodeID("x"), token: FencingToken(2), ttlMillis: 1_000),
                                                  .init(node: NodeID("y"), token: FencingToken(5), ttlMillis: 1_000)], nanos: 3 * second)
        #expect(Self.due(machine, 3 * second) == ["a/x@2", "b/x@1"])
        machine.armLeases(a, leases: [], nanos: 3 * second)
        machine.armLeases(b, leases: [], nanos: 3 * second)
        #expect(machine.liveStepLeaseCount == 0 && machine.nextLeaseDeadlineNanos == nil)
        #expect(machine.leasesDue(nanos: 100 * second).isEmpty)
    }

    @Test func aNodeThatWaitsItsWholeScheduleToStartIsReportedOnceAndForgottenWhenItStopsWaiting() {
        var machine = Self.machine()
        let second: UInt64 = 1_000_000_000
        let m = MigrationID("m")
        let waiting = [CoordinatorMachine.WaitingNode(migration: m, node: NodeID("a"), scheduleToStartMillis: 2_000),
                       CoordinatorMachine.WaitingNode(migration: m, node: NodeID("b"), scheduleToStartMillis: 5_000)]
        #expect(machine.noteWaiting(waiting, nanos: 10 * second).isEmpty)
        #expect(machine.nextScheduleToStartNanos == 12 * second)
        #expect(machine.noteWaiting(waiting, nanos: 12 * second).map(\.node) == [NodeID("a")])
        // "a" was leased meanwhile: it is forgotten; should it wait again, its whole limit starts again.
        #expect(machine.noteWaiting([waiting[1]], nanos: 13 * second).isEmpty)
        #expect(machine.noteWaiting(waiting, nanos: 14 * second).isEmpty)
        #expect(machine.noteWaiting(waiting, nanos: 15 * second).map(\.node) == [NodeID("b")])
        // Paused for it (the machine forgets the migration's waits when that pause is folded).
        machine.waitingSince[m] = nil
        #expect(machine.nextScheduleToStartNanos == nil)
        #expect(machine.noteWaiting(waiting, nanos: 16 * second).isEmpty)
        #expect(machine.nextScheduleToStartNanos == 18 * second)
    }

    /// The leases due at `nanos`, as "migration/node@token".
    static func due(_ machine: CoordinatorMachine, _ nanos: UInt64) -> [String] {
        machine.leasesDue(nanos: nanos).map { "\($0.migration.rawValue)/\($0.node.rawValue)@\($0.token.rawValue)" }
    }
}
