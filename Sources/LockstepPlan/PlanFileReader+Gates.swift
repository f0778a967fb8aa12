import LockstepCore
import Yams

// The plan reader's part for gates in time and evidence: change windows (at the plan, a service or a
// node) and preflight checks (docs/gates.md). Each problem is noted at its own line.

extension Reader {
    /// `windows: ["Mon-Fri 09:00-16:00 Europe/Berlin", ...]` (or one window as a string): each parsed, its
    /// zone checked against this machine's time-zone database.
    mutating func windows(_ node: Node?, of what: String) -> [ChangeWindow] {
        guard let node else { return [] }
        // More than the limit: refused before any is parsed (`too_many_entries`).
        let texts = strings(node, what: "the windows of \(what)", max: CoreLimits.windowsPerLevelMax) ?? []
        let items = node.sequence.map(Array.init) ?? [node]
        var windows: [ChangeWindow] = []
        for (index, text) in texts.enumerated() {
            let line = (index < items.count ? items[index].mark?.line : nil) ?? node.mark?.line ?? 0
            switch ChangeWindow.parse(text) {
            case .success(let window):
                if !TimeZoneDatabase.isKnown(window.zone) {
                    error(line, "unknown_time_zone", "a window of \(what) names time zone \(window.zone), which this machine's time-zone database does not know")
                }
                windows.append(window)
            case .failure(let problem):
                error(line, "invalid_window", "a window of \(what): \(problem.description)")
            }
        }
        return windows
    }

    /// `checks: [{ name, params, pass: ok | { max: V } | { min: V }, fresh_for, recheck, on_fail: block | rollback }]`.
    mutating func checks(_ node: Node?, node id: NodeID) -> [CheckSpec] {
        guard let node else { return [] }
        guard case .sequence(let sequence) = node else {
            error(node.mark?.line ?? 0, "invalid_value", "checks of \(id) must be a list of { name, pass, fresh_for }")
            return []
        }
        guard withinLimit(sequence.count, max: CoreLimits.checksPerNodeMax, at: node.mark?.line ?? 0, { "node \(id) has \($0) checks" }) else { return [] }
        var checks: [CheckSpec] = []
        for item in sequence {
            let line = item.mark?.line ?? 0
            guard case .mapping(let mapping) = item else {
                error(line, "invalid_value", "each check of \(id) must be a mapping with name, pass and fresh_for")
                continue
            }
            let fields = self.fields(mapping, allowed: ["name", "params", "pass", "fresh_for", "recheck", "on_fail", "before"], in: "a check of \(id)")
            guard let name = string(fields["name"], required: true, what: "check name of \(id)", line: line) else { continue }
            if !checks.allSatisfy({ $0.name != name }) { error(line, "duplicate_check", "node \(id) names check \(name) twice") }
            var check = CheckSpec(name: name, paramsJSON: params(fields["params"], of: "check \(name) of \(id)"))
            if let params = fields["params"], params.mapping == nil { error(params.mark?.line ?? line, "invalid_value", "params of check \(name) must be a mapping") }
            if let pass = fields["pass"] {
                if pass.string == "ok" {
                    check.pass = .ok
                } else if let (direction, micros) = threshold(pass, what: "pass of check \(name) of \(id) (ok, { max: V } or { min: V })", line: line) {
                    check.pass = direction == .lowerIsBetter ? .max(micros) : .min(micros)
                }
            }
            check.freshForMillis = duration(fields["fresh_for"], what: "fresh_for of check \(name)")
            if let recheck = duration(fields["recheck"], what: "recheck of check \(name)") { check.recheckMillis = recheck }
            for (what, millis) in [("fresh_for", check.freshForMillis), ("recheck", Optional(check.recheckMillis))] where millis == 0 {
                error(fields[what]?.mark?.line ?? line, "invalid_duration", "\(what) of check \(name) must be longer than 0")
            }
            if let text = string(fields["on_fail"], required: false, what: "on_fail of check \(name)", line: line) {
                if let policy = CheckFailurePolicy(rawValue: text) { check.onFail = policy } else {
                    error(fields["on_fail"]?.mark?.line ?? line, "invalid_value", "check \(name) of \(id) has on_fail \"\(text)\"; use block or rollback")
                }
            }
            if let text = string(fields["before"], required: false, what: "before of check \(name)", line: line) {
                if let before = CheckBefore(rawValue: text) { check.before = before } else {
                    error(fields["before"]?.mark?.line ?? line, "invalid_value", "check \(name) of \(id) has before \"\(text)\"; use forward, rollback or both")
                }
            }
            map.checkLines["\(id.rawValue)/\(name)"] = line
            checks.append(check)
        }
        return checks
    }
}
