#!/usr/bin/env python3
"""stalled_watch.py HOST:PORT MIGRATION MARKER: opens a JSON watch of MIGRATION over h2c with a flow-control
window of 0 (the server may send no DATA), answers nothing (not even PINGs), writes MARKER once the
response's HEADERS arrive, then holds the connection until it is closed or 120 s pass."""
import json
import socket
import sys
import time

import h2.config
import h2.connection
import h2.settings

host, port = sys.argv[1].rsplit(":", 1)
sock = socket.create_connection((host, int(port)))
conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
conn.initiate_connection()
conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
conn.send_headers(1, [(":method", "POST"), (":path", "/v1/migrations/watch"), (":scheme", "http"), (":authority", "localhost"),
                      ("content-type", "application/json")])
conn.send_data(1, json.dumps({"migration_id": sys.argv[2]}).encode(), end_stream=True)
sock.sendall(conn.data_to_send())
sock.settimeout(120)
deadline = time.monotonic() + 120
received = b""
marked = False
try:
    # Frames are read by hand, never fed to the h2 state machine: the window stays shut and PINGs go
    # unanswered. The marker is written once the response's HEADERS arrive (the watch is open).
    while time.monotonic() < deadline:
        chunk = sock.recv(65536)
        if not chunk:
            break
        received += chunk
        while not marked and len(received) >= 9:
            length = int.from_bytes(received[0:3], "big")
            if len(received) < 9 + length:
                break
            kind, stream = received[3], int.from_bytes(received[5:9], "big") & 0x7FFFFFFF
            received = received[9 + length:]
            if kind == 0x1 and stream == 1:
                open(sys.argv[3], "w").write("open\n")
                marked = True
except OSError:
    pass
print("closed" if marked else "closed before the watch opened")
