"""compile: a parsed PxL module + script arguments + the table catalog + a fixed ``now`` -> plan Graph.

The script is evaluated symbolically, never by Python: names are bound to compile-time values
(the ``px`` module, DataFrames wrapping plan nodes, column expressions, constants, user functions
that are inlined at each call). Every user mistake becomes a positioned diagnostic.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from pxq.errors import CompileError, Diagnostic, Source as ScriptSource, Span, UsageError, closest
from pxq.funcs.registry import AGGREGATES, SCALARS, ExecContext, ScalarFunction, resolve_semantic, resolve_type
from pxq.lang import ast
from pxq.lang.deep import deep
from pxq.plan import nodes as n
from pxq.plan.constants import evaluate_constant
from pxq.plan.expr import ColumnRef, Expr, FuncCall, Literal
from pxq.plan.limits import INT64_RANGE, TIME_FIRST, TIME_LAST, fits_int64, shown
from pxq.plan.script_args import ScriptPlan, plan_script, resolve_arguments
from pxq.plan.settings import setting_problem
from pxq.plan.times import parse_time
from pxq.tables import CATALOG
from pxq.tables.schema import TableSchema
from pxq.types import DataType

# PxL operators are calls of Pixie's UDF names.
BINARY_OPERATORS = {"+": "add", "-": "subtract", "*": "multiply", "/": "divide", "%": "modulo"}
COMPARISONS = {
    "==": "equal",
    "!=": "notEqual",
    "<": "lessThan",
    "<=": "lessThanEqual",
    ">": "greaterThan",
    ">=": "greaterThanEqual",
}
UNARY_OPERATORS = {"not": "logicalNot", "-": "negate", "~": "invert"}
OPERATOR_FUNCTIONS = {
    *BINARY_OPERATORS.values(),
    *COMPARISONS.values(),
    *UNARY_OPERATORS.values(),
    "logicalAnd",
    "logicalOr",
}

# df.ctx[key] -> the metadata function applied to the upid column (Pixie's metadata keys).
CTX_FUNCTIONS = {
    "pid": "upid_to_pid",
    "cmdline": "upid_to_cmdline",
    "cmd": "upid_to_cmdline",
    "comm": "upid_to_comm",
    "exe": "upid_to_exe",
    "pod": "upid_to_pod_name",
    "pod_name": "upid_to_pod_name",
    "namespace": "upid_to_namespace",
    "service": "upid_to_service_name",
    "service_name": "upid_to_service_name",
    "node": "upid_to_node_name",
    "node_name": "upid_to_node_name",
    "container": "upid_to_container_name",
    "container_name": "upid_to_container_name",
    "container_id": "upid_to_container_id",
    "host": "upid_to_hostname",
    "hostname": "upid_to_hostname",
}

# px.* names the compiler itself implements (they build plan nodes or are compile-time only).
SPECIAL_FUNCTIONS = ("DataFrame", "display", "debug", "script_reference", "set")
PX_STRING_TYPES = ("Pod", "Service", "Namespace", "Node", "Container", "UPID", "String")

DATAFRAME_METHODS = ("groupby", "agg", "merge", "append", "head", "drop", "filter", "ctx", "stream")

# A safety bound only: a call of a function already being called is refused at once (PxL has
# no conditions, so such a recursion could never end), which bounds nesting by the number of
# functions a script defines. Compilation runs on a deep stack (pxq.lang.deep).
MAX_CALL_DEPTH = 5_000


# ---------------------------------------------------------------- compile-time values


@dataclass
class Value:
    span: Span


@dataclass
class ExprValue(Value):
    """A column expression or a constant (a column-free expression)."""

    expr: Expr


@dataclass
class NoneValue(Value):
    pass


@dataclass
class SeqValue(Value):
    items: list[Value]
    kind: str  # "list" or "tuple"


@dataclass
class DictValue(Value):
    items: list[tuple[Value, Value]]


@dataclass
class ModuleValue(Value):
    name: str


@dataclass
class PxFunctionValue(Value):
    name: str


@dataclass
class DataFrameValue(Value):
    node: n.Relation


@dataclass
class GroupByValue(Value):
    df: DataFrameValue
    keys: tuple[str, ...]


@dataclass
class CtxValue(Value):
    df: DataFrameValue


@dataclass
class MethodValue(Value):
    owner: Value
    name: str


@dataclass
class UserFunctionValue(Value):
    definition: ast.FunctionDef
    closure: Scope


class _Names(dict[str, Value]):
    """A scope's bindings, counting the writes (a user-function call is reused only while the
    scopes it can read are unchanged)."""

    version = 0

    def __setitem__(self, key: str, value: Value) -> None:
        self.version += 1
        super().__setitem__(key, value)


class Scope:
    def __init__(self, parent: Scope | None = None):
        self.names = _Names()
        self.parent = parent

    def versions(self) -> tuple[int, ...]:
        """The write counts of this scope and its parents."""
        out: list[int] = []
        scope: Scope | None = self
        while scope is not None:
            out.append(scope.names.version)
            scope = scope.parent
        return tuple(out)

    def lookup(self, name: str) -> Value | None:
        scope: Scope | None = self
        while scope is not None:
            if name in scope.names:
                return scope.names[name]
            scope = scope.parent
        return None

    def visible(self) -> list[str]:
        out: list[str] = []
        scope: Scope | None = self
        while scope is not None:
            out.extend(scope.names)
            scope = scope.parent
        return out


class _Return(Exception):
    def __init__(self, value: Value):
        self.value = value


# ---------------------------------------------------------------- the compiler


def table_schema(table: TableSchema) -> n.Schema:
    """A catalog table's columns as the schema of a plan's Source."""
    return n.Schema(tuple(n.Field(c.name, c.type, c.semantic) for c in table.columns))


def _python_literal(value: Any, span: Span) -> Value:
    if value is None:
        return NoneValue(span)
    if isinstance(value, bool):
        return ExprValue(span, Literal(value, DataType.BOOLEAN))
    if isinstance(value, int):
        return ExprValue(span, Literal(value, DataType.INT64))
    if isinstance(value, float):
        return ExprValue(span, Literal(value, DataType.FLOAT64))
    if isinstance(value, str):
        return ExprValue(span, Literal(value, DataType.STRING))
    if isinstance(value, (list, tuple)):
        return SeqValue(span, [_python_literal(v, span) for v in value], "list")
    raise TypeError(f"unsupported constant {value!r}")


def _describe(value: Value) -> str:
    if isinstance(value, ExprValue):
        kind = "constant" if value.expr.is_constant else "column expression"
        return f"a {kind} of type {value.expr.type}"
    return {
        NoneValue: "None",
        SeqValue: "a list",
        DictValue: "a dict",
        ModuleValue: "a module",
        PxFunctionValue: "a px function",
        DataFrameValue: "a DataFrame",
        GroupByValue: "a groupby",
        CtxValue: "df.ctx",
        MethodValue: "a method",
        UserFunctionValue: "a function",
    }.get(type(value), type(value).__name__)


class Compiler:
    def __init__(self, *, now_ns: int, catalog: dict[str, TableSchema], source: ScriptSource | None):
        self.now_ns = now_ns
        self.catalog = catalog
        self.source = source
        self.displays: list[n.Display] = []
        self.settings: dict[str, str] = {}
        self.ctx = ExecContext(now_ns=now_ns)
        self.depth = 0
        # Results of user-function calls, by function, closure state and argument identity:
        # f(x) + f(x) inlines f once, so functions that call another twice, nested n deep,
        # compile in n steps rather than 2^n (see call_user).
        self.calls: dict[tuple[object, ...], tuple[Value, list[Value]]] = {}
        self.effects = 0  # displays and settings made so far
        self.active: list[ast.FunctionDef] = []  # the functions being called, outermost first

    # -- diagnostics

    def check_setting(self, key: str, text: str, span: Span) -> None:
        """Refuse a value the setting's reader could not take (it would fail mid-run)."""
        problem = setting_problem(key, text)
        if problem is not None:
            raise self.error(problem[0], span, problem[1])

    def error(self, message: str, span: Span | None, hint: str | None = None) -> CompileError:
        return CompileError(Diagnostic(message, span, hint), self.source)

    def build(self, span: Span, factory: Callable[..., n.Relation], *args: Any, **kwargs: Any) -> n.Relation:
        try:
            return factory(*args, **kwargs)
        except n.PlanError as exc:
            raise self.error(exc.message, span, exc.hint) from None

    # -- statements

    def statement(self, stmt: ast.Stmt, scope: Scope) -> None:
        if isinstance(stmt, ast.Import):
            scope.names[stmt.alias] = self.import_module(stmt.module, stmt.span)
        elif isinstance(stmt, ast.ImportFrom):
            module = self.import_module(stmt.module, stmt.span)
            for name, alias in stmt.names:
                scope.names[alias] = self.attribute(module, name, stmt.span, stmt.span)
        elif isinstance(stmt, ast.FunctionDef):
            scope.names[stmt.name] = UserFunctionValue(stmt.span, stmt, scope)
        elif isinstance(stmt, ast.Assign):
            self.assign(stmt, scope)
        elif isinstance(stmt, ast.ExprStmt):
            self.expression(stmt.value, scope)
        elif isinstance(stmt, ast.Return):
            if self.depth == 0:
                raise self.error("'return' outside a function", stmt.span)
            value = NoneValue(stmt.span) if stmt.value is None else self.expression(stmt.value, scope)
            raise _Return(value)
        else:  # pragma: no cover - the parser produces no other statements
            raise self.error(f"unsupported statement {type(stmt).__name__}", stmt.span)

    def import_module(self, name: str, span: Span) -> Value:
        if name == "px":
            return ModuleValue(span, "px")
        raise self.error(
            f"unknown module {name!r}", span, "pxq provides the 'px' module; pxtrace/pxviews are not supported yet"
        )

    def assign(self, stmt: ast.Assign, scope: Scope) -> None:
        target = stmt.target
        if isinstance(target, ast.Name):
            scope.names[target.id] = self.expression(stmt.value, scope)
            return
        if isinstance(target, ast.Attribute):
            owner_expr, column = target.value, target.attr
        elif isinstance(target, ast.Subscript):
            owner_expr = target.value
            index = self.expression(target.index, scope)
            column = self.constant_string(index, "a column name")
        else:  # pragma: no cover
            raise self.error("cannot assign to this", target.span)
        if not isinstance(owner_expr, ast.Name):
            raise self.error("assign columns on a named DataFrame, e.g. df.col = ...", owner_expr.span)
        owner = self.expression(owner_expr, scope)
        if not isinstance(owner, DataFrameValue):
            raise self.error(f"cannot set a column on {_describe(owner)}", owner_expr.span)
        value = self.expression(stmt.value, scope)
        expr = self.as_expr(value, "the value of a column")
        node = self.build(stmt.span, n.Map, owner.node, ((column, expr),))
        # PxL DataFrames are values: df.col = x rebinds df to a new DataFrame (in the scope
        # where df lives, as Python would for a mutated object seen through a closure).
        holder: Scope | None = scope
        while holder is not None and owner_expr.id not in holder.names:
            holder = holder.parent
        (holder or scope).names[owner_expr.id] = DataFrameValue(stmt.span, node)

    # -- expressions

    def expression(self, node: ast.Expr, scope: Scope) -> Value:
        method: Callable[[ast.Expr, Scope], Value] = getattr(self, "expr_" + type(node).__name__)
        return method(node, scope)

    def expr_Constant(self, node: ast.Constant, scope: Scope) -> Value:
        value = node.value
        if isinstance(value, int) and not isinstance(value, bool) and not fits_int64(value):
            raise self.error(
                f"integer literal {shown(value)} is out of range for int64",
                node.span,
                f"PxL integers are 64-bit: {INT64_RANGE}",
            )
        return _python_literal(value, node.span)

    def expr_Name(self, node: ast.Name, scope: Scope) -> Value:
        value = scope.lookup(node.id)
        if value is None:
            near = closest(node.id, scope.visible())
            hint = f"did you mean {near[0]!r}?" if near else "assign it first, or 'import px'"
            raise self.error(f"name {node.id!r} is not defined", node.span, hint)
        return value

    def expr_List(self, node: ast.List, scope: Scope) -> Value:
        return SeqValue(node.span, [self.expression(e, scope) for e in node.elts], "list")

    def expr_Tuple(self, node: ast.Tuple, scope: Scope) -> Value:
        return SeqValue(node.span, [self.expression(e, scope) for e in node.elts], "tuple")

    def expr_Dict(self, node: ast.Dict, scope: Scope) -> Value:
        return DictValue(
            node.span, [(self.expression(k, scope), self.expression(v, scope)) for k, v in zip(node.keys, node.values)]
        )

    def expr_Attribute(self, node: ast.Attribute, scope: Scope) -> Value:
        owner = self.expression(node.value, scope)
        return self.attribute(owner, node.attr, node.span, node.attr_span)

    def attribute(self, owner: Value, attr: str, span: Span, attr_span: Span) -> Value:
        if isinstance(owner, ModuleValue):
            if attr in SCALARS or attr in AGGREGATES or attr in SPECIAL_FUNCTIONS or attr in PX_STRING_TYPES:
                return PxFunctionValue(span, attr)
            names = list(SCALARS) + list(AGGREGATES) + list(SPECIAL_FUNCTIONS)
            near = closest(attr, names)
            hint = f"did you mean {', '.join('px.' + x for x in near)}?" if near else "see `pxq funcs`"
            raise self.error(f"unknown function px.{attr}", attr_span, hint)
        if isinstance(owner, DataFrameValue):
            if attr == "ctx":
                return CtxValue(span, owner)
            if attr in DATAFRAME_METHODS:
                return MethodValue(span, owner, attr)
            return self.column(owner, attr, attr_span)
        if isinstance(owner, GroupByValue) and attr == "agg":
            return MethodValue(span, owner, "agg")
        raise self.error(f"{_describe(owner)} has no attribute {attr!r}", attr_span)

    def column(self, df: DataFrameValue, name: str, span: Span) -> ExprValue:
        found = df.node.schema.get(name)
        if found is None:
            raise self.error(f"unknown column {name!r}", span, n.column_hint(name, df.node.schema.names))
        return ExprValue(span, ColumnRef(found.name, found.type, found.semantic))

    def expr_Subscript(self, node: ast.Subscript, scope: Scope) -> Value:
        owner = self.expression(node.value, scope)
        index = self.expression(node.index, scope)
        if isinstance(owner, CtxValue):
            return self.ctx_lookup(owner, index, node.index.span)
        if not isinstance(owner, DataFrameValue):
            raise self.error(f"cannot subscript {_describe(owner)}", node.value.span)
        if isinstance(index, SeqValue):
            names = tuple(self.constant_string(v, "a column name") for v in index.items)
            return DataFrameValue(node.span, self.build(node.span, n.Project, owner.node, names))
        if isinstance(index, ExprValue) and index.expr.is_constant and index.expr.type is DataType.STRING:
            return self.column(owner, self.constant_string(index, "a column name"), node.index.span)
        if isinstance(index, ExprValue):
            return DataFrameValue(node.span, self.build(node.index.span, n.Filter, owner.node, index.expr))
        raise self.error(
            f"cannot index a DataFrame with {_describe(index)}",
            node.index.span,
            "use df[predicate], df['col'] or df[['a', 'b']]",
        )

    def ctx_lookup(self, ctx: CtxValue, index: Value, span: Span) -> Value:
        key = self.constant_string(index, "a metadata key")
        if key not in CTX_FUNCTIONS:
            raise self.error(f"unknown metadata key {key!r}", span, f"keys: {', '.join(sorted(CTX_FUNCTIONS))}")
        upid = ctx.df.node.schema.get("upid")
        if upid is None:
            raise self.error(
                "df.ctx needs a 'upid' column", span, "keep upid in the DataFrame until the metadata is looked up"
            )
        return self.call_scalar(
            SCALARS[CTX_FUNCTIONS[key]], [ExprValue(span, ColumnRef("upid", upid.type, upid.semantic))], {}, span
        )

    def expr_BinOp(self, node: ast.BinOp, scope: Scope) -> Value:
        left, right = self.expression(node.left, scope), self.expression(node.right, scope)
        return self.call_scalar(SCALARS[BINARY_OPERATORS[node.op]], [left, right], {}, node.span)

    def expr_Compare(self, node: ast.Compare, scope: Scope) -> Value:
        left, right = self.expression(node.left, scope), self.expression(node.right, scope)
        return self.call_scalar(SCALARS[COMPARISONS[node.op]], [left, right], {}, node.span)

    def expr_BoolOp(self, node: ast.BoolOp, scope: Scope) -> Value:
        fn = SCALARS["logicalAnd" if node.op == "and" else "logicalOr"]
        result = self.expression(node.values[0], scope)
        for operand in node.values[1:]:
            result = self.call_scalar(fn, [result, self.expression(operand, scope)], {}, node.span)
        return result

    def expr_UnaryOp(self, node: ast.UnaryOp, scope: Scope) -> Value:
        literal = node.operand
        if (
            node.op == "-"
            and isinstance(literal, ast.Constant)
            and type(literal.value) is int
            and literal.value == 2**63
        ):
            # -9223372036854775808 is an int64 although its digits alone are not
            return ExprValue(node.span, Literal(-literal.value, DataType.INT64))
        operand = self.expression(node.operand, scope)
        if node.op == "+":
            self.as_expr(operand, "the operand of unary +")
            return operand
        return self.call_scalar(SCALARS[UNARY_OPERATORS[node.op]], [operand], {}, node.span)

    def expr_Call(self, node: ast.Call, scope: Scope) -> Value:
        func = self.expression(node.func, scope)
        args = [self.expression(a, scope) for a in node.args]
        kwargs: dict[str, Value] = {}
        for kw in node.keywords:
            if kw.name in kwargs:
                raise self.error(f"keyword argument {kw.name!r} given twice", kw.span)
            kwargs[kw.name] = self.expression(kw.value, scope)
        if isinstance(func, PxFunctionValue):
            return self.call_px(func, args, kwargs, node)
        if isinstance(func, MethodValue):
            return self.call_method(func, args, kwargs, node)
        if isinstance(func, UserFunctionValue):
            return self.call_user(func, args, kwargs, node.span)
        raise self.error(f"{_describe(func)} is not callable", node.func.span)

    # -- conversions

    def as_expr(self, value: Value, what: str, *, allow_list: bool = False, hint: str | None = None) -> Expr:
        """``value`` as a plan expression; a constant list only where ``allow_list`` (px.equals_any's
        values): a column holds one value per row, and no other function takes a list."""
        if isinstance(value, ExprValue):
            return value.expr
        if isinstance(value, SeqValue) and not allow_list:
            raise self.error(
                f"{what} must be a column or a single value, not a {value.kind}",
                value.span,
                hint or "to test a column against several values use px.equals_any(df.col, [...])",
            )
        if isinstance(value, SeqValue):
            items = [self.as_expr(v, what) for v in value.items]
            if not all(isinstance(i, Literal) and not i.is_list for i in items):
                raise self.error(f"{what}: a list here must hold constants", value.span)
            types = {i.type for i in items}
            if types == {DataType.INT64, DataType.FLOAT64}:
                types = {DataType.FLOAT64}
            if len(types) > 1:
                raise self.error(f"{what}: a list must hold values of one type", value.span)
            elem_type = types.pop() if types else DataType.STRING
            return Literal(tuple(cast(Literal, i).value for i in items), elem_type)
        raise self.error(f"{what} must be a column or a value, not {_describe(value)}", value.span)

    def constant(self, value: Value, what: str) -> Any:
        if isinstance(value, NoneValue):
            return None
        if isinstance(value, SeqValue):
            return [self.constant(v, what) for v in value.items]
        expr = self.as_expr(value, what)
        if not expr.is_constant:
            raise self.error(f"{what} must be known when the script is compiled, not a column", value.span)
        try:
            return evaluate_constant(expr, self.ctx)
        except Exception as exc:  # an implementation error on constants, e.g. bad regex
            raise self.error(f"cannot evaluate {what}: {exc}", value.span) from None

    def constant_string(self, value: Value, what: str) -> str:
        result = self.constant(value, what)
        if not isinstance(result, str):
            raise self.error(f"{what} must be a string, got {_describe(value)}", value.span)
        return result

    def string_list(self, value: Value, what: str) -> tuple[str, ...]:
        if isinstance(value, SeqValue):
            return tuple(self.constant_string(v, what) for v in value.items)
        return (self.constant_string(value, what),)

    def bind(
        self, names: list[tuple[str, bool]], args: list[Value], kwargs: dict[str, Value], span: Span, signature: str
    ) -> dict[str, Value]:
        """Match call arguments to parameter names ((name, required) pairs), Python's way."""
        if len(args) > len(names):
            raise self.error(f"too many arguments ({len(args)} given)", span, f"signature: {signature}")
        bound = dict(zip((name for name, _ in names), args))
        for key, value in kwargs.items():
            if key not in {name for name, _ in names}:
                raise self.error(f"unexpected keyword argument {key!r}", value.span, f"signature: {signature}")
            if key in bound:
                raise self.error(f"argument {key!r} given twice", value.span, f"signature: {signature}")
            bound[key] = value
        for name, required in names:
            if required and name not in bound:
                raise self.error(f"missing argument {name!r}", span, f"signature: {signature}")
        return bound

    # -- px functions

    def call_px(self, func: PxFunctionValue, args: list[Value], kwargs: dict[str, Value], node: ast.Call) -> Value:
        name = func.name
        if name == "DataFrame":
            return self.dataframe(args, kwargs, node.span)
        if name in ("display", "debug"):
            return self.display(args, kwargs, node.span)
        if name == "set":
            # px.set(key, value): a query setting like a '#px:set key=value' pragma, but the value
            # may come from a script argument (e.g. the profiler's sampling rate).
            bound = self.bind([("key", True), ("value", True)], args, kwargs, node.span, "px.set(key, value)")
            key = self.constant_string(bound["key"], "the setting name")
            value = self.constant(bound["value"], "the setting value")
            text = str(value).lower() if isinstance(value, bool) else str(value)
            self.check_setting(key, text, bound["value"].span)
            self.settings[key] = text
            self.effects += 1
            return NoneValue(node.span)
        if name == "script_reference":
            bound = self.bind(
                [("label", True), ("script", True), ("args", False)],
                args,
                kwargs,
                node.span,
                "px.script_reference(label, script, args={})",
            )
            self.check_script_reference(bound)
            # Links between scripts are a UI feature; in a table the label is what shows.
            return bound["label"]
        if name in AGGREGATES:
            raise self.error(
                f"px.{name} is an aggregate", node.span, f"use it inside groupby(...).agg(out=('column', px.{name}))"
            )
        if name in PX_STRING_TYPES:
            bound = self.bind([("value", True)], args, kwargs, node.span, f"px.{name}(value)")
            return bound["value"]
        return self.call_scalar(SCALARS[name], args, kwargs, node.span)

    def check_script_reference(self, bound: dict[str, Value]) -> None:
        """Pixie's compiler (pixie_module.cc ``ScriptReference``) hands the label, the script and
        each argument's name and value to its ``_script_reference`` UDF, which takes strings only:
        the names are constant strings, the others strings or string columns, args a dict."""
        hint = "e.g. px.script_reference(df.pod, 'px/pod', {'pod': df.pod, 'start_time': start_time})"
        texts = [(bound["label"], "argument 'label'"), (bound["script"], "argument 'script'")]
        given = bound.get("args")
        if given is not None and not isinstance(given, DictValue):
            raise self.error(f"argument 'args' of px.script_reference must be a dict, not {_describe(given)}",
                             given.span, hint)  # fmt: skip
        for key, value in given.items if isinstance(given, DictValue) else []:
            name = self.constant_string(key, "the name of a script argument of px.script_reference")
            texts.append((value, f"the value of script argument {name!r}"))
        for value, what in texts:
            expr = self.as_expr(value, f"{what} of px.script_reference", hint=hint)
            if expr.type is not DataType.STRING:
                raise self.error(f"{what} of px.script_reference must be a string, not {_describe(value)}",
                                 value.span, "convert it first, e.g. px.itoa(n)")  # fmt: skip

    def call_scalar(self, fn: ScalarFunction, args: list[Value], kwargs: dict[str, Value], span: Span) -> Value:
        params = list(fn.params)
        if fn.variadic and len(args) > len(params):
            params += [params[-1]] * (len(args) - len(params))
        bound = self.bind(
            [(p.name if i < len(fn.params) else f"{p.name}{i}", not p.has_default) for i, p in enumerate(params)],
            args,
            kwargs,
            span,
            fn.signature(),
        )
        exprs: list[Expr] = []
        for i, param in enumerate(params):
            key = param.name if i < len(fn.params) else f"{param.name}{i}"
            if key not in bound:
                exprs.append(self.as_expr(_python_literal(param.default, span), param.name))
                continue
            value = bound[key]
            expr = self.as_expr(
                value,
                f"argument {param.name!r} of px.{fn.name}",
                allow_list=param.accepts_list,
                hint=None if fn.name in OPERATOR_FUNCTIONS else f"signature: {fn.signature()}",
            )
            if param.literal and not expr.is_constant:
                raise self.error(
                    f"argument {param.name!r} of px.{fn.name} must be a constant, not a column",
                    value.span,
                    f"signature: {fn.signature()}",
                )
            if param.types is not None and expr.type not in param.types:
                raise self.error(
                    f"argument {param.name!r} of px.{fn.name} has type {expr.type}",
                    value.span,
                    f"signature: {fn.signature()}",
                )
            if param.bounds is not None:
                given, (low, high) = self.constant(value, f"argument {param.name!r} of px.{fn.name}"), param.bounds
                if given is not None and not low <= given <= high:
                    raise self.error(
                        f"argument {param.name!r} of px.{fn.name} must be between {low:,} and {high:,}, not {given:,}",
                        value.span,
                        f"signature: {fn.signature()}",
                    )
            exprs.append(expr)
        arg_types = tuple(e.type for e in exprs)
        try:
            result_type = resolve_type(fn.returns, arg_types)
        except TypeError as exc:
            if fn.name in OPERATOR_FUNCTIONS:
                hint = "convert one side first, e.g. px.atoi(text), px.itoa(number) or px.Time(ns)"
            else:
                hint = f"signature: {fn.signature()}"
            raise self.error(str(exc), span, hint) from None
        semantic = resolve_semantic(fn.semantic, tuple(e.semantic for e in exprs))
        return ExprValue(span, FuncCall(fn.name, tuple(exprs), result_type, semantic, span))

    def dataframe(self, args: list[Value], kwargs: dict[str, Value], span: Span) -> DataFrameValue:
        sig = "px.DataFrame(table, select=[...], start_time=None, end_time=None)"
        bound = self.bind(
            [("table", True), ("select", False), ("start_time", False), ("end_time", False)], args, kwargs, span, sig
        )
        table_name = self.constant_string(bound["table"], "the table name")
        table = self.catalog.get(table_name)
        if table is None:
            near = closest(table_name, self.catalog)
            listing = ", ".join(sorted(self.catalog))
            hint = f"did you mean {near[0]!r}? tables: {listing}" if near else f"tables: {listing}"
            raise self.error(f"unknown table {table_name!r}", bound["table"].span, hint)
        schema = table_schema(table)
        if "select" in bound and not isinstance(bound["select"], NoneValue):
            columns = self.string_list(bound["select"], "a selected column")
            for col in columns:
                if schema.get(col) is None:
                    raise self.error(
                        f"unknown column {col!r} in table {table_name}",
                        bound["select"].span,
                        n.column_hint(col, schema.names),
                    )
        else:
            columns = schema.names
        start = self.time_bound(bound.get("start_time"), "start_time")
        end = self.time_bound(bound.get("end_time"), "end_time")
        node = self.build(span, n.Source, table_name, schema, tuple(columns), start, end)
        return DataFrameValue(span, node)

    def time_bound(self, value: Value | None, what: str) -> int | None:
        """A DataFrame's start_time/end_time as int64 nanoseconds, checked against the time range."""
        if value is None or isinstance(value, NoneValue):
            return None
        if (
            isinstance(value, ExprValue)
            and value.expr.is_constant
            and value.expr.type in (DataType.TIME64NS, DataType.INT64)
        ):
            # px.now() + px.days(n): computed exactly, so that a bound past the range is an
            # error rather than an int64 that wrapped around to another time
            try:
                raw = evaluate_constant(value.expr, self.ctx, checked=True)
            except OverflowError:
                raise self._time_range_error(what, value.span, "the computed time") from None
            except Exception as exc:  # an implementation error on constants
                raise self.error(f"cannot evaluate {what}: {exc}", value.span) from None
        else:
            raw = self.constant(value, what)
        if raw is None and isinstance(value, ExprValue):
            raise self.error(f"{what} is null", value.span, "give a time, or leave the bound out")
        if isinstance(raw, bool) or not isinstance(raw, (int, str)):
            raise self.error(
                f"{what} must be a relative time like '-5m', an absolute time or nanoseconds, got {_describe(value)}",
                value.span,
            )
        if isinstance(raw, str):
            try:
                raw = parse_time(raw, self.now_ns)
            except OverflowError:
                raise self._time_range_error(what, value.span, shown(raw)) from None
            except ValueError as exc:
                raise self.error(
                    f"invalid {what} {shown(raw)}: {exc}",
                    value.span,
                    "use '-30s', '-5m', '-1h', '2026-11-26 04:00:00 +0000' or nanoseconds",
                ) from None
        if not fits_int64(raw):
            raise self._time_range_error(what, value.span, "it")
        return raw

    def _time_range_error(self, what: str, span: Span, subject: str) -> CompileError:
        return self.error(
            f"{what} is out of range: {subject} is not between {TIME_FIRST} and {TIME_LAST} UTC",
            span,
            f"times are int64 nanoseconds (Arrow's timestamp[ns]), which reach from {TIME_FIRST} to {TIME_LAST} UTC",
        )

    def display(self, args: list[Value], kwargs: dict[str, Value], span: Span) -> Value:
        bound = self.bind(
            [("out", True), ("name", False), ("cols", False)],
            args,
            kwargs,
            span,
            "px.display(df, name='output', cols=[])",
        )
        df = bound["out"]
        if not isinstance(df, DataFrameValue):
            raise self.error(f"px.display needs a DataFrame, got {_describe(df)}", df.span)
        name = self.constant_string(bound["name"], "the display name") if "name" in bound else "output"
        node = df.node
        if "cols" in bound and not isinstance(bound["cols"], NoneValue):
            cols = self.string_list(bound["cols"], "a displayed column")
            if cols:
                node = self.build(bound["cols"].span, n.Project, node, cols)
        self.add_display(name, node, span)
        return NoneValue(span)

    def add_display(self, name: str, node: n.Relation, span: Span) -> None:
        if any(d.name == name for d in self.displays):
            raise self.error(f"display name {name!r} is used twice", span, "give each px.display a distinct name")
        self.displays.append(n.Display(node, name))
        self.effects += 1

    # -- DataFrame methods

    def call_method(self, method: MethodValue, args: list[Value], kwargs: dict[str, Value], node: ast.Call) -> Value:
        owner, name, span = method.owner, method.name, node.span
        if isinstance(owner, GroupByValue):
            return self.agg(owner.df, owner.keys, args, kwargs, span)
        assert isinstance(owner, DataFrameValue)
        df = owner
        if name == "groupby":
            bound = self.bind([("by", True)], args, kwargs, span, "df.groupby(column or [columns])")
            keys = self.string_list(bound["by"], "a group-by column")
            for key in keys:
                if df.node.schema.get(key) is None:
                    raise self.error(
                        f"unknown column {key!r}", bound["by"].span, n.column_hint(key, df.node.schema.names)
                    )
            return GroupByValue(span, df, keys)
        if name == "agg":
            return self.agg(df, (), args, kwargs, span)
        if name == "head":
            bound = self.bind([("n", False)], args, kwargs, span, "df.head(n=5)")
            count = self.constant(bound["n"], "n") if "n" in bound else 5
            if not isinstance(count, int) or isinstance(count, bool):
                raise self.error("head() needs an integer", bound["n"].span)
            return DataFrameValue(span, self.build(span, n.Limit, df.node, count))
        if name == "drop":
            bound = self.bind([("columns", True)], args, kwargs, span, "df.drop(column or [columns])")
            dropped = self.string_list(bound["columns"], "a dropped column")
            for col in dropped:
                if df.node.schema.get(col) is None:
                    raise self.error(
                        f"unknown column {col!r}", bound["columns"].span, n.column_hint(col, df.node.schema.names)
                    )
            keep = tuple(c for c in df.node.schema.names if c not in dropped)
            return DataFrameValue(span, self.build(span, n.Project, df.node, keep))
        if name == "filter":
            bound = self.bind([("predicate", True)], args, kwargs, span, "df.filter(predicate)")
            expr = self.as_expr(bound["predicate"], "the filter")
            return DataFrameValue(span, self.build(bound["predicate"].span, n.Filter, df.node, expr))
        if name == "merge":
            return self.merge(df, args, kwargs, span)
        if name == "append":
            bound = self.bind([("objs", True)], args, kwargs, span, "df.append(other or [others])")
            others = bound["objs"].items if isinstance(bound["objs"], SeqValue) else [bound["objs"]]
            parts = [df.node]
            for other in others:
                if not isinstance(other, DataFrameValue):
                    raise self.error(f"append needs DataFrames, got {_describe(other)}", other.span)
                parts.append(other.node)
            return DataFrameValue(span, self.build(span, n.Union, tuple(parts)))
        if name == "stream":
            # pxq queries always cover a bounded window; .stream() is accepted for compatibility.
            self.bind([], args, kwargs, span, "df.stream()")
            return df
        raise self.error(f"DataFrame has no method {name!r}", span)  # pragma: no cover

    def agg(
        self, df: DataFrameValue, keys: tuple[str, ...], args: list[Value], kwargs: dict[str, Value], span: Span
    ) -> DataFrameValue:
        if args:
            raise self.error("agg takes keyword arguments: out=('column', px.function)", args[0].span)
        specs = []
        for out, value in kwargs.items():
            hint = f"write {out}=('column', px.count)"
            if not isinstance(value, SeqValue) or len(value.items) != 2:
                raise self.error(f"aggregate {out!r} must be a pair ('column', px.function)", value.span, hint)
            column = self.constant_string(value.items[0], "the aggregated column")
            fn_value = value.items[1]
            if not isinstance(fn_value, PxFunctionValue) or fn_value.name not in AGGREGATES:
                names = ", ".join("px." + a for a in sorted(AGGREGATES))
                raise self.error(
                    f"aggregate {out!r} needs an aggregate function", fn_value.span, f"aggregates: {names}"
                )
            field = df.node.schema.get(column)
            if field is None:
                raise self.error(
                    f"unknown column {column!r}", value.items[0].span, n.column_hint(column, df.node.schema.names)
                )
            fn = AGGREGATES[fn_value.name]
            if fn.input_types is not None and field.type not in fn.input_types:
                raise self.error(
                    f"px.{fn.name} cannot aggregate {column!r} of type {field.type}",
                    value.span,
                    f"signature: {fn.signature()}",
                )
            try:
                out_type = resolve_type(fn.returns, (field.type,))
            except TypeError as exc:
                raise self.error(str(exc), value.span, f"signature: {fn.signature()}") from None
            semantic = resolve_semantic(fn.semantic, (field.semantic,))
            specs.append(n.AggSpec(out, fn.name, column, out_type, semantic))
        return DataFrameValue(span, self.build(span, n.Agg, df.node, keys, tuple(specs)))

    def merge(self, df: DataFrameValue, args: list[Value], kwargs: dict[str, Value], span: Span) -> DataFrameValue:
        sig = "df.merge(right, how='inner', left_on=..., right_on=..., suffixes=['_x', '_y'])"
        bound = self.bind(
            [
                ("right", True),
                ("how", False),
                ("left_on", False),
                ("right_on", False),
                ("suffixes", False),
                ("on", False),
            ],
            args,
            kwargs,
            span,
            sig,
        )
        right = bound["right"]
        if not isinstance(right, DataFrameValue):
            raise self.error(f"merge needs a DataFrame, got {_describe(right)}", right.span)
        how = self.constant_string(bound["how"], "how") if "how" in bound else "inner"
        if "on" in bound:
            left_on = right_on = self.string_list(bound["on"], "a join column")
        else:
            if "left_on" not in bound or "right_on" not in bound:
                raise self.error("merge needs left_on and right_on (or on)", span, f"signature: {sig}")
            left_on = self.string_list(bound["left_on"], "a join column")
            right_on = self.string_list(bound["right_on"], "a join column")
        suffixes = ("_x", "_y")
        if "suffixes" in bound:
            given = self.string_list(bound["suffixes"], "a suffix")
            if len(given) != 2:
                raise self.error("suffixes needs two strings", bound["suffixes"].span)
            suffixes = (given[0], given[1])
        node = self.build(span, n.Join, df.node, right.node, how, tuple(left_on), tuple(right_on), suffixes)
        return DataFrameValue(span, node)

    # -- user functions

    def call_user(self, func: UserFunctionValue, args: list[Value], kwargs: dict[str, Value], span: Span) -> Value:
        definition = func.definition
        params = definition.params
        sig = f"{definition.name}({', '.join(p.name for p in params)})"
        bound = self.bind([(p.name, p.default is None) for p in params], args, kwargs, span, sig)
        # PxL has no loops, conditions or mutable values, so a call whose function, arguments
        # (the same values) and readable scopes are the same as an earlier call's gives the same
        # result; unless it displayed, set a setting or rebound a name outside itself.
        state = func.closure.versions()
        key = (id(definition), id(func.closure), state, tuple((k, id(v)) for k, v in bound.items()))
        if key in self.calls:
            return self.calls[key][0]
        # by identity: dataclass equality would compare whole function bodies
        calling = [i for i, active in enumerate(self.active) if active is definition]
        if calling:
            through = [d.name for d in self.active[calling[0] + 1 :]]
            raise self.error(
                f"{definition.name} calls itself" + (f" through {', '.join(through)}" if through else ""),
                span,
                "PxL has no conditions to end a recursion; call another function, or none",
            )
        if self.depth >= MAX_CALL_DEPTH:
            raise self.error(f"calls nest deeper than {MAX_CALL_DEPTH}", span)
        effects = self.effects
        local = Scope(func.closure)
        for p in params:
            # bind() required every parameter without a default.
            local.names[p.name] = (
                bound[p.name] if p.name in bound else self.expression(cast(ast.Expr, p.default), func.closure)
            )
        self.depth += 1
        self.active.append(definition)
        try:
            for stmt in definition.body:
                self.statement(stmt, local)
            result: Value = NoneValue(span)
        except _Return as ret:
            result = ret.value
        finally:
            self.depth -= 1
            self.active.pop()
        if self.effects == effects and func.closure.versions() == state:
            self.calls[key] = (result, [func, *bound.values()])  # keeps the ids in the key alive
        return result


