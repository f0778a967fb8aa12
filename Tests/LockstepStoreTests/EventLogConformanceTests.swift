import LockstepPostgres
import LockstepStore
import LockstepTestSupport
import Testing

/// The contract every `EventLog` keeps; runs against each implementation.
@Suite(.dropsPostgresDatabases) struct EventLogConformanceTests {
    @Test(arguments: LogKind.allCases)
    func appendAssignsGaplessSequencesAndContiguousVersions(kind: LogKind) async throws {
        let log = try await kind.make()
        let first = try await log.append(AppendRequest(stream: "a", expectedVersion: 0, records: [bytes("a1"), bytes("a2")]))
        let second = try await log.append(AppendRequest(stream: "b", expectedVersion: 0, records: [bytes("b1")]))
        let third = try await log.append(AppendRequest(stream: "a", expectedVersion: 2, records: [bytes("a3")]))
        #expect(first == AppendReceipt(firstSequence: 1, lastSequence: 2, streamVersion: 2))
        #expect(second == AppendReceipt(firstSequence: 3, lastSequence: 3, streamVersion: 1))
        #expect(third == AppendReceipt(firstSequence: 4, lastSequence: 4, streamVersion: 3))
        let events = try await readAll(log)
        #expect(events.map(\.sequence) == [1, 2, 3, 4])
        #expect(events.map(\.stream) == ["a", "a", "b", "a"])
        #expect(events.map(\.streamVersion) == [1, 2, 1, 3])
        #expect(events.map(\.record) == [bytes("a1"), bytes("a2"), bytes("b1"), bytes("a3")])
        #expect(try await log.streamVersion(of: "a") == 3)
        #expect(try await log.streamVersion(of: "nobody") == 0)
    }

    /// A reader tailing the log while a writer appends (as a replica does) sees every event once, in
    /// order, and never a commit landing between its reads as damage ("event N is missing").
    @Test(arguments: LogKind.allCases)
    func aReaderTailingAWriterSeesEveryEventAndNoDamage(kind: LogKind) async throws {
        let log = try await kind.make()
        // 120 appends, each its own commit (an fsync on SQLite): enough for reads to land between commits
        // many times; the bound only ends a reader that would otherwise wait for ever (300 fsyncs took
        // over 60 s here while the whole suite ran).
        let total: UInt64 = 120
        async let written: Void = {
            for index in 0..<total { _ = try await log.append(AppendRequest(stream: "s", expectedVersion: index, records: [bytes("e\(index)")])) }
        }()
        var seen: [UInt64] = []
        let deadline = ContinuousClock.now + .seconds(300)
        while seen.count < Int(total), ContinuousClock.now < deadline {
            let page = try await log.read(after: seen.last ?? 0, limit: 5).map(\.sequence)
            seen += page
            // Nothing new yet: let the writer run (a reader that never suspends starved it on a busy
            // 2-core machine: 23 of 300 events in 60 s while the whole suite ran).
            if page.isEmpty { try await Task.sleep(for: .milliseconds(1)) }
        }
        try await written
        #expect(seen == Array(1...total))
    }

    /// Stream names by prefix, in UTF-8 byte order, paged by the last name seen: how settled migrations
    /// (gone from the live state) are listed. Each name once, however many events its stream holds.
    @Test(arguments: LogKind.allCases)
    func streamsAreListedByPrefixInByteOrderAndPaged(kind: LogKind) async throws {
        let log = try await kind.make()
        // "é" sorts after "z" by bytes (0xC3) though not in Unicode collation order; "migration0" and
        // "migratio" share most of the prefix and must not be listed.
        let names = ["migration/b", "migration/a", "plan/p", "migration/é", "migration/z", "migration0", "migratio", "migration/a-2"]
        for (index, name) in names.enumerated() {
            for version in 0..<UInt64(index % 3 + 1) {
                _ = try await log.append(AppendRequest(stream: name, expectedVersion: version, records: [bytes("\(name)-\(version)")]))
            }
        }
        let expected = ["migration/a", "migration/a-2", "migration/b", "migration/z", "migration/é"]
        #expect(try await log.streams(withPrefix: "migration/", after: "", limit: 100) == expected)
        var paged: [String] = []
        var after = ""
        while true {
            let page = try await log.streams(withPrefix: "migration/", after: after, limit: 2)
            #expect(page.count <= 2)
            guard let last = page.last else { break }
            paged += page
            after = last
        }
        #expect(paged == expected)
        #expect(try await log.streams(withPrefix: "migration/", after: "migration/b", limit: 100) == ["migration/z", "migration/é"])
        #expect(try await log.streams(withPrefix: "plan/", after: "", limit: 100) == ["plan/p"])
        #expect(try await log.streams(withPrefix: "nothing/", after: "", limit: 100) == [])
        #expect(try await log.streams(withPrefix: "migration/", after: "", limit: 0) == [])
        #expect(try await log.streams(withPrefix: "", after: "", limit: 100).count == names.count)
    }

