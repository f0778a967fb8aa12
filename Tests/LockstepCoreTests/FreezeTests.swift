import LockstepCore
import Testing

/// Freezes, stop-the-line and break-glass in the composed decide (issue 19), each rule as
/// Given / When / Then on a `LeaseLedger` (decide, fold, grant, as the coordinator does).
@Suite struct FreezeTests {
    let work = NodeID("work")

    func freeze(_ id: String, _ services: [String], from: Int64 = 0, until: Int64? = nil, stopsLine: Bool = false) -> Command {
        .freezes(.declare(Freeze(id: id, services: services, from: t(from), until: until.map(t), reason: "release week", declaredBy: "olga",
                                 stopsLine: stopsLine)))
    }

    func lease(_ ledger: inout LeaseLedger, _ id: String, _ node: String, at seconds: Int64) -> Decision {
        ledger.run(id, .leaseStep(node: NodeID(node), agent: "agent", ttlMillis: 10_000), at: seconds)
    }

    @Test func aFreezeHoldsBackAForwardStepUntilItIsEnded() {
        // Given a ready node holding its service
        var ledger = LeaseLedger()
        start(&ledger, "m1", servicePlan("a", ["orders"]))
        #expect(ledger.holder("orders") == "m1/work")
        // When a freeze of that service is in force
        guard case .accepted = ledger.run(freeze("f1", ["orders"]), at: 1) else { Issue.record("declare refused"); return }
        // Then its forward step waits, saying for which freeze; and agents of the service are offered nothing
        #expect(lease(&ledger, "m1", "work", at: 2) == .rejected(.frozen(work, freeze: "f1", until: nil)))
        #expect(ledger.state.step(forService: "orders", at: t(2)).step == nil)
        #expect(Rejection.frozen(work, freeze: "f1", until: nil).code == "frozen")
        // When it ends, the step starts
        guard case .accepted = ledger.run(.freezes(.end(id: "f1", by: "olga", reason: "done")), at: 3) else { Issue.record("end refused"); return }
        #expect(ledger.state.freezes.isEmpty)
        guard case .accepted(let events) = lease(&ledger, "m1", "work", at: 4), case .stepLeased = events.first else { Issue.record("not leased"); return }
    }

    @Test func aFreezeWithAnEndTimeLetsStepsStartFromThatInstantAndOnlyCoversItsServices() {
        var ledger = LeaseLedger()
        start(&ledger, "m1", servicePlan("a", ["orders"]))
        start(&ledger, "m2", servicePlan("b", ["billing"]))
        ledger.run(freeze("f1", ["orders"], from: 5, until: 20), at: 1)
        // Before it comes into force, and on another service, steps start.
        guard case .accepted = lease(&ledger, "m2", "work", at: 6) else { Issue.record("billing is not frozen"); return }
        #expect(ledger.state.freeze(covering: ["orders"], at: t(4)) == nil)
        #expect(lease(&ledger, "m1", "work", at: 19) == .rejected(.frozen(work, freeze: "f1", until: t(20))))
        // A poll waits until the end time (nothing else signals it).
        #expect(ledger.state.step(forService: "orders", at: t(19)).nextRetry == t(20))
        #expect(ledger.state.freezesPastTheirEnd(at: t(19)).isEmpty && ledger.state.freezesPastTheirEnd(at: t(20)).map(\.id) == ["f1"])
        #expect(ledger.state.nextFreezeBoundary(after: t(1)) == t(5) && ledger.state.nextFreezeBoundary(after: t(5)) == t(20))
        guard case .accepted = lease(&ledger, "m1", "work", at: 20) else { Issue.record("the freeze ended at 20 s"); return }
    }

