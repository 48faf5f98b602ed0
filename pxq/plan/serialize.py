"""Plans as data: a versioned JSON form of a compiled graph, a plan fragment, the agent fragments
or a whole split plan, and back, for fragments sent to agents and mergers.

A document::

    {"format": "pxq-plan", "version": 1, "kind": "graph" | "relation" | "fragments" | "split",
     "schemas": [...], "expressions": [...], "nodes": [...], <the kind's body>}

Expressions and plan nodes are each listed once, inputs before the entries that read them, and
name each other by position in their list. Plans and expressions share their parts (a DataFrame
displayed twice is one node; ``x = x + x`` reads one expression twice), so a nested tree would
repeat them, exponentially for expressions, and the reader would lose the sharing that lets the
executor compute a part once. The flat lists also keep the JSON two levels deep however long the
script is. Schemas (a Source's table, a merge input's columns) are listed once each too, since
several nodes often carry the same wide one. Bodies: ``graph`` {"now_ns", "settings", "displays"}; ``relation`` "root";
``fragments`` "roots"; ``split`` "agent_fragments", "merge" (a graph body) and "manifest".

Values: integers are JSON integers, exact at any size (times in nanoseconds exceed 2**53, so a
reader must keep 64-bit integers exact, as Python's json does); floats are JSON numbers written
with their shortest exact text, and ``{"float": "nan" | "inf" | "-inf"}`` for the values JSON
has no number for; strings are JSON strings with every non-ASCII character escaped (so lone
surrogates survive and any transport carries the text); a list literal is a JSON array. PxL has
no bytes type, so no plan holds bytes.

Reading checks what the compiler made sure of and a plan node does not check itself, since the
executor relies on it: each entry's fields and their JSON types, positions that point backwards
(so no cycle), function and aggregate names and signatures (against ``pxq.funcs``) with the
types they return, column references typed as their columns, literal values that fit their type,
and merge inputs with the columns of the agent fragments they name. Every problem is a
``PlanFormatError`` naming the JSON path of the bad element (``$.nodes[3].predicate``), never a
traceback.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from pxq.errors import PxqError, Span
from pxq.funcs.registry import AGGREGATES, SCALARS, ScalarFunction, load_builtins, resolve_type
from pxq.plan.expr import ColumnRef, Expr, FuncCall, Literal, postorder, walk_postorder
from pxq.plan.manifest import CollectorRequest, ProbeManifest, TableRequest
from pxq.plan.nodes import (
    Agg,
    AggSpec,
    Display,
    Field,
    Filter,
    FragmentInput,
    Graph,
    Join,
    Limit,
    Map,
    PlanError,
    Project,
    Relation,
    Schema,
    Source,
    Union,
)
from pxq.plan.split import SplitPlan
from pxq.types import DataType, SemanticType

FORMAT = "pxq-plan"
VERSION = 1
KINDS = ("graph", "relation", "fragments", "split")
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


class PlanFormatError(PxqError):
    """A plan document that cannot be read: not JSON, another format or version, or an element
    that is missing, of the wrong kind or inconsistent. ``path`` is the JSON path of the element."""

    exit_code = 1

    def __init__(self, path: str, message: str):
        super().__init__(f"plan JSON at {path}: {message}")
        self.path = path
        self.message = message


# ---------------------------------------------------------------------------------------------
# Field layouts: for every node kind, its dataclass fields in order with how each is written.
# tests/plan/test_serialize.py checks these name every field of every node and expression class.

NODE_KINDS: dict[str, type[Relation]] = {
    "source": Source,
    "filter": Filter,
    "map": Map,
    "project": Project,
    "agg": Agg,
    "join": Join,
    "union": Union,
    "limit": Limit,
    "display": Display,
    "fragment_input": FragmentInput,
}
NODE_FIELDS: dict[type[Relation], tuple[tuple[str, str], ...]] = {
    Source: (
        ("table", "str"),
        ("table_schema", "schema"),
        ("columns", "strs"),
        ("start_ns", "int?"),
        ("end_ns", "int?"),
        ("predicates", "exprs"),
        ("pids", "ints?"),
    ),
    Filter: (("input", "node"), ("predicate", "expr")),
    Map: (("input", "node"), ("assignments", "assignments")),
    Project: (("input", "node"), ("columns", "strs")),
    Agg: (("input", "node"), ("keys", "strs"), ("aggregates", "aggspecs")),
    Join: (
        ("left", "node"),
        ("right", "node"),
        ("how", "str"),
        ("left_on", "strs"),
        ("right_on", "strs"),
        ("suffixes", "pair"),
    ),
    Union: (("parts", "nodes"),),
    Limit: (("input", "node"), ("n", "int")),
    Display: (("input", "node"), ("name", "str")),
    FragmentInput: (("index", "int"), ("input_schema", "schema")),
}
_KIND_OF_NODE = {cls: kind for kind, cls in NODE_KINDS.items()}

EXPR_KINDS: dict[str, type[Expr]] = {"column": ColumnRef, "literal": Literal, "call": FuncCall}
EXPR_FIELDS: dict[type[Expr], tuple[str, ...]] = {
    ColumnRef: ("name", "type", "semantic"),
    Literal: ("value", "type", "semantic"),
    FuncCall: ("name", "args", "type", "semantic", "span"),
}
_KIND_OF_EXPR = {cls: kind for kind, cls in EXPR_KINDS.items()}
_SPAN_FIELDS = ("line", "column", "end_line", "end_column", "start_pos", "end_pos")


# ---------------------------------------------------------------------------------------------
# Writing.


def to_dict(plan: Graph | Relation | SplitPlan | tuple[Relation, ...] | list[Relation]) -> dict[str, Any]:
    """The plan as a document of JSON values (see the module docstring)."""
    writer = _Writer()
    body: dict[str, Any]
    if isinstance(plan, Graph):
        kind, body = "graph", writer.graph(plan)
    elif isinstance(plan, SplitPlan):
        kind = "split"
        body = {
            "agent_fragments": [writer.node(f) for f in plan.agent_fragments],
            "merge": writer.graph(plan.merge),
            "manifest": _manifest_out(plan.manifest),
        }
    elif isinstance(plan, Relation):
        kind, body = "relation", {"root": writer.node(plan)}
    elif isinstance(plan, (tuple, list)) and all(isinstance(r, Relation) for r in plan):
        kind, body = "fragments", {"roots": [writer.node(r) for r in plan]}
    else:
        raise TypeError(
            f"cannot serialize a {type(plan).__name__}: expected a Graph, Relation, tuple of Relations or SplitPlan"
        )
    return {
        "format": FORMAT,
        "version": VERSION,
        "kind": kind,
        "schemas": writer.schemas,
        "expressions": writer.exprs,
        "nodes": writer.nodes,
        **body,
    }


def to_json(
    plan: Graph | Relation | SplitPlan | tuple[Relation, ...] | list[Relation], *, indent: int | None = None
) -> str:
    """The plan as JSON text: ASCII only, and no NaN or Infinity tokens (strict JSON)."""
    return json.dumps(to_dict(plan), indent=indent, ensure_ascii=True, allow_nan=False)


class _Writer:
    def __init__(self) -> None:
        self.schemas: list[list[dict[str, str]]] = []
        self.exprs: list[dict[str, Any]] = []
        self.nodes: list[dict[str, Any]] = []
        self._schema_at: dict[Schema, int] = {}
        self._expr_at: dict[int, int] = {}
        self._node_at: dict[int, int] = {}

    def graph(self, graph: Graph) -> dict[str, Any]:
        return {
            "now_ns": graph.now_ns,
            "settings": [[k, v] for k, v in graph.settings],
            "displays": [self.node(d) for d in graph.displays],
        }

    def expr(self, root: Expr) -> int:
        for item in postorder(root, lambda e: id(e) in self._expr_at):
            entry: dict[str, Any] = {"kind": _KIND_OF_EXPR[type(item)]}
            for name in EXPR_FIELDS[type(item)]:
                value = getattr(item, name)
                if name == "args":
                    entry[name] = [self._expr_at[id(a)] for a in value]
                elif name == "value":
                    entry[name] = _value_out(value)
                elif name == "span":
                    entry[name] = None if value is None else {f: getattr(value, f) for f in _SPAN_FIELDS}
                elif name in ("type", "semantic"):
                    entry[name] = value.value
                else:
                    entry[name] = value
            self._expr_at[id(item)] = len(self.exprs)
            self.exprs.append(entry)
        return self._expr_at[id(root)]

    def node(self, root: Relation) -> int:
        for item in walk_postorder((root,), _inputs, lambda n: id(n) in self._node_at):
            entry: dict[str, Any] = {"kind": _KIND_OF_NODE[type(item)]}
            for name, codec in NODE_FIELDS[type(item)]:
                entry[name] = self._field_out(codec, getattr(item, name))
            self._node_at[id(item)] = len(self.nodes)
            self.nodes.append(entry)
        return self._node_at[id(root)]

    def _field_out(self, codec: str, value: Any) -> Any:
        if codec == "node":
            return self._node_at[id(value)]
        if codec == "nodes":
            return [self._node_at[id(v)] for v in value]
        if codec == "expr":
            return self.expr(value)
        if codec == "exprs":
            return [self.expr(v) for v in value]
        if codec == "assignments":
            return [[name, self.expr(e)] for name, e in value]
        if codec == "schema":  # equal schemas are listed once
            if value not in self._schema_at:
                self._schema_at[value] = len(self.schemas)
                self.schemas.append(
                    [{"name": f.name, "type": f.type.value, "semantic": f.semantic.value} for f in value.fields]
                )
            return self._schema_at[value]
        if codec == "aggspecs":
            return [
                {
                    "output": a.output,
                    "function": a.function,
                    "column": a.column,
                    "type": a.type.value,
                    "semantic": a.semantic.value,
                }
                for a in value
            ]
        if codec in ("strs", "pair") or (codec == "ints?" and value is not None):
            return list(value)
        return value  # str, int, int?, None


def _inputs(node: Relation) -> tuple[Relation, ...]:
    return node.inputs


def _value_out(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_value_out(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return {"float": "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"a literal of Python type {type(value).__name__} has no JSON form")


def _manifest_out(manifest: ProbeManifest) -> dict[str, Any]:
    return {
        "now_ns": manifest.now_ns,
        "tables": [
            {
                "table": t.table,
                "collector": t.collector,
                "columns": list(t.columns),
                "start_ns": t.start_ns,
                "end_ns": t.end_ns,
                "pids": None if t.pids is None else list(t.pids),
            }
            for t in manifest.tables
        ],
        "collectors": [
            {
                "name": c.name,
                "tables": list(c.tables),
                "pids": None if c.pids is None else list(c.pids),
                "protocols": list(c.protocols),
                "options": [[k, v] for k, v in c.options],
            }
            for c in manifest.collectors
        ],
    }


# ---------------------------------------------------------------------------------------------
# Reading.


def from_json(text: str | bytes) -> Graph | Relation | SplitPlan | tuple[Relation, ...]:
    """The plan a ``to_json`` document describes; ``PlanFormatError`` for anything else."""
    try:
        data = json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise PlanFormatError("$", f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except UnicodeDecodeError as exc:
        raise PlanFormatError("$", f"not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    except ValueError as exc:  # an integer longer than Python converts (sys.get_int_max_str_digits)
        digits = re.search(r"has (\d+) digits", str(exc))
        raise PlanFormatError(
            "$", f"a number of {digits.group(1) if digits else 'too many'} digits, longer than any plan value"
        ) from None
    except RecursionError:
        raise PlanFormatError("$", "nested too deeply to be a plan document") from None
    return from_dict(data)


def _no_constant(name: str) -> Any:
    raise PlanFormatError("$", f'not strict JSON: {name} (write {{"float": "nan"}}, "inf" or "-inf")')


def from_dict(data: Any) -> Graph | Relation | SplitPlan | tuple[Relation, ...]:
    """The plan a ``to_dict`` document describes; ``PlanFormatError`` for anything else."""
    doc = _object(data, "$")
    fmt = doc.get("format")
    if fmt != FORMAT:
        raise PlanFormatError("$.format", f"expected {FORMAT!r}, got {fmt!r}: this is not a pxq plan document")
    version = doc.get("version")
    if type(version) is not int or version != VERSION:  # true and 1.0 equal 1 in Python, not in the format
        raise PlanFormatError("$.version", f"version {version!r} is not one this pxq reads (it reads {VERSION})")
    kind = _choice(doc.get("kind"), KINDS, "$.kind", "document kind")
    body = {
        "graph": ("now_ns", "settings", "displays"),
        "relation": ("root",),
        "fragments": ("roots",),
        "split": ("agent_fragments", "merge", "manifest"),
    }[kind]
    _keys(doc, "$", ("format", "version", "kind", "schemas", "expressions", "nodes", *body))
    reader = _Reader(doc)
    if kind == "graph":
        return reader.graph(doc, "$")
    if kind == "relation":
        return reader.node_ref(doc["root"], "$.root")
    if kind == "fragments":
        return tuple(reader.node_ref(v, f"$.roots[{i}]") for i, v in enumerate(_list(doc["roots"], "$.roots")))
    fragments = tuple(
        reader.node_ref(v, f"$.agent_fragments[{i}]")
        for i, v in enumerate(_list(doc["agent_fragments"], "$.agent_fragments"))
    )
    merge = reader.graph(_object(doc["merge"], "$.merge"), "$.merge")
    # The merge side reads each fragment's output: it must name one, with that fragment's columns.
    for position, node in enumerate(reader.nodes):
        if isinstance(node, FragmentInput):
            if node.index >= len(fragments):
                raise PlanFormatError(
                    f"$.nodes[{position}].index",
                    f"there is no agent fragment {node.index} (the plan has {len(fragments)})",
                )
            if node.input_schema != fragments[node.index].schema:
                raise PlanFormatError(
                    f"$.nodes[{position}].input_schema",
                    f"agent fragment {node.index} gives ({fragments[node.index].schema}), not ({node.input_schema})",
                )
    return SplitPlan(fragments, merge, _manifest_in(doc["manifest"], "$.manifest"))


class _Reader:
    def __init__(self, doc: dict[str, Any]) -> None:
        load_builtins()
        self.schemas: list[Schema] = []
        for i, fields in enumerate(_list(doc["schemas"], "$.schemas")):
            at = f"$.schemas[{i}]"
            self.schemas.append(Schema(tuple(_field_in(f, f"{at}[{j}]") for j, f in enumerate(_list(fields, at)))))
        self.exprs: list[Expr] = []
        for i, entry in enumerate(_list(doc["expressions"], "$.expressions")):
            self.exprs.append(self._expr(entry, f"$.expressions[{i}]"))
        self.nodes: list[Relation] = []
        for i, entry in enumerate(_list(doc["nodes"], "$.nodes")):
            self.nodes.append(self._node(entry, f"$.nodes[{i}]"))

    def graph(self, body: dict[str, Any], path: str) -> Graph:
        if path != "$":  # the document's own fields were checked with the document
            _keys(body, path, ("now_ns", "settings", "displays"))
        displays = []
        for i, ref in enumerate(_list(body["displays"], f"{path}.displays")):
            node = self.node_ref(ref, f"{path}.displays[{i}]")
            if not isinstance(node, Display):
                raise PlanFormatError(
                    f"{path}.displays[{i}]", f"node {ref} is a {_KIND_OF_NODE[type(node)]}, not a display"
                )
            displays.append(node)
        settings = tuple(
            _str_pair(v, f"{path}.settings[{i}]") for i, v in enumerate(_list(body["settings"], f"{path}.settings"))
        )
        return Graph(tuple(displays), _int(body["now_ns"], f"{path}.now_ns"), settings)

    def node_ref(self, value: Any, path: str) -> Relation:
        return self.nodes[_position(value, len(self.nodes), path, "node")]

    def expr_ref(self, value: Any, path: str) -> Expr:
        return self.exprs[_position(value, len(self.exprs), path, "expression")]

    def _expr(self, data: Any, path: str) -> Expr:
        entry = _object(data, path)
        cls = EXPR_KINDS[_choice(entry.get("kind"), tuple(EXPR_KINDS), f"{path}.kind", "expression kind")]
        _keys(entry, path, ("kind", *EXPR_FIELDS[cls]))
        data_type = _enum(DataType, entry["type"], f"{path}.type")
        semantic = _enum(SemanticType, entry["semantic"], f"{path}.semantic")
        if cls is ColumnRef:
            return ColumnRef(_str(entry["name"], f"{path}.name"), data_type, semantic)
        if cls is Literal:
            return Literal(_value_in(entry["value"], data_type, f"{path}.value"), data_type, semantic)
        name = _str(entry["name"], f"{path}.name")
        if name not in SCALARS:
            raise PlanFormatError(f"{path}.name", f"unknown function {name!r}")
        args = tuple(self.expr_ref(v, f"{path}.args[{i}]") for i, v in enumerate(_list(entry["args"], f"{path}.args")))
        self._check_call(SCALARS[name], args, data_type, path)
        return FuncCall(name, args, data_type, semantic, _span_in(entry["span"], f"{path}.span"))

    def _check_call(self, fn: ScalarFunction, args: tuple[Expr, ...], data_type: DataType, path: str) -> None:
        """The call's arguments fit the function's signature and it returns the type the plan says,
        as the compiler made sure (the executor relies on both)."""
        params = list(fn.params)
        if fn.variadic and len(args) > len(params):
            params += [params[-1]] * (len(args) - len(params))
        if len(args) != len(params):
            raise PlanFormatError(f"{path}.args", f"px.{fn.name} takes {len(params)} arguments, got {len(args)}")
        arg_types = tuple(_type_of(a) for a in args)
        for i, (param, arg_type) in enumerate(zip(params, arg_types)):
            if param.types is not None and arg_type not in param.types:
                raise PlanFormatError(
                    f"{path}.args[{i}]", f"argument {param.name!r} of px.{fn.name} cannot be {arg_type}"
                )
        try:
            returns = resolve_type(fn.returns, arg_types)
        except TypeError as exc:
            raise PlanFormatError(f"{path}.args", str(exc)) from None
        if returns is not data_type:
            raise PlanFormatError(
                f"{path}.type", f"px.{fn.name} of ({', '.join(map(str, arg_types))}) returns {returns}, not {data_type}"
            )

    def _node(self, data: Any, path: str) -> Relation:
        entry = _object(data, path)
        cls = NODE_KINDS[_choice(entry.get("kind"), tuple(NODE_KINDS), f"{path}.kind", "node kind")]
        layout = NODE_FIELDS[cls]
        _keys(entry, path, ("kind", *(name for name, _ in layout)))
        values = {name: self._field_in(codec, entry[name], f"{path}.{name}") for name, codec in layout}
        try:
            node = cls(**values)
        except PlanError as exc:  # the node's own checks: unknown columns, types, sizes
            raise PlanFormatError(path, exc.message + (f" ({exc.hint})" if exc.hint else "")) from None
        if isinstance(node, FragmentInput) and node.index < 0:
            raise PlanFormatError(f"{path}.index", f"a fragment index cannot be negative ({node.index})")
        if isinstance(node, Agg):
            for i, spec in enumerate(node.aggregates):
                fn = AGGREGATES.get(spec.function)
                if fn is None:
                    raise PlanFormatError(f"{path}.aggregates[{i}].function", f"unknown aggregate {spec.function!r}")
                column_type = node.input.schema.require(spec.column).type
                try:
                    returns = resolve_type(fn.returns, (column_type,))
                except TypeError as exc:
                    raise PlanFormatError(f"{path}.aggregates[{i}]", str(exc)) from None
                if (fn.input_types is not None and column_type not in fn.input_types) or returns is not spec.type:
                    raise PlanFormatError(
                        f"{path}.aggregates[{i}].type",
                        f"px.{fn.name} of {column_type} returns {returns}, not {spec.type}",
                    )
        # Column references must have their column's type (the node checked that the names exist).
        for field_name, expr in _expressions_read(node):
            schema = node.table_schema if isinstance(node, Source) else node.inputs[0].schema
            for ref in postorder(expr):
                if isinstance(ref, ColumnRef) and schema.require(ref.name).type is not ref.type:
                    raise PlanFormatError(
                        f"{path}.{field_name}",
                        f"column {ref.name!r} is "
                        f"{schema.require(ref.name).type}, but an expression reads it as {ref.type}",
                    )
        return node

    def _field_in(self, codec: str, value: Any, path: str) -> Any:
        if codec == "str":
            return _str(value, path)
        if codec == "strs":
            return tuple(_str(v, f"{path}[{i}]") for i, v in enumerate(_list(value, path)))
        if codec == "pair":
            return _str_pair(value, path)
        if codec == "int":
            return _int(value, path)
        if codec == "int?":
            return None if value is None else _int(value, path)
        if codec == "ints?":
            return None if value is None else tuple(_int(v, f"{path}[{i}]") for i, v in enumerate(_list(value, path)))
        if codec == "node":
            return self.node_ref(value, path)
        if codec == "nodes":
            items = _list(value, path)
            if not items:
                raise PlanFormatError(path, "expected at least one node")
            return tuple(self.node_ref(v, f"{path}[{i}]") for i, v in enumerate(items))
        if codec == "expr":
            return self.expr_ref(value, path)
        if codec == "exprs":
            return tuple(self.expr_ref(v, f"{path}[{i}]") for i, v in enumerate(_list(value, path)))
        if codec == "assignments":
            pairs = []
            for i, item in enumerate(_list(value, path)):
                pair = _list(item, f"{path}[{i}]")
                if len(pair) != 2:
                    raise PlanFormatError(f"{path}[{i}]", "expected [column name, expression]")
                pairs.append((_str(pair[0], f"{path}[{i}][0]"), self.expr_ref(pair[1], f"{path}[{i}][1]")))
            return tuple(pairs)
        if codec == "schema":
            return self.schemas[_position(value, len(self.schemas), path, "schema")]
        assert codec == "aggspecs", codec
        return tuple(_aggspec_in(v, f"{path}[{i}]") for i, v in enumerate(_list(value, path)))


def _type_of(expr: Expr) -> DataType:
    assert isinstance(expr, (ColumnRef, Literal, FuncCall)), expr
    return expr.type


def _expressions_read(node: Relation) -> list[tuple[str, Expr]]:
    """(field name, expression) for every expression a node evaluates against its input."""
    if isinstance(node, Source):
        return [("predicates", p) for p in node.predicates]
    if isinstance(node, Filter):
        return [("predicate", node.predicate)]
    if isinstance(node, Map):
        return [("assignments", e) for _, e in node.assignments]
    return []


def _field_in(data: Any, path: str) -> Field:
    entry = _object(data, path)
    _keys(entry, path, ("name", "type", "semantic"))
    return Field(
        _str(entry["name"], f"{path}.name"),
        _enum(DataType, entry["type"], f"{path}.type"),
        _enum(SemanticType, entry["semantic"], f"{path}.semantic"),
    )


def _aggspec_in(data: Any, path: str) -> AggSpec:
    entry = _object(data, path)
    _keys(entry, path, ("output", "function", "column", "type", "semantic"))
    return AggSpec(
        _str(entry["output"], f"{path}.output"),
        _str(entry["function"], f"{path}.function"),
        _str(entry["column"], f"{path}.column"),
        _enum(DataType, entry["type"], f"{path}.type"),
        _enum(SemanticType, entry["semantic"], f"{path}.semantic"),
    )


def _span_in(data: Any, path: str) -> Span | None:
    if data is None:
        return None
    entry = _object(data, path)
    _keys(entry, path, _SPAN_FIELDS)
    return Span(*(_int(entry[name], f"{path}.{name}") for name in _SPAN_FIELDS))


# The Python values a literal of each type holds (None, a null, fits every type).
_VALUE_TYPES: dict[DataType, tuple[type, ...]] = {
    DataType.BOOLEAN: (bool,),
    DataType.INT64: (int,),
    DataType.TIME64NS: (int,),
    DataType.FLOAT64: (float,),
    DataType.STRING: (str,),
    DataType.UINT128: (str,),
}
_NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def _value_in(data: Any, data_type: DataType, path: str, in_list: bool = False) -> Any:
    if isinstance(data, list) and not in_list:
        return tuple(_value_in(v, data_type, f"{path}[{i}]", True) for i, v in enumerate(data))
    if data is None:
        return None
    if isinstance(data, dict) and data_type is DataType.FLOAT64:
        _keys(data, path, ("float",))
        return _NON_FINITE[_choice(data["float"], tuple(_NON_FINITE), f"{path}.float", "non-finite float")]
    wanted = _VALUE_TYPES[data_type]
    if not isinstance(data, wanted) or (isinstance(data, bool) and bool not in wanted):
        raise PlanFormatError(path, f"a {data_type} literal cannot hold {json.dumps(data)[:60]}")
    if isinstance(data, int) and not isinstance(data, bool) and not INT64_MIN <= data <= INT64_MAX:
        raise PlanFormatError(path, f"{data} does not fit a 64-bit integer")
    return data


def _manifest_in(data: Any, path: str) -> ProbeManifest:
    entry = _object(data, path)
    _keys(entry, path, ("now_ns", "tables", "collectors"))
    tables = []
    for i, item in enumerate(_list(entry["tables"], f"{path}.tables")):
        at = f"{path}.tables[{i}]"
        t = _object(item, at)
        _keys(t, at, ("table", "collector", "columns", "start_ns", "end_ns", "pids"))
        tables.append(
            TableRequest(
                _str(t["table"], f"{at}.table"),
                _str(t["collector"], f"{at}.collector"),
                _strs(t["columns"], f"{at}.columns"),
                _opt_int(t["start_ns"], f"{at}.start_ns"),
                _opt_int(t["end_ns"], f"{at}.end_ns"),
                _opt_ints(t["pids"], f"{at}.pids"),
            )
        )
    collectors = []
    for i, item in enumerate(_list(entry["collectors"], f"{path}.collectors")):
        at = f"{path}.collectors[{i}]"
        c = _object(item, at)
        _keys(c, at, ("name", "tables", "pids", "protocols", "options"))
        options = tuple(_str_pair(v, f"{at}.options[{j}]") for j, v in enumerate(_list(c["options"], f"{at}.options")))
        collectors.append(
            CollectorRequest(
                _str(c["name"], f"{at}.name"),
                _strs(c["tables"], f"{at}.tables"),
                _opt_ints(c["pids"], f"{at}.pids"),
                _strs(c["protocols"], f"{at}.protocols"),
                options,
            )
        )
    return ProbeManifest(_int(entry["now_ns"], f"{path}.now_ns"), tuple(tables), tuple(collectors))


# ---------------------------------------------------------------------------------------------
# Checked access to JSON values.


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return {dict: "an object", list: "an array", str: "a string", int: "an integer", float: "a number"}.get(
        type(value), type(value).__name__
    )


def _object(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise PlanFormatError(path, f"expected an object, got {_describe(value)}")
    return value


def _keys(entry: dict[str, Any], path: str, names: tuple[str, ...]) -> None:
    missing = [n for n in names if n not in entry]
    if missing:
        raise PlanFormatError(path, f"missing {', '.join(repr(n) for n in missing)}")
    extra = sorted(set(entry) - set(names))
    if extra:
        raise PlanFormatError(f"{path}.{extra[0]}", f"unknown field (expected {', '.join(names)})")


def _list(value: Any, path: str) -> list[Any]:
    if not isinstance(value, list):
        raise PlanFormatError(path, f"expected an array, got {_describe(value)}")
    return value


def _str(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise PlanFormatError(path, f"expected a string, got {_describe(value)}")
    return value


def _strs(value: Any, path: str) -> tuple[str, ...]:
    return tuple(_str(v, f"{path}[{i}]") for i, v in enumerate(_list(value, path)))


def _str_pair(value: Any, path: str) -> tuple[str, str]:
    items = _list(value, path)
    if len(items) != 2:
        raise PlanFormatError(path, f"expected two strings, got {len(items)} elements")
    return _str(items[0], f"{path}[0]"), _str(items[1], f"{path}[1]")


def _int(value: Any, path: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise PlanFormatError(path, f"expected an integer, got {_describe(value)}")
    return value


def _opt_int(value: Any, path: str) -> int | None:
    return None if value is None else _int(value, path)


def _opt_ints(value: Any, path: str) -> tuple[int, ...] | None:
    return None if value is None else tuple(_int(v, f"{path}[{i}]") for i, v in enumerate(_list(value, path)))


def _position(value: Any, count: int, path: str, what: str) -> int:
    """A reference to an earlier entry: entries come after what they read, so a plan read from
    JSON can hold no cycle."""
    index = _int(value, path)
    if not 0 <= index < count:
        raise PlanFormatError(path, f"{what} {index} is not among the {count} {what}s listed before it")
    return index


def _choice(value: Any, choices: tuple[str, ...], path: str, what: str) -> str:
    if value not in choices or not isinstance(value, str):
        raise PlanFormatError(path, f"unknown {what} {value!r} (expected one of {', '.join(choices)})")
    return value


def _enum(enum_type: Any, value: Any, path: str) -> Any:
    names = tuple(member.value for member in enum_type)
    return enum_type(_choice(value, names, path, enum_type.__name__))
