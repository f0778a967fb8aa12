// Freezes and stop-the-line (issue 19): operators declare when forward steps on some services (or all)
// may not start; rollback steps always may. A freeze is a stream of its own (`freeze/ID`), decided
// here, and every migration's forward step consults the freezes live at the step's instant
// (docs/gates.md).

/// An operator's freeze: no forward step of a node touching `services` (all when empty) starts between
/// `from` and `until` (open-ended when nil) unless it is ended first or the node has a break-glass.
public struct Freeze: Hashable, Sendable {
    public var id: String
    /// The services it covers, sorted and unique; empty means every service.
    public var services: [String]
    public var from: Instant
    /// The end given at declaration (nil: until someone ends it).
    public var until: Instant?
    public var reason: String
    /// Who declared it (attested by the engine).
    public var declaredBy: String
    /// Stop the line: the migrations it paused are resumed when it ends (`MigrationPaused.lineStop`).
    public var stopsLine: Bool

    public init(id: String, services: [String], from: Instant, until: Instant?, reason: String, declaredBy: String, stopsLine: Bool = false) {
        self.id = id
        self.services = services
        self.from = from
        self.until = until
        self.reason = reason
        self.declaredBy = declaredBy
        self.stopsLine = stopsLine
    }

    /// Whether it covers any of `services`.
    public func covers(_ services: [String]) -> Bool {
        self.services.isEmpty || services.contains(where: self.services.contains)
    }

    /// Whether it is in force at `now` (declared, not ended: ended freezes leave the state).
    public func isActive(at now: Instant) -> Bool {
        from <= now && until.map { now < $0 } ?? true
    }

    /// "every service" or the services, for sentences.
    public var scope: String { services.isEmpty ? "every service" : services.joined(separator: ", ") }
}

/// A fact about a freeze.
public enum FreezeEvent: Hashable, Sendable {
    case freezeDeclared(Freeze)
    /// The freeze ended: by a person (`by`), or by the coordinator when its `until` passed.
    case freezeEnded(FreezeEnded)

    public var typeName: String {
        switch self {
        case .freezeDeclared: "freeze_declared"
        case .freezeEnded: "freeze_ended"
        }
    }
}

/// How a freeze ended.
public struct FreezeEnded: Hashable, Sendable {
    public var id: String
    public var by: String
    public var reason: String
    public var at: Instant
    public init(id: String, by: String, reason: String, at: Instant) {
        self.id = id
        self.by = by
        self.reason = reason
        self.at = at
    }
}

/// One freeze event with its stream position and metadata.
public struct RecordedFreezeEvent: Hashable, Sendable {
    public var freeze: String
    public var streamVersion: UInt64
    public var metadata: EventMetadata
    public var event: FreezeEvent
    public init(freeze: String, streamVersion: UInt64, metadata: EventMetadata, event: FreezeEvent) {
        self.freeze = freeze
        self.streamVersion = streamVersion
        self.metadata = metadata
        self.event = event
    }

    /// The log stream of freeze `id`.
    public static func stream(of id: String) -> String { "freeze/\(id)" }

    /// The freeze whose stream is `stream`, or nil when it is not a freeze stream.
    public static func freeze(ofStream stream: String) -> String? {
        let prefix = "freeze/".utf8
        guard stream.utf8.count > prefix.count, stream.utf8.starts(with: prefix) else { return nil }
        return String(decoding: stream.utf8.dropFirst(prefix.count), as: UTF8.self)
    }
}

/// What operators ask of freezes. Identities are attested by the engine.
public enum FreezeCommand: Hashable, Sendable {
    /// Declare `freeze` (its `declaredBy` set by the engine).
    case declare(Freeze)
    /// End freeze `id` now, saying why; `by` is who ends it.
    case end(id: String, by: String, reason: String)

    public var id: String {
        switch self {
        case .declare(let freeze): freeze.id
        case .end(let id, _, _): id
        }
    }
}

