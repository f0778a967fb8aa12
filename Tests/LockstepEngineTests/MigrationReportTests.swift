import Foundation
import LockstepCore
import LockstepEngine
import LockstepPlan
import LockstepStore
import Testing

/// `lockstep migration report` (issue 20): drawn from golden histories, with what each must say literally.
@Suite struct MigrationReportTests {
    static func report(_ id: String, history: String = "scenario-v7") async throws -> (MigrationReport, [UInt64]) {
        let copy = try copyDatabase("\(GoldenHistoryTests.directory)/\(history).sqlite")
        let log = try SQLiteEventLog(path: copy + "/events.sqlite", mode: .readOnly)
        let verified = try await HistoryVerifier.verify(log)
        let events = try await History.migrationEvents(MigrationID(id), in: log)
        let integrity = MigrationReport.Integrity(headSequence: verified.head.sequence, headHashHex: verified.head.chainHash.hex, verified: true)
        return (try MigrationReport(events: events, integrity: integrity), events.map(\.sequence))
    }

    @Test func anAbortedMigrationsReportNamesWhoDidWhatTheRollbackAndEveryEvent() async throws {
        let (report, sequences) = try await Self.report("ledger-split-undo")
        // Every event of the migration is one entry of the timeline, in order.
        #expect(report.timeline.map(\.sequence) == sequences)
        #expect(sequences == Array(60...104))
        #expect(report.status == "rolled_back" && report.statusReason == "error budget burning")
        #expect(report.people.map { "\($0.who) \($0.action) \($0.node)" } == [
            "alice started ", "bob approved switch-reads-payments", "alice aborted ",
        ])
        #expect(report.rollbacks.count == 1)
        let rollback = try #require(report.rollbacks.first)
        #expect(rollback.trigger == "operator" && rollback.by == "user:alice" && rollback.outcome == "rolled_back")
        #expect(rollback.millis == 8_000)
        #expect(rollback.nodes == ["switch-reads-payments", "backfill-ledger", "dual-write-orders", "expand-ledger-schema"])
        // Partly migrated from the first node's completion (+2s) to the rollback's end (+19s).
        #expect(report.partiallyMigratedMillis == 17_000)
        let gate = try #require(report.nodes.first { $0.node == "switch-reads-payments" })
        #expect(gate.durations.map { "\($0.status) \($0.millis)" } == [
            "awaiting_approval 1000", "waiting_for_services 0", "ready 1000", "running 1000", "rolling_back 1000",
        ])
        #expect(report.integrity.headSequence == 246 && report.integrity.verified)
    }

    @Test func analysesChecksAndTheirTriggersAreInTheReport() async throws {
        let (canary, _) = try await Self.report("canary-1")
        #expect(canary.judgements.map { "\($0.kind) \($0.outcome)" } == ["analysis pass", "analysis inconclusive", "analysis fail"])
        #expect(canary.rollbacks.map(\.trigger) == ["metric"])
        #expect(canary.people.map(\.action) == ["started", "resumed", "overrode the analysis"])
        let route = try #require(canary.nodes.first { $0.node == "route" })
        #expect(route.durations.first { $0.status == "baking" }?.millis == 192_000)

        let (checked, _) = try await Self.report("c-2")
        #expect(checked.judgements.map { "\($0.node) \($0.kind) \($0.outcome)" } == ["step-0 check fail"])
        #expect(checked.rollbacks.map(\.trigger) == ["check"])
        // Never changed: never partly migrated.
        #expect(checked.partiallyMigratedMillis == 0)
    }

    @Test func aRunningMigrationsSpansRunToTheLastEventAndStayOpen() async throws {
        let (report, _) = try await Self.report("billing-1")
        #expect(report.status == "running")
        let open = report.spans.filter(\.open)
        #expect(!open.isEmpty)
        #expect(open.allSatisfy { $0.to == report.endedAt })
        #expect(report.people.map(\.action) == ["started", "stopped the line", "resumed"])
    }

    @Test func theThreeFormsSayTheSameAndTheHTMLHasAChartAndNoScript() async throws {
        let (report, sequences) = try await Self.report("ledger-split-undo")
        let json = try #require(try JSONSerialization.jsonObject(with: Data(report.json.utf8)) as? [String: Any])
        let timeline = try #require(json["timeline"] as? [[String: Any]])
        #expect(timeline.compactMap { ($0["sequence"] as? NSNumber)?.uint64Value } == sequences)
        #expect((json["integrity"] as? [String: Any])?["verified"] as? Bool == true)
        #expect(report.markdown.hasPrefix("# Migration ledger-split-undo: plan ledger-split@1\n"))
        #expect(report.markdown.contains("| 2023-11-14T22:30:12.000Z (+11s) | operator | error budget burning | user:alice | rolled_back | 8s |"))
        for sequence in sequences { #expect(report.markdown.contains("\n| \(sequence) | ")) }
        let html = report.html
        #expect(html.contains("<svg") && html.contains("<rect"))
        #expect(!html.lowercased().contains("<script"))
        #expect(!html.contains("src="))
        // Bars for every span, each with its event.
        #expect(html.components(separatedBy: "(event #").count - 1 == report.spans.count)
    }

    @Test func anUnverifiedHistoryIsSaidSo() async throws {
        let (report, _) = try await Self.report("ledger-split-undo")
        var unverified = report
        unverified.integrity = .init(headSequence: 246, headHashHex: "00", verified: false, problem: "the log is corrupted at sequence 7: chain")
        #expect(unverified.markdown.contains("NOT verified: the log is corrupted at sequence 7: chain"))
        #expect(unverified.html.contains("class=\"unverified\""))
    }

    /// A history written by anyone: hostile text in reasons and evidence, times at the ends of Int64.
    static func hostile() throws -> MigrationReport {
        let load = PlanFile.lint(yaml: """
            name: hostile
            services:
              orders: { owners: [orders-team] }
            nodes:
              - id: n1
                service: orders
                phase: expand
                action: apply
                retry: { max_attempts: 3, backoff: 1s }
            """)
        let plan = try #require(load.plan).hashed()
        let id = MigrationID("m1")
        let node = NodeID("n1")
        let hostile = "\u{0600}<img src=x onerror=alert(1)> | pipe\r\nnew row </title><script>x</script>"
        func event(_ version: UInt64, _ at: Int64, _ event: MigrationEvent) -> (sequence: UInt64, event: RecordedEvent) {
            (version, RecordedEvent(migration: id, streamVersion: version,
                                    metadata: EventMetadata(recordedAt: Instant(millisecondsSinceEpoch: at), actor: Actor(kind: "user", id: hostile),
                                                            triggeredBy: .user), event: event))
        }
        let events = [
            event(1, .min, .migrationStarted(MigrationStarted(migration: id, plan: plan, startedAt: Instant(millisecondsSinceEpoch: .min), startedBy: hostile))),
            event(2, .min, .stepLeased(StepLeased(node: node, attempt: 1, token: FencingToken(1), agent: hostile, grantedAt: Instant(millisecondsSinceEpoch: .min),
                                                  expiresAt: Instant(millisecondsSinceEpoch: .max)))),
            event(3, .max, .stepFailed(StepFailed(node: node, attempt: 1, token: FencingToken(1), reason: hostile, retryable: true,
                                                  retryAt: Instant(millisecondsSinceEpoch: .max)))),
            event(4, 0, .migrationAborted(AbortReport(reason: hostile, rollback: [], nothingToUndo: [], cannotUndo: [], skipped: [node], blockedBy: nil,
                                                      abandoned: [], failed: [node], trigger: .operator))),
            event(5, .max, .migrationRolledBack),
        ]
        return try MigrationReport(events: events, integrity: .init(headSequence: 5, headHashHex: "00", verified: true))
    }

    @Test func hostileTextAndExtremeTimesNeitherTrapNorBreakOut() throws {
        let report = try Self.hostile()
        #expect(report.millis == .max)
        #expect(report.spans.allSatisfy { $0.millis >= 0 })
        let html = report.html
        #expect(!html.contains("<img") && !html.contains("<script"), "no markup from the history")
        #expect(html.contains("&lt;/title&gt;&lt;script&gt;"), "a title the text tries to close stays text")
        #expect(html.contains("&lt;img src=x onerror=alert(1)&gt;"))
        // Markdown: every row of the timeline is one line (no line break or pipe from the text ends it).
        let rows = report.markdown.split(separator: "\n").filter { $0.hasPrefix("| 3 |") || $0.hasPrefix("| 4 |") }
        #expect(rows.count == 2, "\(report.markdown)")
        #expect(rows.allSatisfy { !$0.contains("\r") && $0.contains("\\| pipe") })
        #expect(report.json.contains("onerror"), "JSON carries the text as it is, escaped by the encoder")
        _ = try JSONSerialization.jsonObject(with: Data(report.json.utf8))
    }

    @Test func aHistoryWithoutTheStartIsRefused() throws {
        #expect(throws: MigrationReportError.self) { try MigrationReport(events: [], integrity: .init(headSequence: 0, headHashHex: "", verified: true)) }
    }

    @Test func durationsReadAsPeopleWriteThem() {
        #expect(MigrationReport.durationText(850) == "850ms")
        #expect(MigrationReport.durationText(42_000) == "42s")
        #expect(MigrationReport.durationText(185_000) == "3m 05s")
        #expect(MigrationReport.durationText(7_440_000) == "2h 04m")
        #expect(MigrationReport.durationText(266_400_000) == "3d 02h")
        #expect(MigrationReport.durationText(-5) == "0ms")
        #expect(MigrationReport.durationText(.max).hasSuffix("h"))
    }
}
