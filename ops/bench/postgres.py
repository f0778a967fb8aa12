#!/usr/bin/env python3
"""Lockstep on PostgreSQL (issue 16), each figure against a reference measured in the same run on the
same private PostgreSQL server (started here as an unprivileged user on a free loopback port, stopped at
the end; fsync and synchronous_commit on, as the server ships):

- durable appends/s at 1, 16, 64 writers: `lockstep debug append-load --store` (the whole engine:
  commands decided, group commit, the hash chain, stream versions checked in the transaction) against
  pgbench (libpq, C) committing the same table shape, the same events per append and record size, one
  transaction per append serialized on a head row as ours are;
- lease cycles/s (poll -> heartbeat -> complete) through the gRPC API with the log on PostgreSQL, against
  the same server on SQLite (ops/bench/lease_cycles.py, the same client);
- takeover: two coordinators (leadership TTL 1,000 ms), the writer SIGKILLed ROUNDS times; from the kill
  to the first write (a migration start) the new writer accepts; p50/p99 against the target TTL + 1 s;
- replica lag: pauses and resumes appended on the writer; from each event's arrival on a watch on the
  writer to its arrival on a watch on a replica; p50/p99 against the target 50 ms.

Usage: postgres.py LOCKSTEP_BINARY STUBS_DIR [--quick] [--json FILE] [--only appends,leases,takeover,lag]
Prints one JSON object of figures (and writes it to --json FILE).
"""
import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from loopback import free_port, stop, stopped_at_exit, wait_for_file, wait_for_port

BENCH = os.path.dirname(os.path.abspath(__file__))
parser = argparse.ArgumentParser()
parser.add_argument("lockstep")
parser.add_argument("stubs")
parser.add_argument("--quick", action="store_true")
parser.add_argument("--json")
parser.add_argument("--only", default="appends,leases,takeover,lag", help="comma-separated: appends, leases, takeover, lag")
args = parser.parse_args()
SECONDS = 2 if args.quick else 5
RUNS = 1 if args.quick else 3
ROUNDS = 5 if args.quick else 20
LAG_SAMPLES = 50 if args.quick else 300
sys.path.insert(0, args.stubs)
import grpc  # noqa: E402
from lockstep.v1 import agent_pb2, agent_pb2_grpc  # noqa: E402

work = tempfile.mkdtemp(prefix="lockstep-pg-bench-")
as_root = os.geteuid() == 0


def tool(name):
    found = shutil.which(name)
    if found:
        return found
    versions = sorted((v for v in os.listdir("/usr/lib/postgresql") if v.isdigit()), key=int, reverse=True)
    return f"/usr/lib/postgresql/{versions[0]}/bin/{name}"


def unprivileged(argv):
    return ["runuser", "-u", "nobody", "--"] + argv if as_root else argv


class Cluster:
    """A private cluster: initdb (trust, loopback only), pg_ctl start, pg_ctl stop."""

    def __init__(self):
        self.directory = os.path.join(work, "pg")
        os.makedirs(self.directory)
        if as_root:
            shutil.chown(work, "nobody")
            shutil.chown(self.directory, "nobody")
        self.data = os.path.join(self.directory, "data")
        self.port = free_port()
        subprocess.run(unprivileged([tool("initdb"), "-D", self.data, "-U", "lockstep", "--auth=trust", "-E", "UTF8"]),
                       check=True, stdout=subprocess.DEVNULL)
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c max_connections=300"
        subprocess.run(unprivileged([tool("pg_ctl"), "-D", self.data, "-o", options, "-l", os.path.join(self.directory, "log"), "-w", "start"]),
                       check=True, stdout=subprocess.DEVNULL)
        self.databases = 0

    def psql(self, database, sql):
        return subprocess.run([tool("psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "lockstep", "-d", database, "-At", "-c", sql],
                              check=True, capture_output=True, text=True).stdout.strip()

    def database(self):
        self.databases += 1
        name = f"bench_{self.databases}"
        self.psql("postgres", f"CREATE DATABASE {name}")
        return name

    def url(self, database):
        return f"postgres://lockstep@127.0.0.1:{self.port}/{database}?sslmode=disable"

    def stop(self):
        subprocess.run(unprivileged([tool("pg_ctl"), "-D", self.data, "-m", "fast", "stop"]), stdout=subprocess.DEVNULL, check=False)


def summary(samples):
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples), "samples": samples}


