#!/usr/bin/env python3
"""The API's HTTP/2 figures in one run on loopback (run it through ops/bench/api, which builds).

1. An immediately answered agent poll (no step ready, wait_ms 0) at 64 concurrent streams (4 connections
   x 16 streams) with h2load, over JSON/h2c and over gRPC, against: lockstep serve; lockstep-bare (the
   same stack answering the same bytes with no Lockstep work: our floor, and the engine answering on
   its event loop: its own floor); nghttpd serving the same body (the C reference).
   Requests/s and p50/p99 from h2load's per-request log; the median of the runs with min and max.
2. 100,000 long-polls parked at once (--parked; 100 streams per connection, wait 60 s): how many the server
   reports parked (/metrics) and its RSS.
3. Wake-up latency: 32 agents park polls on a service; each of N migrations makes one step of it
   ready; the time from sending the start to a parked poll's answer with that step, p50/p99.
"""
import argparse
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from loopback import free_port, stop, stopped_at_exit, wait_for_port

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RELEASE = os.environ.get("LOCKSTEP_BENCH_BIN") or os.path.join(ROOT, ".build-release", "release")
NGHTTPD = shutil.which("nghttpd") or "/usr/sbin/nghttpd"

parser = argparse.ArgumentParser()
parser.add_argument("--quick", action="store_true", help="one short run of each figure")
parser.add_argument("--json", help="also write the figures as JSON to this file")
parser.add_argument("--only", default="calls,parked,wake", help="comma-separated figures to measure: calls, parked, wake")
parser.add_argument("--parked", type=int, default=100_000, help="long-polls to park at once (100 streams per connection)")
parser.add_argument("--parked-over", default="json", choices=["json", "grpc"], help="park the polls over the JSON port's HTTP/2 or over gRPC")
args = parser.parse_args()
ONLY = set(args.only.split(","))
RUNS = 1 if args.quick else 3
REQUESTS = 5_000 if args.quick else 30_000
WAKES = 50 if args.quick else 300
work = tempfile.mkdtemp(prefix="lockstep-api-bench-")



def start(argv, **kwargs):
    process = stopped_at_exit(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "server.log"), "a"), **kwargs))
    return process



def serve(extra=()):
    data = tempfile.mkdtemp(dir=work)
    http_port, grpc_port = free_port(), free_port()
    process = start([os.path.join(RELEASE, "lockstep"), "serve", "--data", data, "--dev", "--http-listen", f"127.0.0.1:{http_port}",
                     "--grpc-listen", f"127.0.0.1:{grpc_port}", *extra])
    wait_for_port(http_port)
    wait_for_port(grpc_port)
    return process, http_port, grpc_port



def post(port, path, body):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    connection.request("POST", path, json.dumps(body), {"content-type": "application/json"})
    response = connection.getresponse()
    answer = response.read()
    connection.close()
    return response.status, json.loads(answer) if answer.strip().startswith(b"{") else answer


