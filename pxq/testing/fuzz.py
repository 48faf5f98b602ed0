"""Fuzzing PxL through every stage pxq runs: generate and mutate scripts, run them, sort the outcomes.

Three parts, each usable alone:

* **Programs.** ``program(seed, i)`` is program ``i`` of ``seed``, reproducible from those two
  numbers alone (``random.Random(f"{seed}:{i}")``). Most are written by ``ProgramGenerator``, a
  grammar-directed generator of valid PxL that tracks every DataFrame's columns and types and
  calls the ``px.*`` functions of the registry with arguments of the right types (and now and
  then the wrong ones); the rest are mutations of the bundled scripts and the corpora
  (``Mutator``: token-level and AST-level edits, splices between scripts, extreme literals,
  random characters).
* **The oracle.** ``Oracle.run`` takes one program through what ``pxq explain`` and
  ``pxq run`` do: parse, compile, optimize (with the per-rule trace), format the plans, split,
  print the manifest (text and JSON, read back) and the eBPF programs, execute over each small
  capture of ``build_captures`` (normal, empty, all-null, partly null) and render the results as
  table, JSON and CSV. The outcome is ``ok``; ``diagnostic`` (an error the CLI reports without a
  traceback: the ``PxqError`` family); or a finding: ``traceback`` (any other exception),
  ``unpositioned`` (a script diagnostic without line:col, except "the script displays
  nothing", which is about no place in particular), ``hang`` (over the wall limit), ``memory``
  (over the address-space limit: 4 GiB beyond what the worker reserved once pxq and pyarrow
  were loaded) or ``crash`` (the worker died).
* **The runner.** ``FuzzRunner`` runs programs in worker subprocesses, each limited by
  ``RLIMIT_AS`` and a per-program wall clock; a worker handles many programs and is replaced
  when one hangs or kills it. Findings are grouped into classes by (kind, exception type,
  innermost pxq frame; for a hang, the pxq function with most frames in a stack dump taken just
  before the kill), keeping the shortest reproducers of each; ``minimize`` shrinks them.

``bench/fuzz_pxl.py`` is the command line; ``tests/fuzz/test_fuzz_slice.py`` runs a fixed slice.
"""

from __future__ import annotations

import contextlib
import dataclasses
import faulthandler
import io
import itertools
import json
import os
import random
import re
import resource
import select
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
# Pixie's own scripts, kept outside the repository (they are Pixie's, not ours): where this project's
# machines keep them, or PXQ_CONFORMANCE_DIR.
CONFORMANCE_DIR = Path(os.environ.get("PXQ_CONFORMANCE_DIR", "/work/shared/conformance/pixie-px"))
# The corpora mutated: the bundled scripts and the parser's and planner's corpora; the bench adds
# the fuzzer's own reproducers and Pixie's scripts (left out of the test slice, whose programs
# must not change each time a reproducer is added).
REPO_CORPUS_GLOBS = ("scripts/*/*.pxl", "tests/lang/corpus/*.pxl", "tests/plan/corpus/*.pxl")
EXTENDED_CORPUS_GLOBS = ("tests/fuzz/reproducers/*.pxl",)

WALL_LIMIT_S = 20.0
MEMORY_LIMIT_BYTES = 4 << 30
FINDING_KINDS = ("traceback", "unpositioned", "hang", "memory", "crash")
# A diagnostic about the script as a whole has no place to point at.
WHOLE_SCRIPT_MESSAGES = ("the script displays nothing",)

INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)


# ================================================================ the language, as pxq defines it


def _registry():
    from pxq.funcs.registry import AGGREGATES, SCALARS

    return SCALARS, AGGREGATES


def _types():
    from pxq.types import DataType

    return DataType


# Operators are registry functions too; the generator writes them as PxL operators.
INFIX = {
    "add": "+",
    "subtract": "-",
    "multiply": "*",
    "divide": "/",
    "modulo": "%",
    "equal": "==",
    "notEqual": "!=",
    "lessThan": "<",
    "lessThanEqual": "<=",
    "greaterThan": ">",
    "greaterThanEqual": ">=",
    "logicalAnd": "and",
    "logicalOr": "or",
}
PREFIX = {"logicalNot": "not ", "negate": "-", "invert": "~"}


@dataclass(frozen=True)
class Overload:
    """One way to call a registry function: argument types and the type it returns."""

    name: str
    arg_types: tuple  # DataType per argument
    returns: Any  # DataType
    literal: tuple[bool, ...]  # which arguments must be compile-time constants
    param_names: tuple[str, ...]


_OVERLOADS: dict | None = None


def overloads() -> dict:
    """Return type -> every (function, argument types) the registry accepts that gives it."""
    global _OVERLOADS
    if _OVERLOADS is not None:
        return _OVERLOADS
    from pxq.funcs.registry import resolve_type

    scalars, _ = _registry()
    DataType = _types()
    every = tuple(DataType)
    table: dict = {t: [] for t in DataType}
    for fn in scalars.values():
        if fn.name.startswith("_"):
            continue
        choices = [sorted(p.types, key=str) if p.types is not None else every for p in fn.params]
        for combo in itertools.product(*choices):
            try:
                ret = resolve_type(fn.returns, tuple(combo))
            except Exception:  # the rule refuses this combination
                continue
            if ret in table:
                table[ret].append(
                    Overload(
                        fn.name,
                        tuple(combo),
                        ret,
                        tuple(p.literal for p in fn.params),
                        tuple(p.name for p in fn.params),
                    )
                )
    _OVERLOADS = table
    return table


def catalog_schema(table: str) -> dict:
    from pxq.tables import CATALOG

    return {c.name: c.type for c in CATALOG[table].columns}


def table_names() -> list[str]:
    from pxq.tables import CATALOG

    return sorted(CATALOG)


# ---------------------------------------------------------------- literals

EXTREME_INTS = [
    0,
    1,
    -1,
    INT64_MAX,
    INT64_MIN,
    INT64_MAX + 1,
    INT64_MIN - 1,
    2**64,
    2**64 + 1,
    10**30,
    -(10**40),
    2**31,
    -(2**31),
    2**53 + 1,
]
INT_SPELLINGS = [
    "0x7fffffffffffffff",
    "0x8000000000000000",
    "0b1011",
    "0o777",
    "1_000_000",
    "00",
    "0xFFFF_FFFF_FFFF_FFFF_FFFF",
]
EXTREME_FLOATS = [
    "1e309",
    "-1e309",
    "1e-400",
    "0.0",
    "-0.0",
    "1.7976931348623157e308",
    "5e-324",
    ".5",
    "5.",
    "1_000.000_1",
    "2.5e+3",
    "9007199254740993.0",
    "(1e309 - 1e309)",
    "(0.0 / 0.0)",
    "px.sqrt(-1.0)",
    "px.log(0.0, 2.0)",
]  # NaN, -inf
PLAIN_STRINGS = [
    "GET",
    "POST",
    "/api/items",
    "/",
    "",
    "OK",
    "nginx",
    "10.0.0.1",
    "127.0.0.1",
    "error",
    '{"a": 1}',
    "p50",
    "Host",
    "latency",
    "x",
]
ODD_STRINGS = [
    "héllo wörld",
    "日本語のテキスト",
    "\U0001f600\U0001f4a9",
    "\x00",
    "\t\n\r",
    "\u200b",
    "\ud800",
    "\udfff",
    "\\",
    "'",
    '"',
    "\ufeff",
    "a\u0301",
    "\U0010ffff",
    "%s%d{}",
    "../../etc/passwd",
    "*",
    "NULL",
    "None",
    "nan",
    "inf",
    "-0",
]
REGEXES = [
    ".*",
    "^/api/.*",
    "[0-9]+",
    "a|b",
    "GET|POST",
    "^$",
    "(",
    "[",
    "*",
    "(?P<x>a)",
    r"\d+",
    r"\bapi\b",
    "(a*)*b",
    "x{1000}",
    "(?i)get",
    "\\",
    "[^\\x00-\\x7f]",
    "é+",
]
JSON_KEYS = ["Host", "User-Agent", "name", "ok", "p50", "p99", "", "a.b", "0", "Content-Type", "日本"]
TIME_STRINGS = [
    "-5m",
    "-30s",
    "-1h",
    "-2d",
    "-100ms",
    "-5µs",
    "-10us",
    "-1000ns",
    " -5m ",
    "-0s",
    "5m",
    "-99999999999d",
    "-9223372036854775808ns",
    "-1s",
    "-300s",
    "2025-11-26 00:00:00 +0000",
    "2025-11-26T00:01:00Z",
    "2025-11-26 00:02:00.5",
    "2025-11-26T00:02:00.123456",
    "1970-01-01 00:00:00",
    "9999-12-31 23:59:59",
    "0001-01-01T00:00:00",
    "yesterday",
    "",
    "-5 m",
    "-5M",
    "--5m",
    "-1.5m",
]
DISPLAY_NAMES = ["output", "out", "stats", "", "日本", "a b", "x" * 300, "\U0001f600", "output\n"]
# Plain keys are query settings; "<collector>.<option>" ones reach the agent through the manifest.
PRAGMA_KEYS = [
    "max_output_rows_per_table",
    "explain",
    "analyze",
    "x",
    "perf_profiler.sample_hz",
    "perf_profiler.stack_copy_bytes",
    "perf_profiler.counts_size",
    "perf_profiler.python",
    "perf_profiler.drain_interval_s",
    "socket_tracer.body_limit",
]
PRAGMA_VALUES = [
    "1",
    "5",
    "0",
    "-1",
    "500",
    "100000000000000000000",
    "abc",
    "true",
    "1.5",
    "",
    "1e3",
    "1e400",
    "nan",
    "-inf",
    "99",
]


