"""Events lost and rows kept but incomplete are counted apart: the progress line's "drops" are
losses only, and the report after a run has one line for each kind. A profiler sample whose
stack was cut short is kept (marked [truncated]); it is not a drop."""

from __future__ import annotations

import io
from dataclasses import replace

import pytest

from pxq.agent.loop import Progress
from pxq.agent.profiler import TABLE, rows_to_table
from pxq.agent.table_store import TableStore
from pxq.cli.progress import progress_printer
from pxq.replay import write_capture
from tests.cli_support import run_pxq

# What a profiler reports for a program built without frame pointers: most samples cut short.
PROFILER_COUNTERS = {
    "truncated_user_stack": 368,
    "user_stack_lost": 2,
    "kernel_stack_lost": 0,
    "stack_missing": 1,
    "counts_full": 3,
    "notify_lost": 0,
    "pyspy_killed": 1,
}
START_NS = 1_764_115_200_000_000_000


def test_progress_line_counts_drops_apart_from_incomplete_samples():
    store = TableStore()
    store.append(TABLE, rows_to_table([(START_NS, "0:7:99", "spin_leaf", 370, "ebpf", True)]))
    store.set_drops(TABLE, PROFILER_COUNTERS)
    final = Progress.of(3.2, 387, store)
    assert (final.drops, final.incomplete) == (3 + 1, 368 + 2 + 1)
    stream = io.StringIO()  # not a terminal: the final line is always printed
    progress_printer(3.0, stream)(replace(final, final=True, window_s=3.0))
    assert stream.getvalue().splitlines()[-1] == (
        "pxq: captured 3.0s (done at 3.2s)  events 387  stack_traces.beta 1  drops 4  incomplete 371"
    )


def test_progress_line_without_incomplete_rows_is_as_before():
    store = TableStore()
    store.set_drops("http_events", {"ringbuf_full": 2, "unmatched": 1})
    stream = io.StringIO()
    progress_printer(10.0, stream)(Progress.of(5.0, 10, store))  # off a terminal: every 5 s
    assert (
        stream.getvalue().splitlines()[-1]
        == "pxq: capturing   5.0s/10s  events 10  no rows yet  drops 3  (Ctrl-C ends early)"
    )


@pytest.fixture
def profile_capture(tmp_path):
    rows = [
        (START_NS + i, "0:7:99", "_start;main;spin_leaf" if i % 2 else "spin_leaf", 5, "ebpf", not i % 2)
        for i in range(4)
    ]
    write_capture(
        tmp_path / "cap",
        {TABLE: rows_to_table(rows)},
        host="h",
        start_time_ns=START_NS,
        end_time_ns=START_NS + 10**9,
        processes={
            "0:7:99": {
                "pid": 7,
                "comm": "spin",
                "cmdline": "spin 9",
                "exe": "",
                "pod": "",
                "namespace": "",
                "container_id": "",
            }
        },
        drops={TABLE: PROFILER_COUNTERS},
    )
    return tmp_path / "cap"


def test_report_after_a_run_says_lost_and_kept_but_incomplete_on_their_own_lines(profile_capture):
    proc = run_pxq(
        "run", "cpu_flamegraph", "--from", str(profile_capture), "-o", "folded", "--", "--start_time=-1h", check=True
    )
    assert proc.stderr.splitlines() == [
        "pxq: stack_traces.beta: lost: counts_full=3, pyspy_killed=1",
        "pxq: stack_traces.beta: kept but incomplete: stack_missing=1, truncated_user_stack=368, user_stack_lost=2",
    ]
    # The truncated samples are in the output, under their marker frame.
    assert proc.stdout.splitlines() == [
        "process: spin[7];sampler: ebpf;[truncated];spin_leaf 10",
        "process: spin[7];sampler: ebpf;_start;main;spin_leaf 10",
    ]
