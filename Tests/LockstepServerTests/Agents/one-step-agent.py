#!/usr/bin/env python3
"""A minimal agent written from docs/api.md alone (standard library only): polls once for SERVICE,
prints the lease it got, holds it for HOLD seconds without heartbeating, then reports completion and
prints the answer: `complete STATUS CODE MESSAGE`.

Usage: one-step-agent.py URL SERVICE AGENT_ID HOLD_SECONDS
"""
import json
import sys
import time
import urllib.error
import urllib.request

url, service, agent, hold = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])


def call(path, body):
    request = urllib.request.Request(url + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


status, body = call("/v1/agent/poll", {"service": service, "agent_id": agent, "wait_ms": 15000})
step = body.get("step")
if status != 200 or not step:
    print(f"no step {status} {body}", flush=True)
    sys.exit(3)
print(f"leased {step['lease_id']} {step['fencing_token']} ttl {step['ttl_ms']}", flush=True)
time.sleep(hold)
status, body = call("/v1/agent/complete", {"lease_id": step["lease_id"], "fencing_token": step["fencing_token"]})
print(f"complete {status} {body.get('code', '')} {body.get('message', '')}", flush=True)
