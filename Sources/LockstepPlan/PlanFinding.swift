/// One problem found in a plan file: where, how bad, and a sentence a person can act on.
public struct PlanFinding: Hashable, Sendable, CustomStringConvertible {
    public enum Severity: String, Sendable, Comparable {
        case error, warning
        public static func < (lhs: Severity, rhs: Severity) -> Bool { lhs == .error && rhs == .warning }
    }

    public var severity: Severity
    /// 1-based line in the file (0 when the problem concerns the file as a whole).
    public var line: Int
    /// A stable code for the kind of problem, e.g. `dependency_cycle`.
    public var code: String
    public var message: String

    public init(_ severity: Severity, line: Int, code: String, _ message: String) {
        self.severity = severity
        self.line = line
        self.code = code
        // Messages quote what the file says (names, values): never its control characters.
        self.message = message.quotable
    }

    public var description: String { "\(line): \(severity.rawValue): \(message) [\(code)]" }

    /// `FILE:LINE: severity: message [code]`, the form editors and CI logs link to.
    public func formatted(file: String) -> String { "\(file):\(description)" }
}

/// The outcome of reading a plan file.
public struct PlanLoad: Sendable {
    /// The plan, when the file could be read into one (it may still have findings).
    public var plan: LockstepCore.PlanSnapshot?
    public var findings: [PlanFinding]
    /// Where things were defined, for findings raised later.
    public var sourceMap: PlanSourceMap

    /// Findings left out of `findings` (past `PlanFile.findingsMax`; one more finding counts them): how
    /// many, and how many of them are errors.
    public var unshown = (findings: 0, errors: 0)

    public var errors: [PlanFinding] { findings.filter { $0.severity == .error } }
    public var warnings: [PlanFinding] { findings.filter { $0.severity == .warning } }
    /// Every error and warning found, shown or not (the finding that counts the rest is neither).
    public var errorCount: Int { findings.count { $0.severity == .error && $0.code != PlanFile.unshownCode } + unshown.errors }
    public var warningCount: Int {
        findings.count { $0.severity == .warning && $0.code != PlanFile.unshownCode } + unshown.findings - unshown.errors
    }

    /// A file refused before it was read as a plan: no plan, and the one finding (at line 0) that says why.
    public static func refused(_ code: String, _ message: String) -> PlanLoad {
        PlanLoad(plan: nil, findings: [PlanFinding(.error, line: 0, code: code, message)], sourceMap: PlanSourceMap())
    }
}

import LockstepCore

/// Lines of the plan's parts in the file they came from. Nodes are looked up by position, not id,
/// so two nodes with the same id are each reported at their own line.
public struct PlanSourceMap: Sendable {
    /// Where one node was defined.
    public struct NodeLines: Sendable {
        public var line: Int
        /// Field name → line of its value.
        public var fields: [String: Int] = [:]
        /// Needed node → line of that `needs` entry.
        public var needs: [NodeID: Int] = [:]
    }

    /// In plan order, one per node read.
    public var nodes: [NodeLines] = []
    public var serviceLines: [String: Int] = [:]
    /// "NODE/CHECK" → line of that check.
    public var checkLines: [String: Int] = [:]

    public init() {}

    /// The line of node number `index`'s `field` (or of the node itself).
    func line(ofNode index: Int, field: String? = nil) -> Int {
        guard nodes.indices.contains(index) else { return 0 }
        return field.flatMap { nodes[index].fields[$0] } ?? nodes[index].line
    }

    /// The line of the first node with `id`.
    func line(of id: NodeID, in plan: PlanSnapshot) -> Int {
        plan.nodes.firstIndex { $0.id == id }.map { line(ofNode: $0) } ?? 0
    }
}
