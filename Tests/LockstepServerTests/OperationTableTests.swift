import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import LockstepAPI
import LockstepGRPC
import LockstepHTTP
import LockstepServer
import LockstepService
import LockstepTestSupport
import Logging
import ServiceLifecycle
import Testing

/// Issue 15, item 6: every operation declared once (`APIOperation.all`), and the transports, the proto file
/// and the gates held to it. (docs/openapi.yaml is held to it by ops/check-openapi, bad_input.py's route
/// list by the probe itself, the JSON routes by the server at start-up.)
@Suite struct OperationTableTests {
    @Test func everyGRPCMethodIsAnOperationAndEveryOperationAMethod() {
        let methods = Lockstep_V1_AgentService.Method.descriptors + Lockstep_V1_MigrationService.Method.descriptors
            + Lockstep_V1_StageService.Method.descriptors + Lockstep_V1_HistoryService.Method.descriptors
        let served = methods.map { "\($0.service.fullyQualifiedService)/\($0.method)" }
        let declared = APIOperation.all.map { "\($0.service)/\($0.method)" }
        #expect(Set(served) == Set(declared), "served, not declared: \(Set(served).subtracting(declared)); declared, not served: \(Set(declared).subtracting(served))")
        #expect(served.count == declared.count)
    }

    /// The same operations run on their connection's event loop on both transports: the agents' calls,
    /// small and bounded (`runsOnLoop` for gRPC, the `/v1/agent/` paths on the JSON engine); every other
    /// runs on Swift's global executor (docs/http2-engine.md, "Where requests run").
    @Test func theAgentsCallsAndOnlyThoseRunOnTheLoopOnBothTransports() {
        let methods = Lockstep_V1_AgentService.Method.descriptors + Lockstep_V1_MigrationService.Method.descriptors
            + Lockstep_V1_StageService.Method.descriptors + Lockstep_V1_HistoryService.Method.descriptors
        var onLoop: [String] = []
        for operation in APIOperation.all {
            let descriptor = methods.first { "\($0.service.fullyQualifiedService)/\($0.method)" == "\(operation.service)/\(operation.method)" }
            let grpc = descriptor.map(GRPCAgentService.isAgentMethod) ?? false
            #expect(grpc == operation.path.hasPrefix(JSONOnEngine.agentPaths), "\(operation.name)")
            if grpc { onLoop.append(operation.name) }
        }
        #expect(onLoop.sorted() == ["agent/complete", "agent/fail", "agent/heartbeat", "agent/poll", "agent/progress"], "\(onLoop)")
    }

    /// The bound on both transports: an agent's call runs on the loop up to `AgentAPI.agentRequestBytesOnLoopMax`
    /// bytes of request and not one byte more (a large report is decoded off the loop); every other
    /// operation never does, whatever its size. These are the predicates the server installs
    /// (`GRPCAgentService.runsOnLoop` as the gRPC transport's `runsOnLoop`; `JSONOnEngine` asks its own);
    /// that it installs them is read in LockstepServer.swift, not tested.
    @Test func anAgentsCallRunsOnTheLoopUpToTheBoundAndNotOneByteMoreOnBothTransports() {
        let methods = Lockstep_V1_AgentService.Method.descriptors + Lockstep_V1_MigrationService.Method.descriptors
            + Lockstep_V1_StageService.Method.descriptors + Lockstep_V1_HistoryService.Method.descriptors
        let bound = AgentAPI.agentRequestBytesOnLoopMax
        #expect(bound == 4_096)
        for operation in APIOperation.all {
            guard let descriptor = methods.first(where: { "\($0.service.fullyQualifiedService)/\($0.method)" == "\(operation.service)/\(operation.method)" }) else {
                Issue.record("\(operation.name) has no gRPC method")
                continue
            }
            let agent = operation.name.hasPrefix("agent/")
            for bytes in [0, 43, bound, bound + 1, 1 << 20, Int.max] {
                let expected = agent && bytes <= bound
                #expect(GRPCAgentService.runsOnLoop(descriptor, bytes) == expected, "\(operation.name), \(bytes) bytes over gRPC")
                #expect(JSONOnEngine.runsOnLoop(path: operation.path, bodyBytes: bytes) == expected, "\(operation.name), \(bytes) bytes over JSON")
            }
        }
        // The paths a request really has: a query stays an agent's call; a path that only starts like an
        // agent's route is not one; an empty segment (which the router drops) errs the safe way, off the loop.
        #expect(JSONOnEngine.runsOnLoop(path: "/v1/agent/poll?wait_ms=0", bodyBytes: 43))
        #expect(!JSONOnEngine.runsOnLoop(path: "/v1/agents", bodyBytes: 10))
        #expect(!JSONOnEngine.runsOnLoop(path: "/v1/agent", bodyBytes: 10))
        #expect(!JSONOnEngine.runsOnLoop(path: "//v1/agent/poll", bodyBytes: 10))
        #expect(!JSONOnEngine.runsOnLoop(path: "/v1/migrations/list", bodyBytes: 10))
    }

