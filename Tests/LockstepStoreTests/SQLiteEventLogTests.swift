import CSQLite
import Foundation
@testable import LockstepStore
import Synchronization
import Testing

@Suite struct SQLiteEventLogTests {
    @Test func durabilitySettingsReadBackAsWALAndFull() async throws {
        let log = try SQLiteEventLog(path: temporaryDirectory() + "/events.sqlite")
        let settings = try await log.durabilitySettings()
        #expect(settings.journalMode == "wal")
        #expect(settings.synchronous == 2)
    }

    @Test func eventsSurviveReopening() async throws {
        let path = temporaryDirectory() + "/events.sqlite"
        do {
            let log = try SQLiteEventLog(path: path)
            _ = try await log.append(AppendRequest(stream: "a", expectedVersion: 0, records: [bytes("1"), bytes("2")]))
        }
        let reopened = try SQLiteEventLog(path: path)
        #expect(try await readAll(reopened).map(\.record) == [bytes("1"), bytes("2")])
        _ = try await reopened.append(AppendRequest(stream: "a", expectedVersion: 2, records: [bytes("3")]))
        let readOnly = try SQLiteEventLog(path: path, mode: .readOnly)
        #expect(try await readAll(readOnly).map(\.sequence) == [1, 2, 3])
        await #expect(throws: EventLogError.writesStopped(reason: "the log was opened read-only")) {
            try await readOnly.append(AppendRequest(stream: "a", expectedVersion: 3, records: [bytes("4")]))
        }
    }

    @Test func readsAreCappedAtTheReadLimit() async throws {
        let log = try SQLiteEventLog(path: temporaryDirectory() + "/events.sqlite")
        var version: UInt64 = 0
        while version < UInt64(EventLogLimits.readPageEventsMax) + 500 {
            let records = [[UInt8]](repeating: bytes("e"), count: EventLogLimits.appendRequestEventsMax)
            version = try await log.append(AppendRequest(stream: "a", expectedVersion: version, records: records)).streamVersion
        }
        #expect(try await log.read(after: 0, limit: Int.max).count == EventLogLimits.readPageEventsMax)
        #expect(try await log.read(after: 0, limit: EventLogLimits.readPageEventsMax - 1).count == EventLogLimits.readPageEventsMax - 1)
    }

    @Test func concurrentAppendsShareCommits() async throws {
        let commits = Mutex<[(events: Int, appends: Int)]>([])
        let log = try SQLiteEventLog(path: temporaryDirectory() + "/events.sqlite") { commit in
            #expect(commit.durationNanos > 0)
            commits.withLock { $0.append((commit.events, commit.appends)) }
        }
        let writers = 64
        try await appendBurst(to: log, writers: writers, appendsEach: 4)
        let recorded = commits.withLock { $0 }
        #expect(recorded.map(\.events).reduce(0, +) == writers * 4)
        // With 64 writers in flight, commits must batch: far fewer transactions than appends.
        #expect(recorded.count < writers * 4 / 2)
        #expect(recorded.contains { $0.appends > 1 })
    }

    @Test func oneCommitCarriesAtMostTheBatchLimit() async throws {
        let commits = Mutex<[Int]>([])
        let log = try SQLiteEventLog(path: temporaryDirectory() + "/events.sqlite") { commit in commits.withLock { $0.append(commit.events) } }
        // Six appends of 1,000 events queued together: 6,000 events cannot share one 4,096-event commit.
        try await withThrowingTaskGroup(of: Void.self) { group in
            for stream in 0..<6 {
                group.addTask {
                    let records = [[UInt8]](repeating: bytes("e"), count: EventLogLimits.appendRequestEventsMax)
                    _ = try await log.append(AppendRequest(stream: "s\(stream)", expectedVersion: 0, records: records))
                }
            }
            try await group.waitForAll()
        }
        let sizes = commits.withLock { $0 }
        #expect(sizes.reduce(0, +) == 6_000)
        #expect(sizes.allSatisfy { $0 <= EventLogLimits.commitBatchEventsMax })
        #expect(try await log.head().sequence == 6_000)
    }

    @Test func snapshotsAreLimitedInSize() async throws {
        let log = InMemoryEventLog()
        _ = try await log.append(AppendRequest(stream: "a", expectedVersion: 0, records: [bytes("1")]))
        let head = await log.head()
        let oversized = [UInt8](repeating: 0, count: EventLogLimits.snapshotBytesMax + 1)
        await #expect(throws: EventLogError.invalidRequest("snapshot is 268435457 bytes; the limit is 268435456 bytes")) {
            try await log.saveSnapshot(Snapshot(sequence: 1, chainHash: head.chainHash, state: oversized, digest: [UInt8](repeating: 0, count: 32)))
        }
        #expect(await log.latestSnapshot() == nil)
    }

    @Test func aConflictInsideABatchDoesNotFailItsNeighbours() async throws {
        let batched = Mutex(0)
        let log = try SQLiteEventLog(path: temporaryDirectory() + "/events.sqlite") { commit in
            if commit.appends > 1 { batched.withLock { $0 += 1 } }
        }
        let outcomes = try await withThrowingTaskGroup(of: Bool.self) { group in
            for index in 0..<32 {
                group.addTask {
                    // Even tasks use a fresh stream; odd ones race on a shared stream at version 0.
                    let stream = index.isMultiple(of: 2) ? "own\(index)" : "shared"
                    do {
                        _ = try await log.append(AppendRequest(stream: stream, expectedVersion: 0, records: [bytes("x")]))
                        return true
                    } catch EventLogError.versionConflict {
                        return false
                    }
                }
            }
            return try await group.reduce(into: [Bool]()) { $0.append($1) }
        }
        #expect(outcomes.filter { $0 }.count == 16 + 1)
        #expect(try await log.head().sequence == 17)
        #expect(batched.withLock { $0 } > 0, "no commit carried more than one append, so nothing was tested")
    }

    @Test func aSecondWriterOnTheSameDataIsRefused() throws {
        let path = temporaryDirectory() + "/events.sqlite"
        let first = try SQLiteEventLog(path: path)
        #expect(throws: EventLogError.unavailable(
            "another process is writing this log (\(path).lock is locked); one Lockstep process writes a data directory at a time")) {
            try SQLiteEventLog(path: path)
        }
        // Readers (governance commands) need no lock.
        _ = try SQLiteEventLog(path: path, mode: .readOnly)
        withExtendedLifetime(first) {}
    }

    @Test func writingIsRefusedWhenTheTailDiffersFromTheRecordedHead() async throws {
        let path = temporaryDirectory() + "/events.sqlite"
        do {
            let log = try SQLiteEventLog(path: path)
            _ = try await log.append(AppendRequest(stream: "a", expectedVersion: 0, records: [bytes("1"), bytes("2"), bytes("3")]))
        }
        var db: OpaquePointer?
        #expect(sqlite3_open(path, &db) == SQLITE_OK)
        #expect(sqlite3_exec(db, "DELETE FROM events WHERE sequence = 3", nil, nil, nil) == SQLITE_OK)
        sqlite3_close(db)
        #expect(throws: EventLogError.corrupted(position: 3, reason:
            "the last stored event is 2 but the last commit recorded 3 (or a different hash); refusing to write. Run `lockstep history verify` on this data directory")) {
            try SQLiteEventLog(path: path)
        }
        // Still readable, so it can be examined.
        _ = try SQLiteEventLog(path: path, mode: .readOnly)
    }

    @Test func theAppendQueueIsBounded() async throws {
        var options = SQLiteEventLog.Options()
        options.appendQueueEventsMax = 2
        let log = try SQLiteEventLog(path: temporaryDirectory() + "/events.sqlite", options: options)
        await #expect(throws: EventLogError.overloaded("0 events are waiting for a commit; the limit is 2 events")) {
            try await log.append(AppendRequest(stream: "a", expectedVersion: 0, records: [bytes("1"), bytes("2"), bytes("3")]))
        }
        #expect(try await log.append(AppendRequest(stream: "a", expectedVersion: 0, records: [bytes("1"), bytes("2")])).lastSequence == 2)
        // Under a burst, some appends are refused and the rest land; nothing else happens.
        let outcomes = await withTaskGroup(of: String.self) { group in
            for index in 0..<200 {
                group.addTask {
                    do throws(EventLogError) {
                        _ = try await log.append(AppendRequest(stream: "s\(index)", expectedVersion: 0, records: [bytes("x")]))
                        return "ok"
                    } catch { return error.code }
                }
            }
            return await group.reduce(into: [String]()) { $0.append($1) }
        }
        #expect(Set(outcomes).isSubset(of: ["ok", "log_overloaded"]))
        #expect(try await log.head().sequence == 2 + UInt64(outcomes.filter { $0 == "ok" }.count))
    }

    @Test func checkpointsRunEveryIntervalAndKeepTheLogWhole() async throws {
        var options = SQLiteEventLog.Options()
        options.checkpointIntervalCommits = 3
        let path = temporaryDirectory() + "/events.sqlite"
        let log = try SQLiteEventLog(path: path, options: options)
        for version in 0..<10 {
            _ = try await log.append(AppendRequest(stream: "a", expectedVersion: UInt64(version), records: [bytes("\(version)")]))
        }
        #expect(try await readAll(log).count == 10)
    }

    /// The passive checkpoint runs on its own queue: commits go on while one is under way (here held
    /// as long as the test wants), and the next is handed over once it ends. (Its limit is a hang's
    /// guard: docs/testing.md, "Time limits".)
    @Test(.timeLimit(.minutes(3))) func commitsDoNotWaitForAPassiveCheckpoint() async throws {
        var options = SQLiteEventLog.Options()
        options.checkpointIntervalCommits = 5
        let log = try SQLiteEventLog(path: temporaryDirectory() + "/events.sqlite", options: options)
        let held = DispatchSemaphore(value: 0)
        log.checkpointQueue.async { held.wait() }
        var version: UInt64 = 0
        for _ in 0..<50 {
            version = try await log.append(AppendRequest(stream: "a", expectedVersion: version, records: [bytes("\(version)")])).streamVersion
        }
        #expect(log.backgroundCheckpoints == 0, "the first checkpoint waits behind the held queue")
        held.signal()
        try await eventually("the first background checkpoint ran", seconds: 10, every: .milliseconds(10)) { log.backgroundCheckpoints == 1 }
        for _ in 0..<5 {
            version = try await log.append(AppendRequest(stream: "a", expectedVersion: version, records: [bytes("\(version)")])).streamVersion
        }
        try await eventually("the second background checkpoint ran", seconds: 10, every: .milliseconds(10)) { log.backgroundCheckpoints == 2 }
        #expect(try await readAll(log).count == 55)
    }

    @Test func anotherWriterOnTheSameFileInvalidatesTheVersionCache() async throws {
        // Two logs on one file stand for two processes: the second writes behind the first one's back.
        let path = temporaryDirectory() + "/events.sqlite"
        var twoWriters = SQLiteEventLog.Options()
        twoWriters.exclusiveWriter = false
        let first = try SQLiteEventLog(path: path, options: twoWriters)
        let second = try SQLiteEventLog(path: path, options: twoWriters)
        _ = try await first.append(AppendRequest(stream: "a", expectedVersion: 0, records: [bytes("1")]))
        _ = try await second.append(AppendRequest(stream: "a", expectedVersion: 1, records: [bytes("2")]))
        // `first` remembers version 1; it must notice the head moved and check the stream again.
        await #expect(throws: EventLogError.versionConflict(stream: "a", expected: 1, actual: 2)) {
            try await first.append(AppendRequest(stream: "a", expectedVersion: 1, records: [bytes("stale")]))
        }
        #expect(try await first.append(AppendRequest(stream: "a", expectedVersion: 2, records: [bytes("3")])).lastSequence == 3)
        #expect(try await readAll(first).map(\.record) == [bytes("1"), bytes("2"), bytes("3")])
    }

    @Test func aDatabaseFromAnotherSchemaVersionIsRefused() async throws {
        let path = temporaryDirectory() + "/events.sqlite"
        _ = try SQLiteEventLog(path: path)
        var db: OpaquePointer?
        #expect(sqlite3_open(path, &db) == SQLITE_OK)
        #expect(sqlite3_exec(db, "UPDATE meta SET value = '99' WHERE key = 'schema_version'", nil, nil, nil) == SQLITE_OK)
        sqlite3_close(db)
        #expect(throws: EventLogError.unavailable("database schema version is 99; this build reads version 1")) {
            try SQLiteEventLog(path: path)
        }
    }

    @Test func anUnopenablePathIsAClearError() {
        #expect(throws: EventLogError.self) { try SQLiteEventLog(path: "/nonexistent-dir/x/events.sqlite") }
    }

    /// A reader that is always reading keeps SQLite from ever restarting the WAL after a passive
    /// checkpoint: without the bound, this WAL grew to 27 MB over 4,000 commits (and on with more).
    @Test func theWALStaysBoundedWhileReadersKeepReading() async throws {
        let path = temporaryDirectory() + "/events.sqlite"
        var options = SQLiteEventLog.Options()
        options.checkpointIntervalCommits = 50
        options.walBytesMax = 1 << 20
        let log = try SQLiteEventLog(path: path, options: options)
        let writing = Atomic<Bool>(true)
        defer { writing.store(false, ordering: .relaxed) }
        let reader = Task {
            var reads = 0
            while writing.load(ordering: .relaxed) {
                _ = try await log.read(after: 0, limit: 200)
                reads += 1
            }
            return reads
        }
        var version: UInt64 = 0
        var largestWAL: Int64 = 0
        for commit in 1...4_000 {
            version = try await log.append(AppendRequest(stream: "a", expectedVersion: version, records: [[UInt8](repeating: 7, count: 300)])).streamVersion
            if commit % 100 == 0 { largestWAL = max(largestWAL, fileBytes(path + "-wal")) }
        }
        writing.store(false, ordering: .relaxed)
        #expect(try await reader.value > 100, "the reader read throughout")
        // At most the bound plus one interval's commits (a few pages each).
        #expect(largestWAL <= 4 << 20, "the WAL reached \(largestWAL) bytes")
        #expect(try await log.read(after: 3_990, limit: 100).count == 10)
    }

    @Test func theWALSizeOfAFrameCountSaturates() {
        #expect(SQLiteEventLog.walBytes(frames: 2, pageSize: 4_096) == 32 + 2 * (24 + 4_096))
        #expect(SQLiteEventLog.walBytes(frames: .max, pageSize: .max) == .max)
        #expect(SQLiteEventLog.walBytes(frames: -1, pageSize: 4_096) == 32)
    }
}

