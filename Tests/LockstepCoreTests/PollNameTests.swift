import LockstepCore
import Testing

/// A poll's name (`poll_id`) is recorded with the step lease it took, so the same poll sent again after
/// its answer was lost gets that lease back (`LogState.leaseTaken`) instead of the step waiting out its
/// lease as an agent lost. Only for the same agent, principal and name, and only while the lease runs.
@Suite struct PollNameTests {
    let work = NodeID("work")
    let plan = PlanSnapshot(name: "one", version: 1, contentHash: "h", nodes: [
        NodeSpec(id: NodeID("work"), services: ["orders"], phase: .custom, action: "w", maxAttempts: 3)])

    func started() -> LeaseLedger {
        var ledger = LeaseLedger()
        ledger.start("m1", plan)
        return ledger
    }

    @Test func theLeaseRecordsThePollsNameAndTheSamePollFindsItAgain() throws {
        var ledger = started()
        guard case .accepted(let events) = ledger.run("m1", .leaseStep(node: work, agent: "orders-1", ttlMillis: 10_000, holder: "bot", pollID: "poll-1"), at: 1),
              case .stepLeased(let leased) = events.first else { Issue.record("nothing leased"); return }
        #expect(leased.pollID == "poll-1" && leased.attempt == 1)
        let again = try #require(ledger.state.leaseTaken(forService: "orders", agent: "orders-1", holder: "bot", pollID: "poll-1"))
        #expect(again.migration == MigrationID("m1") && again.node == work && again.lease == leased, "the same lease, as recorded")
        // Another name, agent or principal: not theirs. No name: never.
        #expect(ledger.state.leaseTaken(forService: "orders", agent: "orders-1", holder: "bot", pollID: "poll-2") == nil)
        #expect(ledger.state.leaseTaken(forService: "orders", agent: "orders-2", holder: "bot", pollID: "poll-1") == nil)
        #expect(ledger.state.leaseTaken(forService: "orders", agent: "orders-1", holder: "eve", pollID: "poll-1") == nil)
        #expect(ledger.state.leaseTaken(forService: "payments", agent: "orders-1", holder: "bot", pollID: "poll-1") == nil)
        // Once the step is reported the lease is over: nothing to give back.
        ledger.run("m1", .failStep(node: work, token: leased.token, reason: "flaky", retryable: true, by: "bot"), at: 2)
        #expect(ledger.state.leaseTaken(forService: "orders", agent: "orders-1", holder: "bot", pollID: "poll-1") == nil)
    }

    @Test func aPausedMigrationsRunningStepIsStillFound() {
        var ledger = started()
        ledger.run("m1", .leaseStep(node: work, agent: "orders-1", ttlMillis: 10_000, holder: "bot", pollID: "poll-1"), at: 1)
        ledger.run("m1", .pause(reason: "look at the dashboards"), at: 2)
        #expect(ledger.state.leaseTaken(forService: "orders", agent: "orders-1", holder: "bot", pollID: "poll-1") != nil, "a step leased before the pause runs on")
    }

    @Test func aLeaseWithoutANameIsNeverGivenToAPollThatHasOne() {
        var ledger = started()
        ledger.run("m1", .leaseStep(node: work, agent: "orders-1", ttlMillis: 10_000, holder: "bot"), at: 1)
        #expect(ledger.state.leaseTaken(forService: "orders", agent: "orders-1", holder: "bot", pollID: "") == nil)
        #expect(ledger.state.leaseTaken(forService: "orders", agent: "orders-1", holder: "bot", pollID: "poll-1") == nil)
    }

    @Test func aBadNameIsRefused() {
        var ledger = started()
        #expect(ledger.run("m1", .leaseStep(node: work, agent: "orders-1", ttlMillis: 10_000, pollID: "no spaces"), at: 1)
            == .rejected(.invalidArgument("poll id \"no spaces\" may only contain letters, digits, '-', '_', '.', '@' and ':'")))
    }

    /// An archived log's base state may have been written in format 8, before leases had names
    /// (docs/history.md): it is still read, canonically, its leases unnamed.
    @Test func aStateInTheFormatBeforePollNamesIsStillRead() throws {
        var unnamed = started()
        unnamed.run("m1", .leaseStep(node: work, agent: "orders-1", ttlMillis: 10_000, holder: "bot"), at: 1)
        let old = unnamed.state.canonicalBytes(format: 8)
        #expect(old[4] == 8 && old.count == unnamed.state.canonicalBytes.count - 4, "format 8: no poll name (its 4-byte length) in the lease")
        let decoded = try LogState(canonicalBytes: old)
        #expect(decoded == unnamed.state)
        // A named lease written in format 8 loses its name, and reads back unnamed.
        var named = started()
        named.run("m1", .leaseStep(node: work, agent: "orders-1", ttlMillis: 10_000, holder: "bot", pollID: "poll-1"), at: 1)
        #expect(try LogState(canonicalBytes: named.state.canonicalBytes(format: 8)) == unnamed.state)
        // Bytes in format 8 that are not its canonical form are refused, as in the current format.
        #expect(throws: CanonicalDecodingError.self) { try LogState(canonicalBytes: named.state.canonicalBytes(format: 8) + [0]) }
    }

    @Test func theNameSurvivesTheCanonicalEncoding() throws {
        var ledger = started()
        ledger.run("m1", .leaseStep(node: work, agent: "orders-1", ttlMillis: 10_000, holder: "bot", pollID: "poll-1"), at: 1)
        let decoded = try LogState(canonicalBytes: ledger.state.canonicalBytes)
        #expect(decoded == ledger.state)
        #expect(decoded.leaseTaken(forService: "orders", agent: "orders-1", holder: "bot", pollID: "poll-1") != nil)
    }
}
