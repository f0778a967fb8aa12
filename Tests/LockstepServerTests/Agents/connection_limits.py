#!/usr/bin/env python3
"""Bounded resources per client, against a real `lockstep serve --dev` on loopback (issue 14).

Usage: connection_limits.py HTTP_HOST:PORT GRPC_HOST:PORT --per-peer N --idle-ms I --body-ms B --stall-ms S

Each check prints `ok: ...` with its figure, or raises (exit 1). Every wait is bounded. Needs the `h2`
package (PyPI) for the HTTP/2 checks and `grpcio` for the gRPC watch check.
"""
import argparse
import json
import select
import socket
import sys
import time

import connection_limits_net as net
from connection_limits_net import (EMPTY_SETTINGS, PREFACE, closed_within, connect, h2_post, healthz, make_history, metric, post,
                                   refused_at_once, wait_for_metric)


def check_idle(http, grpc, idle):
    bound = idle + 2.0
    sock = connect(http)
    assert healthz(sock), "healthz over a fresh connection"
    took = closed_within(sock, bound)
    assert took is not None, f"an idle HTTP/1.1 keep-alive stayed open past {bound} s"
    print(f"ok: idle HTTP/1.1 keep-alive closed after {took:.1f} s (idle limit {idle} s)")

    sock = connect(http)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")
    began = time.monotonic()
    closed = None
    while time.monotonic() - began < bound + 2:
        try:
            sock.sendall(b"X-Slow: a\r\n")
        except (BrokenPipeError, ConnectionResetError):
            closed = time.monotonic() - began
            break
        took = closed_within(sock, 0.3)
        if took is not None:
            closed = time.monotonic() - began
            break
    assert closed is not None, f"a request head sent one line every 0.3 s stayed open past {bound + 2} s"
    print(f"ok: a request head trickled in line by line was cut after {closed:.1f} s")

    sock = connect(http)
    took = closed_within(sock, bound)
    assert took is not None, "a connection that sends nothing stayed open"
    print(f"ok: a connection that sends nothing closed after {took:.1f} s")

    # HTTP/2: GOAWAY at the idle limit; a client that then neither acknowledges nor closes (this one
    # reads and ignores everything) is closed outright 5 s later.
    for name, address in (("h2c", http), ("gRPC", grpc)):
        sock = connect(address)
        sock.sendall(PREFACE + EMPTY_SETTINGS)
        took = closed_within(sock, bound + 5)
        assert took is not None, f"an idle {name} connection stayed open past {bound + 5} s"
        print(f"ok: an idle {name} connection closed after {took:.1f} s")


def check_busy_connections_stay(http, grpc_address, migration, idle):
    """Connections with an open stream are not idle: a parked h2c watch and a parked gRPC watch outlive
    the idle limit and its 5 s backstop. (The watched migration waits for a service another holds, so
    it does not settle meanwhile, which would end the watches.)"""
    import grpc
    import h2.config
    import h2.connection
    import h2.events

    post(http, "/v1/migrations", {"plan": "stall", "migration_id": migration})

    sock, conn = h2_post(http, "/v1/migrations/watch", {"migration_id": migration, "after_sequence": "1000000"})
    raw = migration.encode()
    request = b"\x0a" + bytes([len(raw)]) + raw + b"\x10\xc0\x84\x3d"  # after_sequence 1,000,000
    channel = grpc.insecure_channel(grpc_address)
    call = channel.unary_stream("/lockstep.v1.MigrationService/Watch", request_serializer=None, response_deserializer=None)(request, timeout=60)
    wait = idle + 7
    ended = None
    received = b""
    began = time.monotonic()
    while time.monotonic() - began < wait and ended is None:
        readable, _, _ = select.select([sock], [], [], 0.2)
        if readable:
            data = sock.recv(65536)
            if not data:
                ended = "h2c connection closed"
                break
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.DataReceived):
                    received += event.data
                if isinstance(event, (h2.events.StreamReset, h2.events.StreamEnded, h2.events.ConnectionTerminated)):
                    ended = f"h2c: {type(event).__name__} after {time.monotonic() - began:.1f} s ({received[:200]!r})"
            outgoing = conn.data_to_send()
            if outgoing:
                sock.sendall(outgoing)
        if call.done():
            ended = f"gRPC watch ended: {call.code()}"
    assert ended is None, f"a connection with an open stream was closed as idle: {ended}"
    call.cancel()
    channel.close()
    sock.close()
    print(f"ok: a parked h2c watch and a parked gRPC watch are still open after {wait:.1f} s (idle limit {idle} s)")


