#!/usr/bin/env python3
"""Bad-input probe for a running `lockstep serve`: sends hostile requests to every JSON route of
docs/openapi.yaml and every gRPC method of Protos/lockstep/v1/agent.proto, and after each one checks

  (a) the answer is an error with a stable machine-readable code: JSON, a 4xx (or a documented 5xx)
      whose body is an ErrorBody `{"code", "message"}` (docs/api.md, Errors) or that carries a
      `lockstep-error-code` header; gRPC, a non-OK status with `lockstep-error-code` trailing metadata
      and the message `CODE: sentence` -- never a bare 500 / INTERNAL / UNKNOWN, never an empty body;
      a few cases whose values are in range (documented as capped, or an opaque filter) may instead be
      answered normally, and say so;
  (b) the server is still alive: GET /healthz answers 200 (and, with --pid or --lockstep, the process
      still runs);
  (c) the log head did not move: no event after the head read before the request (POST /v1/history/
      events after it; the head itself from POST /v1/history/verify, at the start and when it moved).

It prints one line per case (PASS/FAIL, route or method, case, what came back), then the failures
grouped by kind of defect, and exits 1 if any case failed.

Usage:
  bad_input.py --grpc HOST:PORT --http http://HOST:PORT [--token T] [--pid PID]
  bad_input.py --lockstep PATH/TO/lockstep      # starts its own `serve --dev` on loopback, applies
                                                # examples/ledger-split.yaml, starts migrations, and
                                                # restarts the server after a case that kills it
Options: --only REGEX (cases whose "TARGET CASE" text matches), --protos DIR, --budget SECONDS (115; cases past it
are reported as not run), --timeout SECONDS (5, per request).

The server should hold at least one migration of examples/ledger-split.yaml, e.g.
  lockstep plan apply examples/ledger-split.yaml --server $GRPC
  lockstep migration start ledger-split --server $GRPC
(and preferably a settled one too, for the watch cases: start another and abort it). The probe finds
them through POST /v1/migrations/list; without any it uses made-up ids.

Python stubs are generated from Protos/ with grpcio-tools into a temporary directory, as the other
scripts here do (`pip install grpcio grpcio-tools`).
"""
import argparse
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from urllib.parse import quote, urlsplit

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", "..", ".."))

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--grpc", help="HOST:PORT of the gRPC listener")
parser.add_argument("--http", help="http://HOST:PORT of the JSON listener")
parser.add_argument("--token", help="bearer token (not needed under --dev)")
parser.add_argument("--pid", type=int, help="the server's process id, to check it is alive")
parser.add_argument("--lockstep", help="a lockstep binary: start (and restart) a --dev server with it")
parser.add_argument("--protos", default=os.path.join(REPO, "Protos"))
parser.add_argument("--plan", default=os.path.join(REPO, "examples", "ledger-split.yaml"))
parser.add_argument("--only", help="run only cases whose 'TARGET CASE' text matches this regex")
parser.add_argument("--budget", type=float, default=115.0, help="seconds for the cases (the whole run stays under 2 minutes)")
parser.add_argument("--timeout", type=float, default=5.0, help="seconds per request")
args = parser.parse_args()
if not args.lockstep and not (args.grpc and args.http):
    parser.error("give --grpc and --http of a running server, or --lockstep to start one")

STARTED = time.monotonic()
TIMEOUT = args.timeout
BODY_MAX = 1 << 20                       # docs/api.md, Limits: requestBodyBytesMax
BIG_ID = "a" * (900 * 1024)              # a 900 KB identifier (under the body limit)
LONG_ID = "a" * 129                      # one byte over the 128-byte identifier limit
LONG_TEXT = "r" * 1025                   # one byte over the documented 1,024-byte maxLength of free text
HUGE_TEXT = "r" * (900 * 1024)
BAD_IDS = [("space", "has space"), ("slash", "a/b"), ("nul", "a\x00b"), ("newline", "a\nb"), ("unicode", "caf\u00e9"),
           ("emoji", "x\U0001F600"), ("dotdot", "../../etc/passwd"), ("percent", "a%2Fb"), ("quote", 'a"b'),
           ("del", "a\x7fb"), ("empty", "")]
rng = random.Random(20240601)
RANDOM_BYTES = bytes(rng.randrange(256) for _ in range(256))

# ---------------------------------------------------------------------------------------------------
# gRPC stubs, generated from Protos/ at run time.
generated = tempfile.mkdtemp(prefix="bad-input-stubs-")
subprocess.check_call([sys.executable, "-m", "grpc_tools.protoc", "-I", args.protos, f"--python_out={generated}",
                       f"--grpc_python_out={generated}", "lockstep/v1/agent.proto", "lockstep/v1/events.proto"])
sys.path.insert(0, generated)
import grpc  # noqa: E402
from lockstep.v1 import agent_pb2  # noqa: E402

# ---------------------------------------------------------------------------------------------------
# The server: given, or started here (and restarted after a case that kills it).
server_proc = None
server_dir = None
grpc_target = args.grpc
http_base = (args.http or "").rstrip("/")


