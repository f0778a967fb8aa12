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
import atexit
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from types import SimpleNamespace

# This script's parts, beside it: the hostile values, the HTTP/1.1 client, the judges of an answer, the routes,
# the JSON cases and the gRPC cases.
from bad_input_grpc_cases import grpc_cases, raw_call, unknown_grpc_cases
from bad_input_http import request
from bad_input_json_cases import json_cases, stage_cases, unknown_route_cases
from bad_input_judge import SWIFTISH, short
from bad_input_routes import UNKNOWN_MIGRATION, routes

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
PLAN_TEXT = pathlib.Path(args.plan).read_text() if os.path.exists(args.plan) else "name: ledger-split\n"

# ---------------------------------------------------------------------------------------------------
# gRPC stubs, generated from Protos/ at run time.
generated = tempfile.mkdtemp(prefix="bad-input-stubs-")
# An exit before the cases run (a SystemExit of the checks below) leaves nothing behind either.
atexit.register(shutil.rmtree, generated, ignore_errors=True)
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
    # The child keeps its own copy of the log's descriptor; this process closes its one at once.
    with open(os.path.join(server_dir, "server.log"), "ab") as log:
        server_proc = subprocess.Popen([args.lockstep, "serve", "--data", os.path.join(server_dir, "data"), "--dev",
                                        "--http-listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0", "--ready-file", ready],
                                       stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while not os.path.exists(ready):
        if server_proc.poll() is not None or time.monotonic() > deadline:
            stop_server()  # one that never wrote its ready file is not left running
            raise SystemExit(f"the server did not start (see {server_dir}/server.log)")
        time.sleep(0.05)
    with open(ready) as file:
        addresses = json.load(file)
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
    atexit.register(stop_server)  # whichever server runs then; a no-op after the last block stopped it
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


def http(method, path, body=None, headers=None, chunked=False, raw=None, timeout=TIMEOUT):
    """One request to the server's JSON listener (bad_input_http.request), with this run's token."""
    return request(http_base, auth_headers, method, path, body, headers, chunked, raw, timeout)


def grpc_call(route, request_bytes, timeout=TIMEOUT):
    """Raw request bytes to a method on the current channel (bad_input_grpc_cases.raw_call), with this run's token."""
    return raw_call(channel, grpc_metadata, route, request_bytes, timeout)


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
    # The JSON listener writes a status as its enum's name (MIGRATION_STATUS_RUNNING).
    running = next((m["migration_id"] for m in migrations if m.get("status") in ("MIGRATION_STATUS_RUNNING", "MIGRATION_STATUS_PAUSED")), None)
    settled = next((m["migration_id"] for m in migrations
                    if m.get("status") in ("MIGRATION_STATUS_SUCCEEDED", "MIGRATION_STATUS_FAILED", "MIGRATION_STATUS_ROLLED_BACK")), None)
    any_id = running or (migrations[0]["migration_id"] if migrations else None)
    nodes = {}
    for m in migrations:
        if m["migration_id"] == any_id:
            nodes = {n["node_id"]: n for n in m.get("nodes", [])}
    return any_id or "no-such-migration", settled, nodes


REAL, SETTLED, REAL_NODES = discover()
if args.lockstep and (REAL != "probe-running" or SETTLED != "probe-settled"):
    # The server this script started holds both: finding neither means discover() misreads the list,
    # and the watch cases would quietly probe an unknown migration instead of a settled one.
    raise SystemExit(f"discover() found migration {REAL!r} and settled {SETTLED!r}, not the two this script started")
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
# The cases (bad_input_json_cases.py, bad_input_grpc_cases.py), given what they use of this run: http and
# grpc_call take the server's address and channel at each call, so a restarted server's new ones are used.
probe = SimpleNamespace(run_case=run_case, http=http, grpc_call=grpc_call, timeout=TIMEOUT, plan_text=PLAN_TEXT, real=REAL)

try:
    current_head = head()
    if current_head is None:
        raise SystemExit("cannot read the log head (POST /v1/history/verify); is the server up, and the token a reader's?")
    for route in ROUTES:
        if route.path == "/v1/stage":
            stage_cases(probe)
        else:
            json_cases(probe, route)
    unknown_route_cases(probe)
    for route in ROUTES:
        grpc_cases(probe, route)
    unknown_grpc_cases(probe)
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
