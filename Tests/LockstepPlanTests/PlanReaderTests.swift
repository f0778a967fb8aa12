import Foundation
import LockstepCore
import LockstepEngine
import LockstepPlan
import Testing

// The plan reader beyond lint's findings: durations, the schema's keys, hostile YAML, mutated plans,
// baselines and change windows as read (the shared `header`, `found` and `example` are in PlanLintTests.swift).

@Suite struct DurationTests {
    @Test func durationsParseWithTheirUnits() {
        let plan = { (text: String) in PlanFile.read(yaml: header + "  - id: a\n    service: orders\n    phase: custom\n    action: x\n    deadline: \(text)\n").plan?.nodes.first?.deadlineMillis }
        #expect(plan("500ms") == 500)
        #expect(plan("30s") == 30_000)
        #expect(plan("10m") == 600_000)
        #expect(plan("2h") == 7_200_000)
        #expect(plan("1d") == 86_400_000)
        #expect(plan("1.5h") == nil)
        #expect(plan("-1s") == nil)
        #expect(plan("99999999999999999d") == nil)
        // Written as a duration but too long to count: said to be too long, not to be no duration.
        for text in ["99999999999999999d", "99999999999999999999999ms"] {
            let load = PlanFile.lint(yaml: header + "  - id: a\n    service: orders\n    phase: custom\n    action: x\n    deadline: \(text)\n")
            #expect(load.errors.map(\.message).contains("deadline of a is \(text); durations are at most 30d"), "\(load.findings)")
        }
        #expect(PlanDuration.parse("99999999999999999d") == .overflow && PlanDuration.parse("1.5h") == .notADuration && PlanDuration.parse("30d") == .milliseconds(2_592_000_000))
        let long = String(repeating: "9", count: 100) + "d"
        #expect(PlanFile.lint(yaml: header + "  - id: a\n    service: orders\n    phase: custom\n    action: x\n    deadline: \(long)\n").errors
                    .contains { $0.message == "deadline of a is \(long.prefix(32))…; durations are at most 30d" })
    }
}

@Suite struct PlanSchemaTests {
    /// docs/plan.schema.json and the reader must know the same keys, or one of them drifted.
    @Test func theSchemaAndTheReaderKnowTheSameFields() throws {
        let path = URL(fileURLWithPath: examplesDirectory).deletingLastPathComponent().appendingPathComponent("docs/plan.schema.json")
        let schema = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: path)) as? [String: Any])
        let top = try #require(schema["properties"] as? [String: Any])
        #expect(Set(top.keys) == PlanFile.planKeys)
        let node = try #require((schema["$defs"] as? [String: Any])?["node"] as? [String: Any])
        #expect(Set(try #require(node["properties"] as? [String: Any]).keys) == PlanFile.nodeKeys)
        let phases = try #require(((node["properties"] as? [String: Any])?["phase"] as? [String: Any])?["enum"] as? [String])
        #expect(phases == Phase.allCases.map(\.rawValue))
    }
}

@Suite struct HostilePlanTests {
    func node(_ extra: String) -> String {
        header + "  - id: n\n    service: orders\n    phase: custom\n    action: x\n    rollback: { action: u }\n" + extra
    }

    @Test func yaml11ScalarsStayStringsAndBase60NeverTraps() throws {
        let load = PlanFile.lint(yaml: node("    params: {t: 1:0:0:0:0:0:0:0:0:0:0, country: NO, mode: 0755, v: 2026_11, when: 1:30, n: 42, f: 1.5, b: true, z: ~}\n"))
        #expect(load.findings == [])
        #expect(load.plan?.nodes.first?.paramsJSON
            == #"{"b":true,"country":"NO","f":"1.5","mode":"0755","n":42,"t":"1:0:0:0:0:0:0:0:0:0:0","v":"2026_11","when":"1:30","z":null}"#)
        #expect(found(node("    retry: { max_attempts: 1:0:0:0:0:0:0:0:0:0:0 }\n")) == ["11 error invalid_value"])
    }

