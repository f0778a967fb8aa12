import Foundation
import LockstepClient
import LockstepWire

// lockstep-leases: Lockstep's lease cycles per second with a compiled gRPC client (LockstepClient on
// grpc-swift-2), the cycle ops/bench/lease_cycles.py runs with Python's grpcio, so ops/bench/compare can
// show whether that client is what limits a row (docs/benchmarks.md): poll (leases the next step) ->
// heartbeat (renews) -> complete (releases), each client on its own service with a 100-node chain plan
// and its own connection. The services are new for each run, as lease_cycles.py explains. Each client is timed from the end of its own set-up; the rate is the sum of the
// clients' rates. (An etcd mode with grpc-swift-2 stubs of ops/bench/protos/etcd_min.proto was tried and
// left out: against etcd 3.4, about half of one client's calls failed "stream unexpectedly closed", so
// its figures meant nothing.)
// Usage: lockstep-leases HOST:PORT CLIENTS SECONDS. Prints one JSON object:
// {"cycles", "errors", "rate", "seconds", "wall_seconds"}, as lease_cycles.py does.

/// One client's count: cycles, errors, and the seconds it was timed for.
struct Count: Sendable {
    var cycles = 0
    var errors = 0
    var seconds = 0.0
}

enum Leases {
    static let chainNodes = 100

    static func plan(_ service: String) -> String {
        let nodes = (0..<chainNodes).map { index in
            "  - { id: s\(index), service: \(service), phase: custom, action: work\(index > 0 ? ", needs: [s\(index - 1)]" : "") }"
        }
        return "name: chain-\(service)\nservices:\n  \(service): { owners: [bench] }\nnodes:\n" + nodes.joined(separator: "\n") + "\n"
    }

    /// A Lockstep client: its own service (`comp<N>-<run>`: the Python client's are `bench<N>-<run>`),
    /// a chain that starts again when it ends, so a poll always finds a step.
    static func lockstep(target: String, index: Int, run: String, for duration: Duration) async throws -> Count {
        try await LockstepClient.connect(to: target) { client in
            let service = "comp\(index)-\(run)"
            _ = try await client.applyPlan(.with { $0.planYaml = plan(service) })
            let prefix = "\(service)-\(Int(Date().timeIntervalSince1970 * 1_000))"
            var run = 0
            _ = try await client.startMigration(.with {
                $0.plan = "chain-\(service)"
                $0.migrationID = "\(prefix)-\(run)"
            })
            var count = Count()
            let began = ContinuousClock.now
            while ContinuousClock.now - began < duration {
                let polled = try await client.poll(.with {
                    $0.service = service
                    $0.agentID = "agent-\(index)"
                    $0.waitMs = 1_000
                })
                guard polled.hasStep else {
                    count.errors += 1  // should not happen: the client's own service always has a next step
                    continue
                }
                let step = polled.step
                do {
                    _ = try await client.heartbeat(.with {
                        $0.leaseID = step.leaseID
                        $0.fencingToken = step.fencingToken
                    })
                    _ = try await client.complete(.with {
                        $0.leaseID = step.leaseID
                        $0.fencingToken = step.fencingToken
                    })
                    count.cycles += 1
                    if step.nodeID == "s\(chainNodes - 1)" {
                        run += 1
                        _ = try await client.startMigration(.with {
                            $0.plan = "chain-\(service)"
                            $0.migrationID = "\(prefix)-\(run)"
                        })
                    }
                } catch {
                    count.errors += 1
                }
            }
            count.seconds = (ContinuousClock.now - began) / .seconds(1)
            return count
        }
    }
}

let arguments = CommandLine.arguments
guard arguments.count == 4, let clients = Int(arguments[2]), (1...1_024).contains(clients),
      let seconds = Double(arguments[3]), seconds > 0, seconds <= 3_600 else {
    FileHandle.standardError.write(Data("usage: lockstep-leases HOST:PORT CLIENTS(1...1024) SECONDS\n".utf8))
    exit(2)
}
let duration = Duration.milliseconds(Int64(seconds * 1_000))
let started = ContinuousClock.now
// This run's services (see `Leases.lockstep`): new for each run, named as lease_cycles.py names them
// (the run's start in tenths of a second, 6 hex digits).
let run = String(format: "%06x", Int(Date().timeIntervalSince1970 * 10) % 0x100_0000)
let counts = try await withThrowingTaskGroup(of: Count.self) { group in
    for index in 0..<clients {
        group.addTask { try await Leases.lockstep(target: arguments[1], index: index, run: run, for: duration) }
    }
    var counts: [Count] = []
    for try await count in group { counts.append(count) }
    return counts
}
let report: [String: Double] = [
    "cycles": Double(counts.reduce(0) { $0 + $1.cycles }),
    "errors": Double(counts.reduce(0) { $0 + $1.errors }),
    "rate": counts.reduce(0) { $0 + ($1.seconds > 0 ? Double($1.cycles) / $1.seconds : 0) },
    "seconds": seconds,
    "wall_seconds": (ContinuousClock.now - started) / .seconds(1),
]
print(String(decoding: try JSONSerialization.data(withJSONObject: report, options: [.sortedKeys]), as: UTF8.self))
