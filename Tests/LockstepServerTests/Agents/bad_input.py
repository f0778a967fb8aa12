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
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from urllib.parse import quote

# This script's parts, beside it: the hostile values, the HTTP/1.1 client, the judges of an answer, the routes.
from bad_input_http import request
from bad_input_judge import SWIFTISH, judge_grpc, judge_http, short
from bad_input_routes import UNKNOWN_MIGRATION, routes
from bad_input_values import BIG_ID, BODY_MAX, LONG_ID, RANDOM_BYTES, RAW, WIRE, key, values_for, varint

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
PLAN_TEXT = open(args.plan).read() if os.path.exists(args.plan) else "name: ledger-split\n"

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


def http(method, path, body=None, headers=None, chunked=False, raw=None, timeout=TIMEOUT, read_body=True):
    """One request to the server's JSON listener (bad_input_http.request), with this run's token."""
    return request(http_base, auth_headers, method, path, body, headers, chunked, raw, timeout, read_body)


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
WATCH_ID = SETTLED or UNKNOWN_MIGRATION
print(f"# server grpc={grpc_target} http={http_base}; migration {REAL} (node {FIRST_NODE}, gate {GATED_NODE}), "
      f"settled {SETTLED}", flush=True)

ROUTES = routes(agent_pb2, REAL, FIRST_NODE, GATED_NODE, FIRST_SERVICE, WATCH_ID)

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
# Checks (the judges are in bad_input_judge.py).
failures = []       # (kind, target, case, detail)
notes = []
counts = {"PASS": 0, "FAIL": 0}


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
        for case, value, _, expect in values_for(route, field, kind, PLAN_TEXT):
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
        for case, _, value, expect in values_for(route, field, kind, PLAN_TEXT):
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
