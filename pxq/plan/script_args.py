"""How a script is run and with which arguments: its entry function or vis.json, its parameters
(the CLI's ``-- --name=value`` flags, the API's ``args``), and the conversion of argument values to
the parameters' types. The compiler (``pxq.plan.compile``) calls the entry functions this decides on.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from pxq.errors import CompileError, Diagnostic, Span, UsageError
from pxq.lang import ast
from pxq.plan.limits import INT64_RANGE, fits_int64, shown

# Names usable as parameter annotations (Pixie's semantic argument types).
ANNOTATION_TYPES = {"str": str, "int": int, "float": float, "bool": bool}


@dataclass(frozen=True)
class ScriptParam:
    """A script argument: an entry-function parameter or a vis.json variable; a CLI flag."""

    name: str
    type: type
    default: Any = None
    has_default: bool = False
    doc: str = ""
    # Where the default is written in the script, to position an error in it (None: vis.json).
    default_span: Span | None = field(default=None, compare=False)


@dataclass(frozen=True)
class EntryCall:
    """A function the runner calls with script arguments, displaying its result as ``display``."""

    function: str
    # (parameter name, ("variable", var) | ("value", constant))
    bindings: tuple[tuple[str, tuple[str, Any]], ...]
    display: str


@dataclass(frozen=True)
class ScriptPlan:
    """How a module is run: which calls make its displays, which parameters it takes."""

    calls: tuple[EntryCall, ...]
    params: tuple[ScriptParam, ...]


def _annotation_type(annotation: ast.Expr | None) -> type:
    if annotation is None:
        return str
    if isinstance(annotation, ast.Name) and annotation.id in ANNOTATION_TYPES:
        return ANNOTATION_TYPES[annotation.id]
    if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
        return ANNOTATION_TYPES.get(annotation.value, str)
    return str  # px.Pod, px.Service, ... are strings


def _constant_of(expr: ast.Expr | None) -> tuple[bool, Any]:
    if isinstance(expr, ast.Constant):
        return True, expr.value
    if (
        isinstance(expr, ast.UnaryOp)
        and expr.op == "-"
        and isinstance(expr.operand, ast.Constant)
        and isinstance(expr.operand.value, (int, float))
    ):
        return True, -expr.operand.value
    return False, None


def _body_runs_itself(module: ast.Module, defs: dict[str, ast.FunctionDef]) -> bool:
    """The module's body displays something itself: it calls px.display/px.debug, or calls one of
    its own functions (which may display), at top level. Such a module has no entry function."""
    for stmt in module.body:
        if isinstance(stmt, ast.ExprStmt) and isinstance(stmt.value, ast.Call):
            func = stmt.value.func
            if isinstance(func, ast.Attribute) and func.attr in ("display", "debug"):
                return True
            if isinstance(func, ast.Name) and func.id in defs:
                return True
    return False


_VIS_TYPES = {"PX_INT64": int, "PX_FLOAT64": float, "PX_BOOLEAN": bool}
# vis.json variable types whose value pxq knows without being told: off Kubernetes every process's
# namespace is "" (px.upid_to_namespace), so a namespace variable without a default (Pixie's UI
# fills it from the cluster the user is looking at) defaults to "". Every other variable without
# a default stays required.
_OFF_KUBERNETES_DEFAULTS = {"PX_NAMESPACE": ""}


def _entry_function(defs: list[ast.FunctionDef], name: str) -> ast.FunctionDef | None:
    """The function a module without top-level displays runs (see ``plan_script``)."""
    callable_ = [f for f in defs if all(p.annotation is not None or p.default is not None for p in f.params)]
    takes_arguments = [f for f in callable_ if any(p.annotation is not None for p in f.params)]
    for candidates in (takes_arguments, callable_, defs):
        if len(candidates) == 1:
            return candidates[0]
        if candidates:
            named = [f for f in candidates if f.name in (name, "main")]
            if len(named) == 1:
                return named[0]
            if candidates is defs and not named:
                return None  # helpers only, none of them callable alone: the script displays nothing
            if len(named) > 1:  # both `main` and a function named like the script
                candidates = named
            listing = ", ".join(f"{f.name} (line {f.name_span.line})" for f in candidates)
            raise CompileError(
                Diagnostic(
                    f"cannot tell which function runs the script: {listing} each could",
                    candidates[-1].name_span,
                    "name the entry function main, or call it at top level: px.display(my_function(...))",
                )
            )
    return None


def _param_docs(docstring: str | None, names: set[str]) -> dict[str, str]:
    """``name: what it means`` lines (and their more indented continuation lines) of an entry
    function's docstring, for the parameters in ``names``."""
    docs: dict[str, str] = {}
    indent: int | None = None
    last: str | None = None
    for line in (docstring or "").split("\n"):
        depth = len(line) - len(line.lstrip())
        match = re.match(r"\s*([A-Za-z_]\w*)\s*(?:\([^)]*\))?\s*:\s*(\S.*)$", line)
        if match and match.group(1) in names and (indent is None or depth <= indent):
            indent, last = depth, match.group(1)
            docs.setdefault(last, match.group(2).strip())
        elif last is not None and indent is not None and line.strip() and depth > indent:  # a continuation line
            docs[last] += " " + line.strip()
        else:
            last = None
    return docs