    @Test func anchorsAndAliasesAreRefusedBeforeAnythingExpands() {
        let bomb = "name: x\na: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
        #expect(found(bomb) == ["2 error yaml_alias"])
        #expect(found(node("    params: { p: *c }\n")) == ["11 error yaml_alias"])
        // Quoted text, comments and block scalars are not aliases.
        #expect(found(node("    params: { glob: \"*.sql\", note: '&amp' }  # *not* an alias\n")) == [])
        #expect(found("name: p\ndescription: |\n  - *bold* text &more\nservices:\n  orders: { owners: [t] }\nnodes:\n  - id: n\n    service: orders\n    phase: custom\n    action: x\n    rollback: { action: u }\n") == [])
    }

    /// A plan over the node or service limit is refused before its nodes are read or any lint rule runs
    /// (a review's 95,000-node file, under 1 MiB, took lint to 1.1 GB and 381,000 findings).
    @Test func tooManyNodesOrServicesAreRefusedBeforeAnyIsRead() {
        let nodes = (0...CoreLimits.planNodesMax).map { "  - id: n\($0)\n" }.joined()
        #expect(found(header + nodes) == ["6 error too_many_nodes"])
        let services = (0...CoreLimits.planNodesMax).map { "  s\($0): { owners: [t] }\n" }.joined()
        #expect(found("name: p\nservices:\n" + services + "nodes:\n  - id: n\n") == ["3 error too_many_services"])
        // At the limit, the nodes are read (and each found wanting on its own).
        let atLimit = PlanFile.read(yaml: header + (1..<CoreLimits.planNodesMax).map { "  - id: n\($0)\n    service: orders\n    phase: custom\n    action: x\n" }.joined())
        #expect(atLimit.plan?.nodes.count == CoreLimits.planNodesMax - 1 && atLimit.errors.isEmpty)
    }

