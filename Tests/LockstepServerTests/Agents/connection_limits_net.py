#!/usr/bin/env python3
"""What connection_limits.py's checks are made of: a socket to a listener (TLS with ALPN when `TLS_CA`
is set, by `connection_limits.py --tls`), a close awaited within a bound, /healthz on a held connection,
JSON POSTs and /metrics figures, an h2c POST through the `h2` package, and a migration with a history
to watch.
"""
import json
import select
import socket
import time
import urllib.request

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
EMPTY_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


# With --tls CA: the JSON listener speaks TLS; connections negotiate ALPN (h2 for HTTP/2 checks).
TLS_CA = None


def connect(address, alpn="http/1.1"):
    host, port = address.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=5)
    if TLS_CA is None:
        return sock
    import ssl
    context = ssl.create_default_context(cafile=TLS_CA)
    context.set_alpn_protocols([alpn])
    return context.wrap_socket(sock, server_hostname=host)


def refused_at_once(address):
    """Whether a new connection is closed at once (refused), counting a failed TLS handshake as that."""
    try:
        sock = connect(address)
    except OSError:
        return True
    try:
        return closed_within(sock, 2) is not None
    except OSError:
        return True
    finally:
        sock.close()


def closed_within(sock, seconds):
    """Seconds until the server closed `sock` (reading and dropping what it sends), or None."""
    began = time.monotonic()
    while time.monotonic() - began < seconds:
        ready, _, _ = select.select([sock], [], [], 0.1)
        if not ready:
            continue
        try:
            if sock.recv(65536) == b"":
                return time.monotonic() - began
        except (ConnectionResetError, BrokenPipeError):
            return time.monotonic() - began
    return None


def healthz(sock):
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
    answer = b""
    deadline = time.monotonic() + 5
    while b"ok\n" not in answer and time.monotonic() < deadline:
        chunk = sock.recv(4096)
        if not chunk:
            break
        answer += chunk
    return answer.startswith(b"HTTP/1.1 200")


def post(http, path, body):
    request = urllib.request.Request(f"http://{http}{path}", data=json.dumps(body).encode(),
                                     headers={"content-type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read() or b"{}")


def metric(http, name):
    with urllib.request.urlopen(f"http://{http}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def h2_post(http, path, body, window=None, send=True):
    """A new h2c connection with one POST of JSON `body` on stream 1 (sent unless `send` is False);
    `window` sets the client's initial stream window (a reader that then never opens it further)."""
    import h2.config
    import h2.connection
    import h2.settings

    sock = connect(http, alpn="h2")
    conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    if window is not None:
        conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
    data = json.dumps(body).encode()
    conn.send_headers(1, [(":method", "POST"), (":path", path), (":scheme", "https" if TLS_CA else "http"), (":authority", http),
                          ("content-type", "application/json"), ("content-length", str(len(data)))])
    conn.send_data(1, data, end_stream=True)
    if send:
        sock.sendall(conn.data_to_send())
    return sock, conn


PLAN = """name: stall
services:
  orders: { owners: [orders-team] }
nodes:
  - id: only
    service: orders
    phase: expand
    action: noop
"""


def make_history(http, migration, events):
    post(http, "/v1/plans", {"plan_yaml": PLAN})
    post(http, "/v1/migrations", {"plan": "stall", "migration_id": migration})
    step = post(http, "/v1/agent/poll", {"service": "orders", "agent_id": "a1", "wait_ms": 5000})["step"]
    for i in range(events):
        post(http, "/v1/agent/progress", {"lease_id": step["lease_id"], "fencing_token": step["fencing_token"],
                                            "percent": i % 100, "message": "m" * 400})


def wait_for_metric(http, name, value, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if metric(http, name) == value:
            return True
        time.sleep(0.05)
    return False
