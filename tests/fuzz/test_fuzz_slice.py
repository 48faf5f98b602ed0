"""A fixed slice of the PxL fuzzer (bench/fuzz_pxl.py runs the full 20,000): generated programs,
mutations of the repository's own scripts and corpora, and every committed reproducer of a past
finding (tests/fuzz/reproducers/*.pxl). Each goes through parse, compile, optimize, explain,
split, execution over the four small captures and rendering, and must end as a result or as a
positioned diagnostic: never a traceback, a diagnostic without line:col, or a hang.

The slice is deterministic (program i of SLICE_SEED is the same text on every run) and leaves
out Pixie's scripts (CONFORMANCE_DIR) so that it is the same on every machine.
"""

from __future__ import annotations

import pytest

from pxq.testing import fuzz

SLICE_SEED = 20261206
SLICE_PROGRAMS = 200
# Far below the bench's 20 s: every program of the slice takes well under a second when pxq is
# healthy, and a hang must fail the test rather than stall the suite.
ALARM_S = 10.0

SLICE = [fuzz.program(SLICE_SEED, i, include_conformance=False) for i in range(SLICE_PROGRAMS)]
REPRODUCERS = fuzz.reproducer_programs()


@pytest.fixture(scope="module")
def oracle(tmp_path_factory):
    return fuzz.Oracle(fuzz.build_captures(tmp_path_factory.mktemp("fuzz-captures")))


def _explain(prog: fuzz.Program, outcome: fuzz.Outcome) -> str:
    return (
        f"{outcome.kind} in {outcome.stage}: {outcome.exc_type} at {outcome.frame}: {outcome.message}\n"
        f"{outcome.detail[-3000:]}\n--- program ({prog.origin}) ---\n{prog.text[:4000]}"
    )


def test_slice_is_deterministic():
    again = [fuzz.program(SLICE_SEED, i, include_conformance=False) for i in range(0, SLICE_PROGRAMS, 17)]
    assert [p.text for p in again] == [p.text for p in SLICE[::17]]


def test_slice_mixes_generated_and_mutated_programs():
    origins = [p.origin for p in SLICE]
    generated = sum(o == "generated" for o in origins)
    assert 0.4 * len(SLICE) < generated < 0.8 * len(SLICE)


@pytest.mark.parametrize("prog", SLICE, ids=[f"{p.index}-{p.origin.split(':')[0]}" for p in SLICE])
def test_fuzz_program(oracle, prog):
    outcome = oracle.run(prog, alarm_s=ALARM_S)
    assert not outcome.is_finding, _explain(prog, outcome)


@pytest.mark.parametrize("prog", REPRODUCERS, ids=[p.origin.split(":", 1)[1] for p in REPRODUCERS])
def test_past_finding(oracle, prog):
    outcome = oracle.run(prog, alarm_s=ALARM_S)
    assert not outcome.is_finding, _explain(prog, outcome)
