import Foundation
import LockstepCore
import LockstepEngine
import LockstepStore
import LockstepTestSupport
import LockstepWire
import Testing

/// Signed checkpoints (issue 21, docs/history.md): signing and keys, the checkpoint event, and the tamper
/// suite a hash chain alone cannot see through: deleted newest rows, a re-chained forgery, an altered
/// checkpoint file, a key used outside its validity range. Then bundles, checked by the Swift verifier
/// and by ops/verify-bundle (Python) alike.
@Suite(.serialized) struct CheckpointTests {
    static let signedAt = Instant(millisecondsSinceEpoch: 1_800_000_000_000)

    /// The scenario's log with a checkpoint of its head recorded in it and kept in DIR/checkpoints, the
    /// key's file in DIR/signing.key and its keys file in DIR/keys.json.
    static func signedScenario() async throws -> (directory: String, signer: CheckpointSigner, checkpoint: Checkpoint) {
        let directory = temporaryDirectory()
        try FileManager.default.createDirectory(atPath: directory + "/checkpoints", withIntermediateDirectories: true)
        let log = try SQLiteEventLog(path: directory + "/events.sqlite")
        let coordinator = try await Coordinator.open(log: log, snapshotIntervalEvents: 0)
        try await recordScenario(on: coordinator)
        let signer = CheckpointSigner.generate()
        try signer.fileText.write(toFile: directory + "/signing.key", atomically: true, encoding: .utf8)
        try CheckpointKeys(keys: [.init(publicKey: signer.publicKey)]).json.write(toFile: directory + "/keys.json", atomically: true, encoding: .utf8)
        let head = try await log.head()
        let checkpoint = try signer.sign(sequence: head.sequence, chainHash: head.chainHash.bytes, at: signedAt)
        try CheckpointFiles.append(checkpoint, directory: directory + "/checkpoints")
        _ = try await coordinator.execute(.checkpoints(.record(checkpoint)), context: CommandContext(actor: .coordinator, triggeredBy: .coordinator), now: signedAt)
        return (directory, signer, checkpoint)
    }

    func verify(_ data: String, _ directory: String, extra: [String] = []) async throws -> ProcessOutput {
        try await runLockstep(["history", "verify", "--data", data, "--checkpoints", directory + "/checkpoints", "--public-key", directory + "/keys.json"] + extra)
    }

