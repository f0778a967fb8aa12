/// The SQLite log's appends waiting for a commit, and what its writer's queue is doing: a value the log
/// keeps under its lock, which decides what each append, each batch, each end of a commit in place and
/// each piece of other work on the queue does (SQLiteEventLog.swift performs it). Generic over the
/// item, so its decisions are tested without threads (`SQLiteAppendQueueTests`).
struct SQLiteAppendQueue<Item> {
    /// The appends not yet taken into a batch, with their events.
    private(set) var queued: [(item: Item, events: Int)] = []
    private(set) var queuedEvents = 0
    private(set) var phase = Phase.idle(since: .now)
    /// Other work on the writer's queue, queued or running (snapshots, archives, a settings read):
    /// while there is any, no append commits in place, as it would wait behind that work.
    private(set) var otherWork = 0
    /// Other work that arrived during a commit in place: enqueued when it ends, so the appending
    /// thread never waits behind it.
    private(set) var otherWorkHeld: [@Sendable () -> Void] = []
    /// How long the last commit took (a failed or empty transaction only when longer; nil before the first).
    private(set) var lastCommitTook: Duration?
    /// Why writes stopped (fail-stop), nil while they go on.
    private(set) var stopped: EventLogError?

    /// What the writer's queue is doing for appends.
    enum Phase: Equatable {
        /// Nothing since the instant given: the next append starts a drain.
        case idle(since: ContinuousClock.Instant)
        /// A drain runs on the queue, and takes every append queued meanwhile.
        case draining
        /// The appending thread commits one batch on the queue; appends queued meanwhile are handed on.
        case committingInPlace
    }

    /// What an append does once it is checked.
    enum Start: Equatable {
        case refuse(EventLogError)
        /// The drain under way (or the commit in place's hand-on) takes it.
        case queued
        /// The writer's queue drains it.
        case wakeWriter
        /// The appending thread commits it (`SQLiteEventLog.Options.commitsInPlace`).
        case commitInPlace
    }

    /// An append of `events` arrives `now`: refused (writes stopped, or `limit` events already waiting),
    /// queued behind a drain, or starting one, in place when `rule` allows it, nothing else is on the
    /// writer's queue and no background checkpoint (with its fsync) is running. The clock and the
    /// checkpoint flag are read only when a drain starts and `rule` is set.
    mutating func enqueue(_ item: Item, events: Int, limit: Int, rule: SQLiteEventLog.CommitsInPlace?,
                          checkpointRunning: @autoclosure () -> Bool, now: @autoclosure () -> ContinuousClock.Instant) -> Start {
        if let stopped { return .refuse(stopped) }
        if queuedEvents + events > limit {
            return .refuse(.overloaded("\(queuedEvents) events are waiting for a commit; the limit is \(limit) events"))
        }
        queued.append((item, events))
        queuedEvents += events
        guard case .idle(let since) = phase else { return .queued }
        if let rule, otherWork == 0, !checkpointRunning(), rule.allows(idleSince: since, lastCommitTook: lastCommitTook, now: now()) {
            phase = .committingInPlace
            return .commitInPlace
        }
        phase = .draining
        return .wakeWriter
    }

    /// The next batch: the queued appends in order, up to `eventsMax` events (at least one append).
    /// None left ends a drain (`lastCommitTook` is the writer's last commit's).
    mutating func takeBatch(eventsMax: Int, lastCommitTook: Duration?, now: @autoclosure () -> ContinuousClock.Instant) -> [Item] {
        var events = 0
        var taken = 0
        for entry in queued {
            if taken > 0 && events + entry.events > eventsMax { break }
            events += entry.events
            taken += 1
        }
        let batch = queued.prefix(taken).map(\.item)
        queued.removeFirst(taken)
        queuedEvents -= events
        if batch.isEmpty && phase == .draining {
            phase = .idle(since: now())
            self.lastCommitTook = lastCommitTook
        }
        return batch
    }

    /// A commit in place ended: the drain is handed on to the writer's queue when appends were queued
    /// meanwhile or a checkpoint is due (`handOn`), else the writer is idle from `now`. Other work held
    /// meanwhile is returned (`held`), to be enqueued now.
    mutating func endCommitInPlace(checkpointDue: Bool, lastCommitTook: Duration?, now: ContinuousClock.Instant)
        -> (handOn: Bool, held: [@Sendable () -> Void]) {
        let held = otherWorkHeld
        otherWorkHeld = []
        self.lastCommitTook = lastCommitTook
        if checkpointDue || !queued.isEmpty {
            phase = .draining
            return (true, held)
        }
        phase = .idle(since: now)
        return (false, held)
    }

    /// Other work for the writer's queue arrives: returned to be enqueued now, or nil when held until
    /// the commit in place under way ends (`endCommitInPlace`).
    mutating func otherWorkArrives(_ work: @escaping @Sendable () -> Void) -> (@Sendable () -> Void)? {
        otherWork += 1
        guard phase == .committingInPlace else { return work }
        otherWorkHeld.append(work)
        return nil
    }

    /// Other work on the writer's queue ended.
    mutating func otherWorkEnded() { otherWork -= 1 }

    /// Fail-stop: every queued append is returned, to be refused with `failure`; later ones are refused.
    mutating func stop(_ failure: EventLogError) -> [Item] {
        if stopped == nil { stopped = failure }
        defer {
            queued.removeAll()
            queuedEvents = 0
        }
        return queued.map(\.item)
    }
}
