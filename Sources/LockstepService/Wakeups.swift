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
/// the policy, a named poll whose service's running lease carries its name (`signalSteps`). A woken poll that leaves without having looked must `passOn` its wake. Waking one instead of all keeps N agents of a service from all racing to one
/// step and all but one parking again (a thundering herd that cost about 4× in wake-up latency p99).
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

    /// A parked caller. A class: the table's dictionary keeps at least a quarter of its slots empty, and
    /// with the entry itself in each slot (about 200 bytes with its claim) that slack alone cost about
    /// 0.3 KB per parked poll at 100,000 (262,144 slots).
    private final class Waiter: Sendable {
        let owner: String
        let key: String
        /// The name it is also woken by (`signal`'s `names`): a named poll that may get back, under its
        /// name, a lease an earlier send of it took. Nil for every other caller.
        let name: String?
        /// Resumes the caller, signalled or claimed: a waiting task's continuation, or a parked entry's
        /// callback (`park`).
        let resume: @Sendable (Resumed) -> Void
        let deadline: ContinuousClock.Instant
        /// How a parked poll is leased a step in the append that readies it (`claim`), nil: it is only woken.
        /// Its own `deliver` is not used: `claim(_:)` hands over one that resumes this caller, made then,
        /// so a parked poll holds no closure for a claim that may never come.
        let claim: StepClaim?

        init(owner: String, key: String, name: String? = nil, resume: @escaping @Sendable (Resumed) -> Void, deadline: ContinuousClock.Instant,
             claim: StepClaim? = nil) {
            self.owner = owner
            self.key = key
            self.name = name
            self.resume = resume
            self.deadline = deadline
            self.claim = claim
        }

        func resume(returning instant: ContinuousClock.Instant?) {
            resume(.signalled(instant))
        }
    }

    private struct Deadline: Comparable {
        let at: ContinuousClock.Instant
        let id: UInt64
        static func < (lhs: Deadline, rhs: Deadline) -> Bool { (lhs.at, lhs.id) < (rhs.at, rhs.id) }
    }

    /// Callers parked on one key, longest-parked first. Ids of callers that left (timed out, cancelled)
    /// stay until they reach the front or the queue is compacted.
    private struct Line {
        var ids: [UInt64] = []
        var head = 0
        var live = 0
    }

    /// A named caller's key and name (`Waiter.name`).
    private struct Named: Hashable {
        let key: String
        let name: String
    }

    private struct State {
        var generation: UInt64 = 0
        var parked: [UInt64: Waiter] = [:]
        var lines: [String: Line] = [:]
        /// The named callers parked, by key and name: at most one entry per parked caller. Of two parked
        /// with the same key and name (a poll sent three times, the first two still parked), the newest
        /// is here; should it leave first, the older is woken by its key only.
        var named: [Named: UInt64] = [:]
        /// Every parked caller's deadline; entries of callers that left are dropped when they come up,
        /// or all at once when they outnumber the parked callers (so it stays about twice their count).
        var deadlines = Heap<Deadline>()
        var parkedByOwner: [String: Int] = [:]
        var nextID: UInt64 = 0
        var closed = false

        /// Parks `waiter` as `id` when nothing changed since `seen`, the server is open and (`enforceLimit`)
        /// the limits allow; returns whether it parked, and whether its deadline is now the earliest.
        mutating func park(_ waiter: Waiter, id: UInt64, after seen: UInt64, enforceLimit: Bool, parkedMax: Int, parkedPerOwnerMax: Int) -> (parked: Bool, earliest: Bool) {
            // Checked again under the lock that parks: a change, a shutdown or a cancellation since the
            // first check must not be slept through; the limits too (the first check was under another).
            guard !closed, generation == seen else { return (false, false) }
            if enforceLimit {
                guard parked.count < parkedMax, parkedByOwner[waiter.owner, default: 0] < parkedPerOwnerMax else { return (false, false) }
            }
            let earliest = deadlines.min.map { waiter.deadline < $0.at } ?? true
            parked[id] = waiter
            parkedByOwner[waiter.owner, default: 0] += 1
            lines[waiter.key, default: Line()].ids.append(id)
            lines[waiter.key, default: Line()].live += 1
            if let name = waiter.name { named[Named(key: waiter.key, name: name)] = id }
            deadlines.insert(Deadline(at: waiter.deadline, id: id))
            return (true, earliest)
        }

        mutating func remove(_ id: UInt64) -> Waiter? {
            guard let waiter = parked.removeValue(forKey: id) else { return nil }
            parkedByOwner[waiter.owner, default: 1] -= 1
            if parkedByOwner[waiter.owner] == 0 { parkedByOwner[waiter.owner] = nil }
            lines[waiter.key]?.live -= 1
            if let name = waiter.name, named[Named(key: waiter.key, name: name)] == id { named[Named(key: waiter.key, name: name)] = nil }
            if let line = lines[waiter.key] {
                if line.live == 0 {
                    lines[waiter.key] = nil
                } else if line.ids.count - line.head > 2 * line.live + 64 {
                    // Mostly departed callers: compact, so a line is bounded by about twice its live callers.
                    lines[waiter.key] = Line(ids: line.ids[line.head...].filter { parked[$0] != nil }, head: 0, live: line.live)
                }
            }
            // The deadlines of callers that left early stay in the heap until they come up (the sweeper
            // sleeps until the earliest): compact when they outnumber the live ones, so the heap is
            // bounded by about twice the parked callers (amortized: a rebuild follows 1,024 departures at least).
            if deadlines.count > 2 * parked.count + 1_024 {
                deadlines = Heap(parked.map { Deadline(at: $0.value.deadline, id: $0.key) })
            }
            return waiter
        }

        /// Removes and returns the longest-parked caller of `key`, if any.
        mutating func oldest(of key: String) -> Waiter? {
            guard let id = front(of: key) else { return nil }
            dropFront(of: key)
            return remove(id)
        }

        /// Removes and returns the longest-parked caller of `key` when it can be claimed (nil: none is
        /// parked, or the longest-parked one can only be woken, and keeps its place).
        mutating func claimable(of key: String) -> Waiter? {
            guard let id = front(of: key), parked[id]?.claim != nil else { return nil }
            dropFront(of: key)
            return remove(id)
        }

        /// The longest-parked caller of `key` still parked, the callers that left before it dropped from
        /// the front of its line (nil: none is parked).
        private mutating func front(of key: String) -> UInt64? {
            while let line = lines[key], line.head < line.ids.count {
                let id = line.ids[line.head]
                if parked[id] != nil { return id }
                dropFront(of: key)
            }
            return nil
        }

        /// Moves `key`'s line past its front id; once over 1,024 ids, and half of the line, are behind
        /// its head, they are dropped.
        private mutating func dropFront(of key: String) {
            guard var line = lines.removeValue(forKey: key) else { return }
            line.head += 1
            if line.head > 1_024 && line.head * 2 > line.ids.count {
                line.ids.removeFirst(line.head)
                line.head = 0
            }
            lines[key] = line
        }

        /// Removes and returns the callers whose deadline is at or before `now`.
        mutating func due(at now: ContinuousClock.Instant) -> [Waiter] {
            var due: [Waiter] = []
            while let next = deadlines.min, next.at <= now {
                deadlines.removeMin()
                if let waiter = remove(next.id) { due.append(waiter) }
            }
            return due
        }

        /// Removes and returns the caller parked on `key` under `name`, if any.
        mutating func named(_ name: String, of key: String) -> Waiter? {
            guard !named.isEmpty, let id = named[Named(key: key, name: name)] else { return nil }
            return remove(id)
        }

        mutating func all(of key: String) -> [Waiter] {
            guard let line = lines[key] else { return [] }
            return line.ids[line.head...].compactMap { remove($0) }
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
    /// caller parked on each of `names`' keys under its name (whatever the policy). `at` is when the
    /// change happened (its append's commit ended), which each woken caller is told (`Outcome.woken`).
    package func signal(_ keys: Set<String>, names: [(key: String, name: String)] = [], at changed: ContinuousClock.Instant = .now) {
        let waking = state.withLock { state in
            state.generation &+= 1
            var waking = keys.flatMap { key -> [Waiter] in
                switch policy {
                case .everyone: state.all(of: key)
                case .oldest: state.oldest(of: key).map { [$0] } ?? []
                }
            }
            for (key, name) in names {
                if let waiter = state.named(name, of: key) { waking.append(waiter) }
            }
            return waking
        }
        for waiter in waking { waiter.resume(returning: changed) }
    }

    /// A change folded into the coordinator's state (its commit ended at `committedAt`), told to parked
    /// polls: the longest-parked poll of each of its services that may have a step now (`stepServices`,
    /// published before the change is told) is woken. A poll of any other service would look, find
    /// nothing and park again at the back of its line; and a poll waiting as a task would still be on
    /// its way back when the grant that follows a start came to claim it (`claim`).
    ///
    /// So is a named poll parked under the name the running lease of one of its services carries: a
    /// poll sent again while its first send's lease was being committed, which found no lease under its
    /// name then (docs/api.md, `poll_id`). It looks again and gets the lease back; without this wake it
    /// waited out its wait, as the lease's own commit leaves the service with no step and wakes nobody.
    package func signalSteps(of change: Coordinator.Change, committedAt: ContinuousClock.Instant, stepServices: StepServices) {
        let published = stepServices.wakeable(change.services)
        signal(published.steps, names: published.leaseNames, at: committedAt)
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
    /// cancelled. `enforceLimit: false` lets a caller already admitted (a watch re-parking) past the limits.
    /// With a `claim` (its own `deliver` is not used), the coordinator may instead claim the caller for a
    /// step an append readies: the wait then ends, once that append is done, with `.claimed`.
    /// A caller with a `name` is also woken by a change that names it (`signal`'s `names`).
    package func wait(after seen: UInt64, millis: Int, owner: String, key: String = "", name: String? = nil, enforceLimit: Bool = true,
              departure: (any Departure)? = nil, claim: StepClaim? = nil) async -> Outcome {
        if Task.isCancelled { return state.withLock { $0.closed } ? .closed : .cancelled(wokenBy: nil) }
        let id: UInt64
        switch admit(after: seen, owner: owner, enforceLimit: enforceLimit) {
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
                    return state.park(waiter, id: id, after: seen, enforceLimit: enforceLimit, parkedMax: parkedMax, parkedPerOwnerMax: parkedPerOwnerMax)
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

    /// How a waiting task was resumed: by a change, its deadline, its client, cancellation or shutdown
    /// (`signalled`, with the change's instant when a change woke it), or by the end of a claim.
    private enum Resumed {
        case signalled(ContinuousClock.Instant?)
        case claimed(StepClaimEnd)
    }

    /// Whether a caller that saw generation `seen` may park: its id, or the outcome to answer at once.
    private enum Admission {
        case parkAs(UInt64)
        case answer(Outcome)
    }

    private func admit(after seen: UInt64, owner: String, enforceLimit: Bool) -> Admission {
        state.withLock { state in
            if state.closed { return .answer(.closed) }
            guard state.generation == seen else { return .answer(.lookAgain) }
            if enforceLimit {
                guard state.parked.count < parkedMax, state.parkedByOwner[owner, default: 0] < parkedPerOwnerMax else { return .answer(.full) }
            }
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
        switch admit(after: seen, owner: owner, enforceLimit: true) {
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
        let (parked, earliest) = state.withLock { $0.park(waiter, id: id, after: seen, enforceLimit: true, parkedMax: parkedMax, parkedPerOwnerMax: parkedPerOwnerMax) }
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
