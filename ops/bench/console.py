#!/usr/bin/env python3
"""The web console's figures (issue 18, docs/benchmarks.md): a migration of 200 nodes and about 20,000
events, its page in headless Chromium, and the as-of view at instants across its history.

    python3 ops/bench/console.py [--lockstep BIN] [--nodes 200] [--progress 95] [--instants 20] [--loads 5]

Starts `lockstep serve --dev` (release build by default) on loopback, applies a plan of NODES nodes
(10 services, 10 chains), starts a migration and runs it with agents over the JSON API: each step
sends PROGRESS progress reports, then completes (the last node is left running, so the page is live).
Then measures, on the same server:
  - the server's time for the page's API calls (migrations/get and every page of history/events),
    each timed from the client on a kept-alive connection;
  - the page in Chromium: from navigation start to its load event, and to the graph drawn with every node;
  - the as-of view's server call (history/state at a sequence) at INSTANTS sequences spread over the log.
Targets: the page under 1 s; the as-of view under 200 ms for any instant. Prints one table; needs
chromium, chromium-driver and selenium (ops/test installs them)."""

import argparse
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import threading
import time

from loopback import stop, stopped_at_exit

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
parser = argparse.ArgumentParser()
parser.add_argument("--lockstep", default=None)
parser.add_argument("--nodes", type=int, default=200)
parser.add_argument("--progress", type=int, default=95, help="progress reports per step")
parser.add_argument("--instants", type=int, default=20)
parser.add_argument("--loads", type=int, default=5)
args = parser.parse_args()
binary = args.lockstep or next(p for p in (os.path.join(ROOT, ".build-release", "release", "lockstep"), os.path.join(ROOT, ".build", "debug", "lockstep"))
                               if os.path.exists(p))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Client:
    def __init__(self, port):
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def post(self, path, body):
        began = time.perf_counter()
        self.connection.request("POST", path, json.dumps(body), {"content-type": "application/json"})
        response = self.connection.getresponse()
        answer = response.read()
        elapsed = time.perf_counter() - began
        if response.status != 200:
            raise SystemExit(f"{path} answered {response.status}: {answer[:300]!r}")
        return json.loads(answer), elapsed


work = tempfile.mkdtemp(prefix="lockstep-console-bench-")
http_port, grpc_port = free_port(), free_port()
ready = os.path.join(work, "ready.json")
server = stopped_at_exit(subprocess.Popen([binary, "serve", "--data", os.path.join(work, "data"), "--dev", "--http-listen", f"127.0.0.1:{http_port}",
                                           "--grpc-listen", f"127.0.0.1:{grpc_port}", "--ready-file", ready], stdout=subprocess.DEVNULL,
                                          stderr=open(os.path.join(work, "server.log"), "w")))
