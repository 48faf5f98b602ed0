"""Real servers and clients for the socket tracer's kernel tests, run as child processes (the
tracer never traces its own process).

``python sock_apps.py server [--host 127.0.0.1|::1]`` prints ``PORT <n>`` and serves until stdin
closes. ``python sock_apps.py proxy --port N`` does the same as a keep-alive proxy in front of the
server on port N that moves every response body with splice(2) (socket -> pipe -> socket).
``python sock_apps.py client --port N --scenario NAME [--host H] [...]`` prints ``READY``, waits
for a line on stdin (sent once the tracer is attached), runs the scenario, prints one JSON line
per request made (``{"path", "status", "size"}``) and exits.

Server endpoints (HTTP/1.1, keep-alive, Content-Length unless said):

=====================  =====================================================================
``GET /hello``         200 ``hello world\\n``
``GET /missing``       404 ``no such thing\\n``
``GET /bytes?n=N``     200, N bytes of ``abcdefghij`` repeated
``GET /slow?ms=M``     200 ``slow\\n`` after M ms
``GET /chunked``       200 with Transfer-Encoding: chunked, chunks ``one,`` ``two,`` ``three``
``GET /drip``          200 Content-Length 1 MiB, sent 8 KiB every 20 ms (a client gets killed)
``GET /file?n=N``      200, N pattern bytes sent from a file with sendfile(2) (N <= 4 MiB)
``GET /echo?n=N...``   200, the request target and a newline, repeated to N bytes, sent with one
                       send() (a blocking socket: one call however large)
``POST /upload``       200 ``got N bytes\\n`` after reading the whole body
``GET /mark?n=N``      200, the request target and a newline, then N pattern bytes
``GET /encoded?enc=E`` 200, ``/mark``'s body (``n`` too) with Content-Encoding E (gzip/deflate)
``CONNECT host:port``  never a tunnel: 403 with a body for ``forbidden.*`` hosts, else 407 with
                       a body; both Content-Length, keep-alive
=====================  =====================================================================
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import gzip
import http.client
import json
import os
import socket
import sys
import tempfile
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

PATTERN = b"abcdefghij"
DRIP_TOTAL = 1 << 20
DRIP_PIECE = 8192
FILE_SIZE = 4 << 20  # the file /file sends from
MSG_WAITFORONE = 0x10000  # linux/socket.h; the socket module does not export it


def pattern_bytes(n: int) -> bytes:
    return (PATTERN * (n // len(PATTERN) + 1))[:n]


def echo_body(target: str, n: int) -> bytes:
    """``/mark``'s body: the request target (so a row paired with another's response shows it)."""
    return f"{target}\n".encode() + pattern_bytes(n)


# Content-Encoding values as RFC 9110 defines them: gzip is RFC 1952, deflate the zlib format (RFC 1950).
ENCODERS = {"gzip": gzip.compress, "deflate": zlib.compress}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, format, *args):  # noqa: A002
        pass

    def _send(self, status: int, body: bytes, **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):  # noqa: N802
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        if url.path == "/hello":
            self._send(200, b"hello world\n")
        elif url.path in ("/mark", "/encoded"):
            body = echo_body(self.path, int(query.get("n", ["0"])[0]))
            if url.path == "/mark":
                self._send(200, body)
            else:
                enc = query["enc"][0]
                self._send(200, ENCODERS[enc](body), Content_Encoding=enc)
        elif url.path == "/bytes":
            self._send(200, pattern_bytes(int(query["n"][0])))
        elif url.path == "/echo":
            n = int(query["n"][0])
            line = self.path.encode() + b"\n"
            body = (line * (n // len(line) + 1))[:n]
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(n))
            self.end_headers()
            self.connection.sendall(body)
        elif url.path == "/slow":
            time.sleep(int(query["ms"][0]) / 1000)
            self._send(200, b"slow\n")
        elif url.path == "/chunked":
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for part in (b"one,", b"two,", b"three"):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                self.wfile.flush()
                time.sleep(0.01)
            self.wfile.write(b"0\r\n\r\n")
        elif url.path == "/file":
            n = int(query["n"][0])
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(n))
            self.end_headers()
            sent = 0
            with open(self.server.file_path, "rb") as f:
                while sent < n:
                    sent += os.sendfile(self.connection.fileno(), f.fileno(), sent, n - sent)
        elif url.path == "/drip":
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(DRIP_TOTAL))
            self.end_headers()
            try:
                for _ in range(DRIP_TOTAL // DRIP_PIECE):
                    self.wfile.write(pattern_bytes(DRIP_PIECE))
                    time.sleep(0.02)
            except OSError:
                self.close_connection = True
        else:
            self._send(404, b"no such thing\n")

    def do_CONNECT(self):  # noqa: N802
        if self.path.startswith("forbidden."):
            self._send(403, f"forbidden: {self.path}\n".encode())
        else:
            self._send(407, f"proxy auth required for {self.path}\n".encode(), Proxy_Authenticate="Basic")

    def do_POST(self):  # noqa: N802
        length = int(self.headers.get("Content-Length", "0"))
        got = 0
        while got < length:
            chunk = self.rfile.read(min(65536, length - got))
            if not chunk:
                break
            got += len(chunk)
        self._send(200, b"got %d bytes\n" % got)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256

    def __init__(self, host: str, file_path: str):
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.file_path = file_path
        super().__init__((host, 0), Handler)


def serve(host: str) -> None:
    with tempfile.NamedTemporaryFile(prefix="pxq-sendfile-") as f:
        f.write(pattern_bytes(FILE_SIZE))
        f.flush()
        server = Server(host, f.name)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        print(f"PORT {server.server_address[1]}", flush=True)
        sys.stdin.read()  # until the test closes stdin
        server.shutdown()


# -- a proxy that splices ------------------------------------------------------------------------
def _read_head(sock: socket.socket) -> bytes:
    """One message head (up to and with its blank line), nothing after it: peeked first, then
    read exactly, so that the body stays in the socket for splice."""
    while True:
        peek = sock.recv(65536, socket.MSG_PEEK)
        if not peek:
            return b""
        end = peek.find(b"\r\n\r\n")
        if end >= 0:
            want, head = end + 4, b""
            while len(head) < want:
                head += sock.recv(want - len(head))
            return head
        time.sleep(0.001)


def _splice_all(src: int, dst: int, n: int) -> None:
    """Move n bytes from socket src to socket dst through a pipe, never through user memory."""
    rd, wr = os.pipe()
    try:
        while n > 0:
            got = os.splice(src, wr, min(n, 1 << 16))
            if got == 0:
                raise ConnectionError("the backend closed mid-body")
            n -= got
            while got > 0:
                got -= os.splice(rd, dst, got)
    finally:
        os.close(rd)
        os.close(wr)


def _proxy_connection(client: socket.socket, backend_port: int, host: str) -> None:
    backend = socket.create_connection((host, backend_port))
    with client, backend:
        while True:
            head = _read_head(client)
            if not head:
                return
            backend.sendall(head)  # GETs only: no request body
            resp = _read_head(backend)
            client.sendall(resp)
            length = int(resp.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            _splice_all(backend.fileno(), client.fileno(), length)


def proxy(host: str, backend_port: int) -> None:
    listener = socket.create_server((host, 0), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
    print(f"PORT {listener.getsockname()[1]}", flush=True)

    def accept_loop() -> None:
        while True:
            conn, _ = listener.accept()
            threading.Thread(target=_proxy_connection, args=(conn, backend_port, host), daemon=True).start()

    threading.Thread(target=accept_loop, daemon=True).start()
    sys.stdin.read()


# -- clients --------------------------------------------------------------------------------------
def report(path: str, status: int, size: int, **extra) -> None:
    if FORKED:
        extra["pid"] = os.getpid()
    print(json.dumps({"path": path, "status": status, "size": size, **extra}), flush=True)


FORKED = False  # --fork: the scenario runs in a child forked on "go" (its reports carry its pid)


def http_get(conn: http.client.HTTPConnection, path: str) -> None:
    conn.request("GET", path)
    resp = conn.getresponse()
    body = resp.read()
    report(path, resp.status, len(body))


def complete_responses(data: bytes) -> int:
    """How many complete Content-Length responses ``data`` starts with."""
    done, at = 0, 0
    while True:
        end = data.find(b"\r\n\r\n", at)
        if end < 0:
            return done
        head = data[at:end].decode().lower()
        length = int(head.split("content-length: ")[1].split("\r\n")[0])
        if len(data) < end + 4 + length:
            return done
        done, at = done + 1, end + 4 + length


def read_responses(sock: socket.socket, count: int) -> bytes:
    """Read until ``count`` complete responses are in."""
    data = b""
    while complete_responses(data) < count:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def scenario_basic(host: str, port: int) -> None:
    conn = http.client.HTTPConnection(host, port, timeout=10)
    http_get(conn, "/hello")
    http_get(conn, "/missing")
    http_get(conn, "/slow?ms=200")
    body = b'{"name": "pxq", "ok": true}'
    conn.request("POST", "/upload", body=body, headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    report("/upload", resp.status, len(resp.read()))
    conn.close()


def scenario_pipelined(host: str, port: int) -> None:
    sock = socket.create_connection((host, port), timeout=10)
    paths = ["/hello", "/bytes?n=100", "/missing"]
    sock.sendall(b"".join(f"GET {p} HTTP/1.1\r\nHost: pxq\r\n\r\n".encode() for p in paths))
    read_responses(sock, len(paths))
    for p in paths:
        report(p, 0, 0)
    sock.close()


def get_in_turn(paths: list[str], host: str, port: int) -> None:
    """GET each path in turn over one keep-alive connection."""
    conn = http.client.HTTPConnection(host, port, timeout=10)
    for path in paths:
        http_get(conn, path)
    conn.close()


def scenario_upload(host: str, port: int) -> None:
    conn = http.client.HTTPConnection(host, port, timeout=30)
    body = pattern_bytes(1 << 20)
    conn.request("POST", "/upload", body=body, headers={"Content-Type": "application/octet-stream"})
    resp = conn.getresponse()
    report("/upload", resp.status, len(resp.read()))
    http_get(conn, "/hello")
    conn.close()


def scenario_concurrent(host: str, port: int, threads: int, requests: int) -> None:
    lock = threading.Lock()

    def worker(t: int) -> None:
        conn = http.client.HTTPConnection(host, port, timeout=30)
        for r in range(requests):
            path = f"/bytes?n={10 + r}&t={t}&r={r}"
            conn.request("GET", path)
            resp = conn.getresponse()
            body = resp.read()
            with lock:
                report(path, resp.status, len(body))
        conn.close()

    pool = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join()


def scenario_vectored(host: str, port: int) -> None:
    """writev/readv and sendmsg/recvmsg_into with several buffers."""
    sock = socket.create_connection((host, port), timeout=10)
    sock.settimeout(None)  # os.readv on the fd needs a blocking socket
    # A request in three iovecs through writev, a 40000-byte response read through readv.
    parts = [b"GET /bytes?n=40000 HTTP/1.1\r\n", b"Host: pxq\r\n", b"X-Via: writev\r\n\r\n"]
    assert os.writev(sock.fileno(), parts) == sum(map(len, parts))
    data = b""
    while complete_responses(data) < 1:
        bufs = [bytearray(1000), bytearray(30000), bytearray(50000)]
        n = os.readv(sock.fileno(), bufs)
        if n == 0:
            break
        data += b"".join(bytes(b) for b in bufs)[:n]
    report("/bytes?n=40000", 200, len(data))
    # A request with a body in four buffers through sendmsg, the response through recvmsg_into.
    body = pattern_bytes(3000)
    head = f"POST /upload HTTP/1.1\r\nHost: pxq\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    sent = sock.sendmsg([head[:10], head[10:], body[:1000], body[1000:]])
    assert sent == len(head) + len(body)
    got = b""
    while complete_responses(got) < 1:
        bufs = [bytearray(8), bytearray(4096)]
        n, _, _, _ = sock.recvmsg_into(bufs)
        if n == 0:
            break
        got += (bytes(bufs[0]) + bytes(bufs[1]))[:n]
    report("/upload", 200, len(got))
    sock.close()


def scenario_dup2(host: str, port: int) -> None:
    """A request on socket A; then socket B is dup2()ed onto A's fd (A is closed without a
    close() call) and the next requests go out, and their responses come in, through that fd
    (three: a socket the tracker meets mid-life waits for three exchanges in step before its rows
    go out, see conn_tracker's probation)."""
    a = socket.create_connection((host, port), timeout=10)
    b = socket.create_connection((host, port), timeout=10)
    a.settimeout(None)
    b.settimeout(None)
    fd = a.fileno()
    for i, path in enumerate(("/hello", "/missing", "/missing", "/missing")):
        if i == 1:
            os.dup2(b.fileno(), fd)
        local_port = socket.socket(fileno=os.dup(fd)).getsockname()[1]
        os.write(fd, f"GET {path} HTTP/1.1\r\nHost: pxq\r\n\r\n".encode())
        data = b""
        while complete_responses(data) < 1:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            data += chunk
        report(path, 0, len(data), fd=fd, local_port=local_port)
    b.close()
    a.close()


class _Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class _Msghdr(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32), ("iov", ctypes.POINTER(_Iovec)),
        ("iovlen", ctypes.c_size_t), ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
        ("flags", ctypes.c_int),
    ]  # fmt: skip


