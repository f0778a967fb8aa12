import LockstepCore
import LockstepEngine
import LockstepPlan

/// One notification: what happened, where, and what a person can do about it. Derived from one event
/// of the log (and the state before it), so the same log gives the same notifications anywhere.
public struct Notice: Hashable, Sendable {
    public var kind: NotificationKind
    /// The event it comes from.
    public var sequence: UInt64
    public var at: Instant
    /// "" for a freeze.
    public var migration: String
    public var plan: String
    public var planVersion: UInt64
    /// "" when it concerns the whole migration.
    public var node: String
    /// One line, for a person.
    public var summary: String
    /// What the judgement rests on (a check's output, an analysis's means and thresholds), "" if none.
    public var evidence: String
    /// Who or what caused it ("user:alice", "coordinator:lockstep").
    public var actor: String
    /// The command that acts on it ("" if nothing is to be done).
    public var command: String
    /// The console view, relative to the console's base URL.
    public var consolePath: String

    public init(kind: NotificationKind, sequence: UInt64, at: Instant, migration: String, plan: String, planVersion: UInt64, node: String,
                summary: String, evidence: String, actor: String, command: String, consolePath: String) {
        self.kind = kind
        self.sequence = sequence
        self.at = at
        self.migration = migration
        self.plan = plan
        self.planVersion = planVersion
        self.node = node
        self.summary = summary
        self.evidence = evidence
        self.actor = actor
        self.command = command
        self.consolePath = consolePath
    }

    /// Stable across retries and restarts: the event's sequence, the kind, and the node.
    public var id: String { "\(sequence)-\(kind.rawValue)" + (node.isEmpty ? "" : "-\(node)") }
}

/// Follows the log one record at a time and says which notifications each record makes.
public struct NotificationDeriver: Sendable {
    public private(set) var state: LogState

    /// Starts from `state` (the log folded through `state.lastSequence`).
    public init(state: LogState) { self.state = state }

    /// Folds `record` (at `sequence`) in, returning its notifications.
    public mutating func take(_ record: LogRecord, sequence: UInt64) -> [Notice] {
        switch record {
        case .migration(let recorded):
            let before = state.migrations[recorded.migration]
            let gatedBefore = Set(before.map(Self.awaitingApproval) ?? [])
            state.evolve(record, sequence: sequence)
            let after = state.migrations[recorded.migration] ?? before.flatMap { MigrationState.evolve($0, recorded.event) }
            guard let migration = after ?? before else { return [] }
            var notes = Self.notifications(of: recorded, sequence: sequence, migration: migration)
            // A check that keeps failing on its rechecks is told once, when it starts failing.
            if case .checkReported(let check) = recorded.event, check.outcome == .fail,
               before?.node(check.node)?.checks.first(where: { $0.check == check.check })?.outcome == .fail {
                notes.removeAll { $0.kind == .checkFailed }
            }
            // A node newly at its gate (after a completion, a start, a resume…).
            if let after {
                for node in Self.awaitingApproval(after) where !gatedBefore.contains(node) {
                    let gate = after.plan.node(node)?.approval
                    let have = after.node(node)?.approvals.count ?? 0
                    let groups = gate.map { $0.from.joined(separator: ", ") } ?? ""
                    notes.append(Self.note(.approvalNeeded, recorded, sequence, migration, node: node.rawValue,
                                           summary: "\(node) awaits approval (\(have) of \(gate?.minimum ?? 1))" + (groups.isEmpty ? "" : " from \(groups)"),
                                           command: "lockstep migration approve \(migration.id) \(node)"))
                }
            }
            return notes
        case .freeze(let recorded):
            state.evolve(record, sequence: sequence)
            guard case .freezeDeclared(let freeze) = recorded.event else { return [] }
            let scope = freeze.services.isEmpty ? "every service" : freeze.services.joined(separator: ", ")
            return [Notice(
                kind: .freezeStarted, sequence: sequence, at: recorded.metadata.recordedAt, migration: "", plan: "", planVersion: 0, node: "",
                summary: "\(freeze.stopsLine ? "line stopped" : "freeze") \(freeze.id) on \(scope) by \(freeze.declaredBy.isEmpty ? "?" : freeze.declaredBy)"
                    + "\(freeze.until.map { " until \($0)" } ?? ""): \(freeze.reason)",
                evidence: "", actor: recorded.metadata.actor.description,
                command: freeze.stopsLine ? "lockstep line resume \(freeze.id)" : "lockstep freeze end \(freeze.id)", consolePath: "/ui#/leases")]
        case .plan, .checkpoint:
            state.evolve(record, sequence: sequence)
            return []
        }
    }