try:
    deadline = time.time() + 60
    while not os.path.exists(ready):
        if time.time() > deadline or server.poll() is not None:
            raise SystemExit("the server did not start")
        time.sleep(0.05)
    sign_in = json.load(open(ready))["console_sign_in"]
    client = Client(http_port)

    # The plan: 10 services, node i on service i % 10 needing node i - 10 (10 chains).
    lines = ["name: big", "services:"] + [f"  s{s}: {{ owners: [team-{s}] }}" for s in range(10)] + ["nodes:"]
    for i in range(args.nodes):
        lines += [f"  - id: n{i:03d}", f"    service: s{i % 10}", "    phase: custom", "    action: work"]
        if i >= 10:
            lines.append(f"    needs: [n{i - 10:03d}]")
    client.post("/v1/plans", {"plan_yaml": "\n".join(lines) + "\n"})
    client.post("/v1/migrations", {"plan": "big", "migration_id": "big-1"})

    last = f"n{args.nodes - 1:03d}"

    def agent(service):
        own = Client(http_port)
        while True:
            answer, _ = own.post("/v1/agent/poll", {"service": service, "agent_id": f"agent-{service}", "wait_ms": 2000})
            step = answer.get("step")
            if not step:
                state, _ = own.post("/v1/migrations/get", {"migration_id": "big-1"})
                if all(n["status"] == "NODE_STATUS_SUCCEEDED" for n in state["nodes"] if n["services"] == [service] and n["node_id"] != last):
                    return
                continue
            for percent in range(args.progress):
                own.post("/v1/agent/progress", {"lease_id": step["lease_id"], "fencing_token": step["fencing_token"], "percent": percent, "message": f"batch {percent}"})
            if step["node_id"] == last:
                return  # left running: the page is live
            own.post("/v1/agent/complete", {"lease_id": step["lease_id"], "fencing_token": step["fencing_token"]})

    began = time.time()
    agents = [threading.Thread(target=agent, args=(f"s{s}",)) for s in range(10)]
    for thread in agents:
        thread.start()
    for thread in agents:
        thread.join()
    events = []
    cursor = "0"
    api_seconds = []
    migration, seconds = client.post("/v1/migrations/get", {"migration_id": "big-1"})
    api_seconds.append(seconds)
    while True:
        page, seconds = client.post("/v1/history/events", {"after_sequence": cursor, "stream": "migration/big-1", "page_size": 1000})
        api_seconds.append(seconds)
        events += page.get("events", [])
        if not page.get("next_after_sequence"):
            break
        cursor = page["next_after_sequence"]
    print(f"built: {len(migration['nodes'])} nodes, {len(events):,} events of the migration in {time.time() - began:.0f} s", flush=True)

    # The as-of view: the whole state at sequences spread over the migration's history.
    sequences = [int(e["sequence"]) for e in events]
    instants = [sequences[min(len(sequences) - 1, (len(sequences) * k) // args.instants)] for k in range(args.instants)] + [sequences[-1]]
    as_of = []
    for sequence in instants:
        _, seconds = client.post("/v1/history/state", {"sequence": str(sequence)})
        as_of.append(seconds * 1000)

    # The page in Chromium.
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    driver.set_script_timeout(60)
    loads, drawn, read = [], [], []
    try:
        driver.get(sign_in)
        # The page asks before it uses a sign-in link (docs/console.md).
        WebDriverWait(driver, 60).until(lambda d: d.find_elements(By.XPATH, "//button[text()='Sign in with the link']"))
        driver.find_element(By.XPATH, "//button[text()='Sign in with the link']").click()
        WebDriverWait(driver, 60).until(lambda d: d.execute_script("return document.querySelector('#who button') !== null"))
        for _ in range(args.loads):
            driver.get("about:blank")
            driver.get(f"http://127.0.0.1:{http_port}/ui#/migration/big-1")
            # Polled in the page itself, so each instant is taken when it happens, not when the driver looks.
            timing = driver.execute_async_script(f"""
                const done = arguments[arguments.length - 1];
                let drawn = null;
                const look = () => {{
                  if (drawn === null && document.querySelectorAll('g.node').length === {args.nodes}) drawn = performance.now();
                  if (drawn !== null && document.getElementById('main').dataset.history === 'loaded') {{
                    return done([performance.getEntriesByType('navigation')[0].loadEventEnd, drawn, performance.now()]);
                  }}
                  setTimeout(look, 5);
                }};
                look();""")
            loads.append(timing[0])
            drawn.append(timing[1])
            read.append(timing[2])
    finally:
        driver.quit()

    def row(name, values, target):
        values = sorted(values)
        return f"| {name} | {statistics.median(values):,.0f} | {values[-1]:,.0f} | {target} |"

    print(f"\nconsole, a migration of {len(migration['nodes'])} nodes and {len(events):,} events, {os.cpu_count()} cores, {os.path.basename(os.path.dirname(binary))} build\n")
    print("| figure | median ms | max ms | target |")
    print("|---|---|---|---|")
    print(f"| server time for the page's API calls (migrations/get + {len(api_seconds) - 1} pages of history/events) | {sum(api_seconds) * 1000:,.0f} | - | part of < 1,000 |")
    print(row(f"page load event in Chromium ({args.loads} loads)", loads, "-"))
    print(row("page drawn: navigation start → every node in the graph", drawn, "< 1,000"))
    print(row("page whole: navigation start → the history read (timeline, slider)", read, "< 1,000"))
    print(row(f"as-of view: history/state at {len(instants)} instants across the history", as_of, "< 200 each"))
    print(json.dumps({"events": len(events), "nodes": len(migration["nodes"]), "api_ms": sum(api_seconds) * 1000,
                      "load_ms": loads, "drawn_ms": drawn, "history_ms": read, "as_of_ms": as_of}))
finally:
    stop(server)
    shutil.rmtree(work, ignore_errors=True)
