"""execute: run a plan Graph over a data source and return one Arrow table per display.

One function per operator (functools.singledispatch), each node computed once even when several
displays read it. The heavy lifting is pyarrow.compute and Acero (group-by, join); no per-row
Python.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from functools import singledispatch
from typing import Protocol

import pyarrow as pa
import pyarrow.compute as pc

from pxq.errors import ExecutionError, ResourceLimitError
from pxq.exec.aggregate import aggregate
from pxq.exec.expressions import decode_dictionaries, evaluate, mask, to_column
from pxq.exec.limits import (
    SETTING as MEMORY_SETTING,
    MemoryBudget,
    join_output,
    memory_limit_bytes,
    too_big,
    whole_number,
)
from pxq.exec.pushdown import split_pushable
from pxq.funcs.registry import ExecContext
from pxq.lang.deep import deep
from pxq.plan.expr import conjunction
from pxq.plan.nodes import (
    Agg,
    Display,
    Filter,
    FragmentInput,
    Graph,
    Join,
    Limit,
    Map,
    Project,
    Relation,
    Schema,
    Source,
    Union,
    join_layout,
    relations_postorder,
)
from pxq.types import FIELD_SEMANTIC_KEY, FIELD_TYPE_KEY, arrow_type

DEFAULT_MAX_OUTPUT_ROWS = 10_000  # Pixie's max_output_rows_per_table default


class DataSource(Protocol):
    """Where Source nodes read rows: a replay capture, the embedded agent's table store, ..."""

    host: str
    processes: dict[str, dict]
    # Where the data ends: scripts run over it take this as px.now(), so replays are reproducible
    # (None: the agent's store while it still collects).
    end_time_ns: int | None

    def scan(
        self, table: str, columns, start_ns: int | None, end_ns: int | None, *, filter=None, filter_columns=()
    ) -> pa.Table:
        """Rows in [start_ns, end_ns) where the Arrow expression ``filter`` (if any) is true."""


@dataclass
class Results:
    """One table per display (in display order) and notes the user must see (truncation...)."""

    tables: dict[str, pa.Table]
    notes: list[str] = field(default_factory=list)


@dataclass
class _Run:
    source: DataSource | None
    ctx: ExecContext
    fragment_inputs: tuple[pa.Table, ...] = ()
    memo: dict[int, pa.Table] = field(default_factory=dict)
    budget: MemoryBudget | None = None
    cancel: threading.Event | None = None  # set: stop after the current step (a REPL's Ctrl-C)

    def table(self, node: Relation) -> pa.Table:
        if id(node) not in self.memo:
            # Inputs first, iteratively (a plan is as deep as its script is long), so that the
            # run_node of each node finds its inputs' tables in the memo.
            for item in relations_postorder((node,), done=lambda n: id(n) in self.memo):
                self.memo[id(item)] = run_node(item, self)
                if self.budget is not None:
                    self.budget.check(f"the {type(item).__name__.lower()} step")
                if self.cancel is not None and self.cancel.is_set():
                    raise ExecutionError("the query was cancelled")
        return self.memo[id(node)]


def result_schema(schema: Schema) -> pa.Schema:
    """The Arrow schema of a result: pxq types kept in field metadata for the renderers."""
    return pa.schema(
        [
            pa.field(
                f.name,
                arrow_type(f.type),
                metadata={FIELD_TYPE_KEY: f.type.value.encode(), FIELD_SEMANTIC_KEY: f.semantic.value.encode()},
            )
            for f in schema.fields
        ]
    )


def conform(table: pa.Table, schema: Schema) -> pa.Table:
    """``table`` with exactly the plan's columns, order and Arrow types, and pxq metadata."""
    target = result_schema(schema)
    columns = []
    for f in target:
        column = table.column(f.name)
        columns.append(column if column.type == f.type else column.cast(f.type))
    return pa.Table.from_arrays(columns, schema=target)


@singledispatch
def run_node(node: Relation, run: _Run) -> pa.Table:
    raise TypeError(f"no executor for {type(node).__name__}")