    static func awaitingApproval(_ migration: MigrationState) -> [NodeID] {
        guard migration.status == .running || migration.status == .paused else { return [] }
        return migration.plan.nodes.map(\.id).filter { migration.nodeDisplayStatus($0) == .awaitingApproval }
    }

    static func note(_ kind: NotificationKind, _ recorded: RecordedEvent, _ sequence: UInt64, _ migration: MigrationState, node: String = "",
                     summary: String, evidence: String = "", command: String = "") -> Notice {
        Notice(kind: kind, sequence: sequence, at: recorded.metadata.recordedAt, migration: migration.id.rawValue, plan: migration.plan.name,
                     planVersion: migration.plan.version, node: node, summary: "\(migration.id): \(summary)", evidence: evidence,
                     actor: recorded.metadata.actor.description, command: command, consolePath: "/ui#/migration/\(migration.id.rawValue)")
    }

    static func notifications(of recorded: RecordedEvent, sequence: UInt64, migration: MigrationState) -> [Notice] {
        let id = migration.id.rawValue
        switch recorded.event {
        case .migrationPaused(let reason, let lineStop):
            return [note(.migrationPaused, recorded, sequence, migration,
                         summary: "paused\(lineStop.isEmpty ? "" : " by line stop \(lineStop)"): \(reason)",
                         command: lineStop.isEmpty ? "lockstep migration resume \(id)" : "lockstep line resume \(lineStop)")]
        case .migrationAborted(let report):
            return [note(.rollbackStarted, recorded, sequence, migration,
                         summary: "rolling back (\(report.trigger?.rawValue ?? "abort")): \(report.reason)",
                         evidence: recorded.event.summary, command: "lockstep migration watch \(id)")]
        case .migrationRolledBack:
            return [note(.migrationRolledBack, recorded, sequence, migration, summary: "rolled back\(migration.statusReason.map { ": \($0)" } ?? "")",
                         command: "lockstep migration report \(id)")]
        case .migrationFailed(let node, let reason):
            return [note(.migrationFailed, recorded, sequence, migration, node: node.rawValue, summary: "failed at \(node): \(reason)",
                         command: "lockstep migration status \(id)")]
        case .migrationSucceeded:
            return [note(.migrationSucceeded, recorded, sequence, migration, summary: "succeeded", command: "lockstep migration report \(id)")]
        case .checkReported(let check) where check.outcome == .fail:
            let spec = migration.plan.node(check.node)?.checks.first { $0.name == check.check }
            let next = spec?.onFail == .rollback ? "the migration rolls back" : "the node waits for the check to pass"
            return [note(.checkFailed, recorded, sequence, migration, node: check.node.rawValue,
                         summary: "check \(check.check) of \(check.node) failed; \(next)", evidence: recorded.event.summary,
                         command: "lockstep migration status \(id)")]
        case .analysisEvaluated(let analysis) where analysis.outcome == .fail:
            return [note(.analysisFailed, recorded, sequence, migration, node: analysis.node.rawValue,
                         summary: "analysis of \(analysis.node) stage \(analysis.stage) failed → \(analysis.decision.rawValue.replacingOccurrences(of: "_", with: " "))",
                         evidence: recorded.event.summary, command: "lockstep migration status \(id)")]
        default:
            return []
        }
    }
}
