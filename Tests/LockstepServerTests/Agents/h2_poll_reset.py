#!/usr/bin/env python3
"""A JSON poll over h2c whose stream the client resets while the connection stays open.

Usage: python3 h2_poll_reset.py HOST:PORT RESET_AFTER_SECONDS

Opens one connection, POSTs /v1/agent/poll (wait_ms 60000) on stream 1, resets stream 1 with CANCEL
after RESET_AFTER_SECONDS, waits 3 s more on the same connection, then GETs /healthz on stream 3 and
prints one JSON line: {"poll_answered": bool, "healthz": status or null, "goaway": bool}.
"""
import json
import socket
import sys
import time

import h2.config
import h2.connection
import h2.events


def main(argv):
    host, port = argv[1].rsplit(":", 1)
    reset_after = float(argv[2])
    sock = socket.create_connection((host, int(port)), timeout=10)
    conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    body = b'{"service": "orders", "agent_id": "reset-1", "wait_ms": 60000}'
    conn.send_headers(1, [(":method", "POST"), (":path", "/v1/agent/poll"), (":scheme", "http"), (":authority", argv[1]),
                          ("content-type", "application/json"), ("content-length", str(len(body)))])
    conn.send_data(1, body, end_stream=True)
    sock.sendall(conn.data_to_send())
    seen = {"poll_answered": False, "healthz": None, "goaway": False}

    def pump(seconds):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = sock.recv(65536)
            except socket.timeout:
                return
            if not data:
                seen["goaway"] = True
                return
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    status = dict(event.headers).get(b":status", b"").decode()
                    if event.stream_id == 1:
                        seen["poll_answered"] = True
                    else:
                        seen["healthz"] = status
                elif isinstance(event, h2.events.ConnectionTerminated):
                    seen["goaway"] = True
            out = conn.data_to_send()
            if out:
                sock.sendall(out)
            if seen["healthz"] is not None:
                return

    pump(reset_after)
    conn.reset_stream(1, error_code=8)  # CANCEL
    sock.sendall(conn.data_to_send())
    pump(3)
    conn.send_headers(3, [(":method", "GET"), (":path", "/healthz"), (":scheme", "http"), (":authority", argv[1])], end_stream=True)
    sock.sendall(conn.data_to_send())
    pump(10)
    print(json.dumps(seen))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
