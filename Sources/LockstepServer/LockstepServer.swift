import Foundation
import GRPCCore
import LockstepH2
import Hummingbird
import HummingbirdCore
import NIOSSL
import LockstepCore
import LockstepEngine
import LockstepPostgres
import LockstepStore
import Logging
import PostgresNIO
import NIOCore
import ServiceLifecycle
import Synchronization
import UnixSignals
import LockstepGRPC
import LockstepHTTP
import LockstepService
import LockstepWebhooks

/// `lockstep serve`: the coordinator on a data directory, its timers, and the API on HTTP.
public enum LockstepServer {
    /// Runs until SIGTERM or SIGINT, then stops accepting requests and returns: the services of
    /// `build`, in one `ServiceGroup` that owns the signal handling. `metrics` should also be the
    /// process's backend (`ServerMetrics.bootstrapProcess`, done once in `main`).
    public static func run(_ options: Options, metrics: ServerMetrics = ServerMetrics()) async throws {
        var configured = Logger(label: "lockstep")
        configured.logLevel = .info
        let logger = configured
        let group: ServiceGroup
        switch options.store {
        case .sqlite:
            let server = try await build(options, metrics: metrics, logger: logger)
            group = ServiceGroup(configuration: server.groupConfiguration(logger: logger))
        case .postgres(let client, _):
            // The client first: it must run before the log can be opened, and it stops last.
            group = ServiceGroup(configuration: ServiceGroupConfiguration(
                services: [client, ServerOnPostgres(options: options, metrics: metrics, logger: logger)], logger: logger))
        }
        try await runWithStopBound(group, millis: options.stopMillisMax, logger: logger)
    }

    /// Logs `why` and ends the process with status 1 at once (no graceful anything).
    static func exitNow(_ why: String, logger: Logger) -> Never {
        logger.error("\(why); exiting now with status 1. Everything acknowledged is in the log")
        fflush(nil)
        _exit(1)
    }

    /// Runs `group` until it ends. SIGTERM and SIGINT (trapped here before the group starts, so none is
    /// missed) stop it gracefully, for `millis` at most: a stop that has not ended by then (a store that
    /// stopped answering keeps a request's append, and so the gRPC server's stop, waiting for its outcome)
    /// is logged and the process exits with status 1 at once, as on a second signal. For the log that is as safe as a crash
    /// (everything acknowledged is in it); what a graceful stop does last is skipped (the signed
    /// shutdown checkpoint, the leadership lease's release, the last webhook cursors).
    static func runWithStopBound(_ group: ServiceGroup, millis: Int64, logger: Logger) async throws {
        let signals = await UnixSignalsSequence(trapping: .sigterm, .sigint)
        try await withThrowingTaskGroup(of: Bool.self) { tasks in
            tasks.addTask {
                try await group.run()
                return true
            }
            tasks.addTask {
                // The first signal stops the group gracefully and starts the clock; a second one, or the
                // clock running out, ends the process at once. (Cancelled, all of it, when the group ends.)
                await withTaskGroup(of: Void.self) { clock in
                    var stopping = false
                    for await signal in signals {
                        guard !stopping else { exitNow("\(signal) again during the graceful stop", logger: logger) }
                        stopping = true
                        logger.notice("\(signal): stopping gracefully, for \(millis) ms at most (a second SIGTERM or SIGINT exits at once)")
                        await group.triggerGracefulShutdown()
                        clock.addTask {
                            guard (try? await Task.sleep(for: .milliseconds(millis))) != nil else { return }
                            exitNow("the graceful stop did not end within \(millis) ms (a store that stopped answering?)", logger: logger)
                        }
                    }
                }
                return false
            }
            // The group's end (or failure) decides; the stop watch is then cancelled.
            while let groupEnded = try await tasks.next(), !groupEnded {}
            tasks.cancelAll()
        }
    }

