import Foundation
import LockstepCore
import LockstepEngine
import LockstepPlan
import Testing

/// The examples shipped under examples/.
let examplesDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().appendingPathComponent("examples").path

func example(_ name: String) throws -> String {
    try String(contentsOfFile: "\(examplesDirectory)/\(name)", encoding: .utf8)
}

/// (line, code) of each finding, in order.
func found(_ yaml: String) -> [String] {
    PlanFile.lint(yaml: yaml).findings.map { "\($0.line) \($0.severity.rawValue) \($0.code)" }
}

let header = """
    name: p
    services:
      orders: { owners: [orders-team] }
      ledger: { owners: [ledger-team] }
    nodes:

    """

@Suite struct PlanLintTests {
    @Test(arguments: ["ledger-split.yaml", "api-version-swap.yaml", "checkout-canary.yaml"])
    func theExamplesAreClean(file: String) throws {
        let load = PlanFile.lint(yaml: try example(file))
        #expect(load.findings == [])
        #expect(load.plan?.nodes.isEmpty == false)
    }

    @Test func theLedgerExampleReadsAsWritten() throws {
        let plan = try #require(PlanFile.lint(yaml: try example("ledger-split.yaml")).plan)
        #expect(plan.name == "ledger-split")
        #expect(plan.deadlineMillis == Int64(14) * 86_400_000)
        #expect(plan.services == [ServiceSpec(name: "payments", owners: ["payments-team"]), ServiceSpec(name: "orders", owners: ["orders-team"]),
                                  ServiceSpec(name: "ledger", owners: ["ledger-team", "dba"])])
        let dual = try #require(plan.node(NodeID("dual-write-orders")))
        #expect(dual.services == ["orders", "ledger"])
        #expect(dual.phase == .dualWrite)
        #expect(dual.paramsJSON == #"{"flag":"ledger_dual_write","percent":100}"#)
        #expect(dual.timeouts == Timeouts(startToCloseMillis: 900_000, heartbeatMillis: 30_000))
        let backfill = try #require(plan.node(NodeID("backfill-ledger")))
        #expect(backfill.retry == RetryPolicy(maxAttempts: 3, backoffInitialMillis: 60_000, backoffMaxMillis: 900_000, backoffMultiplier: 3))
        let contract = try #require(plan.node(NodeID("contract-orders")))
        #expect(contract.irreversible)
        #expect(contract.approval == ApprovalGate(minimum: 2, from: ["dba", "orders-team"]))
        #expect(contract.paramsJSON == #"{"columns":["ledger_amount","ledger_currency"],"table":"orders"}"#)
    }

    @Test func theContentHashIgnoresFormattingButNotContent() throws {
        let original = try example("api-version-swap.yaml")
        let reformatted = original.replacingOccurrences(of: "{ api_versions: [v1, v2] }", with: "\n      api_versions:\n        - v1\n        - v2")
            .replacingOccurrences(of: "# Swap", with: "# A comment changes nothing. Swap")
        let changed = original.replacingOccurrences(of: "percent: 10", with: "percent: 20")
        func hash(_ yaml: String) -> String? { PlanFile.lint(yaml: yaml).plan?.hashed().contentHash }
        #expect(hash(original) != nil)
        #expect(hash(reformatted) == hash(original))
        #expect(hash(changed) != hash(original))
    }

    @Test func eachProblemIsReportedAtItsLine() {
        let yaml = header + """
              - id: expand
                service: ledger
                phase: expand
                action: apply
                rollback: { action: undo }
              - id: expand
                service: payments
                phase: grow
                action: x
                colour: blue
                rollback: { action: undo }
              - id: dual
                services: [orders, ledger]
                phase: dual_write
                action: dual
                needs: [expand, ghost]
                rollback: { action: undo }
            """
        #expect(found(yaml) == [
            "11 error duplicate_node", "12 error unknown_service", "13 error invalid_value", "15 error unknown_field",
            "21 error unknown_dependency",
        ])
    }

    @Test func theCanaryExampleReadsItsExposureAndAnalysisAsWritten() throws {
        let node = try #require(PlanFile.lint(yaml: try example("checkout-canary.yaml")).plan?.node(NodeID("route-checkout")))
        #expect(node.exposure == ExposureSpec(stages: [1, 10, 50, 100].map(ExposureStage.percent), bakeMillis: 600_000))
        #expect(node.analysis == AnalysisSpec(metrics: [
            MetricCheck(name: "error_rate", direction: .lowerIsBetter, passMicros: 10_000, marginalMicros: 20_000, minSamples: 3),
            MetricCheck(name: "p99_latency_ms", direction: .lowerIsBetter, passMicros: 250_000_000, marginalMicros: 400_000_000, minSamples: 3),
        ], onMarginal: .pause))
    }

    @Test func exposureAndAnalysisProblemsAreReportedAtTheirLines() {
        let yaml = header + """
              - id: a
                service: orders
                phase: live
                action: route
                exposure: { stages: [10, 5], bake: 1m }
              - id: b
                service: orders
                phase: live
                action: route
                exposure: { stages: [off, live, shadow], bake: 1m }
              - id: c
                service: orders
                phase: live
                action: route
                exposure: { stages: [dual_write, shadow] }
              - id: d
                service: orders
                phase: live
                action: route
                analysis:
                  metrics:
                    - { name: errors, pass: { max: 0.01 }, marginal: { min: 0.02 } }
              - id: e
                service: ledger
                phase: live
                action: route
                exposure: { stages: [50, 100], bake: 0s }
                analysis:
                  metrics:
                    - { name: success, pass: { min: 0.99 }, marginal: { min: 0.995 } }
                    - { name: latency, pass: { between: 1 }, marginal: { max: 2 } }
                  on_marginal: shrug
            """
        // a–d have no usable exposure, so no_rollback warns of them; e's exposure undoes it, so it is not warned.
        #expect(found(yaml) == [
            "6 warning no_rollback", "10 error invalid_stage", "11 warning no_rollback", "15 error invalid_stage", "16 warning no_rollback",
            "20 error missing_field", "21 warning no_rollback", "25 error analysis_without_exposure", "27 error invalid_threshold",
            "35 error invalid_threshold", "36 error invalid_threshold", "37 error invalid_value",
        ])
    }

    @Test func exposureAndAnalysisLimitsAreEnforcedAtTheirValues() {
        func node(stages: Int, metrics: Int) -> String {
            let list = (1...stages).map(String.init).joined(separator: ", ")
            let checks = (0..<metrics).map { "        - { name: m\($0), pass: { max: 1 }, marginal: { max: 2 } }" }.joined(separator: "\n")
            return header + """
                  - id: a
                    service: orders
                    phase: live
                    action: route
                    exposure: { stages: [\(list)], bake: 1s }
                    analysis:
                      metrics:
                \(checks)

                """
        }
        #expect(found(node(stages: CoreLimits.exposureStagesMax, metrics: CoreLimits.analysisMetricsMax)) == [])
        #expect(found(node(stages: CoreLimits.exposureStagesMax + 1, metrics: 1)).contains("10 error too_many_entries"))
        #expect(found(node(stages: 1, metrics: CoreLimits.analysisMetricsMax + 1)).contains("13 error too_many_entries"))
    }

    @Test func aCheckWithoutFreshnessIsAWarningAtItsOwnLine() throws {
        let yaml = header + "  - id: a\n    service: orders\n    phase: custom\n    action: x\n    rollback: { action: u }\n    checks:\n"
            + "      - name: fresh\n        pass: ok\n        fresh_for: 1h\n      - name: unfresh\n        pass: ok\n"
        let lines = yaml.split(separator: "\n", omittingEmptySubsequences: false)
        let line = try #require(lines.firstIndex { $0.contains("name: unfresh") }) + 1
        let lint = PlanFile.lint(yaml: yaml)
        #expect(found(yaml) == ["\(line) warning check_without_freshness"], "\(lint.findings)")
        #expect(lint.findings.first?.message == "check unfresh of a sets no fresh_for: a pass counts however old it is when the step starts (add fresh_for: 1h)")
        #expect(lint.plan?.nodes.first?.checks.map(\.freshForMillis) == [3_600_000, nil])
    }

    @Test func aCheckOrAMetricNamedTwiceAndAPlanWithoutServicesAreErrors() {
        let yaml = header + """
              - id: a
                service: orders
                phase: live
                action: route
                exposure: { stages: [50, 100], bake: 1m }
                analysis:
                  metrics:
                    - { name: errors, pass: { max: 0.01 }, marginal: { max: 0.02 } }
                    - { name: errors, pass: { max: 0.02 }, marginal: { max: 0.03 } }
                checks:
                  - { name: lag, pass: ok, fresh_for: 1h }
                  - { name: lag, pass: ok, fresh_for: 1h }
            """
        #expect(found(yaml) == ["14 error duplicate_metric", "17 error duplicate_check"])
        let empty = "name: p\nservices: {}\nnodes:\n  - id: a\n    service: orders\n    phase: custom\n    action: x\n"
        #expect(found(empty).contains("1 error no_services"), "\(found(empty))")
    }

    @Test func aCycleIsNamedAtItsFirstNode() {
        let yaml = header + """
              - id: a
                service: orders
                phase: custom
                action: x
                needs: [b]
                rollback: { action: u }
              - id: b
                service: orders
                phase: custom
                action: x
                needs: [a]
                rollback: { action: u }
            """
        let load = PlanFile.lint(yaml: yaml)
        #expect(load.findings.map(\.message) == ["dependency cycle: a -> b -> a"])
        #expect(load.findings.map(\.line) == [6])
    }

    @Test func aContractMustFollowEveryMoveOfItsServicesReadersAndWriters() {
        let yaml = header + """
              - id: dual
                services: [orders, ledger]
                phase: dual_write
                action: x
                rollback: { action: u }
              - id: switch
                service: orders
                phase: live
                action: x
                needs: [dual]
                rollback: { action: u }
              - id: contract
                service: orders
                phase: contract
                action: x
                needs: [dual]
                approvals: { minimum: 1 }
                irreversible: true
            """
        let load = PlanFile.lint(yaml: yaml)
        #expect(load.errors.map(\.message) == ["contract node contract does not depend on switch, which moves orders's readers or writers; add it to needs"])
        #expect(load.errors.map(\.line) == [17])
        // Depending on it transitively is enough.
        #expect(found(yaml.replacingOccurrences(of: "    needs: [dual]\n    approvals", with: "    needs: [switch]\n    approvals")) == [])
    }

    @Test func anIrreversibleNodeNeedsAGateAndAGateNeedsApprovers() {
        let yaml = header + """
              - id: drop
                service: orders
                phase: contract
                action: x
                irreversible: true
              - id: flip
                service: ledger
                phase: live
                action: x
                rollback: { action: u }
                approvals: { minimum: 1, from: [] }
            """
        #expect(found(yaml.replacingOccurrences(of: "ledger-team", with: "")) .contains("6 error irreversible_without_gate"))
        let load = PlanFile.lint(yaml: yaml.replacingOccurrences(of: "ledger: { owners: [ledger-team] }", with: "ledger: { owners: [] }"))
        #expect(load.findings.map { "\($0.line) \($0.code)" } == ["6 irreversible_without_gate", "16 gate_without_approvers"])
    }

    @Test func aNodeWithoutRollbackBeforeAnythingIrreversibleIsAWarning() {
        let yaml = header + """
              - id: expand
                service: ledger
                phase: expand
                action: x
              - id: check
                service: ledger
                phase: verify
                action: x
                needs: [expand]
              - id: drop
                service: orders
                phase: contract
                action: x
                approvals: { minimum: 1 }
                irreversible: true
              - id: after
                service: orders
                phase: cleanup
                action: x
                needs: [drop]
            """
        // verify nodes are read-only, and nothing after an irreversible node can be rolled back anyway.
        #expect(found(yaml) == ["6 warning no_rollback"])
    }

    @Test func contradictoryAndUnusualTimeoutsAreFound() {
        let yaml = header + """
              - id: slow
                service: ledger
                phase: backfill
                action: x
                timeouts: { start_to_close: 10s, heartbeat: 30s }
                retry: { max_attempts: 3, backoff: 5m, max_backoff: 1m }
                rollback: { action: u }
              - id: odd
                service: ledger
                phase: backfill
                action: x
                timeouts: { schedule_to_start: 200ms, start_to_close: 2d, heartbeat: 500ms }
                rollback: { action: u }
            """
        #expect(found(yaml) == [
            "10 error unreasonable_timeout", "11 error unreasonable_backoff",
            "17 warning unreasonable_timeout", "17 warning unreasonable_timeout", "17 warning unreasonable_timeout",
        ])
    }

    @Test func malformedFilesGiveOneClearError() {
        #expect(found("name: x\nnodes: [\n") == ["3 error yaml_syntax"])
        #expect(found("- just\n- a list\n") == ["1 error not_a_mapping"])
        #expect(found("name: x\nservices: { a: { owners: [t] } }\n") == ["1 error missing_field"])
        #expect(found(header + "  - id: a\n    service: orders\n    phase: custom\n    action: x\n    timeouts: { heartbeat: soon }\n    rollback: { action: u }\n")
            == ["10 error invalid_duration"])
        let huge = String(repeating: "#", count: PlanFile.fileBytesMax + 1)
        #expect(found(huge) == ["0 error file_too_large"])
    }

    @Test func whatTheCoreRefusesLintReportsAtTheValuesOwnLine() {
        let long = String(repeating: "n", count: CoreLimits.identifierBytesMax + 1)
        #expect(found(header + "  - id: \(long)\n    service: orders\n    phase: custom\n    action: x\n    rollback: { action: u }\n")
            == ["6 error invalid_value"])
        let yaml = header + """
              - id: c d
                service: orders
                phase: custom
                action: x
                retry: { max_attempts: -3, multiplier: 0 }
                approvals: { minimum: 40, from: ["bad group"] }
                deadline: 90d
                rollback: { action: u }
            """
        // Every problem at once, each at its line, with the value as written (nothing clamped).
        #expect(found(yaml) == ["6 error invalid_value", "10 error invalid_value", "10 error invalid_value", "11 error invalid_value",
                                "11 error invalid_value", "12 error invalid_duration"])
        #expect(PlanFile.lint(yaml: yaml).findings[1].message == "max_attempts of c d is -3; it must be 1...100")
    }
}
