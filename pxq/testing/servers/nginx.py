"""A real nginx for tests whose every response names its request: ``GET /anything`` is answered
``200`` with the body ``/anything\\n`` (the request target, query included), and ``/files/<name>``
serves the static files the caller gave, from a temporary directory (a missing one is nginx's own
``404``). With that, a test knows which request a response answers from the response alone.

nginx runs in the foreground (``daemon off``) with a master and two workers, keep-alive without
limit, ``sendfile off`` (file bodies pass through user memory, so a socket tracer copies them),
on a free 127.0.0.1 port; stopped (SIGQUIT, then SIGKILL) and its directory removed on exit.

:func:`nginx_process` starts and stops nginx for any configuration; pxq.testing.workload's proxy
in front of the Python backend uses it too.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from pxq.agent.procinfo import child_pids
from pxq.testing.ports import LOOPBACK, serve_on_free_port

START_TIMEOUT = 15.0
WORKERS = 2

CONF = """\
daemon off;
master_process on;
worker_processes {workers};
user root root;
pid {work}/nginx.pid;
lock_file {work}/nginx.lock;
error_log {work}/error.log notice;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {work}/tmp/body;
    proxy_temp_path {work}/tmp/proxy;
    fastcgi_temp_path {work}/tmp/fastcgi;
    uwsgi_temp_path {work}/tmp/uwsgi;
    scgi_temp_path {work}/tmp/scgi;
    default_type text/plain;
    keepalive_timeout 120s;
    keepalive_requests 100000;
    sendfile off;
    gzip off;
    server {{
        listen {loopback}:{port};
        server_name localhost;
        root {work}/www;
        location /files/ {{ }}
        location / {{ return 200 "$request_uri\\n"; }}
    }}
}}
"""


class NginxError(RuntimeError):
    """nginx is missing or did not start; the message carries its error log."""


@dataclass
class EchoNginx:
    proc: subprocess.Popen[bytes]
    port: int
    workdir: Path

    @property
    def master_pid(self) -> int:
        return self.proc.pid

    def pids(self, timeout: float = START_TIMEOUT) -> set[int]:
        """The master and its workers (waited for: the master forks them after it listens)."""
        deadline = time.monotonic() + timeout
        while len(workers := child_pids(self.master_pid)) < WORKERS and time.monotonic() < deadline:
            time.sleep(0.02)
        if len(workers) < WORKERS:
            raise NginxError(f"nginx started {len(workers)} of {WORKERS} workers:\n{self.error_log()}")
        return {self.master_pid, *workers}

    def error_log(self) -> str:
        return error_log(self.workdir)


def error_log(workdir: Path) -> str:
    """The error log of an nginx started by :func:`nginx_process` in ``workdir`` ("" before it has one)."""
    try:
        return (workdir / "error.log").read_text(errors="replace")
    except OSError:
        return ""


def nginx_binary() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)
    if found is None:
        raise NginxError("nginx is not installed: run tools/setup.sh (it installs nginx-light)")
    return found


@contextlib.contextmanager
def nginx_process(
    workdir: Path, write_conf: Callable[[int], Path], attempts: int = 3
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """Start nginx (prefix ``workdir``, its error log there) with the configuration file that
    ``write_conf(port)`` writes for a free loopback port, and wait until it listens; yield its
    master process and the port; stop it on exit. A port lost to another process is retried
    (:func:`~pxq.testing.ports.serve_on_free_port`); any other failure raises :class:`NginxError`
    with nginx's error log."""
    binary = nginx_binary()

    def start(port: int) -> subprocess.Popen[bytes]:
        conf = write_conf(port)
        return subprocess.Popen(
            [binary, "-p", str(workdir), "-c", str(conf), "-e", str(workdir / "error.log")],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    with serve_on_free_port(
        "nginx", start, _stop, lambda: error_log(workdir), NginxError, attempts=attempts, timeout=START_TIMEOUT
    ) as (proc, port):
        yield proc, port


@contextlib.contextmanager
def echo_nginx(files: Mapping[str, bytes] | None = None, attempts: int = 3) -> Iterator[EchoNginx]:
    """Start nginx on a free loopback port serving ``files`` (name -> bytes) under ``/files/``
    and echoing every other request's target; stop it on exit."""
    work = Path(tempfile.mkdtemp(prefix="pxq-echo-nginx-"))
    try:
        for sub in ("www/files", "tmp"):
            (work / sub).mkdir(parents=True)
        for name, data in (files or {}).items():
            (work / "www" / "files" / name).write_bytes(data)

        def write_conf(port: int) -> Path:
            conf = work / "nginx.conf"
            conf.write_text(CONF.format(work=work, loopback=LOOPBACK, port=port, workers=WORKERS))
            return conf

        with nginx_process(work, write_conf, attempts) as (proc, port):
            yield EchoNginx(proc, port, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGQUIT (graceful: the master waits for its workers), then SIGKILL to the master and any
    worker it left behind."""
    workers = child_pids(proc.pid) if proc.poll() is None else []
    if proc.poll() is None:
        proc.send_signal(signal.SIGQUIT)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for pid in workers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