    /// Builds the whole server from `options` (the log opened, the coordinator replayed, both listeners
    /// configured; its clocks are `options.wallClock` and `options.monotonicClock`) and `metrics` (a
    /// registry of its own, not the process's) without starting anything: its services run in a
    /// `ServiceGroup` the caller owns, so a test runs it in process (twice, if it likes) and ends it with
    /// `triggerGracefulShutdown`.
    public static func build(_ options: Options, metrics: ServerMetrics, logger: Logger) async throws -> Built {
        let mutualTLS = options.tls != nil && options.tlsClientCA != nil
        // One authentication path for both transports: a verified client certificate, or the
        // `authorization` header or metadata.
        var authenticating: @Sendable (String?, String?) throws(APIError) -> Principal
        switch (options.dev, options.auth) {
        case (true, .some): throw StartError.devWithConfig
        case (false, .none): throw StartError.noAuthorization
        case (true, .none):
            for host in [options.httpHost, options.grpcHost] where !["127.0.0.1", "::1", "localhost"].contains(host) {
                throw StartError.notLoopback(host)
            }
            logger.warning("DEVELOPMENT MODE: no authentication; every caller may do everything (a bearer token as:NAME acts as NAME, e.g. a second person approving). Loopback only. Never use --dev in production.")
            authenticating = { header, _ throws(APIError) in try Principal.developer(authorization: header) }
        case (false, .some(let auth)):
            authenticating = { header, certificate throws(APIError) in try auth.authenticate(header, clientCertificate: certificate) }
        }
        if let replica = options.replica {
            // Every operation that writes is refused after the roles are checked, naming the writer.
            let plain = authenticating
            authenticating = { header, certificate throws(APIError) in
                var principal = try plain(header, certificate)
                principal.writesElsewhere = replica.refusal()
                return principal
            }
        }
        let authenticate = authenticating
        let console = Self.consoleAccess(options, authenticate: authenticate)
        let devConsoleSecret = console.devCode

        // Every connection is a file: take the hard limit, and keep a reserve below it for the log,
        // snapshots and the runtime (running out kills the process in libdispatch's worker monitor).
        var limits = options.limits
        if let files = OpenFileLimit.raise() {
            limits.connectionsMax = OpenFileLimit.connectionsFitting(soft: files.soft, configured: limits.connectionsMax)
            logger.info("open files: soft limit \(files.soft), hard limit \(files.hard); connections at most \(limits.connectionsMax) (\(OpenFileLimit.reserve) files kept in reserve), \(limits.connectionsPerPeerMax) per peer address")
        } else {
            logger.warning("could not read the open-file limit; connections at most \(limits.connectionsMax)")
        }
        let gate = ConnectionGate(limits: .init(connectionsMax: limits.connectionsMax, connectionsPerPeerMax: limits.connectionsPerPeerMax,
                                                streamResetsPerPeerMax: limits.streamResetsPerPeerMax))
        let overResetBudget: @Sendable () -> Void = { metrics.refusedConnection(ConnectionGate.Refusal.resets.rawValue) }
        let refused: @Sendable (ConnectionGate.Refusal) -> Void = { metrics.refusedConnection($0.rawValue) }
        let idle = TimeAmount.milliseconds(limits.connectionIdleMillisMax)
        let stalled = TimeAmount.milliseconds(limits.stalledReaderMillisMax)
        let cutStalled: @Sendable () -> Void = { metrics.stalledReadersCut.increment() }
        let writeHealth = WriteHealth(logger: logger)
        let observeCommit: @Sendable (LogCommit) -> Void = { commit in
            writeHealth.committed()
            metrics.commits.increment()
            metrics.appendedEvents.increment(by: commit.events)
            metrics.commitBatch.record(commit.events)
            metrics.commitDuration.recordNanoseconds(Int64(clamping: commit.durationNanos))
        }
        let observeFailure: @Sendable (EventLogError) -> Void = { error in
            writeHealth.failed(error)
            metrics.failedCommit(error.code)
        }
        let log: any EventLog
        switch options.store {
        case .sqlite(let path):
            var logOptions = SQLiteEventLog.Options()
            logOptions.databaseBytesMax = options.logBytesMax
            log = try SQLiteEventLog(path: path, options: logOptions, observer: observeCommit, failureObserver: observeFailure)
        case .postgres(let client, let address):
            guard options.logBytesMax == nil else { throw StartError.quotaNeedsSQLite }
            var logOptions = PostgresEventLog.Options()
            logOptions.observer = observeCommit
            logOptions.failureObserver = observeFailure
            let postgres = try await PostgresEventLog.open(client: client, options: logOptions, logger: logger)
            if let epoch = options.writerEpoch { await postgres.fence(epoch: epoch) }
            // A replica never writes: should anything try, the fence (no epoch is negative) stops it.
            if options.replica != nil { await postgres.fence(epoch: -1) }
            log = postgres
            logger.info("the event log is on PostgreSQL at \(address)\(options.writerEpoch.map { ", written under epoch \($0)" } ?? "")")
        }
        let coordinator = try await Coordinator.open(log: log, monotonic: options.monotonicClock)
        let wakeups = Wakeups(policy: .oldest, parkedMax: options.limits.parkedPollsMax, parkedPerOwnerMax: options.limits.parkedPollsPerPrincipalMax)
        let watchWakeups = Wakeups(policy: .everyone, parkedMax: options.limits.watchesMax, parkedPerOwnerMax: options.limits.watchesPerPrincipalMax)
        // Polls wait on their service, watches on their migration: a change wakes only those concerned,
        // right after its append is folded in (signalling takes a short lock and never blocks).
        let timerWake = TimerWake()
        let isReplica = options.replica != nil
        metrics.appliedSequence.record(Int64(clamping: await coordinator.appliedSequence))
        let webhookWake = WebhookWake()
        await coordinator.observeChanges { change, committedAt in
            timerWake.signal()
            webhookWake.signal()
            wakeups.signalSteps(of: change, committedAt: committedAt, stepServices: coordinator.stepServices)
            watchWakeups.signal(change.migration.map { [$0.rawValue] } ?? [])
            // What the writer counts (migrations started, settled, steps timed) is counted once, by it.
            if !isReplica { metrics.record(change) }
        }
        // A step an append readies is leased, in that append, to the longest-parked poll of its service,
        // which then needs no commit of its own. Only the writer appends.
        if !isReplica { await coordinator.claimSteps { wakeups.claim($0) } }
        // Recorded times and every duration measured through them run on the monotonic clock, from the
        // wall clock at start (never before the log's last recorded time).
        let serverClock = CoordinatorClock(wall: options.wallClock, monotonic: options.monotonicClock, notBefore: try await History.lastRecordedAt(log))
        let clock: @Sendable () -> Instant = { serverClock.now() }
        var agents = AgentAPI(coordinator: coordinator, wakeups: wakeups, limits: limits, clock: clock)
        agents.observeWakeUp = { metrics.pollWakeUp.record(duration: $0) }
        if let held = options.leadershipHeld { agents.leadershipHeld = held }
        var operators = OperatorAPI(coordinator: coordinator, clock: clock) {
            String(UInt32.random(in: 0...UInt32.max), radix: 16).leftPadded(to: 8)
        }
        // Webhooks are delivered by the writer: a replica neither delivers nor lists deliveries.
        let webhookDeliveries = WebhookDeliveryLog()
        if let webhooks = options.webhooks, !isReplica {
            operators.webhooks = (webhooks.webhooks.map(\.name), webhookDeliveries)
        }
        let bound = BoundAddresses()
        let publicOrigin = options.publicURL?.origin
        operators.consoleLinks = (console.links, Self.consoleAddress(options, bound: bound))
        let watches = WatchAPI(coordinator: coordinator, wakeups: watchWakeups,
                               open: OpenWatches(openMax: options.limits.watchesMax, perPrincipalMax: options.limits.watchesPerPrincipalMax))
        let history = HistoryAPI(coordinator: coordinator, limits: options.limits)
        let stages = StageAPI(coordinator: coordinator)
        let router = Router(context: LockstepRequestContext.self)
        // The gauges are read when they are scraped, so they are current whatever the timers do.
        let refreshGauges: @Sendable () async -> Void = {
            metrics.parkedPolls.record(wakeups.parkedCount)
            metrics.openWatches.record(watches.open.count)
            metrics.openConnections.record(gate.openCount)
            if let heap = ServerMetrics.heapBytesInUse() { metrics.heapInUse.record(heap) }
            metrics.stepLeasesHeld.record(await coordinator.liveStepLeaseCount)
            metrics.appliedSequence.record(Int64(clamping: await coordinator.appliedSequence))
            metrics.serviceLeasesHeld.record(await coordinator.state.serviceLeases.holders.count)
            let now = clock()
            metrics.freezesInForce.record(await coordinator.state.freezes.values.filter { $0.isActive(at: now) }.count)
            metrics.nodesWaitingForWindow.record(await coordinator.state.nodesWaitingForWindow(at: now))
        }
        let routes = HTTPRoutes(agents: agents, operators: operators, watches: watches, history: history, stages: stages, limits: limits, metrics: metrics,
                   refreshGauges: refreshGauges,
                   authenticate: { request, channel throws(APIError) in
                       let certificate = mutualTLS ? await ClientIdentity.fingerprint(of: channel) : nil
                       return try authenticate(request.headers[.authorization], certificate)
                   },
                   authenticateOnLoop: { authorization, connection throws(APIError) in
                       try authenticate(authorization, mutualTLS ? ClientIdentity.fingerprintOnLoop(of: connection) : nil)
                   },
                   writeProblem: {
                       if let replica = options.replica {
                           let applied = await coordinator.appliedSequence
                           if let failing = replica.following.withLock({ $0 }) {
                               return "replica: NOT following the log, reads are as of sequence \(applied): \(failing); \(replica.text.withLock { $0 })"
                           }
                           return "replica: serving reads, applied through sequence \(applied); \(replica.text.withLock { $0 })"
                       }
                       if await coordinator.isStopped { return "writes stopped after a storage error: restart after checking the storage (the disk, or the PostgreSQL database)" }
                       return writeHealth.failing.map { "appends are failing (\($0.code)): \($0.description)" }
                   }, refuseBrowsers: options.dev, console: console)
        let served = routes.register(on: router)
        // The JSON side serves exactly the operation table (the gRPC side is held to it by its generated
        // service protocols and `OperationTableTests`).
        precondition(Set(served) == Set(APIOperation.all) && served.count == APIOperation.all.count, "the JSON routes are not the operation table: \(served.map(\.name)) against \(APIOperation.all.map(\.name))")
        // gRPC on the HTTP/2 engine (libnghttp2, `LockstepH2`): its limits from the API's.
        var h2Limits = H2Limits()
        h2Limits.concurrentStreamsMax = UInt32(clamping: limits.grpcConcurrentStreamsMax)
        // One request message and its 5-byte prefix; a larger message is RESOURCE_EXHAUSTED.
        h2Limits.requestBodyBytesMax = limits.requestBodyBytesMax.addingReportingOverflow(5).overflow ? .max : limits.requestBodyBytesMax + 5
        h2Limits.connectionIdleMillisMax = limits.connectionIdleMillisMax
        h2Limits.stalledReaderMillisMax = limits.stalledReaderMillisMax
        h2Limits.requestBodyMillisMax = limits.requestBodyMillisMax
        // A client silent for half the idle limit is pinged, and closed if it stays silent min(a quarter of
        // the idle limit, 10 s) more: a dead peer does not hold its parked polls and watches.
        h2Limits.keepaliveMillis = max(limits.connectionIdleMillisMax / 2, 50)
        h2Limits.keepaliveTimeoutMillis = min(max(limits.connectionIdleMillisMax / 4, 25), 10_000)
        let grpcTLSContext = try options.tls.map { tls in
            try NIOSSLContext(configuration: TLSPolicy.configuration(tls, clientCA: options.tlsClientCA, protocols: ["grpc-exp", "h2"]))
        }
        let grpcHost = options.grpcHost == "localhost" ? "127.0.0.1" : options.grpcHost
        var grpcConfiguration = H2GRPCServerTransport.Configuration(
            host: grpcHost, port: options.grpcPort, limits: h2Limits, messageBytesMax: limits.requestBodyBytesMax,
            configureListener: { listener in
                listener.pipeline.addHandler(ConnectionAdmission(gate: gate, listener: "gRPC", logger: logger, refused: refused), position: .first)
            },
            configureConnection: { connection in
                if let grpcTLSContext { try connection.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: grpcTLSContext)) }
            },
            makeObserver: { connection in
                StreamBudget(gate: gate, peer: connection.remoteAddress?.ipAddress ?? "unknown", channel: connection, overBudget: overResetBudget, stalled: cutStalled)
            })
        grpcConfiguration.tls = options.tls != nil
        // What the transport refuses itself still carries a stable code, as every other error does.
        grpcConfiguration.errorCodeTrailer = "lockstep-error-code"
        grpcConfiguration.refusalCode = { why in
            let code: ErrorCode = switch why {
            case .messageTooLarge: .bodyTooLarge
            case .headersTooLarge: .resourceExhausted
            case .unsupportedEncoding, .malformed: .malformedRequest
            case .noMethod: .routeNotFound
            case .shuttingDown: .shuttingDown
            case .requestTimeout: .requestTimeout
            }
            return code.rawValue
        }
        // The agent calls that need no hop are answered on the event loop they arrive on (GRPCOnLoop.swift).
        // At most 256 polls served from the event loops (JSON over HTTP/2, gRPC) look at the coordinator
        // at once; the rest wait in line as closures, at most 131,072 (PollLane).
        let pollLane = PollLane(limit: options.pollLane.running, waitingMax: options.pollLane.waitingMax, overflows: metrics.pollLaneOverflows)
        let agentService = GRPCAgentService(agents: agents, metrics: metrics, authenticate: authenticate, lane: pollLane)
        grpcConfiguration.onLoop = { call in agentService.onLoop(call) }
        // The agents' calls run on their connection's loop when their message is small (as a poll must be
        // to be decoded there); a larger one, and operators' and reviewers' calls (replays, exports,
        // large plans and answers), on Swift's global executor.
        grpcConfiguration.runsOnLoop = GRPCAgentService.runsOnLoop
        // With client certificates, each RPC's is read where it arrives, not with a hop from its handler.
        if mutualTLS { grpcConfiguration.clientIdentity = { ClientIdentity.fingerprintOnLoop(of: $0) } }
        let grpcTransport = H2GRPCServerTransport(configuration: grpcConfiguration, logger: logger)
        // JSON: HTTP/1.1 on Hummingbird, HTTP/2 on the engine, one port and one route table (the
        // router); over TLS, ALPN decides (h2, else HTTP/1.1); in plaintext, the first bytes (h2c with
        // prior knowledge, H2CSniffing.swift); a connection that sends nothing is closed after the idle limit.
        var jsonLimits = h2Limits
        // One byte over the API's limit reaches the route, which refuses it with its ErrorBody; more is
        // refused by the engine as it arrives, with the same body.
        jsonLimits.requestBodyBytesMax = limits.requestBodyBytesMax.addingReportingOverflow(1).overflow ? .max : limits.requestBodyBytesMax + 1
        let jsonOnEngine = JSONOnEngine(router: router.buildResponder(), poll: EnginePoll(routes: routes, serverName: "lockstep", lane: pollLane), logger: logger, serverName: "lockstep",
                                        refusalBody: routes.engineRefusalBody)
        let jsonTLS = try options.tls.map { tls in
            try NIOSSLContext(configuration: TLSPolicy.configuration(tls, clientCA: options.tlsClientCA, protocols: ["h2", "http/1.1"]))
        }
        // A graceful shutdown ends both ports' connections, HTTP/2 and HTTP/1.1, within the same grace as gRPC's.
        jsonLimits.shutdownGraceMillis = grpcConfiguration.graceMillis
        let engineLimits = jsonLimits
        let jsonGrace = TimeAmount.milliseconds(grpcConfiguration.graceMillis)
        // HTTP/1.1 holds a header list to the engine's limits, with the engine's answer.
        let headerListRefusal = routes.engineRefusalBody(status: 431)
        let server = HTTPServerBuilder { responder in
            HTTP1AndEngineChannel(
                responder: responder,
                http1: .init(additionalChannelHandlers: [HeaderListLimit(limits: engineLimits, refusalBody: headerListRefusal),
                                                         ClientPresence(), StalledReaderCutoff(limit: stalled, cut: cutStalled), RefusedBodyCloser()],
                             idleTimeout: idle),
                tls: jsonTLS, prefaceReadTimeout: idle, shutdownGrace: jsonGrace,
                makeEngine: { connection, work in
                    try H2ServerHandler(limits: engineLimits, responder: jsonOnEngine.serving(into: work), logger: logger,
                                    observer: StreamBudget(gate: gate, peer: connection.remoteAddress?.ipAddress ?? "unknown", channel: connection,
                                                           overBudget: overResetBudget, stalled: cutStalled))
                })
        }
        let scheme = options.tls == nil ? "http" : "https"
        let grpc = GRPCServer(transport: grpcTransport, services: [
            agentService,
            GRPCMigrationService(operators: operators, watches: watches, metrics: metrics, authenticate: authenticate),
            GRPCHistoryService(history: history, metrics: metrics, authenticate: authenticate),
            GRPCStageService(stages: stages, metrics: metrics, authenticate: authenticate),
        ], interceptors: [GRPCErrorCodes()])
        let (httpBound, httpBoundSink) = AsyncStream<String>.makeStream()
        let readyFile = options.readyFile
        let app = Application(
            router: router,
            server: server,
            configuration: .init(address: .hostname(options.httpHost, port: options.httpPort), serverName: "lockstep"),
            onServerRunning: { channel in
                try? await channel.pipeline.addHandler(ConnectionAdmission(gate: gate, listener: "HTTP", logger: logger, refused: refused), position: .first).get()
                let port = channel.localAddress?.port ?? options.httpPort
                logger.info("serving JSON over HTTP/1.1 and HTTP/2 on \(scheme)://\(bracketed(options.httpHost)):\(port)")
                if options.publicURL == nil, isUnspecified(options.httpHost) {
                    logger.warning("listening on \(bracketed(options.httpHost)) with no --public-url: webhook payloads' console links name that address, which no browser can open, and console sign-in links are refused; give --public-url (where browsers reach this server), or the webhooks' console_url")
                }
                httpBoundSink.yield("\(scheme)://\(bracketed(options.httpHost)):\(port)")
                httpBoundSink.finish()
            },
            logger: logger)

        let timers = TimerService { () async -> Void in
            await CoordinatorTimers.run(coordinator, clock: serverClock, tickMillis: options.timerTickMillis, idleMillisMax: options.timerIdleMillisMax, wake: timerWake) {
                if let step = serverClock.wallClockStep(thresholdMillis: 1_000) {
                    metrics.wallClockSteps.increment()
                    logger.warning("the wall clock stepped \(step > 0 ? "forward" : "back") by \(step.magnitude) ms; Lockstep's clock keeps the monotonic pace (durations, recorded times and deadlines are unaffected until restart)")
                }
            } expired: { count in
                metrics.stepLeasesExpired.increment(by: count)
            } failed: { error in
                logger.error("a timer's command failed: \(error)")
            } snapshotFailed: { error in
                logger.warning("a snapshot could not be written (start-up will replay more of the log): \(error)")
            }
        }
        let announcer = AnnouncerService {
            guard let grpcAddress = try? await grpcTransport.listeningAddress, let port = grpcAddress.port else { return }
            logger.info("serving gRPC\(options.tls == nil ? "" : mutualTLS ? " over mutual TLS" : " over TLS") on \(bracketed(options.grpcHost)):\(port)")
            var iterator = httpBound.makeAsyncIterator()
            guard let http = await iterator.next() else { return }
            let grpc = "\(bracketed(options.grpcHost)):\(port)"
            let signIn = devConsoleSecret.map { http + "/ui#code=" + $0 }
            if let signIn { logger.notice("the console (--dev): \(signIn)") }
            if let readyFile, !isReplica, !writeReadyFile(readyFile, grpc: grpc, http: http, consoleSignIn: signIn) {
                logger.error("could not write the ready file \(readyFile)")
            }
            bound.set(grpc: grpc, http: http)
        }
        // On graceful shutdown (SIGTERM/SIGINT), before the listeners wait for in-flight requests: answer
        // parked polls and end watches at once, so it takes milliseconds, not a poll's whole wait. (The
        // group then shuts the rest down in reverse order; a service that stopped out of turn, as gRPC
        // told directly would, fails the group.)
        let closer = ShutdownService {
            bound.close()
            wakeups.close()
            watchWakeups.close()
        }
        // The writer runs the timers; a replica instead follows the writer's appends from the log.
        let follower: any Service
        if case .postgres(let client, _) = options.store, let replica = options.replica {
            follower = ReplicaTail(coordinator: coordinator, client: client, catchUpMillis: options.replicaCatchUpMillis, logger: logger) { applied, failing in
                metrics.appliedSequence.record(Int64(clamping: applied))
                replica.following.withLock { $0 = failing }
            }
        } else {
            follower = timers
        }
        var services: [any Service] = [app, GRPCServerService(server: grpc), wakeups, watchWakeups, follower]
        if let webhooks = options.webhooks, !isReplica {
            let cursors: any WebhookCursors = switch options.store {
            case .sqlite(let path): WebhookCursorFile(path: URL(fileURLWithPath: path).deletingLastPathComponent().appendingPathComponent("webhooks.cursor.json").path)
            case .postgres(let client, _): PostgresWebhookCursors(client: client)
            }
            services.append(WebhookDispatcher(config: webhooks, log: log, start: await coordinator.state, cursors: cursors, deliveries: webhookDeliveries,
                                              metrics: metrics, wake: webhookWake, wallClock: options.wallClock, logger: logger,
                                              consoleBase: {
                                                  if let publicOrigin { return publicOrigin }
                                                  return await bound.wait()?.http ?? ""
                                              }))
        }
        if let signing = options.signing, !isReplica {
            // First, so stopped last: the shutdown checkpoint comes after every other write.
            services.insert(CheckpointService(options: signing, coordinator: coordinator, log: log, wake: webhookWake, clock: clock,
                                              metrics: metrics, logger: logger), at: 0)
            logger.info("signing checkpoints with key \(signing.signer.keyID) every \(signing.everyEvents) events or \(signing.everyMillis) ms of activity, and at shutdown\(signing.directory.map { "; kept in \($0)" } ?? "")")
        } else if !isReplica {
            logger.notice("checkpoints are not signed (--no-signing or --dev): a truncated or replaced log cannot be told from the real one (docs/history.md)")
        }
        services += [announcer, closer]
        return Built(services: services, bound: bound)
    }

    /// Writes `{"grpc": ADDRESS, "http": URL, "console": URL}` (and under `--dev` `"console_sign_in"`, the
    /// console's address with its sign-in secret) atomically (a temporary file renamed into place).
    static func writeReadyFile(_ path: String, grpc: String, http: String, consoleSignIn: String?) -> Bool {
        let signIn = consoleSignIn.map { ", \"console_sign_in\": \"\($0)\"" } ?? ""
        let body = "{\"grpc\": \"\(grpc)\", \"http\": \"\(http)\", \"console\": \"\(http)/ui\"\(signIn)}\n"
        let temporary = path + ".tmp-\(getpid())"
        guard FileManager.default.createFile(atPath: temporary, contents: Data(body.utf8)) else { return false }
        return rename(temporary, path) == 0
    }

    /// An IPv6 literal in brackets, as URLs and gRPC targets need it.
    static func bracketed(_ host: String) -> String { host.contains(":") ? "[\(host)]" : host }
}