def start_server():
    global server_proc, server_dir, grpc_target, http_base
    if server_dir is None:
        server_dir = tempfile.mkdtemp(prefix="bad-input-server-")
    ready = os.path.join(server_dir, "ready.json")
    if os.path.exists(ready):
        os.remove(ready)
    log = open(os.path.join(server_dir, "server.log"), "ab")
    server_proc = subprocess.Popen([args.lockstep, "serve", "--data", os.path.join(server_dir, "data"), "--dev",
                                    "--http-listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0", "--ready-file", ready],
                                   stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while not os.path.exists(ready):
        if server_proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the server did not start (see {server_dir}/server.log)")
        time.sleep(0.05)
    addresses = json.load(open(ready))
    grpc_target, http_base = addresses["grpc"], addresses["http"].rstrip("/")


def stop_server():
    global server_proc
    if server_proc is not None and server_proc.poll() is None:
        server_proc.send_signal(signal.SIGTERM)
        try:
            server_proc.wait(10)
        except subprocess.TimeoutExpired:
            server_proc.kill()
            server_proc.wait()
    server_proc = None


def cli(*argv):
    return subprocess.run([args.lockstep, *argv, "--server", grpc_target], capture_output=True, text=True, timeout=30)


if args.lockstep:
    start_server()
    cli("plan", "apply", args.plan)
    cli("migration", "start", "ledger-split", "--id", "probe-running")
    cli("migration", "start", "ledger-split", "--id", "probe-settled")
    cli("migration", "abort", "probe-settled", "--reason", "settled for the watch cases of the bad-input probe")
    time.sleep(0.3)

auth_headers = {"authorization": f"Bearer {args.token}"} if args.token else {}
grpc_metadata = [("authorization", f"Bearer {args.token}")] if args.token else []
channel = None


def new_channel():
    global channel
    if channel is not None:
        channel.close()
    channel = grpc.insecure_channel(grpc_target, options=[("grpc.max_send_message_length", -1),
                                                          ("grpc.max_receive_message_length", 64 << 20),
                                                          ("grpc.enable_retries", 0)])


new_channel()

# ---------------------------------------------------------------------------------------------------
# A small HTTP/1.1 client over a socket: full control of what is sent (bad headers, chunked bodies,
# bodies over the limit), and the answer read while the body is still being written.


class Answer:
    def __init__(self, status=None, headers=None, body=b"", error=None, elapsed=0.0):
        self.status, self.headers, self.body, self.error, self.elapsed = status, headers or {}, body, error, elapsed


def http(method, path, body=None, headers=None, chunked=False, raw=None, timeout=TIMEOUT, read_body=True):
    """One request on a fresh connection (Connection: close). `raw` sends those bytes as the whole request."""
    url = urlsplit(http_base)
    began = time.monotonic()
    try:
        sock = socket.create_connection((url.hostname, url.port), timeout=timeout)
    except OSError as error:
        return Answer(error=f"connect: {error}", elapsed=time.monotonic() - began)
    sock.settimeout(timeout)
    if raw is None:
        head = [f"{method} {path} HTTP/1.1", f"host: {url.hostname}:{url.port}", "connection: close"]
        all_headers = dict(auth_headers)
        all_headers.update(headers if headers is not None else {"content-type": "application/json"})
        for name, value in all_headers.items():
            if value is not None:
                head.append(f"{name}: {value}")
        payload = b""
        if body is not None:
            if isinstance(body, str):
                body = body.encode("utf-8", "surrogatepass")
            if chunked:
                head.append("transfer-encoding: chunked")
                step = 64 * 1024
                payload = b"".join(b"%x\r\n" % len(body[i:i + step]) + body[i:i + step] + b"\r\n" for i in range(0, len(body), step)) + b"0\r\n\r\n"
            else:
                head.append(f"content-length: {len(body)}")
                payload = body
        elif method in ("POST", "PUT", "PATCH"):
            head.append("content-length: 0")
        raw = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1", "replace") + payload
    send_error = []

    def sender():
        try:
            sock.sendall(raw)
        except OSError as error:
            send_error.append(error)
    writer = threading.Thread(target=sender, daemon=True)
    writer.start()
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
            if time.monotonic() - began > timeout:
                raise socket.timeout()
        if b"\r\n\r\n" not in data:
            sock.close()
            why = f"connection closed after {len(data)} bytes without a response" + (f" (send: {send_error[0]})" if send_error else "")
            return Answer(error=why, body=data, elapsed=time.monotonic() - began)
        head, rest = data.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        hdrs = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                hdrs[name.strip().lower()] = value.strip()
        if method == "HEAD" or status in (204, 304) or not read_body:
            sock.close()
            return Answer(status, hdrs, b"", elapsed=time.monotonic() - began)
        if "content-length" in hdrs:
            want = int(hdrs["content-length"])
            while len(rest) < want:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                rest += chunk
            body_bytes = rest[:want]
        else:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                rest += chunk
                if time.monotonic() - began > timeout:
                    raise socket.timeout()
            body_bytes = dechunk(rest) if "chunked" in hdrs.get("transfer-encoding", "") else rest
        sock.close()
        return Answer(status, hdrs, body_bytes, elapsed=time.monotonic() - began)
    except socket.timeout:
        sock.close()
        return Answer(error=f"no complete answer within {timeout:g} s" + (f" (got {len(data)} bytes)" if data else ""),
                      elapsed=time.monotonic() - began)
    except OSError as error:
        sock.close()
        return Answer(error=f"{type(error).__name__}: {error}" + (f" after {len(data)} bytes" if data else ""),
                      elapsed=time.monotonic() - began)


def dechunk(data):
    out = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        try:
            size = int(size_line.split(b";")[0], 16)
        except ValueError:
            break
        if size == 0:
            break
        out += data[:size]
        data = data[size + 2:]
    return out


# ---------------------------------------------------------------------------------------------------
# The ids the server knows (from its migrations), to aim hostile values past the lookups.


def call_json(path, message):
    answer = http("POST", path, json.dumps(message))
    try:
        return answer.status, json.loads(answer.body or b"null")
    except ValueError:
        return answer.status, None


def discover():
    _, listed = call_json("/v1/migrations/list", {"page_size": 1000})
    migrations = (listed or {}).get("migrations", [])
    running = next((m["migration_id"] for m in migrations if m.get("status") in ("running", "paused")), None)
    settled = next((m["migration_id"] for m in migrations if m.get("status") in ("succeeded", "failed", "rolled_back")), None)
    any_id = running or (migrations[0]["migration_id"] if migrations else None)
    nodes = {}
    for m in migrations:
        if m["migration_id"] == any_id:
            nodes = {n["node_id"]: n for n in m.get("nodes", [])}
    return any_id or "no-such-migration", settled, nodes


REAL, SETTLED, REAL_NODES = discover()
FIRST_NODE = next(iter(REAL_NODES), "expand-ledger-schema")
GATED_NODE = next((n for n, v in REAL_NODES.items() if v.get("approvals_needed")), "switch-reads-payments")
FIRST_SERVICE = (REAL_NODES.get(FIRST_NODE, {}).get("services") or ["ledger"])[0]
IDLE_SERVICE = "payments"                  # a service of the plan with no step ready: a valid poll answers at once
UNKNOWN_MIGRATION = "bad-input-no-such-migration"
WATCH_ID = SETTLED or UNKNOWN_MIGRATION
BENIGN_TOKEN = "987654321"                 # matches no lease: reports are refused, never recorded
print(f"# server grpc={grpc_target} http={http_base}; migration {REAL} (node {FIRST_NODE}, gate {GATED_NODE}), "
      f"settled {SETTLED}", flush=True)

# ---------------------------------------------------------------------------------------------------
# The routes and methods. Each field: (json name, proto field number, kind). Kinds:
#   id      an identifier (128 bytes of letters, digits, -_.@:), looked up or validated
#   text    free text, documented maxLength 1024
#   yaml    a plan file's text
#   opaque  a string the server treats as a filter or token (in-range odd values may be answered)
#   u32 u64 i64 double bool  scalars;  strs  a repeated string
# benign: the rest of the message, chosen so that a request that *is* accepted changes nothing,
# except where a field is aimed at the real migration to reach a validation (then acceptance of an
# out-of-range value shows as a moved head).


class Route:
    def __init__(self, path, service, method, request, fields, benign, aim=None, mutating=False, stream=False, ok_on_empty=False):
        self.path, self.service, self.method, self.request = path, service, method, request
        self.fields, self.benign, self.aim = fields, benign, aim or {}
        self.mutating, self.stream, self.ok_on_empty = mutating, stream, ok_on_empty

    @property
    def grpc_path(self):
        return f"/lockstep.v1.{self.service}/{self.method}"


LEASE = f"{REAL}/{FIRST_NODE}"
ROUTES = [
    Route("/v1/agent/poll", "AgentService", "Poll", agent_pb2.PollRequest,
          [("service", 1, "id"), ("agent_id", 2, "id"), ("capabilities", 3, "strs"), ("wait_ms", 4, "u32")],
          {"service": IDLE_SERVICE, "agent_id": "bad-input-probe", "wait_ms": 0}),
    Route("/v1/agent/heartbeat", "AgentService", "Heartbeat", agent_pb2.HeartbeatRequest,
          [("lease_id", 1, "id"), ("fencing_token", 2, "u64")], {"lease_id": LEASE, "fencing_token": BENIGN_TOKEN}),
    Route("/v1/agent/progress", "AgentService", "ReportProgress", agent_pb2.ReportProgressRequest,
          [("lease_id", 1, "id"), ("fencing_token", 2, "u64"), ("percent", 3, "u32"), ("message", 4, "text")],
          {"lease_id": LEASE, "fencing_token": BENIGN_TOKEN, "percent": 10, "message": "probe"}),
    Route("/v1/agent/complete", "AgentService", "Complete", agent_pb2.CompleteRequest,
          [("lease_id", 1, "id"), ("fencing_token", 2, "u64")], {"lease_id": LEASE, "fencing_token": BENIGN_TOKEN}),
    Route("/v1/agent/fail", "AgentService", "Fail", agent_pb2.FailRequest,
          [("lease_id", 1, "id"), ("fencing_token", 2, "u64"), ("reason", 3, "text"), ("retryable", 4, "bool")],
          {"lease_id": LEASE, "fencing_token": BENIGN_TOKEN, "reason": "probe", "retryable": True}),
    Route("/v1/plans", "MigrationService", "ApplyPlan", agent_pb2.ApplyPlanRequest, [("plan_yaml", 1, "yaml")],
          {"plan_yaml": "name: [unterminated"}, mutating=True),
    Route("/v1/plans/validate", "MigrationService", "ValidatePlan", agent_pb2.ApplyPlanRequest, [("plan_yaml", 1, "yaml")],
          {"plan_yaml": "name: [unterminated"}, ok_on_empty=True),
    Route("/v1/plans/list", "MigrationService", "ListPlans", agent_pb2.ListPlansRequest, [], {}, ok_on_empty=True),
    Route("/v1/migrations", "MigrationService", "StartMigration", agent_pb2.StartMigrationRequest,
          [("plan", 1, "id"), ("version", 2, "u64"), ("migration_id", 3, "id")],
          {"plan": "bad-input-no-such-plan", "migration_id": "bad-input-m"},
          aim={"version": {"plan": "ledger-split", "migration_id": "bad-input-m"},
               "migration_id": {"plan": "ledger-split"}}, mutating=True),
    Route("/v1/migrations/get", "MigrationService", "GetMigration", agent_pb2.GetMigrationRequest,
          [("migration_id", 1, "id")], {"migration_id": UNKNOWN_MIGRATION}),
    Route("/v1/migrations/list", "MigrationService", "ListMigrations", agent_pb2.ListMigrationsRequest,
          [("page_size", 1, "u32"), ("page_token", 2, "opaque")], {"page_size": 1}, ok_on_empty=True),
    Route("/v1/migrations/pause", "MigrationService", "PauseMigration", agent_pb2.PauseMigrationRequest,
          [("migration_id", 1, "id"), ("reason", 2, "text")], {"migration_id": UNKNOWN_MIGRATION, "reason": "probe"},
          aim={"reason": {"migration_id": REAL}}, mutating=True),
    Route("/v1/migrations/resume", "MigrationService", "ResumeMigration", agent_pb2.ResumeMigrationRequest,
          [("migration_id", 1, "id")], {"migration_id": UNKNOWN_MIGRATION}, mutating=True),
    Route("/v1/migrations/approve", "MigrationService", "Approve", agent_pb2.GateDecisionRequest,
          [("migration_id", 1, "id"), ("node_id", 2, "id"), ("comment", 3, "text")],
          {"migration_id": UNKNOWN_MIGRATION, "node_id": GATED_NODE, "comment": "probe"},
          aim={"node_id": {"migration_id": REAL}, "comment": {"migration_id": REAL}}, mutating=True),
    Route("/v1/migrations/reject", "MigrationService", "Reject", agent_pb2.GateDecisionRequest,
          [("migration_id", 1, "id"), ("node_id", 2, "id"), ("comment", 3, "text")],
          {"migration_id": UNKNOWN_MIGRATION, "node_id": GATED_NODE, "comment": "probe"},
          aim={"node_id": {"migration_id": REAL}, "comment": {"migration_id": REAL}}, mutating=True),
    Route("/v1/service-leases/list", "MigrationService", "ListServiceLeases", agent_pb2.ListServiceLeasesRequest, [], {},
          ok_on_empty=True),
    Route("/v1/metrics/record", "MigrationService", "RecordMetric", agent_pb2.RecordMetricRequest,
          [("migration_id", 1, "id"), ("node_id", 2, "id"), ("name", 3, "opaque"), ("value", 4, "double"),
           ("window_start_ms", 5, "i64"), ("window_end_ms", 6, "i64"), ("source", 7, "text"), ("cohort", 8, "opaque")],
          {"migration_id": REAL, "node_id": FIRST_NODE, "name": "error_rate", "value": 0.5, "source": "probe"}),
    Route("/v1/migrations/watch", "MigrationService", "Watch", agent_pb2.WatchRequest,
          [("migration_id", 1, "id"), ("after_sequence", 2, "u64")], {"migration_id": WATCH_ID}, stream=True,
          aim={"after_sequence": {"migration_id": WATCH_ID}}),
    Route("/v1/stage", "StageService", "GetStage", agent_pb2.StageRequest,
          [("migration_id", 1, "id"), ("node_id", 2, "id"), ("key", 3, "key")], {"migration_id": UNKNOWN_MIGRATION},
          aim={"node_id": {"migration_id": REAL}, "key": {"migration_id": REAL}}),
    Route("/v1/history/events", "HistoryService", "ListEvents", agent_pb2.ListEventsRequest,
          [("after_sequence", 1, "u64"), ("stream", 2, "stream"), ("page_size", 3, "u32")], {"page_size": 1}, ok_on_empty=True),
    Route("/v1/history/export", "HistoryService", "ExportEvents", agent_pb2.ListEventsRequest,
          [("after_sequence", 1, "u64"), ("stream", 2, "stream"), ("page_size", 3, "u32")], {"stream": "plan/bad-input-none"},
          stream=True, ok_on_empty=True),
    Route("/v1/history/state", "HistoryService", "GetStateAt", agent_pb2.StateAtRequest,
          [("sequence", 1, "u64"), ("time_ms", 2, "i64")], {"sequence": "1"}, aim={"time_ms": {"sequence": None}},
          ok_on_empty=True),  # {} = the whole log (docs/api.md)
    Route("/v1/history/verify", "HistoryService", "VerifyHistory", agent_pb2.VerifyHistoryRequest, [], {}, ok_on_empty=True),
    Route("/v1/history/explain", "HistoryService", "ExplainMigration", agent_pb2.ExplainRequest,
          [("migration_id", 1, "id"), ("node_id", 2, "id")], {"migration_id": UNKNOWN_MIGRATION}, aim={"node_id": {"migration_id": REAL}}),
    Route("/v1/history/diff", "HistoryService", "DiffHistory", agent_pb2.DiffHistoryRequest,
          [("migration_id", 3, "id")], {"migration_id": UNKNOWN_MIGRATION}),  # no points: refused
    Route("/v1/service-leases/release", "MigrationService", "ReleaseServiceLease", agent_pb2.ReleaseServiceLeaseRequest,
          [("service", 1, "id"), ("reason", 2, "text")], {"service": "bad-input-no-such-service", "reason": "probe"},
          aim={"reason": {"service": FIRST_SERVICE}}, mutating=True),
    # Freezes: each benign request is refused (an empty reason, an unknown freeze or migration), and
    # the aimed ones reach the core's range checks.
    Route("/v1/freezes", "MigrationService", "DeclareFreeze", agent_pb2.DeclareFreezeRequest,
          [("id", 1, "id"), ("services", 2, "strs"), ("from_ms", 3, "i64"), ("until_ms", 4, "i64"), ("reason", 5, "text")],
          {"id": "bad-input-freeze", "reason": ""},
          aim={"from_ms": {"id": "bad-input-freeze", "reason": "probe", "until_ms": "2"},
               "until_ms": {"id": "bad-input-freeze", "reason": "probe", "from_ms": "1"}}, mutating=True),
    Route("/v1/freezes/list", "MigrationService", "ListFreezes", agent_pb2.ListFreezesRequest, [], {}, ok_on_empty=True),
    Route("/v1/webhooks/deliveries", "MigrationService", "ListWebhookDeliveries", agent_pb2.ListWebhookDeliveriesRequest,
          [("webhook", 1, "id"), ("status", 2, "opaque"), ("limit", 3, "u32")], {"limit": 1}, ok_on_empty=True),
    Route("/v1/freezes/end", "MigrationService", "EndFreeze", agent_pb2.EndFreezeRequest,
          [("id", 1, "id"), ("reason", 2, "text")], {"id": "bad-input-no-such-freeze", "reason": "probe"}, mutating=True),
    Route("/v1/line/stop", "MigrationService", "StopLine", agent_pb2.StopLineRequest,
          [("services", 1, "strs"), ("reason", 2, "text"), ("id", 3, "id")], {"id": "bad-input-stop", "reason": ""},
          aim={"reason": {"id": "bad-input-stop", "services": ["bad-input-none"]}}, mutating=True),
    Route("/v1/migrations/break-glass", "MigrationService", "BreakGlass", agent_pb2.BreakGlassRequest,
          [("migration_id", 1, "id"), ("node_id", 2, "id"), ("scope", 3, "opaque"), ("justification", 4, "text")],
          {"migration_id": UNKNOWN_MIGRATION, "node_id": FIRST_NODE, "scope": "freeze", "justification": "probe"},
          aim={"node_id": {"migration_id": REAL, "scope": "freeze", "justification": "probe"},
               "scope": {"migration_id": REAL, "node_id": FIRST_NODE, "justification": "probe"},
               "justification": {"migration_id": REAL, "node_id": FIRST_NODE, "scope": "freeze"}}, mutating=True),
    # Last: an abort that is wrongly accepted rolls the migration back.
    Route("/v1/migrations/abort", "MigrationService", "AbortMigration", agent_pb2.AbortMigrationRequest,
          [("migration_id", 1, "id"), ("reason", 2, "text")], {"migration_id": UNKNOWN_MIGRATION, "reason": "probe"},
          aim={"reason": {"migration_id": REAL}}, mutating=True),
]

# Every operation of the server's table is probed, and nothing else: the table comes from the binary
# (`lockstep debug operations`) when one is given.
if args.lockstep:
    table = [json.loads(line) for line in subprocess.check_output([args.lockstep, "debug", "operations"], text=True).splitlines()]
    probed = {(f"lockstep.v1.{route.service}", route.method, route.path) for route in ROUTES}
    declared = {(op["service"], op["method"], op["path"].split("/:")[0]) for op in table}
    if probed != declared:
        raise SystemExit("the probe's routes are not the server's operation table:\n"
                         + "".join(f"  not probed: {op}\n" for op in sorted(declared - probed))
                         + "".join(f"  not in the table: {op}\n" for op in sorted(probed - declared)))

# ---------------------------------------------------------------------------------------------------
# Hostile values per kind: (case name, JSON value or RAW(json text), gRPC value or WIRE(bytes) or
# None (no gRPC form), expectation). Expectations: "error" (must be a coded error), "any" (a coded
# error or a normal answer: the value is in range), "park" (also a poll left waiting: in range, capped).


class RAW:        # JSON text spliced in as the value
    def __init__(self, text):
        self.text = text


class WIRE:       # the field's bytes on the wire, spliced into an otherwise benign message
    def __init__(self, data):
        self.data = data


def varint(n):
    n &= (1 << 70) - 1
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def key(number, wire_type):
    return varint((number << 3) | wire_type)


def ident_values():
    values = [("900KB", BIG_ID, BIG_ID, "error"), ("129-bytes", LONG_ID, LONG_ID, "error")]
    values += [(f"bad-chars-{name}", value, value, "error") for name, value in BAD_IDS if name != "empty"]
    values += [("lone-surrogate", RAW('"a\\ud800b"'), None, "error"),
               ("number-not-string", 12, None, "error"), ("bool-not-string", True, None, "error"),
               ("object-not-string", {}, None, "error"), ("array-not-string", ["a"], None, "error")]
    return values


def text_values():
    return [("1025-bytes", LONG_TEXT, LONG_TEXT, "error"), ("900KB", HUGE_TEXT, HUGE_TEXT, "error"),
            ("lone-surrogate", RAW('"a\\ud800b"'), None, "error"), ("number-not-string", 12, None, "error"),
            ("array-not-string", ["x"], None, "error")]


def opaque_values():
    return [("900KB", BIG_ID, BIG_ID, "any"), ("bad-chars", "a b/\u00e9\x00", "a b/\u00e9\x00", "any"),
            ("lone-surrogate", RAW('"a\\ud800b"'), None, "error"), ("number-not-string", 12, None, "error"),
            ("object-not-string", {}, None, "error")]


def stream_values():  # "migration/ID" or "plan/NAME" (docs/api.md, History); empty = every stream
    return [("900KB", BIG_ID, BIG_ID, "error"), ("no-kind", "bad-input", "bad-input", "error"),
            ("unknown-kind", "node/x", "node/x", "error"), ("migration-129-byte-id", "migration/" + LONG_ID, "migration/" + LONG_ID, "error"),
            ("plan-bad-chars", "plan/a b\u00e9\x00", "plan/a b\u00e9\x00", "error"), ("migration-empty-id", "migration/", "migration/", "error"),
            ("lone-surrogate", RAW('"a\\ud800b"'), None, "error"), ("number-not-string", 12, None, "error")]


def key_values():  # the stage's cohort key: up to 256 bytes
    return [("257-bytes", "k" * 257, "k" * 257, "error"), ("900KB", BIG_ID, BIG_ID, "error"),
            ("lone-surrogate", RAW('"a\\ud800b"'), None, "error"), ("number-not-string", 12, None, "error")]


def yaml_values():
    bomb = "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},"
                                                   f"*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)}]\n"
                                                   for i in range(9))
    plan = open(args.plan).read() if os.path.exists(args.plan) else "name: ledger-split\n"
    return [("garbage", "%%% not yaml {{{", "%%% not yaml {{{", "error"),
            ("billion-laughs", bomb, bomb, "error"),
            ("deep-nesting", "x: " + "[" * 50000 + "]" * 50000, "x: " + "[" * 50000 + "]" * 50000, "error"),
            ("900KB-scalar", "name: " + "a" * (900 * 1024), "name: " + "a" * (900 * 1024), "error"),
            ("nul-bytes", "name: a\x00b\n", "name: a\x00b\n", "error"),
            ("129-byte-node-id", plan.replace("expand-ledger-schema", LONG_ID), plan.replace("expand-ledger-schema", LONG_ID), "error"),
            ("bad-char-plan-name", plan.replace("name: ledger-split", "name: ledger split/\u00e9"),
             plan.replace("name: ledger-split", "name: ledger split/\u00e9"), "error"),
            ("lone-surrogate", RAW('"name: a\\ud800b"'), None, "error"),
            ("number-not-string", 12, None, "error")]


