import ArgumentParser
import Foundation
import LockstepClient
import LockstepCore
import LockstepEngine
import LockstepServer
import LockstepStore
import LockstepWire
import Synchronization
import LockstepService

struct Demo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The whole product on loopback: a coordinator, three agents as processes, a migration with gates, then its verified history.",
        discussion: """
            Starts `lockstep serve` on free loopback ports with a fresh data directory and an authorization \
            config (alice operates, bob approves, one agent token per service), applies a three-service \
            plan, starts one `lockstep agent` process per service, approves the gates as bob, shows the live \
            view until the migration settles, then prints `history verify` and where everything is kept. \
            Takes about 20 seconds.
            """)

    @Option(help: "Directory to keep everything in (default: a new temporary directory).")
    var data: String?
    @Flag(help: "One line per event instead of the live view.")
    var plain = false

    /// The whole demo must finish within this, in seconds (it takes about 20).
    static let secondsMax = 120.0

    func run() async throws {
        let directory = data ?? FileManager.default.temporaryDirectory.appendingPathComponent("lockstep-demo-\(getpid())").path
        let files = try await reportingFailures { try DemoFiles(directory: directory) }
        let children = DemoChildren()
        let status: String
        do {
            // The whole demo is bounded: past `secondsMax` it stops everything it started and fails.
            status = try await withThrowingTaskGroup(of: String.self) { group in
                group.addTask { try await runDemo(files, children) }
                group.addTask {
                    try await Task.sleep(for: .seconds(Self.secondsMax))
                    throw CommandFailure(message: "the demo did not finish within \(Int(Self.secondsMax)) s; logs are in \(directory)", exitCode: 1)
                }
                defer { group.cancelAll() }
                return try await group.next() ?? "unknown"
            }
        } catch {
            await children.stopAll()
            // Its exit status, as every command's (docs/cli.md), not swift-argument-parser's 1.
            try await reportingFailures { () async throws -> Void in throw error }
            throw error
        }
        let binary = files.binary
        print("""

            The migration \(status). Everything is kept in \(directory):
              data/events.sqlite   the event log (hash-chained; replayable byte for byte)
              auth.json            who may do what (token hashes; the tokens are in tokens.json)
              signing.key          the key checkpoints of the log are signed with (keys.json: its public key)
              checkpoints/         the signed checkpoints, kept outside the log
              handlers/            the script each agent ran for each action
              *.log                the server's and each agent's log

            Try next:
              \(binary) history verify --data \(files.dataDirectory) --checkpoints \(directory)/checkpoints --public-key \(directory)/keys.json
              \(binary) migration report ledger-split-demo-1 --data \(files.dataDirectory) --format html --out \(directory)/report.html
              \(binary) history replay --data \(files.dataDirectory) --at 10
              \(binary) history export --data \(files.dataDirectory)
            """)
        if MigrationStatus(rawValue: status) != .succeeded { throw ExitCode(1) }
    }

    /// Server, plan, migration, agents, the live view with bob approving, verification; returns how the
    /// migration settled.
    private func runDemo(_ files: DemoFiles, _ children: DemoChildren) async throws -> String {
        print("Lockstep demo: everything is kept in \(files.directory)\n")
        // The key checkpoints are signed with, and the directory they are also kept in (docs/history.md).
        let keyFile = files.directory + "/signing.key"
        let signer: CheckpointSigner
        do {
            // A directory used before keeps its key (its checkpoints were signed with it).
            if FileManager.default.fileExists(atPath: keyFile) {
                signer = try CheckpointSigner(file: keyFile)
            } else {
                signer = CheckpointSigner.generate()
                try signer.write(to: keyFile)
            }
        } catch {
            throw CommandFailure(message: error.description, exitCode: 2)
        }
        try CheckpointKeys(keys: [.init(publicKey: signer.publicKey)]).json.write(toFile: files.directory + "/keys.json", atomically: true, encoding: .utf8)
        try FileManager.default.createDirectory(atPath: files.directory + "/checkpoints", withIntermediateDirectories: true)
        let server = try children.spawn(files, ["serve", "--config", files.auth, "--data", files.dataDirectory, "--http-listen", "127.0.0.1:0",
                                      "--grpc-listen", "127.0.0.1:0", "--ready-file", files.ready, "--signing-key", files.directory + "/signing.key",
                                      "--checkpoint-dir", files.directory + "/checkpoints", "--checkpoint-every-events", "20"], log: "server.log")
        let (address, console) = try await files.waitForReady(server)
        print("coordinator: lockstep serve on \(address) (gRPC), log in \(files.directory)/server.log")
        // The web console, open while the migration runs; the link signs one browser in as bob, with a
        // one-time code (bob's token stays in tokens.json).
        let bobsLink = try await LockstepClient.connect(to: address, token: files.tokens["bob"]) { try await $0.createConsoleLink() }
        print("console: \(console) (sign in as bob, the approver, within \(bobsLink.expiresInMs / 60_000) minutes: \(bobsLink.link))")

        let migration = "ledger-split-demo-1"
        try await LockstepClient.connect(to: address, token: files.tokens["alice"]) { alice in
            let applied = try await alice.applyPlan(.with { $0.planYaml = DemoAssets.plan })
            print("alice (operator): plan apply → \(applied.name)@\(applied.version), content hash \(applied.contentHash.prefix(16))…")
            let started = try await alice.startMigration(.with { $0.plan = applied.name; $0.migrationID = migration })
            print("alice (operator): migration start → \(started.migrationID)")
        }
        for service in ["payments", "orders", "ledger"] {
            let agent = try children.spawn(files, ["agent", "--service", service, "--handlers", files.handlers, "--server", address, "--id", "\(service)-agent"],
                                        log: "agent-\(service).log", token: files.tokens["\(service)-agent"])
            print("agent: lockstep agent --service \(service) (pid \(agent)), log in \(files.directory)/agent-\(service).log")
        }
        print("")
        try await Task.sleep(for: .seconds(plain ? 0 : 2))

        let live = !plain && isatty(STDOUT_FILENO) == 1
        let status = try await withThrowingTaskGroup(of: String?.self) { group in
            group.addTask {
                try await LockstepClient.connect(to: address, token: files.tokens["alice"]) { try await follow(migration, $0, output: live ? .live : .lines).name }
            }
            group.addTask {
                try await LockstepClient.connect(to: address, token: files.tokens["bob"]) { try await Self.approveGates(of: migration, as: $0, live: live) }
                return nil
            }
            defer { group.cancelAll() }
            while let result = try await group.next() {
                if let status = result { return status }
            }
            return "unknown"
        }

        // The agents finish what they run and stop; then the server.
        await children.stop(children.agents)
        try await LockstepClient.connect(to: address, token: files.tokens["alice"]) { alice in
            let verification = Verification(try await alice.verify())
            print("\n$ lockstep history verify")
            print(verification.ok ? verification.table.joined(separator: "\n") : "NOT OK: \(verification.problemCode): \(verification.problem)")
        }
        await children.stop([server])
        return status

    }

    /// bob, an approver of every owner group, approves each gate as soon as it waits.
    static func approveGates(of migration: String, as bob: LockstepClient, live: Bool) async throws {
        var approved: Set<String> = []
        while !Task.isCancelled {
            let state = try await bob.migration(.with { $0.migrationID = migration })
            if MigrationStatus(state.status)?.isSettled == true { return }
            for node in state.nodes where node.status == .awaitingApproval && !approved.contains(node.nodeID) {
                let change = try await bob.approve(.with {
                    $0.migrationID = migration
                    $0.nodeID = node.nodeID
                    $0.comment = "dashboards are green"
                })
                approved.insert(node.nodeID)
                if !live { print("bob (approver): migration approve \(migration) \(node.nodeID) → \(change.events.joined(separator: ", "))") }
            }
            try await Task.sleep(for: .milliseconds(300))
        }
    }
}

