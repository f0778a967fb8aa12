import LockstepCore
import LockstepEngine
import LockstepWire

extension AgentAPI {
    /// Largest agent request a transport handles on its event loop, in bytes: the protobuf message on
    /// gRPC (without its 5-byte frame prefix), the body on the JSON port's HTTP/2. An agent's call is a
    /// few dozen bytes; a larger one is decoded off the loop (in a task, by the route or GRPCCore's
    /// handler), with the same answer, so no request holds a loop for a long decode.
    package static let agentRequestBytesOnLoopMax = 4_096

    /// Whether a request runs on its connection's event loop: an agent's call (poll, heartbeat, progress,
    /// complete, fail) whose request is at most `agentRequestBytesOnLoopMax` bytes. Every other request, and an
    /// agent's larger one, runs on Swift's global executor, holding no loop. The one rule both transports
    /// apply (`GRPCAgentService.runsOnLoop`, `JSONOnEngine.runsOnLoop`, and the polls each answers with no
    /// task at all), each saying what an agent's call is. (JSON over HTTP/1.1 is Hummingbird's, not the engine's.)
    package static func runsOnLoop(agentCall: Bool, requestBytes: Int) -> Bool {
        agentCall && requestBytes <= agentRequestBytesOnLoopMax
    }

    /// Hands a piece of a poll's work to whoever runs it (its connection's or transport's task group,
    /// through the `PollLane`); runs `dropped` instead when that no longer takes work (it is closing), or
    /// `overflowed` when the lane's waiting line is full.
    package typealias PollRun = @Sendable (_ work: @escaping @Sendable () async -> Void, _ dropped: @escaping @Sendable () -> Void,
                                           _ overflowed: @escaping @Sendable () -> Void) -> Void

    /// How a driven poll ends: its answer (a step, or `retryLater`), or the error it is refused with.
    package typealias PollEnd = @Sendable (Result<Lockstep_V1_PollResponse, APIError>) -> Void

    /// The first look of a poll served from an event loop (the JSON port's HTTP/2, gRPC), with no hop
    /// (`lookAtOnce`), made before anything a waiting poll needs is allocated (its departure signal, its
    /// closures): most polls that find nothing have no wait left (`wait_ms` 0) and are answered here.
    /// The answer, with the poll ended; or nil, and the poll goes on with `drive(_:after:...)` given `found`.
    package func answerAtOnce(_ poll: inout PollCursor, found: inout PollLook?) -> Lockstep_V1_PollResponse? {
        found = lookAtOnce(&poll)
        guard case .answer(let response)? = found else { return nil }
        endPoll(poll)
        return response
    }

    /// Drives a poll to its end without a task while it waits, after its first look (`answerAtOnce`)
    /// found `found`: a poll whose service may have a step (nil; `StepServices`) looks at the coordinator as a piece of work given
    /// to `run`; a poll with nothing to lease parks as an entry in the wakeup table (`Wakeups.park`),
    /// holding `end`, until a change, its deadline, its client going (`departure`, checked with `gone`) or
    /// shutdown resumes it, and it looks again as new work or ends with `retryLater`. `end` is called
    /// once, from any thread.
    package func drive(_ poll: PollCursor, after found: PollLook?, gone: @escaping @Sendable () -> Bool, departure: (any Departure)?,
                       run: @escaping PollRun, end: @escaping PollEnd) {
        guard let found else { return lookLater(poll, gone: gone, departure: departure, run: run, end: end) }
        settle(poll, found, gone: gone, departure: departure, run: run, end: end)
    }

    /// A look at the coordinator (as a piece of work): the poll ends, or parks, or looks again.
    private func look(_ start: PollCursor, gone: @escaping @Sendable () -> Bool, departure: (any Departure)?, run: @escaping PollRun,
                      end: @escaping PollEnd) async {
        var poll = start
        guard !gone() else {
            endPoll(poll)
            return end(.success(retryLater))
        }
        let found: PollLook
        do throws(APIError) {
            found = try await look(&poll, clientGone: gone)
        } catch {
            endPoll(poll)
            return end(.failure(error))
        }
        settle(poll, found, gone: gone, departure: departure, run: run, end: end)
    }

