import Crypto
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
        let exportBefore = try await runLockstep(["history", "export", "--data", directory])
        let explainBefore = try await runLockstep(["history", "explain", "long-1", "--data", directory])
        let reportBefore = try await runLockstep(["migration", "report", "m-0", "--data", directory, "--format", "json"])
        #expect(exportBefore.status == 0 && explainBefore.status == 0 && reportBefore.status == 0, "\(explainBefore) \(reportBefore)")
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
        // Export, explain and report read across the segments as they read the log before.
        let exportAfter = try await runLockstep(["history", "export", "--data", directory] + segments)
        #expect(exportAfter.status == 0 && exportAfter.stdout == exportBefore.stdout, "\(exportAfter.stderr)")
        let explainAfter = try await runLockstep(["history", "explain", "long-1", "--data", directory] + segments)
        #expect(explainAfter.status == 0 && explainAfter.stdout == explainBefore.stdout, "\(explainAfter)")
        let reportAfter = try await runLockstep(["migration", "report", "m-0", "--data", directory, "--format", "json"] + segments)
        #expect(reportAfter.status == 0 && reportAfter.stdout == reportBefore.stdout, "\(reportAfter.stderr)")
        let gone = try await runLockstep(["history", "explain", "m-0", "--data", directory])
        #expect(gone.status == 1 && gone.stderr.contains("not in this history"), "\(gone)")
        // The live log alone verifies from its base, and says where the rest is.
        let live = try await runLockstep(["history", "verify", "--data", directory, "--public-key", directory + "/keys.json",
                                          "--checkpoints", directory + "/checkpoints"])
        #expect(live.status == 0 && live.stdout.contains("base: \(signed[8])") && Self.line(live, "state digest: ") == digestBefore, "\(live)")
        let replayLive = try await runLockstep(["history", "replay", "--data", directory, "--output", "json"])
        #expect(replayLive.status == 0 && replayLive.stderr.contains("replayed from the live log's base (event \(signed[8]))"), "\(replayLive)")
        // From the base, the same digest as the full replay before archival (the base is the folded state).
        func digest(_ output: ProcessOutput) throws -> String? {
            (try JSONSerialization.jsonObject(with: Data(output.stdout.utf8)) as? [String: Any])?["digest"] as? String
        }
        #expect(try digest(replayLive) != nil && digest(replayLive) == digest(replayBefore))
        let replayArchived = try await runLockstep(["history", "replay", "--data", directory, "--at", "5"])
        #expect(replayArchived.status == 2 && replayArchived.stderr.contains("log_archived"), "\(replayArchived)")

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
        // --events-max bounds a segment: the cut moves back to the last checkpoint within it, and says why.
        let bounded = try await archive(directory, before: String(signed[1] + 1), to: directory + "/segment-1.ndjson",
                                        extra: ["--dry-run", "--events-max", String(signed[0] + 2)])
        #expect(bounded.status == 0 && bounded.stdout.contains("would archive events 1 to \(signed[0]) "), "\(bounded)")
        #expect(bounded.stderr.contains("a segment holds at most \(signed[0] + 2) events"), "\(bounded)")
        let archived = try await archive(directory, before: String(signed[1] + 1), to: directory + "/segment-1.ndjson")
        #expect(archived.status == 0, "\(archived)")
        // Webhook cursors that cannot be read hold everything back.
        try "{not json".write(toFile: directory + "/webhooks.cursor.json", atomically: true, encoding: .utf8)
        let unreadable = try await archive(directory, before: String(signed[3] + 1), to: directory + "/segment-2.ndjson")
        #expect(unreadable.status == 2 && unreadable.stderr.contains("cannot read the webhook cursors"), "\(unreadable)")
        #expect(!FileManager.default.fileExists(atPath: directory + "/segment-2.ndjson"))
        try FileManager.default.removeItem(atPath: directory + "/webhooks.cursor.json")
        // The plans and their versions are in the base: plan list reads them as before.
        let plans = try await runLockstep(["plan", "list", "--data", directory])
        #expect(plans.status == 0 && plans.stdout.contains("chain-2"), "\(plans)")
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
        // Replays, diffs and time look-ups from the base on work; before it they say where the events went.
        let head = try await log.head()
        let replayed = try await History.replay(log, through: signed[2], keepingSettled: true)
        #expect(replayed.lastSequence == signed[2] && replayed.everyMigrationInOrder.map(\.id.rawValue).contains("m-2"))
        await #expect(throws: EventLogError.archived(through: signed[1])) { _ = try await History.replay(log, through: signed[1] - 1) }
        let (old, new) = try await History.states(log, from: signed[1], to: head.sequence)
        #expect(old.lastSequence == signed[1] && new.lastSequence == head.sequence)
        await #expect(throws: EventLogError.archived(through: signed[1])) { _ = try await History.lastSequence(in: log, recordedAtOrBefore: t(1)) }
        let late = try await History.lastSequence(in: log, recordedAtOrBefore: t(1_000_000))
        #expect(late == head.sequence)
        // An archival from a base that has moved meanwhile archives nothing.
        let stale = Snapshot(sequence: signed[2], chainHash: try #require(try await log.chainHash(at: signed[2])), state: [], digest: [UInt8](repeating: 0, count: 32))
        await #expect(throws: EventLogError.invalidRequest("the live log's base moved from 0 to \(signed[1]) meanwhile (another archival): nothing was archived")) {
            try await log.archive(through: stale, after: 0)
        }
        // The coordinator opens from the base and goes on; archived migrations' ids stay taken.
        let coordinator = try await Coordinator.open(log: log)
        // An archived migration is not a missing one: reading it says where its events went.
        await #expect(throws: EventLogError.archived(through: signed[1])) { _ = try await coordinator.readMigrationSayingArchived(MigrationID("m-0")) }
        #expect(try await coordinator.readMigration(MigrationID("m-0")) == nil, "to the engine (and agents) it is simply not there")
        #expect(try await coordinator.readMigrationSayingArchived(MigrationID("never")) == nil)
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

