import LockstepCore
import Testing

/// Change windows in the composed decide (issue 19), each rule as Given / When / Then on a `LeaseLedger`.
/// Times are UTC; `t(0)` is Tuesday 2023-11-14 22:13:20Z, so `at(day, hour)` counts from Monday 2023-11-13 00:00Z.
@Suite struct WindowTests {
    let work = NodeID("work")

    /// Seconds from `t(0)` to `hour:minute` UTC on day `day` (0 = Monday 2023-11-13).
    func at(_ day: Int64, _ hour: Int64, _ minute: Int64 = 0) -> Int64 { day * 86_400 + hour * 3_600 + minute * 60 - 166_400 }

    func window(_ text: String) -> ChangeWindow {
        guard case .success(let window) = ChangeWindow.parse(text) else { preconditionFailure("\(text) does not parse") }
        return window
    }

    /// A one-node plan on `orders` whose node has `nodeWindows`, the plan `planWindows`, the service `serviceWindows`.
    func windowPlan(_ name: String = "w", node nodeWindows: [String] = [], plan planWindows: [String] = [], service serviceWindows: [String] = [],
                    retry: RetryPolicy = RetryPolicy(), services: [String] = ["orders"]) -> PlanSnapshot {
        PlanSnapshot(name: name, version: 1, contentHash: "h-\(name)", services: services.map { ServiceSpec(name: $0, owners: ["team"], windows: $0 == "orders" ? serviceWindows.map(window) : []) },
                     nodes: [NodeSpec(id: work, services: services, phase: .custom, action: "work", retry: retry, rollback: RollbackSpec(action: "undo"),
                                      windows: nodeWindows.map(window))],
                     windows: planWindows.map(window))
    }

    /// Berlin around 2024's spring change: +01:00 until 2024-03-31T01:00Z, +02:00 after.
    let berlin = ZoneOffsets(zone: "Europe/Berlin", initialOffsetSeconds: 3_600,
                             changes: [OffsetChange(at: Instant(millisecondsSinceEpoch: 1_711_846_800_000), offsetSeconds: 7_200)])

    @discardableResult
    func start(_ ledger: inout LeaseLedger, _ id: String, _ plan: PlanSnapshot, at seconds: Int64, zones: [ZoneOffsets]? = nil) -> Decision {
        ledger.run(.plans(.apply(plan)), at: seconds)
        let registered = ledger.state.plan(plan.name)!
        let zones = zones ?? registered.windowZones.map { ZoneOffsets(zone: $0, initialOffsetSeconds: 0) }
        return ledger.run(id, .start(id: MigrationID(id), plan: registered, startedBy: "alice", zones: zones), at: seconds)
    }

    func lease(_ ledger: inout LeaseLedger, _ id: String, at seconds: Int64) -> Decision {
        ledger.run(id, .leaseStep(node: work, agent: "agent", ttlMillis: 10_000), at: seconds)
    }

    // MARK: - The text of a window

    @Test func windowsParseAndPrintOneWay() {
        #expect(window("Mon-Fri 09:00-16:00 Europe/Berlin").description == "Mon-Fri 09:00-16:00 Europe/Berlin")
        #expect(window("mon,tue,wed 09:00-16:00 UTC").description == "Mon-Wed 09:00-16:00 UTC")
        #expect(window("daily 22:00-02:00 UTC").description == "Mon-Sun 22:00-02:00 UTC")
        #expect(window("Fri-Mon 00:00-24:00 UTC").description == "Mon,Fri-Sun 00:00-24:00 UTC")
        #expect(window("Sat,Sun 10:30-11:45 America/Argentina/Buenos_Aires").days == 0b110_0000)
        for bad in ["", "Mon-Fri 09:00-16:00", "Mon-Fri 9:00-16:00 UTC", "Mon-Fri 09:00-25:00 UTC", "Mon-Fri 24:00-10:00 UTC",
                    "Mon-Fri 09:00-09:00 UTC", "Mon-Fry 09:00-16:00 UTC", "Mon-Fri 09:00-16:00 ../etc/passwd", "Mon-Fri 09:60-16:00 UTC",
                    "Mon--Fri 09:00-16:00 UTC", "Mon-Fri 09:00-16:00 Europe//Berlin", "Mon-Fri 09:00-16:00 UTC extra"] {
            guard case .failure(let problem) = ChangeWindow.parse(bad) else { Issue.record("\(bad) parsed"); continue }
            #expect(!problem.description.isEmpty)
        }
    }

