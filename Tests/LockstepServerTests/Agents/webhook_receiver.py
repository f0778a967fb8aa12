#!/usr/bin/env python3
"""A webhook receiver for the end-to-end tests: checks each delivery's signature as docs/webhooks.md
tells receivers to, answers 500 to the first --fail-first requests (to see retries), and appends one
JSON line per request to --out: the headers, the body, whether the signature verified, the status sent.

    webhook_receiver.py --port-file F --out F --secret-file F [--fail-first N] [--down-file F]

While --down-file exists the receiver is down: it keeps its port bound (SO_REUSEADDR, SO_REUSEPORT)
but does not listen, so a delivery is refused (ECONNREFUSED) and no other process's bind(0) is given the port
meanwhile; when the file is gone it listens again on the same port. A test that stopped the receiver
instead would free its port for the next test server on the machine to take. The port is written to
--port-file once, and "up" or "down" to --port-file.state after each change.
"""
import argparse
import hashlib
import hmac
import json
import os
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

parser = argparse.ArgumentParser()
parser.add_argument("--port-file", required=True)
parser.add_argument("--out", required=True)
parser.add_argument("--secret-file", required=True)
parser.add_argument("--fail-first", type=int, default=0)
parser.add_argument("--down-file")
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


def down_wanted():
    return args.down_file is not None and os.path.exists(args.down_file)


def publish(path, text):
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


def hold(port):
    """The port bound, not listening: connections to it are refused, and bind(0) elsewhere skips it.
    SO_REUSEPORT (ours alone: the tests' servers do not set it) lets the holder and the listener be bound
    at once, so the port is never free between the two."""
    held = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    held.bind(("127.0.0.1", port))
    return held


class Server(ThreadingHTTPServer):
    def server_bind(self):
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()


def serve(port):
    server = Server(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


held, server = (hold(0), None) if down_wanted() else (None, serve(0))
port = (held.getsockname() if held else server.server_address)[1]
publish(args.port_file, str(port))
published = None
while True:
    state = "down" if held else "up"
    if state != published:
        publish(args.port_file + ".state", state)
        published = state
    time.sleep(0.02)
    # The new socket is bound before the old one is closed: the port is never without one of them.
    if server and down_wanted():
        held = hold(port)
        server.shutdown()
        server.server_close()
        server = None
    elif held and not down_wanted():
        server = serve(port)
        held.close()
        held = None
