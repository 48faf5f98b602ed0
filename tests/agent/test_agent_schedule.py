"""Scheduled scripts of the node agent (pxq/agent/schedule.py), without the kernel: ``pxq agent
serve --from CAPTURE`` with ``[[schedule]]`` entries runs a bundled script every interval and
writes its output under the spill directory; a broken script is logged and counted and the agent
goes on. Expected rows come from pandas over the capture's Parquet file, never from pxq.
Also the config's refusals (clear, naming the entry and key)."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from pxq.agent.daemon import load_config
from pxq.agent.flight import AgentClient
from pxq.errors import UsageError
from pxq.replay import write_capture
from pxq.testing.agent_process import running_agent
from pxq.testing.retry import wait_for
from pxq.testing.synthetic import synthetic_http_events

START_NS = 1_764_115_200_000_000_000
SPAN_NS = 300_000_000_000
WAIT_S = 60.0


@pytest.fixture(scope="module")
def capture(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("sched-cap")
    table = synthetic_http_events(2000, seed=11, start_ns=START_NS, span_ns=SPAN_NS, null_fraction=0.05)
    write_capture(
        directory,
        {"http_events": table},
        host="sched-host",
        start_time_ns=START_NS,
        end_time_ns=START_NS + SPAN_NS,
        processes={},
    )
    return directory


def _wait_for(condition, what: str):
    return wait_for(condition, WAIT_S, what)


def test_a_scheduled_library_script_writes_its_output_and_a_broken_one_is_counted(capture, tmp_path):
    spill = tmp_path / "spill"
    broken = tmp_path / "broken.pxl"
    broken.write_text("import px\ndf = px.DataFrame('http_events')\npx.display(df[['no_such_column']])\n")
    config = tmp_path / "agent.toml"
    config.write_text(
        f'spill_dir = "{spill}"\n'
        "[[schedule]]\n"
        'script = "http_data"\n'
        'every = "1s"\n'
        'args = {start_time = "-2m", num_head = 100000}\n'
        "[[schedule]]\n"
        f'script = "{broken}"\n'
        'every = "1s"\n'
    )
    with running_agent("--from", str(capture), "--config", str(config), state_dir=tmp_path / "state") as agent:
        output = spill / "_scheduled" / "http_data" / "http_data"
        files = _wait_for(lambda: sorted(output.glob("*.parquet")), "a scheduled http_data output file")
        with AgentClient(agent.address) as client:
            status = _wait_for(
                lambda: (s := client.status())["scheduled"]["broken"]["failures"] >= 2 and s, "two broken runs"
            )
            assert client.info()["tables"]["http_events"] == "socket_tracer"  # still serving
        # The agent's RSS: pyarrow would import pandas (~30 MB) as a side effect; the agent keeps it out.
        assert "/pandas/" not in Path(f"/proc/{agent.pid}/maps").read_text()
    assert agent.proc.returncode == 0

    frame = pq.read_table(capture / "http_events.parquet").to_pandas()
    times = frame["time_"].astype("int64")
    recent = frame[times >= START_NS + SPAN_NS - 120_000_000_000]
    got = pq.read_table(files[0]).to_pandas()
    assert sorted(got["req_path"].fillna("")) == sorted(recent["req_path"].fillna(""))
    assert got["resp_status"].astype("Int64").fillna(-1).value_counts().to_dict() == (
        recent["resp_status"].astype("Int64").fillna(-1).value_counts().to_dict()
    )
    # DuckDB reads the scheduled output as it reads the tables.
    ((count,),) = duckdb.sql(f"SELECT count(*) FROM read_parquet('{files[0]}')").fetchall()
    assert count == len(recent)

    runs = status["scheduled"]
    assert runs["http_data"]["failures"] == 0 and runs["http_data"]["runs"] >= 1
    assert "no_such_column" in runs["broken"]["last_error"]
    assert "scheduled script 'broken' failed" in agent.stderr and "no_such_column" in agent.stderr
    assert "Traceback" not in agent.stderr


def _config(tmp_path, text: str):
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return load_config(str(path), {})


@pytest.mark.parametrize(
    "text, message",
    [
        ('on_demand = "maybe"\n', "on_demand must be one of refuse, attach, not 'maybe'"),
        ('[[schedule]]\nscript = "http_data"\nevery = "1m"\n', "set spill_dir"),
        ('spill_dir = "/tmp/x"\n[[schedule]]\nscript = "http_data"\n', "schedule[0]: missing every"),
        ('spill_dir = "/tmp/x"\n[[schedule]]\nscript = "http_data"\nevery = "1m"\nwhen = 1\n', "schedule[0].when"),
        (
            'spill_dir = "/tmp/x"\n[[schedule]]\nscript = "http_data"\nevery = "1m"\noutput = "export"\n',
            "pxq has no px.export",
        ),
        (
            'spill_dir = "/tmp/x"\n[[schedule]]\nscript = "http_data"\nevery = "1m"\n'
            '[[schedule]]\nscript = "http_data"\nevery = "2m"\n',
            "schedule[1].name: 'http_data' is used by an earlier entry",
        ),
        ('spill_dir = "/tmp/x"\nspill_max_bytes = 0\n', "spill_max_bytes must be more than 0"),
        ('spill_window = "soon"\n', "spill_window"),
    ],
    ids=["on-demand", "no-spill-dir", "no-every", "unknown-key", "export", "same-name", "cap", "window"],
)
def test_bad_agent_configs_are_refused_clearly(tmp_path, text, message):
    with pytest.raises(UsageError) as caught:
        _config(tmp_path, text).check()
    assert message in str(caught.value)


def test_a_scheduled_script_that_does_not_exist_stops_the_agent_before_it_serves(capture, tmp_path):
    from tests.cli_support import run_pxq

    config = tmp_path / "agent.toml"
    config.write_text(f'spill_dir = "{tmp_path}"\n[[schedule]]\nscript = "htp_data"\nevery = "1m"\n')
    proc = run_pxq("agent", "serve", "--from", str(capture), "--config", str(config), "--state-dir", str(tmp_path))
    assert proc.returncode == 2
    assert "scheduled script 'htp_data'" in proc.stderr and "did you mean http_data" in proc.stderr
    assert not (tmp_path / "agent.json").exists()


def test_the_config_file_reads_spill_and_on_demand_settings(tmp_path):
    config = _config(
        tmp_path,
        f'spill_dir = "{tmp_path}"\nspill_max_bytes = 5000000\nspill_window = "30s"\n'
        'on_demand = "attach"\non_demand_max = "15s"\n'
        '[[schedule]]\nscript = "http_data"\nevery = "2m"\nname = "minutely"\nargs = {num_head = 5}\n',
    )
    config.check()
    assert (config.spill_dir, config.spill_max_bytes, config.spill_window_s) == (str(tmp_path), 5_000_000, 30.0)
    assert (config.on_demand, config.on_demand_max_s) == ("attach", 15.0)
    (entry,) = config.schedule
    assert (entry.name, entry.script, entry.every_s, entry.args) == ("minutely", "http_data", 120.0, (("num_head", 5),))
    assert json.dumps(entry.args)  # plain data


def test_a_spill_directory_that_cannot_be_used_stops_the_agent_before_it_serves(capture, tmp_path):
    from tests.cli_support import run_pxq

    blocked = tmp_path / "a-file"
    blocked.write_text("not a directory")
    proc = run_pxq(
        "agent", "serve", "--from", str(capture), "--spill-dir", str(blocked / "spill"), "--state-dir", str(tmp_path)
    )
    assert proc.returncode == 2
    assert f"cannot use the spill directory {blocked / 'spill'}: Not a directory" in proc.stderr
    assert not (tmp_path / "agent.json").exists()
