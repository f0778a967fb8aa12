/// What `lockstep demo` writes into its directory: the plan it applies and the handlers its agents run.
/// Kept in the binary so the demo works from the binary alone.
enum DemoAssets {
    /// examples/ledger-split.yaml's shape with demo timings: three services, a cross-service transition
    /// (both leases at once), a backfill whose first attempt fails and is retried, two gates.
    static let plan = """
        # The demo's plan: examples/ledger-split.yaml's shape with timings for a one-minute run.
        name: ledger-split-demo
        description: Move ledger entries out of the orders database into the ledger service.
        owners: [platform]
        services:
          payments: { owners: [payments-team] }
          orders:   { owners: [orders-team] }
          ledger:   { owners: [ledger-team] }
        nodes:
          - id: expand-ledger-schema
            service: ledger
            phase: expand
            action: apply-schema
            params: { migration: 2026_11_ledger_entries }
            timeouts: { heartbeat: 3s }
            rollback: { action: drop-schema, params: { migration: 2026_11_ledger_entries } }
          - id: dual-write-orders
            services: [orders, ledger]
            phase: dual_write
            action: enable-dual-write
            params: { flag: ledger_dual_write, percent: 100 }
            needs: [expand-ledger-schema]
            timeouts: { heartbeat: 3s }
            rollback: { action: disable-dual-write, params: { flag: ledger_dual_write } }
          - id: backfill-ledger
            service: ledger
            phase: backfill
            action: backfill
            params: { batch_size: 5000, shards: 4 }
            needs: [dual-write-orders]
            timeouts: { heartbeat: 3s }
            retry: { max_attempts: 3, backoff: 1s }
            rollback: { action: truncate-ledger }
          - id: verify-ledger
            service: ledger
            phase: verify
            action: compare-rows
            params: { sample_percent: 5 }
            needs: [backfill-ledger]
            timeouts: { heartbeat: 3s }
          - id: switch-reads-payments
            service: payments
            phase: live
            action: switch-reads
            params: { flag: payments_read_ledger }
            needs: [verify-ledger]
            approvals: { minimum: 1 }
            timeouts: { heartbeat: 3s }
            rollback: { action: switch-reads-back, params: { flag: payments_read_ledger } }
          - id: contract-orders
            service: orders
            phase: contract
            action: drop-old-columns
            params: { table: orders, columns: [ledger_amount, ledger_currency] }
            needs: [switch-reads-payments]
            approvals: { minimum: 1 }
            timeouts: { heartbeat: 3s }
            irreversible: true

        """

    /// One handler script for every action: it reads its params, reports progress, and the backfill's
    /// first attempt fails with 75 (EX_TEMPFAIL) so the retry shows.
    static let handler = """
        #!/bin/sh
        # A demo handler (lockstep demo): the step's params arrive as JSON on stdin.
        params=$(cat)
        echo "$LOCKSTEP_ACTION on $LOCKSTEP_MIGRATION/$LOCKSTEP_NODE, attempt $LOCKSTEP_ATTEMPT, params $params"
        if [ "$LOCKSTEP_ACTION" = backfill ] && [ "$LOCKSTEP_ATTEMPT" = 1 ]; then
          echo "progress: 25 copying shard 1 of 4"
          sleep 0.4
          echo "shard 2 timed out; try again" >&2
          exit 75
        fi
        for percent in 20 40 60 80 100; do
          sleep 0.5
          echo "progress: $percent $LOCKSTEP_ACTION, part $((percent / 20)) of 5"
        done

        """

    static let actions = ["apply-schema", "enable-dual-write", "backfill", "compare-rows", "switch-reads", "drop-old-columns",
                          "drop-schema", "disable-dual-write", "truncate-ledger", "switch-reads-back"]
}
