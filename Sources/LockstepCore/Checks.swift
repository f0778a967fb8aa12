// Preflight checks (docs/gates.md, "Preflight checks"): named actions a node requires before its forward
// step (`backup-verified`, `replication-lag`, `row-checksum`), run by the service's agent under a step
// lease of kind `check`, each reporting a result, an optional value and evidence text. The node's forward
// step starts only when every check has a passing result younger than its `fresh_for`; a stale one is run
// again; a failing one blocks the node with its evidence (and is run again after `recheck`), or rolls the
// migration back, as the plan says. Every result is a `check_reported` event.

/// What a check's result must be to pass.
public enum CheckRule: Hashable, Sendable {
    /// The check reported success.
    case ok
    /// It reported success and a value of at most this (millionths).
    case max(Int64)
    /// It reported success and a value of at least this (millionths).
    case min(Int64)
}

/// Which of a node's steps a check must precede.
public enum CheckBefore: String, Hashable, Sendable, CaseIterable {
    /// Its forward step (the default).
    case forward
    /// Its rollback step, when the migration rolls back (for example a backup taken before undoing).
    case rollback
    /// Both.
    case both

    /// Whether the check precedes a step of `kind`.
    public func precedes(_ kind: StepKind) -> Bool {
        switch (self, kind) {
        case (.both, .forward), (.both, .rollback), (.forward, .forward), (.rollback, .rollback): true
        default: false
        }
    }
}

/// What a failing check does.
public enum CheckFailurePolicy: String, Hashable, Sendable, CaseIterable {
    /// The node waits, showing the evidence; the check runs again after its `recheck`.
    case block
    /// The migration aborts into rollback (`triggered_by: check`).
    case rollback
}

/// A check a node requires before its forward step.
public struct CheckSpec: Hashable, Sendable {
    /// The check's name: the action the agent runs.
    public var name: String
    /// Its parameters: a JSON object with sorted keys.
    public var paramsJSON: String
    public var pass: CheckRule
    /// How long a passing result stays fresh, in milliseconds (nil: for the rest of the migration).
    public var freshForMillis: Int64?
    /// After a failing result, how long until the check runs again, in milliseconds.
    public var recheckMillis: Int64
    /// What a failing check does (before a rollback step it always blocks: the migration already rolls back).
    public var onFail: CheckFailurePolicy
    /// Which steps it precedes.
    public var before: CheckBefore

    public static let defaultRecheckMillis: Int64 = 60_000

    public init(name: String, paramsJSON: String = "{}", pass: CheckRule = .ok, freshForMillis: Int64? = nil,
                recheckMillis: Int64 = CheckSpec.defaultRecheckMillis, onFail: CheckFailurePolicy = .block, before: CheckBefore = .forward) {
        self.name = name
        self.paramsJSON = paramsJSON
        self.pass = pass
        self.freshForMillis = freshForMillis
        self.recheckMillis = recheckMillis
        self.onFail = onFail
        self.before = before
    }

    /// The rule as people read it: `ok`, `≤ 5`, `≥ 0.99`.
    public var ruleText: String {
        switch pass {
        case .ok: "ok"
        case .max(let micros): "≤ \(MetricSample.decimal(micros))"
        case .min(let micros): "≥ \(MetricSample.decimal(micros))"
        }
    }
}

/// What an agent reports for a check it ran.
public struct CheckReport: Hashable, Sendable {
    /// The check's own verdict (its handler succeeded).
    public var ok: Bool
    /// What it measured (millionths), if anything.
    public var valueMicros: Int64?
    /// What a reviewer reads: the handler's output, cut to `CoreLimits.reasonBytesMax` bytes.
    public var evidence: String
    public init(ok: Bool, valueMicros: Int64? = nil, evidence: String = "") {
        self.ok = ok
        self.valueMicros = valueMicros
        self.evidence = evidence
    }
}

/// How a check run ended.
public enum CheckOutcome: String, Hashable, Sendable, CaseIterable {
    case pass, fail
    /// It did not run to a result (its agent was lost, gave it back, or the migration moved on): run it again.
    case notRun = "not_run"
}

/// A check run's result, recorded as `check_reported`.
public struct CheckReported: Hashable, Sendable {
    public var node: NodeID
    public var check: String
    /// The check lease it ran under.
    public var token: FencingToken
    public var outcome: CheckOutcome
    public var valueMicros: Int64?
    public var evidence: String
    public var at: Instant
    public init(node: NodeID, check: String, token: FencingToken, outcome: CheckOutcome, valueMicros: Int64? = nil, evidence: String, at: Instant) {
        self.node = node
        self.check = check
        self.token = token
        self.outcome = outcome
        self.valueMicros = valueMicros
        self.evidence = evidence
        self.at = at
    }
}

/// The latest result of one check of a node.
public struct CheckResult: Hashable, Sendable {
    public var check: String
    public var outcome: CheckOutcome
    public var valueMicros: Int64?
    public var evidence: String
    public var at: Instant
    public init(check: String, outcome: CheckOutcome, valueMicros: Int64? = nil, evidence: String, at: Instant) {
        self.check = check
        self.outcome = outcome
        self.valueMicros = valueMicros
        self.evidence = evidence
        self.at = at
    }
}

/// What a node's checks say about its forward step at an instant.
public enum CheckDue: Hashable, Sendable {
    /// `check` must run (no result, a stale pass, a result that was not run, or a failure due for its recheck).
    case run(CheckSpec)
    /// `result` failed; the node waits until `recheckAt`.
    case blocked(CheckResult, recheckAt: Instant)
}

