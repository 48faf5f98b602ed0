"""The demo, live: ``python -m pxq.testing.demo_workload`` (nginx, the backend, a real PostgreSQL and
a real Redis, all its descendants) captured once by ``pxq capture`` with the three tables
tools/demo.sh records, under the workload's pid. The capture must hold the HTTP requests of the
mix, the PostgreSQL conversations whose SQL is the backend's own (its module constants and the
user ids of the mix are the expected values) and the Redis calls of its cache.

Needs root and bcc; marked ``kernel`` and ``servers``.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest

from pxq.agent.procinfo import child_pids, process_info
from pxq.replay import open_capture
from pxq.testing import backend
from pxq.testing.kernel import require_bpf
from pxq.testing.workload import DATABASE_STEPS, DEMO_MIX
from tests.cli_support import assert_no_traceback, start_pxq

pytestmark = [pytest.mark.kernel, pytest.mark.servers]

WINDOW_SECONDS = 5  # several rounds of the mix (about a second each)
START_TIMEOUT = 90.0
TABLES = "http_events,pgsql_events,redis_events"  # as tools/demo.sh captures
CLIENT, SERVER = 1, 2  # trace_role


@pytest.fixture(autouse=True)
def _bpf():
    require_bpf()


def _readline(stream, deadline: float) -> str:
    ready, _, _ = select.select([stream], [], [], max(0.0, deadline - time.monotonic()))
    return stream.readline() if ready else ""


def _descendants(pid: int) -> set[int]:
    found, todo = set(), [pid]
    while todo:
        for child in child_pids(todo.pop()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


@pytest.fixture(scope="module")
def demo_capture(tmp_path_factory):
    """(the capture directory, the backend's pid): the workload waits
    for a go file, created once pxq says its probes are attached, so each conversation in the
    window is seen from its first byte."""
    work = tmp_path_factory.mktemp("demo")
    ready, go, out = work / "ready", work / "go", work / "capture"
    workload = subprocess.Popen(
        [sys.executable, "-m", "pxq.testing.demo_workload", "--seconds", "300", "--ready-file", str(ready),
         "--go-file", str(go)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    capture = None
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not ready.exists() or not ready.read_text().endswith("\n"):
            assert workload.poll() is None, f"the workload exited: {workload.stderr.read()}"
            assert time.monotonic() < deadline, "the workload did not start"
            time.sleep(0.05)
        servers = _descendants(workload.pid)
        (backend_pid,) = (p for p in servers if "pxq.testing.backend" in (process_info(p) or {}).get("cmdline", ""))
        capture = start_pxq("capture", "--out", str(out), "--for", f"{WINDOW_SECONDS}s", "--tables", TABLES,
                            "--pid", str(workload.pid))  # fmt: skip
        lines = []
        deadline = time.monotonic() + START_TIMEOUT
        while not any("probes attached" in line for line in lines):
            line = _readline(capture.stderr, deadline)
            assert line, f"pxq capture did not attach: {''.join(lines)}"
            lines.append(line)
        go.touch()
        _, err = capture.communicate(timeout=WINDOW_SECONDS + START_TIMEOUT)
        assert_no_traceback("".join(lines) + err, "pxq capture")
        assert capture.returncode == 0, "".join(lines) + err
        # SIGTERM, as tools/demo.sh stops it: the workload must stop every server it started.
        workload.send_signal(signal.SIGTERM)
        workload.wait(timeout=60)
        alive = [pid for pid in servers if _alive(pid)]
        assert not alive, f"the workload left servers running: {alive}"
        yield out, backend_pid
    finally:
        for proc in (capture, workload):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        workload.stderr.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie of a process that has exited but not yet been reaped by init counts as stopped.
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return False


def _pid(row: dict) -> int:
    return int(row["upid"].split(":")[1])


def _rows(out: Path, table: str) -> list[dict]:
    return sorted(open_capture(out).scan(table).to_pylist(), key=lambda r: r["time_"])


def _dollar(sql: str) -> str:
    """psycopg's %s placeholders as PostgreSQL receives them: $1, $2, ..."""
    n = 0
    while "%s" in sql:
        n += 1
        sql = sql.replace("%s", f"${n}", 1)
    return sql


# The users the mix asks for, as backend.SCHEMA_SQL defines them (ids 1..USERS).
USER_IDS = sorted(
    {int(s.path.removeprefix("/api/users/")) for s in DATABASE_STEPS if s.path.removeprefix("/api/users/").isdigit()}
)


def _user(user_id: int) -> dict | None:
    if not 1 <= user_id <= backend.USERS:
        return None
    return {"id": user_id, "name": f"user-{user_id}", "email": f"user{user_id}@example.com"}


def test_the_capture_holds_the_mix_over_http_from_nginx_and_the_backend(demo_capture):
    out, _ = demo_capture
    rows = _rows(out, "http_events")
    # nginx serves every step of the mix (its server side, role 2); the backend the proxied ones.
    served = {(r["req_method"], r["req_path"], r["resp_status"]) for r in rows if r["trace_role"] == SERVER}
    assert {(s.method, s.path, s.expect_status) for s in DEMO_MIX} <= served
    db_error = [r for r in rows if r["req_path"] == "/api/db-error"]
    # The backend's own answer carries psycopg's e.sqlstate for the failing query: undefined_table.
    assert db_error and all(json.loads(r["resp_body"])["sqlstate"] == "42P01" for r in db_error)
    report = [r for r in rows if r["req_path"] == "/api/report"]
    assert report and all(r["latency"] >= backend.REPORT_SECONDS * 1e9 for r in report)


def test_the_capture_holds_the_backends_sql_both_roles(demo_capture):
    out, backend_pid = demo_capture
    rows = _rows(out, "pgsql_events")
    assert rows and all(r["latency"] > 0 for r in rows)
    by_id = _dollar(backend.USER_BY_ID_SQL)
    simple = {backend.USER_COUNT_SQL, backend.REPORT_SQL, backend.BROKEN_SQL}
    executes = {f"query=[{by_id}] params=[{user_id}]": user_id for user_id in USER_IDS}
    for role in (CLIENT, SERVER):
        side = [r for r in rows if r["trace_role"] == role]
        queries = defaultdict(list)
        for r in side:
            if r["req_cmd"] == "Query":
                queries[r["req"]].append(r)
        # Every simple query the backend sends, and nothing else as a simple query.
        assert set(queries) == simple, sorted(queries)
        for r in queries[backend.USER_COUNT_SQL]:
            assert r["resp"] == f"count\n{backend.USERS}\nSELECT 1"
        for r in queries[backend.REPORT_SQL]:
            assert r["resp"] == f"count,pg_sleep\n{backend.USERS},\nSELECT 1"
            assert r["latency"] >= backend.REPORT_SECONDS * 1e9
        for r in queries[backend.BROKEN_SQL]:
            assert r["resp"].startswith("ERROR RESPONSE [Severity=ERROR ") and "Code=42P01 " in r["resp"], r
        # The prepared statement: its Parse with the SQL, its Executes with each user id bound.
        assert {r["req"] for r in side if r["req_cmd"] == "Parse"} == {by_id}
        seen = {r["req"] for r in side if r["req_cmd"] == "Execute"}
        assert seen == set(executes), sorted(seen)
        for r in side:
            if r["req_cmd"] == "Execute":
                user = _user(executes[r["req"]])
                if user is None:
                    assert r["resp"] == "SELECT 0", r
                else:  # Pixie's text: the column names, the row's values, the command tag
                    assert r["resp"] == f"id,name,email\n{user['id']},{user['name']},{user['email']}\nSELECT 1", r
        assert {r["req_cmd"] for r in side} <= {"Query", "Parse", "Bind", "Describe", "Execute", "Sync"}
    # The client side is the backend; the server side PostgreSQL's backend processes.
    assert {_pid(r) for r in rows if r["trace_role"] == CLIENT} == {backend_pid}
    assert backend_pid not in {_pid(r) for r in rows if r["trace_role"] == SERVER}


def test_the_capture_holds_the_backends_redis_cache_calls(demo_capture):
    out, backend_pid = demo_capture
    # Without what redis-py sends on its own when it connects (HELLO, CLIENT SETINFO).
    rows = [r for r in _rows(out, "redis_events") if r["req_cmd"] not in ("HELLO", "CLIENT")]
    for role in (CLIENT, SERVER):
        side = [r for r in rows if r["trace_role"] == role]
        assert {r["req_cmd"] for r in side} == {"GET", "SET"}, side
        gets = {}
        for r in side:
            if r["req_cmd"] == "GET":
                gets.setdefault(r["req_args"], set()).add(r["resp"])
        keys = {user_id: backend.CACHE_KEY.format(id=user_id) for user_id in USER_IDS}
        assert set(gets) == {json.dumps({"key": key}, separators=(",", ":")) for key in keys.values()}
        for user_id, key in keys.items():
            user = _user(user_id)
            found = gets[json.dumps({"key": key}, separators=(",", ":"))]
            # A miss is nil; a hit is the JSON the backend cached (users that do not exist never are).
            assert found <= ({"<NULL>", json.dumps(user)} if user else {"<NULL>"}), found
        sets = {(r["req_args"], r["resp"]) for r in side if r["req_cmd"] == "SET"}
        expected_sets = {
            (
                json.dumps(
                    {"key": keys[u], "value": json.dumps(_user(u)), "options": [f"EX {backend.CACHE_SECONDS}"]},
                    separators=(",", ":"),
                ),
                "OK",
            )
            for u in USER_IDS
            if _user(u) is not None
        }
        assert sets == expected_sets, sets
        assert all(r["latency"] > 0 for r in side)
    assert {_pid(r) for r in rows if r["trace_role"] == CLIENT} == {backend_pid}