def check_body_timeout(http, body_seconds):
    sock = connect(http)
    sock.sendall(b"POST /v1/plans/list HTTP/1.1\r\nHost: localhost\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{")
    began = time.monotonic()
    answer = b""
    while time.monotonic() - began < body_seconds + 3 and b"request_timeout" not in answer:
        try:
            sock.sendall(b" ")
        except (BrokenPipeError, ConnectionResetError):
            break
        ready, _, _ = select.select([sock], [], [], 0.2)
        if ready:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    took = time.monotonic() - began
    assert answer.startswith(b"HTTP/1.1 408") and b"request_timeout" in answer, f"a trickled body got {answer[:200]!r}"
    print(f"ok: a body trickled one byte per 0.2 s was refused 408 request_timeout after {took:.1f} s (limit {body_seconds} s)")


def check_per_peer(http, grpc, per_peer):
    held = []
    for _ in range(per_peer):
        sock = connect(http)
        assert healthz(sock), "a connection within the per-peer limit is served"
        held.append(sock)
    for name, address in (("HTTP", http), ("gRPC", grpc)):
        extra = connect(address)
        took = closed_within(extra, 3)
        assert took is not None, f"connection {per_peer + 1} on the {name} listener was not refused"
        print(f"ok: connection {per_peer + 1} from one address refused on the {name} listener after {took:.2f} s")
    assert healthz(held[-1]), "connections within the limit keep working"
    held.pop().close()
    time.sleep(0.5)
    again = connect(http)
    assert healthz(again), "a connection is admitted again once one closed"
    print(f"ok: {per_peer} connections served, the next refused, admitted again after one closed")
    again.close()
    for sock in held:
        sock.close()
    time.sleep(0.5)
    refused = metric(http, "lockstep_connections_refused_total")
    assert refused >= 2, f"lockstep_connections_refused_total is {refused}"
    print(f"ok: lockstep_connections_refused_total = {refused:g}")


def check_stalled_watch(http, migration, stall_seconds):
    import h2.config
    import h2.connection
    import h2.events
    import h2.settings

    # A reader that takes 1 KiB and then nothing: no WINDOW_UPDATE is ever sent.
    sock, conn = h2_post(http, "/v1/migrations/watch", {"migration_id": migration}, window=1024)
    began = time.monotonic()
    received = 0
    reset = None
    while time.monotonic() - began < stall_seconds + 5 and reset is None:
        ready, _, _ = select.select([sock], [], [], 0.2)
        if not ready:
            continue
        data = sock.recv(65536)
        if not data:
            reset = "connection closed"
            break
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.DataReceived):
                received += len(event.data)
            elif isinstance(event, h2.events.StreamReset):
                reset = f"RST_STREAM {event.error_code!r}"
            elif isinstance(event, h2.events.StreamEnded):
                reset = "stream ended normally"
        outgoing = conn.data_to_send()
        if outgoing:
            sock.sendall(outgoing)
    took = time.monotonic() - began
    assert reset is not None and reset != "stream ended normally", f"a stalled watch was not cut within {stall_seconds + 5} s ({reset})"
    print(f"ok: a watch whose reader took {received} bytes and then nothing was cut after {took:.1f} s: {reset}")
    sock.close()
    time.sleep(0.5)
    cut = metric(http, "lockstep_stalled_readers_cut_total")
    assert cut >= 1, f"lockstep_stalled_readers_cut_total is {cut}"
    print(f"ok: lockstep_stalled_readers_cut_total = {cut:g}")


