#!/usr/bin/env python3
"""Polls once over gRPC with TLS, trusting only the given certificate; prints the answer.

Usage: grpc-tls-probe.py PROTOS_DIR HOST:PORT CA_PEM [CLIENT_CERT_PEM CLIENT_KEY_PEM]
Without a client certificate it polls (the server must run --dev); with one it lists migrations and
sends a heartbeat both ways (on the loop and through the server).
"""
import subprocess
import sys
import tempfile

protos, target, ca = sys.argv[1:4]
generated = tempfile.mkdtemp()
subprocess.check_call([sys.executable, "-m", "grpc_tools.protoc", "-I", protos, f"--python_out={generated}",
                       f"--grpc_python_out={generated}", "lockstep/v1/agent.proto", "lockstep/v1/events.proto"])
sys.path.insert(0, generated)

import grpc  # noqa: E402
from lockstep.v1 import agent_pb2, agent_pb2_grpc  # noqa: E402

if len(sys.argv) <= 5:
    credentials = grpc.ssl_channel_credentials(root_certificates=open(ca, "rb").read())
    agents = agent_pb2_grpc.AgentServiceStub(grpc.secure_channel(target, credentials))
    answer = agents.Poll(agent_pb2.PollRequest(service="orders", agent_id="tls-probe"), timeout=30)
    print(f"tls poll retry_after_ms={answer.retry_after_ms}", flush=True)

# With a client certificate (mutual TLS): list migrations as the principal the certificate names.
if len(sys.argv) > 5:
    credentials = grpc.ssl_channel_credentials(root_certificates=open(ca, "rb").read(), private_key=open(sys.argv[5], "rb").read(),
                                               certificate_chain=open(sys.argv[4], "rb").read())
    migrations = agent_pb2_grpc.MigrationServiceStub(grpc.secure_channel(target, credentials))
    listed = migrations.ListMigrations(agent_pb2.ListMigrationsRequest(), timeout=30)
    print(f"mtls list {len(listed.migrations)} {' '.join(m.migration_id for m in listed.migrations)}", flush=True)
    # A report, taken on the loop (small) and by the server (padded past 4 KiB with an unknown field): the
    # certificate names an operator both ways, who may not report (an unread certificate would be
    # UNAUTHENTICATED).
    agents = agent_pb2_grpc.AgentServiceStub(grpc.secure_channel(target, credentials))
    codes = []
    for padding in (b"", b"\xc2\x3e" + b"\x88\x27" + b"x" * 5000):
        heartbeat = agent_pb2.HeartbeatRequest()
        heartbeat.ParseFromString(agent_pb2.HeartbeatRequest(lease_id="m1/expand", fencing_token=1).SerializeToString() + padding)
        try:
            agents.Heartbeat(heartbeat, timeout=30)
            codes.append("OK")
        except grpc.RpcError as error:
            codes.append(error.code().name)
    print(f"mtls heartbeat {' '.join(codes)}", flush=True)
