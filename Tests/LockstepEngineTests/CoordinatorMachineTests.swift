import LockstepCore
import LockstepEngine
import LockstepStore
import Testing

/// The coordinator's bookkeeping machine on its own: inputs in, actions out, no actor, no clock, no log.
@Suite struct CoordinatorMachineTests {
    static func machine(waitingMax: Int = 2, snapshotInterval: UInt64 = 10) -> CoordinatorMachine {
        CoordinatorMachine(foldedThrough: 0, snapshotSequence: 0, commandsWaitingPerStreamMax: waitingMax, snapshotIntervalEvents: snapshotInterval)
    }

    @Test func oneCommandPerStreamTheRestInLineInArrivalOrderAndBounded() {
        var machine = Self.machine(waitingMax: 2)
        #expect(machine.handle(.turnWanted(1, stream: "migration/a")) == [.proceed(1)])
        // Another stream is independent.
        #expect(machine.handle(.turnWanted(2, stream: "migration/b")) == [.proceed(2)])
        #expect(machine.handle(.turnWanted(3, stream: "migration/a")) == [])
        #expect(machine.handle(.turnWanted(4, stream: "migration/a")) == [])
        #expect(machine.handle(.turnWanted(5, stream: "migration/a")) == [.refuse(5, .overloaded(stream: "migration/a", waitingMax: 2))])
        #expect(machine.handle(.turnEnded(stream: "migration/a")) == [.proceed(3)])
        #expect(machine.handle(.turnEnded(stream: "migration/a")) == [.proceed(4)])
        // Room in line again.
        #expect(machine.handle(.turnWanted(6, stream: "migration/a")) == [])
        #expect(machine.handle(.turnEnded(stream: "migration/a")) == [.proceed(6)])
        #expect(machine.handle(.turnEnded(stream: "migration/a")) == [])
        // Free: the next caller goes at once.
        #expect(machine.handle(.turnWanted(7, stream: "migration/a")) == [.proceed(7)])
    }

    @Test func aFailureThatLeavesTheLogUnknownStopsEveryLaterCommandAndOthersDoNot() {
        var machine = Self.machine()
        machine.handle(.appendFailed(.versionConflict(stream: "migration/a", expected: 0, actual: 1)))
        machine.handle(.appendFailed(.overloaded("65,536 events queued")))
        #expect(machine.stopped == nil)
        #expect(machine.handle(.turnWanted(1, stream: "migration/a")) == [.proceed(1)])
        machine.handle(.appendFailed(.outcomeUnknown(reason: "fsync failed")))
        let stopped = EventLogError.writesStopped(reason: "an earlier append failed: \(EventLogError.outcomeUnknown(reason: "fsync failed").description)")
        #expect(machine.stopped == stopped)
        #expect(machine.handle(.turnWanted(2, stream: "migration/b")) == [.refuse(2, .storage(stopped))])
        // The first failure is the one kept.
        machine.handle(.appendFailed(.corrupted(position: 3, reason: "x")))
        #expect(machine.stopped == stopped)
    }

    @Test func oneGrantPassAtATimeAndWhoAsksDuringOneIsAnsweredByTheNext() {
        var machine = Self.machine()
        #expect(machine.grantPassOwed)
        // The first pass after open reconciles old histories' bookkeeping.
        #expect(machine.handle(.grantPassWanted(1, now: Instant(millisecondsSinceEpoch: 10))) == [.runGrantPass(1, now: Instant(millisecondsSinceEpoch: 10), reconcile: true)])
        #expect(!machine.grantPassOwed)
        // Two callers ask while it runs, one with an older time.
        #expect(machine.handle(.grantPassWanted(2, now: Instant(millisecondsSinceEpoch: 12))) == [])
        #expect(machine.handle(.grantPassWanted(3, now: Instant(millisecondsSinceEpoch: 11))) == [])
        // The runner runs the next pass for them, at the latest time asked with; then they are answered.
        #expect(machine.handle(.grantPassDone) == [.runGrantPass(1, now: Instant(millisecondsSinceEpoch: 12), reconcile: false)])
        #expect(machine.handle(.grantPassDone) == [.resume(2), .resume(3)])
        // Idle again: a caller runs its own pass; a time before the latest is never recorded.
        #expect(machine.handle(.grantPassWanted(4, now: Instant(millisecondsSinceEpoch: 5))) == [.runGrantPass(4, now: Instant(millisecondsSinceEpoch: 12), reconcile: false)])
        // A grant that failed on storage owes another pass (and the reconciliation, when it failed).
        machine.handle(.grantOwed(reconcile: true))
        #expect(machine.grantPassOwed)
        #expect(machine.handle(.grantPassDone) == [])
        #expect(machine.handle(.grantPassWanted(5, now: Instant(millisecondsSinceEpoch: 20))) == [.runGrantPass(5, now: Instant(millisecondsSinceEpoch: 20), reconcile: true)])
    }

