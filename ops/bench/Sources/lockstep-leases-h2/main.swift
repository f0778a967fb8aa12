import Foundation
import LockstepWire
import SwiftProtobuf
import Synchronization

// lockstep-leases-h2: lease cycles per second, Lockstep's and etcd's, with one compiled client for both
// that costs the servers' figures as little as a client can: each client a thread with a blocking socket
// and a libnghttp2 session (H2GRPCConnection), messages from swift-protobuf. ops/bench/compare runs it
// beside lease_cycles.py (Python's grpcio) to show how much of a row that client is (docs/benchmarks.md,
// "The lease client"). The cycles are lease_cycles.py's:
// - lockstep: poll (leases the next step) -> heartbeat (renews) -> complete (releases), each client on its
//   own service (`h2c<N>-<run>`) with a 100-node chain plan that starts again when it ends;
// - etcd: lease grant -> one keep-alive round trip -> txn (put a key under the lease if it does not exist:
//   a lock) -> revoke, each client on its own key. The keep-alive stream carries one request and is then
//   half-closed, so etcd answers and ends it (Python's client cancels it after the answer instead).
// Usage: lockstep-leases-h2 lockstep|etcd IPV4:PORT CLIENTS SECONDS. Prints one JSON object:
// {"cycles", "errors", "rate" (the sum of the clients' rates), "seconds", "wall_seconds",
//  "client_cpu_us_per_cycle" (the client threads' CPU time over their timed loops, per cycle)}.

/// One client's count: cycles, errors, the seconds it was timed for, and its thread's CPU time then.
struct Count: Sendable {
    var cycles = 0
    var errors = 0
    var seconds = 0.0
    var cpuSeconds = 0.0
}

/// This thread's CPU time (user and system), in seconds.
func threadCPUSeconds() -> Double {
    var now = timespec()
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now)
    return Double(now.tv_sec) + Double(now.tv_nsec) / 1_000_000_000
}

extension H2GRPCConnection {
    /// A unary call with swift-protobuf messages.
    func call<Answer: SwiftProtobuf.Message>(_ path: String, _ request: some SwiftProtobuf.Message, as _: Answer.Type) throws -> Answer {
        try Answer(serializedBytes: call(path, try request.serializedBytes()))
    }
}

enum Cycles {
    static let chainNodes = 100
    /// The chain's last node: its completion ends a run of the chain.
    static let lastNode = "s\(chainNodes - 1)"

    static func plan(_ service: String) -> String {
        let nodes = (0..<chainNodes).map { index in
            "  - { id: s\(index), service: \(service), phase: custom, action: work\(index > 0 ? ", needs: [s\(index - 1)]" : "") }"
        }
        return "name: chain-\(service)\nservices:\n  \(service): { owners: [bench] }\nnodes:\n" + nodes.joined(separator: "\n") + "\n"
    }

    /// Runs `cycle` on one connection for `duration`, timed from the end of `setUp`; a failed cycle is
    /// counted and the connection made again (a call that failed may have left it mid-stream).
    static func run(target: String, for duration: Duration, setUp: (H2GRPCConnection) throws -> Void,
                    cycle: (H2GRPCConnection) throws -> Bool) throws -> Count {
        var connection = try H2GRPCConnection(target: target)
        try setUp(connection)
        var count = Count()
        let cpu = threadCPUSeconds()
        let began = ContinuousClock.now
        while ContinuousClock.now - began < duration {
            do {
                if try cycle(connection) { count.cycles += 1 } else { count.errors += 1 }
            } catch {
                count.errors += 1
                if count.errors == 1 { FileHandle.standardError.write(Data("lockstep-leases-h2: \(error)\n".utf8)) }
                connection = try H2GRPCConnection(target: target)
            }
        }
        count.seconds = (ContinuousClock.now - began) / .seconds(1)
        count.cpuSeconds = threadCPUSeconds() - cpu
        return count
    }

    static func lockstep(target: String, index: Int, run: String, for duration: Duration) throws -> Count {
        let service = "h2c\(index)-\(run)"
        let prefix = "\(service)-\(Int(Date().timeIntervalSince1970 * 1_000))"
        var chain = 0
        func start(_ connection: H2GRPCConnection) throws {
            _ = try connection.call("/lockstep.v1.MigrationService/StartMigration", Lockstep_V1_StartMigrationRequest.with {
                $0.plan = "chain-\(service)"
                $0.migrationID = "\(prefix)-\(chain)"
            }, as: Lockstep_V1_StartMigrationResponse.self)
        }
        let poll = Lockstep_V1_PollRequest.with {
            $0.service = service
            $0.agentID = "agent-\(index)"
            $0.waitMs = 1_000
        }
        return try Cycles.run(target: target, for: duration, setUp: { connection in
            _ = try connection.call("/lockstep.v1.MigrationService/ApplyPlan", Lockstep_V1_ApplyPlanRequest.with { $0.planYaml = plan(service) },
                                    as: Lockstep_V1_ApplyPlanResponse.self)
            try start(connection)
        }, cycle: { connection in
            let polled = try connection.call("/lockstep.v1.AgentService/Poll", poll, as: Lockstep_V1_PollResponse.self)
            guard polled.hasStep else {
                // Should not happen: the client's own service always has a next step. After a failed cycle
                // (the last node's Complete or the next StartMigration lost), a new run of the chain gives
                // it one again, so one failure does not spoil the rest of the client's run.
                chain += 1
                try start(connection)
                return false
            }
            let step = polled.step
            _ = try connection.call("/lockstep.v1.AgentService/Heartbeat", Lockstep_V1_HeartbeatRequest.with {
                $0.leaseID = step.leaseID
                $0.fencingToken = step.fencingToken
            }, as: Lockstep_V1_HeartbeatResponse.self)
            _ = try connection.call("/lockstep.v1.AgentService/Complete", Lockstep_V1_CompleteRequest.with {
                $0.leaseID = step.leaseID
                $0.fencingToken = step.fencingToken
            }, as: Lockstep_V1_CompleteResponse.self)
            if step.nodeID == lastNode {
                // The chain is done: start the next run of it now, so the next poll finds a step.
                chain += 1
                try start(connection)
            }
            return true
        })
    }

