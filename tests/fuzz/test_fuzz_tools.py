"""The fuzzer's own parts: reproducible programs, a generator whose output is mostly valid PxL,
mutations that change their seed, an oracle that sorts outcomes correctly, a runner that
survives hangs, memory blow-ups and crashes, and a reducer that keeps the finding."""

from __future__ import annotations

import textwrap
import time

import pytest

from pxq.errors import CompileError, Diagnostic, PxqError
from pxq.lang import parse
from pxq.testing import fuzz

FINE = "import px\ndf = px.DataFrame(table='http_events', start_time='-5m')\npx.display(df.head(3), 'out')\n"


@pytest.fixture(scope="module")
def captures(tmp_path_factory):
    return fuzz.build_captures(tmp_path_factory.mktemp("captures"))


@pytest.fixture(scope="module")
def oracle(captures):
    return fuzz.Oracle(captures)


def test_program_i_of_seed_s_is_always_the_same_text():
    first = [fuzz.program(3, i, include_conformance=False).text for i in range(30)]
    again = [fuzz.program(3, i, include_conformance=False).text for i in range(30)]
    assert first == again
    assert len(set(first)) == 30
    assert fuzz.program(4, 0, include_conformance=False).text != first[0]


def test_generated_programs_are_mostly_valid_pxl():
    texts = [fuzz.ProgramGenerator(fuzz.random.Random(f"valid:{i}")).program() for i in range(150)]
    parsed = 0
    for text in texts:
        try:
            parse(text)
            parsed += 1
        except PxqError as exc:
            # An integer literal beyond int64 is one of the generator's deliberate extremes,
            # refused by the parser with a positioned error: the rest of the program is valid.
            parsed += "is out of range for int64" in str(exc)
    # The rest are the other deliberate extremes: nesting beyond the parser's limit, malformed pragmas.
    assert parsed >= 0.85 * len(texts)


def test_generated_programs_reach_every_dataframe_operation():
    text = "\n".join(fuzz.ProgramGenerator(fuzz.random.Random(f"ops:{i}")).program() for i in range(300))
    for needle in (
        ".groupby(",
        ".agg(",
        ".merge(",
        ".append(",
        ".head(",
        ".drop(",
        ".ctx[",
        "px.display(",
        "def ",
        ": int",
        "#px:set",
        "start_time=",
        "end_time=",
        " = x",
        "[[",
    ):
        assert needle in text, needle
    scalars, aggregates = fuzz._registry()
    used = {name for name in scalars if f"px.{name}(" in text}
    assert len(used) >= 0.6 * len([n for n in scalars if not n.startswith("_")])
    assert all(f"px.{name})" in text for name in aggregates)


def test_mutations_change_the_script_they_start_from():
    seeds = {s.name: s.text for s in fuzz.load_corpus(include_conformance=False)}
    assert any(name.startswith("scripts/") for name in seeds)
    changed = 0
    for i in range(60):
        mutated = fuzz.Mutator(fuzz.random.Random(f"mut:{i}"), fuzz.corpus(False)).mutate()
        changed += mutated.text != seeds[mutated.name]
    assert changed >= 54


def test_oracle_says_ok_for_a_sound_script(oracle):
    outcome = oracle.run(fuzz.Program(0, 0, "test", FINE))
    assert (outcome.kind, outcome.exc_type) == ("ok", "")


def test_oracle_says_diagnostic_for_a_positioned_user_error(oracle):
    outcome = oracle.run(
        fuzz.Program(
            0, 0, "test", "import px\ndf = px.DataFrame(table='http_events')\ndf.x = df.latncy\npx.display(df)\n"
        )
    )
    assert (outcome.kind, outcome.exc_type, outcome.stage) == ("diagnostic", "CompileError", "compile")


def test_a_script_without_displays_may_have_no_position(oracle):
    outcome = oracle.run(fuzz.Program(0, 0, "test", "import px\nx = 1\n"))
    assert outcome.kind == "diagnostic"


def test_oracle_flags_a_script_error_without_position(oracle, monkeypatch):
    import pxq.api

    def unpositioned(*args, **kwargs):
        raise CompileError(Diagnostic("something is wrong somewhere", None))

    monkeypatch.setattr(pxq.api, "compile_script", unpositioned)
    outcome = oracle.run(fuzz.Program(0, 0, "test", FINE))
    assert (outcome.kind, outcome.message) == ("unpositioned", "something is wrong somewhere")


