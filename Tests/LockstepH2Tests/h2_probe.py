#!/usr/bin/env python3
"""Raw HTTP/2 probe client (h2c, prior knowledge, cleartext TCP).

Usage: python3 h2_probe.py HOST PORT CASE

Runs one probe case against an HTTP/2 server and prints exactly one line of
JSON describing what was *observed* (never a verdict), then exits 0.
Exit status 2 means a usage error (bad arguments or unknown case).

Output object:
  case            the case name
  goaway          {"error_code", "last_stream_id", "debug"} of the last GOAWAY
                  received, or null
  closed          true if the server closed (or reset) the TCP connection
  rst             [[stream_id, error_code], ...] RST_STREAM frames, in order
  responses       {"<stream_id>": {"status", "headers", "body", "trailers",
                  "ended"}}; headers include pseudo-headers as received,
                  body is lossy UTF-8, ended = END_STREAM was seen
  settings        {"<id>": value} from the server's first SETTINGS frame
  settings_acks   number of SETTINGS ACKs received
  ping_acks       number of PING ACKs received
  window_updates  number of WINDOW_UPDATE frames received
  snapshot        responses as they were at a mid-case checkpoint (only the
                  zero-window case sets it; null otherwise)
  error           null, or a string if the probe itself failed

Only the standard library plus hyperframe (6.x) and hpack are used; frames are
built with hyperframe so malformed sequences can be produced deliberately.
Timing: every case is bounded by CASE_DEADLINE seconds; reading stops when the
server closes the connection or after SILENCE seconds without any input.
"""

import json
import os
import select
import signal
import socket
import struct
import sys
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
                if not getattr(self, "deaf", False):
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


# ---- cases ------------------------------------------------------------------
# Each case drives the connection; the final pump() (in run_case) collects what
# follows. Section numbers refer to RFC 9113.

def case_get(c):
    """Baseline: one GET (§8.1)."""
    c.handshake()
    c.send(*c.get_frames(1))
    c.pump(until=lambda: c.stream_ended(1), silence=ANSWER_WAIT)


def case_post(c):
    """Baseline: POST with a body in one DATA frame (§8.1, §6.1)."""
    c.handshake()
    block = c.encoder.encode(c.request_headers("POST"))
    c.send(*c.headers_frames(1, block, end_stream=False),
           DataFrame(1, data=b"hello", flags=["END_STREAM"]))
    c.pump(until=lambda: c.stream_ended(1), silence=ANSWER_WAIT)


def case_body_over_limit(c):
    """POST with a 5,000-byte body (over a server limit set lower), then a GET
    on stream 3: expect 413 on stream 1 and the connection still serving."""
    c.handshake()
    block = c.encoder.encode(c.request_headers("POST"))
    c.send(*c.headers_frames(1, block, end_stream=False),
           DataFrame(1, data=b"b" * 5000, flags=["END_STREAM"]), *c.get_frames(3))


def case_slow_bodies_among_fast(c):
    """Two POSTs whose bodies never end (streams 1 and 7) among three that end
    at once (3, 5, 9), the server's body time set low: expect 408 on 1 and 7,
    each at its own time, and 200 on the rest, the connection still serving."""
    c.handshake()
    block = c.encoder.encode(c.request_headers("POST"))
    c.send(*c.headers_frames(1, block, end_stream=False), DataFrame(1, data=b"slow"))
    for sid in (3, 5):
        c.send(*c.headers_frames(sid, c.encoder.encode(c.request_headers("POST")), end_stream=False),
               DataFrame(sid, data=b"fast", flags=["END_STREAM"]))
    c.pump(until=lambda: c.stream_ended(3) and c.stream_ended(5), silence=2)
    time.sleep(0.3)
    c.send(*c.headers_frames(7, c.encoder.encode(c.request_headers("POST")), end_stream=False), DataFrame(7, data=b"slow"))
    c.send(*c.headers_frames(9, c.encoder.encode(c.request_headers("POST")), end_stream=False),
           DataFrame(9, data=b"fast", flags=["END_STREAM"]))
    c.pump(until=lambda: all(c.stream_ended(sid) for sid in (1, 3, 5, 7, 9)), silence=3)


