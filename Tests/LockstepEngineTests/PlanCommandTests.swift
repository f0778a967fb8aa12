import Foundation
import Testing

/// `lockstep plan` and `lockstep rehearse` as people run them: the real binary, exit codes, output.
@Suite(.serialized) struct PlanCommandTests {
    static let examples = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("examples").path

    func write(_ yaml: String) throws -> String {
        let path = temporaryDirectory() + "/plan.yaml"
        try yaml.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    @Test func lintExitCodesSayWhetherThereAreErrorsOrOnlyWarnings() async throws {
        let clean = try await runLockstep(["plan", "lint", "\(Self.examples)/ledger-split.yaml"])
        #expect(clean.status == 0)
        #expect(clean.stdout.contains("ok: plan ledger-split, 7 nodes, 3 services"))
        let warningsOnly = try write("""
            name: w
            services: { orders: { owners: [team] } }
            nodes:
              - id: a
                service: orders
                phase: expand
                action: x
            """)
        let warned = try await runLockstep(["plan", "lint", warningsOnly])
        #expect(warned.status == 2)
        #expect(warned.stdout.contains("\(warningsOnly):4: warning: node a has no rollback action"))
        let broken = try write("name: b\nservices: { orders: { owners: [team] } }\nnodes:\n  - id: a\n    service: orders\n    phase: expand\n    action: x\n    needs: [z]\n")
        let failed = try await runLockstep(["plan", "lint", broken])
        #expect(failed.status == 1)
        #expect(failed.stdout.contains("\(broken):8: error: node a needs z, which is not a node of this plan [unknown_dependency]"))
    }

    /// A plan file is read no further than one byte past its limit (a sparse 2 GiB file took 4.2 GB and
    /// 14 s before), and bytes that are not UTF-8 are refused instead of applied as U+FFFD; neither is
    /// applied, and an unreadable file is exit status 66.
    @Test func aPlanFileOverItsLimitOrNotUTF8IsRefusedBeforeItIsRead() async throws {
        let sparse = temporaryDirectory() + "/huge.yaml"
        #expect(FileManager.default.createFile(atPath: sparse, contents: nil))
        let handle = try #require(FileHandle(forWritingAtPath: sparse))
        try handle.truncate(atOffset: 2 << 30)
        try handle.close()
        let huge = try await runLockstep(["plan", "lint", sparse])
        #expect(huge.status == 1 && huge.stdout.contains("\(sparse):0: error: the plan file is over 1048576 bytes, the limit [file_too_large]"), "\(huge)")
        let latin1 = temporaryDirectory() + "/latin1.yaml"
        try Data("name: p\nservices: { orders: { owners: [t] } }\nnodes:\n  - { id: a, service: orders, phase: custom, action: x, params: { c: caf\u{e9} } }\n"
            .utf8.map { $0 == 0xC3 ? 0xE9 : $0 }.filter { $0 != 0xA9 }).write(to: URL(fileURLWithPath: latin1))
        let data = temporaryDirectory()
        let refused = try await runLockstep(["plan", "apply", "--data", data, latin1])
        #expect(refused.status == 1 && refused.stderr.contains("error: the plan file is not UTF-8 text [not_utf8]"), "\(refused)")
        #expect(!FileManager.default.fileExists(atPath: data + "/events.sqlite"), "refused before the log was opened")
        #expect(try await runLockstep(["plan", "lint", data + "/missing.yaml"]).status == 66)
    }

    @Test func applyIsIdempotentAndVersionsChanges() async throws {
        let data = temporaryDirectory()
        let file = "\(Self.examples)/api-version-swap.yaml"
        let first = try await runLockstep(["plan", "apply", "--data", data, file, "--actor", "alice"])
        let again = try await runLockstep(["plan", "apply", "--data", data, file, "--actor", "alice"])
        #expect(first.stdout.hasPrefix("api-version-swap@1 applied"))
        #expect(again.stdout.hasPrefix("api-version-swap@1 unchanged"))
        let changed = try write(try String(contentsOfFile: file, encoding: .utf8).replacingOccurrences(of: "percent: 10", with: "percent: 25"))
        #expect(try await runLockstep(["plan", "apply", "--data", data, changed]).stdout.hasPrefix("api-version-swap@2 applied"))
        let list = try await runLockstep(["plan", "list", "--data", data])
        let rows = list.stdout.split(separator: "\n").map { $0.split(separator: " ").prefix(3).joined(separator: " ") }
        #expect(rows == ["plan version nodes", "api-version-swap 1 4", "api-version-swap 2 4"], "\(list.stdout)")
        let export = try await runLockstep(["history", "export", "--data", data])
        #expect(export.stdout.split(separator: "\n").count == 2)
        #expect(export.stdout.contains("\"actor\":{\"kind\":\"user\",\"id\":\"alice\"}"))
    }

    @Test func rehearsalIsRepeatableAcrossProcessesAndReportsRollback() async throws {
        let file = "\(Self.examples)/ledger-split.yaml"
        let arguments = ["rehearse", file, "--seed", "7", "--fail", "backfill-ledger:3"]
        let first = try await runLockstep(arguments)
        let second = try await runLockstep(arguments)
        #expect(first.stdout == second.stdout)
        #expect(first.status == 1, "a rolled-back rehearsal exits 1")
        #expect(first.stdout.contains("roll back [dual-write-orders, expand-ledger-schema]"))
        #expect(first.stdout.contains("result: rolled_back"))
        let ok = try await runLockstep(["rehearse", file])
        #expect(ok.status == 0)
        #expect(ok.stdout.contains("result: succeeded"))
        let badNode = try await runLockstep(["rehearse", file, "--fail", "nope"])
        #expect(badNode.status != 0)
        #expect(badNode.stderr.contains("--fail names nope, which is not a node of ledger-split"))
        // An empty NODE or count is a usage error, not a crash (`--fail ""` trapped on an index out of range).
        for (flag, value) in [("--fail", ""), ("--fail", ":2"), ("--hang", ""), ("--fail", "backfill-ledger:")] {
            let bad = try await runLockstep(["rehearse", file, flag, value])
            #expect(bad.status == 64 && bad.stderr.contains("Error: \(flag)"), "\(flag) \(value): \(bad)")
        }
    }

    /// Issue 7: a metric trace that breaches at the 10 % stage makes the rehearsal roll back by itself,
    /// in order, with the evidence in the record.
    @Test func aMetricBreachAtTenPercentRollsTheCanaryBackByItself() async throws {
        let file = "\(Self.examples)/checkout-canary.yaml"
        let breach = try await runLockstep(["rehearse", file, "--metric", "route-checkout:error_rate=0.002,0.05"])
        #expect(breach.status == 1, "\(breach)")
        let lines = breach.stdout.split(separator: "\n").map(String.init)
        func position(_ text: String) -> Int? { lines.firstIndex { $0.contains(text) } }
        let order = [
            "route-checkout: stage 1 analysis pass → advance; error_rate mean 0.002 of 3 (pass ≤ 0.01, marginal ≤ 0.02): pass",
            "route-checkout: stage 2 set",
            "route-checkout: stage 2 analysis fail → rollback; error_rate mean 0.05 of 3 (pass ≤ 0.01, marginal ≤ 0.02): fail",
            "abort (metric): the analysis of route-checkout failed at stage 10 (error_rate); roll back [route-checkout, deploy-pricing-v2]",
            "route-checkout: rolled back", "deploy-pricing-v2: rolled back", "migration_rolled_back",
        ]
        let positions = order.map(position)
        #expect(!positions.contains(nil), "missing from the timeline: \(zip(order, positions).filter { $0.1 == nil }.map(\.0))\n\(breach.stdout)")
        #expect(positions.compactMap { $0 } == positions.compactMap { $0 }.sorted(), "out of order:\n\(breach.stdout)")
        #expect(!breach.stdout.contains("stage 3 set"), "the 50 % stage must never be set")
        // Healthy metrics: every stage passes and the migration succeeds.
        let healthy = try await runLockstep(["rehearse", file])
        #expect(healthy.status == 0 && healthy.stdout.contains("route-checkout: stage 4 analysis pass → advance"), "\(healthy.stdout)")
        let unknown = try await runLockstep(["rehearse", file, "--metric", "route-checkout:cpu=1"])
        #expect(unknown.status != 0 && unknown.stderr.contains("judges error_rate, p99_latency_ms, not cpu"), "\(unknown)")
    }
}
