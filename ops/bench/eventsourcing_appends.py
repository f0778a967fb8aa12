#!/usr/bin/env python3
"""Durable appends/s of the `eventsourcing` library (PyPI) on SQLite: WRITERS threads, each saving one
new event of its own aggregate per transaction, for SECONDS. The reference for Lockstep's appends in
ops/bench/compare (same durability: SQLite WAL, synchronous=FULL).

Usage: eventsourcing_appends.py DIRECTORY WRITERS SECONDS
Prints one JSON object: {"events", "seconds", "rate", "journal_mode", "synchronous", "version"}.
"""
import json
import os
import sys
import threading
import time

directory, writers, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
os.makedirs(directory, exist_ok=True)
path = os.path.join(directory, f"eventsourcing-{writers}-{time.time_ns()}.sqlite")
os.environ["PERSISTENCE_MODULE"] = "eventsourcing.sqlite"
os.environ["SQLITE_DBNAME"] = path
os.environ["SQLITE_LOCK_TIMEOUT"] = "60"

from eventsourcing.application import Application  # noqa: E402
from eventsourcing.domain import Aggregate, event  # noqa: E402


class Step(Aggregate):
    @event("Created")
    def __init__(self, name: str):
        self.name = name
        self.count = 0

    @event("Touched")
    def touch(self, count: int):
        self.count = count


app = Application()
counts = [0] * writers
deadline = time.time() + seconds


def writer(index):
    step = Step(name=f"writer-{index}")
    app.save(step)
    done = 0
    while time.time() < deadline:
        step.touch(done)
        app.save(step)
        done += 1
    counts[index] = done


began = time.time()
threads = [threading.Thread(target=writer, args=(i,)) for i in range(writers)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
elapsed = time.time() - began

import sqlite3  # noqa: E402

from importlib.metadata import version  # noqa: E402

connection = sqlite3.connect(path)
journal = connection.execute("PRAGMA journal_mode").fetchone()[0]
# eventsourcing sets only journal_mode=WAL; a connection's synchronous is SQLite's default (2 = FULL).
synchronous = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}[connection.execute("PRAGMA synchronous").fetchone()[0]]
connection.close()
print(json.dumps({"events": sum(counts), "seconds": elapsed, "rate": sum(counts) / elapsed, "journal_mode": journal,
                  "synchronous": synchronous, "version": version("eventsourcing")}))
