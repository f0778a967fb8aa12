import NIOCore

// The engine's application API: what a responder is handed for each request (`H2Request`, `H2Response`)
// and what it may tell the engine. The handler that serves them is H2ServerHandler.swift.

/// The stream a write was for has closed (the client reset it, the connection ended, or its answer
/// outgrew `responseBufferBytesMax`): stop writing.
public struct H2StreamGone: Error, Equatable, Sendable {
    public let stream: Int32
}

/// Told, on the connection's event loop, when a stream opens and how it closed (for example, to count a
/// client's resets against a budget across its connections and close this one when it is over).
public protocol H2StreamObserver: AnyObject {
    func streamOpened()
    func streamClosed(reset: Bool)
    /// A stream was reset because its client stopped reading (`stalledReaderMillisMax`).
    func streamStalled()
}

/// A request the engine hands to the application: complete, its body already bounded by
/// `H2Limits.requestBodyBytesMax`.
public struct H2Request: Sendable {
    public let stream: Int32
    public let head: H2RequestHead
    public let body: ByteBuffer
    /// The connection (its TLS handler knows the client's certificate).
    public let channel: any Channel

    /// The client's address, asked of the connection when wanted (most requests never ask): nil once the
    /// connection has closed, so a handler that wants it for later reads it when the request arrives.
    public var remoteAddress: SocketAddress? { channel.remoteAddress }
}

/// The application behind the engine. Called on the connection's event loop, once per request, without a
/// task or a thread switch: answer inline when the answer is at hand, or keep `response` (it is
/// `Sendable`) and answer later from anywhere.
public protocol H2Responder: Sendable {
    func respond(to request: H2Request, _ response: H2Response)
    /// The answer to a request the engine refuses before `respond`: `status` 431 (header list over
    /// `headerListBytesMax` or `headerFieldsMax`), 413 (body over `requestBodyBytesMax`) or 408 (body not
    /// ended within `requestBodyMillisMax`). By default that status with an empty body.
    func refusal(status: Int) -> H2Refusal
}

/// How a refused request is answered: a status, fields, and a small body (an error document) or none.
public struct H2Refusal: Sendable {
    public var status: Int
    public var headers: [(String, String)]
    public var body: ByteBuffer?

    public init(status: Int, headers: [(String, String)], body: ByteBuffer? = nil) {
        self.status = status
        self.headers = headers
        self.body = body
    }
}

extension H2Responder {
    public func refusal(status: Int) -> H2Refusal { H2Refusal(status: status, headers: [("content-length", "0")]) }
}

/// How the application answers one stream. Every method may be called from any thread (calls off the event
/// loop hop onto it); calls after the stream closed, or after the answer ended, do nothing.
public struct H2Response: Sendable {
    let handler: NIOLoopBound<H2ServerHandler>
    public let stream: Int32
    /// Completes when the stream closes, with the RST_STREAM code (0 when it ended normally, when the
    /// connection closed before it, and when the stream had closed before this was first asked for). A
    /// parked request waits on this to stop its work. Made when first asked for: an answer that never
    /// asks costs no promise. Ask once, on the event loop if possible, and keep it: asked off the loop it
    /// costs a promise and a hop (and the code is the one known when the hop runs), and it needs the
    /// loop to be running.
    public var closed: EventLoopFuture<UInt32> {
        let loop = handler.eventLoop
        if let handler = here { return handler.closed(stream, on: loop) }
        let promise = loop.makePromise(of: UInt32.self)
        hop { $0.closed(stream, on: loop).cascade(to: promise) }
        return promise.futureResult
    }

    public var eventLoop: EventLoop { handler.eventLoop }

    /// Starts the answer: the status and fields, then a body through `write` and `finish` (`body` true),
    /// or nothing more (`body` false: the headers end the stream).
    public func head(status: Int, headers: [(String, String)], body: Bool) {
        if let handler = here { return handler.head(stream, status: status, headers: headers, body: body) }
        hop { $0.head(stream, status: status, headers: headers, body: body) }
    }

    /// Queues body bytes. The future completes once the stream has at most `responseBufferLowBytes`
    /// waiting to be sent, so a writer that waits for it goes at the client's pace; it fails with
    /// `H2StreamGone` once the stream closed. Past `responseBufferBytesMax` not yet sent (a writer that
    /// does not wait), the stream is reset (CANCEL).
    @discardableResult
    public func write(_ bytes: ByteBuffer) -> EventLoopFuture<Void> {
        let paced = handler.eventLoop.makePromise(of: Void.self)
        if let handler = here {
            handler.write(stream, bytes, paced: paced)
        } else {
            hop { $0.write(stream, bytes, paced: paced) }
        }
        return paced.futureResult
    }

    /// Ends the body, with trailers or without.
    public func finish(trailers: [(String, String)]? = nil) {
        if let handler = here { return handler.finish(stream, trailers: trailers) }
        hop { $0.finish(stream, trailers: trailers) }
    }

    /// A whole answer at once (with trailers after the body, when given).
    public func send(status: Int, headers: [(String, String)], body: ByteBuffer?, trailers: [(String, String)]? = nil) {
        if let handler = here { return Self.send(handler, stream, status: status, headers: headers, body: body, trailers: trailers) }
        hop { Self.send($0, stream, status: status, headers: headers, body: body, trailers: trailers) }
    }

    private static func send(_ handler: H2ServerHandler, _ stream: Int32, status: Int, headers: [(String, String)], body: ByteBuffer?,
                             trailers: [(String, String)]?) {
        handler.head(stream, status: status, headers: headers, body: body != nil)
        if let body {
            handler.write(stream, body, paced: nil)
            handler.finish(stream, trailers: trailers)
        }
    }

    public func reset(_ code: H2ErrorCode) {
        if let handler = here { return handler.reset(stream, code) }
        hop { $0.reset(stream, code) }
    }

    /// The handler, when called on its event loop (then it is used at once: no closure, no task).
    private var here: H2ServerHandler? {
        handler.eventLoop.inEventLoop ? handler.value : nil
    }

    /// Runs `work` on the handler's event loop, called from elsewhere.
    private func hop(_ work: @escaping @Sendable (H2ServerHandler) -> Void) {
        let handler = handler
        handler.eventLoop.execute { work(handler.value) }
    }
}