def h2load(url, data, headers, requests=REQUESTS, clients=4, streams=16):
    log = os.path.join(work, f"h2load-{time.time_ns()}.log")
    argv = ["h2load", "-n", str(requests), "-c", str(clients), "-m", str(streams), "-d", data, "--log-file", log]
    for header in headers:
        argv += ["-H", header]
    output = subprocess.run(argv + [url], capture_output=True, text=True, timeout=600).stdout
    rate = float(output.split(" req/s")[0].split()[-1])
    succeeded = int(output.split(" succeeded")[0].split()[-1])
    latencies = sorted(int(line.split("\t")[2]) for line in open(log) if line.strip())
    if succeeded != requests:
        raise SystemExit(f"{url}: only {succeeded} of {requests} succeeded:\n{output}")
    return rate, latencies[len(latencies) // 2] / 1_000, latencies[int(len(latencies) * 0.99)] / 1_000


def one_step_plan(service, extra=""):
    """A plan named after `service` with one step on it (`extra`: more lines of the step's YAML)."""
    return f"name: {service}\nservices:\n  {service}: {{ owners: [o] }}\nnodes:\n  - id: step\n    service: {service}\n    phase: custom\n    action: w\n{extra}"


def grpc_frame(path):
    # PollRequest{service: "orders", agent_id: "bench"} in protobuf wire format, in a gRPC frame.
    message = b"\x0a\x06orders" + b"\x12\x05bench"
    with open(path, "wb") as f:
        f.write(b"\x00" + len(message).to_bytes(4, "big") + message)
    return path


def median_of(samples):
    rates = [s[0] for s in samples]
    return {"rps": statistics.median(rates), "min": min(rates), "max": max(rates),
            "p50_ms": statistics.median(s[1] for s in samples), "p99_ms": statistics.median(s[2] for s in samples)}


# MARK: 1. immediately answered agent calls
if "calls" in ONLY:

    json_body = os.path.join(work, "poll.json")
    with open(json_body, "w") as f:
        f.write('{"service": "orders", "agent_id": "bench"}')
    busy_body = os.path.join(work, "poll-busy.json")
    with open(busy_body, "w") as f:
        f.write('{"service": "busy", "agent_id": "bench"}')
    grpc_body = grpc_frame(os.path.join(work, "poll.grpc"))
    docroot = os.path.join(work, "docroot")
    os.makedirs(docroot)
    with open(os.path.join(docroot, "poll"), "w") as f:
        f.write('{"retry_after_ms":1000}\n')

    server, http_port, grpc_port = serve()
    bare_http, bare_grpc, bare_engine = free_port(), free_port(), free_port()
    bare = start([os.path.join(RELEASE, "lockstep-bare"), str(bare_http), str(bare_grpc), str(bare_engine)])
    wait_for_port(bare_http)
    wait_for_port(bare_grpc)
    wait_for_port(bare_engine)
    nghttpd_port = free_port()
    nghttpd = start([NGHTTPD, "--no-tls", "-d", docroot, str(nghttpd_port)])
    wait_for_port(nghttpd_port)
    assert post(http_port, "/v1/agent/poll", {"service": "orders", "agent_id": "bench"}) == (200, {"retry_after_ms": 1000})
    # A service whose one step is leased to another agent: what the other agents of a service see while
    # a step runs (nothing to lease until it ends).
    # (Its lease lasts a day, so it cannot expire while the rows run and be leased by the benchmark's polls.)
    busy_plan = one_step_plan("busy", "    timeouts: { start_to_close: 25h, heartbeat: 24h }\n")
    assert post(http_port, "/v1/plans", {"plan_yaml": busy_plan})[0] == 200
    assert post(http_port, "/v1/migrations", {"plan": "busy", "migration_id": "busy-1"})[0] == 200
    assert "step" in post(http_port, "/v1/agent/poll", {"service": "busy", "agent_id": "holder"})[1]
    assert post(http_port, "/v1/agent/poll", {"service": "busy", "agent_id": "bench"}) == (200, {"retry_after_ms": 1000})

    json_headers = ["content-type: application/json"]
    grpc_headers = ["content-type: application/grpc", "te: trailers"]
    targets = [
        ("JSON poll, lockstep", f"http://127.0.0.1:{http_port}/v1/agent/poll", json_body, json_headers),
        ("JSON poll of a busy service, lockstep", f"http://127.0.0.1:{http_port}/v1/agent/poll", busy_body, json_headers),
        ("JSON poll, bare route", f"http://127.0.0.1:{bare_http}/v1/agent/poll", json_body, json_headers),
        ("engine answering inline", f"http://127.0.0.1:{bare_engine}/v1/agent/poll", json_body, json_headers),
        ("gRPC Poll, lockstep", f"http://127.0.0.1:{grpc_port}/lockstep.v1.AgentService/Poll", grpc_body, grpc_headers),
        ("gRPC Poll, bare grpc-swift-2 unary", f"http://127.0.0.1:{bare_grpc}/lockstep.v1.AgentService/Poll", grpc_body, grpc_headers),
        ("nghttpd, the same body", f"http://127.0.0.1:{nghttpd_port}/poll", json_body, json_headers),
    ]
    samples = {name: [] for name, *_ in targets}
    for target in targets:  # warm-up
        h2load(*target[1:], requests=1_000)
    for _ in range(RUNS):
        for name, url, data, headers in targets:  # interleaved, so drift hits every row alike
            samples[name].append(h2load(url, data, headers))
    figures = {name: median_of(runs) for name, runs in samples.items()}
    # The busy service stayed busy: its step is still the holder's first lease.
    assert post(http_port, "/v1/agent/poll", {"service": "busy", "agent_id": "bench"}) == (200, {"retry_after_ms": 1000})
    assert post(http_port, "/v1/agent/heartbeat", {"lease_id": "busy-1/step", "fencing_token": "1"})[0] == 200
    for process in (server, bare, nghttpd):
        stop(process)

# MARK: 2. parked long-polls (100,000 by default)
if "parked" in ONLY:

    PARKED = args.parked
    connections = max(1, PARKED // 100)
    server, http_port, grpc_port = serve(["--parked-polls-max", str(PARKED), "--parked-polls-per-principal", str(PARKED),
                                          "--connections-per-peer-max", str(connections + 16)])
    wait_body = os.path.join(work, "wait.json")
    if args.parked_over == "grpc":
        # PollRequest{service: "nothing-to-do", agent_id: "bench", wait_ms: 60000} in a gRPC frame.
        message = b"\x0a\x0dnothing-to-do" + b"\x12\x05bench" + b"\x20\xe0\xd4\x03"
        with open(wait_body, "wb") as f:
            f.write(b"\x00" + len(message).to_bytes(4, "big") + message)
        wait_target = (["-H", "content-type: application/grpc", "-H", "te: trailers"], f"http://127.0.0.1:{grpc_port}/lockstep.v1.AgentService/Poll")
    else:
        with open(wait_body, "w") as f:
            f.write('{"service": "nothing-to-do", "agent_id": "bench", "wait_ms": 60000}')
        wait_target = (["-H", "content-type: application/json"], f"http://127.0.0.1:{http_port}/v1/agent/poll")
    rss_before = int(open(f"/proc/{server.pid}/status").read().split("VmRSS:")[1].split()[0])
    holder = stopped_at_exit(subprocess.Popen(["h2load", "-n", str(PARKED), "-c", str(connections), "-m", "100", "-d", wait_body, *wait_target[0], wait_target[1]],
                                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    parked = 0
    deadline = time.time() + 50
    while time.time() < deadline and parked < PARKED:
        time.sleep(0.5)
        metrics = subprocess.run(["curl", "-s", f"http://127.0.0.1:{http_port}/metrics"], capture_output=True, text=True).stdout
        parked = int(float(next((line.split()[-1] for line in metrics.splitlines() if line.startswith("lockstep_parked_polls ")), "0")))
    time.sleep(1)
    rss_parked = int(open(f"/proc/{server.pid}/status").read().split("VmRSS:")[1].split()[0])
    metrics = subprocess.run(["curl", "-s", f"http://127.0.0.1:{http_port}/metrics"], capture_output=True, text=True).stdout
    heap_parked = float(next((line.split()[-1] for line in metrics.splitlines() if line.startswith("lockstep_heap_in_use_bytes ")), "0")) / 1024
    stop(server)  # SIGTERM answers every parked poll at once
    held = holder.communicate(timeout=60)[0]
    parked_answered = int(held.split(" succeeded")[0].split()[-1]) if " succeeded" in held else 0

# MARK: 3. wake-up latency
if "wake" in ONLY:

    server, http_port, grpc_port = serve()
    plan = one_step_plan("wake")
    assert post(http_port, "/v1/plans", {"plan_yaml": plan})[0] == 200
    sent = {}
    latencies = []
    completed = set()
    lock = threading.Lock()
    done = threading.Event()


    def agent():
        connection = http.client.HTTPConnection("127.0.0.1", http_port, timeout=60)
        while not done.is_set():
            connection.request("POST", "/v1/agent/poll", json.dumps({"service": "wake", "agent_id": "a", "wait_ms": 20000}),
                               {"content-type": "application/json"})
            answer = json.loads(connection.getresponse().read())
            arrived = time.perf_counter()
            step = answer.get("step")
            if step:
                with lock:
                    latencies.append(arrived - sent[step["migration_id"]])
                connection.request("POST", "/v1/agent/complete", json.dumps({"lease_id": step["lease_id"], "fencing_token": step["fencing_token"]}),
                                   {"content-type": "application/json"})
                connection.getresponse().read()
                with lock:
                    completed.add(step["migration_id"])


    threads = [threading.Thread(target=agent, daemon=True) for _ in range(32)]
    for thread in threads:
        thread.start()
    time.sleep(1)
    for index in range(WAKES):
        migration = f"w{index}"
        sent[migration] = time.perf_counter()
        assert post(http_port, "/v1/migrations", {"plan": "wake", "migration_id": migration})[0] == 200
        # Until its step is completed: the next start then finds the service free, and the append that
        # readies its step is its own (started earlier, it would wait for this one's release).
        deadline = time.monotonic() + 30
        while migration not in completed:
            if time.monotonic() > deadline:
                raise SystemExit(f"wake-up: {migration} was never answered and completed within 30 s")
            time.sleep(0.001)
    done.set()
    # The server's own figure: from the commit of the append that readied the step to the woken poll's
    # answer handed to its connection, as a histogram; a quantile is reported as its bucket's bound.
    def server_side(http_port):
        """(wakes, p50 bound, p99 bound, share within 2 ms) of the server's wake-up histogram, in ms (buckets every 0.1 ms to 2 ms)."""
        metrics = subprocess.run(["curl", "-s", f"http://127.0.0.1:{http_port}/metrics"], capture_output=True, text=True).stdout
        buckets = sorted((float(line.split('le="')[1].split('"')[0]), float(line.split()[-1]))
                         for line in metrics.splitlines() if line.startswith("lockstep_poll_wakeup_seconds_bucket"))
        count = buckets[-1][1] if buckets else 0

        def bucket_bound(quantile):
            return next((bound * 1_000 for bound, seen in buckets if seen >= quantile * count), float("inf"))

        within = next((seen for bound, seen in buckets if abs(bound - 0.002) < 1e-9), 0)
        return count, bucket_bound(0.5), bucket_bound(0.99), within / max(count, 1)


    woken, server_p50, server_p99, server_within = server_side(http_port)
    stop(server)
    # The same with a compiled client (lockstep-wake: LockstepClient over gRPC), on a fresh server: the
    # Python client's own time is most of the figure above.
    compiled = None
    wake_binary = os.path.join(RELEASE, "lockstep-wake")
    if os.path.exists(wake_binary):
        server, http_port, grpc_port = serve()
        compiled = json.loads(subprocess.run([wake_binary, f"127.0.0.1:{grpc_port}", "32", str(WAKES)], capture_output=True, text=True,
                                             timeout=600, check=True).stdout)
        (compiled["server_wakes"], compiled["server_p50_at_most_ms"], compiled["server_p99_at_most_ms"],
         compiled["server_within_2ms"]) = server_side(http_port)
        stop(server)
    wake = sorted(latencies)
    wake_p50, wake_p99 = wake[len(wake) // 2] * 1_000, wake[int(len(wake) * 0.99)] * 1_000

# MARK: report

def row(name, figure, reference):
    ratio = figure["rps"] / reference["rps"]
    return (f"| {name} | {figure['rps']:,.0f} [{figure['min']:,.0f}–{figure['max']:,.0f}] | {figure['p50_ms']:.2f} / {figure['p99_ms']:.2f} "
            f"| {ratio:.2f}× | {figure['rps'] / figures['nghttpd, the same body']['rps']:.3f}× |")


report = {}
if "calls" in ONLY:
    print(f"\n{RUNS} run(s) of {REQUESTS} requests each, 64 concurrent streams (4 connections x 16), h2load on loopback, {os.cpu_count()} cores\n")
    print("| call | req/s median [min–max] | p50 / p99 ms | ratio to its floor | ratio to nghttpd |")
    print("|---|---|---|---|---|")
    print(row("JSON poll, lockstep", figures["JSON poll, lockstep"], figures["JSON poll, bare route"]))
    print(row("JSON poll of a busy service (its step leased to another agent), lockstep", figures["JSON poll of a busy service, lockstep"],
              figures["JSON poll, bare route"]))
    print(row("JSON poll, bare route: Hummingbird's router on the engine (floor)", figures["JSON poll, bare route"], figures["JSON poll, bare route"]))
    print(row("the engine answering inline, on the event loop (its own floor)", figures["engine answering inline"], figures["engine answering inline"]))
    print(row("gRPC Poll, lockstep", figures["gRPC Poll, lockstep"], figures["gRPC Poll, bare grpc-swift-2 unary"]))
    print(row("gRPC Poll, bare grpc-swift-2 unary on the engine's transport (floor)", figures["gRPC Poll, bare grpc-swift-2 unary"], figures["gRPC Poll, bare grpc-swift-2 unary"]))
    print(row("nghttpd, the same body (C reference)", figures["nghttpd, the same body"], figures["nghttpd, the same body"]))
    report["calls"] = figures
if "parked" in ONLY:
    print(f"\nparked long-polls over {'gRPC' if args.parked_over == 'grpc' else 'HTTP/2 (JSON)'}: {parked:,} held at once (of {PARKED:,} sent on {connections:,} connections; {parked_answered:,} answered at shutdown); "
          f"RSS {rss_before / 1024:.0f} MB idle, {rss_parked / 1024:.0f} MB while held, {(rss_parked - rss_before) / max(parked, 1):.1f} KB per parked poll; "
          f"heap in use while held {heap_parked / 1024:.0f} MB, {heap_parked / max(parked, 1):.1f} KB per parked poll (target: 100,000 under 500 MB)")
    report.update({"parked": parked, "rss_mb_idle": rss_before / 1024, "rss_mb_parked": rss_parked / 1024, "heap_mb_parked": heap_parked / 1024})
if "wake" in ONLY:
    print(f"\nwake-up, start sent → parked poll answered with its step ({len(wake)} wakes, 32 parked agents): "
          f"p50 {wake_p50:.2f} ms, p99 {wake_p99:.2f} ms")
    print(f"wake-up, server side, the readying append's commit → woken poll's answer handed to its connection ({woken:.0f} wakes): "
          f"p50 ≤ {server_p50:g} ms, p99 ≤ {server_p99:g} ms (bucket bounds), {server_within:.1%} within 2 ms (target: p99 < 2 ms, so ≥ 99 %)")
    report["wake_ms"] = {"p50": wake_p50, "p99": wake_p99, "server_p50_at_most": server_p50, "server_p99_at_most": server_p99,
                         "server_within_2ms": server_within}
    if compiled:
        print(f"wake-up, compiled gRPC client (lockstep-wake, {compiled['wakes']:.0f} wakes, 32 parked agents): "
              f"start answered → poll answered p50 {compiled['from_start_answered_p50_ms']:.2f} ms, p99 {compiled['from_start_answered_p99_ms']:.2f} ms "
              f"(a lower bound of append → answered: the start is answered after the append that readies the step); "
              f"start sent → poll answered p50 {compiled['from_start_sent_p50_ms']:.2f} ms, p99 {compiled['from_start_sent_p99_ms']:.2f} ms "
              f"(an upper bound: it includes the start's own appends) (target: p99 < 2 ms); "
              f"its server's side p50 ≤ {compiled['server_p50_at_most_ms']:g} ms, p99 ≤ {compiled['server_p99_at_most_ms']:g} ms, "
              f"{compiled['server_within_2ms']:.1%} within 2 ms")
        report["wake_ms"]["compiled"] = compiled
if args.json:
    with open(args.json, "w") as f:
        json.dump(report, f, indent=2, sort_keys=True)
shutil.rmtree(work, ignore_errors=True)
