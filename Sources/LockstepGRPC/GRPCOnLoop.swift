import GRPCCore
import LockstepAPI
import LockstepH2
import LockstepService
import LockstepWire
import Metrics
import SwiftProtobuf

extension GRPCAgentService {
    /// Whether `descriptor` names a method of `AgentService`: the agents' calls, small and bounded, which
    /// run on their connection's event loop (`H2GRPCServerTransport.Configuration.runsOnLoop`).
    package static func isAgentMethod(_ descriptor: MethodDescriptor) -> Bool {
        descriptor.service == Lockstep_V1_AgentService.Method.Poll.descriptor.service
    }

    /// Whether an RPC runs on its connection's event loop (`H2GRPCServerTransport.Configuration.runsOnLoop`):
    /// an agent's method with a message of at most `AgentAPI.agentRequestBytesOnLoopMax` bytes (`AgentAPI.runsOnLoop`).
    @Sendable package static func runsOnLoop(_ descriptor: MethodDescriptor, _ messageBytes: Int) -> Bool {
        AgentAPI.runsOnLoop(agentCall: isAgentMethod(descriptor), requestBytes: messageBytes)
    }

    /// An agent's call taken where it arrives, on the connection's event loop
    /// (`H2GRPCServerTransport.Configuration.onLoop`), through the same gate as every method
    /// (authentication, roles, the timer, errors with their stable code): `Poll` with no task (`poll`) and
    /// the reports, `Heartbeat`, `ReportProgress`, `Complete` and `Fail`, their command run as a piece of
    /// the connection's work (`report`). Left to the server and its handler (nil): the operators' and
    /// reviewers' methods, a message over 4 KiB or that does not decode (the server's malformed answer),
    /// a poll whose `grpc-timeout` ends before its wait (GRPCCore's deadline answers it DEADLINE_EXCEEDED),
    /// and a `grpc-timeout` that does not parse.
    package func onLoop(_ call: H2GRPCServerTransport.OnLoopCall) -> H2GRPCServerTransport.OnLoopAnswer? {
        // By name: the transport's descriptor does not know the method's type, which the generated one has.
        // An agent's message is a few dozen bytes: a larger one is decoded by the server, in a task, so
        // nobody (authenticated or not) holds a loop for a long decode.
        typealias Method = Lockstep_V1_AgentService.Method
        guard Self.runsOnLoop(call.descriptor, call.message.count) else { return nil }
        switch call.descriptor.method {
        case Method.Poll.descriptor.method: return poll(call)
        case Method.Heartbeat.descriptor.method:
            return report(call, .heartbeat, reportTimers.heartbeat) { (input: Lockstep_V1_HeartbeatRequest, principal) throws(APIError) in
                try await agents.heartbeat(input, principal: principal)
            }
        case Method.ReportProgress.descriptor.method:
            return report(call, .reportProgress, reportTimers.progress) { (input: Lockstep_V1_ReportProgressRequest, principal) throws(APIError) in
                try await agents.reportProgress(input, principal: principal)
            }
        case Method.Complete.descriptor.method:
            return report(call, .complete, reportTimers.complete) { (input: Lockstep_V1_CompleteRequest, principal) throws(APIError) in
                try await agents.complete(input, principal: principal)
            }
        case Method.Fail.descriptor.method:
            return report(call, .fail, reportTimers.fail) { (input: Lockstep_V1_FailRequest, principal) throws(APIError) in try await agents.fail(input, principal: principal) }
        default: return nil
        }
    }

