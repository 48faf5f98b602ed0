"""Redis on the running kernel: a real redis-server on loopback, real clients (redis-py, redis-cli,
redis-benchmark), both traced (pid filter: the server and the one client), and the exact
``redis_events`` rows, from both ends of each connection.

Expected replies are the client's own view (what redis-py returned, what redis-cli printed, how
many commands redis-benchmark sent); expected ``req_args`` follow Pixie's format as its own kernel
test states it (src/stirling/source_connectors/socket_tracer/redis_trace_bpf_test.cc: e.g.
``SET`` -> ``{"key":"foo","value":"100","options":["EX 10","NX"]}``, ``HMSET`` ->
``{"key":..,"field value":[{"field":"f1"},{"value":"100"},..]}``, ``PUSH PUB`` rows).
"""

from __future__ import annotations

import json
import re
import socket
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import redis

from pxq.agent.protocols.interface import SECRET_MARKER
from pxq.replay.writer import write_capture
from pxq.testing.kernel import require_bpf
from pxq.testing.servers.redis import redis_server
from tests.agent.redis_live import CLIENT_ROLE, SERVER_ROLE, Traced, run_redis_py, run_shell_client

pytestmark = [pytest.mark.kernel, pytest.mark.servers]

PASSWORD = "pxq-redis-s3cret-4711"
# Commands redis-py sends on its own when it connects (its version and name; Redis 7.0 answers
# CLIENT SETINFO with an error): present in the rows, absent from the client's report.
HANDSHAKE = {"CLIENT", "HELLO", "AUTH"}


@pytest.fixture(autouse=True)
def _bpf():
    require_bpf()


@pytest.fixture(scope="module")
def server():
    with redis_server() as s:
        yield s


def reply_text(reply: object) -> str:
    """A reply as Pixie's ``resp`` column shows it, from redis-py's value: a string as itself, an
    integer in decimal, nil ``<NULL>``, an error ``-`` and its message, an array a JSON array of
    its elements' texts (parse.cc ParseMessage/ParseArray), a RESP3 map a JSON object."""
    if isinstance(reply, dict):
        return "-" + reply["error"]
    if reply is None:
        return "<NULL>"
    if isinstance(reply, bool):
        return "true" if reply else "false"
    if isinstance(reply, int):
        return str(reply)
    if isinstance(reply, str):
        return reply
    return json.dumps([reply_text(r) for r in reply], ensure_ascii=False, separators=(",", ":"))


def both_roles(traced: Traced) -> list[list[tuple[str, str, str]]]:
    out = []
    for role in (CLIENT_ROLE, SERVER_ROLE):
        rows = traced.rows(role)
        for r in rows:
            assert r["latency"] >= 0
            if r["req_cmd"] != "PUSH PUB":
                assert r["latency"] > 0, r
        out.append([(r["req_cmd"], r["req_args"], r["resp"]) for r in rows if r["req_cmd"] not in HANDSHAKE])
    return out


def assert_no_losses(traced: Traced) -> None:
    drops = traced.tracer.drops()
    assert all(n == 0 for n in drops.values()), (drops, traced.tracer._tracker.error_counts("redis"))


def test_get_set_hgetall_and_an_error_exact_rows_both_roles(server):
    traced = run_redis_py(server, "basic")
    replies = [reply_text(r["reply"]) for r in traced.report]
    assert replies[0] == "OK" and replies[6].startswith("-WRONGTYPE")
    args = [
        ("SET", '{"key":"foo","value":"bar","options":[]}'),
        ("GET", '{"key":"foo"}'),
        ("HSET", '{"key":"h","field value":[{"field":"f1"},{"value":"v1"},{"field":"f2"},{"value":"v2"}]}'),
        ("HGETALL", '{"key":"h"}'),
        ("GET", '{"key":"missing"}'),
        ("LPUSH", '{"key":"list","element":["a","b"]}'),
        ("GET", '{"key":"list"}'),
        ("DEL", '{"key":["foo","h","list"]}'),
    ]
    assert [r["cmd"][0] for r in traced.report] == [cmd for cmd, _ in args]
    # HGETALL: redis-py's dict of the RESP2 flat array, in order.
    assert replies[3] == '["f1","v1","f2","v2"]'
    expected = [(cmd, a, reply) for (cmd, a), reply in zip(args, replies)]
    client, server_rows = both_roles(traced)
    assert client == expected
    assert server_rows == expected
    assert_no_losses(traced)
    # One connection seen from both ends: addresses mirror each other.
    c, s = traced.rows(CLIENT_ROLE)[0], traced.rows(SERVER_ROLE)[0]
    assert (c["remote_addr"], c["remote_port"]) == ("127.0.0.1", server.port) == (s["local_addr"], s["local_port"])
    assert (c["local_addr"], c["local_port"]) == (s["remote_addr"], s["remote_port"])