class CompileSession:
    """A compilation in progress, one top-level statement at a time: the global scope (``names``),
    the displays and the settings after each statement are kept, so a REPL can compile what is
    typed as it comes and show the plan so far (``graph()``). ``compile()`` is built on it.

    A statement or pragma that fails leaves the session as it was before it.
    """

    def __init__(
        self, *, now_ns: int, catalog: dict[str, TableSchema] | None = None, source: ScriptSource | None = None
    ):
        self.now_ns = now_ns
        self.source = source
        self.compiler = Compiler(now_ns=now_ns, catalog=catalog if catalog is not None else CATALOG, source=source)
        self.scope = Scope()
        self.statements: list[ast.Stmt] = []
        self.pragmas: list[ast.Pragma] = []

    @property
    def names(self) -> dict[str, Value]:
        """The script's global names after the statements so far."""
        return self.scope.names

    @property
    def displays(self) -> tuple[n.Display, ...]:
        return tuple(self.compiler.displays)

    def add_pragma(self, pragma: ast.Pragma) -> None:
        """A ``#px:set key=value`` line: checked now, part of the graph's settings."""
        self.compiler.check_setting(pragma.key, pragma.value, pragma.span)
        self.pragmas.append(pragma)

    @deep  # the compiler evaluates nested expressions and user functions recursively
    def add_statement(self, stmt: ast.Stmt) -> Value | None:
        """Compile one more top-level statement in the scope the earlier ones left; returns the
        value of an expression statement (what a REPL shows), None for other statements."""
        names, displays = dict(self.scope.names), len(self.compiler.displays)
        settings = dict(self.compiler.settings)
        value: Value | None = None
        try:
            if isinstance(stmt, ast.ExprStmt):
                value = self.compiler.expression(stmt.value, self.scope)
            else:
                self.compiler.statement(stmt, self.scope)
        except BaseException:
            # a user function may have rebound a global DataFrame, displayed or set a setting
            # before the statement failed: undo that, so the session stays usable
            if self.scope.names != names:
                self.scope.names.clear()
                self.scope.names.update(names)
            del self.compiler.displays[displays:]
            self.compiler.settings.clear()
            self.compiler.settings.update(settings)
            raise
        self.statements.append(stmt)
        return value

    def columns_of(self, name: str) -> tuple[str, ...] | None:
        """The columns of the global DataFrame ``name`` as its statements so far left it (after
        maps, group-bys, merges), None when ``name`` is no DataFrame: a REPL completes them."""
        value = self.scope.names.get(name)
        return value.node.schema.names if isinstance(value, DataFrameValue) else None

    def add_module(self, module: ast.Module) -> None:
        """Every pragma, then every statement of ``module``."""
        for pragma in module.pragmas:
            self.add_pragma(pragma)
        for stmt in module.body:
            self.add_statement(stmt)

    def module(self) -> ast.Module:
        """The statements and pragmas added so far, as one module (what ``plan_script`` reads)."""
        # statements typed one by one have no common text: the module's span is a placeholder
        return ast.Module(Span(1, 1, 1, 1), tuple(self.statements), None, tuple(self.pragmas))

    @deep
    def run_script(self, script: ScriptPlan, args: dict[str, Any] | None = None) -> None:
        """Call the entry functions ``script`` names (an entry function, or vis.json's widgets) with
        the script arguments ``args``, each result becoming a display."""
        values = resolve_arguments(script, args or {})
        compiler = self.compiler
        for call in script.calls:
            func = self.scope.lookup(call.function)
            if not isinstance(func, UserFunctionValue):
                raise UsageError(f"vis.json calls {call.function!r}, which the script does not define")
            span = func.definition.name_span
            kwargs: dict[str, Value] = {}
            for param, (kind, ref) in call.bindings:
                raw = values[ref] if kind == "variable" else ref
                kwargs[param] = _python_literal(raw, span)
            result = compiler.call_user(func, [], kwargs, span)
            if isinstance(result, DataFrameValue):
                compiler.add_display(call.display, result.node, span)
            elif not isinstance(result, NoneValue):
                raise compiler.error(f"{call.function} returns {_describe(result)}, not a DataFrame", span)

    def finish(
        self, *, name: str = "", vis: dict[str, Any] | None = None, args: dict[str, Any] | None = None
    ) -> n.Graph:
        """The plan of the whole script added so far: its entry function (or vis.json's widgets)
        called with ``args``, as ``compile`` does."""
        self.run_script(plan_script(self.module(), name, vis), args)
        return self.graph()

    def graph(self, displays: Sequence[n.Display] | None = None) -> n.Graph:
        """The plan of the displays made so far (or of ``displays``: a REPL runs the new ones),
        with the session's settings."""
        displays = self.compiler.displays if displays is None else displays
        if not displays:
            raise CompileError(
                Diagnostic(
                    "the script displays nothing",
                    None,
                    "call px.display(df, 'name'), or define an entry function that returns a DataFrame",
                ),
                self.source,
            )
        settings = {p.key: p.value for p in self.pragmas}
        settings.update(self.compiler.settings)
        return n.Graph(tuple(displays), self.now_ns, tuple(sorted(settings.items())))


@deep  # the compiler evaluates nested expressions and user functions recursively
def compile(
    module: ast.Module,
    *,
    now_ns: int,
    args: dict[str, Any] | None = None,
    name: str = "",
    vis: dict[str, Any] | None = None,
    catalog: dict[str, TableSchema] | None = None,
    source: ScriptSource | None = None,
) -> n.Graph:
    """Compile a parsed module into a plan Graph.

    ``args`` are script arguments (strings from the CLI or Python values), matched to the entry
    function's parameters or the vis.json variables; ``name`` is the script's name (it picks the
    entry function); ``now_ns`` is the one 'now' every relative time resolves against.
    """
    session = CompileSession(now_ns=now_ns, catalog=catalog, source=source)
    session.add_module(module)
    session.run_script(plan_script(module, name, vis), args)
    return session.graph()