class _Mmsghdr(ctypes.Structure):
    _fields_ = [("hdr", _Msghdr), ("len", ctypes.c_uint)]


def _mmsg_vector(buffers: list[list[ctypes.Array]]) -> ctypes.Array:
    """An mmsghdr array: one message per list of buffers (each buffer an iovec)."""
    vec = (_Mmsghdr * len(buffers))()
    for msg, bufs in zip(vec, buffers):
        iovs = (_Iovec * len(bufs))(*[_Iovec(ctypes.addressof(b), len(b)) for b in bufs])
        msg.hdr.iov, msg.hdr.iovlen = iovs, len(bufs)
        msg._keep = iovs  # the iovec arrays must outlive the call
    return vec


def scenario_mmsg(host: str, port: int) -> None:
    """Two pipelined requests in one sendmmsg (two messages, the second in two iovecs); the
    responses read with recvmmsg."""
    libc = ctypes.CDLL(None, use_errno=True)
    sock = socket.create_connection((host, port), timeout=10)
    sock.settimeout(None)
    first = b"GET /hello HTTP/1.1\r\nHost: pxq\r\n\r\n"
    second = [b"GET /bytes?n=300 HTTP/1.1\r\n", b"Host: pxq\r\n\r\n"]
    out = [[ctypes.create_string_buffer(first, len(first))], [ctypes.create_string_buffer(p, len(p)) for p in second]]
    if libc.sendmmsg(sock.fileno(), _mmsg_vector(out), 2, 0) != 2:
        raise OSError(ctypes.get_errno(), "sendmmsg")
    data = b""
    while complete_responses(data) < 2:
        bufs = [[ctypes.create_string_buffer(100), ctypes.create_string_buffer(4000)] for _ in range(3)]
        vec = _mmsg_vector(bufs)
        n = libc.recvmmsg(sock.fileno(), vec, 3, MSG_WAITFORONE, None)
        if n <= 0:
            break
        for msg, (a, b) in zip(vec[:n], bufs):
            data += (a.raw + b.raw)[: msg.len]
    report("/hello", 200, 0)
    report("/bytes?n=300", 200, len(data))
    sock.close()


