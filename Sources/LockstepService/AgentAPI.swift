import LockstepCore
import LockstepEngine
import LockstepWire

/// Limits of the API, with their units in the names.
public struct APILimits: Hashable, Sendable {
    /// Largest request body, in bytes.
    public var requestBodyBytesMax = 1 << 20
    /// Longest a poll may wait, in milliseconds (longer requests are capped to it).
    public var pollWaitMillisMax: UInt32 = 30_000
    /// Most polls parked at once.
    public var parkedPollsMax = 10_000
    /// Most polls one principal may have parked at once.
    public var parkedPollsPerPrincipalMax = 1_000
    /// Most concurrent gRPC streams per connection.
    public var grpcConcurrentStreamsMax = 256
    /// Most watches open at once, and per principal.
    public var watchesMax = 1_000
    public var watchesPerPrincipalMax = 100
    /// The delay suggested to a poll answered with nothing, in milliseconds.
    public var pollRetryAfterMillis: UInt32 = 1_000
    /// The step lease TTL when the node's plan sets no `timeouts.heartbeat`, in milliseconds.
    public var defaultLeaseTTLMillis: Int64 = 30_000
    /// Most connections open at once on both listeners together (lowered at start to fit the process's
    /// open-file limit, less `OpenFileLimit.reserve`).
    public var connectionsMax = 4_096
    /// Most connections open at once from one peer address.
    public var connectionsPerPeerMax = 512
    /// Most HTTP/2 streams one peer address may reset in 10 s over all its connections; past it its
    /// connections close and new ones are refused for the rest of the 10 s.
    public var streamResetsPerPeerMax = 1_000
    /// A connection with nothing in progress for this long is closed, in milliseconds: an idle HTTP/1.1
    /// keep-alive, an HTTP/1.1 request head not finished, an HTTP/2 or gRPC connection with no open
    /// stream, a new connection that has not said which protocol it speaks.
    public var connectionIdleMillisMax: Int64 = 60_000
    /// A JSON request body not fully received this long after its head is refused (408), in milliseconds.
    public var requestBodyMillisMax: Int64 = 10_000
    /// A stream (watch, export, any response) whose reader has taken nothing of what it was sent for
    /// this long is cut, in milliseconds; until then it holds at most one flow-control window and one
    /// page of events.
    public var stalledReaderMillisMax: Int64 = 30_000
    /// History calls reading the whole log (state at a point, verify, diff) at once, and per principal
    /// (`WholeLogReads`; past them `too_many_history_reads`).
    public var historyReadsMax = 8
    public var historyReadsPerPrincipalMax = 4
    /// Exports of the history (`history/export`, `ExportEvents`) running at once, and per principal
    /// (past them `too_many_history_reads`); each reads the log at its reader's pace.
    public var exportsMax = 16
    public var exportsPerPrincipalMax = 4

    public init() {}
}

/// The agent side of the API, independent of transport: poll for a step, heartbeat, report progress,
/// complete, fail. Every call is checked against the principal; every event records the principal.
public struct AgentAPI: Sendable {
    package let coordinator: Coordinator
    package let wakeups: Wakeups
    /// The API's limits. Held by reference: an `AgentAPI` is copied into the callback each parked poll
    /// keeps (100,000 of them at once), and `APILimits` would be most of each copy (docs/benchmarks-api-history.md).
    package var limits: APILimits { sharedLimits.value }
    private let sharedLimits: SharedLimits
    package let clock: @Sendable () -> Instant
    /// Told, for each poll woken by a change that then took a step, how long from the commit of the
    /// change's append to the answer handed to the poll's transport (`answered`).
    package var observeWakeUp: @Sendable (Duration) -> Void = { _ in }
    /// On PostgreSQL, whether this writer's leadership lease is still its own by its keeper's count
    /// (`renewal + TTL` not passed). A heartbeat is answered from memory, so a writer frozen and thawed
    /// after a takeover must not tell an agent its lease lives; appends are fenced by the epoch anyway.
    package var leadershipHeld: @Sendable () -> Bool = { true }

