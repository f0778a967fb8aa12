import LockstepCore

/// "1 node", "7 nodes": a count and its noun (a regular plural), for text people read.
public func counted(_ count: some BinaryInteger, _ noun: String) -> String {
    "\(count) \(noun)\(count == 1 ? "" : "s")"
}

extension MigrationEvent {
    /// A fixed-point value in millionths as a decimal: 15000 → "0.015".
    public static func decimal(_ micros: Int64) -> String { MetricSample.decimal(micros) }

    /// A one-line human description (for terminals; exports use the JSON record).
    public var summary: String {
        switch self {
        case .migrationStarted(let e):
            "migration \(e.migration) started by \(e.startedBy.isEmpty ? "?" : e.startedBy): plan \(e.plan.name)@\(e.plan.version), \(counted(e.plan.nodes.count, "node"))"
        case .stepLeased(let e) where e.kind == .check: "\(e.node): check \(e.check) leased to \(e.agent), token \(e.token)"
        case .stepLeased(let e): "\(e.node): \(e.kind == .rollback ? "rollback " : "")attempt \(e.attempt) leased to \(e.agent), token \(e.token)"
        case .stepCompleted(let e): "\(e.node): \(e.kind == .rollback ? "rolled back" : "completed") (attempt \(e.attempt), token \(e.token))"
        case .stepFailed(let e):
            "\(e.node): \(e.kind == .rollback ? "rollback " : "")attempt \(e.attempt) \(e.returned ? "returned unstarted" : e.agentLost ? "agent lost" : e.leaseExpired ? "lease expired" : e.startToCloseExceeded ? "timed out" : "failed")\(e.retryAt.map { ", retry from \($0)" } ?? ""): \(e.reason)"
        case .stepProgress(let e): "\(e.node): \(e.percent)% \(e.message)"
        case .approvalGranted(let e): "\(e.node): approved by \(e.approver)\(e.comment.isEmpty ? "" : " (\(e.comment))")"
        case .approvalRejected(let e): "\(e.node): rejected by \(e.approver) (\(e.comment))"
        case .migrationPaused(let reason, let lineStop): "migration paused\(lineStop.isEmpty ? "" : " (line stop \(lineStop))"): \(reason)"
        case .migrationResumed(let rearmed): "migration resumed" + (rearmed.isEmpty ? "" : "; fresh attempts for \(list(rearmed))")
        case .migrationAborted(let r):
            "abort\(r.trigger.map { " (\($0.rawValue))" } ?? ""): \(r.reason); roll back \(list(r.rollback)); nothing to undo \(list(r.nothingToUndo)); cannot undo \(list(r.cannotUndo))"
                + (r.blockedBy.map { " (blocked by irreversible \($0))" } ?? "") + (r.failed.isEmpty ? "" : "; failed \(list(r.failed))")
        case .migrationRolledBack: "migration rolled back"
        case .migrationSucceeded: "migration succeeded"
        case .migrationFailed(let node, let reason): "migration failed at \(node): \(reason)"
        case .serviceLeasesRequested(let e): "\(e.node): asks for \(e.services.joined(separator: ", ")) (\(e.kind.rawValue) step)"
        case .serviceLeasesWithdrawn(let node, let reason): "\(node): leaves the service queues: \(reason)"
        case .serviceLeasesGranted(let e): "\(e.node): granted \(e.services.joined(separator: ", "))"
        case .serviceLeasesReleased(let e):
            "\(e.node): \(e.forced ? "forced release of" : "released") \(e.services.joined(separator: ", ")): \(e.reason)"
        case .exposureStageReached(let e): "\(e.node): stage \(e.stage) set; bakes until \(e.bakeUntil)"
        case .metricSampled(let e):
            "\(e.node): \(e.sample.name) = \(Self.decimal(e.sample.valueMicros)) from \(e.sample.source.isEmpty ? "?" : e.sample.source) (stage \(e.stage)"
                + (e.sample.cohort == .canary ? ")" : ", \(e.sample.cohort.rawValue))")
        case .analysisEvaluated(let e):
            "\(e.node): stage \(e.stage) analysis \(e.outcome.rawValue) → \(e.decision.rawValue.replacingOccurrences(of: "_", with: " ")); "
                + (e.evidence.isEmpty ? "no metrics" : e.evidence.map { evidence in
                    let bound = evidence.check.direction == .lowerIsBetter ? "≤" : "≥"
                    var text = "\(evidence.check.name) mean \(Self.decimal(evidence.meanMicros)) of \(evidence.samples) (pass \(bound) \(Self.decimal(evidence.check.passMicros)), marginal \(bound) \(Self.decimal(evidence.check.marginalMicros)))"
                    if let baseline = evidence.baseline, let relative = evidence.relativeOutcome {
                        text += ", against baseline mean \(Self.decimal(baseline.meanMicros)) of \(baseline.samples): \(relative.rawValue)"
                    }
                    return text + ": \(evidence.outcome.rawValue)"
                }.joined(separator: "; "))
        case .analysisOverridden(let node, let stage): "\(node): stage \(stage) advanced by a person's resume (override)"
        case .rollbackReordered(let e):
            "\(e.node): undone before \(e.aheadOf), which waits for \(e.services.joined(separator: ", ")) that \(e.node) holds"
        case .breakGlass(let e): "\(e.node): BREAK-GLASS by \(e.by) overrides its \(e.scope.rawValue): \(e.justification)"
        case .checkReported(let e):
            "\(e.node): check \(e.check) \(e.outcome == .notRun ? "not run" : e.outcome.rawValue)\(e.valueMicros.map { " (value \(Self.decimal($0)))" } ?? "")"
                + (e.evidence.isEmpty ? "" : ": \(e.evidence)")
        }
    }
}

extension FreezeEvent {
    /// A one-line human description.
    public var summary: String {
        switch self {
        case .freezeDeclared(let f):
            "\(f.stopsLine ? "line stopped" : "freeze") \(f.id) by \(f.declaredBy.isEmpty ? "?" : f.declaredBy) on \(f.scope) from \(f.from)"
                + " \(f.until.map { "until \($0)" } ?? "until ended"): \(f.reason)"
        case .freezeEnded(let e): "freeze \(e.id) ended by \(e.by.isEmpty ? "?" : e.by)\(e.reason.isEmpty ? "" : ": \(e.reason)")"
        }
    }
}

private func list(_ nodes: [NodeID]) -> String {
    nodes.isEmpty ? "-" : "[" + nodes.map(\.rawValue).joined(separator: ", ") + "]"
}

extension String {
    fileprivate func leftPadding(to length: Int) -> String { String(repeating: "0", count: max(0, length - count)) + self }
}
