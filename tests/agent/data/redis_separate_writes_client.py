"""A raw-socket Redis client for the pairing test (tests/agent/test_pairing_live.py): pipelined
commands one per write, some of them lost in a full ring buffer, driven step by step by the test.

``python redis_separate_writes_client.py --port N``: prints ``READY`` and waits for a line; opens
connections A and B; on A sends ``BLPOP`` of an empty list with a 2 s timeout (A is answered
nothing until then, so what follows waits in Redis) and ``SET k1`` / ``GET k1``, one write each;
prints ``STEP`` and waits for a line (the test drains the ring buffer). Then B sends a SET of a
value larger than the test's ring buffer (filling it) and A ``SET k2`` / ``GET k2``: lost, as the
test does not poll; ``STEP``, a line (the test drains). Then A ``SET k3`` / ``GET k3``. It reads
every reply and prints one JSON line per GET as it saw it (``{"key": k, "value": v}``), then
``DONE``.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys

BIG = 200_000
VALUE = 20_000


def command(*words: str) -> bytes:
    return b"*%d\r\n" % len(words) + b"".join(b"$%d\r\n%s\r\n" % (len(w), w.encode()) for w in words)


class Replies:
    """RESP2 replies of one connection, read as they come (nil, simple strings, bulk strings)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.buf = sock, b""

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self.buf += self.sock.recv(65536)
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def next(self) -> str | None:
        line = self._line()
        if line[:1] == b"$" and line != b"$-1":
            size = int(line[1:])
            while len(self.buf) < size + 2:
                self.buf += self.sock.recv(65536)
            value, self.buf = self.buf[:size], self.buf[size + 2 :]
            return value.decode()
        return None if line in (b"$-1", b"*-1") else line[1:].decode()


def step() -> None:
    print("STEP", flush=True)
    sys.stdin.readline()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    port = parser.parse_args().port
    print("READY", flush=True)
    sys.stdin.readline()
    a = socket.create_connection(("127.0.0.1", port))
    b = socket.create_connection(("127.0.0.1", port))
    for s in (a, b):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    # Values of 20 KB: one does not fit in what the big SET leaves of the ring buffer.
    values = {f"pairing-k{i}": (f"value of pairing-k{i}: " + str(i) * VALUE)[:VALUE] for i in (1, 2, 3)}
    sent = ["BLPOP"]
    a.sendall(command("BLPOP", "pairing-empty-list", "2"))
    for i, key in enumerate(values, 1):
        if i == 2:
            b.sendall(command("SET", "pairing-big", "x" * BIG))  # fills the ring buffer
        a.sendall(command("SET", key, values[key]))
        a.sendall(command("GET", key))
        sent += ["SET", key]
        if i < 3:
            step()
    replies = Replies(a)
    for what in sent:
        reply = replies.next()
        if what not in ("BLPOP", "SET"):
            print(json.dumps({"key": what, "value": reply}), flush=True)
    assert Replies(b).next() == "OK"
    a.close()
    b.close()
    print("DONE", flush=True)


if __name__ == "__main__":
    main()