    @Test func aWindowReadsLocalTimeWithTheRecordedOffsetsAcrossADaylightSavingChange() {
        let office = window("Mon-Fri 09:00-16:00 Europe/Berlin")
        // Friday 2024-03-29: +01:00, so open 08:00Z to 15:00Z.
        let friday = Instant(millisecondsSinceEpoch: 1_711_670_400_000)  // 2024-03-29T00:00Z
        #expect(!office.contains(friday.adding(milliseconds: 7 * 3_600_000 + 59 * 60_000), offsets: berlin))
        #expect(office.contains(friday.adding(milliseconds: 8 * 3_600_000), offsets: berlin))
        #expect(!office.contains(friday.adding(milliseconds: 15 * 3_600_000), offsets: berlin))
        // Monday 2024-04-01: +02:00, so open 07:00Z to 14:00Z.
        let monday = friday.adding(milliseconds: 3 * 86_400_000)
        #expect(office.contains(monday.adding(milliseconds: 7 * 3_600_000), offsets: berlin))
        #expect(!office.contains(monday.adding(milliseconds: 14 * 3_600_000), offsets: berlin))
        // Saturday and Sunday: closed all day.
        #expect(!office.contains(friday.adding(milliseconds: 86_400_000 + 10 * 3_600_000), offsets: berlin))
        // A window across midnight is open early on the day after each of its days.
        let night = window("Fri 22:00-02:00 UTC")
        #expect(night.contains(friday.adding(milliseconds: 23 * 3_600_000), offsets: nil))
        #expect(night.contains(friday.adding(milliseconds: 25 * 3_600_000), offsets: nil))
        #expect(!night.contains(friday.adding(milliseconds: 26 * 3_600_000), offsets: nil))
        #expect(!night.contains(friday.adding(milliseconds: 1 * 3_600_000), offsets: nil), "Thursday night is not a Friday window")
    }

    @Test func anEdgeInTheHourThatHappensTwiceWhenClocksGoBackIsFound() {
        // Berlin on 2026-10-25: +02:00 until 01:00Z, then +01:00; local 02:00-03:00 happens twice.
        let autumn = ZoneOffsets(zone: "Europe/Berlin", initialOffsetSeconds: 7_200,
                                 changes: [OffsetChange(at: Instant(millisecondsSinceEpoch: 1_792_890_000_000), offsetSeconds: 3_600)])
        let midnight = Instant(millisecondsSinceEpoch: 1_792_886_400_000)  // 2026-10-25T00:00Z, 02:00 summer time
        let plan = windowPlan(node: ["daily 02:30-04:00 Europe/Berlin"])
        // At 00:10Z (02:10 summer time) it is closed, and opens at 02:30 summer time, 00:30Z (not at 02:30 winter time, 01:30Z).
        #expect(plan.windowWait(of: work, zones: [autumn], at: midnight.adding(milliseconds: 600_000))?.opensAt == midnight.adding(milliseconds: 1_800_000))
        // At 01:00Z clocks go back to 02:00: closed again until 01:30Z.
        #expect(plan.windowWait(of: work, zones: [autumn], at: midnight.adding(milliseconds: 3_600_000))?.opensAt == midnight.adding(milliseconds: 5_400_000))
        // Far outside the years a window can name, nothing traps and nothing is found.
        #expect(plan.windowWait(of: work, zones: [autumn], at: Instant(millisecondsSinceEpoch: .max - 1))?.opensAt == nil)
    }

    // MARK: - Steps wait for their windows

