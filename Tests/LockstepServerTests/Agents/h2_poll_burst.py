#!/usr/bin/env python3
"""A burst of polls on one HTTP/2 connection (h2c), every request in one write.

Usage: python3 h2_poll_burst.py HOST:PORT SERVICE COUNT json|grpc

Opens one connection and sends COUNT polls of SERVICE (wait_ms 0, agents burst-1..COUNT) on streams
1, 3, 5, ... in a single sendall: as JSON (POST /v1/agent/poll) or as gRPC (AgentService/Poll, the
message encoded here by hand). The server reads them together, so all but the first arrive while the
first still looks at the coordinator. Reads until every stream has ended (at most 30 s) and prints one
JSON line: {"answered": N, "steps": N, "retry_later": N, "other": [...]} where "steps" counts answers
with a step, "retry_later" answers without one that say when to retry, and "other" lists anything else
(a status, a gRPC status, a reset) as a string.
"""
import json
import socket
import struct
import sys
import time

import h2.config
import h2.connection
import h2.events

from bad_input_values import key, varint


def field(number, payload):
    return key(number, 2) + varint(len(payload)) + payload


def poll_message(service, agent):
    # PollRequest: service = 1, agent_id = 2 (wait_ms = 4 left at 0).
    return field(1, service.encode()) + field(2, agent.encode())


def read_varint(data, at):
    value, shift = 0, 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, at
        shift += 7


def poll_response(message):
    """(has a step, retry_after_ms) of a PollResponse (step = 1, retry_after_ms = 2)."""
    has_step, retry, at = False, 0, 0
    while at < len(message):
        key, at = read_varint(message, at)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, at = read_varint(message, at)
            if number == 2:
                retry = value
        elif wire == 2:
            length, at = read_varint(message, at)
            if number == 1:
                has_step = True
            at += length
        else:
            raise ValueError("unexpected wire type %d" % wire)
    return has_step, retry


def main(argv):
    if len(argv) != 5 or argv[4] not in ("json", "grpc"):
        print(__doc__, file=sys.stderr)
        return 2
    authority, service, count, mode = argv[1], argv[2], int(argv[3]), argv[4]
    host, port = authority.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=10)
    conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    streams = []
    for index in range(count):
        stream = 1 + 2 * index
        agent = "burst-%d" % (index + 1)
        if mode == "json":
            body = json.dumps({"service": service, "agent_id": agent, "wait_ms": 0}).encode()
            headers = [(":method", "POST"), (":path", "/v1/agent/poll"), (":scheme", "http"), (":authority", authority),
                       ("content-type", "application/json"), ("content-length", str(len(body)))]
        else:
            message = poll_message(service, agent)
            body = struct.pack(">BI", 0, len(message)) + message
            headers = [(":method", "POST"), (":path", "/lockstep.v1.AgentService/Poll"), (":scheme", "http"),
                       (":authority", authority), ("content-type", "application/grpc"), ("te", "trailers")]
        conn.send_headers(stream, headers)
        conn.send_data(stream, body, end_stream=True)
        streams.append(stream)
    sock.sendall(conn.data_to_send())

    status, bodies, trailers, ended, other = {}, {}, {}, set(), []
    deadline = time.monotonic() + 30
    while len(ended) < count and time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = sock.recv(65536)
        except socket.timeout:
            break
        if not data:
            other.append("connection closed")
            break
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived):
                status[event.stream_id] = dict(event.headers).get(b":status", b"").decode()
            elif isinstance(event, h2.events.DataReceived):
                bodies[event.stream_id] = bodies.get(event.stream_id, b"") + event.data
                conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.TrailersReceived):
                trailers[event.stream_id] = {k.decode(): v.decode() for k, v in event.headers}
            elif isinstance(event, h2.events.StreamEnded):
                ended.add(event.stream_id)
            elif isinstance(event, h2.events.StreamReset):
                ended.add(event.stream_id)
                other.append("stream %d reset with %d" % (event.stream_id, event.error_code))
            elif isinstance(event, h2.events.ConnectionTerminated):
                other.append("goaway %d" % event.error_code)
        out = conn.data_to_send()
        if out:
            sock.sendall(out)
    sock.close()

    seen = {"answered": 0, "steps": 0, "retry_later": 0, "other": other}
    for stream in streams:
        if stream not in ended:
            continue
        body = bodies.get(stream, b"")
        if status.get(stream) != "200":
            other.append("stream %d: status %s %r" % (stream, status.get(stream), body[:200]))
            continue
        if mode == "json":
            answer = json.loads(body)
            has_step, retry = "step" in answer, int(answer.get("retry_after_ms", 0))
        else:
            grpc_status = trailers.get(stream, {}).get("grpc-status")
            if grpc_status != "0" or len(body) < 5:
                other.append("stream %d: grpc-status %s %r" % (stream, grpc_status, trailers.get(stream)))
                continue
            has_step, retry = poll_response(body[5:5 + struct.unpack(">I", body[1:5])[0]])
        seen["answered"] += 1
        if has_step:
            seen["steps"] += 1
        elif retry > 0:
            seen["retry_later"] += 1
        else:
            other.append("stream %d: neither a step nor a retry: %r" % (stream, body[:200]))
    print(json.dumps(seen))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