U32_OUT = [("-1", -1), ("2^32", 4294967296), ("2^63", 9223372036854775808), ("2^64", 18446744073709551616),
           ("-2^63", -9223372036854775808), ("fraction-1.5", 1.5), ("1e400", RAW("1e400")), ("string-abc", "abc"),
           ("empty-string", ""), ("object", {}), ("bool", True)]


def u32_values(expect_in_range):
    values = [(name, value, None, "error") for name, value in U32_OUT]
    values += [("quoted-2^32", "4294967296", None, "error"),
               ("max-2^32-1", 4294967295, 4294967295, expect_in_range),
               ("wire-varint-2^64-1", None, WIRE(varint((1 << 64) - 1)), expect_in_range),
               ("wire-varint-11-bytes", None, WIRE(b"\xff" * 10 + b"\x01"), "error")]
    return values


def u64_values(expect_in_range):
    return [("-1", "-1", None, "error"), ("-1-unquoted", -1, None, "error"),
            ("2^64", "18446744073709551616", None, "error"), ("2^64-unquoted", RAW("18446744073709551616"), None, "error"),
            ("-2^63", "-9223372036854775808", None, "error"), ("fraction-1.5", "1.5", None, "error"),
            ("1e400", RAW("1e400"), None, "error"), ("string-abc", "abc", None, "error"), ("object", {}, None, "error"),
            ("2^63", "9223372036854775808", 1 << 63, expect_in_range),
            ("max-2^64-1", "18446744073709551615", (1 << 64) - 1, expect_in_range),
            ("wire-varint-11-bytes", None, WIRE(b"\xff" * 10 + b"\x01"), "error")]


