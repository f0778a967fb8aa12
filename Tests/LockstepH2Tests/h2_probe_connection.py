#!/usr/bin/env python3
"""The raw HTTP/2 connection of h2_probe.py: frames built with hyperframe (so malformed sequences can
be sent deliberately), a header block with hpack or by hand, and a reader that records what the server
sent (GOAWAY, RST_STREAM, responses, SETTINGS, PING and WINDOW_UPDATE counts) until it closes or goes
silent. The cases, and what the probe prints, are in h2_probe.py.
"""

import os
import select
import socket
import time

import hpack
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    PushPromiseFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
CASE_DEADLINE = 10.0                                     # seconds per case
SILENCE = float(os.environ.get("H2_PROBE_SILENCE", "2.0"))  # idle read cutoff
ANSWER_WAIT = 8.0                                        # most seconds to wait for an answer we know is coming
MAX_FRAME = 16384                 # default SETTINGS_MAX_FRAME_SIZE (§6.5.2)

# Setting identifiers (RFC 9113 §6.5.2)
HEADER_TABLE_SIZE = 0x1
MAX_CONCURRENT_STREAMS = 0x3
INITIAL_WINDOW_SIZE = 0x4

# Error codes (RFC 9113 §7)
NO_ERROR = 0x0
CANCEL = 0x8


class ProbeError(Exception):
    """The probe itself could not carry out the case."""


class ProbeTimeout(Exception):
    """Raised by the SIGALRM guard if a case overruns its budget."""


def raw_frame(frame_cls, stream_id, payload, flags=()):
    """A hyperframe frame whose body is replaced by arbitrary bytes.

    hyperframe still writes the 9-byte header (length taken from `payload`),
    which lets us send bodies the frame class would normally refuse.
    """
    frame = frame_cls(stream_id, flags=flags)
    frame.serialize_body = lambda: payload
    return frame


def hpack_literal(name, value):
    """Literal header field without indexing, new name, no Huffman (RFC 7541
    §6.2.2). Built by hand so the name is sent exactly as given (hpack's
    encoder would lowercase it)."""
    name, value = name.encode(), value.encode()
    assert len(name) < 127 and len(value) < 127
    return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value


