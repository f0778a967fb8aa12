"""Process and port helpers the bench scripts share (ops/bench/api.py, ops/bench/compare.py): everything
they start listens on 127.0.0.1 only."""
import atexit
import os
import signal
import socket
import subprocess
import time


def free_port():
    """A TCP port on 127.0.0.1 nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port, seconds=60):
    """Returns once something accepts connections on 127.0.0.1:port; exits the script after `seconds`."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


def wait_for_file(path, seconds=60):
    """Returns once `path` exists (a server's ready file); exits the script after `seconds`."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        if os.path.exists(path):
            return
        time.sleep(0.05)
    raise SystemExit(f"{path} never appeared")


def stop(process):
    """SIGTERM, then SIGKILL if it has not exited within 30 s."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


def stopped_at_exit(process):
    """`process`, stopped when the script ends if it still runs then, whatever ended the script (a
    missing tool, a failed figure, ^C): no server a benchmark started outlives it."""
    atexit.register(lambda: process.poll() is None and stop(process))
    return process
