import Foundation
import LockstepCore
import Yams

/// Reads a plan file (YAML, see docs/plan-format.md) into a `PlanSnapshot`, noting the line of every
/// problem. It never throws: a file that cannot be read gives findings and no plan.
public enum PlanFile {
    /// Largest plan file, in bytes.
    public static let fileBytesMax = 1 << 20
    /// Findings reported for one file; past them, one more (`unshownCode`) says how many were left out
    /// (an error when any of those was). The reader keeps no more than these either, only counts the rest.
    public static let findingsMax = 500
    public static let unshownCode = "too_many_findings"

    public static let planKeys: Set<String> = ["name", "description", "owners", "services", "deadline", "nodes", "windows", "on_pause"]
    public static let nodeKeys: Set<String> = [
        "id", "service", "services", "phase", "action", "params", "needs", "timeouts", "retry", "rollback",
        "approvals", "deadline", "irreversible", "on_failure", "exposure", "analysis", "windows", "checks",
    ]

    /// Reads `yaml` and runs every lint rule over the result; windows are read as they stand at `now`
    /// (this machine's clock when nil).
    public static func lint(yaml: String, now: Instant? = nil) -> PlanLoad {
        var load = read(yaml: yaml)
        if let plan = load.plan {
            load.findings += PlanLint.findings(plan, map: load.sourceMap)
            load.findings += PlanLint.windowFindings(plan, map: load.sourceMap,
                                                     now: now ?? Instant(millisecondsSinceEpoch: Int64(Date().timeIntervalSince1970 * 1_000)))
            // Whatever the core would still refuse (limits, identifiers), so lint and start agree.
            if load.errors.isEmpty, let problem = PlanValidation.problem(in: plan) {
                load.findings.append(PlanFinding(.error, line: 1, code: "invalid_plan", problem))
            }
        }
        load.findings.sort { ($0.line, $0.severity == .error ? 0 : 1) < ($1.line, $1.severity == .error ? 0 : 1) }
        return Self.bounded(load)
    }

    /// `load` with its first `findingsMax` findings, the rest counted in `unshown`, and then, when any
    /// are, one more finding saying how many.
    static func bounded(_ load: PlanLoad) -> PlanLoad {
        var load = load
        if load.findings.count > findingsMax {
            let left = load.findings[findingsMax...]
            load.unshown.findings += left.count
            load.unshown.errors += left.count { $0.severity == .error }
            load.findings.removeSubrange(findingsMax...)
        }
        guard load.unshown.findings > 0 else { return load }
        load.findings.append(PlanFinding(load.unshown.errors > 0 ? .error : .warning, line: load.findings.last?.line ?? 0, code: unshownCode,
                                         "\(load.unshown.findings) more findings (\(load.unshown.errors) of them errors) are not shown; mend these first"))
        return load
    }

    /// Reads `yaml` into a plan with the structural findings only (missing or unknown keys, bad values).
    public static func read(yaml: String) -> PlanLoad {
        var reader = Reader()
        guard yaml.utf8.count <= fileBytesMax else {
            reader.error(0, "file_too_large", "the plan file is \(yaml.utf8.count) bytes; the limit is \(fileBytesMax) bytes")
            return PlanLoad(plan: nil, findings: reader.findings, sourceMap: reader.map)
        }
        if let line = StrictYAML.firstAnchorOrAlias(in: yaml) {
            reader.error(line, "yaml_alias", "anchors (&name) and aliases (*name) are not allowed in plans; write the value out")
            return PlanLoad(plan: nil, findings: reader.findings, sourceMap: reader.map)
        }
        let root: Node?
        do {
            root = try Yams.compose(yaml: yaml, StrictYAML.resolver)
        } catch let error as YamlError {
            reader.error(Self.line(of: error), "yaml_syntax", "the file is not valid YAML: \(Self.problem(of: error))")
            return PlanLoad(plan: nil, findings: reader.findings, sourceMap: reader.map)
        } catch {
            reader.error(0, "yaml_syntax", "the file is not valid YAML: \(error)")
            return PlanLoad(plan: nil, findings: reader.findings, sourceMap: reader.map)
        }
        guard let root, case .mapping(let mapping) = root else {
            reader.error(root?.mark?.line ?? 1, "not_a_mapping", "a plan is a mapping with name, services and nodes")
            return PlanLoad(plan: nil, findings: reader.findings, sourceMap: reader.map)
        }
        let plan = reader.plan(mapping)
        var load = PlanLoad(plan: plan, findings: reader.findings, sourceMap: reader.map)
        load.unshown = (reader.unshownErrors, reader.unshownErrors)
        return load
    }

    static func line(of error: YamlError) -> Int {
        switch error {
        case .scanner(_, _, let mark, _), .parser(_, _, let mark, _), .composer(_, _, let mark, _): mark.line
        case .duplicatedKeysInMapping(_, let context): context.mark.line
        // A byte libyaml's reader refuses (a NUL, a control character): the line its offset (in characters) is on.
        case .reader(_, let offset?, _, let yaml): yaml.prefix(max(0, offset)).count { $0 == "\n" || $0 == "\r\n" } + 1
        default: 0
        }
    }

    static func problem(of error: YamlError) -> String {
        switch error {
        case .scanner(_, let problem, _, _), .parser(_, let problem, _, _), .composer(_, let problem, _, _), .reader(let problem, _, _, _): problem
        case .duplicatedKeysInMapping(let duplicates, _): "duplicate keys \(duplicates.joined(separator: ", "))"
        default: "\(error)"
        }
    }
}
