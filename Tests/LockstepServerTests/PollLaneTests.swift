import Foundation
import LockstepClient
import LockstepService
import LockstepTestSupport
import LockstepWire
import Synchronization
import Testing

/// `PollLane`: at most its limit of pieces of poll work run at once; the rest wait as closures, in
/// arrival order, at most `waitingMax` of them (past it, refused at once); work whose connection takes
/// none is dropped and its place goes on.
@Suite struct PollLaneTests {
    @Test func atMostTheLimitRunAtOnceTheRestWaitInOrderAndAllRun() async throws {
        let lane = PollLane(limit: 2)
        let log = Mutex<(running: Int, most: Int, order: [Int])>((0, 0, []))
        let (done, doneSink) = AsyncStream.makeStream(of: Int.self)
        // Should the lane lose a piece of work, the stream ends (and the counts below fail) instead of
        // waiting for ever.
        let watchdog = Task {
            try await Task.sleep(for: .seconds(120))
            doneSink.finish()
        }
        defer { watchdog.cancel() }
        // Each connection runs what it is handed in a task of its own, as the connection's group does.
        let deliver: @Sendable (@escaping @Sendable () async -> Void) -> Bool = { work in
            Task { await work() }
            return true
        }
        let released = Mutex(0)
        for index in 0..<5 {
            lane.submit({
                log.withLock { $0.running += 1; $0.most = max($0.most, $0.running); $0.order.append(index) }
                // The first two hold their places until released.
                if index < 2 { while released.withLock({ $0 }) <= index { try? await Task.sleep(for: .milliseconds(1)) } }
                log.withLock { $0.running -= 1 }
                doneSink.yield(index)
            }, deliver: deliver, dropped: { Issue.record("nothing is dropped here") }, overflowed: { Issue.record("nothing overflows here") })
        }
        try await eventually("two pieces of work running", seconds: 120, every: nil) { lane.runningCount >= 2 }
        #expect(lane.waitingCount == 3)
        // Nothing waiting starts while both places are held.
        try await Task.sleep(for: .milliseconds(50))
        #expect(log.withLock { $0.order.count } == 2 && lane.waitingCount == 3)
        // Free one place at a time: two places freed together hand work to two tasks that race to start,
        // so only the hand-over order is the lane's promise, not which task the scheduler runs first.
        // With the first place freed and the second still held, the waiting ones run through that place
        // one after another, in arrival order.
        released.withLock { $0 = 1 }
        var finished: [Int] = []
        for await index in done {
            finished.append(index)
            if finished.count == 4 { break }
        }
        #expect(finished == [0, 2, 3, 4])
        #expect(Array(log.withLock { $0.order }.dropFirst(2)) == [2, 3, 4], "the waiting ones start in arrival order")
        // The last one gives its place back just after it says it is done.
        try await eventually("one piece of work running", seconds: 120, every: nil) { lane.runningCount <= 1 }
        #expect(lane.waitingCount == 0)
        released.withLock { $0 = 2 }
        for await index in done {
            finished.append(index)
            if finished.count == 5 { break }
        }
        #expect(finished.count == 5)
        #expect(log.withLock { $0.most } <= 2)
        try await eventually("no work running", seconds: 120, every: nil) { lane.runningCount == 0 }
        #expect(lane.waitingCount == 0)
    }

    @Test func workWhoseConnectionTakesNoneIsDroppedAndItsPlaceGoesOn() async throws {
        let lane = PollLane(limit: 1)
        let dropped = Mutex(0)
        let ran = Mutex(0)
        let closed: @Sendable (@escaping @Sendable () async -> Void) -> Bool = { _ in false }
        let open: @Sendable (@escaping @Sendable () async -> Void) -> Bool = { work in
            Task { await work() }
            return true
        }
        lane.submit({ ran.withLock { $0 += 1 } }, deliver: closed, dropped: { dropped.withLock { $0 += 1 } }, overflowed: {})
        lane.submit({ ran.withLock { $0 += 1 } }, deliver: open, dropped: { dropped.withLock { $0 += 1 } }, overflowed: {})
        try await eventually("the open connection's work ran", seconds: 120, every: nil) { ran.withLock({ $0 }) >= 1 && lane.runningCount == 0 }
        #expect(dropped.withLock { $0 } == 1 && ran.withLock { $0 } == 1 && lane.waitingCount == 0)
    }

    @Test func pastItsWaitingLimitWorkIsRefusedAtOnceAndNoneOfItRuns() async throws {
        let lane = PollLane(limit: 1, waitingMax: 2)
        let held = Mutex(true)
        let ran = Mutex<[Int]>([])
        let overflowed = Mutex<[Int]>([])
        let deliver: @Sendable (@escaping @Sendable () async -> Void) -> Bool = { work in
            Task { await work() }
            return true
        }
        for index in 0..<5 {
            lane.submit({
                // The first holds the one place until released.
                while index == 0, held.withLock({ $0 }) { try? await Task.sleep(for: .milliseconds(1)) }
                ran.withLock { $0.append(index) }
            }, deliver: deliver, dropped: { Issue.record("nothing is dropped here") }, overflowed: { overflowed.withLock { $0.append(index) } })
        }
        // One running, two waiting, two refused at once (before anything ran).
        #expect(lane.runningCount == 1 && lane.waitingCount == 2)
        #expect(overflowed.withLock { $0 } == [3, 4])
        held.withLock { $0 = false }
        try await eventually("the admitted work ran", seconds: 120, every: nil) { ran.withLock { $0.count } == 3 && lane.runningCount == 0 }
        #expect(ran.withLock { $0 } == [0, 1, 2])
        // With room again, work is admitted again.
        lane.submit({ ran.withLock { $0.append(5) } }, deliver: deliver, dropped: {}, overflowed: { overflowed.withLock { $0.append(5) } })
        try await eventually("the next work ran", seconds: 120, every: nil) { ran.withLock { $0.count } == 4 }
        #expect(overflowed.withLock { $0 } == [3, 4])
    }
}