    @Test func aCheckpointSignsItsSequenceHashAndTimeAndOnlyItsKeyVerifiesIt() throws {
        let signer = CheckpointSigner.generate()
        let hash = [UInt8](repeating: 0xAB, count: 32)
        let checkpoint = try signer.sign(sequence: 42, chainHash: hash, at: Self.signedAt)
        #expect(String(decoding: checkpoint.message, as: UTF8.self) == "lockstep-checkpoint-v1 42 \(String(repeating: "ab", count: 32)) 1800000000000")
        #expect(checkpoint.keyID == CheckpointKeys.keyID(of: signer.publicKey) && checkpoint.keyID.count == 16 && checkpoint.shapeProblem == nil)
        let keys = CheckpointKeys(keys: [.init(publicKey: signer.publicKey)])
        #expect(keys.problem(with: checkpoint) == nil)
        var altered = checkpoint
        altered.sequence = 43
        #expect(keys.problem(with: altered) == .badSignature)
        #expect(CheckpointKeys(keys: [.init(publicKey: CheckpointSigner.generate().publicKey)]).problem(with: checkpoint) == .unknownKey)
        // Rotation: valid from a later time, or only until an earlier one.
        #expect(CheckpointKeys(keys: [.init(publicKey: signer.publicKey, validFrom: Self.signedAt.adding(milliseconds: 1))]).problem(with: checkpoint) == .keyNotValid)
        #expect(CheckpointKeys(keys: [.init(publicKey: signer.publicKey, validUntil: Self.signedAt)]).problem(with: checkpoint) == .keyNotValid)
        // Its line reads back; the same line naming a key twice does not (which sequence it signs would
        // depend on the reader).
        let line = CheckpointFiles.line(checkpoint)
        #expect((try? CheckpointFiles.parse(line: Substring(line)).get())?.sequence == 42)
        let twice = line.replacingOccurrences(of: #""sequence":42"#, with: #""sequence":41,"sequence":42"#)
        #expect(twice != line)
        #expect((try? CheckpointFiles.parse(line: Substring(twice)).get()) == nil)
        // The key file reads back as the same key.
        let path = temporaryDirectory() + "/k"
        try signer.fileText.write(toFile: path, atomically: true, encoding: .utf8)
        #expect(try CheckpointSigner(file: path).keyID == signer.keyID)
    }

    @Test func badKeyAndKeysFilesAreNamed() throws {
        let path = temporaryDirectory() + "/k"
        try "lockstep-signing-key v1\nnot base64!\n".write(toFile: path, atomically: true, encoding: .utf8)
        #expect { _ = try CheckpointSigner(file: path) } throws: { ($0 as? CheckpointError)?.description.contains("is not a Lockstep signing key") == true }
        #expect { _ = try CheckpointSigner(file: path + "-missing") } throws: { ($0 as? CheckpointError)?.description.contains("cannot read the signing key") == true }
        for (json, says) in [
            (#"{"keys": []}"#, "1 to 256 keys"),
            (#"{"keys": [{"public_key": "AAAA"}]}"#, "base64 of a 32-byte Ed25519 public key"),
            (#"{"nope": 1}"#, "a list `keys`"),
        ] {
            #expect { _ = try CheckpointKeys.parse(Array(json.utf8)) } throws: { ($0 as? CheckpointError)?.description.contains(says) == true }
        }
        let signer = CheckpointSigner.generate()
        let wrongID = #"{"keys": [{"key_id": "0000000000000000", "public_key": "\#(Data(signer.publicKey).base64EncodedString())"}]}"#
        #expect { _ = try CheckpointKeys.parse(Array(wrongID.utf8)) } throws: { ($0 as? CheckpointError)?.description.contains("is not this key's id") == true }
        // Trust material that says one thing twice: which key is trusted would depend on the reader.
        let other = Data(CheckpointSigner.generate().publicKey).base64EncodedString()
        let twice = #"{"keys": [{"public_key": "\#(other)", "public_key": "\#(Data(signer.publicKey).base64EncodedString())"}]}"#
        #expect { _ = try CheckpointKeys.parse(Array(twice.utf8)) } throws: {
            ($0 as? CheckpointError)?.description == #"a keys file names "public_key" twice in one object"#
        }
    }

    @Test func theCheckpointIsAnEventReplayAndVerifyReadAndItIsRecordedOncePerSequence() async throws {
        let (directory, signer, checkpoint) = try await Self.signedScenario()
        let log = try SQLiteEventLog(path: directory + "/events.sqlite")
        let head = try await log.head()
        #expect(head.sequence == scenarioEventCount + 1)
        let stored = try #require(try await log.read(after: head.sequence - 1, limit: 1).first)
        #expect(stored.stream == "checkpoint/\(scenarioEventCount)")
        #expect(try EventRecordCodecCheck.checkpoint(stored.record) == checkpoint)
        _ = try await HistoryVerifier.verify(log)
        #expect(try await History.replay(log).lastSequence == head.sequence)
        // The same sequence again: a conflict; a sequence the log does not hold yet: refused.
        let coordinator = try await Coordinator.open(log: log, snapshotIntervalEvents: 0)
        await #expect(throws: CommandError.self) {
            _ = try await coordinator.execute(.checkpoints(.record(checkpoint)), context: CommandContext(actor: .coordinator, triggeredBy: .coordinator), now: Self.signedAt)
        }
        let future = try signer.sign(sequence: head.sequence + 5, chainHash: head.chainHash.bytes, at: Self.signedAt)
        await #expect(throws: CommandError.self) {
            _ = try await coordinator.execute(.checkpoints(.record(future)), context: CommandContext(actor: .coordinator, triggeredBy: .coordinator), now: Self.signedAt)
        }
        // verify with the keys: both checkpoints (the log's and the file's) are good.
        let verified = try await verify(directory, directory)
        #expect(verified.status == 0, "\(verified)")
        #expect(verified.stdout.contains("checkpoints: 2 checked (1 in the log, 1 kept elsewhere); the newest good one vouches for sequence \(scenarioEventCount)"),
                "\(verified.stdout)")
    }

