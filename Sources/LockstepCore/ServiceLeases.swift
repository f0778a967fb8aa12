// Service leases (transition locks): a node holds the leases of every service it transitions, all at
// once, from before its first step until it settles. Two migrations never transition one service at a
// time. The rules, in one place:
//
// - A node *wants* its services when its migration is running and it is pending with its needs
//   succeeded and its gate satisfied (a forward step), or when it is next in its migration's rollback
//   queue (a rollback step).
// - A node that wants them and neither holds nor asked for them records `service_leases_requested`;
//   that puts it in the queue of each of its services, ordered by the request's global sequence.
// - The coordinator grants a request when none of its services is held and no earlier request in the
//   queue names any of them: first come, first served per service, never a partial hold, hence no
//   deadlock (a node that holds never waits).
// - A node *keeps* its services while it wants them, while a step of it runs, between retries, and
//   while an abort still has to undo it. Otherwise it releases them in the same append as the event
//   that settled it. A migration that fails while undoing keeps the services it could not undo (their
//   state is unknown) until an operator force-releases them.
// - A paused migration keeps the services of nodes that have started (a step running, or between
//   retries) and gives up the rest, including its places in the queues; resuming asks again.
// - A node in the middle of a transition (a step running, between retries, or abandoned by an abort
//   and not yet undone) that holds nothing (its services were force-released, or the history was
//   written before service leases existed) asks for them again, at the back of the line.
//
// - An aborting migration whose rollback head waits for a service that a later node of its own queue
//   holds (possible only after forced releases) undoes that node first (`rollback_reordered`).
//
// All of it is bookkeeping `decide` appends after the events of any command (`withServiceLeaseBookkeeping`),
// so the rules hold whatever the command was, and replay needs no rule at all: only the events.

extension MigrationState {
    /// The kind of step node `id` wants its services for now, or nil.
    public func wantsServices(_ id: NodeID) -> StepKind? {
        guard let index = nodeIndex(id) else { return nil }
        return wantsServices(at: index) { needsSatisfied(id) }
    }

    /// Whether node `id`, holding its services, keeps them (see the rules above).
    public func keepsServices(_ id: NodeID) -> Bool {
        guard let index = nodeIndex(id) else { return false }
        return keepsServices(at: index, wants: wantsServices(at: index) { needsSatisfied(id) })
    }

    /// The rule for the node at `index` (of `nodes`, which follows plan order); `needsMet` says whether
    /// everything it needs has succeeded (the caller may know faster than a search).
    /// (These helpers read fields in place, as `nodeIndex` explains: the bookkeeping visits every node
    /// after each command.)
    private func wantsServices(at index: Int, needsMet: () -> Bool) -> StepKind? {
        switch status {
        case .running:
            guard nodes[index].status == .pending, nodes[index].rejection == nil, nodes[index].attempts < CoreLimits.attemptsMax else { return nil }
            if let minimum = plan.nodes[index].approval?.minimum, nodes[index].approvals.count < Int(minimum) { return nil }
            return needsMet() ? .forward : nil
        case .aborting:
            return nodes[index].rollbackAttempts < CoreLimits.attemptsMax && rollbackQueue.first == nodes[index].id ? .rollback : nil
        case .paused, .succeeded, .failed, .rolledBack:
            return nil
        }
    }

    /// Whether the node at `index` is in the middle of transitioning its services: a step of it runs,
    /// it is between retries, or an abort abandoned its step and has yet to undo it. Such a node asks
    /// for its services if it holds none.
    private func midTransition(at index: Int) -> Bool {
        if nodes[index].lease != nil { return true }
        switch status {
        case .running, .paused: return betweenSteps(at: index)
        case .aborting: return nodes[index].status == .failed && rollbackQueue.contains(nodes[index].id)
        case .succeeded, .failed, .rolledBack: return false
        }
    }

    private func keepsServices(at index: Int, wants: StepKind?) -> Bool {
        if wants != nil || nodes[index].lease != nil { return true }
        switch status {
        case .running, .paused: return betweenSteps(at: index)
        case .aborting, .failed: return rollbackQueue.contains(nodes[index].id)  // still to undo, or could not be undone
        case .succeeded, .rolledBack: return false
        }
    }

