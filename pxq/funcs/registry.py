"""The one registry of PxL's `px.*` functions: signatures the compiler checks, and the
vectorized implementations the executor calls.

Execution model (for implementers): every argument arrives as a ``pyarrow.Array`` (a column,
already as long as the batch) or a ``pyarrow.Scalar`` (a literal or a compile-time value).
TIME64NS values are passed as int64 nanoseconds, never as Arrow timestamps; the executor converts
at the table boundary. Implementations return an Array (or Scalar, which the executor broadcasts)
of the declared return type, and never loop over rows in Python unless no compute kernel exists,
in which case they must say so in a comment.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pxq.exec.limits import DEFAULT_MAX_MEMORY_MB, MIB
from pxq.types import DataType, SemanticType

ANY: frozenset[DataType] | None = None  # a parameter that accepts every type

TypeRule = DataType | Callable[[tuple[DataType, ...]], DataType]
SemanticRule = SemanticType | Callable[[tuple[SemanticType, ...]], SemanticType]


@dataclass(frozen=True)
class Param:
    name: str
    types: frozenset[DataType] | None = ANY
    # The argument must be known at compile time (a literal or constant expression), e.g. the
    # key of pluck, the pattern of regex_match, the size of bin.
    literal: bool = False
    default: Any = None
    has_default: bool = False
    # The argument may be a constant list (px.equals_any's values); everywhere else a list is a
    # compile error, never a value a column-wise implementation receives.
    accepts_list: bool = False
    # Inclusive (low, high) for a literal INT64 argument, checked by the compiler (px.bin's size,
    # px.round's decimals); the implementation checks again for callers that skip the compiler.
    bounds: tuple[int, int] | None = None


@dataclass(frozen=True)
class ExecContext:
    """What functions may consult at run time besides their arguments."""

    now_ns: int
    # upid string -> {"pid", "comm", "cmdline", "exe", "container_id", "pod", "namespace", ...}
    processes: dict[str, dict[str, Any]] = field(default_factory=dict)
    host: str = ""
    # The query's memory cap (pxq.exec.limits), for functions whose output can outgrow their input.
    memory_limit_bytes: int | None = DEFAULT_MAX_MEMORY_MB * MIB


@dataclass(frozen=True)
class ScalarFunction:
    name: str
    params: tuple[Param, ...]
    returns: TypeRule
    impl: Callable[..., Any]  # impl(ctx: ExecContext, *args) -> pa.Array | pa.Scalar
    doc: str
    semantic: SemanticRule = SemanticType.NONE
    variadic: bool = False  # the last param repeats
    # Evaluated once by the compiler when every argument is constant (px.now, px.minutes, ...).
    foldable: bool = True

    def signature(self) -> str:
        parts = []
        for p in self.params:
            types = "any" if p.types is None else "|".join(sorted(str(t) for t in p.types))
            text = f"{p.name}: {types}"
            if p.has_default:
                text += f" = {p.default!r}"
            parts.append(text)
        if self.variadic:
            parts[-1] += ", ..."
        ret = self.returns if isinstance(self.returns, DataType) else "depends on arguments"
        return f"px.{self.name}({', '.join(parts)}) -> {ret}"


# How the executor computes an aggregate with Acero's hash aggregates (``pxq.exec.aggregate``):
# plan(values, column name) -> (the column to aggregate, its (Acero function, options) pairs, and
# finish(their output columns) -> the result column). Columns are pyarrow ChunkedArrays.
AggregatePlan = tuple[Any, list[tuple[str, Any]], Callable[[list[Any]], Any]]


@dataclass(frozen=True)
class AggregateFunction:
    """A UDA used as ``out=('col', px.name)`` in ``groupby(...).agg``: what the compiler checks and
    what the executor runs."""

    name: str
    input_types: frozenset[DataType] | None
    returns: TypeRule
    doc: str
    plan: Callable[[Any, str], AggregatePlan]
    semantic: SemanticRule = SemanticType.NONE
    # The value of a group-less aggregate over no rows at all (every other aggregate: null).
    empty: Any = None
    # Acero runs it single-threaded, on rows in table order (px.any's "first").
    ordered: bool = False

    def signature(self) -> str:
        types = "any" if self.input_types is None else "|".join(sorted(str(t) for t in self.input_types))
        ret = self.returns if isinstance(self.returns, DataType) else "depends on input"
        return f"('column', px.{self.name}) with column of type {types} -> {ret}"


SCALARS: dict[str, ScalarFunction] = {}
AGGREGATES: dict[str, AggregateFunction] = {}


def scalar(
    name: str,
    params: tuple[Param, ...],
    returns: TypeRule,
    doc: str,
    *,
    semantic: SemanticRule = SemanticType.NONE,
    variadic: bool = False,
    foldable: bool = True,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator registering ``impl(ctx, *args)`` as ``px.<name>``."""

    def register(impl: Callable[..., Any]) -> Callable[..., Any]:
        if name in SCALARS:
            raise ValueError(f"px.{name} registered twice")
        SCALARS[name] = ScalarFunction(name, params, returns, impl, doc, semantic, variadic, foldable)
        return impl

    return register


def aggregate(
    name: str,
    input_types: frozenset[DataType] | None,
    returns: TypeRule,
    doc: str,
    *,
    plan: Callable[[Any, str], AggregatePlan],
    semantic: SemanticRule = SemanticType.NONE,
    empty: Any = None,
    ordered: bool = False,
) -> AggregateFunction:
    """Register ``px.<name>`` as an aggregate (see AggregateFunction)."""
    if name in AGGREGATES:
        raise ValueError(f"px.{name} registered twice")
    fn = AggregateFunction(name, input_types, returns, doc, plan, semantic, empty, ordered)
    AGGREGATES[name] = fn
    return fn


def resolve_type(rule: TypeRule, arg_types: tuple[DataType, ...]) -> DataType:
    return rule if isinstance(rule, DataType) else rule(arg_types)


def resolve_semantic(rule: SemanticRule, arg_semantics: tuple[SemanticType, ...]) -> SemanticType:
    return rule if isinstance(rule, SemanticType) else rule(arg_semantics)


def load_builtins() -> None:
    """Import the modules whose decorators fill SCALARS and AGGREGATES (idempotent). Called once,
    by the package's ``__init__``: any import from ``pxq.funcs`` has filled the registry."""
    from pxq.funcs import aggregates, builtins  # noqa: F401
