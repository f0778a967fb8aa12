import ArgumentParser
import Foundation
import LockstepClient
import LockstepWire
import Logging
import ServiceLifecycle
import Synchronization

struct AgentCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "agent",
        abstract: "The reference agent: runs the steps of one service with executable handlers.",
        discussion: """
            Polls for steps of --service. For a step with action A it runs DIR/A with the step's params \
            as JSON on stdin and LOCKSTEP_MIGRATION, LOCKSTEP_NODE, LOCKSTEP_ATTEMPT, LOCKSTEP_FENCING_TOKEN, \
            LOCKSTEP_STEP_KIND, LOCKSTEP_ACTION and LOCKSTEP_PARAMS in its environment. It heartbeats while \
            the handler runs and reports lines the handler prints as `progress: PERCENT MESSAGE`. Exit 0 \
            completes the step; 75 (EX_TEMPFAIL) or death by a signal fails it retryably; any other status \
            fails it for good. A lost lease kills the handler. SIGTERM or SIGINT: stop polling, let a \
            running handler finish (up to --shutdown-grace-ms, then stop it and fail the step retryably), \
            report, exit. See docs/agent.md.
            """)

    @OptionGroup var server: ServerOptions
    @Option(help: "The service whose steps this agent runs.") var service: String
    @Option(help: "Directory of executable handlers, one per action (rollback actions too).") var handlers: String
    @Option(help: "This agent's id, recorded in its leases (default: SERVICE-HOST-PID).") var id: String?
    @Option(help: "How long one poll waits for a step, in milliseconds (the server caps it).") var pollWaitMs: UInt32 = 20_000
    @Option(help: "On SIGTERM, how long a running handler may take to finish before it is stopped, in milliseconds.")
    var shutdownGraceMs = 30_000
    @Option(help: ArgumentHelp("Exit after this many steps (tests and one-shot jobs; default: run until stopped).", visibility: .hidden))
    var steps: Int?

    func validate() throws {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: handlers, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw ValidationError("--handlers \(handlers) is not a directory")
        }
        guard (0...600_000).contains(shutdownGraceMs) else { throw ValidationError("--shutdown-grace-ms must be 0...600000") }
        if let steps, steps < 1 { throw ValidationError("--steps must be at least 1") }
    }

    func run() async throws {
        var logger = Logger(label: "lockstep.agent")
        logger.logLevel = .info
        let agentID = id ?? "\(service)-\(ProcessInfo.processInfo.hostName.split(separator: ".").first ?? "host")-\(getpid())"
        let agent = ReferenceAgent(service: service, agentID: agentID, handlers: URL(fileURLWithPath: handlers).standardizedFileURL.path,
                                   pollWaitMillis: pollWaitMs, shutdownGrace: .milliseconds(shutdownGraceMs), stepsMax: steps)
        try await server.run { lockstep in
            print("\(agentID): polling \(server.address) for steps of \(service); handlers in \(handlers)")
            fflush(nil)
            let group = ServiceGroup(configuration: .init(
                services: [.init(service: AgentService(agent: agent, lockstep: lockstep), successTerminationBehavior: .gracefullyShutdownGroup)],
                gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
            try await group.run()
        }
    }
}

/// The agent as a service of a ServiceGroup, so SIGTERM and SIGINT become graceful shutdown.
struct AgentService: Service {
    let agent: ReferenceAgent
    let lockstep: LockstepClient

    func run() async throws { try await agent.run(lockstep) }
}

/// What one step's tasks share: the latest progress line (and whether it was sent), why the lease was
/// lost, whether shutdown stopped the handler.
final class StepShared: Sendable {
    let progress = Mutex<(percent: UInt32, message: String, sent: Bool)>((0, "", true))
    let lost = Mutex<String?>(nil)
    let stopped = Mutex(false)
}

/// What the reference agent does (docs/agent.md).
struct ReferenceAgent: Sendable {
    let service: String
    let agentID: String
    let handlers: String
    let pollWaitMillis: UInt32
    let shutdownGrace: Duration
    let stepsMax: Int?

    /// Progress reports sent at most this often, in milliseconds (the latest line wins; each is an event).
    static let progressIntervalMillis = 1_000
    /// Longest progress message sent, in bytes.
    static let progressMessageBytesMax = 512
    /// Longest failure reason sent, in bytes (the server's limit is 1,024).
    static let reasonBytesMax = 1_000
    /// Attempts at delivering a report while the server cannot be reached.
    static let reportAttemptsMax = 5

    func say(_ text: String) {
        print("\(agentID): \(text)")
        fflush(nil)
    }

    func run(_ lockstep: LockstepClient) async throws {
        var done = 0
        var backoff = Duration.milliseconds(200)
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            let began = ContinuousClock.now
            let polled: Lockstep_V1_PollResponse
            do {
                polled = try await cancelWhenGracefulShutdown {
                    try await lockstep.poll(.with {
                        $0.service = service
                        $0.agentID = agentID
                        $0.waitMs = pollWaitMillis
                    })
                }
                backoff = .milliseconds(200)
            } catch {
                if Task.isShuttingDownGracefully || error is CancellationError { break }
                guard let failure = error as? LockstepClientError, failure.code == "unavailable" || failure.code == "shutting_down" else { throw error }
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
                // Answered at once (the server is full or shutting down): wait as it suggests.
                try? await cancelWhenGracefulShutdown { try await Task.sleep(for: .milliseconds(Int(polled.retryAfterMs))) }
            }
        }
        say("stopped")
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

    /// Runs one step's handler under its lease and reports how it ended.
    func runStep(_ step: Lockstep_V1_Step, _ lockstep: LockstepClient) async {
        let name = "\(step.migrationID)/\(step.nodeID)"
        let kind = step.kind == .rollback ? "rollback" : "forward"
        say("\(name) \(kind) attempt \(step.attempt), token \(step.fencingToken): \(step.action)")
        let outcome = await execute(step, name: name, lockstep)
        switch outcome {
        case .leaseLost(let why):
            say("\(name): lease lost (\(why)); handler stopped, nothing reported")
        case .noHandler(let why):
            await report(step, name: name, lockstep, failure: (why, retryable: true))
        case .stopped:
            await report(step, name: name, lockstep, failure: ("agent \(agentID) was stopped before its handler finished", retryable: true))
        case .exited(.status(0), _):
            await report(step, name: name, lockstep, failure: nil)
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
            await report(step, name: name, lockstep, failure: (reason, retryable))
        }
    }

    private func execute(_ step: Lockstep_V1_Step, name: String, _ lockstep: LockstepClient) async -> Outcome {
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
        environment["LOCKSTEP_STEP_KIND"] = step.kind == .rollback ? "rollback" : "forward"
        environment["LOCKSTEP_ACTION"] = step.action
        environment["LOCKSTEP_PARAMS"] = step.paramsJson
        environment["LOCKSTEP_AGENT_ID"] = agentID
        let control = HandlerProcess.Control()
        let shared = StepShared()
        let ran: (exit: HandlerProcess.Exit, stderrTail: String)
        do {
            ran = try await withGracefulShutdownHandler {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    // Heartbeats (and pending progress) while it runs; a lost lease stops it.
                    group.addTask {
                        await heartbeat(step, lockstep, control: control, shared: shared)
                    }
                    let ran = try await HandlerProcess.run(path, environment: environment, input: step.paramsJson, control: control) { line in
                        // Progress lines are reported, the rest shown.
                        if let (percent, message) = Self.progressLine(line) {
                            shared.progress.withLock { $0 = (percent, message, false) }
                        } else {
                            say("\(name): \(line)")
                        }
                    }
                    group.cancelAll()
                    return ran
                }
            } onGracefulShutdown: {
                let grace = shutdownGrace
                say("\(name): stopping; the handler has \(grace) to finish")
                Task {
                    try? await Task.sleep(for: grace)
                    guard !control.finished else { return }
                    shared.stopped.withLock { $0 = true }
                    control.stop(grace: .seconds(5))
                }
            }
        } catch {
            return .noHandler("agent \(agentID) could not run \(path): \(error)")
        }
        if let why = shared.lost.withLock({ $0 }) { return .leaseLost(why) }
        if shared.stopped.withLock({ $0 }) { return .stopped }
        return .exited(ran.exit, stderr: ran.stderrTail)
    }

    /// Heartbeats every `heartbeat_interval_ms` until cancelled, sending pending progress at most once a
    /// second. A refused heartbeat means the lease is gone; so does the TTL passing without one
    /// acknowledged (the server unreachable): both stop the handler.
    private func heartbeat(_ step: Lockstep_V1_Step, _ lockstep: LockstepClient, control: HandlerProcess.Control, shared: StepShared) async {
        let interval = Duration.milliseconds(Int(max(50, min(step.heartbeatIntervalMs, UInt32(Self.progressIntervalMillis)))))
        let heartbeatEvery = Duration.milliseconds(Int(max(50, step.heartbeatIntervalMs)))
        var ttl = Duration.milliseconds(Int(step.ttlMs))
        var acknowledged = ContinuousClock.now
        var lastBeat = ContinuousClock.now
        func lose(_ why: String) {
            shared.lost.withLock { $0 = why }
            control.stop(grace: .seconds(2))
        }
        while !Task.isCancelled {
            do { try await Task.sleep(for: interval) } catch { return }
            let pending = shared.progress.withLock { state -> (UInt32, String)? in
                guard !state.sent else { return nil }
                state.sent = true
                return (state.percent, state.message)
            }
            do throws(LockstepClientError) {
                if let (percent, message) = pending {
                    _ = try await lockstep.reportProgress(.with {
                        $0.leaseID = step.leaseID
                        $0.fencingToken = step.fencingToken
                        $0.percent = percent
                        $0.message = message
                    })
                }
                if ContinuousClock.now - lastBeat >= heartbeatEvery {
                    let beat = try await lockstep.heartbeat(.with {
                        $0.leaseID = step.leaseID
                        $0.fencingToken = step.fencingToken
                    })
                    lastBeat = ContinuousClock.now
                    acknowledged = lastBeat
                    if beat.ttlMs > 0 { ttl = .milliseconds(Int(beat.ttlMs)) }
                }
            } catch {
                if Task.isCancelled { return }
                if error.code == "unavailable" || error.code == "shutting_down" {
                    if ContinuousClock.now - acknowledged > ttl {
                        return lose("no heartbeat acknowledged for longer than the lease's TTL (\(ttl)): \(error)")
                    }
                    continue
                }
                return lose("\(error)")
            }
        }
    }

    /// Completes or fails the step, retrying while the server cannot be reached (a bounded number of times).
    private func report(_ step: Lockstep_V1_Step, name: String, _ lockstep: LockstepClient, failure: (reason: String, retryable: Bool)?) async {
        var delay = Duration.milliseconds(200)
        for attempt in 1...Self.reportAttemptsMax {
            do throws(LockstepClientError) {
                if let failure {
                    let reason = String(decoding: Array(failure.reason.utf8.prefix(Self.reasonBytesMax)), as: UTF8.self)
                    let answer = try await lockstep.fail(.with {
                        $0.leaseID = step.leaseID
                        $0.fencingToken = step.fencingToken
                        $0.reason = reason
                        $0.retryable = failure.retryable
                    })
                    say("\(name): failed (\(failure.retryable ? "retryable" : "not retryable")\(answer.willRetry ? ", will be retried" : "")): \(failure.reason)")
                } else {
                    _ = try await lockstep.complete(.with {
                        $0.leaseID = step.leaseID
                        $0.fencingToken = step.fencingToken
                    })
                    say("\(name): completed")
                }
                return
            } catch {
                guard (error.code == "unavailable" || error.code == "shutting_down") && attempt < Self.reportAttemptsMax else {
                    say("\(name): the report was refused: \(error)")
                    return
                }
                try? await Task.sleep(for: delay)
                delay *= 2
            }
        }
    }

    /// `progress: 40 working on shard 3` → (40, "working on shard 3"); percent 0...100.
    static func progressLine(_ line: String) -> (UInt32, String)? {
        guard line.hasPrefix("progress:") else { return nil }
        let rest = line.dropFirst("progress:".count).drop { $0 == " " }
        let digits = rest.prefix { $0.isASCII && $0.isNumber }
        guard !digits.isEmpty, digits.count <= 3, let percent = UInt32(digits), percent <= 100 else { return nil }
        let message = rest.dropFirst(digits.count).trimmingCharacters(in: .whitespaces)
        return (percent, String(decoding: Array(message.utf8.prefix(progressMessageBytesMax)), as: UTF8.self))
    }

    /// An action names a file directly in the handlers directory: no path separators, no dot files.
    static func isHandlerName(_ action: String) -> Bool {
        !action.isEmpty && action.utf8.count <= 128 && !action.hasPrefix(".") && !action.contains("/") && !action.contains("\0")
    }
}
