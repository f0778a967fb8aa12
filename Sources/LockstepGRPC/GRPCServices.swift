import Foundation
import GRPCCore
import LockstepAPI
import LockstepH2
import LockstepStore
import LockstepWire
import Metrics
import LockstepService
import SwiftProtobuf

/// The gRPC side of the API: the generated service protocols implemented over the same service
/// layer, authentication and errors as the JSON side.
package struct GRPCAgentService: Lockstep_V1_AgentService.ServiceProtocol {
    package let agents: AgentAPI
    package let metrics: ServerMetrics
    package let authenticate: @Sendable (String?, String?) throws(APIError) -> Principal
    /// The poll's timer (`onLoop` records into it without looking it up each call).
    let pollTimer: Metrics.Timer
    /// The reports' timers, for the same reason.
    let reportTimers: (heartbeat: Metrics.Timer, progress: Metrics.Timer, complete: Metrics.Timer, fail: Metrics.Timer)
    /// `AgentAPI.retryLater` in protobuf, encoded and framed once: the answer of most polls served on the loop.
    let retryLater: H2GRPCServerTransport.FramedMessage
    /// Bounds the looks at the coordinator of the polls served from the event loop (`onLoop`).
    let lane: PollLane

    package func poll(request: ServerRequest<Lockstep_V1_PollRequest>, context: ServerContext) async throws -> ServerResponse<Lockstep_V1_PollResponse> {
        // gRPC reports a deadline or a reset stream through the context, not by cancelling the task: the
        // cancellation handler marks the call gone, which resumes a parked poll at once (no task per
        // poll) and stops a poll from leasing once it has happened.
        let cancellation = context.cancellation
        return try await call(request, .poll, context: context) { input, principal throws(APIError) in
            let departure = DepartureSignal()
            return try await withRPCCancellationHandler { () async throws(APIError) -> Lockstep_V1_PollResponse in
                try await agents.poll(input, principal: principal, clientGone: { departure.isGone || cancellation.isCancelled }, departure: departure)
            } onCancelRPC: {
                departure.markGone()
            }
        }
    }

    package func heartbeat(request: ServerRequest<Lockstep_V1_HeartbeatRequest>, context: ServerContext) async throws -> ServerResponse<Lockstep_V1_HeartbeatResponse> {
        try await call(request, .heartbeat, context: context) { input, principal throws(APIError) in try await agents.heartbeat(input, principal: principal) }
    }

    package func reportProgress(request: ServerRequest<Lockstep_V1_ReportProgressRequest>, context: ServerContext) async throws
        -> ServerResponse<Lockstep_V1_ReportProgressResponse>
    {
        try await call(request, .reportProgress, context: context) { input, principal throws(APIError) in try await agents.reportProgress(input, principal: principal) }
    }

    package func complete(request: ServerRequest<Lockstep_V1_CompleteRequest>, context: ServerContext) async throws -> ServerResponse<Lockstep_V1_CompleteResponse> {
        try await call(request, .complete, context: context) { input, principal throws(APIError) in try await agents.complete(input, principal: principal) }
    }

    package func fail(request: ServerRequest<Lockstep_V1_FailRequest>, context: ServerContext) async throws -> ServerResponse<Lockstep_V1_FailResponse> {
        try await call(request, .fail, context: context) { input, principal throws(APIError) in try await agents.fail(input, principal: principal) }
    }

    private func call<In: SwiftProtobuf.Message, Out: SwiftProtobuf.Message>(_ request: ServerRequest<In>, _ operation: APIOperation, context: ServerContext,
                                                                             _ body: (In, Principal) async throws(APIError) -> Out) async throws -> ServerResponse<Out> {
        try await answer(request, operation, context: context, metrics: metrics, authenticate: authenticate, body)
    }

    package init(agents: AgentAPI, metrics: ServerMetrics, authenticate: @escaping @Sendable (String?, String?) throws(APIError) -> Principal,
                 lane: PollLane = PollLane(limit: 256)) {
        self.agents = agents
        self.metrics = metrics
        self.authenticate = authenticate
        self.lane = lane
        pollTimer = metrics.request(APIOperation.poll.name, transport: "grpc")
        reportTimers = (metrics.request(APIOperation.heartbeat.name, transport: "grpc"), metrics.request(APIOperation.reportProgress.name, transport: "grpc"),
                        metrics.request(APIOperation.complete.name, transport: "grpc"), metrics.request(APIOperation.fail.name, transport: "grpc"))
        retryLater = H2GRPCServerTransport.FramedMessage((try? agents.retryLater.serializedBytes()) ?? [])
    }
}