    /// Waits up to the request's (capped) wait for a step of `service` that may start now, leases it to
    /// the agent and returns it; or returns no step and a delay before the next poll.
    ///
    /// `clientGone` says whether the caller has gone away (its connection or stream closed, its deadline
    /// passed): checked before every lease, so a step is never leased to nobody.
    public func poll(_ request: Lockstep_V1_PollRequest, principal: Principal,
                     clientGone: @Sendable () -> Bool = { false }, departure: (any Departure)? = nil) async throws(APIError) -> Lockstep_V1_PollResponse {
        var poll = try beginPoll(request, principal: principal)
        // However it ends, a wake it holds and did not look with goes on to the next parked poll.
        defer { endPoll(poll) }
        while !clientGone() && !Task.isCancelled {
            switch try await look(&poll, clientGone: clientGone) {
            case .answer(let answer):
                answered(poll)
                return answer
            case .park(let seen, let millis):
                let outcome = await wakeups.wait(after: seen, millis: millis, owner: principal.name, key: request.service, name: poll.parkName,
                                                 departure: departure, claim: stepClaim(for: poll))
                if case .claimed(.leased(let leased)) = outcome {
                    // Leased in the append that readied the step: answered as its own lease would be.
                    guard !clientGone() && !Task.isCancelled else {
                        await giveBack(leased.lease, migration: leased.migration, principal: principal)
                        return retryLater
                    }
                    let answer = answer(&poll, claimed: leased)
                    answered(poll)
                    return answer
                }
                guard resumed(&poll, outcome) else { return retryLater }
            }
        }
        return retryLater
    }

    /// A poll between its looks: what a transport keeps while the poll is parked, instead of a task
    /// (`beginPoll`, then `look`; on `.park` it waits with `wakeups`, tells `resumed` the outcome and
    /// looks again; `endPoll` when it is done, however it ends).
    public struct PollCursor: Sendable {
        let request: Lockstep_V1_PollRequest
        let principal: Principal
        let giveUp: ContinuousClock.Instant
        /// Whether it waits at all (`wait_ms` over 0): one that does not is answered when it finds nothing,
        /// with no clock read to compare with `giveUp`.
        let waits: Bool
        /// Set while this poll holds a wake it has not looked with (parked polls are woken one at a time).
        var wokenAt: ContinuousClock.Instant?
        /// When the change happened that woke this poll and that it is answered with a step for.
        var answersWakeOf: ContinuousClock.Instant?
        /// Its last look found its service's step waiting for a retry backoff: the end of a backoff appends
        /// nothing, so only polls that saw it wait for it. Should this one end before looking again, the
        /// next parked poll of the service is woken to take the wait over (`endPoll`).
        var watchesRetry = false
        /// Whether it asked the coordinator for the lease an earlier send of the same poll took
        /// (`poll_id`): at most once, on a look that found that lease published under its name.
        var askedForItsLease = false

        /// The name it parks under (`Wakeups.wait`'s `name`): its `poll_id` while it may still ask for
        /// the lease an earlier send took, so the commit that publishes that lease wakes it.
        var parkName: String? { request.pollID.isEmpty || askedForItsLease ? nil : request.pollID }

        public var service: String { request.service }
        public var owner: String { principal.name }
    }

    /// What a look found: the answer, or to park after generation `seen` for up to `millis`.
    public enum PollLook: Sendable {
        case answer(Lockstep_V1_PollResponse)
        case park(seen: UInt64, millis: Int)
    }

    /// The answer when no step came: poll again after this long.
    public var retryLater: Lockstep_V1_PollResponse { .with { $0.retryAfterMs = limits.pollRetryAfterMillis } }

    /// Checks a poll (its names, the principal's right to its service) and starts its wait, at `now` (the
    /// caller's reading of the clock, when it has one: a call's transport times it from its arrival).
    public func beginPoll(_ request: Lockstep_V1_PollRequest, principal: Principal, at now: ContinuousClock.Instant = .now) throws(APIError)
        -> PollCursor {
        try validate(request.service, "service")
        try validate(request.agentID, "agent_id")
        if !request.pollID.isEmpty { try validate(request.pollID, "poll_id") }
        try principal.requireAgent(of: request.service)
        let wait = Int(min(request.waitMs, limits.pollWaitMillisMax))
        return PollCursor(request: request, principal: principal, giveUp: now + .milliseconds(wait), waits: wait > 0)
    }

    /// One look for a step: leased and answered, the wait over (answered with `retryLater`), or park.
    public func look(_ poll: inout PollCursor, clientGone: @Sendable () -> Bool) async throws(APIError) -> PollLook {
        // The generation first, before the name is looked for: should a lease be published under this
        // poll's name after it (its first send's, committed meanwhile), the park is refused (the
        // generation moved) and the poll looks again, and that look asks.
        let seen = wakeups.generation
        if let again = await leaseTakenBefore(&poll) {
            // Its lease, not a step of its service (which has none while the lease runs): a wake it holds
            // (by its name) is not passed on when it ends, and its answer is no wake-up's.
            poll.wokenAt = nil
            return .answer(again)
        }
        if let found = lookAtOnce(&poll, seen: seen, nameLookedFor: true) { return found }
        let (step, nextRetry, looked) = try await leaseNext(service: poll.request.service, agent: poll.request.agentID, pollID: poll.request.pollID,
                                                            principal: poll.principal, clientGone: clientGone)
        if let step {
            poll.answersWakeOf = poll.wokenAt
            poll.wokenAt = nil
            poll.watchesRetry = false
            return .answer(.with { $0.step = step })
        }
        if looked { poll.wokenAt = nil }
        return waitOn(&poll, seen: seen, nextRetry: nextRetry, looked: looked)
    }

