"""The demo's workload without tracing: the backend's database paths against a real PostgreSQL and
a real Redis, and the demo workload process stopping everything it started when tools/demo.sh
sends it SIGTERM. Marked ``servers``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psycopg
import pytest
import redis

from pxq.agent.procinfo import child_pids
from pxq.testing import backend
from pxq.testing.workload import DEMO_MIX, nginx_workload, run_client_mix

pytestmark = pytest.mark.servers

START_TIMEOUT = 90.0


def get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.fixture(scope="module")
def workload():
    with nginx_workload(databases=True) as started:
        yield started


def test_database_paths_answer_from_postgres_through_the_redis_cache(workload):
    base = workload.base_url
    dbs = workload.databases
    cache = redis.Redis(host="127.0.0.1", port=dbs.redis.port, decode_responses=True)
    key = backend.CACHE_KEY.format(id=3)
    cache.delete(key)
    # The row as PostgreSQL itself has it.
    with psycopg.connect(dbs.postgres.conninfo()) as conn:
        row = conn.execute("SELECT id, name, email FROM users WHERE id = 3").fetchone()
        count = conn.execute("SELECT count(*) FROM users").fetchone()[0]
    user = dict(zip(("id", "name", "email"), row, strict=True))
    assert get(f"{base}/api/users/3") == (200, {"user": user, "cache": "miss"})
    assert json.loads(cache.get(key)) == user
    assert 0 < cache.ttl(key) <= backend.CACHE_SECONDS
    assert get(f"{base}/api/users/3") == (200, {"user": user, "cache": "hit"})
    assert get(f"{base}/api/users/{count + 1}")[0] == 404
    assert cache.get(backend.CACHE_KEY.format(id=count + 1)) is None  # nothing cached for no user
    assert get(f"{base}/api/users") == (200, {"users": count})
    t0 = time.monotonic()
    assert get(f"{base}/api/report") == (200, {"users": count})
    assert time.monotonic() - t0 >= backend.REPORT_SECONDS
    assert get(f"{base}/api/db-error") == (500, {"error": "the query failed", "sqlstate": "42P01"})
    cache.close()


def test_demo_mix_gets_what_each_step_expects(workload):
    results = run_client_mix(workload.base_url, 2 * len(DEMO_MIX), mix=DEMO_MIX)
    assert [(r.method, r.path) for r in results] == [(s.method, s.path) for s in DEMO_MIX] * 2
    assert all(r.status == r.expect_status for r in results), [(r.path, r.status) for r in results]


def test_database_paths_without_databases_say_so(nginx_workload):
    status, body = get(nginx_workload.base_url + "/api/users/1")
    assert status == 503 and "no database" in body["error"]


def _tree(pid: int) -> set[int]:
    found, todo = set(), [pid]
    while todo:
        for child in child_pids(todo.pop()):
            found.add(child)
            todo.append(child)
    return found


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize("databases", [True, False])
def test_sigterm_stops_every_server_the_demo_workload_started(tmp_path, databases):
    """tools/demo.sh stops the workload with SIGTERM once its capture is written: nginx, the
    backend, PostgreSQL and Redis must go with it (Python's default SIGTERM left them running)."""
    ready = tmp_path / "ready"
    args = [sys.executable, "-m", "pxq.testing.demo_workload", "--seconds", "300", "--ready-file", str(ready)]
    proc = subprocess.Popen(args + ([] if databases else ["--no-databases"]), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    servers: set[int] = set()
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not (ready.exists() and ready.read_text().endswith("\n")):
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "the workload did not start"
            time.sleep(0.05)
        servers = _tree(proc.pid)
        # nginx's master and its two workers, the backend, and with databases the postmaster (and
        # its own helper processes) and redis-server.
        assert len(servers) >= (6 if databases else 4)
        assert status_of(ready.read_text().strip() + "/api/items") == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM
        assert [pid for pid in servers if _running(pid)] == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in servers:  # what a failing stop left behind: ours, by pid
            if _running(pid):
                os.kill(pid, signal.SIGKILL)
        proc.stderr.close()


def status_of(url: str) -> int:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.status