    @Test func deletingTheNewestRowsIsFoundAsTruncation() async throws {
        let (directory, _, _) = try await Self.signedScenario()
        let copy = try copyDatabase(directory + "/events.sqlite")
        // Cut the tail and make the recorded head agree: the chain alone cannot tell.
        try editDatabase(copy + "/events.sqlite", """
            DELETE FROM events WHERE sequence > 40;
            UPDATE log_head SET sequence = 40, chain_hash = (SELECT chain_hash FROM events WHERE sequence = 40) WHERE id = 1;
            """)
        #expect(try await runLockstep(["history", "verify", "--data", copy]).status == 0, "the chain alone verifies")
        let result = try await verify(copy, directory)
        #expect(result.status == 1)
        #expect(result.stderr.contains("truncated at sequence \(scenarioEventCount) (\(directory)/checkpoints/checkpoints.ndjson:1): the log ends at sequence 40"), "\(result.stderr)")
    }

    @Test func aReChainedForgeryIsFoundAsAFork() async throws {
        let (directory, _, _) = try await Self.signedScenario()
        // A whole new database, consistent in itself and as long: another history, chained from scratch.
        let forged = temporaryDirectory()
        let coordinator = try await Coordinator.open(log: try SQLiteEventLog(path: forged + "/events.sqlite"), snapshotIntervalEvents: 0)
        try await recordScenario(on: coordinator, clockStart: 7)
        let plain = try await runLockstep(["history", "verify", "--data", forged])
        #expect(plain.status == 0, "the forgery verifies on its own: \(plain)")
        let result = try await verify(forged, directory)
        #expect(result.status == 1)
        #expect(result.stderr.contains("forked at sequence \(scenarioEventCount)"), "\(result.stderr)")
        #expect(result.stderr.contains("the history was rewritten or replaced"))
    }

    @Test func anAlteredCheckpointFileIsFound() async throws {
        let (directory, _, checkpoint) = try await Self.signedScenario()
        let path = directory + "/checkpoints/checkpoints.ndjson"
        let line = try String(contentsOfFile: path, encoding: .utf8)
        // Someone moves the checkpoint back to hide a truncation: the signature no longer covers it.
        try line.replacingOccurrences(of: "\"sequence\":\(checkpoint.sequence)", with: "\"sequence\":\(checkpoint.sequence - 10)")
            .write(toFile: path, atomically: true, encoding: .utf8)
        let result = try await verify(directory, directory)
        #expect(result.status == 1)
        #expect(result.stderr.contains("bad_signature at sequence \(checkpoint.sequence - 10)"), "\(result.stderr)")
        try "{not json\n".write(toFile: path, atomically: true, encoding: .utf8)
        let garbage = try await verify(directory, directory)
        #expect(garbage.status == 1 && garbage.stderr.contains("malformed"), "\(garbage.stderr)")
    }

    @Test func aKeyUsedOutsideItsValidityRangeIsFound() async throws {
        let (directory, signer, _) = try await Self.signedScenario()
        // Rotated away before the checkpoint was signed.
        try CheckpointKeys(keys: [.init(publicKey: signer.publicKey, validUntil: Self.signedAt.adding(milliseconds: -1))]).json
            .write(toFile: directory + "/keys.json", atomically: true, encoding: .utf8)
        let result = try await verify(directory, directory)
        #expect(result.status == 1)
        #expect(result.stderr.contains("key_not_valid at sequence \(scenarioEventCount)") && result.stderr.contains("was not valid at"), "\(result.stderr)")
    }