def check_reset_polls_and_watches(http, migration):
    """Polls and watches whose client resets their stream (even in the same write as the request) or
    closes its HTTP/1 connection leave at once: the parked-poll and open-watch gauges drop to 0."""
    for what, path, body, gauge in (("poll", "/v1/agent/poll", {"service": "nobody", "agent_id": "a9", "wait_ms": 30000}, "lockstep_parked_polls"),
                                     ("watch", "/v1/migrations/watch", {"migration_id": migration, "after_sequence": "1000000"}, "lockstep_open_watches")):
        for same_write in (True, False):
            sock, conn = h2_post(http, path, body, send=False)
            if not same_write:
                sock.sendall(conn.data_to_send())
                assert wait_for_metric(http, gauge, 1, 5), f"the {what} never parked"
            conn.reset_stream(1)
            sock.sendall(conn.data_to_send())
            began = time.monotonic()
            # The gauge is sampled every 50 ms; a poll or watch still parked would hold it at 1 for 30 s.
            time.sleep(0.3)
            assert wait_for_metric(http, gauge, 0, 2), f"a {what} whose stream was reset stayed parked"
            print(f"ok: a {what} reset {'in the same write as its request' if same_write else 'while parked'} left within {time.monotonic() - began:.2f} s")
            sock.close()
    # HTTP/1.1: the client sends its poll and closes its side.
    sock = connect(http)
    body = json.dumps({"service": "nobody", "agent_id": "a9", "wait_ms": 30000}).encode()
    sock.sendall(b"POST /v1/agent/poll HTTP/1.1\r\nHost: localhost\r\ncontent-type: application/json\r\ncontent-length: "
                 + str(len(body)).encode() + b"\r\n\r\n" + body)
    assert wait_for_metric(http, "lockstep_parked_polls", 1, 5), "the HTTP/1.1 poll never parked"
    sock.shutdown(socket.SHUT_WR)
    assert wait_for_metric(http, "lockstep_parked_polls", 0, 2), "an HTTP/1.1 poll whose client closed stayed parked"
    sock.close()
    print("ok: an HTTP/1.1 poll whose client closed its side left at once")


