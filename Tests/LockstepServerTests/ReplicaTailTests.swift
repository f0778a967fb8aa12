import Foundation
import LockstepCore
import LockstepEngine
@testable import LockstepServer
import LockstepTestSupport
import Logging
import Synchronization
import Testing

/// A replica's follower on a real PostgreSQL cluster: notifications are a hint, so a replica that never
/// hears one still follows the writer by reading the log every `catchUpMillis`.
@Suite(.serialized, .dropsPostgresDatabases) struct ReplicaTailTests {
    @Test func aReplicaWhoseNotificationsNeverArriveCatchesUpByReadingTheLog() async throws {
        let database = try await TestPostgres.shared.makeDatabase()
        let log = try await TestPostgres.shared.openLog(database)
        let writer = try await Coordinator.open(log: log)
        let replica = try await Coordinator.open(log: try await TestPostgres.shared.openLog(database))
        // The follower LISTENs through a client pointed at a port nothing listens on: no notification
        // ever arrives, and it says so once; its reads go through the replica's own log.
        let deaf = await TestPostgres.shared.client(database, port: try TestPostgres.freePort())
        let reported = Mutex<(applied: UInt64, failing: String?)>((0, nil))
        let tail = ReplicaTail(coordinator: replica, client: deaf, catchUpMillis: 100, logger: Logger(label: "replica")) { applied, failing in
            reported.withLock { $0 = (applied, failing) }
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await tail.run() }
            defer { group.cancelAll() }
            let context = CommandContext(actor: Actor(kind: "user", id: "test"), triggeredBy: .user)
            for index in 0..<3 {
                _ = try await writer.applyPlan(ExamplePlans.chain(length: 2, service: "s\(index)", name: "chain-\(index)"), context: context, now: WallClock.now())
                let head = try await log.head().sequence
                try await eventually("the replica applied through sequence \(head) without a notification", seconds: 10) {
                    reported.withLock { $0.applied } == head
                }
            }
            #expect(reported.withLock { $0.failing } == nil)
            #expect(await replica.digest == writer.digest)
        }
    }
}
