"""Typed scalar expressions inside plan nodes: column references, literals, function calls.

PxL operators are calls of Pixie's UDF names (``add``, ``lessThan``, ``logicalAnd``, ...), so the
registry in ``pxq.funcs`` is the one place that knows how every operation types and runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pxq.errors import Span
from pxq.types import DataType, SemanticType


@dataclass(frozen=True)
class Expr:
    def columns(self) -> frozenset[str]:
        """Names of the input columns this expression reads."""
        raise NotImplementedError

    @property
    def is_constant(self) -> bool:
        return not self.columns()


@dataclass(frozen=True)
class ColumnRef(Expr):
    name: str
    type: DataType
    semantic: SemanticType = SemanticType.NONE

    def columns(self) -> frozenset[str]:
        return frozenset((self.name,))

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class Literal(Expr):
    """A constant; ``value`` is a Python value, or a tuple for list literals (type = element type)."""

    value: object
    type: DataType
    semantic: SemanticType = SemanticType.NONE

    def columns(self) -> frozenset[str]:
        return frozenset()

    @property
    def is_list(self) -> bool:
        return isinstance(self.value, tuple)

    def __str__(self) -> str:
        if self.is_list:
            return "[" + ", ".join(repr(v) for v in self.value) + "]"
        if self.type is DataType.TIME64NS:
            return f"time({self.value})"
        return repr(self.value)


@dataclass(frozen=True)
class FuncCall(Expr):
    name: str
    args: tuple[Expr, ...]
    type: DataType
    semantic: SemanticType = SemanticType.NONE
    span: Span | None = field(default=None, compare=False, repr=False)

    def columns(self) -> frozenset[str]:
        out: frozenset[str] = frozenset()
        for arg in self.args:
            out |= arg.columns()
        return out

    def __str__(self) -> str:
        return f"{self.name}({', '.join(str(a) for a in self.args)})"


def rename_columns(expr: Expr, mapping: dict[str, Expr]) -> Expr:
    """Replace column references by expressions (used to push filters through maps)."""
    if isinstance(expr, ColumnRef):
        return mapping.get(expr.name, expr)
    if isinstance(expr, FuncCall):
        return FuncCall(expr.name, tuple(rename_columns(a, mapping) for a in expr.args), expr.type,
                        expr.semantic, expr.span)
    return expr


def conjuncts(expr: Expr) -> list[Expr]:
    """Split a predicate on logicalAnd."""
    if isinstance(expr, FuncCall) and expr.name == "logicalAnd":
        return [part for arg in expr.args for part in conjuncts(arg)]
    return [expr]


def conjunction(parts: list[Expr]) -> Expr | None:
    if not parts:
        return None
    result = parts[0]
    for part in parts[1:]:
        result = FuncCall("logicalAnd", (result, part), DataType.BOOLEAN)
    return result