def test_oracle_flags_any_other_exception_with_its_stage(oracle, monkeypatch):
    import pxq.exec.execute

    def broken(graph, source):
        return {}["no such key"]

    monkeypatch.setattr(pxq.exec.execute, "execute", broken)
    outcome = oracle.run(fuzz.Program(0, 0, "test", FINE))
    assert (outcome.kind, outcome.exc_type, outcome.stage) == ("traceback", "KeyError", "execute:normal")
    assert "no such key" in outcome.detail


def test_oracle_alarm_turns_a_stuck_program_into_a_hang(oracle, monkeypatch):
    import pxq.exec.execute

    monkeypatch.setattr(pxq.exec.execute, "execute", lambda graph, source: time.sleep(30))
    started = time.monotonic()
    outcome = oracle.run(fuzz.Program(0, 0, "test", FINE), alarm_s=0.5)
    assert outcome.kind == "hang"
    assert time.monotonic() - started < 10


def test_hang_frame_is_the_function_with_most_frames():
    root = str(fuzz.REPO_ROOT / "pxq")
    frames = [
        (f"{root}/funcs/_operators.py", "_add"),
        (f"{root}/exec/expressions.py", "evaluate"),
        (f"{root}/exec/expressions.py", "evaluate"),
        (f"{root}/exec/execute.py", "execute"),
        ("/usr/lib/python3.11/threading.py", "run"),
    ]
    assert fuzz.hang_frame(frames) == "pxq/exec/expressions.py:evaluate"
    assert fuzz.hang_frame([("/elsewhere.py", "f")]) == "(outside pxq)"


def test_minimize_keeps_the_finding_and_drops_the_rest(oracle, monkeypatch):
    import pxq.exec.execute

    real = pxq.exec.execute.execute

    def fails_on_marked_column(graph, source):
        if any(f.name == "boom" for d in graph.displays for f in d.schema.fields):
            raise ZeroDivisionError("marked")
        return real(graph, source)

    monkeypatch.setattr(pxq.exec.execute, "execute", fails_on_marked_column)
    text = textwrap.dedent("""\
        import px
        df = px.DataFrame(table='http_events', start_time='-5m')
        df.a = df.latency * 2
        df.boom = 1
        df.b = df.a + 1
        df = df.head(10)
        px.display(df, 'out')
        """)
    key = oracle.run(fuzz.Program(0, 0, "test", text)).key()
    assert key[:2] == ("traceback", "ZeroDivisionError")
    smaller = fuzz.minimize(text, key, oracle)
    assert "df.boom = 1" in smaller
    assert "df.a" not in smaller and "head" not in smaller
    assert oracle.run(fuzz.Program(0, 0, "test", smaller)).key() == key


# The runner's workers are separate processes: a sitecustomize on their path makes programs that
# carry a marker misbehave in ways no pxq bug should be needed for.
MISBEHAVE = """
import os, time
import pxq.testing.fuzz as fuzz
_stages = fuzz.Oracle._stages
def _misbehaving(self, prog, stage):
    if "#hang" in prog.text:
        time.sleep(600)
    if "#eat-memory" in prog.text:
        hog = bytearray(3 << 30)
    if "#crash" in prog.text:
        os._exit(3)
    return _stages(self, prog, stage)
fuzz.Oracle._stages = _misbehaving
"""


def test_runner_survives_hangs_memory_and_crashes(tmp_path, monkeypatch, captures):
    (tmp_path / "sitecustomize.py").write_text(MISBEHAVE)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    # A generous wall limit: a sound program must never look hung on a loaded machine.
    runner = fuzz.FuzzRunner(0, jobs=1, wall_limit=20.0, memory_limit=2 << 30, include_conformance=False, render=False)
    try:
        requests = [
            {"index": i, "text": text, "origin": "test"}
            for i, text in enumerate([FINE, "#hang\n" + FINE, FINE, "#eat-memory\n" + FINE, "#crash\n" + FINE, FINE])
        ]
        summary = runner.run(requests)
    finally:
        runner.close()
    assert summary.programs == 6
    assert summary.counts == {"ok": 3, "hang": 1, "memory": 1, "crash": 1}
    kinds = {key[0] for key in summary.classes}
    assert kinds == {"hang", "memory", "crash"}
    hang = next(c for k, c in summary.classes.items() if k[0] == "hang")
    assert hang.examples[0].text.startswith("#hang")
    assert summary.findings == 3


def test_hang_frame_looks_through_comprehensions():
    root = str(fuzz.REPO_ROOT / "pxq")
    frames = [(f"{root}/plan/expr.py", "<genexpr>"), (f"{root}/plan/expr.py", "columns")] * 3
    assert fuzz.hang_frame(frames) == "pxq/plan/expr.py:columns"
