"""PostgreSQL on the running kernel: a real PostgreSQL 15 (initdb in a temporary directory, a free
loopback port) and a real psycopg 3 client, both traced; the pgsql_events rows must be exactly what
the client sent and saw (the SQL, cursor.statusmessage, the raw text of the result's value,
e.sqlstate), on the client's side (role 1) and on the server backend's (role 2).

Needs root and bcc; marked ``kernel`` and ``servers``.
"""

from __future__ import annotations

import contextlib
import json
import select
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pytest

from pxq.agent.loop import descendant_pids
from pxq.agent.protocols.interface import SECRET_MARKER
from pxq.agent.socket_tracer import SocketTracer
from pxq.testing.kernel import require_bpf
from pxq.testing.servers.postgres import PostgresServer, postgres_server

pytestmark = [pytest.mark.kernel, pytest.mark.servers]

LINE_TIMEOUT = 30.0
CLIENT = Path(__file__).parent / "data" / "pgsql_client.py"


@pytest.fixture(autouse=True)
def _bpf():
    require_bpf()


@pytest.fixture(scope="module")
def postgres():
    with postgres_server() as server:
        yield server


class PgClient:
    """tests/agent/data/pgsql_client.py in a child process (the tracer never traces itself)."""

    def __init__(self, server: PostgresServer, scenario: str, connect_early: bool = False) -> None:
        args = [sys.executable, str(CLIENT), "--conninfo", server.conninfo(), "--scenario", scenario]
        self.proc = subprocess.Popen(args + (["--connect-early"] if connect_early else []), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)  # fmt: skip
        ready, _, _ = select.select([self.proc.stdout], [], [], LINE_TIMEOUT)
        assert ready and self.proc.stdout.readline().strip() == "READY"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def run(self, tracer: SocketTracer) -> list[dict]:
        """Say go, poll the tracer until the client exits: its report lines."""
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        deadline = time.monotonic() + 60
        while self.proc.poll() is None and time.monotonic() < deadline:
            tracer.poll(50)
        assert self.proc.poll() == 0, f"client failed (exit {self.proc.returncode})"
        return [json.loads(line) for line in self.proc.stdout.read().splitlines()]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=5)
        with contextlib.suppress(OSError):
            self.proc.stdin.close()
        self.proc.stdout.close()


def capture(server: PostgresServer, scenario: str, connect_early: bool = False) -> tuple[list[dict], pa.Table, int]:
    """Run a client scenario with the postmaster (its backends are forked children) and the client
    traced: (the client's report, the pgsql_events rows, the client's pid)."""
    client = PgClient(server, scenario, connect_early)
    # The backends already running (a connection opened early has one), as the embedded agent adds
    # them; those forked later are followed by the tracer itself.
    backends = descendant_pids([server.pid])[server.pid]
    tracer = SocketTracer(pids={server.pid, client.pid, *backends})
    try:
        tracer.start()
        report = client.run(tracer)
        # The backend's last rows come with the connection's end: poll until the rows of both sides
        # stop changing (at most a few seconds), not for a guessed time.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and tracer.open_connections(client.pid):
            tracer.poll(50)
        tracer.poll(50)
        tracer.stop()
        table = tracer.drain_tables()["pgsql_events"]
        drops = tracer.drops()
    finally:
        tracer.stop()
        client.stop()
    assert drops["ringbuf_full"] == 0 and drops["parse_error"] == 0, drops
    return report, table, client.pid


def _side(table: pa.Table, pid: int, role: int) -> list[dict]:
    rows = [r for r in table.to_pylist() if r["trace_role"] == role]
    if role == 1:
        rows = [r for r in rows if r["upid"].split(":")[1] == str(pid)]
    return sorted(rows, key=lambda r: r["time_"])


def _placeholders(sql: str) -> str:
    n = 0
    out = sql
    while "%s" in out:
        n += 1
        out = out.replace("%s", f"${n}", 1)
    return out


def test_simple_queries_errors_sleep_multi_statement_and_copy_both_roles(postgres):
    report, table, client_pid = capture(postgres, "simple")
    ok = [line for line in report if "status" in line and "data" not in line and "COPY" not in line["sql"]]
    multi = next(line for line in report if "sets" in line)
    error = next(line for line in report if "sqlstate" in line)
    copy_out = next(line for line in report if line["sql"] == "COPY items TO STDOUT")
    copy_in = next(line for line in report if line["sql"] == "COPY items FROM STDIN")
    for role in (1, 2):
        rows = _side(table, client_pid, role)
        sent = [line["sql"] for line in ok] + [error["sql"], multi["sql"], copy_out["sql"], copy_in["sql"]]
        assert [r["req_cmd"] for r in rows] == ["Query"] * len(sent), rows
        assert [r["req"] for r in rows] == sent
        by_sql = {r["req"]: r for r in rows}
        for line in ok:
            resp = by_sql[line["sql"]]["resp"]
            assert resp.endswith(line["status"]), (resp, line)
            if line["first"] is not None:  # column name, first value (text), as the server sent them
                assert resp.startswith(f"{line['column']}\n{line['first']}\n"), resp
        assert f"Code={error['sqlstate']} " in by_sql[error["sql"]]["resp"]
        assert by_sql[error["sql"]]["resp"].startswith("ERROR RESPONSE [Severity=ERROR ")
        # Two statements in one Query: both results, one after the other.
        assert by_sql[multi["sql"]]["resp"] == "\n".join("\n".join(result) for result in multi["sets"])
        copied = copy_out["data"].splitlines()  # the rows the client received, then the count of them
        assert by_sql[copy_out["sql"]]["resp"] == "\n".join([*copied, f"COPY {len(copied)}"])
        assert by_sql[copy_in["sql"]]["resp"] == copy_in["status"]
        assert by_sql["SELECT pg_sleep(0.2)"]["latency"] >= 200_000_000
        assert all(r["latency"] > 0 for r in rows)
    server_rows = _side(table, client_pid, 2)
    assert {r["local_port"] for r in server_rows} == {postgres.port}
    assert {r["remote_port"] for r in _side(table, client_pid, 1)} == {postgres.port}