@run_node.register
def _(node: Source, run: _Run) -> pa.Table:
    if run.source is None:
        raise ExecutionError("this plan reads tables but no data source was given")
    pushed, pushed_columns, rest = split_pushable(node.predicates)
    wanted = set(node.columns)
    for predicate in rest:
        wanted |= predicate.columns()
    scan_columns = [c for c in node.table_schema.names if c in wanted]
    options = {"filter": pushed, "filter_columns": pushed_columns} if pushed is not None else {}
    if getattr(run.source, "supports_dictionary_strings", False):
        options["dictionary_strings"] = True
    table = run.source.scan(node.table, scan_columns, node.start_ns, node.end_ns, **options)
    if rest:
        table = _filter(table, evaluate(conjunction(rest), table, run.ctx))
    return table.select(list(node.columns))


def _filter(table: pa.Table, predicate) -> pa.Table:
    keep = mask(predicate, table.num_rows)
    if keep is True:
        return table
    if keep is False:
        return table.slice(0, 0)
    return table.filter(keep, null_selection_behavior="drop")


@run_node.register
def _(node: Filter, run: _Run) -> pa.Table:
    table = run.table(node.input)
    return _filter(table, evaluate(node.predicate, table, run.ctx))


@run_node.register
def _(node: Map, run: _Run) -> pa.Table:
    table = run.table(node.input)
    # Columns are collected and the table rebuilt once (or when an expression reads a column
    # assigned before it in this Map): appending one at a time costs the table's width per
    # assignment, and a fused Map of a long script has thousands.
    names, columns = list(table.column_names), list(table.columns)
    position = {name: i for i, name in enumerate(names)}
    pending: set[str] = set()  # assigned here, not yet in ``table``
    for name, expr in node.assignments:
        if pending and not pending.isdisjoint(expr.columns()):
            table, pending = pa.Table.from_arrays(columns, names=names), set()
        column = to_column(evaluate(expr, table, run.ctx), expr.type, table.num_rows)
        if name in position:
            columns[position[name]] = column
        else:
            position[name] = len(names)
            names.append(name)
            columns.append(column)
        pending.add(name)
    return pa.Table.from_arrays(columns, names=names)


@run_node.register
def _(node: Project, run: _Run) -> pa.Table:
    return run.table(node.input).select(list(node.columns))


@run_node.register
def _(node: Agg, run: _Run) -> pa.Table:
    # Group keys may stay dictionary-encoded (Acero groups on the indices); values are decoded.
    table = decode_dictionaries(run.table(node.input), {a.column for a in node.aggregates} - set(node.keys))
    specs = [(a.output, a.function, a.column) for a in node.aggregates]
    return conform(aggregate(table, list(node.keys), specs), node.schema)


_JOIN_TYPES = {"inner": "inner", "left": "left outer", "right": "right outer", "outer": "full outer"}
_CROSS_KEY = "__cross_join_key"  # never a PxL column name (the join layout below leaves it out)


@run_node.register
def _(node: Join, run: _Run) -> pa.Table:
    left, right = decode_dictionaries(run.table(node.left)), decode_dictionaries(run.table(node.right))
    left_on, right_on = list(node.left_on), list(node.right_on)
    if not left_on:
        # No keys (Pixie's merge(..., left_on=[], right_on=[])): every row meets every row, a
        # join on one constant key.
        left = left.append_column(_CROSS_KEY, pa.repeat(pa.scalar(0, pa.int8()), left.num_rows))
        right = right.append_column(_CROSS_KEY, pa.repeat(pa.scalar(0, pa.int8()), right.num_rows))
        left_on, right_on = [_CROSS_KEY], [_CROSS_KEY]
    if run.budget is not None:  # size the output before Acero materializes it
        rows, size = join_output(left, right, left_on, right_on, node.how)
        keys = ", ".join(f"{lkey}={rkey}" for lkey, rkey in zip(node.left_on, node.right_on)) or "no keys"
        run.budget.admit(f"the merge on {keys} ({rows:,} rows)", size)
    # Give every right column a private name so Acero never sees two columns with one name.
    right_names = {name: f"__right_{i}" for i, name in enumerate(right.column_names)}
    right = right.rename_columns([right_names[c] for c in right.column_names])
    joined = left.join(
        right,
        keys=left_on,
        right_keys=[right_names[c] for c in right_on],
        join_type=_JOIN_TYPES[node.how],
        coalesce_keys=False,
        use_threads=True,
    )
    shared_keys = {lkey for lkey, rkey in zip(node.left_on, node.right_on) if lkey == rkey}
    columns, names = [], []
    for out, side, name in join_layout(node.left.schema, node.right.schema, node.left_on, node.right_on, node.suffixes):
        if side == "left":
            column = joined.column(name)
            if name in shared_keys and node.how in ("right", "outer"):
                column = pc.coalesce(column, joined.column(right_names[name]))
        else:
            column = joined.column(right_names[name])
        columns.append(column)
        names.append(out)
    return pa.Table.from_arrays(columns, names=names)