    @Test func aNodeOutsideItsWindowWaitsSayingUntilWhenAndStartsWhenItOpens() {
        // Given a node that may start on weekdays 09:00-16:00 UTC, ready on Tuesday at 22:13
        var ledger = LeaseLedger()
        start(&ledger, "m1", windowPlan(node: ["Mon-Fri 09:00-16:00 UTC"]), at: 0)
        // Then its forward step waits, saying which window and when it opens (Wednesday 09:00)
        let opens = t(at(2, 9))
        #expect(lease(&ledger, "m1", at: 1) == .rejected(.outsideWindow(work, windows: "Mon-Fri 09:00-16:00 UTC", opensAt: opens)))
        #expect(Rejection.outsideWindow(work, windows: "", opensAt: nil).code == "outside_window")
        let migration = ledger.migration("m1")
        #expect(ledger.state.nodeDisplayStatus(work, of: migration, at: t(1)) == .waitingForWindow)
        // And its request for orders is set aside: agents of the service are offered nothing, and the
        // coordinator's timer looks again when the window opens
        #expect(ledger.holder("orders") == nil)
        #expect(ledger.state.step(forService: "orders", at: t(1)).step == nil)
        #expect(migration.nextWindowChange(after: t(1)) == opens)
        // When it opens, the timer's grant pass gives it orders, and the step starts
        ledger.grantAll(at: at(2, 9))
        #expect(ledger.holder("orders") == "m1/work")
        #expect(ledger.state.nodeDisplayStatus(work, of: ledger.migration("m1"), at: opens) == .ready)
        guard case .accepted(let events) = lease(&ledger, "m1", at: at(2, 9)), case .stepLeased = events.first else { Issue.record("not leased at 09:00"); return }
    }

    @Test func thePlanTheServiceAndTheNodeMustAllHaveAWindowOpen() {
        // Given weekday office hours for the plan, Tuesday and Thursday 10:00-11:00 for orders, and a node that prefers mornings
        var ledger = LeaseLedger()
        start(&ledger, "m1", windowPlan(node: ["daily 06:00-10:30 UTC"], plan: ["Mon-Fri 09:00-17:00 UTC"],
                                        service: ["Tue 10:00-11:00 UTC", "Thu 10:00-11:00 UTC"]), at: 0)
        // Then on Tuesday night it waits for Thursday 10:00 (all three open), naming the closed windows
        guard case .rejected(.outsideWindow) = lease(&ledger, "m1", at: 1) else { Issue.record("not held"); return }
        guard case .window(let wait) = ledger.state.forwardHold(work, of: ledger.migration("m1"), at: t(1)) else { Issue.record("not held"); return }
        let (closed, opens) = (wait.windows, wait.opensAt)
        #expect(opens == t(at(3, 10)))
        #expect(closed == "Mon-Fri 09:00-17:00 UTC; Tue 10:00-11:00 UTC or Thu 10:00-11:00 UTC; Mon-Sun 06:00-10:30 UTC")
        // Thursday 10:30 closes the node's own window
        #expect(ledger.migration("m1").nextWindowChange(after: t(at(3, 10))) == t(at(3, 10, 30)))
        ledger.grantAll(at: at(3, 10))
        guard case .rejected(.outsideWindow) = lease(&ledger, "m1", at: at(3, 10, 30)) else { Issue.record("open at 10:30"); return }
        // A poll of a node holding its services waits until its windows open again (next Tuesday: 7 days on)
        #expect(ledger.state.step(forService: "orders", at: t(at(3, 10, 30))).nextRetry == t(at(8, 10)))
        guard case .accepted = lease(&ledger, "m1", at: at(3, 10, 29)) else { Issue.record("not leased at 10:29"); return }
    }

