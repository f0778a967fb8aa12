import LockstepCore
import LockstepEngine
import LockstepStore
import LockstepTestSupport
import LockstepWire
import Testing

/// Stored bytes come from outside (a disk, an operator, an attacker): decoding them must never trap,
/// and anything that is not a valid record must be a typed error.
@Suite struct StoredBytesFuzzTests {
    /// Valid records of every event type, from the scenario.
    func validRecords() async throws -> [[UInt8]] {
        let log = InMemoryEventLog()
        let coordinator = try await Coordinator.open(log: log, snapshotIntervalEvents: 0)
        try await recordScenario(on: coordinator)
        return try await log.read(after: 0, limit: 100).map(\.record)
    }

    @Test func mutatedRecordsDecodeOrFailWithATypedError() async throws {
        var random = SeededGenerator(seed: 0xF022)
        let records = try await validRecords()
        var decoded = 0
        var rejected = 0
        for round in 0..<5_000 {
            if round % 100 == 0 { await yieldToOtherTests() }
            var bytes = records[round % records.count]
            switch round % 4 {
            case 0: bytes[Int.random(in: 0..<bytes.count, using: &random)] = UInt8.random(in: 0...255, using: &random)
            case 1: bytes = Array(bytes.prefix(Int.random(in: 0..<bytes.count, using: &random)))
            case 2: bytes.insert(UInt8.random(in: 0...255, using: &random), at: Int.random(in: 0...bytes.count, using: &random))
            default: bytes = (0..<Int.random(in: 0...64, using: &random)).map { _ in UInt8.random(in: 0...255, using: &random) }
            }
            do {
                _ = try EventRecordCodec.decodeAny(bytes)
                decoded += 1
            } catch {
                rejected += 1
            }
        }
        #expect(decoded > 100, "some mutations keep a valid record (e.g. a changed string byte)")
        #expect(rejected > 1_000, "the mutations must produce invalid records")
    }

    @Test func aRecordWithoutPayloadOrWithAForeignStreamIsRejected() {
        var record = Lockstep_V1_EventRecord()
        record.stream = "migration/m"
        record.streamVersion = 1
        record.triggeredBy = .user
        #expect(throws: RecordDecodingError.missingPayload) { try EventRecordCodec.domainEvent(record) }
        record.stream = "plan/p"
        #expect(throws: RecordDecodingError.notAMigrationStream("plan/p")) { try EventRecordCodec.domainEvent(record) }
        record.stream = "migration/m"
        record.payload.migrationResumed = .init()
        record.triggeredBy = .unspecified
        #expect(throws: RecordDecodingError.invalidField("triggered_by")) { try EventRecordCodec.domainEvent(record) }
    }

    /// A stored plan whose node names no service (validation refuses one; something else wrote it) is a
    /// typed error, not a plan whose node a reader would index for its service.
    @Test func aStoredNodeWithoutAServiceIsRejected() async throws {
        let started = try #require(try await validRecords().lazy.map { try Lockstep_V1_EventRecord(serializedBytes: $0) }
            .first { $0.payload.migrationStarted.plan.nodes.count > 0 })
        var record = started
        record.payload.migrationStarted.plan.nodes[0].services = []
        let node = record.payload.migrationStarted.plan.nodes[0].id
        #expect(throws: RecordDecodingError.invalidField("services of node \(node) (none)")) { try EventRecordCodec.domainEvent(record) }
        #expect(throws: Never.self) { try EventRecordCodec.domainEvent(started) }
    }

    @Test func randomSnapshotBytesNeverTrap() async {
        var random = SeededGenerator(seed: 0x5A9)
        var valid = LogState()
        valid.evolve(migration: MigrationID("m"), sequence: 1, .migrationStarted(MigrationStarted(
            migration: MigrationID("m"), plan: ExamplePlans.ledgerSplit, startedAt: t(0))))
        let bytes = valid.canonicalBytes
        for round in 0..<3_000 {
            if round % 100 == 0 { await yieldToOtherTests() }
            var mutated = bytes
            for _ in 0...(round % 3) {
                mutated[Int.random(in: 0..<mutated.count, using: &random)] = UInt8.random(in: 0...255, using: &random)
            }
            if let decoded = try? LogState(canonicalBytes: mutated) {
                #expect(decoded.canonicalBytes == mutated)
            }
        }
    }

    @Test func everyEventTypeRoundTripsThroughTheWire() async throws {
        for bytes in try await validRecords() {
            switch try EventRecordCodec.decodeAny(bytes) {
            case .migration(let event): #expect(try EventRecordCodec.encode(event) == bytes)
            case .plan(let event): #expect(try EventRecordCodec.encode(event) == bytes)
            case .freeze(let event): #expect(try EventRecordCodec.encode(.freeze(event)) == bytes)
            case .checkpoint(let event): #expect(try EventRecordCodec.encode(.checkpoint(event)) == bytes)
            }
        }
    }
}
