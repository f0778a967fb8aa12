import GRPCCore
import GRPCNIOTransportHTTP2
import LockstepAPI
import LockstepCore
import LockstepWire

/// Why a call failed: the server's stable code and sentence (docs/api.md, Errors), or a transport
/// problem (`unavailable`: the server could not be reached).
public struct LockstepClientError: Error, Hashable, Sendable, CustomStringConvertible {
    public var code: String
    public var message: String

    public init(code: String, message: String) {
        self.code = code
        self.message = message
    }

    init(_ error: RPCError) {
        let code = error.metadata[stringValues: "lockstep-error-code"].first(where: { _ in true })
        if let code {
            let message = error.message.hasPrefix(code + ": ") ? String(error.message.dropFirst(code.count + 2)) : error.message
            self.init(code: code, message: message)
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
    let agents: Lockstep_V1_AgentService.Client<HTTP2ClientTransport.Posix>
    let migrations: Lockstep_V1_MigrationService.Client<HTTP2ClientTransport.Posix>
    let history: Lockstep_V1_HistoryService.Client<HTTP2ClientTransport.Posix>
    let stages: Lockstep_V1_StageService.Client<HTTP2ClientTransport.Posix>
    let metadata: Metadata

    /// Connects to `target` (`HOST:PORT`, `[IPv6]:PORT`), runs `body` with a client, then closes the
    /// connection. `trustedCertificate` (a PEM file) switches to TLS and trusts only that certificate.
    public static func connect<Result: Sendable>(
        to target: String, token: String? = nil, trustedCertificate: String? = nil,
        _ body: (LockstepClient) async throws -> Result
    ) async throws -> Result {
        guard let colon = target.lastIndex(of: ":"), let port = Int(target[target.index(after: colon)...]) else {
            throw LockstepClientError(code: ErrorCode.invalidArgument.rawValue, message: "the server address must be HOST:PORT, not \(target)")
        }
        let host = String(target[..<colon]).trimmingCharacters(in: ["[", "]"])
        let resolvable: any ResolvableTarget = host.contains(":") ? .ipv6(address: host, port: port) : .dns(host: host, port: port)
        let security: HTTP2ClientTransport.Posix.TransportSecurity = trustedCertificate.map { file in
            .tls { $0.trustRoots = .certificates([.file(path: file, format: .pem)]) }
        } ?? .plaintext
        let transport = try HTTP2ClientTransport.Posix(target: resolvable, transportSecurity: security)
        return try await withGRPCClient(transport: transport) { client in
            try await body(LockstepClient(
                agents: .init(wrapping: client), migrations: .init(wrapping: client), history: .init(wrapping: client),
                stages: .init(wrapping: client), metadata: token.map { ["authorization": "Bearer \($0)"] } ?? [:]))
        }
    }

    // MARK: Agents

    public func poll(_ request: Lockstep_V1_PollRequest) async throws(LockstepClientError) -> Lockstep_V1_PollResponse {
        try await call { try await agents.poll(request, metadata: $0) }
    }
    public func heartbeat(_ request: Lockstep_V1_HeartbeatRequest) async throws(LockstepClientError) -> Lockstep_V1_HeartbeatResponse {
        try await call { try await agents.heartbeat(request, metadata: $0) }
    }
    public func reportProgress(_ request: Lockstep_V1_ReportProgressRequest) async throws(LockstepClientError) -> Lockstep_V1_ReportProgressResponse {
        try await call { try await agents.reportProgress(request, metadata: $0) }
    }
    public func complete(_ request: Lockstep_V1_CompleteRequest) async throws(LockstepClientError) -> Lockstep_V1_CompleteResponse {
        try await call { try await agents.complete(request, metadata: $0) }
    }
    public func fail(_ request: Lockstep_V1_FailRequest) async throws(LockstepClientError) -> Lockstep_V1_FailResponse {
        try await call { try await agents.fail(request, metadata: $0) }
    }

    // MARK: Operators and approvers

    public func applyPlan(_ request: Lockstep_V1_ApplyPlanRequest) async throws(LockstepClientError) -> Lockstep_V1_ApplyPlanResponse {
        try await call { try await migrations.applyPlan(request, metadata: $0) }
    }
    public func validatePlan(_ request: Lockstep_V1_ApplyPlanRequest) async throws(LockstepClientError) -> Lockstep_V1_ValidatePlanResponse {
        try await call { try await migrations.validatePlan(request, metadata: $0) }
    }
    public func plans() async throws(LockstepClientError) -> Lockstep_V1_ListPlansResponse {
        try await call { try await migrations.listPlans(.init(), metadata: $0) }
    }
    public func startMigration(_ request: Lockstep_V1_StartMigrationRequest) async throws(LockstepClientError) -> Lockstep_V1_StartMigrationResponse {
        try await call { try await migrations.startMigration(request, metadata: $0) }
    }
    public func migration(_ request: Lockstep_V1_GetMigrationRequest) async throws(LockstepClientError) -> Lockstep_V1_Migration {
        try await call { try await migrations.getMigration(request, metadata: $0) }
    }
    public func migrations(_ request: Lockstep_V1_ListMigrationsRequest) async throws(LockstepClientError) -> Lockstep_V1_ListMigrationsResponse {
        try await call { try await migrations.listMigrations(request, metadata: $0) }
    }
    public func pause(_ request: Lockstep_V1_PauseMigrationRequest) async throws(LockstepClientError) -> Lockstep_V1_ChangeResponse {
        try await call { try await migrations.pauseMigration(request, metadata: $0) }
    }
    public func resume(_ request: Lockstep_V1_ResumeMigrationRequest) async throws(LockstepClientError) -> Lockstep_V1_ChangeResponse {
        try await call { try await migrations.resumeMigration(request, metadata: $0) }
    }
    public func abort(_ request: Lockstep_V1_AbortMigrationRequest) async throws(LockstepClientError) -> Lockstep_V1_ChangeResponse {
        try await call { try await migrations.abortMigration(request, metadata: $0) }
    }
    public func approve(_ request: Lockstep_V1_GateDecisionRequest) async throws(LockstepClientError) -> Lockstep_V1_ChangeResponse {
        try await call { try await migrations.approve(request, metadata: $0) }
    }
    public func reject(_ request: Lockstep_V1_GateDecisionRequest) async throws(LockstepClientError) -> Lockstep_V1_ChangeResponse {
        try await call { try await migrations.reject(request, metadata: $0) }
    }
    public func releaseServiceLease(_ request: Lockstep_V1_ReleaseServiceLeaseRequest) async throws(LockstepClientError) -> Lockstep_V1_ChangeResponse {
        try await call { try await migrations.releaseServiceLease(request, metadata: $0) }
    }

    public func recordMetric(_ request: Lockstep_V1_RecordMetricRequest) async throws(LockstepClientError) -> Lockstep_V1_RecordMetricResponse {
        try await call { try await migrations.recordMetric(request, metadata: $0) }
    }

    public func serviceLeases() async throws(LockstepClientError) -> Lockstep_V1_ListServiceLeasesResponse {
        try await call { try await migrations.listServiceLeases(.init(), metadata: $0) }
    }

    /// Calls `each` with every event of the migration after `request.afterSequence`, live, until it settles.
    public func watch(_ request: Lockstep_V1_WatchRequest,
                      _ each: @escaping @Sendable (Lockstep_V1_EventEnvelope) async throws -> Void) async throws(LockstepClientError) {
        try await call { metadata in
            try await migrations.watch(request, metadata: metadata) { response in
                for try await envelope in response.messages { try await each(envelope) }
            }
        }
    }

    // MARK: Reviewers and services

    public func events(_ request: Lockstep_V1_ListEventsRequest) async throws(LockstepClientError) -> Lockstep_V1_ListEventsResponse {
        try await call { try await history.listEvents(request, metadata: $0) }
    }
    /// Every event after `request.afterSequence` (of `request.stream`, or all), streamed: `each` is called
    /// for every event in order, and the server reads the log at the pace `each` takes them.
    public func export(_ request: Lockstep_V1_ListEventsRequest,
                       _ each: @escaping @Sendable (Lockstep_V1_EventEnvelope) async throws -> Void) async throws(LockstepClientError) {
        try await call { metadata in
            try await history.exportEvents(request, metadata: metadata) { response in
                for try await envelope in response.messages { try await each(envelope) }
            }
        }
    }
    public func state(_ request: Lockstep_V1_StateAtRequest) async throws(LockstepClientError) -> Lockstep_V1_StateAtResponse {
        try await call { try await history.getStateAt(request, metadata: $0) }
    }
    public func verify() async throws(LockstepClientError) -> Lockstep_V1_VerifyHistoryResponse {
        try await call { try await history.verifyHistory(.init(), metadata: $0) }
    }
    public func stage(_ request: Lockstep_V1_StageRequest) async throws(LockstepClientError) -> Lockstep_V1_Stage {
        try await call { try await stages.getStage(request, metadata: $0) }
    }

    private func call<Result: Sendable>(_ body: (Metadata) async throws -> Result) async throws(LockstepClientError) -> Result {
        do {
            return try await body(metadata)
        } catch let error as RPCError {
            throw LockstepClientError(error)
        } catch let error as LockstepClientError {
            throw error
        } catch {
            throw LockstepClientError(code: ErrorCode.unavailable.rawValue, message: "the call failed: \(error)")
        }
    }
}
