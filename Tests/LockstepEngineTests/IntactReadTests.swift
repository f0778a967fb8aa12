import LockstepStore
import Testing

/// A damaged log's intact reads (`readIntact`): every event before the damage, then the damage at its
/// place; never a page that passes the damage over.
@Suite struct IntactReadTests {
    /// One event at a time, each read checks only its own event: the versions between them are checked by
    /// the intact read itself (a review found a version edited by hand passed over, and an export of the
    /// stream ending with exit 0).
    @Test func aStreamsIntactReadStopsWhereItsVersionsBreak() async throws {
        let path = temporaryDirectory() + "/events.sqlite"
        let log = try SQLiteEventLog(path: path)
        for version in 0..<5 { _ = try await log.append(AppendRequest(stream: "s", expectedVersion: UInt64(version), records: [Array("e\(version)".utf8)])) }
        try editDatabase(path, "UPDATE events SET stream_version = 99 WHERE sequence = 4")
        let (events, damage) = await log.readIntact(stream: "s", after: 0, limit: 100)
        #expect(events.map(\.sequence) == [1, 2, 3])
        guard case .corrupted(let position, let reason)? = damage else { Issue.record("no damage reported: \(String(describing: damage))"); return }
        #expect(position == 5 && reason.contains("follows 3"), "\(reason)")
        // Intact, the same read has no damage and every event.
        let clean = try SQLiteEventLog(path: temporaryDirectory() + "/events.sqlite")
        for version in 0..<5 { _ = try await clean.append(AppendRequest(stream: "s", expectedVersion: UInt64(version), records: [Array("e\(version)".utf8)])) }
        let whole = await clean.readIntact(stream: "s", after: 0, limit: 100)
        #expect(whole.events.count == 5 && whole.damage == nil)
    }
}

/// A record edited past what an append may write (1 MiB) is damage found before its bytes are read
/// into memory, on a whole-log read and a stream's alike (SQLite; PostgresStoredLimitTests on PostgreSQL).
@Suite struct OversizedRecordTests {
    @Test func anOversizedStoredRecordIsDamageNotARead() async throws {
        let path = temporaryDirectory() + "/events.sqlite"
        let log = try SQLiteEventLog(path: path)
        _ = try await log.append(AppendRequest(stream: "s", expectedVersion: 0, records: [Array("e0".utf8), Array("e1".utf8)]))
        try editDatabase(path, "UPDATE events SET record = zeroblob(2097152) WHERE sequence = 2")
        for read in [0, 1] {
            do {
                _ = read == 0 ? try await log.read(after: 0, limit: 10) : try await log.read(stream: "s", after: 0, limit: 10)
                Issue.record("an oversized record was read (\(read == 0 ? "the log" : "its stream"))")
            } catch {
                #expect(error.code == "log_corrupted" && error.description.contains("its record is 2097152 bytes"), "\(error)")
            }
        }
    }
}
