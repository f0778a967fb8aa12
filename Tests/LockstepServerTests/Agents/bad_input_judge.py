"""How bad_input.py judges an answer: a coded error (or, where the value is in range, a normal answer),
never a bare 500, INTERNAL or UNKNOWN, an empty body, or Swift's internals in a message. Each judge
returns (ok, kind of defect or None, what came back).
"""
import json
import re

import grpc

CODE_RE = re.compile(r"^[a-z][a-z0-9_]*$")
# Swift internals in a message: a generated type's name, a decoder's enum case ("in JSON: malformedString").
SWIFTISH = re.compile(r"Lockstep_V1_|SwiftProtobuf|[A-Z][A-Za-z]*DecodingError|\b[a-z][A-Za-z]+\(\\?\"|Swift\.|NIO[A-Z]|"
                      r"in JSON: [a-z]+[A-Z][A-Za-z]*\b|in JSON: (failure|truncated)\b")


def short(text, n=220):
    text = text if isinstance(text, str) else text.decode("utf-8", "replace")
    text = text.replace("\n", "\\n").replace("\r", "\\r")
    return text if len(text) <= n else text[:n] + f"... ({len(text)} chars)"


def judge_http(answer, expect):
    """(ok, kind of defect or None, what came back)."""
    if answer.error:
        if expect == "park" and answer.error.startswith("no complete answer") and answer.elapsed >= 1.0:
            return True, None, "accepted: the poll parked (in range, capped) until the client gave up"
        kind = "no answer within the timeout" if answer.error.startswith("no complete answer") else "connection dropped without an HTTP answer"
        return False, kind, answer.error
    code_header = answer.headers.get("lockstep-error-code")
    what = f"{answer.status} " + (f"[lockstep-error-code: {code_header}] " if code_header else "") + short(answer.body or b"(empty body)")
    if 200 <= answer.status < 300:
        first = (answer.body or b"").split(b"\n", 1)[0]
        if "ndjson" in answer.headers.get("content-type", "") and first.startswith(b'{"error"'):
            return False, "bad input refused only inside a 200 NDJSON stream (status 200, error line)", what
        if expect in ("any", "park"):
            return True, None, "accepted (value in range): " + what
        return False, "accepted bad input with 2xx", what
    if not answer.body:
        return False, f"empty {answer.status} body (no error code)", what
    try:
        body = json.loads(answer.body)
    except ValueError:
        body = None
    code = None
    if isinstance(body, dict):
        code = body.get("code")
        if not isinstance(code, str) and isinstance(body.get("error"), dict):
            code = body["error"].get("code")
    if not (isinstance(code, str) and CODE_RE.match(code)) and not (code_header and CODE_RE.match(code_header)):
        return False, f"{answer.status} body is not an ErrorBody with a code", what
    if answer.status >= 500 and (code or code_header) not in ("commit_outcome_unknown", "writes_stopped", "storage_busy", "shutting_down"):
        return False, f"{answer.status} server error on bad input", what
    if isinstance(body, dict) and not body.get("message"):
        return False, "ErrorBody without a message", what
    return True, None, what


def judge_grpc(outcome, expect):
    kind_, detail = outcome[0], outcome[1]
    if kind_ == "ok":
        if expect in ("any", "park"):
            return True, None, "accepted (value in range): OK " + short(detail)
        return False, "gRPC OK on bad input", "OK " + short(detail)
    status, details, trailers, elapsed = outcome[1:]
    if expect == "park" and status == grpc.StatusCode.DEADLINE_EXCEEDED and elapsed >= 1.0:
        return True, None, "accepted: the poll parked (in range, capped) until the deadline"
    code = trailers.get("lockstep-error-code")
    what = f"{status.name} [lockstep-error-code: {code}] {short(details or '')}"
    if status == grpc.StatusCode.DEADLINE_EXCEEDED:
        return False, "no gRPC answer within the deadline", what
    if status == grpc.StatusCode.UNAVAILABLE and not code:
        return False, "gRPC UNAVAILABLE (connection lost) on bad input", what
    if status in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN) and code != "commit_outcome_unknown":
        return False, f"gRPC {status.name} on bad input", what
    if not code:
        swift = " naming a Swift type" if details and SWIFTISH.search(details) else ""
        return False, f"untyped gRPC {status.name}{swift} (no lockstep-error-code trailer)", what
    if not CODE_RE.match(code):
        return False, "lockstep-error-code is not a stable code", what
    if not (details or "").startswith(code + ": "):
        return False, "gRPC message is not `CODE: sentence`", what
    return True, None, what
