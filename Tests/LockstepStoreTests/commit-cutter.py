#!/usr/bin/env python3
"""A TCP proxy in front of PostgreSQL that loses a COMMIT's answer, or ends a connection mid-result, for PostgresFaultTests.

Usage: commit-cutter.py LISTEN_PORT TARGET_PORT ARM_FILE

Forwards every connection to 127.0.0.1:TARGET_PORT. ARM_FILE holds the bytes that mark a commit: COMMIT
(the log's locked way) or the writing statement's name (its Bind, sent ahead and committed on its own). When a client sends
them while ARM_FILE exists, the proxy deletes ARM_FILE, forwards the message, waits for the server's
ReadyForQuery (so the transaction has committed), and closes both sides without passing the answer on:
the client sees its connection lost during the commit, with the transaction in fact committed.

ARM_FILE holding "rows:N:MARK" instead: when a client sends MARK (a query's text), the proxy deletes ARM_FILE,
forwards the query, passes on the first N bytes of the server's answer at once and closes both sides: the
client's connection ends in the middle of a result whose rows it has not all read. N may be "row": the
answer up to the end of its first DataRow or CommandComplete (a statement prepared on the way answered
whole). Prints "ready" once it listens.
"""
import os
import socket
import sys
import threading

listen_port, target_port, arm_file = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]


READY = b"Z\x00\x00\x00\x05"  # ReadyForQuery: the exchange, and any commit it ends, is over


def armed():
    try:
        with open(arm_file, "rb") as file:
            return file.read() or b"COMMIT"
    except OSError:
        return None


def cut_at(answer, spec):
    """Where to cut `answer` by `spec` (a byte count, or "row": after the first DataRow or CommandComplete),
    and how much of it may be passed on meanwhile (whole messages, in "row" mode)."""
    if spec != "row":
        return (int(spec) if len(answer) >= int(spec) else None), 0
    at = 0
    while at + 5 <= len(answer):
        end = at + 1 + int.from_bytes(answer[at + 1:at + 5], "big")
        if end > len(answer):
            break
        if answer[at:at + 1] in (b"D", b"C"):
            return end, at
        at = end
    return None, at


def pipe(source, sink, client_side, pair):
    try:
        while True:
            data = source.recv(65536)
            if not data:
                break
            mark = armed()
            if client_side and mark and mark.startswith(b"rows:"):
                _, length, query = mark.split(b":", 2)
                if query in data:
                    os.unlink(arm_file)
                    pair["cut after"] = length.decode()
                    sink.sendall(data)
                    continue
            elif client_side and mark and mark in data:
                os.unlink(arm_file)
                pair["cut"] = True
                sink.sendall(data)
                # The server's answer is read here and dropped: the commit happened, the client never hears.
                pair["server"].settimeout(5)
                answer = b""
                try:
                    while READY not in answer:
                        chunk = pair["server"].recv(65536)
                        if not chunk:
                            break
                        answer += chunk
                except OSError:
                    pass
                break
            if not client_side and pair.get("cut"):
                break
            if not client_side and "cut after" in pair:
                # The answer's first bytes, all at once, then the end of the connection.
                # (In "row" mode the messages before it go on as they come: a statement prepared on the
                # way is answered before the client sends the rest.)
                answer = data
                while True:
                    cut, ready = cut_at(answer, pair["cut after"])
                    if cut is not None:
                        sink.sendall(answer[:cut])
                        break
                    sink.sendall(answer[:ready])
                    answer = answer[ready:]
                    chunk = source.recv(65536)
                    if not chunk:
                        sink.sendall(answer)
                        break
                    answer += chunk
                break
            sink.sendall(data)
    except OSError:
        pass
    for side in (pair["client"], pair["server"]):
        try:
            side.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        side.close()


listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("127.0.0.1", listen_port))
listener.listen(64)
print("ready", flush=True)
while True:
    client, _ = listener.accept()
    server = socket.create_connection(("127.0.0.1", target_port))
    pair = {"client": client, "server": server}
    threading.Thread(target=pipe, args=(client, server, True, pair), daemon=True).start()
    threading.Thread(target=pipe, args=(server, client, False, pair), daemon=True).start()