@pytest.mark.parametrize("n", [2, 40])
def test_a_pipeline_of_n_commands_is_n_rows_in_order(server, n):
    traced = run_redis_py(server, "pipeline", "--n", str(n))
    assert len(traced.report) == n
    expected = []
    for r in traced.report:
        cmd = r["cmd"]
        a = f'{{"key":"{cmd[1]}","increment":"{cmd[2]}"}}' if cmd[0] == "INCRBY" else f'{{"key":"{cmd[1]}"}}'
        expected.append((cmd[0], a, reply_text(r["reply"])))
    for rows in both_roles(traced):
        assert rows == expected
    assert_no_losses(traced)


def test_multi_exec_each_command_a_row_and_execs_array(server):
    traced = run_redis_py(server, "transaction")
    exec_reply = traced.report[-1]["reply"]
    expected = [
        ("MULTI", "[]", "OK"),
        ("INCR", '{"key":"counter"}', "QUEUED"),
        ("INCRBY", '{"key":"counter","increment":"10"}', "QUEUED"),
        ("GET", '{"key":"counter"}', "QUEUED"),
        ("EXEC", "[]", reply_text(exec_reply)),
    ]
    for rows in both_roles(traced):
        assert rows == expected
    assert_no_losses(traced)


def test_pubsub_subscription_publish_and_the_pushed_message_row(server):
    traced = run_redis_py(server, "pubsub")
    confirm, published, pushed = (r["reply"] for r in traced.report)
    assert pushed == ["message", "news", "hello"]
    expected = [
        ("SUBSCRIBE", '{"channel":["news"]}', reply_text(confirm)),
        ("PUBLISH", '{"channel":"news","message":"hello"}', reply_text(published)),
        # Pixie's row for a pushed message: no request, the message as the response.
        ("PUSH PUB", "", reply_text(pushed)),
    ]
    for role, rows in zip((CLIENT_ROLE, SERVER_ROLE), both_roles(traced)):
        assert rows == expected, role
    push_rows = [r for r in traced.rows(CLIENT_ROLE) if r["req_cmd"] == "PUSH PUB"]
    assert push_rows[0]["latency"] == 0
    assert_no_losses(traced)


@pytest.fixture(scope="module")
def guarded_server():
    with redis_server(password=PASSWORD) as s:
        yield s


def _capture_files_hold(directory: Path, secret: str) -> bool:
    for path in directory.rglob("*"):
        if path.is_file() and secret.encode() in path.read_bytes():
            return True
        if path.suffix == ".parquet" and secret in json.dumps(pq.read_table(path).to_pylist(), default=str):
            return True
    return False


@pytest.mark.parametrize("protocol", [2, 3])
def test_auth_and_hello_auth_show_the_marker_and_the_password_is_nowhere(guarded_server, protocol, tmp_path):
    """redis-py sends ``AUTH password`` (RESP2) or ``HELLO 3 AUTH default password`` (RESP3)."""
    traced = run_redis_py(guarded_server, "auth", "--protocol", str(protocol))
    for role in (CLIENT_ROLE, SERVER_ROLE):
        rows = traced.rows(role)
        first = rows[0]
        if protocol == 2:
            assert (first["req_cmd"], first["req_args"], first["resp"]) == ("AUTH", f'["{SECRET_MARKER}"]', "OK")
        else:
            assert first["req_cmd"] == "HELLO"
            assert first["req_args"] == f'["3","AUTH","{SECRET_MARKER}","{SECRET_MARKER}"]'
            assert json.loads(first["resp"])["proto"] == "3"
        got = [(r["req_cmd"], r["req_args"], r["resp"]) for r in rows if r["req_cmd"] not in HANDSHAKE]
        assert got == [
            ("SET", '{"key":"guarded","value":"yes","options":[]}', "OK"),
            ("GET", '{"key":"guarded"}', reply_text(traced.report[1]["reply"])),
        ]
    table = traced.table
    assert PASSWORD not in json.dumps(table.to_pylist(), default=str)
    write_capture(tmp_path, {"redis_events": table}, host=socket.gethostname(), start_time_ns=0,
                  end_time_ns=2**62, processes=traced.tracer.processes())  # fmt: skip
    assert not _capture_files_hold(tmp_path, PASSWORD)
    assert_no_losses(traced)


