import ArgumentParser
import Foundation
import LockstepCore
import LockstepEngine
import LockstepStore
import LockstepWire

struct Demo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a three-service migration end to end on a fresh durable log, then verify and replay it.")

    @Option(help: "Data directory to use (default: a new temporary directory).")
    var data: String?

    func run() async throws {
        let directory = data ?? FileManager.default.temporaryDirectory
            .appendingPathComponent("lockstep-demo-\(ProcessInfo.processInfo.processIdentifier)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let options = try DataOptions.parse(["--data", directory])
        let log = try SQLiteEventLog(path: options.databasePath)
        let coordinator = try await Coordinator.open(log: log)
        let applied = try await coordinator.applyPlan(ExamplePlans.ledgerSplit, context: CommandContext(actor: Actor(kind: "user", id: "alice"), triggeredBy: .user),
                                                      now: WallClock.now())
        let plan = await coordinator.state.plan(ExamplePlans.ledgerSplit.name, version: applied.version)!
        let migration = MigrationID("ledger-split-\(await coordinator.state.migrations.count + 1)")
        let operator_ = CommandContext(actor: Actor(kind: "user", id: "alice"), triggeredBy: .user, correlationID: migration.rawValue)
        let clockStart = WallClock.now()

        print("Lockstep demo: data in \(directory)")
        if applied.changed { print("  (plan_applied: \(plan.name)@\(plan.version) registered before the migration starts)") }
        print("plan \(plan.name)@\(plan.version) (content hash \(plan.contentHash.prefix(16))…) across payments, orders, ledger\n")

        var elapsedMillis: Int64 = 0
        var printed = await coordinator.state.lastSequence
        func run(_ command: MigrationCommand, as context: CommandContext) async throws {
            if case .leaseStep = command { elapsedMillis += 60_000 }
            // The demo's agents finish instantly; step the clock past any retry backoff so the retry can start.
            let now = max(WallClock.now(), clockStart.adding(milliseconds: elapsedMillis))
            _ = try await coordinator.execute(command, migration: migration, context: context, now: now)
            // Everything the log got: the command's events and the grants the lease queue made after them.
            for stored in try await coordinator.log.read(after: printed, limit: 1_000) {
                printed = stored.sequence
                guard case .migration(let recorded) = try EventRecordCodec.decodeAny(stored.record) else { continue }
                let position = "#\(stored.sequence)".padding(toLength: 5, withPad: " ", startingAt: 0)
                print("  \(position) \(recorded.event.typeName.padding(toLength: 25, withPad: " ", startingAt: 0)) \(recorded.event.summary)")
            }
        }

        try await run(.start(id: migration, plan: plan, startedBy: "alice"), as: operator_)
        var failedOnce = false
        // Bounded: every round settles at least one node or gate, so the plan's node count bounds the rounds.
        for _ in 0..<(plan.nodes.count * 4) {
            let state = await coordinator.state.migrations[migration]
            guard let state, state.status == .running else { break }
            // Gates: alice started the migration, so a second owner approves.
            for node in state.nodes where state.displayStatus(node.id) == "awaiting_approval" {
                let spec = plan.node(node.id)!
                let approver = CommandContext(actor: Actor(kind: "user", id: "bob"), triggeredBy: .user, correlationID: migration.rawValue)
                try await run(.approve(node: node.id, approver: "bob", groups: plan.approverGroups(for: spec),
                                       comment: "checked the dashboards"), as: approver)
            }
            for node in state.readyNodes {
                let spec = plan.node(node)!
                let agentID = "\(spec.services[0])-agent"
                let agent = CommandContext(actor: Actor(kind: "agent", id: agentID), triggeredBy: .agent, correlationID: migration.rawValue)
                try await run(.leaseStep(node: node, agent: agentID, ttlMillis: 30_000), as: agent)
                let token = await coordinator.state.migrations[migration]!.node(node)!.lastToken
                if spec.phase == .backfill && !failedOnce {
                    failedOnce = true
                    try await run(.failStep(node: node, token: token, reason: "shard 3 timed out", retryable: true), as: agent)
                } else {
                    try await run(.completeStep(node: node, token: token), as: agent)
                }
            }
        }

        let report = try await HistoryVerifier.verify(log)
        let replayed = try await History.replay(log)
        let live = await coordinator.digest
        print("\nhistory verified: \(report.events) events, head hash \(report.head.chainHash.hex)")
        print("state digest live     \(live.hex)")
        print("state digest replayed \(replayed.digest.hex) \(replayed.digest == live ? "(identical)" : "(DIFFERENT)")")
        let binary = URL(fileURLWithPath: CommandLine.arguments[0]).standardizedFileURL.path
        print("""

            Try next:
              \(binary) history verify --data \(directory)
              \(binary) history replay --data \(directory) --at 5
              \(binary) history export --data \(directory)
            """)
        if replayed.digest != live { throw ExitCode(1) }
    }
}
