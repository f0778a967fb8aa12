"""What the Python gRPC test clients share: stubs generated from Protos/ with grpcio-tools, a channel to
the server, both principals' metadata, and both services' stubs, read from the client's arguments
(PROTOS_DIR HOST:PORT OPERATOR_TOKEN AGENT_TOKEN PLAN_FILE) when it is imported."""
import subprocess
import sys
import tempfile

protos, target, operator_token, agent_token, plan_file = sys.argv[1:6]
generated = tempfile.mkdtemp()
subprocess.check_call([sys.executable, "-m", "grpc_tools.protoc", "-I", protos, f"--python_out={generated}",
                       f"--grpc_python_out={generated}", "lockstep/v1/agent.proto", "lockstep/v1/events.proto"])
sys.path.insert(0, generated)

import grpc  # noqa: E402
from lockstep.v1 import agent_pb2, agent_pb2_grpc  # noqa: E402

channel = grpc.insecure_channel(target)
operator = [("authorization", f"Bearer {operator_token}")]
agent = [("authorization", f"Bearer {agent_token}")]
migrations = agent_pb2_grpc.MigrationServiceStub(channel)
agents = agent_pb2_grpc.AgentServiceStub(channel)
