"""The node agent without the kernel: ``pxq agent serve --from DIR`` serves a capture over Arrow
Flight; ``pxq run --agent`` (and the local agent found by its state file) answers from it. Expected
rows come from pandas over the capture's Parquet file, never from pxq."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.flight as flight
import pyarrow.parquet as pq
import pytest

from pxq.agent.flight import AgentClient, AgentQueryError, make_ticket
from pxq.replay import write_capture
from pxq.testing.agent_process import AgentProcess, running_agent
from pxq.testing.synthetic import synthetic_http_events, write_synthetic_capture
from tests.cli_support import run_pxq

START_NS = 1_764_115_200_000_000_000
SPAN_NS = 300_000_000_000
ERRORS_SCRIPT = """import px
df = px.DataFrame('http_events', start_time='-2m')
df = df[df.resp_status >= 400]
df.slow = df.latency > 2000000
px.display(df[['time_', 'req_path', 'resp_status', 'latency', 'slow']], 'errors')
"""


@pytest.fixture(scope="module")
def capture(tmp_path_factory) -> Path:
    """http_events with known loss counters (as a live capture records them)."""
    directory = tmp_path_factory.mktemp("agent-cap")
    table = synthetic_http_events(3000, seed=7, start_ns=START_NS, span_ns=SPAN_NS, null_fraction=0.05)
    write_capture(
        directory,
        {"http_events": table},
        host="agent-host",
        start_time_ns=START_NS,
        end_time_ns=START_NS + SPAN_NS,
        processes={},
        drops={"http_events": {"ringbuf_full": 7, "data_gap": 3}},
    )
    return directory


@pytest.fixture(scope="module")
def agent(capture, tmp_path_factory):
    with running_agent("--from", str(capture), state_dir=tmp_path_factory.mktemp("agent-state")) as running:
        yield running


def _expected_errors(capture: Path) -> pd.DataFrame:
    frame = pq.read_table(capture / "http_events.parquet").to_pandas()
    times = frame["time_"].astype("int64")
    end = START_NS + SPAN_NS
    keep = (times >= end - 120_000_000_000) & (frame["resp_status"] >= 400)
    out = frame.loc[keep, ["time_", "req_path", "resp_status", "latency"]].copy()
    out["slow"] = out["latency"].astype("Int64").gt(2_000_000)  # null latency: null, as in PxL
    return out.sort_values(["time_", "req_path"]).reset_index(drop=True)


def _rows(stdout: str) -> pd.DataFrame:
    records = [json.loads(line) for line in stdout.splitlines() if line.strip()]
    frame = pd.DataFrame.from_records(records).drop(columns=["_table"])
    frame["time_"] = pd.to_datetime(frame["time_"]).dt.tz_localize(None).astype("datetime64[ns]")
    frame["slow"] = frame["slow"].astype("boolean")
    frame["latency"] = frame["latency"].astype("Int64")
    return frame.sort_values(["time_", "req_path"]).reset_index(drop=True)


def test_run_against_agent_gives_the_capture_rows_and_its_loss_report(agent, capture, tmp_path):
    script = tmp_path / "errors.pxl"
    script.write_text(ERRORS_SCRIPT)
    proc = run_pxq("run", str(script), "--agent", agent.address, "-o", "json", check=True)
    got = _rows(proc.stdout)
    expected = _expected_errors(capture)
    assert len(expected) > 50
    expected["time_"] = expected["time_"].astype("datetime64[ns]")
    expected["latency"] = expected["latency"].astype("Int64")
    pd.testing.assert_frame_equal(got[expected.columns], expected, check_dtype=False)
    # The capture's loss counters travel with the result, as `--from` reports them.
    assert "pxq: http_events: lost: data_gap=3, ringbuf_full=7" in proc.stderr


def test_local_agent_is_found_by_its_state_file(agent, capture, tmp_path):
    script = tmp_path / "errors.pxl"
    script.write_text(ERRORS_SCRIPT)
    env = {**os.environ, "PXQ_STATE_DIR": str(agent.state_dir)}
    proc = run_pxq("run", str(script), "-o", "json", env=env, check=True)
    assert f"answering from the local agent at {agent.address}" in proc.stderr
    assert len(_rows(proc.stdout)) == len(_expected_errors(capture))


def test_a_stale_state_file_falls_back_to_embedded_in_one_line(tmp_path, capsys, monkeypatch):
    """The file names an address nobody answers at: said once, and embedded collection is chosen."""
    import argparse

    from pxq.cli.agent import agent_for_run
    from pxq.testing.ports import free_port

    (tmp_path / "agent.json").write_text(json.dumps({"address": f"127.0.0.1:{free_port()}", "pid": 1}))
    monkeypatch.setenv("PXQ_STATE_DIR", str(tmp_path))
    chosen = agent_for_run(argparse.Namespace(agent=None, no_agent=False))
    lines = capsys.readouterr().err.strip().splitlines()
    assert chosen is None
    assert len(lines) == 1 and "does not answer" in lines[0] and "collecting embedded instead" in lines[0]


def test_script_reading_a_table_the_agent_lacks_is_refused_naming_the_collector(agent):
    proc = run_pxq("run", "dns_data", "--agent", agent.address)
    assert proc.returncode == 3
    assert "does not collect dns_events" in proc.stderr and "socket_tracer" in proc.stderr


def _ticket_for(script: str, now_ns: int) -> tuple[dict, bytes]:
    from pxq.api import compile_script
    from pxq.library import Script
    from pxq.plan.split import split

    compiled = compile_script(Script("t", script, "<t>"), now_ns=now_ns)
    (fragment,) = split(compiled.optimized).agent_fragments
    raw = make_ticket(fragment, now_ns=now_ns)
    return json.loads(raw), raw


def _still_serving(agent) -> None:
    with AgentClient(agent.address) as client:
        assert client.info()["tables"] == {"http_events": "socket_tracer", "agent_status": "agent"}
        doc, raw = _ticket_for("import px\npx.display(px.DataFrame('http_events'))", START_NS + SPAN_NS)
        assert client.get(raw).num_rows == 3000


@pytest.mark.parametrize(
    "mangle, message",
    [
        (lambda doc: b"{not json", "plan JSON at $: the ticket is not a JSON query document"),
        (lambda doc: json.dumps({**doc, "version": 9}).encode(), "plan JSON at $.version"),
        (
            lambda doc: json.dumps({**doc, "fragment": {**doc["fragment"], "format": "other"}}).encode(),
            "plan JSON at $.fragment.format",
        ),
        (
            lambda doc: json.dumps(
                {
                    **doc,
                    "fragment": {**doc["fragment"], "nodes": [{**doc["fragment"]["nodes"][0], "table": "dns_events"}]},
                }
            ).encode(),
            "plan JSON at $.fragment.nodes[0].table: this agent does not hold table 'dns_events' "
            "(its collector socket_tracer is not running here; it holds agent_status, http_events)",
        ),
        (
            lambda doc: json.dumps(
                {
                    **doc,
                    "fragment": {
                        **doc["fragment"],
                        "schemas": [
                            [*doc["fragment"]["schemas"][0], {"name": "nope", "type": "INT64", "semantic": "ST_NONE"}]
                        ],
                    },
                }
            ).encode(),
            "has no column 'nope'",
        ),
        (
            lambda doc: json.dumps({**doc, "fragment": {**doc["fragment"], "nodes": [{"kind": "agg"}]}}).encode(),
            "plan JSON at $.fragment.nodes[0].kind: an agent runs only source, filter, map, project nodes, not 'agg'",
        ),
    ],
    ids=["not-json", "version", "not-a-plan", "table-not-held", "column-not-held", "blocking-node"],
)
def test_bad_tickets_get_a_clear_error_and_the_agent_keeps_serving(agent, mangle, message):
    doc, _ = _ticket_for("import px\npx.display(px.DataFrame('http_events'))", START_NS + SPAN_NS)
    with AgentClient(agent.address) as client, pytest.raises(AgentQueryError) as caught:
        client.get(mangle(doc))
    assert message in str(caught.value)
    assert "Traceback" not in str(caught.value)
    _still_serving(agent)


@pytest.fixture(scope="module")
def big_capture(tmp_path_factory) -> Path:
    return Path(
        write_synthetic_capture(
            tmp_path_factory.mktemp("big") / "c",
            200_000,
            seed=3,
            start_ns=START_NS,
            span_ns=SPAN_NS,
            null_fraction=0.02,
        )
    )


@pytest.fixture(scope="module")
def big_agent(big_capture, tmp_path_factory):
    with running_agent("--from", str(big_capture), state_dir=tmp_path_factory.mktemp("big-state")) as running:
        yield running


def test_a_head_is_computed_on_the_agent_from_the_first_rows_only_and_exactly(big_agent, big_capture, tmp_path):
    """The merge side reads at most 5000 rows (a head): the agent sends only those, computed chunk
    by chunk over its rows, and they are the same rows pandas finds first."""
    script = tmp_path / "head.pxl"
    script.write_text(
        "import px\n"
        "df = px.DataFrame('http_events')\n"
        "df = df[df.resp_status >= 500]\n"
        "df.slow = df.latency > 2000000\n"
        "df = df.head(5000)\n"
        "px.display(df[['time_', 'req_path', 'resp_status', 'latency', 'slow']], 'head')\n"
    )
    proc = run_pxq("run", str(script), "--agent", big_agent.address, "-o", "json", check=True)
    records = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    events = pq.read_table(big_capture / "http_events.parquet").to_pylist()
    wanted = [(i, e) for i, e in enumerate(events) if e["resp_status"] is not None and e["resp_status"] >= 500][:5000]
    assert len(wanted) == 5000 and wanted[-1][0] > 16_384  # the rows span several of the agent's chunks
    assert [(r["req_path"], r["resp_status"], r["latency"]) for r in records] == [
        (e["req_path"], e["resp_status"], e["latency"]) for _, e in wanted
    ]
    assert [r["slow"] for r in records] == [
        None if e["latency"] is None else e["latency"] > 2_000_000 for _, e in wanted
    ]


def test_the_ticket_limit_is_checked_and_honoured(big_agent):
    from pxq.api import compile_script
    from pxq.library import Script
    from pxq.plan.split import split

    compiled = compile_script(
        Script("t", "import px\npx.display(px.DataFrame('http_events').head(10))", "<t>"), now_ns=START_NS + SPAN_NS
    )
    (fragment,) = split(compiled.optimized).agent_fragments
    with AgentClient(big_agent.address) as client:
        assert client.get(make_ticket(fragment, now_ns=START_NS + SPAN_NS, limit=7)).num_rows == 7
        assert client.get(make_ticket(fragment, now_ns=START_NS + SPAN_NS, limit=0)).num_rows == 0
        doc = json.loads(make_ticket(fragment, now_ns=START_NS + SPAN_NS, limit=7))
        with pytest.raises(AgentQueryError, match=r"plan JSON at \$\.limit: expected a row count"):
            client.get(json.dumps({**doc, "limit": -1}).encode())


def test_fragment_limits_only_where_every_reader_is_a_head():
    from pxq.agent.flight import fragment_limits
    from pxq.api import compile_script
    from pxq.library import load_script
    from pxq.plan.split import split

    def limits(name: str) -> dict[int, int]:
        return fragment_limits(split(compile_script(load_script(name), now_ns=START_NS).optimized).merge)

    assert limits("http_data") == {0: 100}  # its num_head default
    assert limits("service_stats") == {}  # a group-by reads every row


def test_client_disconnecting_mid_stream_leaves_the_agent_serving(big_agent):
    doc, raw = _ticket_for("import px\npx.display(px.DataFrame('http_events'))", START_NS + SPAN_NS)
    host, port = big_agent.address.rsplit(":", 1)
    client = flight.connect(f"grpc+tcp://{host}:{port}")
    reader = client.do_get(flight.Ticket(raw))
    first = reader.read_chunk().data
    assert 0 < first.num_rows < 200_000  # the stream is cut with most of it unsent
    reader.cancel()
    client.close()
    with AgentClient(big_agent.address) as again:
        assert again.get(raw).num_rows == 200_000
    assert big_agent.proc.poll() is None


def test_agent_status_reports_tables_and_the_loss_counters(agent):
    proc = run_pxq("agent", "status", "--agent", agent.address, "--json", check=True)
    status = json.loads(proc.stdout)
    assert status["mode"] == "replay" and status["state"] == "running"
    assert status["tables"]["http_events"]["rows"] == 3000
    assert status["drops"]["http_events"] == {"ringbuf_full": 7, "data_gap": 3}
    assert status["rss_bytes"] > 0 and status["cpu_user_s"] > 0
    text = run_pxq("agent", "status", "--agent", agent.address, check=True).stdout
    assert "http_events" in text and "ringbuf_full=7" in text


def test_sigterm_stops_the_agent_cleanly_and_removes_its_state_file(capture, tmp_path):
    agent = AgentProcess("--from", str(capture), state_dir=tmp_path)
    agent.wait_ready()
    assert agent.state_path.exists()
    agent.proc.send_signal(signal.SIGINT)
    assert agent.proc.wait(30) == 0
    agent.stop()
    assert "agent stopped (SIGINT)" in agent.stderr
    assert not agent.state_path.exists()


@pytest.mark.parametrize(
    "args, config, message",
    [
        (["--listen", "0.0.0.0:0"], None, "refusing to listen on 0.0.0.0 without TLS"),
        ([], 'listen = "127.0.0.1:0"\nretention = 5\n', "retention: expected a [section] table"),
        ([], "[collectors]\nprocess_stats = true\n", "collector process_stats cannot run live in this pxq yet"),
        ([], "[retention]\nwindow = 'soon'\n", "retention.window"),
        ([], "[profiler]\nsample_hz = '19'\n", "profiler.sample_hz: expected int"),
        ([], "listen = [\n", "agent config"),
    ],
    ids=["off-loopback", "section-not-table", "collector-not-live", "bad-duration", "wrong-type", "bad-toml"],
)
def test_bad_agent_configs_are_refused_before_anything_starts(tmp_path, args, config, message):
    extra = []
    if config is not None:
        (tmp_path / "agent.toml").write_text(config)
        extra = ["--config", str(tmp_path / "agent.toml")]
    proc = run_pxq("agent", "serve", "--state-dir", str(tmp_path), *args, *extra, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert not (tmp_path / "agent.json").exists()


def test_explain_shows_which_fragment_runs_where():
    proc = run_pxq("explain", "service_stats", check=True)
    where = proc.stdout.split("== where each part runs ==", 1)[1]
    assert "-- agent fragment 0 (runs on the agent" in where
    assert "Source[http_events]" in where.split("-- merge fragment")[0]
    merge = where.split("-- merge fragment", 1)[1].split("== probe manifest ==")[0]
    assert "FragmentInput[0]" in merge and "Agg[" in merge and "Source[" not in merge


def test_table_budget_evicts_the_oldest_rows_counted():
    """The node agent's per-table cap: a table over it loses its oldest batches, counted as
    table_store_budget, while other tables keep theirs."""
    from pxq.agent.table_store import TableStore

    batch = synthetic_http_events(1000, seed=1, start_ns=START_NS, span_ns=SPAN_NS)
    store = TableStore(budget_bytes=1 << 40, table_budget_bytes=int(batch.nbytes * 2.5))
    for i in range(5):
        stamped = pa.array([START_NS + i] * 1000, pa.timestamp("ns"))
        store.append("http_events", batch.set_column(batch.schema.get_field_index("time_"), "time_", stamped))
    assert store.rows("http_events") == 2000
    assert store.drops["http_events"] == {"table_store_budget": 3000}
    assert store.drop_before(START_NS + 4) == {"http_events": 1000}
    assert store.rows("http_events") == 1000


def test_agent_status_is_a_table_scripts_can_query(agent, tmp_path):
    """Pixie's GetAgentStatus columns (pixie:src/vizier/funcs/md_udtfs/md_udtfs_impl.h), then pxq's
    own, about the agent process the test started."""
    import socket

    script = tmp_path / "status.pxl"
    script.write_text(
        "import px\n"
        "df = px.DataFrame('agent_status')\n"
        "df.pid = px.upid_to_pid(df.upid)\n"
        "df.cmd = px.upid_to_cmdline(df.upid)\n"
        "px.display(df, 'status')\n"
    )
    proc = run_pxq("run", str(script), "--agent", agent.address, "-o", "json", check=True)
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    assert rows, proc.stderr
    last = rows[-1]
    assert list(last)[1:9] == [
        "time_",
        "upid",
        "agent_id",
        "asid",
        "hostname",
        "ip_address",
        "agent_state",
        "create_time",
    ]
    assert last["pid"] == agent.pid and "agent serve" in last["cmd"]
    assert last["hostname"] == socket.gethostname() and last["ip_address"] == "127.0.0.1"
    assert last["agent_state"] == "AGENT_STATE_HEALTHY" and last["last_heartbeat_ns"] == 0
    assert last["table_rows"] == 3000
    assert last["events_lost"] == 10 and json.loads(last["drops"])["http_events"] == {"ringbuf_full": 7, "data_gap": 3}
    assert last["rss_bytes"] > 10 * 2**20 and last["cpu_utime_ns"] > 0


def test_a_script_asking_another_profiler_rate_than_the_agents_is_told_so():
    """cpu_flamegraph sets perf_profiler.sample_hz (99 by default); an agent profiling at 19 Hz
    answers from its history and says so, rather than pretending or refusing."""
    from pxq.agent.flight import settings_notes
    from pxq.api import compile_script
    from pxq.library import load_script
    from pxq.plan.split import split

    manifest = split(compile_script(load_script("cpu_flamegraph"), now_ns=START_NS).optimized).manifest
    info = {"collector_options": {"perf_profiler": {"sample_hz": 19}}}
    assert settings_notes(manifest, info, "127.0.0.1:1") == [
        "the script sets perf_profiler.sample_hz=99, but agent 127.0.0.1:1 collects with sample_hz=19: "
        "its history is what is shown"
    ]
    assert settings_notes(manifest, {"collector_options": {"perf_profiler": {"sample_hz": 99}}}, "a:1") == []


def test_no_agent_at_the_address_is_one_clear_line():
    from pxq.testing.ports import free_port

    address = f"127.0.0.1:{free_port()}"
    for args in (["agent", "status", "--agent", address], ["run", "http_data", "--agent", address]):
        proc = run_pxq(*args)
        assert proc.returncode == 3
        assert (
            proc.stderr == f"pxq: no agent answers at {address} (connection refused); is `pxq agent serve` running?\n"
        )


@pytest.mark.parametrize("batch_rows, chunk_rows", [(700, 2000), (2000, 700), (1, 5), (5000, 5000)])
def test_live_store_chunks_are_its_scan_in_order(batch_rows, chunk_rows):
    """A head on the live agent reads its store's batches as asked for: concatenated, the chunks
    are exactly the whole scan (time bounds, pushed filter and columns applied alike)."""
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    from pxq.agent.daemon import StoreView
    from pxq.agent.table_store import TableStore

    n = 5000 if batch_rows > 1 else 40
    events = synthetic_http_events(n, seed=11, start_ns=START_NS, span_ns=SPAN_NS, null_fraction=0.05)
    store = TableStore()
    for offset in range(0, n, batch_rows):
        store.append("http_events", events.slice(offset, batch_rows))
    begin, end = START_NS + SPAN_NS // 4, START_NS + SPAN_NS * 3 // 4
    view = StoreView(store, begin, START_NS + SPAN_NS)
    options = {"filter": ds.field("resp_status") >= 400, "filter_columns": ("resp_status",)}
    chunks = list(view.scan_chunks("http_events", ["time_", "req_path"], None, end, rows=chunk_rows, **options))
    times = events.column("time_").cast("int64")
    keep = pc.and_(
        pc.and_(pc.greater_equal(times, begin), pc.less(times, end)), pc.greater_equal(events["resp_status"], 400)
    )
    expected = events.filter(keep).select(["time_", "req_path"])
    assert pa.concat_tables(chunks).to_pylist() == expected.to_pylist()
    assert len(chunks) >= n // max(batch_rows, chunk_rows) - 1


def test_config_file_settings_apply_and_flags_override_them(capture, tmp_path):
    config = tmp_path / "agent.toml"
    config.write_text(
        'listen = "127.0.0.1:0"\n'
        "[retention]\nwindow = '90s'\ntable_budget_mb = 8\n"
        "[profiler]\nsample_hz = 7\n"
        "[collectors]\nperf_profiler = false\n"
    )
    with running_agent("--config", str(config), "--from", str(capture), state_dir=tmp_path / "a") as agent:
        status = json.loads(run_pxq("agent", "status", "--agent", agent.address, "--json", check=True).stdout)
    assert (status["retention_s"], status["table_budget_bytes"], status["profiler_sample_hz"]) == (90, 8 << 20, 7)
    with running_agent(
        "--config",
        str(config),
        "--from",
        str(capture),
        "--retention",
        "1m",
        "--profiler-hz",
        "11",
        state_dir=tmp_path / "b",
    ) as agent:
        status = json.loads(run_pxq("agent", "status", "--agent", agent.address, "--json", check=True).stdout)
    assert (status["retention_s"], status["profiler_sample_hz"]) == (60, 11)


@pytest.mark.parametrize("other", [["--from", "somewhere"], ["--no-agent"]])
def test_agent_and_another_source_together_are_refused(other):
    proc = run_pxq("run", "http_data", "--agent", "127.0.0.1:7100", *other)
    assert proc.returncode == 2
    assert "both choose where rows come from: give one" in proc.stderr


def test_merge_side_group_by_over_flight_buffers_gives_no_alignment_warning(tmp_path):
    """Flight hands buffers at any alignment; Acero (the merge side's group-by) warned about each
    on stderr until the client asked for them aligned (this capture's buffers arrive misaligned)."""
    capture = write_synthetic_capture(tmp_path / "cap", 200, seed=1, null_fraction=0.05)
    with running_agent("--from", capture, state_dir=tmp_path / "state") as agent:
        proc = run_pxq("run", "service_stats", "--agent", agent.address, "-o", "json", check=True)
    assert proc.stdout.strip()
    assert "poorly aligned" not in proc.stderr, proc.stderr