    /// Between retries, baking, between exposure stages, stopped by a pause, or failed with its exposure
    /// still out (failed mid-rollout).
    private func betweenSteps(at index: Int) -> Bool {
        switch nodes[index].status {
        case .baking: true
        case .pending: nodes[index].attempts > 0 || nodes[index].exposure.reached > 0 || nodes[index].stopped
        case .failed: nodes[index].exposure.reached > 0
        case .running, .succeeded, .rolledBack, .rollingBack, .skipped: false
        }
    }

    /// `events` followed by the service-lease bookkeeping they imply: releases, withdrawals and new
    /// requests, node by node in plan order.
    func withServiceLeaseBookkeeping(_ events: [MigrationEvent]) -> [MigrationEvent] {
        // Leasing a step, reporting progress or being granted services changes nothing any node wants
        // or keeps (the state was consistent before): skip the work, which is most commands.
        let inert = events.allSatisfy { event in
            switch event {
            case .stepLeased, .stepProgress, .serviceLeasesGranted: true
            default: false
            }
        }
        if inert && !events.isEmpty { return events }
        var after = self
        for event in events { after.evolve(event) }
        return events + after.serviceLeaseBookkeeping()
    }

    /// The bookkeeping events this state calls for: none when it is consistent, which every state a
    /// coordinator builds is after each command.
    public func serviceLeaseBookkeeping() -> [MigrationEvent] {
        guard nodes.count == plan.nodes.count else { return [] }
        if let reordered = rollbackReorder() {
            var after = self
            after.evolve(.rollbackReordered(reordered))
            return [.rollbackReordered(reordered)] + after.serviceLeaseBookkeeping()
        }
        // A need is looked for among the few nodes just before the one that needs it (plans are mostly
        // written in dependency order); past those, in an index of the nodes built once, when first wanted
        // (nodes follow plan order). Either way the same node is found.
        var indexed: [NodeID: Int]?
        func position(of need: NodeID, before index: Int) -> Int? {
            for candidate in stride(from: index - 1, through: max(0, index - 8), by: -1) where nodes[candidate].id == need {
                return candidate
            }
            if indexed == nil {
                var built: [NodeID: Int] = [:]
                built.reserveCapacity(nodes.count)
                for index in nodes.indices { built[nodes[index].id] = index }
                indexed = built
            }
            return indexed?[need]
        }
        func needsMet(_ index: Int) -> Bool {
            plan.nodes[index].needs.allSatisfy { need in position(of: need, before: index).map { nodes[$0].status == .succeeded } ?? false }
        }
        var events: [MigrationEvent] = []
        for index in plan.nodes.indices {
            let wants = wantsServices(at: index) { needsMet(index) }
            // A node that would keep its services but holds none (a history written before service
            // leases, or one whose services an operator took) asks for them like a node that wants them.
            // (A check runs before a forward step: it asks as that step would.)
            func needs() -> StepKind? {
                wants ?? (midTransition(at: index) ? (nodes[index].lease.map { $0.kind == .check ? .forward : $0.kind } ?? (status == .aborting ? .rollback : .forward)) : nil)
            }
            switch nodes[index].serviceLeases {
            case .held where !keepsServices(at: index, wants: wants):
                events.append(.serviceLeasesReleased(ServiceLeasesReleased(
                    node: nodes[index].id, services: plan.nodes[index].services, reason: releaseReason(nodes[index]))))
            case .requested where needs() == nil:
                let node = nodes[index]
                events.append(.serviceLeasesWithdrawn(node: node.id, reason: "migration \(id) is \(status.rawValue) and node \(node.id) is \(node.status.rawValue)"))
            case .none:
                if let kind = needs() {
                    events.append(.serviceLeasesRequested(ServiceLeasesRequested(node: nodes[index].id, services: plan.nodes[index].services, kind: kind)))
                }
            case .held, .requested:
                break
            }
        }
        return events
    }

