// Reading migrations, settled ones included: settled migrations leave the live state (canonical
// format 6), so what still needs one folds its stream from the log.
import LockstepCore
import LockstepStore

extension Coordinator {
    /// Migration `id` if it is in the live state (not settled, or settled and still holding a service).
    public func migration(_ id: MigrationID) -> MigrationState? { state.migrations[id] }

    /// Migration `id`, settled or not: from the live state, else folded from its stream in the log
    /// (settled migrations leave the live state; see `LogState.evolve`). Nil when it never started, or
    /// when its events were archived out of the log (`readMigrationSayingArchived` tells those apart).
    public func readMigration(_ id: MigrationID) async throws(EventLogError) -> MigrationState? {
        if let live = state.migrations[id] { return live }
        return try await History.migration(id, in: log)
    }

    /// `readMigration`, but a migration whose events were archived (its stream keeps its version in a log
    /// with a base) is `archived`, not nil: what a reviewer's read answers.
    public func readMigrationSayingArchived(_ id: MigrationID) async throws(EventLogError) -> MigrationState? {
        if let found = try await readMigration(id) { return found }
        guard let base = try await log.base(), try await log.streamVersion(of: RecordedEvent.stream(of: id)) > 0 else { return nil }
        // (A start that committed meanwhile has events: read once more before saying archived.)
        if let started = try await readMigration(id) { return started }
        throw .archived(through: base.sequence)
    }

    /// Up to `limit` migrations with ids after `after` (all when empty), in id order, settled ones
    /// included: the live state lists only the unsettled, so the ids come from the log's stream names
    /// and each settled migration is folded from its own stream. Also returns the live state the
    /// others were taken from (for their lease views).
    public func listMigrations(after: MigrationID, limit: Int) async throws(EventLogError) -> ([MigrationState], LogState) {
        let prefix = RecordedEvent.stream(of: MigrationID(""))
        let names = try await log.streams(withPrefix: prefix, after: after.rawValue.isEmpty ? "" : RecordedEvent.stream(of: after), limit: limit)
        let live = state
        var page: [MigrationState] = []
        for name in names {
            guard let id = RecordedEvent.migration(ofStream: name) else { continue }
            if let migration = live.migrations[id] {
                page.append(migration)
            } else if let settled = try await History.migration(id, in: log) {
                page.append(settled)
            }
        }
        return (page, live)
    }

    /// The digest of the live state.
    public var digest: StateDigest { state.digest }
}
