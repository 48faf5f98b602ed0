"""bench/fuzz_protocols.py cannot rot: its entry point runs a few thousand inputs on every
registered protocol, and on a protocol registered here whose parser raises and hangs on some
inputs it reports both (the hang stopped by its watchdog) with reproducers that raise again."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections import Counter
from pathlib import Path

import pytest

from pxq.agent.protocols import registry
from pxq.agent.protocols.interface import ParseOptions
from pxq.agent.protocols.registry import ProtocolSpec
from pxq.testing import protocol_fuzz as pf

BENCH = Path(__file__).resolve().parents[2] / "bench" / "fuzz_protocols.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("fuzz_protocols", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while being made
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def test_every_registered_protocol_survives_a_few_thousand_inputs(bench, tmp_path, capsys):
    # A hang is an input that never ends: a minute tells it from a slow input on a loaded machine
    # (the bench's 2 s default once fired here under a load of 10 on 2 CPUs).
    argv = ["--inputs", "2000", "--seed", "3", "--jobs", "2", "--time-limit", "60", "--out", str(tmp_path)]
    assert bench.main(argv) == 0
    table = (tmp_path / "summary.txt").read_text().splitlines()
    rows = {line.split()[0]: line.split() for line in table[1:]}
    assert set(rows) == set(registry.PROTOCOLS)
    for row in rows.values():
        assert row[1] == "2,000" and row[3:5] == ["0", "0"], row  # inputs, exceptions, hangs
        # Tracker runs: one input in 50 (those judged for pairing, one in 20, run alone); pairing-checked.
        assert int(row[5].replace(",", "")) == sum(1 for i in range(2000) if i % 50 == 0 and i % 20)
        assert row[6] == "100"
    assert "http" in capsys.readouterr().out


def test_an_input_is_the_same_on_every_run(bench):
    first = bench.make_input(7, "http", 1234, 50, 20)
    again = bench.make_input(7, "http", 1234, 50, 20)
    assert [bench.step_json(s) for s in first.steps] == [bench.step_json(s) for s in again.steps]
    other = bench.make_input(8, "http", 1234, 50, 20)
    assert [bench.step_json(s) for s in other.steps] != [bench.step_json(s) for s in first.steps]


class FaultyStitcher:
    """Raises on a NUL byte; loops forever when the bytes fed are 5 more than a multiple of 23."""

    def __init__(self, options: ParseOptions) -> None:
        self.errors: Counter[str] = Counter()
        self.upgraded = False
        self.fed = 0

    def feed_messages(self, request: bool, data: bytes, ts_ns: int) -> list:
        if b"\x00" in data:
            raise ZeroDivisionError("a NUL byte")
        self.fed += len(data)
        return []

    def skip_messages(self, request: bool, n: int, ts_ns: int) -> tuple[list, int]:
        return [], n

    def close_messages(self, ts_ns: int) -> list:
        while self.fed % 23 == 5:
            pass
        return []

    def response_gap(self, ts_ns: int) -> bool:
        return False


FAULTY = ProtocolSpec(
    name="faulty",
    table="faulty_events",
    looks_like_request=lambda first: first.startswith(b"Q"),
    looks_like_response=lambda first: first.startswith(b"A"),
    head_bytes=16,
    make_stitcher=FaultyStitcher,
    make_rows=pf.RecordingRows,
    make_record=lambda req, resp: (req, resp),
    unmatched_at_close=(),
    unmatched_after_gap=(),
)


def test_exceptions_and_hangs_are_reported_with_reproducers(bench, tmp_path, monkeypatch, capsys):
    folder = tmp_path / "protocols" / "faulty" / "streams"
    folder.mkdir(parents=True)
    chunks = [["req", 0, "Q one\n"], ["resp", 10, "A one\n"], ["req", 20, "Q two\n"], ["resp", 30, "A two\n"]]
    (folder / "talk.json").write_text(json.dumps({"name": "talk", "server": "-", "description": "-", "chunks": chunks}))
    monkeypatch.setattr(pf, "STREAM_ROOTS", [tmp_path / "protocols"])
    monkeypatch.setattr(registry, "PROTOCOLS", {"faulty": FAULTY})
    out = tmp_path / "out"
    argv = ["--inputs", "300", "--protocol", "faulty", "--time-limit", "0.5", "--out", str(out), "--tracker-every", "0"]
    assert bench.main(argv) == 1
    summary = (out / "summary.txt").read_text()
    row = summary.splitlines()[1].split()
    assert row[0] == "faulty" and row[1] == "300"
    exceptions, hangs = int(row[3]), int(row[4])
    assert exceptions > 0 and hangs > 0
    assert "ZeroDivisionError at" in summary and "x hang at over 0.5 s" in summary
    (raised,) = out.glob("faulty-ZeroDivisionError-*.json")
    record = json.loads(raised.read_text())
    steps = [bench.step_from_json(s) for s in record["steps"]]
    assert bench.reproduce("faulty", steps, record["body_limit"])[0] == "ZeroDivisionError"
    # Minimized: one read holding the NUL byte is all it takes.
    assert len(steps) == 1 and b"\x00" in steps[0].data and len(steps[0].data) <= 2
    assert list(out.glob("faulty-hang-*.json"))