    static func etcd(target: String, index: Int, for duration: Duration) throws -> Count {
        let key = Data("/bench/lock/h2c\(index)".utf8)
        return try Cycles.run(target: target, for: duration, setUp: { _ in }, cycle: { connection in
            let granted = try connection.call("/etcdserverpb.Lease/LeaseGrant", Etcdserverpb_LeaseGrantRequest.with { $0.ttl = 30 },
                                              as: Etcdserverpb_LeaseGrantResponse.self)
            let renewed = try connection.call("/etcdserverpb.Lease/LeaseKeepAlive", Etcdserverpb_LeaseKeepAliveRequest.with { $0.id = granted.id },
                                              as: Etcdserverpb_LeaseKeepAliveResponse.self)
            let claimed = try connection.call("/etcdserverpb.KV/Txn", Etcdserverpb_TxnRequest.with {
                $0.compare = [.with {
                    $0.result = .equal
                    $0.target = .create
                    $0.key = key
                    $0.createRevision = 0
                }]
                $0.success = [.with { $0.requestPut = .with {
                    $0.key = key
                    $0.value = Data("held".utf8)
                    $0.lease = granted.id
                } }]
            }, as: Etcdserverpb_TxnResponse.self)
            _ = try connection.call("/etcdserverpb.Lease/LeaseRevoke", Etcdserverpb_LeaseRevokeRequest.with { $0.id = granted.id },
                                    as: Etcdserverpb_LeaseRevokeResponse.self)
            return renewed.ttl > 0 && claimed.succeeded
        })
    }
}

let arguments = CommandLine.arguments
guard arguments.count == 5, ["lockstep", "etcd"].contains(arguments[1]), let clients = Int(arguments[3]), (1...1_024).contains(clients),
      let seconds = Double(arguments[4]), seconds > 0, seconds <= 3_600 else {
    FileHandle.standardError.write(Data("usage: lockstep-leases-h2 lockstep|etcd IPV4:PORT CLIENTS(1...1024) SECONDS\n".utf8))
    exit(2)
}
/// What the client threads report, each once.
final class Outcomes: Sendable {
    let list = Mutex<[Result<Count, H2CallError>]>([])
}

/// Runs `clients` clients, each on a thread of its own, and returns their counts, or the first failure.
func runClients(kind: String, target: String, clients: Int, for duration: Duration) throws(H2CallError) -> [Count] {
    // This run's services (see `Cycles.lockstep`): new for each run, named as lease_cycles.py names them
    // (the run's start in tenths of a second, 6 hex digits).
    let run = String(format: "%06x", Int(Date().timeIntervalSince1970 * 10) % 0x100_0000)
    let outcomes = Outcomes()
    let finished = DispatchSemaphore(value: 0)
    for index in 0..<clients {
        Thread.detachNewThread {
            let outcome: Result<Count, H2CallError>
            do {
                outcome = .success(kind == "lockstep" ? try Cycles.lockstep(target: target, index: index, run: run, for: duration)
                                                      : try Cycles.etcd(target: target, index: index, for: duration))
            } catch {
                outcome = .failure(H2CallError(description: "client \(index): \(error)"))
            }
            outcomes.list.withLock { $0.append(outcome) }
            finished.signal()
        }
    }
    for _ in 0..<clients { finished.wait() }
    return try outcomes.list.withLock { $0 }.map { outcome throws(H2CallError) in try outcome.get() }
}

let started = ContinuousClock.now
let all: [Count]
do {
    all = try runClients(kind: arguments[1], target: arguments[2], clients: clients, for: .milliseconds(Int64(seconds * 1_000)))
} catch {
    FileHandle.standardError.write(Data("lockstep-leases-h2: \(error)\n".utf8))
    exit(1)
}
let cycles = all.reduce(0) { $0 + $1.cycles }
let report: [String: Double] = [
    "cycles": Double(cycles),
    "errors": Double(all.reduce(0) { $0 + $1.errors }),
    "rate": all.reduce(0) { $0 + ($1.seconds > 0 ? Double($1.cycles) / $1.seconds : 0) },
    "seconds": seconds,
    "wall_seconds": (ContinuousClock.now - started) / .seconds(1),
    "client_cpu_us_per_cycle": cycles > 0 ? all.reduce(0) { $0 + $1.cpuSeconds } * 1_000_000 / Double(cycles) : 0,
]
print(String(decoding: try JSONSerialization.data(withJSONObject: report, options: [.sortedKeys]), as: UTF8.self))
