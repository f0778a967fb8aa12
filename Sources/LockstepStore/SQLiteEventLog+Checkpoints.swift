import CSQLite
import Synchronization

// The WAL checkpoints of the SQLite log: when they run, on which connection, and what bounds the WAL
// (docs/event-log.md, "Checkpoints"). Appends and reads are in SQLiteEventLog.swift and +Reads.swift.

extension SQLiteEventLog {
    /// Moves the WAL into the database every `checkpointIntervalCommits` commits. The commits are
    /// already durable in the WAL; a sync error in a checkpoint still stops all later writes.
    ///
    /// The bulk of the work, a passive checkpoint of the interval's frames (about 3 ms for 1,000 commits,
    /// most of it the database file's fsync), runs on the checkpointer's connection and queue, beside
    /// the commits: SQLite lets one checkpoint and one writer work on a WAL at once. One runs at a time;
    /// while one runs, the count goes on and the next batch hands over the next.
    ///
    /// The commits made meanwhile are still only in the WAL when it ends, and SQLite restarts the WAL
    /// (writes it from its start again, over pages already in the cache) only once a checkpoint moved
    /// all of it: a writer that never pauses would make it grow for good, each commit extending the file.
    /// So after the background pass, the writer runs a second passive pass on its own connection, after
    /// its next batch's appends are answered: it moves only the frames written during the first (a few
    /// commits' pages and one fsync), and the next commit restarts the WAL.
    ///
    /// A passive checkpoint never waits, so it cannot move frames a reader may still need: with readers
    /// always reading (watches, history pages), the WAL would grow with every commit. When the WAL holds
    /// more than `walBytesMax` after the writer's pass, a truncating checkpoint waits for the readers (at
    /// most `walTruncateWaitMillis`, then the connection's usual busy timeout again) and empties it; if
    /// they outlast the wait, the next interval tries again. Both run after the batch's appends are
    /// answered, so they hold up only the next commit.
    func checkpointIfDue(_ db: SQLiteConnection) {
        // The counter first: the stopped flag takes a lock, and this runs after every batch.
        guard let checkpointer, checkpointDue, writesStopped == nil else { return }
        guard checkpointer.running.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing).exchanged else { return }
        // Again now that no other checkpoint runs: one that failed since the check above stopped writes,
        // and nothing is retried after a failure.
        guard writesStopped == nil else { return checkpointer.running.store(false, ordering: .releasing) }
        if checkpointer.finishWanted.exchange(false, ordering: .acquiringAndReleasing) {
            defer { checkpointer.running.store(false, ordering: .releasing) }
            let (passed, walFrames) = Self.passiveCheckpoint(db)
            var rc = passed
            if rc == SQLITE_OK, Self.walBytes(frames: walFrames, pageSize: checkpointer.pageSize) > options.walBytesMax {
                sqlite3_busy_timeout(db.handle, Self.walTruncateWaitMillis)
                rc = sqlite3_wal_checkpoint_v2(db.handle, nil, SQLITE_CHECKPOINT_TRUNCATE, nil, nil)
                sqlite3_busy_timeout(db.handle, SQLiteConnection.busyTimeoutMillis)
            }
            if rc != SQLITE_OK && rc != SQLITE_BUSY { checkpointFailed(rc, db) }
            return
        }
        writerState.commitsSinceCheckpoint = 0
        checkpointQueue.async { [weak self, checkpointer] in
            defer { checkpointer.running.store(false, ordering: .releasing) }
            // Writes stopped (a commit failed) since it was handed over: nothing more is written.
            guard let self, self.writesStopped == nil else { return }
            let (rc, _) = Self.passiveCheckpoint(checkpointer.connection)
            if rc == SQLITE_OK || rc == SQLITE_BUSY {
                if rc == SQLITE_OK { checkpointer.passes.add(1, ordering: .relaxed) }
                checkpointer.finishWanted.store(true, ordering: .releasing)
            } else {
                self.checkpointFailed(rc, checkpointer.connection)
            }
        }
    }

    /// Whether `checkpointIfDue` has work: the interval's commits are done, or a background pass ended
    /// and the writer's is next. (A commit in place leaves it to the writer's queue.) On `writerQueue`.
    var checkpointDue: Bool {
        guard let checkpointer else { return false }
        return writerState.commitsSinceCheckpoint >= options.checkpointIntervalCommits || checkpointer.finishWanted.load(ordering: .acquiring)
    }

    /// One passive checkpoint on `db`: its result code and the frames the WAL holds.
    private static func passiveCheckpoint(_ db: SQLiteConnection) -> (Int32, Int32) {
        var walFrames: Int32 = 0
        let rc = sqlite3_wal_checkpoint_v2(db.handle, nil, SQLITE_CHECKPOINT_PASSIVE, &walFrames, nil)
        return (rc, walFrames)
    }

    /// A checkpoint's failure stops writes, and is told like a commit's (readiness, log lines).
    private func checkpointFailed(_ rc: Int32, _ db: SQLiteConnection) {
        let failure = EventLogError.writesStopped(
            reason: "checkpoint failed: " + SQLiteError(code: rc, message: String(cString: sqlite3_errmsg(db.handle))).description)
        failureObserver?(failure)
        stopWrites(failure)
    }

    /// Background passes that ended without an error (tests).
    var backgroundCheckpoints: Int { checkpointer?.passes.load(ordering: .relaxed) ?? 0 }

    /// The checkpointer's connection and the flags it shares with the writer. The connection is touched
    /// only while `running` is held (on `checkpointQueue`).
    final class Checkpointer: Sendable {
        let connection: SQLiteConnection
        /// A checkpoint is under way: the background pass, or the writer's (`checkpointIfDue`).
        let running = Atomic<Bool>(false)
        /// A background pass ended: the writer's pass is next.
        let finishWanted = Atomic<Bool>(false)
        /// Background passes that ended without an error.
        let passes = Atomic<Int>(0)
        let pageSize: Int64

        init(connection: SQLiteConnection) {
            self.connection = connection
            pageSize = SQLiteEventLog.pageSize(of: connection)
        }
    }

    /// Longest a truncating checkpoint waits for readers, in milliseconds.
    static let walTruncateWaitMillis: Int32 = 1_000

    /// The size of a WAL holding `frames` frames of `pageSize`-byte pages (each frame has a 24-byte
    /// header; the file a 32-byte one), saturating.
    static func walBytes(frames: Int32, pageSize: Int64) -> Int64 {
        let (frame, frameOverflow) = max(pageSize, 0).addingReportingOverflow(24)
        let (bytes, bytesOverflow) = Int64(max(frames, 0)).multipliedReportingOverflow(by: frame)
        let (file, fileOverflow) = bytes.addingReportingOverflow(32)
        return frameOverflow || bytesOverflow || fileOverflow ? .max : file
    }
}
