import LockstepCore
import LockstepEngine
import LockstepStore
import LockstepWire

// What an agent reports on the step it holds (heartbeat, progress, completion, failure), and how a
// report finds its lease and is checked against the principal's services.
extension AgentAPI {
    // A report on a live migration's node that is the principal's is checked and performed in one turn
    // of the coordinator (one hop); anything else (a settled or unknown migration, another service's node)
    // is checked the slow way (`lease`), which says why, and then performed.

    public func heartbeat(_ request: Lockstep_V1_HeartbeatRequest, principal: Principal) async throws(APIError) -> Lockstep_V1_HeartbeatResponse {
        guard leadershipHeld() else {
            throw APIError(.notWriter, "this coordinator's leadership lease has run out (another may have taken over): heartbeat the writer")
        }
        let token = FencingToken(request.fencingToken)
        let answer = try await reporting(request.leaseID, principal) { migration, node, permitted throws(CommandError) in
            try await coordinator.heartbeat(migration: migration, node: node, token: token, by: principal.name, now: clock(), ifPermitted: permitted)
        } checked: { migration, node throws(CommandError) in
            try await coordinator.heartbeat(migration: migration, node: node, token: token, by: principal.name, now: clock())
        }
        return .with {
            $0.ttlMs = UInt32(clamping: answer.ttlMillis)
            if let stop = answer.stop {
                $0.stop = true
                $0.stopReason = stop
            }
        }
    }

    public func reportProgress(_ request: Lockstep_V1_ReportProgressRequest, principal: Principal) async throws(APIError) -> Lockstep_V1_ReportProgressResponse {
        guard request.percent <= 100 else {
            // Who may report is said first, as for every report.
            _ = try await lease(request.leaseID, principal: principal)
            throw APIError.invalid("percent is \(request.percent); it must be 0...100")
        }
        try await report(request.leaseID, principal) { node in
            .reportProgress(node: node, token: FencingToken(request.fencingToken), percent: UInt8(request.percent), message: request.message, by: principal.name)
        }
        return .init()
    }

    public func complete(_ request: Lockstep_V1_CompleteRequest, principal: Principal) async throws(APIError) -> Lockstep_V1_CompleteResponse {
        let check = request.hasCheck ? try Self.checkReport(request.check) : nil
        try await report(request.leaseID, principal) { node in
            .completeStep(node: node, token: FencingToken(request.fencingToken), by: principal.name, check: check)
        }
        return .init()
    }

    /// A check's result as the core takes it: the value converted once to millionths (refused when it is
    /// not a finite number within range), the evidence within its byte limit.
    static func checkReport(_ result: Lockstep_V1_CheckResult) throws(APIError) -> CheckReport {
        var micros: Int64?
        if result.hasValue {
            guard let value = MetricSample.micros(result.value) else {
                throw APIError(.rejected(.invalidArgument("check value \(result.value) is not a finite number within ±\(MetricSample.decimal(CoreLimits.metricMicrosMagnitudeMax))")))
            }
            micros = value
        }
        guard result.evidence.utf8.count <= CoreLimits.reasonBytesMax else {
            throw APIError(.rejected(.invalidArgument("check evidence is \(result.evidence.utf8.count) bytes; the limit is \(CoreLimits.reasonBytesMax) bytes")))
        }
        return CheckReport(ok: result.ok, valueMicros: micros, evidence: result.evidence)
    }

    public func fail(_ request: Lockstep_V1_FailRequest, principal: Principal) async throws(APIError) -> Lockstep_V1_FailResponse {
        let result = try await report(request.leaseID, principal) { node in
            .failStep(node: node, token: FencingToken(request.fencingToken), reason: request.reason, retryable: request.retryable, by: principal.name,
                      stopped: request.stopped)
        }
        let retries = result.events.contains { if case .stepFailed(let failed) = $0.event { failed.retryAt != nil } else { false } }
        return .with { $0.willRetry = retries }
    }

    /// A report on the step `leaseID` names: in one turn when the migration is live and the node the
    /// principal's, else checked the slow way first.
    @discardableResult
    private func report(_ leaseID: String, _ principal: Principal, _ command: @Sendable (NodeID) -> MigrationCommand) async throws(APIError) -> CommandResult {
        let context = CommandContext(actor: principal.agentActor, triggeredBy: .agent)
        return try await reporting(leaseID, principal) { migration, node, permitted throws(CommandError) in
            try await coordinator.execute(command(node), migration: migration, node: node, context: context, now: clock(), ifPermitted: permitted)
        } checked: { migration, node throws(CommandError) in
            try await coordinator.execute(command(node), migration: migration, context: context, now: clock())
        }
    }

    /// The one way of every report: `inOneTurn` (the coordinator checks `permitted` and acts in the same
    /// turn; nil when it did not act), else the slow check (`checkLease`, which says why), then `checked`.
    private func reporting<T>(_ leaseID: String, _ principal: Principal,
                              inOneTurn: (MigrationID, NodeID, _ permitted: @escaping @Sendable (NodeSpec) -> Bool) async throws(CommandError) -> T?,
                              checked: (MigrationID, NodeID) async throws(CommandError) -> T) async throws(APIError) -> T {
        let (migration, node) = try Self.leaseParts(leaseID)
        let permitted: @Sendable (NodeSpec) -> Bool = { principal.mayReport(on: $0) }
        if let done = try await Self.commanding({ () throws(CommandError) in try await inOneTurn(migration, node, permitted) }) { return done }
        try await checkLease(migration, node, principal: principal)
        return try await Self.commanding { () throws(CommandError) in try await checked(migration, node) }
    }

    /// A coordinator call whose refusal or failure becomes the API's error.
    private static func commanding<T>(_ body: () async throws(CommandError) -> T) async throws(APIError) -> T {
        do { return try await body() } catch { throw APIError(error) }
    }

    /// The step a lease id names ("MIGRATION/NODE"), checked against the principal's services.
    private func lease(_ id: String, principal: Principal) async throws(APIError) -> (MigrationID, NodeID) {
        let (migration, node) = try Self.leaseParts(id)
        try await checkLease(migration, node, principal: principal)
        return (migration, node)
    }

    /// The migration and node a lease id names ("MIGRATION/NODE"), both checked as identifiers.
    private static func leaseParts(_ id: String) throws(APIError) -> (MigrationID, NodeID) {
        let parts = id.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else {
            throw APIError.invalid("lease_id \"\(id.prefix(300))\" is not MIGRATION/NODE")
        }
        try APIError.checkIdentifier(String(parts[0]), "lease_id's migration")
        try APIError.checkIdentifier(String(parts[1]), "lease_id's node")
        return (MigrationID(String(parts[0])), NodeID(String(parts[1])))
    }

    /// Whether the principal may report on node `node` of migration `migration`, settled migrations
    /// included (read from their streams): a report that comes after the migration settled is answered
    /// migration_settled, as any command to it.
    private func checkLease(_ migration: MigrationID, _ node: NodeID, principal: Principal) async throws(APIError) {
        // (An archived migration reads as a missing one: an agent learns nothing of either.)
        let found = try await APIError.reading { () throws(EventLogError) in try await coordinator.readMigration(migration) }
        let spec = found?.plan.node(node)
        // A missing migration or node reads the same as another service's: agents cannot probe.
        guard let spec, principal.mayReport(on: spec) else {
            if principal.roles.contains(.admin) {
                guard found != nil else { throw APIError(.rejected(.migrationNotFound(migration))) }
                throw APIError(.rejected(.unknownNode(node)))
            }
            throw principal.notItsNode(migration, node)
        }
    }
}