def string_literal(rng: random.Random, value: str) -> str:
    """``value`` written as a PxL string literal (Python's escapes, which PxL shares)."""
    kind = rng.random()
    if (
        kind < 0.08
        and "'''" not in value
        and not value.endswith(("'", "\\"))
        and "\\" not in value
        and not any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    ):
        return "'''" + value + "'''"
    if kind < 0.12 and value and all(c.isalnum() for c in value):
        return "r" + repr(value)
    text = repr(value)
    if kind < 0.16 and len(value) > 1:  # implicit concatenation
        cut = rng.randrange(1, len(value))
        text = repr(value[:cut]) + " " + repr(value[cut:])
    return text


def huge_string(rng: random.Random) -> str:
    size = rng.choice([1_000, 10_000, 100_000, 300_000])
    unit = rng.choice(["x", "é", "\U0001f600", "ab", "\\"])
    return unit * (size // len(unit))


# ================================================================ the generator


@dataclass
class Frame:
    """A DataFrame variable the generated program holds: its columns and their types."""

    var: str
    columns: dict  # name -> DataType


class ProgramGenerator:
    """Writes one valid PxL program (as pxq compiles it) from a seeded random source.

    The generator keeps the type of every column of every DataFrame it built so that the
    expressions it writes type-check; a small share of choices is deliberately wrong (a wrong
    argument type, an unknown column, a bad time) to reach the diagnostics too.
    """

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.DataType = _types()
        self.overloads = overloads()
        self.scalars, self.aggregates = _registry()
        self.lines: list[str] = []
        self.indent = ""
        self.fresh = itertools.count()
        self.display_names: set[str] = set()
        self.wrongness = rng.choice([0.0, 0.0, 0.01, 0.03, 0.08])
        self.helpers: list[tuple[str, list, Any]] = []  # scalar helpers: name, param types, return type
        self.params: dict[str, Any] = {}  # entry-function parameters usable in expressions

    # -- output

    def emit(self, line: str) -> None:
        self.lines.append(self.indent + line)

    def name(self, prefix: str) -> str:
        return f"{prefix}{next(self.fresh)}"

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    def wrong(self) -> bool:
        return self.rng.random() < self.wrongness

    # -- literals

    def int_literal(self, small: bool = False) -> str:
        rng = self.rng
        r = rng.random()
        if small or r < 0.7:
            return str(rng.choice([0, 1, 2, 3, 5, 10, 100, 200, 404, 500, 1000, 1_000_000, 250_000_000]))
        if r < 0.85:
            value = rng.choice(EXTREME_INTS)
            return str(value) if value >= 0 else f"({value})" if rng.random() < 0.5 else str(value)
        return rng.choice(INT_SPELLINGS)

    def float_literal(self) -> str:
        if self.chance(0.75):
            return repr(self.rng.choice([0.5, 1.5, 2.0, 0.001, 100.25, 3.14159, 1e6]))
        return self.rng.choice(EXTREME_FLOATS)

    def str_value(self, purpose: str = "") -> str:
        rng = self.rng
        if purpose == "pattern":
            return rng.choice(REGEXES)
        if purpose == "key":
            return rng.choice(JSON_KEYS)
        r = rng.random()
        if r < 0.75:
            return rng.choice(PLAIN_STRINGS)
        if r < 0.97:
            return rng.choice(ODD_STRINGS)
        return huge_string(rng)

    def literal(self, dtype, purpose: str = "") -> str:
        DT = self.DataType
        if dtype is DT.INT64:
            if purpose in ("decimals", "pos", "length", "index"):
                return str(self.rng.choice([0, 1, 2, 3, -1, 100, INT64_MAX]))
            if purpose == "size":
                return self.rng.choice(
                    ["1000000000", "1", "0", "-5", "60000000000", "px.seconds(10)", "px.minutes(1)", str(INT64_MAX)]
                )
            return self.int_literal()
        if dtype is DT.FLOAT64:
            return self.float_literal()
        if dtype is DT.STRING:
            return string_literal(self.rng, self.str_value(purpose))
        if dtype is DT.BOOLEAN:
            return self.rng.choice(["True", "False"])
        if dtype is DT.TIME64NS:
            return self.rng.choice(
                [
                    "px.now()",
                    f"px.Time({self.int_literal()})",
                    "px.now() - px.minutes(1)",
                    f"px.int64_to_time({self.int_literal()})",
                ]
            )
        # UINT128 has no literal: a string stands in (the compiler may refuse it)
        return string_literal(self.rng, self.rng.choice(["0:1000:500000", "", "not-a-upid"]))

    # -- expressions

    def atoms_of(self, frame: Frame | None) -> list[tuple[str, Any]]:
        atoms = []
        if frame is not None:
            for col, dtype in frame.columns.items():
                if col.isidentifier() and self.chance(0.7):
                    atoms.append((f"{frame.var}.{col}", dtype))
                else:
                    atoms.append((f"{frame.var}[{col!r}]", dtype))
        atoms.extend(self.params.items())
        return atoms

    def expr(self, dtype, atoms: list[tuple[str, Any]], depth: int) -> str:
        """An expression of type ``dtype`` over ``atoms`` (column references and parameters)."""
        rng = self.rng
        if self.wrong():
            dtype = rng.choice(list(self.DataType))
        matching = [text for text, t in atoms if t is dtype]
        if depth <= 0 or rng.random() < 0.3:
            if matching and rng.random() < 0.75:
                return rng.choice(matching)
            return self.literal(dtype)
        if self.helpers and rng.random() < 0.08:
            fitting = [h for h in self.helpers if h[2] is dtype]
            if fitting:
                name, param_types, _ = rng.choice(fitting)
                args = [self.expr(t, atoms, depth - 1) for t in param_types]
                return f"{name}({', '.join(args)})"
        candidates = self.overloads.get(dtype) or []
        if not candidates:
            return self.literal(dtype)
        ov = rng.choice(candidates)
        return self.call(ov, atoms, depth)

    def call(self, ov: Overload, atoms, depth: int) -> str:
        rng = self.rng
        args = []
        for i, (arg_type, literal) in enumerate(zip(ov.arg_types, ov.literal)):
            param_name = ov.param_names[i]
            if ov.name == "equals_any" and i == 1:
                items = [self.literal(ov.arg_types[0]) for _ in range(rng.randint(0, 4))]
                args.append("[" + ", ".join(items) + "]")
            elif literal and not self.wrong():
                args.append(self.literal(arg_type, param_name))
            else:
                args.append(self.expr(arg_type, atoms, depth - 1))
        if ov.name in INFIX and len(args) == 2:
            return f"({args[0]} {INFIX[ov.name]} {args[1]})"
        if ov.name in PREFIX and len(args) == 1:
            return f"({PREFIX[ov.name]}{args[0]})"
        fn = self.scalars[ov.name]
        # omit defaulted trailing arguments sometimes; name arguments sometimes
        while args and fn.params[len(args) - 1].has_default and rng.random() < 0.3:
            args.pop()
        if rng.random() < 0.15 and not fn.variadic:
            parts = [f"{fn.params[i].name}={a}" for i, a in enumerate(args)]
        else:
            parts = args
        return f"px.{ov.name}({', '.join(parts)})"

    def deep_expr(self, atoms) -> tuple[str, Any]:
        """A long left-deep or parenthesised chain: stresses recursion in every stage."""
        DT = self.DataType
        depth = self.rng.choice([10, 20, 40, 60, 90, 90, 150, 1200])
        ints = [t for t, ty in atoms if ty is DT.INT64] or ["1"]
        base = self.rng.choice(ints)
        style = self.rng.random()
        if style < 0.4:
            return "(" * depth + base + "".join(f" + {i % 7})" for i in range(depth)), DT.INT64
        if style < 0.7:
            text = base
            for i in range(depth):
                text = f"px.abs({text})" if i % 2 else f"({text} * 1)"
            return text, DT.INT64
        if style < 0.85:
            return " + ".join([base] * depth), DT.INT64
        return "not " * depth + "True", DT.BOOLEAN

    # -- DataFrames

    def time_value(self) -> str:
        rng = self.rng
        r = rng.random()
        if "start_time" in self.params and r < 0.3:
            return "start_time"
        if r < 0.6:
            return string_literal(rng, rng.choice(TIME_STRINGS[:5]))
        if r < 0.8:
            return string_literal(rng, rng.choice(TIME_STRINGS))
        return rng.choice(
            [
                "px.now() - px.minutes(5)",
                "px.now() - px.seconds(30)",
                "1764115200000000000",
                "0",
                "-1",
                str(INT64_MAX),
                "px.now() - px.hours(1e10)",
                "px.now()",
                "px.now() + px.days(3)",
                "px.Time(1764115250000000000)",
                "px.now() - 5",
                "1.5",
                "True",
                "None",
                "[1]",
                str(2**64),
            ]
        )

    def new_dataframe(self, var: str, table: str | None = None) -> Frame:
        rng = self.rng
        if table is None:
            table = "http_events" if rng.random() < 0.8 else rng.choice(table_names())
        columns = catalog_schema(table)
        args = [string_literal(rng, table) if rng.random() < 0.99 else repr(table.upper())]
        if rng.random() < 0.3:
            keep = rng.sample(list(columns), rng.randint(1, len(columns)))
            if "upid" in columns and "upid" not in keep and rng.random() < 0.5:
                keep.append("upid")
            if self.wrong():
                keep.append("no_such_column")
            args.append(f"select=[{', '.join(repr(c) for c in keep)}]")
            columns = {c: columns[c] for c in keep if c in columns}
        if rng.random() < 0.85:
            args.append(f"start_time={self.time_value()}")
        if rng.random() < 0.25:
            end = self.time_value() if self.wrong() else rng.choice(["'-0s'", "px.now()", "'-1s'", "None"])
            args.append(f"end_time={end}")
        if rng.random() < 0.5:
            args[0] = "table=" + args[0]
        self.emit(f"{var} = px.DataFrame({', '.join(args)})")
        if rng.random() < 0.05:
            self.emit(f"{var} = {var}.stream()")
        return Frame(var, dict(columns))

    def columns_of(self, frame: Frame, dtype=None) -> list[str]:
        return [c for c, t in frame.columns.items() if dtype is None or t is dtype]

    def step(self, frame: Frame) -> Frame:
        """One statement (or a few) transforming ``frame``; returns the frame afterwards."""
        rng = self.rng
        DT = self.DataType
        kind = rng.choices(
            [
                "map",
                "filter",
                "select",
                "drop",
                "agg",
                "head",
                "merge",
                "append",
                "ctx",
                "shared",
                "deep",
                "helper",
                "set",
                "display",
                "column_alias",
            ],
            [30, 14, 5, 5, 10, 4, 5, 4, 6, 2, 1, 5, 2, 3, 2],
        )[0]
        atoms = self.atoms_of(frame)
        if not frame.columns:
            kind = "map"
        if kind == "map":
            dtype = rng.choice([DT.INT64, DT.INT64, DT.FLOAT64, DT.STRING, DT.STRING, DT.BOOLEAN, DT.TIME64NS])
            col = self.name("c") if rng.random() < 0.8 or not frame.columns else rng.choice(list(frame.columns))
            value = self.expr(dtype, atoms, rng.randint(1, 4))
            if rng.random() < 0.8:
                self.emit(f"{frame.var}.{col} = {value}")
            else:
                self.emit(f"{frame.var}[{col!r}] = {value}")
            frame.columns[col] = dtype
            return frame
        if kind == "filter":
            cond = self.expr(DT.BOOLEAN, atoms, rng.randint(1, 4))
            if rng.random() < 0.8:
                self.emit(f"{frame.var} = {frame.var}[{cond}]")
            else:
                self.emit(f"{frame.var} = {frame.var}.filter({cond})")
            return frame
        if kind == "select":
            keep = rng.sample(list(frame.columns), rng.randint(1, len(frame.columns)))
            if self.wrong():
                keep.append("missing_col")
            self.emit(f"{frame.var} = {frame.var}[[{', '.join(repr(c) for c in keep)}]]")
            frame.columns = {c: frame.columns[c] for c in keep if c in frame.columns}
            return frame
        if kind == "drop":
            n_drop = rng.randint(1, max(1, len(frame.columns) - 1))
            if rng.random() < 0.03:
                n_drop = len(frame.columns)  # all of them
            dropped = rng.sample(list(frame.columns), min(n_drop, len(frame.columns)))
            arg = (
                repr(dropped[0])
                if len(dropped) == 1 and rng.random() < 0.5
                else "[" + ", ".join(repr(c) for c in dropped) + "]"
            )
            self.emit(f"{frame.var} = {frame.var}.drop({arg})")
            frame.columns = {c: t for c, t in frame.columns.items() if c not in dropped}
            return frame
        if kind == "agg":
            return self.aggregate(frame)
        if kind == "head":
            count = rng.choice(["5", "1", "0", "100", "1000000", str(INT64_MAX), "-1", str(2**64)])
            if "limit" in self.params and rng.random() < 0.4:
                count = "limit"
            self.emit(f"{frame.var} = {frame.var}.head({'n=' if rng.random() < 0.3 else ''}{count})")
            return frame
        if kind == "merge":
            return self.merge(frame)
        if kind == "append":
            other = self.name("part")
            if rng.random() < 0.5:
                self.emit(f"{other} = {frame.var}.head({rng.choice([0, 1, 3, 50])})")
            else:
                self.emit(f"{other} = {frame.var}[{self.expr(DT.BOOLEAN, atoms, 2)}]")
            many = rng.random() < 0.3
            self.emit(f"{frame.var} = {frame.var}.append({'[' + other + ', ' + other + ']' if many else other})")
            return frame
        if kind == "ctx":
            if "upid" not in frame.columns and not self.wrong():
                return self.step(frame)
            from pxq.plan.compile import CTX_FUNCTIONS

            key = rng.choice(sorted(CTX_FUNCTIONS)) if not self.wrong() else "no_such_key"
            col = self.name("meta")
            self.emit(f"{frame.var}.{col} = {frame.var}.ctx[{key!r}]")
            ret = self.scalars[CTX_FUNCTIONS[key]].returns if key in CTX_FUNCTIONS else DT.STRING
            frame.columns[col] = ret if isinstance(ret, DT) else DT.STRING
            return frame
        if kind == "shared":
            # x = x + x doubles a shared subexpression: a DAG that explodes if anything expands it.
            ints = self.columns_of(frame, DT.INT64)
            base = f"{frame.var}.{ints[0]}" if ints and ints[0].isidentifier() else "1"
            var = self.name("x")
            self.emit(f"{var} = {base}")
            for _ in range(rng.choice([2, 3, 5, 8, 12, 16]) if rng.random() < 0.9 else rng.choice([24, 40, 64])):
                self.emit(f"{var} = {var} {rng.choice(['+', '*', '-'])} {var}")
            col = self.name("shared")
            self.emit(f"{frame.var}.{col} = {var}")
            frame.columns[col] = DT.INT64
            return frame
        if kind == "deep":
            text, dtype = self.deep_expr(atoms)
            col = self.name("deep")
            self.emit(f"{frame.var}.{col} = {text}")
            frame.columns[col] = dtype
            return frame
        if kind == "helper":
            return self.helper(frame)
        if kind == "set":
            self.emit(f"px.set({rng.choice(PRAGMA_KEYS)!r}, {rng.choice(['3', '500', repr('abc'), 'True', '0'])})")
            return frame
        if kind == "display":
            self.display(frame)
            return frame
        if kind == "column_alias":
            col = rng.choice(list(frame.columns))
            alias = self.name("alias")
            self.emit(f"{frame.var}.{alias} = {frame.var}[{col!r}]")
            frame.columns[alias] = frame.columns[col]
            return frame
        return frame

    def aggregate(self, frame: Frame) -> Frame:
        rng = self.rng
        from pxq.funcs.registry import resolve_type

        keyable = [c for c in frame.columns]
        keys = rng.sample(keyable, rng.randint(0, min(3, len(keyable)))) if keyable else []
        specs, out_columns = [], {}
        for _ in range(rng.randint(1, 5)):
            fn = self.aggregates[rng.choice(sorted(self.aggregates))]
            fitting = [c for c, t in frame.columns.items() if fn.input_types is None or t in fn.input_types]
            if not fitting or self.wrong():
                fitting = list(frame.columns)
            if not fitting:
                break
            col = rng.choice(fitting)
            try:
                ret = resolve_type(fn.returns, (frame.columns[col],))
            except Exception:
                ret = frame.columns[col]
            out = self.name("agg")
            specs.append(f"{out}=({col!r}, px.{fn.name})")
            out_columns[out] = ret
        if not specs:
            return frame
        if keys:
            by = repr(keys[0]) if len(keys) == 1 and rng.random() < 0.5 else "[" + ", ".join(map(repr, keys)) + "]"
            self.emit(f"{frame.var} = {frame.var}.groupby({by}).agg({', '.join(specs)})")
        else:
            self.emit(f"{frame.var} = {frame.var}.agg({', '.join(specs)})")
        frame.columns = {**{k: frame.columns[k] for k in keys}, **out_columns}
        return frame

    def merge(self, frame: Frame) -> Frame:
        rng = self.rng
        from pxq.plan import nodes as n

        right = self.new_dataframe(self.name("right"))
        if rng.random() < 0.5:
            right = self.aggregate(right)
        pairs = [(lc, rc) for lc, lt in frame.columns.items() for rc, rt in right.columns.items() if lt is rt]
        if not pairs:
            return frame
        same = [(lc, rc) for lc, rc in pairs if lc == rc]
        chosen = rng.sample(same or pairs, 1 if rng.random() < 0.7 else min(2, len(same or pairs)))
        how = rng.choice(["inner", "inner", "left", "right", "outer"]) if not self.wrong() else "cross"
        suffixes = rng.choice([("_x", "_y"), ("_l", "_r"), ("", "_2")])
        left_on, right_on = [lc for lc, _ in chosen], [rc for _, rc in chosen]
        if left_on == right_on and rng.random() < 0.5:
            keys = f"on={left_on!r}"
        else:
            keys = f"left_on={left_on!r}, right_on={right_on!r}"
        suffix_arg = f", suffixes={list(suffixes)!r}" if suffixes != ("_x", "_y") or rng.random() < 0.3 else ""
        self.emit(f"{frame.var} = {frame.var}.merge({right.var}, how={how!r}, {keys}{suffix_arg})")
        left_schema = n.Schema(tuple(n.Field(c, t) for c, t in frame.columns.items()))
        right_schema = n.Schema(tuple(n.Field(c, t) for c, t in right.columns.items()))
        layout = n.join_layout(left_schema, right_schema, left_on, right_on, suffixes)
        merged = {}
        for out, side, name in layout:
            merged[out] = (frame if side == "left" else right).columns[name]
        frame.columns = merged
        return frame

    def helper(self, frame: Frame) -> Frame:
        """A user function: a DataFrame transformer (called now) or a scalar helper (used later)."""
        rng = self.rng
        DT = self.DataType
        fname = self.name("helper")
        if rng.random() < 0.5 and frame.columns:
            param_type = rng.choice([DT.INT64, DT.STRING, DT.FLOAT64, DT.BOOLEAN])
            annotation = {DT.INT64: "int", DT.STRING: "str", DT.FLOAT64: "float", DT.BOOLEAN: "bool"}[param_type]
            self.emit(f"def {fname}(frame, k: {annotation} = {self.literal(param_type)}):")
            inner = Frame("frame", dict(frame.columns))
            saved_indent, saved_params = self.indent, self.params
            self.indent += "    "
            self.params = {**self.params, "k": param_type}
            for _ in range(rng.randint(1, 3)):
                inner = self.step(inner) if rng.random() < 0.3 else self.simple_map(inner)
            self.emit("return frame")
            self.indent, self.params = saved_indent, saved_params
            arg = self.literal(param_type) if rng.random() < 0.7 else f"k={self.literal(param_type)}"
            self.emit(
                f"{frame.var} = {fname}({frame.var}, {arg})"
                if rng.random() < 0.85
                else f"{frame.var} = {fname}({frame.var})"
            )
            frame.columns = inner.columns
            return frame
        # scalar helper: def f(a, b: int = 2): return <expr over a, b>
        types = [rng.choice([DT.INT64, DT.FLOAT64, DT.STRING]) for _ in range(rng.randint(1, 3))]
        names = [f"a{i}" for i in range(len(types))]
        ret = rng.choice(types)
        body = self.expr(ret, list(zip(names, types)), 3)
        params = ", ".join(names)
        if rng.random() < 0.5:
            self.emit(f"def {fname}({params}):")
            self.emit(f"    return {body}")
        else:
            self.emit(f"def {fname}({params}): return {body}")
        self.helpers.append((fname, types, ret))
        if rng.random() < 0.03:  # unbounded recursion: the compiler must refuse it
            rec = self.name("rec")
            self.emit(f"def {rec}(v): return {rec}(v)")
            self.emit(f"{frame.var}.{self.name('c')} = {rec}(1)")
        return frame

    def simple_map(self, frame: Frame) -> Frame:
        DT = self.DataType
        dtype = self.rng.choice([DT.INT64, DT.STRING, DT.FLOAT64, DT.BOOLEAN])
        col = self.name("c")
        self.emit(f"{frame.var}.{col} = {self.expr(dtype, self.atoms_of(frame), 2)}")
        frame.columns[col] = dtype
        return frame

    def display(self, frame: Frame) -> None:
        rng = self.rng
        name = self.name("out") if rng.random() < 0.85 else rng.choice(DISPLAY_NAMES)
        if name in self.display_names and not self.wrong():
            name = self.name("out")
        self.display_names.add(name)
        args = [frame.var, string_literal(rng, name)]
        if rng.random() < 0.2 and frame.columns:
            cols = rng.sample(list(frame.columns), rng.randint(1, len(frame.columns)))
            args.append(f"cols={cols!r}")
        fn = "debug" if rng.random() < 0.1 else "display"
        if rng.random() < 0.3:
            args[1] = "name=" + args[1]
        self.emit(f"px.{fn}({', '.join(args)})")

    # -- whole programs

    def program(self) -> str:
        rng = self.rng
        DT = self.DataType
        header = []
        for _ in range(rng.choice([0, 0, 0, 1, 2])):
            value = rng.choice(PRAGMA_VALUES) if rng.random() < 0.5 else rng.choice(["1", "5", "500", "3"])
            header.append(f"#px:set {rng.choice(PRAGMA_KEYS)}={value}")
        if rng.random() < 0.2:
            header.append('"""A generated script."""')
        header.append("import px" if rng.random() < 0.95 else "import px as px")
        self.lines = header
        entry = rng.random() < 0.3
        if entry:
            self.params = {"start_time": DT.STRING, "limit": DT.INT64, "flag": DT.BOOLEAN, "ratio": DT.FLOAT64}
            defaults = {
                "start_time": string_literal(rng, rng.choice(TIME_STRINGS[:6])),
                "limit": self.int_literal(True),
                "flag": "True",
                "ratio": self.float_literal(),
            }
            annotations = {"start_time": "str", "limit": "int", "flag": "bool", "ratio": "float"}
            params = ", ".join(f"{p}: {annotations[p]} = {defaults[p]}" for p in self.params)
            self.emit("")
            self.emit(f"def main({params}):")
            self.indent = "    "
        frame = self.new_dataframe("df")
        length = rng.choices([rng.randint(1, 6), rng.randint(6, 20), rng.randint(50, 250)], [70, 25, 5])[0]
        for _ in range(length):
            frame = self.step(frame)
        if entry:
            if rng.random() < 0.8:
                self.emit(f"return {frame.var}")
            else:
                self.display(frame)
            self.indent = ""
        else:
            self.display(frame)
        return "\n".join(self.lines) + ("\n" if rng.random() < 0.95 else "")


# ================================================================ mutation of real scripts


@dataclass(frozen=True)
class Seed:
    name: str
    text: str
    vis: dict | None = None


def load_corpus(include_conformance: bool = True, root: Path = REPO_ROOT) -> list[Seed]:
    """The scripts mutations start from, in a fixed order (so program i stays program i).

    ``include_conformance``: also the fuzzer's reproducers and Pixie's scripts (the bench);
    without, only the repository's scripts and corpora (the test slice)."""
    seeds = []
    paths = sorted(p for pattern in REPO_CORPUS_GLOBS for p in root.glob(pattern))
    if include_conformance:
        paths += sorted(p for pattern in EXTENDED_CORPUS_GLOBS for p in root.glob(pattern))
    if include_conformance and CONFORMANCE_DIR.is_dir():
        paths += sorted(CONFORMANCE_DIR.glob("*/*.pxl"))
    for path in paths:
        vis = None
        vis_path = path.parent / "vis.json"
        if vis_path.exists():
            try:
                vis = json.loads(vis_path.read_text(encoding="utf-8"))
            except ValueError:
                vis = None
        seeds.append(
            Seed(
                str(path.relative_to(root) if path.is_relative_to(root) else path),
                path.read_text(encoding="utf-8"),
                vis,
            )
        )
    return seeds


TOKEN = re.compile(
    r"""(?P<string>[rRuU]?('''[\s\S]*?'''|\"\"\"[\s\S]*?\"\"\"|'(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*"))
                      |(?P<number>\d[\d_]*(\.\d*)?([eE][-+]?\d+)?|\.\d+)
                      |(?P<name>[^\W\d]\w*)
                      |(?P<op>==|!=|<=|>=|->|[-+*/%<>=~()\[\]{}.,:;])
                      |(?P<space>\s+|\#[^\n]*)
                      |(?P<other>.)""",
    re.VERBOSE,
)

OPERATORS = ["+", "-", "*", "/", "%", "==", "!=", "<", "<=", ">", ">=", "and", "or", "not", "~"]
RANDOM_CHARS = [
    "(",
    ")",
    "[",
    "]",
    "'",
    '"',
    ":",
    "\n",
    "\t",
    " ",
    "\\",
    "#",
    "\x00",
    "\x0c",
    "\r",
    "é",
    "\U0001f600",
    "\u2028",
    "@",
    "$",
    "?",
    "**",
    "//",
    "    ",
    "\n    ",
    "\\\n",
    "'''",
    "#px:set ",
    "lambda",
    "for",
    "\ufeff",
]


class Mutator:
    """Token- and AST-level mutations of corpus scripts, and splices between them."""

    def __init__(self, rng: random.Random, corpus: list[Seed]):
        self.rng = rng
        self.corpus = corpus
        scalars, aggregates = _registry()
        columns = sorted({c for t in table_names() for c in catalog_schema(t)})
        self.identifiers = (
            columns
            + sorted(scalars)
            + sorted(aggregates)
            + [
                "df",
                "px",
                "DataFrame",
                "display",
                "groupby",
                "agg",
                "merge",
                "append",
                "head",
                "drop",
                "ctx",
                "filter",
                "stream",
                "upid",
                "time_",
                "start_time",
                "True",
                "None",
                "main",
                "self",
                "x",
            ]
        )
        self.strings = columns + TIME_STRINGS + PLAIN_STRINGS + ODD_STRINGS + table_names() + ["pod", "comm", "pid"]

    def mutate(self) -> Seed:
        rng = self.rng
        seed = rng.choices(self.corpus, [_seed_weight(s) for s in self.corpus])[0]
        text = seed.text
        rounds = rng.choice([1, 1, 1, 2, 3, 5])
        for _ in range(rounds):
            if rng.random() < 0.45:
                mutated = self.ast_mutation(text)
                text = mutated if mutated is not None else self.token_mutation(text)
            else:
                text = self.token_mutation(text)
        return Seed(seed.name, text, seed.vis if rng.random() < 0.8 else None)

    # -- tokens and lines

    def token_mutation(self, text: str) -> str:
        rng = self.rng
        tokens = [(m.lastgroup, m.group()) for m in TOKEN.finditer(text)]
        kind = rng.choice(
            [
                "identifier",
                "number",
                "string",
                "operator",
                "delete_line",
                "duplicate_line",
                "swap_lines",
                "splice",
                "random_chars",
                "delete_span",
                "extreme_number",
                "duplicate_token",
            ]
        )
        if kind in ("identifier", "number", "string", "operator", "extreme_number", "duplicate_token"):
            wanted = {
                "identifier": "name",
                "number": "number",
                "extreme_number": "number",
                "string": "string",
                "operator": "op",
                "duplicate_token": None,
            }[kind]
            positions = [i for i, (k, _) in enumerate(tokens) if wanted is None or k == wanted]
            if not positions:
                return self.line_mutation(text, "random_chars")
            i = rng.choice(positions)
            kind_i, value = tokens[i]
            if kind == "identifier":
                value = rng.choice(self.identifiers)
            elif kind == "number":
                value = rng.choice(["0", "1", "-1", "10", "1.5", "1e309"])
            elif kind == "extreme_number":
                value = rng.choice([str(v) for v in EXTREME_INTS] + EXTREME_FLOATS + INT_SPELLINGS)
            elif kind == "string":
                choice = rng.choice(self.strings) if rng.random() < 0.9 else huge_string(rng)
                value = string_literal(rng, choice)
            elif kind == "operator":
                if value in OPERATORS:
                    value = rng.choice(OPERATORS)
                    value = f" {value} "
                else:
                    value = rng.choice(["(", ")", "[", "]", ",", ".", ":", "=", "==", ""])
            else:
                value = value + (" " if kind_i == "name" else "") + value
            tokens[i] = (kind_i, value)
            return "".join(v for _, v in tokens)
        return self.line_mutation(text, kind)

    def line_mutation(self, text: str, kind: str) -> str:
        rng = self.rng
        lines = text.split("\n")
        if kind == "delete_line" and lines:
            del lines[rng.randrange(len(lines))]
        elif kind == "duplicate_line" and lines:
            i = rng.randrange(len(lines))
            lines.insert(i, lines[i])
        elif kind == "swap_lines" and len(lines) > 1:
            i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
        elif kind == "splice":
            other = rng.choice(self.corpus).text.split("\n")
            start = rng.randrange(len(other))
            block = other[start : start + rng.randint(1, 8)]
            at = rng.randrange(len(lines) + 1)
            lines[at:at] = block
        elif kind == "delete_span" and text:
            i = rng.randrange(len(text))
            return text[:i] + text[i + rng.randint(1, 40) :]
        else:  # random characters
            i = rng.randrange(len(text) + 1)
            chars = "".join(rng.choice(RANDOM_CHARS) for _ in range(rng.randint(1, 4)))
            return text[:i] + chars + text[i:]
        return "\n".join(lines)

    # -- the syntax tree

    def ast_mutation(self, text: str) -> str | None:
        from pxq.errors import PxqError
        from pxq.lang import ast, parse, unparse

        try:
            module = parse(text)
        except PxqError:
            return None
        rng = self.rng
        nodes = list(_walk(module))
        exprs = [x for x in nodes if isinstance(x, _expr_types())]
        kind = rng.choice(
            [
                "constant",
                "name",
                "attribute",
                "swap_expr",
                "double",
                "delete_stmt",
                "duplicate_stmt",
                "splice_stmt",
                "wrap_call",
                "negate",
            ]
        )
        replacements: dict[int, Any] = {}
        span = module.span
        if kind == "constant":
            consts = [x for x in nodes if isinstance(x, ast.Constant)]
            if not consts:
                return None
            target = rng.choice(consts)
            value = rng.choice(
                EXTREME_INTS
                + [float("inf"), float("nan"), 1e308, -0.0, True, None, "", huge_string(rng)]
                + ODD_STRINGS
                + TIME_STRINGS
            )
            replacements[id(target)] = ast.Constant(target.span, value)
        elif kind == "name":
            names = [x for x in nodes if isinstance(x, ast.Name)]
            if not names:
                return None
            target = rng.choice(names)
            replacements[id(target)] = ast.Name(target.span, rng.choice(self.identifiers))
        elif kind == "attribute":
            attrs = [x for x in nodes if isinstance(x, ast.Attribute)]
            if not attrs:
                return None
            target = rng.choice(attrs)
            replacements[id(target)] = dataclasses.replace(target, attr=rng.choice(self.identifiers))
        elif kind in ("swap_expr", "double", "wrap_call", "negate"):
            if not exprs:
                return None
            target = rng.choice(exprs)
            if kind == "swap_expr":
                new = rng.choice(exprs)
            elif kind == "double":
                new = ast.BinOp(span, rng.choice(["+", "*", "-", "/", "%"]), target, target)
            elif kind == "negate":
                new = ast.UnaryOp(span, rng.choice(["-", "not", "~"]), target)
            else:
                fn = rng.choice(sorted(_registry()[0]))
                new = ast.Call(span, ast.Attribute(span, ast.Name(span, "px"), fn, span), (target,), ())
            replacements[id(target)] = new
        else:
            bodies = [x for x in nodes if isinstance(x, (ast.Module, ast.FunctionDef)) and x.body]
            if not bodies:
                return None
            owner = rng.choice(bodies)
            body = list(owner.body)
            i = rng.randrange(len(body))
            if kind == "delete_stmt":
                del body[i]
            elif kind == "duplicate_stmt":
                body.insert(i, body[i])
            else:
                try:
                    donor = parse(rng.choice(self.corpus).text)
                except PxqError:
                    return None
                if not donor.body:
                    return None
                body.insert(i, rng.choice(donor.body))
            if not body and isinstance(owner, ast.FunctionDef) and owner.docstring is None:
                return None
            replacements[id(owner)] = dataclasses.replace(owner, body=tuple(body))
        new_module = _rebuild(module, replacements)
        try:
            return unparse(new_module)
        except Exception:
            return None


def _seed_weight(seed: Seed) -> float:
    """Runnable scripts are worth more mutations than parser-only corpus files."""
    if seed.name.startswith(("scripts/", "tests/plan/corpus/", "tests/fuzz/reproducers/")):
        return 3.0
    return 1.0


def _walk(node) -> Iterator:
    from pxq.lang import ast

    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, ast.Node):
            yield item
            for f in dataclasses.fields(item):
                value = getattr(item, f.name)
                if isinstance(value, ast.Node):
                    stack.append(value)
                elif isinstance(value, tuple):
                    stack.extend(v for v in value if isinstance(v, ast.Node))


