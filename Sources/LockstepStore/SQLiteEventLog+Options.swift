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

    /// When an append is committed on the thread that makes it instead of waking the writer's queue: the
    /// writer has had nothing to do for at least `idleAtLeast` (no drain, no other work queued, no
    /// background checkpoint running), and its last commit, successful or not, took at most
    /// `lastCommitAtMost` from `BEGIN` (its fsync included). Still one commit at a time, on the writer's
    /// queue (`sync`, run by the appending thread); other work that arrives meanwhile is held until it ends.
    ///
    /// Why: an append that finds the writer idle would wake it, and the writer would wake the appender
    /// with the answer: two sleeping threads per commit, which at one agent cost 5–6 % of a lease
    /// cycle's time and 7–9 % of its server CPU (docs/benchmarks-api-history.md, session 36). What it
    /// costs: the appending thread (the event loop that read the agent's request, or a thread of Swift's
    /// cooperative pool) is held through the commit, and so is anything it would have appended meanwhile:
    /// - it never waits for a lock: its `BEGIN IMMEDIATE` has no busy timeout, and when another process
    ///   holds the write lock the append is left to the writer's queue, which waits;
    /// - appends made by other threads meanwhile are left to the writer's queue, which commits them
    ///   together (those made during its `BEGIN`, microseconds, join its batch); so is a checkpoint due,
    ///   so the appender is held for one commit, never for a checkpoint waiting for readers;
    /// - appends in quick succession (each sooner than `idleAtLeast` after the writer last ran out,
    ///   as under load, or a burst from one thread after its first) go to the writer's queue and batch
    ///   as before: a burst from one thread costs one fsync more than before, not one per append;
    /// - after a commit over `lastCommitAtMost` nobody is held until a commit on the queue is quick
    ///   again; the first commit, with nothing known of the disk, goes to the queue. The bound is a
    ///   forecast from the last commit, not a limit: a disk that stalls in the middle of a commit in
    ///   place holds its thread (one event loop, with its connections) until the commit ends, where it
    ///   would have held only the writer's queue.
    public struct CommitsInPlace: Sendable, Equatable {
        /// How long the writer must have had nothing to commit.
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
