#!/usr/bin/env python3
"""POSTs a body of SIZE spaces as application/json over h2c, sent as the flow-control windows allow.

Usage: python3 h2_post_large.py HOST:PORT PATH SIZE [--trickle]

--trickle sends one byte every 0.2 s instead (a body that never ends in time).

Prints one JSON line: {"status", "grpc_status", "body", "ended", "reset_code", "sent"}: what the server answered on
stream 1, whether its answer ended the stream, the RST_STREAM code that followed (or null), and how many
body bytes the client got to send. (curl 7.88 reports a reset that follows a complete answer as an
error, so the tests ask this client instead.)
"""
import json
import select
import socket
import sys
import time

import h2.config
import h2.connection
import h2.events


def main(argv):
    authority, path, total = argv[1], argv[2], int(argv[3])
    trickle = "--trickle" in argv[4:]
    host, port = authority.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=10)
    conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    conn.send_headers(1, [(":method", "POST"), (":path", path), (":scheme", "http"), (":authority", authority),
                          ("content-type", "application/json"), ("content-length", str(total))])
    sock.sendall(conn.data_to_send())
    seen = {"status": None, "grpc_status": None, "body": "", "ended": False, "reset_code": None, "sent": 0}
    began = time.monotonic()
    while time.monotonic() - began < 20 and seen["reset_code"] is None:
        if seen["sent"] < total and not seen["ended"]:
            window = min(conn.local_flow_control_window(1), conn.max_outbound_frame_size, total - seen["sent"])
            if trickle:
                window = min(window, 1)
                time.sleep(0.2)
            if window > 0:
                conn.send_data(1, b" " * window, end_stream=seen["sent"] + window == total)
                seen["sent"] += window
                sock.sendall(conn.data_to_send())
        readable, _, _ = select.select([sock], [], [], 0.05)
        if not readable:
            if seen["ended"] and seen["sent"] == total:
                break
            continue
        data = sock.recv(65536)
        if not data:
            break
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived):
                fields = dict(event.headers)
                seen["status"] = fields.get(b":status", b"").decode()
                seen["grpc_status"] = fields[b"grpc-status"].decode() if b"grpc-status" in fields else None
            elif isinstance(event, h2.events.DataReceived):
                seen["body"] += event.data.decode("utf-8", "replace")
                conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                seen["ended"] = True
            elif isinstance(event, h2.events.StreamReset):
                seen["reset_code"] = event.error_code
        out = conn.data_to_send()
        if out:
            sock.sendall(out)
    sock.close()
    print(json.dumps(seen))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