    /// A look that needs no hop to the coordinator, made on the caller's thread (a connection's event
    /// loop, or the thread whose change woke the poll): when no node holds the poll's service for a step,
    /// or its node waits for a grant or has its step leased already, there is no step to lease and no
    /// retry backoff to wait for until the log changes (`StepServices`), so the poll is answered
    /// `retryLater` (its wait over) or parks. Nil when the service may have a step, or when the poll may
    /// get a lease back under its name: `look` asks the coordinator.
    public func lookAtOnce(_ poll: inout PollCursor) -> PollLook? {
        // The generation first: after a change that may give the service a step, or publishes a lease
        // under this poll's name, the park is refused and the poll looks again.
        lookAtOnce(&poll, seen: wakeups.generation, nameLookedFor: false)
    }

    /// `lookAtOnce` after generation `seen`; `nameLookedFor`: the caller looked for the poll's lease
    /// under its name after reading `seen` (`look`), so a name published since is a change after `seen`.
    private func lookAtOnce(_ poll: inout PollCursor, seen: UInt64, nameLookedFor: Bool) -> PollLook? {
        // One read of what is published: the name only while the poll may still ask for its lease.
        let published = coordinator.stepServices.look(poll.request.service, pollID: nameLookedFor ? "" : poll.parkName ?? "")
        guard !published.leaseIsItsOwn, !published.mayHaveStep else { return nil }
        poll.wokenAt = nil
        return waitOn(&poll, seen: seen, nextRetry: nil)
    }

    /// Whether `poll` is named, has not asked for its lease yet, and the step lease running at its
    /// service's holder was taken under its name (`StepServices.hasLease`, read with no hop): only then
    /// may an earlier send of it have a lease to get back.
    private func mayGetItsLeaseBack(_ poll: PollCursor) -> Bool {
        guard let name = poll.parkName else { return false }
        return coordinator.stepServices.hasLease(ofService: poll.request.service, takenBy: name)
    }

    /// A poll named `poll_id` sent again after its answer was lost: the step its first send leased, if
    /// that lease still runs under the same agent and principal (asked at most once, on a look that finds
    /// the lease published under its name; a named poll that finds none looks as an unnamed one does).
    /// The same answer as then; nothing is appended.
    private func leaseTakenBefore(_ poll: inout PollCursor) async -> Lockstep_V1_PollResponse? {
        guard mayGetItsLeaseBack(poll) else { return nil }
        poll.askedForItsLease = true
        guard let taken = await coordinator.leaseTakenAgain(forService: poll.request.service, agent: poll.request.agentID, holder: poll.principal.name,
                                                            pollID: poll.request.pollID) else { return nil }
        return .with {
            $0.step = Self.step(migration: taken.migration, node: taken.node, spec: taken.spec, lease: taken.lease, ttlMillis: taken.ttlMillis,
                                nextStage: taken.stage)
        }
    }

    /// Nothing to lease: answer `retryLater` when the poll's wait is over, else park until its end or
    /// the end of a retry backoff, whichever is first.
    private func waitOn(_ poll: inout PollCursor, seen: UInt64, nextRetry: Instant?, looked: Bool = true) -> PollLook {
        // (A poll that did not look, its client gone, keeps what it watched: `endPoll` passes it on.)
        if looked { poll.watchesRetry = nextRetry != nil }
        guard poll.waits else { return .answer(retryLater) }
        let left = poll.giveUp - ContinuousClock.now
        guard left > .zero else { return .answer(retryLater) }
        // A retry backoff ending appends nothing, so nothing signals: wake up for it.
        var millis = Int(left.components.seconds * 1_000 + left.components.attoseconds / 1_000_000_000_000_000) + 1
        if let nextRetry { millis = min(millis, max(1, Int(nextRetry.millisecondsSinceEpoch - clock().millisecondsSinceEpoch) + 1)) }
        return .park(seen: seen, millis: millis)
    }

