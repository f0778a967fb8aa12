import Foundation
import LockstepCore
import LockstepEngine
import LockstepStore
import LockstepTestSupport
import Testing

/// Crash durability with the log on PostgreSQL: the writer process killed with SIGKILL mid-burst, and
/// the database itself crashed (`pg_ctl stop -m immediate`) and restarted under a running writer. Every
/// acknowledged event is in the log exactly once, the log verifies, and the writer reconnects by itself.
@Suite(.serialized, .dropsPostgresDatabases) struct PostgresCrashTests {
    @Test func everyAcknowledgedEventSurvivesSIGKILL() async throws {
        let database = try await TestPostgres.shared.makeDatabase()
        let url = try await TestPostgres.shared.url(database)
        var random = SeededGenerator(seed: 0x9_0516)
        var acks: [Ack] = []
        for cycle in 0..<5 {
            let child = try ChildProcess(try lockstepBinary(), ["debug", "append-load", "--store", url, "--writers", "16", "--seconds", "60", "--tag", "p\(cycle)"])
            if cycle == 2 {
                try await Task.sleep(for: .milliseconds(Int.random(in: 0...150, using: &random)))
            } else {
                // Mid-burst, however loaded the machine: once it has acknowledged some appends.
                try await child.waitForOutput("ready", seconds: 30)
                try await eventually("the writer appends", seconds: 30) { Ack.parse(child.stdout).count >= 40 }
                try await Task.sleep(for: .milliseconds(Int.random(in: 0...300, using: &random)))
            }
            child.kill(SIGKILL)
            let output = try await child.wait(seconds: 10)
            #expect(output.status == SIGKILL || output.status == 9, "cycle \(cycle): \(output.stderr)")
            acks += Ack.parse(output.stdout)
        }
        #expect(acks.count >= 160, "the harness must append enough to bite")
        try await checkAcknowledged(acks, in: try await TestPostgres.shared.openLog(database))
    }

    @Test func aDatabaseCrashLosesNoAcknowledgedEventAndTheWriterReconnectsByItself() async throws {
        // A cluster of its own: crashing the shared one would fail the other suites' tests.
        let postgres = TestPostgres()
        let database = try await postgres.makeDatabase()
        let child = try ChildProcess(try lockstepBinary(), ["debug", "append-load", "--store", try await postgres.url(database), "--writers", "8",
                                                            "--seconds", "20", "--tag", "crash", "--retry-unavailable"])
        try await child.waitForOutput("ready", seconds: 30)
        try await Task.sleep(for: .milliseconds(1_500))
        // On a loaded machine 1.5 s may not be enough appends: crash once there are.
        try await eventually("appends before the crash", seconds: 10) { Ack.parse(child.stdout).count > 50 }
        try await postgres.crash()
        let crashedAt = Ack.parse(child.stdout).count
        try await Task.sleep(for: .milliseconds(1_500))
        try await postgres.restart()
        let output = try await child.wait(seconds: 60)
        #expect(output.status == 0, "the writer must ride out the restart: \(output.stderr.suffix(2_000))")
        let acks = Ack.parse(output.stdout)
        #expect(crashedAt > 50, "appends before the crash")
        #expect(acks.count > crashedAt + 50, "appends after the restart, on new connections (\(crashedAt) before, \(acks.count) in all)")
        // Whether a writer saw the outage as `storage_unavailable` (and retried) or waited in a commit whose
        // outcome the log resolved once the database was back depends on where the crash fell: both are right.
        #expect(!output.stdout.contains("refused"), "no command was refused for good")
        try await checkAcknowledged(acks, in: try await postgres.openLog(database))
    }
}
