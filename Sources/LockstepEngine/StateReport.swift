import LockstepCore

/// A reviewer's view of the state of every migration at one point of the log (JSON-encodable).
public struct StateReport: Codable, Hashable, Sendable {
    public var sequence: UInt64
    public var digest: String
    public var migrations: [Migration]
    public var plans: [AppliedPlan]
    /// Service leases held, by service name.
    public var serviceLeases: [HeldService]
    /// Nodes waiting for their services, first in line first.
    public var serviceQueue: [QueuedNode]

    public struct HeldService: Codable, Hashable, Sendable {
        public var service: String
        public var migration: String
        public var node: String
        public var sinceMs: Int64
        enum CodingKeys: String, CodingKey { case service, migration, node, sinceMs = "since_ms" }
    }

    public struct QueuedNode: Codable, Hashable, Sendable {
        public var migration: String
        public var node: String
        public var services: [String]
        public var kind: String
        /// The sequence of its request: its place in line.
        public var sequence: UInt64
    }

    /// An applied plan and its versions.
    public struct AppliedPlan: Codable, Hashable, Sendable {
        public var name: String
        public var versions: [Version]
        public struct Version: Codable, Hashable, Sendable {
            public var version: UInt64
            public var contentHash: String
            public var nodes: Int
            enum CodingKeys: String, CodingKey { case version, nodes, contentHash = "content_hash" }
        }
    }

    public struct Migration: Codable, Hashable, Sendable {
        public var id: String
        public var plan: Plan
        public var status: String
        public var statusReason: String?
        public var startedAtMs: Int64
        public var version: UInt64
        public var nodes: [Node]
    }

    public struct Plan: Codable, Hashable, Sendable {
        public var name: String
        public var version: UInt64
        public var contentHash: String
    }

    public struct Node: Codable, Hashable, Sendable {
        public var id: String
        public var phase: String
        public var services: [String]
        public var needs: [String]
        public var status: String
        public var ready: Bool
        public var attempts: UInt32
        public var fencingToken: UInt64
        public var lease: Lease?
        public var lastFailure: String?
        /// "none", "requested" or "held": the node's claim on its services.
        public var serviceLeases: String
        /// While it waits for its services: who holds them or asked first.
        public var waitingFor: [String]
    }

    public struct Lease: Codable, Hashable, Sendable {
        public var agent: String
        public var fencingToken: UInt64
        public var grantedAtMs: Int64
        public var expiresAtMs: Int64
    }

    enum CodingKeys: String, CodingKey {
        case sequence, digest, migrations, plans, serviceLeases = "service_leases", serviceQueue = "service_queue"
    }
}

extension StateReport.Migration {
    enum CodingKeys: String, CodingKey {
        case id, plan, status, version, nodes
        case statusReason = "status_reason", startedAtMs = "started_at_ms"
    }
}
extension StateReport.Plan {
    enum CodingKeys: String, CodingKey { case name, version, contentHash = "content_hash" }
}
extension StateReport.Node {
    enum CodingKeys: String, CodingKey {
        case id, phase, services, needs, status, ready, attempts, lease
        case fencingToken = "fencing_token", lastFailure = "last_failure", serviceLeases = "service_leases", waitingFor = "waiting_for"
    }
}
extension StateReport.Lease {
    enum CodingKeys: String, CodingKey {
        case agent, fencingToken = "fencing_token", grantedAtMs = "granted_at_ms", expiresAtMs = "expires_at_ms"
    }
}

extension StateReport {
    /// The report of `state`.
    public init(_ state: LogState) {
        sequence = state.lastSequence
        digest = state.digest.hex
        plans = state.plansInOrder.map { entry in
            AppliedPlan(name: entry.name, versions: entry.versions.map {
                AppliedPlan.Version(version: $0.version, contentHash: $0.contentHash, nodes: $0.nodes.count)
            })
        }
        migrations = state.migrationsInOrder.map { migration in
            Migration(
                id: migration.id.rawValue,
                plan: Plan(name: migration.plan.name, version: migration.plan.version, contentHash: migration.plan.contentHash),
                status: migration.status.rawValue, statusReason: migration.statusReason,
                startedAtMs: migration.startedAt.millisecondsSinceEpoch, version: migration.version,
                nodes: zip(migration.plan.nodes, migration.nodes).map { spec, node in
                    Node(id: node.id.rawValue, phase: spec.phase.rawValue, services: spec.services, needs: spec.needs.map(\.rawValue),
                         status: migration.displayStatus(node.id), ready: migration.isReady(node.id), attempts: node.attempts,
                         fencingToken: node.lastToken.rawValue,
                         lease: node.lease.map { Lease(agent: $0.agent, fencingToken: $0.token.rawValue,
                                                        grantedAtMs: $0.grantedAt.millisecondsSinceEpoch,
                                                        expiresAtMs: $0.expiresAt.millisecondsSinceEpoch) },
                         lastFailure: node.lastFailure, serviceLeases: node.serviceLeases.name,
                         waitingFor: state.serviceWaits(migration: migration.id, node: node.id).map(\.description))
                })
        }
        serviceLeases = state.serviceLeases.holdersInOrder.map {
            HeldService(service: $0.service, migration: $0.holder.migration.rawValue, node: $0.holder.node.rawValue,
                        sinceMs: $0.holder.since.millisecondsSinceEpoch)
        }
        serviceQueue = state.serviceLeases.queue.map {
            QueuedNode(migration: $0.migration.rawValue, node: $0.node.rawValue, services: $0.services, kind: $0.kind.rawValue, sequence: $0.sequence)
        }
    }
}
