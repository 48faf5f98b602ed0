"""Record the byte streams in pxq/agent/protocols/pgsql/streams/ from a real PostgreSQL 15.

    PYTHONPATH=$PWD .venv/bin/python tests/agent/record_pgsql_streams.py

Each conversation runs a real client (psycopg 3, psql) against a real server started by
:func:`pxq.testing.servers.postgres.postgres_server`, through a byte-for-byte TCP relay that keeps
every chunk as read, with its direction and timestamp (the streams format of
:mod:`pxq.testing.streams`). Re-recording changes pids, secrets, timings, but not what the tests
assert (they assert what the client saw, saved next to the chunks as ``client_view``).
"""

from __future__ import annotations

import json
import select
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from pxq.agent.protocols.pgsql import RECORDED_STREAMS
from pxq.testing.ports import LOOPBACK
from pxq.testing.servers.postgres import PostgresServer, postgres_server


class RawRelay:
    """Relays one TCP connection at a time to ``upstream`` port and records its chunks."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.listener = socket.create_server((LOOPBACK, 0))
        self.port = self.listener.getsockname()[1]
        self.chunks: list[tuple[str, int, bytes]] = []
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.chunks = []
        self._thread = threading.Thread(target=self._serve_one, daemon=True)
        self._thread.start()

    def wait(self) -> list[tuple[str, int, bytes]]:
        assert self._thread is not None
        self._thread.join(timeout=30)
        t0 = self.chunks[0][1]
        return [(d, ts - t0, data) for d, ts, data in self.chunks]

    def _serve_one(self) -> None:
        client, _ = self.listener.accept()
        server = socket.create_connection((LOOPBACK, self.upstream))
        for s in (client, server):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peers = {client: (server, "req"), server: (client, "resp")}
        open_ = {client, server}
        while open_:
            ready, _, _ = select.select(list(open_), [], [], 10)
            if not ready:
                break
            for s in ready:
                data = s.recv(65536)
                other, direction = peers[s]
                if not data:
                    open_.clear()
                    break
                self.chunks.append((direction, time.monotonic_ns(), data))
                other.sendall(data)
        client.close()
        server.close()


def simple_queries(conninfo: str) -> dict[str, Any]:
    """psycopg, no prepared statements: a CREATE, an INSERT, a SELECT of two rows, a multi-statement
    query string, an error (undefined table) and pg_sleep(0.05)."""
    view: dict[str, Any] = {}
    with psycopg.connect(conninfo, autocommit=True, prepare_threshold=None) as conn:
        cur = conn.cursor()
        cur.execute("CREATE TABLE items (id int PRIMARY KEY, name text, price float8)")
        view["create"] = cur.statusmessage
        cur.execute("INSERT INTO items VALUES (1, 'apple', 1.5), (2, 'pear', NULL)")
        view["insert"] = (cur.statusmessage, cur.rowcount)
        # psycopg sends a query without parameters as a simple Query: one row per statement string.
        cur.execute("SELECT id, name FROM items ORDER BY id")
        view["select"] = (cur.statusmessage, cur.fetchall())
        try:
            cur.execute("SELECT * FROM no_such_table")
        except psycopg.Error as e:
            view["error"] = (e.sqlstate, e.diag.message_primary, e.diag.severity)
        cur.execute("SELECT pg_sleep(0.05)")
        view["sleep"] = cur.statusmessage
    return view


def multi_statement(server: PostgresServer, port: int) -> dict[str, Any]:
    """psql -c with two statements in one string: one simple Query, two results. sslmode=prefer:
    libpq asks for SSL first and the server (ssl=off) answers 'N'."""
    sql = "SELECT 1 AS one; SELECT 'x' AS letter, NULL AS nothing"
    env = {**server.env(), "PGSSLMODE": "prefer"}
    out = subprocess.run(["psql", "-X", "-h", LOOPBACK, "-p", str(port), "-U", "postgres", "-d", "postgres",
                          "-A", "-c", sql], env=env, capture_output=True, text=True, check=True)  # fmt: skip
    return {"sql": sql, "stdout": out.stdout}


def prepared_types(conninfo: str) -> dict[str, Any]:
    """psycopg with prepare=True (server-side prepared statements: Parse/Bind/Describe/Execute/Sync
    in one write, then Bind/Execute/Sync on reuse): a bound value of each common type, NULL
    among them, twice; an INSERT with parameters."""
    sql = "SELECT %s::int8, %s::text, %s::float8, %s::bool, %s::text, %s::timestamptz, %s::bytea"
    values = (42, "it's", 2.5, True, None, datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC), b"\x00\xffab")
    view: dict[str, Any] = {"sql": sql}
    with psycopg.connect(conninfo, autocommit=True) as conn:
        cur = conn.cursor()
        cur.execute(sql, values, prepare=True)
        view["first"] = (cur.statusmessage, repr(cur.fetchone()))
        cur.execute(sql, values, prepare=True)
        view["second"] = (cur.statusmessage, repr(cur.fetchone()))
        cur.execute("CREATE TEMP TABLE t (a int, b text)")
        cur.execute("INSERT INTO t VALUES (%s, %s), (%s, %s)", (1, "one", 2, "two"), prepare=True)
        view["insert"] = (cur.statusmessage, cur.rowcount)
        try:
            cur.execute("SELECT 1 / %s::int", (0,), prepare=True)
        except psycopg.Error as e:
            view["error"] = (e.sqlstate, e.diag.message_primary)
    return view


def pipeline_mode(conninfo: str, relay: RawRelay) -> dict[str, Any]:
    """libpq pipeline mode (psycopg's pq binding): a pg_sleep(0.2), then three parameterised
    SELECTs, each batch (Parse/Bind/Describe/Execute) ended by its own Sync and flushed in a write
    of its own, read by the relay before the next is sent, all while the sleep still runs (four
    exchanges in flight); then the results; then an INSERT and a query one at a time."""
    view: dict[str, Any] = {"pipelined": []}
    with psycopg.connect(conninfo, autocommit=True, prepare_threshold=None) as conn:
        pgconn = conn.pgconn
        pgconn.enter_pipeline_mode()
        batches = [(b"SELECT pg_sleep(0.2)", [])] + [
            (b"SELECT $1::int * 10, $2::text", [str(i).encode(), f"row-{i}".encode()]) for i in range(3)
        ]
        for n, (sql, params) in enumerate(batches, 1):
            pgconn.send_query_params(sql, params)
            pgconn.pipeline_sync()
            while pgconn.flush():
                pass
            _wait_until(lambda n=n: sum(d == "req" and data[:1] == b"P" for d, _, data in relay.chunks) >= n)
        syncs = 0
        while syncs < len(batches):  # each Sync's ReadyForQuery read: nothing left in flight
            pgconn.consume_input()
            if pgconn.is_busy():
                select.select([pgconn.socket], [], [], 1)
                continue
            result = pgconn.get_result()
            if result is None:
                continue  # the end of one query's results
            if result.status == psycopg.pq.ExecStatus.TUPLES_OK:
                view["pipelined"].append([result.get_value(0, c) for c in range(result.nfields)])
            elif result.status == psycopg.pq.ExecStatus.PIPELINE_SYNC:
                syncs += 1
        pgconn.exit_pipeline_mode()
        cur = conn.cursor()
        cur.execute("CREATE TEMP TABLE p (a int, b text)")
        cur.execute("INSERT INTO p VALUES (%s, %s)", (7, "seven"))
        view["insert"] = (cur.statusmessage, cur.rowcount)
        view["select"] = repr(conn.execute("SELECT count(*) FROM p").fetchone())
    return view


def _wait_until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the relay did not read the batch")
        time.sleep(0.001)


def copy_in_out(conninfo: str) -> dict[str, Any]:
    """COPY FROM STDIN (three rows) and COPY TO STDOUT."""
    view: dict[str, Any] = {}
    with psycopg.connect(conninfo, autocommit=True, prepare_threshold=None) as conn:
        cur = conn.cursor()
        cur.execute("CREATE TEMP TABLE c (a int, b text)")
        with cur.copy("COPY c FROM STDIN") as copy:
            for row in ((1, "x"), (2, "y"), (3, "z")):
                copy.write_row(row)
        view["copy_in"] = (cur.statusmessage, cur.rowcount)
        out = b""
        with cur.copy("COPY c TO STDOUT") as copy:
            for block in copy:
                out += bytes(block)
        view["copy_out"] = (cur.statusmessage, out.decode())
    return view


# A bytea value holding a whole simple Query message: what a client's bulk bytes may contain (a
# capture of PostgreSQL traffic stored in a table). After a hole in the client's bytes that ends
# where this value begins, it looks like the start of a request; the CopyData header it ends with
# takes in what follows it on the wire (the binary COPY's trailer, 2 bytes, and CopyDone, 5), so
# framing from it lands where the real stream's next message begins.
QUERY_INSIDE_DATA = (
    b"Q" + struct.pack(">i", 4 + len(b"SELECT 'inside the data'\x00")) + b"SELECT 'inside the data'\x00"
    + b"d" + struct.pack(">i", 4 + 2 + 5)
)  # fmt: skip


def wire_query_in_copy(conninfo: str) -> dict[str, Any]:
    """COPY FROM STDIN in binary format of one bytea value that holds a whole simple Query
    message, then three queries."""
    view: dict[str, Any] = {}
    with psycopg.connect(conninfo, autocommit=True, prepare_threshold=None) as conn:
        cur = conn.cursor()
        cur.execute("CREATE TEMP TABLE w (b bytea)")
        with cur.copy("COPY w FROM STDIN (FORMAT binary)") as copy:
            copy.set_types(["bytea"])
            copy.write_row((QUERY_INSIDE_DATA,))
        view["copy_in"] = (cur.statusmessage, cur.rowcount)
        view["selects"] = [conn.execute(f"SELECT 'after {i}'").fetchone() for i in range(3)]
    return view


def scram_login(conninfo: str) -> dict[str, Any]:
    """A scram-sha-256 login (the password must never appear in a row) and one query."""
    with psycopg.connect(conninfo, autocommit=True, prepare_threshold=None) as conn:
        return {"select": conn.execute("SELECT current_user").fetchone()}


def record(
    name: str, description: str, server: PostgresServer, run: Callable[[int], dict[str, Any]],
    relay: RawRelay | None = None,
) -> None:  # fmt: skip
    """``run`` the client on a relay's port (``relay``: this one, which ``run`` watches)."""
    relay = relay or RawRelay(server.port)
    relay.start()
    view = run(relay.port)
    chunks = relay.wait()
    record = {
        "name": name,
        "server": "PostgreSQL 15 (tools/setup.sh), psycopg 3 / psql",
        "description": description,
        "client_view": view,
        "chunks": [[d, ts, data.decode("latin-1")] for d, ts, data in chunks],
    }
    path = Path(RECORDED_STREAMS) / f"{name}.json"
    path.write_text(json.dumps(record, indent=1, default=str) + "\n")
    print(f"{path}: {len(chunks)} chunks", file=sys.stderr)


def main(only: list[str]) -> None:
    """Record every conversation, or only the one named (``pipeline_mode``, ``wire_query_in_copy``)."""
    Path(RECORDED_STREAMS).mkdir(exist_ok=True)
    with postgres_server() as server:

        def info(port: int) -> str:
            return server.conninfo(port=str(port))

        if only == ["wire_query_in_copy"]:
            record("wire_query_in_copy", wire_query_in_copy.__doc__ or "", server,
                   lambda p: wire_query_in_copy(info(p)))  # fmt: skip
            return
        relay = RawRelay(server.port)
        record("pipeline_mode", pipeline_mode.__doc__ or "", server, lambda p: pipeline_mode(info(p), relay), relay)
        if only == ["pipeline_mode"]:
            return
        record("simple_queries", simple_queries.__doc__ or "", server, lambda p: simple_queries(info(p)))
        record("multi_statement", multi_statement.__doc__ or "", server, lambda p: multi_statement(server, p))
        record("prepared_types", prepared_types.__doc__ or "", server, lambda p: prepared_types(info(p)))
        record("copy_in_out", copy_in_out.__doc__ or "", server, lambda p: copy_in_out(info(p)))
        record("wire_query_in_copy", wire_query_in_copy.__doc__ or "", server,
               lambda p: wire_query_in_copy(info(p)))  # fmt: skip
    with postgres_server(password="pxq-Secret-pw") as server:
        record("scram_login", scram_login.__doc__ or "", server,
               lambda p: scram_login(server.conninfo(port=str(p))))  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1:])
