import Hummingbird
import LockstepH2
import NIOCore
import LockstepService
import LockstepWire
import Metrics
import Synchronization

/// `POST /v1/agent/poll` on the engine (the JSON port's HTTP/2), served from the connection's event loop:
/// the same checks and answers as the route (`HTTPRoutes.gate`: the `--dev` browser refusal,
/// authentication, the principal's roles, the body's checks, the errors and the request timer), made where
/// the request arrived, without a task or a thread switch. A poll whose service has no step until the log
/// changes (no node holds it, or its step is leased: `StepServices`) has nothing to lease
/// (`AgentAPI.lookAtOnce`), so it is answered there, or parks there: an entry in the wakeup table
/// (`Wakeups.park`, through `AgentAPI.drive`, which gRPC's poll shares) holding its stream's answer.
/// Only a poll that needs the coordinator (its service may have a step, or it is a named poll whose
/// lease is published under its name), or one woken from its park (a change, its deadline, its stream
/// closing, shutdown), runs as a piece of its connection's work, through the `PollLane`.
///
/// A class: every closure a parked poll keeps captures one reference to it, not a copy of the routes.
package final class EnginePoll: Sendable {
    /// Hands a piece of a poll's work to its connection; runs the second closure instead when that
    /// connection is closing (the work was dropped).
    package typealias Run = AgentAPI.PollRun
    let routes: HTTPRoutes
    let timer: Metrics.Timer
    /// Polls looking at the coordinator at once, over every connection (`PollLane`).
    package let lane: PollLane
    /// The `server` field of every answer.
    let serverName: String
    /// The answer when no step came (`AgentAPI.retryLater`), encoded once, and its fields.
    private let retryLater: ByteBuffer
    private let retryLaterFields: [(String, String)]
    /// `retryLaterFields` with the `date` field, made again when the date changes (once a second): the
    /// answer of most polls, so none of them builds its fields.
    private let retryLaterDated = Mutex<(date: String, fields: [(String, String)])>(("", []))

    /// `lane` bounds the looks at the coordinator of every poll served from an event loop (gRPC's too).
    package init(routes: HTTPRoutes, serverName: String, lane: PollLane) {
        self.routes = routes
        self.serverName = serverName
        timer = routes.metrics.request(APIOperation.poll.name, transport: "http")
        self.lane = lane
        retryLater = HTTPRoutes.jsonBytes(routes.agents.retryLater)
        retryLaterFields = Self.fields(retryLater, serverName: serverName)
    }

    private static let path = APIOperation.poll.path
    private static let pathWithQuery = APIOperation.poll.path + "?"

    /// Whether `path` (query included) is the poll route's.
    package static func serves(method: String, path: String) -> Bool {
        method == "POST" && (path == Self.path || path.hasPrefix(Self.pathWithQuery))
    }

    /// Serves one poll, on its connection's event loop, answering on `response`; `work` takes a piece of
    /// the poll's work to run in its connection's task group (through the lane).
    ///
    /// A poll answered at its first look (most: nothing to lease and no wait left) allocates nothing for
    /// waiting: its stream's presence, the callback that marks it gone and the closures that run it later
    /// are made only for a poll that parks or looks at the coordinator.
    package func serve(_ request: H2Request, _ response: H2Response, work: JSONOnEngine.Work) {
        let began = ContinuousClock.now
        if routes.refuseBrowsers, let refusal = HTTPRoutes.devRefusal(hasOrigin: Self.field("origin", of: request) != nil, authority: request.head.authority) {
            // Neither counted nor timed, as on the route, where the edge middleware answers it.
            return refuse(refusal, counted: false, on: response)
        }
        var poll: AgentAPI.PollCursor
        do throws(APIError) {
            let principal = try routes.authenticateOnLoop(Self.field("authorization", of: request), request.channel)
            try principal.require(.poll)
            poll = try routes.agents.beginPoll(try routes.decodeWhole(contentType: Self.field("content-type", of: request), request.body),
                                               principal: principal, at: began)
        } catch {
            timer.record(duration: ContinuousClock.now - began)
            return refuse(error, on: response)
        }
        var found: AgentAPI.PollLook?
        if let answer = routes.agents.answerAtOnce(&poll, found: &found) {
            timer.record(duration: ContinuousClock.now - began)
            return self.answer(.success(answer), on: response)
        }
        let presence = ClientPresence(inputClosedMeansGone: false)
        response.closed.whenComplete { _ in presence.markGone() }
        let deliver: @Sendable (@escaping @Sendable () async -> Void) -> Bool = { job in
            if case .enqueued = work.yield(job) { return true }
            return false
        }
        // A connection that takes no more work is closing: the stream is refused, to be retried.
        let run: Run = { [lane] job, dropped, overflowed in
            lane.submit(job, deliver: deliver, dropped: {
                dropped()
                response.reset(.refusedStream)
            }, overflowed: overflowed)
        }
        routes.agents.drive(poll, after: found, gone: { presence.isGone }, departure: presence, run: run) { [self, timer] end in
            timer.record(duration: ContinuousClock.now - began)
            answer(end, on: response)
        }
    }

    /// A driven poll's end, answered whole on `stream` (nothing waits for the client to read it, so no
    /// reader that stopped holds a lane place): a step, `retryLater` (encoded once), or the error.
    private func answer(_ end: Result<Lockstep_V1_PollResponse, APIError>, on stream: H2Response) {
        switch end {
        case .success(let response) where !response.hasStep:
            let date = HTTPDate.now()
            let fields = retryLaterDated.withLock { cached in
                if cached.date != date { cached = (date, retryLaterFields + [("date", date)]) }
                return cached.fields
            }
            stream.send(status: 200, headers: fields, body: retryLater)
        case .success(let response):
            let body = HTTPRoutes.jsonBytes(response)
            Self.send(on: stream, status: 200, fields: Self.fields(body, serverName: serverName), body: body)
        case .failure(let error):
            refuse(error, on: stream)
        }
    }

    /// A field's value; several fields of one name joined, as `HTTPFields` reads them for the route.
    private static func field(_ name: String, of request: H2Request) -> String? {
        var found: String?
        for (key, value) in request.head.headers where key == name {
            found = found.map { $0 + ", " + value } ?? value
        }
        return found
    }

    /// A JSON answer's fields.
    private static func fields(_ body: ByteBuffer, serverName: String) -> [(String, String)] {
        [("content-type", "application/json"), ("content-length", String(body.readableBytes)), ("server", serverName)]
    }

    /// An error answered as the route answers it (`HTTPRoutes.refusal`): counted (the `--dev` browser
    /// refusal is not, as on the route), its status and `ErrorBody`, and the writer on a replica.
    private func refuse(_ error: APIError, counted: Bool = true, on stream: H2Response) {
        if counted { routes.metrics.record(error) }
        let body = HTTPRoutes.jsonBytes(error.body)
        var fields = Self.fields(body, serverName: serverName)
        if let writer = error.writer { fields.append(("lockstep-writer", writer)) }
        Self.send(on: stream, status: Int(error.kind.httpStatus), fields: fields, body: body)
    }

    /// A whole answer with `fields` and the `date` field.
    private static func send(on stream: H2Response, status: Int, fields: [(String, String)], body: ByteBuffer) {
        var fields = fields
        fields.append(("date", HTTPDate.now()))
        stream.send(status: status, headers: fields, body: body)
    }
}
