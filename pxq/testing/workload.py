"""A real web workload on loopback: Debian's nginx in front of a Python backend, and a bounded
client that sends it a mix of requests.

* :func:`python_backend` starts :mod:`pxq.testing.backend` in a subprocess.
* :func:`nginx_server` starts the machine's nginx with its own configuration in a temporary
  directory (``daemon off``, error log and pid file there, two workers, keep-alive), listening on
  a free 127.0.0.1 port. It serves ``/static/`` from files it writes and proxies everything else
  to the backend over keep-alive upstream connections.
* :func:`nginx_workload` is both together; with ``databases=True`` it also starts a real
  PostgreSQL and a real redis-server on loopback ports (:func:`demo_databases`) for the backend's
  database paths.
* :func:`run_client_mix` sends a fixed, repeating mix of GET/HEAD/POST requests (2xx, 404, 500,
  slow, chunked upload, a body over 1 KiB) with ``requests`` and ``http.client``, both keeping
  connections alive; :data:`DEMO_MIX` adds the database paths. Bounded in count and time.

Every context manager stops what it started, also on errors.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pxq.agent.procinfo import child_pids
from pxq.testing.backend import SCHEMA_SQL
from pxq.testing.ports import LOOPBACK
from pxq.testing.servers.nginx import error_log, nginx_process
from pxq.testing.servers.postgres import PostgresServer, postgres_server
from pxq.testing.servers.redis import RedisServer, redis_server

START_TIMEOUT = 15.0


class WorkloadError(RuntimeError):
    """A test server did not start; the message carries its own words (log, stderr)."""


def _stop(proc: subprocess.Popen, timeout: float = 5.0, sig: int = signal.SIGTERM) -> None:
    """Stop a process we started: ``sig``, then SIGKILL if it lingers."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(timeout=timeout)
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


@dataclass
class LoopbackServer:
    """A server process we started, listening on 127.0.0.1:``port``."""

    process: subprocess.Popen
    port: int

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"


# -- the Python backend -------------------------------------------------------------------------
@dataclass
class Backend(LoopbackServer):
    pass


# -- the backend's databases -----------------------------------------------------------------------
@dataclass
class Databases:
    postgres: PostgresServer
    redis: RedisServer

    def backend_args(self) -> list[str]:
        return ["--pg-conninfo", self.postgres.conninfo(), "--redis-port", str(self.redis.port)]


@contextlib.contextmanager
def demo_databases() -> Iterator[Databases]:
    """PostgreSQL (a fresh cluster holding the backend's ``users`` table) and redis-server, each on
    a free loopback port in its own temporary directory; both stopped on exit."""
    import psycopg

    with postgres_server() as postgres, redis_server() as redis:
        with psycopg.connect(postgres.conninfo(), autocommit=True) as conn:
            for statement in SCHEMA_SQL:
                conn.execute(statement)
        yield Databases(postgres, redis)


