import Foundation
import Hummingbird
import HummingbirdCore
import LockstepCore
import LockstepEngine
import LockstepStore
import Logging
import NIOCore

/// `lockstep serve`: the coordinator on a data directory, its timers, and the API on HTTP.
public enum LockstepServer {
    public struct Options: Sendable {
        public var databasePath: String
        public var httpHost: String
        public var httpPort: Int
        /// No authentication, loopback only.
        public var dev: Bool
        /// Who may call (bearer tokens); required unless `dev`.
        public var auth: AuthConfig?
        /// Written once the server accepts requests: `{"http": "http://HOST:PORT"}`.
        public var readyFile: String?
        public var limits = APILimits()
        /// How often the timers look for expired leases, passed deadlines and owed grants, in milliseconds.
        public var timerTickMillis = 50

        public init(databasePath: String, httpHost: String, httpPort: Int, dev: Bool, auth: AuthConfig?, readyFile: String?) {
            self.databasePath = databasePath
            self.httpHost = httpHost
            self.httpPort = httpPort
            self.dev = dev
            self.auth = auth
            self.readyFile = readyFile
        }
    }

    public enum StartError: Error, CustomStringConvertible {
        case notLoopback(String)
        case noAuthorization
        case devWithConfig
        public var description: String {
            switch self {
            case .notLoopback(let host): "--dev serves without authentication and binds to loopback only; \(host) is not a loopback address"
            case .noAuthorization:
                "refusing to serve without an authorization config: pass --config FILE (docs/api.md, Authentication), or --dev for loopback without authentication"
            case .devWithConfig: "--dev and --config exclude each other: --dev means no authentication"
            }
        }
    }

    /// Runs until SIGTERM or SIGINT, then stops accepting requests and returns.
    public static func run(_ options: Options) async throws {
        var configured = Logger(label: "lockstep")
        configured.logLevel = .info
        let logger = configured
        let authenticate: @Sendable (Request) throws(APIError) -> Principal
        switch (options.dev, options.auth) {
        case (true, .some): throw StartError.devWithConfig
        case (false, .none): throw StartError.noAuthorization
        case (true, .none):
            guard ["127.0.0.1", "::1", "localhost"].contains(options.httpHost) else { throw StartError.notLoopback(options.httpHost) }
            logger.warning("DEVELOPMENT MODE: no authentication; every caller may do everything. Loopback only. Never use --dev in production.")
            authenticate = { _ throws(APIError) in Principal.developer }
        case (false, .some(let auth)):
            authenticate = { request throws(APIError) in try auth.authenticate(request.headers[.authorization]) }
        }

        let log = try SQLiteEventLog(path: options.databasePath)
        let coordinator = try await Coordinator.open(log: log)
        let wakeups = Wakeups(parkedMax: options.limits.parkedPollsMax)
        await coordinator.observeChanges { Task { await wakeups.signal() } }
        let clock: @Sendable () -> Instant = { WallClock.now() }
        let agents = AgentAPI(coordinator: coordinator, wakeups: wakeups, limits: options.limits, clock: clock)
        let operators = OperatorAPI(coordinator: coordinator, clock: clock) {
            String(UInt32.random(in: 0...UInt32.max), radix: 16).leftPadded(to: 8)
        }
        let router = Router()
        HTTPRoutes(agents: agents, operators: operators, limits: options.limits, authenticate: authenticate).register(on: router)
        let readyFile = options.readyFile
        let app = Application(
            router: router,
            // One plaintext port for HTTP/1.1 and HTTP/2 with prior knowledge (h2c), told apart by the
            // first bytes (H2CSniffing.swift); a connection that sends nothing is closed after 30 s.
            server: .http1AndH2C(),
            configuration: .init(address: .hostname(options.httpHost, port: options.httpPort), serverName: "lockstep"),
            onServerRunning: { channel in
                let port = channel.localAddress?.port ?? options.httpPort
                logger.info("serving HTTP on http://\(options.httpHost):\(port)")
                if let readyFile { writeReadyFile(readyFile, http: "http://\(options.httpHost):\(port)") }
            },
            logger: logger)

        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await runTimers(coordinator, tickMillis: options.timerTickMillis) }
            group.addTask { try await app.runService() }
            // The server returns on SIGTERM/SIGINT (graceful shutdown); then the timers stop.
            _ = try await group.next()
            group.cancelAll()
        }
    }

    /// The coordinator's timers: lease expiry, deadlines, and a grant pass when one is owed.
    static func runTimers(_ coordinator: Coordinator, tickMillis: Int) async {
        while !Task.isCancelled {
            let now = WallClock.now()
            await coordinator.expireDueLeases(now: now)
            if let deadline = await coordinator.nextDeadline, deadline <= now { await coordinator.enforceDeadlines(now: now) }
            if await coordinator.grantPassIsOwed { await coordinator.grantServiceLeases(now: now) }
            try? await Task.sleep(for: .milliseconds(tickMillis))
        }
    }

    /// Writes `{"http": URL}` atomically (a temporary file renamed into place).
    static func writeReadyFile(_ path: String, http: String) {
        let body = "{\"http\": \"\(http)\"}\n"
        let temporary = path + ".tmp-\(getpid())"
        guard FileManager.default.createFile(atPath: temporary, contents: Data(body.utf8)) else { return }
        _ = rename(temporary, path)
    }
}

extension String {
    func leftPadded(to length: Int) -> String { String(repeating: "0", count: max(0, length - count)) + self }
}