    /// An agent's report (`Heartbeat`, `ReportProgress`, `Complete`, `Fail`) taken where it arrives: checked
    /// on the loop through the same gate as on the server (authentication, roles, the timer, errors with
    /// their stable code), then its work (a command to the coordinator) run as a piece of its connection's
    /// work, on the same loop, without GRPCCore's machinery for one RPC (its task, streams and writer).
    /// Left to the server (nil): a message that does not decode (the server's malformed answer), and a
    /// `grpc-timeout` that does not parse. A call's deadline is kept by a timer on the loop, which answers
    /// DEADLINE_EXCEEDED (`deadline_exceeded`) if the answer is not sent by then.
    private func report<In: SwiftProtobuf.Message, Out: SwiftProtobuf.Message>(
        _ call: H2GRPCServerTransport.OnLoopCall, _ operation: APIOperation, _ timer: Metrics.Timer,
        _ body: @escaping @Sendable (In, Principal) async throws(APIError) -> Out
    ) -> H2GRPCServerTransport.OnLoopAnswer? {
        assert(In.protoMessageName == operation.request && Out.protoMessageName == operation.response,
               "\(operation.method) takes \(In.protoMessageName) and answers \(Out.protoMessageName); the table says \(operation.request), \(operation.response)")
        // A `grpc-timeout` (the Swift client sends one with every call) is kept here too, by a timer on
        // the loop: one that does not parse goes to the server, which refuses it as malformed.
        var deadline: Int64?
        if let timeout = Self.timeout(of: call) {
            guard let millis = Self.timeoutMillis(timeout) else { return nil }
            deadline = millis
        }
        guard let input = try? In(serializedBytes: call.message) else { return nil }
        let began = ContinuousClock.now
        let metrics = metrics
        let principal: Principal
        do throws(APIError) {
            principal = try admit(call, operation)
        } catch {
            return Self.refuse(error, metrics: metrics, timer: timer, began: began)
        }
        let reply = call.makeReply()
        // Past the deadline the caller is told so (the command's work, already under way, goes on, as under
        // GRPCCore's deadline); the first answer is the one sent.
        let expiry = deadline.map { millis in
            call.channel.eventLoop.scheduleTask(in: .milliseconds(millis)) {
                // Counted once: only by the side whose answer went out.
                if reply.send(.failure(Self.deadlinePassed.rpcError)) { metrics.record(Self.deadlinePassed) }
            }
        }
        let taken = reply.run {
            let answer: H2GRPCServerTransport.OnLoopAnswer
            var refusal: APIError?
            do throws(APIError) {
                let output = try await body(input, principal)
                answer = (try? output.serializedBytes() as [UInt8]).map { .message($0, trailing: [:]) } ?? Self.unencodable
            } catch {
                refusal = error
                answer = .failure(error.rpcError)
            }
            timer.record(duration: ContinuousClock.now - began)
            expiry?.cancel()
            if reply.send(answer), let refusal { metrics.record(refusal) }
        }
        // The connection takes no more work: it is closing, or the server is shutting down.
        guard taken else {
            expiry?.cancel()
            return Self.refuse(Self.shuttingDown, metrics: metrics, timer: timer, began: began)
        }
        return .later
    }

    /// The gate every call taken on the loop goes through, as the server's handlers do (`opening`): the
    /// caller authenticated (by its client certificate too, read where the call arrived) and allowed `operation`.
    private func admit(_ call: H2GRPCServerTransport.OnLoopCall, _ operation: APIOperation) throws(APIError) -> Principal {
        let principal = try authenticate(credentials(call.metadata), call.tls ? ClientIdentity.fingerprintOnLoop(of: call.channel) : nil)
        try principal.require(operation)
        return principal
    }

    /// `error` answered, counted and timed, as the server's handlers do. Static: a parked poll's callback
    /// that may refuse then holds the metrics, not a copy of the service.
    private static func refuse(_ error: APIError, metrics: ServerMetrics, timer: Metrics.Timer, began: ContinuousClock.Instant) -> H2GRPCServerTransport.OnLoopAnswer {
        metrics.record(error)
        timer.record(duration: ContinuousClock.now - began)
        return .failure(error.rpcError)
    }

    private static let shuttingDown = APIError(.shuttingDown, "the server is shutting down")
    /// A report whose `grpc-timeout` passed before its answer (`report`).
    private static let deadlinePassed = APIError(.deadlineExceeded, "the call's grpc-timeout passed before its answer; the report may still have been recorded")