def test_resp3_maps_sets_and_nulls(server):
    traced = run_redis_py(server, "resp3", "--protocol", "3")
    replies = [r["reply"] for r in traced.report]
    # redis-py's dict of HGETALL's RESP3 map, as [key, value] pairs in order.
    assert replies[1] == [["a", "1"], ["b", "2"]]
    expected = [
        ("HSET", '{"key":"h3","field value":[{"field":"a"},{"value":"1"},{"field":"b"},{"value":"2"}]}', "2"),
        ("HGETALL", '{"key":"h3"}', json.dumps(dict(replies[1]), separators=(",", ":"))),
        ("SADD", '{"key":"s3","member":["x"]}', reply_text(replies[2])),
        ("SMEMBERS", '{"key":"s3"}', reply_text(replies[3])),
        ("GET", '{"key":"nothing"}', "<NULL>"),
        ("DEL", '{"key":["h3","s3"]}', reply_text(replies[5])),
    ]
    for role in (CLIENT_ROLE, SERVER_ROLE):
        rows = traced.rows(role)
        assert rows[0]["req_cmd"] == "HELLO" and rows[0]["req_args"] == '["3"]'
        assert json.loads(rows[0]["resp"])["proto"] == "3"
        assert [(r["req_cmd"], r["req_args"], r["resp"]) for r in rows if r["req_cmd"] not in HANDSHAKE] == expected
    assert_no_losses(traced)


def test_a_connection_opened_before_the_tracer_attached(server):
    traced = run_redis_py(server, "midstream")
    expected = [
        ("SET", '{"key":"later","value":"1","options":[]}', reply_text(traced.report[0]["reply"])),
        ("INCR", '{"key":"later"}', reply_text(traced.report[1]["reply"])),
        ("GET", '{"key":"later"}', reply_text(traced.report[2]["reply"])),
    ]
    for role in (CLIENT_ROLE, SERVER_ROLE):
        rows = traced.rows(role)
        assert [(r["req_cmd"], r["req_args"], r["resp"]) for r in rows] == expected
        assert all(r["latency"] > 0 for r in rows)
    assert_no_losses(traced)


def test_redis_cli_commands_and_its_printed_replies(server):
    lines = ["set greeting hello", "get greeting", "rpush l 1 2 3", "lrange l 0 -1", "hgetall nothing", "incr greeting",
             "del l greeting"]  # fmt: skip
    script = "".join(line + "\n" for line in lines)
    traced = run_shell_client(server, f"redis-cli --no-raw -h 127.0.0.1 -p {server.port} <<'EOF'\n{script}EOF")
    printed = traced.stdout.splitlines()
    # redis-cli --no-raw prints: "OK", "\"hello\"", "(integer) 3", "1) \"1\"" ..., "(empty array)", "(error) ...".
    assert printed[0] == "OK" and printed[1] == '"hello"' and printed[2] == "(integer) 3"
    assert printed[3:6] == ['1) "1"', '2) "2"', '3) "3"']
    assert printed[6] == "(empty array)" and printed[7].startswith("(error) ERR value is not an integer")
    assert printed[8] == "(integer) 2"
    expected = [
        ("SET", '{"key":"greeting","value":"hello","options":[]}', "OK"),
        ("GET", '{"key":"greeting"}', "hello"),
        ("RPUSH", '{"key":"l","element":["1","2","3"]}', "3"),
        ("LRANGE", '{"key":"l","start":"0","stop":"-1"}', '["1","2","3"]'),
        ("HGETALL", '{"key":"nothing"}', "[]"),
        ("INCR", '{"key":"greeting"}', "-" + printed[7].removeprefix("(error) ")),
        ("DEL", '{"key":["l","greeting"]}', "2"),
    ]
    # redis-cli first asks COMMAND DOCS (for its hints); its reply (~1 MiB) is one write on the
    # server's side, beyond what the kernel copies of a call: the server's row of it is lost
    # (counted as a data gap), the client reads it in pieces and keeps it.
    for role in (CLIENT_ROLE, SERVER_ROLE):
        rows = [(r["req_cmd"], r["req_args"], r["resp"]) for r in traced.rows(role) if r["req_cmd"] != "COMMAND DOCS"]
        assert rows == expected, role