    @Test func aBundleVerifiesOfflineInSwiftAndPythonAndOneFlippedByteFailsBoth() async throws {
        let (directory, _, _) = try await Self.signedScenario()
        let bundle = directory + "/history.bundle"
        let written = try await runLockstep(["history", "export", "--data", directory, "--bundle", bundle, "--checkpoints", directory + "/checkpoints",
                                             "--public-key", directory + "/keys.json"])
        #expect(written.status == 0 && written.stdout.contains("\(scenarioEventCount + 1) events, 2 checkpoints, 1 key"), "\(written)")
        let swift = try await runLockstep(["history", "verify", "--bundle", bundle, "--public-key", directory + "/keys.json"])
        #expect(swift.status == 0, "\(swift)")
        #expect(swift.stdout.contains("checkpoints: 2 verified") && swift.stdout.contains("the newest vouches for sequence \(scenarioEventCount)"), "\(swift.stdout)")
        let verifier = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("ops/verify-bundle").path
        let python = try await ChildProcess("/usr/bin/python3", [verifier, bundle, "--keys", directory + "/keys.json"]).wait(seconds: 60)
        #expect(python.status == 0, "\(python)")
        #expect(python.stdout.contains("ok: bundle of \(scenarioEventCount + 1) events"))
        // Both give the same head.
        let head = swift.stdout.split(separator: "\n").first { $0.hasPrefix("head hash: ") }
        #expect(head != nil && python.stdout.contains(String(head!)))

        // One byte of one event's record flipped (inside its base64): both refuse it.
        let original = try [UInt8](Data(contentsOf: URL(fileURLWithPath: bundle)))
        var bytes = original
        let text = String(decoding: bytes, as: UTF8.self)
        let marker = try #require(text.range(of: "\"record\":\"", options: [], range: text.index(text.startIndex, offsetBy: text.count / 2)..<text.endIndex))
        let offset = text.utf8.distance(from: text.startIndex, to: marker.upperBound) + 8
        bytes[offset] = bytes[offset] == UInt8(ascii: "A") ? UInt8(ascii: "B") : UInt8(ascii: "A")
        try Data(bytes).write(to: URL(fileURLWithPath: bundle))
        let swiftBad = try await runLockstep(["history", "verify", "--bundle", bundle, "--public-key", directory + "/keys.json"])
        #expect(swiftBad.status == 1 && swiftBad.stderr.contains("it was altered"), "\(swiftBad)")
        let pythonBad = try await ChildProcess("/usr/bin/python3", [verifier, bundle, "--keys", directory + "/keys.json"]).wait(seconds: 60)
        #expect(pythonBad.status == 1 && pythonBad.stderr.contains("it was altered"), "\(pythonBad)")

        // A flip in each other kind of line: an upper-cased hex digit of a chain hash, the header's count, a
        // checkpoint line's signature. Both refuse each.
        try Data(original).write(to: URL(fileURLWithPath: bundle))
        let lines = String(decoding: original, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        let eventLine = try #require(lines.firstIndex { $0.hasPrefix("{\"event\"") })
        let checkpointLine = try #require(lines.lastIndex { $0.hasPrefix("{\"checkpoint\"") })
        func flipped(_ index: Int, _ edit: (String) -> String) -> String {
            var copy = lines
            copy[index] = edit(copy[index])
            return copy.joined(separator: "\n")
        }
        let cases: [(String, String)] = [
            ("an upper-cased hex digit", flipped(eventLine) { line in
                guard let range = line.range(of: #"[a-f]"#, options: .regularExpression, range: line.range(of: "chain_hash")!.upperBound..<line.endIndex) else { return line }
                return line.replacingCharacters(in: range, with: line[range].uppercased())
            }),
            ("the header's count", flipped(0) { $0.replacingOccurrences(of: "\"events\":\(scenarioEventCount + 1)", with: "\"events\":\(scenarioEventCount + 2)") }),
            ("a checkpoint's signature", flipped(checkpointLine) { line in
                guard let range = line.range(of: "\"signature\":\"") else { return line }
                let at = range.upperBound
                return line.replacingCharacters(in: at..<line.index(after: at), with: line[at] == "A" ? "B" : "A")
            }),
        ]
        for (what, text) in cases {
            #expect(text != String(decoding: original, as: UTF8.self), "\(what) changed the bundle")
            try text.write(toFile: bundle, atomically: true, encoding: .utf8)
            let swiftFlip = try await runLockstep(["history", "verify", "--bundle", bundle, "--public-key", directory + "/keys.json"])
            let pythonFlip = try await ChildProcess("/usr/bin/python3", [verifier, bundle, "--keys", directory + "/keys.json"]).wait(seconds: 60)
            #expect(swiftFlip.status == 1, "Swift took \(what): \(swiftFlip)")
            #expect(pythonFlip.status == 1, "Python took \(what): \(pythonFlip)")
        }
        // A bundle is never written over a file.
        let again = try await runLockstep(["history", "export", "--data", directory, "--bundle", bundle])
        #expect(again.status == 1 && again.stderr.contains("never written over a file"), "\(again)")
    }
}

/// Decodes a stored checkpoint record (a test's view of the codec).
enum EventRecordCodecCheck {
    static func checkpoint(_ bytes: [UInt8]) throws -> Checkpoint? {
        if case .checkpoint(let recorded) = try EventRecordCodec.decodeAny(bytes) { return recorded.checkpoint }
        return nil
    }
}
