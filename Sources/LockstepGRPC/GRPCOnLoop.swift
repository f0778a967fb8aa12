import GRPCCore
import LockstepAPI
import LockstepH2
import LockstepService
import LockstepWire
import SwiftProtobuf

extension GRPCAgentService {
    /// The agent calls answered where they arrive, on the connection's event loop with no task
    /// (`H2GRPCServerTransport.Configuration.onLoop`): a `Poll` whose service no node holds, once its
    /// wait is over (`AgentAPI.lookAtOnce`; a poll with `wait_ms` 0 that finds nothing), or one the gate
    /// refuses. It passes the same gate as every method (authentication, roles, the timer, errors with
    /// their stable code). Every other call goes to the server and its handlers, as does a poll that needs
    /// the coordinator, that parks, or whose message does not decode (the server's malformed answer).
    package func onLoop(_ call: H2GRPCServerTransport.OnLoopCall) -> H2GRPCServerTransport.OnLoopAnswer? {
        // By name: the transport's descriptor does not know the method's type, which the generated one has.
        let method = Lockstep_V1_AgentService.Method.Poll.descriptor
        guard call.descriptor.service == method.service && call.descriptor.method == method.method,
              let input = try? Lockstep_V1_PollRequest(serializedBytes: call.message) else { return nil }
        let began = ContinuousClock.now
        let answer: H2GRPCServerTransport.OnLoopAnswer
        do throws(APIError) {
            let principal = try authenticate(credentials(call.metadata), call.tls ? ClientIdentity.fingerprintOnLoop(of: call.channel) : nil)
            try principal.require(.poll)
            var poll = try agents.beginPoll(input, principal: principal)
            guard case .answer(let response)? = agents.lookAtOnce(&poll) else { return nil }
            agents.endPoll(poll)
            guard let bytes = try? response.serializedBytes() as [UInt8] else { return nil }
            answer = .message(bytes, trailing: [:])
        } catch {
            metrics.record(error)
            answer = .failure(error.rpcError)
        }
        pollTimer.record(duration: ContinuousClock.now - began)
        return answer
    }
}
