"""Folded stacks: ``root;child;leaf COUNT`` per line, what flamegraph.pl, inferno and speedscope read.

One line per distinct stack (duplicates merged, counts summed), sorted by frames root first, so the
output is deterministic and diffs cleanly. Grouping columns (e.g. ``upid``) are the first frames.

Without ``--out`` the stacks go to stdout; with several displays each stack then starts with its
display's name as a root frame, so the stream is still one valid folded file. With ``--out``: a file
for one display, or a directory of ``<display>.folded`` files.

``diff_folded_text(before, after)`` writes the two-count differential form ``a;b;c 12 30``.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from pxq.render.base import open_output
from pxq.render.stacks import StackSamples, StackWriter, align


def folded_lines(record: StackSamples, prefix: str = "") -> pa.Array:
    """``<prefix>a;b;c COUNT\\n`` for each stack of ``record``, in record order."""
    counts = pa.array(record.counts).cast(pa.string())
    return pc.binary_join_element_wise(prefix, record.folded_stacks(), " ", counts, "\n", "")


def folded_text(record: StackSamples, prefix: str = "") -> str:
    return "".join(folded_lines(record, prefix).to_pylist())


def diff_folded_text(before: StackSamples, after: StackSamples) -> str:
    """``a;b;c BEFORE AFTER`` per stack of either record (0 where absent): the two-count folded
    format of flamegraph.pl's difffolded.pl, read by ``flamegraph.pl`` and ``inferno-flamegraph``."""
    union, was, now = align(before, after)
    columns = [pa.array(c).cast(pa.string()) for c in (was, now)]
    lines = pc.binary_join_element_wise(union.folded_stacks(), " ", columns[0], " ", columns[1], "\n", "")
    return "".join(lines.to_pylist())


class FoldedWriter(StackWriter):
    name = "folded"
    extension = "folded"
    needs_out = False

    def write(self, results, out, *, console=None, max_rows=None) -> None:
        if out is not None:
            return super().write(results, out)
        records = {display: StackSamples.from_table(table, title=display) for display, table in results.items()}
        stream, _ = open_output(None)
        several = len(records) > 1
        for display, record in records.items():
            prefix = display.replace(";", ",") + ";" if several else ""
            stream.write(folded_text(record, prefix).encode("utf-8"))
        stream.flush()

    def write_record(self, record, stream) -> None:
        stream.write(folded_text(record).encode("utf-8"))
