import LockstepCore
import LockstepEngine
import LockstepPlan
import Testing

/// `lockstep plan diff` (issue 20): what applying a file would change, literally.
@Suite struct PlanDiffTests {
    static let base = """
        name: orders-split
        owners: [platform]
        services:
          orders: { owners: [orders-team] }
          ledger: { owners: [ledger-team] }
        nodes:
          - id: expand
            service: orders
            phase: expand
            action: apply-schema
            params: { migration: m1 }
            retry: { max_attempts: 2, backoff: 1s }
            rollback: { action: drop-schema }
          - id: backfill
            service: orders
            phase: backfill
            action: backfill
            params: { batch: 1000 }
            needs: [expand]
          - id: switch
            service: ledger
            phase: live
            action: switch-reads
            needs: [expand]
            approvals: { minimum: 1 }
        """

    static func plan(_ yaml: String) throws -> PlanSnapshot {
        let load = PlanFile.lint(yaml: yaml)
        #expect(load.errors.isEmpty, "\(load.errors)")
        return try #require(load.plan)
    }

    @Test func theSameContentHasNoChanges() throws {
        #expect(PlanDiff.changes(from: try Self.plan(Self.base), to: try Self.plan(Self.base + "\n# a comment\n")).isEmpty)
    }

    @Test func nodesFieldsParamsGatesAndOrderAreEachNamed() throws {
        let changed = Self.base
            .replacingOccurrences(of: "params: { batch: 1000 }", with: "params: { batch: 5000 }")
            .replacingOccurrences(of: "approvals: { minimum: 1 }", with: "approvals: { minimum: 2, from: [ledger-team] }")
            .replacingOccurrences(of: "retry: { max_attempts: 2, backoff: 1s }", with: "retry: { max_attempts: 3, backoff: 1s }")
            .replacingOccurrences(of: "owners: [platform]", with: "owners: [platform]\ndeadline: 2h")
            + """

              - id: verify
                service: ledger
                phase: verify
                action: compare-rows
                needs: [switch, backfill]
            """
        #expect(PlanDiff.changes(from: try Self.plan(Self.base), to: try Self.plan(changed)) == [
            "~ plan: deadline_ms (none) → \"7200000\"",
            "~ node expand: max_attempts 2 → 3",
            "~ node backfill: params.batch 1000 → 5000",
            "~ node switch: approval_from (none) → [\"ledger-team\"]",
            "~ node switch: approval_minimum 1 → 2",
            "+ node verify (service ledger; phase verify; action compare-rows; needs switch, backfill)",
        ])
    }

    @Test func aRemovedNodeAndANewOrderAreShown() throws {
        // backfill removed; switch listed before expand's other dependant.
        let reordered = """
            name: orders-split
            owners: [platform]
            services:
              orders: { owners: [orders-team] }
              ledger: { owners: [ledger-team] }
            nodes:
              - id: switch
                service: ledger
                phase: live
                action: switch-reads
                needs: [expand]
                approvals: { minimum: 1 }
              - id: expand
                service: orders
                phase: expand
                action: apply-schema
                params: { migration: m1 }
                retry: { max_attempts: 2, backoff: 1s }
                rollback: { action: drop-schema }
            """
        #expect(PlanDiff.changes(from: try Self.plan(Self.base), to: try Self.plan(reordered)) == [
            "- node backfill",
            "~ order: switch, expand (was expand, switch)",
        ])
    }
}
