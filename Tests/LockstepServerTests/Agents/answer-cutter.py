#!/usr/bin/env python3
"""A TCP proxy in front of a Lockstep server that loses the answer to the first gRPC call, for CLIEndToEndTests.

Usage: answer-cutter.py LISTEN_PORT TARGET_PORT [METHOD[#N] [reset-after=K]]

Forwards every connection to 127.0.0.1:TARGET_PORT frame by frame. The first request stream a client opens
(its HEADERS frame; with METHOD, the first whose :path ends in /METHOD, e.g. Complete; with #N, the Nth
such) is passed on whole; the server's frames on that stream are read and dropped until it
ends the stream (its trailers: the call was carried out and answered), and then both sides are closed:
the client sees its connection lost with the call in fact done. Later connections pass through. Prints
"ready" once it listens, and "cut N bytes" (the answer's DATA dropped) when it has cut.

With reset-after=K the cut call's first K DATA frames (a stream's first K messages) are passed on, and
then the stream alone is reset towards the client (RST_STREAM, CANCEL; the server's further frames on it
are dropped): the connection and its other calls go on.
"""
import socket
import socketserver
import sys
import threading

import hpack

listen_port, target_port = int(sys.argv[1]), int(sys.argv[2])
method, _, nth = (sys.argv[3] if len(sys.argv) > 3 else "").partition("#")
nth = int(nth or "1")
reset_after = int(sys.argv[4].partition("=")[2]) if len(sys.argv) > 4 else None
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, CONTINUATION, END_STREAM, END_HEADERS, PADDED, PRIORITY = 0, 1, 9, 0x1, 0x4, 0x8, 0x20
state = {"cut": None, "seen": 0}  # cut: (connection, stream) of the call whose answer is lost, set once (never cleared)
lock = threading.Lock()


def frames(sock, prefix=b""):
    """Yields the raw bytes of each whole frame read from sock (after `prefix`, which is passed as is)."""
    buffer = b""
    if prefix:
        while len(buffer) < len(prefix):
            chunk = sock.recv(65536)
            if not chunk:
                return
            buffer += chunk
        yield buffer[: len(prefix)]
        buffer = buffer[len(prefix):]
    while True:
        while len(buffer) >= 9 and len(buffer) >= 9 + int.from_bytes(buffer[0:3], "big"):
            size = 9 + int.from_bytes(buffer[0:3], "big")
            yield buffer[:size]
            buffer = buffer[size:]
        chunk = sock.recv(65536)
        if not chunk:
            return
        buffer += chunk


def close(pair):
    for side in pair:
        try:
            side.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        side.close()


def block_fragment(frame):
    """The header block fragment of a HEADERS or CONTINUATION frame (padding and priority removed)."""
    flags, payload = frame[4], frame[9:]
    if frame[3] == HEADERS:
        pad = payload[0] if flags & PADDED else 0
        payload = payload[1:] if flags & PADDED else payload
        payload = payload[5:] if flags & PRIORITY else payload
        payload = payload[: len(payload) - pad]
    return payload


def upstream(client, server, pair):
    decoder, block, stream = hpack.Decoder(), b"", 0
    try:
        for frame in frames(client, PREFACE):
            if len(frame) >= 9 and frame[3] in (HEADERS, CONTINUATION):
                if frame[3] == HEADERS:
                    block, stream = b"", int.from_bytes(frame[5:9], "big") & 0x7FFFFFFF
                block += block_fragment(frame)
                if frame[4] & END_HEADERS:
                    # Every block is decoded, in order, to keep the connection's HPACK table in step.
                    path = dict(decoder.decode(block)).get(":path", "")
                    with lock:
                        if state["cut"] is None and (not method or path.endswith("/" + method)):
                            state["seen"] += 1
                            if state["seen"] == nth:
                                state["cut"] = (pair, stream)
            server.sendall(frame)
    except OSError:
        pass


def downstream(server, client, pair):
    global reset_after
    dropped = 0
    try:
        for frame in frames(server):
            stream = int.from_bytes(frame[5:9], "big") & 0x7FFFFFFF
            with lock:
                cut = state["cut"] is not None and state["cut"][0] is pair and state["cut"][1] == stream
            if cut and reset_after is not None:
                if frame[3] == DATA and reset_after > 0:
                    reset_after -= 1
                    client.sendall(frame)
                elif reset_after == 0:
                    reset_after = -1
                    rst = (4).to_bytes(3, "big") + bytes([3, 0]) + stream.to_bytes(4, "big") + (8).to_bytes(4, "big")
                    client.sendall(rst)
                    print("reset", flush=True)
                elif reset_after > 0:
                    client.sendall(frame)
                continue
            if cut:
                dropped += len(frame) - 9 if frame[3] == DATA else 0
                if frame[4] & END_STREAM:
                    print(f"cut {dropped} bytes", flush=True)
                    break
                continue
            client.sendall(frame)
    except OSError:
        pass
    close(pair)


class Proxy(socketserver.BaseRequestHandler):
    def handle(self):
        server = socket.create_connection(("127.0.0.1", target_port))
        pair = (self.request, server)
        down = threading.Thread(target=downstream, args=(server, self.request, pair), daemon=True)
        down.start()
        upstream(self.request, server, pair)
        down.join()


socketserver.ThreadingTCPServer.allow_reuse_address = True
socketserver.ThreadingTCPServer.daemon_threads = True
with socketserver.ThreadingTCPServer(("127.0.0.1", listen_port), Proxy) as proxy:
    print("ready", flush=True)
    proxy.serve_forever()
