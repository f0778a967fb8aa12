// The lease queue's decisions and reads over every migration (the rules are in ServiceLeases.swift):
// grants, forced releases and yields, the hand-over within one append, what may be granted at an
// instant (requests a freeze or closed windows hold are set aside), and the step a service's agents
// may lease.

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
            guard isServiceRequestGrantable(migration: id, node: node, through: through, at: now) else {
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
        // Services somebody is in line for: those of the lines, then of each request of this append in
        // its order (granted or not), so a hand-over never jumps an earlier request. Looked for only for
        // a request the release could serve.
        var earlier: [String] = []
        var grants: [MigrationEvent] = []
        for case .serviceLeasesRequested(let request) in events {
            defer { earlier.append(contentsOf: request.services) }
            guard request.services.allSatisfy(released.contains), !request.services.contains(where: earlier.contains),
                  !serviceLeases.hasRequests(forAnyOf: request.services) else { continue }
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
        serviceLeases.grantable(through: through, setAside: grantSetAside(at: now))
    }

    /// Whether `node` of `migration`'s request is among `grantableServiceRequests(through:at:)`.
    func isServiceRequestGrantable(migration: MigrationID, node: NodeID, through: UInt64, at now: Instant) -> Bool {
        serviceLeases.isGrantable(migration: migration, node: node, through: through, setAside: grantSetAside(at: now))
    }

    /// Which requests the lease queue sets aside at `now`: forward steps under a freeze or outside their windows.
    private func grantSetAside(at now: Instant) -> (ServiceRequest) -> Bool {
        // A freeze through the index by service (`freeze(covering:at:)`), not a walk over every freeze
        // in force and its services per request asked.
        let anyFreeze = !freezes.isEmpty
        return { request in
            guard request.kind == .forward, let migration = migrations[request.migration] else { return false }
            if anyFreeze, let services = Self.freezable(request.node, of: migration), freeze(covering: services, at: now) != nil { return true }
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
        guard let (migration, spec, node) = stepHolder(ofService: service) else { return (nil, nil) }
        let nextRetry = node.retryAt.flatMap { $0 > now ? $0 : nil }
        guard Self.takesSteps(node) else { return (nil, nextRetry) }
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

    /// The step lease that poll `pollID` of `agent` (principal `holder`) took on `service`'s step, if it
    /// is still running: what the same poll sent again, after its answer was lost, gets back (nil: no
    /// such lease, or no name, or its step was asked to stop). As recorded, with the attempt it runs. Its
    /// migration may be paused (a step leased before the pause runs on).
    public func leaseTaken(forService service: String, agent: String, holder: String, pollID: String)
        -> (migration: MigrationID, node: NodeID, spec: NodeSpec, lease: StepLeased)? {
        guard !pollID.isEmpty, let (migration, spec, node) = firstServiceHolder(of: service), let lease = node.lease,
              lease.pollID == pollID, lease.agent == agent, lease.holder == holder, migration.stopRequested(node.id, token: lease.token) == nil else { return nil }
        let attempt = switch lease.kind {
        case .forward: node.attempts
        case .rollback: node.rollbackAttempts
        case .check: UInt32(1)
        }
        return (migration.id, node.id, spec, StepLeased(node: node.id, attempt: attempt, token: lease.token, agent: lease.agent, grantedAt: lease.grantedAt,
                                                        expiresAt: lease.expiresAt, kind: lease.kind, holder: lease.holder, check: lease.check,
                                                        pollID: lease.pollID))
    }

    /// The node holding `service` that `step(forService:at:)` looks at: its migration runs or aborts,
    /// and `service` is the node's first.
    private func stepHolder(ofService service: String) -> (MigrationState, NodeSpec, NodeState)? {
        guard let found = firstServiceHolder(of: service), Self.leasesSteps(found.0) else { return nil }
        return found
    }

    /// Whether `migration` leases steps at all: it runs or aborts.
    private static func leasesSteps(_ migration: MigrationState) -> Bool {
        migration.status == .running || migration.status == .aborting
    }

    /// The node holding `service` when `service` is the node's first (whose agents run its steps), with
    /// its migration (in any live status) and spec.
    private func firstServiceHolder(of service: String) -> (MigrationState, NodeSpec, NodeState)? {
        guard let holder = holder(ofService: service), let migration = migrations[holder.migration],
              let index = migration.plan.nodeIndex(holder.node), migration.plan.nodes[index].services.first == service,
              let nodeIndex = migration.nodeIndex(holder.node, hint: index) else { return nil }
        return (migration, migration.plan.nodes[index], migration.nodes[nodeIndex])
    }

    /// Whether the node holding a service for a step can have one: it holds all its services and has no
    /// step leased.
    private static func takesSteps(_ node: NodeState) -> Bool {
        node.serviceLeases.isHeld && node.lease == nil
    }

    /// Whether `step(forService:at:)` can find a step for `service` at any time before the log changes:
    /// false when no node holds the service for a step, or its node waits for a grant, or already has a
    /// step leased. Those end only with an append, which is a change (the time alone never ends them),
    /// so a poll of such a service has nothing to lease until the change that wakes it. (A retry
    /// backoff, a freeze, a window, a failed check end with the time: those services stay true.)
    public func mayHaveStep(forService service: String) -> Bool {
        guard let (_, _, node) = stepHolder(ofService: service) else { return false }
        return Self.takesSteps(node)
    }

    /// What `StepServices` publishes for `service` after each append, found with one look-up of the
    /// holder: `mayHaveStep(forService:)` (which the simulations keep as the oracle), and the name of the
    /// poll that took the step lease running at the node holding `service` for steps (`StepLeased.pollID`;
    /// nil when that node has no lease or an unnamed one). `leaseTaken` finds a lease only there, so a
    /// named poll whose name this is not has no lease to get back.
    public func stepsAndLeaseName(ofService service: String) -> (mayHaveStep: Bool, leasePollID: String?) {
        guard let (migration, _, node) = firstServiceHolder(of: service) else { return (false, nil) }
        let named = node.lease.flatMap { $0.pollID.isEmpty ? nil : $0.pollID }
        return (Self.leasesSteps(migration) && Self.takesSteps(node), named)
    }

    /// What node `node` of migration `id` waits for, when it wants its services and does not hold them.
    public func serviceWaits(migration id: MigrationID, node: NodeID) -> [ServiceWait] {
        guard let migration = migrations[id], let state = migration.node(node), !state.serviceLeases.isHeld,
              migration.wantsServices(node) != nil, let spec = migration.plan.node(node) else { return [] }
        return serviceLeases.waits(migration: id, node: node, services: spec.services)
    }
}
