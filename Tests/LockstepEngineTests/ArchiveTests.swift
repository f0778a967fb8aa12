import Foundation
import LockstepCore
import LockstepEngine
import LockstepStore
import LockstepTestSupport
import LockstepWire
import Testing

/// Archival (issue 21, docs/history.md, "Archival"): a long signed history archived in three segments
/// with the `lockstep` binary, then verified and replayed across the segments and the live log to the
/// same digest and state as before; the cut held back by a migration that had not settled; the live
/// log bounded, reopened from its base and going on; altered, missing and foreign segments found.
@Suite(.serialized) struct ArchiveTests {
    /// A history of `rounds` migrations run one after another (each settles), with `long-1` started in
    /// round 2 and settled in round 6, a signed checkpoint recorded after each round, and `open-1` left
    /// running at the end. Returns the sequences the checkpoints vouch for, in order.
    static func longHistory(_ directory: String, rounds: Int = 9) async throws -> [UInt64] {
        try FileManager.default.createDirectory(atPath: directory + "/checkpoints", withIntermediateDirectories: true)
        let log = try SQLiteEventLog(path: directory + "/events.sqlite")
        let coordinator = try await Coordinator.open(log: log, snapshotIntervalEvents: 25)
        let signer = CheckpointSigner.generate()
        try CheckpointKeys(keys: [.init(publicKey: signer.publicKey)]).json.write(toFile: directory + "/keys.json", atomically: true, encoding: .utf8)
        var clock: Int64 = 0
        func now() -> Instant { clock += 1; return t(clock) }
        func run(_ command: MigrationCommand, _ id: String) async throws {
            _ = try await coordinator.execute(command, migration: MigrationID(id), context: agent, now: now())
        }
        func finish(_ id: String, nodes: Int) async throws {
            for index in 0..<nodes {
                try await run(.leaseStep(node: NodeID("step-\(index)"), agent: "agent-\(id)", ttlMillis: 10_000), id)
                try await run(.completeStep(node: NodeID("step-\(index)"), token: FencingToken(1)), id)
            }
        }
        var signed: [UInt64] = []
        for round in 0..<rounds {
            if round == 2 {
                _ = try await coordinator.start(MigrationID("long-1"), plan: ExamplePlans.chain(length: 2, service: "svc-long"), context: user, now: now())
            }
            _ = try await coordinator.start(MigrationID("m-\(round)"), plan: ExamplePlans.chain(length: 2, service: "svc-\(round)"), context: user, now: now())
            try await finish("m-\(round)", nodes: 2)
            if round == 6 { try await finish("long-1", nodes: 2) }
            let head = try await log.head()
            let checkpoint = try signer.sign(sequence: head.sequence, chainHash: head.chainHash.bytes, at: now())
            try CheckpointFiles.append(checkpoint, directory: directory + "/checkpoints")
            _ = try await coordinator.execute(.checkpoints(.record(checkpoint)), context: CommandContext(actor: .coordinator, triggeredBy: .coordinator), now: now())
            signed.append(head.sequence)
        }
        _ = try await coordinator.start(MigrationID("open-1"), plan: ExamplePlans.chain(length: 2, service: "svc-open"), context: user, now: now())
        try await run(.leaseStep(node: NodeID("step-0"), agent: "agent-open", ttlMillis: 10_000), "open-1")
        try await coordinator.saveSnapshot()
        return signed
    }

    func archive(_ directory: String, before: String, to segment: String, extra: [String] = []) async throws -> ProcessOutput {
        try await runLockstep(["history", "archive", "--data", directory, "--before", before, "--to", segment, "--public-key", directory + "/keys.json"] + extra)
    }

    static func line(_ output: ProcessOutput, _ prefix: String) -> String? {
        output.stdout.split(separator: "\n").first { $0.hasPrefix(prefix) }.map(String.init)
    }

