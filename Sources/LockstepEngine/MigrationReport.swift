import LockstepCore

// `lockstep migration report` (issue 20): a migration's retrospective, derived only from its events, so
// the same report comes out of any replica or exported history. Rendered by MigrationReport+Render.swift.

/// Everything a retrospective of one migration says, drawn from its events in log order.
public struct MigrationReport: Hashable, Sendable {
    /// One event of the migration, as the timeline lists it: every event is one entry.
    public struct Entry: Hashable, Sendable {
        public var sequence: UInt64
        public var at: Instant
        /// The node it concerns ("" for the migration as a whole).
        public var node: String
        public var type: String
        /// Who or what recorded it ("user:alice", "agent:billing-agent", "coordinator:lockstep").
        public var actor: String
        public var summary: String
    }

    /// A stretch of time a node spent in one status (the bars of the Gantt chart).
    public struct Span: Hashable, Sendable {
        public var node: String
        /// A node status as the API shows it (`waiting_for_services`, `awaiting_approval`, `running`,
        /// `baking`, `rolling_back`, …), or `retry_wait` for a ready node waiting out a retry's backoff
        /// (as of the event that began the span: statuses are read at each event's time).
        public var status: String
        public var from: Instant
        /// Where it ended; the report's end when it had not ended yet (`open`).
        public var to: Instant
        public var open: Bool
        /// The event that began it.
        public var sequence: UInt64
        public var millis: Int64 { MigrationReport.elapsed(from, to) }
    }

    /// One node's part: its outcome, its attempts and the time it spent in each status.
    public struct NodeSummary: Hashable, Sendable {
        public var node: String
        public var phase: String
        public var services: [String]
        /// Its status at the end of the report.
        public var outcome: String
        public var attempts: UInt32
        /// Forward attempts that failed (counted or not) and were run again, or not.
        public var failedAttempts: UInt32
        public var rollbackAttempts: UInt32
        /// Milliseconds per status, in the order the statuses were first entered.
        public var durations: [StatusTime]
    }

    /// The time a node spent in one status, over all its spans.
    public struct StatusTime: Hashable, Sendable {
        public var status: String
        public var millis: Int64
    }

    /// Something a person did: start, approve, reject, pause, resume, abort, override, break glass, force a release.
    public struct PersonAction: Hashable, Sendable {
        public var sequence: UInt64
        public var at: Instant
        public var who: String
        public var action: String
        public var node: String
        public var detail: String
    }

    /// An abort and the rollback it set off.
    public struct Rollback: Hashable, Sendable {
        public var sequence: UInt64
        /// `operator`, `metric`, `retries_exhausted`, `deadline`, `check` ("" in histories before triggers).
        public var trigger: String
        public var reason: String
        public var by: String
        public var from: Instant
        /// When it settled (rolled back or failed); nil while it runs.
        public var to: Instant?
        /// `rolled_back`, `failed` or `in_progress`.
        public var outcome: String
        public var nodes: [String]
        public var millis: Int64? { to.map { MigrationReport.elapsed(from, $0) } }
    }

    /// A judgement with evidence: an analysis at the end of a bake, or a preflight check's result.
    public struct Judgement: Hashable, Sendable {
        public var sequence: UInt64
        public var at: Instant
        public var node: String
        /// "analysis" or "check".
        public var kind: String
        /// `pass`, `marginal`, `fail`, `not_run`, …
        public var outcome: String
        public var evidence: String
    }

    /// The history the report was drawn from: its head then, and whether it was verified.
    public struct Integrity: Hashable, Sendable {
        public var headSequence: UInt64
        public var headHashHex: String
        /// The whole log's hash chain and records were verified before the report was drawn.
        public var verified: Bool
        /// Why it was not verified ("" when it was).
        public var problem: String
        public init(headSequence: UInt64, headHashHex: String, verified: Bool, problem: String = "") {
            self.headSequence = headSequence
            self.headHashHex = headHashHex
            self.verified = verified
            self.problem = problem
        }
    }

    public var migration: String
    public var plan: String
    public var planVersion: UInt64
    public var planContentHash: String
    public var startedBy: String
    public var startedAt: Instant
    /// The last event's time: when it settled, or how far the history goes.
    public var endedAt: Instant
    public var status: String
    public var statusReason: String
    /// From the first node's change completing until every node was done or undone (or the report's
    /// end, while neither): how long the services ran partly migrated.
    public var partiallyMigratedMillis: Int64
    public var people: [PersonAction]
    public var nodes: [NodeSummary]
    public var spans: [Span]
    public var judgements: [Judgement]
    public var rollbacks: [Rollback]
    public var timeline: [Entry]
    public var integrity: Integrity

    public var millis: Int64 { Self.elapsed(startedAt, endedAt) }

