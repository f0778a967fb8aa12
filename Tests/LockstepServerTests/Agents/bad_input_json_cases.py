"""The JSON listener's cases of bad_input.py: each route's bad bodies and headers and, field by field, the
hostile values; the stage route's path and query; unknown routes and requests that are not HTTP.

Each case is run by `probe.run_case`; `probe` is bad_input.py's context: run_case, http (the current
server's JSON listener, taken at each call), timeout (per request), plan_text and real (the migration).
"""
import json
import re
from urllib.parse import quote

from bad_input_judge import judge_http
from bad_input_routes import UNKNOWN_MIGRATION
from bad_input_values import BIG_ID, BODY_MAX, LONG_ID, RANDOM_BYTES, RAW, values_for


def json_text(message):
    """A JSON object from a dict whose values may be RAW."""
    parts = []
    for name, value in message.items():
        encoded = value.text if isinstance(value, RAW) else json.dumps(value)
        parts.append(f"{json.dumps(name)}: {encoded}")
    return "{" + ", ".join(parts) + "}"


def jsonify_benign(route):
    return {k: (str(v) if isinstance(v, int) and not isinstance(v, bool) and k in ("fencing_token", "sequence", "after_sequence") else v)
            for k, v in route.benign.items()}


def http_stage(http, path_id, query="", headers=None):
    return http("GET", "/v1/stage/" + path_id + query, headers=headers if headers is not None else {})


def json_cases(probe, route):
    run_case, http = probe.run_case, probe.http
    path = route.path
    target = f"POST {path}"
    benign = json_text(jsonify_benign(route))
    judge_error = lambda a: judge_http(a, "error")  # noqa: E731
    judge_ok_empty = lambda a: judge_http(a, "any" if route.ok_on_empty else "error")  # noqa: E731
    cases = [
        ("body:empty", dict(body=b""), judge_error),
        ("body:not-json", dict(body="hello, lockstep"), judge_error),
        ("body:json-array", dict(body="[]"), judge_error),
        ("body:json-string", dict(body='"x"'), judge_error),
        ("body:json-number", dict(body="42"), judge_error),
        ("body:json-null", dict(body="null"), judge_error),
        ("body:json-true", dict(body="true"), judge_error),
        ("body:truncated", dict(body=benign[:-1]), judge_error),
        ("body:truncated-mid-string", dict(body='{"' + (route.fields[0][0] if route.fields else "x") + '": "abc'), judge_error),
        ("body:random-bytes", dict(body=RANDOM_BYTES), judge_error),
        ("body:invalid-utf8-in-string", dict(body=b'{"' + (route.fields[0][0] if route.fields else "x").encode() + b'": "\xc3\x28\xff"}'),
         judge_error),
        ("body:trailing-garbage", dict(body=benign + "x"), judge_error),
        ("body:two-objects", dict(body=benign + benign), judge_error),
        ("body:deep-nesting-50k", dict(body='{"' + (route.fields[0][0] if route.fields else "x") + '": ' + "[" * 50000 + "]" * 50000 + "}"),
         judge_error),
        ("body:unknown-field", dict(body=benign[:-1] + (", " if route.benign else "") + '"bad_input_unknown": 1}'), judge_error),
        ("body:unknown-enum-name-as-field", dict(body='{"kind": "STEP_KIND_BOGUS"}'), judge_error),
        ("body:comment", dict(body="/* c */ " + benign), judge_error),
        ("header:no-content-type", dict(body=benign, headers={}), judge_error),
        ("header:text/plain", dict(body=benign, headers={"content-type": "text/plain"}), judge_error),
        ("header:origin (--dev refuses browsers)", dict(body=benign, headers={"content-type": "application/json", "origin": "http://evil.example"}),
         judge_error),
        ("header:form-urlencoded", dict(body="a=1", headers={"content-type": "application/x-www-form-urlencoded"}), judge_error),
        ("body:over-limit-content-length", dict(body=benign + " " * (BODY_MAX + 1 - len(benign))), judge_error),
        ("body:over-limit-chunked", dict(body=benign + " " * (BODY_MAX + 1 - len(benign)), chunked=True), judge_error),
        ("body:4MiB-content-length", dict(body=benign + " " * (4 * BODY_MAX - len(benign))), judge_error),
        ("body:empty-object", dict(body="{}"), judge_ok_empty),
    ]
    if route.fields:
        first = route.fields[0][0]
        # A key written twice: swift-protobuf would keep the last; the edge refuses it (malformed_request).
        cases.append(("body:duplicate-key", dict(body=f'{{"{first}": {json.dumps(route.benign.get(first, "a"))}, '
                                                      f'"{first}": {json.dumps(route.benign.get(first, "a"))}}}'), judge_error))
        # The same field under its proto name and its JSON name (lease_id, leaseId): one field, given twice.
        if "_" in first:
            camel = re.sub(r"_([a-z0-9])", lambda m: m.group(1).upper(), first)
            cases.append(("body:duplicate-field-json-name", dict(body=f'{{"{first}": {json.dumps(route.benign.get(first, "a"))}, '
                                                                      f'"{camel}": {json.dumps(route.benign.get(first, "a"))}}}'), judge_error))
    if route.method == "GetStateAt":
        cases.append(("oneof:both-sequence-and-time_ms", dict(body='{"sequence": "1", "time_ms": "1"}'), judge_error))
    for name, kwargs, judge in cases:
        run_case(target, name, lambda kwargs=kwargs: http("POST", path, **kwargs), judge)
    # Field by field.
    for field, _, kind in route.fields:
        for case, value, _, expect in values_for(route, field, kind, probe.plan_text):
            if value is None:
                continue
            message = dict(jsonify_benign(route))
            message.update(route.aim.get(field, {}))
            message[field] = value
            message = {k: v for k, v in message.items() if v is not None}
            timeout = 1.5 if expect == "park" else probe.timeout
            run_case(target, f"{field}:{case}", lambda m=message, t=timeout: http("POST", path, json_text(m), timeout=t),
                     lambda a, e=expect: judge_http(a, e))


