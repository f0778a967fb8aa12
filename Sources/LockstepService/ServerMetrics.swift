import LockstepCore
import LockstepEngine
import Metrics
import Prometheus
import Synchronization
import CMallocInfo

/// What `/metrics` shows, in the Prometheus text format (swift-metrics, with swift-prometheus as the
/// backend). Request latency is labelled by API method and transport, never by raw URL, so the number
/// of series stays bounded.
public final class ServerMetrics: Sendable {
    package let registry: PrometheusCollectorRegistry
    package let factory: PrometheusMetricsFactory

    package let appendedEvents: Metrics.Counter
    package let commits: Metrics.Counter
    package let commitBatch: Metrics.Recorder
    /// BEGIN to the end of COMMIT, including the WAL fsync.
    package let commitDuration: Metrics.Timer
    package let parkedPolls: Metrics.Gauge
    /// From the commit of the append that readied a step to the parked poll it woke answered with it.
    package let pollWakeUp: Metrics.Timer
    package let openWatches: Metrics.Gauge
    package let stepLeasesHeld: Metrics.Gauge
    package let serviceLeasesHeld: Metrics.Gauge
    package let stepLeasesExpired: Metrics.Counter
    package let staleTokenRejections: Metrics.Counter
    /// Pieces of poll work refused because `PollLane.waitingMax` waited already: a poll's look (the poll
    /// is answered at once) or a step's give-back (then given back from a task of its own).
    package let pollLaneOverflows: Metrics.Counter
    /// Steps of the wall clock away from Lockstep's clock (over 1 s), seen by the timers.
    package let wallClockSteps: Metrics.Counter
    /// Connections open on both listeners.
    package let openConnections: Metrics.Gauge
    /// Bytes of heap the process has allocated and not freed (glibc's `mallinfo2`: what it holds, as
    /// opposed to its RSS, which keeps what a burst of requests once needed).
    package let heapInUse: Metrics.Gauge
    /// On PostgreSQL: the epoch this coordinator writes under, 0 while it is a standby.
    package let writerEpoch: Metrics.Gauge
    /// On PostgreSQL: times this coordinator was deposed as the writer.
    package let depositions: Metrics.Counter
    /// The last sequence folded into this coordinator's live state (a replica's lag is the writer's minus its own).
    package let appliedSequence: Metrics.Gauge
    /// Streams cut because their reader took nothing for `stalledReaderMillisMax`.
    package let stalledReadersCut: Metrics.Counter
    /// Freezes in force (declared, started, not ended), read when scraped.
    package let freezesInForce: Metrics.Gauge
    package let nodesWaitingForWindow: Metrics.Gauge
    /// Migrations paused by a stop of the line.
    package let linePauses: Metrics.Counter
    /// Checkpoints signed and recorded in the log (docs/history.md).
    package let checkpointsSigned: Metrics.Counter
    /// Checkpoint copies that could not be kept elsewhere (the checkpoints directory, the witness).
    package let checkpointCopiesFailed: Metrics.Counter

    /// Counts a commit that failed for a storage reason, by its code (`storage_full`, `writes_stopped`).
    package func failedCommit(_ code: String) {
        Metrics.Counter(label: "lockstep_failed_commits_total", dimensions: [("code", code)], factory: factory).increment()
    }

    /// Counts a connection refused at accept, by the limit it hit.
    package func refusedConnection(_ reason: String) {
        Metrics.Counter(label: "lockstep_connections_refused_total", dimensions: [("reason", reason)], factory: factory).increment()
    }
    /// From a migration's first exposure stage to its end (succeeded, rolled back or failed).
    package let partiallyMigrated: Metrics.Timer
    /// The request timers made so far (`request(_:transport:)`).
    private let requestTimers = RequestTimers()
    /// Migrations exposing something now, and since when (lost on restart: the timer starts again).
    package let exposedSince = ExposedSince()

    /// Migrations rolling back now: since when, and what set it off (lost on restart, like `exposedSince`).
    package let rollingBackSince = RollingBackSince()

    package final class RollingBackSince: Sendable {
        private let since = Mutex<[MigrationID: (at: Instant, trigger: String)]>([:])
        func withLock<R>(_ body: (inout [MigrationID: (at: Instant, trigger: String)]) -> R) -> R { since.withLock { body(&$0) } }
    }

