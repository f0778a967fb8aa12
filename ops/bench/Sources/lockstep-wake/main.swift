import Foundation
import LockstepClient
import LockstepWire
import Synchronization

// lockstep-wake: wake-up latency with a compiled client (ops/bench/api runs it; docs/benchmarks.md).
// AGENTS agents park gRPC polls on service `wake`; WAKES times, one migration of a one-node plan on
// that service is started once the previous one's step is completed (so the service is free and the
// append that readies the step is the start's own), and one parked poll is answered with its step (the
// agent completes it and parks again). Measured on the monotonic clock, per migration:
//   from the start sent      to the poll answered: an upper bound of "append → answered" (it includes
//                                                   the start's own request and appends);
//   from the start answered  to the poll answered: a lower bound (the start is answered after the append
//                                                   that readies the step, and the poll may be answered
//                                                   first: then 0).
// Usage: lockstep-wake HOST:PORT [AGENTS] [WAKES]. Prints one JSON object.

struct Times {
    var sent: [String: ContinuousClock.Instant] = [:]
    var started: [String: ContinuousClock.Instant] = [:]
    var answered: [String: ContinuousClock.Instant] = [:]
    /// The agent's completion answered: the migration's service is free again.
    var completed: Set<String> = []
}

/// What the agents and the operator share (a class: the locks cannot be copied into tasks).
final class Shared: Sendable {
    let mutex = Mutex(Times())
    let flag = Atomic<Bool>(false)
    func withLock<R>(_ body: (inout Times) -> R) -> R { mutex.withLock { body(&$0) } }
    var stopped: Bool { flag.load(ordering: .relaxed) }
    func stop() { flag.store(true, ordering: .relaxed) }
}

enum Wake {
    static func milliseconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) * 1_000 + Double(duration.components.attoseconds) / 1e15
    }

    static func quantile(_ sorted: [Double], _ q: Double) -> Double {
        sorted.isEmpty ? .nan : sorted[min(sorted.count - 1, Int(Double(sorted.count) * q))]
    }

    static func run(target: String, agentCount: Int, wakes: Int) async throws -> [String: Double] {
        let shared = Shared()
        let times = shared
        try await LockstepClient.connect(to: target) { agents in
            try await LockstepClient.connect(to: target) { operators in
                let plan = "name: wake\nservices:\n  wake: { owners: [o] }\nnodes:\n  - id: step\n    service: wake\n    phase: custom\n    action: w\n"
                _ = try await operators.applyPlan(.with { $0.planYaml = plan })
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for index in 0..<agentCount {
                        group.addTask {
                            while !shared.stopped {
                                let answer = try await agents.poll(.with {
                                    $0.service = "wake"
                                    $0.agentID = "agent-\(index)"
                                    $0.waitMs = 2_000
                                })
                                guard answer.hasStep else { continue }
                                let now = ContinuousClock.now
                                times.withLock { $0.answered[answer.step.migrationID] = now }
                                _ = try await agents.complete(.with {
                                    $0.leaseID = answer.step.leaseID
                                    $0.fencingToken = answer.step.fencingToken
                                })
                                _ = times.withLock { $0.completed.insert(answer.step.migrationID) }
                            }
                        }
                    }
                    // Every agent parked before the first start.
                    try await Task.sleep(for: .seconds(1))
                    for index in 0..<wakes {
                        let migration = "w\(index)"
                        times.withLock { $0.sent[migration] = .now }
                        _ = try await operators.startMigration(.with {
                            $0.plan = "wake"
                            $0.migrationID = migration
                        })
                        times.withLock { $0.started[migration] = .now }
                        let deadline = ContinuousClock.now + .seconds(30)
                        // Until the step is completed, not only leased: the next start must find the
                        // service free, so the append that readies its step is the start's own. (Started
                        // while this one still completes, it waits for this one's completion and release,
                        // and the figure measured that chain of appends, not a wake-up.)
                        while !times.withLock({ $0.completed.contains(migration) }) {
                            guard ContinuousClock.now < deadline else {
                                throw LockstepClientError(code: "timeout", message: "\(migration) was never answered")
                            }
                            try await Task.sleep(for: .microseconds(200))
                        }
                    }
                    shared.stop()
                    try await group.waitForAll()
                }
            }
        }
        let measured = times.withLock { $0 }
        var upper: [Double] = []
        var lower: [Double] = []
        for (migration, answered) in measured.answered {
            guard let sent = measured.sent[migration], let started = measured.started[migration] else { continue }
            upper.append(milliseconds(answered - sent))
            lower.append(max(0, milliseconds(answered - started)))
        }
        upper.sort()
        lower.sort()
        return [
            "wakes": Double(upper.count),
            "from_start_sent_p50_ms": quantile(upper, 0.5), "from_start_sent_p99_ms": quantile(upper, 0.99),
            "from_start_answered_p50_ms": quantile(lower, 0.5), "from_start_answered_p99_ms": quantile(lower, 0.99),
        ]
    }
}

let arguments = CommandLine.arguments
guard arguments.count >= 2 else {
    FileHandle.standardError.write(Data("usage: lockstep-wake HOST:PORT [AGENTS] [WAKES]\n".utf8))
    exit(2)
}
let report = try await Wake.run(target: arguments[1], agentCount: arguments.count > 2 ? max(1, Int(arguments[2]) ?? 32) : 32,
                                wakes: arguments.count > 3 ? max(1, Int(arguments[3]) ?? 300) : 300)
print(String(decoding: try JSONSerialization.data(withJSONObject: report, options: [.sortedKeys]), as: UTF8.self))