@contextlib.contextmanager
def python_backend(databases: Databases | None = None) -> Iterator[Backend]:
    """Start the test backend on a free loopback port (using ``databases`` if given); stop it on exit."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "pxq.testing.backend", "--port", "0", *(databases.backend_args() if databases else [])],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ready, _, _ = select.select([proc.stdout], [], [], START_TIMEOUT)
        line = proc.stdout.readline() if ready else ""  # type: ignore[union-attr]
        if not line.startswith("READY "):
            _stop(proc)
            raise WorkloadError(f"the test backend did not start: {line!r} {proc.stderr.read()!r}")  # type: ignore[union-attr]
        yield Backend(proc, int(line.split()[1]))
    finally:
        _stop(proc)


# -- nginx --------------------------------------------------------------------------------------
NGINX_CONF = """\
daemon off;
master_process on;
worker_processes 2;
user root root;
pid {work}/nginx.pid;
lock_file {work}/nginx.lock;
error_log {work}/error.log notice;
events {{ worker_connections 512; }}
http {{
    access_log {work}/access.log;
    client_body_temp_path {work}/tmp/body;
    proxy_temp_path {work}/tmp/proxy;
    fastcgi_temp_path {work}/tmp/fastcgi;
    uwsgi_temp_path {work}/tmp/uwsgi;
    scgi_temp_path {work}/tmp/scgi;
    types {{
        text/html html;
        text/plain txt;
        application/json json;
    }}
    default_type application/octet-stream;
    keepalive_timeout 30s;
    keepalive_requests 10000;
    sendfile {sendfile};
    gzip off;
    upstream backend {{
        server {loopback}:{backend_port};
        keepalive 16;
    }}
    server {{
        listen {loopback}:{port};
        server_name localhost;
        root {work}/www;
        location /static/ {{ }}
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
        }}
    }}
}}
"""

# Static files nginx serves itself (path under /static/ -> bytes).
BIG_JSON = json.dumps({"rows": [{"id": i, "label": f"row number {i}", "ok": i % 3 != 0} for i in range(80)]}).encode()
STATIC_FILES = {
    "hello.txt": b"hello from nginx\n",
    "index.html": b"<!doctype html><html><body><p>static page</p></body></html>\n",
    "big.json": BIG_JSON,  # over 1 KiB: bodies in http_events are cut at 1024 bytes
}


@dataclass
class Nginx(LoopbackServer):
    workdir: Path
    backend_port: int

    @property
    def master_pid(self) -> int:
        return self.pid

    def worker_pids(self) -> list[int]:
        """The master's worker processes (children), as they are now."""
        return child_pids(self.master_pid)

    def error_log(self) -> str:
        return error_log(self.workdir)


