/// The migration vocabulary: what kind of work a node does.
public enum Phase: String, CaseIterable, Sendable {
    case expand, dualWrite = "dual_write", backfill, verify, shadow, live, rampdown, contract, cleanup, custom
}

/// A service the plan touches, and the owner groups whose members may approve its gates.
public struct ServiceSpec: Hashable, Sendable {
    public var name: String
    public var owners: [String]
    /// When forward steps on the service may start (docs/gates.md, "Change windows"); none = any time.
    public var windows: [ChangeWindow]
    public init(name: String, owners: [String], windows: [ChangeWindow] = []) {
        self.name = name
        self.owners = owners
        self.windows = windows
    }
}

/// How long a step may take at each stage, in milliseconds (nil = no limit).
public struct Timeouts: Hashable, Sendable {
    /// From ready to leased.
    public var scheduleToStartMillis: Int64?
    /// From leased to reported.
    public var startToCloseMillis: Int64?
    /// Longest gap between heartbeats.
    public var heartbeatMillis: Int64?
    public init(scheduleToStartMillis: Int64? = nil, startToCloseMillis: Int64? = nil, heartbeatMillis: Int64? = nil) {
        self.scheduleToStartMillis = scheduleToStartMillis
        self.startToCloseMillis = startToCloseMillis
        self.heartbeatMillis = heartbeatMillis
    }
}

/// How often a node's step is tried, and how long to wait between tries.
public struct RetryPolicy: Hashable, Sendable {
    /// Attempts allowed (1 = no retry).
    public var maxAttempts: UInt32
    /// Wait before the second attempt, in milliseconds.
    public var backoffInitialMillis: Int64
    /// Longest wait between attempts, in milliseconds.
    public var backoffMaxMillis: Int64
    /// Each wait is the previous one times this (1 = constant).
    public var backoffMultiplier: UInt32

    public init(maxAttempts: UInt32 = 1, backoffInitialMillis: Int64 = 0, backoffMaxMillis: Int64 = 0, backoffMultiplier: UInt32 = 1) {
        self.maxAttempts = maxAttempts
        self.backoffInitialMillis = backoffInitialMillis
        self.backoffMaxMillis = backoffMaxMillis
        self.backoffMultiplier = backoffMultiplier
    }

    /// The wait after failed attempt number `attempt` (1-based): initial × multiplier^(attempt-1), capped
    /// at the maximum; integer arithmetic that saturates instead of trapping.
    public func backoffMillis(afterAttempt attempt: UInt32) -> Int64 {
        var wait = max(0, backoffInitialMillis)
        let cap = max(wait, backoffMaxMillis)
        var step: UInt32 = 1
        while step < attempt && wait < cap {
            let (product, overflow) = wait.multipliedReportingOverflow(by: Int64(max(1, backoffMultiplier)))
            wait = overflow ? cap : min(product, cap)
            step += 1
        }
        return min(wait, cap)
    }
}

/// The undo of a node: run as a step like any other when the migration rolls back.
public struct RollbackSpec: Hashable, Sendable {
    public var action: String
    /// A JSON object with sorted keys.
    public var paramsJSON: String
    public init(action: String, paramsJSON: String = "{}") {
        self.action = action
        self.paramsJSON = paramsJSON
    }
}

/// People who must agree before a node may start.
public struct ApprovalGate: Hashable, Sendable {
    /// Distinct approvers needed.
    public var minimum: UInt32
    /// Owner groups whose members may approve; empty means the owners of the node's services.
    public var from: [String]
    public init(minimum: UInt32, from: [String] = []) {
        self.minimum = minimum
        self.from = from
    }
}

/// What running steps do when their migration is paused (a person's pause, or a stop of the line).
public enum PausePolicy: String, Hashable, Sendable, CaseIterable {
    /// They run to their end and report; nothing new starts (the default).
    case finish
    /// Forward steps are told to stop (on their next heartbeat); the agent stops the handler and reports
    /// it stopped, which does not count as an attempt. Rollback steps always finish.
    case stop
}

/// What happens when a node runs out of attempts.
public enum FailurePolicy: String, Hashable, Sendable, CaseIterable {
    /// Abort the migration and roll back what completed.
    case rollback
    /// Pause the migration for an operator to decide.
    case pause
}