def i64_values(expect_in_range):
    return [("2^63", "9223372036854775808", None, "error"), ("-2^63-1", "-9223372036854775809", None, "error"),
            ("2^64", "18446744073709551616", None, "error"), ("2^64-unquoted", RAW("18446744073709551616"), None, "error"),
            ("fraction-1.5", "1.5", None, "error"), ("string-abc", "abc", None, "error"), ("object", {}, None, "error"),
            ("Int64.min", "-9223372036854775808", -(1 << 63), expect_in_range),
            ("Int64.max", "9223372036854775807", (1 << 63) - 1, expect_in_range),
            ("-1", "-1", -1, expect_in_range)]


def double_values():
    return [("NaN", "NaN", float("nan"), "error"), ("Infinity", "Infinity", float("inf"), "error"),
            ("-Infinity", "-Infinity", float("-inf"), "error"), ("1e308", 1e308, 1e308, "error"),
            ("1e400", RAW("1e400"), None, "error"), ("string-abc", "abc", None, "error"), ("object", {}, None, "error"),
            ("bool", True, None, "error")]


def bool_values():
    return [("string-yes", "yes", None, "error"), ("number-2", 2, None, "error"), ("object", {}, None, "error"),
            ("wire-varint-2", None, WIRE(varint(2)), "any"), ("wire-varint-2^64-1", None, WIRE(varint((1 << 64) - 1)), "any")]