    /// The reorder an aborting migration needs when the head of its rollback queue waits for a service
    /// that a later node of the same queue holds: that node keeps it until it is undone, and it is undone
    /// only after the head, so the rollback would wait forever (after forced releases mid-rollout, the
    /// newest stage can belong to a node that lost its services). The first such holder goes first.
    /// Safe for the rollback's order: a node that holds its services has not completed, so no node of
    /// the queue depends on it.
    func rollbackReorder() -> RollbackReordered? {
        guard status == .aborting, let head = rollbackQueue.first, let headIndex = nodeIndex(head),
              !nodes[headIndex].serviceLeases.isHeld else { return nil }
        let wanted = plan.nodes[headIndex].services
        for id in rollbackQueue.dropFirst() {
            guard let index = nodeIndex(id), nodes[index].serviceLeases.isHeld else { continue }
            let shared = plan.nodes[index].services.filter(wanted.contains)
            if !shared.isEmpty { return RollbackReordered(node: id, aheadOf: head, services: shared) }
        }
        return nil
    }

    private func releaseReason(_ node: NodeState) -> String {
        switch node.status {
        case .succeeded: "node \(node.id) succeeded"
        case .failed: "node \(node.id) failed"
        case .rolledBack: "node \(node.id) rolled back"
        case .skipped: "node \(node.id) was skipped"
        case .pending, .running, .rollingBack: "migration \(id) is \(status.rawValue) and node \(node.id) has not started"
        case .baking: "migration \(id) is \(status.rawValue) and node \(node.id) is baking"
        }
    }
}

/// Why a node is still waiting for its services: who holds one of them, or asked first.
public struct ServiceWait: Hashable, Sendable, CustomStringConvertible {
    public var service: String
    public var migration: MigrationID
    public var node: NodeID
    /// True when that node holds the service; false when it is ahead in the queue.
    public var holds: Bool
    public init(service: String, migration: MigrationID, node: NodeID, holds: Bool) {
        self.service = service
        self.migration = migration
        self.node = node
        self.holds = holds
    }

    public var description: String {
        "\(service) \(holds ? "is held by" : "was asked for first by") migration \(migration) (node \(node))"
    }
}

/// Who holds a service lease.
public struct ServiceHolder: Hashable, Sendable {
    public var migration: MigrationID
    public var node: NodeID
    public var since: Instant
    public init(migration: MigrationID, node: NodeID, since: Instant) {
        self.migration = migration
        self.node = node
        self.since = since
    }
}

/// A node waiting in the queues of its services.
public struct ServiceRequest: Hashable, Sendable {
    public var migration: MigrationID
    public var node: NodeID
    public var services: [String]
    public var kind: StepKind
    /// The global sequence of its `service_leases_requested` event: its place in line.
    public var sequence: UInt64
    public init(migration: MigrationID, node: NodeID, services: [String], kind: StepKind, sequence: UInt64) {
        self.migration = migration
        self.node = node
        self.services = services
        self.kind = kind
        self.sequence = sequence
    }
}

/// The service leases of a whole log: an index of what the migrations' nodes say (they are the source
/// of truth, in the canonical state), kept for fast grants and waits.
public struct ServiceLeaseIndex: Hashable, Sendable {
    /// Holder by service name. Never iterated for anything that matters: use `holdersInOrder`.
    public private(set) var holders: [String: ServiceHolder] = [:]
    /// Requests in line, oldest (lowest sequence) first.
    public private(set) var queue: [ServiceRequest] = []

    public init() {}