package struct GRPCMigrationService: Lockstep_V1_MigrationService.ServiceProtocol {
    package let operators: OperatorAPI
    package let watches: WatchAPI
    package let metrics: ServerMetrics
    package let authenticate: @Sendable (String?, String?) throws(APIError) -> Principal

    package func applyPlan(request: ServerRequest<Lockstep_V1_ApplyPlanRequest>, context: ServerContext) async throws -> ServerResponse<Lockstep_V1_ApplyPlanResponse> {
        try await answer(request, .applyPlan, context: context, metrics: metrics, authenticate: authenticate) { input, principal throws(APIError) in try await operators.applyPlan(input, principal: principal) }
    }

    package func validatePlan(request: ServerRequest<Lockstep_V1_ApplyPlanRequest>, context: ServerContext) async throws
        -> ServerResponse<Lockstep_V1_ValidatePlanResponse>
    {
        try await answer(request, .validatePlan, context: context, metrics: metrics, authenticate: authenticate) { input, principal throws(APIError) in
            try await operators.validatePlan(input, principal: principal)
        }
    }

    package func listPlans(request: ServerRequest<Lockstep_V1_ListPlansRequest>, context: ServerContext) async throws -> ServerResponse<Lockstep_V1_ListPlansResponse> {
        try await answer(request, .listPlans, context: context, metrics: metrics, authenticate: authenticate) { input, principal throws(APIError) in
            try await operators.listPlans(input, principal: principal)
        }
    }

    package func startMigration(request: ServerRequest<Lockstep_V1_StartMigrationRequest>, context: ServerContext) async throws
        -> ServerResponse<Lockstep_V1_StartMigrationResponse>
    {
        try await answer(request, .startMigration, context: context, metrics: metrics, authenticate: authenticate) { input, principal throws(APIError) in try await operators.startMigration(input, principal: principal) }
    }

    package func getMigration(request: ServerRequest<Lockstep_V1_GetMigrationRequest>, context: ServerContext) async throws -> ServerResponse<Lockstep_V1_Migration> {
        try await answer(request, .getMigration, context: context, metrics: metrics, authenticate: authenticate) { input, principal throws(APIError) in try await operators.getMigration(input, principal: principal) }
    }

    package func listMigrations(request: ServerRequest<Lockstep_V1_ListMigrationsRequest>, context: ServerContext) async throws
        -> ServerResponse<Lockstep_V1_ListMigrationsResponse>
    {
        try await answer(request, .listMigrations, context: context, metrics: metrics, authenticate: authenticate) { input, principal throws(APIError) in try await operators.listMigrations(input, principal: principal) }
    }

    package func pauseMigration(request: ServerRequest<Lockstep_V1_PauseMigrationRequest>, context: ServerContext) async throws -> ServerResponse<Lockstep_V1_ChangeResponse> {
        try await answer(request, .pause, context: context, metrics: metrics, authenticate: authenticate) { input, principal throws(APIError) in try await operators.pause(input, principal: principal) }
    }

    package func resumeMigration(request: ServerRequest<Lockstep_V1_ResumeMigrationRequest>, context: ServerContext) async throws -> ServerResponse<Lockstep_V1_ChangeResponse> {
        try await answer(request, .resume, context: context, metrics: metrics, authenticate: authenticate) { input, principal throws(APIError) in try await operators.resume(input, principal: principal) }
    }

    package func abortMigration(request: ServerRequest<Lockstep_V1_AbortMigrationRequest>, context: ServerContext) async throws -> ServerResponse<Lockstep_V1_ChangeResponse> {
        try await answer(request, .abort, context: context, metrics: metrics, authenticate: authenticate) { input, principal throws(APIError) in try await operators.abort(input, principal: principal) }
    }

    package func approve(request: ServerRequest<Lockstep_V1_GateDecisionRequest>, context: ServerContext) async throws -> ServerResponse<Lockstep_V1_ChangeResponse> {
        try await answer(request, .approve, context: context, metrics: metrics, authenticate: authenticate) { input, principal throws(APIError) in try await operators.approve(input, principal: principal) }
    }

    package func reject(request: ServerRequest<Lockstep_V1_GateDecisionRequest>, context: ServerContext) async throws -> ServerResponse<Lockstep_V1_ChangeResponse> {
        try await answer(request, .reject, context: context, metrics: metrics, authenticate: authenticate) { input, principal throws(APIError) in try await operators.reject(input, principal: principal) }
    }

    package func watch(request: ServerRequest<Lockstep_V1_WatchRequest>, context: ServerContext) async throws -> StreamingServerResponse<Lockstep_V1_EventEnvelope> {
        let events: WatchEvents
        // gRPC signals a reset stream, a departed client or a passed deadline through the context, not by
        // cancelling the handler's task: the watch runs in a child task that such a cancellation ends at
        // once, so a watch parked between events leaves its place (and its principal's count) right away.
        let cancellation = context.cancellation
        events = try await opening(request, .watch, context: context, metrics: metrics, authenticate: authenticate) { input, principal throws(APIError) in
            try await watches.events(input, principal: principal, clientGone: { cancellation.isCancelled },
                                     whenGone: { try? await cancellation.cancelled })
        }
        return StreamingServerResponse { writer in
            do {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask {
                        for try await stored in events {
                            try await writer.write(try HistoryAPI.envelope(stored))
                        }
                    }
                    group.addTask {
                        try await cancellation.cancelled
                        throw RPCError(code: .cancelled, message: "the watch was cancelled")
                    }
                    // The first to finish (the events ended, or the call was cancelled) ends the other.
                    try await group.next()
                    group.cancelAll()
                }
            } catch let error as APIError {
                throw error.rpcError
            }
            return [:]
        }
    }

    package func releaseServiceLease(request: ServerRequest<Lockstep_V1_ReleaseServiceLeaseRequest>, context: ServerContext) async throws
        -> ServerResponse<Lockstep_V1_ChangeResponse>
    {
        try await answer(request, .releaseServiceLease, context: context, metrics: metrics, authenticate: authenticate) { input, principal throws(APIError) in try await operators.releaseServiceLease(input, principal: principal) }
    }

    package func declareFreeze(request: ServerRequest<Lockstep_V1_DeclareFreezeRequest>, context: ServerContext) async throws
        -> ServerResponse<Lockstep_V1_FreezeResponse>
    {
        try await answer(request, .declareFreeze, context: context, metrics: metrics, authenticate: authenticate) { input, principal throws(APIError) in try await operators.declareFreeze(input, principal: principal) }
    }

    package func listFreezes(request: ServerRequest<Lockstep_V1_ListFreezesRequest>, context: ServerContext) async throws
        -> ServerResponse<Lockstep_V1_ListFreezesResponse>
    {
        try await answer(request, .listFreezes, context: context, metrics: metrics, authenticate: authenticate) { input, principal throws(APIError) in try await operators.listFreezes(input, principal: principal) }
    }

    package func listWebhookDeliveries(request: ServerRequest<Lockstep_V1_ListWebhookDeliveriesRequest>, context: ServerContext) async throws
        -> ServerResponse<Lockstep_V1_ListWebhookDeliveriesResponse>
    {
        try await answer(request, .listWebhookDeliveries, context: context, metrics: metrics, authenticate: authenticate) { input, principal throws(APIError) in
            try await operators.listWebhookDeliveries(input, principal: principal)
        }
    }

    package func endFreeze(request: ServerRequest<Lockstep_V1_EndFreezeRequest>, context: ServerContext) async throws
        -> ServerResponse<Lockstep_V1_FreezeResponse>
    {
        try await answer(request, .endFreeze, context: context, metrics: metrics, authenticate: authenticate) { input, principal throws(APIError) in try await operators.endFreeze(input, principal: principal) }
    }

    package func stopLine(request: ServerRequest<Lockstep_V1_StopLineRequest>, context: ServerContext) async throws
        -> ServerResponse<Lockstep_V1_FreezeResponse>
    {
        try await answer(request, .stopLine, context: context, metrics: metrics, authenticate: authenticate) { input, principal throws(APIError) in try await operators.stopLine(input, principal: principal) }
    }

    package func breakGlass(request: ServerRequest<Lockstep_V1_BreakGlassRequest>, context: ServerContext) async throws
        -> ServerResponse<Lockstep_V1_ChangeResponse>
    {
        try await answer(request, .breakGlass, context: context, metrics: metrics, authenticate: authenticate) { input, principal throws(APIError) in try await operators.breakGlass(input, principal: principal) }
    }

    package func createConsoleLink(request: ServerRequest<Lockstep_V1_CreateConsoleLinkRequest>, context: ServerContext) async throws
        -> ServerResponse<Lockstep_V1_ConsoleLink>
    {
        try await answer(request, .createConsoleLink, context: context, metrics: metrics, authenticate: authenticate) { input, principal throws(APIError) in try await operators.createConsoleLink(input, principal: principal) }
    }

    package func recordMetric(request: ServerRequest<Lockstep_V1_RecordMetricRequest>, context: ServerContext) async throws
        -> ServerResponse<Lockstep_V1_RecordMetricResponse>
    {
        try await answer(request, .recordMetric, context: context, metrics: metrics, authenticate: authenticate) { input, principal throws(APIError) in try await operators.recordMetric(input, principal: principal) }
    }

    package func listServiceLeases(request: ServerRequest<Lockstep_V1_ListServiceLeasesRequest>, context: ServerContext) async throws
        -> ServerResponse<Lockstep_V1_ListServiceLeasesResponse>
    {
        try await answer(request, .listServiceLeases, context: context, metrics: metrics, authenticate: authenticate) { input, principal throws(APIError) in try await operators.listServiceLeases(input, principal: principal) }
    }

    package init(operators: OperatorAPI, watches: WatchAPI, metrics: ServerMetrics, authenticate: @escaping @Sendable (String?, String?) throws(APIError) -> Principal) {
        self.operators = operators
        self.watches = watches
        self.metrics = metrics
        self.authenticate = authenticate
    }
}