def _rebuild(node, replacements: dict[int, Any]):
    """``node`` with the nodes whose id is in ``replacements`` swapped (frozen dataclasses: copy up)."""
    from pxq.lang import ast

    if id(node) in replacements:
        node = replacements.pop(id(node))
    if not isinstance(node, ast.Node):
        return node
    changes = {}
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        if isinstance(value, ast.Node):
            new = _rebuild(value, replacements)
            if new is not value:
                changes[f.name] = new
        elif isinstance(value, tuple) and any(isinstance(v, ast.Node) for v in value):
            new_items = tuple(_rebuild(v, replacements) for v in value)
            if any(a is not b for a, b in zip(new_items, value)):
                changes[f.name] = new_items
    return dataclasses.replace(node, **changes) if changes else node


def _expr_types():
    from pxq.lang import ast

    return (
        ast.Name,
        ast.Constant,
        ast.Attribute,
        ast.Subscript,
        ast.Call,
        ast.BinOp,
        ast.Compare,
        ast.BoolOp,
        ast.UnaryOp,
        ast.List,
        ast.Tuple,
    )


# ================================================================ programs by number


@dataclass(frozen=True)
class Program:
    seed: int
    index: int
    origin: str  # "generated", or "mutated:<corpus script>"
    text: str
    vis: dict | None = None