def _vis_default(var: dict[str, Any], where: str) -> Any:
    """A vis.json variable's default: a plain value, or Pixie's older ``{"value": ...}`` form."""
    default = var.get("defaultValue")
    if isinstance(default, dict):
        if "value" not in default:
            raise UsageError(f'vis.json: {where}.defaultValue: expected a value or {{"value": ...}}, got {default!r}')
        return default["value"]
    return default


def _vis_list(container: dict[str, Any], key: str, where: str) -> list[dict[str, Any]]:
    """``container[key]``: a list of JSON objects (absent or null: none)."""
    items = container.get(key)
    if items is None:
        return []
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise UsageError(f"vis.json: {where}{key}: expected a list of objects, got {items!r:.80}")
    return items


def _vis_name(item: dict[str, Any], key: str, where: str) -> str:
    value = item.get(key)
    if not isinstance(value, str) or not value:
        raise UsageError(f"vis.json: {where}: needs {key!r} (a non-empty string), got {value!r:.80}")
    return value


def widget_display_names(widgets: list[Any]) -> dict[int, str]:
    """The display each vis.json widget shows, by widget index (widgets that show nothing pxq runs
    are absent): a widget with its own ``func`` shows a display of its name (``output_<i>``
    unnamed); widgets showing a ``globalFuncs`` output share one display, named by the widget when
    only one shows it, else by the outputName (Pixie runs each globalFuncs entry once: the P50,
    P90, P99 and throughput charts of one table). The same names for the plan (:func:`_vis_plan`)
    and the charts that look the displays up (``pxq.render.charts``)."""

    def own_name(i: int, widget: dict[str, Any]) -> str:
        name = widget.get("name")
        return str(name) if name not in (None, "") else f"output_{i}"

    showing: dict[Any, list[int]] = {}
    names: dict[int, str] = {}
    for i, widget in enumerate(widgets):
        if not isinstance(widget, dict):
            continue
        if widget.get("func") is not None:
            names[i] = own_name(i, widget)
        elif isinstance(widget.get("globalFuncOutputName"), str):
            showing.setdefault(widget["globalFuncOutputName"], []).append(i)
    for output, shown_by in showing.items():
        for i in shown_by:
            names[i] = output if len(shown_by) > 1 else own_name(i, widgets[i])
    return names


def _vis_plan(vis: dict[str, Any]) -> ScriptPlan:
    """The script plan of a vis.json: its variables are the parameters, each widget calling a
    function (its own ``func``, or a ``globalFuncs`` entry by output name) makes a display.
    A malformed file is a UsageError naming the place, not a Python exception."""
    params = []
    for i, var in enumerate(_vis_list(vis, "variables", "")):
        where = f"variables[{i}]"
        default = _vis_default(var, where)
        if default is None:
            default = _OFF_KUBERNETES_DEFAULTS.get(var.get("type", ""))
        vtype = _VIS_TYPES.get(var.get("type", ""), str)
        doc = var.get("description", "")
        params.append(
            ScriptParam(
                _vis_name(var, "name", where), vtype, default, default is not None, doc if isinstance(doc, str) else ""
            )
        )
    variables = {p.name for p in params}
    global_funcs = {}
    for i, entry in enumerate(_vis_list(vis, "globalFuncs", "")):
        func = entry.get("func")
        if not isinstance(func, dict):
            raise UsageError(f"vis.json: globalFuncs[{i}]: needs 'func' (an object), got {func!r:.80}")
        global_funcs[_vis_name(entry, "outputName", f"globalFuncs[{i}]")] = (func, f"globalFuncs[{i}].func")
    widgets = _vis_list(vis, "widgets", "")
    # A global function runs once however many widgets show its output (widget_display_names).
    display_names = widget_display_names(widgets)
    displayed: set[str] = set()
    calls = []
    for i, widget in enumerate(widgets):
        func, where = widget.get("func"), f"widgets[{i}].func"
        display = display_names.get(i)
        if func is None and widget.get("globalFuncOutputName") is not None:
            output = widget["globalFuncOutputName"]
            if output not in global_funcs:
                raise UsageError(
                    f"vis.json: widgets[{i}]: globalFuncOutputName {output!r} names no globalFuncs "
                    f"entry (entries: {', '.join(map(str, global_funcs)) or 'none'})"
                )
            if display in displayed:
                continue  # the output is already displayed
            func, where = global_funcs[output]
        if func is None:
            continue  # a widget that only shows another's output (text, a graph of a table, ...)
        if not isinstance(func, dict):
            raise UsageError(f"vis.json: {where}: expected an object, got {func!r:.80}")
        bindings = []
        for j, arg in enumerate(_vis_list(func, "args", where + ".")):
            name = _vis_name(arg, "name", f"{where}.args[{j}]")
            if "variable" in arg:
                variable = arg["variable"]
                if variable not in variables:
                    raise UsageError(
                        f"vis.json: {where}.args[{j}]: variable {variable!r} is not among the "
                        f"variables ({', '.join(sorted(variables)) or 'none'})"
                    )
                bindings.append((name, ("variable", variable)))
            else:
                bindings.append((name, ("value", arg.get("value"))))
        calls.append(
            EntryCall(
                _vis_name(func, "name", where),
                tuple(bindings),
                str(display),
            )
        )
        displayed.add(str(display))
    return ScriptPlan(tuple(calls), tuple(params))


