import Foundation
import GRPCCore
import Hummingbird
import HummingbirdCore
import LockstepAPI
import LockstepH2
import LockstepHTTP
import LockstepServer
import LockstepWire
import Logging
import NIOCore
import NIOPosix
import SwiftProtobuf

// lockstep-bare: the floor of our HTTP stack for ops/bench/api. The same code as `lockstep serve` (the
// JSON port: HTTP/1.1 on Hummingbird and HTTP/2 on the engine with Hummingbird's router; the gRPC port:
// grpc-swift-2's server on the engine's transport) answering the same bytes as an immediately-answered
// agent poll, with no Lockstep work behind them; and a third port where the engine answers on the event
// loop itself (no router, no task): the engine's own floor.
// Usage: lockstep-bare HTTP_PORT GRPC_PORT [ENGINE_PORT [EVENT_LOOPS]]

let arguments = CommandLine.arguments
let httpPort = arguments.count > 1 ? Int(arguments[1]) ?? 18_080 : 18_080
let grpcPort = arguments.count > 2 ? Int(arguments[2]) ?? 19_090 : 19_090
let enginePort = arguments.count > 3 ? Int(arguments[3]) ?? 19_091 : 19_091
// Event-loop threads (as `lockstep serve --event-loops`): before anything takes the shared group.
if arguments.count > 4, let loops = Int(arguments[4]), loops > 0 { NIOSingletons.groupLoopCountSuggestion = loops }
let answer = Lockstep_V1_PollResponse.with { $0.retryAfterMs = 1_000 }
var options = JSONEncodingOptions()
options.preserveProtoFieldNames = true
let body = try answer.jsonString(options: options) + "\n"

struct BareAgentService: Lockstep_V1_AgentService.SimpleServiceProtocol {
    let answer: Lockstep_V1_PollResponse
    func poll(request: Lockstep_V1_PollRequest, context: ServerContext) async throws -> Lockstep_V1_PollResponse { answer }
    func heartbeat(request: Lockstep_V1_HeartbeatRequest, context: ServerContext) async throws -> Lockstep_V1_HeartbeatResponse { .init() }
    func reportProgress(request: Lockstep_V1_ReportProgressRequest, context: ServerContext) async throws -> Lockstep_V1_ReportProgressResponse { .init() }
    func complete(request: Lockstep_V1_CompleteRequest, context: ServerContext) async throws -> Lockstep_V1_CompleteResponse { .init() }
    func fail(request: Lockstep_V1_FailRequest, context: ServerContext) async throws -> Lockstep_V1_FailResponse { .init() }
}

/// The engine's floor: answers every request inline, on the connection's event loop.
struct InlineAnswer: H2Responder {
    let body: ByteBuffer
    func respond(to request: H2Request, _ response: H2Response) {
        response.send(status: 200, headers: [("content-type", "application/json"), ("content-length", "\(body.readableBytes)")], body: body)
    }
}

let logger = Logger(label: "lockstep-bare")
let router = Router(context: LockstepRequestContext.self)
router.post("/v1/agent/poll") { request, _ -> Response in
    _ = try await request.body.collect(upTo: 1 << 20)
    return Response(status: .ok, headers: [.contentType: "application/json"], body: ResponseBody(byteBuffer: ByteBuffer(string: body)))
}
let engineResponder = JSONOnEngine(router: router.buildResponder(), logger: logger, serverName: "lockstep-bare") { _ in ByteBuffer() }
let server = HTTPServerBuilder { responder in
    HTTP1AndEngineChannel(responder: responder, http1: .init(), tls: nil, prefaceReadTimeout: .seconds(30), shutdownGrace: .seconds(5)) { _, work in
        try H2ServerHandler(limits: H2Limits(), responder: engineResponder.serving(into: work), logger: logger)
    }
}
let app = Application(router: router, server: server, configuration: .init(address: .hostname("127.0.0.1", port: httpPort)))
let grpc = GRPCServer(transport: H2GRPCServerTransport(configuration: .init(host: "127.0.0.1", port: grpcPort, limits: H2Limits(), messageBytesMax: 1 << 20),
                                                       logger: logger),
                      services: [BareAgentService(answer: answer)])
let inline = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
    .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
    .childChannelInitializer { channel in
        channel.eventLoop.makeCompletedFuture {
            try channel.pipeline.syncOperations.addHandler(H2ServerHandler(limits: H2Limits(), responder: InlineAnswer(body: ByteBuffer(string: body)), logger: logger))
        }
    }
    .bind(host: "127.0.0.1", port: enginePort).get()
try await withThrowingTaskGroup(of: Void.self) { group in
    group.addTask { try await grpc.serve() }
    group.addTask {
        try await app.runService()
        grpc.beginGracefulShutdown()
        try await inline.close()
    }
    try await group.waitForAll()
}
