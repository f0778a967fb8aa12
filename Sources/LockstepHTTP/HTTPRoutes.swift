import Foundation
import Hummingbird
import LockstepCore
import LockstepEngine
import LockstepStore
import LockstepWire
import NIOCore
import SwiftProtobuf
import LockstepService

/// The JSON side of the API: the same messages as gRPC, in the proto3 JSON mapping (field names as in
/// the .proto files; `uint64` values are strings, as the mapping says). Every route is a POST of a JSON
/// message that answers a JSON message, or an `ErrorBody` with the error's HTTP status.
/// The request context: Hummingbird's core storage, plus the connection the request came on and how to
/// tell that its client has gone away (a closed connection, or a reset HTTP/2 stream), so a long poll or
/// a watch leaves its place at once.
package struct LockstepRequestContext: RequestContext {
    package var coreContext: CoreRequestContextStorage
    package let channel: any Channel
    /// The request's own presence (an HTTP/2 stream on the engine); nil: the one on `channel`'s pipeline
    /// (an HTTP/1.1 connection).
    package var streamPresence: ClientPresence?
    /// The request's whole body, when it arrived before the request was handed over (an HTTP/2 stream on
    /// the engine, which bounds its size and time itself); nil: read from the request as it arrives.
    package var wholeBody: ByteBuffer?

    package init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        channel = source.channel
    }

    /// Who tells this request that its client went, and the check for it.
    package func presence() async -> (presence: ClientPresence?, gone: @Sendable () -> Bool) {
        let presence = if let streamPresence { streamPresence } else { await ClientPresence.of(channel) }
        return (presence, ClientPresence.goneCheck(for: channel, presence: presence))
    }
}