    package final class ExposedSince: Sendable {
        private let since = Mutex<[MigrationID: Instant]>([:])
        func withLock<R>(_ body: (inout [MigrationID: Instant]) -> R) -> R { since.withLock { body(&$0) } }
    }

    /// Counts and times what an append recorded: rollbacks by trigger, analysis outcomes, and the time
    /// a migration spent partially migrated.
    package func record(_ change: Coordinator.Change) {
        guard let migration = change.migration, let at = change.at else { return }
        for event in change.events {
            switch event {
            case .migrationAborted(let report):
                let trigger = report.trigger?.rawValue ?? "unknown"
                Metrics.Counter(label: "lockstep_rollbacks_total", dimensions: [("trigger", trigger)], factory: factory).increment()
                rollingBackSince.withLock { $0[migration] = (at, trigger) }
            case .analysisEvaluated(let record):
                Metrics.Counter(label: "lockstep_analysis_outcomes_total", dimensions: [("outcome", record.outcome.rawValue)], factory: factory).increment()
            case .breakGlass(let override):
                Metrics.Counter(label: "lockstep_break_glass_total", dimensions: [("scope", override.scope.rawValue)], factory: factory).increment()
            case .checkReported(let reported):
                Metrics.Counter(label: "lockstep_check_results_total", dimensions: [("outcome", reported.outcome.rawValue)], factory: factory).increment()
            case .migrationPaused(_, let lineStop) where !lineStop.isEmpty:
                linePauses.increment()
            case .exposureStageReached:
                exposedSince.withLock { if $0[migration] == nil { $0[migration] = at } }
            case .migrationSucceeded, .migrationRolledBack, .migrationFailed:
                // A rollback's outcome and how long it took, by its trigger: the success rate is
                // rolled_back over all outcomes of a trigger.
                if let rollback = rollingBackSince.withLock({ $0.removeValue(forKey: migration) }) {
                    let outcome = if case .migrationFailed = event { "failed" } else { "rolled_back" }
                    Metrics.Counter(label: "lockstep_rollback_outcomes_total", dimensions: [("trigger", rollback.trigger), ("outcome", outcome)],
                                    factory: factory).increment()
                    Metrics.Timer(label: "lockstep_rollback_duration_seconds", dimensions: [("trigger", rollback.trigger)], factory: factory)
                        .recordMilliseconds(max(0, at.millisecondsSinceEpoch - rollback.at.millisecondsSinceEpoch))
                }
                if let since = exposedSince.withLock({ $0.removeValue(forKey: migration) }) {
                    partiallyMigrated.recordMilliseconds(max(0, at.millisecondsSinceEpoch - since.millisecondsSinceEpoch))
                }
            default:
                break
            }
        }
    }

