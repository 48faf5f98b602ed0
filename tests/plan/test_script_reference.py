"""px.script_reference as Pixie's compiler takes it (pixie_module.cc ``ScriptReference`` in
github.com/pixie-io/pixie): label and script a string constant, column or function result, args a
dict of constant names to string values, all strings because its ``_script_reference`` UDF takes
strings only. pxq shows the label (the link is the UI's); anything else is a positioned error."""

from __future__ import annotations

import pytest

from pxq.errors import CompileError, Source
from pxq.exec.execute import execute
from pxq.lang import parse
from pxq.plan.compile import compile
from pxq.replay import open_capture
from pxq.testing.synthetic import write_synthetic_capture

HEAD = "import px\ndf = px.DataFrame('http_events')\n"


def compile_error(line: str) -> tuple[str, int, int]:
    text = HEAD + line + "\npx.display(df)\n"
    with pytest.raises(CompileError) as caught:
        compile(parse(text, "t.pxl"), now_ns=1_764_115_500_000_000_000)
    (diagnostic,) = caught.value.diagnostics
    return caught.value.with_source(Source(text, "t.pxl")).render(), diagnostic.span.line, diagnostic.span.column


@pytest.mark.parametrize(("line", "at", "message"), [
    ("df.x = px.script_reference(df.latency, 'px/pod')", "latency",
     "argument 'label' of px.script_reference must be a string, not a column expression of type INT64"),
    ("df.x = px.script_reference(df.req_path, 3)", "3",
     "argument 'script' of px.script_reference must be a string, not a constant of type INT64"),
    ("df.x = px.script_reference(df.req_path, 'px/pod', ['a'])", "['a']",
     "argument 'args' of px.script_reference must be a dict, not a list"),
    ("df.x = px.script_reference(df.req_path, 'px/pod', {'n': df.resp_status})", "resp_status",
     "the value of script argument 'n' of px.script_reference must be a string, not a column expression of type INT64"),
    ("df.x = px.script_reference(df.req_path, 'px/pod', {df.req_path: 'a'})", "req_path:",
     "the name of a script argument of px.script_reference must be known when the script is compiled"),
    ("df.x = px.script_reference(df.req_path, 'px/pod', {'a': [1]})", "[1]",
     "the value of script argument 'a' of px.script_reference must be a column or a single value, not a list"),
])  # fmt: skip
def test_script_reference_takes_strings(line, at, message):
    rendered, at_line, at_column = compile_error(line)
    assert message in rendered
    assert (at_line, at_column) == (3, line.index(at) + 1)


def test_script_reference_shows_its_label(tmp_path):
    capture = open_capture(write_synthetic_capture(tmp_path / "cap", 40, seed=3))
    text = HEAD + (
        "df.link = px.script_reference(df.req_path, px.select(df.resp_status >= 500, 'px/errors', 'px/ok'),\n"
        "                              {'status': px.itoa(df.resp_status), 'path': df.req_path, 'start': '-5m'})\n"
        "df.plain = px.script_reference('all', 'px/http_data')\n"
        "px.display(df[['req_path', 'link', 'plain']])\n"
    )
    graph = compile(parse(text, "t.pxl"), now_ns=capture.end_time_ns)
    (table,) = execute(graph, capture).tables.values()
    paths = capture.scan("http_events", ["req_path"]).column("req_path").to_pylist()
    assert table.column("link").to_pylist() == table.column("req_path").to_pylist() == paths
    assert set(table.column("plain").to_pylist()) == {"all"}
