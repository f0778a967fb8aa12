import Foundation
import LockstepServer
import LockstepTestSupport
import Testing
import LockstepService

/// The operator and approver side through a real server: reading migrations (and who may), pause,
/// resume, gates with separation of duties, abort, forced release, paging.
@Suite(.serialized, .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/curl"), "needs curl (ops/test installs it)"))
struct OperatorAPITests {
    static let tokens = ["alice": "operator-token-eeeeeeeeeeeeeeee", "bob": "approver-token-ffffffffffffffff",
                         "audrey": "auditor-token-gggggggggggggggg", "orders-agent": "agent-token-hhhhhhhhhhhhhhhhhh"]

    static let plan = """
        name: gated
        services:
          orders: { owners: [orders-team] }
          ledger: { owners: [ledger-team] }
        nodes:
          - id: expand
            service: orders
            phase: expand
            action: add-column
            rollback: { action: drop-column }
          - id: switch
            service: ledger
            phase: live
            action: flip-flag
            needs: [expand]
            approvals: { minimum: 1, from: [ledger-team] }
        """

    func server() async throws -> ServerProcess {
        let path = temporaryDirectory() + "/auth.json"
        let t = Self.tokens
        try """
            {"principals": [
              {"name": "alice", "roles": ["operator"], "token_sha256": "\(AuthConfig.hash(t["alice"]!))"},
              {"name": "bob", "roles": ["approver"], "owner_groups": ["ledger-team"], "token_sha256": "\(AuthConfig.hash(t["bob"]!))"},
              {"name": "audrey", "roles": ["auditor"], "token_sha256": "\(AuthConfig.hash(t["audrey"]!))"},
              {"name": "orders-agent", "roles": ["agent"], "services": ["orders"], "token_sha256": "\(AuthConfig.hash(t["orders-agent"]!))"}
            ]}
            """.write(toFile: path, atomically: true, encoding: .utf8)
        let server = try await ServerProcess(["--config", path])
        let body = String(decoding: try JSONSerialization.data(withJSONObject: ["plan_yaml": Self.plan]), as: UTF8.self)
        #expect(try await server.post("/v1/plans", body, token: t["alice"]).hasSuffix("\n200"))
        return server
    }

    @Test func operatorsSteerApproversDecideAuditorsReadAndAgentsDoNeither() async throws {
        let server = try await server()
        let t = Self.tokens
        func post(_ path: String, _ body: String, as who: String) async throws -> String { try await server.post(path, body, token: t[who]) }
        #expect(try await post("/v1/migrations", #"{"plan": "gated", "migration_id": "m1"}"#, as: "alice").hasSuffix("\n200"))
        let polled = try await post("/v1/agent/poll", #"{"service": "orders", "agent_id": "o1"}"#, as: "orders-agent")
        #expect(polled.contains(#""lease_id":"m1/expand""#))
        // Who holds which service, and the step running under it: readers may look, agents may not.
        let leases = try await post("/v1/service-leases/list", "{}", as: "audrey")
        #expect(leases.contains(#"{"held":[{"service":"orders","migration_id":"m1","node_id":"expand","since_ms":"#), "\(leases)")
        #expect(leases.contains(#""step":{"agent_id":"o1","fencing_token":"1""#) && !leases.contains("waiting"), "\(leases)")
        #expect(try await post("/v1/service-leases/list", "{}", as: "orders-agent").hasSuffix("\n403"))
        #expect(try await post("/v1/agent/complete", #"{"lease_id": "m1/expand", "fencing_token": "1"}"#, as: "orders-agent").hasSuffix("\n200"))

        // Reading: the auditor may, the agent may not (it sees only its own steps).
        let read = try await post("/v1/migrations/get", #"{"migration_id": "m1"}"#, as: "audrey")
        #expect(read.contains(#""node_id":"switch","phase":"live","services":["ledger"],"needs":["expand"],"approvals_needed":1,"approvers_from":["ledger-team"],"status":"NODE_STATUS_AWAITING_APPROVAL""#), "\(read)")
        #expect(read.contains(#""approvals_needed":1"#))
        #expect(try await post("/v1/migrations/get", #"{"migration_id": "m1"}"#, as: "orders-agent").contains(#""code":"permission_denied""#))
        #expect(try await post("/v1/migrations/pause", #"{"migration_id": "m1", "reason": "x"}"#, as: "audrey").hasSuffix("\n403"))

        // Gates: only approvers decide; the operator who started it has no approver role anyway.
        #expect(try await post("/v1/migrations/approve", #"{"migration_id": "m1", "node_id": "switch"}"#, as: "alice").hasSuffix("\n403"))
        #expect(try await post("/v1/migrations/reject", #"{"migration_id": "m1", "node_id": "switch"}"#, as: "bob")
            .contains(#""code":"invalid_argument","message":"a rejection needs a comment saying why""#))
        let approved = try await post("/v1/migrations/approve", #"{"migration_id": "m1", "node_id": "switch", "comment": "dashboards green"}"#, as: "bob")
        #expect(approved.contains(#""events":["approval_granted","service_leases_requested"]"#), "\(approved)")

        // Pause, resume, abort: each answers with what it recorded.
        #expect(try await post("/v1/migrations/pause", #"{"migration_id": "m1", "reason": "incident 42"}"#, as: "alice").contains(#""status":"MIGRATION_STATUS_PAUSED""#))
        #expect(try await post("/v1/migrations/pause", #"{"migration_id": "m1", "reason": "again"}"#, as: "alice").contains(#""code":"already_paused""#))
        #expect(try await post("/v1/migrations/resume", #"{"migration_id": "m1"}"#, as: "alice").contains(#""status":"MIGRATION_STATUS_RUNNING""#))
        #expect(try await post("/v1/migrations/abort", #"{"migration_id": "m1"}"#, as: "alice").contains(#""message":"an abort needs a reason: it is recorded with the abort""#))
        let aborted = try await post("/v1/migrations/abort", #"{"migration_id": "m1", "reason": "error budget"}"#, as: "alice")
        #expect(aborted.contains(#""migration_aborted""#) && aborted.contains(#""status":"MIGRATION_STATUS_ABORTING""#), "\(aborted)")
        #expect(try await post("/v1/service-leases/release", #"{"service": "payments", "reason": "gone"}"#, as: "alice")
            .contains(#""code":"service_not_leased""#))
        _ = try await server.stop()
        let export = try await runLockstep(["history", "export", "--data", server.data + "/data"]).stdout
        let approval = try #require(export.split(separator: "\n").first { $0.contains("approval_granted") })
        #expect(approval.contains(#""actor":{"kind":"user","id":"bob"}"#) && approval.contains(#""comment":"dashboards green""#))
    }

    @Test func reviewersPageThroughTheHistoryReadTheStateAtAnyPointAndVerifyIt() async throws {
        let server = try await server()
        let t = Self.tokens
        #expect(try await server.post("/v1/migrations", #"{"plan": "gated", "migration_id": "m1"}"#, token: t["alice"]).hasSuffix("\n200"))
        #expect(try await server.post("/v1/migrations", #"{"plan": "gated", "migration_id": "m2"}"#, token: t["alice"]).hasSuffix("\n200"))
        // plan_applied (1); m1: started, request, grant (2-4); m2: started, request (5-6); m2 waits for orders.
        let all = try await server.post("/v1/history/events", #"{"page_size": 4}"#, token: t["audrey"])
        #expect(all.contains(#""sequence":"1""#) && all.contains(#""sequence":"4""#) && !all.contains(#""sequence":"5""#), "\(all)")
        #expect(all.contains(#""next_after_sequence":"4""#), "\(all)")
        let m2 = try await server.post("/v1/history/events", #"{"stream": "migration/m2"}"#, token: t["audrey"])
        #expect(m2.contains(#""sequence":"5""#) && m2.contains(#""sequence":"6""#) && !m2.contains(#""sequence":"4""#), "\(m2)")
        #expect(!m2.contains("next_after_sequence"), "the last page says so by leaving it out: \(m2)")
        // So does a stream whose last event is not the log's head (m1's, 2-4, with m2's after it): its
        // cursor used to point past its end for ever, and a reader following it never stopped (the
        // web console's plans view hung on it).
        let m1 = try await server.post("/v1/history/events", #"{"stream": "migration/m1"}"#, token: t["audrey"])
        #expect(m1.contains(#""sequence":"4""#) && !m1.contains("next_after_sequence"), "\(m1)")
        let m1Paged = try await server.post("/v1/history/events", #"{"stream": "migration/m1", "page_size": 2}"#, token: t["audrey"])
        #expect(m1Paged.contains(#""next_after_sequence":"3""#), "a full page still has a cursor: \(m1Paged)")
        // The state as of sequence 4: m1 only, its first node holding orders.
        let at4 = try await server.post("/v1/history/state", #"{"sequence": "4"}"#, token: t["audrey"])
        #expect(at4.contains(#""sequence":"4""#) && at4.contains(#""migration_id":"m1""#) && !at4.contains(#""migration_id":"m2""#), "\(at4)")
        let now = try await server.post("/v1/history/state", #"{"time_ms": "\#(Int64(Date().timeIntervalSince1970 * 1_000) + 60_000)"}"#, token: t["audrey"])
        #expect(now.contains(#""sequence":"6""#), "\(now)")
        let before = try await server.post("/v1/history/state", #"{"time_ms": "1"}"#, token: t["audrey"])
        #expect(!before.contains(#""sequence""#) && !before.contains("migration_id") && before.contains(#""digest""#), "nothing was recorded by then: \(before)")
        #expect(try await server.post("/v1/history/state", #"{"sequence": "99"}"#, token: t["audrey"]).contains(#""code":"invalid_argument""#))
        let verified = try await server.post("/v1/history/verify", "{}", token: t["audrey"])
        #expect(verified.contains(#""ok":true"#) && verified.contains(#""events":"6""#) && verified.contains(#""head_sequence":"6""#), "\(verified)")
        let export = try await ChildProcess("/usr/bin/curl", ["-sS", "-X", "POST", "-H", "content-type: application/json", "-H", "authorization: Bearer \(t["audrey"]!)",
                                                              "--data-binary", #"{"after_sequence": "4"}"#, server.url + "/v1/history/export"]).wait(seconds: 30).stdout
        #expect(export.split(separator: "\n").map { $0.hasPrefix(#"{"sequence":5,"#) || $0.hasPrefix(#"{"sequence":6,"#) } == [true, true], "\(export)")
        // Agents read no history.
        #expect(try await server.post("/v1/history/events", "{}", token: t["orders-agent"]).hasSuffix("\n403"))
        _ = try await server.stop()
    }

    @Test func servicesPollTheStageCheaplyWithETags() async throws {
        let server = try await server()
        let t = Self.tokens
        #expect(try await server.post("/v1/migrations", #"{"plan": "gated", "migration_id": "m1"}"#, token: t["alice"]).hasSuffix("\n200"))
        func get(_ path: String, as who: String, ifNoneMatch: String? = nil) async throws -> (status: String, etag: String, body: String) {
            let conditional = ifNoneMatch.map { ["-H", "if-none-match: \($0)"] } ?? []
            let output = try await ChildProcess("/usr/bin/curl", ["-sS", "-i", "-H", "authorization: Bearer \(t[who]!)"] + conditional + [server.url + path])
                .wait(seconds: 30).stdout
            let lines = output.split(separator: "\r\n", omittingEmptySubsequences: false).map(String.init)
            let status = lines.first?.split(separator: " ").dropFirst().first.map(String.init) ?? ""
            let etag = lines.first { $0.lowercased().hasPrefix("etag:") }.map { String($0.dropFirst(5)).trimmingCharacters(in: .whitespaces) } ?? ""
            return (status, etag, lines.last ?? "")
        }
        // The agent of orders reads the stage of a migration that changes orders.
        let first = try await get("/v1/stage/m1", as: "orders-agent")
        #expect(first.status == "200" && first.etag == #""3""#, "\(first)")
        #expect(first.body.contains(#""node_id":"expand","phase":"expand","services":["orders"],"status":"NODE_STATUS_READY""#), "\(first.body)")
        #expect(try await get("/v1/stage/m1", as: "orders-agent", ifNoneMatch: first.etag).status == "304")
        // Something happens: the ETag moves on.
        #expect(try await server.post("/v1/agent/poll", #"{"service": "orders", "agent_id": "o1"}"#, token: t["orders-agent"]).contains("m1/expand"))
        let moved = try await get("/v1/stage/m1?node=expand", as: "audrey", ifNoneMatch: first.etag)
        #expect(moved.status == "200" && moved.etag == #""4""# && moved.body.contains(#""status":"MIGRATION_STATUS_RUNNING""#) && !moved.body.contains("switch"), "\(moved)")
        #expect(try await get("/v1/stage/ghost", as: "audrey").status == "404")
        #expect(try await get("/v1/stage/m1?node=nope", as: "audrey").status == "404")
        _ = try await server.stop()
    }

    @Test func migrationsAreListedInIdOrderPageByPage() async throws {
        let server = try await server()
        for id in ["m3", "m1", "m2"] {
            #expect(try await server.post("/v1/migrations", #"{"plan": "gated", "migration_id": "\#(id)"}"#, token: Self.tokens["alice"]).hasSuffix("\n200"))
        }
        // Plans: validate without applying, and list what was applied.
        let good = String(decoding: try JSONSerialization.data(withJSONObject: ["plan_yaml": Self.plan]), as: UTF8.self)
        let validated = try await server.post("/v1/plans/validate", good, token: Self.tokens["audrey"])
        #expect(validated.contains(#""valid":true"#) && validated.contains(#""name":"gated""#), "\(validated)")
        let broken = String(decoding: try JSONSerialization.data(withJSONObject: ["plan_yaml": "name: x\nnodes:\n  - id: a\n    service: s\n    phase: nonsense\n    action: w\n"]), as: UTF8.self)
        let refused = try await server.post("/v1/plans/validate", broken, token: Self.tokens["audrey"])
        #expect(!refused.contains(#""valid":true"#) && refused.contains(#""line":5"#) && refused.contains(#""severity":"error""#), "\(refused)")
        let plans = try await server.post("/v1/plans/list", "{}", token: Self.tokens["audrey"])
        #expect(plans.contains(#""name":"gated","versions":[{"version":"1""#), "\(plans)")
        let first = try await server.post("/v1/migrations/list", #"{"page_size": 2}"#, token: Self.tokens["audrey"])
        #expect(first.contains(#""migration_id":"m1""#) && first.contains(#""migration_id":"m2""#) && !first.contains(#""migration_id":"m3""#))
        #expect(first.contains(#""next_page_token":"m2""#), "\(first)")
        let second = try await server.post("/v1/migrations/list", #"{"page_size": 2, "page_token": "m2"}"#, token: Self.tokens["audrey"])
        #expect(second.contains(#""migration_id":"m3""#) && !second.contains("next_page_token"), "\(second)")

        // A settled migration leaves the coordinator's live state, not the API: it is read, listed and
        // watched from its stream, its id stays taken, and it takes no more commands.
        let aborted = try await server.post("/v1/migrations/abort", #"{"migration_id": "m2", "reason": "not needed"}"#, token: Self.tokens["alice"])
        #expect(aborted.contains(#""status":"MIGRATION_STATUS_ROLLED_BACK""#), "\(aborted)")
        let read = try await server.post("/v1/migrations/get", #"{"migration_id": "m2"}"#, token: Self.tokens["audrey"])
        #expect(read.contains(#""status":"MIGRATION_STATUS_ROLLED_BACK""#) && read.contains(#""started_by":"alice""#) && read.hasSuffix("\n200"), "\(read)")
        let all = try await server.post("/v1/migrations/list", "{}", token: Self.tokens["audrey"])
        #expect(all.components(separatedBy: #""migration_id":"#).count == 4 && all.contains(#""migration_id":"m2""#), "\(all)")
        let again = try await server.post("/v1/migrations", #"{"plan": "gated", "migration_id": "m2"}"#, token: Self.tokens["alice"])
        #expect(again.contains(#""code":"migration_already_exists""#) && again.hasSuffix("\n409"), "\(again)")
        let paused = try await server.post("/v1/migrations/pause", #"{"migration_id": "m2", "reason": "late"}"#, token: Self.tokens["alice"])
        #expect(paused.contains(#""code":"migration_settled""#) && paused.contains("has already rolled_back"), "\(paused)")
        // Watching it gives its events, from its stream, and ends (it can change no more).
        let watched = try await server.post("/v1/migrations/watch", #"{"migration_id": "m2"}"#, token: Self.tokens["audrey"])
        #expect(watched.contains(#""migration_started""#) && watched.contains(#""migration_rolled_back""#) && watched.hasSuffix("\n200"), "\(watched)")
        let missing = try await server.post("/v1/migrations/get", #"{"migration_id": "m9"}"#, token: Self.tokens["audrey"])
        #expect(missing.contains(#""code":"migration_not_found""#), "\(missing)")
        _ = try await server.stop()
    }
}
