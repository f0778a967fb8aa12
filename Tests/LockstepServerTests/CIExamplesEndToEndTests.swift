import Foundation
import LockstepTestSupport
import Testing
import Yams

/// examples/ci (issue 20): the commands the GitHub Actions workflow and the GitLab CI job run, run here
/// against a real server with the reference agent, with the exit statuses a pipeline acts on.
@Suite(.serialized, .timeLimit(.minutes(4)))
struct CIExamplesEndToEndTests {
    static let examples = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("examples/ci").path

    /// Every shell line of both pipelines that mentions lockstep.
    static func pipelineCommands() throws -> [String] {
        var commands: [String] = []
        func collect(_ node: Node, key: String?) {
            switch node {
            case .scalar(let scalar):
                if let key, ["run", "script", "before_script"].contains(key) { commands += scalar.string.split(separator: "\n").map(String.init) }
            case .sequence(let sequence):
                for item in sequence { collect(item, key: key) }
            case .mapping(let mapping):
                for (k, v) in mapping { collect(v, key: k.string) }
            default:
                break
            }
        }
        for file in ["github-actions.yml", "gitlab-ci.yml"] {
            let text = try String(contentsOfFile: "\(examples)/\(file)", encoding: .utf8)
            collect(try #require(try Yams.compose(yaml: text)), key: nil)
        }
        return commands.filter { $0.contains("lockstep") }
    }

    @Test func bothPipelinesRunLockstepOnlyThroughTheScriptThisTestRuns() throws {
        let commands = try Self.pipelineCommands()
        let viaScript = commands.filter { $0.hasPrefix("examples/ci/lockstep-ci ") }
        // Installing the binary is the only other line naming lockstep.
        #expect(commands.allSatisfy { $0.hasPrefix("examples/ci/lockstep-ci ") || $0.contains("curl -fsSL") }, "\(commands)")
        #expect(Set(viaScript) == ["examples/ci/lockstep-ci check migrations/*.yaml", "examples/ci/lockstep-ci deploy --timeout 3h migrations/*.yaml"],
                "\(viaScript)")
        #expect(viaScript.count == 4, "check and deploy in each pipeline")
    }

    @Test func checkAndDeployAnswerWithTheStatusesAPipelineActsOn() async throws {
        let bench = try await GateBench(
            [.init(name: "ci", role: "operator", token: "ci-token-ccccccccccccccccccccccc"),
             .init(name: "orders-agent", role: "agent", services: ["orders"], token: "agent-token-ooooooooooooooooooo")],
            handlers: Dictionary(uniqueKeysWithValues: ["add-column", "drop-column", "backfill", "unbackfill"].map { ($0, WaitEndToEndTests.handler) }))
        let directory = bench.directory
        // A repository's migrations/ directory, and the script copied beside it as the pipelines call it.
        try FileManager.default.createDirectory(atPath: directory + "/repo/migrations", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: directory + "/repo/examples/ci", withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: Self.examples + "/lockstep-ci", toPath: directory + "/repo/examples/ci/lockstep-ci")
        try WaitEndToEndTests.plan("orders-split").write(toFile: directory + "/repo/migrations/orders-split.yaml", atomically: true, encoding: .utf8)
        let agent = try bench.agent("orders", as: "orders-agent")
        defer { agent.kill(SIGKILL) }
        let binary = try lockstepBinary()
        func ci(_ arguments: String, server: Bool = true) async throws -> ProcessOutput {
            var environment = ["LOCKSTEP": binary, "LOCKSTEP_TOKEN": bench.token("ci"), "PATH": "/usr/bin:/bin"]
            if server { environment["LOCKSTEP_SERVER"] = bench.server.grpc }
            return try await ChildProcess("/bin/sh", ["-c", "cd \(directory)/repo && \(arguments)"], environment: environment).wait(seconds: 120)
        }

        // A change: lint, rehearse, and the diff against a plan not applied yet.
        let check = try await ci("examples/ci/lockstep-ci check migrations/*.yaml")
        #expect(check.status == 0, "\(check)")
        #expect(check.stdout.contains("ok: plan orders-split") && check.stdout.contains("result: succeeded")
                && check.stdout.contains("plan orders-split is not applied yet"), "\(check.stdout)")