    /// One call returns at most `streamNamesPageMax` names, however many are asked for.
    @Test(arguments: LogKind.allCases)
    func aPageOfStreamNamesIsCapped(kind: LogKind) async throws {
        let log = try await kind.make()
        let count = EventLogLimits.streamNamesPageMax + 5
        for index in 0..<count {
            _ = try await log.append(AppendRequest(stream: "migration/m-\(100_000 + index)", expectedVersion: 0, records: [bytes("e")]))
        }
        let page = try await log.streams(withPrefix: "migration/", after: "", limit: .max)
        #expect(page.count == EventLogLimits.streamNamesPageMax)
        #expect(page.first == "migration/m-100000")
        let rest = try await log.streams(withPrefix: "migration/", after: try #require(page.last), limit: .max)
        #expect(rest.count == 5)
    }

    /// One stream's events, as a watch or a migration's history reads them: the same events, in the same
    /// order, as filtering the whole log, paged by global sequence, whatever the other streams hold.
    @Test(arguments: LogKind.allCases)
    func aStreamIsReadOnItsOwnAsTheWholeLogFilteredWouldGiveIt(kind: LogKind) async throws {
        let log = try await kind.make()
        var versions: [String: UInt64] = [:]
        var random = SeededGenerator(seed: 7)
        for index in 0..<300 {
            let stream = ["a", "b", "c", "migration/x"][Int.random(in: 0..<4, using: &random)]
            let count = Int.random(in: 1...3, using: &random)
            let receipt = try await log.append(AppendRequest(stream: stream, expectedVersion: versions[stream, default: 0],
                                                             records: (0..<count).map { bytes("\(stream)-\(index)-\($0)") }))
            versions[stream] = receipt.streamVersion
        }
        let all = try await readAll(log)
        for stream in ["a", "b", "c", "migration/x"] {
            let expected = all.filter { $0.stream == stream }
            for page in [1, 7, 1_000] {
                var read: [StoredEvent] = []
                while true {
                    let next = try await log.read(stream: stream, after: read.last?.sequence ?? 0, limit: page)
                    #expect(next.count <= page)
                    if next.isEmpty { break }
                    read += next
                }
                #expect(read == expected, "\(stream), pages of \(page)")
            }
            // From the middle of the log: only what comes after that global sequence.
            let middle = all[all.count / 2].sequence
            #expect(try await log.read(stream: stream, after: middle, limit: 1_000) == expected.filter { $0.sequence > middle })
        }
        #expect(try await log.read(stream: "nobody", after: 0, limit: 10).isEmpty)
        #expect(try await log.read(stream: "a", after: 0, limit: 0).isEmpty)
        #expect(try await log.read(stream: "a", after: UInt64.max, limit: 10).isEmpty)
        #expect(try await log.read(stream: "a", after: 0, limit: Int.max).count == all.filter { $0.stream == "a" }.count)
    }

    @Test(arguments: LogKind.allCases)
    func theChainLinksEveryEventToTheOneBefore(kind: LogKind) async throws {
        let log = try await kind.make()
        _ = try await log.append(AppendRequest(stream: "a", expectedVersion: 0, records: [bytes("x"), bytes("y")]))
        let events = try await readAll(log)
        let first = ChainHash.genesis.next(sequence: 1, record: bytes("x"))
        #expect(events[0].chainHash == first)
        #expect(events[1].chainHash == first.next(sequence: 2, record: bytes("y")))
        #expect(try await log.head() == LogHead(sequence: 2, chainHash: events[1].chainHash))
        // The link formula is fixed: SHA-256(previous ‖ UInt64 BE sequence ‖ bytes); value computed independently with Python hashlib.
        #expect(ChainHash.genesis.next(sequence: 1, record: bytes("x")).hex
            == "01dd2c7811112320cd1c6f939902bcf16eb7ab90d8a4500f9516fc0abc42927a")
    }

