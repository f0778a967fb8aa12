import Foundation
import LockstepTestSupport
import Testing

/// `lockstep serve`'s flags for several coordinators are checked before anything starts (nothing is
/// listened on, no database is reached: the store below has nothing listening), each with a sentence
/// that names the flag and the range.
@Suite struct LeadershipFlagTests {
    static let store = "postgres://lockstep@127.0.0.1:1/lockstep?sslmode=disable"

    @Test(arguments: [
        (["--leadership-ttl-ms", "499"], "--leadership-ttl-ms must be 500...600000, not 499"),
        (["--leadership-ttl-ms", "600001"], "--leadership-ttl-ms must be 500...600000, not 600001"),
        (["--leadership-ttl-ms=-1"], "--leadership-ttl-ms must be 500...600000, not -1"),
        (["--leadership-ttl-ms", "99999999999999999999"], "--leadership-ttl-ms"),
        (["--coordinator-id", "two words"], "--coordinator-id must be 1...128 bytes without spaces or control characters"),
        (["--coordinator-id", String(repeating: "c", count: 129)], "--coordinator-id must be 1...128 bytes"),
        (["--advertise", "no-port"], "--advertise"),
    ])
    func aBadLeadershipFlagIsRefusedBeforeAnythingStarts(flags: [String], says: String) async throws {
        let refused = try await runLockstep(["serve", "--dev", "--store", Self.store, "--http-listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0"] + flags,
                                            seconds: 30)
        #expect(refused.status != 0 && refused.stderr.contains(says), "\(refused)")
    }

    /// The parked-poll limits (hidden flags, for benchmarks) take their ranges, the per-principal one up
    /// to the overall one.
    @Test(arguments: [
        (["--parked-polls-max", "0"], "--parked-polls-max must be 1...1000000, not 0"),
        (["--parked-polls-max", "1000001"], "--parked-polls-max must be 1...1000000, not 1000001"),
        (["--parked-polls-max", "100", "--parked-polls-per-principal", "101"], "--parked-polls-per-principal must be 1...100"),
    ])
    func aParkedPollLimitOutOfRangeIsRefusedBeforeAnythingStarts(flags: [String], says: String) async throws {
        let refused = try await runLockstep(["serve", "--dev", "--data", temporaryDirectory(), "--http-listen", "127.0.0.1:0",
                                             "--grpc-listen", "127.0.0.1:0"] + flags, seconds: 30)
        #expect(refused.status != 0 && refused.stderr.contains(says), "\(refused)")
    }

    @Test func leadershipFlagsWithoutADatabaseAreRefused() async throws {
        let data = temporaryDirectory()
        let refused = try await runLockstep(["serve", "--dev", "--data", data, "--http-listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0",
                                             "--leadership-ttl-ms", "1000"], seconds: 30)
        #expect(refused.status != 0 && refused.stderr.contains("are for several coordinators on one PostgreSQL database (--store)"), "\(refused)")
    }
}
