"""The REPL's session without a terminal: statements compiled one by one against a synthetic
capture, results checked against pandas over the capture's own Parquet file."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pxq.errors import ExecutionError
from pxq.repl.completion import candidates
from pxq.repl.session import CaptureSource, ReplSession, needs_more
from pxq.testing.synthetic import write_synthetic_capture
from tests.cli_support import run_pxq


@pytest.fixture(scope="module")
def capture(tmp_path_factory) -> Path:
    return Path(write_synthetic_capture(tmp_path_factory.mktemp("cap") / "c", 400, seed=3, null_fraction=0.05))


@pytest.fixture
def session(capture, tmp_path) -> ReplSession:
    return ReplSession(CaptureSource(capture), output_dir=tmp_path / "flames")


def events(capture: Path) -> pd.DataFrame:
    return pq.read_table(capture / "http_events.parquet").to_pandas()


def end_ns(capture: Path) -> int:
    return int(json.loads((capture / "capture.json").read_text())["end_time_ns"])


def ok(session: ReplSession, text: str):
    reply = session.submit(text)
    assert reply.error is None, reply.error
    return reply


def test_statements_one_by_one_show_expressions_like_pandas(session, capture):
    assert ok(session, "df = px.DataFrame(table='http_events', start_time='-2m')").tables == {}
    ok(session, "df = df[df.resp_status >= 400]")
    reply = ok(session, "df.groupby('req_path').agg(n=('latency', px.count), worst=('latency', px.max))")
    (name, table), *rest = reply.tables.items()
    assert not rest and name == "out3"  # the third input's value
    frame = events(capture)
    frame = frame[frame.time_.astype("int64") >= end_ns(capture) - 120 * 10**9]
    frame = frame[frame.resp_status >= 400]
    per_path = frame.groupby("req_path", dropna=False)
    expected = per_path.agg(n=("latency", "size"), worst=("latency", "max")).reset_index()
    got = table.to_pandas().sort_values("req_path").reset_index(drop=True)
    pd.testing.assert_frame_equal(got, expected.sort_values("req_path").reset_index(drop=True), check_dtype=False)


def test_px_display_shows_at_once_and_is_kept(session, capture):
    ok(session, "df = px.DataFrame(table='http_events')")
    reply = ok(session, "px.display(df.head(7), 'first')")
    assert list(reply.tables) == ["first"] and reply.tables["first"].num_rows == 7
    assert ok(session, "x = 1").tables == {}  # an earlier display is not shown again


def test_multi_line_def_then_call(session, capture):
    ok(session, "def slow(t):\n    df = px.DataFrame(table='http_events')\n    return df[df.latency > t]\n")
    reply = ok(session, "slow(5000000)")
    frame = events(capture)
    assert next(iter(reply.tables.values())).num_rows == int((frame.latency > 5_000_000).sum())


def test_syntax_error_points_into_the_line_typed_and_the_session_survives(session):
    ok(session, "df = px.DataFrame(table='http_events')")
    reply = session.submit("df = df[df.latency > ]")
    lines = reply.error.splitlines()
    assert lines[0].startswith("<repl>:2:")
    assert lines[1] == "    df = df[df.latency > ]"
    caret = lines[2].index("^") - 4
    assert lines[1][4:][caret] == "]"
    assert ok(session, "df.head(2)").tables["out3"].num_rows == 2


def test_compile_error_keeps_the_earlier_state(session):
    ok(session, "df = px.DataFrame(table='http_events')")
    reply = session.submit("df = df.groupby('nope').agg(n=('latency', px.count))")
    assert "unknown column 'nope'" in reply.error and "<repl>:2:" in reply.error
    assert "    df = df.groupby('nope')" in reply.error
    assert "latency" in session.compiler.columns_of("df")  # still the table's columns


def test_error_inside_an_earlier_function_shows_that_line(session):
    ok(session, "def f():\n    return px.DataFrame(table='http_events').nope\n")
    reply = session.submit("f()")
    assert "<repl>:2:" in reply.error and "return px.DataFrame(table='http_events').nope" in reply.error


def test_statements_before_a_failing_one_in_the_same_input_stay(session):
    reply = session.submit("a = px.DataFrame(table='http_events')\nb = a.nope")
    assert "unknown column 'nope'" in reply.error
    assert session.compiler.columns_of("a") is not None and session.compiler.columns_of("b") is None


def test_columns_follow_maps_and_groupbys(session):
    from pxq.tables import CATALOG

    ok(session, "df = px.DataFrame(table='http_events')")
    assert session.compiler.columns_of("df") == tuple(c.name for c in CATALOG["http_events"].columns)
    ok(session, "df.slow = df.latency > 1000")
    assert session.compiler.columns_of("df")[-1] == "slow"
    ok(session, "per = df.groupby(['req_path', 'slow']).agg(n=('latency', px.count))")
    assert session.compiler.columns_of("per") == ("req_path", "slow", "n")
    assert session.compiler.columns_of("nothing") is None


@pytest.mark.parametrize(
    ("text", "more"),
    [
        ("df = px.DataFrame(", True),
        ("x = [1,\n 2", True),
        ("x = [1,\n 2]", False),
        ("def f():", True),
        ("def f():\n    return 1", True),
        ("def f():\n    return 1\n", False),
        ("s = '''abc", True),
        ("df.head(3)", False),
        (":save x.pxl", False),
        ("", False),
        ("x = 1 + \\", True),
    ],
)
def test_needs_more(text, more):
    assert needs_more(text) is more


def test_completion(session):
    from pxq.funcs.registry import SCALARS
    from pxq.resources import data_dir

    def texts(before):
        return [c.text for c in candidates(session, before)]

    assert texts("df = px.DataFrame(table='http_e") == ["http_events"]
    assert "http_events" in texts('px.DataFrame("')
    ok(session, "df = px.DataFrame(table='http_events')")
    ok(session, "agg = df.groupby('req_path').agg(slowest=('latency', px.max))")
    from pxq.plan.compile import DATAFRAME_METHODS
    from pxq.tables import CATALOG

    assert texts("agg.") == ["req_path", "slowest", *DATAFRAME_METHODS]
    assert texts("agg['s") == ["slowest"]
    assert texts("x = agg[agg.sl") == ["slowest"]
    assert texts("df.resp_s") == [c.name for c in CATALOG["http_events"].columns if c.name.startswith("resp_s")]
    regex = next(c for c in candidates(session, "px.regex_m") if c.text == "regex_match")
    assert regex.meta == SCALARS["regex_match"].signature() and regex.replaces == len("regex_m")
    scripts = sorted(p.name for p in data_dir("scripts").iterdir() if p.is_dir() and any(p.glob("*.pxl")))
    assert texts(":run ") == scripts
    assert texts(":run http_d") == [s for s in scripts if s.startswith("http_d")]
    assert texts(":sch") == [":schema"]
    assert texts("ag") == ["agg"]


def test_save_writes_a_script_pxq_run_accepts(session, capture, tmp_path):
    ok(session, "#px:set max_output_rows_per_table=1000")
    ok(session, "df = px.DataFrame(table='http_events')")
    ok(session, "df.kb = df.resp_body_size / 1024")
    assert session.submit("df.nope").error  # not saved
    # the fifth input (failed ones count, as IPython's do) is shown as out5
    ok(session, "df[df.resp_status == 200].groupby('req_method').agg(kb=('kb', px.sum))")
    ok(session, "px.display(df.head(5), 'few')")
    saved = tmp_path / "session.pxl"
    assert ok(session, f":save {saved}").lines[0].startswith(f"saved {saved}")
    proc = run_pxq("run", str(saved), "--from", str(capture), "-o", "json", check=True)
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    per_method = pd.DataFrame([r for r in rows if r["_table"] == "out5"]).drop(columns="_table")
    frame = events(capture)
    frame["kb"] = frame.resp_body_size / 1024
    expected = frame[frame.resp_status == 200].groupby("req_method").kb.sum().reset_index()
    got = per_method.sort_values("req_method").reset_index(drop=True)
    pd.testing.assert_frame_equal(got, expected.sort_values("req_method").reset_index(drop=True), check_dtype=False)
    assert len([r for r in rows if r["_table"] == "few"]) == 5


def test_save_refuses_a_session_that_displays_nothing(session, tmp_path):
    ok(session, "df = px.DataFrame(table='http_events')")
    reply = session.submit(f":save {tmp_path / 'x.pxl'}")
    assert "displays nothing" in reply.error and not (tmp_path / "x.pxl").exists()


def test_out_writes_the_last_result(session, capture, tmp_path):
    ok(session, "df = px.DataFrame(table='http_events')")
    ok(session, "df.groupby('resp_status').agg(n=('latency', px.count))")
    reply = ok(session, f":out csv {tmp_path / 'o'}")
    groups = events(capture).resp_status.nunique(dropna=False)
    assert reply.lines == [f"wrote {tmp_path / 'o' / 'out2.csv'}: out2 {groups} rows"]
    got = pd.read_csv(tmp_path / "o" / "out2.csv").sort_values("resp_status").reset_index(drop=True)
    expected = events(capture).groupby("resp_status", dropna=False).size().rename("n").reset_index()
    pd.testing.assert_frame_equal(got, expected, check_dtype=False)
    assert "unknown output format 'xls'" in session.submit(f":out xls {tmp_path / 'p'}").error


def test_stack_table_is_a_flamegraph_file_and_a_summary(session, capture):
    ok(session, "df = px.DataFrame(table='http_events')")
    ok(session, "df.stack_trace = 'main;' + df.req_method + ';' + df.req_path")
    reply = ok(session, "df.groupby('stack_trace').agg(count=('latency', px.count))")
    assert reply.tables == {}
    flame = reply.flamegraphs["out3"]
    assert Path(flame.path).read_text().lstrip().startswith(("<?xml", "<svg"))
    frame = events(capture)
    counts = ("main;" + frame.req_method + ";" + frame.req_path).value_counts()
    top = counts.index[0].split(";")
    first = flame.summary[0].split()
    assert float(first[0].rstrip("%")) == pytest.approx(100 * counts.iloc[0] / len(frame), abs=0.05)
    assert int(first[1].replace(",", "")) == counts.iloc[0]
    assert " <- ".join(reversed(top)) in flame.summary[0]
    assert len(flame.summary) == min(5, len(counts))
    ok(session, "per = df.groupby('stack_trace').agg(count=('latency', px.count))")
    first = ok(session, "px.display(per, 'cpu?')").flamegraphs["cpu?"]
    second = ok(session, "px.display(per, 'cpu!')").flamegraphs["cpu!"]  # the same file name, cpu_.svg
    assert first.path != second.path and Path(first.path).exists() and Path(second.path).exists()


def test_commands(session, capture, tmp_path):
    held = next(line for line in ok(session, ":tables").lines if line.startswith("http_events"))
    assert f"{len(events(capture)):,} rows" in held
    schema = ok(session, ":schema http_events").lines
    assert any(line.split()[0] == "latency" for line in schema[1:])
    assert "did you mean http_events?" in session.submit(":schema http_event").error
    assert "did you mean :save?" in session.submit(":sav").error
    assert "unknown command ':nope'" in session.submit(":nope").error
    help_text = "\n".join(ok(session, ":help").lines)
    for command in (":source", ":tables", ":schema", ":explain", ":run", ":save", ":out", ":help"):
        assert command in help_text
    assert ok(session, ":quit").leave


def test_explain_shows_the_plan_of_what_was_typed(session):
    ok(session, "df = px.DataFrame(table='http_events')")
    ok(session, "df[df.resp_status == 500]")
    text = "\n".join(ok(session, ":explain").lines)
    assert "Source[http_events]" in text and "Display" in text and "probe manifest" in text
    assert re.search(r"name='out2'", text)


def test_run_a_bundled_script_with_arguments(session, capture):
    reply = ok(session, ":run http_data --num_head=3")
    assert [t.num_rows for t in reply.tables.values()] == [3]
    assert "unknown script" in session.submit(":run no_such_script").error
    assert "script arguments look like" in session.submit(":run http_data num_head").error


def test_switch_source(session, capture, tmp_path):
    other = write_synthetic_capture(tmp_path / "other", 50, seed=9)
    ok(session, "df = px.DataFrame(table='http_events')")
    assert ok(session, f":source {other}").lines[0].startswith(f"source: capture {other}")
    assert ok(session, "df").tables["out2"].num_rows == 50
    assert "capture" in session.submit(f":source {tmp_path / 'missing'}").error
    assert ok(session, "df").tables["out3"].num_rows == 50  # still the working source
    assert "live capture is not available" in session.submit(":source live").error


class _CancelOnScan:
    """A data source that, like a user's Ctrl-C arriving mid-query, asks to cancel while it is read."""

    def __init__(self, capture, cancel: threading.Event):
        from pxq.replay import open_capture

        self.capture, self.cancel = open_capture(capture), cancel
        self.processes, self.host, self.end_time_ns = self.capture.processes, self.capture.host, None

    def scan(self, *args, **kwargs) -> pa.Table:
        self.cancel.set()
        return self.capture.scan(*args, **kwargs)


