"""pxq.run, the Python API."""

from __future__ import annotations

import pandas as pd
import pytest

import pxq
from pxq.errors import CompileError, UsageError
from pxq.replay import write_capture
from pxq.testing.synthetic import synthetic_http_events, synthetic_processes

START_NS = 1_764_115_200_000_000_000


@pytest.fixture(scope="module")
def capture(tmp_path_factory) -> str:
    directory = tmp_path_factory.mktemp("api_capture")
    write_capture(directory, {"http_events": synthetic_http_events(500, seed=9, start_ns=START_NS)},
                  host="api", start_time_ns=START_NS, end_time_ns=START_NS + 300 * 10**9,
                  processes=synthetic_processes())
    return str(directory)


def test_run_bundled_script_returns_dataframes_by_display(capture):
    frames = pxq.run("http_request_stats", source=capture)
    assert list(frames) == ["http_request_stats"]
    assert isinstance(frames["http_request_stats"], pd.DataFrame)
    assert frames["http_request_stats"].requests.sum() == 500


def test_run_script_text_with_arguments(capture):
    text = ("import px\n"
            "def main(limit: int):\n"
            "    return px.DataFrame(table='http_events').head(limit)\n")
    assert len(pxq.run(text, args={"limit": 3}, source=capture)["main"]) == 3


def test_errors_are_pxq_errors(capture):
    with pytest.raises(CompileError, match="unknown table"):
        pxq.run("import px\npx.display(px.DataFrame(table='nope'))\n", source=capture)
    with pytest.raises(UsageError, match="missing script argument --limit"):
        pxq.run("import px\ndef main(limit: int):\n    return px.DataFrame(table='http_events')\n",
                source=capture)