def case_deaf_after_hold(c):
    """GET /hold (a request the server keeps open), then a client that answers
    nothing, not even PINGs (a peer that died without closing): a server that
    checks liveness PINGs and closes the connection."""
    c.handshake()
    c.send(*c.get_frames(1, path="/hold"))
    c.deaf = True
    c.pump(silence=9)


def case_hold(c):
    """GET /hold, then a live client that answers the server's PINGs: read
    until three PINGs came (the connection must stay open)."""
    c.handshake()
    c.send(*c.get_frames(1, path="/hold"))
    c.pump(until=lambda: c.obs["pings"] >= 3, silence=5, eager=True)


def case_reset_later(c):
    """Ten requests for /later (answered 20 ms later, from another thread),
    each reset by the client at once, then, once their answers are due, a GET
    on stream 21: handlers that finished after their stream was reset must
    free their slots (a server limit of 4 streams makes a leak visible)."""
    c.handshake()
    frames = []
    for n in range(10):
        frames += c.get_frames(2 * n + 1, path="/later")
        frames.append(RstStreamFrame(2 * n + 1, error_code=8))
    c.send(*frames)
    time.sleep(0.5)
    c.send(*c.get_frames(21))
    c.pump(until=lambda: c.obs["responses"].get("21", {}).get("ended"))


