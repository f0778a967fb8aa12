import Foundation
import LockstepCore
import LockstepEngine
import LockstepStore
import Testing

/// Histories recorded by earlier builds, kept in the repository: every build must replay them, and
/// reach the digests recorded with them.
///
/// The logs (`Golden/*.sqlite`) are never re-recorded: they are what old builds wrote, and replaying
/// them proves this build still reads them. The expected digests (`*.digests.json`) are tied to the
/// canonical state format; when a change bumps `LogState.canonicalFormat` on purpose, re-record them with
/// `LOCKSTEP_RECORD_GOLDEN=digests` (and say so in the commit). A new history is added with
/// `LOCKSTEP_RECORD_GOLDEN=new:NAME`.
@Suite(.serialized) struct GoldenHistoryTests {
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Golden").path

    struct Recorded: Codable, Equatable {
        /// The canonical state format the digests are in.
        var format: Int
        /// Sequence → hex state digest after that event.
        var digests: [String: String]
        /// The chain hash of the last event: fixed forever for a given log.
        var head: String
    }

    static var histories: [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [])
            .filter { $0.hasSuffix(".sqlite") }.map { String($0.dropLast(".sqlite".count)) }.sorted()
    }

    @Test func everyGoldenHistoryReplaysToItsRecordedDigests() async throws {
        #expect(Self.histories.count >= 2)
        for name in Self.histories {
            let recorded = try JSONDecoder().decode(Recorded.self, from: Data(contentsOf: URL(fileURLWithPath: "\(Self.directory)/\(name).digests.json")))
            #expect(recorded.format == Int(LogState.canonicalFormat), "\(name): digests recorded in another canonical format")
            let copy = try copyDatabase("\(Self.directory)/\(name).sqlite")
            let log = try SQLiteEventLog(path: copy + "/events.sqlite", mode: .readOnly)
            #expect(recorded.digests.count >= 10)
            for (sequence, digest) in recorded.digests {
                let state = try await History.replay(log, through: UInt64(sequence)!)
                #expect(state.digest.hex == digest, "\(name) at sequence \(sequence)")
            }
            #expect(try await HistoryVerifier.verify(log).head.chainHash.hex == recorded.head, "\(name)")
        }
    }

    @Test(.enabled(if: ProcessInfo.processInfo.environment["LOCKSTEP_RECORD_GOLDEN"] != nil))
    func recordGolden() async throws {
        let mode = ProcessInfo.processInfo.environment["LOCKSTEP_RECORD_GOLDEN"] ?? ""
        if mode.hasPrefix("new:") {
            let name = String(mode.dropFirst(4))
            let path = "\(Self.directory)/\(name).sqlite"
            try? FileManager.default.removeItem(atPath: path)
            let coordinator = try await Coordinator.open(log: try SQLiteEventLog(path: path), snapshotIntervalEvents: 0)
            try await recordScenario(on: coordinator)
            try await recordOrchestrationScenario(on: coordinator)
            try await recordExposureScenario(on: coordinator)
            try await recordFreezeScenario(on: coordinator)
            try await recordWindowScenario(on: coordinator)
            try await recordCheckScenario(on: coordinator)
            try editDatabase(path, "PRAGMA wal_checkpoint(TRUNCATE)")
        }
        for name in Self.histories {
            let copy = try copyDatabase("\(Self.directory)/\(name).sqlite")
            let log = try SQLiteEventLog(path: copy + "/events.sqlite", mode: .readOnly)
            let head = try await log.head()
            var digests: [String: String] = [:]
            for sequence in 1...head.sequence {
                digests[String(sequence)] = try await History.replay(log, through: sequence).digest.hex
            }
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
            try encoder.encode(Recorded(format: Int(LogState.canonicalFormat), digests: digests, head: head.chainHash.hex))
                .write(to: URL(fileURLWithPath: "\(Self.directory)/\(name).digests.json"))
        }
    }
}