    @Test func aLongHistoryArchivedInThreeSegmentsVerifiesAndReplaysToTheSameDigest() async throws {
        let directory = temporaryDirectory()
        let signed = try await Self.longHistory(directory)
        let before = try await runLockstep(["history", "verify", "--data", directory])
        #expect(before.status == 0, "\(before)")
        let replayBefore = try await runLockstep(["history", "replay", "--data", directory, "--output", "json"])
        #expect(replayBefore.status == 0, "\(replayBefore)")
        let replayAtBefore = try await runLockstep(["history", "replay", "--data", directory, "--at", String(signed[4]), "--output", "json"])
        #expect(replayAtBefore.status == 0, "\(replayAtBefore)")
        let headBefore = try #require(Self.line(before, "head hash: "))
        let digestBefore = try #require(Self.line(before, "state digest: "))

        // 1: asked for through round 3's checkpoint; long-1 (started in round 2, settled in round 6) holds
        // the cut back to the checkpoint before its start, round 1's.
        let first = try await archive(directory, before: String(signed[3] + 1), to: directory + "/segment-1.ndjson")
        #expect(first.status == 0, "\(first)")
        #expect(first.stderr.contains("migration long-1 started at event") && first.stderr.contains("had not settled"), "\(first.stderr)")
        #expect(first.stdout.contains("events 1 to \(signed[1])") && first.stdout.contains("2 settled migrations"), "\(first.stdout)")
        // 2: through round 6's checkpoint: long-1 settled by then.
        let dry = try await archive(directory, before: String(signed[6] + 1), to: directory + "/segment-2.ndjson", extra: ["--dry-run"])
        #expect(dry.status == 0 && dry.stdout.contains("would archive events \(signed[1] + 1) to \(signed[6])"), "\(dry)")
        #expect(!FileManager.default.fileExists(atPath: directory + "/segment-2.ndjson"))
        let second = try await archive(directory, before: String(signed[6] + 1), to: directory + "/segment-2.ndjson")
        #expect(second.status == 0 && second.stdout.contains("events \(signed[1] + 1) to \(signed[6])"), "\(second)")
        // 3: by time, with the checkpoints file: everything before open-1's start goes, up to round 8's checkpoint.
        let third = try await archive(directory, before: "2100-01-01T00:00:00Z", to: directory + "/segment-3.ndjson",
                                      extra: ["--checkpoints", directory + "/checkpoints"])
        #expect(third.status == 0 && third.stdout.contains("events \(signed[6] + 1) to \(signed[8])"), "\(third)")
        #expect(third.stderr.contains("migration open-1"), "\(third.stderr)")
        // Nothing more can go: the next cut would straddle open-1.
        let fourth = try await archive(directory, before: "2100-01-01T00:00:00Z", to: directory + "/segment-4.ndjson")
        #expect(fourth.status == 1 && !FileManager.default.fileExists(atPath: directory + "/segment-4.ndjson"), "\(fourth)")

        // The live log holds only the events after the last cut.
        let headText = try queryText(directory + "/events.sqlite", "SELECT sequence FROM log_head")
        let storedText = try queryText(directory + "/events.sqlite", "SELECT COUNT(*) FROM events")
        let head = try #require(headText.flatMap { UInt64($0) })
        let stored = try #require(storedText.flatMap { UInt64($0) })
        #expect(stored == head - signed[8], "the live log holds \(stored) events, not \(head - signed[8])")
        #expect(try queryText(directory + "/events.sqlite", "SELECT MIN(sequence) FROM events") == String(signed[8] + 1))

        // Segments (in any order) and the live log, as one history: the same head, digest and state.
        let segments = ["segment-3", "segment-1", "segment-2"].flatMap { ["--archive", directory + "/\($0).ndjson"] }
        let after = try await runLockstep(["history", "verify", "--data", directory, "--public-key", directory + "/keys.json",
                                           "--checkpoints", directory + "/checkpoints"] + segments)
        #expect(after.status == 0, "\(after)")
        #expect(Self.line(after, "head hash: ") == headBefore && Self.line(after, "state digest: ") == digestBefore, "\(after.stdout)")
        #expect(after.stdout.contains("archive segments: 3"), "\(after.stdout)")
        let replayAfter = try await runLockstep(["history", "replay", "--data", directory, "--output", "json"] + segments)
        #expect(replayAfter.status == 0 && replayAfter.stdout == replayBefore.stdout, "\(replayAfter)")
        // Replay to a sequence inside the second segment: the same state as the unarchived log gave.
        let replayAtAfter = try await runLockstep(["history", "replay", "--data", directory, "--at", String(signed[4]), "--output", "json"] + segments)
        #expect(replayAtAfter.status == 0 && replayAtAfter.stdout == replayAtBefore.stdout, "\(replayAtAfter)")
        // The live log alone verifies from its base, and says where the rest is.
        let live = try await runLockstep(["history", "verify", "--data", directory, "--public-key", directory + "/keys.json",
                                          "--checkpoints", directory + "/checkpoints"])
        #expect(live.status == 0 && live.stdout.contains("base: \(signed[8])") && Self.line(live, "state digest: ") == digestBefore, "\(live)")
        let replayLive = try await runLockstep(["history", "replay", "--data", directory])
        #expect(replayLive.status == 2 && replayLive.stderr.contains("log_archived"), "\(replayLive)")

        // Each segment verifies on its own, in Swift and in Python.
        let verifier = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("ops/verify-bundle").path
        for name in ["segment-1", "segment-2", "segment-3"] {
            let path = directory + "/\(name).ndjson"
            let swift = try await runLockstep(["history", "verify", "--bundle", path, "--public-key", directory + "/keys.json"])
            #expect(swift.status == 0 && swift.stdout.contains("ok: archive segment of"), "\(name): \(swift)")
            let python = try await ChildProcess("/usr/bin/python3", [verifier, path, "--keys", directory + "/keys.json"]).wait(seconds: 60)
            #expect(python.status == 0 && python.stdout.contains("ok: archive segment of"), "\(name): \(python)")
        }

        // A missing segment, a foreign one, an altered one: each refused.
        let missing = try await runLockstep(["history", "verify", "--data", directory, "--archive", directory + "/segment-1.ndjson",
                                             "--archive", directory + "/segment-3.ndjson"])
        #expect(missing.status == 1 && missing.stderr.contains("do not join up"), "\(missing)")
        let original = try Data(contentsOf: URL(fileURLWithPath: directory + "/segment-2.ndjson"))
        var text = String(decoding: original, as: UTF8.self)
        let marker = try #require(text.range(of: "\"record\":\"", range: text.index(text.startIndex, offsetBy: text.count / 2)..<text.endIndex))
        let at = text.index(marker.upperBound, offsetBy: 8)
        text.replaceSubrange(at...at, with: text[at] == "A" ? "B" : "A")
        try text.write(toFile: directory + "/segment-2.ndjson", atomically: true, encoding: .utf8)
        let altered = try await runLockstep(["history", "verify", "--data", directory, "--public-key", directory + "/keys.json"] + segments)
        #expect(altered.status == 1 && altered.stderr.contains("segment-2") && altered.stderr.contains("altered"), "\(altered)")
        let python = try await ChildProcess("/usr/bin/python3", [verifier, directory + "/segment-2.ndjson", "--keys", directory + "/keys.json"]).wait(seconds: 60)
        #expect(python.status == 1, "\(python)")
        try original.write(to: URL(fileURLWithPath: directory + "/segment-2.ndjson"))
        let other = temporaryDirectory()
        let otherSigned = try await Self.longHistory(other, rounds: 3)
        let foreign = try await runLockstep(["history", "archive", "--data", other, "--before", String(otherSigned[1] + 1), "--to", other + "/segment-1.ndjson",
                                             "--public-key", other + "/keys.json"])
        #expect(foreign.status == 0, "\(foreign)")
        let mixed = try await runLockstep(["history", "verify", "--data", directory, "--archive", other + "/segment-1.ndjson",
                                           "--archive", directory + "/segment-2.ndjson", "--archive", directory + "/segment-3.ndjson"])
        #expect(mixed.status == 1, "\(mixed)")
    }

