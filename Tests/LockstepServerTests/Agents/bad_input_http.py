"""A small HTTP/1.1 client over a socket, for bad_input.py: full control of what is sent (bad headers,
chunked bodies, bodies over the limit), and the answer read while the body is still being written.
"""
import socket
import threading
import time
from urllib.parse import urlsplit


class Answer:
    def __init__(self, status=None, headers=None, body=b"", error=None, elapsed=0.0):
        self.status, self.headers, self.body, self.error, self.elapsed = status, headers or {}, body, error, elapsed


def request(base, auth_headers, method, path, body=None, headers=None, chunked=False, raw=None, timeout=5.0):
    """One request to `base` (http://HOST:PORT) on a fresh connection (Connection: close): `auth_headers`,
    then `headers` (by default a JSON content-type), a name in both taking `headers`' value. `raw` sends
    those bytes as the whole request."""
    url = urlsplit(base)
    began = time.monotonic()
    try:
        sock = socket.create_connection((url.hostname, url.port), timeout=timeout)
    except OSError as error:
        return Answer(error=f"connect: {error}", elapsed=time.monotonic() - began)
    sock.settimeout(timeout)
    if raw is None:
        head = [f"{method} {path} HTTP/1.1", f"host: {url.hostname}:{url.port}", "connection: close"]
        all_headers = dict(auth_headers)
        all_headers.update(headers if headers is not None else {"content-type": "application/json"})
        for name, value in all_headers.items():
            if value is not None:
                head.append(f"{name}: {value}")
        payload = b""
        if body is not None:
            if isinstance(body, str):
                body = body.encode("utf-8", "surrogatepass")
            if chunked:
                head.append("transfer-encoding: chunked")
                step = 64 * 1024
                payload = b"".join(b"%x\r\n" % len(body[i:i + step]) + body[i:i + step] + b"\r\n" for i in range(0, len(body), step)) + b"0\r\n\r\n"
            else:
                head.append(f"content-length: {len(body)}")
                payload = body
        elif method in ("POST", "PUT", "PATCH"):
            head.append("content-length: 0")
        raw = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1", "replace") + payload
    send_error = []

    def sender():
        try:
            sock.sendall(raw)
        except OSError as error:
            send_error.append(error)
    writer = threading.Thread(target=sender, daemon=True)
    writer.start()
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
            if time.monotonic() - began > timeout:
                raise socket.timeout()
        if b"\r\n\r\n" not in data:
            sock.close()
            why = f"connection closed after {len(data)} bytes without a response" + (f" (send: {send_error[0]})" if send_error else "")
            return Answer(error=why, body=data, elapsed=time.monotonic() - began)
        head, rest = data.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        hdrs = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                hdrs[name.strip().lower()] = value.strip()
        if status in (204, 304):
            sock.close()
            return Answer(status, hdrs, b"", elapsed=time.monotonic() - began)
        if "content-length" in hdrs:
            want = int(hdrs["content-length"])
            while len(rest) < want:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                rest += chunk
            body_bytes = rest[:want]
        else:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                rest += chunk
                if time.monotonic() - began > timeout:
                    raise socket.timeout()
            body_bytes = dechunk(rest) if "chunked" in hdrs.get("transfer-encoding", "") else rest
        sock.close()
        return Answer(status, hdrs, body_bytes, elapsed=time.monotonic() - began)
    except socket.timeout:
        sock.close()
        return Answer(error=f"no complete answer within {timeout:g} s" + (f" (got {len(data)} bytes)" if data else ""),
                      elapsed=time.monotonic() - began)
    except OSError as error:
        sock.close()
        return Answer(error=f"{type(error).__name__}: {error}" + (f" after {len(data)} bytes" if data else ""),
                      elapsed=time.monotonic() - began)


def dechunk(data):
    out = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        try:
            size = int(size_line.split(b";")[0], 16)
        except ValueError:
            break
        if size == 0:
            break
        out += data[:size]
        data = data[size + 2:]
    return out
