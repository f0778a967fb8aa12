import Foundation
import LockstepCore
import LockstepEngine
import LockstepStore
import Testing

/// Replay and verification as a reviewer runs them: the real `lockstep` binary, in separate processes.
@Suite(.serialized) struct CrossProcessTests {
    /// A data directory holding the scenario history.
    func scenario() async throws -> (directory: String, digest: StateDigest) {
        let directory = temporaryDirectory()
        let log = try SQLiteEventLog(path: directory + "/events.sqlite")
        let coordinator = try await Coordinator.open(log: log, snapshotIntervalEvents: 0)
        try await recordScenario(on: coordinator)
        return (directory, await coordinator.digest)
    }

    @Test func twoProcessesReplayToByteIdenticalOutput() async throws {
        let (directory, digest) = try await scenario()
        let first = try await runLockstep(["history", "replay", "--data", directory, "--output", "json"])
        let second = try await runLockstep(["history", "replay", "--data", directory, "--output", "json"])
        #expect(first.status == 0, "\(first.stderr)")
        #expect(first.stdout == second.stdout)
        #expect(first.stdout.contains("\"digest\" : \"\(digest.hex)\""))
        let prefix = try await runLockstep(["history", "replay", "--data", directory, "--at", "5", "--output", "json"])
        let expected = try await History.replay(try SQLiteEventLog(path: directory + "/events.sqlite", mode: .readOnly), through: 5)
        #expect(prefix.stdout.contains("\"digest\" : \"\(expected.digest.hex)\""))
        #expect(prefix.stdout.contains("\"sequence\" : \"5\""))
    }

    @Test func verifyPrintsTheHeadAndExportWritesOneLinePerEvent() async throws {
        let (directory, _) = try await scenario()
        let head = try await SQLiteEventLog(path: directory + "/events.sqlite", mode: .readOnly).head()
        let verify = try await runLockstep(["history", "verify", "--data", directory])
        #expect(verify.status == 0)
        #expect(verify.stdout.contains("head sequence: \(head.sequence)\nhead hash: \(head.chainHash.hex)"))
        let export = try await runLockstep(["history", "export", "--data", directory])
        let lines = export.stdout.split(separator: "\n")
        #expect(lines.count == Int(head.sequence))
        let first = try JSONSerialization.jsonObject(with: Data(lines[0].utf8)) as? [String: Any]
        #expect(first?["sequence"] as? Int == 1)
        #expect(((first?["record"] as? [String: Any])?["payload"] as? [String: Any])?["plan_applied"] != nil)
        let second = try JSONSerialization.jsonObject(with: Data(lines[1].utf8)) as? [String: Any]
        let record = second?["record"] as? [String: Any]
        #expect(record?["stream"] as? String == "migration/ledger-split-1")
        #expect((record?["payload"] as? [String: Any])?["migration_started"] != nil)
    }

    @Test func aMissingDataDirectoryIsAClearError() async throws {
        let result = try await runLockstep(["history", "verify", "--data", "/nonexistent/lockstep"])
        #expect(result.status == 2)
        #expect(result.stderr.contains("no event log at /nonexistent/lockstep/events.sqlite; check --data"))
    }
}