class Connection:
    """One TCP connection: sends frames, reads/handles frames, records
    observations."""

    def __init__(self, host, port, case):
        self.host, self.port = host, port
        self.deadline = time.monotonic() + CASE_DEADLINE
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self.decoder.max_header_list_size = 1 << 20
        self.inbuf = b""
        self.closed = False
        self.deaf = False             # set by a case: stop answering PINGs
        self.unacked_conn_bytes = 0   # DATA received since our last conn WINDOW_UPDATE
        self._block = None            # (kind, stream_id, bytearray) while a header block is open
        self.obs = {
            "case": case, "goaway": None, "closed": False, "rst": [],
            "responses": {}, "settings": None, "settings_acks": 0,
            "ping_acks": 0, "pings": 0, "window_updates": 0, "snapshot": None,
            "error": None,
        }
        self.sock = socket.create_connection((host, port), timeout=3.0)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(2.0)     # also makes send() non-blocking-ish

    # ---- helpers to build requests -------------------------------------
    def request_headers(self, method="GET", path="/echo", extra=()):
        return [(":method", method), (":scheme", "http"),
                (":authority", f"{self.host}:{self.port}"),
                (":path", path), *extra]

    def headers_frames(self, stream_id, block, end_stream=True):
        """HEADERS (+ CONTINUATION when the block exceeds MAX_FRAME)."""
        chunks = [block[i:i + MAX_FRAME] for i in range(0, len(block), MAX_FRAME)] or [b""]
        frames = []
        for i, chunk in enumerate(chunks):
            if i == 0:
                f = HeadersFrame(stream_id, data=chunk)
                if end_stream:
                    f.flags.add("END_STREAM")
            else:
                f = ContinuationFrame(stream_id, data=chunk)
            if i == len(chunks) - 1:
                f.flags.add("END_HEADERS")
            frames.append(f)
        return frames

    def get_frames(self, stream_id, path="/echo", extra=()):
        block = self.encoder.encode(self.request_headers("GET", path, extra))
        return self.headers_frames(stream_id, block, end_stream=True)

    # ---- I/O ---------------------------------------------------------------
    def remaining(self):
        return self.deadline - time.monotonic()

    def _recv_into_buffer(self):
        try:
            data = self.sock.recv(65536)
        except (socket.timeout, BlockingIOError, InterruptedError):
            return True
        except OSError:          # ECONNRESET and friends: the peer is gone
            data = b""
        if not data:
            self.closed = True
            return False
        self.inbuf += data
        return True

    def send(self, *items):
        """Send frames/bytes in order. Incoming bytes are buffered (not
        processed) while writing, so a server that writes while we write
        cannot deadlock us."""
        data = b"".join(i if isinstance(i, bytes) else i.serialize() for i in items)
        view = memoryview(data)
        while view and not self.closed:
            if self.remaining() <= 0:
                raise ProbeError("send timed out")
            r, w, _ = select.select([self.sock], [self.sock], [], min(1.0, self.remaining()))
            if r:
                self._recv_into_buffer()
            if w and not self.closed:
                try:
                    n = self.sock.send(view[:65536])
                except (socket.timeout, BlockingIOError, InterruptedError):
                    continue
                except OSError:  # EPIPE / ECONNRESET: server went away
                    self.closed = True
                    break
                view = view[n:]

    def _next_frame(self):
        if len(self.inbuf) < 9:
            return None
        frame, length = Frame.parse_frame_header(memoryview(self.inbuf[:9]))
        if len(self.inbuf) < 9 + length:
            return None
        frame.parse_body(memoryview(self.inbuf[9:9 + length]))
        self.inbuf = self.inbuf[9 + length:]
        return frame

    def pump(self, until=None, silence=SILENCE, eager=False):
        """Handle incoming frames until `until()` holds, the server closes,
        `silence` seconds pass with no input, or the case deadline passes.
        Returns True iff `until()` became true. `eager`: `until()` is asked
        after every frame, not only once the frames read so far are handled
        (for a case that answers what it reads, so reading never pauses)."""
        while True:
            while (frame := self._next_frame()) is not None:
                self.handle(frame)
                if eager and until is not None and until():
                    return True
            if until is not None and until():
                return True
            if self.closed or self.remaining() <= 0:
                return False
            r, _, _ = select.select([self.sock], [], [], min(silence, self.remaining()))
            if not r:
                return False
            self._recv_into_buffer()

    # ---- frame handling ----------------------------------------------------
    def response(self, stream_id):
        return self.obs["responses"].setdefault(str(stream_id), {
            "status": None, "headers": [], "body": b"", "trailers": [], "ended": False})

    def handle(self, f):
        if isinstance(f, SettingsFrame):
            if "ACK" in f.flags:
                self.obs["settings_acks"] += 1
                return
            if self.obs["settings"] is None:
                self.obs["settings"] = {str(k): v for k, v in f.settings.items()}
            if HEADER_TABLE_SIZE in f.settings:
                self.encoder.header_table_size = min(4096, f.settings[HEADER_TABLE_SIZE])
            self.send(SettingsFrame(0, flags=["ACK"]))
        elif isinstance(f, PingFrame):
            if "ACK" in f.flags:
                self.obs["ping_acks"] += 1
            else:
                self.obs["pings"] += 1
                if not self.deaf:
                    self.send(PingFrame(0, opaque_data=f.opaque_data, flags=["ACK"]))
        elif isinstance(f, WindowUpdateFrame):
            self.obs["window_updates"] += 1
        elif isinstance(f, GoAwayFrame):
            self.obs["goaway"] = {
                "error_code": f.error_code, "last_stream_id": f.last_stream_id,
                "debug": f.additional_data.decode("utf-8", "replace")}
        elif isinstance(f, RstStreamFrame):
            self.obs["rst"].append([f.stream_id, f.error_code])
        elif isinstance(f, (HeadersFrame, PushPromiseFrame)):
            kind = "push" if isinstance(f, PushPromiseFrame) else "headers"
            self._block = (kind, f.stream_id, bytearray(f.data))
            if "END_HEADERS" in f.flags:
                self._finish_block()
            if "END_STREAM" in f.flags:
                self.response(f.stream_id)["ended"] = True
        elif isinstance(f, ContinuationFrame):
            if self._block is None:
                raise ProbeError("server sent CONTINUATION without HEADERS")
            self._block[2].extend(f.data)
            if "END_HEADERS" in f.flags:
                self._finish_block()
        elif isinstance(f, DataFrame):
            resp = self.response(f.stream_id)
            resp["body"] += f.data
            if "END_STREAM" in f.flags:
                resp["ended"] = True
            # Replenish only the connection window, and only when it runs low,
            # so per-stream flow control stays under the case's control.
            self.unacked_conn_bytes += f.flow_controlled_length
            if self.unacked_conn_bytes > 32767:
                self.send(WindowUpdateFrame(0, window_increment=self.unacked_conn_bytes))
                self.unacked_conn_bytes = 0
        # PRIORITY, ALTSVC, extension frames: ignored.

    def _finish_block(self):
        kind, stream_id, block = self._block
        self._block = None
        try:
            # Always decode, even push promises, to keep HPACK state in sync.
            fields = self.decoder.decode(bytes(block), raw=True)
        except hpack.HPACKError as e:
            raise ProbeError(f"cannot decode server header block: {e!r}")
        if kind == "push":
            return
        fields = [[k.decode("utf-8", "replace"), v.decode("utf-8", "replace")] for k, v in fields]
        status = next((v for k, v in fields if k == ":status"), None)
        resp = self.response(stream_id)
        if resp["status"] is None:
            if status is not None and status.startswith("1"):
                return                      # informational (1xx): skip
            resp["status"], resp["headers"] = status, fields
        else:
            resp["trailers"] = fields

    # ---- common steps ------------------------------------------------------
    def handshake(self, settings=None):
        """Client preface + our SETTINGS; wait for the server's SETTINGS
        (which handle() ACKs)."""
        self.send(PREFACE, SettingsFrame(0, settings=settings or {}))
        # Waits on what it waits for, not on a short silence: a loaded machine may answer late.
        if not self.pump(until=lambda: self.obs["settings"] is not None, silence=ANSWER_WAIT):
            raise ProbeError("no SETTINGS frame from server")

    def stream_ended(self, stream_id):
        r = self.obs["responses"].get(str(stream_id))
        return bool(r and r["ended"])

    def result(self):
        out = dict(self.obs, closed=self.closed)

        def render(responses):
            if responses is None:
                return None
            return {sid: dict(r, body=r["body"].decode("utf-8", "replace"))
                    for sid, r in responses.items()}
        out["responses"] = render(out["responses"])
        out["snapshot"] = render(out["snapshot"])
        return out