    /// The call's `grpc-timeout`, as sent (nil: none).
    private static func timeout(of call: H2GRPCServerTransport.OnLoopCall) -> String? {
        call.metadata[stringValues: "grpc-timeout"].first(where: { _ in true })
    }

    private static let unencodable = H2GRPCServerTransport.OnLoopAnswer.failure(
        RPCError(code: .internalError, message: "internal: the answer could not be encoded", metadata: ["lockstep-error-code": "internal"]))

    /// `Poll` on the loop (`onLoop`).
    private func poll(_ call: H2GRPCServerTransport.OnLoopCall) -> H2GRPCServerTransport.OnLoopAnswer? {
        guard let input = try? Lockstep_V1_PollRequest(serializedBytes: call.message) else { return nil }
        let began = ContinuousClock.now
        var poll: AgentAPI.PollCursor
        do throws(APIError) {
            poll = try agents.beginPoll(input, principal: try admit(call, .poll), at: began)
        } catch {
            return Self.refuse(error, metrics: metrics, timer: pollTimer, began: began)
        }
        if let timeout = Self.timeout(of: call) {
            guard let millis = Self.timeoutMillis(timeout), millis > Int64(min(input.waitMs, agents.limits.pollWaitMillisMax)) else { return nil }
        }
        let (metrics, timer, lane, retryLater) = (metrics, pollTimer, lane, self.retryLater)
        // Answered at its first look (most polls that find nothing): nothing allocated for waiting.
        var found: AgentAPI.PollLook?
        if let answer = agents.answerAtOnce(&poll, found: &found) {
            timer.record(duration: ContinuousClock.now - began)
            return Self.answer(answer, retryLater: retryLater)
        }
        let reply = call.makeReply()
        let departure = DepartureSignal()
        reply.closed.whenComplete { _ in departure.markGone() }
        agents.drive(poll, after: found, gone: { departure.isGone }, departure: departure, run: { work, dropped, overflowed in
            // Through the lane shared with the JSON port; the connection's task group runs the work, and
            // once it takes no more (the connection closed, or the server is shutting down) the poll is
            // answered so, if anyone is still there to hear it.
            lane.submit(work, deliver: { reply.run($0) }, dropped: {
                dropped()
                // Its connection closed (the client went): nobody to answer, and no refusal to count.
                if departure.isGone { return }
                reply.send(Self.refuse(Self.shuttingDown, metrics: metrics, timer: timer, began: began))
            }, overflowed: overflowed)
        }) { end in
            timer.record(duration: ContinuousClock.now - began)
            switch end {
            case .success(let response):
                reply.send(Self.answer(response, retryLater: retryLater))
            case .failure(let error):
                metrics.record(error)
                reply.send(.failure(error.rpcError))
            }
        }
        return .later
    }

    /// A poll's answer as the transport sends it: `retryLater` (the answer when no step came, encoded and
    /// framed once) or the step, encoded.
    private static func answer(_ response: Lockstep_V1_PollResponse, retryLater: H2GRPCServerTransport.FramedMessage)
        -> H2GRPCServerTransport.OnLoopAnswer {
        guard response.hasStep else { return .framed(retryLater) }
        guard let bytes = try? response.serializedBytes() as [UInt8] else { return unencodable }
        return .message(bytes, trailing: [:])
    }

    /// `grpc-timeout` in milliseconds (PROTOCOL-HTTP2: up to 8 digits and a unit, H M S m u n), rounded
    /// down; nil when it is not well formed.
    package static func timeoutMillis(_ text: String) -> Int64? {
        guard let unit = text.last, (2...9).contains(text.count), let value = Int64(text.dropLast()), value >= 0,
              text.dropLast().allSatisfy({ $0.isASCII && $0.isNumber }) else { return nil }
        switch unit {
        case "H": return value * 3_600_000
        case "M": return value * 60_000
        case "S": return value * 1_000
        case "m": return value
        case "u": return value / 1_000
        case "n": return value / 1_000_000
        default: return nil
        }
    }
}