@run_node.register
def _(node: Union, run: _Run) -> pa.Table:
    # The plan checked that parts agree on column names and value types, not on how Arrow holds
    # them (dictionary-encoded from Parquet or plain, field metadata, column order): conform each.
    parts = [conform(decode_dictionaries(run.table(p)), node.schema) for p in node.parts]
    table = pa.concat_tables(parts)
    if "time_" in node.schema.names:  # Pixie's append keeps rows in time order
        table = table.take(pc.sort_indices(table, sort_keys=[("time_", "ascending")]))
    return table


@run_node.register
def _(node: Limit, run: _Run) -> pa.Table:
    return run.table(node.input).slice(0, node.n)


@run_node.register
def _(node: FragmentInput, run: _Run) -> pa.Table:
    return run.fragment_inputs[node.index]


@run_node.register
def _(node: Display, run: _Run) -> pa.Table:
    return conform(run.table(node.input), node.schema)


def _context(graph: Graph, source: DataSource | None, memory_limit: int | None = None) -> ExecContext:
    return ExecContext(
        now_ns=graph.now_ns,
        processes=dict(getattr(source, "processes", {}) or {}),
        host=getattr(source, "host", "") or "",
        memory_limit_bytes=memory_limit,
    )


def _new_run(graph: Graph, source: DataSource | None, fragment_inputs: tuple[pa.Table, ...] = ()) -> _Run:
    memory_limit = memory_limit_bytes(graph.setting(MEMORY_SETTING))
    return _Run(source, _context(graph, source, memory_limit), fragment_inputs, budget=MemoryBudget(memory_limit))


def _run_display(run: _Run, node: Relation) -> pa.Table:
    """run.table(node), with Arrow's and Python's out-of-memory failures as ResourceLimitError."""
    try:
        return run.table(node)
    except (pa.ArrowMemoryError, MemoryError):
        raise too_big(
            "the query", run.budget.used() if run.budget else 0, run.budget.limit_bytes if run.budget else 0
        ) from None
    except pa.ArrowCapacityError as exc:
        raise ResourceLimitError(
            f"a column grew past what one Arrow array holds (2 GiB of text): {exc}; filter or shorten the values first"
        ) from None


@deep  # predicates nested as deep as the script may be turned into Arrow expressions recursively
def execute(
    graph: Graph,
    source: DataSource | None,
    *,
    fragment_inputs: tuple[pa.Table, ...] = (),
    cancel: threading.Event | None = None,
) -> Results:
    """Run every display of ``graph``; tables read from ``source`` (or from fragment_inputs).
    Setting ``cancel`` (from another thread) stops the run after the step under way."""
    run = _new_run(graph, source, fragment_inputs)
    run.cancel = cancel
    limit = whole_number(
        graph.setting("max_output_rows_per_table", DEFAULT_MAX_OUTPUT_ROWS), "#px:set max_output_rows_per_table"
    )
    results = Results({})
    for display in graph.displays:
        table = _run_display(run, display)
        if table.num_rows > limit:
            results.notes.append(
                f"display {display.name!r}: showing {limit} of {table.num_rows} rows "
                f"(#px:set max_output_rows_per_table=N changes the limit)"
            )
            table = table.slice(0, limit)
        results.tables[display.name] = table
    return results


def execute_fragments(fragments: tuple[Relation, ...], graph: Graph, source: DataSource) -> tuple[pa.Table, ...]:
    """Run agent fragments (see pxq.plan.split) over ``source``; their tables feed the merge graph."""
    run = _new_run(graph, source)
    return tuple(_run_display(run, f) for f in fragments)