    /// Milliseconds from `from` to `to`: 0 when `to` is not later, `Int64.max` when the difference does not
    /// fit (stored times are outside values: any two must give a duration without trapping).
    public static func elapsed(_ from: Instant, _ to: Instant) -> Int64 {
        let (difference, overflow) = to.millisecondsSinceEpoch.subtractingReportingOverflow(from.millisecondsSinceEpoch)
        if overflow { return to > from ? .max : 0 }
        return max(0, difference)
    }
}

/// Why a report cannot be drawn.
public struct MigrationReportError: Error, Equatable, CustomStringConvertible {
    public var description: String
}

extension MigrationReport {
    /// The report of the migration whose events are `events` (its stream, in log order with their global
    /// sequences), drawn from `integrity`'s history.
    public init(events: [(sequence: UInt64, event: RecordedEvent)], integrity: Integrity) throws(MigrationReportError) {
        guard let first = events.first, case .migrationStarted(let started) = first.event.event else {
            throw MigrationReportError(description: "the history has no start for this migration")
        }
        var state: MigrationState?
        var builder = Builder(started: started)
        for (sequence, recorded) in events {
            let at = recorded.metadata.recordedAt
            state = MigrationState.evolve(state, recorded.event)
            guard let after = state else { continue }
            builder.record(sequence: sequence, recorded: recorded, at: at, after: after)
        }
        guard let final = state else { throw MigrationReportError(description: "the history has no start for this migration") }
        let end = events.last.map(\.event.metadata.recordedAt) ?? started.startedAt
        builder.finish(at: end, state: final)
        self.init(
            migration: started.migration.rawValue, plan: started.plan.name, planVersion: started.plan.version,
            planContentHash: started.plan.contentHash, startedBy: started.startedBy, startedAt: started.startedAt, endedAt: end,
            status: final.status.rawValue, statusReason: final.statusReason ?? "",
            partiallyMigratedMillis: builder.partiallyMigratedMillis(end: end, state: final),
            people: builder.people, nodes: builder.nodeSummaries(final), spans: builder.spans, judgements: builder.judgements,
            rollbacks: builder.rollbacks, timeline: builder.timeline, integrity: integrity)
    }
}

/// Walks the events once, opening and closing spans as node statuses change.
private struct Builder {
    let started: MigrationStarted
    var timeline: [MigrationReport.Entry] = []
    var spans: [MigrationReport.Span] = []
    /// The open span of each node, as an index into `spans`.
    var openSpan: [String: Int] = [:]
    /// Each node's status after the event before.
    var lastStatus: [String: String] = [:]
    var people: [MigrationReport.PersonAction] = []
    var judgements: [MigrationReport.Judgement] = []
    var rollbacks: [MigrationReport.Rollback] = []
    var failedAttempts: [String: UInt32] = [:]
    var firstChange: Instant?
    var settledAt: Instant?

    init(started: MigrationStarted) { self.started = started }

    /// Statuses that are time spent on the way (bars); the rest (pending, succeeded, rolled back, …) are not.
    static let activity: Set<String> = [
        "waiting_for_services", "waiting_for_window", "awaiting_approval", "ready", "retry_wait", "running", "checking", "baking", "awaiting_decision",
        "paused", "rolling_back", "rejected",
    ]

    static func status(_ node: NodeID, in state: MigrationState, at now: Instant) -> String {
        let display = state.nodeDisplayStatus(node)
        if display == .ready || display == .waitingForServices, state.status == .running, state.windowsClosed(node, at: now) {
            return NodeDisplayStatus.waitingForWindow.rawValue
        }
        if display == .ready, let retryAt = state.node(node)?.retryAt, retryAt > now {
            return "retry_wait"
        }
        return display.rawValue
    }

