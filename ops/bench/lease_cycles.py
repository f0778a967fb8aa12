#!/usr/bin/env python3
"""Lease cycles per second through the public gRPC API, Lockstep next to etcd, with the same client.

Lockstep: poll (leases the next step) -> heartbeat (renews) -> complete (releases), each client on its
own service with a chain plan, so a client always has a next step (the completion hands its service
lease on in the same append). The services are new for each run: a run leaves its migrations part-way,
and a later run on the same services would queue behind them, so each of its cycles would also wait for
a grant from the lease queue (another append): a different cycle, in a state that grows run by run.
etcd: lease grant -> keep-alive -> txn (put a key under the lease if it does not exist: a lock) ->
revoke (which deletes the key), each client on its own key.

Both are durable (etcd fsyncs its WAL; Lockstep fsyncs its SQLite WAL) and run on loopback. Clients are
threads spread over processes (Python's GIL), the same for both.

Usage: lease_cycles.py lockstep HOST:PORT CLIENTS SECONDS STUBS_DIR
       lease_cycles.py etcd HOST:PORT CLIENTS SECONDS STUBS_DIR
Each client is timed from the end of its own set-up. Prints one JSON object: {"cycles", "seconds",
"rate" (the sum of the clients' rates), "errors", "wall_seconds"}.
"""
import json
import multiprocessing
import sys
import threading
import time

THREADS_PER_PROCESS = 16
CHAIN_NODES = 100


def lockstep_plan(service):
    nodes = "\n".join(f"  - {{ id: s{i}, service: {service}, phase: custom, action: work{', needs: [s' + str(i - 1) + ']' if i else ''} }}"
                      for i in range(CHAIN_NODES))
    return f"name: chain-{service}\nservices:\n  {service}: {{ owners: [bench] }}\nnodes:\n{nodes}\n"


def lockstep_client(target, client, seconds, stubs, counts, index, run_token):
    sys.path.insert(0, stubs)
    import grpc
    from lockstep.v1 import agent_pb2, agent_pb2_grpc
    channel = grpc.insecure_channel(target)
    agents = agent_pb2_grpc.AgentServiceStub(channel)
    migrations = agent_pb2_grpc.MigrationServiceStub(channel)
    service = f"bench{client}-{run_token}"
    migrations.ApplyPlan(agent_pb2.ApplyPlanRequest(plan_yaml=lockstep_plan(service)))
    run = 0
    prefix = f"{service}-{int(time.time() * 1000)}"
    migrations.StartMigration(agent_pb2.StartMigrationRequest(plan=f"chain-{service}", migration_id=f"{prefix}-{run}"))
    cycles = errors = 0
    # Timed from here: set-up (the plan, the first migration) is not part of a cycle.
    began = time.time()
    deadline = began + seconds
    while time.time() < deadline:
        polled = agents.Poll(agent_pb2.PollRequest(service=service, agent_id=f"agent-{client}", wait_ms=1000))
        if not polled.HasField("step"):
            errors += 1  # should not happen: every client has its own service and a next step
            continue
        step = polled.step
        try:
            agents.Heartbeat(agent_pb2.HeartbeatRequest(lease_id=step.lease_id, fencing_token=step.fencing_token))
            agents.Complete(agent_pb2.CompleteRequest(lease_id=step.lease_id, fencing_token=step.fencing_token))
            cycles += 1
            if step.node_id == f"s{CHAIN_NODES - 1}":
                # The chain is done: start the next run of it now, so the next poll finds a step.
                run += 1
                migrations.StartMigration(agent_pb2.StartMigrationRequest(plan=f"chain-{service}", migration_id=f"{prefix}-{run}"))
        except grpc.RpcError:
            errors += 1
    counts[index] = (cycles, errors, time.time() - began)
    channel.close()


def etcd_client(target, client, seconds, stubs, counts, index, run_token):
    sys.path.insert(0, stubs)
    import grpc
    import etcd_min_pb2 as pb
    import etcd_min_pb2_grpc as rpc
    channel = grpc.insecure_channel(target)
    leases = rpc.LeaseStub(channel)
    kv = rpc.KVStub(channel)
    key = f"/bench/lock/{client}".encode()
    cycles = errors = 0
    began = time.time()
    deadline = began + seconds
    while time.time() < deadline:
        try:
            granted = leases.LeaseGrant(pb.LeaseGrantRequest(TTL=30))
            # One keep-alive round trip on the bidirectional stream.
            answers = leases.LeaseKeepAlive(iter([pb.LeaseKeepAliveRequest(ID=granted.ID)]))
            next(answers)
            answers.cancel()
            claim = pb.Compare(result=pb.Compare.EQUAL, target=pb.Compare.CREATE, key=key, create_revision=0)
            put = pb.RequestOp(request_put=pb.PutRequest(key=key, value=b"held", lease=granted.ID))
            if not kv.Txn(pb.TxnRequest(compare=[claim], success=[put])).succeeded:
                errors += 1
            leases.LeaseRevoke(pb.LeaseRevokeRequest(ID=granted.ID))
            cycles += 1
        except grpc.RpcError:
            errors += 1
    counts[index] = (cycles, errors, time.time() - began)
    channel.close()


def process(kind, target, first, clients, seconds, stubs, queue, run_token):
    counts = [(0, 0, 1.0)] * clients
    body = lockstep_client if kind == "lockstep" else etcd_client
    threads = [threading.Thread(target=body, args=(target, first + i, seconds, stubs, counts, i, run_token)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Each client's rate over its own timed window; the sum is the throughput of all of them at once.
    queue.put((sum(c for c, _, _ in counts), sum(e for _, e, _ in counts), sum(c / w for c, _, w in counts if w > 0)))


def main():
    kind, target, clients, seconds, stubs = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
    queue = multiprocessing.Queue()
    started = time.time()
    # This run's services: bench<N>-<token>, the run's start in tenths of a second (6 hex digits, unique
    # for 19 days), so the names stay within 15 bytes as before (Swift keeps such strings inline: the
    # figures stay comparable with earlier runs).
    run_token = f"{int(started * 10) % 16 ** 6:06x}"
    workers = []
    for first in range(0, clients, THREADS_PER_PROCESS):
        count = min(THREADS_PER_PROCESS, clients - first)
        worker = multiprocessing.Process(target=process, args=(kind, target, first, count, seconds, stubs, queue, run_token))
        worker.start()
        workers.append(worker)
    totals = [queue.get(timeout=seconds + 300) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)
    cycles, errors, rate = sum(t[0] for t in totals), sum(t[1] for t in totals), sum(t[2] for t in totals)
    print(json.dumps({"cycles": cycles, "seconds": seconds, "rate": rate, "errors": errors, "wall_seconds": time.time() - started}))


if __name__ == "__main__":
    main()
