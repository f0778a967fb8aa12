/// Something a person, an agent or the coordinator asks of one migration. `decide` validates it.
public enum MigrationCommand: Hashable, Sendable {
    /// Start a migration of `plan` under `id`.
    case start(id: MigrationID, plan: PlanSnapshot)
    /// Grant `agent` a lease on `node`'s next step for `ttlMillis`.
    case leaseStep(node: NodeID, agent: String, ttlMillis: Int64)
    /// The holder of `token` reports `node`'s step done.
    case completeStep(node: NodeID, token: FencingToken)
    /// The holder of `token` reports `node`'s step failed.
    case failStep(node: NodeID, token: FencingToken, reason: String, retryable: Bool)
    /// Stop handing out new steps; running steps may finish.
    case pause(reason: String)
    /// Hand out steps again after a pause.
    case resume
    /// Stop the migration for good.
    case abort(reason: String)
}