_CORPUS_CACHE: dict[bool, list[Seed]] = {}


def corpus(include_conformance: bool = True) -> list[Seed]:
    if include_conformance not in _CORPUS_CACHE:
        _CORPUS_CACHE[include_conformance] = load_corpus(include_conformance)
    return _CORPUS_CACHE[include_conformance]


def program(seed: int, index: int, *, include_conformance: bool = True, mutated_share: float = 0.4) -> Program:
    """Program ``index`` of ``seed``: the same text every time, on any machine with the same corpus."""
    rng = random.Random(f"{seed}:{index}")
    # An installed pxq has no scripts or corpora next to it: then every program is generated.
    if rng.random() < mutated_share and corpus(include_conformance):
        mutated = Mutator(rng, corpus(include_conformance)).mutate()
        return Program(seed, index, f"mutated:{mutated.name}", mutated.text, mutated.vis)
    return Program(seed, index, "generated", ProgramGenerator(rng).program())


def reproducer_programs(directory: Path | None = None) -> list[Program]:
    """The committed reproducers of past findings (tests/fuzz/reproducers/*.pxl), as programs."""
    directory = directory or REPO_ROOT / "tests" / "fuzz" / "reproducers"
    return [
        Program(-1, i, f"reproducer:{p.name}", p.read_text(encoding="utf-8"))
        for i, p in enumerate(sorted(directory.glob("*.pxl")))
    ]