/// One unit of work in a plan, as frozen into a migration when it starts.
public struct NodeSpec: Hashable, Sendable {
    public var id: NodeID
    /// The services this node transitions; more than one makes it a cross-service transition.
    public var services: [String]
    /// The service this node's steps belong to, the first it names ("" for a node that names none, which
    /// validation refuses, and the decoding of a stored record or snapshot too: never indexed, so no plan
    /// can trap a reader).
    public var stepService: String { services.first ?? "" }
    public var phase: Phase
    /// What the agent runs.
    public var action: String
    /// The action's parameters: a JSON object with sorted keys (opaque to the core).
    public var paramsJSON: String
    /// Nodes that must succeed before this one may start.
    public var needs: [NodeID]
    public var timeouts: Timeouts
    public var retry: RetryPolicy
    public var rollback: RollbackSpec?
    public var approval: ApprovalGate?
    /// Milliseconds after the migration started by which this node must have succeeded.
    public var deadlineMillis: Int64?
    /// A point of no return: once it completed, nothing before it can be rolled back.
    public var irreversible: Bool
    public var onFailure: FailurePolicy
    /// Progressive exposure: the node's step runs once per stage, each followed by a bake.
    public var exposure: ExposureSpec?
    /// How each bake is judged (needs `exposure`).
    public var analysis: AnalysisSpec?
    /// When the node's forward steps may start (with the plan's and its services'); none = any time.
    public var windows: [ChangeWindow]
    /// Preflight checks, in order, that must have a fresh pass before its forward step (Checks.swift).
    public var checks: [CheckSpec]

    public init(id: NodeID, services: [String], phase: Phase, action: String, paramsJSON: String = "{}", needs: [NodeID] = [],
                timeouts: Timeouts = Timeouts(), retry: RetryPolicy = RetryPolicy(), rollback: RollbackSpec? = nil,
                approval: ApprovalGate? = nil, deadlineMillis: Int64? = nil, irreversible: Bool = false, onFailure: FailurePolicy = .rollback,
                exposure: ExposureSpec? = nil, analysis: AnalysisSpec? = nil, windows: [ChangeWindow] = [], checks: [CheckSpec] = []) {
        self.id = id
        self.services = services
        self.phase = phase
        self.action = action
        self.paramsJSON = paramsJSON
        self.needs = needs
        self.timeouts = timeouts
        self.retry = retry
        self.rollback = rollback
        self.approval = approval
        self.deadlineMillis = deadlineMillis
        self.irreversible = irreversible
        self.onFailure = onFailure
        self.exposure = exposure
        self.analysis = analysis
        self.windows = windows
        self.checks = checks
    }

    /// A node with only a retry count (tests and generated load).
    public init(id: NodeID, services: [String], phase: Phase, action: String, needs: [NodeID] = [], maxAttempts: UInt32) {
        self.init(id: id, services: services, phase: phase, action: action, needs: needs, retry: RetryPolicy(maxAttempts: maxAttempts))
    }

    /// Attempts allowed before the node fails for good.
    public var maxAttempts: UInt32 { retry.maxAttempts }
}

/// The plan version a migration runs, carried whole in its `migrationStarted` event so replay needs nothing else.
public struct PlanSnapshot: Hashable, Sendable {
    public var name: String
    public var version: UInt64
    /// Content hash of the plan definition (hex SHA-256), computed outside the core.
    public var contentHash: String
    public var description: String
    /// Owner groups of the plan as a whole.
    public var owners: [String]
    public var services: [ServiceSpec] { didSet { lookup = PlanLookup(nodes: nodes, services: services) } }
    /// Milliseconds after start by which the whole migration must have succeeded.
    public var deadlineMillis: Int64?
    /// Nodes in plan order; order is part of the plan and decides tie-breaks.
    public var nodes: [NodeSpec] { didSet { lookup = PlanLookup(nodes: nodes, services: services) } }
    /// When forward steps of any node may start (with the services' and the node's own); none = any time.
    public var windows: [ChangeWindow]
    /// What running steps do when the migration is paused.
    public var onPause: PausePolicy
    /// Where each node id and service name sits in `nodes` and `services`, and which nodes need each node:
    /// kept with them (set in `init`, rebuilt whenever either changes), so a lookup by id costs the same in
    /// a plan of 1,000 nodes as in one of 3. Derived, so not part of equality.
    private var lookup: PlanLookup

    public init(name: String, version: UInt64, contentHash: String, description: String = "", owners: [String] = [],
                services: [ServiceSpec] = [], deadlineMillis: Int64? = nil, nodes: [NodeSpec], windows: [ChangeWindow] = [],
                onPause: PausePolicy = .finish) {
        self.name = name
        self.version = version
        self.contentHash = contentHash
        self.description = description
        self.owners = owners
        self.services = services
        self.deadlineMillis = deadlineMillis
        self.nodes = nodes
        self.windows = windows
        self.onPause = onPause
        lookup = PlanLookup(nodes: nodes, services: services)
    }

    /// The node with `id`, if the plan has one.
    public func node(_ id: NodeID) -> NodeSpec? { nodeIndex(id).map { nodes[$0] } }

    /// The index of node `id` in `nodes` (the first, should the plan name it twice), trying `hint` first
    /// (a migration's node state sits at its spec's index); otherwise from the lookup, at once.
    public func nodeIndex(_ id: NodeID, hint: Int? = nil) -> Int? {
        if let hint, nodes.indices.contains(hint), nodes[hint].id == id { return hint }
        return lookup.nodes[id]
    }

    /// The indices of the nodes that need node `id`, in plan order.
    public func nodesNeeding(_ id: NodeID) -> [Int] { lookup.neededBy[id] ?? [] }

