"""%load_ext pxq and %%pxq cells in a real IPython shell."""

from __future__ import annotations

import pandas as pd
import pytest

from pxq.testing.synthetic import write_synthetic_capture


@pytest.fixture(scope="module")
def shell():
    from IPython.core.interactiveshell import InteractiveShell

    ipython = InteractiveShell.instance()
    ipython.run_line_magic("load_ext", "pxq")
    yield ipython
    InteractiveShell.clear_instance()


@pytest.fixture(scope="module")
def capture(tmp_path_factory) -> str:
    return write_synthetic_capture(tmp_path_factory.mktemp("nb_capture"), 300, seed=5)


def test_cell_returns_dataframe(shell, capture):
    frame = shell.run_cell_magic(
        "pxq",
        f"--from {capture}",
        (
            "import px\n"
            "df = px.DataFrame(table='http_events')\n"
            "px.display(df.groupby('req_method').agg(n=('latency', px.count)), 'methods')\n"
        ),
    )
    assert isinstance(frame, pd.DataFrame)
    assert frame.n.sum() == 300


def test_bundled_script_with_arguments(shell, capture):
    frame = shell.run_line_magic("pxq", f"--from {capture} --script http_data -- --num_head=4")
    assert len(frame) == 4 and "latency" in frame.columns


def test_errors_print_a_diagnostic(shell, capture, capsys):
    result = shell.run_cell_magic("pxq", f"--from {capture}", "import px\npx.display(px.DataFrame(table='nope'))\n")
    assert result is None
    assert "unknown table 'nope'" in capsys.readouterr().out


def test_quickstart_notebook_runs(shell, capture, tmp_path, monkeypatch):
    """Every code cell of notebooks/quickstart.ipynb runs against a capture at ./capture/."""
    import json
    import shutil
    from pathlib import Path

    notebook = json.loads((Path(__file__).resolve().parents[2] / "notebooks" / "quickstart.ipynb").read_text())
    shutil.copytree(capture, tmp_path / "capture")
    monkeypatch.chdir(tmp_path)
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            result = shell.run_cell("".join(cell["source"]))
            assert result.success, result.error_in_exec or result.error_before_exec
    assert len(shell.user_ns["stats"]) > 0


def test_a_changed_frame_is_shown_as_pandas_shows_it(shell, capture):
    """Units belong to the values pxq returned: once a column is rescaled in place, the frame is
    shown as a plain DataFrame (not as '0 ns'); frames computed from it are plain DataFrames."""
    frame = shell.run_line_magic("pxq", f"--from {capture} --script http_data -- --num_head=5")
    assert " ms" in frame._repr_mimebundle_()["text/html"] or " µs" in frame._repr_mimebundle_()["text/html"]
    assert type(frame.head(2)) is pd.DataFrame and type(frame[frame.latency > 0]) is pd.DataFrame
    frame["latency"] = frame.latency // 1_000_000  # now milliseconds: "150 ns" would be wrong
    bundle = frame._repr_mimebundle_()
    assert bundle["text/html"] == pd.DataFrame._repr_html_(frame)
    assert bundle["text/plain"] == pd.DataFrame.__repr__(frame)


def test_a_mistyped_option_is_one_line_not_an_exit(shell, capsys):
    assert shell.run_line_magic("pxq", "--frm /tmp --script http_data") is None
    assert capsys.readouterr().out == "%%pxq: unrecognized arguments: --frm /tmp\n"
