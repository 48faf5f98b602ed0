"""Language-level limits: values at the edges of int64 and timestamp[ns], long scripts, deep
expressions and expressions that repeat their parts. Each ends in a positioned error or the
right result, through `pxq explain` and `pxq run --from` alike; never a traceback or a hang.

Expected values come from Python/numpy/pandas arithmetic on the capture's rows, with int64
wraparound written out (``wrap``), as Pixie's C++ arithmetic gives it.
"""

from __future__ import annotations

import time
import tracemalloc
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from pxq.api import run_script
from pxq.errors import UsageError
from pxq.lang import parse
from pxq.library import Script
from pxq.plan.compile import compile
from pxq.plan.expr import ColumnRef, FuncCall, Literal
from pxq.plan.format import format_graph
from pxq.plan.limits import format_time_ns
from pxq.plan.optimize import optimize
from pxq.plan.script_args import ScriptParam, convert_argument
from pxq.replay import open_capture
from pxq.testing.synthetic import write_synthetic_capture
from pxq.types import DataType
from tests.cli_support import run_main

NOW_NS = 1_764_115_500_000_000_000
HEAD = "import px\ndf = px.DataFrame(table='http_events')\n"
SHOW = "px.display(df[['latency', 'y']])\n"


def wrap(value: int) -> int:
    """``value`` as int64 arithmetic leaves it (two's complement wraparound)."""
    return (value + 2**63) % 2**64 - 2**63


@pytest.fixture(scope="module")
def capture(tmp_path_factory) -> str:
    return write_synthetic_capture(tmp_path_factory.mktemp("limits"), 300, seed=7, null_fraction=0.05)


@pytest.fixture(scope="module")
def latencies(capture) -> list[int | None]:
    return open_capture(capture).scan("http_events", ["latency"], None, None).column("latency").to_pylist()


def plus(values, amount: int) -> list[int | None]:
    return [None if v is None else wrap(v + amount) for v in values]


def cli(capsys, tmp_path: Path, text: str, capture: str, *script_args: str) -> tuple[int, int, str]:
    """(explain's exit code, run's exit code, both stderrs) for ``text`` as a script file; the
    CLI runs in this process through ``tests.cli_support.run_main`` (which refuses a traceback)."""
    script = tmp_path / "limits.pxl"
    script.write_text(text, encoding="utf-8")
    extra = ["--", *script_args] if script_args else []
    codes, errs = [], []
    for argv in (
        ["explain", str(script)],
        ["run", str(script), "--from", capture, "-o", "json", "--out", str(tmp_path / "out.json")],
    ):
        code, _, err = run_main(capsys, *argv, *extra)
        codes.append(code)
        errs.append(err)
    return codes[0], codes[1], "".join(errs)


def run_values(text: str, capture: str, display: str = "output", args=None) -> dict[str, list]:
    _, results = run_script(Script("limits", text, "limits.pxl"), source=capture, args=args)
    return results.tables[display].to_pydict()


def assert_clean(capsys, codes: tuple[int, int, str], expect: int) -> str:
    """Both exit codes are ``expect``; the stderr of both runs (tracebacks were refused by run_main)."""
    assert codes[:2] == (expect, expect), codes[2]
    return codes[2]


# ---------------------------------------------------------------- times


@pytest.mark.parametrize(
    "bound, shown",
    [
        ("end_time='-999999999999999999s'", "'-999999999999999999s'"),
        ("start_time='2262-04-12 00:00:00'", "'2262-04-12 00:00:00'"),
        ("start_time='0001-01-01 00:00:00'", "'0001-01-01 00:00:00'"),
        ("start_time='9999-12-31T23:59:59+0000'", "'9999-12-31T23:59:59+0000'"),
        ("end_time='-" + "9" * 5000 + "s'", "characters"),
        ("end_time=px.now() + px.days(100000)", "the computed time"),
        ("start_time=px.now() - px.days(100000) - px.days(100000)", "the computed time"),
        ("end_time=9223372036854775807 + 1", "the computed time"),
    ],
)
def test_time_bounds_out_of_range_are_positioned_errors(tmp_path, capsys, capture, bound, shown):
    text = f"import px\ndf = px.DataFrame(table='http_events', {bound})\npx.display(df)\n"
    err = assert_clean(capsys, cli(capsys, tmp_path, text, capture), 2)
    assert "limits.pxl:2:" in err and "is out of range" in err and shown in err
    assert "1677-09-21 00:12:43" in err and "2262-04-11 23:47:16" in err and "^" in err