    /// The instruments, on a registry of their own: a server built twice in one process (tests) gets
    /// two sets. Nothing global is touched (see `bootstrapProcess`).
    public init() {
        let registry = PrometheusCollectorRegistry()
        self.registry = registry
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.valueHistogramBuckets["lockstep_commit_batch_events"] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1_024, 4_096]
        factory.durationHistogramBuckets["lockstep_rollback_duration_seconds"] = [
            .seconds(1), .seconds(10), .seconds(60), .seconds(300), .seconds(900), .seconds(3_600), .seconds(4 * 3_600), .seconds(86_400),
        ]
        factory.durationHistogramBuckets["lockstep_partially_migrated_seconds"] = [
            .seconds(1), .seconds(10), .seconds(60), .seconds(300), .seconds(900), .seconds(3_600), .seconds(4 * 3_600),
            .seconds(86_400), .seconds(7 * 86_400),
        ]
        // Every 100 µs up to 2 ms (the wake-up target), so its p99 is read to a tenth of a millisecond.
        factory.durationHistogramBuckets["lockstep_poll_wakeup_seconds"] = (1...20).map { Duration.microseconds(100 * $0) } + [
            .milliseconds(3), .milliseconds(4), .milliseconds(5), .milliseconds(6), .milliseconds(8), .milliseconds(10),
            .milliseconds(15), .milliseconds(20), .milliseconds(50), .milliseconds(100), .seconds(1),
        ]
        factory.defaultDurationHistogramBuckets = [
            .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2), .milliseconds(5),
            .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500),
            .seconds(1), .seconds(5), .seconds(30),
        ]
        self.factory = factory
        appendedEvents = Metrics.Counter(label: "lockstep_appended_events_total", factory: factory)
        commits = Metrics.Counter(label: "lockstep_commits_total", factory: factory)
        commitBatch = Metrics.Recorder(label: "lockstep_commit_batch_events", aggregate: true, factory: factory)
        commitDuration = Metrics.Timer(label: "lockstep_commit_duration_seconds", factory: factory)
        parkedPolls = Metrics.Gauge(label: "lockstep_parked_polls", factory: factory)
        pollWakeUp = Metrics.Timer(label: "lockstep_poll_wakeup_seconds", factory: factory)
        openWatches = Metrics.Gauge(label: "lockstep_open_watches", factory: factory)
        stepLeasesHeld = Metrics.Gauge(label: "lockstep_step_leases_held", factory: factory)
        serviceLeasesHeld = Metrics.Gauge(label: "lockstep_service_leases_held", factory: factory)
        stepLeasesExpired = Metrics.Counter(label: "lockstep_step_leases_expired_total", factory: factory)
        staleTokenRejections = Metrics.Counter(label: "lockstep_stale_token_rejections_total", factory: factory)
        pollLaneOverflows = Metrics.Counter(label: "lockstep_poll_lane_overflows_total", factory: factory)
        wallClockSteps = Metrics.Counter(label: "lockstep_wall_clock_steps_total", factory: factory)
        openConnections = Metrics.Gauge(label: "lockstep_open_connections", factory: factory)
        heapInUse = Metrics.Gauge(label: "lockstep_heap_in_use_bytes", factory: factory)
        writerEpoch = Metrics.Gauge(label: "lockstep_writer_epoch", factory: factory)
        depositions = Metrics.Counter(label: "lockstep_depositions_total", factory: factory)
        appliedSequence = Metrics.Gauge(label: "lockstep_applied_sequence", factory: factory)
        stalledReadersCut = Metrics.Counter(label: "lockstep_stalled_readers_cut_total", factory: factory)
        freezesInForce = Metrics.Gauge(label: "lockstep_freezes_in_force", factory: factory)
        nodesWaitingForWindow = Metrics.Gauge(label: "lockstep_nodes_waiting_for_window", factory: factory)
        linePauses = Metrics.Counter(label: "lockstep_line_stop_pauses_total", factory: factory)
        checkpointsSigned = Metrics.Counter(label: "lockstep_checkpoints_signed_total", factory: factory)
        checkpointCopiesFailed = Metrics.Counter(label: "lockstep_checkpoint_copies_failed_total", factory: factory)
        partiallyMigrated = Metrics.Timer(label: "lockstep_partially_migrated_seconds", factory: factory)
    }

    /// Heap bytes in use now (glibc), or nil where that is not known.
    package static func heapBytesInUse() -> Int? {
        let bytes = lockstep_heap_bytes_in_use()
        return bytes == 0 ? nil : Int(clamping: bytes)
    }

    /// Makes this registry the process's metrics backend as well, so what other libraries record
    /// appears in `/metrics` too. Once per process, in `main` (`lockstep serve`), never in a library.
    public func bootstrapProcess() {
        MetricsSystem.bootstrap(factory)
    }

    /// The timer of requests of one method on one transport: made on first use (so `/metrics` lists the
    /// methods that were called), then kept. A registry look-up takes its lock and matches the labels,
    /// which is not what every request should pay.
    package func request(_ method: String, transport: String) -> Metrics.Timer {
        requestTimers.timer(method, transport) {
            Metrics.Timer(label: "lockstep_request_duration_seconds", dimensions: [("method", method), ("transport", transport)], factory: factory)
        }
    }

    /// Request timers by method and transport, each made once.
    private final class RequestTimers: Sendable {
        private struct Key: Hashable {
            let method: String
            let transport: String
        }
        /// Bounded by the API's operations times two transports.
        private let made = Mutex<[Key: Metrics.Timer]>([:])

        func timer(_ method: String, _ transport: String, make: () -> Metrics.Timer) -> Metrics.Timer {
            made.withLock { made in
                let key = Key(method: method, transport: transport)
                if let timer = made[key] { return timer }
                let timer = make()
                made[key] = timer
                return timer
            }
        }
    }

    /// Counts what an error says about the system (stale reports are a fencing signal worth watching).
    package func record(_ error: APIError) {
        if error.errorCode == .staleFencingToken { staleTokenRejections.increment() }
    }

    package var text: [UInt8] { registry.emitToBuffer() }
}