def test_a_cancelled_query_stops_after_its_current_step(capture):
    from pxq.exec.execute import execute
    from pxq.lang import parse
    from pxq.plan.compile import compile

    graph = compile(
        parse("import px\ndf = px.DataFrame(table='http_events')\ndf.x = df.latency * 2\npx.display(df)\n"),
        now_ns=end_ns(capture),
    )
    cancel = threading.Event()
    with pytest.raises(ExecutionError, match="cancelled"):
        execute(graph, _CancelOnScan(capture, cancel), cancel=cancel)
    assert len(execute(graph, _CancelOnScan(capture, threading.Event())).tables["output"]) == len(events(capture))


def test_constants_show_their_value_and_column_expressions_say_what_they_are(session):
    assert ok(session, "1 + 2 * 3").lines == ["7  (INT64)"]
    assert ok(session, "px.minutes(2)").lines == [f"{2 * 60 * 10**9}  (INT64)"]
    assert ok(session, "'a' + 'b'").lines == ["'ab'  (STRING)"]
    ok(session, "df = px.DataFrame(table='http_events')")
    assert "column expression of type INT64" in ok(session, "df.latency * 2").lines[0]
    reply = session.submit("big = 9223372036854775807\nbig + 1")
    assert reply.error.splitlines()[:3] == ["<repl>:7:1: error: add: overflow", "    big + 1", "    ^^^^^^^"]
    # it compiled (only its value failed): the session and its script keep it, as the compiler did
    assert [text for _, _, text in session.history][-2:] == ["big = 9223372036854775807", "big + 1"]


def test_a_query_that_fails_while_running_is_an_error_and_the_session_goes_on(session, capture):
    ok(session, "df = px.DataFrame(table='http_events')")
    reply = session.submit("df[px.regex_match('[', df.req_path)]")
    assert "invalid regular expression" in reply.error
    assert ok(session, "df.head(1)").tables["out3"].num_rows == 1
