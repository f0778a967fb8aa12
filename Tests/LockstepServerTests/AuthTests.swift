import Foundation
import LockstepServer
import LockstepTestSupport
import Testing
import LockstepService

@Suite struct AuthConfigTests {
    let hash = AuthConfig.hash("orders-agent-token-0123456789")

    func config(_ principals: String) throws(AuthConfig.Invalid) -> AuthConfig {
        try AuthConfig(json: Array(#"{"principals": [\#(principals)]}"#.utf8))
    }

    func refusal(_ json: String) -> String {
        do {
            _ = try AuthConfig(json: Array(json.utf8))
            return "accepted"
        } catch {
            return error.description
        }
    }

    @Test func aClientCertificateNamesItsPrincipalAndComesBeforeAToken() throws {
        let certificate = AuthConfig.hash(bytes: [1, 2, 3])
        let auth = try config(#"{"name": "alice", "roles": ["operator"], "client_certificate_sha256": "\#(certificate)"}, "# +
                              #"{"name": "bob", "roles": ["auditor"], "token_sha256": "\#(hash)"}"#)
        #expect(try auth.authenticate(nil, clientCertificate: certificate).name == "alice")
        #expect(try auth.authenticate("Bearer orders-agent-token-0123456789", clientCertificate: certificate).name == "alice")
        // An unknown certificate with a good token: the token decides; without one, refused.
        #expect(try auth.authenticate("Bearer orders-agent-token-0123456789", clientCertificate: AuthConfig.hash(bytes: [9])).name == "bob")
        #expect(throws: APIError.self) { try auth.authenticate(nil, clientCertificate: AuthConfig.hash(bytes: [9])) }
    }

    @Test func tokensAreKnownOnlyByTheirHash() throws {
        let auth = try config(#"{"name": "orders-agent", "roles": ["agent"], "services": ["orders"], "token_sha256": "\#(hash)"}"#)
        #expect(auth.principal(forToken: "orders-agent-token-0123456789") == Principal(name: "orders-agent", roles: [.agent], services: ["orders"]))
        #expect(auth.principal(forToken: "orders-agent-token-012345678") == nil)
        #expect(AuthConfig.hash("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")  // FIPS 180-2 test vector
        #expect(throws: APIError(.unauthenticated, "this server needs a bearer token: send Authorization: Bearer TOKEN")) {
            try auth.authenticate(nil)
        }
        #expect(throws: APIError(.unauthenticated, "the bearer token is not known to this server")) {
            try auth.authenticate("Basic b3JkZXJz")
        }
        #expect(try auth.authenticate("Bearer orders-agent-token-0123456789").name == "orders-agent")
        // The scheme's name in any case; the token exactly; nothing but the scheme is no token.
        #expect(try auth.authenticate("bEARER orders-agent-token-0123456789").name == "orders-agent")
        for header in ["Bearer ", "Bearer", "Bearer\u{0}orders-agent-token-0123456789", "Bearer  orders-agent-token-0123456789",
                       "Bearer ORDERS-agent-token-0123456789", "Bearér orders-agent-token-0123456789", "Bearer orders-agent-token-0123456789 "] {
            #expect(throws: APIError(.unauthenticated, "the bearer token is not known to this server"), "\(header)") { try auth.authenticate(header) }
        }
        // FIPS 180-2's two-block vector, through the bytes' path (certificates) and the token's.
        let twoBlocks = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"
        #expect(AuthConfig.hash(bytes: Array(twoBlocks.utf8)) == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        #expect(AuthConfig.hash(twoBlocks) == AuthConfig.hash(bytes: Array(twoBlocks.utf8)))
        #expect(AuthConfig.hash("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    }

    @Test func everyMistakeInTheConfigIsNamedWhereItIs() {
        let agent = #""name": "a", "roles": ["agent"], "services": ["orders"]"#
        #expect(refusal("not json").hasPrefix("the config is not valid JSON"))
        #expect(refusal("[]") == #"the config must be a JSON object with "principals""#)
        #expect(refusal(#"{"principals": [], "extra": 1}"#).hasPrefix(#"the config: unknown key "extra""#))
        // A key written twice would mean its last copy, whatever a reviewer reads first.
        #expect(refusal(#"{"principals": [{\#(agent), "token_sha256": "\#(hash)", "roles": ["admin"]}]}"#)
                == #"the config names "roles" twice in one object: which one is meant?"#)
        #expect(refusal(#"{"principals": [], "principals": []}"#) == #"the config names "principals" twice in one object: which one is meant?"#)
        #expect(refusal(#"{"principals": [{\#(agent), "token_sha256": "\#(hash)", "colour": "red"}]}"#).hasPrefix(#"principals[0]: unknown key "colour""#))
        #expect(refusal(#"{"principals": [{"name": "a", "roles": ["opertor"], "token_sha256": "\#(hash)"}]}"#)
            == #"principals[0].roles: unknown role "opertor" (known: agent, operator, approver, auditor, admin)"#)
        #expect(refusal(#"{"principals": [{"name": "a", "roles": [], "token_sha256": "\#(hash)"}]}"#) == "principals[0] (a) has no roles: it could do nothing")
        #expect(refusal(#"{"principals": [{"name": "a", "roles": ["agent"], "token_sha256": "\#(hash)"}]}"#)
            == "principals[0] (a) is an agent of no service: name its services")
        #expect(refusal(#"{"principals": [{"name": "a", "roles": ["approver"], "token_sha256": "\#(hash)"}]}"#)
            == "principals[0] (a) is an approver for no owner group: name its owner_groups")
        #expect(refusal(#"{"principals": [{\#(agent), "token_sha256": "secret"}]}"#)
            == "principals[0].token_sha256 must be 64 hex digits (lockstep auth hash-token prints it)")
        #expect(refusal(#"{"principals": [{\#(agent), "token_sha256": "\#(hash)"}, {"name": "a", "roles": ["operator"], "token_sha256": "\#(String(repeating: "0", count: 64))"}]}"#)
            == "principals[1]: a second principal named a")
        #expect(refusal(#"{"principals": [{\#(agent), "token_sha256": "\#(hash)"}, {"name": "b", "roles": ["operator"], "token_sha256": "\#(hash.uppercased())"}]}"#)
            == "principals[1] (b) has the same token as a")
        #expect(refusal(#"{"principals": [{"name": "a", "roles": ["operator"]}]}"#)
            == "principals[0] (a) has neither token_sha256 nor client_certificate_sha256: nobody could be it")
        #expect(refusal(#"{"principals": [{"name": "a", "roles": ["operator"], "client_certificate_sha256": "cafe"}]}"#)
            == "principals[0].client_certificate_sha256 must be 64 hex digits (openssl x509 -outform der | sha256sum)")
        let many = Array(repeating: "{}", count: AuthConfig.principalsMax + 1).joined(separator: ",")
        #expect(refusal(#"{"principals": [\#(many)]}"#) == "10001 principals; the limit is 10000")
        #expect(refusal(String(repeating: " ", count: AuthConfig.fileBytesMax + 1)) == "the config is 1048577 bytes; the limit is 1048576 bytes")
    }
}

