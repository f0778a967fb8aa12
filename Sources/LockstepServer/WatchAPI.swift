import LockstepCore
import LockstepEngine
import LockstepStore
import LockstepWire

/// A migration's events as they are recorded: first those after the requested sequence, then live,
/// until the event that settles the migration has been sent or the caller goes away.
public struct WatchAPI: Sendable {
    let coordinator: Coordinator
    /// Watchers park here between events (a separate pool from polls: watches are long).
    let wakeups: Wakeups
    /// Events read per page while catching up.
    static let pageEventsMax = 1_000
    /// How long a watcher waits for a change before it looks again anyway, in milliseconds.
    static let idleLookMillis = 15_000

    /// Checks the caller and the migration, then returns the stream of its stored events.
    /// `clientGone` ends the stream when the caller has gone away (checked after every wait).
    public func events(_ request: Lockstep_V1_WatchRequest, principal: Principal,
                       clientGone: @escaping @Sendable () -> Bool = { false }) async throws(APIError) -> AsyncThrowingStream<StoredEvent, any Error> {
        try principal.require(anyOf: OperatorAPI.readers, to: "watch migrations")
        let id = MigrationID(request.migrationID)
        guard await coordinator.migration(id) != nil else { throw APIError(.rejected(.migrationNotFound(id))) }
        let coordinator = self.coordinator
        let wakeups = self.wakeups
        let stream = RecordedEvent.stream(of: id)
        return AsyncThrowingStream { continuation in
            let task = Task {
                var position = request.afterSequence
                // The limits admit a watch once; re-parking after each event does not count again.
                var admitted = false
                while !Task.isCancelled && !clientGone() {
                    let seen = wakeups.generation
                    // Settled before the read means its last event is in what the read sees.
                    let settled = await coordinator.migration(id)?.status.isSettled ?? true
                    let page: [StoredEvent]
                    do throws(EventLogError) {
                        page = try await coordinator.log.read(after: position, limit: Self.pageEventsMax)
                    } catch {
                        continuation.finish(throwing: APIError(.storage(error)))
                        return
                    }
                    for stored in page where stored.stream == stream { continuation.yield(stored) }
                    if let last = page.last {
                        position = last.sequence
                        continue
                    }
                    if settled { break }
                    let outcome = await wakeups.wait(after: seen, millis: Self.idleLookMillis, owner: principal.name, key: id.rawValue,
                                                      enforceLimit: !admitted)
                    admitted = true
                    switch outcome {
                    case .woken, .lookAgain:
                        continue
                    case .cancelled:
                        break
                    case .full:
                        continuation.finish(throwing: APIError(.overloaded, code: "too_many_watchers", "too many watches are open; close one or retry later"))
                        return
                    case .closed:
                        continuation.finish(throwing: APIError(.unavailable, code: "shutting_down", "the server is shutting down; watch again after it restarts"))
                        return
                    }
                }
                continuation.finish()
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }
}
