"""The socket tracer bench's paced C client (bench/bench_socket_tracer.py), built with
AddressSanitizer, through reconnects: a server that ends every third response on a connection
with ``Connection: close`` (nginx's ``keepalive_requests 3``) and closes it.

The client used to push an idle connection back onto its free list a second time when the
server closed it, overrunning the list (ASan: heap-buffer-overflow) and handing one socket to two
requests. Expected values come from the server's side: what it served and how many connections it
closed."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_socket_tracer.py"
REQUESTS_PER_CONNECTION = 3
BODIES = {
    "hello.txt": b"hello\n",
    "index.html": b"<html>" + b"x" * 600 + b"</html>\n",
    "big.json": b"[" + b"1," * 900 + b"1]",
}


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_socket_tracer", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while being made
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


class ClosingServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), ClosingHandler)
        self.lock = threading.Lock()
        self.served: list[tuple[str, str]] = []
        self.closed_by_server = 0


class ClosingHandler(BaseHTTPRequestHandler):
    """Serves /static/<name>?i=N; the third response on a connection says ``Connection: close``."""

    protocol_version = "HTTP/1.1"
    server: ClosingServer

    def setup(self) -> None:
        super().setup()
        self.answered = 0

    def _answer(self, with_body: bool) -> None:
        name = self.path.split("?")[0].removeprefix("/static/")
        body = BODIES[name]
        self.answered += 1
        closing = self.answered == REQUESTS_PER_CONNECTION
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        if closing:
            self.send_header("Connection", "close")  # also sets self.close_connection
        self.end_headers()
        if with_body:
            self.wfile.write(body)
        with self.server.lock:
            self.server.served.append((self.command, self.path))
            self.server.closed_by_server += closing

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._answer(True)

    def do_HEAD(self) -> None:  # noqa: N802
        self._answer(False)

    def log_message(self, *args) -> None:
        pass


@pytest.mark.parametrize(("rate", "count", "conns"), [(2_000, 900, 8), (500, 120, 2)])
def test_paced_client_under_asan_through_reconnects(bench, tmp_path, rate, count, conns):
    client = bench.build_client(str(tmp_path), ("-O1", "-g", "-fsanitize=address", "-fno-omit-frame-pointer"))
    server = ClosingServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        log = tmp_path / "client.log"
        proc = subprocess.run(
            [str(client), "127.0.0.1", str(server.server_address[1]), str(rate), str(count), str(conns), str(log)],
            capture_output=True,
            text=True,
            timeout=60,
            env={"ASAN_OPTIONS": "detect_leaks=1:halt_on_error=1", "PATH": "/usr/bin:/bin"},
        )
    finally:
        server.shutdown()
        server.server_close()
    assert "AddressSanitizer" not in proc.stderr and "LeakSanitizer" not in proc.stderr, proc.stderr
    assert proc.returncode == 0, proc.stderr
    words = proc.stdout.split()
    summary = dict(zip(words[::2], words[1::2]))
    # Every request answered once, none lost to a socket shared by two requests.
    assert (int(summary["done"]), int(summary["errors"])) == (count, 0), proc.stdout
    assert int(summary["reconnects"]) == server.closed_by_server >= count // REQUESTS_PER_CONNECTION - conns
    lines = [line.split() for line in log.read_text().splitlines()]
    assert sorted(int(fields[0]) for fields in lines) == list(range(count))
    expected_served = []
    for i, method, path, status, size, latency_us in lines:
        name = path.split("?")[0].removeprefix("/static/")
        assert (method, name) == ("HEAD" if int(i) % 10 == 9 else "GET", bench.FILES[int(i) % 3])
        assert (int(status), int(size)) == (200, 0 if method == "HEAD" else len(BODIES[name]))
        assert int(latency_us) >= 0
        expected_served.append((method, path))
    assert sorted(server.served) == sorted(expected_served)
