import GRPCCore
import Synchronization
import GRPCNIOTransportHTTP2
import LockstepAPI
import LockstepCore
import LockstepWire

/// Why a call failed: the server's stable code and sentence (docs/api.md, Errors), or a transport
/// problem (`unavailable`: the server could not be reached).
public struct LockstepClientError: Error, Hashable, Sendable, CustomStringConvertible {
    public var code: String
    public var message: String
    /// With `not_writer`: the writer's address, as the replica named it (`lockstep-writer`).
    public var writer: String?
    /// A write whose answer never came (the connection was lost after the request may have gone out, its
    /// deadline passed, or the server could not tell whether it committed): it may have been carried out.
    public var mayHaveRun = false

    public init(code: String, message: String) {
        self.code = code
        self.message = message
    }

    init(_ error: RPCError) {
        let code = error.metadata[stringValues: "lockstep-error-code"].first(where: { _ in true })
        if let code {
            let message = error.message.hasPrefix(code + ": ") ? String(error.message.dropFirst(code.count + 2)) : error.message
            self.init(code: code, message: message)
            writer = error.metadata[stringValues: "lockstep-writer"].first(where: { _ in true })
        } else {
            self.init(code: Self.transportCode(error.code).rawValue, message: error.message)
        }
    }

    /// The code in the shared list, or nil for one this client does not know (a newer server's).
    public var errorCode: ErrorCode? { ErrorCode(rawValue: code) }

    /// Whether repeating the call later, unchanged, may succeed (`ErrorCode.isTransient`); an unknown code is not.
    public var isTransient: Bool { errorCode?.isTransient ?? false }

    public var description: String { "\(code): \(message)" }

    /// The code for a gRPC status that carries no Lockstep code (the transport's own failures), spelt as
    /// the protocol spells it: `deadline_exceeded`, not Swift's `deadlineexceeded`.
    public static func transportCode(_ code: RPCError.Code) -> ErrorCode {
        switch code {
        case .cancelled: .cancelled
        case .invalidArgument: .invalidArgument
        case .deadlineExceeded: .deadlineExceeded
        case .notFound: .notFound
        case .alreadyExists: .alreadyExists
        case .permissionDenied: .permissionDenied
        case .resourceExhausted: .resourceExhausted
        case .failedPrecondition: .failedPrecondition
        case .aborted: .aborted
        case .outOfRange: .outOfRange
        case .unimplemented: .unimplemented
        case .internalError: .internalError
        case .unavailable: .unavailable
        case .dataLoss: .dataLoss
        case .unauthenticated: .unauthenticated
        default: .unknown
        }
    }
}

/// The Swift client of the Lockstep API over gRPC: the CLI and agents use it. Requests and answers are
/// the messages of `Protos/lockstep/v1/agent.proto`; every call carries the bearer token, if any.
///
/// ```swift
/// try await LockstepClient.connect(to: "127.0.0.1:9090", token: token) { lockstep in
///     let polled = try await lockstep.poll(.with { $0.service = "orders"; $0.agentID = "orders-1"; $0.waitMs = 20_000 })
/// }
/// ```
public struct LockstepClient: Sendable {
    /// The generated clients of one server.
    struct Connection: Sendable {
        let agents: Lockstep_V1_AgentService.Client<HTTP2ClientTransport.Posix>
        let migrations: Lockstep_V1_MigrationService.Client<HTTP2ClientTransport.Posix>
        let history: Lockstep_V1_HistoryService.Client<HTTP2ClientTransport.Posix>
        let stages: Lockstep_V1_StageService.Client<HTTP2ClientTransport.Posix>
    }

    /// Which of several servers calls go to: the next one after a call that could not reach the current
    /// one (`unavailable`) or that it refused because it is going away (`shutting_down`).
    final class Rotation: Sendable {
        let current = Mutex(0)
        let count: Int
        init(count: Int) { self.count = count }
        func advance(from index: Int) {
            current.withLock { if $0 == index { $0 = (index + 1) % count } }
        }
        /// Moves from `index` to `target` (a replica named the writer); false if it was no longer at `index`.
        func move(from index: Int, to target: Int) -> Bool {
            current.withLock {
                guard $0 == index else { return false }
                $0 = target
                return true
            }
        }
    }