    mutating func record(sequence: UInt64, recorded: RecordedEvent, at: Instant, after: MigrationState) {
        let event = recorded.event
        let actor = recorded.metadata.actor
        let node = event.reportNode?.rawValue ?? ""
        timeline.append(.init(sequence: sequence, at: at, node: node, type: event.typeName, actor: actor.description, summary: event.summary))
        // Spans: a node whose status changed (or whose step was leased again) closes one and opens the next.
        for spec in after.plan.nodes {
            let id = spec.id.rawValue
            let now = Self.status(spec.id, in: after, at: at)
            let was = lastStatus.updateValue(now, forKey: id)
            let leasedAgain: Bool = if case .stepLeased(let leased) = event, leased.node == spec.id { true } else { false }
            guard now != was || leasedAgain else { continue }
            if let open = openSpan[id] {
                spans[open].to = at
                spans[open].open = false
                openSpan[id] = nil
            }
            if Self.activity.contains(now) {
                openSpan[id] = spans.count
                spans.append(.init(node: id, status: now, from: at, to: at, open: true, sequence: sequence))
            }
        }
        let person = actor.kind == "user" ? actor.id : ""
        switch event {
        case .migrationStarted(let e):
            people.append(.init(sequence: sequence, at: at, who: e.startedBy, action: "started", node: "", detail: "plan \(e.plan.name)@\(e.plan.version)"))
        case .approvalGranted(let e):
            people.append(.init(sequence: sequence, at: at, who: e.approver, action: "approved", node: node, detail: e.comment))
        case .approvalRejected(let e):
            people.append(.init(sequence: sequence, at: at, who: e.approver, action: "rejected", node: node, detail: e.comment))
        case .migrationPaused(let reason, let lineStop) where !person.isEmpty || !lineStop.isEmpty:
            people.append(.init(sequence: sequence, at: at, who: person.isEmpty ? actor.description : person, action: lineStop.isEmpty ? "paused" : "stopped the line",
                                node: "", detail: reason))
        case .migrationResumed where !person.isEmpty:
            people.append(.init(sequence: sequence, at: at, who: person, action: "resumed", node: "", detail: ""))
        case .analysisOverridden(_, let stage):
            people.append(.init(sequence: sequence, at: at, who: person.isEmpty ? actor.description : person, action: "overrode the analysis", node: node,
                                detail: "stage \(stage)"))
        case .breakGlass(let e):
            people.append(.init(sequence: sequence, at: at, who: e.by, action: "broke glass", node: node, detail: "\(e.scope.rawValue): \(e.justification)"))
        case .serviceLeasesReleased(let e) where e.forced:
            people.append(.init(sequence: sequence, at: at, who: person.isEmpty ? actor.description : person, action: "forced a release", node: node,
                                detail: "\(e.services.joined(separator: ", ")): \(e.reason)"))
        case .migrationAborted(let r):
            let trigger = r.trigger?.rawValue ?? ""
            if !person.isEmpty || r.trigger == .operator {
                people.append(.init(sequence: sequence, at: at, who: person.isEmpty ? actor.description : person, action: "aborted", node: "", detail: r.reason))
            }
            rollbacks.append(.init(sequence: sequence, trigger: trigger, reason: r.reason, by: actor.description, from: at, to: nil,
                                   outcome: "in_progress", nodes: r.rollback.map(\.rawValue)))
        case .migrationRolledBack:
            settle(at: at, outcome: "rolled_back")
        case .migrationFailed:
            settle(at: at, outcome: "failed")
        case .migrationSucceeded:
            settledAt = at
        case .stepCompleted(let e) where e.kind == .forward:
            firstChange = firstChange ?? at
        case .exposureStageReached:
            firstChange = firstChange ?? at
        case .stepFailed(let e) where e.kind == .forward:
            failedAttempts[node, default: 0] += 1
        case .analysisEvaluated(let e):
            judgements.append(.init(sequence: sequence, at: at, node: node, kind: "analysis", outcome: e.outcome.rawValue, evidence: event.summary))
        case .checkReported(let e):
            judgements.append(.init(sequence: sequence, at: at, node: node, kind: "check", outcome: e.outcome.rawValue, evidence: event.summary))
        default:
            break
        }
    }

    private mutating func settle(at: Instant, outcome: String) {
        settledAt = at
        guard let last = rollbacks.indices.last, rollbacks[last].to == nil else { return }
        rollbacks[last].to = at
        rollbacks[last].outcome = outcome
    }

    /// Spans still open run to the report's end.
    mutating func finish(at end: Instant, state: MigrationState) {
        for (_, index) in openSpan { spans[index].to = end }
    }

    func partiallyMigratedMillis(end: Instant, state: MigrationState) -> Int64 {
        guard let firstChange else { return 0 }
        return MigrationReport.elapsed(firstChange, settledAt ?? end)
    }

    func nodeSummaries(_ state: MigrationState) -> [MigrationReport.NodeSummary] {
        state.plan.nodes.map { spec in
            let id = spec.id.rawValue
            var durations: [MigrationReport.StatusTime] = []
            for span in spans where span.node == id {
                if let index = durations.firstIndex(where: { $0.status == span.status }) {
                    durations[index].millis = durations[index].millis.addingReportingOverflow(span.millis).overflow ? .max : durations[index].millis + span.millis
                } else {
                    durations.append(.init(status: span.status, millis: span.millis))
                }
            }
            let node = state.node(spec.id)
            return .init(node: id, phase: spec.phase.rawValue, services: spec.services, outcome: state.nodeDisplayStatus(spec.id).rawValue,
                         attempts: node?.attempts ?? 0, failedAttempts: failedAttempts[id] ?? 0, rollbackAttempts: node?.rollbackAttempts ?? 0,
                         durations: durations)
        }
    }
}