extension LogState {
    /// Decides a freeze command at `now`.
    func decideFreeze(_ command: FreezeCommand, now: Instant) -> Result<FreezeEvent, Rejection> {
        if let problem = MigrationState.validateIdentifier(command.id, what: "freeze id") { return .failure(.invalidArgument(problem)) }
        switch command {
        case .declare(let freeze):
            if let problem = MigrationState.validateReason(freeze.reason) { return .failure(.invalidArgument(problem)) }
            if freeze.reason.isEmpty { return .failure(.invalidArgument("a freeze needs a reason saying why")) }
            // An id is used once: a stream that ever had events refuses a new first event (its append
            // expects version 0), which the engine reports as a version conflict.
            if freezes[freeze.id] != nil { return .failure(.freezeExists(freeze.id)) }
            guard freezes.count < CoreLimits.freezesMax else {
                return .failure(.invalidArgument("\(freezes.count) freezes are in force or declared; the limit is \(CoreLimits.freezesMax); end one first"))
            }
            guard freeze.services.count <= CoreLimits.freezeServicesMax else {
                return .failure(.invalidArgument("a freeze names \(freeze.services.count) services; the limit is \(CoreLimits.freezeServicesMax)"))
            }
            for service in freeze.services {
                if let problem = MigrationState.validateIdentifier(service, what: "service") { return .failure(.invalidArgument(problem)) }
            }
            for instant in [freeze.from] + (freeze.until.map { [$0] } ?? [])
            where !(0...CoreLimits.instantMillisMax).contains(instant.millisecondsSinceEpoch) {
                return .failure(.invalidArgument("a freeze must lie between 1970 and the year 9999; \(instant.millisecondsSinceEpoch) ms is outside"))
            }
            if let until = freeze.until, until <= max(freeze.from, now) {
                return .failure(.invalidArgument("the freeze would end (\(until)) before it is in force; its end must be after \(max(freeze.from, now))"))
            }
            var declared = freeze
            declared.services = Array(Set(freeze.services)).sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
            return .success(.freezeDeclared(declared))
        case .end(let id, let by, let reason):
            if let problem = MigrationState.validateReason(reason) { return .failure(.invalidArgument(problem)) }
            guard freezes[id] != nil else { return .failure(.freezeNotFound(id)) }
            return .success(.freezeEnded(FreezeEnded(id: id, by: by, reason: reason, at: now)))
        }
    }

    /// Freezes not ended, sorted by id.
    public var freezesInOrder: [Freeze] {
        freezes.values.sorted { $0.id.utf8.lexicographicallyPrecedes($1.id.utf8) }
    }

    /// The first freeze (by id) in force at `now` over any of `services`.
    ///
    /// This runs on every poll, forward lease and grant pass: it asks the index for the freezes over
    /// every service and over each of `services`, each list sorted by id, and takes each list's first in
    /// force, not a walk over every freeze and its services (up to 1,000 × 64 × 16).
    public func freeze(covering services: [String], at now: Instant) -> Freeze? {
        guard !freezes.isEmpty else { return nil }
        var first: Freeze?
        func firstInForce(_ ids: [String]) {
            for id in ids {
                if let first, !id.utf8.lexicographicallyPrecedes(first.id.utf8) { return }
                if let freeze = freezes[id], freeze.isActive(at: now) {
                    first = freeze
                    return
                }
            }
        }
        firstInForce(freezeIndex.everyService)
        for service in services { firstInForce(freezeIndex.byService[service] ?? []) }
        return first
    }

    /// The freeze that holds back node `node` of `migration`'s forward step at `now`: nil when none does,
    /// the node has a freeze break-glass, or the migration is not running forward.
    public func freeze(holding node: NodeID, of migration: MigrationState, at now: Instant) -> Freeze? {
        guard !freezes.isEmpty, let services = Self.freezable(node, of: migration) else { return nil }
        return freeze(covering: services, at: now)
    }