def test_time_bounds_at_the_edges_of_int64_run(tmp_path, capsys, capture, latencies):
    text = (
        "import px\ndf = px.DataFrame(table='http_events', start_time=-9223372036854775808, "
        "end_time=9223372036854775807)\npx.display(df)\n"
    )
    assert_clean(capsys, cli(capsys, tmp_path, text, capture), 0)
    assert len(run_values(text, capture)["time_"]) == len(latencies)
    edge = "import px\ndf = px.DataFrame(table='http_events', start_time='2262-04-11 23:47:16')\npx.display(df)\n"
    assert_clean(capsys, cli(capsys, tmp_path, edge, capture), 0)
    assert len(run_values(edge, capture)["time_"]) == 0


@pytest.mark.parametrize("ns", [-(2**63), -(2**63) + 1, -1, 0, 1, 10**18, 2**63 - 1])
def test_plan_times_format_for_every_int64(ns):
    # numpy's datetime64[ns] spells any int64 but the least (its NaT); that one is Arrow's
    # documented lower end of timestamp[ns]
    expected = "1677-09-21T00:12:43.145224192" if ns == -(2**63) else str(np.datetime64(ns, "ns"))
    text = format_time_ns(ns)
    assert text == expected.replace("T", " ") + "Z"
    graph = compile(parse("import px\ndf = px.DataFrame(table='http_events')\npx.display(df)\n"), now_ns=ns)
    assert text in format_graph(graph)


@pytest.mark.parametrize(
    "start, end",
    [(-(10**30), 10**30), (None, 10**30), (-(10**30), None), (10**30, None), (None, -(10**30)), (-(2**63), 2**63 - 1)],
)
def test_replay_window_takes_any_integer_bounds(capture, start, end):
    times = open_capture(capture).scan("http_events", ["time_"], None, None).column("time_").cast(pa.int64())
    expected = sum(
        1 for t in times.to_pylist() if t is not None and (start is None or t >= start) and (end is None or t < end)
    )
    assert open_capture(capture).scan("http_events", ["time_"], start, end).num_rows == expected


# ---------------------------------------------------------------- literals, settings, arguments


def test_int64_edges_are_literals(capture, latencies):
    text = HEAD + "df.y = df.latency + -9223372036854775808 + 9223372036854775807\n" + SHOW
    assert run_values(text, capture)["y"] == plus(latencies, -(2**63) + 2**63 - 1)


@pytest.mark.parametrize(
    "body",
    [
        "df.y = df.latency + 99999999999999999999\n",
        "df.y = df.latency + 9223372036854775808\n",
        "df.y = df.latency + " + "9" * 5000 + "\n",
        "df.y = df.latency + 0x" + "f" * 5000 + "\n",
        "df.y = px.days(99999999999999999999)\n",
        "df.y = 'abc\\ud800'\n",
        "df.y = 'ok' + '\\udfff'\n",
    ],
)
def test_bad_literals_are_positioned_errors(tmp_path, capsys, capture, body):
    err = assert_clean(capsys, cli(capsys, tmp_path, HEAD + body + SHOW, capture), 2)
    assert "limits.pxl:3:" in err and "^" in err and "hint:" in err