# ================================================================ the small captures


CAPTURE_START_NS = 1_764_115_200_000_000_000
CAPTURE_SPAN_NS = 300_000_000_000


def _generic_table(table: str, n_rows: int, rng, null_fraction: float, all_null: bool):
    """``n_rows`` of ``table`` with values of every kind its types allow, extremes included."""
    import numpy as np
    import pyarrow as pa

    from pxq.tables import CATALOG
    from pxq.testing.synthetic import synthetic_processes

    schema = CATALOG[table].arrow_schema()
    upids = list(synthetic_processes()) + ["0:1:1", "9:99999:1", "not-a-upid", ""]
    columns = []
    for fld in schema:
        if fld.name == "time_":
            values = pa.array(np.sort(CAPTURE_START_NS + rng.integers(0, CAPTURE_SPAN_NS, n_rows)), fld.type)
            columns.append(values)
            continue
        t = fld.type
        if pa.types.is_integer(t):
            pool = np.array([0, 1, -1, 200, 404, 500, 2, 1000, INT64_MAX, INT64_MIN, 123456789], dtype=np.int64)
            data = list(pool[rng.integers(0, len(pool), n_rows)])
        elif pa.types.is_floating(t):
            pool = [0.0, 1.5, -2.25, float("inf"), float("-inf"), float("nan"), 1e308, 5e-324]
            data = [pool[i] for i in rng.integers(0, len(pool), n_rows)]
        elif pa.types.is_boolean(t):
            data = list(rng.random(n_rows) < 0.5)
        elif fld.name == "upid":
            data = [upids[i] for i in rng.integers(0, len(upids), n_rows)]
        elif pa.types.is_string(t) or pa.types.is_large_string(t):
            pool = [
                "",
                "GET",
                "/api/items",
                '{"Host": "a", "n": 3, "p50": 1.5}',
                "[1, 2]",
                "日本語",
                "\U0001f600",
                "x" * 5000,
                "a;b;c",
                "main;foo;bar",
                "not json {",
                "\x00nul",
            ]
            data = [pool[i] for i in rng.integers(0, len(pool), n_rows)]
        elif pa.types.is_timestamp(t):
            data = list(CAPTURE_START_NS + rng.integers(0, CAPTURE_SPAN_NS, n_rows))
            t = pa.int64()
        else:
            data = [None] * n_rows
        array = pa.array(data, t)
        if array.type != fld.type:
            array = array.cast(fld.type)
        if all_null or null_fraction:
            mask = np.ones(n_rows, dtype=bool) if all_null else rng.random(n_rows) < null_fraction
            array = pa.array(array.to_pylist(), fld.type, mask=mask)
        columns.append(array)
    return pa.Table.from_arrays(columns, schema=schema)