    /// Whether anything a caller did through this client may have taken effect (`mayHaveHadEffects`).
    final class Effects: Sendable {
        let happened = Mutex(false)
        /// A write went out (and succeeded, or its outcome is open).
        func note() { happened.withLock { $0 = true } }
    }

    let connections: [Connection]
    let targets: [String]
    let rotation: Rotation
    let effects = Effects()
    let metadata: Metadata
    /// How long a call may take before it fails `deadline_exceeded` and the next call goes to the next
    /// server (a poll: its wait on top; a history call: 10 minutes at least). Without it a call to a
    /// server that froze (SIGSTOP, a paused VM) would wait for ever.
    let timeout: Duration

    /// The default `timeout`.
    public static let callTimeoutDefault = Duration.seconds(60)
    /// The least time a history call (verify, a state, an explanation, a diff, a page of events) gets:
    /// it reads the log on the server, as long as the log is.
    static let historyTimeoutMin = Duration.seconds(600)
    /// The largest message a call takes, in bytes: a page of history with room for its envelopes.
    static let messageBytesMax = 32 << 20
    /// HTTP/2 PINGs on every connection, every 30 s, each answered within 10 s or the connection closes:
    /// a watch or an export from a server that froze ends too. Also while no call is in progress: the
    /// transport stops its timer when a connection's calls drop to none and never starts it again, so a
    /// watch opened after another call would have none. (The server still closes a connection idle
    /// past `--idle-timeout-ms`: PINGs do not count as work there.)
    static let keepalive = HTTP2ClientTransport.Config.Keepalive(time: .seconds(30), timeout: .seconds(10), allowWithoutCalls: true)

    /// Whether a call of this client may have changed something on a server: a write that succeeded, or
    /// whose outcome is open (`LockstepClientError.mayHaveRun`). Once it has, repeating the caller's work
    /// on the next server (as the CLI does after `unavailable`) could carry a write out twice; before, it
    /// cannot. (Reads, streams included, never count: a caller that prints as it reads goes on from where
    /// it stopped, as the CLI's watches and exports do.)
    public var mayHaveHadEffects: Bool { effects.happened.withLock { $0 } }

    /// The server calls go to now (`HOST:PORT`).
    public var currentTarget: String { targets[rotation.current.withLock { $0 }] }

    /// How many servers this client was given.
    public var targetCount: Int { targets.count }

    /// Connects to `target` (`HOST:PORT`, `[IPv6]:PORT`), runs `body` with a client, then closes the
    /// connection. `trustedCertificate` (a PEM file) switches to TLS and trusts only that certificate.
    public static func connect<Result: Sendable>(
        to target: String, token: String? = nil, trustedCertificate: String? = nil, timeout: Duration = callTimeoutDefault,
        _ body: (LockstepClient) async throws -> Result
    ) async throws -> Result {
        try await connect(to: [target], token: token, trustedCertificate: trustedCertificate, timeout: timeout, body)
    }