def strs_values():
    many = ["x"] * 100000
    return [("not-an-array", "x", None, "error"), ("numbers", [1, 2], None, "error"), ("nested", [["x"]], None, "error"),
            ("100k-entries", many, many, "any"), ("one-900KB-entry", [BIG_ID], [BIG_ID], "any"),
            ("bad-chars-entry", ["a b\x00\u00e9"], ["a b\x00\u00e9"], "any")]


def values_for(route, name, kind):
    if kind == "id":
        return ident_values()
    if kind == "text":
        return text_values()
    if kind == "opaque":
        return opaque_values()
    if kind == "key":
        return key_values()
    if kind == "stream":
        return stream_values()
    if kind == "yaml":
        values = yaml_values()
        return [(n, j, g, "any" if route.method == "ValidatePlan" and isinstance(j, str) else e) for n, j, g, e in values]
    in_range = "park" if (route.method == "Poll" and name == "wait_ms") else "any"
    if kind == "u32":
        if name == "percent":  # 0...100: anything over it is out of range
            return [(n, j, g, "error") for n, j, g, _ in u32_values("error")] + [("101", 101, 101, "error")]
        return u32_values(in_range)
    if kind == "u64":
        return u64_values(in_range)
    if kind == "i64":
        return i64_values(in_range)
    if kind == "double":
        return double_values()
    if kind == "bool":
        return bool_values()
    if kind == "strs":
        return strs_values()
    raise ValueError(kind)


# ---------------------------------------------------------------------------------------------------
# Checks.

CODE_RE = re.compile(r"^[a-z][a-z0-9_]*$")
# Swift internals in a message: a generated type's name, a decoder's enum case ("in JSON: malformedString").
SWIFTISH = re.compile(r"Lockstep_V1_|SwiftProtobuf|[A-Z][A-Za-z]*DecodingError|\b[a-z][A-Za-z]+\(\\?\"|Swift\.|NIO[A-Z]|"
                      r"in JSON: [a-z]+[A-Z][A-Za-z]*\b|in JSON: (failure|truncated)\b")
failures = []       # (kind, target, case, detail)
notes = []
counts = {"PASS": 0, "FAIL": 0}


def short(text, n=220):
    text = text if isinstance(text, str) else text.decode("utf-8", "replace")
    text = text.replace("\n", "\\n").replace("\r", "\\r")
    return text if len(text) <= n else text[:n] + f"... ({len(text)} chars)"


def judge_http(answer, expect, stream=False):
    """(ok, kind of defect or None, what came back)."""
    if answer.error:
        if expect == "park" and answer.error.startswith("no complete answer") and answer.elapsed >= 1.0:
            return True, None, "accepted: the poll parked (in range, capped) until the client gave up"
        kind = "no answer within the timeout" if answer.error.startswith("no complete answer") else "connection dropped without an HTTP answer"
        return False, kind, answer.error
    code_header = answer.headers.get("lockstep-error-code")
    what = f"{answer.status} " + (f"[lockstep-error-code: {code_header}] " if code_header else "") + short(answer.body or b"(empty body)")
    if 200 <= answer.status < 300:
        first = (answer.body or b"").split(b"\n", 1)[0]
        if "ndjson" in answer.headers.get("content-type", "") and first.startswith(b'{"error"'):
            return False, "bad input refused only inside a 200 NDJSON stream (status 200, error line)", what
        if expect in ("any", "park"):
            return True, None, "accepted (value in range): " + what
        return False, "accepted bad input with 2xx", what
    if not answer.body:
        return False, f"empty {answer.status} body (no error code)", what
    try:
        body = json.loads(answer.body)
    except ValueError:
        body = None
    code = None
    if isinstance(body, dict):
        code = body.get("code")
        if not isinstance(code, str) and isinstance(body.get("error"), dict):
            code = body["error"].get("code")
    if not (isinstance(code, str) and CODE_RE.match(code)) and not (code_header and CODE_RE.match(code_header)):
        return False, f"{answer.status} body is not an ErrorBody with a code", what
    if answer.status >= 500 and (code or code_header) not in ("commit_outcome_unknown", "writes_stopped", "storage_busy", "shutting_down"):
        return False, f"{answer.status} server error on bad input", what
    if isinstance(body, dict) and not body.get("message"):
        return False, "ErrorBody without a message", what
    return True, None, what


def judge_grpc(outcome, expect):
    kind_, detail = outcome[0], outcome[1]
    if kind_ == "ok":
        if expect in ("any", "park"):
            return True, None, "accepted (value in range): OK " + short(detail)
        return False, "gRPC OK on bad input", "OK " + short(detail)
    status, details, trailers, elapsed = outcome[1:]
    if expect == "park" and status == grpc.StatusCode.DEADLINE_EXCEEDED and elapsed >= 1.0:
        return True, None, "accepted: the poll parked (in range, capped) until the deadline"
    code = trailers.get("lockstep-error-code")
    what = f"{status.name} [lockstep-error-code: {code}] {short(details or '')}"
    if status == grpc.StatusCode.DEADLINE_EXCEEDED:
        return False, "no gRPC answer within the deadline", what
    if status == grpc.StatusCode.UNAVAILABLE and not code:
        return False, "gRPC UNAVAILABLE (connection lost) on bad input", what
    if status in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN) and code != "commit_outcome_unknown":
        return False, f"gRPC {status.name} on bad input", what
    if not code:
        swift = " naming a Swift type" if details and SWIFTISH.search(details) else ""
        return False, f"untyped gRPC {status.name}{swift} (no lockstep-error-code trailer)", what
    if not CODE_RE.match(code):
        return False, "lockstep-error-code is not a stable code", what
    if not (details or "").startswith(code + ": "):
        return False, "gRPC message is not `CODE: sentence`", what
    return True, None, what