    /// The services by which a freeze may hold node `node` back: its own, while its migration runs
    /// forward (running or paused) and no admin broke the glass for it; nil otherwise. The one rule
    /// for whom a freeze concerns, for steps and grants alike.
    static func freezable(_ node: NodeID, of migration: MigrationState) -> [String]? {
        guard migration.status == .running || migration.status == .paused, let spec = migration.plan.node(node),
              migration.node(node)?.breakGlass.contains(.freeze) != true else { return nil }
        return spec.services
    }

    /// Node `node` of `migration`'s status as people see it at `now`: `frozen` when it would be ready or
    /// waiting for its services but a freeze holds its forward step, `waiting_for_window` when its windows
    /// do; else `MigrationState.nodeDisplayStatus`.
    public func nodeDisplayStatus(_ node: NodeID, of migration: MigrationState, at now: Instant) -> NodeDisplayStatus {
        let status = migration.nodeDisplayStatus(node)
        guard status == .ready || status == .waitingForServices, migration.status == .running else { return status }
        guard let hold = forwardHold(node, of: migration, at: now) else {
            return status == .ready && migration.checkBlock(node, at: now) != nil ? .checkFailed : status
        }
        if case .window = hold { return .waitingForWindow }
        return .frozen
    }

    /// Freezes whose end time has passed at `now`, by id: the coordinator's timer ends them.
    public func freezesPastTheirEnd(at now: Instant) -> [Freeze] {
        freezesInOrder.filter { $0.until.map { $0 <= now } ?? false }
    }

    /// The next instant after `now` at which a freeze comes into force or its end time passes.
    public func nextFreezeBoundary(after now: Instant) -> Instant? {
        freezes.values.flatMap { [$0.from] + ($0.until.map { [$0] } ?? []) }.filter { $0 > now }.min()
    }

    /// Folds in a freeze event.
    mutating func evolve(freeze event: RecordedFreezeEvent) {
        switch event.event {
        case .freezeDeclared(let freeze):
            if let replaced = freezes.updateValue(freeze, forKey: freeze.id) { freezeIndex.remove(replaced) }
            freezeIndex.insert(freeze)
        case .freezeEnded(let ended):
            if let ended = freezes.removeValue(forKey: ended.id) { freezeIndex.remove(ended) }
        }
    }
}

/// Which freezes cover which services: the ids of those over every service, and of those over each
/// service named, each list sorted by id (`LogState.freeze(covering:at:)`). A freeze's declaration or
/// end changes only its own services' lists (a binary search each), so a replay of many freeze events
/// does not rebuild it per event.
struct FreezeIndex: Hashable, Sendable {
    private(set) var everyService: [String] = []
    private(set) var byService: [String: [String]] = [:]

    init() {}

    init(_ freezes: [String: Freeze]) {
        for freeze in freezes.values { insert(freeze) }
    }

    mutating func insert(_ freeze: Freeze) {
        if freeze.services.isEmpty { return Self.insert(freeze.id, into: &everyService) }
        for service in freeze.services { Self.insert(freeze.id, into: &byService[service, default: []]) }
    }

    mutating func remove(_ freeze: Freeze) {
        if freeze.services.isEmpty { return Self.remove(freeze.id, from: &everyService) }
        for service in freeze.services {
            Self.remove(freeze.id, from: &byService[service, default: []])
            if byService[service]?.isEmpty == true { byService[service] = nil }
        }
    }

    /// Where `id` is, or goes, in `ids` (sorted by UTF-8 bytes).
    private static func place(of id: String, in ids: [String]) -> Int {
        var low = 0, high = ids.count
        while low < high {
            let middle = low + (high - low) / 2
            if ids[middle].utf8.lexicographicallyPrecedes(id.utf8) { low = middle + 1 } else { high = middle }
        }
        return low
    }

    private static func insert(_ id: String, into ids: inout [String]) {
        let at = place(of: id, in: ids)
        if at == ids.count || ids[at] != id { ids.insert(id, at: at) }
    }

    private static func remove(_ id: String, from ids: inout [String]) {
        let at = place(of: id, in: ids)
        if at < ids.count, ids[at] == id { ids.remove(at: at) }
    }
}
