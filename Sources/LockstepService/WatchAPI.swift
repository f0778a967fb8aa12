import LockstepCore
import LockstepEngine
import LockstepStore
import LockstepWire

/// A migration's events as they are recorded: first those after the requested sequence, then live,
/// until the event that settles the migration has been sent or the caller goes away.
public struct WatchAPI: Sendable {
    package let coordinator: Coordinator
    /// Watchers park here between events (a separate pool from polls: watches are long).
    package let wakeups: Wakeups
    /// The watches open at once: a watch is admitted here, or answered `too_many_watchers`.
    package let open: OpenWatches
    /// Events read from the log per look, so at most this many are held for one watch at a time.
    package static let pageEventsMax = 256
    /// How long a watcher waits for a change before it looks again anyway, in milliseconds.
    package static let idleLookMillis = 15_000

    /// Checks the caller and the migration, then returns the migration's stored events, read from the log
    /// as the caller asks for them (the reader's pace: a watcher that stops reading stops the reads, and
    /// holds at most one page of `pageEventsMax` events). `clientGone` ends the events when the caller
    /// has gone away (checked before every read and after every wait).
    ///
    /// `whenGone` returns when the caller has gone away: a watch parked between events leaves at once then.
    /// The watch holds a place in `open` until the returned events are dropped.
    public func events(_ request: Lockstep_V1_WatchRequest, principal: Principal,
                       clientGone: @escaping @Sendable () -> Bool = { false },
                       whenGone: (@Sendable () async -> Void)? = nil) async throws(APIError) -> WatchEvents {
        if let problem = MigrationState.identifierProblem(request.migrationID, what: "migration_id") { throw APIError.invalid(problem) }
        let id = MigrationID(request.migrationID)
        guard let place = open.admit(principal.name) else {
            throw APIError(.tooManyWatchers, "too many watches are open (at most \(open.openMax), \(open.perPrincipalMax) per principal); close one or retry later")
        }
        // A settled migration is watched too: its events, then the end.
        guard try await APIError.reading({ () throws(EventLogError) in try await coordinator.readMigrationSayingArchived(id) }) != nil else {
            throw APIError(.rejected(.migrationNotFound(id)))
        }
        return WatchEvents(coordinator: coordinator, wakeups: wakeups, migration: id, owner: principal.name, place: place,
                           after: request.afterSequence, clientGone: clientGone, whenGone: whenGone)
    }

    /// `wakeups` should admit as many parked watches as `open` admits watches (a parked watch is open),
    /// so a watch is never refused for parking.
    package init(coordinator: Coordinator, wakeups: Wakeups, open: OpenWatches) {
        self.coordinator = coordinator
        self.wakeups = wakeups
        self.open = open
    }
}

/// One watch's events, pulled from the log page by page as the consumer iterates.
public struct WatchEvents: AsyncSequence, Sendable {
    public typealias Element = StoredEvent
    package let coordinator: Coordinator
    package let wakeups: Wakeups
    package let migration: MigrationID
    package let owner: String
    /// This watch's place among the open ones, given back when the last copy of these events goes.
    package let place: OpenWatches.Place
    package let after: UInt64
    package let clientGone: @Sendable () -> Bool
    package let whenGone: (@Sendable () async -> Void)?

    public func makeAsyncIterator() -> Iterator {
        Iterator(events: self, position: after)
    }

    public struct Iterator: AsyncIteratorProtocol {
        let events: WatchEvents
        var position: UInt64
        /// Events of this migration read and not yet handed out (at most one page).
        var pending: [StoredEvent] = []
        var index = 0
        var finished = false

        public mutating func next() async throws -> StoredEvent? {
            let stream = RecordedEvent.stream(of: events.migration)
            while !finished {
                if index < pending.count {
                    defer { index += 1 }
                    return pending[index]
                }
                pending.removeAll(keepingCapacity: true)
                index = 0
                if Task.isCancelled || events.clientGone() { break }
                let seen = events.wakeups.generation
                // Settled before the read means its last event is in what the read sees.
                let settled = await events.coordinator.migration(events.migration)?.status.isSettled ?? true
                let page: [StoredEvent]
                do throws(EventLogError) {
                    page = try await events.coordinator.log.read(stream: stream, after: position, limit: WatchAPI.pageEventsMax)
                } catch {
                    finished = true
                    throw APIError(.storage(error))
                }
                if let last = page.last {
                    position = last.sequence
                    pending = page
                    continue
                }
                if settled { break }
                switch await waitForChange(after: seen) {
                case .woken, .lookAgain, .claimed:
                    // (A watch parks with no claim: it is never claimed.)
                    continue
                case .cancelled:
                    finished = true
                case .full:
                    // Not while the wake-up table admits as many as `OpenWatches` does.
                    finished = true
                    throw APIError(.tooManyWatchers, "too many watches are parked; close one or retry later")
                case .closed:
                    finished = true
                    throw APIError(.shuttingDown, "the server is shutting down; watch again after it restarts")
                }
            }
            finished = true
            return nil
        }

        /// Parks until a change, the look-again timeout, or the caller going away (which ends the watch).
        private func waitForChange(after seen: UInt64) async -> Wakeups.Outcome {
            let events = self.events
            let wait: @Sendable () async -> Wakeups.Outcome = {
                await events.wakeups.wait(after: seen, millis: WatchAPI.idleLookMillis, owner: events.owner, key: events.migration.rawValue)
            }
            guard let whenGone = events.whenGone else { return await wait() }
            return await withTaskGroup(of: Wakeups.Outcome?.self) { group in
                group.addTask { await wait() }
                group.addTask {
                    await whenGone()
                    return nil
                }
                let first = await group.next() ?? nil
                group.cancelAll()
                return first ?? .cancelled(wokenBy: nil)
            }
        }
    }
}