    /// Connects to several servers (the coordinators of one PostgreSQL log, docs/operations.md): calls go
    /// to one at a time; a call that cannot reach it fails (`unavailable`, transient) and the next call
    /// goes to the next server, so a caller that retries transient failures (the reference agent does)
    /// follows a takeover, or the loss of the server it talked to, by itself.
    public static func connect<Result: Sendable>(
        to targets: [String], token: String? = nil, trustedCertificate: String? = nil, timeout: Duration = callTimeoutDefault,
        _ body: (LockstepClient) async throws -> Result
    ) async throws -> Result {
        guard !targets.isEmpty, targets.count <= 16 else {
            throw LockstepClientError(code: ErrorCode.invalidArgument.rawValue, message: "give 1...16 server addresses, not \(targets.count)")
        }
        let security: HTTP2ClientTransport.Posix.TransportSecurity = trustedCertificate.map { file in
            .tls { $0.trustRoots = .certificates([.file(path: file, format: .pem)]) }
        } ?? .plaintext
        var clients: [GRPCClient<HTTP2ClientTransport.Posix>] = []
        for target in targets {
            guard let colon = target.lastIndex(of: ":"), let port = Int(target[target.index(after: colon)...]), (1...65_535).contains(port) else {
                throw LockstepClientError(code: ErrorCode.invalidArgument.rawValue, message: "the server address must be HOST:PORT, not \(target)")
            }
            let host = String(target[..<colon]).trimmingCharacters(in: ["[", "]"])
            let resolvable: any ResolvableTarget = host.contains(":") ? .ipv6(address: host, port: port) : .dns(host: host, port: port)
            var config = HTTP2ClientTransport.Posix.Config.defaults
            config.connection.keepalive = keepalive
            clients.append(GRPCClient(transport: try HTTP2ClientTransport.Posix(target: resolvable, transportSecurity: security, config: config)))
        }
        let lockstep = LockstepClient(
            connections: clients.map { Connection(agents: .init(wrapping: $0), migrations: .init(wrapping: $0), history: .init(wrapping: $0),
                                                  stages: .init(wrapping: $0)) },
            targets: targets, rotation: Rotation(count: targets.count), metadata: token.map { ["authorization": "Bearer \($0)"] } ?? [:],
            timeout: timeout)
        return try await withThrowingTaskGroup(of: Void.self) { group in
            for client in clients { group.addTask { try await client.runConnections() } }
            defer { for client in clients { client.beginGracefulShutdown() } }
            return try await body(lockstep)
        }
    }

    // MARK: Agents

    public func poll(_ request: Lockstep_V1_PollRequest) async throws(LockstepClientError) -> Lockstep_V1_PollResponse {
        try await call(waiting: .milliseconds(Int64(request.waitMs))) { try await $0.agents.poll(request, metadata: $1, options: $2) }
    }
    /// `timeout`: a bound for this call shorter than the client's (an agent gives its heartbeat interval:
    /// a heartbeat stuck on a server that froze must give way to the next, on the next address, before
    /// the step's lease runs out).
    public func heartbeat(_ request: Lockstep_V1_HeartbeatRequest, timeout: Duration? = nil) async throws(LockstepClientError) -> Lockstep_V1_HeartbeatResponse {
        try await call(within: timeout) { try await $0.agents.heartbeat(request, metadata: $1, options: $2) }
    }
    public func reportProgress(_ request: Lockstep_V1_ReportProgressRequest, timeout: Duration? = nil) async throws(LockstepClientError) -> Lockstep_V1_ReportProgressResponse {
        try await call(within: timeout) { try await $0.agents.reportProgress(request, metadata: $1, options: $2) }
    }
    public func complete(_ request: Lockstep_V1_CompleteRequest) async throws(LockstepClientError) -> Lockstep_V1_CompleteResponse {
        try await call { try await $0.agents.complete(request, metadata: $1, options: $2) }
    }
    public func fail(_ request: Lockstep_V1_FailRequest) async throws(LockstepClientError) -> Lockstep_V1_FailResponse {
        try await call { try await $0.agents.fail(request, metadata: $1, options: $2) }
    }

    // MARK: Operators and approvers

