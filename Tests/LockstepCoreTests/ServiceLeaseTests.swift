import LockstepCore
import Testing

/// A log driven the way the coordinator drives it, without I/O: decide, fold at the next global
/// sequences, then grant whatever has become grantable, in line order.
struct LeaseLedger {
    var state = LogState()
    var sequence: UInt64 = 0
    /// Every accepted event, in log order, with its migration and global sequence.
    var events: [(MigrationID, MigrationEvent)] = []
    var sequences: [UInt64] = []
    /// Every accepted freeze event, in log order.
    var freezeEvents: [FreezeEvent] = []

    @discardableResult
    mutating func run(_ id: String, _ command: MigrationCommand, at seconds: Int64 = 1) -> Decision {
        run(.migration(MigrationID(id), command), at: seconds)
    }

    /// Decides `command` with the one composed decide, folds what it records, then grants.
    @discardableResult
    mutating func run(_ command: Command, at seconds: Int64 = 1) -> Decision {
        switch state.decide(command, now: t(seconds)) {
        case .rejected(let rejection):
            return .rejected(rejection)
        case .planUnchanged:
            return .accepted([])
        case .planEvent(let name, let event):
            sequence += 1
            state.evolve(.plan(RecordedPlanEvent(plan: name, streamVersion: UInt64(state.plans[name]?.count ?? 0) + 1,
                                                 metadata: EventMetadata(recordedAt: t(seconds), actor: .coordinator, triggeredBy: .user),
                                                 event: event)), sequence: sequence)
            return .accepted([])
        case .migrationEvents(let id, let events):
            append(id, events)
            grantAll(at: seconds)
            return .accepted(events)
        case .freezeEvent(let id, let event):
            sequence += 1
            state.evolve(.freeze(RecordedFreezeEvent(freeze: id, streamVersion: state.freezes[id] == nil ? 1 : 2,
                                                     metadata: EventMetadata(recordedAt: t(seconds), actor: .coordinator, triggeredBy: .user),
                                                     event: event)), sequence: sequence)
            freezeEvents.append(event)
            grantAll(at: seconds)
            return .accepted([])
        case .checkpoint:
            return .accepted([])
        }
    }

    /// Applies `plan` to the registry (a no-op when its content is the newest) and starts `id` on it.
    @discardableResult
    mutating func start(_ id: String, _ plan: PlanSnapshot, at seconds: Int64 = 0) -> Decision {
        run(.plans(.apply(plan)), at: seconds)
        let registered = state.plan(plan.name)!
        return run(id, .start(id: MigrationID(id), plan: registered, startedBy: "alice"), at: seconds)
    }

    /// An operator forces `node` of migration `id` to give back its services.
    @discardableResult
    mutating func forceRelease(_ id: String, _ node: NodeID, reason: String, at seconds: Int64 = 1) -> Decision {
        run(.serviceLeases(.forceRelease(migration: MigrationID(id), node: node, reason: reason)), at: seconds)
    }

    mutating func grantAll(at seconds: Int64) {
        for request in state.grantableServiceRequests(through: state.lastSequence, at: t(seconds)) {
            let ruling = state.decide(.serviceLeases(.grant(migration: request.migration, node: request.node, through: state.lastSequence)), now: t(seconds))
            if case .migrationEvents(let id, let events) = ruling { append(id, events) }
        }
    }

    private mutating func append(_ id: MigrationID, _ accepted: [MigrationEvent]) {
        for event in accepted {
            sequence += 1
            state.evolve(migration: id, sequence: sequence, event)
            events.append((id, event))
            sequences.append(sequence)
        }
    }

    func holder(_ service: String) -> String? { state.holder(ofService: service).map { "\($0.migration.rawValue)/\($0.node.rawValue)" } }
    /// The migration from the live state, or (settled, so gone from it) folded from its own events.
    func migration(_ id: String) -> MigrationState {
        let id = MigrationID(id)
        if let live = state.migrations[id] { return live }
        return LogState.migration(replaying: zip(sequences, events).filter { $0.1.0 == id }.map { (sequence: $0.0, event: $0.1.1) })!
    }
    func leases(_ id: String, _ node: String) -> ServiceLeaseStatus { migration(id).node(NodeID(node))!.serviceLeases }
}