package struct GRPCHistoryService: Lockstep_V1_HistoryService.ServiceProtocol {
    package let history: HistoryAPI
    package let metrics: ServerMetrics
    package let authenticate: @Sendable (String?, String?) throws(APIError) -> Principal

    package func listEvents(request: ServerRequest<Lockstep_V1_ListEventsRequest>, context: ServerContext) async throws -> ServerResponse<Lockstep_V1_ListEventsResponse> {
        try await answer(request, .listEvents, context: context, metrics: metrics, authenticate: authenticate) { input, principal throws(APIError) in
            try await history.listEvents(input, principal: principal)
        }
    }

    /// The export as a server stream: one message per event, pulled from the log as the client reads.
    package func exportEvents(request: ServerRequest<Lockstep_V1_ListEventsRequest>, context: ServerContext) async throws
        -> StreamingServerResponse<Lockstep_V1_EventEnvelope>
    {
        let principal = try await opening(request, .exportEvents, context: context, metrics: metrics, authenticate: authenticate) { _, principal throws(APIError) in
            principal
        }
        return StreamingServerResponse { writer in
            do {
                try await history.exportEnvelopes(request.message, principal: principal) { envelopes in
                    try await writer.write(contentsOf: envelopes)
                }
            } catch let error as APIError {
                metrics.record(error)
                throw error.rpcError
            }
            return [:]
        }
    }

    package func getStateAt(request: ServerRequest<Lockstep_V1_StateAtRequest>, context: ServerContext) async throws -> ServerResponse<Lockstep_V1_StateAtResponse> {
        try await answer(request, .stateAt, context: context, metrics: metrics, authenticate: authenticate) { input, principal throws(APIError) in
            try await history.stateAt(input, principal: principal)
        }
    }

    package func verifyHistory(request: ServerRequest<Lockstep_V1_VerifyHistoryRequest>, context: ServerContext) async throws
        -> ServerResponse<Lockstep_V1_VerifyHistoryResponse>
    {
        try await answer(request, .verifyHistory, context: context, metrics: metrics, authenticate: authenticate) { input, principal throws(APIError) in
            try await history.verify(input, principal: principal)
        }
    }

    package func explainMigration(request: ServerRequest<Lockstep_V1_ExplainRequest>, context: ServerContext) async throws
        -> ServerResponse<Lockstep_V1_ExplainResponse>
    {
        try await answer(request, .explainMigration, context: context, metrics: metrics, authenticate: authenticate) { input, principal throws(APIError) in
            try await history.explain(input, principal: principal)
        }
    }

    package func diffHistory(request: ServerRequest<Lockstep_V1_DiffHistoryRequest>, context: ServerContext) async throws
        -> ServerResponse<Lockstep_V1_DiffHistoryResponse>
    {
        try await answer(request, .diffHistory, context: context, metrics: metrics, authenticate: authenticate) { input, principal throws(APIError) in
            try await history.diff(input, principal: principal)
        }
    }

    package init(history: HistoryAPI, metrics: ServerMetrics, authenticate: @escaping @Sendable (String?, String?) throws(APIError) -> Principal) {
        self.history = history
        self.metrics = metrics
        self.authenticate = authenticate
    }
}

