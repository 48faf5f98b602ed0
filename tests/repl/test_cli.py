"""``pxq repl`` as a command: listed in ``pxq --help``, and with stdin not a terminal its lines are
the inputs (grouped as Enter would group them), for scripts and pipes."""

from __future__ import annotations

import json
import os

import pyarrow.parquet as pq

from pxq.testing.synthetic import write_synthetic_capture
from tests.cli_support import run_pxq


def test_help_lists_repl():
    assert "repl" in run_pxq("--help", check=True).stdout
    usage = run_pxq("repl", "--help", check=True).stdout
    assert "--from DIR" in usage and "--window" in usage


def test_piped_inputs_run_in_order_and_a_failure_sets_the_status(tmp_path):
    capture = write_synthetic_capture(tmp_path / "cap", 120, seed=4)
    lines = [
        "df = px.DataFrame(table='http_events')",
        "def slow(t):",
        "    return df[df.latency > t]",
        "",
        "n = slow(1000000).groupby('req_method').agg(",
        "    n=('latency', px.count))",
        "df.nope",
        "n",
        f":out json {tmp_path / 'n.json'}",
    ]
    env = dict(os.environ, XDG_STATE_HOME=str(tmp_path / "state"))
    proc = run_pxq("repl", "--from", capture, input="\n".join(lines) + "\n", env=env)
    assert proc.returncode == 1  # df.nope failed; the inputs after it still ran
    assert "<repl>:7:4: error: unknown column 'nope'" in proc.stderr
    frame = pq.read_table(f"{capture}/http_events.parquet").to_pandas()
    expected = frame[frame.latency > 1_000_000].groupby("req_method").size().to_dict()
    rows = [json.loads(line) for line in (tmp_path / "n.json").read_text().splitlines()]
    assert {r["req_method"]: r["n"] for r in rows} == expected
    assert not (tmp_path / "state").exists()  # piped inputs are no history
