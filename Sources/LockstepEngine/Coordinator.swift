// One concept, longer than ~450 lines on purpose for now: the coordinator actor (decide → append →
// evolve, its lease timers and its grant pass) and the command types it answers with. Issue 15 replaces
// it with one engine state machine and thin shells; splitting the actor by concern before that redesign
// would only move its jobs between files (its private state is shared by all of them).
import LockstepCore
import LockstepStore
import LockstepWire

/// Who is asking, and why: recorded with every event a command produces.
public struct CommandContext: Hashable, Sendable {
    /// The authenticated principal (never taken from a request body).
    public var actor: Actor
    public var triggeredBy: TriggeredBy
    public var causationID: String
    public var correlationID: String

    public init(actor: Actor, triggeredBy: TriggeredBy, causationID: String = "", correlationID: String = "") {
        self.actor = actor
        self.triggeredBy = triggeredBy
        self.causationID = causationID
        self.correlationID = correlationID
    }
}

/// Why a command did not take effect.
public enum CommandError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The core refused it; nothing was appended.
    case rejected(Rejection)
    /// The log refused or failed the append; nothing was acknowledged (see the error for whether
    /// anything may have been written).
    case storage(EventLogError)
    /// Too many commands are waiting on this stream (a migration or a plan); nothing was done. Retry later.
    case overloaded(stream: String, waitingMax: Int)

    public var errorCode: ErrorCode {
        switch self {
        case .rejected(let rejection): rejection.errorCode
        case .storage(let error): error.errorCode
        case .overloaded: .migrationOverloaded
        }
    }

    /// `errorCode` as it travels.
    public var code: String { errorCode.rawValue }

    public var description: String {
        switch self {
        case .rejected(let rejection): rejection.description
        case .storage(let error): error.description
        case .overloaded(let stream, let waitingMax):
            "migration_overloaded: \(waitingMax) commands are already waiting on \(stream); retry later"
        }
    }
}

extension EventLogError {
    /// The log's error in the API's list of codes (the same strings as `code`, which the log, knowing
    /// nothing of the API, spells itself; `ErrorCodeTests` checks they agree).
    public var errorCode: ErrorCode {
        switch self {
        case .versionConflict: .versionConflict
        case .corrupted: .logCorrupted
        case .writesStopped: .writesStopped
        case .outcomeUnknown: .commitOutcomeUnknown
        case .overloaded: .logOverloaded
        case .storageFull: .storageFull
        case .busy: .storageBusy
        case .invalidRequest: .invalidRequest
        case .unavailable: .storageUnavailable
        }
    }
}

/// What an accepted command recorded.
public struct CommandResult: Hashable, Sendable {
    public var events: [RecordedEvent]
    public var receipt: AppendReceipt
}

/// A monotonic clock in nanoseconds: never jumps, unrelated to wall time. Lease TTLs run on it.
public typealias MonotonicClock = @Sendable () -> UInt64

/// The process's monotonic clock.
public let systemMonotonicClock: MonotonicClock = {
    let origin = ContinuousClock.now
    return { @Sendable in
        let elapsed = ContinuousClock.now - origin
        return UInt64(max(0, elapsed.components.seconds)) * 1_000_000_000 + UInt64(max(0, elapsed.components.attoseconds / 1_000_000_000))
    }
}()

