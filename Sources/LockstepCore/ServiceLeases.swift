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
    /// (These helpers read fields in place, as `nodeIndex` explains: the bookkeeping may visit every node
    /// of a command's migration.)
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
    /// (`queued` answers whether a node is in the rollback queue: a set, when every node is asked.)
    private func midTransition(at index: Int, queued: Set<NodeID>? = nil) -> Bool {
        if nodes[index].lease != nil { return true }
        switch status {
        case .running, .paused: return betweenSteps(at: index)
        case .aborting: return nodes[index].status == .failed && (queued?.contains(nodes[index].id) ?? rollbackQueue.contains(nodes[index].id))
        case .succeeded, .failed, .rolledBack: return false
        }
    }

    private func keepsServices(at index: Int, wants: StepKind?, queued: Set<NodeID>? = nil) -> Bool {
        if wants != nil || nodes[index].lease != nil { return true }
        switch status {
        case .running, .paused: return betweenSteps(at: index)
        case .aborting, .failed:  // still to undo, or could not be undone
            return queued?.contains(nodes[index].id) ?? rollbackQueue.contains(nodes[index].id)
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
        // Leasing a step, reporting progress or a metric sample, or being granted services changes nothing
        // any node wants or keeps (the state was consistent before): skip the work, which is most commands.
        let inert = events.allSatisfy { event in
            switch event {
            case .stepLeased, .stepProgress, .serviceLeasesGranted, .metricSampled: true
            default: false
            }
        }
        if inert && !events.isEmpty { return events }
        var after = self
        for event in events { after.evolve(event) }
        let bookkeeping = after.serviceLeaseBookkeeping(reviewing: after.nodesToReview(after: events, from: self))
        // Looking at some nodes only is right when the state was consistent before (every command leaves
        // it so; opening reconciles a history that is not): then it finds what looking at all finds.
        assert(bookkeeping == after.serviceLeaseBookkeeping() || !serviceLeaseBookkeeping().isEmpty,
               "the bookkeeping of the nodes \(events) touched differs from the bookkeeping of all")
        return events + bookkeeping
    }

    /// The indices of the nodes whose bookkeeping `events` (folded into this state from `before`) may
    /// have changed, in plan order: the nodes they name and the nodes that need those. A node's rules
    /// read only its own state, its needs' statuses, the migration's status and its rollback queue; nil
    /// (look at every node) when the events changed the status or the queue, or name no single node.
    func nodesToReview(after events: [MigrationEvent], from before: MigrationState) -> [Int]? {
        guard !events.isEmpty, status == before.status, rollbackQueue == before.rollbackQueue else { return nil }
        var review = Set<Int>()
        for event in events {
            guard let node = event.soleNode else { return nil }
            guard let index = nodeIndex(node) else { continue }  // (names no node of this plan: changes nothing)
            review.insert(index)
            review.formUnion(plan.nodesNeeding(node))
        }
        return review.sorted()
    }

    /// The bookkeeping events this state calls for: none when it is consistent, which every state a
    /// coordinator builds is after each command.
    public func serviceLeaseBookkeeping() -> [MigrationEvent] { serviceLeaseBookkeeping(reviewing: nil) }

    /// The bookkeeping of the nodes at `review` (indices in plan order), or of every node when nil.
    private func serviceLeaseBookkeeping(reviewing review: [Int]?) -> [MigrationEvent] {
        guard nodes.count == plan.nodes.count else { return [] }
        if let reordered = rollbackReorder() {
            var after = self
            after.evolve(.rollbackReordered(reordered))
            return [.rollbackReordered(reordered)] + after.serviceLeaseBookkeeping()
        }
        // A need is looked for among the few nodes just before the one that needs it (plans are mostly
        // written in dependency order); past those, through the plan's lookup. Either way the same node is
        // found (ids are unique in a plan a migration runs).
        func position(of need: NodeID, before index: Int) -> Int? {
            for candidate in stride(from: index - 1, through: max(0, index - 8), by: -1) where nodes[candidate].id == need {
                return candidate
            }
            return nodeIndex(need)
        }
        func needsMet(_ index: Int) -> Bool {
            plan.nodes[index].needs.allSatisfy { need in position(of: need, before: index).map { nodes[$0].status == .succeeded } ?? false }
        }
        var events: [MigrationEvent] = []
        // Asked for each node an aborting or failed migration looks at: once, not a search per node.
        let queued: Set<NodeID>? = rollbackQueue.count > 8 ? Set(rollbackQueue) : nil
        for index in review ?? Array(plan.nodes.indices) where nodes.indices.contains(index) {
            let wants = wantsServices(at: index) { needsMet(index) }
            // A node that would keep its services but holds none (a history written before service
            // leases, or one whose services an operator took) asks for them like a node that wants them.
            // (A check runs before a forward step: it asks as that step would.)
            func needs() -> StepKind? {
                wants ?? (midTransition(at: index, queued: queued) ? (nodes[index].lease.map { $0.kind == .check ? .forward : $0.kind } ?? (status == .aborting ? .rollback : .forward)) : nil)
            }
            switch nodes[index].serviceLeases {
            case .held where !keepsServices(at: index, wants: wants, queued: queued):
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
///
/// Requests are kept by who asked and in one line per service, not in one list of the whole queue: a
/// grant, a grant's check, a wait or a request's fold looks at the lines of the services concerned (a
/// grant pass at the head of each free service's line), so its cost does not grow with the number of
/// requests waiting elsewhere. (It was a pass over the whole queue after every command that released
/// or asked for services: with a few hundred migrations in line, the largest cost of a lease cycle.)
public struct ServiceLeaseIndex: Hashable, Sendable {
    /// Holder by service name. Never iterated for anything that matters: use `holdersInOrder`.
    public private(set) var holders: [String: ServiceHolder] = [:]
    /// Requests in line by who asked. Never iterated for anything that matters: use `queue`.
    private var requests: [Asker: ServiceRequest] = [:]
    /// Each service's line: the requests naming it, oldest (lowest sequence) first. A service nobody is
    /// in line for has no entry. Iterated only by `grantable`, whose answer is sorted.
    private var lines: [String: [ServiceRequest]] = [:]

    /// Who asked: a node of a migration has one request at most.
    struct Asker: Hashable, Sendable {
        var migration: MigrationID
        var node: NodeID
    }

    public init() {}

    /// Holders sorted by service name (UTF-8 byte order).
    public var holdersInOrder: [(service: String, holder: ServiceHolder)] {
        holders.keys.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }.map { ($0, holders[$0]!) }
    }

    /// Every request in line, oldest (lowest sequence) first. Built on each call: for views and tests.
    public var queue: [ServiceRequest] {
        requests.values.sorted { $0.isInLine(before: $1) }
    }

    /// Whether anybody is in line at all.
    public var hasRequests: Bool { !requests.isEmpty }

    /// Whether anybody is in line for one of `services`.
    public func hasRequests(forAnyOf services: some Sequence<String>) -> Bool {
        services.contains { lines[$0] != nil }
    }

    /// The requests that may be granted now, in line order, considering only those recorded up to
    /// `through`: a request is grantable when none of its services is held or named by an earlier one.
    /// Requests `setAside` says so of (forward steps under a freeze) neither get their services nor
    /// hold up the requests behind them; they keep their place for when it no longer does.
    ///
    /// So a grantable request heads, past the set-aside ones, the line of every service it names, and
    /// none of them is held: only the heads of free services' lines are looked at.
    public func grantable(through: UInt64, setAside: (ServiceRequest) -> Bool = { _ in false }) -> [ServiceRequest] {
        var heads: [String: ServiceRequest] = [:]
        for (service, line) in lines where holders[service] == nil {
            // Lines are in sequence order: a head recorded after `through` has nothing recorded before it.
            if let head = line.first(where: { !setAside($0) }), head.sequence <= through { heads[service] = head }
        }
        var result: [ServiceRequest] = []
        // Each request once, from its first service (which a grantable one heads, as it heads all of them).
        for (service, head) in heads where head.services.first == service {
            if head.services.allSatisfy({ heads[$0].map { $0.asker == head.asker } ?? false }) { result.append(head) }
        }
        return result.sorted { $0.isInLine(before: $1) }
    }

    /// Whether the request of `node` of `migration` is among `grantable(through:setAside:)`, found
    /// without listing the others: only the earlier requests in its services' lines are asked `setAside`.
    public func isGrantable(migration: MigrationID, node: NodeID, through: UInt64, setAside: (ServiceRequest) -> Bool = { _ in false }) -> Bool {
        let asker = Asker(migration: migration, node: node)
        guard let request = requests[asker], request.sequence <= through, !setAside(request) else { return false }
        return request.services.allSatisfy { service in
            holders[service] == nil && (lines[service] ?? []).prefix { $0.asker != asker }.allSatisfy(setAside)
        }
    }

    /// What `node` of `migration` waits for: for each of `services`, its holder or the first earlier request naming it.
    public func waits(migration: MigrationID, node: NodeID, services: [String]) -> [ServiceWait] {
        let own = requests[Asker(migration: migration, node: node)]
        var waits: [ServiceWait] = []
        for service in services {
            if let holder = holders[service] {
                if holder.migration == migration && holder.node == node { continue }
                waits.append(ServiceWait(service: service, migration: holder.migration, node: holder.node, holds: true))
            } else if let earlier = lines[service]?.first, own.map({ earlier.isInLine(before: $0) }) ?? true {
                waits.append(ServiceWait(service: service, migration: earlier.migration, node: earlier.node, holds: false))
            }
        }
        return waits
    }

    mutating func apply(_ event: MigrationEvent, of migration: MigrationID, sequence: UInt64) {
        switch event {
        case .serviceLeasesRequested(let requested):
            removeRequest(Asker(migration: migration, node: requested.node))
            insert(ServiceRequest(migration: migration, node: requested.node, services: requested.services, kind: requested.kind, sequence: sequence))
        case .serviceLeasesWithdrawn(let node, _):
            removeRequest(Asker(migration: migration, node: node))
        case .serviceLeasesGranted(let granted):
            removeRequest(Asker(migration: migration, node: granted.node))
            for service in granted.services { holders[service] = ServiceHolder(migration: migration, node: granted.node, since: granted.at) }
        case .serviceLeasesReleased(let released):
            for service in released.services where holders[service].map({ $0.migration == migration && $0.node == released.node }) ?? false {
                holders[service] = nil
            }
        default:
            break
        }
    }

    private mutating func insert(_ request: ServiceRequest) {
        requests[request.asker] = request
        for (offset, service) in request.services.enumerated() where !request.services[..<offset].contains(service) {
            // Appends are folded in acknowledgement order, which can differ from sequence order (so the
            // place is looked for from the back, where it nearly always is).
            let index = lines[service]?.lastIndex { $0.isInLine(before: request) }.map { $0 + 1 } ?? 0
            assert(lines[service]?.contains { $0.asker == request.asker } != true, "\(request.asker) is in \(service)'s line twice")
            lines[service, default: []].insert(request, at: index)
        }
    }

    /// An asker is in a service's line at most once (`insert` places it once per service, and a request
    /// replaces the asker's earlier one only after this removed it), so the first match is the only one:
    /// the search stops there (the head, for a grant) instead of scanning the whole line.
    private mutating func removeRequest(_ asker: Asker) {
        guard let request = requests.removeValue(forKey: asker) else { return }
        for service in request.services {
            if let index = lines[service]?.firstIndex(where: { $0.asker == asker }) { lines[service]?.remove(at: index) }
            if lines[service]?.isEmpty == true { lines[service] = nil }
        }
    }

    /// The index of `migrations` (used when a state is decoded from canonical bytes).
    init(migrations: [MigrationState]) {
        for migration in migrations {
            for (spec, node) in zip(migration.plan.nodes, migration.nodes) {
                switch node.serviceLeases {
                case .none: break
                case .requested(let kind, let sequence):
                    insert(ServiceRequest(migration: migration.id, node: node.id, services: spec.services, kind: kind, sequence: sequence))
                case .held(let since):
                    for service in spec.services { holders[service] = ServiceHolder(migration: migration.id, node: node.id, since: since) }
                }
            }
        }
    }
}

extension ServiceRequest {
    var asker: ServiceLeaseIndex.Asker { ServiceLeaseIndex.Asker(migration: migration, node: node) }

    /// Line order: by the global sequence of the request's event (ties, which one log cannot hold, by
    /// migration and node).
    func isInLine(before other: ServiceRequest) -> Bool {
        (sequence, migration, node.rawValue) < (other.sequence, other.migration, other.node.rawValue)
    }
}

extension MigrationEvent {
    /// The one node this event changes, or nil for an event that changes the migration as a whole (its
    /// status or its rollback queue, as `migration_failed` and `rollback_reordered` do, naming a node).
    var soleNode: NodeID? {
        switch self {
        case .migrationFailed, .rollbackReordered: nil
        default: reportNode
        }
    }
}
