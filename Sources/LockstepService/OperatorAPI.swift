import LockstepCore
import LockstepEngine
import LockstepStore
import LockstepPlan
import LockstepWire

/// The operator side of the API, independent of transport: apply plans and start migrations.
public struct OperatorAPI: Sendable {
    package let coordinator: Coordinator
    package let clock: @Sendable () -> Instant
    /// Where generated migration ids get their suffix (the server's randomness; never the core's).
    package let randomSuffix: @Sendable () -> String
    /// The webhooks this server delivers to (by name) and their recent deliveries (docs/webhooks.md).
    package var webhooks: (names: [String], deliveries: WebhookDeliveryLog)?
    /// The console's one-time sign-in codes, and the address its links start with (`…/ui`), or why there
    /// is none a browser could open (docs/console.md).
    package var consoleLinks: (codes: ConsoleLinks, address: @Sendable () throws(APIError) -> String) = (ConsoleLinks(), { () throws(APIError) -> String in
        throw APIError(.unavailable, "this coordinator serves no console")
    })

    public func applyPlan(_ request: Lockstep_V1_ApplyPlanRequest, principal: Principal) async throws(APIError) -> Lockstep_V1_ApplyPlanResponse {
        let load = PlanFile.lint(yaml: request.planYaml)
        guard load.errors.isEmpty, let plan = load.plan else {
            let findings = load.errors.prefix(10).map { "line \($0.line): \($0.code): \($0.message)" }.joined(separator: "; ")
            throw APIError(.invalidPlan, "the plan has \(load.errorCount) lint error(s), nothing was applied: \(findings)")
        }
        let applied: (version: UInt64, changed: Bool)
        do {
            applied = try await coordinator.applyPlan(plan, context: CommandContext(actor: principal.userActor, triggeredBy: .user), now: clock())
        } catch {
            throw APIError(error)
        }
        let hash = await coordinator.state.plan(plan.name, version: applied.version)?.contentHash ?? ""
        return .with {
            $0.name = plan.name
            $0.version = applied.version
            $0.contentHash = hash
            $0.changed = applied.changed
        }
    }

    /// Lints a plan file's text and says what is wrong where, applying nothing (operators and readers).
    public func validatePlan(_ request: Lockstep_V1_ApplyPlanRequest, principal: Principal) async throws(APIError) -> Lockstep_V1_ValidatePlanResponse {
        let load = PlanFile.lint(yaml: request.planYaml)
        return .with {
            $0.valid = load.errors.isEmpty && load.plan != nil
            $0.findings = load.findings.map { finding in
                .with {
                    $0.line = UInt32(clamping: finding.line)
                    $0.severity = finding.severity.rawValue
                    $0.code = finding.code
                    $0.message = finding.message
                }
            }
            if let plan = load.plan {
                $0.name = plan.name
                $0.contentHash = plan.hashed().contentHash
            }
        }
    }

    /// Applied plans by name, each with its versions oldest first.
    public func listPlans(_ request: Lockstep_V1_ListPlansRequest, principal: Principal) async throws(APIError) -> Lockstep_V1_ListPlansResponse {
        let state = await coordinator.state
        return .with { $0.plans = state.appliedPlanViews }
    }

    public func startMigration(_ request: Lockstep_V1_StartMigrationRequest, principal: Principal) async throws(APIError) -> Lockstep_V1_StartMigrationResponse {
        try APIError.checkIdentifier(request.plan, "plan")
        if !request.migrationID.isEmpty { try APIError.checkIdentifier(request.migrationID, "migration_id") }
        let id = MigrationID(request.migrationID.isEmpty ? "\(request.plan)-\(randomSuffix())" : request.migrationID)
        let result: CommandResult
        do {
            result = try await coordinator.startMigration(id, plan: request.plan, version: request.version == 0 ? nil : request.version,
                                                          context: CommandContext(actor: principal.userActor, triggeredBy: .user), now: clock())
        } catch {
            throw APIError(error)
        }
        var version: UInt64 = 0
        if case .migrationStarted(let started) = result.events.first?.event { version = started.plan.version }
        return .with {
            $0.migrationID = id.rawValue
            $0.planVersion = version
        }
    }

    // MARK: - Reading

    /// Who may read migrations: not agents (they see only their own steps, through polls).
    package static let readers: Set<Principal.Role> = [.operator, .approver, .auditor]

    /// Most migrations in one page, and the default.
    public static let pageSizeMax = 1_000
    public static let pageSizeDefault = 100

