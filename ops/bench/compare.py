#!/usr/bin/env python3
"""Lockstep against its peers and the physical limit, side by side, in one run (run it through
ops/bench/compare, which installs what it needs and builds release binaries).

Each figure is the median of RUNS runs with min and max. Pairs:
- durable appends/s at 1, 16, 64 writers: lockstep-bench against the raw SQLite C API at the same batch
  size (the limit), and against the `eventsourcing` library (PyPI) on SQLite;
- replay events/s of 1M events from disk against a raw SELECT scan (lockstep-bench);
- lease acquire -> renew -> release cycles/s at 1 and 64 clients through the public gRPC API, against
  etcd (lease grant -> keep-alive -> txn put -> revoke), the same Python client for both, and again with
  a compiled client on libnghttp2 for both (lockstep-leases-h2, which reports its own CPU per cycle), to
  show which rows the Python client limits;
- agent calls/s and p50/p99 (gRPC and JSON), 10,000 parked polls, wake-up latency (ops/bench/api.py);
- on PostgreSQL (ops/bench/postgres.py, a private server): durable appends/s at 1, 16, 64 writers against
  pgbench committing the same shape; lease cycles/s beside SQLite's; takeover p50/p99 over 20 kills;
  replica lag p50/p99.

Prints one table, writes the figures as JSON (--json FILE) and draws the ratios (--chart FILE.png).
Touches only loopback and a temporary directory.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from loopback import free_port, run_stopping, stop, stopped_at_exit, wait_for_file, wait_for_port

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RELEASE = os.path.join(ROOT, ".build-release", "release")
BENCH = os.path.join(ROOT, "ops", "bench")

parser = argparse.ArgumentParser()
parser.add_argument("--quick", action="store_true", help="one short run of each figure (minutes, not a measurement)")
parser.add_argument("--json", help="write the figures here as JSON")
parser.add_argument("--chart", help="draw the ratios here (PNG)")
parser.add_argument("--only", default="appends,replay,leases,api,postgres", help="comma-separated: appends, replay, leases, api, postgres")
parser.add_argument("--from-json", help="measure nothing: print the table and draw the chart of an earlier --json FILE")
args = parser.parse_args()
ONLY = set() if args.from_json else set(args.only.split(","))
RUNS = 1 if args.quick else 3
SECONDS = 1 if args.quick else 3
work = tempfile.mkdtemp(prefix="lockstep-compare-")
rows = []  # {"figure", "ours": {median,min,max}, "reference": {...}, "reference_name", "ratio", "target"}


def summary(samples):
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples), "samples": samples}


def add(figure, ours, reference, reference_name, target=None, higher_is_better=True, unit="/s", judged=True):
    """One row; `judged` False for a row shown beside its reference without being judged against it."""
    ratio = ours["median"] / reference["median"] if judged and reference and reference["median"] else None
    if ratio is not None and not higher_is_better:
        ratio = reference["median"] / ours["median"] if ours["median"] else None
    rows.append({"figure": figure, "ours": ours, "reference": reference, "reference_name": reference_name, "ratio": ratio,
                 "target": target, "unit": unit, "higher_is_better": higher_is_better})




def section(title):
    print(f"\n== {title}", flush=True)


# MARK: appends and replay (lockstep-bench, with the raw SQLite C API as the limit)

bench_rows = []
if "appends" in ONLY or "replay" in ONLY:
    section("appends and replay: lockstep-bench (its own raw SQLite reference in the same run)")
    output = os.path.join(work, "bench.json")
    argv = [os.path.join(RELEASE, "lockstep-bench"), "--json", output, "--runs", str(RUNS), "--seconds", str(SECONDS)]
    if args.quick:
        argv += ["--replay-events", "100000"]
    run_stopping(argv, timeout=1_500)
    bench_rows = json.load(open(output))
    for row in bench_rows:
        name = row["name"]
        wanted = ("appends" in ONLY and name.startswith("durable appends")) or ("replay" in ONLY and "replay" in name)
        if wanted:
            add(name, row["ours"], row["reference"], row["reference_name"] + " (the limit)", row.get("target"))

if "appends" in ONLY:
    section("appends: the eventsourcing library on SQLite")
    for writers in (1, 16, 64):
        samples = []
        for _ in range(RUNS):
            out = subprocess.run([sys.executable, os.path.join(BENCH, "eventsourcing_appends.py"), os.path.join(work, "es"), str(writers), str(SECONDS)],
                                 capture_output=True, text=True, timeout=600, check=True).stdout
            samples.append(json.loads(out)["rate"])
        ours = next((r["ours"] for r in bench_rows if r["name"].startswith(f"durable appends/s, {writers} writer")), None)
        if ours:
            add(f"durable appends/s, {writers} writer{'s' if writers > 1 else ''}", ours, summary(samples),
                "eventsourcing (PyPI) on SQLite, same durability", target=10.0)

# MARK: lease cycles through the public API, against etcd

if "leases" in ONLY:
    section("lease cycles: Lockstep's API and etcd's, the same clients (Python's grpcio; libnghttp2)")
    stubs = os.path.join(work, "stubs")
    os.makedirs(stubs)
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I", os.path.join(ROOT, "Protos"), f"--python_out={stubs}",
                    f"--grpc_python_out={stubs}", "lockstep/v1/agent.proto", "lockstep/v1/events.proto"], check=True)
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I", os.path.join(BENCH, "protos"), f"--python_out={stubs}",
                    f"--grpc_python_out={stubs}", "etcd_min.proto"], check=True)
    cycle_seconds = 2 if args.quick else 5

    def cpu_seconds(pid):
        # utime + stime of the server process, in clock ticks (fields 14 and 15 of /proc/PID/stat).
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def cycles(kind, target, clients, server):
        """Cycles/s, the server's CPU time per cycle in µs (what the client costs is not in it), and the
        client's (only the libnghttp2 client measures its own, else None). `kind` "lockstep" or "etcd":
        lease_cycles.py (Python's grpcio); "h2 lockstep" or "h2 etcd": lockstep-leases-h2 (libnghttp2)."""
        before = cpu_seconds(server.pid)
        if kind.startswith("h2 "):
            client = [os.path.join(RELEASE, "lockstep-leases-h2"), kind[3:], target, str(clients), str(cycle_seconds)]
        else:
            client = [sys.executable, os.path.join(BENCH, "lease_cycles.py"), kind, target, str(clients), str(cycle_seconds), stubs]
        out = subprocess.run(client, capture_output=True, text=True, timeout=900, check=True).stdout
        result = json.loads(out.strip().splitlines()[-1])
        # A client whose calls fail measures the failures: say so beside the table rather than report it.
        if result["errors"] > 0.01 * max(1, result["cycles"]):
            print(f"warning: {kind} at {clients} client(s): {result['errors']:.0f} errors in {result['cycles']:.0f} cycles; "
                  "this run's figure is not a lease-cycle rate", file=sys.stderr, flush=True)
        return result["rate"], (cpu_seconds(server.pid) - before) * 1e6 / max(1, result["cycles"]), result.get("client_cpu_us_per_cycle")

    data = os.path.join(work, "lockstep-data")
    ready = os.path.join(work, "ready.json")
    server = stopped_at_exit(subprocess.Popen([os.path.join(RELEASE, "lockstep"), "serve", "--dev", "--data", data, "--http-listen", "127.0.0.1:0",
                                               "--grpc-listen", "127.0.0.1:0", "--ready-file", ready], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    wait_for_file(ready)
    lockstep_target = json.load(open(ready))["grpc"]
    etcd_port, peer_port = free_port(), free_port()
    etcd = stopped_at_exit(subprocess.Popen([shutil.which("etcd") or "/usr/bin/etcd", "--data-dir", os.path.join(work, "etcd"),
                             "--listen-client-urls", f"http://127.0.0.1:{etcd_port}", "--advertise-client-urls", f"http://127.0.0.1:{etcd_port}",
                             "--listen-peer-urls", f"http://127.0.0.1:{peer_port}", "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
                             "--initial-cluster", f"default=http://127.0.0.1:{peer_port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    try:
        wait_for_port(etcd_port)
        for clients in (1, 64):
            # kind -> the lists of its runs' rates, server CPU and client CPU per cycle.
            kinds = {"lockstep": (lockstep_target, server), "etcd": (f"127.0.0.1:{etcd_port}", etcd),
                     "h2 lockstep": (lockstep_target, server), "h2 etcd": (f"127.0.0.1:{etcd_port}", etcd)}
            runs = {kind: ([], [], []) for kind in kinds}
            for _ in range(RUNS):  # interleaved, so drift hits all alike
                for kind, (target, process) in kinds.items():
                    for samples, figure in zip(runs[kind], cycles(kind, target, clients, process)):
                        samples.append(figure)
            (ours, our_cpu, _), (theirs, their_cpu, _) = runs["lockstep"], runs["etcd"]
            plural = "s" if clients > 1 else ""
            add(f"lease cycles/s (acquire, renew, release) through the gRPC API, {clients} client{plural}",
                summary(ours), summary(theirs), "etcd 3.4 (grant, keep-alive, txn put, revoke)", target=2.0)
            add(f"server CPU µs per lease cycle, {clients} client{plural}",
                summary(our_cpu), summary(their_cpu), "etcd 3.4 (ratio: its CPU ÷ ours; clients not counted)",
                target=2.0, higher_is_better=False, unit="µs")
            # Both servers with the client that costs least (docs/benchmarks.md, "The lease client"): the
            # issue's targets for a row the Python client limits.
            (h2_ours, h2_our_cpu, h2_our_client), (h2_theirs, h2_their_cpu, h2_their_client) = runs["h2 lockstep"], runs["h2 etcd"]
            add(f"lease cycles/s, libnghttp2 client (lockstep-leases-h2), {clients} client{plural}",
                summary(h2_ours), summary(h2_theirs), "etcd 3.4 with the same client", target=2.0)
            add(f"server CPU µs per lease cycle, libnghttp2 client, {clients} client{plural}",
                summary(h2_our_cpu), summary(h2_their_cpu), "etcd 3.4 with the same client (ratio: its CPU ÷ ours)",
                target=2.0, higher_is_better=False, unit="µs")
            # What the client itself costs a cycle, against each server: shown, not a ratio to judge.
            add(f"client CPU µs per lease cycle, libnghttp2 client, {clients} client{plural}",
                summary(h2_our_client), summary(h2_their_client), "the same client's against etcd", unit="µs", judged=False)
    finally:
        # Stopped as soon as the figures are done (and, should they fail, by stopped_at_exit anyway).
        stop(server)
        stop(etcd)

# MARK: the API (ops/bench/api.py: h2load, bare libraries, nghttpd, parked polls, wake-up)

if "api" in ONLY:
    section("the API: ops/bench/api.py")
    output = os.path.join(work, "api.json")
    run_stopping([sys.executable, os.path.join(BENCH, "api.py"), "--json", output] + (["--quick"] if args.quick else []), timeout=1_200)
    api = json.load(open(output))
    calls = api["calls"]

    def call(name):
        figure = calls[name]
        return {"median": figure["rps"], "min": figure["min"], "max": figure["max"], "p50_ms": figure["p50_ms"], "p99_ms": figure["p99_ms"]}

    nghttpd = call("nghttpd, the same body")
    # The names are api.py's (its `targets`); a name missing here fails loudly, as it should.
    for transport, ours, floor, floor_name in (("JSON", "JSON poll, lockstep", "JSON poll, bare route", "Hummingbird's router on the engine"),
                                               ("gRPC", "gRPC Poll, lockstep", "gRPC Poll, bare grpc-swift-2 unary", "bare grpc-swift-2 unary on the engine")):
        add(f"agent calls/s, {transport}, 64 streams (p50/p99 {calls[ours]['p50_ms']:.1f}/{calls[ours]['p99_ms']:.1f} ms)", call(ours), call(floor),
            f"{floor_name} (our floor)", target=0.8)
        add(f"agent calls/s, {transport}, against the HTTP/2 limit", call(ours), nghttpd, "nghttpd, the same body (C)", target=0.5)
    add("agent calls/s, the engine answering inline (its own floor), against the HTTP/2 limit", call("engine answering inline"), nghttpd,
        "nghttpd, the same body (C)", target=0.5)
    rows.append({"figure": f"parked long-polls held at once: RSS MB ({api['parked']:,} polls)", "ours": {"median": api["rss_mb_parked"], "min": api["rss_mb_parked"],
                 "max": api["rss_mb_parked"]}, "reference": None, "reference_name": "target: 100,000 under 500 MB", "ratio": None, "target": None, "unit": " MB"})
    wake = api["wake_ms"]
    rows.append({"figure": "wake-up p99, ms (append -> parked poll answered; server side ≤ (commit → answer handed to its connection), Python client end to end, from the start sent)",
                 "ours": {"median": wake["server_p99_at_most"], "min": wake["server_p99_at_most"], "max": wake["p99"]}, "reference": None,
                 "reference_name": "target < 2 ms", "ratio": None, "target": None, "unit": " ms"})
    if "compiled" in wake:
        compiled = wake["compiled"]
        rows.append({"figure": "wake-up p99, ms, compiled client (lockstep-wake): from the start answered (a lower bound) … from the start sent (an upper bound)",
                     "ours": {"median": compiled["from_start_answered_p99_ms"], "min": compiled["from_start_answered_p99_ms"],
                              "max": compiled["from_start_sent_p99_ms"]}, "reference": None,
                     "reference_name": "target < 2 ms", "ratio": None, "target": None, "unit": " ms"})

# MARK: PostgreSQL (ops/bench/postgres.py: a private server, pgbench as the reference)

if "postgres" in ONLY:
    section("PostgreSQL: ops/bench/postgres.py")
    stubs = os.path.join(work, "stubs")
    if not os.path.isdir(stubs):
        os.makedirs(stubs)
        subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I", os.path.join(ROOT, "Protos"), f"--python_out={stubs}",
                        f"--grpc_python_out={stubs}", "lockstep/v1/agent.proto", "lockstep/v1/events.proto"], check=True)
    output = os.path.join(work, "postgres.json")
    run_stopping([sys.executable, os.path.join(BENCH, "postgres.py"), os.path.join(RELEASE, "lockstep"), stubs, "--json", output]
                 + (["--quick"] if args.quick else []), timeout=1_500)
    pg = json.load(open(output))
    for writers, figure in pg["appends"].items():
        plural = "s" if writers != "1" else ""
        add(f"durable appends/s on PostgreSQL, {writers} writer{plural} ({figure['events_per_append']} events of {figure['record_bytes']} B each)",
            figure["ours"], figure["reference"], "pgbench (libpq), the same tables and batch, one transaction per append", target=0.8)
    for clients, figure in pg["leases"].items():
        plural = "s" if clients != "1" else ""
        add(f"lease cycles/s through the gRPC API, log on PostgreSQL, {clients} client{plural}", figure["ours"], figure["reference"],
            "the same server with its log on SQLite")
    takeover = pg["takeover"]
    rows.append({"figure": f"takeover p50 / p99, ms (writer SIGKILLed -> first write accepted; {len(takeover['samples_ms'])} kills, TTL 1,000 ms)",
                 "ours": {"median": takeover["p50_ms"], "min": takeover["p50_ms"], "max": takeover["p99_ms"]}, "reference": None,
                 "reference_name": "target p99 < TTL + 1 s = 2,000 ms", "ratio": None, "target": None, "unit": " ms"})
    lag = pg["lag"]
    rows.append({"figure": f"replica lag p50 / p99, ms (an event on a watch on the writer -> on a watch on a replica; {lag['count']} events)",
                 "ours": {"median": lag["p50_ms"], "min": lag["p50_ms"], "max": lag["p99_ms"]}, "reference": None,
                 "reference_name": "target p99 < 50 ms", "ratio": None, "target": None, "unit": " ms"})

# MARK: the table, the JSON, the chart


def number(value, unit):
    if value is None:
        return "-"
    if unit == "/s":
        return f"{value / 1000:,.1f}k" if value >= 1000 else f"{value:,.0f}"
    return f"{value:,.1f}"


machine = {"cores": os.cpu_count(), "uname": " ".join(os.uname()), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "runs": RUNS}
if args.from_json:
    with open(args.from_json) as f:
        earlier = json.load(f)
    machine, rows = earlier["machine"], earlier["rows"]
    RUNS = machine["runs"]
print(f"\n{RUNS} run(s) per figure on {machine['cores']} cores; medians [min–max]; loopback only\n")
print("| figure | Lockstep | reference | ratio | target |")
print("|---|---|---|---|---|")
for row in rows:
    ours, ref, unit = row["ours"], row["reference"], row["unit"]
    ours_text = f"{number(ours['median'], unit)} [{number(ours['min'], unit)}–{number(ours['max'], unit)}]"
    ref_text = f"{number(ref['median'], unit)} [{number(ref['min'], unit)}–{number(ref['max'], unit)}] {row['reference_name']}" if ref else row["reference_name"]
    ratio = f"{row['ratio']:.2f}×" if row["ratio"] is not None else "-"
    target = ""
    if row["target"] is not None and row["ratio"] is not None:
        target = f"≥ {row['target']:g}× {'met' if row['ratio'] >= row['target'] else 'MISSED'}"
    print(f"| {row['figure']} | {ours_text} | {ref_text} | {ratio} | {target} |")

if args.json:
    with open(args.json, "w") as f:
        json.dump({"machine": machine, "rows": rows}, f, indent=2, sort_keys=True)
if args.chart:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    charted = [row for row in rows if row["ratio"] is not None]
    figure, axis = plt.subplots(figsize=(11, 0.45 * len(charted) + 1.5))
    names = [row["figure"].split(" (p50")[0].replace(" (acquire, renew, release)", "") + f"\nvs {row['reference_name']}" for row in charted]
    ratios = [row["ratio"] for row in charted]
    colours = ["#2a9d8f" if row["target"] is None or row["ratio"] >= row["target"] else "#e76f51" for row in charted]
    axis.barh(range(len(charted)), ratios, color=colours)
    for index, row in enumerate(charted):
        if row["target"] is not None:
            axis.plot([row["target"], row["target"]], [index - 0.4, index + 0.4], color="black", linewidth=1)
        axis.text(row["ratio"], index, f" {row['ratio']:.2f}×", va="center", fontsize=8)
    axis.set_yticks(range(len(charted)))
    axis.set_yticklabels(names, fontsize=7)
    axis.invert_yaxis()
    axis.set_xscale("log")
    axis.set_xlabel("Lockstep ÷ reference (CPU rows: reference ÷ Lockstep); higher is better\nlog scale; black ticks: targets; red: missed")
    axis.set_title(f"Lockstep against its references, {machine['date']}, {machine['cores']} cores")
    figure.tight_layout()
    figure.savefig(args.chart, dpi=110)
shutil.rmtree(work, ignore_errors=True)