def build_captures(directory: str | os.PathLike) -> dict[str, str]:
    """The four small captures every program runs over; returns name -> capture directory."""
    import numpy as np

    from pxq.replay import write_capture
    from pxq.tables import CATALOG
    from pxq.testing.synthetic import synthetic_http_events, synthetic_processes

    root = Path(directory)
    rng = np.random.default_rng(7)
    plans = {
        "normal": dict(n=60, null_fraction=0.0, all_null=False),
        "empty": dict(n=0, null_fraction=0.0, all_null=False),
        "all_null": dict(n=20, null_fraction=0.0, all_null=True),
        "partly_null": dict(n=80, null_fraction=0.4, all_null=False),
    }
    paths = {}
    for name, plan in plans.items():
        tables = {t: _generic_table(t, plan["n"], rng, plan["null_fraction"], plan["all_null"]) for t in CATALOG}
        if name == "normal":
            tables["http_events"] = synthetic_http_events(
                200, seed=1, start_ns=CAPTURE_START_NS, span_ns=CAPTURE_SPAN_NS, null_fraction=0.05
            )
        path = root / name
        write_capture(
            path,
            tables,
            host="fuzz-host",
            start_time_ns=CAPTURE_START_NS,
            end_time_ns=CAPTURE_START_NS + CAPTURE_SPAN_NS,
            processes=synthetic_processes(),
        )
        paths[name] = str(path)
    return paths


# ================================================================ the oracle


@dataclass
class Outcome:
    kind: str  # "ok", "diagnostic", or one of FINDING_KINDS
    stage: str = ""  # where it happened: parse/compile/optimize/explain/split/execute:<capture>/render:<fmt>
    exc_type: str = ""
    message: str = ""
    frame: str = ""  # innermost pxq frame, "pxq/exec/execute.py:run_node"
    detail: str = ""  # the traceback
    seconds: float = 0.0

    @property
    def is_finding(self) -> bool:
        return self.kind in FINDING_KINDS

    def key(self) -> tuple[str, str, str]:
        return (self.kind, self.exc_type, self.frame)


def innermost_pxq_frame(tb) -> str:
    """``pxq/exec/execute.py:run_node``: the last pxq function (not the fuzzer) a traceback passed."""
    names = _pxq_frame_names((entry.filename, entry.name) for entry in reversed(traceback.extract_tb(tb)))
    return names[0] if names else "(outside pxq)"


_DUMP_FRAME = re.compile(r'File "([^"]+)", line \d+ in (\S+)')


def _pxq_frame_names(frames) -> list[str]:
    """``path:function`` of the pxq frames among (path, function) pairs, in the given order."""
    package = str(REPO_ROOT / "pxq")
    fuzz_file = os.path.abspath(__file__)
    names = []
    for path, function in frames:
        path = os.path.abspath(path)
        if path.startswith(package) and path != fuzz_file:
            names.append(f"{os.path.relpath(path, REPO_ROOT)}:{function}")
    return names


def hang_frame(frames_innermost_first) -> str:
    """Where a hang is: the pxq function with most frames on the stack (the runaway recursion or
    the loop's caller), the innermost one on a tie. Stable where the innermost frame is not: a
    stopped exponential walk may be caught in any of the leaf functions it calls."""
    # A comprehension's frame sits between every two levels of the recursion it belongs to.
    names = [name for name in _pxq_frame_names(frames_innermost_first) if not name.endswith(">")]
    if not names:
        return "(outside pxq)"
    counts: dict[str, int] = {}
    for name in names:
        counts[name] = counts.get(name, 0) + 1
    best = max(counts.values())
    return next(name for name in names if counts[name] == best)


def hang_frame_of_dump(text: str) -> str:
    """``hang_frame`` of the first thread in a faulthandler dump (most recent call first)."""
    first_thread = text.split("\nThread ", 2)
    body = first_thread[1] if len(first_thread) > 1 else text
    return hang_frame(_DUMP_FRAME.findall(body))


def _is_user_error(exc: BaseException) -> bool:
    from pxq.errors import PxqError

    return isinstance(exc, PxqError)


def _unpositioned(exc: BaseException) -> str | None:
    """The message of a script diagnostic that has no line:col, if ``exc`` carries one."""
    from pxq.errors import ScriptError

    if not isinstance(exc, ScriptError):
        return None
    for diagnostic in exc.diagnostics:
        if diagnostic.span is None and diagnostic.message not in WHOLE_SCRIPT_MESSAGES:
            return diagnostic.message
    return None


class Oracle:
    """Runs programs through every stage, over captures opened once."""

    RENDER_FORMATS = ("table", "json", "csv")

    def __init__(self, captures: dict[str, str], *, render: bool = True):
        from pxq.replay import open_capture

        self.sources = {name: open_capture(path) for name, path in captures.items()}
        self.render_enabled = render
        self.scratch = Path(tempfile.mkdtemp(prefix="pxq-fuzz-render-"))

    def run(self, prog: Program, *, alarm_s: float | None = None) -> Outcome:
        """Run ``prog``; with ``alarm_s`` (main thread only) a program still running after that many
        seconds is stopped by SIGALRM and reported as a hang (the runner's workers use a wall
        clock instead, which also catches code that never returns to the interpreter)."""
        start = time.perf_counter()
        stage = ["parse"]
        try:
            with _quiet(), _alarm(alarm_s):
                self._stages(prog, stage)
            outcome = Outcome("ok")
        except _Timeout as exc:
            frames = [(f.filename, f.name) for f in reversed(traceback.extract_tb(exc.__traceback__))]
            outcome = Outcome("hang", stage[0], "hang", f"still running after {alarm_s:g} s", hang_frame(frames))
        except RecursionError as exc:
            outcome = self._failure("traceback", exc, stage[0])
        except MemoryError as exc:
            outcome = self._failure("memory", exc, stage[0])
        except Exception as exc:  # noqa: BLE001 - sorting every exception is the point
            if _is_user_error(exc):
                message = _unpositioned(exc)
                if message is not None:
                    outcome = Outcome(
                        "unpositioned", stage[0], type(exc).__name__, message, innermost_pxq_frame(exc.__traceback__)
                    )
                else:
                    outcome = Outcome("diagnostic", stage[0], type(exc).__name__, _first_line(str(exc)))
            else:
                outcome = self._failure("traceback", exc, stage[0])
        outcome.seconds = time.perf_counter() - start
        return outcome

    @staticmethod
    def _failure(kind: str, exc: BaseException, stage: str) -> Outcome:
        detail = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        if len(detail) > 20_000:  # a RecursionError's traceback repeats one frame a thousand times
            detail = detail[:8_000] + "\n...\n" + detail[-8_000:]
        return Outcome(
            kind, stage, type(exc).__name__, _first_line(str(exc))[:500], innermost_pxq_frame(exc.__traceback__), detail
        )

    def _stages(self, prog: Program, stage: list[str]) -> None:
        from pxq.agent.programs import generated_programs
        from pxq.api import compile_script
        from pxq.exec.execute import execute
        from pxq.lang import parse
        from pxq.library import Script
        from pxq.plan.format import format_graph
        from pxq.plan.manifest import ProbeManifest
        from pxq.plan.optimize import optimize
        from pxq.plan.split import split

        script = Script("fuzz", prog.text, "fuzz.pxl", prog.vis)
        parse(script.text, script.filename)  # once alone, so that syntax errors count as stage "parse"
        stage[0] = "compile"
        normal = self.sources.get("normal")
        compiled = compile_script(script, args=_required_arguments(script), now_ns=getattr(normal, "end_time_ns", None))
        stage[0] = "explain"  # what `pxq explain --verbose` and `--json` print
        format_graph(compiled.graph)
        trace: list = []
        optimize(compiled.graph, trace=trace)
        for _, graph in trace:
            format_graph(graph)
        format_graph(compiled.optimized)
        stage[0] = "split"
        plan = split(compiled.optimized)
        plan.manifest.to_text()
        ProbeManifest.from_json(plan.manifest.to_json())
        stage[0] = "explain-bpf"  # `pxq explain --bpf`: the eBPF programs the manifest asks for
        generated_programs(plan.manifest)
        for name, source in self.sources.items():
            stage[0] = f"execute:{name}"
            results = execute(compiled.optimized, source)
            if not self.render_enabled:
                continue
            for fmt in self.RENDER_FORMATS:
                stage[0] = f"render:{fmt}:{name}"
                self._render(results.tables, fmt)

    def _render(self, tables, fmt: str) -> None:
        from pxq.render import render

        if fmt == "table":
            render(tables, fmt, None, max_rows=50)
        elif fmt == "json":
            render(tables, fmt, str(self.scratch / "out.json"))
        else:
            render(tables, fmt, str(self.scratch / "csv"))