    public func getMigration(_ request: Lockstep_V1_GetMigrationRequest, principal: Principal) async throws(APIError) -> Lockstep_V1_Migration {
        try APIError.checkIdentifier(request.migrationID, "migration_id")
        let id = MigrationID(request.migrationID)
        // Settled ones too: they have left the live state, and are read from their streams.
        // (Readers only: an archived one says where its events went.)
        guard let migration = try await APIError.reading({ () throws(EventLogError) in try await coordinator.readMigrationSayingArchived(id) }) else {
            throw APIError(.rejected(.migrationNotFound(id)))
        }
        return Lockstep_V1_Migration(migration, in: await coordinator.state, at: clock())
    }

    public func listMigrations(_ request: Lockstep_V1_ListMigrationsRequest, principal: Principal) async throws(APIError) -> Lockstep_V1_ListMigrationsResponse {
        let size = request.pageSize == 0 ? Self.pageSizeDefault : min(Int(request.pageSize), Self.pageSizeMax)
        if !request.pageToken.isEmpty { try APIError.checkIdentifier(request.pageToken, "page_token") }
        // Every migration that ever started, settled ones included (read from the log: they have left
        // the live state), in id order.
        let (page, state) = try await APIError.reading { () throws(EventLogError) in
            try await coordinator.listMigrations(after: MigrationID(request.pageToken), limit: size + 1)
        }
        let shown = Array(page.prefix(size))
        return .with {
            let now = clock()
            $0.migrations = shown.map { Lockstep_V1_Migration($0, in: state, at: now) }
            $0.nextPageToken = page.count > size ? (shown.last?.id.rawValue ?? "") : ""
        }
    }

    /// Every held service (by name) with its holder and the step running under it, then the requests
    /// waiting in line, first in line first.
    public func listServiceLeases(_ request: Lockstep_V1_ListServiceLeasesRequest, principal: Principal) async throws(APIError) -> Lockstep_V1_ListServiceLeasesResponse {
        let state = await coordinator.state
        return .with {
            $0.held = state.heldServiceViews
            $0.waiting = state.serviceQueueViews
        }
    }

    /// A metric sample for the current bake of an exposure node: from an agent of the node's service,
    /// or an operator. The value becomes a fixed-point number in millionths.
    public func recordMetric(_ request: Lockstep_V1_RecordMetricRequest, principal: Principal) async throws(APIError) -> Lockstep_V1_RecordMetricResponse {
        // (The gate let operators and agents in; an agent may sample only its services' nodes.)
        let operates = principal.roles.contains(.operator) || principal.roles.contains(.admin)
        try APIError.checkIdentifier(request.migrationID, "migration_id")
        try APIError.checkIdentifier(request.nodeID, "node_id")
        let id = MigrationID(request.migrationID)
        let node = NodeID(request.nodeID)
        let migration = try await APIError.reading { () throws(EventLogError) in try await coordinator.readMigration(id) }
        let spec = migration?.plan.node(node)
        if !operates {
            // An agent learns nothing about nodes of other services: a missing one reads the same.
            guard let spec, principal.mayAct(forService: spec.stepService) else { throw principal.notItsNode(id, node) }
        }
        guard migration != nil else { throw APIError(.rejected(.migrationNotFound(id))) }
        guard spec != nil else { throw APIError(.rejected(.unknownNode(node))) }
        guard let cohort = SampleCohort(wire: request.cohort) else {
            throw APIError.invalid("cohort must be canary (the default) or baseline")
        }
        guard let micros = MetricSample.micros(request.value) else {
            throw APIError.invalid("value \(request.value) is not a finite number within ±\(CoreLimits.metricMicrosMagnitudeMax / 1_000_000)")
        }
        for (field, value) in [("window_start_ms", request.windowStartMs), ("window_end_ms", request.windowEndMs)]
        where !(0...CoreLimits.instantMillisMax).contains(value) {
            throw APIError.invalid("\(field) is \(value); it must be 0 (now) or a time in ms since 1970 up to \(CoreLimits.instantMillisMax) (year 9999)")
        }
        let now = clock()
        let sample = MetricSample(
            name: request.name, valueMicros: micros,
            windowStart: Instant(millisecondsSinceEpoch: request.windowStartMs == 0 ? now.millisecondsSinceEpoch : request.windowStartMs),
            windowEnd: Instant(millisecondsSinceEpoch: request.windowEndMs == 0 ? now.millisecondsSinceEpoch : request.windowEndMs),
            source: request.source, cohort: cohort)
        let actor = principal.roles.contains(.agent) && !principal.roles.contains(.operator) ? principal.agentActor : principal.userActor
        do {
            _ = try await coordinator.execute(.recordMetric(node: node, sample: sample), migration: id,
                                              context: CommandContext(actor: actor, triggeredBy: .metric), now: now)
        } catch {
            throw APIError(error)
        }
        let after = await coordinator.migration(id)?.node(node)?.exposure
        return .with {
            $0.stage = after?.reached ?? 0
            $0.samples = UInt32(after?.samples.count ?? 0)
        }
    }