def head():
    """The log's head sequence (POST /v1/history/verify), or None when it cannot be read."""
    answer = http("POST", "/v1/history/verify", "{}")
    try:
        return int(json.loads(answer.body).get("head_sequence", "0"))
    except (ValueError, TypeError, AttributeError):
        return None


def moved_since(sequence):
    """Whether the log has an event after `sequence` (one cheap page of POST /v1/history/events), or None."""
    answer = http("POST", "/v1/history/events", json.dumps({"after_sequence": str(sequence), "page_size": 1}))
    try:
        return bool(json.loads(answer.body).get("events"))
    except (ValueError, TypeError, AttributeError):
        return None


def appended_since(sequence):
    answer = http("POST", "/v1/history/events", json.dumps({"after_sequence": str(sequence), "page_size": 20}))
    try:
        events = json.loads(answer.body).get("events", [])
        return ", ".join(f"{e['sequence']}:{next(iter(e['record'].get('payload', {'?': 0})))} by {e['record'].get('actor', '?')}"
                         for e in events)
    except (ValueError, TypeError, AttributeError, KeyError, StopIteration):
        return "(events unreadable)"


def alive():
    if server_proc is not None and server_proc.poll() is not None:
        return False, f"the server process exited with {server_proc.returncode}"
    if args.pid:
        try:
            os.kill(args.pid, 0)
        except OSError:
            return False, f"process {args.pid} is gone"
    answer = http("GET", "/healthz", headers={}, timeout=TIMEOUT)
    if answer.status != 200:
        return False, f"/healthz: {answer.error or answer.status}"
    return True, ""


server_down = False
current_head = None


def run_case(target, case, send, judge_fn):
    global server_down, current_head
    label = f"{target} {case}"
    if args.only and not re.search(args.only, label):
        return
    if server_down:
        record(False, "not run: the server was down", target, case, "server down")
        return
    if time.monotonic() - STARTED > args.budget:
        record(False, "not run: over the time budget", target, case, f"over {args.budget:g} s")
        return
    before = current_head if current_head is not None else head()
    began = time.monotonic()
    try:
        outcome = send()
        ok, kind, what = judge_fn(outcome)
    except Exception as error:  # a probe bug must not hide the rest
        ok, kind, what = False, "probe error", f"{type(error).__name__}: {error}"
    what = f"[{(time.monotonic() - began) * 1000:.0f} ms] {what}"
    if what and SWIFTISH.search(what) and ok:
        notes.append((target, case, short(what, 200)))
    living, why = alive()
    if not living:
        time.sleep(0.3)
        living, why = alive()
    if not living:
        record(False, "server died", target, case, f"{why}; the request got: {what}")
        if args.lockstep:
            stop_server()
            start_server()
            new_channel()
            current_head = head()
        else:
            server_down = True
        return
    moved = moved_since(before) if before is not None else None
    if moved:
        after = current_head = head()
        record(False, "head moved", target, case, f"head {before} -> {after} ({appended_since(before)}); the request got: {what}")
        return
    if moved is None:
        current_head = head()
        record(False, "head unreadable after the request", target, case, what)
        return
    record(ok, kind, target, case, what)


# Answers without a Lockstep code that docs/api.md (Errors) documents as they are, each with why:
# (kind of defect, case pattern) -> reason. They print as KNOWN and do not fail the run.
KNOWN = [
    ("untyped gRPC UNIMPLEMENTED", r"^unknown-method$",
     "grpc-swift answers an unknown method with UNIMPLEMENTED before any handler or interceptor runs; the status is the stable answer"),
    ("empty 400 body", r"^(migration:900KB-path|node:900KB|key:900KB|if-none-match:garbage|unknown-route-or-method|garbage-request-line|"
     r"http/1.1-without-host-and-bad-header|content-length-negative)$",
     "NIO's HTTP/1.1 parser refuses the framing itself (a request line or header it cannot parse, or over its size limit) with a bare 400 and closes"),
    ("duplicate JSON key accepted", r"^body:duplicate-key$",
     "swift-protobuf's JSON decoder takes the last of duplicate keys"),
]
counts["KNOWN"] = 0


def record(ok, kind, target, case, what):
    known = None if ok else next((why for k, pattern, why in KNOWN if kind and kind.startswith(k) and re.search(pattern, case)), None)
    status = "PASS" if ok else ("KNOWN" if known else "FAIL")
    counts[status] += 1
    print(f"{status} {target} {case}: {short(what, 300)}" + (f" (documented: {known})" if known else ""), flush=True)
    if not ok and not known:
        failures.append((kind, target, case, what))


# ---------------------------------------------------------------------------------------------------
# JSON cases.


def json_text(message):
    """A JSON object from a dict whose values may be RAW."""
    parts = []
    for name, value in message.items():
        encoded = value.text if isinstance(value, RAW) else json.dumps(value)
        parts.append(f"{json.dumps(name)}: {encoded}")
    return "{" + ", ".join(parts) + "}"


def jsonify_benign(route):
    return {k: (str(v) if isinstance(v, int) and not isinstance(v, bool) and k in ("fencing_token", "sequence", "after_sequence") else v)
            for k, v in route.benign.items()}


def http_stage(path_id, query="", headers=None):
    return http("GET", "/v1/stage/" + path_id + query, headers=headers if headers is not None else {})