    @Test func theLiveLogGoesOnFromItsBaseAndKeepsArchivedIdsTaken() async throws {
        let directory = temporaryDirectory()
        let signed = try await Self.longHistory(directory, rounds: 4)
        let archived = try await archive(directory, before: String(signed[1] + 1), to: directory + "/segment-1.ndjson")
        #expect(archived.status == 0, "\(archived)")
        let log = try SQLiteEventLog(path: directory + "/events.sqlite")
        let base = try #require(try await log.base())
        #expect(base.sequence == signed[1])
        // Reads before the base say where the events went; from the base on they are checked as ever.
        await #expect(throws: EventLogError.archived(through: signed[1])) { _ = try await log.read(after: 0, limit: 10) }
        await #expect(throws: EventLogError.archived(through: signed[1])) { _ = try await log.read(after: signed[1] - 1, limit: 10) }
        let page = try await log.read(after: signed[1], limit: 3)
        #expect(page.map(\.sequence) == [signed[1] + 1, signed[1] + 2, signed[1] + 3])
        let atBase = try await log.chainHash(at: signed[1])
        #expect(atBase == base.chainHash)
        // The coordinator opens from the base and goes on; archived migrations' ids stay taken.
        let coordinator = try await Coordinator.open(log: log)
        let started = try await coordinator.start(MigrationID("m-after"), plan: ExamplePlans.chain(length: 1), context: user, now: t(10_000))
        #expect(started.receipt != nil)
        await #expect(throws: CommandError.rejected(.migrationAlreadyExists(MigrationID("m-0")))) {
            _ = try await coordinator.start(MigrationID("m-0"), plan: ExamplePlans.chain(length: 1), context: user, now: t(10_001))
        }
        // Verification of the live log alone starts at the base; a snapshot written now names a live event.
        let report = try await HistoryVerifier.verify(log)
        let headNow = try await log.head()
        #expect(report.base == signed[1] && report.head.sequence == headNow.sequence)
        try await coordinator.saveSnapshot()
        let latest = try await log.latestSnapshot()
        #expect(latest?.sequence == headNow.sequence)
    }
}
