@testable import LockstepPostgres
import LockstepStore
import LockstepTestSupport
import Testing

/// The page-bytes option of the log on PostgreSQL (`Options.readPageBytesMax`, package-only) is clamped
/// to 1 byte … `EventLogLimits.readPageBytesMax`: no setting makes a page bigger than every other store's,
/// and the smallest still reads one event a page (the first row is always in), so a reader goes on.
@Suite(.serialized, .dropsPostgresDatabases) struct PostgresPageTests {
    @Test func thePageBytesOptionIsClampedAndTheSmallestStillReadsOneEventAPage() async throws {
        var options = PostgresEventLog.Options()
        options.readPageBytesMax = Int.max
        #expect(await (try TestPostgres.shared.makeLog(options: options)).pageBytesMax == EventLogLimits.readPageBytesMax)
        options.readPageBytesMax = Int.min
        let log = try await TestPostgres.shared.makeLog(options: options)
        #expect(await log.pageBytesMax == 1)
        _ = try await log.append(AppendRequest(stream: "a", expectedVersion: 0, records: (1...3).map { Array("record \($0)".utf8) }))
        for after: UInt64 in 0..<3 {
            #expect(try await log.read(after: after, limit: 100).map(\.sequence) == [after + 1])
            #expect(try await log.read(stream: "a", after: after, limit: 100).map(\.sequence) == [after + 1])
        }
        #expect(try await log.read(after: 3, limit: 100).isEmpty)
    }
}
