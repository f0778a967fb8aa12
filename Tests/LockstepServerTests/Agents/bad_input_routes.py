"""The routes and methods bad_input.py probes: every operation of the server's table, each with its
fields and a benign message.

Each field: (json name, proto field number, kind). Kinds:
  id      an identifier (128 bytes of letters, digits, -_.@:), looked up or validated
  text    free text, documented maxLength 1024
  yaml    a plan file's text
  opaque  a string the server treats as a filter or token (in-range odd values may be answered)
  u32 u64 i64 double bool  scalars;  strs  a repeated string
benign: the rest of the message, chosen so that a request that *is* accepted changes nothing,
except where a field is aimed at the real migration to reach a validation (then acceptance of an
out-of-range value shows as a moved head).
"""

IDLE_SERVICE = "payments"                  # a service of the plan with no step ready: a valid poll answers at once
UNKNOWN_MIGRATION = "bad-input-no-such-migration"
BENIGN_TOKEN = "987654321"                 # matches no lease: reports are refused, never recorded


class Route:
    def __init__(self, path, service, method, request, fields, benign, aim=None, stream=False, ok_on_empty=False):
        self.path, self.service, self.method, self.request = path, service, method, request
        self.fields, self.benign, self.aim = fields, benign, aim or {}
        self.stream, self.ok_on_empty = stream, ok_on_empty

    @property
    def grpc_path(self):
        return f"/lockstep.v1.{self.service}/{self.method}"