def test_prepared_statements_show_each_bound_type_with_the_query(postgres):
    report, table, client_pid = capture(postgres, "prepared")
    typed = [line for line in report if line.get("prepared")]
    error = next(line for line in report if "sqlstate" in line)
    for role in (1, 2):
        rows = _side(table, client_pid, role)
        executes = [r for r in rows if r["req_cmd"] == "Execute"]
        assert len(executes) == len(typed)
        for row, line in zip(executes, typed, strict=True):
            value = "[NULL]" if line["first"] is None else line["first"]
            assert row["req"] == f"query=[{_placeholders(line['sql'])}] params=[{value}]"
            assert row["resp"] == f"{line['column']}\n{value}\n{line['status']}"
            assert row["latency"] > 0
        parses = [r["req"] for r in rows if r["req_cmd"] == "Parse"]
        assert parses == [_placeholders(line["sql"]) for line in typed] + [_placeholders(error["sql"])]
        # The error: psycopg's e.sqlstate, on the Bind (the server converts the value there) or the Execute.
        failed = [r for r in rows if r["resp"].startswith("ERROR RESPONSE")]
        assert len(failed) == 1 and f"Code={error['sqlstate']} " in failed[0]["resp"]


def test_a_connection_opened_before_the_tracer_attached(postgres):
    """Mid-stream: connected and queried before the tracer started; its later queries appear (the
    first bytes seen are a Query, or a Parse for prepared statements)."""
    for scenario in ("simple", "prepared"):
        report, table, client_pid = capture(postgres, scenario, connect_early=True)
        for role in (1, 2):
            rows = _side(table, client_pid, role)
            if scenario == "simple":
                assert [r["req"] for r in rows][:3] == [line["sql"] for line in report[:3]], (role, rows)
            else:
                typed = [line for line in report if line.get("prepared")]
                executes = [r for r in rows if r["req_cmd"] == "Execute"]
                assert len(executes) == len(typed), (role, rows)
                # Each prepared here, after the tracer attached: the statements and values are known.
                for row, line in zip(executes, typed, strict=True):
                    value = "[NULL]" if line["first"] is None else line["first"]
                    assert row["req"] == f"query=[{_placeholders(line['sql'])}] params=[{value}]"


def test_a_clear_text_password_is_never_kept():
    """pg_hba ``password``: the client sends the password itself in a PasswordMessage."""
    password = "pxq-Clear-Text-Pw-7319"
    with postgres_server(password=password, auth="password") as server:
        report, table, client_pid = capture(server, "simple")
    assert report
    for role in (1, 2):
        rows = _side(table, client_pid, role)
        logins = [r for r in rows if r["req_cmd"] == "Password Message"]
        assert [(r["req"], r["resp"]) for r in logins] == [(SECRET_MARKER, "AUTHENTICATION Ok")]
        assert rows[1]["req"] == report[0]["sql"]
    assert not any(password in str(value) for row in table.to_pylist() for value in row.values())


def test_psql_with_an_ssl_request_refused_and_a_multi_statement_query(postgres):
    """psql (libpq) with sslmode=prefer asks for SSL first; the server (ssl=off) answers 'N' and
    the startup follows in the clear. One -c string of two statements is one Query."""
    sql = "SELECT 1 AS one; SELECT 'x' AS letter, NULL AS nothing"
    env = {**postgres.env(), "PGSSLMODE": "prefer"}
    # The shell waits for "go", then becomes psql: the traced pid is psql's from its first call.
    proc = subprocess.Popen(["sh", "-c", 'read go; exec "$@"', "sh", *postgres.psql_args(), "-A", "-c", sql],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True)  # fmt: skip
    tracer = SocketTracer(pids={postgres.pid, proc.pid})
    try:
        tracer.start()
        proc.stdin.write("go\n")
        proc.stdin.close()
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline:
            tracer.poll(50)
        stdout = proc.stdout.read()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and tracer.open_connections(proc.pid):
            tracer.poll(50)
        tracer.poll(50)
        tracer.stop()
        table = tracer.drain_tables()["pgsql_events"]
    finally:
        tracer.stop()
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=5)
        proc.stdout.close()
    assert proc.returncode == 0
    # psql -A printed each result: header, rows, "(1 row)"; NULL as an empty field.
    assert stdout == "one\n1\n(1 row)\nletter|nothing\nx|\n(1 row)\n"
    for role in (1, 2):
        (row,) = [r for r in _side(table, proc.pid, role) if r["req_cmd"] == "Query"]
        assert row["req"] == sql
        assert row["resp"] == "one\n1\nSELECT 1\nletter,nothing\nx,[NULL]\nSELECT 1"
