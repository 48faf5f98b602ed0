"""cpu_flamegraph and perf_flamegraph over a capture of stack samples, through the CLI."""

from __future__ import annotations

import json
import subprocess

import pyarrow as pa
import pytest

from pxq.replay import write_capture
from pxq.testing.synthetic import synthetic_processes
from tests.cli_support import run_pxq

START_NS = 1_764_115_200_000_000_000


@pytest.fixture(scope="module")
def stack_capture(tmp_path_factory) -> str:
    processes = synthetic_processes()
    upids = list(processes)
    rows = [
        (upids[0], "main;outer_loop;spin_leaf", 90, "ebpf", False),
        (upids[0], "main;outer_loop;write;entry_SYSCALL_64_after_hwframe_[k];do_syscall_64_[k]", 10, "ebpf", False),
        (upids[1], "<module> (app.py:12);handle (app.py:8);parse (app.py:3)", 50, "py-spy", False),
        (upids[2], "spin_leaf", 25, "ebpf", True),
        (upids[0], "main;outer_loop;spin_leaf", 25, "ebpf", False),  # a second drain, same stack
    ]
    table = pa.table(
        {
            "time_": pa.array([START_NS + i * 10**9 for i in range(len(rows))], pa.timestamp("ns")),
            "upid": [r[0] for r in rows],
            "stack_trace_id": [hash(r[1]) & 0x7FFFFFFF for r in rows],
            "stack_trace": [r[1] for r in rows],
            "count": [r[2] for r in rows],
            "sampler": [r[3] for r in rows],
            "truncated": [r[4] for r in rows],
        }
    )
    directory = tmp_path_factory.mktemp("stacks")
    write_capture(
        directory,
        {"stack_traces.beta": table},
        host="prof-host",
        start_time_ns=START_NS,
        end_time_ns=START_NS + 60 * 10**9,
        processes=processes,
    )
    return str(directory)


def pxq(*args: str) -> subprocess.CompletedProcess:
    return run_pxq(*args, check=True)


def test_cpu_flamegraph_folded_and_percentages(stack_capture):
    out = pxq("run", "cpu_flamegraph", "--from", stack_capture, "-o", "json").stdout
    rows = [json.loads(line) for line in out.splitlines()]
    assert sum(r["count"] for r in rows) == 200
    assert abs(sum(r["percent"] for r in rows) - 1.0) < 1e-9
    hot = max(rows, key=lambda r: r["count"])
    assert hot["stack_trace"] == "main;outer_loop;spin_leaf" and hot["count"] == 115
    assert [r["truncated"] for r in rows if r["stack_trace"] == "spin_leaf"] == [True]
    folded = pxq("run", "cpu_flamegraph", "--from", stack_capture, "-o", "folded").stdout
    assert any(line.endswith("main;outer_loop;spin_leaf 115") for line in folded.splitlines())


def test_cpu_flamegraph_pid_filter(stack_capture):
    pid = 1017  # the second synthetic process
    rows = [
        json.loads(line)
        for line in pxq(
            "run", "cpu_flamegraph", "--from", stack_capture, "-o", "json", "--", f"--pid={pid}"
        ).stdout.splitlines()
    ]
    assert {r["process"] for r in rows} == {f"python3[{pid}]"}
    assert rows[0]["percent"] == 1.0


def test_flamegraph_files(stack_capture, tmp_path):
    pxq("run", "cpu_flamegraph", "--from", stack_capture, "-o", "svg", "--out", str(tmp_path / "cpu.svg"))
    svg = (tmp_path / "cpu.svg").read_text()
    assert svg.startswith("<?xml") or svg.startswith("<svg") and "spin_leaf" in svg
    pxq("run", "cpu_flamegraph", "--from", stack_capture, "-o", "speedscope", "--out", str(tmp_path / "cpu.json"))
    profile = json.loads((tmp_path / "cpu.json").read_text())
    assert sum(sum(p["weights"]) for p in profile["profiles"]) == 200


def test_perf_flamegraph_matches_pixie_shape(stack_capture):
    out = pxq("run", "perf_flamegraph", "--from", stack_capture, "-o", "json").stdout
    rows = [json.loads(line) for line in out.splitlines()]
    assert set(rows[0]) >= {
        "node",
        "namespace",
        "pod",
        "container",
        "cmdline",
        "stack_trace_id",
        "stack_trace",
        "count",
        "percent",
    }
    assert sum(r["count"] for r in rows) == 200
    assert rows[0]["node"] == "prof-host"


def test_perf_flamegraph_percent_is_of_all_the_nodes_samples(stack_capture):
    """A filter narrows the rows, not the total their percentage is of (Pixie computes the totals
    before filtering, too). The fixture holds 200 samples, 50 of them in the python3 process."""
    rows = [
        json.loads(line)
        for line in pxq(
            "run", "perf_flamegraph", "--from", stack_capture, "-o", "json", "--", "--process=python3"
        ).stdout.splitlines()
    ]
    assert [(r["count"], r["percent"]) for r in rows] == [(50, 50 / 200)]
