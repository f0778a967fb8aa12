import HeapModule
import LockstepEngine
import ServiceLifecycle
import Synchronization

/// Parked long-polls and watches, and what wakes them.
///
/// Every change of the live state bumps one generation and wakes parked callers whose key it concerns
/// (a poll's service, a watch's migration), which then look again. A caller that read generation `n`
/// before looking parks only if nothing at all changed since, so no change between its look and its
/// wait is missed.
///
/// Whom a change wakes is the `policy`: watches all want every event (`.everyone`); polls of one service
/// race for the same steps, so a change wakes only the longest-parked poll of the service (`.oldest`),
/// which looks and either takes a step or parks again (`signalSteps` wakes polls only of services that
/// may have a step; a poll may also be claimed, taken out and leased the step in the append that
/// readies it: `claim`). Besides, a change may name callers (`signal`'s `names`): each is woken whatever
/// the policy, a named poll whose service's running lease its append named (`signalSteps`). A poll woken
/// by its key that leaves without having looked must `passOn` its wake, but for one the poll lane had no
/// room for (`PollDriver`: passed on, it would go through every poll parked on the service in one call
/// stack; its agent retries and looks). Waking one instead of all keeps
/// N agents of a service from all racing to one step and all but one parking again (a thundering herd
/// that cost about 4× in wake-up latency p99).
///
/// Parking is bounded (overall and per principal), follows task cancellation, and ends for everyone at
/// shutdown. Signalling is synchronous and never blocks (a short lock), so the coordinator calls it
/// right after an append is folded in. Deadlines are kept by one sweeper (`run`, a service), which sleeps
/// until the earliest, not by a sleeping task per parked caller (10,000 parked polls cost about 25 MB
/// less that way); a caller whose client goes is resumed by its `Departure`, not by a task either.
package final class Wakeups: Service, Sendable {
    package enum Policy: Sendable {
        /// A change wakes every parked caller of its keys.
        case everyone
        /// A change wakes the longest-parked caller of each of its keys.
        case oldest
    }

    package enum Outcome: Equatable, Sendable {
        /// A change concerning the caller's key woke it; `changedAt` is when the change happened (`signal`'s `at`).
        case woken(changedAt: ContinuousClock.Instant)
        /// Something changed before the caller parked, or its wait timed out: look again.
        case lookAgain
        /// Too many are parked (overall or for this principal): answer now.
        case full
        /// The server is shutting down: answer now.
        case closed
        /// The waiting task was cancelled (its caller went away): stop. `wokenBy`: when the change happened
        /// that woke it as it was cancelled (that wake is this caller's, and must go on), nil when none did.
        case cancelled(wokenBy: ContinuousClock.Instant?)
        /// The caller, parked with a claim, was claimed by the coordinator (`claim(_:)`) and this is how
        /// that ended: a step leased to it, or none (look again). It may have been cancelled meanwhile.
        case claimed(StepClaimEnd)

        /// Whether the caller should look again (woken, or for any other reason).
        var looksAgain: Bool {
            switch self {
            case .woken, .lookAgain, .claimed: true
            case .full, .closed, .cancelled: false
            }
        }
    }

    private let state = Mutex(State())
    package let policy: Policy
    /// Most callers parked at once, and per principal.
    package let parkedMax: Int
    package let parkedPerOwnerMax: Int

    /// Ends the sweeper's sleep when a caller parks with a deadline earlier than any before, or at close.
    private let sweeperWake = TimerWake()
    /// The longest the sweeper sleeps with nobody parked.
    package static let idleSweepMax = Duration.seconds(60)

    package init(policy: Policy, parkedMax: Int, parkedPerOwnerMax: Int) {
        self.policy = policy
        self.parkedMax = parkedMax
        self.parkedPerOwnerMax = parkedPerOwnerMax
    }

    /// The sweeper: resumes parked callers whose deadline has passed, sleeping until the earliest one
    /// (no polling), woken when an earlier one parks. Runs as a service in the server's group (or in a
    /// test's task group) until cancelled; after `close` it has nothing left to do but keeps running, so
    /// it never ends out of its group's shutdown order.
    package func run() async {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                let next = self.state.withLock { $0.deadlines.min?.at }
                let sleep = next.map { $0 - .now } ?? Self.idleSweepMax
                if sleep > .zero { await self.sweeperWake.wait(upTo: min(sleep, Self.idleSweepMax)) }
                if Task.isCancelled { return }
                self.sweep()
            }
        }
    }


    /// Resumes the callers whose deadline has passed.
    private func sweep() {
        for waiter in state.withLock({ $0.due(at: .now) }) { waiter.resume(returning: nil) }
    }

    package var generation: UInt64 { state.withLock { $0.generation } }

    package var parkedCount: Int { state.withLock { $0.parked.count } }

    /// Named callers indexed by their name (for tests of the bound: at most the parked callers).
    package var namedEntries: Int { state.withLock { $0.named.count } }

    /// Deadlines kept, of departed callers included (for tests of the bound).
    package var deadlineEntries: Int { state.withLock { $0.deadlines.count } }

    /// Entries in `key`'s line, departed callers included (for tests of the bound).
    package func lineLength(of key: String) -> Int { state.withLock { $0.lines[key].map { $0.ids.count - $0.head } ?? 0 } }

    /// A change concerning `keys`: wakes the parked callers of those keys the policy says, and the
    /// caller parked on each key of `names` under the name given (whatever the policy). `at` is when the
    /// change happened (its append's commit ended), which each caller woken by its key is told
    /// (`Outcome.woken`); a caller woken by its name is told to look again (`Outcome.lookAgain`): it
    /// holds no wake of its key's (no step came), so none is passed on should it leave without looking.
    package func signal(_ keys: Set<String>, names: [String: String] = [:], at changed: ContinuousClock.Instant = .now) {
        let (waking, named) = state.withLock { state in
            state.generation &+= 1
            let waking = keys.flatMap { key -> [Waiter] in
                switch policy {
                case .everyone: state.all(of: key)
                case .oldest: state.oldest(of: key).map { [$0] } ?? []
                }
            }
            return (waking, names.compactMap { key, name in state.named(name, of: key) })
        }
        for waiter in waking { waiter.resume(returning: changed) }
        for waiter in named { waiter.resume(returning: nil) }
    }

    /// A change folded into the coordinator's state (its commit ended at `committedAt`), told to parked
    /// polls: the longest-parked poll of each of its services that may have a step now (`stepServices`,
    /// published before the change is told) is woken. A poll of any other service would look, find
    /// nothing and park again at the back of its line; and a poll waiting as a task would still be on
    /// its way back when the grant that follows a start came to claim it (`claim`).
    ///
    /// So is a named poll parked under the name this append gave the running lease of one of its
    /// services (`Change.leasesNamed`): a poll sent again while its first send's lease was being
    /// committed, which found no lease under its name then (docs/api.md, `poll_id`). It looks again and
    /// gets the lease back; without this wake it waited out its wait, as the lease's own commit leaves
    /// the service with no step and wakes nobody.
    package func signalSteps(of change: Coordinator.Change, committedAt: ContinuousClock.Instant, stepServices: StepServices) {
        signal(stepServices.steps(among: change.services), names: change.leasesNamed, at: committedAt)
    }

    /// Hands a wake on to the next parked caller of `key`: called by a woken caller that leaves without
    /// having looked (its client went away), so the change it was woken for (at `changed`) is not lost;
    /// nil when no change is passed on, only a look (the caller then looks again: `.lookAgain`).
    package func passOn(_ key: String, changedAt changed: ContinuousClock.Instant?) {
        state.withLock { $0.oldest(of: key) }?.resume(returning: changed)
    }

    /// Takes the longest-parked caller of `key` out of the table when it parked with a claim (`park`'s
    /// `claim`), for the coordinator to lease it the step an append readies (CoordinatorMachine+Claims).
    /// Nil when nobody is parked on `key`, the longest-parked caller can only be woken, or the table is closed.
    package func claim(_ key: String) -> StepClaim? {
        guard let waiter = state.withLock({ state in state.closed ? nil : state.claimable(of: key) }), let claim = waiter.claim else { return nil }
        let resume = waiter.resume
        return claim.delivering { resume(.claimed($0)) }
    }

    /// Wakes everyone and parks nobody from now on (graceful shutdown).
    package func close() {
        let waking = state.withLock { state in
            state.closed = true
            state.generation &+= 1
            let waking = Array(state.parked.values)
            state.parked = [:]
            state.lines = [:]
            state.named = [:]
            state.parkedByOwner = [:]
            state.deadlines = Heap()
            return waking
        }
        for waiter in waking { waiter.resume(returning: nil) }
        sweeperWake.signal()
    }

    /// Waits until a change after generation `seen` concerning `key`, `millis` pass, or the task is
    /// cancelled.
    /// With a `claim` (its own `deliver` is not used), the coordinator may instead claim the caller for a
    /// step an append readies: the wait then ends, once that append is done, with `.claimed`.
    /// A caller with a `name` is also woken by a change that names it (`signal`'s `names`).
    package func wait(after seen: UInt64, millis: Int, owner: String, key: String = "", name: String? = nil,
              departure: (any Departure)? = nil, claim: StepClaim? = nil) async -> Outcome {
        if Task.isCancelled { return state.withLock { $0.closed } ? .closed : .cancelled(wokenBy: nil) }
        let id: UInt64
        switch admit(after: seen, owner: owner) {
        case .answer(let outcome): return outcome
        case .parkAs(let admitted): id = admitted
        }
        let deadline = ContinuousClock.now + .milliseconds(millis)
        // A caller whose client goes is resumed by the departure itself (no task waits for it).
        var departureToken: Int?
        defer { if let departureToken { departure?.withdraw(departureToken) } }
        let resumed = await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Resumed, Never>) in
                let (parkedNow, earliest) = state.withLock { state -> (Bool, Bool) in
                    // Checked again under the lock that parks: a change, a shutdown or a cancellation
                    // since the check above must not be slept through.
                    guard !Task.isCancelled else { return (false, false) }
                    // Claimed, the waiter is out of the table: only the claim's end resumes it.
                    let waiter = Waiter(owner: owner, key: key, name: name, resume: { continuation.resume(returning: $0) }, deadline: deadline,
                                        claim: claim)
                    return state.park(waiter, id: id, after: seen, parkedMax: parkedMax, parkedPerOwnerMax: parkedPerOwnerMax)
                }
                if !parkedNow { continuation.resume(returning: .signalled(nil)) }
                if parkedNow, let departure { departureToken = departure.onDeparture { [weak self] in self?.resume(id, with: nil) } }
                // The sweeper sleeps until the earliest deadline it knew: tell it of an earlier one.
                if earliest { sweeperWake.signal() }
            }
        } onCancel: {
            self.resume(id, with: nil)
        }
        let signalledAt: ContinuousClock.Instant?
        switch resumed {
        case .claimed(let end): return .claimed(end)
        case .signalled(let instant): signalledAt = instant
        }
        if state.withLock({ $0.closed }) { return .closed }
        // A change and the cancellation each take the waiter out under the lock; whichever came first
        // resumed it, so `signalledAt` says whether a change's wake was this caller's.
        if Task.isCancelled { return .cancelled(wokenBy: signalledAt) }
        return signalledAt.map { .woken(changedAt: $0) } ?? .lookAgain
    }

    /// Whether a caller that saw generation `seen` may park: its id, or the outcome to answer at once.
    private enum Admission {
        case parkAs(UInt64)
        case answer(Outcome)
    }

    private func admit(after seen: UInt64, owner: String) -> Admission {
        state.withLock { state in
            if state.closed { return .answer(.closed) }
            guard state.generation == seen else { return .answer(.lookAgain) }
            guard state.parked.count < parkedMax, state.parkedByOwner[owner, default: 0] < parkedPerOwnerMax else { return .answer(.full) }
            defer { state.nextID &+= 1 }
            return .parkAs(state.nextID)
        }
    }

    /// `wait` without a task: an entry in the table, and `then` runs once with the outcome (woken, timed
    /// out, its client gone: look again; closed), on whichever thread ends it. Returns the outcome when
    /// the caller was not parked (answer it yourself; `then` never runs), nil once it is parked.
    /// What an HTTP/2 stream on the engine parks with: a parked poll is this entry, not a task.
    /// A caller parked with a `claim` (its own `deliver` is not used) may instead be taken out by
    /// `claim(_:)`: `then` then runs once, when the claim ends, with `.claimed`.
    package func park(after seen: UInt64, millis: Int, owner: String, key: String = "", name: String? = nil, departure: (any Departure)? = nil,
                      claim: StepClaim? = nil, then: @escaping @Sendable (Outcome) -> Void) -> Outcome? {
        let id: UInt64
        switch admit(after: seen, owner: owner) {
        case .answer(let outcome): return outcome
        case .parkAs(let admitted): id = admitted
        }
        // The departure's registration, withdrawn once the entry is resumed some other way.
        let token = Mutex<Int?>(nil)
        let waiter = Waiter(owner: owner, key: key, name: name, resume: { [weak self] resumed in
            if let registered = token.withLock({ $0 }) { departure?.withdraw(registered) }
            switch resumed {
            case .claimed(let end): then(.claimed(end))
            case .signalled(let instant):
                if self?.state.withLock({ $0.closed }) ?? true { return then(.closed) }
                then(instant.map { .woken(changedAt: $0) } ?? .lookAgain)
            }
        }, deadline: .now + .milliseconds(millis), claim: claim)
        let (parked, earliest) = state.withLock { $0.park(waiter, id: id, after: seen, parkedMax: parkedMax, parkedPerOwnerMax: parkedPerOwnerMax) }
        guard parked else { return state.withLock { $0.closed } ? .closed : .lookAgain }
        if let departure {
            let registered = departure.onDeparture { [weak self] in self?.resume(id, with: nil) }
            token.withLock { $0 = registered }
        }
        if earliest { sweeperWake.signal() }
        return nil
    }

    private func resume(_ id: UInt64, with instant: ContinuousClock.Instant?) {
        state.withLock { $0.remove(id) }?.resume(returning: instant)
    }
}