def scenario_steady(host: str, port: int, rate: float, seconds: float) -> None:
    """Keep-alive GETs at ``rate`` per second for ``seconds``, each path unique (echoed back)."""
    conn = http.client.HTTPConnection(host, port, timeout=10)
    start = time.monotonic()
    i = 0
    while time.monotonic() - start < seconds:
        http_get(conn, f"/echo?n=64&steady={i}")
        i += 1
        pause = start + i / rate - time.monotonic()
        if pause > 0:
            time.sleep(pause)
    conn.close()


def scenario_connect_refused(host: str, port: int) -> None:
    """CONNECTs a proxy refuses with a body (407, then 403), each followed by a GET on the same
    keep-alive connection."""
    sock = socket.create_connection((host, port), timeout=10)
    for target in ("proxy-auth.example:443", "/mark?i=2", "forbidden.example:443", "/mark?i=4"):
        method = "GET" if target.startswith("/") else "CONNECT"
        sock.sendall(f"{method} {target} HTTP/1.1\r\nHost: pxq\r\n\r\n".encode())
        data = read_responses(sock, 1)
        status = int(data.split(b" ", 2)[1])
        report(target, status, len(data.split(b"\r\n\r\n", 1)[1]), method=method)
    sock.close()


def scenario_encoded(host: str, port: int) -> None:
    """Bodies with Content-Encoding: responses gzip and deflate (one decoding past the body
    limit), a gzip request body, then a plain request. Sizes reported are the wire's (http.client
    does not decode)."""
    conn = http.client.HTTPConnection(host, port, timeout=10)
    for path in ("/encoded?enc=gzip&n=100", "/encoded?enc=deflate&n=200", "/encoded?enc=gzip&n=60000"):
        http_get(conn, path)
    body = gzip.compress(echo_body("/upload", 3000))
    conn.request("POST", "/upload", body=body, headers={"Content-Type": "text/plain", "Content-Encoding": "gzip"})
    resp = conn.getresponse()
    report("/upload", resp.status, len(resp.read()), sent=len(body))
    http_get(conn, "/hello")
    conn.close()


