"""A MariaDB server for tests: a fresh data directory in a temporary directory, ``mariadbd`` on
127.0.0.1 at a free port (its socket in the same directory), stopped and removed at the end.

Nothing else on the machine is used: no system service, no configuration file (``--no-defaults``).
``root`` logs in without a password over TCP (``--auth-root-authentication-method=normal``);
:meth:`MariaDB.create_user` adds a user with a password for tests of authentication.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from pxq.testing.ports import LOOPBACK, serve_on_free_port

INSTALL_DB = shutil.which("mariadb-install-db") or "/usr/bin/mariadb-install-db"
MARIADBD = shutil.which("mariadbd") or "/usr/sbin/mariadbd"
CLIENT = shutil.which("mariadb") or "/usr/bin/mariadb"
START_TIMEOUT = 60.0


class MariaDBError(RuntimeError):
    """The server could not be set up or started; the message holds its log."""


class MariaDB:
    """A running server: ``host``, ``port``, ``socket``, ``pid``; :meth:`stop` ends it."""

    def __init__(self, root: Path, port: int, proc: subprocess.Popen[bytes]) -> None:
        self.root = root
        self.host = LOOPBACK
        self.port = port
        self.proc = proc
        self.socket = str(root / "mysqld.sock")
        self.log = root / "error.log"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def client_args(self, user: str = "root", password: str | None = None, database: str | None = None) -> list[str]:
        """A ``mariadb`` command line that talks to this server over TCP."""
        args = [CLIENT, "--no-defaults", "--protocol=TCP", "-h", self.host, "-P", str(self.port), "-u", user,
                "--skip-ssl"]  # fmt: skip
        if password is not None:
            args.append(f"--password={password}")
        if database is not None:
            args.append(database)
        return args

    def sql(self, statements: str, database: str | None = None) -> str:
        """Run SQL as root through the server's socket (not TCP: a tracer on loopback does not see
        it) and return the client's output."""
        args = [CLIENT, "--no-defaults", f"--socket={self.socket}", "-u", "root", "--batch"]
        if database is not None:
            args.append(database)
        done = subprocess.run(args, input=statements.encode(), capture_output=True, timeout=60)
        if done.returncode:
            raise MariaDBError(f"mariadb exited {done.returncode}: {done.stderr.decode(errors='replace')}")
        return done.stdout.decode()

    def create_user(self, user: str, password: str, database: str = "test") -> None:
        """A user that logs in with a password (mysql_native_password) and may use ``database``."""
        self.sql(
            f"CREATE DATABASE IF NOT EXISTS `{database}`;"
            f"CREATE USER '{user}'@'%' IDENTIFIED VIA mysql_native_password USING PASSWORD('{password}');"
            f"GRANT ALL ON `{database}`.* TO '{user}'@'%';"
        )

    def stop(self) -> None:
        _stop(self.proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _install(datadir: Path, root: Path) -> None:
    done = subprocess.run(
        [
            INSTALL_DB,
            "--no-defaults",
            f"--datadir={datadir}",
            "--user=root",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
            "--skip-name-resolve",
        ],  # fmt: skip
        capture_output=True,
        timeout=120,
        cwd=root,
    )
    if done.returncode:
        raise MariaDBError(f"mariadb-install-db exited {done.returncode}: {done.stderr.decode(errors='replace')}")


@contextlib.contextmanager
def mariadb_server(databases: tuple[str, ...] = ("test",)) -> Iterator[MariaDB]:
    """A fresh MariaDB server for the duration of the block, with these (empty) databases."""
    root = Path(tempfile.mkdtemp(prefix="pxq-mariadb-"))
    try:
        datadir = root / "data"
        _install(datadir, root)
        log = root / "error.log"

        def start(port: int) -> subprocess.Popen[bytes]:
            return subprocess.Popen(
                [
                    MARIADBD,
                    "--no-defaults",
                    f"--datadir={datadir}",
                    "--user=root",
                    f"--port={port}",
                    f"--bind-address={LOOPBACK}",
                    f"--socket={root / 'mysqld.sock'}",
                    f"--pid-file={root / 'mysqld.pid'}",
                    f"--log-error={log}",
                    "--skip-name-resolve",
                    "--skip-log-bin",
                    "--innodb-buffer-pool-size=16M",
                    "--innodb-log-file-size=8M",
                    "--max-allowed-packet=64M",
                    "--performance-schema=OFF",
                    f"--tmpdir={root}",
                ],  # fmt: skip
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )

        def failure_log() -> str:
            return log.read_text(errors="replace")[-4000:] if log.exists() else ""

        started = serve_on_free_port("mariadbd", start, _stop, failure_log, MariaDBError, timeout=START_TIMEOUT)
        with started as (proc, port):
            server = MariaDB(root, port, proc)
            _wait_socket(server)
            for name in databases:
                server.sql(f"CREATE DATABASE IF NOT EXISTS `{name}`;")
            yield server
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _wait_socket(server: MariaDB) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while not os.path.exists(server.socket):
        if time.monotonic() > deadline or server.proc.poll() is not None:
            raise MariaDBError(f"mariadbd made no socket at {server.socket}")
        time.sleep(0.05)
