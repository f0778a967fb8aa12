import Hummingbird
import LockstepService
import LockstepWire
import Metrics

/// `POST /v1/agent/poll` on the engine (the JSON port's HTTP/2) without a task while it is parked: the
/// same checks and answers as the route (`HTTPRoutes.gate`: the `--dev` browser refusal, authentication,
/// the principal's roles, the body's checks, the errors and the request timer), but a poll with nothing
/// to lease is an entry in the wakeup table (`Wakeups.park`) holding its stream's answer, and only when
/// it is woken (a change, its deadline, its stream closing, shutdown) does it run again, as a new piece of
/// its connection's work. A parked poll costs its cursor and the table's entry, not a task's frames.
package struct EnginePoll: Sendable {
    let routes: HTTPRoutes
    let timer: Metrics.Timer

    package init(routes: HTTPRoutes) {
        self.routes = routes
        timer = routes.metrics.request(APIOperation.poll.name, transport: "http")
    }

    /// Whether `path` (query included) is the poll route's.
    package static func serves(method: String, path: String) -> Bool {
        method == "POST" && path.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first == APIOperation.poll.path[...]
    }

    /// Serves one poll: `run` queues more work on the connection (false once it is closing), `answer`
    /// writes the response.
    package func serve(_ request: Request, context: LockstepRequestContext, run: @escaping @Sendable (@escaping @Sendable () async -> Void) -> Bool,
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
            let principal = try await routes.authenticate(request, context.channel)
            try principal.require(.poll)
            let input: Lockstep_V1_PollRequest = try await routes.decode(request)
            poll = try routes.agents.beginPoll(input, principal: principal)
        } catch {
            routes.metrics.record(error)
            return await finish(routes.errorResponse(error))
        }
        let (presence, gone) = await context.presence()
        await look(poll, gone: gone, presence: presence, run: run, finish: finish)
    }

    /// Looks until the poll is answered or parks; a parked poll comes back here when it is resumed.
    private func look(_ start: AgentAPI.PollCursor, gone: @escaping @Sendable () -> Bool, presence: ClientPresence?,
                      run: @escaping @Sendable (@escaping @Sendable () async -> Void) -> Bool,
                      finish: @escaping @Sendable (Response) async -> Void) async {
        let agents = routes.agents
        var poll = start
        while !gone() {
            let found: AgentAPI.PollLook
            do throws(APIError) {
                found = try await agents.look(&poll, clientGone: gone)
            } catch {
                agents.endPoll(poll)
                routes.metrics.record(error)
                return await finish(routes.errorResponse(error))
            }
            switch found {
            case .answer(let response):
                agents.endPoll(poll)
                return await finish(routes.json(response, status: .ok))
            case .park(let seen, let millis):
                let parked = poll
                let now = agents.wakeups.park(after: seen, millis: millis, owner: parked.owner, key: parked.service, departure: presence) { outcome in
                    var cursor = parked
                    let again = agents.resumed(&cursor, outcome)
                    let resumed = cursor
                    let queued = run {
                        if again {
                            await look(resumed, gone: gone, presence: presence, run: run, finish: finish)
                        } else {
                            agents.endPoll(resumed)
                            await finish(routes.json(agents.retryLater, status: .ok))
                        }
                    }
                    // Its connection is closing: nobody will read the answer; a wake it holds goes on.
                    if !queued { agents.endPoll(resumed) }
                }
                guard let now else { return }  // parked: this work ends here
                guard agents.resumed(&poll, now) else {
                    agents.endPoll(poll)
                    return await finish(routes.json(agents.retryLater, status: .ok))
                }
            }
        }
        agents.endPoll(poll)
        await finish(routes.json(agents.retryLater, status: .ok))
    }
}