    @Test(arguments: LogKind.allCases)
    func aVersionConflictAppendsNothing(kind: LogKind) async throws {
        let log = try await kind.make()
        _ = try await log.append(AppendRequest(stream: "a", expectedVersion: 0, records: [bytes("1")]))
        await #expect(throws: EventLogError.versionConflict(stream: "a", expected: 0, actual: 1)) {
            try await log.append(AppendRequest(stream: "a", expectedVersion: 0, records: [bytes("again")]))
        }
        await #expect(throws: EventLogError.versionConflict(stream: "a", expected: 5, actual: 1)) {
            try await log.append(AppendRequest(stream: "a", expectedVersion: 5, records: [bytes("later")]))
        }
        #expect(try await readAll(log).count == 1)
        #expect(try await log.head().sequence == 1)
    }

    @Test(arguments: LogKind.allCases)
    func concurrentAppendsAreEachCheckedAndAllLand(kind: LogKind) async throws {
        let log = try await kind.make()
        let streams = 64
        let perStream = 5
        try await withThrowingTaskGroup(of: Void.self) { group in
            for stream in 0..<streams {
                group.addTask {
                    for version in 0..<perStream {
                        _ = try await log.append(AppendRequest(stream: "s\(stream)", expectedVersion: UInt64(version),
                                                               records: [bytes("s\(stream)v\(version + 1)")]))
                    }
                }
            }
            // Writers racing on one stream with the same expected version: exactly one wins each round.
            for _ in 0..<8 {
                group.addTask { _ = try? await log.append(AppendRequest(stream: "contended", expectedVersion: 0, records: [bytes("c")])) }
            }
            try await group.waitForAll()
        }
        let events = try await readAll(log, page: 50)
        #expect(events.map(\.sequence) == Array(1...UInt64(streams * perStream + 1)))
        #expect(events.filter { $0.stream == "contended" }.count == 1)
        for stream in 0..<streams {
            let versions = events.filter { $0.stream == "s\(stream)" }.map(\.streamVersion)
            #expect(versions == Array(1...UInt64(perStream)))
        }
    }

    @Test(arguments: LogKind.allCases)
    func requestsBeyondTheLimitsAreRejectedBeforeAnythingIsWritten(kind: LogKind) async throws {
        let log = try await kind.make()
        await #expect(throws: EventLogError.invalidRequest("append to a carries no events")) {
            try await log.append(AppendRequest(stream: "a", expectedVersion: 0, records: []))
        }
        let tooMany = [[UInt8]](repeating: bytes("e"), count: EventLogLimits.appendRequestEventsMax + 1)
        await #expect(throws: EventLogError.invalidRequest("append carries 1001 events; the limit is 1000 events")) {
            try await log.append(AppendRequest(stream: "a", expectedVersion: 0, records: tooMany))
        }
        let huge = [UInt8](repeating: 7, count: EventLogLimits.recordBytesMax + 1)
        await #expect(throws: EventLogError.invalidRequest("event 0 is 1048577 bytes; the limit is 1048576 bytes")) {
            try await log.append(AppendRequest(stream: "a", expectedVersion: 0, records: [huge]))
        }
        let longName = String(repeating: "s", count: EventLogLimits.streamNameBytesMax + 1)
        await #expect(throws: EventLogError.invalidRequest("stream name is 257 bytes; the limit is 256 bytes")) {
            try await log.append(AppendRequest(stream: longName, expectedVersion: 0, records: [bytes("x")]))
        }
        // Exactly at the limits is fine.
        let atLimit = [[UInt8]](repeating: bytes("e"), count: EventLogLimits.appendRequestEventsMax)
        _ = try await log.append(AppendRequest(stream: "a", expectedVersion: 0, records: atLimit))
        #expect(try await log.head().sequence == UInt64(EventLogLimits.appendRequestEventsMax))
    }

    @Test(arguments: LogKind.allCases)
    func readsArePagedAndCapped(kind: LogKind) async throws {
        let log = try await kind.make()
        _ = try await log.append(AppendRequest(stream: "a", expectedVersion: 0, records: (1...10).map { bytes("\($0)") }))
        #expect(try await log.read(after: 3, limit: 4).map(\.sequence) == [4, 5, 6, 7])
        #expect(try await log.read(after: 8, limit: 100).map(\.sequence) == [9, 10])
        #expect(try await log.read(after: 10, limit: 100).isEmpty)
        #expect(try await log.read(after: 0, limit: 0).isEmpty)
        #expect(try await log.read(after: 0, limit: Int.max).count == 10)
    }

    /// A page is bounded in bytes too (`EventLogLimits.readPageBytesMax`; by count alone, 10,000 records
    /// of 1 MiB were one read): it stops before the event that would pass the limit, and the next page goes
    /// on from there; for the whole log, one stream and `readIntact` alike. (A damaged log's intact reads
    /// stop at the damage within one page's bytes: a read fails only on what it would return.)
    @Test(arguments: LogKind.allCases)
    func readsAreBoundedInBytesAndGoOnFromWhereTheyStopped(kind: LogKind) async throws {
        // PostgreSQL's page bound is in its query, on the log's own option: a 3 MiB page there, so a loaded
        // machine's database does not move 60 MB for it (nor outlast the reads' time bound).
        var options = PostgresEventLog.Options()
        options.readPageBytesMax = 3 << 20
        let log: any EventLog = kind == .postgres ? try await TestPostgres.shared.makeLog(options: options) : try await kind.make()
        let perPage = (kind == .postgres ? options.readPageBytesMax : EventLogLimits.readPageBytesMax) / EventLogLimits.recordBytesMax
        let largest = [UInt8](repeating: 7, count: EventLogLimits.recordBytesMax)
        // One append each (a 20 MiB transaction is slow on a loaded machine's PostgreSQL).
        for version in 0..<UInt64(perPage + 2) { _ = try await log.append(AppendRequest(stream: "a", expectedVersion: version, records: [largest])) }
        _ = try await log.append(AppendRequest(stream: "b", expectedVersion: 0, records: [bytes("small")]))
        let first = try await log.read(after: 0, limit: 100)
        #expect(first.map(\.sequence) == Array(1...UInt64(perPage)))
        #expect(kind == .postgres || ReadPageBudget.mayBeCut(first))
        #expect(try await log.read(after: UInt64(perPage), limit: 100).map(\.sequence) == Array(UInt64(perPage + 1)...UInt64(perPage + 3)))
        #expect(try await log.read(stream: "a", after: 0, limit: 100).count == perPage)
        #expect(try await log.read(stream: "a", after: UInt64(perPage), limit: 100).count == 2)
        #expect(await log.readIntact(after: 0, limit: 100).events.count == perPage)
        #expect(try await readAll(log, page: 1_000).count == perPage + 3)
    }

    /// Regression (issue 14): reading after a sequence at or past 2^63 (from a request's `after_sequence`)
    /// answered `corrupted` on an intact SQLite log, a false tamper alarm. Past the head is simply empty.
    @Test(arguments: LogKind.allCases)
    func readingFarPastTheHeadIsEmptyNotCorrupted(kind: LogKind) async throws {
        let log = try await kind.make()
        _ = try await log.append(AppendRequest(stream: "a", expectedVersion: 0, records: (1...3).map { bytes("\($0)") }))
        for after: UInt64 in [11, UInt64(Int64.max) - 1, UInt64(Int64.max), UInt64(Int64.max) + 1, 1 << 63 + 5, .max] {
            #expect(try await log.read(after: after, limit: 100).isEmpty, "after \(after)")
        }
        #expect(try await log.read(after: 2, limit: 100).map(\.sequence) == [3])
    }

    @Test(arguments: LogKind.allCases)
    func snapshotsMustNameAnEventOfThisLogAndAreRetainedUpToTheLimit(kind: LogKind) async throws {
        let log = try await kind.make()
        #expect(try await log.latestSnapshot() == nil)
        _ = try await log.append(AppendRequest(stream: "a", expectedVersion: 0, records: (1...6).map { bytes("\($0)") }))
        let events = try await readAll(log)
        for sequence in 1...5 {
            try await log.saveSnapshot(Snapshot(sequence: UInt64(sequence), chainHash: events[sequence - 1].chainHash,
                                                state: bytes("state\(sequence)"), digest: [UInt8](repeating: UInt8(sequence), count: 32)))
        }
        #expect(try await log.latestSnapshot()?.sequence == 5)
        #expect(try await log.latestSnapshot()?.state == bytes("state5"))
        let kept: Int
        switch log {
        case let memory as InMemoryEventLog: kept = await memory.snapshotCount
        case let sqlite as SQLiteEventLog: kept = try await sqlite.snapshotCount()
        case let postgres as PostgresEventLog: kept = try await postgres.snapshotCount()
        default: kept = -1
        }
        #expect(kept == EventLogLimits.snapshotsRetainedMax)
        await #expect(throws: EventLogError.invalidRequest("snapshot at 6 does not match an event of this log")) {
            try await log.saveSnapshot(Snapshot(sequence: 6, chainHash: .genesis, state: [], digest: [UInt8](repeating: 0, count: 32)))
        }
        await #expect(throws: EventLogError.invalidRequest("snapshot digest is 3 bytes, not 32")) {
            try await log.saveSnapshot(Snapshot(sequence: 6, chainHash: events[5].chainHash, state: [], digest: [1, 2, 3]))
        }
    }
}