def scenario_drip(host: str, port: int) -> None:
    """Start a slow 1 MiB download and keep reading until killed."""
    conn = http.client.HTTPConnection(host, port, timeout=30)
    conn.request("GET", "/drip")
    resp = conn.getresponse()
    report("/drip", resp.status, 0)
    while resp.read(4096):
        pass


SCENARIOS = {
    "basic": scenario_basic,
    "pipelined": scenario_pipelined,
    "chunked": functools.partial(get_in_turn, ["/chunked", "/hello"]),
    "upload": scenario_upload,
    "vectored": scenario_vectored,
    "drip": scenario_drip,
    "sendfile": functools.partial(get_in_turn, ["/file?n=5000", "/hello"]),
    "sendfile_big": functools.partial(get_in_turn, ["/file?n=5000", "/file?n=3145728", "/echo?n=30&after=file"]),
    "big_write": functools.partial(get_in_turn, ["/echo?n=3145728&big=1", "/echo?n=40&after=big"]),
    "proxied": functools.partial(
        get_in_turn, ["/echo?n=5000&r=1", "/echo?n=300000&r=2", "/hello", "/echo?n=3145728&r=4", "/echo?n=20&r=5"]
    ),
    "download": functools.partial(get_in_turn, [f"/echo?n=5000000&download={i}" for i in range(1, 4)]),
    "mmsg": scenario_mmsg,
    "dup2": scenario_dup2,
    # small, big (3 MB: calls larger than what the kernel copies), small, medium; then close
    "hole_then_close": functools.partial(
        get_in_turn, ["/mark?n=10&i=1", "/mark?n=3000000&i=2", "/mark?n=10&i=3", "/mark?n=20000&i=4"]
    ),
    "connect_refused": scenario_connect_refused,
    "encoded": scenario_encoded,
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["server", "client", "proxy"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--scenario", default="basic")
    parser.add_argument("--threads", type=int, default=50)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--fork", action="store_true", help="run the scenario in a child forked on go")
    args = parser.parse_args()
    if args.role == "server":
        serve(args.host)
        return
    if args.role == "proxy":
        proxy(args.host, args.port)
        return
    print("READY", flush=True)
    sys.stdin.readline()
    if args.fork:
        child = os.fork()
        if child:
            _, status = os.waitpid(child, 0)
            sys.exit(os.waitstatus_to_exitcode(status))
        global FORKED
        FORKED = True
        code = 1
        try:
            run_scenario(args)
            code = 0
        finally:
            sys.stdout.flush()
            os._exit(code)  # not through the parent's exit handlers
    run_scenario(args)


def run_scenario(args) -> None:
    if args.scenario == "concurrent":
        scenario_concurrent(args.host, args.port, args.threads, args.requests)
    elif args.scenario == "steady":
        scenario_steady(args.host, args.port, args.rate, args.seconds)
    else:
        SCENARIOS[args.scenario](args.host, args.port)


if __name__ == "__main__":
    main()