def percentile(samples, fraction):
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


RAW_SCHEMA = """
CREATE TABLE raw_head (id integer PRIMARY KEY CHECK (id = 1), sequence bigint NOT NULL, chain_hash bytea NOT NULL);
INSERT INTO raw_head VALUES (1, 0, decode(repeat('00', 32), 'hex'));
CREATE TABLE raw_events (sequence bigint PRIMARY KEY, stream text NOT NULL, stream_version bigint NOT NULL,
                         record bytea NOT NULL, chain_hash bytea NOT NULL, UNIQUE (stream, stream_version));
CREATE TABLE raw_streams (stream text COLLATE "C" PRIMARY KEY, version bigint NOT NULL);
"""

RAW_SCRIPT = """\\set k {events}
BEGIN;
UPDATE raw_head SET sequence = sequence + :k, chain_hash = sha256(chain_hash) WHERE id = 1 RETURNING sequence AS head \\gset
INSERT INTO raw_events SELECT :head - :k + g, 'raw-' || :client_id, :head - :k + g, decode(repeat('ab', {size}), 'hex'),
  sha256(int8send(:head - :k + g)) FROM generate_series(1, :k) AS g;
INSERT INTO raw_streams VALUES ('raw-' || :client_id, :head) ON CONFLICT (stream) DO UPDATE SET version = EXCLUDED.version;
COMMIT;
"""


def appends(cluster):
    """Durable appends/s at 1, 16, 64 writers: ours, and pgbench's with the same shape."""
    figures = {}
    for writers in (1, 16, 64):
        ours, raw = [], []
        for run in range(RUNS):  # interleaved, so drift hits both alike
            database = cluster.database()
            out = subprocess.run([args.lockstep, "debug", "append-load", "--store", cluster.url(database), "--writers", str(writers),
                                  "--seconds", str(SECONDS), "--tag", f"w{writers}r{run}"], check=True, capture_output=True, text=True,
                                 timeout=300).stdout
            acks = [line.split() for line in out.splitlines() if line.startswith("ack ")]
            ours.append(len(acks) / SECONDS)
            events = sum(int(a[2]) - int(a[1]) + 1 for a in acks)
            per_append = max(1, round(events / max(1, len(acks))))
            size = int(cluster.psql(database, "SELECT coalesce(avg(length(record)), 200)::int FROM lockstep_events"))
            reference = cluster.database()
            cluster.psql(reference, RAW_SCHEMA)
            script = os.path.join(work, "raw.sql")
            with open(script, "w") as file:
                file.write(RAW_SCRIPT.format(events=per_append, size=size))
            bench = subprocess.run([tool("pgbench"), "-n", "-h", "127.0.0.1", "-p", str(cluster.port), "-U", "lockstep", "-c", str(writers),
                                    "-j", str(min(writers, 4)), "-T", str(SECONDS), "-f", script, reference],
                                   check=True, capture_output=True, text=True, timeout=300).stdout
            raw.append(float(re.search(r"tps = ([0-9.]+)", bench).group(1)))
        figures[writers] = {"ours": summary(ours), "reference": summary(raw), "events_per_append": per_append, "record_bytes": size}
        print(f"appends, {writers} writers: ours {statistics.median(ours):.0f}/s, pgbench {statistics.median(raw):.0f}/s", flush=True)
    return figures


def serve(arguments, ready=None):
    argv = [args.lockstep, "serve", "--dev"] + arguments + (["--ready-file", ready] if ready else [])
    log = open(os.path.join(work, f"serve-{time.monotonic_ns()}.log"), "w")
    return stopped_at_exit(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log))


def alive(process):
    """Exits the script, with the end of the coordinator's log, if `process` has exited."""
    if process.poll() is not None:
        logs = sorted(os.path.join(work, name) for name in os.listdir(work) if name.startswith("serve-"))
        tail = open(logs[-1]).read()[-2000:] if logs else ""
        raise SystemExit(f"a coordinator exited ({process.returncode}): {tail}")


