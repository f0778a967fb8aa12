import Foundation
@testable import LockstepStore
import Synchronization
import Testing

/// `SQLiteEventLog.Options.commitsInPlace`: an append to an idle log with quick commits is committed by
/// the appending task itself; otherwise, and for appends queued meanwhile, by the writer's queue.
@Suite struct SQLiteCommitsInPlaceTests {
    /// Who appended, read by the commit observer: a commit in place runs inside the appending task and
    /// sees its value; one on the writer's queue runs in no task and sees nil.
    enum Appending {
        @TaskLocal static var caller: String?
    }

    /// Per commit, the appending task's name (nil: the writer's queue).
    final class Callers: Sendable {
        private let callers = Mutex<[String?]>([])
        func record(_ caller: String?) { callers.withLock { $0.append(caller) } }
        var all: [String?] { callers.withLock { $0 } }
    }

    /// A log whose commit observer records who committed each batch.
    func log(_ inPlace: SQLiteEventLog.CommitsInPlace?, checkpointEvery: Int? = nil, path: String = temporaryDirectory() + "/events.sqlite",
             exclusiveWriter: Bool = true) throws -> (SQLiteEventLog, Callers) {
        var options = SQLiteEventLog.Options()
        options.commitsInPlace = inPlace
        options.exclusiveWriter = exclusiveWriter
        if let checkpointEvery { options.checkpointIntervalCommits = checkpointEvery }
        let commits = Callers()
        let log = try SQLiteEventLog(path: path, options: options) { _ in commits.record(Appending.caller) }
        return (log, commits)
    }

    /// A log with two events appended one by one (the first by the writer's queue, the second in place
    /// if `inPlace` allows), and another read-write connection to its database, to take the write lock.
    func logBesideAnotherConnection(_ inPlace: SQLiteEventLog.CommitsInPlace) async throws -> (SQLiteEventLog, Callers, SQLiteConnection) {
        let path = temporaryDirectory() + "/events.sqlite"
        let (log, commits) = try log(inPlace, path: path, exclusiveWriter: false)
        try await appendOneByOne(log, 2)
        #expect(commits.all == [nil, "append 1"])
        return (log, commits, try SQLiteConnection(path: path, readOnly: false))
    }

    /// Appends `count` events to stream "a" one after another, named "append N", each followed by a wait
    /// for the writer's queue to be free (a drain that answered an append may still be ending).
    func appendOneByOne(_ log: SQLiteEventLog, _ count: Int) async throws {
        for version in 0..<count {
            try await Appending.$caller.withValue("append \(version)") {
                let receipt = try await log.append(AppendRequest(stream: "a", expectedVersion: UInt64(version), records: [bytes("\(version)")]))
                #expect(receipt.lastSequence == UInt64(version) + 1)
            }
            log.writerQueue.sync {}
        }
    }


    @Test func anAppendToAnIdleLogIsCommittedByTheAppendingTaskOnceACommitWasTimed() async throws {
        let (log, commits) = try log(.always)
        try await appendOneByOne(log, 4)
        // The first: nothing known of the disk yet, so the writer's queue.
        #expect(commits.all == [nil, "append 1", "append 2", "append 3"])
        #expect(try await readAll(log).map(\.record) == (0..<4).map { bytes("\($0)") })
    }

    @Test(arguments: [
        ("turned off", nil),
        ("not idle long enough", SQLiteEventLog.CommitsInPlace(idleAtLeast: .seconds(3_600), lastCommitAtMost: .seconds(3_600))),
        ("the last commit too slow", SQLiteEventLog.CommitsInPlace(idleAtLeast: .zero, lastCommitAtMost: .zero)),
    ] as [(String, SQLiteEventLog.CommitsInPlace?)])
    func otherwiseTheWritersQueueCommits(_ why: String, _ inPlace: SQLiteEventLog.CommitsInPlace?) async throws {
        let (log, commits) = try log(inPlace)
        try await appendOneByOne(log, 4)
        #expect(commits.all == [nil, nil, nil, nil], "\(why)")
    }

