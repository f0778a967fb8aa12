"""Calls the `test.Echo` service of H2GRPCTransportTests with grpcio on raw bytes and prints one line per
check (the Swift test compares them). Usage: python3 grpc_probe.py HOST:PORT [wait-long | where]"""
import sys
import time
import grpc

target = sys.argv[1]
channel = grpc.insecure_channel(target)
identity = lambda b: b

if sys.argv[2:] == ["wait-long"]:
    # One call that waits until the server ends it (its graceful shutdown, then the grace period).
    try:
        channel.unary_unary("/test.Echo/Wait", request_serializer=identity, response_deserializer=identity)(b"", timeout=60)
        print("wait-long OK", flush=True)
    except grpc.RpcError as error:
        print(f"wait-long {error.code().name}", flush=True)
    sys.exit(0)

if sys.argv[2:] == ["where"]:
    # Where the server ran four calls on one connection (its handler, and a default actor it called), the
    # last with a 5,000-byte message.
    for message in (b"", b"", b"", b"x" * 5000):
        print(channel.unary_unary("/test.Echo/Where", request_serializer=identity, response_deserializer=identity)(message, timeout=60).decode(), flush=True)
    sys.exit(0)


def unary(method):
    return channel.unary_unary(f"/test.Echo/{method}", request_serializer=identity, response_deserializer=identity)


# Metadata both ways, a binary value included, and trailing metadata.
answer, call = unary("Say").with_call(b"hello", metadata=[("x-echo", "hi"), ("x-echo-bin", b"\x00\x01\x02\xff")], timeout=60)
initial = dict(call.initial_metadata())
print(f"say {answer!r} initial x-echo={initial.get('x-echo')} x-echo-bin={initial.get('x-echo-bin').hex()} "
      f"trailing x-done={dict(call.trailing_metadata()).get('x-done')}", flush=True)

for name, call in (("gzip", lambda: unary("Say")(b"x", compression=grpc.Compression.Gzip, timeout=60)),
                   ("too-large", lambda: unary("Say")(b"x" * 2000, timeout=60)),
                   ("unknown", lambda: unary("Nope")(b"x", timeout=60)),
                   # "linger": the handler answers well after the deadline, so the client's own deadline,
                   # not the handler's late OK, ends the call (H2GRPCTransportTests' EchoService).
                   ("wait", lambda: unary("Wait")(b"linger", timeout=0.3))):
    try:
        call()
        print(f"{name} OK", flush=True)
    except grpc.RpcError as error:
        print(f"{name} {error.code().name}", flush=True)

# A call with no deadline, parked in its handler, that the client cancels: only the transport can tell
# the handler (GRPCCore's own timeout does not fire).
parked = unary("Wait").future(b"", timeout=120)
time.sleep(1)
parked.cancel()
print(f"parked cancelled {parked.cancelled()}", flush=True)

count = channel.unary_stream("/test.Echo/Count", request_serializer=identity, response_deserializer=identity)
# 240 s: a full local `swift test` (PostgreSQL suites beside the CPU-bound ones) once starved the
# handler's pool past 90 s; alone it takes about a second.
messages = list(count((2000).to_bytes(4, "big"), timeout=240))
print(f"count {len(messages)} messages {sum(map(len, messages))} bytes", flush=True)

stream = count((100000).to_bytes(4, "big"), timeout=90)
for seen, _ in enumerate(stream, start=1):
    if seen == 5:
        stream.cancel()
        break
print(f"cancelled after {seen}", flush=True)

try:
    unary("Fail")(b"", timeout=60)
except grpc.RpcError as error:
    print(f"failed {error.code().name} {error.details()}", flush=True)
