"""The plan: immutable relational operators that compute and validate their schema when built.

A node that cannot be built (unknown column, predicate that is not boolean, union of different
columns) raises ``PlanError``; the compiler turns it into a positioned diagnostic at the script
line that asked for it. Nodes are compared structurally but shared by identity: a DataFrame used
twice is one node with two parents, and the executor computes it once.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, overload

from pxq.errors import closest
from pxq.plan.expr import Expr, walk_postorder
from pxq.types import DataType, SemanticType


class PlanError(Exception):
    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint


@dataclass(frozen=True)
class Field:
    name: str
    type: DataType
    semantic: SemanticType = SemanticType.NONE


_field_name = attrgetter("name")
Default = TypeVar("Default")
_INDEXED: deque[Schema] = deque()  # the schemas that hold a name index, oldest first
_INDEXED_KEPT = 16


@dataclass(frozen=True)
class Schema:
    fields: tuple[Field, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    def get(self, name: str) -> Field | None:
        position = self.positions().get(name)
        return None if position is None else self.fields[position]

    def positions(self) -> dict[str, int]:
        """name -> index of its first field. Built on use and kept for the few schemas used
        last only: a script of 5,000 column assignments makes 5,000 schemas that wide, whose
        indexes together would take gigabytes, and a linear search per lookup is quadratic."""
        index = self.__dict__.get("_positions")
        if index is None:
            count = len(self.fields)
            names = list(map(_field_name, self.fields))
            index = dict(zip(reversed(names), range(count - 1, -1, -1)))
            object.__setattr__(self, "_positions", index)
            _INDEXED.append(self)
            if len(_INDEXED) > _INDEXED_KEPT:
                object.__delattr__(_INDEXED.popleft(), "_positions")
        return index

    def require(self, name: str, what: str = "column") -> Field:
        found = self.get(name)
        if found is None:
            raise PlanError(f"unknown {what} {name!r}", column_hint(name, self.names))
        return found

    def __str__(self) -> str:
        return ", ".join(f"{f.name}:{f.type}" for f in self.fields)


def column_hint(name: str, names: Sequence[str]) -> str:
    near = closest(name, names)
    listing = ", ".join(names)
    if near:
        return f"did you mean {' or '.join(repr(n) for n in near)}? columns: {listing}"
    return f"columns: {listing}"


def _check_reads(expr: Expr, schema: Schema) -> None:
    columns = expr.columns()
    if columns <= schema.positions().keys():  # the common case, in one set operation
        return
    for name in sorted(columns):
        schema.require(name)


class Relation:
    """Base of all operators. Subclasses are frozen dataclasses with a computed ``schema``."""

    schema: Schema

    if TYPE_CHECKING:
        import dataclasses

        # Every concrete node is a dataclass: dataclasses.replace and fields take any Relation.
        __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]

    @property
    def inputs(self) -> tuple[Relation, ...]:
        return ()

    def _set_schema(self, schema: Schema) -> None:
        object.__setattr__(self, "schema", schema)


@dataclass(frozen=True, eq=False)
class Source(Relation):
    """Rows of a catalog table within [start_ns, end_ns); ``predicates`` were pushed down into it;
    ``pids`` (when not None) restricts collection to those processes (from pushed predicates)."""

    table: str
    table_schema: Schema = field(repr=False)
    columns: tuple[str, ...]
    start_ns: int | None = None
    end_ns: int | None = None
    predicates: tuple[Expr, ...] = ()
    pids: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if not self.columns:
            raise PlanError(f"no columns selected from table {self.table!r}")
        fields = tuple(self.table_schema.require(c) for c in self.columns)
        if len(set(self.columns)) != len(self.columns):
            raise PlanError(f"a column is selected twice from {self.table!r}")
        if self.start_ns is not None and self.end_ns is not None and self.start_ns > self.end_ns:
            raise PlanError("start_time is after end_time")
        # One check of every column read: filters pushed one at a time make k predicates k times.
        read = frozenset().union(*[pred.columns() for pred in self.predicates])
        if not read <= self.table_schema.positions().keys():
            for pred in self.predicates:
                _check_reads(pred, self.table_schema)
        self._set_schema(Schema(fields))


@dataclass(frozen=True, eq=False)
class Filter(Relation):
    input: Relation
    predicate: Expr

    def __post_init__(self) -> None:
        _check_reads(self.predicate, self.input.schema)
        if getattr(self.predicate, "type", None) is not DataType.BOOLEAN:
            raise PlanError(
                f"a filter needs a boolean expression, got {self.predicate.type}",
                "compare a column, e.g. df[df.resp_status >= 400]",
            )
        self._set_schema(self.input.schema)

    @property
    def inputs(self) -> tuple[Relation, ...]:
        return (self.input,)


@dataclass(frozen=True, eq=False)
class Map(Relation):
    """Adds or replaces columns; every input column is kept (PxL's ``df.col = expr``)."""

    input: Relation
    assignments: tuple[tuple[str, Expr], ...]

    def __post_init__(self) -> None:
        fields = list(self.input.schema.fields)
        existing = self.input.schema.positions()
        added: dict[str, int] = {}
        for name, expr in self.assignments:
            _check_reads(expr, self.input.schema)
            new = Field(name, expr.type, expr.semantic)
            position = existing.get(name, added.get(name))
            if position is None:
                added[name] = len(fields)
                fields.append(new)
            else:
                fields[position] = new
        self._set_schema(Schema(tuple(fields)))

    @property
    def inputs(self) -> tuple[Relation, ...]:
        return (self.input,)


@dataclass(frozen=True, eq=False)
class Project(Relation):
    input: Relation
    columns: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.columns:
            # A frame without columns cannot carry its rows through Arrow (or display them).
            raise PlanError(
                "this leaves the DataFrame with no columns",
                "keep at least one column; to count rows, aggregate one with px.count",
            )
        if len(set(self.columns)) != len(self.columns):
            raise PlanError("a column is selected twice")
        self._set_schema(Schema(tuple(self.input.schema.require(c) for c in self.columns)))

    @property
    def inputs(self) -> tuple[Relation, ...]:
        return (self.input,)


@dataclass(frozen=True)
class AggSpec:
    output: str
    function: str
    column: str
    type: DataType
    semantic: SemanticType = SemanticType.NONE


@dataclass(frozen=True, eq=False)
class Agg(Relation):
    """Group by ``keys`` (possibly none: one row) and reduce; output is keys then aggregates."""

    input: Relation
    keys: tuple[str, ...]
    aggregates: tuple[AggSpec, ...]

    def __post_init__(self) -> None:
        fields = [self.input.schema.require(k, "group-by column") for k in self.keys]
        for spec in self.aggregates:
            self.input.schema.require(spec.column)
            fields.append(Field(spec.output, spec.type, spec.semantic))
        names = [f.name for f in fields]
        if len(set(names)) != len(names):
            raise PlanError("an aggregate output has the name of a group-by key or another output")
        if not fields:
            raise PlanError("groupby().agg() needs group-by columns or aggregates")
        self._set_schema(Schema(tuple(fields)))

    @property
    def inputs(self) -> tuple[Relation, ...]:
        return (self.input,)


JOIN_TYPES = ("inner", "left", "right", "outer")


def join_layout(
    left: Schema, right: Schema, left_on: Sequence[str], right_on: Sequence[str], suffixes: Sequence[str]
) -> list[tuple[str, str, str]]:
    """How a join's output columns come from its inputs: (output name, side, input name).

    Like pandas' merge: a key with the same name on both sides appears once (coalesced for
    outer joins); other names present on both sides get the suffixes.
    """
    shared_keys = {left for left, right in zip(left_on, right_on) if left == right}
    right_names = set(right.names)
    left_names = set(left.names)
    layout = []
    for name in left.names:
        if name in right_names and name not in shared_keys:
            layout.append((name + suffixes[0], "left", name))
        else:
            layout.append((name, "left", name))
    for name in right.names:
        if name in shared_keys:
            continue
        if name in left_names:
            layout.append((name + suffixes[1], "right", name))
        else:
            layout.append((name, "right", name))
    return layout


@dataclass(frozen=True, eq=False)
class Join(Relation):
    left: Relation
    right: Relation
    how: str
    left_on: tuple[str, ...]
    right_on: tuple[str, ...]
    suffixes: tuple[str, str] = ("_x", "_y")

    def __post_init__(self) -> None:
        if self.how not in JOIN_TYPES:
            raise PlanError(f"unknown join type {self.how!r}", f"use one of {', '.join(JOIN_TYPES)}")
        # No keys at all is a cross join (Pixie's ip script merges a one-row table that way).
        if len(self.left_on) != len(self.right_on):
            raise PlanError("merge needs as many left_on as right_on columns")
        for left_key, right_key in zip(self.left_on, self.right_on):
            lf, rf = self.left.schema.require(left_key), self.right.schema.require(right_key)
            if lf.type is not rf.type:
                raise PlanError(
                    f"cannot join {left_key!r} ({lf.type}) with {right_key!r} ({rf.type}): the key types differ",
                    "join on columns of one type, e.g. convert with px.itoa or px.atoi first",
                )
        layout = join_layout(self.left.schema, self.right.schema, self.left_on, self.right_on, self.suffixes)
        names = [out for out, _, _ in layout]
        if len(set(names)) != len(names):
            raise PlanError("merge output would have duplicate column names", "choose other suffixes")
        fields = []
        for out, side, name in layout:
            src = (self.left if side == "left" else self.right).schema.require(name)
            fields.append(Field(out, src.type, src.semantic))
        self._set_schema(Schema(tuple(fields)))

    @property
    def inputs(self) -> tuple[Relation, ...]:
        return (self.left, self.right)


@dataclass(frozen=True, eq=False)
class Union(Relation):
    """Rows of every input; sorted by time_ when present.

    Parts match by column name and value type (DataType), whatever made each column (a table
    column, a literal, a function) and in any column order; the output has the first part's
    column order. A column's semantic type is the one its parts agree on, where a part without
    one (a plain literal) defers to the others: ``latency`` appended with a literal ``0`` stays a
    duration. Parts that name different semantic types give a plain column (NONE), since
    formatting one part's values as the other's would mislead.
    """

    parts: tuple[Relation, ...]

    def __post_init__(self) -> None:
        first = self.parts[0].schema
        mine = {f.name: f.type for f in first.fields}
        for other in self.parts[1:]:
            theirs = {f.name: f.type for f in other.schema.fields}
            if mine != theirs:
                raise union_mismatch(mine, theirs)
        fields = []
        for f in first.fields:
            named = {p.schema.require(f.name).semantic for p in self.parts} - {SemanticType.NONE}
            fields.append(Field(f.name, f.type, named.pop() if len(named) == 1 else SemanticType.NONE))
        self._set_schema(Schema(tuple(fields)))

    @property
    def inputs(self) -> tuple[Relation, ...]:
        return self.parts


def union_mismatch(mine: dict[str, DataType], theirs: dict[str, DataType]) -> PlanError:
    """A diagnostic that names the first column that differs, then lists every difference."""
    problems, first = [], None
    only_mine, only_theirs = sorted(set(mine) - set(theirs)), sorted(set(theirs) - set(mine))
    retyped = [name for name in mine if name in theirs and mine[name] is not theirs[name]]
    for name in retyped:
        problems.append(f"{name} is {mine[name]} vs {theirs[name]}")
        first = first or f"column {name!r} is {mine[name]} in the first and {theirs[name]} in the other"
    if only_mine:
        problems.append("only the first has " + ", ".join(only_mine))
        first = first or f"column {only_mine[0]!r} is only in the first"
    if only_theirs:
        problems.append("only the other has " + ", ".join(only_theirs))
        first = first or f"column {only_theirs[0]!r} is only in the other"
    advice = []
    if only_mine or only_theirs:
        advice.append("select the same columns on both sides first")
    if retyped:
        advice.append("give each column one type on both sides, e.g. with px.itoa or px.atoi")
    return PlanError(
        f"append needs data frames with the same columns and types: {first}",
        "; ".join(problems) + f" ({'; '.join(advice)})",
    )


@dataclass(frozen=True, eq=False)
class Limit(Relation):
    input: Relation
    n: int

    def __post_init__(self) -> None:
        if not isinstance(self.n, int) or isinstance(self.n, bool) or self.n < 0:
            raise PlanError(f"head() needs a non-negative integer, got {self.n!r}")
        self._set_schema(self.input.schema)

    @property
    def inputs(self) -> tuple[Relation, ...]:
        return (self.input,)


@dataclass(frozen=True, eq=False)
class Display(Relation):
    input: Relation
    name: str

    def __post_init__(self) -> None:
        self._set_schema(self.input.schema)

    @property
    def inputs(self) -> tuple[Relation, ...]:
        return (self.input,)


@dataclass(frozen=True, eq=False)
class FragmentInput(Relation):
    """Where a merge fragment reads the result of agent fragment ``index`` (see split)."""

    index: int
    input_schema: Schema = field(repr=False)

    def __post_init__(self) -> None:
        self._set_schema(self.input_schema)


@dataclass(frozen=True)
class Graph:
    """A compiled script: its displays (sinks), the fixed ``now`` and the #px:set settings."""

    displays: tuple[Display, ...]
    now_ns: int
    settings: tuple[tuple[str, str], ...] = ()

    @overload
    def setting(self, key: str) -> str | None: ...

    @overload
    def setting(self, key: str, default: Default) -> str | Default: ...

    def setting(self, key: str, default: object = None) -> object:
        for k, v in self.settings:
            if k == key:
                return v
        return default

    def nodes(self) -> list[Relation]:
        """Every node once, inputs before the nodes that read them."""
        return list(relations_postorder(self.displays))


def relations_postorder(
    roots: Iterable[Relation],
    done: Callable[[Relation], bool] | None = None,
    inputs_of: Callable[[Relation], Iterable[Relation]] | None = None,
) -> Iterator[Relation]:
    """Every distinct node under ``roots`` once, inputs (in order) before the nodes that read them
    (a plan is as deep as its script is long: each ``df.x = ...`` is a node; see
    ``walk_postorder``). ``done(node)``: a node for which it is true is neither yielded nor
    descended into; ``inputs_of(node)``: the inputs to walk into (default: all of ``node.inputs``).
    """
    return walk_postorder(roots, _inputs if inputs_of is None else inputs_of, done)


def _inputs(node: Relation) -> tuple[Relation, ...]:
    return node.inputs
