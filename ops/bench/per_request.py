#!/usr/bin/env python3
"""What one immediately answered agent poll costs the server, in figures that do not drift with the
machine's load: CPU microseconds per request (task-clock), and, where perf can place uprobes (root), the
Swift runtime calls per request (swift_retain, swift_release, swift_allocObject) and malloc calls.
Requests/s on these shared machines move by 20 % from one minute to the next; these counts move by
less than 1 %, so they show what a change to the engine did. Not a target: docs/benchmarks.md.

Targets, each its own server on loopback, 4 connections x 16 streams (h2load):
  engine  lockstep-bare's third port: the engine answering on its event loop (its own floor)
  json    lockstep serve, POST /v1/agent/poll over h2c
  grpc    lockstep serve, gRPC Poll
  nghttpd nghttpd serving the same body (its CPU only: it is C)

Usage: per_request.py [--requests N] [TARGET ...]   (after ops/bench/api builds the release binaries)
"""
import argparse
import atexit
import os
import shutil
import subprocess
import sys
import tempfile

from loopback import free_port, stop, stopped_at_exit, wait_for_port

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RELEASE = os.environ.get("LOCKSTEP_BENCH_BIN") or os.path.join(ROOT, ".build-release", "release")

parser = argparse.ArgumentParser()
parser.add_argument("--requests", type=int, default=100_000, help="requests measured per target (after 2,000 to warm up)")
parser.add_argument("targets", nargs="*", default=["engine", "json", "grpc", "nghttpd"])
args = parser.parse_args()
for tool in ("perf", "h2load", "nghttpd"):
    if not shutil.which(tool):
        raise SystemExit(f"per_request.py needs {tool} (apt-get install linux-perf nghttp2-client nghttp2-server)")
work = tempfile.mkdtemp(prefix="lockstep-per-request-")


def library(binary, name):
    """The path `binary` loads `name` from (ldd)."""
    for line in subprocess.run(["ldd", binary], capture_output=True, text=True).stdout.splitlines():
        if name in line and "=>" in line:
            return line.split("=>")[1].split()[0]
    return None


def remove_probes(events):
    """Deletes the uprobes this script placed: a placed uprobe stays defined in the kernel until it is
    deleted (it traps only while a perf session enables it, but the next run, or another user, finds it
    there and cannot tell whose it is)."""
    for event in events:
        subprocess.run(["perf", "probe", "-d", event], capture_output=True)


def probes(binary):
    """perf events for the runtime calls, placed as uprobes (those this script placed are deleted when it
    ends, however it ends); empty when perf may not (not root)."""
    wanted = [(library(binary, "libswiftCore.so"), symbol) for symbol in ("swift_retain", "swift_release", "swift_allocObject")]
    wanted.append((library(binary, "libc.so.6"), "malloc"))
    events = []
    for path, symbol in wanted:
        if path is None:
            continue
        group = "probe_libc" if symbol == "malloc" else "probe_libswiftCore"
        placed = subprocess.run(["perf", "probe", "-x", path, symbol], capture_output=True, text=True)
        listed = subprocess.run(["perf", "probe", "-l"], capture_output=True, text=True).stdout
        if placed.returncode == 0:
            # Ours: deleted at exit (an exception, ^C, SIGTERM and SIGHUP included: loopback turns those into an exit).
            atexit.register(remove_probes, [f"{group}:{symbol}"])
        if placed.returncode == 0 or f"{group}:{symbol}" in listed:
            events.append(f"{group}:{symbol}")
    return events


def run_measured(name, pid, h2load, url, events):
    """h2load's measured run under `perf stat -e task-clock,EVENTS`: each event's count."""
    stat_file = os.path.join(work, f"{name}.stat")
    stat = subprocess.Popen(["perf", "stat", "-x", ",", "-e", ",".join(["task-clock"] + events), "-p", str(pid), "-o", stat_file])
    try:
        out = subprocess.run(h2load + ["-n", str(args.requests), url], capture_output=True, text=True, check=True).stdout
    finally:
        stat.send_signal(2)
        stat.wait()
    if f"{args.requests} succeeded" not in out:
        raise SystemExit(f"{name}: not every request succeeded:\n{out}")
    figures = {}
    for line in open(stat_file):
        fields = line.strip().split(",")
        if len(fields) > 2 and fields[0].replace(".", "").isdigit():
            figures[fields[2]] = float(fields[0])
    return figures


