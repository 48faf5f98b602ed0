"""Eager aggregation (group-by push-down): move a group-by below an N:1 join, so that it reduces
the many side's rows before they meet the one side.

Over many agents this is what lets a group-by above a join run partly on the agents (a partial
aggregation, :mod:`pxq.plan.split`): service_stats joins every row with a one-row global
aggregate and then groups, which would otherwise ship every row to the broker.

The rewrite, for ``Agg(G, A)`` over a chain ``C`` of Filter, Map and Project nodes over
``Join(L, R, how, k_L = k_R)``::

    Agg(G, A)(C(L ⋈ R))  ->  Project[G, A](Agg(G_L ∪ k_L, A)(C'(L)) ⋈ R)

where ``C'`` is ``C`` moved below the join onto ``L``'s column names and ``G_L`` the group-by
columns that come from ``L``. It applies only when all of these hold (otherwise the plan is
unchanged):

1. ``how`` is ``inner`` or ``left``;
2. ``R`` is unique on ``k_R``: ``R`` is an Agg whose keys are among ``k_R`` (a key-less Agg is one
   row, unique on anything), possibly under Filters, Limits, Projects and Maps that do not
   compute those keys (copying a column, ``df.b = df.a``, keeps it unique). So each ``L`` row
   meets at most one ``R`` row, and every column of ``R`` in ``G`` is determined by the key;
3. ``G`` is not empty: a key-less Agg gives one row even over no rows, while below the join its
   one row would meet no ``R`` row when the join drops everything;
4. every Filter and Map of ``C``, and every aggregate of ``A``, reads only ``L``'s columns; a Map
   of ``C`` assigns neither a join key nor a name that ``L`` had hidden by a suffix or that ``R``
   has (Projects of ``C`` move below too, keeping the join keys);
5. every join key is determined by the group: its left or (inner join) right column is in ``G``,
   or the left key is a constant (a Map of a literal, as service_stats' ``df.all = 1``). Then
   each group of the original Agg is exactly one group ``(g_L, k)`` below the join, and the
   join's effect is kept exactly: an inner join drops the whole group of a key without a match
   (it dropped each of its rows), a left join keeps it with R's columns null (as each of its
   rows);
6. the join keys are not floating point (grouping and joining need not agree on -0.0, NaN);
7. the join and every node of ``C`` are read only by the next node up (moving a shared node's
   work would compute it twice);
8. no column name needs a join suffix, before or after (every group-by column has its input
   side's name; the moved Agg's outputs and ``R``'s columns differ, apart from keys of the same
   name on both sides), so the result has exactly the Agg's schema.

A group-by moved this way is tried again (a chain of joins is pushed through one by one).
"""

from __future__ import annotations

from collections.abc import Callable

from pxq.plan.expr import ColumnRef, Expr, Literal, postorder, rename_columns
from pxq.plan.nodes import (
    Agg,
    AggSpec,
    Filter,
    Graph,
    Join,
    Limit,
    Map,
    PlanError,
    Project,
    Relation,
    join_layout,
)
from pxq.plan.rewrite import reader_counts, transform
from pxq.types import DataType

NAME = "eager_aggregation"
DOC = "group before an N:1 join (by the group's keys and the join key) so agents can aggregate partially"

_CHAIN = (Filter, Map, Project)


def unique_on(node: Relation, columns: frozenset[str]) -> bool:
    """Whether no two rows of ``node`` agree on all of ``columns`` (known from the plan's shape)."""
    while True:
        if isinstance(node, Agg):
            return set(node.keys) <= columns
        if isinstance(node, (Filter, Limit, Project)):
            node = node.input
        elif isinstance(node, Map):
            # A copy of a column (``df.b = df.a``) is as unique as the column it copies; a
            # computed column is not known to be.
            last = dict(node.assignments)
            copied = {e.name for n, e in last.items() if n in columns and isinstance(e, ColumnRef)}
            columns = (columns - last.keys()) | copied
            node = node.input
        else:
            return False


def constant_column(node: Relation, name: str) -> bool:
    """Whether column ``name`` of ``node`` holds one literal value in every row."""
    while True:
        if isinstance(node, Map):
            exprs = [expr for assigned, expr in node.assignments if assigned == name]
            if exprs:
                return isinstance(exprs[-1], Literal)
            node = node.input
        elif isinstance(node, (Filter, Limit, Project)):
            node = node.input
        else:
            return False


def _renamed(expr: Expr, names: dict[str, str]) -> Expr:
    """``expr`` reading the left input's names of the join output's columns it reads."""
    refs: dict[str, Expr] = {}
    for column in expr.columns():
        if names[column] != column:
            refs[column] = _ref_of(expr, column, names[column])
    return rename_columns(expr, refs) if refs else expr


def _ref_of(expr: Expr, column: str, new_name: str) -> Expr:
    for node in postorder(expr):
        if isinstance(node, ColumnRef) and node.name == column:
            return ColumnRef(new_name, node.type, node.semantic)
    raise AssertionError(f"{column} not read by {expr}")


