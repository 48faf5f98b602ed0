"""A raw-socket HTTP/1.1 client pipelining GET requests to nginx, for the HTTP/1 pairing test
under induced ring buffer drops (tests/agent/test_http1_pairing_live.py), run as a child process
(the tracer never traces its own process).

``python http1_pipeline_client.py --port N --plan PLAN.json --out F``. The plan is a list of
connections, each ``{"early": bool, "pause": bool, "bursts": [[mode, [target, ...]], ...]}``;
``mode`` is ``"one_write"`` (every request of the burst in one send), ``"per_write"`` (one send
per request, none waiting for an answer), ``"in_turn"`` (each request waits for its answer) or
``"window"`` (:data:`WINDOW` requests in flight: one more sent for each answer, in its own send).
A burst's answers are all read before the next burst; with ``pause``, the client then prints
``STEP`` and waits for a line on stdin (the test drains the ring buffer meanwhile), and so it
does in the middle of a window burst, once half of its answers came, with requests in flight.
The early connections are opened, and each answers one ``GET /early/<c>``, before the client
prints ``READY`` (the tracer meets them mid-stream).
Then, connection by connection, it waits for a line on stdin, runs the bursts, closes the
connection and prints ``DONE``; after the last, it waits for one more line and exits.

Responses are framed by httptools' parser (llhttp), not by anything of pxq. Writes to ``F`` one
JSON line per response, in order: ``{"conn": c, "target": t, "status": s, "body": text}``.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
from collections.abc import Callable
from typing import Any

import httptools

# Requests in flight in "window" mode.
WINDOW = 4


class Responses:
    """httptools callbacks: the complete responses so far, as (status, body)."""

    def __init__(self) -> None:
        self.done: list[tuple[int, bytes]] = []
        self._body: list[bytes] = []
        self.parser = httptools.HttpResponseParser(self)

    def on_message_begin(self) -> None:
        self._body = []

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        self.done.append((self.parser.get_status_code(), b"".join(self._body)))


class Connection:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.responses = Responses()

    def read_until(self, count: int) -> None:
        while len(self.responses.done) < count:
            data = self.sock.recv(65536)
            if not data:
                raise SystemExit(f"the server closed after {len(self.responses.done)} of {count} responses")
            self.responses.parser.feed_data(data)

    def burst(self, mode: str, targets: list[str], pause: Callable[[], None] | None = None) -> None:
        requests = [
            f"GET {t} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: pxq-pipeline\r\n\r\n".encode() for t in targets
        ]
        start = len(self.responses.done)
        if mode == "one_write":
            self.sock.sendall(b"".join(requests))
        elif mode == "per_write":
            for request in requests:
                self.sock.sendall(request)
        elif mode == "in_turn":
            for n, request in enumerate(requests, start + 1):
                self.sock.sendall(request)
                self.read_until(n)
        elif mode == "window":
            sent = 0
            while sent < len(requests):
                answered = len(self.responses.done) - start
                if pause is not None and answered >= len(requests) // 2:
                    pause()  # the answers to the requests in flight still to come
                    pause = None
                while sent < min(len(requests), answered + WINDOW):
                    self.sock.sendall(requests[sent])
                    sent += 1
                self.read_until(start + answered + 1)
        else:
            raise SystemExit(f"unknown mode {mode!r}")
        self.read_until(start + len(requests))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--plan", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    with open(args.plan) as f:
        plan: list[dict[str, Any]] = json.load(f)

    early = {c: Connection(args.port) for c, conn in enumerate(plan) if conn["early"]}
    for c, conn in early.items():
        conn.burst("in_turn", [f"/early/{c}"])  # connected and answered before the tracer looks

    def pause() -> None:
        print("STEP", flush=True)
        sys.stdin.readline()

    print("READY", flush=True)
    sys.stdin.readline()
    with open(args.out, "w") as out:
        for c, spec in enumerate(plan):
            conn = early[c] if c in early else Connection(args.port)
            skip = len(conn.responses.done)
            targets = []
            for b, (mode, burst) in enumerate(spec["bursts"]):
                if b and spec["pause"]:
                    pause()
                conn.burst(mode, burst, pause if spec["pause"] else None)
                targets += burst
            conn.sock.close()
            for target, (status, body) in zip(targets, conn.responses.done[skip:], strict=True):
                out.write(json.dumps({"conn": c, "target": target, "status": status, "body": body.decode()}) + "\n")
            out.flush()
            print("DONE", flush=True)
            sys.stdin.readline()


if __name__ == "__main__":
    main()