extension CheckRule {
    /// Whether `report` passes this rule, and if not, why (appended to the evidence).
    func judge(_ report: CheckReport) -> (passed: Bool, why: String) {
        guard report.ok else { return (false, "the check reported failure") }
        switch self {
        case .ok: return (true, "")
        case .max(let limit):
            guard let value = report.valueMicros else { return (false, "it reported no value to compare with ≤ \(MetricSample.decimal(limit))") }
            return value <= limit ? (true, "") : (false, "\(MetricSample.decimal(value)) is above \(MetricSample.decimal(limit))")
        case .min(let limit):
            guard let value = report.valueMicros else { return (false, "it reported no value to compare with ≥ \(MetricSample.decimal(limit))") }
            return value >= limit ? (true, "") : (false, "\(MetricSample.decimal(value)) is below \(MetricSample.decimal(limit))")
        }
    }
}

extension MigrationState {
    /// What node `id`'s checks before its step of `kind` say at `now`: nil when every such check has a
    /// fresh pass (or it has none). Checks are looked at in plan order; the first that is not freshly passing decides.
    public func checkDue(_ id: NodeID, at now: Instant, before kind: StepKind = .forward) -> CheckDue? {
        guard let spec = plan.node(id), !spec.checks.isEmpty, let state = node(id) else { return nil }
        for check in spec.checks where check.before.precedes(kind) {
            guard let result = state.checks.first(where: { $0.check == check.name }) else { return .run(check) }
            switch result.outcome {
            case .pass:
                if let fresh = check.freshForMillis, now >= result.at.adding(milliseconds: fresh) { return .run(check) }
            case .fail:
                let recheckAt = result.at.adding(milliseconds: check.recheckMillis)
                return now < recheckAt ? .blocked(result, recheckAt: recheckAt) : .run(check)
            case .notRun:
                // Not run (its agent lost, or unable to run it): again after a short pause, so an agent
                // without the check's handler does not spin.
                let again = result.at.adding(milliseconds: CoreLimits.checkNotRunRetryMillis)
                return now < again ? .blocked(result, recheckAt: again) : .run(check)
            }
        }
        return nil
    }

    /// The failing check that blocks node `id`'s step of `kind` at `now`, and when it runs again.
    public func checkBlock(_ id: NodeID, at now: Instant, before kind: StepKind = .forward) -> (result: CheckResult, recheckAt: Instant)? {
        if case .blocked(let result, let recheckAt) = checkDue(id, at: now, before: kind) { return (result, recheckAt) }
        return nil
    }

    /// What node `node`'s checks before its step of `kind` decide about a lease at `now`: a check lease
    /// for the first not freshly passing, the refusal while one's failure blocks it, or nil when every
    /// check is fresh and the step itself may be leased.
    func checkLease(node: NodeID, nodeState: NodeState, before kind: StepKind, _ taker: LeaseTaker, ttlMillis: Int64, now: Instant) -> Decision? {
        switch checkDue(node, at: now, before: kind) {
        case .blocked(let result, let recheckAt)?:
            return .rejected(.checkFailed(node, check: result.check, evidence: result.evidence, recheckAt: recheckAt))
        case .run(let check)?:
            return .accepted([.stepLeased(StepLeased(
                node: node, attempt: 1, token: nodeState.lastToken.next, agent: taker.agent, grantedAt: now,
                expiresAt: now.adding(milliseconds: ttlMillis), kind: .check, holder: taker.holder, check: check.name, pollID: taker.pollID))])
        case nil:
            return nil
        }
    }

    /// The events of a check run that ended with `report` (a completion, or a failure as `ok: false`).
    func checkCompletion(of node: NodeID, lease: StepLease, report: CheckReport, now: Instant) -> [MigrationEvent] {
        guard let check = plan.node(node)?.checks.first(where: { $0.name == lease.check }) else {
            return [.checkReported(CheckReported(node: node, check: lease.check, token: lease.token, outcome: .notRun,
                                                 evidence: "the plan has no check \(lease.check)", at: now))]
        }
        let (passed, why) = check.pass.judge(report)
        let evidence = (why.isEmpty || passed ? report.evidence : report.evidence.isEmpty ? why : "\(why): \(report.evidence)")
            .prefix(utf8Bytes: CoreLimits.reasonBytesMax)
        let reported = MigrationEvent.checkReported(CheckReported(node: node, check: check.name, token: lease.token, outcome: passed ? .pass : .fail,
                                                                  valueMicros: report.valueMicros, evidence: evidence, at: now))
        guard !passed, check.onFail == .rollback, status == .running || status == .paused else { return [reported] }
        var after = self
        after.evolve(reported)
        return [reported] + after.abort(reason: "check \(check.name) of \(node) failed: \(evidence)".prefix(utf8Bytes: CoreLimits.reasonBytesMax),
                                        trigger: .check)
    }

    /// A check lease that ended without a result (lost, given back, unable to run): recorded as not run.
    func checkNotRun(of node: NodeID, lease: StepLease, why: String, now: Instant) -> [MigrationEvent] {
        [.checkReported(CheckReported(node: node, check: lease.check, token: lease.token, outcome: .notRun,
                                      evidence: "did not run: \(why)".prefix(utf8Bytes: CoreLimits.reasonBytesMax), at: now))]
    }
}

extension MigrationState {
    /// Why the forward step of node `id` under `token` must stop now, or nil: the migration is paused and
    /// its plan says running steps stop (`on_pause: stop`). Rollback steps and checks always finish.
    public func stopRequested(_ id: NodeID, token: FencingToken) -> String? {
        guard status == .paused, plan.onPause == .stop, let lease = node(id)?.lease, lease.token == token, lease.kind == .forward else { return nil }
        return "migration \(self.id) was paused (\(statusReason ?? "no reason given")) and its plan says running steps stop (on_pause: stop)"
    }
}
