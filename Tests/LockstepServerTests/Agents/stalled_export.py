#!/usr/bin/env python3
"""stalled_export.py URL MARKER [CA]: asks for the whole history as NDJSON over HTTP/1.1 (over TLS, ALPN
http/1.1, trusting CA, when URL is https) with a receive buffer of 4 KiB set before connecting (a small TCP
window), writes MARKER once the response's status line arrives, then reads nothing more and holds the
connection until it is closed or 120 s pass."""
import socket
import ssl
import sys
import time

url = sys.argv[1]
host, port = url.split("://", 1)[1].rsplit(":", 1)
sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
sock.connect((host, int(port)))
if url.startswith("https://"):
    context = ssl.create_default_context(cafile=sys.argv[3])
    context.set_alpn_protocols(["http/1.1"])
    sock = context.wrap_socket(sock, server_hostname=host)
body = b'{"after_sequence": "0"}'
sock.sendall(b"POST /v1/history/export HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n"
             b"content-length: %d\r\n\r\n" % len(body) + body)
sock.settimeout(120)
head = b""
while b"\r\n" not in head:
    chunk = sock.recv(64)
    if not chunk:
        sys.exit("closed before the response began")
    head += chunk
if not head.startswith(b"HTTP/1.1 200"):
    sys.exit(f"answered {head[:80]!r}")
open(sys.argv[2], "w").write("open\n")
# Nothing more is read: the server's writes fill the window and its socket buffer. The process is
# killed by the test; 120 s bound it otherwise.
time.sleep(120)
