import GRPCCore
import NIOCore
import Synchronization

// The calls a connection takes on its event loop (`Configuration.onLoop`): what is offered, how it is
// answered, and the reply of one answered later.

extension H2GRPCServerTransport {
    /// A call with one request message, offered to `Configuration.onLoop` on its connection's event loop.
    public struct OnLoopCall: Sendable {
        public let descriptor: MethodDescriptor
        public let metadata: Metadata
        public let message: [UInt8]
        /// The client's connection (its TLS handler holds the verified client certificate).
        public let channel: any Channel
        /// Whether connections are TLS (`Configuration.tls`).
        public let tls: Bool
        let response: H2Response
        /// Where the connection's RPCs and work go (`track`).
        let connection: AsyncStream<ConnectionItem>.Continuation

        /// How to answer later (after `.later`), from any thread. Made when asked for (a call answered at
        /// once allocates none): ask once, and keep it.
        public func makeReply() -> OnLoopReply { OnLoopReply(response: response, connection: connection) }
    }

    /// How `Configuration.onLoop` answers a call: its response message, or an error, each with metadata
    /// sent in the trailers; or later, through the call's `reply`.
    public enum OnLoopAnswer: Sendable {
        case message([UInt8], trailing: Metadata)
        /// A message framed once and sent as it is to many calls (a poll's "retry later"): no framing, no
        /// buffer and no copy per call. The trailers are OK's.
        case framed(FramedMessage)
        case failure(RPCError)
        case later
    }

    /// A message with gRPC's 5-byte prefix, made once (`OnLoopAnswer.framed`): framing an answer was a
    /// buffer and a copy per call, 2.3 % of a gRPC poll's CPU (docs/benchmarks-api-history.md, session 35).
    public struct FramedMessage: Sendable {
        let buffer: ByteBuffer

        public init(_ message: [UInt8]) { buffer = GRPCRequest.framed(message) }
    }

    /// A call answered later (`OnLoopAnswer.later`): its answer, sent once from any thread; when its
    /// stream closed (the client reset it or went); and work run meanwhile in its connection's task
    /// group, on the connection's event loop, where its other RPCs run (no loose task).
    public struct OnLoopReply: Sendable {
        let response: H2Response
        let connection: AsyncStream<ConnectionItem>.Continuation
        /// Set by the first `send`: a second one is dropped (it would start a second response).
        let sent = Sent()

        final class Sent: Sendable {
            let flag = Atomic<Bool>(false)
        }

        /// Completes when the call's stream closes (answered, reset, or its connection ended).
        public var closed: EventLoopFuture<UInt32> { response.closed }

        /// Sends the answer (`.later` sends nothing); only the first answer is sent. Whether this one was.
        @discardableResult
        public func send(_ answer: OnLoopAnswer) -> Bool {
            if case .later = answer { return false }
            guard !sent.flag.exchange(true, ordering: .relaxed) else { return false }
            GRPCResponder.send(answer, to: response)
            return true
        }

        /// Runs `work` in its connection's task group, on the connection's event loop; false, and
        /// nothing runs, once the connection or the transport has stopped taking work (closed, or
        /// shutting down).
        public func run(_ work: @escaping @Sendable () async -> Void) -> Bool {
            if case .enqueued = connection.yield(.work(work)) { return true }
            return false
        }
    }
}