/// One-node plans on the named services, and a two-node plan for rollbacks.
func servicePlan(_ name: String, _ services: [String]) -> PlanSnapshot {
    PlanSnapshot(name: name, version: 1, contentHash: "h-\(name)", nodes: [
        NodeSpec(id: NodeID("work"), services: services, phase: .custom, action: "work", rollback: RollbackSpec(action: "undo")),
    ])
}

let twoStepPlan = PlanSnapshot(name: "two-step", version: 1, contentHash: "h-two", nodes: [
    NodeSpec(id: NodeID("first"), services: ["orders"], phase: .expand, action: "expand", rollback: RollbackSpec(action: "unexpand")),
    NodeSpec(id: NodeID("second"), services: ["orders", "ledger"], phase: .backfill, action: "backfill", needs: [NodeID("first")],
             rollback: RollbackSpec(action: "unbackfill")),
])

func start(_ ledger: inout LeaseLedger, _ id: String, _ plan: PlanSnapshot) {
    let decision = ledger.start(id, plan)
    guard case .accepted = decision else { Issue.record("start \(id): \(decision)"); return }
}

/// Leases `node` of `id` and completes it with the token it got.
func runStep(_ ledger: inout LeaseLedger, _ id: String, _ node: String) {
    guard case .accepted(let events) = ledger.run(id, .leaseStep(node: NodeID(node), agent: "agent", ttlMillis: 10_000)),
          case .stepLeased(let leased) = events.first else { Issue.record("lease \(id)/\(node) refused"); return }
    ledger.run(id, .completeStep(node: NodeID(node), token: leased.token))
}

