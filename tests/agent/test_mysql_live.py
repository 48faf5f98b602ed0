"""MySQL on the running kernel: a real MariaDB (a fresh data directory, a loopback port) and real
clients (PyMySQL, the mariadb command-line client, a hand-written binary-protocol client for
prepared statements), traced together; the exact mysql_events rows of both ends.

Expected values come from the clients: what they sent (the SQL text, the parameters), and what
they saw (PyMySQL's affected-row and row counts, its exception's error code and message, the rows
the binary-protocol client read). Needs root and bcc (the ``kernel`` marker) and starts mariadbd
(``servers``). Only the clients' and the server's pids are traced.
"""

from __future__ import annotations

import json
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pxq.agent.procinfo import upid_of
from pxq.agent.socket_tracer import SocketTracer
from pxq.tables import CATALOG
from pxq.testing.kernel import require_bpf
from pxq.testing.servers.mariadb import MariaDB, mariadb_server

pytestmark = [pytest.mark.kernel, pytest.mark.servers]

RECORDER = Path(__file__).parent / "record_mysql_streams.py"
SCHEMA = CATALOG["mysql_events"].arrow_schema()
CLIENT_ROLE, SERVER_ROLE = 1, 2
OK, NONE, ERR = 2, 1, 3
LINE_TIMEOUT = 30.0


@pytest.fixture(autouse=True)
def _bpf():
    require_bpf()


@pytest.fixture(scope="module")
def server() -> Iterator[MariaDB]:
    with mariadb_server() as running:
        running.create_user("app", "pw-never-kept-42")
        yield running


