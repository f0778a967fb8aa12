import DequeModule
import Hummingbird
import LockstepService
import Synchronization
import LockstepWire
import Metrics

/// `POST /v1/agent/poll` on the engine (the JSON port's HTTP/2) without a task while it is parked: the
/// same checks and answers as the route (`HTTPRoutes.gate`: the `--dev` browser refusal, authentication,
/// the principal's roles, the body's checks, the errors and the request timer), but a poll with nothing
/// to lease is an entry in the wakeup table (`Wakeups.park`) holding its stream's answer, and only when
/// it is woken (a change, its deadline, its stream closing, shutdown) does it run again, as a new piece of
/// its connection's work. A parked poll costs its cursor and the table's entry, not a task's frames.
///
/// A class: every closure a parked poll keeps captures one reference to it, not a copy of the routes.
package final class EnginePoll: Sendable {
    /// Hands a piece of a poll's work to its connection; runs the second closure instead when that
    /// connection is closing (the work was dropped).
    package typealias Run = @Sendable (_ work: @escaping @Sendable () async -> Void, _ dropped: @escaping @Sendable () -> Void) -> Void

    let routes: HTTPRoutes
    let timer: Metrics.Timer
    /// Polls looking at the coordinator at once, over every connection (`PollLane`).
    package let lane: PollLane

    package init(routes: HTTPRoutes, looksInFlightMax: Int = 256) {
        self.routes = routes
        timer = routes.metrics.request(APIOperation.poll.name, transport: "http")
        lane = PollLane(limit: looksInFlightMax)
    }

    /// Whether `path` (query included) is the poll route's.
    package static func serves(method: String, path: String) -> Bool {
        method == "POST" && path.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first == APIOperation.poll.path[...]
    }

    /// Serves one poll: `run` queues more work on the connection (through the lane), `answer` writes the
    /// response.
    package func serve(_ request: Request, context: LockstepRequestContext, run: @escaping Run,
                       answer: @escaping @Sendable (Response) async -> Void) async {
        let began = ContinuousClock.now
        let finish: @Sendable (Response) async -> Void = { [timer] response in
            timer.record(duration: ContinuousClock.now - began)
            await answer(response)
        }
        if routes.refuseBrowsers, request.headers[.origin] != nil {
            return await finish(routes.errorResponse(HTTPRoutes.browserRefusal))
        }
        let poll: AgentAPI.PollCursor
        do throws(APIError) {
            let principal = try await routes.admit(request, context, to: .poll)
            let input: Lockstep_V1_PollRequest = try await routes.decode(request)
            poll = try routes.agents.beginPoll(input, principal: principal)
        } catch {
            return await finish(routes.refusal(error))
        }
        let (presence, gone) = await context.presence()
        await look(poll, gone: gone, presence: presence, run: run, finish: finish)
    }

    /// One look: the poll is answered, or parks (and comes back here as new work when it is resumed),
    /// or, when something changed since it looked, looks again as new work: a poll never keeps its
    /// place in the lane across looks, so the places go round.
    private func look(_ start: AgentAPI.PollCursor, gone: @escaping @Sendable () -> Bool, presence: ClientPresence?,
                      run: @escaping Run, finish: @escaping @Sendable (Response) async -> Void) async {
        var poll = start
        guard !gone() else {
            routes.agents.endPoll(poll)
            return await finish(routes.json(routes.agents.retryLater, status: .ok))
        }
        let found: AgentAPI.PollLook
        do throws(APIError) {
            found = try await routes.agents.look(&poll, clientGone: gone)
        } catch {
            routes.agents.endPoll(poll)
            return await finish(routes.refusal(error))
        }
        switch found {
        case .answer(let response):
            routes.agents.endPoll(poll)
            await finish(routes.json(response, status: .ok))
        case .park(let seen, let millis):
            let parked = poll
            let now = routes.agents.wakeups.park(after: seen, millis: millis, owner: parked.owner, key: parked.service, departure: presence) {
                [self] outcome in
                var cursor = parked
                let again = routes.agents.resumed(&cursor, outcome)
                continueWith(cursor, lookAgain: again, gone: gone, presence: presence, run: run, finish: finish)
            }
            // Parked: this work ends here; otherwise the outcome came at once.
            if let now {
                let again = routes.agents.resumed(&poll, now)
                continueWith(poll, lookAgain: again, gone: gone, presence: presence, run: run, finish: finish)
            }
        }
    }

    /// After a wait: look again, or answer `retryLater`, as a new piece of the connection's work.
    private func continueWith(_ poll: AgentAPI.PollCursor, lookAgain: Bool, gone: @escaping @Sendable () -> Bool, presence: ClientPresence?,
                              run: @escaping Run, finish: @escaping @Sendable (Response) async -> Void) {
        run({ [self] in
            if lookAgain {
                await look(poll, gone: gone, presence: presence, run: run, finish: finish)
            } else {
                routes.agents.endPoll(poll)
                await finish(routes.json(routes.agents.retryLater, status: .ok))
            }
        }, { [self] in
            // Its connection is closing: nobody will read the answer; a wake it holds goes on.
            routes.agents.endPoll(poll)
        })
    }
}

/// At most `limit` pieces of poll work run at once over all connections; the rest wait here as closures,
/// in arrival order, each handed to its own connection when a place frees. A burst of polls (100,000
/// agents arriving within a second) then costs closures while it waits for the coordinator, which takes
/// one look at a time anyway, not a task each: at that peak a task in flight held about 20 KB, and the
/// allocator kept that RSS after the polls had parked (docs/benchmarks.md).
package final class PollLane: Sendable {
    private struct Waiting: Sendable {
        let work: @Sendable () async -> Void
        /// Hands the (wrapped) work to its connection; false when the connection no longer takes work.
        let deliver: @Sendable (@escaping @Sendable () async -> Void) -> Bool
        let dropped: @Sendable () -> Void
    }

    private struct State {
        var running = 0
        var waiting = Deque<Waiting>()
    }

    private let state = Mutex(State())
    package let limit: Int

    package init(limit: Int) { self.limit = max(1, limit) }

    /// Pieces of work waiting for a place (for tests and metrics).
    package var waitingCount: Int { state.withLock { $0.waiting.count } }
    package var runningCount: Int { state.withLock { $0.running } }

    package func submit(_ work: @escaping @Sendable () async -> Void, deliver: @escaping @Sendable (@escaping @Sendable () async -> Void) -> Bool,
                        dropped: @escaping @Sendable () -> Void) {
        let item = Waiting(work: work, deliver: deliver, dropped: dropped)
        let now = state.withLock { state -> Bool in
            guard state.running < limit else {
                state.waiting.append(item)
                return false
            }
            state.running += 1
            return true
        }
        if now { start(item) }
    }

    /// Runs `item` in the place it holds; when its connection takes no more work, the place goes to the
    /// next waiting item.
    private func start(_ item: Waiting) {
        var next: Waiting? = item
        while let current = next {
            if current.deliver({ [self] in
                await current.work()
                finished()
            }) { return }
            current.dropped()
            next = handOn()
        }
    }

    private func finished() {
        if let next = handOn() { start(next) }
    }

    /// The next waiting item keeps the place that freed; none waiting: the place is given back.
    private func handOn() -> Waiting? {
        state.withLock { state in
            if let next = state.waiting.popFirst() { return next }
            state.running -= 1
            return nil
        }
    }
}
