"""The memory cap of one query's execution.

The executor keeps every intermediate table in memory (pyarrow). A query that would outgrow its cap
stops with ``ResourceLimitError``, which the CLI prints as one line, instead of meeting the OOM
killer:

- before a merge materializes, its output is sized from the key counts of both sides (exact rows
  for an inner join, an upper bound for outer ones) times the average row width of the two sides;
- functions whose output can be far larger than their input (``px.replace``) bound it first;
- after every operator, the bytes Arrow has allocated since the query started are checked;
- an allocation Arrow refuses (``ArrowMemoryError``, ``MemoryError``) or a string column past
  Arrow's 2 GiB offsets (``ArrowCapacityError``) becomes the same error.

The cap is ``#px:set max_memory_mb=N`` in the script, else the ``PXQ_MAX_MEMORY_MB`` environment
variable, else ``DEFAULT_MAX_MEMORY_MB`` (4096 MiB). It counts Arrow buffers
(``pyarrow.total_allocated_bytes``), which hold the data; Python objects are not counted.
"""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.compute as pc

from pxq.errors import ExecutionError, ResourceLimitError

DEFAULT_MAX_MEMORY_MB = 4096
ENV_VAR = "PXQ_MAX_MEMORY_MB"
SETTING = "max_memory_mb"
HOW_TO_RAISE = f"raise it with #px:set {SETTING}=N or {ENV_VAR}=N"
MIB = 1 << 20


def whole_number(text: str, what: str) -> int:
    """A non-negative integer setting, or an ExecutionError naming it."""
    try:
        value = int(str(text).strip().replace("_", ""))
    except ValueError:
        raise ExecutionError(f"{what} must be a whole number, not {text!r}") from None
    if value < 0:
        raise ExecutionError(f"{what} must be 0 or more, not {value}")
    return value


def memory_limit_bytes(setting: str | None) -> int:
    """The cap for a query whose script set ``max_memory_mb`` to ``setting`` (None: not set)."""
    if setting is not None:
        megabytes = whole_number(setting, f"#px:set {SETTING}")
    elif os.environ.get(ENV_VAR, "").strip():
        megabytes = whole_number(os.environ[ENV_VAR], ENV_VAR)
    else:
        megabytes = DEFAULT_MAX_MEMORY_MB
    if megabytes == 0:
        raise ExecutionError(f"{SETTING} must be at least 1 (MiB)")
    return megabytes * MIB


def size_text(n_bytes: float) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", MIB), ("KiB", 1 << 10)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:,.1f} {unit}"
    return f"{int(n_bytes)} B"


def too_big(what: str, needed_bytes: float, limit_bytes: int) -> ResourceLimitError:
    return ResourceLimitError(
        f"query memory limit: {what} needs about {size_text(needed_bytes)}, more than the "
        f"{limit_text(limit_bytes)} limit; filter or aggregate the data first, or {HOW_TO_RAISE}"
    )


def limit_text(limit_bytes: int) -> str:
    return f"{limit_bytes // MIB:,} MiB" if limit_bytes % MIB == 0 else size_text(limit_bytes)


class MemoryBudget:
    """Arrow memory allocated since the query started, against the query's cap."""

    def __init__(self, limit_bytes: int):
        self.limit_bytes = limit_bytes
        self.baseline = pa.total_allocated_bytes()

    def used(self) -> int:
        return max(0, pa.total_allocated_bytes() - self.baseline)

    def check(self, what: str) -> None:
        """Stop when the query already holds more than its cap."""
        used = self.used()
        if used > self.limit_bytes:
            raise too_big(what, used, self.limit_bytes)

    def admit(self, what: str, more_bytes: float) -> None:
        """Stop before allocating ``more_bytes`` that would take the query past its cap."""
        if self.used() + more_bytes > self.limit_bytes:
            raise too_big(what, self.used() + more_bytes, self.limit_bytes)


def _row_width(table: pa.Table) -> float:
    return table.nbytes / table.num_rows if table.num_rows else 0.0


def _key_counts(table: pa.Table, keys) -> pa.Table:
    """Rows per distinct non-null key (null keys never match in a join)."""
    columns = [table.column(k) for k in keys]
    names = [f"k{i}" for i in range(len(keys))]
    keyed = pa.Table.from_arrays(columns, names=names)
    valid = None
    for column in columns:
        present = pc.is_valid(column)
        valid = present if valid is None else pc.and_(valid, present)
    if valid is not None and keyed.num_rows:
        keyed = keyed.filter(valid)
    return keyed.group_by(names).aggregate([([], "count_all")])


def join_output(left: pa.Table, right: pa.Table, left_on, right_on, how: str) -> tuple[int, float]:
    """(rows, bytes) a join of ``left`` and ``right`` will produce: the sum over matching keys of
    left rows x right rows, plus every row of an outer side (an upper bound for its unmatched rows)."""
    left_counts, right_counts = _key_counts(left, left_on), _key_counts(right, right_on)
    names = [f"k{i}" for i in range(len(left_on))]
    matched = left_counts.join(
        right_counts.rename_columns([*names, "right_count"]), keys=names, join_type="inner", use_threads=False
    )
    # In doubles: a product of two counts, summed, can pass INT64 (and an estimate needs no more).
    products = pc.multiply(
        pc.cast(matched.column("count_all"), pa.float64()), pc.cast(matched.column("right_count"), pa.float64())
    )
    rows = int(pc.sum(products).as_py() or 0)
    if how in ("left", "outer"):
        rows += left.num_rows
    if how in ("right", "outer"):
        rows += right.num_rows
    return rows, rows * (_row_width(left) + _row_width(right))