@pytest.mark.parametrize(
    "pragma",
    [
        "#px:set max_output_rows_per_table=abc",
        "#px:set max_output_rows_per_table=-1",
        "#px:set max_output_rows_per_table=1e3",
        "#px:set max_output_rows_per_table=" + "9" * 30,
        "#px:set perf_profiler.sample_hz=0",
        "#px:set perf_profiler.python=maybe",
        "#px:set perf_profiler.stacks_size=big",
        "#px:set perf_profiler.stack_copy_bytes=1000",
        "#px:set perf_profiler.sample_hertz=99",
    ],
)
def test_bad_settings_are_positioned_errors(tmp_path, capsys, capture, pragma):
    err = assert_clean(capsys, cli(capsys, tmp_path, pragma + "\n" + HEAD + "px.display(df)\n", capture), 2)
    assert "limits.pxl:1:1:" in err and "setting" in err and "hint:" in err


def test_good_settings_still_apply(capture):
    text = "#px:set max_output_rows_per_table=7\n" + HEAD + "px.display(df)\n"
    assert len(run_values(text, capture)["time_"]) == 7


@pytest.mark.parametrize("default", ["1e309", "-1e309", "1.5", "99999999999999999999", "9223372036854775808"])
def test_bad_int_defaults_are_positioned_errors(tmp_path, capsys, capture, default):
    text = (
        f"import px\n\n\ndef limits(n: int = {default}):\n    df = px.DataFrame(table='http_events')\n"
        "    df.y = df.latency + n\n    return df\n"
    )
    err = assert_clean(capsys, cli(capsys, tmp_path, text, capture), 2)
    assert "limits.pxl:4:" in err and "^" in err


@pytest.mark.parametrize("raw", ["99999999999999999999", "-9223372036854775809", "9" * 5000, "1e400", "abc"])
def test_overflowing_int_arguments_are_usage_errors(tmp_path, capsys, capture, raw):
    text = (
        "import px\n\n\ndef limits(n: int = 1):\n    df = px.DataFrame(table='http_events')\n"
        "    df.y = df.latency + n\n    return df\n"
    )
    err = assert_clean(capsys, cli(capsys, tmp_path, text, capture, f"--n={raw}"), 2)
    assert "--n expects int" in err and len(err) < 500


def test_int_arguments_at_the_edges_and_bad_text():
    param = ScriptParam("n", int)
    assert convert_argument(param, "-9223372036854775808") == -(2**63)
    assert convert_argument(param, 2.0) == 2
    for raw in (2**63, float("inf"), float("nan"), 0.5):
        with pytest.raises(UsageError):
            convert_argument(param, raw)
    with pytest.raises(UsageError, match="surrogate"):
        convert_argument(ScriptParam("s", str), "a\udcff")  # an undecodable byte from argv


def test_a_5_mb_string_literal_lexes_in_linear_memory():
    literal = "a" * 2_500_000 + "\\n" * 1_250_000
    text = f"import px\nx = '{literal}'\n"
    tracemalloc.start()
    try:
        module = parse(text)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert module.body[1].value.value == "a" * 2_500_000 + "\n" * 1_250_000
    assert peak < 20 * len(text)  # the old string pattern held ~150 bytes per character


def test_a_5_mb_string_literal_runs(tmp_path, capsys, capture):
    text = HEAD + "df.y = px.length('" + "x" * 5_000_000 + "')\n" + SHOW
    assert_clean(capsys, cli(capsys, tmp_path, text, capture), 0)


# ---------------------------------------------------------------- long scripts, deep expressions


def test_5000_column_assignments(tmp_path, capsys, capture, latencies):
    text = HEAD + "".join(f"df.a{i} = df.latency + {i}\n" for i in range(5000)) + "df.y = df.a4999\n" + SHOW
    assert_clean(capsys, cli(capsys, tmp_path, text, capture), 0)
    assert run_values(text, capture)["y"] == plus(latencies, 4999)


