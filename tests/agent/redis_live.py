"""Running real Redis clients (redis-py in tests/agent/data/redis_clients.py, redis-cli,
redis-benchmark) against a real redis-server under the socket tracer, filtered to their pids."""

from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from pxq.agent.procinfo import upid_of
from pxq.agent.socket_tracer import SocketTracer
from pxq.testing.servers.redis import RedisServer

CLIENTS = Path(__file__).parent / "data" / "redis_clients.py"
LINE_TIMEOUT = 15.0
CLIENT_ROLE, SERVER_ROLE = 1, 2


@dataclass
class Traced:
    """What the tracer saw while one client ran: rows by role, the client's own report."""

    table: pa.Table
    tracer: SocketTracer
    server_pid: int
    client_pid: int
    report: list[dict]
    stdout: str = ""

    def rows(self, role: int) -> list[dict]:
        pid = self.server_pid if role == SERVER_ROLE else self.client_pid
        prefix = f"0:{pid}:"
        return [r for r in self.table.to_pylist() if r["upid"].startswith(prefix) and r["trace_role"] == role]

    def triples(self, role: int) -> list[tuple[str, str, str]]:
        return [(r["req_cmd"], r["req_args"], r["resp"]) for r in self.rows(role)]


def _readline(proc: subprocess.Popen[str], timeout: float = LINE_TIMEOUT) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        raise AssertionError(f"child {proc.args} said nothing for {timeout}s")
    return proc.stdout.readline()


@contextlib.contextmanager
def _child(args: list[str], env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


def _settle(tracer: SocketTracer, until_rows: int | None, timeout: float = 5.0) -> None:
    """Poll until ``until_rows`` rows are pending (the connection's last replies parsed), or
    half a second of quiet when the count is not known."""
    deadline = time.monotonic() + timeout
    quiet_since = time.monotonic()
    while time.monotonic() < deadline:
        if tracer.poll(50):
            quiet_since = time.monotonic()
        if until_rows is not None and tracer.pending() >= until_rows:
            return
        if until_rows is None and time.monotonic() - quiet_since > 0.5:
            return


def _run_traced(
    server: RedisServer, args: list[str], *, env: dict[str, str] | None = None, wait_ready: bool = True,
    until_rows: int | None = None, timeout: float = 60.0, body_limit: int = 1024,
) -> Traced:  # fmt: skip
    """Start the client (``READY``, then a line on stdin starts it: redis_clients.py; or a shell
    that waits for the line and then execs the real client), trace it and the server."""
    with _child(args, env) as proc:
        if wait_ready:
            assert _readline(proc).strip() == "READY"
        upid_of(proc.pid)  # named while it runs
        tracer = SocketTracer(pids={server.pid, proc.pid}, protocols=("redis",), body_limit=body_limit)
        tracer.start()
        try:
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
            deadline = time.monotonic() + timeout
            while proc.poll() is None and time.monotonic() < deadline:
                tracer.poll(50)
            assert proc.poll() == 0, f"client {args} failed (exit {proc.returncode})"
            out = proc.stdout.read()
            _settle(tracer, until_rows)
            tracer.stop()
            table = tracer.drain()
        finally:
            tracer.stop()
    report = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return Traced(table, tracer, server.pid, proc.pid, report, out)


def run_redis_py(server: RedisServer, scenario: str, *extra: str, until_rows: int | None = None) -> Traced:
    args = [sys.executable, str(CLIENTS), "--port", str(server.port), "--scenario", scenario, *extra]
    env = None if server.password is None else {**os.environ, "REDIS_PASSWORD": server.password}
    return _run_traced(server, args, env=env, until_rows=until_rows)


def run_shell_client(
    server: RedisServer, command: str, until_rows: int | None = None, timeout: float = 120.0
) -> Traced:
    """``command`` (a shell command line) run by a shell that first waits for the go line."""
    args = ["sh", "-c", f"read go; exec {command}"]
    return _run_traced(server, args, env=server.cli_env(), wait_ready=False, until_rows=until_rows, timeout=timeout)
