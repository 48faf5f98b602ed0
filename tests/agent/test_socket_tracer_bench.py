"""The socket tracer bench's cost decomposition (bench/bench_socket_tracer.py, phase 4b): the
table's medians and per-request differences, against values worked out by hand from the
counters given."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_socket_tracer.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_socket_tracer_decompose", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while being made
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def test_decomposition_medians_and_per_request_differences(bench, capsys):
    # Three rounds per condition, 1,000 requests per run. Medians by hand: host CPU untraced 1.1 s,
    # traced 1.4 s, baseline 1.2 s; agent user CPU 0 / 0.05 / 0.02 s; irq_work 0 / 7 / 3.
    deltas = {
        "untraced": [
            {"host_cpu": 1.0, "irq_work": 0},
            {"host_cpu": 1.2, "irq_work": 0},
            {"host_cpu": 1.1, "irq_work": 1},
        ],
        "traced": [
            {"host_cpu": 1.5, "agent_user": 0.05, "irq_work": 7, "bpf_ns:sys_exit": 2e6, "bpf_cnt:sys_exit": 10},
            {"host_cpu": 1.3, "agent_user": 0.04, "irq_work": 9, "bpf_ns:sys_exit": 4e6, "bpf_cnt:sys_exit": 30},
            {"host_cpu": 1.4, "agent_user": 0.06, "irq_work": 5, "bpf_ns:sys_exit": 3e6, "bpf_cnt:sys_exit": 20},
        ],
        "baseline": [
            {"host_cpu": 1.2, "agent_user": 0.02, "irq_work": 3},
            {"host_cpu": 1.2, "agent_user": 0.01, "irq_work": 3},
            {"host_cpu": 1.3, "agent_user": 0.03, "irq_work": 2},
        ],
    }
    latency = {"untraced": [100.0, 300.0, 200.0], "traced": [400.0], "baseline": [250.0, 150.0]}
    result = bench._decomposition_table(2_000, 1_000, deltas, latency)

    assert result["host_cpu"]["untraced"] == pytest.approx(1.1)
    assert result["host_cpu"]["traced"] == pytest.approx(1.4)
    # (1.4 - 1.1) s over 1,000 requests = 300 us per request; (1.2 - 1.1) s: 100 us.
    assert result["host_cpu"]["traced_per_req"] == pytest.approx(300.0)
    assert result["host_cpu"]["baseline_per_req"] == pytest.approx(100.0)
    # A counter absent from the untraced runs (the agent's) counts from 0: 0.05 s = 50 us per request.
    assert result["agent_user"]["traced_per_req"] == pytest.approx(50.0)
    # Counts are shown as counts per request: (7 - 0) / 1,000.
    assert result["irq_work"]["traced_per_req"] == pytest.approx(0.007)
    # BPF run time: median 3e6 ns = 0.003 s, 3 us per request; the baseline ran no program it reported.
    assert result["bpf_total_traced"] == pytest.approx({"s": 0.003, "per_req_us": 3.0})
    assert result["bpf_total_baseline"] == pytest.approx({"s": 0.0, "per_req_us": 0.0})
    assert result["p99_us"] == {"untraced": 200.0, "traced": 400.0, "baseline": 200.0}
    out = capsys.readouterr().out
    assert "sys_exit" in out and "(150000 ns per run" in out.replace(",", "")  # 3e6 ns / 20 runs
