"""A real PostgreSQL 15 for tests: a cluster made by ``initdb`` in its own temporary directory,
listening on 127.0.0.1 at a free port (its unix socket in that directory too), run as the
``postgres`` user (the server refuses to run as root), with ``trust`` authentication or, given a
password, ``scram-sha-256``; stopped (and its directory removed) on exit."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pxq.testing.ports import LOOPBACK, serve_on_free_port

PG_BIN = Path("/usr/lib/postgresql/15/bin")
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
SUPERUSER = "postgres"


class PostgresServerError(RuntimeError):
    """PostgreSQL is missing or did not start."""


@dataclass
class PostgresServer:
    proc: subprocess.Popen[bytes]
    port: int
    datadir: Path
    password: str | None = None

    @property
    def pid(self) -> int:
        """The postmaster's pid: each connection's backend is a forked child of it."""
        return self.proc.pid

    @property
    def host(self) -> str:
        return LOOPBACK

    def conninfo(self, dbname: str = "postgres", **extra: str) -> str:
        """A libpq connection string over TCP (psycopg and psql take it)."""
        parts = {"host": LOOPBACK, "port": str(self.port), "user": SUPERUSER, "dbname": dbname,
                 "sslmode": "disable", **extra}  # fmt: skip
        if self.password is not None:
            parts.setdefault("password", self.password)
        return " ".join(f"{k}={v}" for k, v in parts.items())

    def psql_args(self, dbname: str = "postgres") -> list[str]:
        """``psql`` arguments reaching this server over TCP (any password through :meth:`env`)."""
        return ["psql", "-X", "-h", LOOPBACK, "-p", str(self.port), "-U", SUPERUSER, "-d", dbname]

    def env(self) -> dict[str, str]:
        env = {**os.environ, "PGSSLMODE": "disable", "PGGSSENCMODE": "disable"}
        if self.password is not None:
            env["PGPASSWORD"] = self.password
        return env


def _account() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(SUPERUSER)
    except KeyError as e:
        raise PostgresServerError("no 'postgres' user (tools/setup.sh installs PostgreSQL 15)") from e


def _run_as_postgres(args: list[str], cwd: Path) -> subprocess.CompletedProcess[bytes]:
    account = _account()
    return subprocess.run(args, cwd=cwd, user=account.pw_uid, group=account.pw_gid, extra_groups=[],
                          env={"PATH": os.environ.get("PATH", ""), "LANG": "C.UTF-8"}, capture_output=True,
                          timeout=120, check=False)  # fmt: skip


@contextlib.contextmanager
def postgres_server(
    password: str | None = None, auth: str = "scram-sha-256", attempts: int = 3
) -> Iterator[PostgresServer]:
    """initdb a cluster in a temporary directory and start PostgreSQL on a free loopback port;
    stop it on exit. With a password, clients authenticate by ``auth`` (a pg_hba.conf method:
    ``scram-sha-256``, ``md5``, or ``password``, which sends it in clear text)."""
    if not (PG_BIN / "postgres").exists():
        raise PostgresServerError(f"{PG_BIN}/postgres is missing (tools/setup.sh installs PostgreSQL 15)")
    account = _account()
    work = Path(tempfile.mkdtemp(prefix="pxq-postgres-"))
    try:
        os.chown(work, account.pw_uid, account.pw_gid)
        datadir = work / "data"
        args = [str(PG_BIN / "initdb"), "-D", str(datadir), "-U", SUPERUSER, "-E", "UTF8", "--no-sync",
                "--locale=C.UTF-8"]  # fmt: skip
        if password is None:
            args += ["--auth=trust"]
        else:
            pwfile = work / "pwfile"
            pwfile.write_text(password + "\n")
            os.chown(pwfile, account.pw_uid, account.pw_gid)
            args += [f"--auth={auth}", f"--pwfile={pwfile}"]
        done = _run_as_postgres(args, work)
        if done.returncode != 0:
            raise PostgresServerError(f"initdb failed:\n{done.stderr.decode(errors='replace')}")
        log = work / "postgres.log"

        def start(port: int) -> subprocess.Popen[bytes]:
            with open(log, "wb") as log_file:
                return subprocess.Popen(
                    [str(PG_BIN / "postgres"), "-D", str(datadir), "-h", LOOPBACK, "-p", str(port), "-k", str(work),
                     "-c", "fsync=off", "-c", "ssl=off", "-c", "max_connections=50"],
                    cwd=work, user=account.pw_uid, group=account.pw_gid, extra_groups=[], stdin=subprocess.DEVNULL,
                    stdout=log_file, stderr=subprocess.STDOUT,
                    env={"PATH": os.environ.get("PATH", ""), "LANG": "C.UTF-8"},
                )  # fmt: skip

        with serve_on_free_port(
            "postgres", start, _stop, lambda: log.read_text(errors="replace"), PostgresServerError,
            attempts=attempts, timeout=START_TIMEOUT, port_lost=("Address already in use", "could not bind"),
        ) as (proc, port):  # fmt: skip
            # Listening comes before accepting: wait until it is no longer "starting up".
            _wait_ready(port, proc)
            yield PostgresServer(proc, port, datadir, password)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _wait_ready(port: int, proc: subprocess.Popen[bytes]) -> None:
    """Until pg_isready says the server accepts connections (exit 0), or fail."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline and proc.poll() is None:
        check = subprocess.run([str(PG_BIN / "pg_isready"), "-q", "-h", LOOPBACK, "-p", str(port)], check=False)
        if check.returncode == 0:
            return
        time.sleep(0.05)
    raise PostgresServerError(f"postgres on {LOOPBACK}:{port} did not become ready in {START_TIMEOUT}s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Fast shutdown (SIGINT: roll back, disconnect clients), then SIGKILL if it lingers."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
