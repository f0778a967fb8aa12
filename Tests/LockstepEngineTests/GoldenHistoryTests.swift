import Foundation
import LockstepCore
import LockstepEngine
import LockstepStore
import Testing

/// Histories recorded by earlier builds, kept in the repository: every build must replay them to the
/// digests recorded with them. A change of format or fold that breaks this is a breaking change.
@Suite struct GoldenHistoryTests {
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Golden").path
    static let database = directory + "/scenario-v1.sqlite"
    static let digests = directory + "/scenario-v1.digests.json"

    struct Recorded: Codable, Equatable {
        /// Sequence → hex state digest after that event.
        var digests: [String: String]
        var head: String
    }

    @Test func goldenHistoriesReplayToTheirRecordedDigests() async throws {
        let recorded = try JSONDecoder().decode(Recorded.self, from: Data(contentsOf: URL(fileURLWithPath: Self.digests)))
        let copy = try copyDatabase(Self.database)
        let log = try SQLiteEventLog(path: copy + "/events.sqlite", mode: .readOnly)
        #expect(recorded.digests.count >= 10)
        for (sequence, digest) in recorded.digests {
            let state = try await History.replay(log, through: UInt64(sequence)!)
            #expect(state.digest.hex == digest, "sequence \(sequence)")
        }
        #expect(try await HistoryVerifier.verify(log).head.chainHash.hex == recorded.head)
    }

    @Test(.enabled(if: ProcessInfo.processInfo.environment["LOCKSTEP_RECORD_GOLDEN"] == "1"))
    func recordGoldenHistory() async throws {
        try? FileManager.default.removeItem(atPath: Self.database)
        let log = try SQLiteEventLog(path: Self.database)
        let coordinator = try await Coordinator.open(log: log, snapshotIntervalEvents: 0)
        try await recordScenario(on: coordinator)
        var digests: [String: String] = [:]
        let head = try await log.head()
        for sequence in 1...head.sequence {
            digests[String(sequence)] = try await History.replay(log, through: sequence).digest.hex
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
        try encoder.encode(Recorded(digests: digests, head: head.chainHash.hex)).write(to: URL(fileURLWithPath: Self.digests))
        try editDatabase(Self.database, "PRAGMA wal_checkpoint(TRUNCATE)")
    }
}
