import ArgumentParser
import Foundation
import LockstepAgent
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