    public func applyPlan(_ request: Lockstep_V1_ApplyPlanRequest) async throws(LockstepClientError) -> Lockstep_V1_ApplyPlanResponse {
        try await call { try await $0.migrations.applyPlan(request, metadata: $1, options: $2) }
    }
    public func validatePlan(_ request: Lockstep_V1_ApplyPlanRequest) async throws(LockstepClientError) -> Lockstep_V1_ValidatePlanResponse {
        try await call(writes: false) { try await $0.migrations.validatePlan(request, metadata: $1, options: $2) }
    }
    public func plans() async throws(LockstepClientError) -> Lockstep_V1_ListPlansResponse {
        try await call(writes: false) { try await $0.migrations.listPlans(.init(), metadata: $1, options: $2) }
    }
    public func startMigration(_ request: Lockstep_V1_StartMigrationRequest) async throws(LockstepClientError) -> Lockstep_V1_StartMigrationResponse {
        try await call { try await $0.migrations.startMigration(request, metadata: $1, options: $2) }
    }
    public func migration(_ request: Lockstep_V1_GetMigrationRequest) async throws(LockstepClientError) -> Lockstep_V1_Migration {
        try await call(writes: false) { try await $0.migrations.getMigration(request, metadata: $1, options: $2) }
    }
    public func migrations(_ request: Lockstep_V1_ListMigrationsRequest) async throws(LockstepClientError) -> Lockstep_V1_ListMigrationsResponse {
        try await call(writes: false) { try await $0.migrations.listMigrations(request, metadata: $1, options: $2) }
    }
    public func pause(_ request: Lockstep_V1_PauseMigrationRequest) async throws(LockstepClientError) -> Lockstep_V1_ChangeResponse {
        try await call { try await $0.migrations.pauseMigration(request, metadata: $1, options: $2) }
    }
    public func resume(_ request: Lockstep_V1_ResumeMigrationRequest) async throws(LockstepClientError) -> Lockstep_V1_ChangeResponse {
        try await call { try await $0.migrations.resumeMigration(request, metadata: $1, options: $2) }
    }
    public func abort(_ request: Lockstep_V1_AbortMigrationRequest) async throws(LockstepClientError) -> Lockstep_V1_ChangeResponse {
        try await call { try await $0.migrations.abortMigration(request, metadata: $1, options: $2) }
    }
    public func approve(_ request: Lockstep_V1_GateDecisionRequest) async throws(LockstepClientError) -> Lockstep_V1_ChangeResponse {
        try await call { try await $0.migrations.approve(request, metadata: $1, options: $2) }
    }
    public func reject(_ request: Lockstep_V1_GateDecisionRequest) async throws(LockstepClientError) -> Lockstep_V1_ChangeResponse {
        try await call { try await $0.migrations.reject(request, metadata: $1, options: $2) }
    }
    public func releaseServiceLease(_ request: Lockstep_V1_ReleaseServiceLeaseRequest) async throws(LockstepClientError) -> Lockstep_V1_ChangeResponse {
        try await call { try await $0.migrations.releaseServiceLease(request, metadata: $1, options: $2) }
    }

    public func declareFreeze(_ request: Lockstep_V1_DeclareFreezeRequest) async throws(LockstepClientError) -> Lockstep_V1_FreezeResponse {
        try await call { try await $0.migrations.declareFreeze(request, metadata: $1, options: $2) }
    }
    public func webhookDeliveries(_ request: Lockstep_V1_ListWebhookDeliveriesRequest) async throws(LockstepClientError)
        -> Lockstep_V1_ListWebhookDeliveriesResponse
    {
        try await call(writes: false) { try await $0.migrations.listWebhookDeliveries(request, metadata: $1, options: $2) }
    }

    public func listFreezes(_ request: Lockstep_V1_ListFreezesRequest) async throws(LockstepClientError) -> Lockstep_V1_ListFreezesResponse {
        try await call(writes: false) { try await $0.migrations.listFreezes(request, metadata: $1, options: $2) }
    }
    public func endFreeze(_ request: Lockstep_V1_EndFreezeRequest) async throws(LockstepClientError) -> Lockstep_V1_FreezeResponse {
        try await call { try await $0.migrations.endFreeze(request, metadata: $1, options: $2) }
    }
    public func stopLine(_ request: Lockstep_V1_StopLineRequest) async throws(LockstepClientError) -> Lockstep_V1_FreezeResponse {
        try await call { try await $0.migrations.stopLine(request, metadata: $1, options: $2) }
    }
    public func breakGlass(_ request: Lockstep_V1_BreakGlassRequest) async throws(LockstepClientError) -> Lockstep_V1_ChangeResponse {
        try await call { try await $0.migrations.breakGlass(request, metadata: $1, options: $2) }
    }
    /// A one-time link that signs a browser in to the console as this client's principal (docs/console.md).
    public func createConsoleLink() async throws(LockstepClientError) -> Lockstep_V1_ConsoleLink {
        try await call(writes: false) { try await $0.migrations.createConsoleLink(Lockstep_V1_CreateConsoleLinkRequest(), metadata: $1, options: $2) }
    }

