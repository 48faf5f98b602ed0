"""The neutral stack record every stack writer takes: ``StackSamples``.

A display is a stack table when it has a folded stack column (``stack_trace``, or a string column
with semantic type STACK_TRACE: frames ``;``-separated, root first) and, usually, a count column
(``count``, or the first integer column that is neither a time, an id nor a grouping column; a
table without one counts each row as one sample). Pixie's ``px/perf_flamegraph`` output (node,
namespace, pod, container, cmdline, stack_trace_id, stack_trace, count, percent) is one.

Building the record (``StackSamples.from_table``), all vectorized with Arrow and numpy:

1. grouping columns (``group_by``, by default those of ``DEFAULT_GROUP_COLUMNS`` present, e.g.
   ``cmdline`` or ``upid``) become root frames ``"<column>: <value>"`` (empty values are skipped),
   so stacks of different processes stay apart; a row whose boolean ``truncated`` column is true
   gets a ``[truncated]`` frame between those and its first frame;
2. rows with the same group and stack are merged, their counts summed;
3. stacks are sorted by their frames, root first (bytewise, a shorter stack before the stacks it
   is a prefix of), so stacks sharing a prefix are adjacent: a flamegraph layout merges them
   in one pass, and every writer's output is deterministic;
4. frames are interned: ``names[frame_id]``, with a ``FrameKind`` per frame for colouring.

Writers (``folded``, ``flamegraph_svg``, ``speedscope``, ``pprof``) read only this record, as
py-spy's recorders read its ``StackTrace``; none depends on another.
"""

from __future__ import annotations

import enum
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.types as pat

from pxq.errors import UsageError
from pxq.render.base import is_text, is_time, open_output, output_paths, semantic_of, time_ns
from pxq.types import SemanticType

STACK_COLUMN = "stack_trace"
COUNT_COLUMN = "count"
# Identity columns that become root frames, outermost first, when a display has them (Pixie's
# flamegraph widget nests node → namespace → pod → container → process the same way); last,
# pxq's ``sampler`` (ebpf / py-spy), so that the two samplers' views of one process stay apart.
DEFAULT_GROUP_COLUMNS = (
    "node",
    "namespace",
    "pod",
    "container",
    "process",
    "cmdline",
    "comm",
    "pid",
    "upid",
    "sampler",
)
# Integer columns that are never the sample count.
_NOT_COUNTS = re.compile(r"(^|_)(id|pid|upid|tid|port|asid|cpu|depth|line)$|^(stack_trace_id|percent)$")
# Schema metadata key a collector may set: the sampling period in nanoseconds (1e9 / rate in Hz).
PERIOD_KEY = b"pxq.sample_period_ns"
# Frame text for a null or empty stack, so that its samples still count.
EMPTY_STACK = "[unknown]"
# A stack table's boolean column saying a row's stack is cut short (the profiler's user stack did
# not reach a process or thread entry), and the frame that then stands for the missing callers at
# the root side, so that a flamegraph shows the cut instead of a shallow tower that looks like a
# real caller. Profilers that cut stacks mark them the same way: Flutter DevTools parents
# truncated stacks with a "[Truncated]" frame (flutter/devtools#579), Datadog's PHP profiler adds
# a fake frame (DataDog/dd-trace-php#1679); perf and flamegraph.pl show no marker.
TRUNCATED_COLUMN = "truncated"
TRUNCATED_FRAME = "[truncated]"


class FrameKind(enum.IntEnum):
    """What a frame is, for colouring. Detected from the frame's text (see ``frame_kinds``)."""

    NATIVE = 0  # a symbol, or module+0xoffset
    KERNEL = 1  # 'name_[k]' (flamegraph.pl, Pixie), '[k] name', 'name ([kernel.kallsyms])'
    PYTHON = 2  # 'func (file.py:123)' or 'func (<frozen importlib._bootstrap>:1007)' (py-spy)
    UNKNOWN = 3  # '[unknown]', '[truncated]', bare hex addresses, empty frames
    GROUP = 4  # a root frame made from a grouping column, e.g. 'cmdline: python3 app.py'