    /// The freeze over some services is found through an index by service; it must be the one a walk
    /// over every freeze finds (the least id in force over any of them), after any declares and ends.
    @Test(arguments: 0..<8)
    func theFreezeFoundIsTheOneAWalkOverEveryFreezeFinds(seed: Int) throws {
        var random = Seeded(state: UInt64(seed) &+ 11)
        let services = (0..<6).map { "s\($0)" }
        var ledger = LeaseLedger()
        for round in 0..<120 {
            let id = "f\(random.next(30))"
            if ledger.state.freezes[id] == nil {
                let covered = random.next(5) == 0 ? [] : Array(Set((0...random.next(3)).map { _ in services[random.next(services.count)] })).sorted()
                let from = Int64(random.next(40)), until = random.next(3) == 0 ? nil : Optional(from + 1 + Int64(random.next(40)))
                ledger.run(freeze(id, covered, from: from, until: until), at: 0)
            } else {
                ledger.run(.freezes(.end(id: id, by: "olga", reason: "done")), at: 0)
            }
            // The state restored from its canonical bytes (a snapshot) builds its index afresh: the same answers.
            let restored = try #require(try? LogState(canonicalBytes: ledger.state.canonicalBytes))
            #expect(restored == ledger.state)
            for asked in [[services[random.next(6)]], [services[random.next(6)], services[random.next(6)]], []] {
                let now = t(Int64(random.next(90)))
                let walked = ledger.state.freezesInOrder.first { $0.isActive(at: now) && $0.covers(asked) }
                #expect(ledger.state.freeze(covering: asked, at: now) == walked, "round \(round): \(asked)")
                #expect(restored.freeze(covering: asked, at: now) == walked, "round \(round), restored: \(asked)")
            }
        }
        #expect(!ledger.state.freezes.isEmpty)
    }

    @Test func aFreezeOfEveryServiceHoldsEveryForwardStep() {
        var ledger = LeaseLedger()
        start(&ledger, "m1", servicePlan("a", ["orders"]))
        ledger.run(freeze("all", []), at: 1)
        #expect(lease(&ledger, "m1", "work", at: 2) == .rejected(.frozen(work, freeze: "all", until: nil)))
    }

