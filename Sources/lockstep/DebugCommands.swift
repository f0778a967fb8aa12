import ArgumentParser
import Foundation
import LockstepCore
import LockstepEngine
import LockstepService
import LockstepPostgres
import LockstepStore
import Synchronization

struct DebugCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "debug",
        abstract: "Tools for testing Lockstep itself.",
        shouldDisplay: false,
        subcommands: [AppendLoad.self, Operations.self]
    )
}

extension DebugCommand {
    /// Prints the API's operation table (`APIOperation.all`), one JSON object per line: what the scripts
    /// that check or probe every route read (ops/check-openapi, Tests/LockstepServerTests/Agents/bad_input.py).
    struct Operations: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "operations", abstract: "Print the API's operation table as JSON lines.")

        func run() {
            print(APIOperation.jsonLines, terminator: "")
        }
    }
}

extension DebugCommand {
    /// Drives real migrations through the coordinator from several concurrent writers and prints one
    /// `ack FIRST LAST STREAM VERSION` line per durable append, flushed at once: the crash-durability
    /// test kills this process at random moments and checks every acknowledged event survived.
    struct AppendLoad: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "append-load")

        @OptionGroup var storage: StoreOptions
        @Option(help: "Concurrent writers (1...256).") var writers: Int = 8
        @Flag(help: "Retry a command refused with storage_unavailable (the database restarting) instead of ending the writer.")
        var retryUnavailable = false
        @Option(help: "Stop after this many seconds (1...3600).") var seconds: Int = 10
        @Option(help: "A tag that makes this run's migration ids unique.") var tag: String = "run"
        @Option(help: "Nodes per migration (1...100).") var nodes: Int = 4
        @Flag(help: .hidden) var unsafeSkipCommitSyncForTesting = false

        func validate() throws {
            guard (1...256).contains(writers) else { throw ValidationError("--writers must be 1...256") }
            guard (1...3600).contains(seconds) else { throw ValidationError("--seconds must be 1...3600") }
            guard (1...100).contains(nodes) else { throw ValidationError("--nodes must be 1...100") }
        }

        func run() async throws {
            guard let location = try storage.location(environment: false) else { throw ValidationError("name the log: --data DIR or --store postgres://…") }
            switch location {
            case .sqlite(let directory):
                try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
                let path = location.databasePath!
                // The control run: create the schema durably first, then reopen without commit syncs.
                if unsafeSkipCommitSyncForTesting { _ = try SQLiteEventLog(path: path) }
                var options = SQLiteEventLog.Options()
                options.unsafeSkipCommitSyncForTesting = unsafeSkipCommitSyncForTesting
                // The control run must never sync, or a kill just after a checkpoint would lose nothing.
                if unsafeSkipCommitSyncForTesting { options.checkpointIntervalCommits = .max }
                try await load(try SQLiteEventLog(path: path, options: options))
            case .postgres(let address, let password):
                try await PostgresEventLog.withLog(address.configuration(password: password), create: true) { try await load($0) }
            }
        }

        func load(_ log: any EventLog) async throws {
            let coordinator = try await Coordinator.open(log: log, snapshotIntervalEvents: 500)
            let deadline = ContinuousClock.now + .seconds(seconds)
            let tag = self.tag
            // One service (and plan) per writer and run: writers never wait for each other's service
            // leases, nor for a migration a killed earlier run left holding one.
            var plans: [PlanSnapshot] = []
            for writer in 0..<writers {
                let chain = ExamplePlans.chain(length: nodes, service: "load-\(tag)-\(writer)", name: "chain-\(nodes)-\(tag)-\(writer)")
                let applied = try await coordinator.applyPlan(chain, context: CommandContext(actor: Actor(kind: "user", id: "load"), triggeredBy: .user),
                                                              now: WallClock.now())
                plans.append(await coordinator.state.plan(chain.name, version: applied.version)!)
            }
            AckWriter.write("ready\n")
            try await withThrowingTaskGroup(of: Void.self) { group in
                // Snapshots while the writers write, as the server's timer service writes them.
                group.addTask {
                    while ContinuousClock.now < deadline {
                        do {
                            _ = try await coordinator.writeSnapshotIfDue()
                        } catch where retryUnavailable {
                            // The database is away: the next snapshot is written once it is back.
                        }
                        try await Task.sleep(for: .milliseconds(20))
                    }
                }
                for writer in 0..<writers {
                    let plan = plans[writer]
                    group.addTask {
                        let agent = "writer-\(writer)"
                        let context = CommandContext(actor: Actor(kind: "agent", id: agent), triggeredBy: .agent)
                        var round = 0
                        while ContinuousClock.now < deadline {
                            let id = MigrationID("load-\(tag)-\(writer)-\(round)")
                            round += 1
                            var commands: [MigrationCommand] = [.start(id: id, plan: plan)]
                            for node in plan.nodes {
                                commands.append(.leaseStep(node: node.id, agent: agent, ttlMillis: 60_000))
                                commands.append(.completeStep(node: node.id, token: FencingToken(1)))
                            }
                            var index = 0
                            // While a lease waits for a grant an outage may have cut off (`--retry-unavailable`).
                            var grantWaitEnds: ContinuousClock.Instant?
                            while index < commands.count, ContinuousClock.now < deadline {
                                let command = commands[index]
                                do throws(CommandError) {
                                    let result = try await coordinator.execute(command, migration: id, context: context, now: WallClock.now())
                                    if let receipt = result.receipt {
                                        AckWriter.write("ack \(receipt.firstSequence) \(receipt.lastSequence) \(RecordedEvent.stream(of: id)) \(receipt.streamVersion)\n")
                                    }
                                    index += 1
                                    grantWaitEnds = nil
                                } catch where retryUnavailable && error.code == "storage_unavailable" {
                                    // Nothing of it was written (the log resolved that): the same command again, later.
                                    AckWriter.write("retry \(error.code)\n")
                                    try await Task.sleep(for: .milliseconds(100))
                                } catch {
                                    if retryUnavailable, error.code == "waiting_for_service_lease", ContinuousClock.now < grantWaitEnds ?? .now + .seconds(15) {
                                        // The grant after the start may have been cut off by the outage (a pass is
                                        // then owed, and the next command runs it once the database is back): wait
                                        // for it a bounded while; a grant that never comes is still refused.
                                        if grantWaitEnds == nil { grantWaitEnds = .now + .seconds(15) }
                                        AckWriter.write("retry \(error.code)\n")
                                        try await Task.sleep(for: .milliseconds(100))
                                        continue
                                    }
                                    // After a refusal, try a few more appends: with fail-stop every one is refused
                                    // too, and the crash tests check that no `ack` ever follows a `refused`.
                                    AckWriter.write("refused \(error.code)\n")
                                    for probe in 0..<3 {
                                        let probeID = MigrationID("probe-\(tag)-\(writer)-\(probe)")
                                        do throws(CommandError) {
                                            let result = try await coordinator.execute(.start(id: probeID, plan: plan), migration: probeID,
                                                                                       context: context, now: WallClock.now())
                                            if let receipt = result.receipt {
                                                AckWriter.write("ack \(receipt.firstSequence) \(receipt.lastSequence) "
                                                    + "\(RecordedEvent.stream(of: probeID)) \(receipt.streamVersion)\n")
                                            }
                                        } catch {
                                            AckWriter.write("refused \(error.code)\n")
                                        }
                                    }
                                    throw error
                                }
                            }
                        }
                    }
                }
                try await group.waitForAll()
            }
        }
    }
}

/// Writes whole lines to stdout with one `write(2)` each, so a kill never leaves half a line.
enum AckWriter {
    private static let lock = Mutex(())
    static func write(_ line: String) {
        lock.withLock { _ in
            var bytes = Array(line.utf8)
            var offset = 0
            while offset < bytes.count {
                let written = bytes.withUnsafeMutableBytes { Foundation.write(1, $0.baseAddress! + offset, $0.count - offset) }
                if written <= 0 { return }
                offset += written
            }
        }
    }
}