def test_5000_reassignments_of_one_column(tmp_path, capsys, capture, latencies):
    text = HEAD + "df.y = df.latency\n" + "df.y = df.y + 1\n" * 5000 + SHOW
    assert_clean(capsys, cli(capsys, tmp_path, text, capture), 0)
    assert run_values(text, capture)["y"] == plus(latencies, 5000)


def test_5000_statements_build_one_deep_expression(tmp_path, capsys, capture, latencies):
    text = HEAD + "x = df.latency\n" + "x = x + 1\n" * 5000 + "df.y = x\n" + SHOW
    assert_clean(capsys, cli(capsys, tmp_path, text, capture), 0)
    assert run_values(text, capture)["y"] == plus(latencies, 5000)


def test_2000_chained_filters_and_maps_on_one_frame(tmp_path, capsys, capture, latencies):
    steps = "".join("df = df[df.y > %d]\n" % (i * 1000) if i % 2 else "df.y = df.y + 1\n" for i in range(2000))
    text = HEAD + "df.y = df.latency\n" + steps + SHOW
    assert_clean(capsys, cli(capsys, tmp_path, text, capture), 0)
    # with y growing by one per map: kept where latency + k > 1000 * (2k + 1) for each filter k
    expected = [
        v + 1000 for v in latencies if v is not None and all(v + k + 1 > (2 * k + 1) * 1000 for k in range(1000))
    ]
    assert run_values(text, capture)["y"] == expected


@pytest.mark.parametrize("terms", [250, 5000])
def test_long_boolean_and_sum_chains(tmp_path, capsys, capture, latencies, terms):
    text = (
        HEAD
        + "a = df.latency > 1000000\n"
        + "df.b = "
        + " and ".join(["a"] * terms)
        + "\n"
        + "df.y = df.latency + "
        + " + ".join(["1"] * terms)
        + "\n"
        + "px.display(df[['b', 'y']])\n"
    )
    assert_clean(capsys, cli(capsys, tmp_path, text, capture), 0)
    got = run_values(text, capture)
    assert got["b"] == [None if v is None else v > 1_000_000 for v in latencies]
    assert got["y"] == plus(latencies, terms)


# ---------------------------------------------------------------- repeated parts (DAGs)


def doubled(start: int, times: int) -> int:
    return wrap(start * 2**times)


def test_40_doublings_of_a_constant(tmp_path, capsys, capture, latencies):
    text = HEAD + "x = 3\n" + "x = x + x\n" * 40 + "df.y = df.latency + x\n" + SHOW
    started = time.monotonic()
    assert_clean(capsys, cli(capsys, tmp_path, text, capture), 0)
    assert time.monotonic() - started < 60
    assert run_values(text, capture)["y"] == plus(latencies, doubled(3, 40))


def test_40_doublings_of_a_column(tmp_path, capsys, capture, latencies):
    # latency % 1000 doubled 40 times stays inside INT64 (an overflow is an error: see below).
    text = HEAD + "x = df.latency % 1000\n" + "x = x + x\n" * 40 + "df.y = x\n" + SHOW
    started = time.monotonic()
    assert_clean(capsys, cli(capsys, tmp_path, text, capture), 0)
    assert time.monotonic() - started < 60
    assert run_values(text, capture)["y"] == [None if v is None else doubled(v % 1000, 40) for v in latencies]


def test_40_doublings_that_overflow_int64_are_one_error(tmp_path, capsys, capture, latencies):
    assert any(v is not None and v * 2**40 >= 2**63 for v in latencies)  # the data does overflow
    text = HEAD + "x = df.latency\n" + "x = x + x\n" * 40 + "df.y = x\n" + SHOW
    explain_code, run_code, err = cli(capsys, tmp_path, text, capture)
    assert (explain_code, run_code) == (0, 1), err
    assert "does not fit in INT64" in err and len(err.strip().split("\n")) == 1, err


def test_40_doublings_through_column_assignments(capture, latencies):
    text = HEAD + "df.y = df.latency % 1000\n" + "df.y = df.y + df.y\n" * 40 + SHOW
    assert run_values(text, capture)["y"] == [None if v is None else doubled(v % 1000, 40) for v in latencies]