@Suite struct ServiceLeaseTests {
    @Test func twoMigrationsNeverTransitionOneServiceAtATime() {
        var ledger = LeaseLedger()
        start(&ledger, "m1", servicePlan("a", ["orders"]))
        start(&ledger, "m2", servicePlan("b", ["orders"]))
        #expect(ledger.holder("orders") == "m1/work")
        #expect(ledger.leases("m2", "work").isRequested)
        // m2's node waits, and says on whom.
        #expect(ledger.migration("m2").nodeDisplayStatus(NodeID("work")) == .waitingForServices)
        let waits = [ServiceWait(service: "orders", migration: MigrationID("m1"), node: NodeID("work"), holds: true)]
        #expect(ledger.state.serviceWaits(migration: MigrationID("m2"), node: NodeID("work")) == waits)
        #expect(ledger.run("m2", .leaseStep(node: NodeID("work"), agent: "a", ttlMillis: 1_000)) == .rejected(.waitingForServices(NodeID("work"), waits: waits)))
        #expect(Rejection.waitingForServices(NodeID("work"), waits: waits).description
            == "waiting_for_service_lease: node work is waiting for its services: orders is held by migration m1 (node work)")
        // m1's completion releases orders in the same append, and m2 gets it.
        runStep(&ledger, "m1", "work")
        let tail = ledger.events.suffix(4).map { "\($0.0.rawValue) \($0.1.typeName)" }
        #expect(tail == ["m1 step_completed", "m1 migration_succeeded", "m1 service_leases_released", "m2 service_leases_granted"])
        #expect(ledger.holder("orders") == "m2/work")
        runStep(&ledger, "m2", "work")
        #expect(ledger.holder("orders") == nil)
        #expect(ledger.state.serviceLeases.queue.isEmpty)
    }

    @Test func waitersAreServedFirstComeFirstServedPerService() {
        var ledger = LeaseLedger()
        start(&ledger, "m1", servicePlan("a", ["orders"]))
        start(&ledger, "m3", servicePlan("c", ["orders"]))  // ids out of line order: the line is the log's order
        start(&ledger, "m2", servicePlan("b", ["orders"]))
        #expect(ledger.state.serviceLeases.queue.map(\.migration.rawValue) == ["m3", "m2"])
        runStep(&ledger, "m1", "work")
        #expect(ledger.holder("orders") == "m3/work")
        let waits = ledger.state.serviceWaits(migration: MigrationID("m2"), node: NodeID("work"))
        #expect(waits.map(\.migration.rawValue) == ["m3"])
    }

    @Test func aMultiServiceNodeTakesAllItsServicesAtOnceAndKeepsItsPlaceInLine() {
        var ledger = LeaseLedger()
        start(&ledger, "m1", servicePlan("a", ["orders"]))
        start(&ledger, "m2", servicePlan("b", ["ledger"]))
        start(&ledger, "both", servicePlan("c", ["orders", "ledger"]))
        start(&ledger, "late", servicePlan("d", ["orders"]))
        runStep(&ledger, "m1", "work")
        // orders is free, but `both` cannot take half of what it needs, and `late` may not jump the line.
        #expect(ledger.holder("orders") == nil)
        #expect(ledger.leases("both", "work").isRequested)
        #expect(ledger.leases("late", "work").isRequested)
        #expect(ledger.state.serviceWaits(migration: MigrationID("late"), node: NodeID("work"))
            == [ServiceWait(service: "orders", migration: MigrationID("both"), node: NodeID("work"), holds: false)])
        runStep(&ledger, "m2", "work")
        #expect(ledger.holder("orders") == "both/work")
        #expect(ledger.holder("ledger") == "both/work")
        runStep(&ledger, "both", "work")
        #expect(ledger.holder("orders") == "late/work")
    }

    @Test func aNodeHandsItsServicesToTheNextNodeInTheSameAppendUnlessSomeoneWaits() {
        let chain = PlanSnapshot(name: "chain", version: 1, contentHash: "h-chain", nodes: [
            NodeSpec(id: NodeID("a"), services: ["orders", "ledger"], phase: .custom, action: "w"),
            NodeSpec(id: NodeID("b"), services: ["orders"], phase: .custom, action: "w", needs: [NodeID("a")]),
            NodeSpec(id: NodeID("c"), services: ["orders"], phase: .custom, action: "w", needs: [NodeID("b")]),
        ])
        var ledger = LeaseLedger()
        start(&ledger, "m", chain)
        guard case .accepted(let events) = ledger.run("m", .leaseStep(node: NodeID("a"), agent: "x", ttlMillis: 10_000)),
              case .stepLeased(let leased) = events.first else { Issue.record("no lease"); return }
        let completion = ledger.run("m", .completeStep(node: NodeID("a"), token: leased.token))
        #expect(completion == .accepted([
            .stepCompleted(StepCompleted(node: NodeID("a"), attempt: 1, token: leased.token)),
            .serviceLeasesReleased(ServiceLeasesReleased(node: NodeID("a"), services: ["orders", "ledger"], reason: "node a succeeded")),
            .serviceLeasesRequested(ServiceLeasesRequested(node: NodeID("b"), services: ["orders"], kind: .forward)),
            .serviceLeasesGranted(ServiceLeasesGranted(node: NodeID("b"), services: ["orders"], at: t(1))),
        ]))
        #expect(ledger.holder("orders") == "m/b" && ledger.holder("ledger") == nil)
        // Someone in line for orders: b releases it to the queue, and the newcomer waits its turn.
        start(&ledger, "other", servicePlan("o", ["orders"]))
        runStep(&ledger, "m", "b")
        #expect(ledger.holder("orders") == "other/work")
        #expect(ledger.leases("m", "c").isRequested)
    }

    /// The bookkeeping looks for a need among the few nodes just before the one that needs it, and past
    /// those in an index: a need listed far before, or after, its dependent is found all the same.
    @Test func needsFarFromOrAfterTheirNodeInPlanOrderAreFound() {
        // "late" (listed first) needs "root" (listed last); "far" needs "root" too, eleven places away.
        let fillers = (0..<10).map { NodeSpec(id: NodeID("f\($0)"), services: ["f\($0)"], phase: .custom, action: "w", needs: [NodeID("late")]) }
        let plan = PlanSnapshot(name: "scattered", version: 1, contentHash: "h-scattered", nodes:
            [NodeSpec(id: NodeID("late"), services: ["orders"], phase: .custom, action: "w", needs: [NodeID("root")]),
             NodeSpec(id: NodeID("far"), services: ["ledger"], phase: .custom, action: "w", needs: [NodeID("root")])]
            + fillers + [NodeSpec(id: NodeID("root"), services: ["base"], phase: .custom, action: "w")])
        var ledger = LeaseLedger()
        start(&ledger, "m", plan)
        #expect(ledger.holder("base") == "m/root")
        #expect(ledger.holder("orders") == nil && ledger.holder("ledger") == nil && ledger.leases("m", "late") == ServiceLeaseStatus.none)
        runStep(&ledger, "m", "root")
        #expect(ledger.holder("orders") == "m/late" && ledger.holder("ledger") == "m/far")
        #expect(ledger.leases("m", "f0") == ServiceLeaseStatus.none && ledger.leases("m", "f9") == ServiceLeaseStatus.none)
        runStep(&ledger, "m", "late")
        #expect(ledger.holder("f0") == "m/f0" && ledger.holder("f9") == "m/f9")
    }

    /// Found in review: `a` completes (releasing s); `b` (s, u) and `c` (s) become ready in the same
    /// append, `b` first in line. The hand-over must not give s to `c` ahead of `b`.
    @Test func aHandOverNeverJumpsAnEarlierRequestOfTheSameAppend() {
        let fan = PlanSnapshot(name: "fan", version: 1, contentHash: "h-fan", nodes: [
            NodeSpec(id: NodeID("a"), services: ["s"], phase: .custom, action: "a"),
            NodeSpec(id: NodeID("b"), services: ["s", "u"], phase: .custom, action: "b", needs: [NodeID("a")]),
            NodeSpec(id: NodeID("c"), services: ["s"], phase: .custom, action: "c", needs: [NodeID("a")]),
        ])
        var ledger = LeaseLedger()
        start(&ledger, "m", fan)
        runStep(&ledger, "m", "a")
        #expect(ledger.holder("s") == "m/b" && ledger.holder("u") == "m/b")
        #expect(ledger.leases("m", "c").isRequested)
    }

    /// Found in review: histories written before service leases have running steps that hold nothing
    /// and ready nodes that never asked. The bookkeeping asks for both.
    @Test func aRunningStepOrAReadyNodeThatHoldsNothingAsksForItsServices() {
        let old = MigrationState.folded([started, leased("expand", token: 1)])!
        #expect(old.serviceLeaseBookkeeping() == [
            .serviceLeasesRequested(ServiceLeasesRequested(node: NodeID("expand"), services: ["orders"], kind: .forward)),
        ])
        #expect(MigrationState.decide(old, .reconcileServiceLeases, now: t(1)) == .accepted(old.serviceLeaseBookkeeping()))
        let consistent = MigrationState.given([started])!
        #expect(MigrationState.decide(consistent, .reconcileServiceLeases, now: t(1))
            == .rejected(.invalidArgument("migration orders-split-1 has no service-lease bookkeeping to record")))
    }

    @Test func grantingOutOfLineIsRefused() {
        var ledger = LeaseLedger()
        start(&ledger, "m1", servicePlan("a", ["orders"]))
        start(&ledger, "m2", servicePlan("b", ["orders"]))
        let refused = ledger.state.decide(.serviceLeases(.grant(migration: MigrationID("m2"), node: NodeID("work"), through: ledger.state.lastSequence)), now: t(1))
        #expect(refused == .rejected(.waitingForServices(NodeID("work"), waits: [
            ServiceWait(service: "orders", migration: MigrationID("m1"), node: NodeID("work"), holds: true)])))
        // A request recorded after `through` is not in line yet.
        runStep(&ledger, "m1", "work")
        #expect(ledger.holder("orders") == "m2/work")
        start(&ledger, "m3", servicePlan("c", ["ledger"]))
        #expect(ledger.holder("ledger") == "m3/work")
        // Nor may the public path grant anything twice.
        #expect(ledger.state.decide(.serviceLeases(.grant(migration: MigrationID("m3"), node: NodeID("work"), through: ledger.state.lastSequence)), now: t(1))
            == .rejected(.noServiceLeaseRequest(NodeID("work"))))
    }

    @Test func aPausedMigrationKeepsTheServicesOfStartedNodesAndGivesUpTheRest() {
        var ledger = LeaseLedger()
        start(&ledger, "holder", servicePlan("a", ["ledger"]))
        start(&ledger, "m", PlanSnapshot(name: "m", version: 1, contentHash: "h-m", nodes: [
            NodeSpec(id: NodeID("running"), services: ["orders"], phase: .custom, action: "w"),
            NodeSpec(id: NodeID("granted"), services: ["payments"], phase: .custom, action: "w"),
            NodeSpec(id: NodeID("queued"), services: ["ledger"], phase: .custom, action: "w"),
        ]))
        #expect(ledger.run("m", .leaseStep(node: NodeID("running"), agent: "a", ttlMillis: 10_000)).isAccepted)
        #expect(ledger.leases("m", "granted").isHeld)
        #expect(ledger.leases("m", "queued").isRequested)
        ledger.run("m", .pause(reason: "investigating"))
        #expect(ledger.holder("orders") == "m/running")  // a step runs: its service is mid-transition
        #expect(ledger.holder("payments") == nil)        // granted but not started: given back
        #expect(ledger.state.serviceLeases.queue.isEmpty) // and its place in line too
        let types = ledger.events.suffix(3).map(\.1.typeName)
        #expect(types == ["migration_paused", "service_leases_released", "service_leases_withdrawn"])
        // Resuming asks again, at the back of the line.
        ledger.run("m", .resume)
        #expect(ledger.holder("payments") == "m/granted")
        #expect(ledger.leases("m", "queued").isRequested)
    }

    @Test func anAbortKeepsWhatItMustUndoAndAsksAgainForEachRollbackStep() {
        var ledger = LeaseLedger()
        start(&ledger, "m", twoStepPlan)
        runStep(&ledger, "m", "first")
        #expect(ledger.leases("m", "first") == .none)  // settled: released
        #expect(ledger.run("m", .leaseStep(node: NodeID("second"), agent: "a", ttlMillis: 10_000)).isAccepted)
        start(&ledger, "other", servicePlan("o", ["orders"]))
        #expect(ledger.leases("other", "work").isRequested)
        ledger.run("m", .abort(reason: "stop"))
        // `second` was running: abandoned, first in the rollback queue, still holding orders + ledger.
        #expect(ledger.migration("m").rollbackQueue == [NodeID("second"), NodeID("first")])
        #expect(ledger.holder("orders") == "m/second")
        runStep(&ledger, "m", "second")
        // `first` asked for orders again for its rollback step, but `other` asked first.
        #expect(ledger.holder("orders") == "other/work")
        #expect(ledger.leases("m", "first") == .requested(kind: .rollback, sequence: ledger.state.serviceLeases.queue[0].sequence))
        #expect(ledger.run("m", .leaseStep(node: NodeID("first"), agent: "a", ttlMillis: 10_000)).isRejected)
        runStep(&ledger, "other", "work")
        #expect(ledger.holder("orders") == "m/first")
        runStep(&ledger, "m", "first")
        #expect(ledger.migration("m").status == .rolledBack)
        #expect(ledger.state.serviceLeases.holders.isEmpty)
    }

    @Test func aMigrationThatFailsWhileUndoingKeepsWhatItCouldNotUndoUntilAnOperatorReleasesIt() {
        var ledger = LeaseLedger()
        start(&ledger, "m", servicePlan("a", ["orders"]))
        runStep(&ledger, "m", "work")  // the only node: the migration succeeded
        #expect(ledger.migration("m").status == .succeeded)
        // Again with an abort whose rollback fails for good.
        start(&ledger, "n", twoStepPlan)
        runStep(&ledger, "n", "first")
        ledger.run("n", .abort(reason: "stop"))
        for _ in 0..<Int(CoreLimits.rollbackAttemptsMin) {
            guard case .accepted(let events) = ledger.run("n", .leaseStep(node: NodeID("first"), agent: "a", ttlMillis: 10_000), at: 100),
                  case .stepLeased(let leased) = events.first else { Issue.record("no rollback lease"); return }
            ledger.run("n", .failStep(node: NodeID("first"), token: leased.token, reason: "disk full", retryable: true), at: 100)
        }
        #expect(ledger.migration("n").status == .failed)
        #expect(ledger.holder("orders") == "n/first")  // quarantined: its state is unknown
        start(&ledger, "next", servicePlan("x", ["orders"]))
        #expect(ledger.leases("next", "work").isRequested)
        // The operator checks the service by hand, then forces the release; the waiting migration gets it.
        #expect(ledger.forceRelease("n", NodeID("first"), reason: "") == .rejected(.invalidArgument("a forced release needs a reason saying why")))
        #expect(ledger.forceRelease("n", NodeID("first"), reason: "orders checked by hand, schema restored").isAccepted)
        let released = ledger.events.suffix(2)
        #expect(released.map(\.1.typeName) == ["service_leases_released", "service_leases_granted"])
        if case .serviceLeasesReleased(let event) = released.first?.1 {
            #expect(event.forced && event.reason == "orders checked by hand, schema restored" && event.services == ["orders"])
        }
        #expect(ledger.holder("orders") == "next/work")
        // Settled and holding nothing, it has left the live state (the coordinator, which sees its
        // stream, answers migration_settled); its own events still fold to what it was.
        #expect(ledger.state.migrations[MigrationID("n")] == nil)
        #expect(ledger.migration("n").status == .failed)
        #expect(ledger.forceRelease("n", NodeID("first"), reason: "again") == .rejected(.servicesNotHeld(NodeID("first"))))
    }

    @Test func aForcedReleaseIsRefusedWhileAStepRuns() {
        var ledger = LeaseLedger()
        start(&ledger, "m", servicePlan("a", ["orders"]))
        guard case .accepted(let events) = ledger.run("m", .leaseStep(node: NodeID("work"), agent: "a", ttlMillis: 10_000)),
              case .stepLeased(let leased) = events.first else { Issue.record("no lease"); return }
        #expect(ledger.forceRelease("m", NodeID("work"), reason: "gone?")
            == .rejected(.serviceLeaseInUse(NodeID("work"), token: leased.token, expiresAt: leased.expiresAt)))
        #expect(ledger.holder("orders") == "m/work")
    }

    @Test func aForcedReleaseInALiveMigrationSendsTheNodeToTheBackOfTheLine() {
        var ledger = LeaseLedger()
        start(&ledger, "m", servicePlan("a", ["orders"]))
        start(&ledger, "waiting", servicePlan("b", ["orders"]))
        ledger.forceRelease("m", NodeID("work"), reason: "let the hotfix through")
        #expect(ledger.holder("orders") == "waiting/work")
        #expect(ledger.leases("m", "work").isRequested)
    }

    @Test func theCanonicalBytesCarryServiceLeasesAndRebuildTheIndex() throws {
        var ledger = LeaseLedger()
        start(&ledger, "m1", servicePlan("a", ["orders"]))
        start(&ledger, "m2", servicePlan("b", ["orders", "ledger"]))
        start(&ledger, "m3", servicePlan("c", ["ledger"]))
        let decoded = try LogState(canonicalBytes: ledger.state.canonicalBytes)
        #expect(decoded == ledger.state)
        #expect(decoded.serviceLeases.queue.map(\.migration.rawValue) == ["m2", "m3"])
    }

    /// The bookkeeping after a command looks only at the nodes its events name and the nodes that need
    /// those (`nodesToReview`); a fan-out and fan-in plan with a gate, driven through completions,
    /// a failure with a retry, a pause, a forced release and an abort, stays consistent as a whole.
    @Test func lookingOnlyAtTheNodesACommandTouchedLeavesEveryNodeConsistent() {
        let diamond = PlanSnapshot(name: "diamond", version: 1, contentHash: "h-diamond", owners: ["ops"], nodes: [
            NodeSpec(id: NodeID("root"), services: ["orders"], phase: .expand, action: "w", rollback: RollbackSpec(action: "u")),
            NodeSpec(id: NodeID("left"), services: ["ledger"], phase: .custom, action: "w", needs: [NodeID("root")], rollback: RollbackSpec(action: "u")),
            NodeSpec(id: NodeID("right"), services: ["billing"], phase: .custom, action: "w", needs: [NodeID("root")],
                     retry: RetryPolicy(maxAttempts: 3), rollback: RollbackSpec(action: "u")),
            NodeSpec(id: NodeID("join"), services: ["orders", "ledger"], phase: .custom, action: "w", needs: [NodeID("left"), NodeID("right")],
                     rollback: RollbackSpec(action: "u"), approval: ApprovalGate(minimum: 1, from: ["ops"])),
            NodeSpec(id: NodeID("after"), services: ["payments"], phase: .custom, action: "w", needs: [NodeID("join")], rollback: RollbackSpec(action: "u")),
        ])
        var ledger = LeaseLedger()
        start(&ledger, "m", diamond)
        start(&ledger, "other", servicePlan("o", ["billing"]))
        func consistent(_ step: String) {
            for migration in ledger.state.migrationsInOrder { #expect(migration.serviceLeaseBookkeeping() == [], "after \(step): \(migration.id)") }
        }
        consistent("the starts")
        runStep(&ledger, "m", "root")
        consistent("root")
        #expect(ledger.leases("m", "left") == .held(since: t(1)) && ledger.leases("m", "right").isRequested)
        runStep(&ledger, "m", "left")
        consistent("left")
        runStep(&ledger, "other", "work")
        consistent("other")
        guard case .accepted(let leased) = ledger.run("m", .leaseStep(node: NodeID("right"), agent: "a", ttlMillis: 10_000)),
              case .stepLeased(let step) = leased.first else { Issue.record("right was not leased"); return }
        ledger.run("m", .failStep(node: NodeID("right"), token: step.token, reason: "flaky", retryable: true))
        consistent("a failure with a retry")
        ledger.run("m", .pause(reason: "look"))
        consistent("the pause")
        ledger.run("m", .resume)
        consistent("the resume")
        runStep(&ledger, "m", "right")
        consistent("right")
        ledger.run("m", .approve(node: NodeID("join"), approver: "bob", groups: ["ops"], comment: ""))
        consistent("the approval")
        runStep(&ledger, "m", "join")
        consistent("join")
        ledger.forceRelease("m", NodeID("after"), reason: "let another through")
        consistent("the forced release")
        ledger.run("m", .abort(reason: "stop"))
        consistent("the abort")
    }

    @Test func everyDecisionLeavesTheBookkeepingConsistent() {
        var ledger = LeaseLedger()
        start(&ledger, "m", twoStepPlan)
        runStep(&ledger, "m", "first")
        ledger.run("m", .pause(reason: "p"))
        ledger.run("m", .resume)
        ledger.run("m", .abort(reason: "a"))
        for migration in ledger.state.migrationsInOrder { #expect(migration.serviceLeaseBookkeeping() == []) }
    }
}

extension Decision {
    var isAccepted: Bool { if case .accepted = self { true } else { false } }
    var isRejected: Bool { !isAccepted }
}
