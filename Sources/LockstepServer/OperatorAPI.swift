import LockstepCore
import LockstepEngine
import LockstepPlan
import LockstepWire

/// The operator side of the API, independent of transport: apply plans and start migrations.
public struct OperatorAPI: Sendable {
    let coordinator: Coordinator
    let clock: @Sendable () -> Instant
    /// Where generated migration ids get their suffix (the server's randomness; never the core's).
    let randomSuffix: @Sendable () -> String

    public func applyPlan(_ request: Lockstep_V1_ApplyPlanRequest, principal: Principal) async throws(APIError) -> Lockstep_V1_ApplyPlanResponse {
        try principal.require(.operator, to: "apply plans")
        let load = PlanFile.lint(yaml: request.planYaml)
        guard load.errors.isEmpty, let plan = load.plan else {
            let findings = load.errors.prefix(10).map { "line \($0.line): \($0.code): \($0.message)" }.joined(separator: "; ")
            throw APIError(.badRequest, code: "invalid_plan", "the plan has \(load.errors.count) lint error(s), nothing was applied: \(findings)")
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

    public func startMigration(_ request: Lockstep_V1_StartMigrationRequest, principal: Principal) async throws(APIError) -> Lockstep_V1_StartMigrationResponse {
        try principal.require(.operator, to: "start migrations")
        if request.plan.isEmpty { throw APIError.invalid("plan is required") }
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
}
