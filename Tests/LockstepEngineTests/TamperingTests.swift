import Foundation
import LockstepCore
import LockstepEngine
import LockstepStore
import Testing

/// An operator edits a copy of the database by hand; `lockstep history verify` must find each
/// alteration at its exact position and exit 1.
@Suite(.serialized) struct TamperingTests {
    static let eventsInScenario: UInt64 = scenarioEventCount

    func tamperedCopy(_ sql: String) async throws -> ProcessOutput {
        try await tamperedCopy { try editDatabase($0, sql) }
    }

    @Test func theScenarioHasTheExpectedLength() async throws {
        let result = try await tamperedCopy("SELECT 1")
        #expect(result.status == 0)
        #expect(result.stdout.contains("ok: \(Self.eventsInScenario) events, 3 migrations, 3 plans"))
    }

    /// A tampered copy of the scenario's database, altered by `edit`, then `lockstep history verify` on it.
    func tamperedCopy(snapshotAt snapshot: Bool = false, edit: (String) throws -> Void) async throws -> ProcessOutput {
        let directory = temporaryDirectory()
        let coordinator = try await Coordinator.open(log: try SQLiteEventLog(path: directory + "/events.sqlite"), snapshotIntervalEvents: 0)
        try await recordScenario(on: coordinator)
        if snapshot { _ = try await coordinator.saveSnapshot() }
        let copy = try copyDatabase(directory + "/events.sqlite")
        try edit(copy + "/events.sqlite")
        return try await runLockstep(["history", "verify", "--data", copy])
    }

    @Test(arguments: [(10, 7), (2, 12), (0, 1), (39, 25)])
    func aFlippedByteIsFoundAtItsEvent(offset: Int, sequence: UInt64) async throws {
        let result = try await tamperedCopy { try flipByte($0, table: "events", column: "record", sequence: sequence, offset: offset) }
        #expect(result.status == 1)
        #expect(result.stderr.contains("corrupted at sequence \(sequence): the chain hash does not match the stored bytes"))
    }

    @Test func aFlippedByteInAStoredHashIsFound() async throws {
        let result = try await tamperedCopy { try flipByte($0, table: "events", column: "chain_hash", sequence: 18, offset: 31) }
        #expect(result.status == 1)
        #expect(result.stderr.contains("corrupted at sequence 18: the chain hash does not match the stored bytes"))
    }

