import LockstepCore
import LockstepEngine
import LockstepStore
import LockstepWire

/// Which stage a migration or node is at, for the services it changes: one dictionary lookup, so
/// services may poll it often (the JSON side answers `304 Not Modified` while its version stands).
public struct StageAPI: Sendable {
    package let coordinator: Coordinator
    /// Longest cohort key, in bytes.
    public static let keyBytesMax = 256

    public func stage(_ request: Lockstep_V1_StageRequest, principal: Principal) async throws(APIError) -> Lockstep_V1_Stage {
        // Readers, and the agents of the services the migration changes (its own services' view; the
        // gate let readers and agents in).
        let reader = !principal.roles.isDisjoint(with: OperatorAPI.readers) || principal.roles.contains(.admin)
        try APIError.checkIdentifier(request.migrationID, "migration_id")
        if !request.nodeID.isEmpty { try APIError.checkIdentifier(request.nodeID, "node") }
        let id = MigrationID(request.migrationID)
        let migration = try await APIError.reading { () throws(EventLogError) in try await coordinator.readMigration(id) }
        if !reader {
            // A missing migration reads the same as one that changes none of the agent's services.
            guard let migration, !Set(migration.plan.nodes.flatMap(\.services)).isDisjoint(with: principal.services) else {
                throw APIError(.permissionDenied,
                               "\(principal.name) is an agent of no service migration \(id) changes, or it does not exist")
            }
        }
        guard let migration else { throw APIError(.rejected(.migrationNotFound(id))) }
        if request.key.utf8.count > Self.keyBytesMax {
            throw APIError.invalid("key is \(request.key.utf8.count) bytes long; the limit is \(Self.keyBytesMax) bytes")
        }
        var nodes = zip(migration.plan.nodes, migration.nodes).map { spec, node in
            Lockstep_V1_NodeStage.with {
                $0.nodeID = node.id.rawValue
                $0.phase = spec.phase.rawValue
                $0.services = spec.services
                $0.status = Lockstep_V1_NodeStatus(migration.nodeDisplayStatus(node.id))
                // A rolled-back exposure is back at its start; before its first stage, nothing is exposed.
                let stage = node.status == .rolledBack ? spec.exposure?.start : migration.currentStage(of: node.id)
                    ?? spec.exposure.map { $0.stages.first?.percent != nil ? .percent(0) : $0.start }
                if let stage {
                    $0.stage = stage.name
                    if let percent = stage.percent {
                        $0.percent = percent
                        if !request.key.isEmpty { $0.exposed = Cohort.isExposed(migration: id, node: node.id, key: request.key, percent: percent) }
                    }
                }
                $0.bakeUntilMs = node.exposure.bakeUntil?.millisecondsSinceEpoch ?? 0
            }
        }
        if !request.nodeID.isEmpty {
            nodes = nodes.filter { $0.nodeID == request.nodeID }
            if nodes.isEmpty { throw APIError(.rejected(.unknownNode(NodeID(request.nodeID)))) }
        }
        return .with {
            $0.migrationID = id.rawValue
            $0.status = Lockstep_V1_MigrationStatus(migration.status)
            $0.version = migration.version
            $0.nodes = nodes
        }
    }

    package init(coordinator: Coordinator) {
        self.coordinator = coordinator
    }
}