def push_below_join(agg: Agg, shared: Callable[[Relation], bool]) -> Relation | None:
    """``agg`` rewritten below the join under it (see the module's conditions), or None."""
    if not agg.keys:
        return None
    chain: list[Relation] = []
    node = agg.input
    while isinstance(node, _CHAIN) and not shared(node):
        chain.append(node)
        node = node.input
    if not isinstance(node, Join) or shared(node) or node.how not in ("inner", "left"):
        return None
    join = node
    left, right = join.left, join.right
    if not unique_on(right, frozenset(join.right_on)):
        return None
    if any(left.schema.require(k).type is DataType.FLOAT64 for k in join.left_on):
        return None
    # Join output name -> left input name (left side) / right input name (right side).
    to_left: dict[str, str] = {}
    to_right: dict[str, str] = {}
    for out, side, name in join_layout(left.schema, right.schema, join.left_on, join.right_on, join.suffixes):
        (to_left if side == "left" else to_right)[out] = name
    key_outputs = [
        (next(o for o, n in to_left.items() if n == lk), next((o for o, n in to_right.items() if n == rk), None))
        for lk, rk in zip(join.left_on, join.right_on)
    ]
    right_names = set(right.schema.names)
    moved = left
    for step in reversed(chain):
        if isinstance(step, Filter):
            if not step.predicate.columns() <= to_left.keys():
                return None
            moved = Filter(moved, _renamed(step.predicate, to_left))
        elif isinstance(step, Map):
            assignments = []
            for name, expr in step.assignments:
                if not expr.columns() <= to_left.keys():
                    return None
                if name in to_right or name in right_names or to_left.get(name, name) != name:
                    return None
                if name in join.left_on or (name not in to_left and name in moved.schema.names):
                    return None
                assignments.append((name, _renamed(expr, to_left)))
            moved = Map(moved, tuple(assignments))
            for name, _ in step.assignments:
                to_left[name] = name
        else:
            assert isinstance(step, Project)
            kept = set(step.columns)
            to_left = {out: name for out, name in to_left.items() if out in kept}
            to_right = {out: name for out, name in to_right.items() if out in kept}
            keep = {to_left[c] for c in step.columns if c in to_left} | set(join.left_on)
            moved = Project(moved, tuple(c for c in moved.schema.names if c in keep))
    if not all(spec.column in to_left for spec in agg.aggregates):
        return None
    group = set(agg.keys)
    if any(to_left.get(k, to_right.get(k)) != k for k in agg.keys):
        return None  # a suffixed name (foo_x): the new join would name it otherwise
    for (left_out, right_out), left_key in zip(key_outputs, join.left_on):
        determined = (
            left_out in group
            or (join.how == "inner" and right_out is not None and right_out in group)
            or constant_column(left, left_key)
        )
        if not determined:
            return None
    left_keys = [to_left[k] for k in agg.keys if k in to_left]
    below_keys = tuple(dict.fromkeys([*left_keys, *join.left_on]))
    shared_keys = {lk for lk, rk in zip(join.left_on, join.right_on) if lk == rk}
    below_names = [*below_keys, *(spec.output for spec in agg.aggregates)]
    if any(name in right_names and name not in shared_keys for name in below_names):
        return None  # the new join would suffix it
    try:
        below = Agg(
            moved,
            below_keys,
            tuple(AggSpec(s.output, s.function, to_left[s.column], s.type, s.semantic) for s in agg.aggregates),
        )
        joined = Join(below, right, join.how, tuple(join.left_on), tuple(join.right_on), join.suffixes)
        if not set(agg.schema.names) <= set(joined.schema.names):
            return None
        result = Project(joined, agg.schema.names)
    except PlanError:
        return None
    if result.schema != agg.schema:
        return None
    return result


def apply(graph: Graph) -> Graph:
    readers = reader_counts(graph)
    origins: dict[int, Relation] = {}

    def shared(node: Relation) -> bool:
        return readers.get(id(origins.get(id(node), node)), 0) > 1

    def rewrite(node: Relation) -> Relation:
        if not isinstance(node, Agg):
            return node
        pushed = push_below_join(node, shared)
        if pushed is None:
            return node
        # The moved group-by may sit over another N:1 join: push it further down.
        assert isinstance(pushed, Project) and isinstance(pushed.input, Join)
        below = pushed.input.left
        assert isinstance(below, Agg)
        deeper = rewrite(below)
        if deeper is below:
            return pushed
        return Project(Join(deeper, *_join_rest(pushed.input)), pushed.columns)

    return transform(graph, rewrite, origins)


def _join_rest(join: Join) -> tuple[Relation, str, tuple[str, ...], tuple[str, ...], tuple[str, str]]:
    return join.right, join.how, join.left_on, join.right_on, join.suffixes
