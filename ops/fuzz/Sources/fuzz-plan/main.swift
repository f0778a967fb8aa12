import FuzzDriver
import LockstepCore
import LockstepPlan

/// Any bytes as a plan file: the linter answers with findings or a plan, never traps, and a plan it
/// accepts lints the same again (its findings and nodes do not depend on anything but the text).
// Exported too: libFuzzer's archive brings its own `main`, which names this symbol (ours runs first).
@_cdecl("LLVMFuzzerTestOneInput")
func fuzzPlan(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let input = fuzzInput(data, size)
    let text = String(decoding: input, as: UTF8.self)
    let first = PlanFile.lint(yaml: text)
    if let plan = first.plan, first.errors.isEmpty {
        let again = PlanFile.lint(yaml: text)
        precondition(again.plan == plan, "linting the same text twice gave two plans")
        for node in plan.nodes {
            precondition(MigrationState.identifierProblem(node.id.rawValue, what: "node") == nil, "an accepted plan has a bad node id")
        }
    }
    return 0
}

runFuzzer { data, size in fuzzPlan(data, size) }