class _Timeout(BaseException):
    """Raised by SIGALRM inside a program run; a BaseException so no handler in pxq swallows it."""


@contextlib.contextmanager
def _alarm(seconds: float | None):
    if not seconds:
        yield
        return
    import signal

    def expire(*_):
        raise _Timeout()

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _required_arguments(script) -> dict[str, str]:
    """Values for the script arguments without a default, as a user would pass them after `--`
    (vis.json variables of Pixie's scripts often have none)."""
    from pxq.errors import PxqError
    from pxq.lang import parse
    from pxq.plan.script_args import plan_script

    try:
        params = plan_script(parse(script.text, script.filename), script.name, script.vis).params
    except PxqError:
        return {}
    args = {}
    for param in params:
        if not param.has_default:
            args[param.name] = {int: "10", float: "0.5", bool: "true"}.get(
                param.type, "-5m" if "time" in param.name else ""
            )
    return args


def _first_line(text: str) -> str:
    return text.strip().split("\n", 1)[0] if text.strip() else ""


class _DevNull(io.TextIOBase):
    def write(self, s):  # noqa: D401 - a sink
        return len(s)

    def writable(self):
        return True

    def isatty(self):
        return False


@contextlib.contextmanager
def _quiet():
    """Renderers write to stdout; the worker's stdout is its channel to the runner."""
    sink = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="replace")
    saved_out, saved_err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = sink, _DevNull()
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved_out, saved_err
        sink.detach()


# ================================================================ workers and the runner


