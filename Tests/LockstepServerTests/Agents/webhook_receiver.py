#!/usr/bin/env python3
"""A webhook receiver for the end-to-end tests: checks each delivery's signature as docs/webhooks.md
tells receivers to, answers 500 to the first --fail-first requests (to see retries), and appends one
JSON line per request to --out: the headers, the body, whether the signature verified, the status sent.

    webhook_receiver.py --port-file F --out F --secret-file F [--fail-first N] [--port P]
"""
import argparse
import hashlib
import hmac
import json
import os
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

parser = argparse.ArgumentParser()
parser.add_argument("--port-file", required=True)
parser.add_argument("--out", required=True)
parser.add_argument("--secret-file", required=True)
parser.add_argument("--fail-first", type=int, default=0)
parser.add_argument("--port", type=int, default=0)
args = parser.parse_args()
secret = open(args.secret_file, "rb").read().rstrip(b"\r\n")
seen = {"requests": 0}


def verify(headers, body):
    """The verification snippet of docs/webhooks.md."""
    timestamp = headers.get("Lockstep-Timestamp", "")
    signature = headers.get("Lockstep-Signature", "")
    if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > 300:
        return False
    expected = "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature)


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        seen["requests"] += 1
        status = 500 if seen["requests"] <= args.fail_first else 204
        record = {
            "delivery": self.headers.get("Lockstep-Delivery"),
            "event": self.headers.get("Lockstep-Event"),
            "attempt": self.headers.get("Lockstep-Attempt"),
            "verified": verify(self.headers, body),
            "status": status,
            "body": json.loads(body) if body else None,
        }
        with open(args.out, "a") as out:
            out.write(json.dumps(record, sort_keys=True) + "\n")
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_):
        pass


server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
with open(args.port_file + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
os.replace(args.port_file + ".tmp", args.port_file)
server.serve_forever()
