"""The REPL's ``:source agent HOST:PORT``: queries read a running agent's history over Arrow Flight
(the agent started by the test, serving a synthetic capture); results checked against pandas over
the capture's own Parquet file."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from pxq.repl.session import CaptureSource, ReplSession
from pxq.testing.agent_process import running_agent
from pxq.testing.ports import free_port
from pxq.testing.synthetic import write_synthetic_capture


@pytest.fixture(scope="module")
def capture(tmp_path_factory) -> Path:
    return Path(write_synthetic_capture(tmp_path_factory.mktemp("cap") / "c", 400, seed=5, null_fraction=0.05))


@pytest.fixture(scope="module")
def agent(capture, tmp_path_factory):
    with running_agent("--from", str(capture), state_dir=tmp_path_factory.mktemp("state")) as running:
        yield running


def ok(session: ReplSession, text: str):
    reply = session.submit(text)
    assert reply.error is None, reply.error
    return reply


def test_queries_over_an_agent_source_match_pandas(agent, capture, tmp_path):
    other = Path(write_synthetic_capture(tmp_path / "other", 10, seed=9))
    session = ReplSession(CaptureSource(other), output_dir=tmp_path / "flames")
    reply = ok(session, f":source agent {agent.address}")
    assert reply.lines[0].startswith(f"source: agent {agent.address} (replay, running): http_events (400 rows)")
    ok(session, "df = px.DataFrame(table='http_events', start_time='-2m')")
    ok(session, "df = df[df.resp_status >= 400]")
    reply = ok(session, "df.groupby('req_path').agg(n=('latency', px.count), worst=('latency', px.max))")
    (table,) = reply.tables.values()
    frame = pq.read_table(capture / "http_events.parquet").to_pandas()
    end = int(json.loads((capture / "capture.json").read_text())["end_time_ns"])
    frame = frame[(frame.time_.astype("int64") >= end - 120 * 10**9) & (frame.resp_status >= 400)]
    expected = (
        frame.groupby("req_path", dropna=False).agg(n=("latency", "size"), worst=("latency", "max")).reset_index()
    )
    got = table.to_pandas().sort_values("req_path").reset_index(drop=True)
    pd.testing.assert_frame_equal(got, expected.sort_values("req_path").reset_index(drop=True), check_dtype=False)
    # A table the agent does not hold is said, naming its collector (no rows, as from a capture).
    reply = session.submit("px.DataFrame(table='dns_events')")
    assert any("does not collect dns_events (collector socket_tracer" in line for line in reply.lines), reply
    session.source.close()


def test_an_agent_that_does_not_answer_is_said_at_once(tmp_path):
    other = Path(write_synthetic_capture(tmp_path / "other", 10, seed=9))
    session = ReplSession(CaptureSource(other), output_dir=tmp_path / "flames")
    reply = session.submit(f":source agent 127.0.0.1:{free_port()}")
    assert reply.error is not None and "no agent answers at 127.0.0.1:" in reply.error
    assert ok(session, ":source").lines[0].startswith("capture ")  # still the capture