    @Test func aSnapshotIsDueOnlyWithoutGapsNotWhileOneIsWrittenAndAfterTheInterval() {
        var machine = Self.machine(snapshotInterval: 10)
        machine.handle(.folded(1...4))
        // 6...9 acknowledged before 5: a gap.
        machine.handle(.folded(6...9))
        #expect(machine.foldedThrough == 4)
        #expect(!machine.isConsistent(lastSequence: 9))
        machine.handle(.folded(10...12))
        #expect(machine.handle(.snapshotWanted(lastSequence: 12)) == [])
        machine.handle(.folded(5...5))
        #expect(machine.foldedThrough == 12 && machine.isConsistent(lastSequence: 12))
        #expect(machine.handle(.snapshotWanted(lastSequence: 12)) == [.writeSnapshot(sequence: 12)])
        // One at a time.
        machine.handle(.folded(13...30))
        #expect(machine.handle(.snapshotWanted(lastSequence: 30)) == [])
        // It failed (or was written) as of 12: the next waits another interval from there.
        machine.handle(.snapshotEnded(sequence: 12))
        #expect(machine.lastSnapshotSequence == 12)
        #expect(machine.handle(.snapshotWanted(lastSequence: 30)) == [.writeSnapshot(sequence: 30)])
        machine.handle(.snapshotEnded(sequence: 30))
        machine.handle(.folded(31...35))
        #expect(machine.handle(.snapshotWanted(lastSequence: 35)) == [])
        // Never, with interval 0.
        var never = Self.machine(snapshotInterval: 0)
        never.handle(.folded(1...1_000))
        #expect(never.handle(.snapshotWanted(lastSequence: 1_000)) == [])
    }

    @Test func leasesExpireOnTheMonotonicClockUnlessAHeartbeatWithTheirTokenRenewsThem() {
        var machine = Self.machine()
        let second: UInt64 = 1_000_000_000
        let b = MigrationID("b"), a = MigrationID("a")
        machine.handle(.leasesChanged(b, leases: [.init(node: NodeID("x"), token: FencingToken(1), ttlMillis: 2_000)], nanos: 0))
        machine.handle(.leasesChanged(a, leases: [.init(node: NodeID("y"), token: FencingToken(4), ttlMillis: 1_000),
                                                  .init(node: NodeID("x"), token: FencingToken(2), ttlMillis: 1_000)], nanos: 0))
        #expect(machine.liveStepLeaseCount == 3 && machine.nextLeaseDeadlineNanos == 1 * second)
        #expect(machine.handle(.leasesDue(nanos: 1 * second - 1)) == [])
        // A heartbeat with another token renews nothing; with the lease's token, a whole TTL from now.
        machine.handle(.heartbeat(a, node: NodeID("y"), token: FencingToken(3), nanos: second / 2))
        machine.handle(.heartbeat(a, node: NodeID("x"), token: FencingToken(2), nanos: second / 2))
        // Due ones in (migration, node) order, whatever order they were armed in.
        #expect(machine.handle(.leasesDue(nanos: 2 * second)) == [
            .expireLease(a, node: NodeID("x"), token: FencingToken(2)), .expireLease(a, node: NodeID("y"), token: FencingToken(4)),
            .expireLease(b, node: NodeID("x"), token: FencingToken(1)),
        ])
        #expect(machine.handle(.leasesDue(nanos: second + second / 2 - 1)) == [.expireLease(a, node: NodeID("y"), token: FencingToken(4))])
        // Re-arming with the same token keeps the deadline; a new token starts a whole TTL; ended leases go.
        machine.handle(.leasesChanged(a, leases: [.init(node: NodeID("x"), token: FencingToken(2), ttlMillis: 1_000),
                                                  .init(node: NodeID("y"), token: FencingToken(5), ttlMillis: 1_000)], nanos: 3 * second))
        #expect(machine.handle(.leasesDue(nanos: 3 * second)) == [.expireLease(a, node: NodeID("x"), token: FencingToken(2)),
                                                                 .expireLease(b, node: NodeID("x"), token: FencingToken(1))])
        machine.handle(.leasesChanged(a, leases: [], nanos: 3 * second))
        machine.handle(.leasesChanged(b, leases: [], nanos: 3 * second))
        #expect(machine.liveStepLeaseCount == 0 && machine.nextLeaseDeadlineNanos == nil)
        #expect(machine.handle(.leasesDue(nanos: 100 * second)) == [])
    }

    @Test func aNodeThatWaitsItsWholeScheduleToStartIsReportedOnceAndForgottenWhenItStopsWaiting() {
        var machine = Self.machine()
        let second: UInt64 = 1_000_000_000
        let m = MigrationID("m")
        let waiting = [CoordinatorMachine.WaitingNode(migration: m, node: NodeID("a"), scheduleToStartMillis: 2_000),
                       CoordinatorMachine.WaitingNode(migration: m, node: NodeID("b"), scheduleToStartMillis: 5_000)]
        #expect(machine.handle(.waitingForAgents(waiting, nanos: 10 * second)) == [])
        #expect(machine.nextScheduleToStartNanos == 12 * second)
        #expect(machine.handle(.waitingForAgents(waiting, nanos: 12 * second)) == [.scheduleToStartExceeded(m, node: NodeID("a"))])
        // "a" was leased meanwhile: it is forgotten; should it wait again, its whole limit starts again.
        #expect(machine.handle(.waitingForAgents([waiting[1]], nanos: 13 * second)) == [])
        #expect(machine.handle(.waitingForAgents(waiting, nanos: 14 * second)) == [])
        #expect(machine.handle(.waitingForAgents(waiting, nanos: 15 * second)) == [.scheduleToStartExceeded(m, node: NodeID("b"))])
        // Paused for it: every wait of the migration starts again.
        machine.handle(.scheduleToStartHandled(m))
        #expect(machine.nextScheduleToStartNanos == nil)
        #expect(machine.handle(.waitingForAgents(waiting, nanos: 16 * second)) == [])
        #expect(machine.nextScheduleToStartNanos == 18 * second)
    }
}