    public func recordMetric(_ request: Lockstep_V1_RecordMetricRequest) async throws(LockstepClientError) -> Lockstep_V1_RecordMetricResponse {
        try await call { try await $0.migrations.recordMetric(request, metadata: $1, options: $2) }
    }

    public func serviceLeases() async throws(LockstepClientError) -> Lockstep_V1_ListServiceLeasesResponse {
        try await call(writes: false) { try await $0.migrations.listServiceLeases(.init(), metadata: $1, options: $2) }
    }

    /// Calls `each` with every event of the migration after `request.afterSequence`, live, until it settles.
    public func watch(_ request: Lockstep_V1_WatchRequest,
                      _ each: @escaping @Sendable (Lockstep_V1_EventEnvelope) async throws -> Void) async throws(LockstepClientError) {
        // A stream has no deadline (it lasts as long as its reader likes); the keepalive ends it if its server froze.
        try await call(writes: false, deadline: false) { connection, metadata, options in
            try await connection.migrations.watch(request, metadata: metadata, options: options) { response in
                for try await envelope in response.messages { try await each(envelope) }
            }
        }
    }

    // MARK: Reviewers and services

    public func events(_ request: Lockstep_V1_ListEventsRequest) async throws(LockstepClientError) -> Lockstep_V1_ListEventsResponse {
        try await call(writes: false, history: true) { try await $0.history.listEvents(request, metadata: $1, options: $2) }
    }
    /// Every event after `request.afterSequence` (of `request.stream`, or all), streamed: `each` is called
    /// for every event in order, and the server reads the log at the pace `each` takes them.
    public func export(_ request: Lockstep_V1_ListEventsRequest,
                       _ each: @escaping @Sendable (Lockstep_V1_EventEnvelope) async throws -> Void) async throws(LockstepClientError) {
        try await call(writes: false, deadline: false) { connection, metadata, options in
            try await connection.history.exportEvents(request, metadata: metadata, options: options) { response in
                for try await envelope in response.messages { try await each(envelope) }
            }
        }
    }
    public func state(_ request: Lockstep_V1_StateAtRequest) async throws(LockstepClientError) -> Lockstep_V1_StateAtResponse {
        try await call(writes: false, history: true) { try await $0.history.getStateAt(request, metadata: $1, options: $2) }
    }
    public func verify() async throws(LockstepClientError) -> Lockstep_V1_VerifyHistoryResponse {
        try await call(writes: false, history: true) { try await $0.history.verifyHistory(.init(), metadata: $1, options: $2) }
    }
    public func explain(_ request: Lockstep_V1_ExplainRequest) async throws(LockstepClientError) -> Lockstep_V1_ExplainResponse {
        try await call(writes: false, history: true) { try await $0.history.explainMigration(request, metadata: $1, options: $2) }
    }
    public func diff(_ request: Lockstep_V1_DiffHistoryRequest) async throws(LockstepClientError) -> Lockstep_V1_DiffHistoryResponse {
        try await call(writes: false, history: true) { try await $0.history.diffHistory(request, metadata: $1, options: $2) }
    }
    public func stage(_ request: Lockstep_V1_StageRequest) async throws(LockstepClientError) -> Lockstep_V1_Stage {
        try await call(writes: false) { try await $0.stages.getStage(request, metadata: $1, options: $2) }
    }

