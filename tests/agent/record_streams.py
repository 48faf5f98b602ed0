"""Record the byte streams in pxq/agent/protocols/http1/streams/ from real servers on loopback.

    .venv/bin/python tests/agent/record_streams.py

Each exchange below runs against real nginx or the real ``http.server`` backend through pxq's
recording proxy (``record_raw=True``), which keeps every chunk as it was read from the socket,
with its direction and timestamp. The streams are saved as JSON: ``chunks`` is a list of
``[direction, ns_since_first_chunk, data]`` with direction ``"req"`` (client to server) or
``"resp"``, and data as a latin-1 string (one character per byte). The parser tests replay them;
re-recording changes dates, ports and timings but not what the tests assert.
"""

from __future__ import annotations

import http.client
import json
import socket
import sys
import time

from pxq.agent.protocols.http1 import RECORDED_STREAMS
from pxq.testing.recording_proxy import RecordingProxy
from pxq.testing.workload import ECHO_BODY, nginx_server, python_backend

STREAMS = RECORDED_STREAMS
TIMEOUT = 5.0


def _read_until_closed(sock: socket.socket, limit: int = 1 << 20) -> bytes:
    data = b""
    while len(data) < limit:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def _read_until(sock: socket.socket, marker: bytes) -> bytes:
    data = b""
    deadline = time.monotonic() + TIMEOUT
    while marker not in data and time.monotonic() < deadline:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def _raw(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def keepalive_mix(port: int) -> None:
    """One keep-alive connection: GET, POST (Content-Length and chunked), 404, 500, HEAD, a body
    over 1 KiB, and a chunked response (nginx re-chunks the backend's chunked body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    for method, path, body, headers in (
        ("GET", "/", None, {}),
        ("GET", "/api/items", None, {}),
        ("POST", "/api/echo", ECHO_BODY, {"Content-Type": "application/json"}),
        ("POST", "/api/echo", [b"first-chunk;", b"second-chunk;"], {"Transfer-Encoding": "chunked"}),
        ("GET", "/missing", None, {}),
        ("GET", "/api/error", None, {}),
        ("HEAD", "/static/big.json", None, {}),
        ("GET", "/static/big.json", None, {}),
        ("GET", "/api/stream", None, {}),
    ):
        conn.request(method, path, body=body, headers=headers, encode_chunked="Transfer-Encoding" in headers)
        conn.getresponse().read()
    conn.close()


def pipelined(port: int) -> None:
    """Four requests in one write, a HEAD among them; nginx answers in order, then closes."""
    sock = _raw(port)
    sock.sendall(
        b"GET /static/hello.txt HTTP/1.1\r\nHost: localhost\r\n\r\n"
        b"HEAD /static/big.json HTTP/1.1\r\nHost: localhost\r\n\r\n"
        b"GET /api/items HTTP/1.1\r\nHost: localhost\r\n\r\n"
        b"GET /static/big.json HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    _read_until_closed(sock)
    sock.close()


def expect_continue(port: int) -> None:
    """POST with Expect: 100-continue: the body goes out after nginx's 100 Continue."""
    body = b'{"waited": "for 100 Continue"}'
    sock = _raw(port)
    sock.sendall(
        b"POST /api/echo HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        b"Expect: 100-continue\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
    )
    interim = _read_until(sock, b"\r\n\r\n")
    if not interim.startswith(b"HTTP/1.1 100"):
        raise RuntimeError(f"expected 100 Continue from nginx, got {interim[:80]!r}")
    sock.sendall(body)
    _read_until_closed(sock)
    sock.close()


def upgrade_refused(port: int) -> None:
    """An Upgrade request nginx does not honour (no upgrade config): a plain 200, then another
    request on the same connection."""
    sock = _raw(port)
    sock.sendall(
        b"GET /static/hello.txt HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\n"
        b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    _read_until(sock, b"hello from nginx\n")
    sock.sendall(b"GET /static/index.html HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    _read_until_closed(sock)
    sock.close()


def upgrade_101(port: int) -> None:
    """The backend switches protocols (101) and echoes raw, non-HTTP bytes."""
    sock = _raw(port)
    sock.sendall(b"GET /ws HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
    _read_until(sock, b"\r\n\r\n")
    sock.sendall(b"\x81\x05hello, not HTTP at all\r\n\r\n")
    _read_until(sock, b"at all\r\n\r\n")
    sock.shutdown(socket.SHUT_WR)
    _read_until_closed(sock)
    sock.close()


def http10_close_delimited(port: int) -> None:
    """An HTTP/1.0 request; the backend's body has no Content-Length and ends at close."""
    sock = _raw(port)
    sock.sendall(b"GET /legacy HTTP/1.0\r\nHost: localhost\r\n\r\n")
    _read_until_closed(sock)
    sock.close()


NGINX_EXCHANGES = (keepalive_mix, pipelined, expect_continue, upgrade_refused)
BACKEND_EXCHANGES = (upgrade_101, http10_close_delimited)


def _save(name: str, server: str, doc: str, proxy: RecordingProxy) -> None:
    if len(proxy.connections) != 1:
        raise RuntimeError(f"{name}: expected one connection, saw {len(proxy.connections)}")
    chunks = proxy.connections[0].chunks
    t0 = chunks[0][1]
    record = {
        "name": name,
        "server": server,
        "description": " ".join(doc.split()),
        "chunks": [[d, ts - t0, data.decode("latin-1")] for d, ts, data in chunks],
    }
    path = STREAMS / f"{name}.json"
    path.write_text(json.dumps(record, indent=1) + "\n")
    print(f"{path}: {len(chunks)} chunks", file=sys.stderr)


def _record(exchange, port: int, server_pid: int, server: str) -> None:
    with RecordingProxy(port, server_pid=server_pid, record_raw=True) as proxy:
        exchange(proxy.port)
    _save(exchange.__name__, server, exchange.__doc__ or "", proxy)


def main() -> int:
    STREAMS.mkdir(exist_ok=True)
    with python_backend() as backend:
        with nginx_server(backend.port) as nginx:
            for exchange in NGINX_EXCHANGES:
                _record(exchange, nginx.port, nginx.master_pid, "nginx/1.22.1 -> pxq test backend")
        for exchange in BACKEND_EXCHANGES:
            _record(exchange, backend.port, backend.pid, "pxq test backend (http.server)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
