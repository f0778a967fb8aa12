// The reference agent (docs/agent.md) as a library: it polls for its service's steps, runs each
// step's handler (HandlerProcess), heartbeats, reports progress and the outcome, and stops gracefully.
// `lockstep agent` is its command line; other programs may embed it.
import Foundation
import LockstepClient
import LockstepCore
import LockstepWire
import Logging
import ServiceLifecycle
import Synchronization

/// The agent as a service of a ServiceGroup, so SIGTERM and SIGINT become graceful shutdown.
public struct AgentService: Service {
    let agent: ReferenceAgent
    let lockstep: LockstepClient

    public init(agent: ReferenceAgent, lockstep: LockstepClient) {
        self.agent = agent
        self.lockstep = lockstep
    }

    public func run() async throws { try await agent.run(lockstep) }
}

/// What the reference agent does (docs/agent.md).
public struct ReferenceAgent: Sendable {
    let service: String
    let agentID: String
    let handlers: String
    let pollWaitMillis: UInt32
    let shutdownGrace: Duration
    let stepsMax: Int?

    /// An agent `agentID` of `service` running the executables in directory `handlers` (one per action),
    /// polling `pollWaitMillis` at a time; on shutdown a running handler gets `shutdownGrace` to finish.
    /// `stepsMax` ends it after that many steps (nil: until stopped).
    public init(service: String, agentID: String, handlers: String, pollWaitMillis: UInt32, shutdownGrace: Duration, stepsMax: Int?) {
        self.service = service
        self.agentID = agentID
        self.handlers = handlers
        self.pollWaitMillis = pollWaitMillis
        self.shutdownGrace = shutdownGrace
        self.stepsMax = stepsMax
    }

    /// Progress reports sent at most this often, in milliseconds (the latest line wins; each is an event).
    static let progressIntervalMillis = 1_000
    /// Longest progress message sent, in bytes.
    static let progressMessageBytesMax = 512
    /// Longest failure reason sent, in bytes (the server's limit is 1,024).
    static let reasonBytesMax = 1_000
    /// Attempts at delivering a report while the server is temporarily unable to take it.
    static let reportAttemptsMax = 30
    /// How long a handler told to stop (its migration paused under `on_pause: stop`) has after SIGTERM, before SIGKILL.
    static let stopGrace = Duration.seconds(10)

    func say(_ text: String) {
        print("\(agentID): \(text)")
        fflush(nil)
    }