    /// What a look found: the answer ends the poll; a park waits in the wakeup table and, when it is
    /// resumed, looks again (or ends with `retryLater`).
    private func settle(_ poll: PollCursor, _ found: PollLook, gone: @escaping @Sendable () -> Bool, departure: (any Departure)?,
                        run: @escaping PollRun, end: @escaping PollEnd) {
        switch found {
        case .answer(let response):
            endPoll(poll)
            end(.success(response))
            answered(poll)
        case .park(let seen, let millis):
            // One closure per parked poll, which a claim's end reaches too (`Wakeups.Outcome.claimed`): a
            // parked poll is held in memory until it is resumed, by the hundred thousand (docs/benchmarks.md).
            let now = wakeups.park(after: seen, millis: millis, owner: poll.owner, key: poll.service, name: poll.parkName, departure: departure,
                                   claim: stepClaim(for: poll)) { outcome in
                resumeParked(poll, outcome, gone: gone, departure: departure, run: run, end: end)
            }
            // Parked: nothing runs until it is resumed; otherwise the outcome came at once.
            if let now { resumeParked(poll, now, gone: gone, departure: departure, run: run, end: end) }
        }
    }

    /// A parked poll resumed. Leased the step an append readied, in that append (`Wakeups.claim`): it is
    /// answered with the step, or gives the step back at once when its client went meanwhile. Otherwise
    /// (woken, its deadline, claimed but not leased) it looks again as a woken poll, or ends.
    private func resumeParked(_ poll: PollCursor, _ outcome: Wakeups.Outcome, gone: @escaping @Sendable () -> Bool, departure: (any Departure)?,
                              run: @escaping PollRun, end: @escaping PollEnd) {
        var cursor = poll
        guard case .claimed(.leased(let leased)) = outcome else {
            let again = resumed(&cursor, outcome)
            return continueWith(cursor, lookAgain: again, gone: gone, departure: departure, run: run, end: end)
        }
        guard !gone() else {
            // Its connection is likely closing and takes no more work: then the step is given back from a
            // task of its own (one command), not left to expire.
            let giveBack = { @Sendable in await self.giveBack(leased.lease, migration: leased.migration, principal: poll.principal) }
            // Should its connection take no work, or the lane have no room: from a task of its own.
            let alone: @Sendable () -> Void = { Task { await giveBack() } }
            run(giveBack, alone, alone)
            return end(.success(retryLater))
        }
        end(.success(answer(&cursor, claimed: leased)))
        answered(cursor)
    }

    private func continueWith(_ poll: PollCursor, lookAgain: Bool, gone: @escaping @Sendable () -> Bool, departure: (any Departure)?,
                              run: @escaping PollRun, end: @escaping PollEnd) {
        guard lookAgain else {
            endPoll(poll)
            return end(.success(retryLater))
        }
        // Where it was woken, when that needs no hop (its service has no step: nobody holds it, or its
        // step is leased): no work queued for it.
        var cursor = poll
        if !gone(), let found = lookAtOnce(&cursor) { return settle(cursor, found, gone: gone, departure: departure, run: run, end: end) }
        lookLater(poll, gone: gone, departure: departure, run: run, end: end)
    }

    private func lookLater(_ poll: PollCursor, gone: @escaping @Sendable () -> Bool, departure: (any Departure)?, run: @escaping PollRun,
                           end: @escaping PollEnd) {
        run({
            await look(poll, gone: gone, departure: departure, run: run, end: end)
        }, {
            // Nobody will read the answer; a wake it holds goes on.
            endPoll(poll)
        }, {
            // Too many polls wait to look: this one is answered as one that found nothing, and a wake it
            // holds is not passed on (`endPoll`): the next parked poll would resume here, find the line
            // as full and pass it on again, through every poll parked on the service in one call stack.
            // Its agent retries after `retry_after_ms` and looks for itself.
            end(.success(retryLater))
        })
    }
}