    @Test func rollbackStepsPassAFreezeAndAFrozenRequestDoesNotHoldUpARollbackBehindIt() {
        // Given mA's first node done and its second holding orders and ledger, and mB waiting for orders
        var ledger = LeaseLedger()
        start(&ledger, "mA", twoStepPlan)
        runStep(&ledger, "mA", "first")
        #expect(ledger.holder("orders") == "mA/second")
        start(&ledger, "mB", servicePlan("b", ["orders"]))
        #expect(ledger.leases("mB", "work").isRequested)
        // When orders is frozen and mA aborts (its rollback asks for orders after mB did)
        ledger.run(freeze("f1", ["orders"]), at: 2)
        guard case .accepted = ledger.run("mA", .abort(reason: "bad data"), at: 3) else { Issue.record("abort refused"); return }
        // Then mB's forward request is set aside: the rollback gets orders, and its step starts under the freeze
        #expect(ledger.holder("orders") == "mA/first")
        #expect(ledger.leases("mB", "work").isRequested, "mB keeps its place in line")
        guard case .accepted(let events) = lease(&ledger, "mA", "first", at: 4), case .stepLeased(let leased) = events.first, leased.kind == .rollback else {
            Issue.record("the rollback step did not start"); return
        }
        ledger.run("mA", .completeStep(node: NodeID("first"), token: leased.token), at: 5)
        // mB is not granted while the freeze holds (a grant would only hold orders idle) ...
        #expect(ledger.holder("orders") == nil)
        #expect(ledger.state.decide(.serviceLeases(.grant(migration: MigrationID("mB"), node: work, through: ledger.state.lastSequence)), now: t(6))
            == .rejected(.frozen(work, freeze: "f1", until: nil)))
        // ... and is, first in line, when it ends.
        ledger.run(.freezes(.end(id: "f1", by: "olga", reason: "")), at: 7)
        #expect(ledger.holder("orders") == "mB/work")
    }

    @Test func aFreezeDeclaredWhileANodeWaitsForItsServicesKeepsItWaitingUntilTheEnd() {
        // Given m1 running its step on orders and m2 waiting in line for orders
        var ledger = LeaseLedger()
        start(&ledger, "m1", servicePlan("a", ["orders"]))
        start(&ledger, "m2", servicePlan("b", ["orders"]))
        guard case .accepted(let events) = lease(&ledger, "m1", "work", at: 1), case .stepLeased(let leased) = events.first else {
            Issue.record("m1 not leased"); return
        }
        // When orders is frozen until 100 s, a running step is not stopped: it reports and releases orders
        ledger.run(freeze("f1", ["orders"], until: 100), at: 2)
        guard case .accepted = ledger.run("m1", .completeStep(node: work, token: leased.token), at: 3) else { Issue.record("report refused"); return }
        // Then m2 is not granted orders while the freeze holds
        #expect(ledger.holder("orders") == nil && ledger.leases("m2", "work").isRequested)
        #expect(ledger.state.grantableServiceRequests(through: ledger.state.lastSequence, at: t(99)).isEmpty)
        // and is when the coordinator ends the freeze at its end time, and its step starts.
        #expect(ledger.state.freezesPastTheirEnd(at: t(100)).map(\.id) == ["f1"])
        ledger.run(.freezes(.end(id: "f1", by: "lockstep", reason: "its end time passed")), at: 100)
        #expect(ledger.holder("orders") == "m2/work")
        guard case .accepted = lease(&ledger, "m2", "work", at: 100) else { Issue.record("m2 not leased after the end"); return }
    }

    @Test func breakGlassIsForAdminsWithAJustificationAndLetsOneNodeThroughAFreeze() {
        var ledger = LeaseLedger()
        start(&ledger, "m1", servicePlan("a", ["orders"]))
        ledger.run(freeze("f1", ["orders"]), at: 1)
        // A non-admin is refused; so is an admin without a justification.
        #expect(ledger.run("m1", .breakGlass(node: work, scope: .freeze, by: "olga", admin: false, justification: "sev1 fix"), at: 2)
            == .rejected(.breakGlassNotAdmin("olga")))
        #expect(Rejection.breakGlassNotAdmin("olga").code == "break_glass_not_admin")
        guard case .rejected(.invalidArgument) = ledger.run("m1", .breakGlass(node: work, scope: .freeze, by: "root", admin: true, justification: " "), at: 2) else {
            Issue.record("an empty justification was taken"); return
        }
        // An admin with a justification: an event of its own, and the node's step starts under the freeze.
        let glass = BreakGlass(node: work, scope: .freeze, by: "root", justification: "sev1 fix needs this column", at: t(3))
        #expect(ledger.run("m1", .breakGlass(node: work, scope: .freeze, by: "root", admin: true, justification: glass.justification), at: 3)
            == .accepted([.breakGlass(glass)]))
        #expect(ledger.migration("m1").node(work)?.breakGlass == [.freeze])
        #expect(ledger.run("m1", .breakGlass(node: work, scope: .freeze, by: "root", admin: true, justification: "again"), at: 3)
            == .rejected(.nothingToOverride(work, scope: .freeze, why: "it already has a freeze break-glass")))
        guard case .accepted(let events) = lease(&ledger, "m1", "work", at: 4), case .stepLeased = events.first else { Issue.record("not leased"); return }
    }

    @Test func aBreakGlassForABakeEndsItAndAdvancesTheNodeWithoutItsAnalysis() {
        let rollout = NodeID("rollout")
        let baking = [exposureStarted(), leased("expand", token: 1), completed("expand", token: 1), leased("rollout", token: 1, at: 10),
                      completed("rollout", token: 1), .exposureStageReached(ExposureStageReached(node: rollout, stage: 1, bakeUntil: t(70)))]
        let glass = BreakGlass(node: rollout, scope: .bake, by: "root", justification: "rollback of a bad config elsewhere needs 100 %", at: t(20))
        #expect(decide(baking, .breakGlass(node: rollout, scope: .bake, by: "root", admin: true, justification: glass.justification), at: 20)
            == .accepted([.breakGlass(glass), .analysisOverridden(node: rollout, stage: 1)]))
        #expect(decide(baking, .breakGlass(node: rollout, scope: .bake, by: "bob", admin: false, justification: "x"), at: 20)
            == .rejected(.breakGlassNotAdmin("bob")))
        // Only a bake in progress can be overridden.
        #expect(decide(Array(baking.prefix(3)), .breakGlass(node: rollout, scope: .bake, by: "root", admin: true, justification: "x"), at: 20)
            == .rejected(.nothingToOverride(rollout, scope: .bake, why: "it is ready, not baking")))
        let after = MigrationState.given(baking + [.breakGlass(glass), .analysisOverridden(node: rollout, stage: 1)])!
        #expect(after.node(rollout)?.status == .pending && after.nextStage(of: rollout) == .percent(10))
    }

    @Test func aStopOfTheLinePausesWithItsFreezeRecordedAndAResumeClearsIt() {
        var ledger = LeaseLedger()
        start(&ledger, "m1", servicePlan("a", ["orders"]))
        ledger.run(freeze("stop-1", ["orders"], stopsLine: true), at: 1)
        // (A paused migration gives back the services of nodes that have not started: the stop frees them too.)
        guard case .accepted(let events) = ledger.run("m1", .pause(reason: "the line was stopped", lineStop: "stop-1"), at: 2) else {
            Issue.record("pause refused"); return
        }
        #expect(events.first == .migrationPaused(reason: "the line was stopped", lineStop: "stop-1"))
        #expect(ledger.migration("m1").lineStop == "stop-1")
        ledger.run("m1", .resume, at: 3)
        #expect(ledger.migration("m1").lineStop == "")
        #expect(ledger.state.freezes["stop-1"]?.stopsLine == true)
    }

    @Test func freezeCommandsAreValidated() {
        var ledger = LeaseLedger()
        let decide = { (command: Command) in ledger.state.decide(command, now: t(10)) }
        func declared(_ freeze: Freeze) -> Ruling { decide(.freezes(.declare(freeze))) }
        let base = Freeze(id: "f1", services: ["orders"], from: t(0), until: nil, reason: "why", declaredBy: "olga")
        var noReason = base
        noReason.reason = ""
        guard case .rejected(.invalidArgument) = declared(noReason) else { Issue.record("a freeze without a reason was taken"); return }
        var endsFirst = base
        endsFirst.until = t(5)
        guard case .rejected(.invalidArgument(let why)) = declared(endsFirst) else { Issue.record("a freeze that already ended was taken"); return }
        #expect(why.contains("before it is in force"))
        var badID = base
        badID.id = "a b"
        guard case .rejected(.invalidArgument) = declared(badID) else { Issue.record("a bad id was taken"); return }
        var tooMany = base
        tooMany.services = (0...CoreLimits.freezeServicesMax).map { "s\($0)" }
        guard case .rejected(.invalidArgument) = declared(tooMany) else { Issue.record("too many services were taken"); return }
        var farFuture = base
        farFuture.until = Instant(millisecondsSinceEpoch: .max)
        guard case .rejected(.invalidArgument) = declared(farFuture) else { Issue.record("an end past the year 9999 was taken"); return }
        var duplicated = base
        duplicated.services = ["orders", "billing", "orders"]
        #expect(declared(duplicated) == .freezeEvent("f1", .freezeDeclared(Freeze(id: "f1", services: ["billing", "orders"], from: t(0), until: nil,
                                                                                    reason: "why", declaredBy: "olga"))))
        #expect(decide(.freezes(.end(id: "f9", by: "olga", reason: ""))) == .rejected(.freezeNotFound("f9")))
        ledger.run(.freezes(.declare(base)), at: 10)
        #expect(ledger.state.decide(.freezes(.declare(base)), now: t(11)) == .rejected(.freezeExists("f1")))
    }

    @Test func freezesBreakGlassAndLineStopsSurviveTheCanonicalBytes() throws {
        var ledger = LeaseLedger()
        start(&ledger, "m1", servicePlan("a", ["orders"]))
        start(&ledger, "m2", servicePlan("b", ["billing"]))
        ledger.run(freeze("f1", ["orders"], from: 0, until: 500), at: 1)
        ledger.run(freeze("stop", [], stopsLine: true), at: 1)
        ledger.run("m1", .breakGlass(node: work, scope: .freeze, by: "root", admin: true, justification: "sev1"), at: 2)
        ledger.run("m2", .pause(reason: "stopped", lineStop: "stop"), at: 2)
        let decoded = try LogState(canonicalBytes: ledger.state.canonicalBytes)
        #expect(decoded == ledger.state)
        #expect(decoded.freezesInOrder.map(\.id) == ["f1", "stop"])
    }

    @Test func aNodeHoldingItsServicesWhenAFreezeBeginsGivesThemBackUnlessItHasStarted() {
        // Given mA's second node holding orders and ledger, ready and not started
        var ledger = LeaseLedger()
        start(&ledger, "mA", twoStepPlan)
        runStep(&ledger, "mA", "first")
        #expect(ledger.holder("orders") == "mA/second" && ledger.holder("ledger") == "mA/second")
        // When a freeze of orders comes into force at 5 s
        ledger.run(freeze("f1", ["orders"], from: 5), at: 2)
        #expect(ledger.state.holdersToYield(at: t(4)).isEmpty, "not yet in force")
        #expect(ledger.state.holdersToYield(at: t(5)).map(\.node) == [NodeID("second")])
        // Then the coordinator makes it give both back and ask again; its request is set aside
        guard case .accepted(let events) = ledger.run(.serviceLeases(.yieldToFreeze(migration: MigrationID("mA"), node: NodeID("second"))), at: 5),
              case .serviceLeasesReleased(let released) = events.first else { Issue.record("not released"); return }
        #expect(released.services == ["orders", "ledger"] && !released.forced)
        #expect(ledger.holder("orders") == nil && ledger.holder("ledger") == nil && ledger.leases("mA", "second").isRequested)
        // A node that has started transitioning keeps its services (it is mid-change).
        var retried = servicePlan("c", ["billing"])
        retried.nodes[0].retry.maxAttempts = 3
        guard case .accepted = ledger.start("mC", retried, at: 6) else { Issue.record("mC not started"); return }
        guard case .accepted(let leasedEvents) = lease(&ledger, "mC", "work", at: 6), case .stepLeased(let leased) = leasedEvents.first else {
            Issue.record("mC not leased"); return
        }
        ledger.run("mC", .failStep(node: work, token: leased.token, reason: "flaky", retryable: true), at: 7)
        ledger.run(freeze("f2", ["billing"]), at: 8)
        #expect(ledger.holder("billing") == "mC/work")
        #expect(ledger.state.holdersToYield(at: t(9)).isEmpty)
        guard case .rejected(.invalidArgument) = ledger.run(.serviceLeases(.yieldToFreeze(migration: MigrationID("mC"), node: work)), at: 9) else {
            Issue.record("a node between retries gave its services back"); return
        }
    }

    @Test func aNodeAFreezeHoldsIsNotWaitingForAnAgent() {
        var plan = servicePlan("a", ["orders"])
        plan.nodes[0].timeouts.scheduleToStartMillis = 1_000
        var ledger = LeaseLedger()
        start(&ledger, "m1", plan)
        ledger.run(freeze("f1", ["orders"]), at: 1)
        #expect(ledger.run("m1", .scheduleToStartExceeded(node: work), at: 5) == .rejected(.notWaitingForAgent(work)))
    }

    @Test func aStopsPauseCanBeTakenOverAndAPauseNamesOnlyAStopInForce() {
        var ledger = LeaseLedger()
        start(&ledger, "m1", servicePlan("a", ["orders"]))
        ledger.run(freeze("plain", ["orders"]), at: 1)
        guard case .rejected(.invalidArgument) = ledger.run("m1", .pause(reason: "x", lineStop: "plain"), at: 2) else {
            Issue.record("a pause named a freeze that does not stop the line"); return
        }
        ledger.run(freeze("stop-1", [], stopsLine: true), at: 2)
        ledger.run(freeze("stop-2", [], stopsLine: true), at: 2)
        ledger.run("m1", .pause(reason: "line stopped", lineStop: "stop-1"), at: 3)
        #expect(ledger.run("m1", .pause(reason: "line stopped", lineStop: "stop-1"), at: 3) == .rejected(.alreadyPaused(MigrationID("m1"))))
        // Another stop takes it over; a person takes it over (and a stop's lift then leaves it alone).
        ledger.run("m1", .pause(reason: "still stopped", lineStop: "stop-2"), at: 4)
        #expect(ledger.migration("m1").lineStop == "stop-2")
        #expect(ledger.run("m1", .pause(reason: "olga keeps it paused"), at: 5) == .accepted([.migrationPaused(reason: "olga keeps it paused")]))
        #expect(ledger.migration("m1").lineStop == "" && ledger.migration("m1").status == .paused)
    }

    @Test func aStepThatFailsForGoodWhileTheLineIsStoppedLeavesAPersonsPause() {
        var plan = servicePlan("a", ["orders"])
        plan.nodes[0].onFailure = .pause
        plan.nodes[0].retry.maxAttempts = 1
        var ledger = LeaseLedger()
        start(&ledger, "m1", plan)
        guard case .accepted(let events) = lease(&ledger, "m1", "work", at: 1), case .stepLeased(let leased) = events.first else { Issue.record("not leased"); return }
        ledger.run(freeze("stop-1", [], stopsLine: true), at: 2)
        ledger.run("m1", .pause(reason: "line stopped", lineStop: "stop-1"), at: 2)
        guard case .accepted(let failed) = ledger.run("m1", .failStep(node: work, token: leased.token, reason: "disk full", retryable: false), at: 3) else {
            Issue.record("report refused"); return
        }
        #expect(failed.contains(.migrationPaused(reason: "node work failed after 1 attempt: disk full")))
        #expect(ledger.migration("m1").lineStop == "", "the lift must not re-arm a node that failed for good")
    }

    @Test func textIsCutToAByteLimitOnAScalarBoundary() {
        let euros = String(repeating: "€", count: 400)   // 3 bytes each
        let cut = euros.prefix(utf8Bytes: CoreLimits.reasonBytesMax)
        #expect(cut.utf8.count == 1_023 && cut == String(repeating: "€", count: 341))
        #expect("short".prefix(utf8Bytes: 10) == "short")
        #expect("aé".prefix(utf8Bytes: 2) == "a")
    }

    @Test func atMostAThousandFreezesAreDeclaredAndNotEndedAtOnce() {
        var ledger = LeaseLedger()
        for index in 0..<CoreLimits.freezesMax { ledger.run(freeze("f\(index)", ["s\(index)"]), at: 1) }
        #expect(ledger.state.freezes.count == CoreLimits.freezesMax)
        guard case .rejected(.invalidArgument(let why)) = ledger.state.decide(freeze("one-more", ["orders"]), now: t(2)) else {
            Issue.record("freeze 1,001 was taken"); return
        }
        #expect(why.contains("the limit is 1000"))
        // Ending one makes room.
        ledger.run(.freezes(.end(id: "f0", by: "olga", reason: "")), at: 3)
        guard case .freezeEvent = ledger.state.decide(freeze("one-more", ["orders"]), now: t(4)) else { Issue.record("no room after an end"); return }
    }
}