def lease_cycles(cluster):
    """Lease cycles/s through the API, the log on PostgreSQL and on SQLite, the same client."""
    figures = {}
    servers = {}
    for kind in ("postgres", "sqlite"):
        ready = os.path.join(work, f"ready-{kind}.json")
        store = ["--store", cluster.url(cluster.database())] if kind == "postgres" else ["--data", os.path.join(work, "sqlite")]
        servers[kind] = serve(store + ["--http-listen", "127.0.0.1:0", "--grpc-listen", f"127.0.0.1:{free_port()}"], ready)
        wait_for_file(ready, seconds=60)
        servers[kind].target = json.load(open(ready))["grpc"]
    for clients in (1, 64):
        rates = {"postgres": [], "sqlite": []}
        for _ in range(RUNS):
            for kind, server in servers.items():
                out = subprocess.run([sys.executable, os.path.join(BENCH, "lease_cycles.py"), "lockstep", server.target, str(clients), str(SECONDS),
                                      args.stubs], capture_output=True, text=True, timeout=600, check=True).stdout
                rates[kind].append(json.loads(out.strip().splitlines()[-1])["rate"])
        figures[clients] = {"ours": summary(rates["postgres"]), "reference": summary(rates["sqlite"])}
        print(f"lease cycles, {clients} clients: PostgreSQL {statistics.median(rates['postgres']):.0f}/s, "
              f"SQLite {statistics.median(rates['sqlite']):.0f}/s", flush=True)
    for server in servers.values():
        stop(server)
    return figures


PLAN = "name: probe\nservices:\n  probe: { owners: [bench] }\nnodes:\n  - { id: n1, service: probe, phase: custom, action: work }\n"


class Coordinators:
    """Two coordinators on one database, each slot keeping its ports when its process is replaced."""

    def __init__(self, cluster, database):
        self.cluster, self.database = cluster, database
        self.slots = [(free_port(), free_port()) for _ in range(2)]
        self.processes = [None, None]
        self.generation = 0
        for slot in range(2):
            self.start(slot)
        # Reconnect at once (gRPC's default back-off starts at 1 s and would be measured as takeover time).
        fast = [("grpc.initial_reconnect_backoff_ms", 20), ("grpc.min_reconnect_backoff_ms", 20), ("grpc.max_reconnect_backoff_ms", 50)]
        self.stubs = [agent_pb2_grpc.MigrationServiceStub(grpc.insecure_channel(f"127.0.0.1:{grpc_port}", options=fast)) for grpc_port, _ in self.slots]

    def start(self, slot):
        self.generation += 1
        grpc_port, http_port = self.slots[slot]
        self.processes[slot] = serve(["--store", self.cluster.url(self.database), "--grpc-listen", f"127.0.0.1:{grpc_port}",
                                      "--http-listen", f"127.0.0.1:{http_port}", "--coordinator-id", f"c{slot}-{self.generation}",
                                      "--leadership-ttl-ms", "1000"])

    def writer_slot(self):
        for process in self.processes:
            alive(process)
        try:
            address = self.cluster.psql(self.database, "SELECT address FROM lockstep_leader WHERE expires_at > clock_timestamp()")
        except subprocess.CalledProcessError:
            return None  # no tables yet: no coordinator has opened the log
        return next((slot for slot, (grpc_port, _) in enumerate(self.slots) if address == f"127.0.0.1:{grpc_port}"), None)

    def try_write(self, slot, counter):
        try:
            self.stubs[slot].StartMigration(agent_pb2.StartMigrationRequest(plan="probe", migration_id=f"probe-{counter}"), timeout=1)
            return True
        except grpc.RpcError:
            return False

    def stop(self):
        for process in self.processes:
            stop(process)