def _write_site(work: Path, port: int, backend_port: int, sendfile: bool = False) -> Path:
    for sub in ("www/static", "tmp"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    for name, data in STATIC_FILES.items():
        (work / "www" / "static" / name).write_bytes(data)
    conf = work / "nginx.conf"
    conf.write_text(
        NGINX_CONF.format(
            work=work, loopback=LOOPBACK, port=port, backend_port=backend_port, sendfile="on" if sendfile else "off"
        )
    )
    return conf


@contextlib.contextmanager
def nginx_server(
    backend_port: int, workdir: Path | None = None, attempts: int = 3, sendfile: bool = False
) -> Iterator[Nginx]:
    """Start nginx on a free loopback port, proxying to ``backend_port``; stop it on exit (a start
    that fails raises :class:`~pxq.testing.servers.nginx.NginxError` with nginx's error log).
    ``sendfile``: serve static files with sendfile(2), as Debian's default configuration does."""
    work = Path(tempfile.mkdtemp(prefix="pxq-nginx-")) if workdir is None else workdir

    def write_conf(port: int) -> Path:
        return _write_site(work, port, backend_port, sendfile)

    try:
        with nginx_process(work, write_conf, attempts) as (proc, port):
            yield Nginx(proc, port, work, backend_port)
    finally:
        if workdir is None:
            shutil.rmtree(work, ignore_errors=True)


@dataclass
class Workload:
    nginx: Nginx
    backend: Backend
    databases: Databases | None = None

    @property
    def base_url(self) -> str:
        return self.nginx.base_url


@contextlib.contextmanager
def nginx_workload(databases: bool = False) -> Iterator[Workload]:
    """nginx on loopback in front of the Python backend, and with ``databases`` the backend's
    PostgreSQL and Redis (:func:`demo_databases`); all stopped on exit."""
    with contextlib.ExitStack() as stack:
        dbs = stack.enter_context(demo_databases()) if databases else None
        backend = stack.enter_context(python_backend(dbs))
        nginx = stack.enter_context(nginx_server(backend.port))
        yield Workload(nginx, backend, dbs)


# -- the client ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Step:
    method: str
    path: str
    expect_status: int
    client: str  # "requests" or "http.client"
    body: bytes | None = None
    chunked: bool = False  # send the body with Transfer-Encoding: chunked (http.client only)


ECHO_BODY = json.dumps({"order": 42, "items": ["apple", "pear"], "note": "from pxq's client"}).encode()

# One round of the mix. Every status class the tests look for, both client libraries, a slow
# request, a HEAD (response without body), a chunked upload, a chunked response and a body over
# 1 KiB.
MIX = (
    Step("GET", "/", 200, "requests"),
    Step("GET", "/api/items", 200, "http.client"),
    Step("GET", "/static/hello.txt", 200, "requests"),
    Step("POST", "/api/echo", 200, "requests", body=ECHO_BODY),
    Step("GET", "/missing", 404, "http.client"),
    Step("GET", "/api/error", 500, "requests"),
    Step("HEAD", "/static/big.json", 200, "http.client"),
    Step("GET", "/static/big.json", 200, "requests"),
    Step("GET", "/api/slow", 200, "http.client"),
    Step("GET", "/api/stream", 200, "requests"),
    Step("POST", "/api/echo?chunked=1", 200, "http.client", body=b"chunk-one;chunk-two;", chunked=True),
)

# The backend's database paths (a workload started with databases=True): a user twice (the second
# usually a Redis hit, the first a miss once the cached copy has expired), another user, no such
# user, a count, a slow report and a failing query.
DATABASE_STEPS = (
    Step("GET", "/api/users/1", 200, "requests"),
    Step("GET", "/api/users/1", 200, "http.client"),
    Step("GET", "/api/users/7", 200, "requests"),
    Step("GET", "/api/users/4242", 404, "http.client"),
    Step("GET", "/api/users", 200, "requests"),
    Step("GET", "/api/report", 200, "http.client"),
    Step("GET", "/api/db-error", 500, "requests"),
)
# The demo's mix: the web mix, then the database paths.
DEMO_MIX = MIX + DATABASE_STEPS


@dataclass
class ClientResult:
    method: str
    path: str
    status: int
    expect_status: int
    body_size: int
    seconds: float


def run_client_mix(
    base_url: str,
    n_requests: int,
    *,
    max_seconds: float = 60.0,
    timeout: float = 10.0,
    mix: tuple[Step, ...] = MIX,
) -> list[ClientResult]:
    """Send up to ``n_requests`` requests of ``mix`` (in order, repeating) to ``base_url``
    (an ``http://127.0.0.1:PORT`` address), stopping early after ``max_seconds``. Each client
    library keeps one connection alive throughout; both are closed before returning."""
    import requests  # a test extra; imported here so the workload module loads without it

    host, _, port = base_url.removeprefix("http://").rstrip("/").partition(":")
    if host not in (LOOPBACK, "localhost"):
        raise ValueError(f"the client mix only targets loopback, not {base_url!r}")
    session = requests.Session()
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    results: list[ClientResult] = []
    deadline = time.monotonic() + max_seconds
    try:
        for i in range(n_requests):
            if time.monotonic() >= deadline:
                break
            step = mix[i % len(mix)]
            t0 = time.monotonic()
            if step.client == "requests":
                resp = session.request(step.method, base_url + step.path, data=step.body, timeout=timeout)
                status, size = resp.status_code, len(resp.content)
            else:
                headers = {"Content-Type": "application/json"} if step.body else {}
                body: bytes | list[bytes] | None = step.body
                if step.chunked and step.body:
                    # Two chunks on the wire; http.client frames each item of an iterable.
                    headers["Transfer-Encoding"] = "chunked"
                    half = len(step.body) // 2
                    body = [step.body[:half], step.body[half:]]
                conn.request(step.method, step.path, body=body, headers=headers, encode_chunked=step.chunked)
                r = conn.getresponse()
                status, size = r.status, len(r.read())
            results.append(
                ClientResult(step.method, step.path, status, step.expect_status, size, time.monotonic() - t0)
            )
    finally:
        session.close()
        conn.close()
    return results
