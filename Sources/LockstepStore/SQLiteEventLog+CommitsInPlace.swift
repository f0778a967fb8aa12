// When an append is committed by the thread that makes it (SQLiteEventLog.swift, `commitInPlace`).

extension SQLiteEventLog {
    /// When an append is committed on the thread that makes it instead of waking the writer's queue: the
    /// writer has had nothing to commit for at least `idleAtLeast`, and its last commit (its fsync
    /// included) took at most `lastCommitAtMost`. Still one commit at a time, on the writer's queue.
    ///
    /// Why: an append that finds the log idle forms a batch of one either way, and handing it to the
    /// writer costs two sleeping threads woken per commit (the writer, then the appender for the answer):
    /// at one agent, about 7 % of a lease cycle's server CPU (docs/benchmarks-api-history.md, session 36).
    /// Why only then: the appender (an
    /// event loop, or the coordinator's caller) is held through the commit, and while it is held nothing
    /// it would have appended meanwhile can join a batch. So under a steady stream of appends (each
    /// coming sooner than `idleAtLeast` after the writer last ran out) they go to the writer's queue
    /// and batch as before, and on a slow disk (a commit over `lastCommitAtMost`) nobody is held for it.
    /// Before the first commit nothing is known of the disk: the first goes to the writer's queue.
    public struct CommitsInPlace: Sendable, Equatable {
        /// How long the writer must have had nothing to commit.
        public var idleAtLeast: Duration
        /// Longest the last commit may have taken, from `BEGIN` to `COMMIT` returned.
        public var lastCommitAtMost: Duration

        public init(idleAtLeast: Duration = .microseconds(150), lastCommitAtMost: Duration = .milliseconds(1)) {
            self.idleAtLeast = idleAtLeast
            self.lastCommitAtMost = lastCommitAtMost
        }

        /// Whether an append made `now` commits in place, the writer idle since `idleSince` (nil: it
        /// is draining) and its last commit having taken `lastCommitTook` (nil: none yet).
        func allows(idleSince: ContinuousClock.Instant?, lastCommitTook: Duration?, now: ContinuousClock.Instant) -> Bool {
            guard let idleSince, let lastCommitTook else { return false }
            return lastCommitTook <= lastCommitAtMost && idleSince.duration(to: now) >= idleAtLeast
        }
    }
}