class ClientProcess:
    """A client in a child process (record_mysql_streams.py --client): ready, then runs on go."""

    def __init__(self, args: list[str], wait_ready: bool = True) -> None:
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if wait_ready:
            assert self._readline().strip() == "READY"

    @classmethod
    def python(cls, name: str, port: int, *extra: str) -> ClientProcess:
        return cls([sys.executable, str(RECORDER), "--client", name, str(port), *extra])

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _readline(self) -> str:
        ready, _, _ = select.select([self.proc.stdout], [], [], LINE_TIMEOUT)
        assert ready, f"{self.proc.args} said nothing for {LINE_TIMEOUT}s"
        assert self.proc.stdout is not None
        return self.proc.stdout.readline()

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def finish(self, tracer: SocketTracer, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            tracer.poll(50)
        assert self.proc.poll() is not None, f"{self.proc.args} still running"
        assert self.proc.stdout is not None
        return self.proc.stdout.read()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


def wait_for_rows(tracer: SocketTracer, rows: list[dict], done, timeout: float = 15.0) -> list[dict]:
    """Poll (collecting mysql_events rows) until ``done(rows)`` holds."""
    deadline = time.monotonic() + timeout
    while not done(rows) and time.monotonic() < deadline:
        tracer.poll(50)
        table = tracer.drain_tables()["mysql_events"]
        assert table.schema.equals(SCHEMA)
        rows.extend(table.to_pylist())
    return rows


def traced(server: MariaDB, client: ClientProcess, expect_rows: int) -> tuple[str, list[dict], SocketTracer]:
    """Trace the server and the client while the client runs; (its output, rows, the tracer)."""
    tracer = SocketTracer(pids={server.pid, client.pid})
    tracer.start()
    rows: list[dict] = []
    try:
        client.go()
        out = client.finish(tracer)
        wait_for_rows(tracer, rows, lambda got: len(got) >= expect_rows)
    finally:
        tracer.stop()
        client.kill()
    rows.extend(tracer.drain_tables()["mysql_events"].to_pylist())
    return out, rows, tracer


def of(rows: list[dict], pid: int, role: int) -> list[dict]:
    return [r for r in rows if r["upid"].startswith(f"0:{pid}:") and r["trace_role"] == role]


def shape(rows: list[dict]) -> list[tuple[int, str, int, str]]:
    return [(r["req_cmd"], r["req_body"], r["resp_status"], r["resp_body"]) for r in rows]


def both_ends(rows: list[dict], server: MariaDB, client: ClientProcess) -> tuple[list[dict], list[dict]]:
    return of(rows, client.pid, CLIENT_ROLE), of(rows, server.pid, SERVER_ROLE)


CONNECT_ROOT = (11, "user=root database=test auth_plugin=mysql_native_password auth_response=<redacted>", OK, "")
# PyMySQL's own statements after its handshake (pymysql/connections.py: connect() sets the
# character set and autocommit mode).
PYMYSQL_SETUP = [(3, "SET NAMES utf8mb4", OK, "Affected rows = 0"), (3, "SET AUTOCOMMIT = 0", OK, "Affected rows = 0")]


def test_pymysql_queries_both_roles(server: MariaDB):
    client = ClientProcess.python("queries", server.port)
    upid = upid_of(client.pid)
    out, rows, tracer = traced(server, client, expect_rows=2 * 10)
    seen = json.loads(out)
    code, message = seen["error"]
    expected = [
        (11, "user=root database=test auth_plugin=mysql_native_password auth_response=<redacted>", OK, ""),
        *PYMYSQL_SETUP,
        (3, "CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(20), price DOUBLE)", OK, "Affected rows = 0"),
        (3, "INSERT INTO items VALUES (1,'apple',1.5),(2,'pear',2.25),(3,'fig',NULL)", OK,
         f"Affected rows = {seen['insert']}"),
        (3, "SELECT id, name, price FROM items ORDER BY id", OK, f"Resultset rows = {seen['select']}"),
        (3, "SELECT * FROM no_such_table", ERR, f"ERROR {code} (42S02): {message}"),
        (2, "mysql", OK, ""),  # COM_INIT_DB
        (14, "", OK, ""),  # COM_PING
        (1, "", NONE, ""),  # COM_QUIT: no response
    ]  # fmt: skip
    assert seen["select"] == len(seen["rows"]) == 3 and seen["insert"] == 3
    client_rows, server_rows = both_ends(rows, server, client)
    assert shape(client_rows) == expected
    assert shape(server_rows) == expected
    for r in client_rows + server_rows:
        assert (r["latency"] > 0) == (r["req_cmd"] != 1), r
        assert r["latency"] < 10e9 and r["encrypted"] is False
        assert abs(r["time_"].timestamp() - time.time()) < 120
    assert {r["upid"] for r in client_rows} == {upid}
    c, s = client_rows[0], server_rows[0]
    assert (c["remote_addr"], c["remote_port"]) == ("127.0.0.1", server.port) == (s["local_addr"], s["local_port"])
    assert (s["remote_addr"], s["remote_port"]) == (c["local_addr"], c["local_port"])
    assert tracer.drops().get("parse_error", 0) == 0


def test_prepared_statements_with_typed_parameters(server: MariaDB):
    client = ClientProcess.python("prepared", server.port)
    out, rows, _ = traced(server, client, expect_rows=2 * 13)
    seen = json.loads(out)
    select = "SELECT i, s FROM t WHERE i >= ? AND s <> ? AND d > ? AND dt < ?"
    insert = "INSERT INTO t (i, s) VALUES (?, ?)"
    expected = [
        (11, "user=root database=test auth_plugin=mysql_native_password auth_response=<redacted>", OK, ""),
        *PYMYSQL_SETUP,
        (3, "CREATE TABLE t (i BIGINT, s VARCHAR(20), d DOUBLE, dt DATETIME)", OK, "Affected rows = 0"),
        (3, "INSERT INTO t VALUES (7,'seven',7.5,'2024-01-02 03:04:05'),(8,'eight',8.5,NULL)", OK,
         "Affected rows = 2"),
        (22, select, OK, ""),
        # the parameters as the client encoded them: 7 (LONGLONG), 'zzz', 1.25 (DOUBLE), a DATETIME
        (23, f"query=[{select}] params=[7, zzz, 1.25, 2025-06-30 12:00:01]", OK,
         f"Resultset rows = {seen['select_rows']}"),
        (22, insert, OK, ""),
        (23, f"query=[{insert}] params=[-42, NULL]", OK, "Affected rows = 1"),
        (25, "", NONE, ""),
        (25, "", NONE, ""),
        (3, "SELECT * FROM t", OK, f"Resultset rows = {seen['count']}"),
        (1, "", NONE, ""),
    ]  # fmt: skip
    assert seen["select_prepare"] == [2, 4] and seen["count"] == 3
    client_rows, server_rows = both_ends(rows, server, client)
    assert shape(client_rows) == expected
    assert shape(server_rows) == expected


def test_mariadb_command_line_client(server: MariaDB):
    statements = "CREATE TABLE cli (n INT); INSERT INTO cli VALUES (1),(2),(3),(4); SELECT n FROM cli WHERE n > 1;"
    args = server.client_args(database="test") + ["-e", statements]
    # the shell waits for "go", then becomes the client (same pid: exec)
    client = ClientProcess(["sh", "-c", 'echo READY; read _go; exec "$@"', "sh", *args])
    out, rows, _ = traced(server, client, expect_rows=2 * 4)
    assert out.split("\n") == ["n", "2", "3", "4", ""]  # the client printed 3 rows
    sent = [part.strip() for part in statements.split(";") if part.strip()]
    client_rows, server_rows = both_ends(rows, server, client)
    for got in (client_rows, server_rows):
        assert shape([r for r in got if r["req_body"] in sent]) == [
            (3, "CREATE TABLE cli (n INT)", OK, "Affected rows = 0"),
            (3, "INSERT INTO cli VALUES (1),(2),(3),(4)", OK, "Affected rows = 4"),
            (3, "SELECT n FROM cli WHERE n > 1", OK, "Resultset rows = 3"),
        ]
        assert got[0]["req_cmd"] == 11 and got[0]["resp_status"] == OK
        assert got[-1]["req_cmd"] == 1


def test_password_login_keeps_no_auth_response(server: MariaDB):
    password = "pw-never-kept-42"
    client = ClientProcess.python("auth", server.port, "app", password)
    _out, rows, _ = traced(server, client, expect_rows=2 * 5)
    client_rows, server_rows = both_ends(rows, server, client)
    for got in (client_rows, server_rows):
        assert shape(got)[0] == (
            11,
            "user=app database=test auth_plugin=mysql_native_password auth_response=<redacted>",
            OK,
            "",
        )
        assert shape(got)[3] == (3, "SELECT 1", OK, "Resultset rows = 1")
        assert not any(password in str(v) for r in got for v in r.values())


def test_connection_opened_before_the_tracer_attached(server: MariaDB):
    # The client connects (handshake, PyMySQL's setup) before READY; the tracer starts after.
    client = ClientProcess.python("midstream", server.port)
    out, rows, _ = traced(server, client, expect_rows=2 * 4)
    seen = json.loads(out)
    expected = [
        (3, "SELECT 1 UNION SELECT 2 UNION SELECT 3", OK, f"Resultset rows = {seen['select']}"),
        (14, "", OK, ""),
        (3, "SELECT 42", OK, f"Resultset rows = {seen['after_ping']}"),
        (1, "", NONE, ""),
    ]
    client_rows, server_rows = both_ends(rows, server, client)
    assert shape(client_rows) == expected
    assert shape(server_rows) == expected


def test_server_killed_mid_query_leaves_a_counted_loss_and_no_row():
    with mariadb_server() as doomed:
        client = ClientProcess.python("sleep", doomed.port)  # connected (handshake done) before tracing
        tracer = SocketTracer(pids={doomed.pid, client.pid})
        tracer.start()
        rows: list[dict] = []
        try:
            client.go()
            deadline = time.monotonic() + 30
            while "SELECT SLEEP(60)" not in doomed.sql("SHOW PROCESSLIST;") and time.monotonic() < deadline:
                tracer.poll(50)
            # the query's bytes seen at both ends: the client's write, the server's two reads
            wait_for_rows(tracer, rows, lambda _: tracer.stats()["events"] >= 3, timeout=10)
            doomed.proc.kill()
            out = client.finish(tracer)
            wait_for_rows(tracer, rows, lambda _: tracer.open_connections() == 0)
        finally:
            tracer.stop()
            client.kill()
        rows.extend(tracer.drain_tables()["mysql_events"].to_pylist())
    assert json.loads(out)["error"] == 2013  # PyMySQL: "Lost connection to MySQL server during query"
    assert [r for r in rows if "SLEEP" in r["req_body"]] == []
    drops = tracer.drops()
    assert drops["unmatched"] >= 2 and drops["parse_error"] == 0, drops  # the query, at both ends


def test_a_query_over_16_mib_is_one_row_with_its_true_size(server: MariaDB):
    """20 MiB sent in one call (two packets: 0xffffff bytes, then the rest); the kernel copies its
    first bytes and counts the rest, at the client in one stretch, at the server read by read."""
    client = ClientProcess.python("big", server.port)
    out, rows, tracer = traced(server, client, expect_rows=2 * 7)
    seen = json.loads(out)
    assert seen == {"inserted": 1, "length": 20 << 20}
    text = "INSERT INTO big VALUES ('" + "q" * (20 << 20) + "')"
    expected = [
        CONNECT_ROOT,
        *PYMYSQL_SETUP,
        (3, "CREATE TABLE big (v LONGTEXT)", OK, "Affected rows = 0"),
        (3, text[:1024] + "... [TRUNCATED]", OK, f"Affected rows = {seen['inserted']}"),
        (3, "SELECT LENGTH(v) FROM big", OK, "Resultset rows = 1"),
        (1, "", NONE, ""),
    ]
    client_rows, server_rows = both_ends(rows, server, client)
    assert shape(client_rows) == expected
    assert shape(server_rows) == expected
    assert tracer.drops()["data_gap"] == 0