def check_refused_body_is_not_read(http):
    """A body over the 1 MiB limit is answered 413 and then not read on: HTTP/1.1 closes the connection,
    HTTP/2 resets the stream (the landed build read all 16 MiB over HTTP/1.1, all 8 MiB over HTTP/2)."""
    total = 16 * 1024 * 1024
    sock = connect(http)
    sock.sendall(b"POST /v1/plans HTTP/1.1\r\nHost: localhost\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % total)
    sock.setblocking(False)
    sent, answer, closed = 0, b"", False
    began = time.monotonic()
    while sent < total and time.monotonic() - began < 20 and not closed:
        readable, writable, _ = select.select([sock], [sock], [], 0.5)
        if readable:
            try:
                chunk = sock.recv(65536)
                closed = not chunk
                answer += chunk
            except ConnectionResetError:
                closed = True
        if writable and not closed:
            try:
                sent += sock.send(b"x" * 65536)
            except (BrokenPipeError, ConnectionResetError):
                closed = True
    sock.close()
    assert answer.startswith(b"HTTP/1.1 413") and closed and sent < total, f"HTTP/1.1: {answer[:60]!r}, closed {closed}, sent {sent}"
    print(f"ok: HTTP/1.1: 413, then the connection closed after the client had sent {sent // 1024} KiB of a 16 MiB body")

    import h2.config
    import h2.connection
    import h2.events

    total = 8 * 1024 * 1024
    sock = connect(http)
    conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    conn.send_headers(1, [(":method", "POST"), (":path", "/v1/plans"), (":scheme", "http"), (":authority", http),
                          ("content-type", "application/json"), ("content-length", str(total))])
    sock.sendall(conn.data_to_send())
    sent, status, reset = 0, None, False
    began = time.monotonic()
    while time.monotonic() - began < 20 and not reset:
        window = min(conn.local_flow_control_window(1), conn.max_outbound_frame_size, total - sent) if sent < total else 0
        if window > 0:
            conn.send_data(1, b"x" * window)
            sent += window
            sock.sendall(conn.data_to_send())
        # Wait only when the window is spent: the body goes as fast as the server takes it (the server
        # under test also bounds the body's time, 1.5 s, which a client pausing per frame would exceed).
        readable, _, _ = select.select([sock], [], [], 0.05 if window == 0 else 0)
        if readable:
            data = sock.recv(65536)
            if not data:
                reset = True
                break
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    status = dict(event.headers).get(b":status")
                elif isinstance(event, (h2.events.StreamReset, h2.events.ConnectionTerminated)):
                    reset = True
            outgoing = conn.data_to_send()
            if outgoing:
                sock.sendall(outgoing)
    sock.close()
    assert status == b"413" and reset and sent < total, f"HTTP/2: status {status}, reset {reset}, sent {sent}"
    print(f"ok: HTTP/2: 413, then the stream was reset after the client had sent {sent // 1024} KiB of an 8 MiB body")


def check_open_file_limit(http, connections):
    """Under an open-file limit of 1,024 (soft and hard, so the server cannot raise it), CONNECTIONS idle
    connections from one client: the server admits what fits below the limit less its reserve, refuses
    the rest at once, and keeps answering (the landed build stopped answering, then died in libdispatch's
    worker monitor, in 8 of 22 rounds)."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < connections + 64 and hard > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, connections + 256), hard))
    held = []
    for _ in range(connections):
        try:
            held.append(connect(http))
        except OSError:
            break
    time.sleep(1.0)
    refused = 0
    for sock in held:
        sock.setblocking(False)
        try:
            if sock.recv(1) == b"":
                refused += 1
        except BlockingIOError:
            pass
        except (ConnectionResetError, OSError):
            refused += 1
    for sock in held:
        sock.close()
    time.sleep(1.0)
    sock = connect(http)
    sock.settimeout(5)
    assert healthz(sock), "the server stopped answering"
    sock.close()
    opened = len(held)
    assert opened > 768, f"this client could open only {opened} connections (its own open-file limit)"
    assert refused >= opened - 768, f"only {refused} of {opened} connections were refused under 1,024 open files"
    print(f"ok: {opened} connections under a 1,024 open-file limit: {opened - refused} admitted, {refused} refused, and the server answers")


def check_rapid_reset(http, budget):
    """Rapid reset across reconnections (CVE-2023-44487): a client that opens and resets streams, 100 per
    connection and reconnecting, is cut off once its address has reset `budget` streams in 10 s, refused
    for the rest of the window, and admitted again after it (the landed build limited resets per
    connection only, so reconnecting every 150 resets went on for as long as the attacker liked)."""
    import h2.config
    import h2.connection

    sent = 0
    cut = None
    began = time.monotonic()
    while time.monotonic() - began < 30 and cut is None:
        try:
            sock = connect(http, alpn="h2")
        except OSError:
            cut = sent  # refused during the TLS handshake
            break
        conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        try:
            sock.sendall(conn.data_to_send())
            for index in range(100):
                stream = 1 + 2 * index
                conn.send_headers(stream, [(":method", "GET"), (":path", "/healthz"), (":scheme", "https" if net.TLS_CA else "http"),
                                           (":authority", http)])
                conn.reset_stream(stream)
                sock.sendall(conn.data_to_send())
                sent += 1
            if closed_within(sock, 0.2) is not None and sent > budget:
                cut = sent
        except OSError:
            cut = sent
        sock.close()
    assert cut is not None and cut <= budget + 200, f"{sent} resets over {time.monotonic() - began:.0f} s were not cut off"
    refused_from = time.monotonic()
    assert refused_at_once(http), "a new connection from the address was admitted at once"
    print(f"ok: rapid reset{' over TLS' if net.TLS_CA else ''} cut off after {cut} resets from one address (budget {budget} in 10 s); "
          "new connections refused")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        served = False
        try:
            sock = connect(http)
            served = healthz(sock)
            sock.close()
        except OSError:
            pass
        if served:
            print(f"ok: the address was admitted again {time.monotonic() - refused_from:.1f} s later")
            return
        time.sleep(0.5)
    raise AssertionError("the address was never admitted again")


def check_grpc_watch_release(grpc_address, http, migration, cycles):
    import grpc

    def encode(mid):
        raw = mid.encode()
        return b"\x0a" + bytes([len(raw)]) + raw

    channel = grpc.insecure_channel(grpc_address)
    watch = channel.unary_stream("/lockstep.v1.MigrationService/Watch", request_serializer=None, response_deserializer=None)
    for cycle in range(cycles):
        call = watch(encode(migration), timeout=30)
        next(call)  # the first event arrives: the watch is open
        call.cancel()
    deadline = time.monotonic() + 5
    while metric(http, "lockstep_open_watches") > 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    open_watches = metric(http, "lockstep_open_watches")
    assert open_watches == 0, f"{open_watches} watches still open after {cycles} cancelled gRPC watches"
    # One more watch is admitted: the cancelled ones did not use up the principal's limit.
    call = watch(encode(migration), timeout=30)
    next(call)
    call.cancel()
    channel.close()
    print(f"ok: {cycles} gRPC watches opened and cancelled; none left open, and the next one is admitted")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("http")
    parser.add_argument("grpc")
    parser.add_argument("--per-peer", type=int, required=True)
    parser.add_argument("--idle-ms", type=int, required=True)
    parser.add_argument("--body-ms", type=int, required=True)
    parser.add_argument("--stall-ms", type=int, required=True)
    parser.add_argument("--watch-cycles", type=int, default=120)
    parser.add_argument("--resets", type=int, default=300, help="the server's --stream-resets-per-peer-max")
    parser.add_argument("--checks", default="streams,idle,per-peer,resets",
                        help="which checks: streams (stalled and cancelled watches, slow bodies), idle, per-peer (run it against a "
                             "server whose idle limit is long enough not to close the held connections meanwhile)")
    parser.add_argument("--tls", help="a CA file: the JSON listener speaks TLS (the resets check supports it)")
    args = parser.parse_args()
    net.TLS_CA = args.tls
    checks = set(args.checks.split(","))
    if "streams" in checks:
        make_history(args.http, "stall-1", 300)
        print("ok: 300 progress events recorded")
        check_stalled_watch(args.http, "stall-1", args.stall_ms / 1000)
        check_reset_polls_and_watches(args.http, "stall-1")
        check_grpc_watch_release(args.grpc, args.http, "stall-1", args.watch_cycles)
        check_body_timeout(args.http, args.body_ms / 1000)
        check_refused_body_is_not_read(args.http)
    if "idle" in checks:
        check_idle(args.http, args.grpc, args.idle_ms / 1000)
        if "streams" in checks:
            check_busy_connections_stay(args.http, args.grpc, "busy-1", args.idle_ms / 1000)
    if "per-peer" in checks:
        check_per_peer(args.http, args.grpc, args.per_peer)
    if "resets" in checks:
        check_rapid_reset(args.http, args.resets)
    if "files" in checks:
        check_open_file_limit(args.http, 1100)
    print("all checks passed")


if __name__ == "__main__":
    try:
        main()
    except AssertionError as failure:
        print(f"FAILED: {failure}", file=sys.stderr)
        sys.exit(1)