_KERNEL = r"(_\[k\]$)|(^\[k\] )|( \[k\]$)|(\[kernel\.kallsyms\]\)?$)"
_PYTHON = r"^.* \(([^()]*\.pyw?|<[^<>()]*>):\d+\)$"
_UNKNOWN = r"^$|^\s*\[?<?(unknown|truncated|lost|missing|no stack|invalid)[^\]>]*\]?>?\s*$|^0x[0-9a-fA-F]+$"
_LARGE_EMPTY = pa.scalar("", pa.large_string())
_CONTROL = r"[\x00-\x1f\x7f]"
_PYTHON_PARTS = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*\.pyw?|<[^<>()]*>):(?P<line>\d+)\)$")


def frame_kinds(names: pa.Array) -> np.ndarray:
    """``FrameKind`` (uint8) of each frame name, vectorized."""
    kinds = np.zeros(len(names), dtype=np.uint8)
    if len(names) == 0:
        return kinds
    for kind, pattern in ((FrameKind.PYTHON, _PYTHON), (FrameKind.KERNEL, _KERNEL), (FrameKind.UNKNOWN, _UNKNOWN)):
        hits = pc.fill_null(pc.match_substring_regex(names, pattern), False).to_numpy(zero_copy_only=False)
        kinds[hits] = kind
    return kinds


def python_frame(name: str) -> tuple[str, str, int] | None:
    """``(function, file, line)`` of a Python frame ``'func (file.py:123)'``, else None."""
    m = _PYTHON_PARTS.match(name)
    return (m["func"], m["file"], int(m["line"])) if m else None


@dataclass(frozen=True)
class Group:
    """One distinct combination of grouping values; its labels are the stack's first frames."""

    values: tuple[tuple[str, str], ...]  # (column, value) for every grouping column
    labels: tuple[str, ...]  # root frames, one per non-empty value

    @property
    def depth(self) -> int:
        return len(self.labels)

    @property
    def name(self) -> str:
        return ", ".join(self.labels) or "all"