    /// How a parked poll's wait ended; whether it looks again (false: answer `retryLater`).
    package func resumed(_ poll: inout PollCursor, _ outcome: Wakeups.Outcome) -> Bool {
        switch outcome {
        case .woken(let at): poll.wokenAt = at
        // Cancelled as a change woke it: that wake is this poll's, and goes on (`endPoll`) with its instant.
        case .cancelled(let wokenBy?): poll.wokenAt = poll.wokenAt ?? wokenBy
        // Claimed and not leased: it looks again, holding the change's wake (if there was one) as any woken poll.
        case .claimed(.notLeased(let changed?)): poll.wokenAt = changed
        default: break
        }
        return outcome.looksAgain
    }

    /// A poll is over: a wake it holds and did not look with goes to the next parked poll.
    public func endPoll(_ poll: PollCursor) {
        if let changed = poll.wokenAt {
            wakeups.passOn(poll.request.service, changedAt: changed)
        } else if poll.watchesRetry {
            // Nothing changed: the next poll just looks again, and waits for the backoff's end itself.
            wakeups.passOn(poll.request.service, changedAt: nil)
        }
    }

    /// A poll's answer has been handed to its transport: a poll woken by a change and answered with a
    /// step records the wake-up, from that change's commit to now (`lockstep_poll_wakeup_seconds`).
    package func answered(_ poll: PollCursor) {
        if let changed = poll.answersWakeOf { observeWakeUp(.now - changed) }
    }

    /// Leases the step of `service` that may start now (see `LogState.step(forService:at:)`). Another
    /// agent may take it first: then there is nothing to lease. `looked` is false when the caller went
    /// away before the step was tried.
    private func leaseNext(service: String, agent: String, pollID: String, principal: Principal,
                           clientGone: @Sendable () -> Bool) async throws(APIError) -> (Lockstep_V1_Step?, nextRetry: Instant?, looked: Bool) {
        // One hop, small values back: a copy of the whole state held across the lease below would make
        // the coordinator copy its migrations on its next change (copy-on-write).
        let (candidate, nextRetry) = await coordinator.leasableStep(forService: service, at: clock())
        if let (migration, node, spec) = candidate {
            guard !clientGone() && !Task.isCancelled else { return (nil, nil, false) }
            let ttl = leaseTTLMillis(spec)
            let result: CommandResult
            do {
                result = try await coordinator.execute(.leaseStep(node: node, agent: agent, ttlMillis: ttl, holder: principal.name, pollID: pollID), migration: migration,
                                                       context: CommandContext(actor: principal.agentActor, triggeredBy: .agent), now: clock())
            } catch {
                if case .rejected(let rejection) = error, Self.takenMeanwhile(rejection) { return (nil, nextRetry, true) }
                throw APIError(error)
            }
            guard case .stepLeased(let leased) = result.events.first?.event else { return (nil, nextRetry, true) }
            // The caller went away while the lease was being recorded: give the step back at once (the
            // attempt is not counted) instead of leaving it to expire.
            if clientGone() || Task.isCancelled {
                await giveBack(leased, migration: migration, principal: principal)
                return (nil, nextRetry, true)
            }
            // An exposure node's forward step sets its next stage, read after the lease: the stage cannot
            // move until this step completes. (A node without exposure stages has none: no look at the
            // coordinator for it.)
            let stage = switch leased.kind {
            case .forward: spec.exposure == nil ? nil : await coordinator.migration(migration)?.nextStage(of: node)
            case .rollback, .check: ExposureStage?.none
            }
            return (Self.step(migration: migration, node: node, spec: spec, lease: leased, ttlMillis: ttl, nextStage: stage), nil, true)
        }
        return (nil, nextRetry, true)
    }

    /// Refusals that mean another caller or event got there first: the poll tries the next candidate.
    package static func takenMeanwhile(_ rejection: Rejection) -> Bool {
        switch rejection {
        case .nodeNotReady, .waitingForServices, .retryNotDue, .noRollbackDue, .migrationNotRunning, .migrationSettled, .awaitingApproval,
             .gateRejected, .frozen, .outsideWindow, .checkFailed:
            true
        default:
            false
        }
    }

    private func validate(_ value: String, _ field: String) throws(APIError) {
        if value.isEmpty { throw APIError.invalid("\(field) is required") }
        if let problem = MigrationState.identifierProblem(value, what: field) { throw APIError.invalid(problem) }
    }

    package init(coordinator: Coordinator, wakeups: Wakeups, limits: APILimits, clock: @escaping @Sendable () -> Instant, observeWakeUp: @escaping @Sendable (Duration) -> Void = { _ in }) {
        self.coordinator = coordinator
        self.wakeups = wakeups
        self.sharedLimits = SharedLimits(limits)
        self.clock = clock
        self.observeWakeUp = observeWakeUp
    }

    private final class SharedLimits: Sendable {
        let value: APILimits
        init(_ value: APILimits) { self.value = value }
    }
}