package struct HTTPRoutes: Sendable {
    package let agents: AgentAPI
    package let operators: OperatorAPI
    package let watches: WatchAPI
    package let history: HistoryAPI
    package let stages: StageAPI
    package let limits: APILimits
    package let metrics: ServerMetrics
    /// Sets the gauges (parked polls, open watches and connections, leases held) to their values now.
    package let refreshGauges: @Sendable () async -> Void
    /// Who the caller is (from the `authorization` header; `--dev`: always the developer principal).
    package let authenticate: @Sendable (Request, any Channel) async throws(APIError) -> Principal
    /// Authentication where the request arrived, on its connection's event loop (the engine's HTTP/2),
    /// from the `authorization` field and the connection (its verified client certificate, read from its
    /// TLS handler without a hop): `authenticate` for a request served there.
    package let authenticateOnLoop: @Sendable (_ authorization: String?, _ connection: any Channel) throws(APIError) -> Principal
    /// Why the coordinator does not take writes now (fail-stop, or commits failing for lack of space),
    /// or nil when it does (readiness).
    package let writeProblem: @Sendable () async -> String?
    /// `--dev`: refuse requests that carry an `Origin` header (a web page's cross-site request), but the
    /// console's own (its pages, its sign-in, and calls made with its session).
    package let refuseBrowsers: Bool
    /// The web console's sign-in and sessions (docs/console.md).
    package let console: ConsoleAccess

    /// Registers every route; returns the operations served, which the server checks against the table
    /// (`APIOperation.all`) at start-up.
    @discardableResult
    package func register(on router: Router<LockstepRequestContext>) -> [APIOperation] {
        var served: [APIOperation] = []
        // First, so it wraps every route and the not-found answer too.
        router.add(middleware: EdgeMiddleware(refuseBrowsers: refuseBrowsers, answer: errorResponse))
        registerConsole(on: router)
        // Liveness: the process answers. Readiness: the log still takes writes (fail-stop makes it 503).
        router.get("/healthz") { _, _ in Response(status: .ok, body: ResponseBody(byteBuffer: ByteBuffer(string: "ok\n"))) }
        router.get("/readyz") { _, _ in
            guard let problem = await writeProblem() else { return Response(status: .ok, body: ResponseBody(byteBuffer: ByteBuffer(string: "ready\n"))) }
            return Response(status: .serviceUnavailable, body: ResponseBody(byteBuffer: ByteBuffer(string: problem + "\n")))
        }
        // Prometheus text format; any authenticated principal may scrape.
        router.get("/metrics") { request, context -> Response in
            do throws(APIError) {
                _ = try await caller(request, context)
            } catch {
                return errorResponse(error)
            }
            await refreshGauges()
            return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4"], body: ResponseBody(byteBuffer: ByteBuffer(bytes: metrics.text)))
        }
        route(router, .poll, &served) { input, principal, context throws(APIError) in
            // A poll whose client goes (even in the same write as its request) leaves its place at once.
            // One lookup per poll, for both the check before leasing and the wake-up when gone (the
            // presence resumes the parked poll itself: no task per parked poll).
            let (presence, gone) = await context.presence()
            return try await agents.poll(input, principal: principal, clientGone: gone, departure: presence)
        }
        route(router, .heartbeat, &served, agents.heartbeat)
        route(router, .reportProgress, &served, agents.reportProgress)
        route(router, .complete, &served, agents.complete)
        route(router, .fail, &served, agents.fail)
        route(router, .applyPlan, &served, operators.applyPlan)
        route(router, .validatePlan, &served, operators.validatePlan)
        route(router, .listPlans, &served, operators.listPlans)
        route(router, .startMigration, &served, operators.startMigration)
        route(router, .getMigration, &served, operators.getMigration)
        route(router, .listMigrations, &served, operators.listMigrations)
        route(router, .pause, &served, operators.pause)
        route(router, .resume, &served, operators.resume)
        route(router, .abort, &served, operators.abort)
        route(router, .approve, &served, operators.approve)
        route(router, .reject, &served, operators.reject)
        route(router, .releaseServiceLease, &served, operators.releaseServiceLease)
        route(router, .listServiceLeases, &served, operators.listServiceLeases)
        route(router, .recordMetric, &served, operators.recordMetric)
        route(router, .declareFreeze, &served, operators.declareFreeze)
        route(router, .listFreezes, &served, operators.listFreezes)
        route(router, .endFreeze, &served, operators.endFreeze)
        route(router, .stopLine, &served, operators.stopLine)
        route(router, .breakGlass, &served, operators.breakGlass)
        route(router, .listWebhookDeliveries, &served, operators.listWebhookDeliveries)
        route(router, .createConsoleLink, &served, operators.createConsoleLink)
        // GET, so caches and conditional requests work: the ETag is the migration's version, and a
        // matching If-None-Match answers 304 with no body.
        gate(router, .stage, &served, Lockstep_V1_StageRequest.self, Lockstep_V1_Stage.self) { request, context, principal throws(APIError) in
            let input = Lockstep_V1_StageRequest.with {
                $0.migrationID = context.parameters.get("migration") ?? ""
                $0.nodeID = request.uri.queryParameters.get("node") ?? ""
                $0.key = request.uri.queryParameters.get("key") ?? ""
            }
            let stage = try await stages.stage(input, principal: principal)
            let tag = "\"\(stage.version)\""
            if let match = request.headers[.ifNoneMatch], match.split(separator: ",").contains(where: { $0.trimmingCharacters(in: .whitespaces) == tag }) {
                return Response(status: .notModified, headers: [.eTag: tag])
            }
            var response = json(stage, status: .ok)
            response.headers[.eTag] = tag
            return response
        }
        route(router, .listEvents, &served, history.listEvents)
        route(router, .stateAt, &served, history.stateAt)
        route(router, .verifyHistory, &served, history.verify)
        route(router, .explainMigration, &served, history.explain)
        route(router, .diffHistory, &served, history.diff)
        // Every event after a sequence (of one stream, or all), as NDJSON in `lockstep history export`'s
        // format: one event per line, the content of the gRPC export's envelopes.
        gate(router, .exportEvents, &served, Lockstep_V1_ListEventsRequest.self, Lockstep_V1_EventEnvelope.self) { request, context, principal throws(APIError) in
            let input: Lockstep_V1_ListEventsRequest = try await decode(request, context)
            // Refused before the stream starts, so the answer is a 400 (or a 429), not an error line after a
            // 200 (an export that lost a race for the last place still ends in one).
            try APIError.checkStream(input.stream)
            let history = self.history
            guard history.exports.hasRoom(for: principal.name) else { throw history.exports.refusal }
            return Response(status: .ok, headers: [.contentType: "application/x-ndjson"], body: ResponseBody { writer in
                do {
                    try await history.export(input, principal: principal) { lines in try await writer.write(ByteBuffer(string: lines)) }
                } catch let error as APIError {
                    // Every event before the damage has been written; the last line names the damage.
                    try await writer.write(ByteBuffer(string: Self.errorLine(error)))
                }
                try await writer.finish(nil)
            })
        }
        // NDJSON, one event per line as `lockstep history export` prints it, flushed as each is recorded.
        gate(router, .watch, &served, Lockstep_V1_WatchRequest.self, Lockstep_V1_EventEnvelope.self) { request, context, principal throws(APIError) in
            let input: Lockstep_V1_WatchRequest = try await decode(request, context)
            let (presence, gone) = await context.presence()
            var whenGone: (@Sendable () async -> Void)?
            if let presence { whenGone = { await presence.waitUntilGone() } }
            let stream = try await watches.events(input, principal: principal, clientGone: gone, whenGone: whenGone)
            return Response(status: .ok, headers: [.contentType: "application/x-ndjson"], body: ResponseBody { writer in
                do {
                    for try await stored in stream {
                        try await writer.write(ByteBuffer(string: try HistoryExport.line(stored) + "\n"))
                    }
                } catch let error as APIError {
                    try await writer.write(ByteBuffer(string: Self.errorLine(error)))
                }
                try await writer.finish(nil)
            })
        }
        return served
    }

    /// A JSON route: POST `operation.path` with the request message as a JSON body, answered with the
    /// response message (through `gate`).
    private func route<In: SwiftProtobuf.Message, Out: SwiftProtobuf.Message>(
        _ router: Router<LockstepRequestContext>, _ operation: APIOperation, _ served: inout [APIOperation],
        _ handler: @escaping @Sendable (In, Principal) async throws(APIError) -> Out
    ) {
        route(router, operation, &served) { input, principal, _ throws(APIError) in try await handler(input, principal) }
    }

    private func route<In: SwiftProtobuf.Message, Out: SwiftProtobuf.Message>(
        _ router: Router<LockstepRequestContext>, _ operation: APIOperation, _ served: inout [APIOperation],
        _ handler: @escaping @Sendable (In, Principal, LockstepRequestContext) async throws(APIError) -> Out
    ) {
        gate(router, operation, &served, In.self, Out.self) { request, context, principal throws(APIError) in
            let input: In = try await decode(request, context)
            return json(try await handler(input, principal, context), status: .ok)
        }
    }

    /// The JSON side's one gate, which every operation's route goes through: authenticates the caller,
    /// applies the operation's roles (`Principal.require(operation)`, before anything is decoded or read),
    /// runs `handler`, answers an `APIError` with its `ErrorBody`, and times the call under the
    /// operation's name (a stream until its response starts). The handler's message types must be the
    /// table's (checked here, at start-up).
    private func gate<In: SwiftProtobuf.Message, Out: SwiftProtobuf.Message>(
        _ router: Router<LockstepRequestContext>, _ operation: APIOperation, _ served: inout [APIOperation], _: In.Type, _: Out.Type,
        _ handler: @escaping @Sendable (Request, LockstepRequestContext, Principal) async throws(APIError) -> Response
    ) {
        precondition(In.protoMessageName == operation.request && Out.protoMessageName == operation.response,
                     "the route for \(operation.name) takes \(In.protoMessageName) and answers \(Out.protoMessageName); the table says \(operation.request), \(operation.response)")
        served.append(operation)
        let timer = metrics.request(operation.name, transport: "http")
        let respond: @Sendable (Request, LockstepRequestContext) async -> Response = { request, context in
            let began = ContinuousClock.now
            defer { timer.record(duration: ContinuousClock.now - began) }
            do throws(APIError) {
                return try await handler(request, context, try await admit(request, context, to: operation))
            } catch {
                return refusal(error)
            }
        }
        switch operation.verb {
        case .get: router.get(RouterPath(operation.path)) { request, context in await respond(request, context) }
        case .post: router.post(RouterPath(operation.path)) { request, context in await respond(request, context) }
        }
    }

    func decode<In: SwiftProtobuf.Message>(_ request: Request, _ context: LockstepRequestContext) async throws(APIError) -> In {
        if let whole = context.wholeBody { return try decodeWhole(contentType: request.headers[.contentType], whole) }
        try Self.checkContentType(request.headers[.contentType])
        return try Self.decode(try await collectBody(request))
    }

    /// A body that arrived whole (the engine's HTTP/2): the same checks as one read as it arrives (its
    /// content type, then its size), then decoded.
    func decodeWhole<In: SwiftProtobuf.Message>(contentType: String?, _ body: ByteBuffer) throws(APIError) -> In {
        try Self.checkContentType(contentType)
        guard body.readableBytes <= limits.requestBodyBytesMax else { throw bodyTooLarge }
        return try Self.decode(body)
    }

    /// Required, so a web page cannot send a body without a CORS preflight (a "simple" request).
    static func checkContentType(_ type: String?) throws(APIError) {
        guard let type, isJSON(type) else {
            let got = type.map { " (got \($0.prefix(100)))" } ?? " (no content-type)"
            throw APIError(.unsupportedMediaType, "send the body as application/json\(got)")
        }
    }

    /// Whether a content type begins with `application/json` (so with parameters or without), its ASCII
    /// letters in any case: read in place, since every request with a body comes through here.
    static func isJSON(_ type: String) -> Bool {
        let bytes = type.utf8
        guard bytes.count >= jsonType.count else { return false }
        // Upper-case ASCII letters folded to lower case; every other byte as it is.
        return zip(bytes, jsonType).allSatisfy { ((0x41...0x5A).contains($0) ? $0 | 0x20 : $0) == $1 }
    }

    /// `application/json` in lowercase.
    private static let jsonType: [UInt8] = Array("application/json".utf8)

    /// A whole JSON body as `In`.
    static func decode<In: SwiftProtobuf.Message>(_ body: ByteBuffer) throws(APIError) -> In {
        let bytes = Array(body.readableBytesView)
        let message: In
        do {
            message = try In(jsonUTF8Bytes: bytes, options: JSONDecodingOptions())
        } catch {
            throw APIError.malformed("the body is not a valid \(In.protoMessageName) in JSON: \(Self.explain(error))")
        }
        // swift-protobuf keeps the last of a field given twice (under one name, or as `lease_id` and
        // `leaseId`): the request would mean what its last copy says. (No request message has a map field.)
        if let field = JSONKeys.firstRepeated(in: bytes, protobufFields: true) { throw APIError.malformed("the body gives field \(field) twice") }
        return message
    }

    /// The request body, up to `requestBodyBytesMax` bytes and within `requestBodyMillisMax` of its head:
    /// a body that trickles in is refused, not waited for.
    func collectBody(_ request: Request) async throws(APIError) -> ByteBuffer {
        let bytesMax = limits.requestBodyBytesMax
        let millisMax = limits.requestBodyMillisMax
        let body = request.body
        do {
            return try await withThrowingTaskGroup(of: ByteBuffer?.self) { group in
                group.addTask { try await body.collect(upTo: bytesMax) }
                group.addTask {
                    try await Task.sleep(for: .milliseconds(millisMax))
                    return nil
                }
                defer { group.cancelAll() }
                guard let first = try await group.next(), let collected = first else {
                    throw bodyTimedOut
                }
                return collected
            }
        } catch let error as APIError {
            throw error
        } catch is NIOTooManyBytesError {
            throw bodyTooLarge
        } catch {
            throw APIError.malformed("the request body could not be read: \(error)")
        }
    }

    /// What is wrong with a JSON body, in words (not the decoder's case names).
    package static func explain(_ error: any Error) -> String {
        guard let error = error as? JSONDecodingError else { return "it could not be decoded" }
        return switch error {
        case .truncated: "it ends early"
        case .malformedString: "a string is malformed (or a value that must be a string is not one)"
        case .malformedNumber: "a number is malformed or out of range (64-bit integers go as strings)"
        case .numberRange: "a number is out of range for its field"
        case .malformedBool: "a boolean is malformed"
        case .unknownField(let name): "it has an unknown field \"\(name.prefix(64))\""
        case .unrecognizedEnumValue: "an enum field has an unknown value"
        case .invalidUTF8: "it is not valid UTF-8"
        case .leadingZero: "a number has a leading zero"
        case .trailingGarbage: "something follows the JSON object"
        case .messageDepthLimit: "it nests too deeply"
        case .missingFieldNames, .unquotedMapKey: "a map key is missing or unquoted"
        case .failure, .schemaMismatch, .conflictingOneOf, .malformedDuration, .malformedFieldMask, .malformedMap, .malformedTimestamp, .illegalNull:
            "it does not match the message's fields and types"
        @unknown default: "it does not match the message's fields and types"
        }
    }

    /// The last line of an NDJSON stream that ended early: `{"error": ErrorBody}`.
    package static func errorLine(_ error: APIError) -> String {
        let body = (try? error.body.jsonString()) ?? #"{"code":"internal"}"#
        return #"{"error":"# + body + "}\n"
    }

    /// The gate's check: who calls (`caller`), and whether their roles allow `operation`.
    func admit(_ request: Request, _ context: LockstepRequestContext, to operation: APIOperation) async throws(APIError) -> Principal {
        let principal = try await caller(request, context)
        // A console session may not make sign-in links: each would sign in a new session, and a session
        // renewing itself so would outlive its 12 hours (and hand out links without its token). (A stale
        // session was refused above as unauthenticated.)
        if operation == .createConsoleLink, request.headers[.authorization] == nil, console.sessionID(request) != nil {
            throw APIError(.permissionDenied, "sign-in links are made with a bearer token or a client certificate (lockstep console link), not from a console session")
        }
        try principal.require(operation)
        return principal
    }

    /// Who calls: a request without an `authorization` field that carries the console's session cookie
    /// is its session's principal (with its CSRF token, from its origin: `consoleSession`); any other is
    /// authenticated as ever (`authenticate`), and under `--dev` a browser's (an `Origin`) is refused.
    func caller(_ request: Request, _ context: LockstepRequestContext) async throws(APIError) -> Principal {
        if request.headers[.authorization] == nil, console.sessionID(request) != nil {
            return try consoleSession(request).session.principal
        }
        if refuseBrowsers, request.headers[.origin] != nil { throw HTTPRoutes.browserRefusal }
        return try await authenticate(request, context.channel)
    }

    /// An error a call ends with, counted (`ServerMetrics.record`) and answered with its `ErrorBody`.
    func refusal(_ error: APIError) -> Response {
        metrics.record(error)
        return errorResponse(error)
    }

    /// A request body over `requestBodyBytesMax`, and one not arrived within `requestBodyMillisMax` of its
    /// head: what the route answers, and what the HTTP/2 engine answers when it refuses one itself.
    var bodyTooLarge: APIError { APIError(.bodyTooLarge, "the request body is over \(limits.requestBodyBytesMax) bytes") }
    var bodyTimedOut: APIError { APIError(.requestTimeout, "the request body did not arrive within \(limits.requestBodyMillisMax) ms of its head") }

    /// The body of a request the HTTP/2 engine refuses before any route (`H2Responder.refusal`): the
    /// `ErrorBody` a route would answer with (431: the header list; 408: the body's time; else its size).
    package func engineRefusalBody(status: Int) -> ByteBuffer {
        let error = switch status {
        case 431: APIError(.resourceExhausted, "the request's header list is over the server's limit")
        case 408: bodyTimedOut
        default: bodyTooLarge
        }
        return Self.jsonBytes(error.body)
    }

    /// An error as the API answers it: its `ErrorBody` with its HTTP status.
    package func errorResponse(_ error: APIError) -> Response {
        var response = json(error.body, status: .init(code: error.kind.httpStatus))
        if let writer = error.writer { response.headers[.init("Lockstep-Writer")!] = writer }
        return response
    }

    func json(_ message: some SwiftProtobuf.Message, status: HTTPResponse.Status) -> Response {
        Response(status: status, headers: [.contentType: "application/json"], body: ResponseBody(byteBuffer: Self.jsonBytes(message)))
    }

    /// A message in the proto3 JSON mapping (field names as in the .proto files), one line.
    package static func jsonBytes(_ message: some SwiftProtobuf.Message) -> ByteBuffer {
        var options = JSONEncodingOptions()
        options.preserveProtoFieldNames = true
        let bytes = (try? message.jsonUTF8Bytes(options: options) as [UInt8]) ?? Array(#"{"code":"internal","message":"the response could not be encoded"}"#.utf8)
        var buffer = ByteBuffer(bytes: bytes)
        buffer.writeString("\n")
        return buffer
    }

    package init(agents: AgentAPI, operators: OperatorAPI, watches: WatchAPI, history: HistoryAPI, stages: StageAPI, limits: APILimits, metrics: ServerMetrics, refreshGauges: @escaping @Sendable () async -> Void, authenticate: @escaping @Sendable (Request, any Channel) async throws(APIError) -> Principal,
                 authenticateOnLoop: @escaping @Sendable (String?, any Channel) throws(APIError) -> Principal, writeProblem: @escaping @Sendable () async -> String?, refuseBrowsers: Bool,
                 console: ConsoleAccess) {
        self.agents = agents
        self.operators = operators
        self.watches = watches
        self.history = history
        self.stages = stages
        self.limits = limits
        self.metrics = metrics
        self.refreshGauges = refreshGauges
        self.authenticate = authenticate
        self.authenticateOnLoop = authenticateOnLoop
        self.writeProblem = writeProblem
        self.refuseBrowsers = refuseBrowsers
        self.console = console
    }
}
