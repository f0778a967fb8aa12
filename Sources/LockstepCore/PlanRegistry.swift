/// A fact about the plan registry: a plan's content was applied as a new version.
public enum PlanEvent: Hashable, Sendable {
    /// `plan` (with its version and content hash) became the newest version of its name.
    case planApplied(PlanSnapshot)

    public var typeName: String { "plan_applied" }
}

/// One plan event with its stream position and metadata.
public struct RecordedPlanEvent: Hashable, Sendable {
    public var plan: String
    public var streamVersion: UInt64
    public var metadata: EventMetadata
    public var event: PlanEvent
    public init(plan: String, streamVersion: UInt64, metadata: EventMetadata, event: PlanEvent) {
        self.plan = plan
        self.streamVersion = streamVersion
        self.metadata = metadata
        self.event = event
    }

    /// The log stream of plan `name`.
    public static func stream(of name: String) -> String { "plan/\(name)" }

    /// The plan whose stream is `stream`, or nil when it is not a plan stream.
    public static func plan(ofStream stream: String) -> String? {
        let prefix = "plan/".utf8
        guard stream.utf8.count > prefix.count, stream.utf8.starts(with: prefix) else { return nil }
        return String(decoding: stream.utf8.dropFirst(prefix.count), as: UTF8.self)
    }
}

/// Any record of the log: a migration's event, a plan's or a freeze's.
public enum LogRecord: Hashable, Sendable {
    case migration(RecordedEvent)
    case plan(RecordedPlanEvent)
    case freeze(RecordedFreezeEvent)
    case checkpoint(RecordedCheckpoint)

    public var stream: String {
        switch self {
        case .migration(let e): RecordedEvent.stream(of: e.migration)
        case .plan(let e): RecordedPlanEvent.stream(of: e.plan)
        case .freeze(let e): RecordedFreezeEvent.stream(of: e.freeze)
        case .checkpoint(let e): RecordedCheckpoint.stream(of: e.checkpoint.sequence)
        }
    }

    public var streamVersion: UInt64 {
        switch self {
        case .migration(let e): e.streamVersion
        case .plan(let e): e.streamVersion
        case .freeze(let e): e.streamVersion
        case .checkpoint(let e): e.streamVersion
        }
    }

    public var metadata: EventMetadata {
        switch self {
        case .migration(let e): e.metadata
        case .plan(let e): e.metadata
        case .freeze(let e): e.metadata
        case .checkpoint(let e): e.metadata
        }
    }

    public var typeName: String {
        switch self {
        case .migration(let e): e.event.typeName
        case .plan(let e): e.event.typeName
        case .freeze(let e): e.event.typeName
        case .checkpoint: "checkpoint_signed"
        }
    }
}

/// What applying a plan means.
public enum PlanDecision: Hashable, Sendable {
    /// The newest version already has this content: nothing to record.
    case unchanged(version: UInt64)
    /// Record the plan as this new version.
    case accepted(PlanEvent)
    case rejected(Rejection)
}

extension LogState {
    /// Applies `plan`'s content: a no-op when the newest version has the same content hash, else the
    /// next version. `plan.contentHash` must already be set (the engine hashes; the core does not).
    public func decideApply(_ plan: PlanSnapshot) -> PlanDecision {
        if plan.contentHash.isEmpty { return .rejected(.invalidArgument("the plan has no content hash")) }
        if let problem = PlanValidation.problem(in: plan) { return .rejected(.invalidPlan(problem)) }
        let versions = plans[plan.name] ?? []
        if let latest = versions.last, latest.contentHash == plan.contentHash { return .unchanged(version: latest.version) }
        guard versions.count < CoreLimits.planVersionsMax else {
            return .rejected(.invalidArgument("plan \(plan.name) has \(versions.count) versions; the limit is \(CoreLimits.planVersionsMax)"))
        }
        var next = plan
        next.version = UInt64(versions.count) + 1
        return .accepted(.planApplied(next))
    }

    /// Version `version` of plan `name` (the newest when nil).
    public func plan(_ name: String, version: UInt64? = nil) -> PlanSnapshot? {
        guard let versions = plans[name] else { return nil }
        guard let version else { return versions.last }
        return versions.first { $0.version == version }
    }

    /// Plans sorted by name (UTF-8 byte order), each with its versions oldest first.
    public var plansInOrder: [(name: String, versions: [PlanSnapshot])] {
        plans.keys.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }.map { ($0, plans[$0]!) }
    }
}
