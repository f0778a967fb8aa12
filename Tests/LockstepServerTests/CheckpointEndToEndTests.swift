import Foundation
import LockstepTestSupport
import Testing

/// Signed checkpoints with a real server (issue 21, docs/history.md): a key made by `lockstep keys
/// generate`, checkpoints signed as events are appended and at shutdown, kept in a directory, and
/// verified against the log; a server that would sign nothing without saying so does not start.
@Suite(.serialized, .timeLimit(.minutes(3)))
struct CheckpointEndToEndTests {
    @Test func aServerSignsCheckpointsKeepsThemElsewhereAndTheLogVerifiesAgainstThem() async throws {
        let directory = temporaryDirectory()
        try FileManager.default.createDirectory(atPath: directory + "/kept", withIntermediateDirectories: true)
        let generated = try await runLockstep(["keys", "generate", "--private-key", directory + "/signing.key"])
        #expect(generated.status == 0, "\(generated)")
        try generated.stdout.write(toFile: directory + "/keys.json", atomically: true, encoding: .utf8)
        let mode = (try FileManager.default.attributesOfItem(atPath: directory + "/signing.key")[.posixPermissions] as? NSNumber)?.intValue
        #expect(mode == 0o600)
        #expect(try await runLockstep(["keys", "generate", "--private-key", directory + "/signing.key"]).status == 1, "a key is never overwritten")
        // The other failures have statuses of their own (docs/cli.md), not swift-argument-parser's 1.
        let unwritable = try await runLockstep(["keys", "generate", "--private-key", directory + "/no/such/dir/signing.key"])
        #expect(unwritable.status == 2 && unwritable.stderr.hasPrefix("error: "), "\(unwritable)")
        let missing = try await runLockstep(["keys", "show", "--private-key", directory + "/missing.key"])
        #expect(missing.status == 66 && missing.stderr.hasPrefix("error: "), "\(missing)")

        let server = try await ServerProcess(["--dev", "--signing-key", directory + "/signing.key", "--checkpoint-dir", directory + "/kept",
                                              "--checkpoint-every-events", "3"])
        let environment = ["LOCKSTEP_SERVER": server.grpc]
        for index in 1...4 {
            let added = try await ChildProcess(try lockstepBinary(), ["freeze", "add", "--service", "s\(index)", "--reason", "r\(index)", "--id", "f\(index)"],
                                               environment: environment).wait(seconds: 60)
            #expect(added.status == 0, "\(added)")
        }
        try await eventually("a checkpoint kept in the directory", seconds: 30) {
            ((try? String(contentsOfFile: directory + "/kept/checkpoints.ndjson", encoding: .utf8)) ?? "").contains("signature")
        }
        let stopped = try await server.stop()
        #expect(stopped.status == 0, "\(stopped.stderr.suffix(2_000))")
        let lines = try String(contentsOfFile: directory + "/kept/checkpoints.ndjson", encoding: .utf8).split(separator: "\n")
        let sequences = lines.compactMap { ((try? JSONSerialization.jsonObject(with: Data($0.utf8))) as? [String: Any])?["sequence"] as? Int }
        // Between two checkpoints, at least one event besides the first's own: an idle head is never signed again.
        #expect(!sequences.isEmpty && zip(sequences, sequences.dropFirst()).allSatisfy { $1 > $0 + 1 }, "\(sequences)")
        // The last vouches for the last event before its own: nothing after the shutdown checkpoint.
        let head = try await runLockstep(["history", "verify", "--data", server.data + "/data", "--output", "json"])
        let headSequence = (try JSONSerialization.jsonObject(with: Data(head.stdout.utf8)) as? [String: Any])?["head_sequence"] as? Int
        #expect(sequences.last.map { $0 + 1 } == headSequence, "\(sequences) against head \(headSequence ?? -1)")

        let verified = try await runLockstep(["history", "verify", "--data", server.data + "/data", "--checkpoints", directory + "/kept",
                                              "--public-key", directory + "/keys.json"])
        #expect(verified.status == 0, "\(verified)")
        #expect(verified.stdout.contains("checkpoints: \(lines.count * 2) checked (\(lines.count) in the log, \(lines.count) kept elsewhere)"), "\(verified.stdout)")
        let export = try await runLockstep(["history", "export", "--data", server.data + "/data"])
        #expect(export.stdout.contains(#""checkpoint_signed""#) && export.stdout.contains(#""stream":"checkpoint/"#))

        // Another key: every checkpoint is unknown to it.
        let other = try await runLockstep(["keys", "generate", "--private-key", directory + "/other.key"])
        try other.stdout.write(toFile: directory + "/other.json", atomically: true, encoding: .utf8)
        let foreign = try await runLockstep(["history", "verify", "--data", server.data + "/data", "--public-key", directory + "/other.json"])
        #expect(foreign.status == 1 && foreign.stderr.contains("unknown_key"), "\(foreign)")
    }

    @Test func aServerThatWouldSignNothingWithoutSayingSoDoesNotStart() async throws {
        let directory = temporaryDirectory()
        try #"{"principals": [{"name": "olga", "roles": ["operator"], "token_sha256": "0000000000000000000000000000000000000000000000000000000000000000"}]}"#
            .write(toFile: directory + "/auth.json", atomically: true, encoding: .utf8)
        let serve = ["serve", "--data", directory + "/data", "--http-listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0"]
        let unsigned = try await runLockstep(serve + ["--config", directory + "/auth.json"])
        #expect(unsigned.status != 0 && unsigned.stderr.contains("refusing to serve without signed checkpoints"), "\(unsigned)")
        let missing = try await runLockstep(serve + ["--config", directory + "/auth.json", "--signing-key", directory + "/nope.key"])
        #expect(missing.status == 2 && missing.stderr.contains("cannot read the signing key"), "\(missing)")
        try "lockstep-signing-key v1\nshort\n".write(toFile: directory + "/bad.key", atomically: true, encoding: .utf8)
        let bad = try await runLockstep(serve + ["--config", directory + "/auth.json", "--signing-key", directory + "/bad.key"])
        #expect(bad.status == 2 && bad.stderr.contains("is not a Lockstep signing key"), "\(bad)")
        let both = try await runLockstep(serve + ["--dev", "--checkpoint-dir", directory])
        #expect(both.status != 0 && both.stderr.contains("need --signing-key"), "\(both)")
    }
}
