import LockstepCore
import LockstepStore
import LockstepWire

// `lockstep history diff --at A --at B` (issue 21, docs/history.md): what changed between two instants of
// the log: migrations, node states, service leases, gates, exposure, freezes and plans. Both states are
// replays of the log, so the answer is the same on any replica or copy.

public enum HistoryDiff {
    /// The changes from `old` to `new` (states replayed with settled migrations kept), one line each, in a
    /// fixed order: plans, freezes, migrations (by id) with their nodes (in plan order), then services.
    /// With `migration`, only that migration and the services its plan names.
    public static func changes(from old: LogState, to new: LogState, migration: MigrationID? = nil) -> [String] {
        var lines: [String] = []
        if migration == nil {
            for name in Set(old.plans.keys).union(new.plans.keys).sorted(by: { $0.utf8.lexicographicallyPrecedes($1.utf8) }) {
                let before = old.plans[name]?.count ?? 0
                let after = new.plans[name]?.count ?? 0
                if after > before { lines.append("+ plan \(name)@\(after)" + (after - before > 1 ? " (versions \(before + 1) to \(after))" : "")) }
            }
            let freezes = Set(old.freezes.keys).union(new.freezes.keys).sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
            for id in freezes {
                switch (old.freezes[id], new.freezes[id]) {
                case (nil, let added?): lines.append("+ freeze \(id) on \(added.scope)\(added.stopsLine ? " (line stop)" : ""): \(added.reason)")
                case (_?, nil): lines.append("- freeze \(id) ended")
                default: break
                }
            }
        }
        let oldMigrations = Dictionary(old.everyMigrationInOrder.map { ($0.id, $0) }, uniquingKeysWith: { _, last in last })
        let newMigrations = new.everyMigrationInOrder.filter { migration == nil || $0.id == migration }
        for after in newMigrations {
            guard let before = oldMigrations[after.id] else {
                lines.append("+ migration \(after.id) (plan \(after.plan.name)@\(after.plan.version), started by \(after.startedBy.isEmpty ? "?" : after.startedBy)): \(after.status.rawValue)")
                lines += nodeChanges(of: nil, after)
                continue
            }
            if before.status != after.status {
                lines.append("~ migration \(after.id): \(before.status.rawValue) → \(after.status.rawValue)\(after.statusReason.map { " (\($0))" } ?? "")")
            }
            lines += nodeChanges(of: before, after)
        }
        // Who holds each service.
        let services: [String]
        if let migration, let plan = new.everyMigrationInOrder.first(where: { $0.id == migration })?.plan {
            services = Array(Set(plan.nodes.flatMap(\.services))).sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
        } else if migration == nil {
            services = Array(Set(old.serviceLeases.holders.keys).union(new.serviceLeases.holders.keys)).sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
        } else {
            services = []
        }
        for service in services {
            let before = old.serviceLeases.holders[service]
            let after = new.serviceLeases.holders[service]
            guard before.map({ "\($0.migration)/\($0.node)" }) != after.map({ "\($0.migration)/\($0.node)" }) else { continue }
            let describe = { (holder: ServiceHolder?) in holder.map { "held by \($0.migration)/\($0.node)" } ?? "free" }
            lines.append("~ service \(service): \(describe(before)) → \(describe(after))")
        }
        return lines
    }

    /// A migration's node changes: status, attempts, approvals, exposure stage, checks.
    static func nodeChanges(of before: MigrationState?, _ after: MigrationState) -> [String] {
        var lines: [String] = []
        for spec in after.plan.nodes {
            guard let now = after.node(spec.id) else { continue }
            let then = before?.node(spec.id)
            var parts: [String] = []
            let statusThen = before.map { $0.nodeDisplayStatus(spec.id).rawValue } ?? "-"
            let statusNow = after.nodeDisplayStatus(spec.id).rawValue
            if statusThen != statusNow { parts.append("\(statusThen) → \(statusNow)") }
            if (then?.attempts ?? 0) != now.attempts { parts.append("attempts \(then?.attempts ?? 0) → \(now.attempts)") }
            if (then?.rollbackAttempts ?? 0) != now.rollbackAttempts { parts.append("rollback attempts \(then?.rollbackAttempts ?? 0) → \(now.rollbackAttempts)") }
            let approvedThen = Set(then?.approvals.map(\.approver) ?? [])
            for approval in now.approvals where !approvedThen.contains(approval.approver) { parts.append("approved by \(approval.approver)") }
            if let rejection = now.rejection, then?.rejection == nil { parts.append("rejected by \(rejection.approver)") }
            if (then?.exposure.reached ?? 0) != now.exposure.reached { parts.append("stage \(then?.exposure.reached ?? 0) → \(now.exposure.reached)") }
            let checksThen = Dictionary(then?.checks.map { ($0.check, $0.outcome.rawValue) } ?? [], uniquingKeysWith: { _, last in last })
            for check in now.checks where checksThen[check.check] != check.outcome.rawValue {
                parts.append("check \(check.check) \(checksThen[check.check] ?? "-") → \(check.outcome.rawValue)")
            }
            for scope in now.breakGlass where !(then?.breakGlass.contains(scope) ?? false) { parts.append("break-glass (\(scope.rawValue))") }
            if !parts.isEmpty { lines.append("~ \(after.id) node \(spec.id): \(parts.joined(separator: "; "))") }
        }
        return lines
    }
}

extension History {
    /// The states right after events `from` and `to` (`from` ≤ `to`; 0: before the first event), settled
    /// migrations kept: one fold, copied at `from` and carried on to `to`.
    public static func states(_ log: any EventLog, from: UInt64, to: UInt64) async throws(EventLogError) -> (from: LogState, to: LogState) {
        guard from <= to else { throw .invalidRequest("the first point (sequence \(from)) comes after the second (\(to))") }
        var state = try await start(of: log, through: from, keepingSettled: true)
        if from > state.lastSequence { try await fold(log, into: &state, through: from) }
        let first = state
        if to > from { try await fold(log, into: &state, through: to) }
        return (first, state)
    }

    /// The last event recorded at or before `time` (0 when none was). Recorded times follow the wall clock,
    /// which may step back: the last one at or before, not the first after.
    /// On a log whose first events were archived, the answer must be after its base: else `archived`.
    public static func lastSequence(in log: any EventLog, recordedAtOrBefore time: Instant) async throws(EventLogError) -> UInt64 {
        let base = try await log.baseHead().sequence
        var position = base
        var found = base
        while true {
            let page = try await log.read(after: position, limit: pageEventsMax)
            guard !page.isEmpty else {
                if found == base, base > 0 { throw .archived(through: base) }
                return found
            }
            for stored in page {
                position = stored.sequence
                guard let record = try? EventRecordCodec.decodeRecord(stored.record) else {
                    throw .corrupted(position: stored.sequence, reason: "the record does not decode")
                }
                if record.recordedAtMs <= time.millisecondsSinceEpoch { found = stored.sequence }
            }
        }
    }
}