    /// A node's lists are refused past their limits before they are read: one `needs` of 60,000 entries
    /// was 60,000 `unknown_dependency` findings (a review's estimate for 1 MiB: half a million).
    @Test func aNodesListsPastTheirLimitsAreRefusedBeforeTheyAreRead() {
        let needs = Array(repeating: "x", count: 60_000).joined(separator: ", ")
        #expect(found(header + "  - { id: a, service: orders, phase: custom, action: x, rollback: { action: u }, needs: [\(needs)] }\n")
                == ["6 error too_many_entries"])
        let services = (0...CoreLimits.nodeServicesMax).map { "s\($0)" }.joined(separator: ", ")
        #expect(found(header + "  - { id: a, services: [\(services)], phase: custom, action: x, rollback: { action: u } }\n")
                == ["6 error too_many_entries"])
        // Every other list with a limit of its own: owners (of the plan and of a service) and a gate's
        // groups, windows (each would be parsed, its zone looked up) and checks.
        let groups = (0...CoreLimits.ownerGroupsMax).map { "g\($0)" }.joined(separator: ", ")
        let node = "  - { id: a, service: orders, phase: custom, action: x, rollback: { action: u } }\n"
        #expect(found("name: p\nowners: [\(groups)]\nservices:\n  orders: { owners: [t] }\nnodes:\n" + node) == ["2 error too_many_entries"])
        #expect(found("name: p\nservices:\n  orders: { owners: [\(groups)] }\nnodes:\n" + node) == ["3 error too_many_entries"])
        #expect(found(header + "  - { id: a, service: orders, phase: custom, action: x, rollback: { action: u }, approvals: { minimum: 1, from: [\(groups)] } }\n")
                == ["6 error too_many_entries"])
        let windows = Array(repeating: "\"Mon 09:00-10:00 Nowhere/Zone\"", count: CoreLimits.windowsPerLevelMax + 1).joined(separator: ", ")
        #expect(found(header + "  - { id: a, service: orders, phase: custom, action: x, rollback: { action: u }, windows: [\(windows)] }\n")
                == ["6 error too_many_entries"])
        let checks = Array(repeating: "{ name: c, pass: ok }", count: CoreLimits.checksPerNodeMax + 1).joined(separator: ", ")
        #expect(found(header + "  - { id: a, service: orders, phase: custom, action: x, rollback: { action: u }, checks: [\(checks)] }\n")
                == ["6 error too_many_entries"])
        // At their limits, read (the unknown zones found one by one, the checks' missing freshness too).
        let atLimit = Array(repeating: "\"Mon 09:00-10:00 Nowhere/Zone\"", count: CoreLimits.windowsPerLevelMax).joined(separator: ", ")
        #expect(found(header + "  - { id: a, service: orders, phase: custom, action: x, rollback: { action: u }, windows: [\(atLimit)] }\n").count
                == CoreLimits.windowsPerLevelMax)
    }

    @Test func findingsPastTheirLimitAreCountedInOneMore() {
        // Each node has one unknown key: one error a node, past `findingsMax`.
        let count = PlanFile.findingsMax + 20
        let load = PlanFile.lint(yaml: header + (0..<count).map { "  - { id: n\($0), service: orders, phase: custom, action: x, rollback: { action: u }, colour: red }\n" }.joined())
        #expect(load.findings.count == PlanFile.findingsMax + 1 && load.errorCount == count && load.warningCount == 0)
        let last = load.findings.last
        #expect(last?.code == "too_many_findings" && last?.severity == .error && last?.message.hasPrefix("20 more findings (20 of them errors)") == true,
                "\(String(describing: last))")
    }

    /// A key JSON could not keep as written is an error where it is, not a value lost: params keys that
    /// are lists or mappings, or two with the same text (`1` and "1"), and such keys among a plan's fields
    /// or services (a review saw each read "ok" and dropped or written as duplicate JSON keys).
    @Test func keysThatAreNotTextOrReadTheSameAreRefused() {
        #expect(found(node("    params: {1: first, \"1\": second}\n")) == ["11 error invalid_key"])
        #expect(found(node("    params: {outer: [{? [x, y] : complex}]}\n")) == ["11 error invalid_key"])
        #expect(found(node("    ? [irreversible]\n    : true\n")) == ["11 error invalid_key"])
        #expect(found("name: p\nservices:\n  ? [t]\n  : { owners: [b] }\n  orders: { owners: [t] }\nnodes:\n"
                      + "  - { id: n, service: orders, phase: custom, action: x, rollback: { action: u, params: {2: x, \"2\": y} } }\n")
                == ["3 error invalid_key", "7 error invalid_key"])
        // Distinct keys of any scalar kind are kept, as text.
        #expect(PlanFile.lint(yaml: node("    params: {1: one, true: yes, b: [1, {c: d}]}\n")).plan?.nodes.first?.paramsJSON
                == #"{"1":"one","b":[1,{"c":"d"}],"true":"yes"}"#)
    }

    /// A finding quotes what the file says, never its control characters: an id with a terminal escape in
    /// it would clear the screen of whoever lints the file, or forge a line of a CI log.
    @Test func findingsQuoteControlCharactersEscaped() {
        let load = PlanFile.lint(yaml: header + "  - id: \"a\\e[2J\\nb\"\n    service: orders\n    phase: custom\n    action: x\n    rollback: { action: u }\n")
        let messages = load.findings.map(\.message).joined(separator: " ")
        #expect(messages.contains(#"a\u{1B}[2J\u{A}b"#), "\(messages)")
        #expect(!messages.unicodeScalars.contains { $0.value < 0x20 || (0x7F...0x9F).contains($0.value) })
        #expect("tab\there, ok é".quotable == #"tab\u{9}here, ok é"#)
        // Reordering controls and separators are escaped too, and quoting twice changes nothing.
        #expect("x\u{202E}y\u{2028}z".quotable == #"x\u{202E}y\u{2028}z"# && "x\u{1B}".quotable.quotable == "x\u{1B}".quotable)
    }

    @Test func aByteTheYAMLReaderRefusesIsReportedAtItsLine() {
        let load = PlanFile.lint(yaml: header + "  - id: n\n    service: orders\n    phase: custom\n    action: x\u{0}y\n")
        #expect(load.findings.map { "\($0.line) \($0.code)" } == ["9 yaml_syntax"], "\(load.findings)")
    }

    @Test func malformedNeedsAreReportedNotDropped() {
        #expect(found(node("    needs: [[n2]]\n")) == ["11 error invalid_value"])
        #expect(found(node("    needs: [{n2: x}]\n")) == ["11 error invalid_value"])
        #expect(found(node("    needs: {n2: x}\n")) == ["11 error invalid_value"])
    }

    @Test func duplicateKeysAreReportedWithALine() {
        let load = PlanFile.lint(yaml: node("    action: y\n"))
        #expect(load.findings.map(\.code) == ["yaml_syntax"])
        #expect(load.findings.first?.line ?? 0 > 0)
        // With a tag the parser takes it for another key: the reader finds the field twice.
        #expect(found(node("    !x action: y\n")) == ["11 error duplicate_field"])
    }
}