def json_cases(route):
    path = route.path
    target = f"POST {path}"
    benign = json_text(jsonify_benign(route))
    judge_error = lambda a: judge_http(a, "error")  # noqa: E731
    judge_ok_empty = lambda a: judge_http(a, "any" if route.ok_on_empty else "error")  # noqa: E731
    cases = [
        ("body:empty", dict(body=b""), judge_error),
        ("body:not-json", dict(body="hello, lockstep"), judge_error),
        ("body:json-array", dict(body="[]"), judge_error),
        ("body:json-string", dict(body='"x"'), judge_error),
        ("body:json-number", dict(body="42"), judge_error),
        ("body:json-null", dict(body="null"), judge_error),
        ("body:json-true", dict(body="true"), judge_error),
        ("body:truncated", dict(body=benign[:-1]), judge_error),
        ("body:truncated-mid-string", dict(body='{"' + (route.fields[0][0] if route.fields else "x") + '": "abc'), judge_error),
        ("body:random-bytes", dict(body=RANDOM_BYTES), judge_error),
        ("body:invalid-utf8-in-string", dict(body=b'{"' + (route.fields[0][0] if route.fields else "x").encode() + b'": "\xc3\x28\xff"}'),
         judge_error),
        ("body:trailing-garbage", dict(body=benign + "x"), judge_error),
        ("body:two-objects", dict(body=benign + benign), judge_error),
        ("body:deep-nesting-50k", dict(body='{"' + (route.fields[0][0] if route.fields else "x") + '": ' + "[" * 50000 + "]" * 50000 + "}"),
         judge_error),
        ("body:unknown-field", dict(body=benign[:-1] + (", " if route.benign else "") + '"bad_input_unknown": 1}'), judge_error),
        ("body:unknown-enum-name-as-field", dict(body='{"kind": "STEP_KIND_BOGUS"}'), judge_error),
        ("body:comment", dict(body="/* c */ " + benign), judge_error),
        ("header:no-content-type", dict(body=benign, headers={}), judge_error),
        ("header:text/plain", dict(body=benign, headers={"content-type": "text/plain"}), judge_error),
        ("header:origin (--dev refuses browsers)", dict(body=benign, headers={"content-type": "application/json", "origin": "http://evil.example"}),
         judge_error),
        ("header:form-urlencoded", dict(body="a=1", headers={"content-type": "application/x-www-form-urlencoded"}), judge_error),
        ("body:over-limit-content-length", dict(body=benign + " " * (BODY_MAX + 1 - len(benign))), judge_error),
        ("body:over-limit-chunked", dict(body=benign + " " * (BODY_MAX + 1 - len(benign)), chunked=True), judge_error),
        ("body:4MiB-content-length", dict(body=benign + " " * (4 * BODY_MAX - len(benign))), judge_error),
        ("body:empty-object", dict(body="{}"), judge_ok_empty),
    ]
    if route.fields:
        first = route.fields[0][0]
        def judge_duplicate(answer):
            ok, kind, what = judge_http(answer, "error")
            return ok, ("duplicate JSON key accepted (last one wins)" if kind == "accepted bad input with 2xx" else kind), what
        cases.append(("body:duplicate-key", dict(body=f'{{"{first}": {json.dumps(route.benign.get(first, "a"))}, '
                                                      f'"{first}": {json.dumps(route.benign.get(first, "a"))}}}'), judge_duplicate))
    if route.method == "GetStateAt":
        cases.append(("oneof:both-sequence-and-time_ms", dict(body='{"sequence": "1", "time_ms": "1"}'), judge_error))
    for name, kwargs, judge in cases:
        run_case(target, name, lambda kwargs=kwargs: http("POST", path, **kwargs), judge)
    # Field by field.
    for field, _, kind in route.fields:
        for case, value, _, expect in values_for(route, field, kind):
            if value is None:
                continue
            message = dict(jsonify_benign(route))
            message.update(route.aim.get(field, {}))
            message[field] = value
            message = {k: v for k, v in message.items() if v is not None}
            timeout = 1.5 if expect == "park" else TIMEOUT
            run_case(target, f"{field}:{case}", lambda m=message, t=timeout: http("POST", path, json_text(m), timeout=t),
                     lambda a, e=expect: judge_http(a, e))


def stage_cases():
    target = "GET /v1/stage/{migration}"
    e = lambda a: judge_http(a, "error")  # noqa: E731
    cases = [
        ("migration:129-bytes", lambda: http_stage(LONG_ID)),
        ("migration:900KB-path", lambda: http_stage(BIG_ID)),
        ("migration:64KB-path", lambda: http_stage("a" * 65536)),
        ("migration:percent-00", lambda: http_stage("a%00b")),
        ("migration:percent-FF-invalid-utf8", lambda: http_stage("a%FFb")),
        ("migration:percent-2F-slash", lambda: http_stage("a%2Fb")),
        ("migration:bad-percent-escape", lambda: http_stage("a%zzb")),
        ("migration:unicode", lambda: http_stage(quote("caf\u00e9"))),
        ("migration:space", lambda: http_stage("a%20b")),
        ("migration:dotdot", lambda: http_stage("..%2F..%2Fetc")),
        ("migration:empty", lambda: http("GET", "/v1/stage/", headers={})),
        ("migration:two-segments", lambda: http_stage(f"{REAL}/extra")),
        ("node:bad-chars", lambda: http_stage(REAL, "?node=" + quote("a b/\u00e9\x00"))),
        ("node:129-bytes", lambda: http_stage(REAL, "?node=" + LONG_ID)),
        ("node:900KB", lambda: http_stage(REAL, "?node=" + BIG_ID)),
        ("key:257-bytes", lambda: http_stage(REAL, "?key=" + "k" * 257)),
        ("key:900KB", lambda: http_stage(REAL, "?key=" + BIG_ID)),
        ("key:bad-percent-escape", lambda: http_stage(REAL, "?key=%zz&node=%")),
        ("query:repeated-node", lambda: http_stage(REAL, "?node=a&node=b")),
        ("if-none-match:garbage", lambda: http_stage(UNKNOWN_MIGRATION, "", {"if-none-match": '"\x01' + "x" * 8000})),
        ("header:origin (--dev refuses browsers)", lambda: http_stage(REAL, "", {"origin": "http://evil.example"})),
    ]
    for name, send in cases:
        run_case(target, name, send, e)
    run_case("GET /metrics", "header:origin (--dev refuses browsers)", lambda: http("GET", "/metrics", headers={"origin": "http://evil.example"}), e)


def unknown_route_cases():
    e = lambda a: judge_http(a, "error")  # noqa: E731
    cases = [
        ("POST", "/v1/nope"), ("POST", "/v1/agent/nope"), ("POST", "/v2/agent/poll"), ("POST", "/"), ("GET", "/"),
        ("GET", "/v1/agent/poll"), ("PUT", "/v1/agent/poll"), ("DELETE", "/v1/migrations"), ("PATCH", "/v1/plans"),
        ("OPTIONS", "/v1/agent/poll"), ("POST", "/healthz"), ("POST", "/metrics"), ("POST", f"/v1/stage/{UNKNOWN_MIGRATION}"),
        ("POST", "/V1/AGENT/POLL"), ("POST", "/v1/agent/poll/extra"), ("POST", "/v1//agent/poll"), ("POST", "/v1/migrations/get/"),
        ("BREW", "/v1/agent/poll"), ("POST", "/v1/" + "x" * 60000), ("POST", "/v1/%ZZ"),
    ]
    for method, path in cases:
        shown = path if len(path) < 60 else path[:40] + f"...({len(path)} chars)"
        run_case(f"{method} {shown}", "unknown-route-or-method",
                 lambda m=method, p=path: http(m, p, None if m in ("GET", "OPTIONS") else "{}"), e)
    # Not HTTP at all: the server must stay up (the answer is judged like any other).
    run_case("raw", "garbage-request-line", lambda: http(None, None, raw=b"\x16\x03\x01garbage garbage\r\n\r\n"), e)
    run_case("raw", "http/1.1-without-host-and-bad-header", lambda: http(None, None, raw=b"POST /v1/agent/poll HTTP/1.1\r\nbad header\r\n\r\n"), e)
    run_case("raw", "content-length-negative", lambda: http(None, None, raw=b"POST /v1/agent/poll HTTP/1.1\r\nhost: x\r\n"
                                                                               b"content-type: application/json\r\ncontent-length: -5\r\n\r\n{}"), e)


# ---------------------------------------------------------------------------------------------------
# gRPC cases.


def grpc_call(route, request_bytes, timeout=TIMEOUT):
    """Sends raw request bytes; ("ok", summary) or ("error", status, details, trailers, elapsed)."""
    began = time.monotonic()
    try:
        if route.stream:
            call = channel.unary_stream(route.grpc_path, request_serializer=None, response_deserializer=None)
            responses = call(request_bytes, timeout=timeout, metadata=grpc_metadata)
            got = [len(r) for r in responses]
            return ("ok", f"stream of {len(got)} messages")
        call = channel.unary_unary(route.grpc_path, request_serializer=None, response_deserializer=None)
        response = call(request_bytes, timeout=timeout, metadata=grpc_metadata)
        return ("ok", f"{len(response)} bytes")
    except grpc.RpcError as error:
        trailers = dict(error.trailing_metadata() or ())
        return ("error", error.code(), error.details(), trailers, time.monotonic() - began)


