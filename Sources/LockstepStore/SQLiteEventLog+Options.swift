// How the SQLite log is opened: its mode and options, among them when an append is committed by the
// thread that makes it (SQLiteEventLog.swift, `commitInPlace`).

extension SQLiteEventLog {
    /// How the database is opened.
    public enum Mode: Sendable {
        /// Creates the database if needed and accepts appends.
        case readWrite
        /// Only reads; used by governance commands so they never alter the evidence.
        case readOnly
    }

    /// Settings with defaults; tests lower the limits to exercise them.
    public struct Options: Sendable {
        /// Hold an exclusive lock on `PATH.lock` (read-write mode). Only tests that play two writers turn it off.
        public var exclusiveWriter = true
        /// Most events waiting for a commit; beyond it appends are refused with `overloaded`.
        public var appendQueueEventsMax = EventLogLimits.appendQueueEventsMax
        /// Commits between explicit WAL checkpoints (SQLite's own auto-checkpoint is off: it would
        /// swallow a sync error, and a sync error must stop writes).
        public var checkpointIntervalCommits = EventLogLimits.checkpointIntervalCommits
        /// Largest the WAL may stay after a checkpoint, in bytes: past it the checkpoint waits for the
        /// readers (up to `walTruncateWaitMillis`) and truncates the WAL, and each WAL reset shrinks the file
        /// to this size. Without it, readers that are always reading keep the WAL from ever restarting.
        public var walBytesMax = EventLogLimits.walBytesMax
        /// Only for the durability test's control run, which must be able to lose acknowledged events
        /// (proving the harness detects loss): commits without fsync (`synchronous=NORMAL`). Never use it.
        public var unsafeSkipCommitSyncForTesting = false
        /// A quota on the database file, in bytes (SQLite's `max_page_count`, read back): past it appends
        /// fail with `storage_full` as on a full disk, and reads go on. nil: as large as the disk allows.
        public var databaseBytesMax: Int64?
        /// When an append is committed on the thread that makes it instead of waking the writer's queue
        /// (`CommitsInPlace`); nil: never.
        public var commitsInPlace: CommitsInPlace? = CommitsInPlace()
        public init() {}
    }

    /// When an append is committed on the thread that makes it instead of waking the writer's queue: no
    /// commit for at least `idleAtLeast` and, at that moment, no drain, other work or background
    /// checkpoint on the writer's side; and the last commit took at most `lastCommitAtMost` from `BEGIN`
    /// (its fsync included; a failed or empty transaction counts only if it took longer). Still one commit
    /// at a time, on the writer's queue (`sync`, run by the appending thread), whose `BEGIN IMMEDIATE` never
    /// waits for a lock (held elsewhere, the append is left to the queue); appends and other work that
    /// arrive meanwhile, and a checkpoint due, are left to the queue. It spares two thread wake-ups per
    /// commit, and holds the appending thread (often an event loop) through one commit: what that costs,
    /// and why the rule, in docs/event-log.md, "Commits in place".
    public struct CommitsInPlace: Sendable, Equatable {
        /// How long since the last commit (a drain's end) the writer must have had nothing to commit.
        public var idleAtLeast: Duration
        /// Longest the last commit may have taken, from `BEGIN` to `COMMIT` returned.
        public var lastCommitAtMost: Duration

        public init(idleAtLeast: Duration = EventLogLimits.commitInPlaceIdleMin,
                    lastCommitAtMost: Duration = EventLogLimits.commitInPlaceLastCommitMax) {
            self.idleAtLeast = idleAtLeast
            self.lastCommitAtMost = lastCommitAtMost
        }

        /// Whether an append made `now` commits in place, the writer idle since `idleSince` and its last
        /// commit having taken `lastCommitTook` (nil: none yet).
        func allows(idleSince: ContinuousClock.Instant, lastCommitTook: Duration?, now: ContinuousClock.Instant) -> Bool {
            guard let lastCommitTook else { return false }
            return lastCommitTook <= lastCommitAtMost && idleSince.duration(to: now) >= idleAtLeast
        }
    }
}
