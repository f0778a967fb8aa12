import HeapModule
import LockstepEngine

// The wake-up table's parts (`Wakeups` holds them under one lock): a parked caller, the lines of
// callers per key, the index of named callers, the deadlines, and how a waiting task was resumed.
extension Wakeups {
    /// A parked caller. A class: the table's dictionary keeps at least a quarter of its slots empty, and
    /// with the entry itself in each slot (about 200 bytes with its claim) that slack alone cost about
    /// 0.3 KB per parked poll at 100,000 (262,144 slots).
    final class Waiter: Sendable {
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

        init(owner: String, key: String, name: String?, resume: @escaping @Sendable (Resumed) -> Void, deadline: ContinuousClock.Instant,
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

    struct Deadline: Comparable {
        let at: ContinuousClock.Instant
        let id: UInt64
        static func < (lhs: Deadline, rhs: Deadline) -> Bool { (lhs.at, lhs.id) < (rhs.at, rhs.id) }
    }

    /// Callers parked on one key, longest-parked first. Ids of callers that left (timed out, cancelled)
    /// stay until they reach the front or the queue is compacted.
    struct Line {
        var ids: [UInt64] = []
        var head = 0
        var live = 0
    }

    /// A named caller's key and name (`Waiter.name`).
    struct Named: Hashable {
        let key: String
        let name: String
    }

    struct State {
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

        /// Parks `waiter` as `id` when nothing changed since `seen`, the server is open and the limits
        /// allow; returns whether it parked, and whether its deadline is now the earliest.
        mutating func park(_ waiter: Waiter, id: UInt64, after seen: UInt64, parkedMax: Int, parkedPerOwnerMax: Int) -> (parked: Bool, earliest: Bool) {
            // Checked again under the lock that parks: a change, a shutdown or a cancellation since the
            // first check must not be slept through; the limits too (the first check was under another).
            guard !closed, generation == seen else { return (false, false) }
            guard parked.count < parkedMax, parkedByOwner[waiter.owner, default: 0] < parkedPerOwnerMax else { return (false, false) }
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
            if let name = waiter.name {
                let entry = Named(key: waiter.key, name: name)
                if named[entry] == id { named[entry] = nil }
            }
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

    /// How a waiting task was resumed: by a change, its deadline, its client, cancellation or shutdown
    /// (`signalled`, with the change's instant when a change woke it), or by the end of a claim.
    enum Resumed {
        case signalled(ContinuousClock.Instant?)
        case claimed(StepClaimEnd)
    }
}
