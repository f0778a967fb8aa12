import FuzzDriver
import LockstepCore
import LockstepPlan

/// Any bytes as a plan file (and as a webhooks file): the linter answers with findings or a plan, never traps, and a plan it
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
    // The same bytes as a webhooks file (lockstep serve --webhooks): a config or a named mistake, never a trap.
    do {
        let config = try WebhookConfig.parse(text) { _ throws(WebhookConfigError) in Array("0123456789abcdef0123456789abcdef".utf8) }
        precondition(config.webhooks.count <= WebhookConfig.webhooksMax, "more webhooks than the limit were accepted")
        for webhook in config.webhooks {
            precondition((1...10_000).contains(webhook.queueMax) && webhook.backoffMaxMillis >= webhook.backoffMillis, "a webhook out of its limits was accepted")
            _ = webhook.backoff(before: 64)
        }
    } catch {
        precondition(!error.description.isEmpty, "a refusal without a reason")
    }
    return 0
}

runFuzzer { data, size in fuzzPlan(data, size) }
