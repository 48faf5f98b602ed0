"""Jupyter/IPython integration: ``%load_ext pxq``, then a ``%%pxq`` cell runs PxL.

    %%pxq --from capture/ -- --num_head=20
    import px
    df = px.DataFrame(table='http_events', start_time='-5m')
    px.display(df[df.resp_status >= 500], 'errors')

A bundled script or file runs as a line magic: ``%pxq --from capture/ --script http_data``.

The cell's value is the pandas DataFrame of its only display, or a dict of them by name; each
display is also shown (as an HTML table) with its name as a heading; a stack table (a
``stack_trace`` and a count column) is shown as an interactive flamegraph instead.
"""

from __future__ import annotations

import argparse
import shlex

from pxq.errors import PxqError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="%%pxq", add_help=False)
    parser.add_argument("--from", dest="source", required=True, help="capture directory to query")
    parser.add_argument("--script", help="run this bundled script or file instead of the cell")
    return parser


def run_cell(line: str, cell: str):
    """The work of ``%%pxq``: {display name: pandas DataFrame}."""
    from pxq.api import run_script
    from pxq.cli.main import parse_script_args
    from pxq.library import Script, load_script

    words = shlex.split(line)
    own, script_words = (words[: words.index("--")], words[words.index("--") + 1:]) if "--" in words else (words, [])
    opts = _parser().parse_args(own)
    args, _ = parse_script_args(script_words)
    script = load_script(opts.script) if opts.script else Script("cell", cell, "<cell>")
    _, results = run_script(script, args=args, source=opts.source)
    frames = {name: table.to_pandas() for name, table in results.tables.items()}
    return frames


def load_ipython_extension(ipython) -> None:
    from IPython.display import HTML, display

    from pxq.render.flamegraph_svg import notebook_flamegraph

    def pxq(line: str, cell: str | None = None):
        try:
            frames = run_cell(line, cell or "")
        except PxqError as exc:  # show the diagnostic, not a traceback
            print(str(exc))
            return None
        for name, frame in frames.items():
            display(HTML(f"<h4>{name}</h4>"))
            display(notebook_flamegraph(frame, name) or frame)
        return next(iter(frames.values())) if len(frames) == 1 else frames

    ipython.register_magic_function(pxq, magic_kind="line_cell", magic_name="pxq")
