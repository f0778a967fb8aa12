import Foundation
import LockstepClient
import LockstepServer
import LockstepTestSupport
import LockstepWire
import Synchronization
import Testing
import LockstepService

/// The Swift client library against a real `lockstep serve` over gRPC: a whole migration run through
/// it, as operator, agent, approver and reviewer, with errors arriving as the server's codes.
@Suite(.serialized) struct ClientTests {
    @Test func aWholeMigrationRunsThroughTheSwiftClient() async throws {
        let tokens = ["alice": "operator-token-iiiiiiiiiiiiiiii", "bob": "approver-token-jjjjjjjjjjjjjjjj", "agent": "agent-token-kkkkkkkkkkkkkkkkkk"]
        let config = temporaryDirectory() + "/auth.json"
        try """
            {"principals": [
              {"name": "alice", "roles": ["operator"], "token_sha256": "\(AuthConfig.hash(tokens["alice"]!))"},
              {"name": "bob", "roles": ["approver"], "owner_groups": ["ledger-team"], "token_sha256": "\(AuthConfig.hash(tokens["bob"]!))"},
              {"name": "agent", "roles": ["agent"], "services": ["orders", "ledger"], "token_sha256": "\(AuthConfig.hash(tokens["agent"]!))"}
            ]}
            """.write(toFile: config, atomically: true, encoding: .utf8)
        let server = try await ServerProcess(["--config", config])

        try await LockstepClient.connect(to: server.grpc, token: tokens["alice"]) { alice in
            let applied = try await alice.applyPlan(.with { $0.planYaml = OperatorAPITests.plan })
            #expect(applied.name == "gated" && applied.version == 1 && applied.changed)
            #expect(try await alice.startMigration(.with { $0.plan = "gated"; $0.migrationID = "c1" }).migrationID == "c1")
            // Errors carry the server's stable code and sentence.
            await #expect(throws: LockstepClientError(code: "migration_already_exists", message: "migration c1 already exists; choose another id")) {
                try await alice.startMigration(.with { $0.plan = "gated"; $0.migrationID = "c1" })
            }
        }
        // The agent runs both steps; the approver opens the gate in between.
        let events = Counter()
        let watcher = Task {
            try await LockstepClient.connect(to: server.grpc, token: tokens["alice"]) { alice in
                try await alice.watch(.with { $0.migrationID = "c1" }) { _ in events.increment() }
            }
        }
        try await LockstepClient.connect(to: server.grpc, token: tokens["agent"]) { agent in
            for node in ["expand", "switch"] {
                if node == "switch" {
                    try await LockstepClient.connect(to: server.grpc, token: tokens["bob"]) { bob in
                        _ = try await bob.approve(.with { $0.migrationID = "c1"; $0.nodeID = "switch"; $0.comment = "ok" })
                    }
                }
                let service = node == "expand" ? "orders" : "ledger"
                let step = try await agent.poll(.with { $0.service = service; $0.agentID = "swift-agent"; $0.waitMs = 10_000 }).step
                #expect(step.nodeID == node, "\(step)")
                #expect(try await agent.heartbeat(.with { $0.leaseID = step.leaseID; $0.fencingToken = step.fencingToken }).ttlMs == 30_000)
                _ = try await agent.complete(.with { $0.leaseID = step.leaseID; $0.fencingToken = step.fencingToken })
                await #expect(throws: LockstepClientError.self) {
                    try await agent.complete(.with { $0.leaseID = step.leaseID; $0.fencingToken = step.fencingToken + 1 })
                }
            }
        }
        // The watch ends by itself when the migration settles.
        try await value(of: watcher, within: .seconds(120), "the watch of c1")
        #expect(events.value >= 10)
        try await LockstepClient.connect(to: server.grpc, token: tokens["alice"]) { alice in
            #expect(try await alice.migration(.with { $0.migrationID = "c1" }).status == .succeeded)
            let verified = try await alice.verify()
            #expect(verified.ok && verified.events > 10)
            #expect(try await alice.stage(.with { $0.migrationID = "c1" }).status == .succeeded)
        }
        _ = try await server.stop()
    }

    @Test func anUnreachableServerIsAClearError() async throws {
        await #expect(throws: LockstepClientError.self) {
            try await LockstepClient.connect(to: "127.0.0.1:1") { client in
                _ = try await client.verify()
            }
        }
    }
}

final class Counter: Sendable {
    private let count = Mutex(0)
    func increment() { count.withLock { $0 += 1 } }
    var value: Int { count.withLock { $0 } }
}