def measure(name, pid, url, data, headers, events):
    """Two measured runs: CPU alone (a uprobe costs a trap, so it is not counted then), then the calls."""
    h2load = ["h2load", "-c", "4", "-m", "16", "-d", data] + [part for header in headers for part in ("-H", header)]
    subprocess.run(h2load + ["-n", "2000", url], capture_output=True, check=True)
    cpu = run_measured(name, pid, h2load, url, [])
    calls = run_measured(name, pid, h2load, url, events) if events else {}
    row = f"| {name} | {cpu.get('task-clock', 0.0) * 1000 / args.requests:.2f} |"
    for event in ("probe_libswiftCore:swift_retain", "probe_libswiftCore:swift_release", "probe_libswiftCore:swift_allocObject", "probe_libc:malloc"):
        row += f" {calls[event] / args.requests:.1f} |" if event in calls else " – |"
    print(row, flush=True)


poll = os.path.join(work, "poll.json")
with open(poll, "w") as f:
    f.write('{"service": "orders", "agent_id": "bench"}')
grpc = os.path.join(work, "poll.grpc")
message = b"\x0a\x06orders" + b"\x12\x05bench"
with open(grpc, "wb") as f:
    f.write(b"\x00" + len(message).to_bytes(4, "big") + message)
docroot = os.path.join(work, "docroot")
os.makedirs(docroot)
with open(os.path.join(docroot, "poll"), "w") as f:
    f.write('{"retry_after_ms":1000}\n')

lockstep = os.path.join(RELEASE, "lockstep")
events = probes(lockstep)
if not events:
    print("(no uprobes: run as root for the runtime call counts; CPU per request only)", file=sys.stderr)
print(f"{args.requests} requests per target, 64 concurrent streams (4 connections x 16), h2load on loopback\n")
print("| server | CPU µs per request | swift_retain | swift_release | swift_allocObject | malloc |")
print("|---|---|---|---|---|---|")
json_headers = ["content-type: application/json"]
for target in args.targets:
    if target == "engine":
        ports = [free_port() for _ in range(3)]
        server = stopped_at_exit(subprocess.Popen([os.path.join(RELEASE, "lockstep-bare"), *map(str, ports)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_for_port(ports[2])
        measure("the engine answering inline (lockstep-bare)", server.pid, f"http://127.0.0.1:{ports[2]}/v1/agent/poll", poll, json_headers, events)
    elif target in ("json", "grpc"):
        http_port, grpc_port = free_port(), free_port()
        server = subprocess.Popen([lockstep, "serve", "--data", tempfile.mkdtemp(dir=work), "--dev", "--http-listen", f"127.0.0.1:{http_port}",
                                   "--grpc-listen", f"127.0.0.1:{grpc_port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        stopped_at_exit(server)
        wait_for_port(http_port)
        wait_for_port(grpc_port)
        if target == "json":
            measure("JSON poll, lockstep serve", server.pid, f"http://127.0.0.1:{http_port}/v1/agent/poll", poll, json_headers, events)
        else:
            measure("gRPC Poll, lockstep serve", server.pid, f"http://127.0.0.1:{grpc_port}/lockstep.v1.AgentService/Poll", grpc,
                    ["content-type: application/grpc", "te: trailers"], events)
    elif target == "nghttpd":
        port = free_port()
        server = stopped_at_exit(subprocess.Popen([shutil.which("nghttpd"), "--no-tls", "-d", docroot, str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_for_port(port)
        measure("nghttpd (C)", server.pid, f"http://127.0.0.1:{port}/poll", poll, json_headers, [])
    else:
        raise SystemExit(f"unknown target {target} (engine, json, grpc, nghttpd)")
    stop(server)
shutil.rmtree(work, ignore_errors=True)
