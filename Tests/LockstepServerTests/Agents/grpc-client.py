#!/usr/bin/env python3
"""A client written from Protos/ alone: generates Python stubs with grpcio-tools, then, over gRPC,
applies a plan and starts a migration as the operator and runs a full agent cycle as the agent (poll,
heartbeat, progress, complete), then reports once more with the same token to show the refusal.

Usage: grpc-client.py PROTOS_DIR HOST:PORT OPERATOR_TOKEN AGENT_TOKEN PLAN_FILE
"""
from grpc_session import agent, agent_pb2, agents, grpc, migrations, operator, plan_file

applied = migrations.ApplyPlan(agent_pb2.ApplyPlanRequest(plan_yaml=open(plan_file).read()), metadata=operator, timeout=30)
print(f"applied {applied.name}@{applied.version} changed={applied.changed}", flush=True)
# Before the migration holds orders: answered where it arrives (on the event loop), through the same gate.
nothing = agents.Poll(agent_pb2.PollRequest(service="orders", agent_id="py-agent"), metadata=agent, timeout=30)
print(f"nothing has_step={nothing.HasField('step')} retry_after_ms {nothing.retry_after_ms}", flush=True)
try:
    agents.Poll(agent_pb2.PollRequest(service="orders", agent_id="py"), metadata=operator, timeout=30)
except grpc.RpcError as error:
    print(f"operator {error.code().name} {dict(error.trailing_metadata()).get('lockstep-error-code')}", flush=True)
started = migrations.StartMigration(agent_pb2.StartMigrationRequest(plan=applied.name, migration_id="py-1"), metadata=operator, timeout=30)
print(f"started {started.migration_id}", flush=True)

try:
    agents.Poll(agent_pb2.PollRequest(service="orders", agent_id="py"), timeout=30)
except grpc.RpcError as error:
    print(f"unauthenticated {error.code().name} {dict(error.trailing_metadata()).get('lockstep-error-code')}", flush=True)

polled = agents.Poll(agent_pb2.PollRequest(service="orders", agent_id="py-agent", wait_ms=10000), metadata=agent, timeout=30)
step = polled.step
print(f"leased {step.lease_id} token {step.fencing_token} action {step.action} params {step.params_json}", flush=True)
beat = agents.Heartbeat(agent_pb2.HeartbeatRequest(lease_id=step.lease_id, fencing_token=step.fencing_token), metadata=agent, timeout=30)
print(f"heartbeat ttl {beat.ttl_ms}", flush=True)
agents.ReportProgress(agent_pb2.ReportProgressRequest(lease_id=step.lease_id, fencing_token=step.fencing_token, percent=50,
                                                      message="half way"), metadata=agent, timeout=30)
agents.Complete(agent_pb2.CompleteRequest(lease_id=step.lease_id, fencing_token=step.fencing_token), metadata=agent, timeout=30)
print("completed", flush=True)
try:
    agents.Complete(agent_pb2.CompleteRequest(lease_id=step.lease_id, fencing_token=step.fencing_token + 1), metadata=agent, timeout=30)
except grpc.RpcError as error:
    print(f"refused {error.code().name} {dict(error.trailing_metadata()).get('lockstep-error-code')} {error.details()}", flush=True)

# Watch the migration: its events so far, then live; it has not settled, so the deadline ends the stream.
seen = []
try:
    for envelope in migrations.Watch(agent_pb2.WatchRequest(migration_id="py-1"), metadata=operator, timeout=3):
        seen.append(envelope.record.payload.WhichOneof("kind"))
except grpc.RpcError as error:
    print(f"watch {error.code().name} after {len(seen)} events: {' '.join(seen)}", flush=True)

# A message over the 1 MiB limit is refused by the transport before anything is decoded, with a stable code.
try:
    migrations.ApplyPlan(agent_pb2.ApplyPlanRequest(plan_yaml="#" * (1 << 20 + 1)), metadata=operator, timeout=30)
except grpc.RpcError as error:
    code = dict(error.trailing_metadata() or ()).get("lockstep-error-code")
    print(f"oversized {error.code().name} {code}", flush=True)
