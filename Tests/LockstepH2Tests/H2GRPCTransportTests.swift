import Foundation
import GRPCCore
import LockstepH2
import LockstepTestSupport
import Logging
import NIOCore
import Synchronization
import Testing

/// The gRPC transport on its own: a small service of raw-byte methods served by `GRPCServer` on
/// `H2GRPCServerTransport`, called by Python grpcio (`grpc_probe.py`) over a real socket. What the
/// Lockstep API suites do not isolate: metadata both ways (`-bin` values included), trailers-only
/// refusals, deadlines, cancellation reaching the handler, a long server stream at the client's pace.
///
/// Bounds are generous: the RPC handlers run on Swift's cooperative pool, which the CPU-bound suites
/// running beside these in `swift test` can hold for tens of seconds on a 2-core machine (one CI run
/// waited more than 20 s for the probe).
@Suite(.serialized, .timeLimit(.minutes(8))) struct H2GRPCTransportTests {
    static let probe = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("grpc_probe.py").path

    @Test func grpcioCallsAServiceOnTheEngine() async throws {
        let service = EchoService()
        try await Self.serving(service, .init(host: "127.0.0.1", port: 0, messageBytesMax: 1_000)) { _, _, port in
            let run = try await ChildProcess("/usr/bin/env", ["python3", "-u", Self.probe, "127.0.0.1:\(port)"]).wait(seconds: 400)
            let lines = run.stdout.split(separator: "\n").map(String.init)
            #expect(lines == [
                "say b'hello' initial x-echo=hi x-echo-bin=000102ff trailing x-done=yes",
                "gzip UNIMPLEMENTED",
                "too-large RESOURCE_EXHAUSTED",
                "unknown UNIMPLEMENTED",
                "wait DEADLINE_EXCEEDED",
                "parked cancelled True",
                "count 2000 messages 2048000 bytes",
                "cancelled after 5",
                "failed NOT_FOUND no such thing",
            ], "\(run)")
            // The deadline (GRPCCore's), the parked call the client cancelled (the transport's), the stream
            // the client cancelled (its write failed).
            try await eventually("the three abandoned calls reached their handlers as cancellations", seconds: 60) {
                service.cancelled.load(ordering: .relaxed) == 3
            }
        }
    }
}

extension H2GRPCTransportTests {
    /// An RPC runs on the event loop that read it, and so does a default actor it calls (the
    /// coordinator is one): no thread switch between the request, the actor and the answer.
    /// An RPC `runsOnLoop` declines (its method, or a message over its bound) runs on Swift's global
    /// executor instead, and so does the actor.
    @Test(arguments: [true, false])
    func anRPCAndTheActorItCallsRunOnTheConnectionsEventLoop(onLoop: Bool) async throws {
        var configuration = H2GRPCServerTransport.Configuration(host: "127.0.0.1", port: 0)
        configuration.runsOnLoop = { _, bytes in onLoop && bytes <= 4_096 }
        try await Self.serving(EchoService(), configuration) { _, _, port in
            let run = try await ChildProcess("/usr/bin/env", ["python3", "-u", Self.probe, "127.0.0.1:\(port)", "where"]).wait(seconds: 120)
            // The fourth call's message is over the bound: it runs on the global executor either way.
            #expect(run.stdout == String(repeating: "handler on its loop: \(onLoop), actor on its loop: \(onLoop)\n", count: 3)
                    + "handler on its loop: false, actor on its loop: false\n", "\(run)")
        }
    }

    /// Serves `service` on a transport made of `configuration` while `body` runs (given the server, the
    /// task serving it, and the port), then shuts the server down and waits, at most 120 s, for it to stop.
    static func serving(_ service: EchoService, _ configuration: H2GRPCServerTransport.Configuration,
                        _ body: (GRPCServer<H2GRPCServerTransport>, Task<Void, any Error>, Int) async throws -> Void) async throws {
        let transport = H2GRPCServerTransport(configuration: configuration, logger: Logger(label: "test"))
        let server = GRPCServer(transport: transport, services: [service])
        let serving = Task { try await server.serve() }
        var failure: (any Error)?
        do {
            let port = try #require(try await transport.listeningAddress.port)
            try await body(server, serving, port)
        } catch {
            failure = error
        }
        server.beginGracefulShutdown()
        try await value(of: serving, within: .seconds(120), "the gRPC server's serve")
        if let failure { throw failure }
    }

    @Test func aGracefulShutdownEndsAnRPCThatOutlastsTheGracePeriod() async throws {
        let service = EchoService()
        var configuration = H2GRPCServerTransport.Configuration(host: "127.0.0.1", port: 0)
        configuration.graceMillis = 300
        try await Self.serving(service, configuration) { server, serving, port in
            let waiting = try ChildProcess("/usr/bin/env", ["python3", "-u", Self.probe, "127.0.0.1:\(port)", "wait-long"])
            try await eventually("the call is in its handler", seconds: 90) { service.waiting.load(ordering: .relaxed) == 1 }
            let began = ContinuousClock.now
            server.beginGracefulShutdown()
            // serve() returns once the grace period closed the connection and the RPC ended.
            try await value(of: serving, within: .seconds(120), "the gRPC server's serve")
            #expect(ContinuousClock.now - began < .seconds(60), "\(ContinuousClock.now - began)")
            let answer = try await waiting.wait(seconds: 90)
            #expect(answer.stdout == "wait-long UNAVAILABLE\n", "\(answer)")
            #expect(service.cancelled.load(ordering: .relaxed) == 1)
        }
    }
}

