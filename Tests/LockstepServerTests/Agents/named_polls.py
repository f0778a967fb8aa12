#!/usr/bin/env python3
"""Parks COUNT gRPC polls, each named with its own poll_id (a UUID, as the reference agent names its
polls), over CONNECTIONS connections, and holds them until the server answers them (its shutdown).

Usage: named_polls.py PROTOS_DIR GRPC_HOST:PORT COUNT CONNECTIONS
Prints "answered N of COUNT" when every call has ended (an answer or an error), then exits.
"""
import asyncio
import subprocess
import sys
import tempfile
import uuid

protos, target, count, connections = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
generated = tempfile.mkdtemp()
subprocess.check_call([sys.executable, "-m", "grpc_tools.protoc", "-I", protos, f"--python_out={generated}",
                       f"--grpc_python_out={generated}", "lockstep/v1/agent.proto", "lockstep/v1/events.proto"])
sys.path.insert(0, generated)

import grpc  # noqa: E402
from lockstep.v1 import agent_pb2, agent_pb2_grpc  # noqa: E402


async def main():
    # A local subchannel pool each: channels with the same target would otherwise share one connection.
    channels = [grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)]) for _ in range(connections)]
    stubs = [agent_pb2_grpc.AgentServiceStub(channel) for channel in channels]

    async def poll(index):
        request = agent_pb2.PollRequest(service="nothing-to-do", agent_id="bench", wait_ms=30000, poll_id=str(uuid.uuid4()))
        try:
            await stubs[index % connections].Poll(request, timeout=120)
            return True
        except grpc.RpcError:
            return False

    answered = await asyncio.gather(*(poll(index) for index in range(count)))
    print(f"answered {sum(answered)} of {count}", flush=True)
    for channel in channels:
        await channel.close()


asyncio.run(main())
