import FuzzDriver
import LockstepH2
import NIOCore

/// Any bytes as what an HTTP/2 client sends after the connection preface, fed to the engine as the server
/// handler feeds it (libnghttp2's session, the pure state machine deciding every event, requests answered
/// with a streamed body and trailers, every output drained) and each complete request also read as gRPC.
/// Nothing may trap, leak or grow without bound. The first byte picks where the input is split in two
/// reads (frames cut across reads) and whether the limits are the defaults or tiny ones.
@_cdecl("LLVMFuzzerTestOneInput")
func fuzzH2(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let input = fuzzInput(data, size)
    guard let first = input.first else { return 0 }
    let bytes = Array(input.dropFirst())
    var limits = H2Limits()
    limits.requestBodyMillisMax = 10_000
    if first & 0x80 != 0 {
        limits.headerListBytesMax = 200
        limits.headerFieldsMax = 6
        limits.requestBodyBytesMax = 64
        limits.connectionBufferedBytesMax = 100
        limits.concurrentStreamsMax = 4
        limits.pings = .init(burst: 2, perSecond: 1)
        limits.settingsFrames = .init(burst: 2, perSecond: 1)
        limits.emptyFrames = .init(burst: 2, perSecond: 1)
        limits.responseBufferBytesMax = 256
    }
    guard let session = try? H2Session(limits: limits) else { fatalError("a session could not be made") }
    var state = H2ConnectionState(limits: limits, nowNanos: 0)
    var clock: UInt64 = 0
    var dispatched: [Int32] = []
    var awaitingBodies: [Int32] = []
    let sink = EventSink { event in
        clock &+= 1_000_000
        for action in state.on(event, nowNanos: clock) {
            switch action {
            case .dispatch(let id, let head, let body):
                _ = H2GRPCServerTransport.decode(head: head, body: body, messageBytesMax: limits.requestBodyBytesMax)
                dispatched.append(id)
            case .answer(let id, let status):
                try? session.respond(id, status: status, headers: [("content-length", "0")], body: false)
            case .awaitBody(let id):
                awaitingBodies.append(id)
            case .reset(let id, let code):
                session.reset(id, code)
            case .consume(let id, let count, let open):
                session.consume(id, bytes: count, streamOpen: open)
            case .cancelled(let id, _):
                state.handlerFinished(id)
            case .terminate(let code, _):
                session.terminate(code)
            }
        }
    }
    session.delegate = sink
    var preface = ByteBuffer(string: "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    preface.writeBytes([0, 0, 0, 4, 0, 0, 0, 0, 0])  // an empty SETTINGS frame
    var out = ByteBuffer()
    _ = session.receive(preface)
    let split = bytes.isEmpty ? 0 : Int(first & 0x7f) % (bytes.count + 1)
    for part in [bytes[..<split], bytes[split...]] where !part.isEmpty {
        if session.receive(ByteBuffer(bytes: part)) != nil { break }
        // The body time runs out for every request still waiting for its body: refused with a body of
        // its own (as the JSON port answers 408), the stream then reset if the request goes on.
        for id in awaitingBodies {
            for case .answer(let id, let status) in state.bodyOverdue(id) {
                guard (try? session.respond(id, status: status, headers: [("content-type", "application/json")], body: true)) != nil else { continue }
                if session.write(id, ByteBuffer(string: #"{"code":"request_timeout"}"#)) { session.finish(id, trailers: nil) }
            }
        }
        awaitingBodies.removeAll()
        // Answer what arrived whole, as an application would: headers, a body in two writes, trailers.
        for id in dispatched {
            guard (try? session.respond(id, status: 200, headers: [("content-type", "application/grpc")], body: true)) != nil else { continue }
            _ = session.write(id, ByteBuffer(repeating: 0x61, count: 100))
            // Some streams are sent in parts: the first chunk taken (whole, or partly with a small window)
            // before the second is queued, and the queue run dry (deferred, then resumed) before the end.
            if id & 2 != 0 { out.clear(); session.drain(into: &out) }
            _ = session.write(id, ByteBuffer(repeating: 0x62, count: 300))
            if id & 4 != 0 { out.clear(); session.drain(into: &out) }
            session.finish(id, trailers: [("grpc-status", "0")])
            state.handlerFinished(id)
        }
        dispatched.removeAll()
        out.clear()
        session.drain(into: &out)
    }
    session.delegate = nil
    withExtendedLifetime(sink) {}
    return 0
}

/// Hands the session's events to a closure: the fuzz target's stand-in for the server handler. The
/// session does not retain its delegate; the caller keeps it alive.
final class EventSink: H2SessionDelegate {
    let handle: (H2Event) -> Void
    init(_ handle: @escaping (H2Event) -> Void) { self.handle = handle }
    func session(_ event: consuming H2Event) { handle(event) }
}

runFuzzer(fuzzH2)