    /// Every service the plan's nodes transition (found once, when the plan is built).
    public var transitionedServices: Set<String> { lookup.transitioned }

    /// The indices of the nodes with a deadline, in plan order.
    var nodesWithDeadline: [Int] { lookup.withDeadline }

    /// The indices of the nodes with a `start_to_close` timeout, in plan order.
    var nodesWithStartToClose: [Int] { lookup.withStartToClose }

    /// Whether some node sets a `schedule_to_start` timeout.
    public var schedulesToStart: Bool { lookup.schedulesToStart }

    /// Whether the plan, a service or a node declares change windows.
    public var hasWindows: Bool { !windows.isEmpty || lookup.serviceOrNodeWindows }

    /// The indices in `services` where `service` is declared, in order.
    public func declarations(of service: String) -> [Int] { lookup.services[service] ?? [] }

    /// The indices in `services` of the declarations of `node`'s services, in plan order, each once
    /// (found by name, not by a walk over every service).
    public func serviceDeclarations(of node: NodeSpec) -> [Int] { Set(node.services.flatMap { declarations(of: $0) }).sorted() }

    /// Whether the plan declares `service` under `services`.
    public func declares(service: String) -> Bool { lookup.services[service] != nil }

    /// The owner groups that may approve `node`'s gate: the gate's own list, else the owners of the
    /// node's services, in plan order without repeats.
    public func approverGroups(for node: NodeSpec) -> [String] {
        if let gate = node.approval, !gate.from.isEmpty { return gate.from }
        var groups: [String] = []
        var seen = Set<String>()
        for index in serviceDeclarations(of: node) {
            for owner in services[index].owners where seen.insert(owner).inserted { groups.append(owner) }
        }
        return groups
    }
}

extension PlanSnapshot {
    /// The canonical bytes of the plan's content (everything but version and hash): what its
    /// content hash is computed over, so the same content always gets the same hash.
    public var canonicalContentBytes: [UInt8] {
        var writer = CanonicalWriter()
        writer.forContentHash = true
        var content = self
        content.version = 0
        content.contentHash = ""
        writer.plan(content)
        return writer.bytes
    }
}

extension NodeSpec {
    /// A step lease's TTL for this node, in milliseconds: its heartbeat timeout, else `defaultMillis`,
    /// within `CoreLimits.leaseTTLMillisMin...leaseTTLMillisMax`.
    public func leaseTTLMillis(default defaultMillis: Int64) -> Int64 {
        min(max(timeouts.heartbeatMillis ?? defaultMillis, CoreLimits.leaseTTLMillisMin), CoreLimits.leaseTTLMillisMax)
    }
}

/// A plan's node ids and service names to their places, and who needs whom (`PlanSnapshot.lookup`).
struct PlanLookup: Hashable, Sendable {
    /// Each node id to its first index in `nodes` (a plan that names one twice is invalid, and the
    /// first is the one a search in order finds).
    private(set) var nodes: [NodeID: Int] = [:]
    /// Each service name to every index it is declared at, in order.
    private(set) var services: [String: [Int]] = [:]
    /// Each node id to the indices of the nodes that need it, in order.
    private(set) var neededBy: [NodeID: [Int]] = [:]
    /// Every service the nodes transition.
    private(set) var transitioned: Set<String> = []
    /// The indices of the nodes with a deadline, and of those with a `start_to_close`, in order.
    private(set) var withDeadline: [Int] = []
    private(set) var withStartToClose: [Int] = []
    /// Some node sets a `schedule_to_start`; some service or node declares change windows.
    private(set) var schedulesToStart = false
    private(set) var serviceOrNodeWindows = false

    /// Built whole, and again from scratch on any change: plans are built whole and rarely changed after.
    init(nodes: [NodeSpec], services: [ServiceSpec]) {
        self.nodes.reserveCapacity(nodes.count)
        for position in nodes.indices {
            if self.nodes[nodes[position].id] == nil { self.nodes[nodes[position].id] = position }
            for need in nodes[position].needs where neededBy[need]?.last != position { neededBy[need, default: []].append(position) }
            // (A node naming the services the one before did, as a run of nodes on one service does, is not hashed again.)
            if position == 0 || nodes[position].services != nodes[position - 1].services { transitioned.formUnion(nodes[position].services) }
            if nodes[position].deadlineMillis != nil { withDeadline.append(position) }
            if nodes[position].timeouts.startToCloseMillis != nil { withStartToClose.append(position) }
            schedulesToStart = schedulesToStart || nodes[position].timeouts.scheduleToStartMillis != nil
            serviceOrNodeWindows = serviceOrNodeWindows || !nodes[position].windows.isEmpty
        }
        for position in services.indices {
            self.services[services[position].name, default: []].append(position)
            serviceOrNodeWindows = serviceOrNodeWindows || !services[position].windows.isEmpty
        }
    }

    // Derived from the plan's own fields: two plans that are equal have equal lookups.
    static func == (lhs: PlanLookup, rhs: PlanLookup) -> Bool { true }
    func hash(into hasher: inout Hasher) {}
}