package struct GRPCStageService: Lockstep_V1_StageService.ServiceProtocol {
    package let stages: StageAPI
    package let metrics: ServerMetrics
    package let authenticate: @Sendable (String?, String?) throws(APIError) -> Principal

    package func getStage(request: ServerRequest<Lockstep_V1_StageRequest>, context: ServerContext) async throws -> ServerResponse<Lockstep_V1_Stage> {
        try await answer(request, .stage, context: context, metrics: metrics, authenticate: authenticate) { input, principal throws(APIError) in
            try await stages.stage(input, principal: principal)
        }
    }

    package init(stages: StageAPI, metrics: ServerMetrics, authenticate: @escaping @Sendable (String?, String?) throws(APIError) -> Principal) {
        self.stages = stages
        self.metrics = metrics
        self.authenticate = authenticate
    }
}

/// A unary method: the gRPC side's gate (`opening`), its answer as the response message.
private func answer<In: SwiftProtobuf.Message, Out: SwiftProtobuf.Message>(
    _ request: ServerRequest<In>, _ operation: APIOperation, context: ServerContext, metrics: ServerMetrics,
    authenticate: @Sendable (String?, String?) throws(APIError) -> Principal,
    _ body: (In, Principal) async throws(APIError) -> Out
) async throws -> ServerResponse<Out> {
    assert(Out.protoMessageName == operation.response, "\(operation.method) answers \(Out.protoMessageName); the table says \(operation.response)")
    return ServerResponse(message: try await opening(request, operation, context: context, metrics: metrics, authenticate: authenticate, body))
}

