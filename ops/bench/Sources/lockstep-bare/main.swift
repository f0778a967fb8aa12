import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Hummingbird
import LockstepAPI
import LockstepServer
import LockstepWire
import SwiftProtobuf

// lockstep-bare: the floor of our HTTP/2 stack for ops/bench/api. The same libraries as `lockstep
// serve` (Hummingbird on one h2c/HTTP/1.1 port, grpc-swift-2 on the NIO transport) answering the same
// bytes as an immediately-answered agent poll, with no Lockstep work behind them.
// Usage: lockstep-bare HTTP_PORT GRPC_PORT

let arguments = CommandLine.arguments
let httpPort = arguments.count > 1 ? Int(arguments[1]) ?? 18_080 : 18_080
let grpcPort = arguments.count > 2 ? Int(arguments[2]) ?? 19_090 : 19_090
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

let router = Router()
router.post("/v1/agent/poll") { request, _ -> Response in
    _ = try await request.body.collect(upTo: 1 << 20)
    return Response(status: .ok, headers: [.contentType: "application/json"], body: ResponseBody(byteBuffer: ByteBuffer(string: body)))
}
let app = Application(router: router, server: .http1AndH2C(), configuration: .init(address: .hostname("127.0.0.1", port: httpPort)))
let grpc = GRPCServer(transport: HTTP2ServerTransport.Posix(address: .ipv4(host: "127.0.0.1", port: grpcPort), transportSecurity: .plaintext),
                      services: [BareAgentService(answer: answer)])
try await withThrowingTaskGroup(of: Void.self) { group in
    group.addTask { try await grpc.serve() }
    group.addTask {
        try await app.runService()
        grpc.beginGracefulShutdown()
    }
    try await group.waitForAll()
}