def takeover(cluster):
    """From SIGKILL of the writer to the first write the new writer accepts, ROUNDS times."""
    world = Coordinators(cluster, cluster.database())
    counter = 0
    deadline = time.time() + 60
    while True:
        slot = world.writer_slot()
        if slot is not None:
            try:
                world.stubs[slot].ApplyPlan(agent_pb2.ApplyPlanRequest(plan_yaml=PLAN), timeout=2)
                break
            except grpc.RpcError:
                pass
        if time.time() > deadline:
            raise SystemExit("no writer answered within 60 s")
        time.sleep(0.1)
    samples = []
    for _ in range(ROUNDS):
        # A writer that answers, and a replica ready to take over (it serves reads once it has caught up).
        while True:
            slot = world.writer_slot()
            counter += 1
            if slot is not None and world.try_write(slot, counter):
                break
            time.sleep(0.05)
        other = 1 - slot
        while True:
            try:
                world.stubs[other].ListPlans(agent_pb2.ListPlansRequest(), timeout=1)
                break
            except grpc.RpcError:
                time.sleep(0.05)
        killed = time.monotonic()
        world.processes[slot].send_signal(signal.SIGKILL)
        world.processes[slot].wait()
        while True:
            counter += 1
            if world.try_write(other, counter):
                samples.append((time.monotonic() - killed) * 1000)
                break
            time.sleep(0.01)
        world.start(slot)
    world.stop()
    print(f"takeover over {len(samples)} kills: p50 {percentile(samples, 0.5):.0f} ms, p99 {percentile(samples, 0.99):.0f} ms", flush=True)
    return {"p50_ms": percentile(samples, 0.5), "p99_ms": percentile(samples, 0.99), "samples_ms": samples, "ttl_ms": 1000}


def replica_lag(cluster):
    """From an event's arrival on a watch on the writer to its arrival on a watch on a replica (pauses and
    resumes appended on the writer, one at a time)."""
    world = Coordinators(cluster, cluster.database())
    deadline = time.monotonic() + 60
    while True:
        if time.monotonic() > deadline:
            raise SystemExit("replica lag: no coordinator became the writer and took the probe's start within 60 s")
        slot = world.writer_slot()
        if slot is not None:
            try:
                world.stubs[slot].ApplyPlan(agent_pb2.ApplyPlanRequest(plan_yaml=PLAN), timeout=2)
                world.stubs[slot].StartMigration(agent_pb2.StartMigrationRequest(plan="probe", migration_id="lag"), timeout=2)
                break
            except grpc.RpcError:
                pass
        time.sleep(0.1)
    replica = 1 - slot
    # Each event's arrival on a watch on the writer and on one on the replica, by sequence.
    seen = {slot: {}, replica: {}}
    started = {slot: threading.Event(), replica: threading.Event()}

    def watch(where):
        while True:
            try:
                for envelope in world.stubs[where].Watch(agent_pb2.WatchRequest(migration_id="lag")):
                    seen[where].setdefault(envelope.sequence, time.monotonic())
                    started[where].set()
                return
            except grpc.RpcError:
                if started[where].is_set():
                    return
                time.sleep(0.1)  # the replica is still building its state

    for where in (slot, replica):
        threading.Thread(target=watch, args=(where,), daemon=True).start()
        started[where].wait(60)
    time.sleep(0.2)
    first = max(seen[slot]) + 1
    for index in range(LAG_SAMPLES):
        if index % 2 == 0:
            world.stubs[slot].PauseMigration(agent_pb2.PauseMigrationRequest(migration_id="lag", reason="lag probe"))
        else:
            world.stubs[slot].ResumeMigration(agent_pb2.ResumeMigrationRequest(migration_id="lag"))
        time.sleep(0.01)
    time.sleep(1)
    lags = [(seen[replica][sequence] - at) * 1000 for sequence, at in seen[slot].items() if sequence >= first and sequence in seen[replica]]
    missing = sum(1 for sequence in seen[slot] if sequence >= first and sequence not in seen[replica])
    world.stop()
    print(f"replica lag over {len(lags)} events: p50 {percentile(lags, 0.5):.1f} ms, p99 {percentile(lags, 0.99):.1f} ms", flush=True)
    return {"p50_ms": percentile(lags, 0.5), "p99_ms": percentile(lags, 0.99), "count": len(lags), "missing": missing}


cluster = Cluster()
try:
    sections = {"appends": appends, "leases": lease_cycles, "takeover": takeover, "lag": replica_lag}
    figures = {name: sections[name](cluster) for name in args.only.split(",")}
finally:
    cluster.stop()
    shutil.rmtree(work, ignore_errors=True)
print(json.dumps({k: v for k, v in figures.items()}, default=str))
if args.json:
    with open(args.json, "w") as file:
        json.dump(figures, file)
