#!/usr/bin/env python3
"""A hostile webhook receiver for WebhookHostileReceiverTests: one port, a behaviour per path, each
request's path appended as a line to --out.

    webhook_hostile.py --port-file F --out F

/hang    reads the request and never answers (the connection stays open)
/gone    410 Gone (a refusal for good)
/moved   301 to /target (a redirect, which the server must not follow)
/huge    200 with a Content-Length of 1 GiB, whose body is trickled and never finished
/target  204 (only a followed redirect would reach it)
"""
import argparse
import os
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

parser = argparse.ArgumentParser()
parser.add_argument("--port-file", required=True)
parser.add_argument("--out", required=True)
args = parser.parse_args()
lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *_):
        pass

    def do_POST(self):
        length = int(self.headers.get("content-length", "0"))
        self.rfile.read(length)
        with lock, open(args.out, "a") as out:
            out.write(self.path + "\n")
        if self.path.startswith("/hang"):
            time.sleep(600)
        elif self.path.startswith("/gone"):
            self.send_response(410)
            self.send_header("content-length", "0")
            self.end_headers()
        elif self.path.startswith("/moved"):
            self.send_response(301)
            self.send_header("location", "/target")
            self.send_header("content-length", "0")
            self.end_headers()
        elif self.path.startswith("/huge"):
            self.send_response(200)
            self.send_header("content-length", str(1 << 30))
            self.end_headers()
            try:
                for _ in range(600):
                    self.wfile.write(b"x" * 1024)
                    self.wfile.flush()
                    time.sleep(1)
            except OSError:
                pass
        else:
            self.send_response(204)
            self.end_headers()


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
with open(args.port_file + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
os.rename(args.port_file + ".tmp", args.port_file)
server.serve_forever()
