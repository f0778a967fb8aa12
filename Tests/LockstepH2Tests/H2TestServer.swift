import Foundation
import LockstepH2
import Logging
import NIOCore
import NIOPosix
import Synchronization

/// The engine on a real socket (127.0.0.1, a free port, one event loop) with a small application, for
/// real clients: curl, h2load and the Python probe (`h2_probe.py`).
final class H2TestServer: Sendable {
    let group: MultiThreadedEventLoopGroup
    let channel: any Channel
    let port: Int
    let application: TestApplication

    init(limits: H2Limits = H2Limits()) async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let application = TestApplication()
        var logger = Logger(label: "lockstep.h2.test")
        logger.logLevel = .notice
        let log = logger
        do {
            channel = try await ServerBootstrap(group: group)
                .serverChannelOption(.backlog, value: 64)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
                .childChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(H2ServerHandler(limits: limits, responder: application, logger: log))
                    }
                }
                .bind(host: "127.0.0.1", port: 0).get()
        } catch {
            try? await group.shutdownGracefully()
            throw error
        }
        self.group = group
        self.application = application
        port = channel.localAddress?.port ?? 0
    }

    /// Runs `body` with a server, and stops it after, whatever `body` did.
    static func with(limits: H2Limits = H2Limits(), _ body: (H2TestServer) async throws -> Void) async throws {
        let server = try await H2TestServer(limits: limits)
        do {
            try await body(server)
        } catch {
            await server.stop()
            throw error
        }
        await server.stop()
    }

    func stop() async {
        try? await channel.close()
        try? await group.shutdownGracefully()
    }

    var url: String { "http://127.0.0.1:\(port)" }
}

/// Answers by path:
/// - `/echo`: 200 with `METHOD PATH` and the request body (plain text);
/// - `/stream?n=K`: K chunks of 1 KiB ("a"…), then trailers `x-chunks: K`, written as the stream is read;
/// - `/blob?bytes=N`: N bytes in one write;
/// - `/later`: the answer from another thread 20 ms later (an answer that leaves the event loop);
/// - `/hold`: no answer; counts the requests held and those whose stream then closed (`held`, `released`);
/// - `/late-closed`: 200 at once, without asking for `closed`; the response is kept in `lateResponse`, for
///   a test to ask after the stream closed;
/// - anything else: 404.
/// Every request counts in `ended` once its stream has closed.
final class TestApplication: H2Responder {
    let held = Atomic<Int>(0)
    let released = Atomic<Int>(0)
    /// Requests whose stream has closed (`H2Response.closed` completed), however they ended.
    let ended = Atomic<Int>(0)
    /// The last `/late-closed` request's response.
    let lateResponse = Mutex<H2Response?>(nil)

    func respond(to request: H2Request, _ response: H2Response) {
        let path = request.head.path
        if path == "/late-closed" {
            lateResponse.withLock { $0 = response }
            return response.send(status: 200, headers: [], body: ByteBuffer(string: "answered\n"))
        }
        response.closed.whenComplete { [self] _ in ended.add(1, ordering: .relaxed) }
        if path == "/echo" {
            var body = ByteBuffer(string: "\(request.head.method) \(path)\n")
            var requestBody = request.body
            body.writeBuffer(&requestBody)
            response.send(status: 200, headers: [("content-type", "text/plain")], body: body)
        } else if path.hasPrefix("/stream?n="), let count = Int(path.dropFirst("/stream?n=".count)), count >= 0, count <= 100_000 {
            response.head(status: 200, headers: [("content-type", "text/plain")], body: true)
            let chunk = ByteBuffer(repeating: UInt8(ascii: "a"), count: 1_024)
            Self.stream(chunk, left: count, total: count, response)
        } else if path.hasPrefix("/blob?bytes="), let count = Int(path.dropFirst("/blob?bytes=".count)), count >= 0, count <= 16 << 20 {
            // One write of the whole body, larger than the stream's response buffer limit.
            response.head(status: 200, headers: [], body: true)
            response.write(ByteBuffer(repeating: UInt8(ascii: "b"), count: count))
            response.finish()
        } else if path == "/later" {
            DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(20)) {
                response.send(status: 200, headers: [], body: ByteBuffer(string: "later\n"))
            }
        } else if path == "/hold" {
            held.add(1, ordering: .relaxed)
            response.closed.whenComplete { [self] _ in released.add(1, ordering: .relaxed) }
        } else {
            response.send(status: 404, headers: [], body: ByteBuffer(string: "no route\n"))
        }
    }

    /// Writes one chunk after another at the client's pace (each write's future), never buffering more
    /// than the engine's low mark plus a chunk.
    static func stream(_ chunk: ByteBuffer, left: Int, total: Int, _ response: H2Response) {
        guard left > 0 else {
            response.finish(trailers: [("x-chunks", "\(total)")])
            return
        }
        response.write(chunk).whenSuccess { stream(chunk, left: left - 1, total: total, response) }
    }
}