    /// Holders sorted by service name (UTF-8 byte order).
    public var holdersInOrder: [(service: String, holder: ServiceHolder)] {
        holders.keys.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }.map { ($0, holders[$0]!) }
    }

    /// The requests that may be granted now, in line order, considering only those recorded up to
    /// `through`: a request is grantable when none of its services is held or named by an earlier one.
    /// Requests `setAside` says so of (forward steps under a freeze) neither get their services nor
    /// hold up the requests behind them; they keep their place for when it no longer does.
    public func grantable(through: UInt64, setAside: (ServiceRequest) -> Bool = { _ in false }) -> [ServiceRequest] {
        // Services named by earlier requests; held ones are looked up where they are (no set of them is built).
        var named = Set<String>()
        var result: [ServiceRequest] = []
        for request in queue {
            guard request.sequence <= through else { break }
            if setAside(request) { continue }
            if request.services.allSatisfy({ holders[$0] == nil && !named.contains($0) }) { result.append(request) }
            named.formUnion(request.services)
        }
        return result
    }

    /// Whether the request of `node` of `migration` is among `grantable(through:setAside:)`, found
    /// without listing the others: only the earlier requests that name one of its services are asked
    /// `setAside` (a grant's own check, made for every grant, stays as cheap as the line is short).
    public func isGrantable(migration: MigrationID, node: NodeID, through: UInt64, setAside: (ServiceRequest) -> Bool = { _ in false }) -> Bool {
        guard let position = queue.firstIndex(where: { $0.migration == migration && $0.node == node }) else { return false }
        let request = queue[position]
        for earlier in queue[..<position] {
            // `grantable` stops at the first request recorded after `through` (the line is in sequence
            // order, so this only keeps the two alike should that ever change).
            guard earlier.sequence <= through else { return false }
            if earlier.services.contains(where: request.services.contains), !setAside(earlier) { return false }
        }
        return request.sequence <= through && !setAside(request) && request.services.allSatisfy { holders[$0] == nil }
    }

    /// What `node` of `migration` waits for: for each of `services`, its holder or the first earlier request naming it.
    public func waits(migration: MigrationID, node: NodeID, services: [String]) -> [ServiceWait] {
        let position = queue.firstIndex { $0.migration == migration && $0.node == node } ?? queue.endIndex
        var waits: [ServiceWait] = []
        for service in services {
            if let holder = holders[service] {
                if holder.migration == migration && holder.node == node { continue }
                waits.append(ServiceWait(service: service, migration: holder.migration, node: holder.node, holds: true))
            } else if let earlier = queue[..<position].first(where: { $0.services.contains(service) }) {
                waits.append(ServiceWait(service: service, migration: earlier.migration, node: earlier.node, holds: false))
            }
        }
        return waits
    }

    mutating func apply(_ event: MigrationEvent, of migration: MigrationID, sequence: UInt64) {
        switch event {
        case .serviceLeasesRequested(let requested):
            removeRequest(migration: migration, node: requested.node)
            let request = ServiceRequest(migration: migration, node: requested.node, services: requested.services,
                                         kind: requested.kind, sequence: sequence)
            // Appends are folded in acknowledgement order, which can differ from sequence order.
            let index = queue.lastIndex { $0.sequence < sequence }.map { $0 + 1 } ?? 0
            queue.insert(request, at: index)
        case .serviceLeasesWithdrawn(let node, _):
            removeRequest(migration: migration, node: node)
        case .serviceLeasesGranted(let granted):
            removeRequest(migration: migration, node: granted.node)
            for service in granted.services { holders[service] = ServiceHolder(migration: migration, node: granted.node, since: granted.at) }
        case .serviceLeasesReleased(let released):
            for service in released.services where holders[service].map({ $0.migration == migration && $0.node == released.node }) ?? false {
                holders[service] = nil
            }
        default:
            break
        }
    }

    private mutating func removeRequest(migration: MigrationID, node: NodeID) {
        queue.removeAll { $0.migration == migration && $0.node == node }
    }

    /// The index of `migrations` (used when a state is decoded from canonical bytes).
    init(migrations: [MigrationState]) {
        for migration in migrations {
            for (spec, node) in zip(migration.plan.nodes, migration.nodes) {
                switch node.serviceLeases {
                case .none: break
                case .requested(let kind, let sequence):
                    queue.append(ServiceRequest(migration: migration.id, node: node.id, services: spec.services, kind: kind, sequence: sequence))
                case .held(let since):
                    for service in spec.services { holders[service] = ServiceHolder(migration: migration.id, node: node.id, since: since) }
                }
            }
        }
        queue.sort { ($0.sequence, $0.migration, $0.node.rawValue) < ($1.sequence, $1.migration, $1.node.rawValue) }
    }
}