@dataclass(frozen=True, eq=False)
class StackSamples:
    """Distinct stacks with their sample counts, frames interned, sorted root first.

    Stack ``i`` is ``frame_ids[offsets[i]:offsets[i + 1]]`` (root first; its first
    ``groups[group_of[i]].depth`` frames are the group's labels) and was seen ``counts[i]`` times.
    """

    names: pa.Array  # string, distinct frame names; index = frame id
    kinds: np.ndarray  # uint8 FrameKind per frame id
    offsets: np.ndarray  # int64, len(stacks) + 1
    frame_ids: np.ndarray  # int32
    counts: np.ndarray  # int64, > 0
    group_of: np.ndarray  # int32 index into groups, per stack
    groups: tuple[Group, ...] = (Group((), ()),)
    group_columns: tuple[str, ...] = ()
    title: str = ""
    period_ns: int | None = None  # sampling period, when the collector knows it
    start_ns: int | None = None  # time range of the samples, when the table has times
    end_ns: int | None = None

    # ------------------------------------------------------------------ building

    @classmethod
    def from_table(
        cls,
        table: pa.Table,
        *,
        title: str = "",
        group_by: Sequence[str] | None = None,
        period_ns: int | None = None,
    ) -> StackSamples:
        """The record of a stack table; ``UsageError`` when ``table`` has no stack column.

        ``group_by=None`` groups by the ``DEFAULT_GROUP_COLUMNS`` the table has; ``()`` merges all.
        """
        stack_col = stack_column(table)
        if stack_col is None:
            raise UsageError(_no_stack_message(title, table))
        if group_by is None:
            group_cols = tuple(c for c in DEFAULT_GROUP_COLUMNS if c in table.column_names)
        else:
            group_cols = tuple(group_by)
            missing = [c for c in group_cols if c not in table.column_names]
            if missing:
                raise UsageError(
                    f"{title or 'display'}: cannot group stacks by {', '.join(map(repr, missing))}: "
                    f"columns are {', '.join(table.column_names)}"
                )
        count_col = count_column(table, exclude=(stack_col, *group_cols))
        if count_col is None:
            counts = pa.array(np.ones(table.num_rows, dtype=np.int64))
        else:
            counts = _as_counts(table[count_col], count_col, title)
        if period_ns is None:
            raw = (table.schema.metadata or {}).get(PERIOD_KEY)
            period_ns = int(raw) if raw and raw.strip().isdigit() else None
        start_ns = end_ns = None
        time_cols = [f.name for f in table.schema if is_time(f)]
        if time_cols and table.num_rows:
            times = time_ns(table[time_cols[0]])
            lo, hi = pc.min(times).as_py(), pc.max(times).as_py()
            start_ns, end_ns = lo, hi
        stacks = pc.fill_null(_text(table[stack_col]), "")
        stacks = pc.if_else(pc.equal(stacks, ""), EMPTY_STACK, stacks)
        if TRUNCATED_COLUMN in table.column_names and pat.is_boolean(table.schema.field(TRUNCATED_COLUMN).type):
            cut = pc.fill_null(table[TRUNCATED_COLUMN], False)
            stacks = pc.if_else(cut, pc.binary_join_element_wise(TRUNCATED_FRAME, stacks, ";"), stacks)
        keys = [pc.fill_null(_text(table[c]), "") for c in group_cols]
        return cls._build(
            stacks, counts, group_cols, keys, title=title, period_ns=period_ns, start_ns=start_ns, end_ns=end_ns
        )

    @classmethod
    def from_folded(cls, text: str, *, title: str = "") -> StackSamples:
        """The record of folded text (``a;b;c 12`` per line); blank and ``#`` lines are skipped."""
        stacks, counts = parse_folded(text)
        return cls._build(pa.array(stacks, pa.string()), pa.array(counts, pa.int64()), (), [], title=title)

    @classmethod
    def _build(
        cls, stacks, counts, group_cols, keys, *, title, period_ns=None, start_ns=None, end_ns=None
    ) -> StackSamples:
        # 1. Merge rows with the same group and stack: dictionary indices, summed with bincount.
        stack_enc = _combined(pc.dictionary_encode(stacks))
        stack_idx = stack_enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        weights = _combined(counts).to_numpy(zero_copy_only=False).astype(np.int64)
        if group_cols:
            group_enc = _combined(pc.dictionary_encode(pc.binary_join_element_wise(*keys, "\x1f")))
            groups = tuple(_group(group_cols, key.split("\x1f")) for key in group_enc.dictionary.to_pylist())
            pair = stack_idx * len(groups) + group_enc.indices.to_numpy(zero_copy_only=False)
            distinct, inverse = np.unique(pair, return_inverse=True)
            sums = _sum_by(inverse.ravel(), weights, len(distinct))
            stack_of, group_of = distinct // len(groups), distinct % len(groups)
        else:
            groups = (Group((), ()),)
            sums = _sum_by(stack_idx, weights, len(stack_enc.dictionary))
            stack_of = np.arange(len(sums))
            group_of = np.zeros(len(sums), dtype=np.int64)
        keep = np.flatnonzero(sums > 0)
        merged_counts = sums[keep]
        stack_of, group_of = stack_of[keep], group_of[keep].astype(np.int32)
        # 2. The rooted stack text: group labels first, every frame (the last too) ending with ';'.
        text = stack_enc.dictionary.take(pa.array(stack_of)).cast(pa.large_string())
        if group_cols:
            prefixes = pa.array(["".join(f"{label};" for label in g.labels) for g in groups], pa.large_string())
            text = pc.binary_join_element_wise(prefixes.take(pa.array(group_of)), text, _LARGE_EMPTY)
        text = pc.binary_join_element_wise(text, pa.scalar(";", pa.large_string()), _LARGE_EMPTY)
        # 3. Split without copying: frames are the slices of the text buffer between separators.
        offsets, frames = _split_terminated(text)
        encoded = pc.dictionary_encode(frames)
        names = pc.utf8_slice_codeunits(encoded.dictionary, 0, -1).cast(pa.string())
        if pc.any(pc.match_substring_regex(names, _CONTROL)).as_py():
            # Control characters (a newline would end a folded line, XML forbids most) become spaces.
            clean = pc.replace_substring_regex(stacks, _CONTROL, " ")
            return cls._build(
                clean, counts, group_cols, keys, title=title, period_ns=period_ns, start_ns=start_ns, end_ns=end_ns
            )
        frame_ids = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int32)
        # 4. Sort stacks by their frames, root first; the text's byte order is exactly that.
        order = pc.sort_indices(text).to_numpy(zero_copy_only=False)
        offsets, frame_ids = _permute_rows(offsets, frame_ids, order)
        group_of, merged_counts = group_of[order], merged_counts[order]
        kinds = frame_kinds(names)
        depths = np.fromiter((g.depth for g in groups), dtype=np.int64, count=len(groups))
        if depths.any():
            lengths = np.diff(offsets)
            position = np.arange(len(frame_ids)) - np.repeat(offsets[:-1], lengths)
            kinds[frame_ids[position < np.repeat(depths[group_of], lengths)]] = FrameKind.GROUP
        return cls(
            names=names,
            kinds=kinds,
            offsets=offsets,
            frame_ids=frame_ids,
            counts=merged_counts,
            group_of=group_of,
            groups=groups,
            group_columns=tuple(group_cols),
            title=title,
            period_ns=period_ns,
            start_ns=start_ns,
            end_ns=end_ns,
        )

    # ------------------------------------------------------------------ reading

    def __len__(self) -> int:
        return len(self.counts)

    @cached_property
    def total(self) -> int:
        return int(self.counts.sum())

    @cached_property
    def name_list(self) -> list[str]:
        return self.names.to_pylist()

    @cached_property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @cached_property
    def max_depth(self) -> int:
        return int(self.lengths.max()) if len(self) else 0

    @cached_property
    def root_depths(self) -> np.ndarray:
        """How many group-label frames each stack starts with."""
        depths = np.fromiter((g.depth for g in self.groups), dtype=np.int64, count=len(self.groups))
        return depths[self.group_of] if len(self) else np.zeros(0, dtype=np.int64)

    @cached_property
    def code_frames(self) -> np.ndarray:
        """Frame ids that occur below the group labels (the frames that are code), ascending."""
        position = np.arange(len(self.frame_ids)) - np.repeat(self.offsets[:-1], self.lengths)
        used = np.zeros(len(self.kinds), dtype=bool)
        used[self.frame_ids[position >= np.repeat(self.root_depths, self.lengths)]] = True
        return np.flatnonzero(used)

    def stack(self, i: int, *, rooted: bool = True) -> tuple[str, ...]:
        """Frame names of stack ``i``, root first (without the group labels when ``rooted=False``)."""
        start = self.offsets[i] + (0 if rooted else self.root_depths[i])
        names = self.name_list
        return tuple(names[f] for f in self.frame_ids[start : self.offsets[i + 1]])

    def folded_stacks(self) -> pa.Array:
        """Each stack as folded text ``a;b;c`` (rooted), in record order."""
        frames = self.names.take(pa.array(self.frame_ids))
        lists = pa.ListArray.from_arrays(pa.array(self.offsets.astype(np.int32)), frames)
        return pc.binary_join(lists, ";")

    def by_group(self) -> Iterator[tuple[Group, np.ndarray]]:
        """``(group, indices of its stacks)`` per group, in group-label order."""
        order = np.argsort(self.group_of, kind="stable")
        bounds = np.searchsorted(self.group_of[order], np.arange(len(self.groups) + 1))
        seen = sorted(range(len(self.groups)), key=lambda g: self.groups[g].labels)
        for g in seen:
            members = order[bounds[g] : bounds[g + 1]]
            if len(members):
                yield self.groups[g], members

    def group_stacks(self, members: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """CSR ``(offsets, frame_ids)`` of the given stacks without their group labels."""
        starts = self.offsets[members] + self.root_depths[members]
        offsets, index = gather_rows(starts, self.offsets[members + 1] - starts)
        return offsets, self.frame_ids[index]


def align(before: StackSamples, after: StackSamples) -> tuple[StackSamples, np.ndarray, np.ndarray]:
    """The union of two records' (rooted) stacks, and each record's count per union stack (0 where
    it lacks the stack): what differential flamegraphs compare."""
    texts = (before.folded_stacks(), after.folded_stacks())
    table = pa.table(
        {STACK_COLUMN: pa.concat_arrays(texts), COUNT_COLUMN: np.concatenate((before.counts, after.counts))}
    )
    union = StackSamples.from_table(table, group_by=(), title=after.title or before.title)
    union_text = union.folded_stacks()
    out = []
    for record, text in zip((before, after), texts):
        index = pc.index_in(union_text, value_set=text)
        valid = pc.is_valid(index).to_numpy(zero_copy_only=False)
        counts = np.zeros(len(union), dtype=np.int64)
        counts[valid] = record.counts[index.filter(pc.is_valid(index)).to_numpy(zero_copy_only=False)]
        out.append(counts)
    return union, out[0], out[1]


# ---------------------------------------------------------------------- columns


def _text(column) -> pa.Array:
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if pat.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    return column.cast(pa.string())


def _sum_by(index: np.ndarray, values: np.ndarray, size: int) -> np.ndarray:
    """int64 sums of ``values`` per ``index``: bincount (float64) while exact, else np.add.at."""
    if int(values.sum(dtype=np.float64)) < 2**53:
        return np.rint(np.bincount(index, weights=values, minlength=size)).astype(np.int64)
    sums = np.zeros(size, dtype=np.int64)
    np.add.at(sums, index, values)
    return sums


def _combined(array):
    return array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array


def _split_terminated(text: pa.Array) -> tuple[np.ndarray, pa.Array]:
    """Rows of ';'-terminated frames → (row offsets into the frames, the frames, each still ending
    with ';'), the frames being zero-copy slices of ``text``'s data buffer (large_string)."""
    text = _combined(text)
    _, offsets_buf, data_buf = text.buffers()
    if offsets_buf is None or len(text) == 0:
        return np.zeros(1, dtype=np.int64), pa.array([], pa.large_string())
    row = np.frombuffer(offsets_buf, dtype=np.int64)[text.offset : text.offset + len(text) + 1]
    data = np.frombuffer(data_buf, dtype=np.uint8)
    ends = np.flatnonzero(data[row[0] : row[-1]] == ord(";")) + (row[0] + 1)
    frame_offsets = np.concatenate((row[:1], ends))
    frames = pa.Array.from_buffers(pa.large_string(), len(ends), [None, pa.py_buffer(frame_offsets), data_buf])
    return np.searchsorted(ends, row, side="right").astype(np.int64), frames


def _permute_rows(offsets: np.ndarray, values: np.ndarray, order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """CSR rows reordered: new row ``i`` is old row ``order[i]``."""
    new, index = gather_rows(offsets[:-1][order], np.diff(offsets)[order])
    return new, values[index]


def prefix_sums(values: np.ndarray) -> np.ndarray:
    """``[0, v0, v0+v1, ...]`` (int64, one longer than ``values``): CSR offsets of row lengths."""
    out = np.zeros(len(values) + 1, dtype=np.int64)
    np.cumsum(values, out=out[1:])
    return out


def gather_rows(starts: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``[starts[i], starts[i] + lengths[i])`` of a flat array, back to back: their CSR offsets
    and the flat index of each element (use as ``flat[index]``, or ``out[index] = flat`` to scatter)."""
    offsets = prefix_sums(lengths)
    return offsets, np.repeat(np.asarray(starts, dtype=np.int64) - offsets[:-1], lengths) + np.arange(offsets[-1])


def stack_column(table: pa.Table) -> str | None:
    """The folded stack column: ``stack_trace``, else the first text column marked STACK_TRACE."""
    if STACK_COLUMN in table.column_names and is_text(table.schema.field(STACK_COLUMN).type):
        return STACK_COLUMN
    for f in table.schema:
        if is_text(f.type) and semantic_of(f) is SemanticType.STACK_TRACE:
            return f.name
    return None


def count_column(table: pa.Table, exclude: Sequence[str] = ()) -> str | None:
    """``count`` when numeric, else the first integer column that is no time, id or grouping column."""
    schema = table.schema
    if COUNT_COLUMN in schema.names and COUNT_COLUMN not in exclude:
        t = schema.field(COUNT_COLUMN).type
        if pat.is_integer(t) or pat.is_floating(t):
            return COUNT_COLUMN
    for f in schema:
        if f.name in exclude or f.name in DEFAULT_GROUP_COLUMNS or not pat.is_integer(f.type):
            continue
        if is_time(f) or semantic_of(f) in (SemanticType.TIME, SemanticType.UPID) or _NOT_COUNTS.search(f.name):
            continue
        return f.name
    return None


def is_stack_table(table: pa.Table) -> bool:
    """A stack column and a count column: what the notebook shows as a flamegraph."""
    column = stack_column(table)
    return column is not None and count_column(table, exclude=(column,)) is not None


def _as_counts(column, name: str, title: str) -> pa.Array:
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if pat.is_floating(column.type):
        column = pc.round(column)
    column = pc.fill_null(column.cast(pa.int64()), 0)
    low = pc.min(column).as_py()
    if low is not None and low < 0:
        raise UsageError(
            f"{title or 'display'}: count column {name!r} has negative values (min {low}); "
            "stack formats need sample counts"
        )
    return column


def _group(columns: Sequence[str], values: Sequence[str]) -> Group:
    pairs = tuple(zip(columns, values))
    labels = tuple(re.sub(_CONTROL, " ", f"{c}: {v}").replace(";", ",") for c, v in pairs if v != "")
    return Group(pairs, labels)


def _no_stack_message(title: str, table: pa.Table) -> str:
    columns = ", ".join(table.column_names) or "(none)"
    return (
        f"display {title!r} has no stack column: stack formats need a '{STACK_COLUMN}' column of folded stacks "
        f"(frames ';'-separated, root first) and a '{COUNT_COLUMN}' column; its columns are: {columns}"
    )


# ---------------------------------------------------------------------- folded text


def parse_folded(text: str) -> tuple[list[str], list[int]]:
    """``(stacks, counts)`` of folded text; the count is the last space-separated field."""
    stacks: list[str] = []
    counts: list[int] = []
    # Only "\n" ends a line: str.splitlines() also splits at \x0b, \x0c, \x1c-\x1e, \x85, U+2028 and
    # U+2029, which a frame name may hold. A trailing "\r" (CRLF files) goes with rstrip() below.
    for number, line in enumerate(text.split("\n"), 1):
        line = line.rstrip()
        if not line or line.startswith("#"):
            continue
        stack, _, count = line.rpartition(" ")
        try:
            value = int(count)
        except ValueError:
            raise UsageError(f"folded line {number}: expected 'frame;frame;... COUNT', got {line[:80]!r}") from None
        stacks.append(stack)
        counts.append(value)
    return stacks, counts


# ---------------------------------------------------------------------- writers' common part


def stack_output_paths(results: dict, out: str, extension: str, fmt: str) -> dict[str, Path]:
    """One display: ``out`` is the file (or, when it is a directory, ``<out>/<display>.<ext>``);
    several displays: ``out`` is a directory holding ``<display>.<ext>`` each."""
    target = Path(out)
    if len(results) == 1 and not target.is_dir() and not out.endswith(("/", os.sep)):
        if not target.parent.is_dir():
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise UsageError(f"{target.parent}: cannot create directory: {exc.strerror or exc}") from None
        return {next(iter(results)): target}
    return output_paths(results, out, extension, fmt)


class StackWriter:
    """A stack format: every display becomes a ``StackSamples``, then ``write_record`` writes it.

    All displays are checked (and their records built) before any file is written.
    """

    name: str
    extension: str
    needs_out = True
    out_hint = "give --out PATH (a file; a directory when the script has several displays)"

    def write(self, results, out, *, console=None, max_rows=None) -> None:
        records = {display: StackSamples.from_table(table, title=display) for display, table in results.items()}
        if out is None:
            raise UsageError(f"output format {self.name!r} writes files: {self.out_hint}")
        paths = stack_output_paths(records, str(out), self.extension, self.name)
        for display, path in paths.items():
            stream, _ = open_output(path)
            with stream:
                self.write_record(records[display], stream)
        return paths

    def write_record(self, record: StackSamples, stream: BinaryIO) -> None:
        raise NotImplementedError