/// The gRPC side's one gate, which every method goes through: authenticates from the `authorization`
/// metadata, applies the operation's roles (`Principal.require(operation)`, before anything is read),
/// runs `body` (a unary method's whole work; a stream's opening), times it under the operation's name,
/// and turns an `APIError` into an `RPCError` with the matching status code, `CODE: message` as its
/// message and the code in the `lockstep-error-code` trailing metadata.
private func opening<In: SwiftProtobuf.Message, Out>(
    _ request: ServerRequest<In>, _ operation: APIOperation, context: ServerContext, metrics: ServerMetrics,
    authenticate: @Sendable (String?, String?) throws(APIError) -> Principal,
    _ body: (In, Principal) async throws(APIError) -> Out
) async throws -> Out {
    assert(In.protoMessageName == operation.request, "\(operation.method) takes \(In.protoMessageName); the table says \(operation.request)")
    let began = ContinuousClock.now
    defer { metrics.request(operation.name, transport: "grpc").record(duration: ContinuousClock.now - began) }
    do throws(APIError) {
        let principal = try authenticate(credentials(request.metadata), await ClientIdentity.fingerprint(of: context))
        try principal.require(operation)
        return try await body(request.message, principal)
    } catch {
        metrics.record(error)
        throw error.rpcError
    }
}

/// The bearer credentials a call carries in its `authorization` metadata, if any.
func credentials(_ metadata: Metadata) -> String? {
    metadata[stringValues: "authorization"].first(where: { _ in true })
}

extension APIError {
    /// The gRPC error: the matching status, `CODE: message`, and the code in `lockstep-error-code` metadata.
    var rpcError: RPCError {
        var metadata: Metadata = ["lockstep-error-code": "\(code)"]
        if let writer { metadata.addString(writer, forKey: "lockstep-writer") }
        return RPCError(code: kind.rpcCode, message: "\(code): \(message)", metadata: metadata)
    }
}

extension APIError.Kind {
    /// The gRPC status for this kind of error.
    package var rpcCode: RPCError.Code {
        switch self {
        case .badRequest: .invalidArgument
        case .unauthenticated: .unauthenticated
        case .forbidden: .permissionDenied
        case .notFound: .notFound
        case .conflict: .failedPrecondition
        case .alreadyExists: .alreadyExists
        case .outcomeUnknown: .unknown
        case .tooLarge, .overloaded: .resourceExhausted
        case .unsupportedMediaType: .invalidArgument
        case .unavailable: .unavailable
        case .requestTimeout: .deadlineExceeded
        }
    }
}
