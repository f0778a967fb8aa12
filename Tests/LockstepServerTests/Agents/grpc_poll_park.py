#!/usr/bin/env python3
"""gRPC polls parked on the server's event loop (GRPCOnLoop): each line is one observation.

Usage: grpc_poll_park.py PROTOS_DIR GRPC_HOST:PORT HTTP_URL
"""
import json
import subprocess
import sys
import tempfile
import time
import urllib.request

protos, target, http = sys.argv[1:4]
generated = tempfile.mkdtemp()
subprocess.check_call([sys.executable, "-m", "grpc_tools.protoc", "-I", protos, f"--python_out={generated}",
                       f"--grpc_python_out={generated}", "lockstep/v1/agent.proto", "lockstep/v1/events.proto"])
sys.path.insert(0, generated)

import grpc  # noqa: E402
from lockstep.v1 import agent_pb2, agent_pb2_grpc  # noqa: E402

channel = grpc.insecure_channel(target)
agents = agent_pb2_grpc.AgentServiceStub(channel)
migrations = agent_pb2_grpc.MigrationServiceStub(channel)


def parked():
    text = urllib.request.urlopen(http + "/metrics", timeout=10).read().decode()
    return int(float(next(line.split()[-1] for line in text.splitlines() if line.startswith("lockstep_parked_polls"))))


def wait_for(condition, seconds=10):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


# Nothing to lease: parked for its wait, then answered retry_after_ms.
began = time.monotonic()
answer = agents.Poll(agent_pb2.PollRequest(service="orders", agent_id="a", wait_ms=1200), timeout=30)
print(f"waited {time.monotonic() - began >= 1.1} step={answer.HasField('step')} retry_after_ms {answer.retry_after_ms}", flush=True)

# A message over what is served on the event loop (4 KiB) is served by the handler, with the same answer.
answer = agents.Poll(agent_pb2.PollRequest(service="orders", agent_id="a", capabilities=["x" * 5000]), timeout=30)
print(f"large step={answer.HasField('step')} retry_after_ms {answer.retry_after_ms}", flush=True)

# A deadline before the wait's end: left to GRPCCore, which ends the call at its deadline. Its handler,
# cancelled, answers retry_after_ms, and that answer can reach the client just before the client's own
# deadline fires (the server's timer starts when the request arrives): either ending is the deadline's.
began = time.monotonic()
try:
    answer = agents.Poll(agent_pb2.PollRequest(service="orders", agent_id="a", wait_ms=20000), timeout=0.5)
    ending = f"answered step={answer.HasField('step')}"
except grpc.RpcError as error:
    ending = error.code().name
print(f"deadline {ending} in time {time.monotonic() - began < 5}", flush=True)

# A parked poll whose client cancels it leaves the table at once.
future = agents.Poll.future(agent_pb2.PollRequest(service="orders", agent_id="a", wait_ms=20000), timeout=60)
print(f"parked {wait_for(lambda: parked() == 1)}", flush=True)
future.cancel()
print(f"left {wait_for(lambda: parked() == 0, seconds=3)}", flush=True)

# A parked poll is woken by the start that makes its step ready, and leases it.
future = agents.Poll.future(agent_pb2.PollRequest(service="orders", agent_id="a", wait_ms=20000), timeout=60)
wait_for(lambda: parked() == 1)
plan = "name: p\nservices:\n  orders: { owners: [o] }\nnodes:\n  - id: one\n    service: orders\n    phase: custom\n    action: go\n"
migrations.ApplyPlan(agent_pb2.ApplyPlanRequest(plan_yaml=plan), timeout=30)
migrations.StartMigration(agent_pb2.StartMigrationRequest(plan="p", migration_id="m1"), timeout=30)
step = future.result(timeout=30).step
print(f"woken {step.lease_id} {step.action}", flush=True)