/// The demo's directory: tokens and the authorization config, handlers, data, logs, the ready file.
struct DemoFiles: Sendable {
    let directory: String
    let tokens: [String: String]
    var auth: String { directory + "/auth.json" }
    var handlers: String { directory + "/handlers" }
    var dataDirectory: String { directory + "/data" }
    var ready: String { directory + "/ready.json" }
    /// This very executable, so the demo runs the binary the user ran.
    let binary: String

    init(directory: String) throws {
        self.directory = directory
        let manager = FileManager.default
        binary = (try? manager.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        if manager.fileExists(atPath: directory + "/data") {
            throw ValidationError("\(directory) already holds a demo; choose another --data or remove it")
        }
        try manager.createDirectory(atPath: directory + "/handlers", withIntermediateDirectories: true)
        var generator = SystemRandomNumberGenerator()
        let names = ["alice", "bob", "payments-agent", "orders-agent", "ledger-agent"]
        tokens = Dictionary(uniqueKeysWithValues: names.map { name in
            (name, (0..<2).map { _ in String(generator.next() | (1 << 63), radix: 16) }.joined())
        })
        func principal(_ name: String, _ roles: String, _ extra: String = "") -> String {
            #"    {"name": "\#(name)", "roles": [\#(roles)], \#(extra)"token_sha256": "\#(AuthConfig.hash(tokens[name]!))"}"#
        }
        let config = """
            {"principals": [
            \(principal("alice", #""operator""#)),
            \(principal("bob", #""approver""#, #""owner_groups": ["payments-team", "orders-team", "ledger-team"], "#)),
            \(principal("payments-agent", #""agent""#, #""services": ["payments"], "#)),
            \(principal("orders-agent", #""agent""#, #""services": ["orders"], "#)),
            \(principal("ledger-agent", #""agent""#, #""services": ["ledger"], "#))
            ]}

            """
        try config.write(toFile: directory + "/auth.json", atomically: true, encoding: .utf8)
        let tokenFile = try JSONSerialization.data(withJSONObject: tokens, options: [.prettyPrinted, .sortedKeys])
        try tokenFile.write(to: URL(fileURLWithPath: directory + "/tokens.json"))
        try manager.setAttributes([.posixPermissions: 0o600], ofItemAtPath: directory + "/tokens.json")
        for action in DemoAssets.actions {
            let path = directory + "/handlers/" + action
            try DemoAssets.handler.write(toFile: path, atomically: true, encoding: .utf8)
            try manager.setAttributes([.posixPermissions: 0o755], ofItemAtPath: path)
        }
    }

    /// The server's gRPC address and its console's URL, once its ready file appears (at most 30 s).
    func waitForReady(_ server: pid_t) async throws -> (grpc: String, console: String) {
        let deadline = ContinuousClock.now + .seconds(30)
        while ContinuousClock.now < deadline {
            if let bytes = FileManager.default.contents(atPath: ready),
               let json = try? JSONSerialization.jsonObject(with: bytes) as? [String: String], let grpc = json["grpc"], let console = json["console"] {
                return (grpc, console)
            }
            guard DemoChildren.isRunning(server) else { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw CommandFailure(message: "the server did not start; see \(directory)/server.log", exitCode: 1)
    }
}

/// The processes the demo started (the same binary: one `serve`, three `agent`s), by pid. Every one is
/// stopped before the demo ends, gracefully first.
final class DemoChildren: Sendable {
    private let state = Mutex<(server: pid_t?, agents: [pid_t])>((nil, []))

    var agents: [pid_t] { state.withLock { $0.agents } }

    /// Starts `lockstep ARGUMENTS` with its output in `log` and the bearer token in its environment.
    func spawn(_ files: DemoFiles, _ arguments: [String], log: String, token: String? = nil) throws -> pid_t {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: files.binary)
        process.arguments = arguments
        var environment = ProcessInfo.processInfo.environment
        environment["LOCKSTEP_TOKEN"] = token
        environment["LOCKSTEP_SERVER"] = nil
        process.environment = environment
        _ = FileManager.default.createFile(atPath: files.directory + "/" + log, contents: nil)
        let output = try FileHandle(forWritingTo: URL(fileURLWithPath: files.directory + "/" + log))
        process.standardOutput = output
        process.standardError = output
        process.standardInput = FileHandle.nullDevice
        try process.run()
        let pid = process.processIdentifier
        state.withLock { state in
            if arguments.first == "serve" { state.server = pid } else { state.agents.append(pid) }
        }
        return pid
    }

    /// Foundation reaps the children it started, so a pid that is gone is no longer signalable.
    static func isRunning(_ pid: pid_t) -> Bool { kill(pid, 0) == 0 }

    /// SIGTERM, then up to `seconds` for them to exit, then SIGKILL.
    func stop(_ pids: [pid_t], seconds: Double = 40) async {
        for pid in pids where Self.isRunning(pid) { kill(pid, SIGTERM) }
        let deadline = ContinuousClock.now + .seconds(seconds)
        while pids.contains(where: Self.isRunning), ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(50))
        }
        for pid in pids where Self.isRunning(pid) { kill(pid, SIGKILL) }
    }

    /// The agents (which finish or fail their steps), then the server.
    func stopAll() async {
        let (server, agents) = state.withLock { ($0.server, $0.agents) }
        await stop(agents, seconds: 10)
        if let server { await stop([server], seconds: 10) }
    }
}
