import CSQLite
import Foundation
import LockstepCore
import LockstepEngine
import LockstepStore
import Testing

/// One acknowledged append as the child reported it: `ack FIRST LAST STREAM VERSION`.
struct Ack: Hashable {
    var first: UInt64
    var last: UInt64
    var stream: String
    var version: UInt64

    /// Parses the complete `ack` lines of `output` (a line cut by the kill has no newline and is ignored).
    static func parse(_ output: String) -> [Ack] {
        let complete = output.hasSuffix("\n") ? output : String(output[..<(output.lastIndex(of: "\n") ?? output.startIndex)])
        return complete.split(separator: "\n").compactMap { line in
            let parts = line.split(separator: " ")
            guard parts.count == 5, parts[0] == "ack", let first = UInt64(parts[1]), let last = UInt64(parts[2]),
                  let version = UInt64(parts[4]) else { return nil }
            return Ack(first: first, last: last, stream: String(parts[3]), version: version)
        }
    }
}

/// Checks that every acknowledged append is in the log exactly where it was acknowledged, and that
/// the log verifies end to end.
func checkAcknowledged(_ acks: [Ack], in path: String) async throws {
    let log = try SQLiteEventLog(path: path)
    try await checkAcknowledged(acks, in: log)
    #expect(try queryText(path, "PRAGMA integrity_check") == "ok")
}

/// Checks that every acknowledged append is in `log` exactly where it was acknowledged, once, that the
/// log verifies end to end, and that start-up from its snapshot plus tail equals a full replay.
func checkAcknowledged(_ acks: [Ack], in log: any EventLog) async throws {
    let report = try await HistoryVerifier.verify(log)
    var stored: [UInt64: StoredEvent] = [:]
    var position: UInt64 = 0
    while true {
        let page = try await log.read(after: position, limit: EventLogLimits.readPageEventsMax)
        guard let last = page.last else { break }
        for event in page { stored[event.sequence] = event }
        position = last.sequence
    }
    #expect(UInt64(stored.count) == report.events)
    for ack in acks {
        let count = ack.last - ack.first + 1
        for offset in 0..<count {
            let event = stored[ack.first + offset]
            #expect(event?.stream == ack.stream, "acknowledged event \(ack.first + offset) is missing or moved")
            #expect(event?.streamVersion == ack.version - (count - 1 - offset))
        }
    }
    #expect(Set(acks).count == acks.count, "an append was acknowledged twice")
    // Start-up from snapshot + tail must equal a full replay.
    let coordinator = try await Coordinator.open(log: log)
    #expect(await coordinator.digest == (try await History.replay(log)).digest)
}

@Suite(.serialized) struct CrashDurabilityTests {
    @Test func everyAcknowledgedEventSurvivesSIGKILL() async throws {
        let seed: UInt64 = 0x10C5_7E90
        var random = SeededGenerator(seed: seed)
        let directory = temporaryDirectory()
        var acks: [Ack] = []
        let cycles = 8
        for cycle in 0..<cycles {
            let child = try ChildProcess(try lockstepBinary(), [
                "debug", "append-load", "--data", directory, "--writers", "16", "--seconds", "60", "--tag", "c\(cycle)",
            ])
            if cycle.isMultiple(of: 3) {
                // Sometimes during start-up (opening, loading the snapshot, replaying the tail).
                try await Task.sleep(for: .milliseconds(Int.random(in: 0...120, using: &random)))
            } else {
                try await child.waitForOutput("ready", seconds: 30)
                try await Task.sleep(for: .milliseconds(Int.random(in: 50...900, using: &random)))
            }
            child.kill(SIGKILL)
            let output = try await child.wait(seconds: 10)
            #expect(output.status == SIGKILL || output.status == 9, "cycle \(cycle): \(output.stderr)")
            acks += Ack.parse(output.stdout)
        }
        #expect(acks.count > 100, "the harness must append enough to bite (seed \(seed))")
        try await checkAcknowledged(acks, in: directory + "/events.sqlite")
    }

    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/strace"), "needs strace (apt package strace)"))
    func aFailedSyncStopsWritesAndNothingAfterItIsAcknowledged() async throws {
        let directory = temporaryDirectory()
        // Let the first 40 syncs through, then fail exactly one with EIO: the log must not retry it.
        let child = try ChildProcess("/usr/bin/strace", [
            "-f", "-o", "/dev/null", "-e", "trace=fsync,fdatasync", "-e", "inject=fsync,fdatasync:error=EIO:when=40",
            try lockstepBinary(), "debug", "append-load", "--data", directory, "--writers", "8", "--seconds", "30", "--tag", "eio",
        ])
        let output = try await child.wait(seconds: 60)
        #expect(output.status != 0)
        let lines = output.stdout.split(separator: "\n")
        // Fail-stop: each writer, once refused, probes with three more appends (streams `probe-…`),
        // issued strictly after its refusal. Not one may be acknowledged. (Ordinary `ack` lines may still
        // be printed after another writer's refusal: they were committed before the failure.)
        #expect(!lines.contains { $0.hasPrefix("ack") && $0.contains("migration/probe-") })
        let refusals = lines.filter { $0.hasPrefix("refused") }
        #expect(refusals.count == 8 * 4, "every writer is refused once and then probes three times: \(refusals)")
        #expect(Set(refusals).isSubset(of: ["refused writes_stopped", "refused commit_outcome_unknown"]), "\(Set(refusals))")
        let acks = Ack.parse(output.stdout)
        #expect(!acks.isEmpty)
        // Everything acknowledged before the failure is durable, and the log is whole after a restart.
        try await checkAcknowledged(acks, in: directory + "/events.sqlite")
        // Writes resume after a restart on a healthy disk.
        let again = try await runLockstep(["debug", "append-load", "--data", directory, "--writers", "2", "--seconds", "1", "--tag", "after"])
        #expect(again.status == 0, "\(again.stderr)")
    }
}