    @Test func windowsThatNeverOpenTogetherSayNoOpeningWithinTheSearch() {
        var ledger = LeaseLedger()
        start(&ledger, "m1", windowPlan(node: ["Sat 09:00-10:00 UTC"], plan: ["Mon-Fri 09:00-17:00 UTC"]), at: 0)
        #expect(ledger.state.forwardHold(work, of: ledger.migration("m1"), at: t(1))
            == .window(WindowWait(windows: "Mon-Fri 09:00-17:00 UTC; Sat 09:00-10:00 UTC", opensAt: nil)))
        // The timer looks again at the end of the search (an offset change beyond it may yet open them).
        #expect(ledger.migration("m1").nextWindowChange(after: t(1)) == t(1).adding(milliseconds: 8 * 86_400_000))
    }

    @Test func aWindowThatOpensDuringABackoffWaitsForTheBackoffAndOneThatClosesDuringItWaitsForTheNextOpening() {
        // Given a node with a 30-minute backoff in a 09:00-16:00 window, leased on Wednesday at 15:00
        var ledger = LeaseLedger()
        let retry = RetryPolicy(maxAttempts: 3, backoffInitialMillis: 1_800_000, backoffMaxMillis: 1_800_000, backoffMultiplier: 1)
        start(&ledger, "m1", windowPlan(node: ["Mon-Fri 09:00-16:00 UTC"], retry: retry), at: 0)
        ledger.grantAll(at: at(2, 15))
        guard case .accepted(let first) = lease(&ledger, "m1", at: at(2, 15)), case .stepLeased(let leased) = first.first else { Issue.record("not leased"); return }
        // When it fails at 15:45, its retry is due at 16:15, after the window closed
        ledger.run("m1", .failStep(node: work, token: leased.token, reason: "lag", retryable: true), at: at(2, 15, 45))
        #expect(lease(&ledger, "m1", at: at(2, 16, 10)) == .rejected(.retryNotDue(work, retryAt: t(at(2, 16, 15)))))
        // Then after the backoff it waits for Thursday 09:00; the node keeps its services (it has started)
        #expect(lease(&ledger, "m1", at: at(2, 16, 15)) == .rejected(.outsideWindow(work, windows: "Mon-Fri 09:00-16:00 UTC", opensAt: t(at(3, 9)))))
        #expect(ledger.state.holdersToYield(at: t(at(2, 16, 15))).isEmpty)
        // When it fails again at Thursday 08:59 + ... (a window that opens during a backoff): leased at 09:00, failed at 09:10,
        guard case .accepted(let second) = lease(&ledger, "m1", at: at(3, 9)), case .stepLeased(let again) = second.first else { Issue.record("not leased Thu"); return }
        ledger.run("m1", .failStep(node: work, token: again.token, reason: "lag", retryable: true), at: at(3, 9, 10))
        // the open window does not cut the backoff short
        #expect(lease(&ledger, "m1", at: at(3, 9, 20)) == .rejected(.retryNotDue(work, retryAt: t(at(3, 9, 40)))))
        guard case .accepted = lease(&ledger, "m1", at: at(3, 9, 40)) else { Issue.record("not leased after the backoff"); return }
    }

    @Test func aRequestOutsideItsWindowIsSetAsideAndHoldsUpNobodyAndAHolderThatHasNotStartedGivesItsServicesBack() {
        // Given m1 (weekday window) asking for orders first, and m2 (no window) after it, on Tuesday night
        var ledger = LeaseLedger()
        start(&ledger, "m0", servicePlan("z", ["orders"]), at: 0)
        start(&ledger, "m1", windowPlan(node: ["Mon-Fri 09:00-16:00 UTC"]), at: 0)
        start(&ledger, "m2", servicePlan("b", ["orders"]), at: 0)
        #expect(ledger.holder("orders") == "m0/work")
        runStep(&ledger, "m0", "work")
        // Then m1's request is set aside (closed window) and m2 gets orders
        #expect(ledger.holder("orders") == "m2/work")
        #expect(ledger.leases("m1", "work").isRequested, "m1 keeps its place in line")
        runStep(&ledger, "m2", "work")
        // When the window opens, m1 is granted
        #expect(ledger.holder("orders") == nil)
        ledger.grantAll(at: at(2, 9))
        #expect(ledger.holder("orders") == "m1/work")
        // And when it closes before m1's step started, m1 gives orders back (as for a freeze)
        #expect(ledger.state.holdersToYield(at: t(at(2, 16))).map(\.node) == [work])
        guard case .accepted(let events) = ledger.run(.serviceLeases(.yieldToFreeze(migration: MigrationID("m1"), node: work)), at: at(2, 16)),
              case .serviceLeasesReleased(let released) = events.first else { Issue.record("no yield"); return }
        #expect(released.reason == "its change window is closed (Mon-Fri 09:00-16:00 UTC) and it has not started")
    }

    @Test func rollbackStepsPassAClosedWindow() {
        // Given a two-node plan in weekday hours whose first node completed on Wednesday at 10:00
        var ledger2 = LeaseLedger()
        let two = PlanSnapshot(name: "two", version: 1, contentHash: "h", services: [ServiceSpec(name: "orders", owners: ["team"])], nodes: [
            NodeSpec(id: NodeID("first"), services: ["orders"], phase: .expand, action: "a", rollback: RollbackSpec(action: "undo")),
            NodeSpec(id: NodeID("second"), services: ["orders"], phase: .backfill, action: "b", needs: [NodeID("first")], rollback: RollbackSpec(action: "undo")),
        ], windows: [window("Mon-Fri 09:00-16:00 UTC")])
        start(&ledger2, "r", two, at: at(2, 9))
        guard case .accepted(let e1) = ledger2.run("r", .leaseStep(node: NodeID("first"), agent: "a", ttlMillis: 10_000), at: at(2, 10)),
              case .stepLeased(let l1) = e1.first else { Issue.record("first not leased"); return }
        ledger2.run("r", .completeStep(node: NodeID("first"), token: l1.token), at: at(2, 10))
        guard case .rejected(.outsideWindow) = ledger2.run("r", .leaseStep(node: NodeID("second"), agent: "a", ttlMillis: 10_000), at: at(2, 20)) else {
            Issue.record("second started outside the window"); return
        }
        // When it is aborted at night, its rollback step starts outside the window
        ledger2.run("r", .abort(reason: "incident"), at: at(2, 20))
        guard case .accepted(let e2) = ledger2.run("r", .leaseStep(node: NodeID("first"), agent: "a", ttlMillis: 10_000), at: at(2, 20, 1)),
              case .stepLeased(let rollback) = e2.first, rollback.kind == .rollback else { Issue.record("the rollback was held by the window"); return }
    }

    @Test func breakGlassOnAWindowIsAdminsOnlyAndLetsTheNodeStartOutsideIt() {
        var ledger = LeaseLedger()
        start(&ledger, "m1", windowPlan(node: ["Mon-Fri 09:00-16:00 UTC"]), at: 0)
        #expect(ledger.run("m1", .breakGlass(node: work, scope: .window, by: "olga", admin: false, justification: "hotfix"), at: 1)
            == .rejected(.breakGlassNotAdmin("olga")))
        guard case .accepted(let events) = ledger.run("m1", .breakGlass(node: work, scope: .window, by: "root", admin: true, justification: "sev1 hotfix"), at: 2),
              case .breakGlass(let glass) = events.first else { Issue.record("break-glass refused"); return }
        #expect(glass.scope == .window && glass.by == "root")
        #expect(ledger.state.nodeDisplayStatus(work, of: ledger.migration("m1"), at: t(3)) == .ready)
        guard case .accepted = lease(&ledger, "m1", at: 3) else { Issue.record("held after break-glass"); return }
        // A node with no windows has none to override
        start(&ledger, "m2", servicePlan("plain", ["billing"]), at: 0)
        guard case .rejected(.nothingToOverride(_, .window, _)) = ledger.run("m2", .breakGlass(node: work, scope: .window, by: "root", admin: true, justification: "x"), at: 4) else {
            Issue.record("overrode a window that does not exist"); return
        }
    }

    @Test func aNodeItsWindowHoldsIsNotWaitingForAnAgent() {
        var ledger = LeaseLedger()
        var plan = windowPlan(node: ["Mon-Fri 09:00-16:00 UTC"])
        plan.nodes[0].timeouts.scheduleToStartMillis = 60_000
        start(&ledger, "m1", plan, at: 0)
        #expect(ledger.holder("orders") == nil, "a request outside its window is not granted")
        #expect(ledger.run("m1", .scheduleToStartExceeded(node: work), at: 120) == .rejected(.notWaitingForAgent(work)))
    }

    // MARK: - What a start records

    @Test func aStartCarriesExactlyTheZonesItsWindowsNameWellFormed() {
        let plan = windowPlan(node: ["Mon-Fri 09:00-16:00 Europe/Berlin"], plan: ["daily 00:00-24:00 UTC"])
        #expect(plan.windowZones == ["Europe/Berlin", "UTC"])
        var ledger = LeaseLedger()
        guard case .rejected(.invalidArgument(let missing)) = start(&ledger, "m1", plan, at: 0, zones: [berlin]) else { Issue.record("started without UTC"); return }
        #expect(missing.contains("the plan's windows name [Europe/Berlin, UTC]"))
        var backwards = berlin
        backwards.changes.append(OffsetChange(at: Instant(millisecondsSinceEpoch: 0), offsetSeconds: 3_600))
        guard case .rejected(.invalidArgument) = start(&ledger, "m1", plan, at: 0, zones: [backwards, ZoneOffsets(zone: "UTC", initialOffsetSeconds: 0)]) else {
            Issue.record("started with offset changes out of order"); return
        }
        // At most 64 offset changes per zone (about three years of daylight saving are a handful).
        var many = berlin
        many.changes = (1...(CoreLimits.zoneOffsetChangesMax + 1)).map { OffsetChange(at: Instant(millisecondsSinceEpoch: Int64($0) * 86_400_000), offsetSeconds: 3_600) }
        guard case .rejected(.invalidArgument(let tooMany)) = start(&ledger, "m1", plan, at: 0, zones: [many, ZoneOffsets(zone: "UTC", initialOffsetSeconds: 0)]) else {
            Issue.record("started with 65 offset changes"); return
        }
        #expect(tooMany.contains("the limit is \(CoreLimits.zoneOffsetChangesMax)"))
        many.changes.removeLast()
        #expect(PlanValidation.zonesProblem([many, ZoneOffsets(zone: "UTC", initialOffsetSeconds: 0)], for: plan) == nil, "64 are taken")
        var wild = berlin
        wild.initialOffsetSeconds = 90_000
        guard case .rejected(.invalidArgument) = start(&ledger, "m1", plan, at: 0, zones: [wild, ZoneOffsets(zone: "UTC", initialOffsetSeconds: 0)]) else {
            Issue.record("started with a 25-hour offset"); return
        }
        guard case .accepted(let events) = start(&ledger, "m1", plan, at: 0, zones: [berlin, ZoneOffsets(zone: "UTC", initialOffsetSeconds: 0)]),
              case .migrationStarted(let started) = events.first else { Issue.record("refused"); return }
        #expect(started.zones.map(\.zone) == ["Europe/Berlin", "UTC"])
        #expect(ledger.migration("m1").zones == started.zones)
    }

    @Test func aPlanWithAWindowThatIsNotOneIsRefused() {
        var plan = windowPlan(node: ["Mon-Fri 09:00-16:00 UTC"])
        plan.nodes[0].windows[0].endMinute = 1_441
        #expect(PlanValidation.problem(in: plan)?.contains("minute") == true)
        plan.nodes[0].windows = Array(repeating: window("Mon 09:00-10:00 UTC"), count: CoreLimits.windowsPerLevelMax + 1)
        #expect(PlanValidation.problem(in: plan)?.contains("the limit is \(CoreLimits.windowsPerLevelMax)") == true)
        plan.nodes[0].windows = [ChangeWindow(days: 0, startMinute: 0, endMinute: 60, zone: "UTC")]
        #expect(PlanValidation.problem(in: plan)?.contains("no day") == true)
    }

    @Test func windowsChangeTheContentHashOnlyWhenThereAreAny() {
        let plain = windowPlan()
        var windowed = plain
        windowed.nodes[0].windows = [window("Mon 09:00-10:00 UTC")]
        var serviceWindowed = plain
        serviceWindowed.services[0].windows = [window("Mon 09:00-10:00 UTC")]
        var planWindowed = plain
        planWindowed.windows = [window("Mon 09:00-10:00 UTC")]
        let hashes = [plain, windowed, serviceWindowed, planWindowed].map(\.canonicalContentBytes)
        #expect(Set(hashes).count == 4)
        // A plan without windows encodes as it did before windows existed (no marker).
        #expect(!plain.canonicalContentBytes.contains(0x57) || plain.canonicalContentBytes.count == windowPlan().canonicalContentBytes.count)
    }

    @Test func theCanonicalStateCarriesWindowsAndZonesAndReadsBackTheSame() throws {
        var ledger = LeaseLedger()
        let plan = windowPlan(node: ["Mon-Fri 09:00-16:00 Europe/Berlin"], plan: ["daily 22:00-02:00 UTC"], service: ["Sat,Sun 00:00-24:00 UTC"])
        start(&ledger, "m1", plan, at: 0, zones: [berlin, ZoneOffsets(zone: "UTC", initialOffsetSeconds: 0)])
        let bytes = ledger.state.canonicalBytes
        let decoded = try LogState(canonicalBytes: bytes)
        #expect(decoded == ledger.state)
        #expect(decoded.migrations[MigrationID("m1")]?.zones.first == berlin)
    }
}