def routes(pb, real, first_node, gated_node, first_service, watch_id):
    """The routes, aimed at the server's migration `real` (its first node, a gated node, the first node's
    service) and, for watches, at `watch_id`; `pb` is the generated agent_pb2 module."""
    lease = f"{real}/{first_node}"
    return [
        Route("/v1/agent/poll", "AgentService", "Poll", pb.PollRequest,
              [("service", 1, "id"), ("agent_id", 2, "id"), ("capabilities", 3, "strs"), ("wait_ms", 4, "u32")],
              {"service": IDLE_SERVICE, "agent_id": "bad-input-probe", "wait_ms": 0}),
        Route("/v1/agent/heartbeat", "AgentService", "Heartbeat", pb.HeartbeatRequest,
              [("lease_id", 1, "id"), ("fencing_token", 2, "u64")], {"lease_id": lease, "fencing_token": BENIGN_TOKEN}),
        Route("/v1/agent/progress", "AgentService", "ReportProgress", pb.ReportProgressRequest,
              [("lease_id", 1, "id"), ("fencing_token", 2, "u64"), ("percent", 3, "u32"), ("message", 4, "text")],
              {"lease_id": lease, "fencing_token": BENIGN_TOKEN, "percent": 10, "message": "probe"}),
        Route("/v1/agent/complete", "AgentService", "Complete", pb.CompleteRequest,
              [("lease_id", 1, "id"), ("fencing_token", 2, "u64")], {"lease_id": lease, "fencing_token": BENIGN_TOKEN}),
        Route("/v1/agent/fail", "AgentService", "Fail", pb.FailRequest,
              [("lease_id", 1, "id"), ("fencing_token", 2, "u64"), ("reason", 3, "text"), ("retryable", 4, "bool")],
              {"lease_id": lease, "fencing_token": BENIGN_TOKEN, "reason": "probe", "retryable": True}),
        Route("/v1/plans", "MigrationService", "ApplyPlan", pb.ApplyPlanRequest, [("plan_yaml", 1, "yaml")],
              {"plan_yaml": "name: [unterminated"}),
        Route("/v1/plans/validate", "MigrationService", "ValidatePlan", pb.ApplyPlanRequest, [("plan_yaml", 1, "yaml")],
              {"plan_yaml": "name: [unterminated"}, ok_on_empty=True),
        Route("/v1/plans/list", "MigrationService", "ListPlans", pb.ListPlansRequest, [], {}, ok_on_empty=True),
        Route("/v1/migrations", "MigrationService", "StartMigration", pb.StartMigrationRequest,
              [("plan", 1, "id"), ("version", 2, "u64"), ("migration_id", 3, "id")],
              {"plan": "bad-input-no-such-plan", "migration_id": "bad-input-m"},
              aim={"version": {"plan": "ledger-split", "migration_id": "bad-input-m"},
                   "migration_id": {"plan": "ledger-split"}}),
        Route("/v1/migrations/get", "MigrationService", "GetMigration", pb.GetMigrationRequest,
              [("migration_id", 1, "id")], {"migration_id": UNKNOWN_MIGRATION}),
        Route("/v1/migrations/list", "MigrationService", "ListMigrations", pb.ListMigrationsRequest,
              [("page_size", 1, "u32"), ("page_token", 2, "opaque")], {"page_size": 1}, ok_on_empty=True),
        Route("/v1/migrations/pause", "MigrationService", "PauseMigration", pb.PauseMigrationRequest,
              [("migration_id", 1, "id"), ("reason", 2, "text")], {"migration_id": UNKNOWN_MIGRATION, "reason": "probe"},
              aim={"reason": {"migration_id": real}}),
        Route("/v1/migrations/resume", "MigrationService", "ResumeMigration", pb.ResumeMigrationRequest,
              [("migration_id", 1, "id")], {"migration_id": UNKNOWN_MIGRATION}),
        Route("/v1/migrations/approve", "MigrationService", "Approve", pb.GateDecisionRequest,
              [("migration_id", 1, "id"), ("node_id", 2, "id"), ("comment", 3, "text")],
              {"migration_id": UNKNOWN_MIGRATION, "node_id": gated_node, "comment": "probe"},
              aim={"node_id": {"migration_id": real}, "comment": {"migration_id": real}}),
        Route("/v1/migrations/reject", "MigrationService", "Reject", pb.GateDecisionRequest,
              [("migration_id", 1, "id"), ("node_id", 2, "id"), ("comment", 3, "text")],
              {"migration_id": UNKNOWN_MIGRATION, "node_id": gated_node, "comment": "probe"},
              aim={"node_id": {"migration_id": real}, "comment": {"migration_id": real}}),
        Route("/v1/service-leases/list", "MigrationService", "ListServiceLeases", pb.ListServiceLeasesRequest, [], {},
              ok_on_empty=True),
        Route("/v1/metrics/record", "MigrationService", "RecordMetric", pb.RecordMetricRequest,
              [("migration_id", 1, "id"), ("node_id", 2, "id"), ("name", 3, "opaque"), ("value", 4, "double"),
               ("window_start_ms", 5, "i64"), ("window_end_ms", 6, "i64"), ("source", 7, "text"), ("cohort", 8, "opaque")],
              {"migration_id": real, "node_id": first_node, "name": "error_rate", "value": 0.5, "source": "probe"}),
        Route("/v1/migrations/watch", "MigrationService", "Watch", pb.WatchRequest,
              [("migration_id", 1, "id"), ("after_sequence", 2, "u64")], {"migration_id": watch_id}, stream=True,
              aim={"after_sequence": {"migration_id": watch_id}}),
        Route("/v1/stage", "StageService", "GetStage", pb.StageRequest,
              [("migration_id", 1, "id"), ("node_id", 2, "id"), ("key", 3, "key")], {"migration_id": UNKNOWN_MIGRATION},
              aim={"node_id": {"migration_id": real}, "key": {"migration_id": real}}),
        Route("/v1/history/events", "HistoryService", "ListEvents", pb.ListEventsRequest,
              [("after_sequence", 1, "u64"), ("stream", 2, "stream"), ("page_size", 3, "u32")], {"page_size": 1}, ok_on_empty=True),
        Route("/v1/history/export", "HistoryService", "ExportEvents", pb.ListEventsRequest,
              [("after_sequence", 1, "u64"), ("stream", 2, "stream"), ("page_size", 3, "u32")], {"stream": "plan/bad-input-none"},
              stream=True, ok_on_empty=True),
        Route("/v1/history/state", "HistoryService", "GetStateAt", pb.StateAtRequest,
              [("sequence", 1, "u64"), ("time_ms", 2, "i64")], {"sequence": "1"}, aim={"time_ms": {"sequence": None}},
              ok_on_empty=True),  # {} = the whole log (docs/api.md)
        Route("/v1/history/verify", "HistoryService", "VerifyHistory", pb.VerifyHistoryRequest, [], {}, ok_on_empty=True),
        Route("/v1/history/explain", "HistoryService", "ExplainMigration", pb.ExplainRequest,
              [("migration_id", 1, "id"), ("node_id", 2, "id")], {"migration_id": UNKNOWN_MIGRATION}, aim={"node_id": {"migration_id": real}}),
        Route("/v1/history/diff", "HistoryService", "DiffHistory", pb.DiffHistoryRequest,
              [("migration_id", 3, "id")], {"migration_id": UNKNOWN_MIGRATION}),  # no points: refused
        Route("/v1/service-leases/release", "MigrationService", "ReleaseServiceLease", pb.ReleaseServiceLeaseRequest,
              [("service", 1, "id"), ("reason", 2, "text")], {"service": "bad-input-no-such-service", "reason": "probe"},
              aim={"reason": {"service": first_service}}),
        # Freezes: each benign request is refused (an empty reason, an unknown freeze or migration), and
        # the aimed ones reach the core's range checks.
        Route("/v1/freezes", "MigrationService", "DeclareFreeze", pb.DeclareFreezeRequest,
              [("id", 1, "id"), ("services", 2, "strs"), ("from_ms", 3, "i64"), ("until_ms", 4, "i64"), ("reason", 5, "text")],
              {"id": "bad-input-freeze", "reason": ""},
              aim={"from_ms": {"id": "bad-input-freeze", "reason": "probe", "until_ms": "2"},
                   "until_ms": {"id": "bad-input-freeze", "reason": "probe", "from_ms": "1"}}),
        Route("/v1/freezes/list", "MigrationService", "ListFreezes", pb.ListFreezesRequest, [], {}, ok_on_empty=True),
        Route("/v1/console/links", "MigrationService", "CreateConsoleLink", pb.CreateConsoleLinkRequest, [], {}, ok_on_empty=True),
        Route("/v1/webhooks/deliveries", "MigrationService", "ListWebhookDeliveries", pb.ListWebhookDeliveriesRequest,
              [("webhook", 1, "id"), ("status", 2, "opaque"), ("limit", 3, "u32")], {"limit": 1}, ok_on_empty=True),
        Route("/v1/freezes/end", "MigrationService", "EndFreeze", pb.EndFreezeRequest,
              [("id", 1, "id"), ("reason", 2, "text")], {"id": "bad-input-no-such-freeze", "reason": "probe"}),
        Route("/v1/line/stop", "MigrationService", "StopLine", pb.StopLineRequest,
              [("services", 1, "strs"), ("reason", 2, "text"), ("id", 3, "id")], {"id": "bad-input-stop", "reason": ""},
              aim={"reason": {"id": "bad-input-stop", "services": ["bad-input-none"]}}),
        Route("/v1/migrations/break-glass", "MigrationService", "BreakGlass", pb.BreakGlassRequest,
              [("migration_id", 1, "id"), ("node_id", 2, "id"), ("scope", 3, "opaque"), ("justification", 4, "text")],
              {"migration_id": UNKNOWN_MIGRATION, "node_id": first_node, "scope": "freeze", "justification": "probe"},
              aim={"node_id": {"migration_id": real, "scope": "freeze", "justification": "probe"},
                   "scope": {"migration_id": real, "node_id": first_node, "justification": "probe"},
                   "justification": {"migration_id": real, "node_id": first_node, "scope": "freeze"}}),
        # Last: an abort that is wrongly accepted rolls the migration back.
        Route("/v1/migrations/abort", "MigrationService", "AbortMigration", pb.AbortMigrationRequest,
              [("migration_id", 1, "id"), ("reason", 2, "text")], {"migration_id": UNKNOWN_MIGRATION, "reason": "probe"},
              aim={"reason": {"migration_id": real}}),
    ]