def test_redis_benchmark_pipelined_rows_equal_what_it_sent(server):
    n = 2000
    traced = run_shell_client(
        server,
        f"redis-benchmark -h 127.0.0.1 -p {server.port} -P 16 -n {n} -c 4 -t set,get --csv",
        until_rows=4 * n,
    )
    # --csv: one line per test, "SET" and "GET": each ran n requests.
    assert re.search(r'^"SET"', traced.stdout, re.M) and re.search(r'^"GET"', traced.stdout, re.M)
    # Without -r every request uses one key; what the benchmark stored there, asked untraced.
    key = "key:__rand_int__"
    stored = redis.Redis(host=server.host, port=server.port).get(key).decode("latin-1")
    for role in (CLIENT_ROLE, SERVER_ROLE):
        rows = traced.rows(role)
        counts = Counter(r["req_cmd"] for r in rows)
        # redis-benchmark first asks CONFIG GET save/appendonly on one connection per run.
        assert counts["SET"] == n and counts["GET"] == n, (role, counts)
        sets = {(r["req_args"], r["resp"]) for r in rows if r["req_cmd"] == "SET"}
        assert sets == {(json.dumps({"key": key, "value": stored, "options": []}, separators=(",", ":")), "OK")}
        gets = {(r["req_args"], r["resp"]) for r in rows if r["req_cmd"] == "GET"}
        assert gets == {(json.dumps({"key": key}, separators=(",", ":")), stored)}
    assert_no_losses(traced)


def test_pxq_capture_of_redis_keeps_no_password_and_the_scripts_count_what_was_sent(guarded_server, tmp_path):
    """`pxq capture --tables redis_events --pid <redis-server>` while redis-py (RESP2: AUTH; RESP3:
    HELLO 3 AUTH) runs known commands; then redis_data and redis_stats over the capture."""
    from tests.agent.test_live_run import finish, start_pxq, wait_attached
    from tests.cli_support import run_pxq

    cap = tmp_path / "cap"
    pxq = start_pxq("capture", "--out", str(cap), "--for", "4s", "--tables", "redis_events",
                    "--pid", str(guarded_server.pid))  # fmt: skip
    log: list[str] = []
    wait_attached(pxq, log)
    n = 25
    for protocol in (2, 3):
        client = redis.Redis(host=guarded_server.host, port=guarded_server.port, password=PASSWORD,
                             protocol=protocol)  # fmt: skip
        for _ in range(n):
            client.execute_command("INCR", "capture-hits")
            client.execute_command("GET", "capture-hits")
        client.close()
    finish(pxq, log)
    # The client's view of what it did (asked after the window, untraced).
    hits = redis.Redis(host=guarded_server.host, port=guarded_server.port, password=PASSWORD, protocol=2)
    assert int(hits.get("capture-hits")) == 2 * n
    assert not _capture_files_hold(cap, PASSWORD)

    def displays(script: str, *args: str) -> dict[str, list[dict]]:
        out: dict[str, list[dict]] = {}
        proc = run_pxq("run", script, "--from", str(cap), "-o", "json", "--", "--start_time=-1h", *args, check=True)
        for line in proc.stdout.splitlines():
            row = json.loads(line)
            out.setdefault(row.pop("_table"), []).append(row)
        return out

    per_command = Counter()
    for r in displays("redis_stats")["Commands"]:
        per_command[r["req_cmd"]] += r["throughput_total"]
    assert per_command["INCR"] == per_command["GET"] == 2 * n, per_command
    assert per_command["AUTH"] == 1 and per_command["HELLO"] == 1, per_command
    rows = displays("redis_data", "--num_head=10000")["redis_data"]
    auth = [r for r in rows if r["req_cmd"] in ("AUTH", "HELLO")]
    assert [(r["req_cmd"], r["req_args"]) for r in auth] == [
        ("AUTH", f'["{SECRET_MARKER}"]'),
        ("HELLO", f'["3","AUTH","{SECRET_MARKER}","{SECRET_MARKER}"]'),
    ]
    assert all(r["destination"].startswith("redis-server[") for r in rows)