    /// The proto file's `rpc` lines name the same request and response messages, and the same streams.
    @Test func theProtoFileDeclaresTheTablesMessages() throws {
        let proto = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../Protos/lockstep/v1/agent.proto")
        var service = ""
        var declared: [String: String] = [:]
        for line in try String(contentsOf: proto, encoding: .utf8).split(separator: "\n") {
            let words = line.split(whereSeparator: { " ();{".contains($0) })
            if words.first == "service", words.count > 1 { service = "lockstep.v1." + words[1] }
            guard words.first == "rpc", words.count >= 4 else { continue }
            // rpc NAME REQUEST returns [stream] RESPONSE
            let streams = words[4] == "stream"
            let response = streams ? words[5] : words[4]
            declared["\(service)/\(words[1])"] = "lockstep.v1.\(words[2]) -> \(streams ? "stream " : "")lockstep.v1.\(response)"
        }
        for operation in APIOperation.all {
            #expect(declared["\(operation.service)/\(operation.method)"]
                == "\(operation.request) -> \(operation.streams ? "stream " : "")\(operation.response)", "\(operation.name)")
        }
        #expect(declared.count == APIOperation.all.count)
    }

    @Test func namesAreUniqueAndEveryOperationNeedsARole() {
        #expect(Set(APIOperation.all.map(\.name)).count == APIOperation.all.count)
        #expect(Set(APIOperation.all.map { "\($0.verb) \($0.path)" }).count == APIOperation.all.count)
        for operation in APIOperation.all {
            #expect(!operation.roles.isEmpty && !operation.roles.contains(.admin), "\(operation.name)")
            if operation.verb == .post { #expect(operation.path == "/v1/" + operation.name) }
        }
        // What `lockstep debug operations` prints: one JSON object per operation.
        let lines = APIOperation.jsonLines.split(separator: "\n")
        #expect(lines.count == APIOperation.all.count)
        let poll = #"{"name":"agent/poll","summary":"poll for steps","roles":["agent"],"service":"lockstep.v1.AgentService","#
            + #""method":"Poll","request":"lockstep.v1.PollRequest","response":"lockstep.v1.PollResponse","streams":false,"verb":"POST","#
            + #""path":"/v1/agent/poll","writes":true}"#
        #expect(lines.first.map(String.init) == poll)
    }

    /// The gate, on both transports, for every operation: a principal with none of its roles is refused
    /// with `permission_denied` before anything is read (even with an empty request, which would
    /// otherwise be refused as invalid or not found).
    @Test func everyOperationRefusesEveryRoleItDoesNotNameOnBothTransports() async throws {
        let tokens: [Principal.Role: String] = [.agent: "agent-token-0123456789", .operator: "operator-token-0123456789",
                                                .approver: "approver-token-0123456789", .auditor: "auditor-token-0123456789"]
        let principals = [
            #"{"name": "agent", "roles": ["agent"], "services": ["orders"], "token_sha256": "\#(AuthConfig.hash(tokens[.agent]!))"}"#,
            #"{"name": "operator", "roles": ["operator"], "token_sha256": "\#(AuthConfig.hash(tokens[.operator]!))"}"#,
            #"{"name": "approver", "roles": ["approver"], "owner_groups": ["g"], "token_sha256": "\#(AuthConfig.hash(tokens[.approver]!))"}"#,
            #"{"name": "auditor", "roles": ["auditor"], "token_sha256": "\#(AuthConfig.hash(tokens[.auditor]!))"}"#,
        ]
        let auth = try AuthConfig(json: Array(#"{"principals": [\#(principals.joined(separator: ","))]}"#.utf8))
        var options = LockstepServer.Options(databasePath: temporaryDirectory() + "/events.sqlite", httpHost: "127.0.0.1", httpPort: 0,
                                             grpcHost: "127.0.0.1", grpcPort: 0, dev: false, auth: auth, readyFile: nil)
        options.timerTickMillis = 20
        let logger = Logger(label: "operation-table-test")
        let server = try await LockstepServer.build(options, metrics: ServerMetrics(), logger: logger)
        let group = ServiceGroup(configuration: server.groupConfiguration(logger: logger))
        try await InProcessServerTests.running(group, addresses: { await server.addresses() }) { grpc, http in
                let port = Int(grpc.split(separator: ":").last ?? "") ?? 0
                let transport = try HTTP2ClientTransport.Posix(target: .ipv4(address: "127.0.0.1", port: port), transportSecurity: .plaintext)
                try await withGRPCClient(transport: transport) { client in
                    var checked = 0
                    for operation in APIOperation.all {
                        for (role, token) in tokens.sorted(by: { $0.key.rawValue < $1.key.rawValue }) where !operation.roles.contains(role) {
                            // JSON.
                            let path = operation.path.replacingOccurrences(of: ":migration", with: "m")
                            var arguments = ["-sS", "-H", "authorization: Bearer \(token)", "-w", "\n%{http_code}"]
                            if operation.verb == .post { arguments += ["-X", "POST", "-H", "content-type: application/json", "-d", "{}"] }
                            let answer = try await ChildProcess("/usr/bin/curl", arguments + [http + path]).wait(seconds: 30).stdout
                            #expect(answer.hasSuffix("\n403") && answer.contains(#""code":"permission_denied""#)
                                && answer.contains("needs"), "JSON \(operation.name) as \(role): \(answer)")
                            // gRPC.
                            let code = try await Self.grpcCode(client, operation, token: token)
                            #expect(code == "permission_denied", "gRPC \(operation.service)/\(operation.method) as \(role): \(code)")
                            checked += 1
                        }
                    }
                    #expect(checked >= 50)
                }
        }
    }

    /// Calls `operation` over gRPC with an empty request and returns the `lockstep-error-code` it was
    /// refused with ("ok" when it was not).
    static func grpcCode(_ client: GRPCClient<HTTP2ClientTransport.Posix>, _ operation: APIOperation, token: String) async throws -> String {
        let descriptor = MethodDescriptor(fullyQualifiedService: operation.service, method: operation.method)
        let request = ClientRequest<[UInt8]>(message: [], metadata: ["authorization": "Bearer \(token)"])
        do {
            if operation.streams {
                try await client.serverStreaming(request: request, descriptor: descriptor, serializer: RawBytes(), deserializer: RawBytes(),
                                                 options: .defaults) { response in
                    for try await _ in response.messages {}
                }
            } else {
                _ = try await client.unary(request: request, descriptor: descriptor, serializer: RawBytes(), deserializer: RawBytes(),
                                           options: .defaults) { try $0.message }
            }
            return "ok"
        } catch let error as RPCError {
            return error.metadata[stringValues: "lockstep-error-code"].first(where: { _ in true }) ?? "\(error.code)"
        }
    }
}

/// Messages as their bytes, for calling any method by its descriptor.
struct RawBytes: MessageSerializer, MessageDeserializer {
    func serialize<Bytes: GRPCContiguousBytes>(_ message: [UInt8]) throws -> Bytes { Bytes(message) }
    func deserialize<Bytes: GRPCContiguousBytes>(_ serializedMessageBytes: Bytes) throws -> [UInt8] {
        serializedMessageBytes.withUnsafeBytes { Array($0) }
    }
}