    func run(_ lockstep: LockstepClient) async throws {
        var done = 0
        var backoff = Duration.milliseconds(200)
        // Addresses tried since the last pause: with several coordinators, a failure that moved the client
        // to another address is tried there at once (a takeover is noticed as soon as the new writer
        // serves), and the back-off applies once every address has failed in a row.
        var moved = 0
        // Each poll's name: a poll whose answer was lost is sent again under the same name, so a step it
        // leased comes back instead of waiting out its lease as an agent lost (`poll_id`, docs/api.md).
        var pollID = Self.newPollID()
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            let began = ContinuousClock.now
            let target = lockstep.currentTarget
            let polled: Lockstep_V1_PollResponse
            let named = pollID
            do {
                polled = try await cancelWhenGracefulShutdown {
                    try await lockstep.poll(.with {
                        $0.service = service
                        $0.agentID = agentID
                        $0.waitMs = pollWaitMillis
                        $0.pollID = named
                    })
                }
                pollID = Self.newPollID()
                backoff = .milliseconds(200)
                moved = 0
            } catch {
                if Task.isShuttingDownGracefully || error is CancellationError { break }
                guard let failure = error as? LockstepClientError, failure.isTransient else { throw error }
                if lockstep.currentTarget != target, moved + 1 < lockstep.targetCount {
                    moved += 1
                    say("cannot poll (\(failure)); trying \(lockstep.currentTarget)")
                    continue
                }
                moved = 0
                let pause = backoff
                say("cannot poll (\(failure)); again in \(pause)")
                try? await cancelWhenGracefulShutdown { try await Task.sleep(for: pause) }
                backoff = min(backoff * 2, .seconds(5))
                continue
            }
            if polled.hasStep {
                await runStep(polled.step, lockstep)
                done += 1
                if let stepsMax, done >= stepsMax { break }
            } else if ContinuousClock.now - began < .milliseconds(100) {
                // Answered at once (the server is full or shutting down): wait as it suggests, within
                // reason (the answer is outside input: 0 would poll in a tight loop, 2^32 - 1 ms sleep 49 days).
                try? await cancelWhenGracefulShutdown { try await Task.sleep(for: Self.retryPause(afterMillis: polled.retryAfterMs)) }
            }
        }
        say("stopped")
    }

    /// The pause before the next poll after an empty answer that came at once: the server's
    /// `retry_after_ms`, held to 100 ms … 30 s.
    package static func retryPause(afterMillis suggested: UInt32) -> Duration {
        .milliseconds(Int(min(max(suggested, 100), 30_000)))
    }

    enum Outcome: Equatable {
        /// The handler exited; `stderr` is the end of what it wrote there.
        case exited(HandlerProcess.Exit, stderr: String)
        /// The lease was lost (expired, taken over): the handler was killed and nothing is reported.
        case leaseLost(String)
        /// The agent is shutting down and the handler did not finish within the grace period.
        case stopped
        case noHandler(String)
    }

    /// Runs one step's handler under its lease and reports how it ended. Heartbeats run, and the lease
    /// is watched, from the lease until the report is acknowledged.
    func runStep(_ step: Lockstep_V1_Step, _ lockstep: LockstepClient) async {
        let name = "\(step.migrationID)/\(step.nodeID)"
        let kind = step.kind == .rollback ? "rollback" : step.kind == .check ? "check" : "forward"
        say("\(name) \(kind) attempt \(step.attempt), token \(step.fencingToken): \(step.action)\(step.stage.isEmpty ? "" : " (stage \(step.stage))")")
        let control = HandlerProcess.Control()
        let shared = StepShared(ttl: .milliseconds(Int(step.ttlMs)))
        guard step.ttlMs >= Self.leaseTTLMillisMin else {
            say("\(name): not run: its lease lasts \(step.ttlMs) ms, shorter than any Lockstep server gives (\(Self.leaseTTLMillisMin) ms at least)")
            await report(step, name: name, lockstep, shared: shared,
                         failure: ("agent \(agentID) cannot keep a lease of \(step.ttlMs) ms (\(Self.leaseTTLMillisMin) ms at least); \(step.action) was not run", retryable: true))
            return
        }
        let pace = Self.heartbeatPace(ttlMillis: step.ttlMs, intervalMillis: step.heartbeatIntervalMs)
        if pace < .milliseconds(Int(step.heartbeatIntervalMs)) {
            say("\(name): the server asks for a heartbeat every \(step.heartbeatIntervalMs) ms on a lease of \(step.ttlMs) ms; heartbeating every \(pace)")
        }
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await heartbeats(step, lockstep, control: control, shared: shared) }
            group.addTask { await watchLease(control: control, shared: shared) }
            group.addTask { await progressReports(step, lockstep, shared: shared) }
            let outcome = await execute(step, name: name, control: control, shared: shared)
            await sendPendingProgress(step, lockstep, shared: shared)
            let stopped = shared.stoppedByCoordinator.withLock { $0 }
            switch outcome {
            case .leaseLost(let why):
                say("\(name): lease lost (\(why)); handler stopped, nothing reported")
            case .exited(let exit, _) where stopped != nil && exit != .status(0):
                await report(step, name: name, lockstep, shared: shared, failure: ("\(step.action) was stopped: \(stopped ?? "")", retryable: true), stopped: true)
            case .exited(let exit, let stderr) where step.kind == .check:
                // A check reports what it found, passing or not; the coordinator judges it by the plan's rule.
                let (value, output) = shared.check.withLock { $0 }
                var evidence = output
                if exit != .status(0) {
                    let how = switch exit {
                    case .status(let status): "\(step.action) exited with status \(status)"
                    case .signal(let signal): "\(step.action) was killed by signal \(signal)"
                    }
                    evidence = [how, output, stderr].filter { !$0.isEmpty }.joined(separator: ": ")
                }
                await report(step, name: name, lockstep, shared: shared, failure: nil,
                             check: .with {
                                 $0.ok = exit == .status(0)
                                 if let value { $0.value = value }
                                 $0.evidence = evidence.prefix(utf8Bytes: Self.reasonBytesMax)
                             })
            case .noHandler(let why):
                await report(step, name: name, lockstep, shared: shared, failure: (why, retryable: true))
            case .stopped:
                await report(step, name: name, lockstep, shared: shared, failure: ("agent \(agentID) was stopped before its handler finished", retryable: true))
            case .exited(.status(0), _):
                await report(step, name: name, lockstep, shared: shared, failure: nil)
            case .exited(let exit, let stderr):
                let retryable: Bool
                var reason: String
                switch exit {
                case .status(let status):
                    retryable = status == 75
                    reason = "\(step.action) exited with status \(status)\(retryable ? " (temporary failure)" : "")"
                case .signal(let signal):
                    retryable = true
                    reason = "\(step.action) was killed by signal \(signal)"
                }
                if !stderr.isEmpty { reason += ": \(stderr)" }
                await report(step, name: name, lockstep, shared: shared, failure: (reason, retryable))
            }
            group.cancelAll()
        }
    }

    private func execute(_ step: Lockstep_V1_Step, name: String, control: HandlerProcess.Control, shared: StepShared) async -> Outcome {
        guard Self.isHandlerName(step.action) else { return .noHandler("action \"\(step.action.prefix(200))\" cannot name a handler file") }
        let path = handlers + "/" + step.action
        guard FileManager.default.isExecutableFile(atPath: path) else {
            return .noHandler("agent \(agentID) has no executable handler \(path) for action \(step.action)")
        }
        var environment: [String: String?] = [:]
        // The agent's credentials are not the handler's business.
        environment["LOCKSTEP_TOKEN"] = .some(nil)
        environment["LOCKSTEP_MIGRATION"] = step.migrationID
        environment["LOCKSTEP_NODE"] = step.nodeID
        environment["LOCKSTEP_ATTEMPT"] = String(step.attempt)
        environment["LOCKSTEP_FENCING_TOKEN"] = String(step.fencingToken)
        environment["LOCKSTEP_STEP_KIND"] = step.kind == .rollback ? "rollback" : step.kind == .check ? "check" : "forward"
        environment["LOCKSTEP_ACTION"] = step.action
        environment["LOCKSTEP_PARAMS"] = step.paramsJson
        environment["LOCKSTEP_AGENT_ID"] = agentID
        // Exposure nodes: the stage this step sets (a rollback step: the start it returns to).
        environment["LOCKSTEP_STAGE"] = step.stage.isEmpty ? .some(nil) : step.stage
        environment["LOCKSTEP_STAGE_PERCENT"] = step.hasStagePercent ? String(step.stagePercent) : .some(nil)
        let ran: (exit: HandlerProcess.Exit, stderrTail: String)
        do {
            ran = try await withGracefulShutdownHandler {
                try await HandlerProcess.run(path, environment: environment, input: step.paramsJson, control: control) { line in
                    // Progress lines are reported, the rest shown.
                    if let (percent, message) = Self.progressLine(line) {
                        shared.progress.withLock { $0 = (percent, message, false) }
                    } else if step.kind == .check {
                        // A check's `value=NUMBER` line is its value; its other lines are its evidence.
                        say("\(name): \(line)")
                        shared.check.withLock { found in
                            if let value = Self.valueLine(line) { found.value = value } else if found.evidence.utf8.count < Self.reasonBytesMax {
                                found.evidence += (found.evidence.isEmpty ? "" : "\n") + line
                            }
                        }
                    } else {
                        say("\(name): \(line)")
                    }
                }
            } onGracefulShutdown: {
                let grace = shutdownGrace
                say("\(name): stopping; the handler has \(grace) to finish")
                Task {
                    try? await Task.sleep(for: grace)
                    // Marked as the stop is taken, before the handler can be marked finished: a handler that
                    // ended first is reported as it ended (it was marked, then unmarked, and read in between).
                    control.stop(grace: .seconds(5)) { shared.stoppedForShutdown.withLock { $0 = true } }
                }
            }
        } catch {
            return .noHandler("agent \(agentID) could not start \(path): \(error)")
        }
        if let why = shared.lost.withLock({ $0 }) { return .leaseLost(why) }
        // (A handler that exited 0 as the grace ran out, before it was reaped, is reported as it ended.)
        if shared.stoppedForShutdown.withLock({ $0 }), ran.exit != .status(0) { return .stopped }
        return .exited(ran.exit, stderr: ran.stderrTail)
    }

    /// Sends the latest progress line at most once per `progressIntervalMillis`.
    private func progressReports(_ step: Lockstep_V1_Step, _ lockstep: LockstepClient, shared: StepShared) async {
        while !Task.isCancelled {
            do { try await Task.sleep(for: .milliseconds(Self.progressIntervalMillis)) } catch { return }
            await sendPendingProgress(step, lockstep, shared: shared)
        }
    }

    private func sendPendingProgress(_ step: Lockstep_V1_Step, _ lockstep: LockstepClient, shared: StepShared) async {
        let pending = shared.progress.withLock { state -> (UInt32, String)? in
            guard !state.sent else { return nil }
            state.sent = true
            return (state.percent, state.message)
        }
        guard let (percent, message) = pending, shared.lost.withLock({ $0 == nil }) else { return }
        // Best effort: a lost progress report is only a missing event; the heartbeats keep the lease.
        _ = try? await lockstep.reportProgress(.with {
            $0.leaseID = step.leaseID
            $0.fencingToken = step.fencingToken
            $0.percent = percent
            $0.message = message
        }, timeout: max(Self.heartbeatPace(ttlMillis: step.ttlMs, intervalMillis: step.heartbeatIntervalMs), .milliseconds(200)))
    }

    /// Completes or fails the step, trying again while the server is only temporarily unable to take it
    /// (the heartbeats keep the lease meanwhile) until the lease is lost or `reportAttemptsMax` tries.
    private func report(_ step: Lockstep_V1_Step, name: String, _ lockstep: LockstepClient, shared: StepShared,
                        failure: (reason: String, retryable: Bool)?, check: Lockstep_V1_CheckResult? = nil, stopped: Bool = false) async {
        var delay = Duration.milliseconds(100)
        // Whether an earlier try may have been taken (its answer lost): then a refusal of this one most
        // likely says the step was already reported, not that the report failed.
        var mayHaveBeenTaken = false
        for attempt in 1...Self.reportAttemptsMax {
            do throws(LockstepClientError) {
                if let failure {
                    let reason = failure.reason.prefix(utf8Bytes: Self.reasonBytesMax)
                    let answer = try await lockstep.fail(.with {
                        $0.leaseID = step.leaseID
                        $0.fencingToken = step.fencingToken
                        $0.reason = reason
                        $0.retryable = failure.retryable
                        $0.stopped = stopped
                    })
                    say("\(name): failed (\(failure.retryable ? "retryable" : "not retryable")\(answer.willRetry ? ", will be retried" : "")): \(failure.reason)")
                } else {
                    _ = try await lockstep.complete(.with {
                        $0.leaseID = step.leaseID
                        $0.fencingToken = step.fencingToken
                        if let check { $0.check = check }
                    })
                    say(check.map { "\(name): check reported \($0.ok ? "ok" : "not ok")\($0.hasValue ? ", value \($0.value)" : "")" } ?? "\(name): completed")
                }
                return
            } catch {
                let earlier = mayHaveBeenTaken
                mayHaveBeenTaken = mayHaveBeenTaken || error.mayHaveRun
                let look = "`lockstep migration status` shows the step"
                if let lost = shared.lost.withLock({ $0 }) {
                    // Taking the report ends the lease, so a lost lease after a lost answer is no news.
                    if mayHaveBeenTaken { return say("\(name): a report's answer was lost and the lease has ended since (\(lost)): the report was most likely taken; \(look)") }
                    return say("\(name): lease lost before the report was taken (\(lost)); nothing reported")
                }
                guard error.isTransient && attempt < Self.reportAttemptsMax else {
                    if error.mayHaveRun {
                        return say(error.isTransient ? "\(name): the report's answer was lost (\(error)) and no tries are left: it may have been taken; \(look)"
                                                     : "\(name): the report's outcome is unknown (\(error)): it may have been taken; \(look)")
                    }
                    if earlier { return say("\(name): an earlier try's answer was lost and this one was refused (\(error)): the report was most likely taken then; \(look)") }
                    return say("\(name): the report was refused: \(error)")
                }
                try? await Task.sleep(for: delay)
                delay = min(delay * 2, .seconds(2))
            }
        }
    }

    /// A fresh poll name: `poll-` and a random UUID.
    static func newPollID() -> String { "poll-" + UUID().uuidString.lowercased() }

    /// `progress: 40 working on shard 3` → (40, "working on shard 3"); percent 0...100.
    static func progressLine(_ line: String) -> (UInt32, String)? {
        guard line.hasPrefix("progress:") else { return nil }
        let rest = line.dropFirst("progress:".count).drop { $0 == " " }
        let digits = rest.prefix { $0.isASCII && $0.isNumber }
        guard !digits.isEmpty, digits.count <= 3, let percent = UInt32(digits), percent <= 100 else { return nil }
        let message = rest.dropFirst(digits.count).trimmingCharacters(in: .whitespaces)
        return (percent, message.prefix(utf8Bytes: progressMessageBytesMax))
    }

    /// A check's `value=NUMBER` line (a finite decimal, at most 40 characters), or nil.
    static func valueLine(_ line: String) -> Double? {
        guard line.hasPrefix("value="), line.utf8.count <= 46 else { return nil }
        let text = line.dropFirst("value=".count).trimmingCharacters(in: .whitespaces)
        guard !text.isEmpty, text.allSatisfy({ $0.isASCII && ($0.isNumber || $0 == "." || $0 == "-" || $0 == "+" || $0 == "e" || $0 == "E") }),
              let value = Double(text), value.isFinite else { return nil }
        return value
    }

    /// An action names a file directly in the handlers directory: no path separators, no dot files.
    static func isHandlerName(_ action: String) -> Bool {
        !action.isEmpty && action.utf8.count <= 128 && !action.hasPrefix(".") && !action.contains("/") && !action.contains("\0")
    }
}
