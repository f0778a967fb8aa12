import Foundation
import LockstepTestSupport
import Testing

/// `lockstep serve --dev` on loopback authenticates nobody, yet a gate must be approved by someone other
/// than whoever started the migration (issue 14: the README's `--dev` walk-through could never approve).
/// A bearer token `as:NAME` acts as NAME.
@Suite(.serialized, .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/curl"), "needs curl (ops/test installs it)"))
struct DevModeTests {
    static let plan = """
        name: gated
        services:
          orders: { owners: [orders-team] }
        nodes:
          - id: expand
            service: orders
            phase: expand
            action: add-column
          - id: switch
            service: orders
            phase: live
            action: flip-flag
            needs: [expand]
            approvals: { minimum: 1 }
        """

    @Test func aSecondPersonApprovesWithAsName() async throws {
        let server = try await ServerProcess()
        let body = String(decoding: try JSONSerialization.data(withJSONObject: ["plan_yaml": Self.plan]), as: UTF8.self)
        #expect(try await server.post("/v1/plans", body).hasSuffix("\n200"))
        #expect(try await server.post("/v1/migrations", #"{"plan": "gated", "migration_id": "m1"}"#).hasSuffix("\n200"))
        let poll = try await server.post("/v1/agent/poll", #"{"service": "orders", "agent_id": "a1", "wait_ms": 5000}"#)
        #expect(poll.contains(#""lease_id":"m1/expand""#), "\(poll)")
        #expect(try await server.post("/v1/agent/complete", #"{"lease_id": "m1/expand", "fencing_token": "1"}"#).hasSuffix("\n200"))
        let approve = #"{"migration_id": "m1", "node_id": "switch", "comment": "looks good"}"#
        // The developer who started it may not approve it...
        let own = try await server.post("/v1/migrations/approve", approve)
        #expect(own.contains("requester_cannot_approve") && own.hasSuffix("\n403"), "\(own)")
        // ...a name that is not an identifier is refused...
        let bad = try await server.post("/v1/migrations/approve", approve, token: "as:bob smith")
        #expect(bad.contains("unauthenticated") && bad.hasSuffix("\n401"), "\(bad)")
        // ...and bob may, recorded as bob.
        #expect(try await server.post("/v1/migrations/approve", approve, token: "as:bob").hasSuffix("\n200"))
        let migration = try await server.post("/v1/migrations/get", #"{"migration_id": "m1"}"#)
        #expect(migration.contains(#""approved_by":["bob"]"#), "\(migration)")
        // The CLI does the same with --token as:NAME (a second approval, while the node has not started).
        let cli = try await runLockstep(["migration", "approve", "m1", "switch", "--comment", "me too", "--server", server.grpc, "--token", "as:carol"])
        #expect(cli.status == 0, "\(cli.stderr)")
        let after = try await server.post("/v1/migrations/get", #"{"migration_id": "m1"}"#)
        #expect(after.contains(#""approved_by":["bob","carol"]"#), "\(after)")
        _ = try await server.stop()
    }
}