/// Authentication and authorization through a real server: deny by default, agents scoped to their
/// services, the recorded actor is the principal and never a name from the request.
@Suite(.serialized, .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/curl"), "needs curl (ops/test installs it)"))
struct AuthEndToEndTests {
    static let operatorToken = "operator-token-aaaaaaaaaaaaaaaa"
    static let agentToken = "orders-agent-token-bbbbbbbbbbbb"
    static let secondAgentToken = "orders-agent-2-token-cccccccccc"

    func configFile() throws -> String {
        let path = temporaryDirectory() + "/auth.json"
        let json = """
            {"principals": [
              {"name": "alice", "roles": ["operator"], "token_sha256": "\(AuthConfig.hash(Self.operatorToken))"},
              {"name": "orders-agent", "roles": ["agent"], "services": ["orders"], "token_sha256": "\(AuthConfig.hash(Self.agentToken))"},
              {"name": "orders-agent-2", "roles": ["agent"], "services": ["orders"], "token_sha256": "\(AuthConfig.hash(Self.secondAgentToken))"}
            ]}
            """
        try json.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    @Test func callersAreWhoTheirTokensSayAndMayDoOnlyWhatTheirRolesAllow() async throws {
        let server = try await ServerProcess(["--config", try configFile()])
        let plan = String(decoding: try JSONSerialization.data(withJSONObject: ["plan_yaml": AgentAPITests.plan]), as: UTF8.self)
        let poll = #"{"service": "orders", "agent_id": "pretending-to-be-bob"}"#
        #expect(try await server.post("/v1/agent/poll", poll).hasSuffix(#""code":"unauthenticated","message":"this server needs a bearer token: send Authorization: Bearer TOKEN"}"# + "\n\n401"))
        #expect(try await server.post("/v1/agent/poll", poll, token: "guess").hasSuffix("\n401"))
        // The agent may not apply plans; the operator may not poll.
        #expect(try await server.post("/v1/plans", plan, token: Self.agentToken).contains(#"orders-agent may not apply plans (needs the operator role)"#))
        #expect(try await server.post("/v1/agent/poll", poll, token: Self.operatorToken).hasSuffix("\n403"))
        #expect(try await server.post("/v1/plans", plan, token: Self.operatorToken).hasSuffix("\n200"))
        #expect(try await server.post("/v1/migrations", #"{"plan": "two-services", "migration_id": "m1"}"#, token: Self.operatorToken).hasSuffix("\n200"))
        // An agent of orders may not poll checkout, nor report on checkout's steps.
        #expect(try await server.post("/v1/agent/poll", #"{"service": "checkout", "agent_id": "x"}"#, token: Self.agentToken)
            .contains(#""code":"permission_denied","message":"orders-agent is not an agent of service checkout""#))
        #expect(try await server.post("/v1/agent/complete", #"{"lease_id": "m1/switch", "fencing_token": "1"}"#, token: Self.agentToken).hasSuffix("\n403"))
        #expect(try await server.post("/v1/agent/poll", poll, token: Self.agentToken).contains(#""lease_id":"m1/expand""#))
        // Another agent principal of the same service, even with the current token, may not report on
        // orders-agent's lease (issue 15); the holder may.
        for route in ["/v1/agent/complete", "/v1/agent/heartbeat", "/v1/agent/progress"] {
            let answer = try await server.post(route, #"{"lease_id": "m1/expand", "fencing_token": "1"}"#, token: Self.secondAgentToken)
            #expect(answer.contains(#""code":"not_lease_holder","message":"the lease on expand was granted to orders-agent; orders-agent-2 may not report"#)
                && answer.hasSuffix("\n403"), "\(route): \(answer)")
        }
        #expect(try await server.post("/v1/agent/heartbeat", #"{"lease_id": "m1/expand", "fencing_token": "1"}"#, token: Self.agentToken).hasSuffix("\n200"))
        #expect(try await server.post("/v1/agent/complete", #"{"lease_id": "m1/expand", "fencing_token": "1"}"#, token: Self.agentToken).hasSuffix("\n200"))
        _ = try await server.stop()
        // The actor recorded is the authenticated principal; agent_id only names the lease holder.
        let export = try await runLockstep(["history", "export", "--data", server.data + "/data"]).stdout
        #expect(export.contains(#""actor":{"kind":"user","id":"alice"}"#))
        let leased = try #require(export.split(separator: "\n").first { $0.contains("step_leased") })
        #expect(leased.contains(#""actor":{"kind":"agent","id":"orders-agent"}"#) && leased.contains(#""agent_id":"pretending-to-be-bob""#)
            && leased.contains(#""holder":"orders-agent""#), "\(leased)")
    }

    /// A poll over HTTP/2 is served on its connection's event loop (`EnginePoll`, with no task unless it
    /// needs the coordinator), not by the route: every refusal and answer is still the route's, byte for
    /// byte, as HTTP/1.1 gets it, and each is timed under the poll's name.
    @Test func aPollServedOnTheEventLoopAnswersExactlyAsTheRouteDoes() async throws {
        let server = try await ServerProcess(["--config", try configFile()])
        let poll = #"{"service": "orders", "agent_id": "a1"}"#
        let json = ["-H", "content-type: application/json"]
        func bearer(_ token: String) -> [String] { ["-H", "authorization: Bearer \(token)"] }
        func count() async throws -> Int {
            let text = try await ChildProcess("/usr/bin/curl", ["-sS"] + bearer(Self.operatorToken) + [server.url + "/metrics"]).wait(seconds: 30).stdout
            let line = text.split(separator: "\n").first { $0.hasPrefix("lockstep_request_duration_seconds_count") && $0.contains(#"method="agent/poll""#)
                && $0.contains(#"transport="http""#) }
            return line.flatMap { Int($0.split(separator: " ").last ?? "") } ?? 0
        }
        // One byte over the API's body limit: the engine lets it through for the route's own answer.
        let large = temporaryDirectory() + "/large.json"
        try Data(repeating: UInt8(ascii: " "), count: (1 << 20) + 1).write(to: URL(fileURLWithPath: large))
        let cases: [(body: String, fields: [String], status: String)] = [
            ("@" + large, json + bearer(Self.agentToken), "413"),
            (poll, json, "401"),
            (poll, json + bearer("guess"), "401"),
            (poll, json + bearer(Self.operatorToken), "403"),
            (#"{"service": "checkout", "agent_id": "a1"}"#, json + bearer(Self.agentToken), "403"),
            (poll, ["-H", "content-type: text/plain"] + bearer(Self.agentToken), "415"),
            (poll, bearer(Self.agentToken), "415"),
            ("{not json", json + bearer(Self.agentToken), "400"),
            (#"{"service": "orders", "agent_id": "a1", "extra": 1}"#, json + bearer(Self.agentToken), "400"),
            (#"{"service": "", "agent_id": "a1"}"#, json + bearer(Self.agentToken), "400"),
            (#"{"service": "orders", "agent_id": "a b"}"#, json + bearer(Self.agentToken), "400"),
            (poll, json + bearer(Self.agentToken), "200"),
            // Over the size served on the event loop (4 KiB): the route serves it, with the same answer.
            (#"{"service": "orders", "agent_id": "a1"}"# + String(repeating: " ", count: 5_000), json + bearer(Self.agentToken), "200"),
        ]
        let before = try await count()
        for (body, fields, status) in cases {
            let call = ["-sS", "-X", "POST"] + fields + ["--data-binary", body, "-w", "\n%{http_code}", server.url + "/v1/agent/poll"]
            let one = try await ChildProcess("/usr/bin/curl", ["--http1.1"] + call).wait(seconds: 30).stdout
            let two = try await ChildProcess("/usr/bin/curl", ["--http2-prior-knowledge"] + call).wait(seconds: 30).stdout
            #expect(one == two && one.hasSuffix("\n" + status), "\(body) \(fields): HTTP/1.1 \(one) | HTTP/2 \(two)")
        }
        let after = try await count()
        #expect(after - before == 2 * cases.count, "\(before) → \(after)")
        _ = try await server.stop()
    }

    /// A report (heartbeat, progress, completion, failure) on a live migration's node that is the agent's
    /// is checked and performed in one turn of the coordinator; anything else is checked the slow way.
    /// Every refusal is the slow check's, in its order: who may report comes before what the report says.
    @Test func reportsOnNodesThatAreNotTheAgentsAreRefusedByTheSlowCheck() async throws {
        let server = try await ServerProcess(["--config", try configFile()])
        let plan = String(decoding: try JSONSerialization.data(withJSONObject: ["plan_yaml": AgentAPITests.plan]), as: UTF8.self)
        #expect(try await server.post("/v1/plans", plan, token: Self.operatorToken).hasSuffix("\n200"))
        #expect(try await server.post("/v1/migrations", #"{"plan": "two-services", "migration_id": "m1"}"#, token: Self.operatorToken).hasSuffix("\n200"))
        let refusal = #""code":"permission_denied","message":"orders-agent is an agent of orders; "#
        for route in ["/v1/agent/heartbeat", "/v1/agent/progress", "/v1/agent/complete", "/v1/agent/fail"] {
            // Another service's node of a live migration; a node or a migration that does not exist.
            for lease in ["m1/switch", "m1/nothing", "nothing/expand"] {
                let extra = route.hasSuffix("progress") ? #", "percent": 200"# : ""
                let answer = try await server.post(route, #"{"lease_id": "\#(lease)", "fencing_token": "1"\#(extra)}"#, token: Self.agentToken)
                #expect(answer.contains(refusal + "\(lease) is not a step of those services, or does not exist") && answer.hasSuffix("\n403"),
                        "\(route) \(lease): \(answer)")
            }
        }
        #expect(try await server.post("/v1/agent/poll", #"{"service": "orders", "agent_id": "a1"}"#, token: Self.agentToken).contains(#""lease_id":"m1/expand""#))
        // The agent's own node: now what the report says is checked.
        let over = try await server.post("/v1/agent/progress", #"{"lease_id": "m1/expand", "fencing_token": "1", "percent": 200}"#, token: Self.agentToken)
        #expect(over.contains(#""code":"invalid_argument""#) && over.contains("percent is 200") && over.hasSuffix("\n400"), "\(over)")
        let stale = try await server.post("/v1/agent/heartbeat", #"{"lease_id": "m1/expand", "fencing_token": "2"}"#, token: Self.agentToken)
        #expect(stale.contains(#""code":"stale_fencing_token""#), "\(stale)")
        #expect(try await server.post("/v1/agent/progress", #"{"lease_id": "m1/expand", "fencing_token": "1", "percent": 50}"#, token: Self.agentToken).hasSuffix("\n200"))
        #expect(try await server.post("/v1/agent/complete", #"{"lease_id": "m1/expand", "fencing_token": "1"}"#, token: Self.agentToken).hasSuffix("\n200"))
        // Reported again after it completed: the machine's refusal, as before.
        let again = try await server.post("/v1/agent/complete", #"{"lease_id": "m1/expand", "fencing_token": "1"}"#, token: Self.agentToken)
        #expect(again.contains(#""code":"no_active_lease""#) && again.hasSuffix("\n409"), "\(again)")
        _ = try await server.stop()
    }

    @Test func theServerRefusesToStartWithoutAuthorizationOrWithDevOffLoopback() async throws {
        let data = temporaryDirectory()
        let none = try await runLockstep(["serve", "--data", data, "--http-listen", "127.0.0.1:0"])
        #expect(none.status == 2)
        #expect(none.stderr.contains("refusing to serve without an authorization config"))
        let exposed = try await runLockstep(["serve", "--data", data, "--dev", "--http-listen", "0.0.0.0:0"])
        #expect(exposed.status == 2)
        #expect(exposed.stderr.contains("--dev serves without authentication and binds to loopback only; 0.0.0.0 is not a loopback address"))
        let broken = temporaryDirectory() + "/auth.json"
        try #"{"principals": [{"name": "a"}]}"#.write(toFile: broken, atomically: true, encoding: .utf8)
        let invalid = try await runLockstep(["serve", "--data", data, "--config", broken, "--http-listen", "127.0.0.1:0"])
        #expect(invalid.status == 2)
        #expect(invalid.stderr.contains("principals[0] (a) has no roles"), "\(invalid.stderr)")
        // Nothing was served, so nothing was written.
        #expect(!FileManager.default.fileExists(atPath: data + "/events.sqlite"))
    }
}