/// Reliability test #2: a power cut loses what was not fsynced. An LD_PRELOAD shim (Shim/unsynced-writes.c)
/// holds WAL writes in memory until fsync, so SIGKILL drops exactly the unsynced ones. With
/// `synchronous=FULL` no acknowledged event may be lost; the control run without commit syncs must lose
/// some, or the harness proves nothing.
@Suite(.serialized) struct UnsyncedWriteLossTests {
    static let shimSource = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Shim/unsynced-writes.c").path

    /// Compiles the shim into a temporary directory.
    static func shim() async throws -> String {
        let library = temporaryDirectory() + "/unsynced-writes.so"
        let compiler = try ChildProcess("/usr/bin/env", ["cc", "-shared", "-fPIC", "-O2", "-o", library, shimSource, "-ldl", "-lpthread"])
        let result = try await compiler.wait(seconds: 120)
        guard result.status == 0 else { throw TestFailure("cc failed: \(result.stderr)") }
        return library
    }

    /// Runs the load generator under the shim, kills it mid-flight, and returns the acknowledgements and the data directory.
    func killedRun(unsafe: Bool, seed: UInt64) async throws -> (acks: [Ack], directory: String) {
        let directory = temporaryDirectory()
        var arguments = ["debug", "append-load", "--data", directory, "--writers", "8", "--seconds", "60", "--tag", "p"]
        if unsafe { arguments.append("--unsafe-skip-commit-sync-for-testing") }
        let child = try ChildProcess(try lockstepBinary(), arguments, environment: ["LD_PRELOAD": try await Self.shim()])
        try await child.waitForOutput("ready", seconds: 30)
        var random = SeededGenerator(seed: seed)
        try await Task.sleep(for: .milliseconds(Int.random(in: 700...1_200, using: &random)))
        // A loaded machine may have appended little by then: kill it once it has appended enough to bite.
        try await eventually("the harness appended enough to bite", seconds: 60) { Ack.parse(child.stdout).count > 150 }
        child.kill(SIGKILL)
        let output = try await child.wait(seconds: 10)
        return (Ack.parse(output.stdout), directory)
    }

    @Test func withFullSyncNoAcknowledgedEventIsLost() async throws {
        let (acks, directory) = try await killedRun(unsafe: false, seed: 21)
        #expect(acks.count > 100)
        try await checkAcknowledged(acks, in: directory + "/events.sqlite")
    }

    @Test func theControlRunWithoutCommitSyncsLosesAcknowledgedEvents() async throws {
        let (acks, directory) = try await killedRun(unsafe: true, seed: 22)
        #expect(acks.count > 100)
        let log = try SQLiteEventLog(path: directory + "/events.sqlite")
        _ = try await HistoryVerifier.verify(log)  // what survived is still a whole, valid log
        var present: Set<String> = []
        var position: UInt64 = 0
        while true {
            let page = try await log.read(after: position, limit: EventLogLimits.readPageEventsMax)
            guard let last = page.last else { break }
            for event in page { present.insert("\(event.stream)@\(event.streamVersion)") }
            position = last.sequence
        }
        let lost = acks.filter { !present.contains("\($0.stream)@\($0.version)") }
        #expect(!lost.isEmpty, "the shim must make an unsynced commit disappear, or this harness proves nothing")
    }
}