def stage_cases(probe):
    run_case, http, real = probe.run_case, probe.http, probe.real
    target = "GET /v1/stage/{migration}"
    e = lambda a: judge_http(a, "error")  # noqa: E731
    cases = [
        ("migration:129-bytes", lambda: http_stage(http, LONG_ID)),
        ("migration:900KB-path", lambda: http_stage(http, BIG_ID)),
        ("migration:64KB-path", lambda: http_stage(http, "a" * 65536)),
        ("migration:percent-00", lambda: http_stage(http, "a%00b")),
        ("migration:percent-FF-invalid-utf8", lambda: http_stage(http, "a%FFb")),
        ("migration:percent-2F-slash", lambda: http_stage(http, "a%2Fb")),
        ("migration:bad-percent-escape", lambda: http_stage(http, "a%zzb")),
        ("migration:unicode", lambda: http_stage(http, quote("caf\u00e9"))),
        ("migration:space", lambda: http_stage(http, "a%20b")),
        ("migration:dotdot", lambda: http_stage(http, "..%2F..%2Fetc")),
        ("migration:empty", lambda: http("GET", "/v1/stage/", headers={})),
        ("migration:two-segments", lambda: http_stage(http, f"{real}/extra")),
        ("node:bad-chars", lambda: http_stage(http, real, "?node=" + quote("a b/\u00e9\x00"))),
        ("node:129-bytes", lambda: http_stage(http, real, "?node=" + LONG_ID)),
        ("node:900KB", lambda: http_stage(http, real, "?node=" + BIG_ID)),
        ("key:257-bytes", lambda: http_stage(http, real, "?key=" + "k" * 257)),
        ("key:900KB", lambda: http_stage(http, real, "?key=" + BIG_ID)),
        ("key:bad-percent-escape", lambda: http_stage(http, real, "?key=%zz&node=%")),
        ("query:repeated-node", lambda: http_stage(http, real, "?node=a&node=b")),
        ("if-none-match:garbage", lambda: http_stage(http, UNKNOWN_MIGRATION, "", {"if-none-match": '"\x01' + "x" * 8000})),
        ("header:origin (--dev refuses browsers)", lambda: http_stage(http, real, "", {"origin": "http://evil.example"})),
    ]
    for name, send in cases:
        run_case(target, name, send, e)
    run_case("GET /metrics", "header:origin (--dev refuses browsers)", lambda: http("GET", "/metrics", headers={"origin": "http://evil.example"}), e)


def unknown_route_cases(probe):
    run_case, http = probe.run_case, probe.http
    e = lambda a: judge_http(a, "error")  # noqa: E731
    cases = [
        ("POST", "/v1/nope"), ("POST", "/v1/agent/nope"), ("POST", "/v2/agent/poll"), ("POST", "/"), ("GET", "/"),
        ("GET", "/v1/agent/poll"), ("PUT", "/v1/agent/poll"), ("DELETE", "/v1/migrations"), ("PATCH", "/v1/plans"),
        ("OPTIONS", "/v1/agent/poll"), ("POST", "/healthz"), ("POST", "/metrics"), ("POST", f"/v1/stage/{UNKNOWN_MIGRATION}"),
        ("POST", "/V1/AGENT/POLL"), ("POST", "/v1/agent/poll/extra"), ("POST", "/v1//agent/poll"), ("POST", "/v1/migrations/get/"),
        ("BREW", "/v1/agent/poll"), ("POST", "/v1/" + "x" * 60000), ("POST", "/v1/%ZZ"),
    ]
    for method, path in cases:
        shown = path if len(path) < 60 else path[:40] + f"...({len(path)} chars)"
        run_case(f"{method} {shown}", "unknown-route-or-method",
                 lambda m=method, p=path: http(m, p, None if m in ("GET", "OPTIONS") else "{}"), e)
    # Not HTTP at all: the server must stay up (the answer is judged like any other).
    run_case("raw", "garbage-request-line", lambda: http(None, None, raw=b"\x16\x03\x01garbage garbage\r\n\r\n"), e)
    run_case("raw", "http/1.1-without-host-and-bad-header", lambda: http(None, None, raw=b"POST /v1/agent/poll HTTP/1.1\r\nbad header\r\n\r\n"), e)
    run_case("raw", "content-length-negative", lambda: http(None, None, raw=b"POST /v1/agent/poll HTTP/1.1\r\nhost: localhost\r\n"
                                                                               b"content-type: application/json\r\ncontent-length: -5\r\n\r\n{}"), e)
