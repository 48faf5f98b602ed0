"""pxq.run, the Python API."""

from __future__ import annotations

import pandas as pd
import pytest

import pxq
from pxq.errors import CompileError, UsageError
from pxq.testing.synthetic import write_synthetic_capture


@pytest.fixture(scope="module")
def capture(tmp_path_factory) -> str:
    return write_synthetic_capture(tmp_path_factory.mktemp("api_capture"), 500, seed=9)


def test_run_bundled_script_returns_dataframes_by_display(capture):
    frames = pxq.run("http_request_stats", source=capture)
    assert list(frames) == ["http_request_stats"]
    assert isinstance(frames["http_request_stats"], pd.DataFrame)
    assert frames["http_request_stats"].requests.sum() == 500


def test_run_script_text_with_arguments(capture):
    text = "import px\ndef main(limit: int):\n    return px.DataFrame(table='http_events').head(limit)\n"
    assert len(pxq.run(text, args={"limit": 3}, source=capture)["main"]) == 3


def test_errors_are_pxq_errors(capture):
    with pytest.raises(CompileError, match="unknown table"):
        pxq.run("import px\npx.display(px.DataFrame(table='nope'))\n", source=capture)
    with pytest.raises(UsageError, match="missing script argument --limit"):
        pxq.run("import px\ndef main(limit: int):\n    return px.DataFrame(table='http_events')\n", source=capture)