/// Segments come from outside (a bucket, a colleague, an attacker): whatever their bytes, verifying or
/// reading one never traps, and any change to a segment is refused.
@Suite struct ArchiveSegmentFuzzTests {
    @Test func mutatedSegmentsAreRefusedAndNeverTrap() async throws {
        let directory = temporaryDirectory()
        let signed = try await ArchiveTests.longHistory(directory, rounds: 3)
        let archived = try await runLockstep(["history", "archive", "--data", directory, "--before", String(signed[1] + 1), "--to", directory + "/segment.ndjson",
                                              "--public-key", directory + "/keys.json"])
        #expect(archived.status == 0, "\(archived)")
        let keys = try CheckpointKeys.load(directory + "/keys.json")
        let original = try [UInt8](Data(contentsOf: URL(fileURLWithPath: directory + "/segment.ndjson")))
        #expect(await HistoryBundle.verify(original, keys: keys).problems.isEmpty)
        var random = SeededGenerator(seed: 0xA2C4)
        let lines = original.split(separator: 0x0A, omittingEmptySubsequences: false).map(Array.init)
        let path = directory + "/mutated.ndjson"
        let originalEvents = try ArchiveSegment.open(directory + "/segment.ndjson").events()
        var refused = 0
        for round in 0..<600 {
            await yieldToOtherTests()
            var bytes = original
            switch round % 6 {
            case 0: bytes[Int.random(in: 0..<bytes.count, using: &random)] = UInt8.random(in: 0...255, using: &random)
            case 1: bytes = Array(bytes.prefix(Int.random(in: 0..<bytes.count, using: &random)))
            case 2: bytes.insert(UInt8.random(in: 0...255, using: &random), at: Int.random(in: 0...bytes.count, using: &random))
            case 3:
                // A line dropped or repeated, the header kept.
                var edited = lines
                let index = Int.random(in: 1..<edited.count, using: &random)
                if Bool.random(using: &random) { edited.remove(at: index) } else { edited.insert(edited[index], at: index) }
                bytes = Array(edited.joined(separator: [0x0A]))
            case 4:
                // A digit of the header changed (its counts, base or head).
                let newline = bytes.firstIndex(of: 0x0A)!
                let digits = bytes[..<newline].indices.filter { (0x30...0x39).contains(bytes[$0]) }
                let at = digits[Int.random(in: 0..<digits.count, using: &random)]
                bytes[at] = bytes[at] == 0x39 ? 0x30 : bytes[at] + 1
            default: bytes = (0..<Int.random(in: 0...256, using: &random)).map { _ in UInt8.random(in: 0...255, using: &random) }
            }
            // Half the body's changes come with the header's body_sha256 recomputed (it is not signed: anyone
            // can), so the line parser, the chain and the records are what must refuse them.
            if round % 2 == 0, round % 6 != 4, let newline = bytes.firstIndex(of: 0x0A), newline + 1 <= bytes.count,
               let range = String(decoding: bytes[..<newline], as: UTF8.self).range(of: #""body_sha256":"[0-9a-f]{64}""#, options: .regularExpression) {
                var header = String(decoding: bytes[..<newline], as: UTF8.self)
                let hash = Array(SHA256.hash(data: Array(bytes[(newline + 1)...]))).hexString
                header.replaceSubrange(range, with: "\"body_sha256\":\"\(hash)\"")
                bytes = Array(header.utf8) + bytes[newline...]
            }
            guard bytes != original else { continue }
            let report = await HistoryBundle.verify(bytes, keys: keys)
            #expect(!report.problems.isEmpty, "a changed segment verified (round \(round))")
            try Data(bytes).write(to: URL(fileURLWithPath: path))
            // The reader takes only the events (the CLI verifies each segment as a bundle first): what it
            // reads as a history must be exactly the original events.
            do {
                let history = try await ArchivedHistory.open(segments: [path], live: nil)
                _ = try await HistoryVerifier.verify(history)
                let events = try ArchiveSegment.open(path).events()
                #expect(events == originalEvents, "a changed segment was read as another history (round \(round))")
            } catch {
                refused += 1
            }
        }
        #expect(refused > 400)

        // An event line naming "record" twice, its last copy the true record (the one JSON parsers keep,
        // so the chain holds), the body's hash recomputed: a reader keeping the first copy would read
        // another history. Refused by both.
        var edited = lines
        let index = try #require(edited.firstIndex { String(decoding: $0, as: UTF8.self).contains(#""record":""#) })
        edited[index] = Array(String(decoding: edited[index], as: UTF8.self)
            .replacingOccurrences(of: #""record":""#, with: #""record":"AAAA","record":""#).utf8)
        var header = String(decoding: edited[0], as: UTF8.self)
        let body = Array(edited.dropFirst().joined(separator: [0x0A]))
        let range = try #require(header.range(of: #""body_sha256":"[0-9a-f]{64}""#, options: .regularExpression))
        header.replaceSubrange(range, with: "\"body_sha256\":\"\(Array(SHA256.hash(data: body)).hexString)\"")
        let twice = Array(header.utf8) + [0x0A] + body
        let report = await HistoryBundle.verify(twice, keys: keys)
        #expect(report.problems.contains { $0.contains(#"names "record" twice"#) }, "\(report.problems)")
        try Data(twice).write(to: URL(fileURLWithPath: path))
        #expect { _ = try ArchiveSegment.open(path).events() } throws: { "\($0)".contains(#"names "record" twice"#) }
    }
}

/// Archival on PostgreSQL while a coordinator runs on the same database: the cut held back by a webhook
/// that has not delivered (its cursor in `lockstep_webhook_cursors`) and by a migration that had not
/// settled; the coordinator writes on and reports the base; restarted, it opens from the base; the
/// segments and the database verify and replay as one history, to the digest from before.
@Suite(.serialized, .dropsPostgresDatabases) struct PostgresArchiveTests {
    /// `lockstep serve --dev` on `store`; returns the process and its gRPC address.
    static func serve(_ store: String) async throws -> (ChildProcess, String) {
        let directory = temporaryDirectory()
        let ready = directory + "/ready.json"
        let process = try ChildProcess(try lockstepBinary(), ["serve", "--store", store, "--dev", "--http-listen", "127.0.0.1:0",
                                                             "--grpc-listen", "127.0.0.1:0", "--ready-file", ready])
        let deadline = Date().addingTimeInterval(30)
        while !FileManager.default.fileExists(atPath: ready) {
            guard Date() < deadline else {
                process.kill(SIGTERM)
                throw TestFailure("the server never became ready: \(try await process.wait(seconds: 10))")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: ready))) as? [String: String]
        return (process, try #require(json?["grpc"]))
    }

    @Test func archivalRunsBesideARunningCoordinatorAndTheHistoryStaysWhole() async throws {
        let directory = temporaryDirectory()
        let signed = try await ArchiveTests.longHistory(directory)
        let postgres = TestPostgres.shared
        let database = try await postgres.makeDatabase()
        let store = try await postgres.url(database)
        let copied = try await runLockstep(["store", "copy", "--from", directory, "--to", store])
        #expect(copied.status == 0, "\(copied)")
        let before = try await runLockstep(["history", "verify", "--store", store])
        let replayBefore = try await runLockstep(["history", "replay", "--store", store, "--output", "json"])
        #expect(before.status == 0 && replayBefore.status == 0, "\(before) \(replayBefore)")
        // A webhook that has delivered up to round 5's checkpoint only.
        _ = try await postgres.psql(database, """
            CREATE TABLE IF NOT EXISTS lockstep_webhook_cursors (webhook text PRIMARY KEY, sequence bigint NOT NULL CHECK (sequence >= 0));
            INSERT INTO lockstep_webhook_cursors VALUES ('audit', \(signed[5]))
            """)
        let (server, grpc) = try await Self.serve(store)
        do {
            func archive(_ sequence: UInt64, _ name: String) async throws -> ProcessOutput {
                try await runLockstep(["history", "archive", "--store", store, "--before", String(sequence), "--to", directory + "/\(name)",
                                       "--public-key", directory + "/keys.json"])
            }
            // Held back by the webhook to round 5, then by long-1 (started in round 2, settled in round 6) to round 1.
            let first = try await archive(signed[7] + 1, "segment-1.ndjson")
            #expect(first.status == 0 && first.stdout.contains("events 1 to \(signed[1])"), "\(first)")
            #expect(first.stderr.contains("webhook audit has delivered only up to event \(signed[5])") && first.stderr.contains("migration long-1"), "\(first.stderr)")
            // The coordinator writes on meanwhile.
            let freeze = try await runLockstep(["freeze", "add", "--server", grpc, "--reason", "archival test", "--id", "after-archive", "--service", "svc-0"])
            #expect(freeze.status == 0, "\(freeze)")
            _ = try await postgres.psql(database, "UPDATE lockstep_webhook_cursors SET sequence = 1000000")
            let second = try await archive(signed[7] + 1, "segment-2.ndjson")
            #expect(second.status == 0 && second.stdout.contains("events \(signed[1] + 1) to \(signed[7])"), "\(second)")
            let served = try await runLockstep(["history", "verify", "--server", grpc, "--public-key", directory + "/keys.json",
                                                "--checkpoints", directory + "/checkpoints"])
            #expect(served.status == 0 && served.stdout.contains("base: \(signed[7])"), "\(served)")
            // A reader asking the server about an archived migration is told where its events went.
            let explained = try await runLockstep(["history", "explain", "m-0", "--server", grpc])
            #expect(explained.status != 0 && explained.stderr.contains("log_archived"), "\(explained)")
            let shown = try await runLockstep(["migration", "status", "m-0", "--server", grpc])
            #expect(shown.status != 0 && shown.stderr.contains("log_archived"), "\(shown)")
            let never = try await runLockstep(["migration", "status", "never-started", "--server", grpc])
            #expect(never.status != 0 && never.stderr.contains("migration_not_found"), "\(never)")
            // Archived migrations are not listed from the live log, and their ids stay taken.
            let rows = try await postgres.psql(database, "SELECT count(*) FROM lockstep_events WHERE stream = 'migration/m-0'")
            #expect(rows.trimmingCharacters(in: .whitespacesAndNewlines) == "0", "\(rows)")
        } catch {
            server.kill(SIGTERM)
            throw error
        }
        server.kill(SIGTERM)
        _ = try await server.wait(seconds: 30)
        // Restarted, a coordinator opens from the base.
        let (again, grpcAgain) = try await Self.serve(store)
        let served = try await runLockstep(["history", "verify", "--server", grpcAgain])
        again.kill(SIGTERM)
        _ = try await again.wait(seconds: 30)
        #expect(served.status == 0 && served.stdout.contains("base: \(signed[7])"), "\(served)")

        // The segments and the database as one history: the digest before, plus the freeze since.
        let segments = ["segment-2.ndjson", "segment-1.ndjson"].flatMap { ["--archive", directory + "/\($0)"] }
        let after = try await runLockstep(["history", "verify", "--store", store, "--public-key", directory + "/keys.json"] + segments)
        #expect(after.status == 0 && after.stdout.contains("archive segments: 2"), "\(after)")
        let headBefore = try #require(ArchiveTests.line(before, "head sequence: ")).dropFirst("head sequence: ".count)
        let replayAt = try await runLockstep(["history", "replay", "--store", store, "--at", String(headBefore), "--output", "json"] + segments)
        #expect(replayAt.status == 0 && replayAt.stdout == replayBefore.stdout, "\(replayAt)")
    }
}