/// `test.Echo`, on raw bytes: `Say` echoes the message and the `x-echo` metadata; `Wait` waits until
/// cancelled (and, sent "linger", answers only 0.5 s after that); `Count` streams N (the 4-byte request)
/// messages of 1,024 bytes; `Fail` answers NOT_FOUND.
final class EchoService: RegistrableRPCService {
    let cancelled = Atomic<Int>(0)
    /// `Wait` calls in their handler now.
    let waiting = Atomic<Int>(0)
    /// A default actor `Where` calls.
    let placement = Placement()

    actor Placement {
        func onLoop(_ loop: (any EventLoop)?) -> Bool { loop?.inEventLoop ?? false }
    }

    struct Bytes: MessageSerializer, MessageDeserializer {
        func serialize<Out: GRPCContiguousBytes>(_ message: [UInt8]) throws -> Out { Out(message) }
        func deserialize<In: GRPCContiguousBytes>(_ bytes: In) throws -> [UInt8] { bytes.withUnsafeBytes { Array($0) } }
    }

    func registerMethods<Transport: ServerTransport>(with router: inout RPCRouter<Transport>) {
        router.registerHandler(forMethod: MethodDescriptor(fullyQualifiedService: "test.Echo", method: "Say"), deserializer: Bytes(), serializer: Bytes()) { request, _ in
            var message: [UInt8] = []
            for try await part in request.messages { message += part }
            var echoed = Metadata()
            for value in request.metadata[stringValues: "x-echo"] { echoed.addString(value, forKey: "x-echo") }
            for value in request.metadata[binaryValues: "x-echo-bin"] { echoed.addBinary(value, forKey: "x-echo-bin") }
            return StreamingServerResponse(single: ServerResponse(message: message, metadata: echoed, trailingMetadata: ["x-done": "yes"]))
        }
        router.registerHandler(forMethod: MethodDescriptor(fullyQualifiedService: "test.Echo", method: "Wait"), deserializer: Bytes(), serializer: Bytes()) { [self] request, context in
            var message: [UInt8] = []
            for try await part in request.messages { message += part }
            // "linger": once cancelled, answer only 0.5 s later. A call with a deadline is cancelled by the
            // server's copy of that deadline, which starts when the call arrives, after the client's began:
            // an answer (OK: the handler returns normally) sent at once could reach the client before its
            // own deadline fired, and the client would see OK instead of DEADLINE_EXCEEDED. A faster server
            // made that race show (session 35).
            let linger = message == Array("linger".utf8)
            return StreamingServerResponse { _ in
                self.waiting.add(1, ordering: .relaxed)
                defer { self.waiting.subtract(1, ordering: .relaxed) }
                while !context.cancellation.isCancelled && !Task.isCancelled { try? await Task.sleep(for: .milliseconds(20)) }
                if context.cancellation.isCancelled { self.cancelled.add(1, ordering: .relaxed) }
                if linger { try? await Task.sleep(for: .milliseconds(500)) }
                return [:]
            }
        }
        router.registerHandler(forMethod: MethodDescriptor(fullyQualifiedService: "test.Echo", method: "Count"), deserializer: Bytes(), serializer: Bytes()) { [self] request, _ in
            var message: [UInt8] = []
            for try await part in request.messages { message += part }
            let count = message.count == 4 ? message.reduce(0) { $0 << 8 | Int($1) } : 0
            return StreamingServerResponse { writer in
                let chunk = [UInt8](repeating: 0x61, count: 1_024)
                do {
                    for _ in 0..<count { try await writer.write(chunk) }
                } catch {
                    self.cancelled.add(1, ordering: .relaxed)
                    throw error
                }
                return [:]
            }
        }
        router.registerHandler(forMethod: MethodDescriptor(fullyQualifiedService: "test.Echo", method: "Where"), deserializer: Bytes(), serializer: Bytes()) { [self] _, context in
            let loop = (context.transportSpecific as? H2GRPCServerTransport.Context)?.channel.eventLoop
            let handler = loop?.inEventLoop ?? false
            let actor = await placement.onLoop(loop)
            return StreamingServerResponse(single: ServerResponse(message: Array("handler on its loop: \(handler), actor on its loop: \(actor)".utf8)))
        }
        router.registerHandler(forMethod: MethodDescriptor(fullyQualifiedService: "test.Echo", method: "Fail"), deserializer: Bytes(), serializer: Bytes()) { _, _ in
            StreamingServerResponse(error: RPCError(code: .notFound, message: "no such thing"))
        }
    }
}