    /// Calls the current server. A replica's `not_writer` names the writer: when that is one of this
    /// client's addresses, calls move there and this one is sent again at once (nothing was written by
    /// the replica, so that is safe); otherwise, as after `unavailable` or `shutting_down`, the next call
    /// goes to the next address. `writes`: the call may change something on the server (every call but
    /// the reads), noted in `mayHaveHadEffects` when it succeeds or when its outcome is open.
    private func call<Result: Sendable>(writes: Bool = true, hops: Int = 0, deadline: Bool = true, waiting: Duration = .zero, history: Bool = false, within: Duration? = nil,
                                        _ body: (Connection, Metadata, CallOptions) async throws -> Result) async throws(LockstepClientError) -> Result {
        let index = rotation.current.withLock { $0 }
        var options = CallOptions.defaults
        // A history page holds up to 16 MiB of records (`EventLogLimits.readPageBytesMax`), past the
        // transport's 4 MiB default; grpc-swift-nio-transport bounds what a call receives by this field.
        // Requests get the same room: one past the server's 1 MiB limit reaches the server, which refuses
        // it with its stable code (`body_too_large`), instead of the transport refusing it here with none.
        options.maxRequestMessageBytes = Self.messageBytesMax
        options.maxResponseMessageBytes = Self.messageBytesMax
        if deadline {
            let bound = (history ? max(timeout, Self.historyTimeoutMin) : timeout) + waiting
            options.timeout = within.map { min($0, bound) } ?? bound
        }
        do {
            let result = try await body(connections[index], metadata, options)
            if writes { effects.note() }
            return result
        } catch let error as RPCError {
            var failure = LockstepClientError(error)
            if writes, Self.mayHaveRun(error) {
                failure.mayHaveRun = true
                effects.note()
            }
            if failure.code == ErrorCode.notWriter.rawValue, let writer = failure.writer, let target = targets.firstIndex(of: writer), target != index, hops < targets.count {
                if rotation.move(from: index, to: target) {
                    return try await call(writes: writes, hops: hops + 1, deadline: deadline, waiting: waiting, history: history, within: within, body)
                }
                throw failure
            }
            // A deadline passed: the server may have frozen, so the next call goes to the next one too.
            if [ErrorCode.unavailable, .shuttingDown, .notWriter, .deadlineExceeded].map(\.rawValue).contains(failure.code) { rotation.advance(from: index) }
            throw failure
        } catch let error as LockstepClientError {
            throw error
        } catch {
            rotation.advance(from: index)
            var failure = LockstepClientError(code: ErrorCode.unavailable.rawValue, message: "the call failed: \(error)")
            if writes {
                failure.mayHaveRun = true
                effects.note()
            }
            throw failure
        }
    }

    /// Whether a write that failed with `error` may have been carried out. A server's own answer mostly
    /// says it was not (a rejection, `not_writer`, `shutting_down`, a limit), except the answers that
    /// leave it open (`openOutcomes`: the commit's outcome unknown, the server's deadline passing while the
    /// work went on, an answer that could not be encoded after the work was done); without one, only a
    /// transport failure that shows the request never left (no connection could be made, the channel was
    /// not ready) rules it out.
    static func mayHaveRun(_ error: RPCError) -> Bool {
        if let code = error.metadata[stringValues: "lockstep-error-code"].first(where: { _ in true }) {
            return openOutcomes.contains(code)
        }
        return !(error.code == .unavailable && neverSent.contains { error.message.contains($0) })
    }

    /// The server's answers after which a write may still have been carried out.
    static let openOutcomes: Set<String> = Set([ErrorCode.commitOutcomeUnknown, .deadlineExceeded, .cancelled, .unknown, .internalError].map(\.rawValue))

    /// How grpc-swift-nio-transport (2.x) words the failures of a call that never left: the connection
    /// could not be made or the channel had none ready (`CLIEndToEndTests` checks that a refused first
    /// address is still recognised, so a rewording there shows up as a test failure, not as a re-run).
    static let neverSent = ["Could not establish a connection", "'wait for ready' isn't enabled", "no subchannel available",
                            "Failed to resolve server name", "closed the connection before completing the HTTP/2 connection preface",
                            "subchannel isn't ready", "subchannel is unavailable", "Channel is shutting down", "channel is shutdown",
                            "channel is closed", "Transport is shut down", "Transport is shutting down", "The channel was closed"]
}
