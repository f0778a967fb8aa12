#!/usr/bin/env python3
"""A report whose grpc-timeout passes while the log is busy (GRPCOnLoop.report's deadline timer): the
server answers DEADLINE_EXCEEDED itself, with its lockstep-error-code and a message saying the report may
still be recorded, and the report is recorded once the log can take it. The log is held busy by a SQLite
transaction of this process (BEGIN IMMEDIATE on the server's database: its writer waits on the lock). The
call is sent on raw HTTP/2 (the h2 package) with grpc-timeout 300m and read for 10 s, so the server's
answer is the one read, not a client-side deadline. Prints one line per check.

Usage: grpc_report_deadline.py PROTOS_DIR HOST:PORT OPERATOR_TOKEN AGENT_TOKEN PLAN_FILE DATABASE
"""
import socket
import sqlite3
import struct
import sys
import time

import h2.config
import h2.connection
import h2.events

from grpc_session import agent, agent_pb2, agent_token, agents, migrations, operator, plan_file, target

database = sys.argv[6]
applied = migrations.ApplyPlan(agent_pb2.ApplyPlanRequest(plan_yaml=open(plan_file).read()), metadata=operator, timeout=30)
migrations.StartMigration(agent_pb2.StartMigrationRequest(plan=applied.name, migration_id="late-1"), metadata=operator, timeout=30)
step = agents.Poll(agent_pb2.PollRequest(service="orders", agent_id="py-agent", wait_ms=10000), metadata=agent, timeout=30).step
assert step.lease_id, "no step leased"

# The log's writer must wait: this connection holds SQLite's write lock.
busy = sqlite3.connect(database, isolation_level=None, timeout=10)
busy.execute("BEGIN IMMEDIATE")

host, port = target.rsplit(":", 1)
sock = socket.create_connection((host, int(port)), timeout=10)
connection = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
connection.initiate_connection()
message = agent_pb2.CompleteRequest(lease_id=step.lease_id, fencing_token=step.fencing_token).SerializeToString()
connection.send_headers(1, [(":method", "POST"), (":scheme", "http"), (":path", "/lockstep.v1.AgentService/Complete"),
                            (":authority", target), ("content-type", "application/grpc"), ("te", "trailers"),
                            ("grpc-timeout", "300m"), ("authorization", f"Bearer {agent_token}")])
connection.send_data(1, struct.pack(">BI", 0, len(message)) + message, end_stream=True)
sock.sendall(connection.data_to_send())
began = time.monotonic()
answer = {}
while "grpc-status" not in answer and time.monotonic() - began < 10:
    data = sock.recv(65536)
    if not data:
        break
    for event in connection.receive_data(data):
        if isinstance(event, (h2.events.ResponseReceived, h2.events.TrailersReceived)):
            answer.update(dict(event.headers))
    sock.sendall(connection.data_to_send())
waited = time.monotonic() - began
print(f"answered grpc-status={answer.get('grpc-status')} code={answer.get('lockstep-error-code')} "
      f"may-still-be-recorded={'may still have been recorded' in answer.get('grpc-message', '')} "
      f"while-the-log-was-busy={waited < 5}", flush=True)

busy.execute("ROLLBACK")
busy.close()
# The report went on: the step completes once the log takes it.
deadline = time.monotonic() + 15
while time.monotonic() < deadline:
    migration = migrations.GetMigration(agent_pb2.GetMigrationRequest(migration_id="late-1"), metadata=operator, timeout=30)
    if any(node.node_id == "expand" and node.status == agent_pb2.NODE_STATUS_SUCCEEDED for node in migration.nodes):
        print("recorded after its deadline", flush=True)
        break
    time.sleep(0.1)
else:
    print(f"not recorded: {migration}", flush=True)
