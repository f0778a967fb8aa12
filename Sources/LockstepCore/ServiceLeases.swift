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
    private func wantsServices(at index: Int, needsMet: () -> Bool) -> StepKind? {
        let node = nodes[index]
        switch status {
        case .running:
            guard node.status == .pending, node.rejection == nil, node.attempts < CoreLimits.attemptsMax else { return nil }
            if let gate = plan.nodes[index].approval, node.approvals.count < Int(gate.minimum) { return nil }
            return needsMet() ? .forward : nil
        case .aborting:
            return rollbackQueue.first == node.id && node.rollbackAttempts < CoreLimits.attemptsMax ? .rollback : nil
        case .paused, .succeeded, .failed, .rolledBack:
            return nil
        }
    }

    /// Whether the node at `index` is in the middle of transitioning its services: a step of it runs,
    /// it is between retries, or an abort abandoned its step and has yet to undo it. Such a node asks
    /// for its services if it holds none.
    private func midTransition(at index: Int) -> Bool {
        let node = nodes[index]
        if node.lease != nil { return true }
        switch status {
        case .running, .paused: return node.status == .baking || (node.status == .pending && (node.attempts > 0 || node.exposure.reached > 0 || node.stopped))
            || (node.status == .failed && node.exposure.reached > 0)  // failed mid-rollout: its exposure is still out
        case .aborting: return node.status == .failed && rollbackQueue.contains(node.id)
        case .succeeded, .failed, .rolledBack: return false
        }
    }

    private func keepsServices(at index: Int, wants: StepKind?) -> Bool {
        let node = nodes[index]
        if wants != nil || node.lease != nil { return true }
        switch status {
        // Between retries, baking, between exposure stages, or failed with its exposure still out.
        case .running, .paused: return node.status == .baking || (node.status == .pending && (node.attempts > 0 || node.exposure.reached > 0 || node.stopped))
            || (node.status == .failed && node.exposure.reached > 0)
        case .aborting, .failed: return rollbackQueue.contains(node.id)  // still to undo, or could not be undone
        case .succeeded, .rolledBack: return false
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
        // One pass to index the nodes, so each node's needs are checked without searching.
        var position: [NodeID: Int] = [:]
        position.reserveCapacity(nodes.count)
        for (index, node) in nodes.enumerated() { position[node.id] = index }
        var events: [MigrationEvent] = []
        for (index, spec) in plan.nodes.enumerated() {
            let node = nodes[index]
            let wants = wantsServices(at: index) {
                spec.needs.allSatisfy { need in position[need].map { nodes[$0].status == .succeeded } ?? false }
            }
            // A node that would keep its services but holds none (a history written before service
            // leases, or one whose services an operator took) asks for them like a node that wants them.
            let keeps = keepsServices(at: index, wants: wants)
            // (A check runs before a forward step: it asks as that step would.)
            let needs = wants ?? (midTransition(at: index) ? (node.lease.map { $0.kind == .check ? .forward : $0.kind } ?? (status == .aborting ? .rollback : .forward)) : nil)
            switch node.serviceLeases {
            case .held where !keeps:
                events.append(.serviceLeasesReleased(ServiceLeasesReleased(
                    node: node.id, services: spec.services, reason: releaseReason(node))))
            case .requested where needs == nil:
                events.append(.serviceLeasesWithdrawn(node: node.id, reason: "migration \(id) is \(status.rawValue) and node \(node.id) is \(node.status.rawValue)"))
            case .none:
                if let kind = needs {
                    events.append(.serviceLeasesRequested(ServiceLeasesRequested(node: node.id, services: spec.services, kind: kind)))
                }
            default:
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
        var taken = Set(holders.keys)
        var result: [ServiceRequest] = []
        for request in queue {
            guard request.sequence <= through else { break }
            if setAside(request) { continue }
            if request.services.allSatisfy({ !taken.contains($0) }) { result.append(request) }
            taken.formUnion(request.services)
        }
        return result
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

extension LogState {
    /// Decides the lease queue's commands, which need every migration's view.
    func decideServiceLeases(_ command: ServiceLeaseCommand, now: Instant) -> Decision {
        guard let migration = migrations[command.migration] else {
            // Not in the live state: unknown, or settled holding nothing (a migration leaves only then).
            switch command {
            case .grant(_, let node, _): return .rejected(.noServiceLeaseRequest(node))
            case .forceRelease(_, let node, _), .yieldToFreeze(_, let node): return .rejected(.servicesNotHeld(node))
            }
        }
        let id = migration.id
        switch command {
        case .grant(_, let node, let through):
            guard let state = migration.node(node), let spec = migration.plan.node(node) else { return .rejected(.unknownNode(node)) }
            if migration.status.isSettled { return .rejected(.migrationSettled(id, status: migration.status)) }
            guard state.serviceLeases.isRequested else { return .rejected(.noServiceLeaseRequest(node)) }
            if case .requested(.forward, _) = state.serviceLeases, let hold = forwardHold(node, of: migration, at: now) {
                return .rejected(hold.rejection(of: node))
            }
            guard grantableServiceRequests(through: through, at: now).contains(where: { $0.migration == id && $0.node == node }) else {
                return .rejected(.waitingForServices(node, waits: serviceLeases.waits(migration: id, node: node, services: spec.services)))
            }
            return .accepted(migration.withServiceLeaseBookkeeping([.serviceLeasesGranted(ServiceLeasesGranted(
                node: node, services: spec.services, at: now))]))
        case .yieldToFreeze(_, let node):
            guard let state = migration.node(node), let spec = migration.plan.node(node) else { return .rejected(.unknownNode(node)) }
            guard state.serviceLeases.isHeld else { return .rejected(.servicesNotHeld(node)) }
            guard let hold = forwardHold(node, of: migration, at: now), migration.status == .running, migration.yieldsToFreeze(node) else {
                return .rejected(.invalidArgument("node \(node) keeps its services: no freeze or closed window holds it, or it has started transitioning them"))
            }
            var after = migration
            let released = MigrationEvent.serviceLeasesReleased(ServiceLeasesReleased(
                node: node, services: spec.services, reason: hold.yieldReason, forced: false))
            after.evolve(released)
            return .accepted([released] + after.serviceLeaseBookkeeping())
        case .forceRelease(_, let node, let reason):
            if let problem = MigrationState.validateReason(reason) { return .rejected(.invalidArgument(problem)) }
            if reason.isEmpty { return .rejected(.invalidArgument("a forced release needs a reason saying why")) }
            guard let state = migration.node(node), let spec = migration.plan.node(node) else { return .rejected(.unknownNode(node)) }
            guard state.serviceLeases.isHeld else { return .rejected(.servicesNotHeld(node)) }
            if let lease = state.lease {
                return .rejected(.serviceLeaseInUse(node, token: lease.token, expiresAt: lease.expiresAt))
            }
            var after = migration
            let released = MigrationEvent.serviceLeasesReleased(ServiceLeasesReleased(node: node, services: spec.services, reason: reason, forced: true))
            after.evolve(released)
            // A node of a live migration that still wants its services goes to the back of the line.
            return .accepted([released] + (migration.status.isSettled ? [] : after.serviceLeaseBookkeeping()))
        }
    }

    /// Hand-over: when the events release services and, in the same append, request them for another
    /// node of the same migration, and nobody else is in line for any of them, the grant goes into the
    /// same append. The services pass from one node to the next without ever being free, so no grant
    /// elsewhere can race with it; anyone already waiting is served first through the lease queue.
    func handOver(_ decision: Decision, migration id: MigrationID, now: Instant) -> Decision {
        guard case .accepted(let events) = decision else { return decision }
        var released = Set<String>()
        for case .serviceLeasesReleased(let event) in events where !event.forced { released.formUnion(event.services) }
        guard !released.isEmpty else { return decision }
        // Services somebody is in line for: those of the queue, then of each request of this append in
        // its order (granted or not), so a hand-over never jumps an earlier request.
        var inLine = Set(serviceLeases.queue.flatMap(\.services))
        var grants: [MigrationEvent] = []
        for case .serviceLeasesRequested(let request) in events {
            defer { inLine.formUnion(request.services) }
            guard request.services.allSatisfy(released.contains), !request.services.contains(where: inLine.contains) else { continue }
            // A forward step under a freeze or outside its windows does not take services it may not use
            // (the lease queue grants them when the hold ends).
            if request.kind == .forward, let migration = migrations[id], isForwardHeld(request.node, of: migration, at: now) { continue }
            released.subtract(request.services)
            grants.append(.serviceLeasesGranted(ServiceLeasesGranted(node: request.node, services: request.services, at: now)))
        }
        return grants.isEmpty ? decision : .accepted(events + grants)
    }

    /// The service-lease requests the lease queue may grant at `now` (see `ServiceLeaseIndex.grantable`):
    /// a forward step's request under a freeze or outside its windows is set aside, so neither ever holds
    /// up a rollback (or anybody else).
    public func grantableServiceRequests(through: UInt64, at now: Instant) -> [ServiceRequest] {
        // The freezes in force, found once per call (not per request).
        let inForce = freezes.values.filter { $0.isActive(at: now) }
        return serviceLeases.grantable(through: through) { request in
            guard request.kind == .forward, let migration = migrations[request.migration] else { return false }
            if !inForce.isEmpty, let services = Self.freezable(request.node, of: migration), inForce.contains(where: { $0.covers(services) }) { return true }
            return migration.windowsClosed(request.node, at: now)
        }
    }

    /// Holders a freeze or a closed window holds back that have not started transitioning their services,
    /// in service order: what the coordinator makes give their services back (`ServiceLeaseCommand.yieldToFreeze`).
    public func holdersToYield(at now: Instant) -> [ServiceHolder] {
        var seen = Set<String>()
        return serviceLeases.holdersInOrder.compactMap { _, holder in
            guard seen.insert("\(holder.migration.rawValue)/\(holder.node.rawValue)").inserted, let migration = migrations[holder.migration],
                  migration.status == .running, !freezes.isEmpty || migration.plan.hasWindows, migration.yieldsToFreeze(holder.node),
                  isForwardHeld(holder.node, of: migration, at: now) else { return nil }
            return holder
        }
    }

    /// The holder of service `name`, if any.
    public func holder(ofService name: String) -> ServiceHolder? { serviceLeases.holders[name] }

    /// The step agents of `service` may lease at `now`, if any, with its node's spec: a ready node
    /// holding its services (forward), or the head of an aborting migration's rollback queue. A node
    /// belongs to the service it names first. Also the end of that node's retry backoff when it ends after `now` (nothing
    /// signals its end, so a parked poll wakes for it), or of the freeze holding its forward step back.
    ///
    /// A step runs only while its node holds all its services, and a service has one holder at most:
    /// the holder of `service` is the only node that can have a step for it. So this costs the same
    /// however many migrations the log holds. (A node between retries keeps its services; one that
    /// lost them gets a step only after a grant, which is a change like any other.)
    public func step(forService service: String, at now: Instant) -> (step: (MigrationID, NodeID, NodeSpec)?, nextRetry: Instant?) {
        guard let holder = holder(ofService: service), let migration = migrations[holder.migration],
              migration.status == .running || migration.status == .aborting,
              let spec = migration.plan.node(holder.node), spec.services.first == service,
              let node = migration.node(holder.node) else { return (nil, nil) }
        let nextRetry = node.retryAt.flatMap { $0 > now ? $0 : nil }
        guard node.serviceLeases.isHeld, node.lease == nil else { return (nil, nextRetry) }
        // A forward step under a freeze waits for the freeze's end (nil when open-ended: its end is a
        // change), one outside its windows for them to open.
        if migration.status == .running, let hold = forwardHold(node.id, of: migration, at: now) {
            return (nil, [nextRetry, hold.until].compactMap { $0 }.min())
        }
        // A failed check blocks it until the check runs again.
        if migration.status == .running, let block = migration.checkBlock(node.id, at: now) {
            return (nil, [nextRetry, block.recheckAt].compactMap { $0 }.min())
        }
        // A failed check before its rollback blocks the rollback until the check runs again.
        if migration.status == .aborting, let block = migration.checkBlock(node.id, at: now, before: .rollback) {
            return (nil, [nextRetry, block.recheckAt].compactMap { $0 }.min())
        }
        let ready = switch migration.status {
        case .running: migration.isReady(node.id, at: now)
        case .aborting: migration.rollbackQueue.first == node.id && (node.retryAt.map { $0 <= now } ?? true)
        default: false
        }
        return (ready ? (migration.id, node.id, spec) : nil, nextRetry)
    }

    /// What node `node` of migration `id` waits for, when it wants its services and does not hold them.
    public func serviceWaits(migration id: MigrationID, node: NodeID) -> [ServiceWait] {
        guard let migration = migrations[id], let state = migration.node(node), !state.serviceLeases.isHeld,
              migration.wantsServices(node) != nil, let spec = migration.plan.node(node) else { return [] }
        return serviceLeases.waits(migration: id, node: node, services: spec.services)
    }
}
