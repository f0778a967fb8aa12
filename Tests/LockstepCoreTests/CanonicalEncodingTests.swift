import LockstepCore
import Testing

@Suite struct CanonicalEncodingTests {
    func sampleState() -> LogState {
        var log = LogState()
        log.evolve(migration: migrationID, sequence: 1, started)
        log.evolve(migration: migrationID, sequence: 2, leased("expand", token: 1))
        log.evolve(migration: migrationID, sequence: 3, StepLeaseTests.lost("expand", token: 1, count: 1, at: 2))  // agentsLost 1
        log.evolve(migration: migrationID, sequence: 4, leased("expand", token: 2, at: 3))
        let other = MigrationID("a-first")
        log.evolve(migration: other, sequence: 5, .migrationStarted(MigrationStarted(migration: other, plan: plan, startedAt: t(2))))
        log.evolve(migration: other, sequence: 6, .migrationPaused(reason: "wait"))
        return log
    }

    @Test func roundTripsExactly() throws {
        let state = sampleState()
        let decoded = try LogState(canonicalBytes: state.canonicalBytes)
        #expect(decoded == state)
        #expect(decoded.canonicalBytes == state.canonicalBytes)
    }

    @Test func theEmptyStateHasFixedBytes() {
        // "LSST", format 9, last sequence 0, zero migrations, zero plans, zero freezes.
        #expect(LogState().canonicalBytes == [0x4C, 0x53, 0x53, 0x54, 0x09, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
    }

    @Test func migrationsAreEncodedInIdOrderWhateverTheInsertionOrder() {
        var forward = LogState()
        var backward = LogState()
        let ids = (0..<20).map { MigrationID("m-\($0)") }
        for (index, id) in ids.enumerated() {
            forward.evolve(migration: id, sequence: UInt64(index + 1),
                           .migrationStarted(MigrationStarted(migration: id, plan: plan, startedAt: t(0))))
        }
        for (index, id) in ids.reversed().enumerated() {
            backward.evolve(migration: id, sequence: UInt64(index + 1),
                            .migrationStarted(MigrationStarted(migration: id, plan: plan, startedAt: t(0))))
        }
        #expect(forward.canonicalBytes == backward.canonicalBytes)
        // The ids appear in the bytes in UTF-8 byte order ("m-10" < "m-2"), whatever the dictionary's order.
        let bytes = forward.canonicalBytes
        let positions = ["m-0", "m-1", "m-10", "m-11", "m-19", "m-2", "m-9"].map { id in
            bytes.indices.first { bytes[$0...].starts(with: [0, 0, 0, UInt8(id.utf8.count)] + Array(id.utf8)) }
        }
        #expect(positions.allSatisfy { $0 != nil })
        #expect(positions.map { $0! } == positions.map { $0! }.sorted())
    }

    /// Stored bytes are checked as a plan applied is: a plan that lists a node twice (which no command
    /// can record) is refused, not folded into a state whose node lookups would depend on the search.
    @Test func aPlanListingANodeTwiceIsRejected() {
        var twice = plan
        twice.nodes.append(twice.nodes[0])
        var log = LogState()
        log.evolve(migration: migrationID, sequence: 1, .migrationStarted(MigrationStarted(migration: migrationID, plan: twice, startedAt: t(0))))
        #expect(throws: CanonicalDecodingError.self) { try LogState(canonicalBytes: log.canonicalBytes) }
        #expect((try? LogState(canonicalBytes: sampleState().canonicalBytes)) != nil)
    }

    @Test func truncatedBytesAreRejected() {
        let bytes = sampleState().canonicalBytes
        for cut in [0, 4, 5, 13, bytes.count / 2, bytes.count - 1] {
            #expect(throws: CanonicalDecodingError.self) { try LogState(canonicalBytes: Array(bytes.prefix(cut))) }
        }
    }

    @Test func garbageIsRejectedWithoutTrapping() {
        #expect(throws: CanonicalDecodingError.badMagic) { try LogState(canonicalBytes: Array("XXXX".utf8) + [1]) }
        var wrongFormat = LogState().canonicalBytes
        wrongFormat[4] = 7  // formats before 8 are no longer read
        #expect(throws: CanonicalDecodingError.unsupportedFormat(7)) { try LogState(canonicalBytes: wrongFormat) }
        wrongFormat[4] = 10
        #expect(throws: CanonicalDecodingError.unsupportedFormat(10)) { try LogState(canonicalBytes: wrongFormat) }
        #expect(throws: CanonicalDecodingError.trailingBytes(offset: 25)) { try LogState(canonicalBytes: LogState().canonicalBytes + [0]) }
        // A huge element count must not allocate: it is rejected as truncated.
        var hugeCount = LogState().canonicalBytes
        hugeCount.replaceSubrange(13..<17, with: [0xFF, 0xFF, 0xFF, 0xFF])
        #expect(throws: CanonicalDecodingError.truncated(offset: 17)) { try LogState(canonicalBytes: hugeCount) }
    }

    @Test func everySingleByteFlipIsRejectedOrDecodesToADifferentState() async {
        let state = sampleState()
        let bytes = state.canonicalBytes
        for index in bytes.indices {
            // Seconds of CPU: the other tests get the thread back now and then (LockstepTestSupport's yieldToOtherTests).
            if index % 64 == 0 { await Task.yield() }
            var flipped = bytes
            flipped[index] ^= 0x01
            if let decoded = try? LogState(canonicalBytes: flipped) { #expect(decoded != state) }
        }
    }
}