def _address_space_bytes() -> int:
    """This process's address space now (VmSize), 0 where /proc does not say."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().split("\n"):
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _limit_memory(limit_bytes: int) -> None:
    """Cap the address space at ``limit_bytes`` beyond what is reserved now. Called once pxq and
    pyarrow are loaded: their allocators reserve about 3 GiB of address space up front, and a cap
    of 4 GiB in all left programs about 1 GiB, too little for the threads a worker starts (a
    worker died with 'unable to start watchdog thread')."""
    limit = _address_space_bytes() + limit_bytes
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def worker_main() -> None:
    """A worker: reads {"seed", "index", ...} lines on stdin, answers one JSON line per program."""
    config = json.loads(sys.stdin.readline())
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 1000))
    channel = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    oracle = Oracle(config["captures"], render=config.get("render", True))
    _limit_memory(config["memory_limit"])
    # Where a hang is: the stacks a moment before the runner's deadline, for its finding class.
    stacks = open(Path(config["stacks_dir"]) / f"worker-{os.getpid()}.txt", "w+")  # noqa: SIM115 (open for the worker's life)
    channel.write(json.dumps({"ready": True, "pid": os.getpid()}) + "\n")
    channel.flush()
    for line in sys.stdin:
        request = json.loads(line)
        prog = _program_for(request, config)
        stacks.seek(0)
        stacks.truncate()
        # No thread for the watchdog (RuntimeError): the runner's wall limit still applies.
        with contextlib.suppress(RuntimeError):
            faulthandler.dump_traceback_later(max(0.5, config["wall_limit"] - 1.0), file=stacks)
        outcome = oracle.run(prog)
        faulthandler.cancel_dump_traceback_later()
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        reply = {"index": request["index"], "outcome": dataclasses.asdict(outcome), "rss": rss, "origin": prog.origin}
        channel.write(json.dumps(reply) + "\n")
        channel.flush()


def _program_for(request: dict, config: dict) -> Program:
    if "text" in request:
        return Program(
            request.get("seed", -1),
            request["index"],
            request.get("origin", "given"),
            request["text"],
            request.get("vis"),
        )
    return program(config["seed"], request["index"], include_conformance=config["include_conformance"])


@dataclass
class Result:
    index: int
    origin: str
    outcome: Outcome
    text: str = ""
    vis: dict | None = None


@dataclass
class FindingClass:
    key: tuple[str, str, str]
    count: int = 0
    examples: list[Result] = field(default_factory=list)  # shortest first, at most 3

    def add(self, result: Result, keep: int = 3) -> None:
        self.count += 1
        self.examples.append(result)
        self.examples.sort(key=lambda r: (len(r.text), r.index))
        del self.examples[keep:]


@dataclass
class Summary:
    programs: int = 0
    counts: dict = field(default_factory=dict)  # kind -> n
    slowest: float = 0.0
    slowest_index: int = -1
    peak_rss: int = 0
    classes: dict = field(default_factory=dict)  # key -> FindingClass
    wall_seconds: float = 0.0
    stages: dict = field(default_factory=dict)  # (kind, stage-prefix) -> n, for the ok/diagnostic mix
    wall_limit: float = WALL_LIMIT_S

    def add(self, result: Result, rss: int = 0) -> None:
        self.programs += 1
        kind = result.outcome.kind
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if result.outcome.seconds > self.slowest:
            self.slowest, self.slowest_index = result.outcome.seconds, result.index
        self.peak_rss = max(self.peak_rss, rss)
        stage = result.outcome.stage.split(":")[0] or "-"
        self.stages[(kind, stage)] = self.stages.get((kind, stage), 0) + 1
        if result.outcome.is_finding:
            key = result.outcome.key()
            self.classes.setdefault(key, FindingClass(key)).add(result)

    @property
    def findings(self) -> int:
        return sum(self.counts.get(k, 0) for k in FINDING_KINDS)


class _Worker:
    def __init__(self, config: dict, python: str):
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        # The worker's stderr goes to a file, so that a crash says why (the last lines go into
        # the finding; a worker that exits with 1 has printed its Python traceback there).
        self.stderr = tempfile.NamedTemporaryFile(  # noqa: SIM115 (closed in kill(), lives with the worker)
            "w+", dir=config["stacks_dir"], prefix="worker-stderr-", suffix=".txt", delete=False
        )
        self.proc = subprocess.Popen(
            [python, "-c", "from pxq.testing.fuzz import worker_main; worker_main()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            env=env,
            text=True,
            encoding="utf-8",
            bufsize=1,
        )
        self.proc.stdin.write(json.dumps(config) + "\n")
        self.proc.stdin.flush()
        self.current: dict | None = None
        self.deadline = 0.0
        self.started = 0.0
        self.ready = False
        self.pid = 0

    def send(self, request: dict, wall_limit: float) -> None:
        self.current = request
        self.started = time.monotonic()
        self.deadline = self.started + wall_limit
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        self.proc.wait()
        self.stderr.close()

    def stderr_tail(self, chars: int = 4000) -> str:
        with contextlib.suppress(OSError):
            return Path(self.stderr.name).read_text(errors="replace")[-chars:]
        return ""


class FuzzRunner:
    """Runs programs in ``jobs`` worker processes with a wall and a memory limit per program."""

    def __init__(
        self,
        seed: int,
        *,
        jobs: int = 2,
        wall_limit: float = WALL_LIMIT_S,
        memory_limit: int = MEMORY_LIMIT_BYTES,
        include_conformance: bool = True,
        captures_dir: str | None = None,
        render: bool = True,
        python: str = sys.executable,
        on_result=None,
    ):
        self.seed = seed
        self.jobs = max(1, jobs)
        self.wall_limit = wall_limit
        self.include_conformance = include_conformance
        self.python = python
        self.on_result = on_result
        self._tmp = None
        if captures_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="pxq-fuzz-captures-")
            captures_dir = self._tmp.name
        self.captures = build_captures(captures_dir)
        self._stacks = tempfile.TemporaryDirectory(prefix="pxq-fuzz-stacks-")
        self.config = {
            "seed": seed,
            "captures": self.captures,
            "memory_limit": memory_limit,
            "include_conformance": include_conformance,
            "render": render,
            "wall_limit": wall_limit,
            "stacks_dir": self._stacks.name,
        }

    def run(self, requests: list[dict]) -> Summary:
        """``requests``: {"index": i} (program i of the seed) or {"index", "text", "vis", "origin"}."""
        summary = Summary(wall_limit=self.wall_limit)
        started = time.monotonic()
        pending = list(reversed(requests))
        workers = [_Worker(self.config, self.python) for _ in range(min(self.jobs, len(requests)) or 1)]
        try:
            while pending or any(w.current is not None for w in workers):
                for w in workers:
                    if w.ready and w.current is None and pending:
                        w.send(pending.pop(), self.wall_limit)
                fds = {w.proc.stdout.fileno(): w for w in workers}
                timeout = max(
                    0.05,
                    min((w.deadline for w in workers if w.current), default=time.monotonic() + 1) - time.monotonic(),
                )
                readable, _, _ = select.select(list(fds), [], [], timeout)
                for fd in readable:
                    w = fds[fd]
                    line = w.proc.stdout.readline()
                    if not line:  # the worker died: out of memory beyond Python's reach, or a crash
                        self._lost(w, summary, "crash", f"worker exited with {w.proc.wait()}")
                        workers[workers.index(w)] = _Worker(self.config, self.python)
                        continue
                    reply = json.loads(line)
                    if reply.get("ready"):
                        w.ready, w.pid = True, reply["pid"]
                        continue
                    request, w.current = w.current, None
                    outcome = Outcome(**reply["outcome"])
                    result = Result(request["index"], reply["origin"], outcome)
                    if outcome.is_finding:
                        result.text, result.vis = self._text(request), self._vis(request)
                    summary.add(result, reply["rss"])
                    if self.on_result:
                        self.on_result(result, summary)
                now = time.monotonic()
                for w in list(workers):
                    if w.current is not None and now > w.deadline:
                        self._lost(w, summary, "hang", f"no answer within {self.wall_limit:g} s")
                        workers[workers.index(w)] = _Worker(self.config, self.python)
        finally:
            for w in workers:
                w.kill()
        summary.wall_seconds = time.monotonic() - started
        return summary

    def _lost(self, worker: _Worker, summary: Summary, kind: str, message: str) -> None:
        request = worker.current
        seconds = time.monotonic() - worker.started
        worker.kill()
        if request is None:
            raise RuntimeError(f"a fuzz worker failed before taking a program: {message}")
        text = self._text(request)
        origin = (
            request.get("origin")
            or program(self.seed, request["index"], include_conformance=self.include_conformance).origin
        )
        stacks = ""
        with contextlib.suppress(OSError):
            stacks = (Path(self._stacks.name) / f"worker-{worker.pid}.txt").read_text(errors="replace")
        frame = hang_frame_of_dump(stacks) if stacks else ""
        if kind == "crash":
            stacks = (stacks + "\n--- worker stderr ---\n" + worker.stderr_tail()).strip()
        result = Result(
            request["index"], origin, Outcome(kind, "", kind, message, frame, stacks, seconds), text, self._vis(request)
        )
        summary.add(result)
        if self.on_result:
            self.on_result(result, summary)

    def _text(self, request: dict) -> str:
        if "text" in request:
            return request["text"]
        return program(self.seed, request["index"], include_conformance=self.include_conformance).text

    def _vis(self, request: dict) -> dict | None:
        if "text" in request:
            return request.get("vis")
        return program(self.seed, request["index"], include_conformance=self.include_conformance).vis

    def close(self) -> None:
        self._stacks.cleanup()
        if self._tmp is not None:
            self._tmp.cleanup()


def format_summary(summary: Summary, *, max_examples: int = 1, max_chars: int = 1500) -> str:
    c = summary.counts
    lines = [
        f"programs run:        {summary.programs}",
        f"ok:                  {c.get('ok', 0)}",
        f"diagnostic:          {c.get('diagnostic', 0)}",
        f"findings:            {summary.findings}",
        f"  tracebacks:        {c.get('traceback', 0)}",
        f"  unpositioned diag: {c.get('unpositioned', 0)}",
        f"  hangs > {summary.wall_limit:g} s:".ljust(21) + f"{c.get('hang', 0)}",
        f"  memory > 4 GiB:    {c.get('memory', 0)}",
        f"  worker crashes:    {c.get('crash', 0)}",
        f"slowest program:     {summary.slowest:.2f} s (#{summary.slowest_index})",
        f"peak worker RSS:     {summary.peak_rss / 2**20:.0f} MiB",
        f"wall time:           {summary.wall_seconds:.0f} s",
        "diagnostics by stage: "
        + (
            ", ".join(f"{stage} {n}" for (kind, stage), n in sorted(summary.stages.items()) if kind == "diagnostic")
            or "-"
        ),
    ]
    if summary.classes:
        lines.append(f"\nfinding classes ({len(summary.classes)}):")
        for key, cls in sorted(summary.classes.items(), key=lambda kv: -kv[1].count):
            example = cls.examples[0]
            lines.append(f"\n[{cls.count}x] {key[0]}: {key[1]} at {key[2]} ({example.outcome.stage})")
            lines.append(f"  {example.outcome.message[:300]}")
            for ex in cls.examples[:max_examples]:
                text = ex.text if len(ex.text) <= max_chars else ex.text[:max_chars] + "\n...(truncated)"
                lines.append(f"  reproducer (program #{ex.index}, {ex.origin}):")
                lines.extend("    | " + line for line in text.split("\n"))
    return "\n".join(lines)


def write_report(summary: Summary, out: str | os.PathLike) -> None:
    """summary.txt, findings.json and one reproducer .pxl per finding class into ``out``."""
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob("[0-9][0-9]_*.pxl"):  # an earlier report's numbering
        stale.unlink()
    (root / "summary.txt").write_text(format_summary(summary, max_examples=3, max_chars=4000) + "\n", encoding="utf-8")
    classes = []
    for n_class, (key, cls) in enumerate(sorted(summary.classes.items(), key=lambda kv: -kv[1].count)):
        stem = re.sub(r"[^A-Za-z0-9]+", "_", f"{key[0]}_{key[1]}_{key[2]}").strip("_")[:100]
        (root / f"{n_class:02d}_{stem}.pxl").write_text(cls.examples[0].text, encoding="utf-8", errors="surrogatepass")
        classes.append(
            {
                "kind": key[0],
                "exception": key[1],
                "frame": key[2],
                "count": cls.count,
                "examples": [
                    {
                        "index": e.index,
                        "origin": e.origin,
                        "stage": e.outcome.stage,
                        "message": e.outcome.message,
                        "traceback": e.outcome.detail,
                        "text": e.text,
                    }
                    for e in cls.examples
                ],
            }
        )
    (root / "findings.json").write_text(
        json.dumps(
            {
                "programs": summary.programs,
                "counts": summary.counts,
                "slowest_s": summary.slowest,
                "slowest_index": summary.slowest_index,
                "peak_rss_bytes": summary.peak_rss,
                "wall_s": summary.wall_seconds,
                "stages": {f"{kind}:{stage}": n for (kind, stage), n in sorted(summary.stages.items())},
                "classes": classes,
            },
            indent=1,
            ensure_ascii=True,
        )
        + "\n",
        encoding="utf-8",
    )


# ================================================================ reducing reproducers


def minimize(
    text: str,
    key: tuple[str, str, str],
    oracle: Oracle,
    *,
    vis: dict | None = None,
    attempt_limit_s: float = 10.0,
    budget_s: float = 120.0,
) -> str:
    """A shorter program with the same finding class: drops lines, then unneeded indentation-free
    statements, while the finding still reproduces (each attempt under a SIGALRM limit).

    A hang counts as reproduced when the program is still in the same pxq function after
    ``attempt_limit_s``.
    """
    if key[0] not in ("traceback", "unpositioned", "memory", "hang"):
        return text

    def same(candidate: str) -> bool:
        outcome = oracle.run(Program(-1, -1, "minimize", candidate, vis), alarm_s=attempt_limit_s)
        return outcome.key() == key

    deadline = time.monotonic() + budget_s
    lines = text.split("\n")
    changed = True
    while changed and time.monotonic() < deadline:
        changed = False
        i = len(lines) - 1
        while i >= 0 and time.monotonic() < deadline:
            candidate = lines[:i] + lines[i + 1 :]
            if candidate and same("\n".join(candidate)):
                lines = candidate
                changed = True
            i -= 1
    return "\n".join(lines)


def format_markdown(
    summary: Summary,
    *,
    title: str = "PxL fuzzing findings",
    preface: str = "",
    max_examples: int = 3,
    max_chars: int = 3000,
) -> str:
    """The finding classes as a Markdown report: count, exception, innermost pxq frame, reproducers."""
    c = summary.counts
    out = [f"# {title}", ""]
    if preface:
        out += [preface, ""]
    out += [
        f"- programs run: {summary.programs} (ok {c.get('ok', 0)}, diagnostic {c.get('diagnostic', 0)}, "
        f"findings {summary.findings})",
        f"- tracebacks: {c.get('traceback', 0)}; diagnostics without line:col: {c.get('unpositioned', 0)}; "
        f"hangs > {summary.wall_limit:g} s: {c.get('hang', 0)}; memory > 4 GiB: {c.get('memory', 0)}; "
        f"worker crashes: {c.get('crash', 0)}",
        f"- slowest program: {summary.slowest:.2f} s; peak worker RSS: {summary.peak_rss / 2**20:.0f} MiB; "
        f"wall time {summary.wall_seconds:.0f} s",
        "",
    ]
    for n_class, (key, cls) in enumerate(sorted(summary.classes.items(), key=lambda kv: -kv[1].count), 1):
        first = cls.examples[0].outcome
        out += [
            f"## {n_class}. {key[0]}: `{key[1]}` at `{key[2] or '-'}` ({cls.count} programs)",
            "",
            f"- stage: {first.stage or '-'}",
            f"- message: `{first.message[:400]}`",
            "",
        ]
        for ex in cls.examples[:max_examples]:
            text = ex.text if len(ex.text) <= max_chars else ex.text[:max_chars] + "\n# ...(truncated)"
            out += [
                f"Reproducer (program #{ex.index}, {ex.origin}, stage {ex.outcome.stage or '-'}):",
                "",
                "```python",
                text.rstrip("\n"),
                "```",
                "",
            ]
    return "\n".join(out)
