"""A small real HTTP backend (``http.server``) for nginx to proxy to.

Run as ``python -m pxq.testing.backend [--port N]``; it prints ``READY <port>`` on stdout once it
listens on 127.0.0.1 (port 0 = let the kernel pick). Endpoints:

=================  ==========================================================
``GET /``          200, a small HTML page
``GET /api/items`` 200, a JSON list
``GET /api/slow``  200 JSON after sleeping ``SLOW_SECONDS`` (150 ms)
``GET /missing``   404 (so is any other unknown path)
``GET /api/error`` 500, a JSON error
``POST /api/echo`` 200, JSON echoing the request body and its size
``GET /api/stream`` 200, a JSON body sent with ``Transfer-Encoding: chunked``
``GET /legacy``    200, a body without Content-Length ended by closing the connection
``GET /ws``        with ``Upgrade``: 101 Switching Protocols, then echoes raw bytes until EOF
=================  ==========================================================

It speaks HTTP/1.1 with keep-alive and sends Content-Length except where noted.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SLOW_SECONDS = 0.15
ITEMS = [{"id": i, "name": f"item-{i}", "price_cents": 100 * i + 99} for i in range(1, 6)]
INDEX_HTML = (
    "<!doctype html><html><head><title>pxq test backend</title></head>"
    "<body><h1>pxq test backend</h1><p>Real traffic for pxq's tests.</p></body></html>"
)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "pxq-test-backend/1"
    # Headers and body go out in two writes; without TCP_NODELAY, Nagle plus delayed ACKs add
    # 40 ms to some responses, which would blur the slow endpoint in latency tests.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib's name
        pass  # quiet: tests read the traffic, not the log

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, obj: object) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json")

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        path = self.path.split("?", 1)[0]
        if path == "/":
            self._send(200, INDEX_HTML.encode(), "text/html; charset=utf-8")
        elif path == "/api/items":
            self._json(200, {"items": ITEMS})
        elif path == "/api/slow":
            time.sleep(SLOW_SECONDS)
            self._json(200, {"slow": True, "slept_ms": int(SLOW_SECONDS * 1000)})
        elif path == "/api/error":
            self._json(500, {"error": "the backend failed on purpose"})
        elif path == "/api/stream":
            self._chunked([b'{"part": 1}', b', {"part": 2}', b', {"part": 3}'])
        elif path == "/legacy":
            self._close_delimited(b"an old-style body, ended by closing the connection\n")
        elif path == "/ws" and "upgrade" in self.headers.get("Connection", "").lower():
            self._upgrade()
        else:
            self._json(404, {"error": "not found", "path": path})

    def _chunked(self, parts: list[bytes]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for part in parts:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")

    def _close_delimited(self, body: bytes) -> None:
        self.close_connection = True
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _upgrade(self) -> None:
        """Switch to a trivial echo protocol: whatever arrives goes back, until EOF (bounded)."""
        self.close_connection = True
        self.send_response(101, "Switching Protocols")
        self.send_header("Connection", "Upgrade")
        self.send_header("Upgrade", self.headers.get("Upgrade", "echo"))
        self.end_headers()
        self.wfile.flush()
        for _ in range(1000):
            data = self.rfile.read1(4096)  # read1: bytes already buffered come first
            if not data:
                break
            self.wfile.write(data)

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.path.split("?", 1)[0] == "/api/echo":
            self._json(200, {"echo": body.decode("utf-8", errors="replace"), "size": len(body)})
        else:
            self._json(404, {"error": "not found", "path": self.path})


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # http.server's default backlog is 5


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args(argv)
    server = Server(("127.0.0.1", args.port), Handler)
    print(f"READY {server.server_address[1]}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
