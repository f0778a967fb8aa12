import HTTPTypes
import Hummingbird
import HummingbirdCore
import LockstepH2
import LockstepService
import Logging
import NIOCore

/// The JSON routes on the HTTP/2 engine (`LockstepH2`): each request on a stream becomes a Hummingbird
/// `Request` for the one route table HTTP/1.1 is served from too (`HTTPRoutes` on one `Router`), and its
/// answer goes back through the engine, the body's writes paced by the client's window. No channel per
/// stream: a stream's presence is a `ClientPresence` marked gone when the engine reports the stream
/// closed (reset, or its connection ended), which is what wakes a parked poll or ends a watch.
///
/// A request's work runs in its connection's task group (`HTTP1AndEngineChannel.handle`), fed through
/// `work`: no request outlives the handling of its connection.
package struct JSONOnEngine: H2Responder {
    /// One request's work, handed to its connection's task group.
    package typealias Work = AsyncStream<@Sendable () async -> Void>.Continuation

    let router: RouterResponder<LockstepRequestContext>
    let logger: Logger
    let serverName: String
    /// The body of a request the engine refuses itself (431, 413, 408): an `ErrorBody` with its stable code.
    let refusalBody: @Sendable (Int) -> ByteBuffer
    /// Where this connection's requests go (`serving(into:)`); nil: not bound to a connection yet.
    private var work: Work?
    /// The poll route served without a task while parked (nil: through the router like the rest).
    var poll: EnginePoll?

    package init(router: RouterResponder<LockstepRequestContext>, poll: EnginePoll? = nil, logger: Logger, serverName: String,
                 refusalBody: @escaping @Sendable (Int) -> ByteBuffer) {
        self.router = router
        self.poll = poll
        self.logger = logger
        self.serverName = serverName
        self.refusalBody = refusalBody
    }

    /// This responder for one connection, its requests run by whoever reads `work`'s stream.
    package func serving(into work: Work) -> JSONOnEngine {
        var bound = self
        bound.work = work
        return bound
    }

    package func respond(to request: H2Request, _ response: H2Response) {
        guard let work else { return response.reset(.internalError) }
        // A poll with a cookie (the console's session, which only the route reads) goes through the route.
        if let poll, EnginePoll.serves(method: request.head.method, path: request.head.path), AgentAPI.runsOnLoop(agentCall: true, requestBytes: request.body.readableBytes),
           !request.head.headers.contains(where: { $0.0 == "cookie" }) {
            return poll.serve(request, response, work: work)
        }
        let presence = ClientPresence(inputClosedMeansGone: false)
        response.closed.whenComplete { _ in presence.markGone() }
        guard let head = Self.head(request.head) else {
            return response.send(status: 400, headers: [("content-length", "0"), ("date", HTTPDate.now())], body: nil)
        }
        var context = LockstepRequestContext(source: ApplicationRequestContextSource(channel: request.channel, logger: logger))
        context.streamPresence = presence
        context.wholeBody = request.body
        let hummingbird = Request(head: head, body: RequestBody(buffer: request.body))
        let (router, logger, serverName, routed) = (router, logger, serverName, context)
        // An agent's call with a small body (as a poll's must be to be served on the loop) runs on the
        // connection's event loop, as its connection's group does; a larger one, and every other route
        // (operators, reviewers, the console, watches: work or answers that may be large), on Swift's
        // global executor, holding no loop.
        let onLoop = Self.runsOnLoop(path: request.head.path, bodyBytes: request.body.readableBytes)
        let yielded = work.yield {
            if onLoop { return await Self.serve(hummingbird, routed, router, logger, serverName, response) }
            await withTaskExecutorPreference(globalConcurrentExecutor) {
                await Self.serve(hummingbird, routed, router, logger, serverName, response)
            }
        }
        // The connection's handling has ended (it is closing): the stream is refused, to be retried.
        if case .terminated = yielded { response.reset(.refusedStream) }
    }

    /// The agents' routes (`/v1/agent/…`), served on the event loop.
    package static let agentPaths = "/v1/agent/"

    /// Whether a request runs on its connection's event loop: an agent's route with a body of at most
    /// `AgentAPI.agentRequestBytesOnLoopMax` bytes (`AgentAPI.runsOnLoop`, the rule gRPC applies too).
    package static func runsOnLoop(path: String, bodyBytes: Int) -> Bool {
        AgentAPI.runsOnLoop(agentCall: path.hasPrefix(agentPaths), requestBytes: bodyBytes)
    }

    private static func serve(_ hummingbird: Request, _ routed: LockstepRequestContext, _ router: RouterResponder<LockstepRequestContext>, _ logger: Logger, _ serverName: String,
                              _ response: H2Response) async {
        var answer: Response
        do {
            answer = try await router.respond(to: hummingbird, context: routed)
        } catch {
            logger.debug("a JSON route failed", metadata: ["error": "\(error)"])
            answer = Response(status: .internalServerError)
        }
        answer.headers[.server] = serverName
        await write(answer, to: response)
    }

    package func refusal(status: Int) -> H2Refusal {
        let body = refusalBody(status)
        return H2Refusal(status: status, headers: [("content-type", "application/json"), ("content-length", "\(body.readableBytes)"),
                                                   ("date", HTTPDate.now())], body: body)
    }

    /// The request's head as swift-http-types has it; nil for a method it does not take (libnghttp2 has
    /// already checked that the pseudo-headers are present and well formed).
    static func head(_ head: H2RequestHead) -> HTTPRequest? {
        guard let method = HTTPRequest.Method(head.method) else { return nil }
        var fields = HTTPFields()
        fields.reserveCapacity(head.headers.count)
        for (name, value) in head.headers {
            guard let name = HTTPField.Name(name) else { continue }
            fields.append(HTTPField(name: name, value: value))
        }
        return HTTPRequest(method: method, scheme: head.scheme, authority: head.authority, path: head.path, headerFields: fields)
    }

    /// `answer`'s fields as HTTP/2 sends them (lower-case names, no connection-specific fields), with
    /// `content-length` when it is known, and `date`.
    static func fields(of answer: Response, contentLength: Int?) -> [(String, String)] {
        var fields: [(String, String)] = []
        fields.reserveCapacity(answer.headers.count + 1)
        for field in answer.headers where field.name != .connection && field.name != .transferEncoding && field.name != .contentLength {
            fields.append((field.name.canonicalName, field.value))
        }
        if let length = contentLength ?? answer.headers[.contentLength].flatMap({ Int($0) }) { fields.append(("content-length", "\(length)")) }
        if answer.headers[.date] == nil { fields.append(("date", HTTPDate.now())) }
        return fields
    }

    /// Sends `answer`: its head, then its body as the route writes it, each write waiting for the stream
    /// to drain (a watch goes at its reader's pace). A stream that closed meanwhile ends the writing.
    static func write(_ answer: Response, to response: H2Response) async {
        response.head(status: answer.status.code, headers: fields(of: answer, contentLength: answer.body.contentLength), body: true)
        do {
            try await answer.body.write(StreamBodyWriter(response: response))
            response.finish()  // a body that never said it ended (nothing happens when it did)
        } catch {
            response.reset(.internalError)
        }
    }
}

/// A response body's writes onto one engine stream.
struct StreamBodyWriter: ResponseBodyWriter {
    let response: H2Response

    mutating func write(_ buffer: ByteBuffer) async throws {
        try await response.write(buffer).get()
    }

    consuming func finish(_ trailingHeaders: HTTPFields?) async throws {
        response.finish(trailers: trailingHeaders.map { $0.map { ($0.name.canonicalName, $0.value) } })
    }
}
