"""Typed scalar expressions inside plan nodes: column references, literals, function calls.

PxL operators are calls of Pixie's UDF names (``add``, ``lessThan``, ``logicalAnd``, ...), so the
registry in ``pxq.funcs`` is the one place that knows how every operation types and runs.

Expressions are trees that share their parts: ``x = x + x`` twenty times is one node per line,
each read twice, which as a tree would be 2^20 nodes. Every walk here therefore visits each
distinct node (by identity) once, with an explicit stack rather than recursion, so neither
the depth of an expression (a 5,000-line script) nor its repetition costs more than its number
of distinct nodes. ``columns()`` and the hash are cached on the node; equality compares each
pair of nodes once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar, cast

from pxq.errors import Span
from pxq.types import DataType, SemanticType

Node = TypeVar("Node")
Value = TypeVar("Value")


def walk_postorder(
    roots: Iterable[Node], children: Callable[[Node], Iterable[Node]], done: Callable[[Node], bool] | None = None
) -> Iterator[Node]:
    """Every distinct node under ``roots`` once, children (in order) before their parents, with
    an explicit stack: expressions and plans are as deep as a script is long, so recursion would
    limit the script. Nodes are told apart by identity (a shared part is visited once).

    ``children(node)``: the nodes to walk into; ``done(node)``: a node for which it is true is
    neither yielded nor descended into (e.g. it already has a cached result).
    """
    seen: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False) for root in reversed(tuple(roots))]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            yield node
            continue
        if id(node) in seen or (done is not None and done(node)):
            continue
        seen.add(id(node))
        stack.append((node, True))
        stack.extend((child, False) for child in reversed(tuple(children(node))) if id(child) not in seen)


def _call_args(node: Expr) -> tuple[Expr, ...]:
    return getattr(node, "args", ())


def postorder(root: Expr, done: Callable[[Expr], bool] | None = None) -> Iterator[Expr]:
    """Every distinct expression node under ``root`` once, arguments before the calls that read
    them (see ``walk_postorder``)."""
    return walk_postorder((root,), _call_args, done)


def _cached(node: Expr, attr: str, compute: Callable[[Expr], Value]) -> Value:
    """``compute`` for every node under ``node`` that lacks ``attr``, bottom-up; then node's."""
    if attr not in node.__dict__:
        for item in postorder(node, lambda n: attr in n.__dict__):
            object.__setattr__(item, attr, compute(item))
    value: Value = node.__dict__[attr]
    return value


@dataclass(frozen=True, eq=False)
class Expr:
    if TYPE_CHECKING:
        # Every concrete node has these as dataclass fields; declared here for the type checker
        # only, since as fields of the base they would come first in every subclass's constructor.
        @property
        def type(self) -> DataType: ...

        @property
        def semantic(self) -> SemanticType: ...

    def columns(self) -> frozenset[str]:
        """Names of the input columns this expression reads (cached on each node)."""
        try:
            columns: frozenset[str] = self._columns  # type: ignore[attr-defined]
            return columns
        except AttributeError:
            return _cached(self, "_columns", lambda n: n._own_columns())

    def _own_columns(self) -> frozenset[str]:
        raise NotImplementedError

    def _key(self) -> tuple[object, ...]:
        """The fields that make two nodes equal, apart from the arguments."""
        raise NotImplementedError

    @property
    def is_constant(self) -> bool:
        return not self.columns()

    def __hash__(self) -> int:
        return _cached(
            self,
            "_hash",
            lambda n: hash(
                (n._key(), tuple(a.__dict__["_hash"] for a in n.args)) if isinstance(n, FuncCall) else n._key()
            ),
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Expr):
            return NotImplemented
        compared: set[tuple[int, int]] = set()
        stack = [(self, other)]
        while stack:
            a, b = stack.pop()
            if a is b or (id(a), id(b)) in compared:
                continue
            compared.add((id(a), id(b)))
            if type(a) is not type(b) or hash(a) != hash(b) or a._key() != b._key():
                return False
            if isinstance(a, FuncCall):
                b_args = cast(FuncCall, b).args  # b is of a's type (checked above)
                if len(a.args) != len(b_args):
                    return False
                stack.extend(zip(a.args, b_args))
        return True

    def __str__(self) -> str:
        return expression_text(self)