def case_bad_preface(c):
    """Broken connection preface magic (§3.4): expect a connection error
    PROTOCOL_ERROR (GOAWAY, possibly none) and a close."""
    c.send(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n")


def case_continuation_flood(c):
    """HEADERS + 20 CONTINUATION frames (§6.10); relates to the CONTINUATION
    flood CVE-2024-27316 / CVE-2024-28182. 20 is small: a server may accept
    it; the probe records what happens."""
    c.handshake()
    frames = [HeadersFrame(1, data=c.encoder.encode(c.request_headers()), flags=["END_STREAM"])]
    for i in range(20):
        frag = c.encoder.encode([(f"x-pad-{i:02d}", "v" * 16)])
        frames.append(ContinuationFrame(1, data=frag, flags=["END_HEADERS"] if i == 19 else []))
    c.send(*frames)


def case_too_many_settings(c):
    """One SETTINGS frame with 17 entries (MAX_CONCURRENT_STREAMS=100 x17)
    (§6.5); servers may cap the number of entries per frame."""
    c.handshake()
    payload = struct.pack("!HL", MAX_CONCURRENT_STREAMS, 100) * 17
    c.send(raw_frame(SettingsFrame, 0, payload))


def case_ping_flood(c):
    """200 PINGs in one write without reading (§6.7); CVE-2019-9512."""
    c.handshake()
    c.send(*[PingFrame(0, opaque_data=struct.pack("!Q", i)) for i in range(200)])


def case_settings_flood(c):
    """60 SETTINGS frames in one write (§6.5.3 requires an ACK each);
    CVE-2019-9515."""
    c.handshake()
    c.send(*[SettingsFrame(0, settings={INITIAL_WINDOW_SIZE: 65535}) for _ in range(60)])


def case_rapid_reset(c):
    """1000 x (HEADERS + RST_STREAM CANCEL) on fresh streams (§6.4, §5.1.2);
    CVE-2023-44487 (HTTP/2 Rapid Reset)."""
    c.handshake()
    batch = []
    for n in range(1000):
        sid = 2 * n + 1
        batch += c.get_frames(sid)
        batch.append(RstStreamFrame(sid, error_code=CANCEL))
        if len(batch) >= 200:
            c.send(*batch)
            batch = []
    c.send(*batch)


def case_big_header(c):
    """A 20,000-byte header value (HEADERS + CONTINUATION, §6.10), then a
    normal GET on stream 3: a server limiting field sizes should answer 431
    (RFC 6585) or reset stream 1, yet keep HPACK state and the connection
    (§4.3, §10.5.1)."""
    c.handshake()
    big = hpack.NeverIndexedHeaderTuple("x-big", "x" * 20000)
    block = c.encoder.encode(c.request_headers(extra=[big]), huffman=False)
    c.send(*c.headers_frames(1, block), *c.get_frames(3))


def case_too_many_streams(c):
    """Open SETTINGS_MAX_CONCURRENT_STREAMS + 1 streams (§5.1.2): expect the
    extra one refused (RST_STREAM REFUSED_STREAM) without a connection error;
    then finish stream 1 and read its response."""
    c.handshake()
    limit = int(c.obs["settings"].get(str(MAX_CONCURRENT_STREAMS), 100))
    if limit > 1000:
        raise ProbeError(f"SETTINGS_MAX_CONCURRENT_STREAMS={limit} too large to probe")
    frames = []
    for n in range(limit + 1):
        block = c.encoder.encode(c.request_headers("POST"))
        frames += c.headers_frames(2 * n + 1, block, end_stream=False)
    c.send(*frames)
    last = 2 * limit + 1
    c.pump(until=lambda: any(sid == last for sid, _ in c.obs["rst"]) or c.obs["goaway"])
    c.send(DataFrame(1, data=b"", flags=["END_STREAM"]))


def case_empty_data_flood(c):
    """500 zero-length DATA frames without END_STREAM (§6.1); CVE-2019-9518."""
    c.handshake()
    block = c.encoder.encode(c.request_headers("POST"))
    c.send(*c.headers_frames(1, block, end_stream=False),
           *[DataFrame(1, data=b"") for _ in range(500)])


def case_zero_window(c):
    """SETTINGS_INITIAL_WINDOW_SIZE=0 (§6.9.2): the server may send HEADERS but
    no DATA until we open the windows. `snapshot` holds what arrived in the
    first SILENCE seconds; `responses` what arrived after WINDOW_UPDATEs."""
    c.handshake(settings={INITIAL_WINDOW_SIZE: 0})
    c.send(*c.get_frames(1))
    c.pump()  # no condition: read until SILENCE seconds of quiet
    c.obs["snapshot"] = {sid: dict(r) for sid, r in c.obs["responses"].items()}
    c.send(WindowUpdateFrame(1, window_increment=65535),
           WindowUpdateFrame(0, window_increment=65535))


def case_headers_on_closed_stream(c):
    """HEADERS on a stream that is already closed (§5.1, 'closed' state):
    expect a connection error STREAM_CLOSED (0x5)."""
    c.handshake()
    c.send(*c.get_frames(1))
    c.pump(until=lambda: c.stream_ended(1))
    c.send(*c.get_frames(1))


def case_even_stream_id(c):
    """Client HEADERS on an even stream id (§5.1.1): expect GOAWAY
    PROTOCOL_ERROR (0x1)."""
    c.handshake()
    c.send(*c.get_frames(2))


def case_data_on_idle(c):
    """DATA on an idle stream (§5.1, §6.1): expect GOAWAY PROTOCOL_ERROR."""
    c.handshake()
    c.send(DataFrame(5, data=b"x", flags=["END_STREAM"]))


def case_window_overflow(c):
    """Connection WINDOW_UPDATE pushing the window past 2^31-1 (§6.9.1):
    expect GOAWAY FLOW_CONTROL_ERROR (0x3)."""
    c.handshake()
    c.send(WindowUpdateFrame(0, window_increment=0x7FFFFFFF))


def case_bad_hpack(c):
    """Undecodable header block (§4.3): expect GOAWAY COMPRESSION_ERROR (0x9)."""
    c.handshake()
    c.send(HeadersFrame(1, data=b"\xff\xff\xff\xff\xff", flags=["END_HEADERS", "END_STREAM"]))


def case_frame_too_large(c):
    """A 20,000-byte PING, above the default SETTINGS_MAX_FRAME_SIZE
    (§4.2): expect GOAWAY FRAME_SIZE_ERROR (0x6)."""
    c.handshake()
    c.send(raw_frame(PingFrame, 0, b"\x00" * 20000))


def case_uppercase_header(c):
    """Uppercase field name (§8.2.1): a malformed request, expect RST_STREAM
    PROTOCOL_ERROR (0x1) on stream 1 (§8.1.1); a GET on stream 3 then checks
    the connection is still usable."""
    c.handshake()
    block = c.encoder.encode(c.request_headers()) + hpack_literal("X-Upper", "1")
    c.send(*c.headers_frames(1, block), *c.get_frames(3))


def case_goaway_graceful(c):
    """GET, then a client GOAWAY(NO_ERROR) (§6.8): the in-flight request
    should still be answered; the server may then close."""
    c.handshake()
    c.send(*c.get_frames(1), GoAwayFrame(0, last_stream_id=0, error_code=NO_ERROR))


CASES = {
    "get": case_get,
    "post": case_post,
    "body-over-limit": case_body_over_limit,
    "deaf-after-hold": case_deaf_after_hold,
    "hold": case_hold,
    "reset-later": case_reset_later,
    "bad-preface": case_bad_preface,
    "continuation-flood": case_continuation_flood,
    "too-many-settings": case_too_many_settings,
    "ping-flood": case_ping_flood,
    "settings-flood": case_settings_flood,
    "rapid-reset": case_rapid_reset,
    "big-header": case_big_header,
    "too-many-streams": case_too_many_streams,
    "empty-data-flood": case_empty_data_flood,
    "zero-window": case_zero_window,
    "headers-on-closed-stream": case_headers_on_closed_stream,
    "slow-bodies-among-fast": case_slow_bodies_among_fast,
    "even-stream-id": case_even_stream_id,
    "data-on-idle": case_data_on_idle,
    "window-overflow": case_window_overflow,
    "bad-hpack": case_bad_hpack,
    "frame-too-large": case_frame_too_large,
    "uppercase-header": case_uppercase_header,
    "goaway-graceful": case_goaway_graceful,
}


def run_case(host, port, name):
    empty = {"case": name, "goaway": None, "closed": False, "rst": [],
             "responses": {}, "settings": None, "settings_acks": 0,
             "ping_acks": 0, "pings": 0, "window_updates": 0, "snapshot": None, "error": None}
    try:
        conn = Connection(host, port, name)
    except (OSError, ProbeTimeout) as e:
        return dict(empty, error=f"connect failed: {e!r}")
    try:
        CASES[name](conn)
        conn.pump()                      # collect everything that follows
        # A GOAWAY for an error is followed by the close: on a loaded machine that may take longer than
        # the usual silence, so wait for it (bounded by the case deadline) rather than report it open.
        goaway = conn.obs["goaway"]
        if goaway and goaway.get("error_code", 0) != 0 and not conn.closed:
            conn.pump(until=lambda: conn.closed, silence=5)
    except Exception as e:               # report, never crash without JSON
        conn.obs["error"] = f"{type(e).__name__}: {e}"
    finally:
        conn.sock.close()
    return conn.result()


def main(argv):
    if len(argv) != 4 or argv[3] not in CASES or not argv[2].isdigit():
        print(f"usage: {argv[0]} HOST PORT CASE\ncases: {' '.join(CASES)}", file=sys.stderr)
        return 2

    def on_alarm(signum, frame):         # last-resort guard against hangs
        raise ProbeTimeout("probe exceeded its time budget")
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(int(CASE_DEADLINE) + 3)

    result = run_case(argv[1], int(argv[2]), argv[3])
    signal.alarm(0)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
