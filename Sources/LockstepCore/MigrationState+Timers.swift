/// What the engine's timers ask of a migration: when its next deadline or step timeout falls, and what
/// has passed at a given instant. Pure queries over the state; the commands they lead to are decided in
/// Decide.swift.
extension MigrationState {
    /// A sentence naming the first deadline (the migration's, then nodes' in plan order) passed at `now`.
    func passedDeadline(at now: Instant) -> String? {
        if let millis = plan.deadlineMillis, startedAt.adding(milliseconds: millis) <= now {
            return "the migration's deadline passed at \(startedAt.adding(milliseconds: millis))"
        }
        for spec in plan.nodes {
            guard let millis = spec.deadlineMillis, startedAt.adding(milliseconds: millis) <= now,
                  let state = node(spec.id), state.status != .succeeded else { continue }
            return "node \(spec.id)'s deadline passed at \(startedAt.adding(milliseconds: millis))"
        }
        return nil
    }

    /// Each running step whose node sets a `start_to_close`, in plan order: its lease's token, the limit,
    /// and the instant it passes it (measured from the lease's recorded grant time).
    var startToCloseDeadlines: [(node: NodeID, token: FencingToken, limitMillis: Int64, at: Instant)] {
        guard !status.isSettled else { return [] }
        var deadlines: [(node: NodeID, token: FencingToken, limitMillis: Int64, at: Instant)] = []
        // Only the nodes whose spec sets one (the plan keeps their indices): this runs after every append.
        for spec in plan.nodesWithStartToClose {
            let id = plan.nodes[spec].id
            guard let limit = plan.nodes[spec].timeouts.startToCloseMillis, let index = nodeIndex(id, hint: spec),
                  let lease = nodes[index].lease else { continue }
            deadlines.append((id, lease.token, limit, lease.grantedAt.adding(milliseconds: limit)))
        }
        return deadlines
    }

    /// The earliest instant at which a running step passes its node's `start_to_close` (`timeOutStep`),
    /// for the engine's timer.
    public var nextStepTimeout: Instant? { startToCloseDeadlines.map(\.at).min() }

    /// The running steps past their `start_to_close` at `now`, in plan order: (node, token).
    public func stepsPastStartToClose(at now: Instant) -> [(node: NodeID, token: FencingToken)] {
        startToCloseDeadlines.filter { $0.at <= now }.map { ($0.node, $0.token) }
    }

    /// A duration in milliseconds as a plan would write it: "90s", "30m", "2h", "1500ms".
    static func durationText(_ millis: Int64) -> String {
        for (unit, size) in [("d", Int64(86_400_000)), ("h", 3_600_000), ("m", 60_000), ("s", 1_000)] where millis % size == 0 && millis >= size {
            return "\(millis / size)\(unit)"
        }
        return "\(millis)ms"
    }

    /// The next instant at which `enforceDeadlines` would act, for the engine's timer.
    public var nextDeadline: Instant? {
        guard status == .running || status == .paused else { return nil }
        var earliest = plan.deadlineMillis.map { startedAt.adding(milliseconds: $0) }
        // Only the nodes with a deadline (the plan keeps their indices): this runs after every append.
        for index in plan.nodesWithDeadline {
            guard let millis = plan.nodes[index].deadlineMillis else { continue }
            guard nodeIndex(plan.nodes[index].id, hint: index).map({ nodes[$0].status }) != .succeeded else { continue }
            let at = startedAt.adding(milliseconds: millis)
            earliest = min(earliest ?? at, at)
        }
        return earliest
    }
}
