"""Process and port helpers the bench scripts share (ops/bench/*.py): everything they start listens on
127.0.0.1 only, and is stopped when the script ends (`stopped_at_exit`)."""
import atexit
import os
import signal
import socket
import subprocess
import sys
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
        process.wait()


def _exit_on_signal(signum, _frame):
    # SIGTERM or SIGHUP (a parent's timeout, a closed terminal) ends the script as an exit does, so the
    # atexit handlers below run; only SIGKILL skips them (run_stopping sends SIGTERM first).
    sys.exit(128 + signum)


signal.signal(signal.SIGTERM, _exit_on_signal)
signal.signal(signal.SIGHUP, _exit_on_signal)


def stopped_at_exit(process):
    """`process`, stopped when the script ends if it still runs then, whatever ended the script (a
    missing tool, a failed figure, ^C, SIGTERM): no server a benchmark started outlives it."""
    atexit.register(lambda: process.poll() is None and stop(process))
    return process


def run_stopping(argv, timeout):
    """Runs a benchmark script to its end, raising CalledProcessError when it fails; past `timeout`
    seconds it is stopped with SIGTERM (so it stops what it started), then killed, and TimeoutExpired
    is raised."""
    process = subprocess.Popen(argv)
    try:
        status = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop(process)
        raise
    except BaseException:
        stop(process)
        raise
    if status != 0:
        raise subprocess.CalledProcessError(status, argv)
