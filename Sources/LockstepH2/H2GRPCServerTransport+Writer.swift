import GRPCCore
import NIOCore
import Synchronization

/// The writer behind an RPC's `Outbound`: response parts to HEADERS, length-prefixed DATA and trailers.
///
/// A message is queued without waiting for it to be sent: the writer waits, before the next message, for
/// the one before to be paced (`H2Response.write`: its stream down to `responseBufferLowBytes`). A stream
/// then holds at most that plus one message, and a unary answer (headers, its one message, the status)
/// goes to the event loop in one burst, written in one flush, with no round trip back to the handler's
/// task between its parts.
final class GRPCWriter: ClosableRPCWriterProtocol, Sendable {
    typealias Element = RPCResponsePart<[UInt8]>
    let response: H2Response
    private let phase = Mutex(Phase.idle)
    /// The pacing of the last message queued: the next message waits for it.
    private let pacing = Mutex<EventLoopFuture<Void>?>(nil)

    enum Phase { case idle, headersSent, statusSent }

    init(response: H2Response) { self.response = response }

    var statusSent: Bool { phase.withLock { $0 == .statusSent } }

    func write(_ element: Element) async throws {
        switch element {
        case .metadata(let metadata):
            let send = phase.withLock { phase in
                guard phase == .idle else { return false }
                phase = .headersSent
                return true
            }
            if send { response.head(status: 200, headers: [("content-type", "application/grpc")] + GRPCRequest.fields(metadata), body: true) }
        case .message(let bytes):
            let headersFirst = phase.withLock { phase in
                guard phase == .idle else { return false }
                phase = .headersSent
                return true
            }
            if headersFirst { response.head(status: 200, headers: [("content-type", "application/grpc")], body: true) }
            // The previous message at the client's pace (or its stream gone) before this one is queued.
            if let previous = pacing.withLock({ $0.take() }) {
                do {
                    try await previous.get()
                } catch {
                    throw RPCError(code: .cancelled, message: "the client's stream closed")
                }
            }
            let paced = response.write(GRPCRequest.framed(bytes))
            pacing.withLock { $0 = paced }
        case .status(let status, let metadata):
            let before = phase.withLock { phase in
                let before = phase
                phase = .statusSent
                return before
            }
            let trailers = GRPCRequest.status(status) + GRPCRequest.fields(metadata)
            switch before {
            case .idle: response.head(status: 200, headers: [("content-type", "application/grpc")] + trailers, body: false)
            case .headersSent: response.finish(trailers: trailers)
            case .statusSent: break
            }
        }
    }

    func write(contentsOf elements: some Sequence<Element>) async throws {
        for element in elements { try await write(element) }
    }

    func finish() async {
        if !statusSent { response.reset(.internalError) }
    }

    func finish(throwing error: any Error) async {
        if !statusSent { response.reset(.internalError) }
    }
}

/// gRPC's wire format over HTTP/2 (the PROTOCOL-HTTP2 document of grpc/grpc), as far as a server reads it.