@Suite struct PlanReaderFuzzTests {
    /// Byte- and token-level mutations of the examples must never trap the reader: every outcome is a plan
    /// or findings. `LOCKSTEP_FUZZ_ROUNDS` raises the count.
    @Test func mutatedPlansNeverTrap() async throws {
        let rounds = Int(ProcessInfo.processInfo.environment["LOCKSTEP_FUZZ_ROUNDS"] ?? "") ?? 2_000
        let sources = [try example("ledger-split.yaml"), try example("api-version-swap.yaml")]
        let tokens = ["&a ", "*a", "!!binary ", "? ", "- ", ": ", "{", "}", "[", "]", "\"", "'", "|\n", ">\n", "#", "\t", "1:0:0:0:0:0:0:0:0:0:0",
                      "99999999999999999999", "-0", "0x1f", "0o17", ".inf", "null", "~", "needs: [", "\u{0}", "\u{FEFF}", "é", "\n  - id: x\n"]
        var generator = SplitMix64(seed: 0x5EED)
        func next() -> Int { Int(truncatingIfNeeded: generator.next() >> 1) }
        var plans = 0
        for round in 0..<rounds {
            // Seconds of CPU: the other tests get the thread back now and then (LockstepTestSupport's yieldToOtherTests).
            if round % 50 == 0 { await Task.yield() }
            var text = Array(sources[round % 2].unicodeScalars)
            for _ in 0...(next() % 4) {
                let at = next() % max(1, text.count)
                switch next() % 3 {
                case 0: text.insert(contentsOf: tokens[next() % tokens.count].unicodeScalars, at: at)
                case 1: text.removeSubrange(at..<min(text.count, at + 1 + next() % 8))
                default: if let scalar = Unicode.Scalar(UInt32(next() % 0x7F)) { text[at] = scalar }
                }
            }
            var yaml = ""
            yaml.unicodeScalars.append(contentsOf: text)
            let load = PlanFile.lint(yaml: yaml)
            if load.errors.isEmpty { plans += 1 }
        }
        #expect(plans > 0 && plans < rounds, "mutations must sometimes keep and sometimes break the plan")
    }

    @Test func aPlanWithoutABaselineRuleKeepsTheContentHashItHadBeforeBaselinesExisted() throws {
        let plan = try #require(PlanFile.lint(yaml: try example("checkout-canary.yaml")).plan)
        // What `lockstep plan apply` printed for it before analysis against a baseline existed.
        #expect(plan.hashed().contentHash == "fcea752d0380c72de4f8a94a914656e2bb5000c4fb7298c29c56ae5a1a873bb2")
    }