    /// Appends made while one commits in place are left to the writer's queue, which commits them in one
    /// batch: the appending task is held for its own commit only. (The held commit blocks one thread of
    /// the cooperative pool in its observer; the others run on the rest: at least two threads, as on
    /// any machine of two cores or more.)
    @Test(.timeLimit(.minutes(2))) func appendsMadeMeanwhileAreCommittedTogetherByTheWritersQueue() async throws {
        var options = SQLiteEventLog.Options()
        options.commitsInPlace = .always
        let commits = Mutex<[Commit]>([])
        let holding = Atomic<Bool>(false)
        let release = DispatchSemaphore(value: 0)
        let log = try SQLiteEventLog(path: temporaryDirectory() + "/events.sqlite", options: options) { commit in
            let caller = Appending.caller
            commits.withLock { $0.append(Commit(caller: caller, appends: commit.appends)) }
            // The commit in place is held here, inside it, until the test has the others queued.
            if caller == "held" {
                holding.store(true, ordering: .releasing)
                _ = release.wait(timeout: .now() + 30)
            }
        }
        try await appendOneByOne(log, 1)
        let meanwhile = 8
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                try await Appending.$caller.withValue("held") {
                    _ = try await log.append(AppendRequest(stream: "held", expectedVersion: 0, records: [bytes("h")]))
                }
            }
            try await eventually("the commit in place is under way", seconds: 30, every: .milliseconds(5)) { holding.load(ordering: .acquiring) }
            for index in 0..<meanwhile {
                group.addTask {
                    try await Appending.$caller.withValue("meanwhile") {
                        _ = try await log.append(AppendRequest(stream: "m\(index)", expectedVersion: 0, records: [bytes("m")]))
                    }
                }
            }
            try await eventually("the others are queued", seconds: 30, every: .milliseconds(5)) { log.queuedAppends == meanwhile }
            // Other work arriving meanwhile is held until the commit in place ends, then runs.
            group.addTask { _ = try await log.durabilitySettings() }
            try await eventually("the other work is counted", seconds: 30, every: .milliseconds(5)) { log.otherWriterWork == 1 }
            release.signal()
            try await group.waitForAll()
        }
        #expect(commits.withLock { $0 } == [Commit(caller: nil, appends: 1), Commit(caller: "held", appends: 1), Commit(caller: nil, appends: meanwhile)])
        #expect(try await log.head().sequence == UInt64(2 + meanwhile))
        #expect(log.otherWriterWork == 0)
    }

    struct Commit: Equatable {
        var caller: String?
        var appends: Int
    }

    /// A commit in place hands a checkpoint due on to the writer's queue. Here every commit after the
    /// first is in place until a checkpoint runs, so without the hand-on none would ever run.
    @Test func aCheckpointDueAfterACommitInPlaceIsHandedOn() async throws {
        let (log, commits) = try log(.always, checkpointEvery: 2)
        try await appendOneByOne(log, 10)
        try await eventually("a background checkpoint ran", seconds: 10, every: .milliseconds(10)) { log.backgroundCheckpoints >= 1 }
        #expect(commits.all.prefix(2) == [nil, "append 1"])
        #expect(try await readAll(log).count == 10)
    }

    /// Other work on the writer's queue (a snapshot being stored, here held) sends an append to the
    /// writer's queue, to wait there behind it, instead of holding the appending thread in `sync`.
    @Test(.timeLimit(.minutes(2))) func otherWorkOnTheWritersQueueSendsAnAppendThere() async throws {
        let (log, commits) = try log(.always)
        try await appendOneByOne(log, 1)
        let release = DispatchSemaphore(value: 0)
        let held = Task { try await log.onWriterQueue { _ = release.wait(timeout: .now() + 30) } }
        try await eventually("the other work is queued", seconds: 30, every: .milliseconds(5)) { log.otherWriterWork == 1 }
        let appended = Task {
            try await Appending.$caller.withValue("behind the other work") {
                _ = try await log.append(AppendRequest(stream: "a", expectedVersion: 1, records: [bytes("1")]))
            }
        }
        try await eventually("the append is queued", seconds: 30, every: .milliseconds(5)) { log.queuedAppends == 1 }
        release.signal()
        try await held.value
        try await appended.value
        #expect(commits.all == [nil, nil])
        #expect(log.otherWriterWork == 0)
    }

    /// A commit in place that fails (the file's quota reached) answers its append with the failure (seen
    /// by the failure observer inside the appending task), and the appends after it are answered too.
    @Test(.timeLimit(.minutes(2))) func aFailedCommitInPlaceAnswersItsAppendAndTheNext() async throws {
        var options = SQLiteEventLog.Options()
        options.commitsInPlace = .always
        options.databaseBytesMax = 256 * 1_024
        let failures = Callers()
        let log = try SQLiteEventLog(path: temporaryDirectory() + "/events.sqlite", options: options,
                                     failureObserver: { _ in failures.record(Appending.caller) })
        let record = [UInt8](repeating: 7, count: 16 * 1_024)
        var version: UInt64 = 0
        var refusal: EventLogError?
        while refusal == nil && version < 1_000 {
            do {
                version = try await Appending.$caller.withValue("append \(version)") {
                    try await log.append(AppendRequest(stream: "a", expectedVersion: version, records: [record])).streamVersion
                }
            } catch {
                refusal = try #require(error as? EventLogError)
            }
            log.writerQueue.sync {}
        }
        #expect(refusal?.code == "storage_full")
        #expect(failures.all == ["append \(version)"], "the failed commit was made in place")
        await #expect(throws: EventLogError.self) { try await log.append(AppendRequest(stream: "a", expectedVersion: version, records: [record])) }
        #expect(try await log.head().sequence == version)
    }

    /// An append that finds another connection holding SQLite's write lock (a tool's, say) is not
    /// committed in place, where its thread would wait out the lock: the writer's queue takes it and
    /// waits, and commits it once the lock is let go.
    @Test(.timeLimit(.minutes(2))) func anAppendThatFindsTheWriteLockHeldIsLeftToTheWritersQueue() async throws {
        let (log, commits, other) = try await logBesideAnotherConnection(.always)
        try other.execute("BEGIN IMMEDIATE")
        let appended = Task {
            try await Appending.$caller.withValue("finds the lock held") {
                _ = try await log.append(AppendRequest(stream: "a", expectedVersion: 2, records: [bytes("2")]))
            }
        }
        // Left to the writer's queue at once, whose BEGIN now waits for the lock. A commit in place that
        // waited for it would keep its phase for SQLite's whole busy timeout (5 s), twice this bound.
        try await eventually("the writer's queue took the append", seconds: 2.5, every: .milliseconds(5)) { log.drainingOnTheQueue }
        try other.execute("ROLLBACK")
        try await appended.value
        #expect(commits.all == [nil, "append 1", nil])
    }

    /// A failed commit is timed as a successful one is: after one that waited out another connection's
    /// write lock (SQLite's 5 s busy timeout, on the writer's queue), the next append goes there too.
    @Test(.timeLimit(.minutes(2))) func aSlowFailedCommitSendsTheNextAppendToTheWritersQueue() async throws {
        let (log, commits, other) = try await logBesideAnotherConnection(SQLiteEventLog.CommitsInPlace(idleAtLeast: .zero, lastCommitAtMost: .seconds(1)))
        try other.execute("BEGIN IMMEDIATE")
        await #expect(throws: EventLogError.self) {
            try await Appending.$caller.withValue("waits out the lock") {
                _ = try await log.append(AppendRequest(stream: "a", expectedVersion: 2, records: [bytes("2")]))
            }
        }
        try other.execute("ROLLBACK")
        log.writerQueue.sync {}
        try await Appending.$caller.withValue("after the slow failure") {
            _ = try await log.append(AppendRequest(stream: "a", expectedVersion: 2, records: [bytes("2")]))
        }
        #expect(commits.all == [nil, "append 1", nil])
    }

    /// While a background checkpoint runs (its fsync beside the commits; here held), appends go to the
    /// writer's queue.
    @Test(.timeLimit(.minutes(2))) func appendsWhileABackgroundCheckpointRunsGoToTheWritersQueue() async throws {
        let (log, commits) = try log(.always, checkpointEvery: 2)
        let held = DispatchSemaphore(value: 0)
        log.checkpointQueue.async { _ = held.wait(timeout: .now() + 30) }
        try await appendOneByOne(log, 4)
        held.signal()
        // The second commit makes the checkpoint due: handed on, it waits behind the held queue.
        #expect(commits.all == [nil, "append 1", nil, nil])
    }

    /// Under the default rule, a burst of appends after a quiet spell batches on the writer's queue as
    /// before, though its first append commits in place (with every append committed in place, as a
    /// rule without its idle time would, it does not: 247 commits for 257 appends in a run of the whole
    /// suite). The disk's speed is taken out of it: any last commit is quick enough.
    @Test func aBurstAfterAQuietSpellBatchesAfterItsFirstAppend() async throws {
        let (log, commits) = try log(SQLiteEventLog.CommitsInPlace(lastCommitAtMost: .seconds(3_600)))
        try await appendOneByOne(log, 1)
        try await Task.sleep(for: .milliseconds(5))
        let writers = 64
        try await appendBurst(to: log, writers: writers, appendsEach: 4) { writer, append in
            try await Appending.$caller.withValue("w\(writer)") { try await append() }
        }
        let recorded = commits.all.dropFirst()
        #expect(recorded.first != nil, "the burst's first append, after 5 ms, commits in place")
        #expect(try await log.head().sequence == UInt64(1 + writers * 4))
        #expect(recorded.count < writers * 4 / 2, "commits batch: far fewer transactions than appends")
    }

    @Test func theRuleReadsTheIdleTimeAndTheLastCommitsDurationAndIsOnByDefault() {
        let rule = SQLiteEventLog.CommitsInPlace()
        #expect(rule == SQLiteEventLog.CommitsInPlace(idleAtLeast: .microseconds(150), lastCommitAtMost: .milliseconds(1)))
        #expect(SQLiteEventLog.Options().commitsInPlace == rule)
        let now = ContinuousClock.now
        let idle = now - .microseconds(150)
        #expect(rule.allows(idleSince: idle, lastCommitTook: .milliseconds(1), now: now))
        #expect(!rule.allows(idleSince: now - .microseconds(149), lastCommitTook: .microseconds(200), now: now))
        #expect(!rule.allows(idleSince: idle, lastCommitTook: .microseconds(1_001), now: now))
        #expect(!rule.allows(idleSince: idle, lastCommitTook: nil, now: now), "no commit timed yet")
    }
}