    /// Regression (issue 14): exporting a log damaged at event 11 printed nothing, not even events 1–10.
    /// Now every intact event before the damage is exported, then the damage is named (exit 1).
    @Test func exportingADamagedLogPrintsEveryEventBeforeTheDamage() async throws {
        let directory = temporaryDirectory()
        let coordinator = try await Coordinator.open(log: try SQLiteEventLog(path: directory + "/events.sqlite"), snapshotIntervalEvents: 0)
        try await recordScenario(on: coordinator)
        let copy = try copyDatabase(directory + "/events.sqlite")
        try flipByte(copy + "/events.sqlite", table: "events", column: "record", sequence: 11, offset: 2)
        let export = try await runLockstep(["history", "export", "--data", copy])
        #expect(export.status == 1)
        let sequences = export.stdout.split(separator: "\n").compactMap { line in
            (try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])?["sequence"] as? Int
        }
        #expect(sequences == Array(1...10))
        #expect(export.stderr.contains("corrupted at sequence 11"), "\(export.stderr)")
    }

    /// A read of one stream (a watch, a migration's history) checks each event's link against its
    /// predecessor's, which may belong to another stream: an altered record, an altered link before it,
    /// or a missing predecessor is reported at its position, not served.
    @Test func aReadOfOneStreamFindsDamageAtItsEvent() async throws {
        let directory = temporaryDirectory()
        let log = try SQLiteEventLog(path: directory + "/events.sqlite")
        try await recordScenario(on: try await Coordinator.open(log: log, snapshotIntervalEvents: 0))
        let intact = try await log.read(after: 0, limit: 1_000)
        // An event of a migration stream whose predecessor belongs to another stream, so the check crosses streams.
        guard let victim = intact.dropFirst().first(where: { event in
            event.stream.hasPrefix("migration/") && intact[Int(event.sequence) - 2].stream != event.stream
        }) else { Issue.record("the scenario interleaves no streams"); return }
        #expect(try await log.read(stream: victim.stream, after: 0, limit: 1_000) == intact.filter { $0.stream == victim.stream })
        let cases: [(String, (String) throws -> Void, UInt64)] = [
            ("a flipped record byte", { try flipByte($0, table: "events", column: "record", sequence: victim.sequence, offset: 1) }, victim.sequence),
            ("a flipped byte in the link before it", { try flipByte($0, table: "events", column: "chain_hash", sequence: victim.sequence - 1, offset: 3) },
             victim.sequence),
            ("its predecessor deleted", { try editDatabase($0, "DELETE FROM events WHERE sequence = \(victim.sequence - 1)") }, victim.sequence - 1),
        ]
        for (what, edit, position) in cases {
            let copy = try copyDatabase(directory + "/events.sqlite")
            try edit(copy + "/events.sqlite")
            let damaged = try SQLiteEventLog(path: copy + "/events.sqlite", mode: .readOnly)
            await #expect(throws: EventLogError.self, "\(what)") {
                _ = try await damaged.read(stream: victim.stream, after: 0, limit: 1_000)
            }
            do {
                _ = try await damaged.read(stream: victim.stream, after: 0, limit: 1_000)
            } catch {
                guard case .corrupted(let at, _) = error else { Issue.record("\(what): \(error)"); continue }
                #expect(at == position, "\(what): reported at \(at)")
            }
        }
    }

    @Test func aDeletedRowIsFoundAtItsPosition() async throws {
        let result = try await tamperedCopy("DELETE FROM events WHERE sequence = 5")
        #expect(result.status == 1)
        #expect(result.stderr.contains("corrupted at sequence 5: event 5 is missing"))
    }

    @Test func swappedRowsAreFoundAtTheFirstOfThem() async throws {
        let result = try await tamperedCopy("""
            UPDATE events SET sequence = -1 WHERE sequence = 9;
            UPDATE events SET sequence = 9 WHERE sequence = 10;
            UPDATE events SET sequence = 10 WHERE sequence = -1;
            """)
        #expect(result.status == 1)
        #expect(result.stderr.contains("corrupted at sequence 9: the chain hash does not match"))
    }

    @Test func aTruncatedTailIsFoundAtTheFirstMissingEvent() async throws {
        let result = try await tamperedCopy("DELETE FROM events WHERE sequence > 20")
        #expect(result.status == 1)
        #expect(result.stderr.contains("corrupted at sequence 21: the log ends at event 20 but its last commit recorded event \(Self.eventsInScenario)"))
    }

    @Test func withASnapshotAtTheHeadEachAlterationIsStillFoundAtItsOwnPosition() async throws {
        // A snapshot at the head must not move the reported position to the head.
        let truncated = try await tamperedCopy(snapshotAt: true) { try editDatabase($0, "DELETE FROM events WHERE sequence > 20") }
        #expect(truncated.status == 1)
        #expect(truncated.stderr.contains("corrupted at sequence 21:"), "\(truncated.stderr)")
        let swapped = try await tamperedCopy(snapshotAt: true) {
            try editDatabase($0, """
                UPDATE events SET sequence = -1 WHERE sequence = 24;
                UPDATE events SET sequence = 24 WHERE sequence = 25;
                UPDATE events SET sequence = 25 WHERE sequence = -1;
                """)
        }
        #expect(swapped.status == 1)
        #expect(swapped.stderr.contains("corrupted at sequence 24: the chain hash does not match"), "\(swapped.stderr)")
        let flipped = try await tamperedCopy(snapshotAt: true) { try flipByte($0, table: "events", column: "record", sequence: 2, offset: 4) }
        #expect(flipped.stderr.contains("corrupted at sequence 2: the chain hash does not match"), "\(flipped.stderr)")
    }

    @Test func anAlteredSnapshotIsFoundAtItsSequence() async throws {
        let result = try await tamperedCopy(snapshotAt: true) { try flipByte($0, table: "snapshots", column: "state", sequence: Self.eventsInScenario, offset: 30) }
        #expect(result.status == 1)
        #expect(result.stderr.contains("corrupted at sequence \(Self.eventsInScenario): the snapshot at \(Self.eventsInScenario) does not match the replayed state"))
    }

    @Test func anEditedVersionColumnIsFound() async throws {
        let result = try await tamperedCopy("UPDATE events SET stream_version = 99 WHERE sequence = 14")
        #expect(result.status == 1)
        #expect(result.stderr.contains("corrupted at sequence 14: the row says"))
    }

    /// Regression: `store copy` took a source event's stream version less one, unchecked: a version edited
    /// to 0 trapped the process. Now the copy stops at that event, exit 1, and says why.
    @Test func aStreamVersionOfZeroStopsACopyInsteadOfTrappingIt() async throws {
        let directory = temporaryDirectory()
        let coordinator = try await Coordinator.open(log: try SQLiteEventLog(path: directory + "/events.sqlite"), snapshotIntervalEvents: 0)
        try await recordScenario(on: coordinator)
        let copy = try copyDatabase(directory + "/events.sqlite")
        try editDatabase(copy + "/events.sqlite", "UPDATE events SET stream_version = 0 WHERE sequence = 1")
        let copied = try await runLockstep(["store", "copy", "--from", copy, "--to", temporaryDirectory()])
        #expect(copied.status == 1 && copied.stderr.contains("event 1 of the source has stream version 0"), "\(copied)")
        // A version out of step inside a run of one stream's events (copied in one append, numbered from
        // its first): refused, not silently renumbered.
        let skipped = try copyDatabase(directory + "/events.sqlite")
        try editDatabase(skipped + "/events.sqlite", "UPDATE events SET stream_version = stream_version + 100000 WHERE sequence = "
                         + "(SELECT min(e.sequence) FROM events e JOIN events p ON p.sequence = e.sequence - 1 AND p.stream = e.stream)")
        let renumbered = try await runLockstep(["store", "copy", "--from", skipped, "--to", temporaryDirectory()])
        #expect(renumbered.status == 1 && renumbered.stderr.contains("follows; the source log is damaged"), "\(renumbered)")
    }

    @Test func aRowAddedAfterTheHeadIsFound() async throws {
        let result = try await tamperedCopy("""
            INSERT INTO events (sequence, stream, stream_version, record, chain_hash)
              SELECT sequence + 1, stream, stream_version + 1, record, chain_hash FROM events WHERE sequence = \(Self.eventsInScenario)
            """)
        #expect(result.status == 1)
        #expect(result.stderr.contains("corrupted at sequence \(Self.eventsInScenario + 1):"))
    }
}