    @Test func baselineRulesReadAsWrittenAndBadOnesAreFound() throws {
        let node = """
              - id: route
                service: orders
                phase: live
                action: route
                exposure: { stages: [10, 50], bake: 1m }
                analysis:
                  metrics:
                    - name: error_rate
                      pass: { max: 0.02 }
                      marginal: { max: 0.05 }
                      min_samples: 3
                      BASELINE

            """
        func plan(_ baseline: String) -> String { header + node.replacingOccurrences(of: "BASELINE", with: baseline) }
        let good = PlanFile.lint(yaml: plan("baseline: { pass: { max_ratio: 1.1, max_increase: 0.005 }, marginal: { max_ratio: 1.25 } }"))
        #expect(good.errors.isEmpty, "\(good.findings)")
        // A threshold is a decimal number: hexadecimal (text in the plan's YAML) is not taken for one.
        #expect(PlanFile.lint(yaml: plan("").replacingOccurrences(of: "max: 0.02", with: "max: 0x10")).findings.map(\.code) == ["invalid_threshold"])
        #expect(PlanFile.lint(yaml: plan("").replacingOccurrences(of: "max: 0.02", with: "max: 2e-2")).errors.isEmpty)
        let check = try #require(good.plan?.nodes.first?.analysis?.metrics.first)
        #expect(check.baseline == BaselineRule(pass: BaselineLimits(ratioMicros: 1_100_000, differenceMicros: 5_000),
                                               marginal: BaselineLimits(ratioMicros: 1_250_000)))
        // The node ends at 50 %: a baseline is left. At 100 % none is, and lint says so.
        #expect(!good.findings.contains { $0.code == "baseline_without_source" })
        let toTheEnd = PlanFile.lint(yaml: plan("baseline: { pass: { max_ratio: 1.1 } }").replacingOccurrences(of: "stages: [10, 50]", with: "stages: [10, 100]"))
        #expect(toTheEnd.findings.map { "\($0.severity.rawValue) \($0.code)" } == ["warning baseline_without_source"], "\(toTheEnd.findings)")
        // marginal defaults to pass
        let defaulted = PlanFile.lint(yaml: plan("baseline: { pass: { max_ratio: 1.1 } }")).plan?.nodes.first?.analysis?.metrics.first?.baseline
        #expect(defaulted?.marginal == BaselineLimits(ratioMicros: 1_100_000))
        // min_ratio belongs to higher-is-better metrics; a marginal stricter than pass; no limit at all; not a number.
        for bad in ["baseline: { pass: { min_ratio: 0.9 } }", "baseline: { pass: { max_ratio: 1.2 }, marginal: { max_ratio: 1.1 } }",
                    "baseline: { pass: {} }", "baseline: { pass: { max_ratio: lots } }", "baseline: { marginal: { max_ratio: 1.1 } }",
                    "baseline: 1.1", "baseline: { pass: { max_ratio: 0x10 } }", "baseline: { pass: { max_ratio: inf } }"] {
            let load = PlanFile.lint(yaml: plan(bad))
            #expect(!load.errors.isEmpty, "\(bad) was taken")
        }
    }

    @Test func aRehearsalJudgesTheCanaryAgainstItsBaseline() async throws {
        // checkout-canary with a baseline rule on error_rate: at most 1.5 times the baseline.
        let yaml = try example("checkout-canary.yaml").replacingOccurrences(
            of: "          pass: { max: 0.01 }\n", with: "          pass: { max: 0.01 }\n          baseline: { pass: { max_ratio: 1.5 } }\n")
        let plan = try #require(PlanFile.lint(yaml: yaml).plan).hashed()
        #expect(plan.nodes[1].analysis?.metrics.first?.baseline != nil)
        // The canary at 0.008 everywhere passes its absolute threshold; against a baseline at 0.002 from stage 2 on, it fails there.
        var options = Rehearsal.Options()
        options.metrics = [NodeID("route-checkout"): ["error_rate": [8_000]]]
        options.baselines = [NodeID("route-checkout"): ["error_rate": [8_000, 2_000]]]
        let failing = try await Rehearsal(plan: plan, options: options).run()
        #expect(failing.final.status == .rolledBack)
        let verdicts = failing.timeline.compactMap { entry -> String? in
            guard case .analysisEvaluated(let record) = entry.event else { return nil }
            return "\(record.stage) \(record.outcome.rawValue) \(record.evidence[0].relativeOutcome?.rawValue ?? "-")"
        }
        #expect(verdicts == ["1 pass pass", "2 fail fail"])
        // Without a baseline trace the baseline reports what the canary does: every stage passes.
        options.baselines = [:]
        #expect(try await Rehearsal(plan: plan, options: options).run().final.status == .succeeded)
    }

    // MARK: - Change windows

    func windowed(plan planWindows: String = "", node nodeWindows: String = "", service serviceWindows: String = "") -> String {
        """
        name: windowed
        \(planWindows.isEmpty ? "" : "windows: \(planWindows)")
        services:
          orders:
            owners: [orders-team]
            \(serviceWindows.isEmpty ? "" : "windows: \(serviceWindows)")
        nodes:
          - id: expand
            service: orders
            phase: expand
            action: add-column
            rollback: { action: drop-column }
            \(nodeWindows.isEmpty ? "" : "windows: \(nodeWindows)")
        """
    }

    @Test func windowsAreReadAtEveryLevelAndEachBadOneIsReportedAtItsLine() throws {
        let load = PlanFile.lint(yaml: windowed(plan: #"["Mon-Fri 09:00-16:00 Europe/Berlin"]"#, node: #""daily 06:00-20:00 UTC""#,
                                                service: #"["Tue 04:00-12:00 America/New_York", "Thu 04:00-12:00 America/New_York"]"#))
        #expect(load.findings.isEmpty, "\(load.findings)")
        let plan = try #require(load.plan)
        #expect(plan.windows.map(\.description) == ["Mon-Fri 09:00-16:00 Europe/Berlin"])
        #expect(plan.services[0].windows.map(\.description) == ["Tue 04:00-12:00 America/New_York", "Thu 04:00-12:00 America/New_York"])
        #expect(plan.nodes[0].windows.map(\.description) == ["Mon-Sun 06:00-20:00 UTC"])
        #expect(plan.windowZones == ["America/New_York", "Europe/Berlin", "UTC"])
        // A window that is not one, and a zone nobody knows, each at its own line.
        let bad = PlanFile.lint(yaml: windowed(node: #"["Mon-Fri 9-16 UTC", "Mon-Fri 09:00-16:00 Mars/Olympus_Mons"]"#))
        #expect(bad.findings.map { "\($0.severity.rawValue) \($0.code)" } == ["error invalid_window", "error unknown_time_zone"], "\(bad.findings)")
        #expect(bad.findings.allSatisfy { $0.line == 13 }, "\(bad.findings.map(\.line))")
        let tooMany = PlanFile.lint(yaml: windowed(plan: "[" + Array(repeating: #""Mon 09:00-10:00 UTC""#, count: 17).joined(separator: ", ") + "]"))
        #expect(tooMany.errors.contains { $0.message.contains("the limit is 16") }, "\(tooMany.findings)")
    }

    @Test func lintWarnsAboutWindowsThatNeverOpenTogether() throws {
        let monday = Instant(millisecondsSinceEpoch: 1_774_828_800_000)  // 2026-03-30T00:00Z
        let never = PlanFile.lint(yaml: windowed(plan: #""Mon-Fri 09:00-17:00 UTC""#, node: #""Sat 09:00-10:00 UTC""#), now: monday)
        #expect(never.findings.map { "\($0.severity.rawValue) \($0.code)" } == ["warning window_never_opens"], "\(never.findings)")
        #expect(never.findings.first?.message.contains("Mon-Fri 09:00-17:00 UTC; and Sat 09:00-10:00 UTC") == true, "\(never.findings)")
        // Offsets count: 09:00-10:00 in Berlin is 07:00-08:00 UTC in summer, which a 08:00-09:00 UTC window never meets.
        let offset = PlanFile.lint(yaml: windowed(plan: #""Mon 08:00-09:00 UTC""#, node: #""Mon 09:00-10:00 Europe/Berlin""#), now: monday)
        #expect(offset.findings.map(\.code) == ["window_never_opens"], "\(offset.findings)")
        let winter = PlanFile.lint(yaml: windowed(plan: #""Mon 08:00-09:00 UTC""#, node: #""Mon 09:00-10:00 Europe/Berlin""#),
                                   now: Instant(millisecondsSinceEpoch: 1_768_780_800_000))  // 2026-01-19T00:00Z, +01:00
        #expect(winter.findings.isEmpty, "\(winter.findings)")
    }
}