def benign_message(route, overrides=None):
    message = route.request()
    values = dict(route.benign)
    values.update(overrides or {})
    for name, value in values.items():
        if value is None:
            continue
        descriptor = route.request.DESCRIPTOR.fields_by_name[name]
        if descriptor.type in (descriptor.TYPE_UINT64, descriptor.TYPE_INT64, descriptor.TYPE_UINT32):
            value = int(value)
        repeated = descriptor.is_repeated if hasattr(descriptor, "is_repeated") else descriptor.label == descriptor.LABEL_REPEATED
        if repeated:
            getattr(message, name).extend(value)
        else:
            setattr(message, name, value)
    return message


def without_field(message, name):
    copy = type(message)()
    copy.CopyFrom(message)
    copy.ClearField(name)
    return copy


def grpc_cases(route):
    if route.service is None:
        return
    target = f"gRPC {route.grpc_path}"
    empty_expect = "any" if route.ok_on_empty else "error"
    benign_bytes = benign_message(route).SerializeToString()
    raw_cases = [
        ("raw:empty-message", b"", empty_expect),
        ("raw:0xff-x16", b"\xff" * 16, "error"),
        ("raw:random-bytes", RANDOM_BYTES, "error"),
        ("raw:truncated-varint", b"\x08\xff", "error"),
        ("raw:truncated-length-delimited", b"\x0a\x10abc", "error"),
        ("raw:length-prefix-2^32", b"\x0a\xff\xff\xff\xff\x0f", "error"),
        ("raw:wire-type-7", b"\x0f\x00", "error"),
        ("raw:field-number-0", b"\x00\x01", "error"),
        ("raw:unmatched-end-group", b"\x0c", "error"),
        ("raw:unterminated-start-group", b"\x0b\x08\x01", "error"),
        ("raw:overlong-varint-11-bytes", b"\x08" + b"\xff" * 10 + b"\x01", "error"),
        ("raw:benign-then-truncated", benign_bytes + b"\x0a\x05ab", "error"),
        ("raw:unknown-field-101-enum-like-varint-99", benign_bytes + key(101, 0) + varint(99), "any"),
    ]
    string_fields = [(n, num) for n, num, k in route.fields if k in ("id", "text", "opaque", "key", "yaml", "strs", "stream")]
    scalar_fields = [(n, num) for n, num, k in route.fields if k in ("u32", "u64", "i64", "bool")]
    if string_fields:
        name, num = string_fields[0]
        base = without_field(benign_message(route, route.aim.get(name)), name).SerializeToString()
        raw_cases += [(f"raw:{name}-invalid-utf8", base + key(num, 2) + b"\x03\xc3\x28\xff", "error")]
        # A known field number with another wire type is an unknown field to protobuf parsers: the
        # message is then the benign one (no aim, so nothing is changed if it is accepted).
        plain = without_field(benign_message(route), name).SerializeToString()
        raw_cases += [(f"raw:{name}-as-varint (wrong wire type)", plain + key(num, 0) + b"\x01", "any"),
                      (f"raw:{name}-as-fixed64 (wrong wire type)", plain + key(num, 1) + b"\x00" * 8, "any")]
    if scalar_fields:
        name, num = scalar_fields[0]
        plain = without_field(benign_message(route), name).SerializeToString()
        raw_cases += [(f"raw:{name}-as-length-delimited (wrong wire type)", plain + key(num, 2) + b"\x01x", "any")]
    for case, data, expect in raw_cases:
        run_case(target, case, lambda d=data: grpc_call(route, d), lambda o, e=expect: judge_grpc(o, e))
    # Well-formed messages with hostile values, and single fields encoded by hand.
    for field, number, kind in route.fields:
        for case, _, value, expect in values_for(route, field, kind):
            if value is None:
                continue
            overrides = dict(route.aim.get(field, {}))
            if isinstance(value, WIRE):
                message = without_field(benign_message(route, overrides), field).SerializeToString()
                data = message + key(number, 0) + value.data
            else:
                try:
                    overrides[field] = value
                    data = benign_message(route, overrides).SerializeToString()
                except (ValueError, TypeError) as error:
                    print(f"# skipped gRPC {route.method} {field}:{case}: {error}", flush=True)
                    continue
            timeout = 1.5 if expect == "park" else TIMEOUT
            run_case(target, f"{field}:{case}", lambda d=data, t=timeout: grpc_call(route, d, timeout=t),
                     lambda o, e=expect: judge_grpc(o, e))
    # The message just over the 1 MiB limit.
    padding = benign_bytes + key(2000, 2) + varint(BODY_MAX + 1) + b"p" * (BODY_MAX + 1)
    run_case(target, "raw:over-1MiB-message", lambda: grpc_call(route, padding), lambda o: judge_grpc(o, "error"))


class RawMethod:
    stream = False

    def __init__(self, path):
        self.grpc_path = path


def unknown_grpc_cases():
    for path in ["/lockstep.v1.AgentService/Nope", "/lockstep.v1.AgentService/poll", "/lockstep.v1.NopeService/Poll",
                 "/lockstep.v2.AgentService/Poll", "/nope", "/lockstep.v1.AgentService/" + "x" * 4000]:
        shown = path if len(path) < 60 else path[:40] + f"...({len(path)} chars)"
        run_case(f"gRPC {shown}", "unknown-method",
                 lambda p=path: grpc_call(RawMethod(p), b""), lambda o: judge_grpc(o, "error"))


# ---------------------------------------------------------------------------------------------------

try:
    current_head = head()
    if current_head is None:
        raise SystemExit("cannot read the log head (POST /v1/history/verify); is the server up, and the token a reader's?")
    for route in ROUTES:
        if route.path == "/v1/stage":
            stage_cases()
        else:
            json_cases(route)
    unknown_route_cases()
    for route in ROUTES:
        grpc_cases(route)
    unknown_grpc_cases()
    final = http("POST", "/v1/history/verify", "{}")
    print(f"# at the end: POST /v1/history/verify -> {final.status or final.error} {short(final.body or b'', 200)}", flush=True)
finally:
    if channel is not None:
        channel.close()
    if args.lockstep:
        stop_server()
        if any(kind == "server died" for kind, *_ in failures):
            print(f"# the server's data directory and log are kept in {server_dir}", flush=True)
        else:
            shutil.rmtree(server_dir, ignore_errors=True)
    shutil.rmtree(generated, ignore_errors=True)

elapsed = time.monotonic() - STARTED
print(f"\n# {counts['PASS']} passed, {counts['KNOWN']} documented exceptions, {counts['FAIL']} failed in {elapsed:.1f} s", flush=True)
if notes:
    print(f"# notes: {len(notes)} passing case(s) whose error message shows Swift internals, e.g.:")
    for target, case, note in notes[:3]:
        print(f"#   {target} {case}: {note}")
if failures:
    print("# failures by kind:")
    groups = {}
    for kind, target, case, what in failures:
        groups.setdefault(kind, []).append((target, case, what))
    for kind, items in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        print(f"## {kind}: {len(items)} case(s)")
        targets = {}
        for target, case, _ in items:
            targets.setdefault(target, []).append(case)
        for target, cases in targets.items():
            print(f"##   {target}: {', '.join(cases)}")
        print(f"##   e.g. {items[0][0]} {items[0][1]} -> {short(items[0][2], 400)}")
sys.exit(1 if failures else 0)
