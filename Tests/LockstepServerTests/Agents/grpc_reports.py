#!/usr/bin/env python3
"""An agent's reports over gRPC, each sent twice: padded past 4 KiB with an unknown field (served by
GRPCCore's server and its handler: the event loop takes only small messages) and as it is (taken on the
connection's event loop, GRPCOnLoop.report). Prints one line per report: `same NAME: CODE ERROR-CODE`
when both ways answered alike (status, message and trailing lockstep-error-code), else `differ NAME: …`
with both answers.

Usage: grpc_reports.py PROTOS_DIR HOST:PORT OPERATOR_TOKEN AGENT_TOKEN PLAN_FILE
"""
from grpc_session import agent, agent_pb2, agents, grpc, migrations, operator, plan_file

applied = migrations.ApplyPlan(agent_pb2.ApplyPlanRequest(plan_yaml=open(plan_file).read()), metadata=operator, timeout=30)
migrations.StartMigration(agent_pb2.StartMigrationRequest(plan=applied.name, migration_id="reports-1"), metadata=operator, timeout=30)
step = agents.Poll(agent_pb2.PollRequest(service="orders", agent_id="py-agent", wait_ms=10000), metadata=agent, timeout=30).step
assert step.lease_id, "no step leased"


def padded(request):
    """`request` with an unknown field (number 1000, 5,000 bytes) that decoding skips: over the loop's 4 KiB."""
    copy = type(request)()
    copy.ParseFromString(request.SerializeToString() + b"\xc2\x3e" + b"\x88\x27" + b"x" * 5000)
    return copy


def outcome(call, request, metadata, through_server):
    try:
        answer = call(padded(request) if through_server else request, metadata=metadata, timeout=30)
        return ("OK", answer.SerializeToString().hex(), "")
    except grpc.RpcError as error:
        return (error.code().name, error.details(), dict(error.trailing_metadata() or ()).get("lockstep-error-code", ""))


stale = step.fencing_token + 1
reports = [
    ("heartbeat", agents.Heartbeat, agent_pb2.HeartbeatRequest(lease_id=step.lease_id, fencing_token=step.fencing_token), agent),
    ("heartbeat stale token", agents.Heartbeat, agent_pb2.HeartbeatRequest(lease_id=step.lease_id, fencing_token=stale), agent),
    ("heartbeat unknown lease", agents.Heartbeat, agent_pb2.HeartbeatRequest(lease_id="reports-1/nowhere", fencing_token=1), agent),
    ("heartbeat bad lease id", agents.Heartbeat, agent_pb2.HeartbeatRequest(lease_id="no slash", fencing_token=1), agent),
    ("heartbeat no token", agents.Heartbeat, agent_pb2.HeartbeatRequest(lease_id=step.lease_id, fencing_token=step.fencing_token), []),
    ("heartbeat as operator", agents.Heartbeat, agent_pb2.HeartbeatRequest(lease_id=step.lease_id, fencing_token=step.fencing_token), operator),
    ("progress", agents.ReportProgress,
     agent_pb2.ReportProgressRequest(lease_id=step.lease_id, fencing_token=step.fencing_token, percent=50, message="half"), agent),
    ("progress stale token", agents.ReportProgress,
     agent_pb2.ReportProgressRequest(lease_id=step.lease_id, fencing_token=stale, percent=50, message="half"), agent),
    ("progress over 100", agents.ReportProgress,
     agent_pb2.ReportProgressRequest(lease_id=step.lease_id, fencing_token=step.fencing_token, percent=101), agent),
    ("fail stale token", agents.Fail, agent_pb2.FailRequest(lease_id=step.lease_id, fencing_token=stale, reason="no"), agent),
    ("complete stale token", agents.Complete, agent_pb2.CompleteRequest(lease_id=step.lease_id, fencing_token=stale), agent),
]
for name, call, request, metadata in reports:
    through_server = outcome(call, request, metadata, True)
    on_loop = outcome(call, request, metadata, False)
    if through_server == on_loop:
        print(f"same {name}: {on_loop[0]} {on_loop[2]}", flush=True)
    else:
        print(f"differ {name}: through the server {through_server}, on the loop {on_loop}", flush=True)

# The step completes on the loop; a second completion (on the server) is refused as stale.
done = outcome(agents.Complete, agent_pb2.CompleteRequest(lease_id=step.lease_id, fencing_token=step.fencing_token), agent, False)
again = outcome(agents.Complete, agent_pb2.CompleteRequest(lease_id=step.lease_id, fencing_token=step.fencing_token), agent, True)
print(f"completed {done[0]}, again {again[0]} {again[2]}", flush=True)