@dataclass(frozen=True, eq=False)
class ColumnRef(Expr):
    name: str
    type: DataType
    semantic: SemanticType = SemanticType.NONE

    def _own_columns(self) -> frozenset[str]:
        return frozenset((self.name,))

    def _key(self) -> tuple[object, ...]:
        return ("column", self.name, self.type, self.semantic)

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True, eq=False)
class Literal(Expr):
    """A constant; ``value`` is a Python value, or a tuple for list literals (type = element type)."""

    value: object
    type: DataType
    semantic: SemanticType = SemanticType.NONE

    def _own_columns(self) -> frozenset[str]:
        return frozenset()

    def _key(self) -> tuple[object, ...]:
        return ("literal", self.value, self.type, self.semantic)

    @property
    def is_list(self) -> bool:
        return isinstance(self.value, tuple)

    def __str__(self) -> str:
        if self.is_list:
            return "[" + ", ".join(repr(v) for v in cast(tuple[object, ...], self.value)) + "]"
        if self.type is DataType.TIME64NS:
            return f"time({self.value})"
        return repr(self.value)


@dataclass(frozen=True, eq=False)
class FuncCall(Expr):
    name: str
    args: tuple[Expr, ...]
    type: DataType
    semantic: SemanticType = SemanticType.NONE
    span: Span | None = field(default=None, compare=False, repr=False)

    def _own_columns(self) -> frozenset[str]:
        sets = [a.__dict__["_columns"] for a in self.args]
        return frozenset().union(*sets) if sets else frozenset()

    def _key(self) -> tuple[object, ...]:
        return ("call", self.name, self.type, self.semantic)

    def __repr__(self) -> str:
        # The dataclass repr would recurse through (and repeat) every shared argument.
        return f"FuncCall<{self.name}: {self.type}>({expression_text(self)})"


# Shared sub-expressions whose text is longer than this are printed once, under a name.
SHARED_TEXT_LIMIT = 60


def expression_text(expr: Expr) -> str:
    """``expr`` as ``name(arg, ...)`` text; a long part that is read more than once is printed once.

    ``x = x + x`` twenty times would print 2^20 copies of ``x``; here a repeated part longer than
    SHARED_TEXT_LIMIT becomes ``$1`` and is spelled out after the expression:
    ``add($2, $2) where $1 = add(latency, latency), $2 = add($1, $1)``.
    """
    if not isinstance(expr, FuncCall):
        return str(expr)
    order = list(postorder(expr))
    readers: dict[int, int] = {}
    for node in order:
        for arg in getattr(node, "args", ()):
            readers[id(arg)] = readers.get(id(arg), 0) + 1
    texts: dict[int, str] = {}
    definitions: list[str] = []
    for node in order:
        if isinstance(node, FuncCall):
            text = f"{node.name}({', '.join(texts[id(a)] for a in node.args)})"
        else:
            text = str(node)
        if readers.get(id(node), 0) > 1 and len(text) > SHARED_TEXT_LIMIT:
            label = f"${len(definitions) + 1}"
            definitions.append(f"{label} = {text}")
            text = label
        texts[id(node)] = text
    top = texts[id(expr)]
    return f"{top} where {', '.join(definitions)}" if definitions else top


def rename_columns(expr: Expr, mapping: dict[str, Expr]) -> Expr:
    """Replace column references by expressions (used to push filters through maps).

    Shared parts stay shared: each distinct node is rebuilt once.
    """
    done: dict[int, Expr] = {}
    for node in postorder(expr):
        if isinstance(node, ColumnRef):
            done[id(node)] = mapping.get(node.name, node)
        elif isinstance(node, FuncCall):
            args = tuple(done[id(a)] for a in node.args)
            changed = any(a is not b for a, b in zip(args, node.args))
            done[id(node)] = FuncCall(node.name, args, node.type, node.semantic, node.span) if changed else node
        else:
            done[id(node)] = node
    return done[id(expr)]


def conjuncts(expr: Expr) -> list[Expr]:
    """Split a predicate on logicalAnd, in order.

    An ``and`` with a non-boolean operand is one part. A part that appears twice is listed once
    (``p and p`` is ``p``, in Kleene logic too), so a predicate that repeats itself does not multiply
    into an exponential list.
    """
    out: list[Expr] = []
    seen: set[int] = set()
    stack = [expr]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        # An INT64 operand of `and` (true when non-zero) is no predicate on its own: such an
        # `and` stays whole.
        if (
            isinstance(node, FuncCall)
            and node.name == "logicalAnd"
            and all(getattr(a, "type", None) is DataType.BOOLEAN for a in node.args)
        ):
            stack.extend(reversed(node.args))
        else:
            out.append(node)
    return out


def conjunction(parts: list[Expr]) -> Expr | None:
    if not parts:
        return None
    result = parts[0]
    for part in parts[1:]:
        result = FuncCall("logicalAnd", (result, part), DataType.BOOLEAN)
    return result
