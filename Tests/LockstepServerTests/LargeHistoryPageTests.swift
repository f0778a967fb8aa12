import LockstepClient
import LockstepWire
import SwiftProtobuf
import Testing

/// A page of history is bounded in bytes (16 MiB of records), not by the gRPC transport's 4 MiB default:
/// `LockstepClient` takes what one page can be. Six plans of about 900 KB each are one page of about
/// 5 MB, which the client refused (`message too large`) with the transport's default.
@Suite(.timeLimit(.minutes(3))) struct LargeHistoryPageTests {
    static func plan(_ index: Int) -> String {
        let params = String(repeating: "p", count: 60_000)
        let nodes = (0..<14).map { "  - { id: n\($0), service: orders, phase: custom, action: x, rollback: { action: u }, params: { blob: \(params) } }\n" }
        return "name: big-\(index)\nservices:\n  orders: { owners: [team] }\nnodes:\n" + nodes.joined()
    }

    @Test func aPageOfLargeRecordsReachesTheClient() async throws {
        try await InProcessServerTests.withServer { grpc, _ in
            try await LockstepClient.connect(to: grpc) { client in
                for index in 0..<6 { _ = try await client.applyPlan(.with { $0.planYaml = Self.plan(index) }) }
                let page = try await client.events(.with { $0.pageSize = 1_000 })
                let bytes: [UInt8] = try page.serializedBytes()
                #expect(page.events.count == 6 && bytes.count > 4 << 20, "\(page.events.count) events, \(bytes.count) bytes")
            }
        }
    }
}