    // MARK: - Changing

    public func pause(_ request: Lockstep_V1_PauseMigrationRequest, principal: Principal) async throws(APIError) -> Lockstep_V1_ChangeResponse {
        return try await change(.pause(reason: request.reason), request.migrationID, principal)
    }

    public func resume(_ request: Lockstep_V1_ResumeMigrationRequest, principal: Principal) async throws(APIError) -> Lockstep_V1_ChangeResponse {
        return try await change(.resume, request.migrationID, principal)
    }

    public func abort(_ request: Lockstep_V1_AbortMigrationRequest, principal: Principal) async throws(APIError) -> Lockstep_V1_ChangeResponse {
        if request.reason.isEmpty { throw APIError.invalid("an abort needs a reason: it is recorded with the abort") }
        return try await change(.abort(reason: request.reason), request.migrationID, principal)
    }

    public func approve(_ request: Lockstep_V1_GateDecisionRequest, principal: Principal) async throws(APIError) -> Lockstep_V1_ChangeResponse {
        try APIError.checkIdentifier(request.nodeID, "node_id")
        return try await change(.approve(node: NodeID(request.nodeID), approver: principal.name, groups: await groups(of: principal, for: request),
                                         comment: request.comment), request.migrationID, principal)
    }

    public func reject(_ request: Lockstep_V1_GateDecisionRequest, principal: Principal) async throws(APIError) -> Lockstep_V1_ChangeResponse {
        try APIError.checkIdentifier(request.nodeID, "node_id")
        return try await change(.reject(node: NodeID(request.nodeID), approver: principal.name, groups: await groups(of: principal, for: request),
                                        comment: request.comment), request.migrationID, principal)
    }

    /// The owner groups `principal` decides gates for: its configured ones; under `--dev`, whichever the gate asks for.
    private func groups(of principal: Principal, for request: Lockstep_V1_GateDecisionRequest) async -> [String] {
        guard principal.isDeveloper else { return principal.ownerGroups.sorted() }
        guard let plan = await coordinator.migration(MigrationID(request.migrationID))?.plan, let spec = plan.node(NodeID(request.nodeID)) else { return [] }
        return plan.approverGroups(for: spec).sorted()
    }

    public func releaseServiceLease(_ request: Lockstep_V1_ReleaseServiceLeaseRequest, principal: Principal) async throws(APIError) -> Lockstep_V1_ChangeResponse {
        try APIError.checkIdentifier(request.service, "service")
        let result: CommandResult
        do {
            result = try await coordinator.forceReleaseService(request.service, reason: request.reason,
                                                               context: CommandContext(actor: principal.userActor, triggeredBy: .user), now: clock())
        } catch {
            throw APIError(error)
        }
        return try await response(result)
    }

    func change(_ command: MigrationCommand, _ id: String, _ principal: Principal) async throws(APIError) -> Lockstep_V1_ChangeResponse {
        try APIError.checkIdentifier(id, "migration_id")
        let result: CommandResult
        do {
            result = try await coordinator.execute(command, migration: MigrationID(id), context: CommandContext(actor: principal.userActor, triggeredBy: .user),
                                                   now: clock())
        } catch {
            throw APIError(error)
        }
        return try await response(result)
    }

    private func response(_ result: CommandResult) async throws(APIError) -> Lockstep_V1_ChangeResponse {
        let id = result.events.first?.migration
        // A change that is not a migration's (a forced release) has no status: unspecified. A change
        // that settled its migration finds it in its stream.
        let status = if let id {
            try await APIError.reading { () throws(EventLogError) in try await coordinator.readMigration(id)?.status }
        } else { MigrationStatus?.none }
        return .with {
            $0.migrationID = id?.rawValue ?? ""
            $0.events = result.events.map(\.event.typeName)
            if let status { $0.status = Lockstep_V1_MigrationStatus(status) }
        }
    }

    package init(coordinator: Coordinator, clock: @escaping @Sendable () -> Instant, randomSuffix: @escaping @Sendable () -> String) {
        self.coordinator = coordinator
        self.clock = clock
        self.randomSuffix = randomSuffix
    }
}
