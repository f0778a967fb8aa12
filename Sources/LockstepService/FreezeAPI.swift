import LockstepCore
import LockstepEngine
import LockstepWire

// Freezes, stop-the-line and break-glass on the API (docs/gates.md). The core decides each; these
// check the request's shape and say what happened.
extension OperatorAPI {
    public func declareFreeze(_ request: Lockstep_V1_DeclareFreezeRequest, principal: Principal) async throws(APIError) -> Lockstep_V1_FreezeResponse {
        let now = clock()
        let id = try await freezeID(request.id, prefix: "freeze")
        let services = try Self.checkServices(request.services)
        if request.reason.isEmpty { throw APIError.invalid("a freeze needs a reason: it is recorded with the freeze") }
        guard request.fromMs >= 0, request.untilMs >= 0 else { throw APIError.invalid("from_ms and until_ms are milliseconds since 1970 (0: now, and until ended)") }
        let freeze = Freeze(id: id, services: services, from: request.fromMs == 0 ? now : Instant(millisecondsSinceEpoch: request.fromMs),
                            until: request.untilMs == 0 ? nil : Instant(millisecondsSinceEpoch: request.untilMs), reason: request.reason, declaredBy: "")
        let declared: Freeze
        do {
            declared = try await coordinator.declareFreeze(freeze, context: CommandContext(actor: principal.userActor, triggeredBy: .user), now: now)
        } catch {
            throw APIError(error)
        }
        return .with { $0.freeze = Lockstep_V1_FreezeInfo(declared, now: now) }
    }

    public func listFreezes(_ request: Lockstep_V1_ListFreezesRequest, principal: Principal) async throws(APIError) -> Lockstep_V1_ListFreezesResponse {
        let now = clock()
        let freezes = await coordinator.state.freezesInOrder
        return .with { $0.freezes = freezes.map { Lockstep_V1_FreezeInfo($0, now: now) } }
    }

    /// The most recent webhook deliveries, oldest first (docs/webhooks.md).
    public func listWebhookDeliveries(_ request: Lockstep_V1_ListWebhookDeliveriesRequest, principal: Principal) async throws(APIError)
        -> Lockstep_V1_ListWebhookDeliveriesResponse
    {
        var status: WebhookDelivery.Status?
        if !request.status.isEmpty {
            guard let parsed = WebhookDelivery.Status(rawValue: request.status) else {
                throw APIError.invalid("status must be pending, delivered or failed (or empty for any)")
            }
            status = parsed
        }
        if !request.webhook.isEmpty { try APIError.checkIdentifier(request.webhook, "webhook") }
        let limit = request.limit == 0 ? 100 : Int(min(request.limit, 1_000))
        guard let webhooks else { return .init() }
        let deliveries = webhooks.deliveries.recent(limit: limit, webhook: request.webhook, status: status)
        return .with {
            $0.webhooks = webhooks.names
            $0.deliveries = deliveries.map { delivery in
                .with {
                    $0.id = delivery.id
                    $0.webhook = delivery.webhook
                    $0.kind = delivery.kind
                    $0.sequence = delivery.sequence
                    $0.migrationID = delivery.migration
                    $0.nodeID = delivery.node
                    $0.status = delivery.status.rawValue
                    $0.attempts = UInt32(clamping: delivery.attempts)
                    $0.lastResult = delivery.lastResult
                    $0.lastAttemptAtMs = delivery.lastAttemptAt?.millisecondsSinceEpoch ?? 0
                    $0.nextAttemptAtMs = delivery.nextAttemptAt?.millisecondsSinceEpoch ?? 0
                }
            }
        }
    }

    public func endFreeze(_ request: Lockstep_V1_EndFreezeRequest, principal: Principal) async throws(APIError) -> Lockstep_V1_FreezeResponse {
        try APIError.checkIdentifier(request.id, "id")
        let now = clock()
        let end: Coordinator.FreezeEnd
        do {
            end = try await coordinator.endFreeze(request.id, reason: request.reason, context: CommandContext(actor: principal.userActor, triggeredBy: .user),
                                                  now: now)
        } catch {
            throw APIError(error)
        }
        return .with {
            $0.freeze = Lockstep_V1_FreezeInfo(end.freeze, now: now)
            $0.freeze.active = false
            $0.migrations = end.resumed.map(\.rawValue)
            $0.notResumed = end.notResumed.map { "\($0.migration): \($0.why)" }
        }
    }

    public func stopLine(_ request: Lockstep_V1_StopLineRequest, principal: Principal) async throws(APIError) -> Lockstep_V1_FreezeResponse {
        let id = try await freezeID(request.id, prefix: "line-stop")
        let services = try Self.checkServices(request.services)
        if request.reason.isEmpty { throw APIError.invalid("stopping the line needs a reason: it is recorded with the freeze and each pause") }
        let now = clock()
        let stop: Coordinator.LineStop
        do {
            stop = try await coordinator.stopTheLine(id: id, services: services, reason: request.reason,
                                                     context: CommandContext(actor: principal.userActor, triggeredBy: .user), now: now)
        } catch {
            throw APIError(error)
        }
        return .with {
            $0.freeze = Lockstep_V1_FreezeInfo(stop.freeze, now: now)
            $0.migrations = stop.paused.map(\.rawValue)
            $0.notPaused = stop.notPaused.map { "\($0.migration): \($0.why)" }
        }
    }

    /// Anyone with the operator role reaches the core, which refuses everyone but admins with
    /// `break_glass_not_admin` (so the refusal says exactly that).
    public func breakGlass(_ request: Lockstep_V1_BreakGlassRequest, principal: Principal) async throws(APIError) -> Lockstep_V1_ChangeResponse {
        try APIError.checkIdentifier(request.nodeID, "node_id")
        guard let scope = BreakGlassScope(rawValue: request.scope) else {
            throw APIError.invalid("scope must be one of \(BreakGlassScope.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        return try await change(.breakGlass(node: NodeID(request.nodeID), scope: scope, by: principal.name, admin: principal.roles.contains(.admin),
                                            justification: request.justification), request.migrationID, principal)
    }

    /// The id asked for (checked), or one made from the log's next sequence: unique within the log.
    private func freezeID(_ asked: String, prefix: String) async throws(APIError) -> String {
        if !asked.isEmpty {
            try APIError.checkIdentifier(asked, "id")
            return asked
        }
        // The log's next sequence, and randomness so two made at once differ.
        return "\(prefix)-\(await coordinator.state.lastSequence + 1)-\(randomSuffix())"
    }

    private static func checkServices(_ services: [String]) throws(APIError) -> [String] {
        guard services.count <= CoreLimits.freezeServicesMax else {
            throw APIError.invalid("\(services.count) services; a freeze names at most \(CoreLimits.freezeServicesMax) (none: every service)")
        }
        for service in services { try APIError.checkIdentifier(service, "services") }
        return services
    }
}

extension Lockstep_V1_FreezeInfo {
    init(_ freeze: Freeze, now: Instant) {
        self = .with {
            $0.id = freeze.id
            $0.services = freeze.services
            $0.fromMs = freeze.from.millisecondsSinceEpoch
            $0.untilMs = freeze.until?.millisecondsSinceEpoch ?? 0
            $0.reason = freeze.reason
            $0.declaredBy = freeze.declaredBy
            $0.stopsLine = freeze.stopsLine
            $0.active = freeze.isActive(at: now)
        }
    }
}
