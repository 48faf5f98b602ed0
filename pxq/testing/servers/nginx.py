"""A real nginx for tests whose every response names its request: ``GET /anything`` is answered
``200`` with the body ``/anything\\n`` (the request target, query included), and ``/files/<name>``
serves the static files the caller gave, from a temporary directory (a missing one is nginx's own
``404``). With that, a test knows which request a response answers from the response alone.

nginx runs in the foreground (``daemon off``) with a master and two workers, keep-alive without
limit, ``sendfile off`` (file bodies pass through user memory, so a socket tracer copies them),
on a free 127.0.0.1 port; stopped (SIGQUIT, then SIGKILL) and its directory removed on exit.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from pxq.agent.procinfo import child_pids
from pxq.testing.ports import LOOPBACK, free_port, wait_for_port

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
        try:
            return (self.workdir / "error.log").read_text(errors="replace")
        except OSError:
            return ""


def nginx_binary() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)
    if found is None:
        raise NginxError("nginx is not installed: run tools/setup.sh (it installs nginx-light)")
    return found


@contextlib.contextmanager
def echo_nginx(files: Mapping[str, bytes] | None = None, attempts: int = 3) -> Iterator[EchoNginx]:
    """Start nginx on a free loopback port serving ``files`` (name -> bytes) under ``/files/``
    and echoing every other request's target; stop it on exit."""
    binary = nginx_binary()
    work = Path(tempfile.mkdtemp(prefix="pxq-echo-nginx-"))
    proc: subprocess.Popen[bytes] | None = None
    try:
        for sub in ("www/files", "tmp"):
            (work / sub).mkdir(parents=True)
        for name, data in (files or {}).items():
            (work / "www" / "files" / name).write_bytes(data)
        for _ in range(attempts):
            port = free_port()
            conf = work / "nginx.conf"
            conf.write_text(CONF.format(work=work, loopback=LOOPBACK, port=port, workers=WORKERS))
            log = work / "error.log"
            proc = subprocess.Popen(
                [binary, "-p", str(work), "-c", str(conf), "-e", str(log)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            if wait_for_port(port, timeout=START_TIMEOUT, alive=lambda proc=proc: proc.poll() is None):
                yield EchoNginx(proc, port, work)
                return
            _stop(proc)
            text = log.read_text(errors="replace") if log.exists() else ""
            if "Address already in use" not in text:  # a real failure, not a lost port race
                raise NginxError(f"nginx did not start on {LOOPBACK}:{port}:\n{text}")
        raise NginxError(f"nginx could not bind a free loopback port in {attempts} attempts")
    finally:
        if proc is not None:
            _stop(proc)
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
