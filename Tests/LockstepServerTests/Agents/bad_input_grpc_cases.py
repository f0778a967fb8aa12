"""The gRPC listener's cases of bad_input.py: each method's malformed and oversized messages and, field by
field, the hostile values (well-formed, or encoded by hand); unknown methods.

Each case is run by `probe.run_case`; `probe` is bad_input.py's context: run_case, grpc_call (raw_call on
the current server's channel, taken at each call), timeout (per request) and plan_text.
"""
import time

import grpc

from bad_input_judge import judge_grpc
from bad_input_values import BODY_MAX, RANDOM_BYTES, WIRE, key, values_for, varint


def raw_call(channel, metadata, route, request_bytes, timeout=5.0):
    """Sends raw request bytes; ("ok", summary) or ("error", status, details, trailers, elapsed)."""
    began = time.monotonic()
    try:
        if route.stream:
            call = channel.unary_stream(route.grpc_path, request_serializer=None, response_deserializer=None)
            responses = call(request_bytes, timeout=timeout, metadata=metadata)
            got = [len(r) for r in responses]
            return ("ok", f"stream of {len(got)} messages")
        call = channel.unary_unary(route.grpc_path, request_serializer=None, response_deserializer=None)
        response = call(request_bytes, timeout=timeout, metadata=metadata)
        return ("ok", f"{len(response)} bytes")
    except grpc.RpcError as error:
        trailers = dict(error.trailing_metadata() or ())
        return ("error", error.code(), error.details(), trailers, time.monotonic() - began)


def benign_message(route, overrides=None):
    message = route.request()
    values = dict(route.benign)
    values.update(overrides or {})
    for name, value in values.items():
        if value is None:
            continue
        descriptor = route.request.DESCRIPTOR.fields_by_name[name]
        if descriptor.type in (descriptor.TYPE_UINT64, descriptor.TYPE_INT64, descriptor.TYPE_UINT32):
            value = int(value)
        repeated = descriptor.is_repeated if hasattr(descriptor, "is_repeated") else descriptor.label == descriptor.LABEL_REPEATED
        if repeated:
            getattr(message, name).extend(value)
        else:
            setattr(message, name, value)
    return message


def without_field(message, name):
    copy = type(message)()
    copy.CopyFrom(message)
    copy.ClearField(name)
    return copy


def grpc_cases(probe, route):
    run_case, grpc_call = probe.run_case, probe.grpc_call
    target = f"gRPC {route.grpc_path}"
    empty_expect = "any" if route.ok_on_empty else "error"
    benign_bytes = benign_message(route).SerializeToString()
    raw_cases = [
        ("raw:empty-message", b"", empty_expect),
        ("raw:0xff-x16", b"\xff" * 16, "error"),
        ("raw:random-bytes", RANDOM_BYTES, "error"),
        ("raw:truncated-varint", b"\x08\xff", "error"),
        ("raw:truncated-length-delimited", b"\x0a\x10abc", "error"),
        ("raw:length-prefix-2^32", b"\x0a\xff\xff\xff\xff\x0f", "error"),
        ("raw:wire-type-7", b"\x0f\x00", "error"),
        ("raw:field-number-0", b"\x00\x01", "error"),
        ("raw:unmatched-end-group", b"\x0c", "error"),
        ("raw:unterminated-start-group", b"\x0b\x08\x01", "error"),
        ("raw:overlong-varint-11-bytes", b"\x08" + b"\xff" * 10 + b"\x01", "error"),
        ("raw:benign-then-truncated", benign_bytes + b"\x0a\x05ab", "error"),
        ("raw:unknown-field-101-enum-like-varint-99", benign_bytes + key(101, 0) + varint(99), "any"),
    ]
    string_fields = [(n, num) for n, num, k in route.fields if k in ("id", "text", "opaque", "key", "yaml", "strs", "stream")]
    scalar_fields = [(n, num) for n, num, k in route.fields if k in ("u32", "u64", "i64", "bool")]
    if string_fields:
        name, num = string_fields[0]
        base = without_field(benign_message(route, route.aim.get(name)), name).SerializeToString()
        raw_cases += [(f"raw:{name}-invalid-utf8", base + key(num, 2) + b"\x03\xc3\x28\xff", "error")]
        # A known field number with another wire type is an unknown field to protobuf parsers: the
        # message is then the benign one (no aim, so nothing is changed if it is accepted).
        plain = without_field(benign_message(route), name).SerializeToString()
        raw_cases += [(f"raw:{name}-as-varint (wrong wire type)", plain + key(num, 0) + b"\x01", "any"),
                      (f"raw:{name}-as-fixed64 (wrong wire type)", plain + key(num, 1) + b"\x00" * 8, "any")]
    if scalar_fields:
        name, num = scalar_fields[0]
        plain = without_field(benign_message(route), name).SerializeToString()
        raw_cases += [(f"raw:{name}-as-length-delimited (wrong wire type)", plain + key(num, 2) + b"\x01x", "any")]
    for case, data, expect in raw_cases:
        run_case(target, case, lambda d=data: grpc_call(route, d), lambda o, e=expect: judge_grpc(o, e))
    # Well-formed messages with hostile values, and single fields encoded by hand.
    for field, number, kind in route.fields:
        for case, _, value, expect in values_for(route, field, kind, probe.plan_text):
            if value is None:
                continue
            overrides = dict(route.aim.get(field, {}))
            if isinstance(value, WIRE):
                message = without_field(benign_message(route, overrides), field).SerializeToString()
                data = message + key(number, 0) + value.data
            else:
                try:
                    overrides[field] = value
                    data = benign_message(route, overrides).SerializeToString()
                except (ValueError, TypeError) as error:
                    print(f"# skipped gRPC {route.method} {field}:{case}: {error}", flush=True)
                    continue
            timeout = 1.5 if expect == "park" else probe.timeout
            run_case(target, f"{field}:{case}", lambda d=data, t=timeout: grpc_call(route, d, timeout=t),
                     lambda o, e=expect: judge_grpc(o, e))
    # The message just over the 1 MiB limit.
    padding = benign_bytes + key(2000, 2) + varint(BODY_MAX + 1) + b"p" * (BODY_MAX + 1)
    run_case(target, "raw:over-1MiB-message", lambda: grpc_call(route, padding), lambda o: judge_grpc(o, "error"))


class RawMethod:
    stream = False

    def __init__(self, path):
        self.grpc_path = path


def unknown_grpc_cases(probe):
    run_case, grpc_call = probe.run_case, probe.grpc_call
    for path in ["/lockstep.v1.AgentService/Nope", "/lockstep.v1.AgentService/poll", "/lockstep.v1.NopeService/Poll",
                 "/lockstep.v2.AgentService/Poll", "/nope", "/lockstep.v1.AgentService/" + "x" * 4000]:
        shown = path if len(path) < 60 else path[:40] + f"...({len(path)} chars)"
        run_case(f"gRPC {shown}", "unknown-method",
                 lambda p=path: grpc_call(RawMethod(p), b""), lambda o: judge_grpc(o, "error"))