/// The engine around the pure core: decide → append (expected version checked in the same transaction)
/// → evolve. One command per migration runs at a time; commands on different migrations overlap, so
/// their appends share group commits.
public actor Coordinator {
    public let log: any EventLog
    /// The live fold of the log.
    public private(set) var state: LogState
    /// A snapshot is saved after this many events since the last one (0 = never).
    public let snapshotIntervalEvents: UInt64

    private var lastSnapshotSequence: UInt64
    /// Every event up to here is folded into `state`.
    private var appliedThrough: UInt64
    /// Folded ranges beyond `appliedThrough`, waiting for an earlier append to finish (appends on
    /// different migrations can complete out of order; snapshots wait until there is no gap).
    private var appliedAhead: [ClosedRange<UInt64>] = []
    /// A snapshot is being written in the background.
    private var snapshotInFlight = false
    /// Streams with a command in progress, and the commands waiting for them.
    private var busyStreams: Set<String> = []
    /// The lease timer: for each live step lease, its token, TTL and monotonic deadline.
    private var leaseDeadlines: [MigrationID: [NodeID: LeaseDeadline]] = [:]
    /// Where lease TTLs are measured.
    public let monotonic: MonotonicClock
    /// The schedule_to_start timer: for each node of a plan that sets one and is waiting for an agent,
    /// since when (monotonic nanoseconds) the timer has seen it waiting. Not persisted: after a restart
    /// every waiting node gets its whole schedule_to_start again (as live leases get a fresh TTL).
    private var waitingSince: [MigrationID: [NodeID: UInt64]] = [:]

    struct LeaseKey: Hashable {
        var migration: MigrationID
        var node: NodeID
    }

    struct LeaseDeadline {
        var token: FencingToken
        var ttlMillis: Int64
        var deadlineNanos: UInt64
    }
    private var waiting: [String: [CheckedContinuation<Void, Never>]] = [:]

    /// What an append changed: the migration (nil for a plan) and the services its plan transitions.
    public struct Change: Sendable {
        public var migration: MigrationID?
        public var services: Set<String>
        /// The migration events the append recorded (none for a plan), and the command's time.
        public var events: [MigrationEvent] = []
        public var at: Instant?
    }

    /// Called after every append is folded in (the server wakes parked polls and watches with it). Must not block.
    private var changeObserver: (@Sendable (Change) -> Void)?

    /// Sets the function called after every append is folded into the live state.
    public func observeChanges(_ observer: @escaping @Sendable (Change) -> Void) { changeObserver = observer }

    /// Failures the timers met since the last `tick` (other than lost races).
    private var timerFailures: [CommandError] = []

    /// Set when the log stopped taking writes (fail-stop): every later command is refused with it at
    /// once, before deciding anything, so callers see the storage failure, not its side effects.
    private var stopped: EventLogError?

    /// The log stopped taking writes: this coordinator refuses every command; restart it (open the log again).
    public var isStopped: Bool { stopped != nil }

    private func noteFailure(_ error: EventLogError) {
        switch error {
        case .writesStopped, .outcomeUnknown, .corrupted:
            if stopped == nil { stopped = .writesStopped(reason: "an earlier append failed: \(error.description)") }
        default:
            break
        }
    }

    /// The lease queue: a grant pass is running / another is wanted / callers waiting for the next one.
    private var grantPassRunning = false
    private var grantPassWanted = false
    private var grantPassWaiters: [CheckedContinuation<Void, Never>] = []
    /// No pass has run since open: a crash between a request and its grant may have left work.
    private var grantPassOwed = true
    /// Opening may have found migrations whose service-lease bookkeeping is missing (old histories).
    private var reconcileOwed = true
    /// The time the next grant pass records (the latest any caller asked with).
    private var grantPassNow: Instant?
    /// Most grant appends a pass keeps in flight at once.
    public let grantAppendsInFlightMax: Int
    /// Default for `grantAppendsInFlightMax`.
    public static let defaultGrantAppendsInFlightMax = 16

    /// Most commands that may wait for their turn on one stream (a migration or a plan); more are refused as overloaded.
    public let commandsWaitingPerMigrationMax: Int

    /// Default snapshot interval, in events.
    public static let defaultSnapshotIntervalEvents: UInt64 = 10_000
    /// Default for `commandsWaitingPerMigrationMax`.
    public static let defaultCommandsWaitingPerMigrationMax = 1_024

    private init(log: any EventLog, state: LogState, snapshotSequence: UInt64, snapshotIntervalEvents: UInt64,
                 commandsWaitingPerMigrationMax: Int, grantAppendsInFlightMax: Int, monotonic: @escaping MonotonicClock) {
        self.log = log
        self.grantAppendsInFlightMax = max(1, grantAppendsInFlightMax)
        self.state = state
        self.monotonic = monotonic
        self.lastSnapshotSequence = snapshotSequence
        self.appliedThrough = state.lastSequence
        self.snapshotIntervalEvents = snapshotIntervalEvents
        self.commandsWaitingPerMigrationMax = commandsWaitingPerMigrationMax
        // After a restart nobody knows how long ago the last heartbeat came: every live lease gets a fresh TTL.
        let clock = monotonic()
        for migration in state.migrationsInOrder {
            let live = Self.deadlines(for: migration, keeping: [:], monotonic: clock)
            if !live.isEmpty { self.leaseDeadlines[migration.id] = live }
        }
    }

    /// Opens a coordinator on `log`: loads the newest snapshot (checking its digest) and replays only
    /// the tail after it.
    public static func open(log: any EventLog, snapshotIntervalEvents: UInt64 = defaultSnapshotIntervalEvents,
                            commandsWaitingPerMigrationMax: Int = defaultCommandsWaitingPerMigrationMax,
                            grantAppendsInFlightMax: Int = defaultGrantAppendsInFlightMax,
                            monotonic: @escaping MonotonicClock = systemMonotonicClock) async throws(EventLogError) -> Coordinator {
        var state = LogState()
        var snapshotSequence: UInt64 = 0
        if let snapshot = try await log.latestSnapshot(), snapshot.isCurrentFormat {
            // (A snapshot written by an older build, in an older canonical format, is skipped: full replay.)
            guard StateDigest(canonicalBytes: snapshot.state).bytes == snapshot.digest else {
                throw .corrupted(position: snapshot.sequence, reason: "the snapshot's digest does not match its state bytes")
            }
            do {
                state = try LogState(canonicalBytes: snapshot.state)
            } catch {
                throw .corrupted(position: snapshot.sequence, reason: "the snapshot's state does not decode: \(error)")
            }
            guard state.lastSequence == snapshot.sequence else {
                throw .corrupted(position: snapshot.sequence, reason: "the snapshot's state is as of \(state.lastSequence), not \(snapshot.sequence)")
            }
            // The snapshot must belong to this history: its event must exist with the same chain link.
            let named = try await log.read(after: snapshot.sequence - 1, limit: 1).first
            guard let named, named.sequence == snapshot.sequence, named.chainHash == snapshot.chainHash else {
                throw .corrupted(position: snapshot.sequence, reason: named == nil
                    ? "the snapshot names event \(snapshot.sequence), which is missing" : "the snapshot's chain hash differs from event \(snapshot.sequence)'s")
            }
            snapshotSequence = snapshot.sequence
        }
        try await History.fold(log, into: &state)
        return Coordinator(log: log, state: state, snapshotSequence: snapshotSequence, snapshotIntervalEvents: snapshotIntervalEvents,
                           commandsWaitingPerMigrationMax: commandsWaitingPerMigrationMax, grantAppendsInFlightMax: grantAppendsInFlightMax,
                           monotonic: monotonic)
    }

    /// The live state of migration `id`, if it exists.
    public func migration(_ id: MigrationID) -> MigrationState? { state.migrations[id] }

    /// The digest of the live state.
    public var digest: StateDigest { state.digest }

    /// Decides `command` for migration `id` at `now`, appends what it decided, and folds it in.
    ///
    /// When the events change a service queue (a request, a withdrawal or a release), the lease queue
    /// grants what has become grantable before this returns (see `grantServiceLeases`).
    public func execute(_ command: MigrationCommand, migration id: MigrationID, context: CommandContext, now: Instant) async throws(CommandError) -> CommandResult {
        if case .grantServiceLeases = command {
            throw .rejected(.invalidArgument("service leases are granted by the coordinator's lease queue, not on request"))
        }
        // First what opening the log left owed (bookkeeping an old history lacks, grants a crash cut off),
        // so the command is decided on a consistent state.
        if grantPassOwed { await grantServiceLeases(now: now) }
        let result = try await executeOnce(command, migration: id, context: context, now: now)
        // (Nothing can be granted while nobody waits: a hand-over already granted in the same append.)
        if grantPassOwed || (!state.serviceLeases.queue.isEmpty && result.events.contains(where: { $0.event.changesServiceQueues })) {
            await grantServiceLeases(now: now)
        }
        return result
    }

    private func executeOnce(_ command: MigrationCommand, migration id: MigrationID, context: CommandContext, now: Instant) async throws(CommandError) -> CommandResult {
        if let stopped { throw .storage(stopped) }
        let stream = RecordedEvent.stream(of: id)
        guard await acquire(stream) else { throw .overloaded(stream: stream, waitingMax: commandsWaitingPerMigrationMax) }
        defer { release(stream) }
        let events: [MigrationEvent]
        switch state.decide(migration: id, command, now: now) {
        case .rejected(let rejection): throw .rejected(rejection)
        case .accepted(let accepted): events = accepted
        }
        guard !events.isEmpty else {
            throw .rejected(.invalidArgument("this command records nothing; heartbeats go through Coordinator.heartbeat"))
        }
        // A migration runs only a plan version from the registry, and its content hash is computed here,
        // never taken from the caller: the hash recorded in migration_started is evidence.
        if case .start(_, let plan, _) = command {
            guard let registered = state.plan(plan.name, version: plan.version), registered == plan,
                  plan.hashed().contentHash == registered.contentHash else {
                throw .rejected(.planNotRegistered(plan.name, version: plan.version))
            }
        }
        let metadata = EventMetadata(recordedAt: now, actor: context.actor, triggeredBy: context.triggeredBy,
                                     causationID: context.causationID, correlationID: context.correlationID)
        let base = state.migrations[id]?.version ?? 0
        let recorded = events.enumerated().map { offset, event in
            RecordedEvent(migration: id, streamVersion: base + UInt64(offset) + 1, metadata: metadata, event: event)
        }
        let records: [[UInt8]]
        do { records = try recorded.map { event throws(RecordEncodingError) in try EventRecordCodec.encode(event) } } catch {
            throw .storage(.invalidRequest(error.description))
        }
        let request = AppendRequest(stream: RecordedEvent.stream(of: id), expectedVersion: base, records: records)
        let receipt: AppendReceipt
        do {
            receipt = try await log.append(request)
        } catch {
            noteFailure(error)
            throw .storage(error)
        }
        for (offset, event) in recorded.enumerated() {
            state.evolve(migration: id, sequence: receipt.firstSequence + UInt64(offset), event.event)
        }
        markApplied(receipt.firstSequence...receipt.lastSequence)
        armLeases(of: id)
        if let changeObserver, let migration = state.migrations[id] {
            changeObserver(Change(migration: id, services: Set(migration.plan.nodes.flatMap(\.services)), events: events, at: now))
        }
        return CommandResult(events: recorded, receipt: receipt)
    }

    /// Applies a plan's content (hashed here): a no-op returning the current version when the newest
    /// version has the same content, else a `plan_applied` event and the new version.
    public func applyPlan(_ plan: PlanSnapshot, context: CommandContext, now: Instant) async throws(CommandError) -> (version: UInt64, changed: Bool) {
        if let stopped { throw .storage(stopped) }
        let hashed = plan.hashed()
        let stream = RecordedPlanEvent.stream(of: hashed.name)
        guard await acquire(stream) else { throw .overloaded(stream: stream, waitingMax: commandsWaitingPerMigrationMax) }
        defer { release(stream) }
        let event: PlanEvent
        switch state.decideApply(hashed) {
        case .rejected(let rejection): throw .rejected(rejection)
        case .unchanged(let version): return (version, false)
        case .accepted(let accepted): event = accepted
        }
        let metadata = EventMetadata(recordedAt: now, actor: context.actor, triggeredBy: context.triggeredBy,
                                     causationID: context.causationID, correlationID: context.correlationID)
        let base = UInt64(state.plans[hashed.name]?.count ?? 0)
        let record = RecordedPlanEvent(plan: hashed.name, streamVersion: base + 1, metadata: metadata, event: event)
        let bytes: [UInt8]
        do { bytes = try EventRecordCodec.encode(record) } catch { throw .storage(.invalidRequest(error.description)) }
        let receipt: AppendReceipt
        do {
            receipt = try await log.append(AppendRequest(stream: stream, expectedVersion: base, records: [bytes]))
        } catch {
            noteFailure(error)
            throw .storage(error)
        }
        state.evolve(.plan(record), sequence: receipt.firstSequence)
        markApplied(receipt.firstSequence...receipt.lastSequence)
        changeObserver?(Change(migration: nil, services: []))
        guard case .planApplied(let applied) = event else { return (base + 1, true) }
        return (applied.version, true)
    }

    // MARK: - Service leases

    /// Grants every service-lease request that is first in line for all its services, as the coordinator.
    ///
    /// One pass at a time: a call made while a pass runs waits for the next pass, which starts after it
    /// and so sees everything folded before the call. Lines are ordered by the requests' global
    /// sequence; two requests acknowledged by the same group commit may be folded, and so served, in
    /// either order. Grants for different migrations are appended up to `grantAppendsInFlightMax` at a
    /// time (1 makes their order follow the queue, which deterministic simulations need).
    public func grantServiceLeases(now: Instant) async {
        grantPassWanted = true
        // A pass records the latest time any caller asked with, so grants never precede their requests.
        grantPassNow = max(grantPassNow ?? now, now)
        guard !grantPassRunning else {
            await withCheckedContinuation { grantPassWaiters.append($0) }
            return
        }
        grantPassRunning = true
        while grantPassWanted {
            grantPassWanted = false
            grantPassOwed = false
            let served = grantPassWaiters
            grantPassWaiters = []
            let passNow = grantPassNow ?? now
            if reconcileOwed {
                reconcileOwed = false
                await reconcileServiceLeases(now: passNow)
            }
            await runGrantPass(now: passNow)
            for waiter in served { waiter.resume() }
        }
        grantPassRunning = false
    }

    /// Records, as the coordinator, the service-lease bookkeeping that migrations of a history written
    /// before service leases existed lack (for example a running step that holds nothing).
    private func reconcileServiceLeases(now: Instant) async {
        let context = CommandContext(actor: .coordinator, triggeredBy: .coordinator, causationID: "reconcile-service-leases")
        for migration in state.unsettledInOrder where !migration.serviceLeaseBookkeeping().isEmpty {
            do throws(CommandError) {
                _ = try await executeOnce(.reconcileServiceLeases, migration: migration.id, context: context, now: now)
            } catch {
                if case .storage = error { reconcileOwed = true }
            }
        }
    }

    private func runGrantPass(now: Instant) async {
        let through = state.lastSequence
        let grants = state.serviceLeases.grantable(through: through)
        guard !grants.isEmpty else { return }
        let context = CommandContext(actor: .coordinator, triggeredBy: .coordinator, causationID: "lease-queue")
        var next = grants.startIndex
        while next < grants.endIndex {
            let batch = grants[next..<min(grants.endIndex, next + grantAppendsInFlightMax)]
            next = batch.endIndex
            if batch.count == 1, let request = batch.first {
                await grant(request, through: through, context: context, now: now)
                continue
            }
            await withTaskGroup(of: Void.self) { group in
                for request in batch {
                    group.addTask { await self.grant(request, through: through, context: context, now: now) }
                }
            }
        }
    }

    private func grant(_ request: ServiceRequest, through: UInt64, context: CommandContext, now: Instant) async {
        do throws(CommandError) {
            _ = try await executeOnce(.grantServiceLeases(node: request.node, through: through), migration: request.migration,
                                      context: context, now: now)
        } catch {
            // A refusal means the request moved on (withdrawn, paused); a storage error (busy, overloaded)
            // must not strand it: the next command, or the server's timer, runs another pass.
            if case .storage = error { grantPassOwed = true }
            if case .overloaded = error { grantPassOwed = true }
        }
    }

    /// Whether a grant pass is owed (a grant failed on storage, or none has run since open): the
    /// server's timer calls `grantServiceLeases` when it is.
    public var grantPassIsOwed: Bool { grantPassOwed }

    /// An operator forces the holder of service `name` to give back its services (all of the holding
    /// node's, since a node holds all or none), with a reason; recorded in the holder's migration with the
    /// operator as actor. Refused while a step of the holding node runs.
    @discardableResult
    public func forceReleaseService(_ name: String, reason: String, context: CommandContext, now: Instant) async throws(CommandError) -> CommandResult {
        guard let holder = state.holder(ofService: name) else { throw .rejected(.serviceNotLeased(name)) }
        return try await execute(.releaseServiceLeases(node: holder.node, reason: reason), migration: holder.migration, context: context, now: now)
    }

    // MARK: - Step leases

    /// The lease holder is alive: checked like any report (current token, live lease), then the lease's
    /// TTL restarts on the monotonic clock. Records nothing. Returns the lease's TTL in milliseconds.
    @discardableResult
    public func heartbeat(migration id: MigrationID, node: NodeID, token: FencingToken, by reporter: String = "", now: Instant) throws(CommandError) -> Int64 {
        if case .rejected(let rejection) = state.decide(migration: id, .heartbeat(node: node, token: token, by: reporter), now: now) {
            throw .rejected(rejection)
        }
        let ttl = state.migrations[id]?.node(node)?.lease.map { $0.expiresAt.millisecondsSinceEpoch - $0.grantedAt.millisecondsSinceEpoch } ?? 0
        guard var deadline = leaseDeadlines[id]?[node], deadline.token == token else { return ttl }
        deadline.deadlineNanos = monotonic() &+ UInt64(deadline.ttlMillis) &* 1_000_000
        leaseDeadlines[id]?[node] = deadline
        return ttl
    }

    /// `LogState.step(forService:at:)` on the live state, in one hop: small values back, no copy of the state.
    public func leasableStep(forService service: String, at now: Instant) -> (step: (MigrationID, NodeID, NodeSpec)?, nextRetry: Instant?) {
        state.step(forService: service, at: now)
    }

    /// The lease timer's work: every lease not renewed within its TTL (on the monotonic clock) becomes a
    /// `step_failed` with `lease_expired`, recorded as the coordinator; the step is offered again as a new
    /// attempt with a new token if the retry policy allows. Returns the expired (migration, node) pairs in order.
    @discardableResult
    public func expireDueLeases(now: Instant) async -> [(MigrationID, NodeID)] {
        let clock = monotonic()
        let due = leaseDeadlines.flatMap { migration, nodes in
            nodes.filter { $0.value.deadlineNanos <= clock }.map { (key: LeaseKey(migration: migration, node: $0.key), value: $0.value) }
        }.sorted { ($0.key.migration, $0.key.node.rawValue) < ($1.key.migration, $1.key.node.rawValue) }
        var expired: [(MigrationID, NodeID)] = []
        for (key, deadline) in due {
            let context = CommandContext(actor: .coordinator, triggeredBy: .coordinator, causationID: "lease-timer")
            if await timerExecute(.expireLease(node: key.node, token: deadline.token), migration: key.migration, context: context, now: now) {
                expired.append((key.migration, key.node))
            }
        }
        return expired
    }

    /// Step leases live now (for metrics).
    public var liveStepLeaseCount: Int { leaseDeadlines.values.reduce(0) { $0 + $1.count } }

    /// When the lease timer should next look, in monotonic nanoseconds.
    public var nextLeaseDeadlineNanos: UInt64? { leaseDeadlines.values.flatMap { $0.values.map(\.deadlineNanos) }.min() }

    /// Makes the timer match migration `id`'s live leases: new leases start their TTL now, ended ones are dropped.
    private func armLeases(of id: MigrationID) {
        guard let migration = state.migrations[id] else { return }
        let live = Self.deadlines(for: migration, keeping: leaseDeadlines[id] ?? [:], monotonic: monotonic())
        leaseDeadlines[id] = live.isEmpty ? nil : live
    }

    /// The timer entries for the live leases of `migration`: kept from `existing` when the token is the
    /// same (a heartbeat may have extended it), else starting a full TTL at `clock`.
    private static func deadlines(for migration: MigrationState, keeping existing: [NodeID: LeaseDeadline],
                                  monotonic clock: UInt64) -> [NodeID: LeaseDeadline] {
        var result: [NodeID: LeaseDeadline] = [:]
        for node in migration.nodes {
            guard let lease = node.lease else { continue }
            if let kept = existing[node.id], kept.token == lease.token {
                result[node.id] = kept
                continue
            }
            let ttl = max(CoreLimits.leaseTTLMillisMin, lease.expiresAt.millisecondsSinceEpoch - lease.grantedAt.millisecondsSinceEpoch)
            result[node.id] = LeaseDeadline(token: lease.token, ttlMillis: ttl, deadlineNanos: clock &+ UInt64(ttl) &* 1_000_000)
        }
        return result
    }

    /// The timer's work: aborts into rollback every migration whose deadline (or a node's) has passed
    /// at `now`, as the coordinator with `triggered_by: deadline`. Returns them in id order.
    @discardableResult
    public func enforceDeadlines(now: Instant) async -> [MigrationID] {
        let due = state.unsettledInOrder.filter { ($0.nextDeadline.map { $0 <= now }) ?? false }.map(\.id)
        var aborted: [MigrationID] = []
        for id in due {
            let context = CommandContext(actor: .coordinator, triggeredBy: .deadline, causationID: "deadline")
            if await timerExecute(.enforceDeadlines, migration: id, context: context, now: now) { aborted.append(id) }
        }
        return aborted
    }

    /// The timer's work: judges every bake that has ended by `now` (the node's analysis decides: advance,
    /// pause, or abort into rollback with `triggered_by: metric`), as the coordinator. Returns how many.
    @discardableResult
    public func evaluateDueBakes(now: Instant) async -> Int {
        var judged = 0
        for migration in state.unsettledInOrder where (migration.nextBakeEnd.map { $0 <= now }) ?? false {
            for node in migration.nodes where node.status == .baking && !node.exposure.awaitingDecision && (node.exposure.bakeUntil.map { $0 <= now } ?? false) {
                let context = CommandContext(actor: .coordinator, triggeredBy: .metric, causationID: "bake-end")
                if await timerExecute(.evaluateExposure(node: node.id), migration: migration.id, context: context, now: now) { judged += 1 }
            }
        }
        return judged
    }

    /// The timer's work: every step running past its node's `start_to_close` at `now` fails with
    /// `start_to_close_exceeded`, as the coordinator; its lease ends (the agent's next report or heartbeat
    /// is refused) and the node's retry policy applies, as for any retryable failure. Returns how many.
    @discardableResult
    public func timeOutDueSteps(now: Instant) async -> Int {
        var timedOut = 0
        for migration in state.unsettledInOrder {
            for step in migration.stepsPastStartToClose(at: now) {
                let context = CommandContext(actor: .coordinator, triggeredBy: .coordinator, causationID: "start-to-close")
                if await timerExecute(.timeOutStep(node: step.node, token: step.token), migration: migration.id, context: context, now: now) {
                    timedOut += 1
                }
            }
        }
        return timedOut
    }

    /// The timer's work for `timeouts.schedule_to_start`: notes, on the monotonic clock, when each node
    /// that sets one starts waiting for an agent (running, ready at `now`, holding its services), forgets
    /// it when it stops waiting (leased, paused, released), and pauses the migration of a node that has
    /// waited its whole schedule_to_start (`schedule_to_start_exceeded`, as the coordinator): no agent of
    /// its service is taking steps, and a person should look. Returns the migrations paused, in id order.
    @discardableResult
    public func pauseStepsNobodyTook(now: Instant) async -> [MigrationID] {
        let clock = monotonic()
        var due: [(MigrationID, NodeID)] = []
        var tracked: [MigrationID: [NodeID: UInt64]] = [:]
        for migration in state.unsettledInOrder where migration.plan.nodes.contains(where: { $0.timeouts.scheduleToStartMillis != nil }) {
            for spec in migration.plan.nodes {
                guard let limit = spec.timeouts.scheduleToStartMillis, migration.isWaitingForAgent(spec.id, at: now) else { continue }
                let since = waitingSince[migration.id]?[spec.id] ?? clock
                tracked[migration.id, default: [:]][spec.id] = since
                if clock &- since >= UInt64(max(0, limit)) &* 1_000_000 { due.append((migration.id, spec.id)) }
            }
        }
        waitingSince = tracked
        var paused: [MigrationID] = []
        for (id, node) in due where !paused.contains(id) {
            let context = CommandContext(actor: .coordinator, triggeredBy: .coordinator, causationID: "schedule-to-start")
            if await timerExecute(.scheduleToStartExceeded(node: node), migration: id, context: context, now: now) {
                paused.append(id)
                waitingSince[id] = nil
            }
        }
        return paused
    }

    /// Runs a timer's command. A refusal means the timer lost a race (the step reported, the migration
    /// moved on since it looked) and is nothing to do; any other failure (storage: the coordinator has
    /// stopped) is kept for `tick` to report, never dropped.
    private func timerExecute(_ command: MigrationCommand, migration id: MigrationID, context: CommandContext, now: Instant) async -> Bool {
        do throws(CommandError) {
            _ = try await execute(command, migration: id, context: context, now: now)
            return true
        } catch {
            if case .rejected = error { return false }
            timerFailures.append(error)
            return false
        }
    }

    /// What one pass of the timers did.
    public struct TimerReport: Hashable, Sendable {
        public var deadlinesPassed = 0
        public var leasesExpired = 0
        public var stepsTimedOut = 0
        public var bakesJudged = 0
        public var pausedForScheduleToStart = 0
        /// Failures other than a lost race (storage: the coordinator stopped), in order.
        public var failures: [CommandError] = []

        /// Whether the pass recorded anything.
        public var didWork: Bool { deadlinesPassed + leasesExpired + stepsTimedOut + bakesJudged + pausedForScheduleToStart > 0 }
    }

    /// The timer policy, in one place, for every shell (the server's timer service and the rehearsal):
    /// at `now` (wall) and the monotonic clock's reading, in this order: migrations past their deadline
    /// abort (a deadline fires at its instant whatever else is due); leases not renewed within their TTL
    /// expire; steps past their start_to_close fail; bakes that ended are judged; steps nobody took within
    /// their schedule_to_start pause their migration; and a grant pass runs when one is owed.
    public func tick(now: Instant) async -> TimerReport {
        var report = TimerReport()
        if let deadline = nextDeadline, deadline <= now { report.deadlinesPassed = await enforceDeadlines(now: now).count }
        report.leasesExpired = await expireDueLeases(now: now).count
        if let timeout = nextStepTimeout, timeout <= now { report.stepsTimedOut = await timeOutDueSteps(now: now) }
        if let bakeEnd = nextBakeEnd, bakeEnd <= now { report.bakesJudged = await evaluateDueBakes(now: now) }
        if tracksScheduleToStart { report.pausedForScheduleToStart = await pauseStepsNobodyTook(now: now).count }
        if grantPassOwed { await grantServiceLeases(now: now) }
        report.failures = timerFailures
        timerFailures = []
        return report
    }

    /// The earliest wall instant at which `tick` has work, seen at `now`: a deadline, a bake's end, a
    /// start_to_close, a lease's expiry or a schedule_to_start (these two run on the monotonic clock and
    /// are placed on the wall clock from `now`). A rehearsal sleeps exactly until it; nil when nothing is due.
    public func nextTimerDue(now: Instant) -> Instant? {
        let clock = monotonic()
        func wall(_ nanos: UInt64) -> Instant {
            now.adding(milliseconds: Int64(clamping: (nanos > clock ? nanos - clock : 0) / 1_000_000) + (nanos > clock && (nanos - clock) % 1_000_000 > 0 ? 1 : 0))
        }
        var due = [nextDeadline, nextBakeEnd, nextStepTimeout].compactMap { $0 }
        if let lease = nextLeaseDeadlineNanos { due.append(wall(lease)) }
        for (id, nodes) in waitingSince {
            guard let migration = state.migrations[id] else { continue }
            for (node, since) in nodes {
                guard let limit = migration.plan.node(node)?.timeouts.scheduleToStartMillis else { continue }
                due.append(wall(since &+ UInt64(max(0, limit)) &* 1_000_000))
            }
        }
        return due.min()
    }

    /// Whether any unsettled migration's plan sets a schedule_to_start (the timer runs its check only then).
    public var tracksScheduleToStart: Bool {
        state.unsettled.contains { state.migrations[$0]?.plan.nodes.contains { $0.timeouts.scheduleToStartMillis != nil } ?? false }
    }

    /// The earliest instant at which a running step passes its `start_to_close`, in any migration.
    public var nextStepTimeout: Instant? { state.unsettled.compactMap { state.migrations[$0]?.nextStepTimeout }.min() }

    /// The earliest end of a bake in any running migration.
    public var nextBakeEnd: Instant? { state.unsettled.compactMap { state.migrations[$0]?.nextBakeEnd }.min() }

    /// The earliest deadline of any migration, for the engine's timer to sleep until.
    public var nextDeadline: Instant? { state.unsettled.compactMap { state.migrations[$0]?.nextDeadline }.min() }

    /// Applies `plan` (a no-op when its content is already the newest version) and starts migration `id`
    /// on that version, on behalf of `context.actor`.
    public func start(_ id: MigrationID, plan: PlanSnapshot, context: CommandContext, now: Instant) async throws(CommandError) -> CommandResult {
        let applied = try await applyPlan(plan, context: context, now: now)
        return try await startMigration(id, plan: plan.name, version: applied.version, context: context, now: now)
    }

    /// Starts migration `id` on version `version` (the newest when nil) of the applied plan `name`.
    public func startMigration(_ id: MigrationID, plan name: String, version: UInt64? = nil, context: CommandContext,
                               now: Instant) async throws(CommandError) -> CommandResult {
        guard let plan = state.plan(name, version: version) else {
            throw .rejected(.invalidArgument(version.map { "plan \(name) has no version \($0)" } ?? "no plan named \(name) has been applied"))
        }
        return try await execute(.start(id: id, plan: plan, startedBy: context.actor.id), migration: id, context: context, now: now)
    }

    /// Saves a snapshot of the live state now, if every appended event is folded in. Returns its sequence.
    @discardableResult
    public func saveSnapshot() async throws(EventLogError) -> UInt64? {
        guard appliedAhead.isEmpty, appliedThrough > 0, appliedThrough == state.lastSequence else { return nil }
        let sequence = try await Self.writeSnapshot(of: state, to: log)
        lastSnapshotSequence = max(lastSnapshotSequence, sequence)
        return sequence
    }

    /// Writes a snapshot when one is due (`snapshotIntervalEvents` since the last, every appended event
    /// folded in, none being written), in the caller's task: the server's timer service calls it after
    /// each tick, so no command waits for it and no loose task runs it. The state is copied on the actor
    /// (copy-on-write: cheap) and encoded and stored off it. A failure is thrown to the caller (the server
    /// logs it); either way the next snapshot waits another interval, so a failing one is not retried
    /// on every tick. Returns the snapshot's sequence, nil when none was due.
    @discardableResult
    public nonisolated func writeSnapshotIfDue() async throws(EventLogError) -> UInt64? {
        guard let copy = await takeDueSnapshot() else { return nil }
        do {
            let sequence = try await Self.writeSnapshot(of: copy, to: log)
            await snapshotFinished(at: sequence)
            return sequence
        } catch {
            await snapshotFinished(at: copy.lastSequence)
            throw error
        }
    }

    /// A copy of the state to snapshot, if one is due; marks a snapshot in flight.
    private func takeDueSnapshot() -> LogState? {
        guard snapshotIntervalEvents > 0, !snapshotInFlight, appliedAhead.isEmpty,
              appliedThrough == state.lastSequence, appliedThrough >= lastSnapshotSequence + snapshotIntervalEvents else { return nil }
        snapshotInFlight = true
        return state
    }

    private func snapshotFinished(at sequence: UInt64) {
        snapshotInFlight = false
        lastSnapshotSequence = max(lastSnapshotSequence, sequence)
    }

    /// Encodes `state` and stores it as the snapshot at its last sequence.
    private static func writeSnapshot(of state: LogState, to log: any EventLog) async throws(EventLogError) -> UInt64 {
        let sequence = state.lastSequence
        let bytes = state.canonicalBytes
        let page = try await log.read(after: sequence - 1, limit: 1)
        guard let event = page.first, event.sequence == sequence else {
            throw .corrupted(position: sequence, reason: "event \(sequence) could not be read back for the snapshot")
        }
        try await log.saveSnapshot(Snapshot(sequence: sequence, chainHash: event.chainHash, state: bytes,
                                            digest: StateDigest(canonicalBytes: bytes).bytes))
        return sequence
    }

    private func markApplied(_ range: ClosedRange<UInt64>) {
        appliedAhead.append(range)
        appliedAhead.sort { $0.lowerBound < $1.lowerBound }
        while let first = appliedAhead.first, first.lowerBound == appliedThrough + 1 {
            appliedThrough = first.upperBound
            appliedAhead.removeFirst()
        }
    }

    /// Waits for `stream`'s turn; false (without waiting) when `commandsWaitingPerMigrationMax` are already waiting.
    private func acquire(_ stream: String) async -> Bool {
        if busyStreams.insert(stream).inserted { return true }
        guard waiting[stream, default: []].count < commandsWaitingPerMigrationMax else { return false }
        await withCheckedContinuation { waiting[stream, default: []].append($0) }
        // Ownership was handed over by `release`; `stream` stays in `busyStreams`.
        return true
    }

    private func release(_ stream: String) {
        if var queue = waiting[stream], !queue.isEmpty {
            let next = queue.removeFirst()
            waiting[stream] = queue.isEmpty ? nil : queue
            next.resume()
        } else {
            busyStreams.remove(stream)
        }
    }
}

extension MigrationEvent {
    /// Whether the event changes a service's queue or frees a service (so a grant may have become possible).
    var changesServiceQueues: Bool {
        switch self {
        case .serviceLeasesRequested, .serviceLeasesWithdrawn, .serviceLeasesReleased: true
        default: false
        }
    }
}