/// The lane's overflow through the transports, on a real server whose lane is one place with no line:
/// a burst of polls read together (one write on one connection), over JSON on HTTP/2 and over gRPC, is
/// answered whole: the first poll leases the step; every other one that finds the place taken is
/// answered at once with when to retry (none left unanswered, none reset), and the overflows are counted.
@Suite(.enabled(if: pythonHas("h2"), "needs python3 with h2 (ops/test installs it)"))
struct PollLaneOverflowEndToEndTests {
    static let plan = """
        name: burst
        services:
          orders: { owners: [orders-team] }
        nodes:
          - { id: expand, service: orders, phase: expand, action: add-column }
        """

    struct Seen: Decodable {
        let answered: Int
        let steps: Int
        let retry_later: Int
        let other: [String]
    }

    @Test(arguments: ["json", "grpc"])
    func aBurstPastTheLanesLineIsAnsweredWholeWithRetries(_ mode: String) async throws {
        try await InProcessServerTests.withServer({ options in
            options.pollLane = (running: 1, waitingMax: 0)
        }) { grpc, http in
            try await LockstepClient.connect(to: grpc) { lockstep in
                _ = try await lockstep.applyPlan(.with { $0.planYaml = Self.plan })
                _ = try await lockstep.startMigration(.with { $0.plan = "burst"; $0.migrationID = "m1" })
            }
            let port = mode == "json" ? String(http.dropFirst("http://".count)) : grpc
            let run = try await ChildProcess("/usr/bin/env", ["python3", JSONOnEngineTests.agents + "/h2_poll_burst.py", port, "orders", "16", mode])
                .wait(seconds: 60)
            let seen = try JSONDecoder().decode(Seen.self, from: Data(run.stdout.utf8))
            #expect(seen.answered == 16 && seen.steps == 1 && seen.retry_later == 15 && seen.other.isEmpty, "\(run.stdout) \(run.stderr)")
            #expect(try await InProcessServerTests.metric(http, "lockstep_poll_lane_overflows_total") >= 1)
            // The step went to one poll of the burst, once.
            let migration = try await LockstepClient.connect(to: grpc) { try await $0.migration(.with { $0.migrationID = "m1" }) }
            #expect(migration.nodes.first?.lease.agentID.hasPrefix("burst-") == true && migration.nodes.first?.attempts == 1, "\(migration)")
        }
    }
}

/// A writer whose leadership lease has run out by its keeper's count (frozen, then thawed after a
/// takeover) answers heartbeats `not_writer` instead of from memory: an agent is not told its step's
/// lease lives by a coordinator that no longer decides it. (The keeper's count is given here.)
@Suite(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/curl"), "needs curl (ops/test installs it)"))
struct LeadershipHeartbeatTests {
    @Test func aHeartbeatToAWriterWhoseLeaseRanOutIsRefused() async throws {
        let held = Mutex(true)
        try await InProcessServerTests.withServer({ options in
            options.leadershipHeld = { held.withLock { $0 } }
        }) { grpc, http in
            let step = try await LockstepClient.connect(to: grpc) { lockstep in
                _ = try await lockstep.applyPlan(.with { $0.planYaml = PollLaneOverflowEndToEndTests.plan })
                _ = try await lockstep.startMigration(.with { $0.plan = "burst"; $0.migrationID = "m1" })
                return try await lockstep.poll(.with { $0.service = "orders"; $0.agentID = "a1"; $0.waitMs = 5_000 }).step
            }
            let beat = Lockstep_V1_HeartbeatRequest.with { $0.leaseID = step.leaseID; $0.fencingToken = step.fencingToken }
            _ = try await LockstepClient.connect(to: grpc) { try await $0.heartbeat(beat) }
            held.withLock { $0 = false }
            do {
                _ = try await LockstepClient.connect(to: grpc) { try await $0.heartbeat(beat) }
                Issue.record("a writer whose lease ran out answered a heartbeat")
            } catch let error as LockstepClientError {
                #expect(error.code == "not_writer", "\(error)")
            }
            let json = try await ChildProcess("/usr/bin/curl", ["-sS", "-X", "POST", "-H", "content-type: application/json", "-H", "host: localhost",
                                                                "--data", #"{"lease_id": "\#(step.leaseID)", "fencing_token": "\#(step.fencingToken)"}"#,
                                                                "-w", "\n%{http_code}", http + "/v1/agent/heartbeat"]).wait(seconds: 30).stdout
            #expect(json.hasSuffix("\n503") && json.contains("not_writer"), "\(json)")
        }
    }
}
