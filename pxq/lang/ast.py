"""PxL's abstract syntax tree: frozen dataclasses, each carrying the ``span`` it came from.

The parser (``pxq.lang.parse``) builds it; the compiler (``pxq.plan.compile``) evaluates it
symbolically. ``dump`` prints a stable indented text form used by the snapshot tests.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from pxq.errors import Span
from pxq.lang.deep import deep


@dataclass(frozen=True)
class Node:
    span: Span


# ---------------------------------------------------------------- expressions


@dataclass(frozen=True)
class Name(Node):
    id: str


@dataclass(frozen=True)
class Constant(Node):
    """A literal: str, int, float, bool or None (the Python value)."""

    value: object


@dataclass(frozen=True)
class Attribute(Node):
    value: Expr
    attr: str
    attr_span: Span  # the span of the attribute name alone, for 'unknown column' carets


@dataclass(frozen=True)
class Subscript(Node):
    value: Expr
    index: Expr  # df['a', 'b'] gives a Tuple index


@dataclass(frozen=True)
class Keyword(Node):
    name: str
    value: Expr


@dataclass(frozen=True)
class Call(Node):
    func: Expr
    args: tuple[Expr, ...]
    keywords: tuple[Keyword, ...]


@dataclass(frozen=True)
class BinOp(Node):
    """Arithmetic: op is one of '+', '-', '*', '/', '%'."""

    op: str
    left: Expr
    right: Expr


@dataclass(frozen=True)
class Compare(Node):
    """A single comparison: op is one of '==', '!=', '<', '<=', '>', '>='.

    Python's chained comparisons (a < b < c) are desugared by the parser into BoolOp('and').
    """

    op: str
    left: Expr
    right: Expr


@dataclass(frozen=True)
class BoolOp(Node):
    """'and' / 'or' over two or more operands; element-wise on columns."""

    op: str
    values: tuple[Expr, ...]


@dataclass(frozen=True)
class UnaryOp(Node):
    """op is one of 'not', '-', '+', '~'."""

    op: str
    operand: Expr


@dataclass(frozen=True)
class List(Node):
    elts: tuple[Expr, ...]


@dataclass(frozen=True)
class Tuple(Node):
    elts: tuple[Expr, ...]


@dataclass(frozen=True)
class Dict(Node):
    keys: tuple[Expr, ...]
    values: tuple[Expr, ...]


Expr = Name | Constant | Attribute | Subscript | Call | BinOp | Compare | BoolOp | UnaryOp | List | Tuple | Dict

# ---------------------------------------------------------------- statements


@dataclass(frozen=True)
class Import(Node):
    """import px / import px as p: module is 'px', alias the bound name."""

    module: str
    alias: str


@dataclass(frozen=True)
class ImportFrom(Node):
    """from px import a, b as c: names are (name, alias) pairs."""

    module: str
    names: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Assign(Node):
    """target is a Name, Attribute (df.col = ...) or Subscript (df['col'] = ...)."""

    target: Expr
    value: Expr


@dataclass(frozen=True)
class ExprStmt(Node):
    value: Expr


@dataclass(frozen=True)
class Param(Node):
    name: str
    annotation: Expr | None
    default: Expr | None


@dataclass(frozen=True)
class Return(Node):
    value: Expr | None


@dataclass(frozen=True)
class FunctionDef(Node):
    name: str
    params: tuple[Param, ...]
    returns: Expr | None
    body: tuple[Stmt, ...]
    docstring: str | None
    name_span: Span


Stmt = Import | ImportFrom | Assign | ExprStmt | Return | FunctionDef


@dataclass(frozen=True)
class Pragma(Node):
    """A '#px:set key=value' comment line."""

    key: str
    value: str


@dataclass(frozen=True)
class Module(Node):
    body: tuple[Stmt, ...]
    docstring: str | None
    pragmas: tuple[Pragma, ...]


# ---------------------------------------------------------------- text form


@deep
def dump(node: object, indent: int = 0) -> str:
    """A stable, indented text form of an AST (spans as line:col-end_line:end_col)."""
    pad = "  " * indent
    if isinstance(node, Node):
        span = node.span
        head = f"{pad}{type(node).__name__} @{span.line}:{span.column}-{span.end_line}:{span.end_column}"
        simple, nested = [], []
        for f in fields(node):
            if f.name in ("span", "attr_span", "name_span"):
                continue
            value = getattr(node, f.name)
            if isinstance(value, Node) or (isinstance(value, tuple) and value and isinstance(value[0], Node)):
                nested.append((f.name, value))
            else:
                simple.append(f"{f.name}={value!r}")
        lines = [head + (" " + " ".join(simple) if simple else "")]
        for name, value in nested:
            if isinstance(value, tuple):
                lines.append(f"{pad}  {name}:")
                lines.extend(dump(item, indent + 2) for item in value)
            else:
                lines.append(f"{pad}  {name}:")
                lines.append(dump(value, indent + 2))
        return "\n".join(lines)
    return f"{pad}{node!r}"
