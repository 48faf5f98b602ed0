"""A real redis-server for tests: on 127.0.0.1 at a free port, in its own temporary directory,
persisting nothing (``--save ''``, ``--appendonly no``), optionally with a password; stopped (and
its directory removed) on exit."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pxq.testing.ports import LOOPBACK, serve_on_free_port

START_TIMEOUT = 10.0


class RedisServerError(RuntimeError):
    """redis-server is missing or did not start."""


@dataclass
class RedisServer:
    proc: subprocess.Popen[bytes]
    port: int
    workdir: Path
    password: str | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def host(self) -> str:
        return LOOPBACK

    def cli_args(self) -> list[str]:
        """``redis-cli`` arguments that reach this server (the password, if any, through the
        environment: see :meth:`cli_env`)."""
        return ["redis-cli", "-h", LOOPBACK, "-p", str(self.port)]

    def cli_env(self) -> dict[str, str] | None:
        import os

        if self.password is None:
            return None
        return {**os.environ, "REDISCLI_AUTH": self.password}


def redis_binary(name: str = "redis-server") -> str:
    path = shutil.which(name)
    if path is None:
        raise RedisServerError(f"{name} is not installed (tools/setup.sh installs it)")
    return path


@contextlib.contextmanager
def redis_server(password: str | None = None, attempts: int = 3) -> Iterator[RedisServer]:
    """Start redis-server on a free loopback port; stop it on exit."""
    binary = redis_binary()
    work = Path(tempfile.mkdtemp(prefix="pxq-redis-"))
    log = work / "redis.log"

    def start(port: int) -> subprocess.Popen[bytes]:
        args = [binary, "--bind", LOOPBACK, "--port", str(port), "--dir", str(work), "--save", "",
                "--appendonly", "no", "--daemonize", "no", "--logfile", str(log)]  # fmt: skip
        if password is not None:
            args += ["--requirepass", password]
        return subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def failure_log() -> str:
        return log.read_text(errors="replace") if log.exists() else ""

    try:
        with serve_on_free_port(
            "redis-server", start, _stop, failure_log, RedisServerError, attempts=attempts, timeout=START_TIMEOUT
        ) as (proc, port):
            yield RedisServer(proc, port, work, password)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