@Suite struct ChainVerifierTests {
    func chain(_ records: [String]) -> [StoredEvent] {
        var head = LogHead.genesis
        return records.enumerated().map { index, text in
            let sequence = UInt64(index + 1)
            let link = head.chainHash.next(sequence: sequence, record: bytes(text))
            head = LogHead(sequence: sequence, chainHash: link)
            return StoredEvent(sequence: sequence, stream: "s", streamVersion: sequence, record: bytes(text), chainHash: link)
        }
    }

    func firstBadPosition(_ events: [StoredEvent]) -> UInt64? {
        var verifier = ChainVerifier()
        for event in events {
            do { try verifier.check(event) } catch { if case .corrupted(let position, _) = error { return position } }
        }
        return nil
    }

    @Test func anIntactChainVerifies() {
        #expect(firstBadPosition(chain(["a", "b", "c", "d"])) == nil)
    }

    @Test func eachAlterationIsFoundAtItsPosition() {
        var flipped = chain(["a", "b", "c", "d"])
        flipped[2].record[0] ^= 1
        #expect(firstBadPosition(flipped) == 3)

        var removed = chain(["a", "b", "c", "d"])
        removed.remove(at: 1)
        #expect(firstBadPosition(removed) == 2)

        var swapped = chain(["a", "b", "c", "d"])
        (swapped[1].record, swapped[2].record) = (swapped[2].record, swapped[1].record)
        #expect(firstBadPosition(swapped) == 2)

        var relinked = chain(["a", "b", "c", "d"])
        relinked[3].chainHash = relinked[2].chainHash
        #expect(firstBadPosition(relinked) == 4)
    }
}

private func fileBytes(_ path: String) -> Int64 {
    ((try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? NSNumber)?.int64Value ?? 0
}