def test_user_functions_nested_40_deep(tmp_path, capsys, capture, latencies):
    defs = "def f0(x):\n    return x\n\n\n" + "".join(
        f"def f{i}(x):\n    return f{i - 1}(x) + f{i - 1}(x)\n\n\n" for i in range(1, 41)
    )
    text = "import px\n\n\n" + defs + "df = px.DataFrame(table='http_events')\ndf.y = f40(df.latency % 1000)\n" + SHOW
    started = time.monotonic()
    assert_clean(capsys, cli(capsys, tmp_path, text, capture), 0)
    assert time.monotonic() - started < 60
    assert run_values(text, capture)["y"] == [None if v is None else doubled(v % 1000, 40) for v in latencies]


def test_user_function_effects_are_not_skipped(capture, latencies):
    text = (
        "import px\n\n\ndef show(df, name):\n    px.display(df, name)\n    return df\n\n\n"
        "def other():\n    return 1\n\n\n"
        "df = px.DataFrame(table='http_events')\nshow(df, 'a')\nshow(df, 'b')\n"
    )
    _, results = run_script(Script("limits", text, "limits.pxl"), source=capture)
    assert set(results.tables) == {"a", "b"}
    late = (
        "import px\n\n\ndef f(x):\n    return x + k\n\n\nk = 1\ndf = px.DataFrame(table='http_events')\n"
        "x = df.latency\ndf.a = f(x)\nk = 2\ndf.b = f(x)\npx.display(df[['latency', 'a', 'b']])\n"
    )
    got = run_values(late, capture)
    assert got["b"] == plus(got["a"], 1) and got["a"] == plus(latencies, 1)


def test_shared_expressions_print_once_and_compare_in_linear_time():
    column = ColumnRef("latency", DataType.INT64)
    x, y = column, column
    for _ in range(60):
        x = FuncCall("add", (x, x), DataType.INT64)
        y = FuncCall("add", (y, y), DataType.INT64)
    assert x == y and hash(x) == hash(y) and x is not y
    assert x != FuncCall("add", (x, Literal(1, DataType.INT64)), DataType.INT64)
    assert x.columns() == {"latency"}
    text = str(x)
    assert len(text) < 10_000 and text.count("latency") <= 8  # 2^60 times, unshared
    module = parse(HEAD + "x = df.latency\n" + "x = x + x\n" * 60 + "df.y = x\npx.display(df)\n")
    graph = compile(module, now_ns=NOW_NS)
    assert len(format_graph(graph)) < 20_000 and len(format_graph(optimize(graph))) < 20_000


@pytest.mark.parametrize("step", ["c = c or c", "c = c and c", "c = not (not c or not c)"])
def test_filters_on_predicates_that_repeat_their_parts(tmp_path, capsys, capture, latencies, step):
    text = HEAD + "c = df.latency > 5000000\n" + f"{step}\n" * 40 + "df = df[c]\n" + "df.y = df.latency\n" + SHOW
    started = time.monotonic()
    assert_clean(capsys, cli(capsys, tmp_path, text, capture), 0)
    assert time.monotonic() - started < 60
    assert run_values(text, capture)["y"] == [v for v in latencies if v is not None and v > 5_000_000]


def test_1000_nested_user_functions(tmp_path, capsys, capture, latencies):
    defs = "def f0(x):\n    return x + 1\n\n\n" + "".join(
        f"def f{i}(x):\n    return f{i - 1}(x)\n\n\n" for i in range(1, 1001)
    )
    text = "import px\n\n\n" + defs + "df = px.DataFrame(table='http_events')\ndf.y = f1000(df.latency)\n" + SHOW
    assert_clean(capsys, cli(capsys, tmp_path, text, capture), 0)
    assert run_values(text, capture)["y"] == plus(latencies, 1)
