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

Only the standard library plus hyperframe (6.x) and hpack are used; the connection
(h2_probe_connection.py) builds frames with hyperframe so malformed sequences can
be produced deliberately.
Timing: every case is bounded by CASE_DEADLINE seconds; reading stops when the
server closes the connection or after SILENCE seconds without any input.
"""

import json
import signal
import struct
import sys
import time

import hpack
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from h2_probe_connection import (
    ANSWER_WAIT,
    CANCEL,
    CASE_DEADLINE,
    INITIAL_WINDOW_SIZE,
    MAX_CONCURRENT_STREAMS,
    NO_ERROR,
    Connection,
    ProbeError,
    ProbeTimeout,
    hpack_literal,
    raw_frame,
)


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


def case_hpack_bomb(c):
    """An HPACK bomb (§4.3, §10.5.1): one 4,000-byte value inserted into the
    dynamic table, then referenced by one byte per field 16,000 times in the
    same 16 KB HEADERS frame, a header list of about 64 MB from 20 KB sent;
    then a GET on stream 3. A server that bounds the work of a header list
    (not only the bytes received) cuts the connection off."""
    c.handshake()
    block = c.encoder.encode(c.request_headers(extra=[("x-bomb", "b" * 4000)]), huffman=False)
    block += b"\xbe" * 16000   # indexed field 62: the newest entry of the dynamic table, x-bomb
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
    "hpack-bomb": case_hpack_bomb,
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
