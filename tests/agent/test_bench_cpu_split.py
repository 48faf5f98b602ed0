"""The socket tracer bench's --profile split of the agent's CPU (bench/bench_socket_tracer.py,
CpuSplit): each part's own CPU time, without that of the parts (and the garbage collector's
runs) inside it. Expected values: the CPU time each busy loop measured itself."""

from __future__ import annotations

import gc
import importlib.util
import sys
import time
import types
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_socket_tracer.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_socket_tracer_split", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while being made
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def busy(seconds: float) -> float:
    """Spin for ``seconds`` of this thread's CPU time; returns the CPU time it took."""
    start = time.thread_time()
    while time.thread_time() - start < seconds:
        pass
    return time.thread_time() - start


class Worker:
    """outer() calls inner() and a full garbage collection (of 200,000 cycles made for it); each
    notes the CPU time it took itself, outer() its own without the two."""

    def __init__(self) -> None:
        self.took: dict[str, float] = {"outer": 0.0, "inner": 0.0, "gc": 0.0}

    def outer(self) -> None:
        start = time.thread_time()
        busy(0.02)
        inner_before = self.took["inner"]
        self.inner()
        junk: list[list] = [[] for _ in range(200_000)]
        for item in junk:
            item.append(item)
        del junk
        collecting = time.thread_time()
        gc.collect()
        collected = time.thread_time() - collecting
        self.took["gc"] += collected
        busy(0.01)
        self.took["outer"] += time.thread_time() - start - (self.took["inner"] - inner_before) - collected

    def inner(self) -> None:
        self.took["inner"] += busy(0.03)


def test_each_part_counts_its_own_cpu_time_without_the_parts_inside_it(bench, monkeypatch):
    target = types.ModuleType("cpu_split_target")
    target.Worker = Worker
    monkeypatch.setitem(sys.modules, "cpu_split_target", target)
    monkeypatch.setattr(bench, "PROFILED_PARTS", (
        ("outer part", "cpu_split_target", "Worker.outer"),
        ("inner part", "cpu_split_target", "Worker.inner"),
    ))  # fmt: skip
    gc.disable()  # only the worker's own collections: the ones it measures
    split = bench.CpuSplit()
    try:
        worker = Worker()
        for _ in range(3):
            worker.outer()
    finally:
        split.close()
        gc.enable()
    seconds = split.seconds
    assert worker.took["gc"] > 0.01  # (a part to tell apart: each collection took milliseconds)
    # Clock reads and calls between the measured stretches are all the slack there is.
    assert seconds["inner part"] == pytest.approx(worker.took["inner"], abs=0.003)
    assert seconds["outer part"] == pytest.approx(worker.took["outer"], abs=0.005)
    assert seconds["garbage collector"] == pytest.approx(worker.took["gc"], abs=0.003)
    # Unwrapped again: the worker's own functions.
    assert not hasattr(Worker.outer, "__wrapped__") and not hasattr(Worker.inner, "__wrapped__")


def test_the_split_is_printed_per_10k_transactions_with_medians_and_spread(bench, capsys):
    # Three traced runs of 20,000, 10,000 and 40,000 transactions; per 10k by hand:
    # tracker 0.16/2 = 80 ms, 0.07/1 = 70, 0.36/4 = 90 -> median 80 (70-90);
    # ring walk 0.02/2 = 10, 0.008/1 = 8, 0.048/4 = 12 -> 10 (8-12); total 100, 80, 120 -> 100 (80-120).
    runs = [
        bench.FixedRun(0, 0, 0, 0, 0, 0, 0, 0, agent_cpu_s=0.20, transactions=20_000,
                       agent_split={"tracker": 0.16, "ring walk": 0.02}),
        bench.FixedRun(0, 0, 0, 0, 0, 0, 0, 0, agent_cpu_s=0.08, transactions=10_000,
                       agent_split={"tracker": 0.07, "ring walk": 0.008}),
        bench.FixedRun(0, 0, 0, 0, 0, 0, 0, 0, agent_cpu_s=0.48, transactions=40_000,
                       agent_split={"tracker": 0.36, "ring walk": 0.048}),
    ]  # fmt: skip
    bench.print_split(5_000, runs)
    lines = [line.split() for line in capsys.readouterr().out.splitlines()[2:]]
    assert lines == [
        ["tracker", "80.0", "(70.0-90.0)"],
        ["ring", "walk", "10.0", "(8.0-12.0)"],
        ["total", "(getrusage)", "100.0", "(80.0-120.0)"],
    ]


def test_every_tasks_run_time_in_a_window_leaves_out_a_task_that_exits_in_it(bench):
    # The fixed-rate phase's host figure: a busy task (another user's, on a shared machine) that
    # ends inside the window must not take its whole run time off the window's (it made the
    # figure, and the ratio judged against its target, negative). Expected: at least this
    # thread's own busy loop, measured by itself.
    import subprocess

    burner = subprocess.Popen(
        [sys.executable, "-c", "import time\nt = time.process_time()\nwhile time.process_time() - t < 1.0: pass\n"
         "print('burnt', flush=True)\ntime.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert burner.stdout.readline().strip() == "burnt"  # 1 s of CPU run before the window
        before = bench.all_tasks_cpu_ns()
        burner.kill()
        burner.wait()
        own = busy(0.1)
        after = bench.all_tasks_cpu_ns()
    finally:
        burner.kill()
        burner.wait()
        burner.stdout.close()
    assert bench.tasks_cpu_s(before, after) >= own * 0.95