def plan_script(module: ast.Module, name: str = "", vis: dict[str, Any] | None = None) -> ScriptPlan:
    """Decide how a module runs: vis.json widgets, or its entry function, or its body alone.

    A module whose body calls ``px.display``, or one of its own functions, at top level needs no
    entry function. Otherwise the entry
    function is found by what it is, so that a script keeps its arguments under any file name: the
    only function taking script arguments (a parameter with an annotation), else the only function
    callable without arguments from outside (every parameter annotated or defaulted), else the only
    ``def``. When several qualify, the one named ``main`` or like the script is taken; else it is a
    CompileError naming them.
    """
    defs = {s.name: s for s in module.body if isinstance(s, ast.FunctionDef)}
    if vis:
        return _vis_plan(vis)
    if _body_runs_itself(module, defs):
        return ScriptPlan((), ())
    entry = _entry_function(list(defs.values()), name)
    if entry is None:
        return ScriptPlan((), ())
    params = []
    docs = _param_docs(entry.docstring, {p.name for p in entry.params})
    for p in entry.params:
        has_default, default = _constant_of(p.default)
        params.append(
            ScriptParam(
                p.name,
                _annotation_type(p.annotation),
                default,
                has_default,
                docs.get(p.name, ""),
                default_span=p.default.span if p.default is not None else None,
            )
        )
    bindings = tuple((p.name, ("variable", p.name)) for p in entry.params)
    return ScriptPlan((EntryCall(entry.name, bindings, entry.name),), tuple(params))


def convert_argument(param: ScriptParam, raw: Any) -> Any:
    """A CLI string (or a Python value from the API) as the parameter's type.

    Integers must fit int64 and strings must be encodable as UTF-8 (Arrow's types), so that a
    script argument can never fail later inside Arrow.
    """
    if param.type is bool:
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise UsageError(f"--{param.name} expects true or false, got {shown(raw)}")
    if param.type is int:
        if isinstance(raw, float) and not (math.isfinite(raw) and raw.is_integer()):
            raise UsageError(f"--{param.name} expects int, got {shown(raw)}")
        try:
            value = int(raw)
        except (TypeError, ValueError, OverflowError):
            raise UsageError(f"--{param.name} expects int, got {shown(raw)}") from None
        if not fits_int64(value):
            raise UsageError(
                f"--{param.name} expects int, got {shown(raw)}, which is out of range "
                f"for a 64-bit integer ({INT64_RANGE})"
            )
        return value
    if param.type is float:
        try:
            number = float(raw)
        except (TypeError, ValueError, OverflowError):
            raise UsageError(f"--{param.name} expects float, got {shown(raw)}") from None
        if not math.isfinite(number):
            raise UsageError(f"--{param.name} expects a finite number, got {shown(raw)}")
        return number
    text = str(raw)
    bad = _surrogate_at(text)
    if bad is not None:
        raise UsageError(
            f"--{param.name} is not valid text: character {bad + 1} is a lone surrogate "
            f"{text[bad]!r} (an undecodable byte?); pass UTF-8 text"
        )
    return text


def _surrogate_at(text: str) -> int | None:
    """The index of the first lone surrogate in ``text`` (not encodable as UTF-8), or None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start
    return None


def resolve_arguments(script: ScriptPlan, args: dict[str, Any]) -> dict[str, Any]:
    """Script argument values by parameter name, from ``args`` and the defaults."""
    known = {p.name: p for p in script.params}
    unknown = [k for k in args if k not in known]
    if unknown:
        listing = ", ".join("--" + p for p in known) or "none"
        raise UsageError(f"unknown script argument --{unknown[0]} (arguments: {listing})")
    values = {}
    for param in script.params:
        if param.name in args:
            values[param.name] = convert_argument(param, args[param.name])
        elif param.has_default:
            values[param.name] = _convert_default(param) if param.default is not None else None
        else:
            about = f" ({param.doc.strip()})" if param.doc.strip() else ""
            raise UsageError(
                f"missing script argument --{param.name}{about}: it has no default, give it after '--' "
                f"as --{param.name}=VALUE"
            )
    return values


def _convert_default(param: ScriptParam) -> Any:
    """A parameter's default as its type; a default that does not fit is an error in the script."""
    try:
        return convert_argument(param, param.default)
    except UsageError as exc:
        if param.default_span is None:
            raise
        kind = param.type.__name__
        raise CompileError(
            Diagnostic(
                f"the default of parameter '{param.name}' is not a valid {kind}: {shown(param.default)}",
                param.default_span,
                f"an int parameter takes whole numbers in {INT64_RANGE}"
                if param.type is int
                else f"give '{param.name}' a default of type {kind}",
            )
        ) from exc