        // The main branch: applied, started, waited for, succeeded.
        let deploy = try await ci("examples/ci/lockstep-ci deploy --timeout 3h migrations/*.yaml")
        #expect(deploy.status == 0, "\(deploy)")
        #expect(deploy.stdout.contains("orders-split@1 applied (content hash"), "\(deploy.stdout)")
        #expect(deploy.stdout.split(separator: "\n").last?.hasSuffix(": succeeded") == true, "\(deploy.stdout)")
        #expect(!deploy.stdout.contains("\u{1B}"), "no terminal control sequences in a CI log")

        // Nothing changed: the job follows the version's migration (no second one) and answers with its outcome.
        let again = try await ci("examples/ci/lockstep-ci deploy --timeout 3h migrations/*.yaml")
        #expect(again.status == 0 && again.stdout.contains("orders-split@1 unchanged")
                && again.stdout.contains("migration orders-split-v1 exists; waiting for it"), "\(again)")
        let list = try await bench.lockstep(["migration", "list"], as: "ci")
        #expect(list.stdout.components(separatedBy: "orders-split-v").count == 2, "one migration: \(list.stdout)")
        // Its report from the server and from the log itself are the same, and list every event of its stream.
        let fromServer = try await bench.lockstep(["migration", "report", "orders-split-v1", "--format", "json"], as: "ci")
        let fromLog = try await ChildProcess(binary, ["migration", "report", "orders-split-v1", "--format", "json", "--data", bench.server.data + "/data"])
            .wait(seconds: 60)
        #expect(fromServer.status == 0 && fromLog.status == 0, "\(fromServer.stderr) \(fromLog.stderr)")
        func timeline(_ json: String) throws -> [UInt64] {
            let object = try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any]
            return (object?["timeline"] as? [[String: Any]] ?? []).compactMap { ($0["sequence"] as? NSNumber)?.uint64Value }
        }
        let exported = try await bench.lockstep(["history", "export"], as: "ci").stdout.split(separator: "\n")
            .filter { $0.contains(#""stream":"migration/orders-split-v1""#) }
            .compactMap { ((try? JSONSerialization.jsonObject(with: Data($0.utf8))) as? [String: Any])?["sequence"] as? NSNumber }.map(\.uint64Value)
        #expect(try timeline(fromServer.stdout) == exported && !exported.isEmpty, "every event of the migration, in order")
        #expect(try timeline(fromLog.stdout) == exported)
        #expect(fromServer.stdout.contains(#""status" : "succeeded""#), "\(fromServer.stdout.prefix(600))")
        let same = try await ci("examples/ci/lockstep-ci check migrations/*.yaml")
        #expect(same.status == 0 && same.stdout.contains("no changes: migrations/orders-split.yaml is orders-split@1"), "\(same.stdout)")

        // A change whose backfill fails: it rolls back, and the job fails with 5.
        #expect(FileManager.default.createFile(atPath: directory + "/fail", contents: Data()))
        try WaitEndToEndTests.plan("orders-split").replacingOccurrences(of: "action: backfill", with: "action: backfill\n    params: { batch: 10 }")
            .write(toFile: directory + "/repo/migrations/orders-split.yaml", atomically: true, encoding: .utf8)
        let diff = try await ci("examples/ci/lockstep-ci check migrations/*.yaml")
        #expect(diff.status == 0 && diff.stdout.contains("~ node backfill: params.batch (none) → 10"), "\(diff.stdout)")
        let rolledBack = try await ci("examples/ci/lockstep-ci deploy migrations/*.yaml")
        #expect(rolledBack.status == 5, "\(rolledBack)")
        #expect(rolledBack.stdout.contains("orders-split@2 applied") && rolledBack.stdout.contains("rolled back"), "\(rolledBack.stdout)")
        try FileManager.default.removeItem(atPath: directory + "/fail")
        // Why it rolled back, from the server and from the log itself alike (issue 21).
        let why = try await bench.lockstep(["history", "explain", "orders-split-v2"], as: "ci")
        let whyLocal = try await ChildProcess(binary, ["history", "explain", "orders-split-v2", "--data", bench.server.data + "/data"]).wait(seconds: 60)
        #expect(why.status == 0 && why.stdout == whyLocal.stdout, "\(why)\n\(whyLocal)")
        #expect(why.stdout.hasPrefix("orders-split-v2 is rolled_back: node backfill failed") && why.stdout.contains("abort (retries_exhausted)")
                && why.stdout.contains("backfill: attempt 1 failed"), "\(why.stdout)")
        let node = try await bench.lockstep(["history", "explain", "orders-split-v2", "backfill", "--output", "json"], as: "ci")
        #expect(node.status == 0 && node.stdout.contains("\"headline\"") && node.stdout.contains("backfill of orders-split-v2 is"), "\(node.stdout)")
        let unknown = try await bench.lockstep(["history", "explain", "nope"], as: "ci")
        #expect(unknown.status == 1 && unknown.stderr.contains("migration_not_found"), "\(unknown)")
        // What changed while it ran: the same from the server and the log.
        let pastEnd = try await bench.lockstep(["history", "diff", "--at", "1", "--at", "200000", "--migration", "orders-split-v2"], as: "ci")
        #expect(pastEnd.status == 1 && pastEnd.stderr.contains("invalid_argument"), "a point past the log end is refused: \(pastEnd)")
        let head = try await bench.lockstep(["history", "verify", "--output", "json"], as: "ci")
        let headSequence = (try JSONSerialization.jsonObject(with: Data(head.stdout.utf8)) as? [String: Any])?["head_sequence"] as? Int ?? 0
        let changed = try await bench.lockstep(["history", "diff", "--at", "1", "--at", String(headSequence), "--migration", "orders-split-v2"], as: "ci")
        let changedLocal = try await ChildProcess(binary, ["history", "diff", "--at", "1", "--at", String(headSequence), "--migration", "orders-split-v2",
                                                           "--data", bench.server.data + "/data"]).wait(seconds: 60)
        #expect(changed.status == 0 && changed.stdout == changedLocal.stdout, "\(changed)\n\(changedLocal)")
        #expect(changed.stdout.contains("+ migration orders-split-v2 (plan orders-split@2, started by ci): rolled_back"), "\(changed.stdout)")
        let nobody = try await bench.lockstep(["history", "diff", "--at", "1", "--at", String(headSequence), "--migration", "nope"], as: "ci")
        #expect(nobody.status == 1 && nobody.stderr.contains("migration_not_found"), "\(nobody)")
        // Run again: the version's migration rolled back, so the job stays red (a green re-run would deploy nothing).
        let rerun = try await ci("examples/ci/lockstep-ci deploy migrations/*.yaml")
        #expect(rerun.status == 5 && rerun.stdout.contains("orders-split@2 unchanged"), "\(rerun)")

        // A gate nobody approves in time: 8, naming the command that approves it.
        try WaitEndToEndTests.plan("orders-split", gated: true).write(toFile: directory + "/repo/migrations/orders-split.yaml", atomically: true, encoding: .utf8)
        let gated = try await ci("examples/ci/lockstep-ci deploy --timeout 3s migrations/*.yaml")
        #expect(gated.status == 8, "\(gated)")
        #expect(gated.stdout.contains("backfill awaits approval") && gated.stdout.contains("lockstep migration approve"), "\(gated.stdout)")

        // A broken plan fails the check (1), before anything reaches the server.
        try "name: broken\nnodes: []\n".write(toFile: directory + "/repo/migrations/broken.yaml", atomically: true, encoding: .utf8)
        let broken = try await ci("examples/ci/lockstep-ci check migrations/broken.yaml", server: false)
        #expect(broken.status == 1, "\(broken)")
        _ = try await bench.server.stop()
    }
}
