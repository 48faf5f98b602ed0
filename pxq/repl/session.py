"""The state of a REPL session, apart from any terminal: each input is compiled against the
statements before it (:class:`pxq.plan.compile.CompileSession`), what it shows is run over the
session's data source, and the answer is a :class:`Reply` the terminal prints.

What is shown at once: an expression statement whose value is a DataFrame (named ``outN``, N the
input's number) and every ``px.display`` of the input. ``:save`` writes the statements that
compiled as a script ``pxq run`` accepts, the shown expressions as ``px.display(EXPR, 'outN')``.
Diagnostics point into the line typed: the inputs are numbered as lines of one session text
(``<repl>:LINE:COL``), so an error inside a function defined earlier shows that earlier line.
"""

from __future__ import annotations

import io
import shlex
import tempfile
import threading
import tokenize
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd
import pyarrow as pa

from pxq.errors import CompileError, Diagnostic, PxqError, ScriptError, Source as ScriptSource, UsageError, closest
from pxq.funcs.registry import ExecContext
from pxq.lang import ast, parse
from pxq.plan import nodes as n
from pxq.plan.compile import CompileSession, DataFrameValue, ExprValue, GroupByValue, Value
from pxq.plan.constants import evaluate_constant
from pxq.plan.optimize import optimize
from pxq.tables import CATALOG
from pxq.types import DataType

if TYPE_CHECKING:
    from pxq.api import Compiled

# A statement or pragma that compiled, the display name of a shown expression, its text.
Entry = tuple[ast.Stmt | ast.Pragma, str | None, str]

FILENAME = "<repl>"
# Imported before the first input, as the brief of every PxL script starts.
PRELUDE = "import px"
HOTTEST_STACKS = 5


class SessionSource(Protocol):
    """Where a session's queries read: a capture directory or the live rolling window
    (:class:`pxq.agent.live_window.LiveWindow`)."""

    live: bool

    @property
    def data(self) -> Any:
        """The executor's DataSource."""

    def now_ns(self) -> int:
        """``now`` for relative times: a capture's end (results reproduce), the clock when live."""

    def prepare(self, tables: set[str]) -> list[str]:
        """Make ``tables`` readable (live: start their probes); returns notes for the user."""

    def describe(self) -> str: ...

    def rows(self, table: str) -> int | None:
        """Rows of ``table`` this source holds now (None: it has no such table)."""

    def close(self) -> None: ...


class CaptureSource:
    """A capture directory (``--from DIR``)."""

    live = False

    def __init__(self, directory: str | Path):
        from pxq.replay import open_capture

        self.directory = str(directory)
        self.data = open_capture(directory)

    def now_ns(self) -> int:
        return int(self.data.end_time_ns)

    def prepare(self, tables: set[str]) -> list[str]:
        missing = sorted(t for t in tables if not self.data.has_table(t))
        if missing:
            held = ", ".join(self.data.table_names()) or "none"
            return [f"the capture holds no {', '.join(missing)} (it holds: {held}): no rows from there"]
        return []

    def describe(self) -> str:
        tables = ", ".join(f"{t} ({self.rows(t):,} rows)" for t in self.data.table_names())
        return f"capture {self.directory}: {tables or 'no tables'}"

    def rows(self, table: str) -> int | None:
        if not self.data.has_table(table):
            return None
        return int(self.data.scan(table, ["time_"]).num_rows)

    def close(self) -> None:
        pass


class AgentSource:
    """A running node agent (``pxq agent serve``) at ``address``: each query reads its history
    over Arrow Flight (:class:`pxq.agent.flight.AgentDataSource`); relative times follow its clock."""

    live = True

    def __init__(self, address: str):
        from pxq.agent.flight import AgentClient

        self.address = address
        self.client = AgentClient(address)
        try:
            self.client.info()  # an agent that does not answer is said now, not at the first query
        except BaseException:
            self.client.close()
            raise

    @property
    def data(self) -> Any:
        from pxq.agent.flight import AgentDataSource

        return AgentDataSource(self.client)

    def now_ns(self) -> int:
        return int(self.client.info()["now_ns"])

    def prepare(self, tables: set[str]) -> list[str]:
        held = self.client.info()["tables"]
        missing = sorted(t for t in tables if t not in held)
        if missing:
            collectors = ", ".join(sorted({CATALOG[t].collector for t in missing if t in CATALOG}))
            return [
                f"agent {self.address} does not collect {', '.join(missing)} (collector {collectors} is not "
                f"running there; it holds {', '.join(sorted(held)) or 'nothing'}): no rows from there"
            ]
        return []

    def describe(self) -> str:
        status = self.client.status()
        tables = ", ".join(f"{t} ({info['rows']:,} rows)" for t, info in status["tables"].items())
        return f"agent {self.address} ({status['mode']}, {status['state']}): {tables or 'no tables'}"

    def rows(self, table: str) -> int | None:
        info = self.client.status()["tables"].get(table)
        return None if info is None else int(info["rows"])

    def close(self) -> None:
        self.client.close()


@dataclass(frozen=True)
class Flamegraph:
    path: str
    summary: list[str]  # the hottest stacks, one line each


@dataclass
class Reply:
    """What one input produced, for the terminal to print."""

    tables: dict[str, pa.Table] = field(default_factory=dict)  # shown as terminal tables
    flamegraphs: dict[str, Flamegraph] = field(default_factory=dict)  # stack tables
    lines: list[str] = field(default_factory=list)  # text (command output, notes)
    error: str | None = None
    leave: bool = False  # :quit


def needs_more(text: str) -> bool:
    """Whether ``text`` is an unfinished input: an open bracket or string, a trailing backslash, or a
    ``def`` whose block has not ended with a blank line. Enter then starts a new line."""
    if not text.strip() or text.lstrip().startswith(":"):
        return False
    first = text.lstrip().split("\n", 1)[0]
    if first.startswith("def ") and text.split("\n")[-1].strip():
        return True
    try:
        for _ in tokenize.generate_tokens(io.StringIO(text).readline):
            pass
    except tokenize.TokenError:
        return True  # EOF in a multi-line statement or string
    except (IndentationError, SyntaxError):
        return False  # the parser says what is wrong
    return text.rstrip("\n").endswith("\\")


def _local_agent_address() -> str:
    from pxq.agent.daemon import default_state_dir, read_state

    state = read_state()
    if state is None:
        raise UsageError(f"no local agent ({default_state_dir() / 'agent.json'} is absent): :source agent HOST:PORT")
    return str(state["address"])


COMMANDS = {
    ":help": "this help",
    ":source": ":source [DIR | live | agent [HOST:PORT]]  show or switch the data source (a capture directory, "
    "live capture, or a running agent: the local one by default)",
    ":tables": "the tables, with the rows the source holds",
    ":schema": ":schema TABLE  the columns of a table",
    ":explain": "the plan (and probe manifest) of the session's displays so far",
    ":run": ":run SCRIPT [--arg=value ...]  run a bundled script, .pxl file or script folder",
    ":save": ":save FILE.pxl  the session as a script (`pxq run FILE.pxl` runs it)",
    ":out": ":out FORMAT FILE  write the last result (formats as `pxq run -o`)",
    ":quit": "leave (Ctrl-D too)",
}

HELP = """\
Type PxL; `px` is imported. A DataFrame expression (`df`, `df.head(5)`) or px.display(...) shows
its result at once. Enter on an open bracket or a `def` continues the input (a blank line ends a
def). Tab completes tables, columns, px functions and script names. Ctrl-C cancels a running
query (or clears the line); Ctrl-D leaves. Commands:"""


class ReplSession:
    """Compiles and runs what is typed, one input at a time (see the module docstring).

    ``live_source``: builds the live source when ``:source live`` asks for it (None: not offered).
    ``output_dir``: where flamegraphs are written (default: a new temporary directory).
    """

    def __init__(
        self,
        source: SessionSource,
        *,
        live_source: Callable[[], SessionSource] | None = None,
        output_dir: str | Path | None = None,
    ):
        self.source = source
        self.live_source = live_source
        self._output_dir = Path(output_dir) if output_dir is not None else None
        self.inputs = 0  # PxL inputs submitted (numbers the shown expressions)
        self.lines: list[str] = []  # every PxL line typed, numbered as one text for diagnostics
        # The statements and pragmas that compiled, with the display name of a shown expression,
        # and their text for :save.
        self.history: list[Entry] = []
        self.last: dict[str, pa.Table] = {}  # the last result, for :out
        self.left = False  # :quit was typed
        self.compiler = self._compiled(source.now_ns(), [])[0]

    # ------------------------------------------------------------------ input

    def submit(self, text: str) -> Reply:
        """One input: a ``:command`` or PxL. Errors become ``Reply.error``; the session goes on."""
        try:
            if text.strip().startswith(":"):
                return self.command(text.strip())
            if not text.strip():
                return Reply()
            return self._pxl(text)
        except ScriptError as exc:
            return Reply(error=exc.with_source(self.text_source()).render())
        except PxqError as exc:
            return Reply(error=f"pxq: {exc}")

    def text_source(self) -> ScriptSource:
        return ScriptSource("\n".join(self.lines), FILENAME)

    def _pxl(self, text: str) -> Reply:
        offset = len(self.lines)
        self.lines.extend(text.split("\n"))
        self.inputs += 1
        # Leading newlines number this input's lines after the earlier ones.
        padded = "\n" * offset + text
        module = parse(padded, FILENAME)
        shown: list[n.Display] = []
        said: list[str] = []  # what a constant or other non-DataFrame expression is
        added: list[Entry] = []
        try:
            for pragma in module.pragmas:
                self.compiler.add_pragma(pragma)
                added.append((pragma, None, f"#px:set {pragma.key}={pragma.value}"))
            for stmt in module.body:
                before = len(self.compiler.displays)
                value = self.compiler.add_statement(stmt)
                shown.extend(self.compiler.displays[before:])
                name = None
                if isinstance(value, DataFrameValue):
                    name = self._expression_name(sum(1 for _, nm, _ in added if nm))
                    shown.append(n.Display(value.node, name))
                added.append((stmt, name, padded[stmt.span.start_pos : stmt.span.end_pos]))
                if value is not None and name is None:
                    said.extend(self._describe(value))
        finally:
            self.history.extend(added)  # what compiled stays, also when a later statement fails
        if not shown:
            return Reply(lines=said)
        notes = said + self.source.prepare(_tables_read(shown))
        if self.source.live:  # relative times from the clock now, over what is collected now
            earlier = self.history[: len(self.history) - len(added)]
            self.compiler, shown = self._compiled(self.source.now_ns(), earlier, added)
        reply = self._execute(self.compiler.graph(shown))
        reply.lines[:0] = notes
        return reply

    def _describe(self, value: Value) -> list[str]:
        """A constant's value; what other expressions that are no DataFrame are."""
        if isinstance(value, ExprValue):
            if not value.expr.is_constant:
                return [f"a column expression of type {value.expr.type}: assign it to a column (df.x = ...) to see it"]
            try:
                result = evaluate_constant(value.expr, ExecContext(now_ns=self.compiler.now_ns), checked=True)
            except (ArithmeticError, ValueError) as exc:
                raise CompileError(Diagnostic(str(exc), value.span)) from None
            if value.expr.type is DataType.TIME64NS and isinstance(result, int):
                return [f"{pd.Timestamp(result, tz='UTC')}  ({value.expr.type}, {result} ns)"]
            return [f"{result!r}  ({value.expr.type})"]
        if isinstance(value, GroupByValue):
            return ["a groupby: its .agg(...) shows the groups"]
        return []

    def _expression_name(self, index: int) -> str:
        taken = {d.name for d in self.compiler.displays} | {nm for _, nm, _ in self.history if nm}
        name = f"out{self.inputs}" if index == 0 else f"out{self.inputs}_{index}"
        while name in taken:
            name += "_"
        return name

    def _compiled(
        self, now_ns: int, before: list[Entry], then: Sequence[Entry] = ()
    ) -> tuple[CompileSession, list[n.Display]]:
        """A new compile session at ``now_ns`` with the prelude and ``before`` compiled, then
        ``then``, whose displays (and shown expressions) are returned."""
        session = CompileSession(now_ns=now_ns)
        session.add_module(parse(PRELUDE, FILENAME))
        self._replay(session, before)
        return session, self._replay(session, list(then))

    @staticmethod
    def _replay(session: CompileSession, items: list[Entry]) -> list[n.Display]:
        shown: list[n.Display] = []
        for item, name, _text in items:
            if isinstance(item, ast.Pragma):
                session.add_pragma(item)
                continue
            before = len(session.displays)
            value = session.add_statement(item)
            shown.extend(session.displays[before:])
            if name is not None and isinstance(value, DataFrameValue):
                shown.append(n.Display(value.node, name))
        return shown

    def _execute(self, graph: n.Graph) -> Reply:
        from pxq.exec.execute import execute

        cancel = threading.Event()
        try:
            results = execute(optimize(graph), self.source.data, cancel=cancel)
        except KeyboardInterrupt:
            cancel.set()  # the executor's thread stops after its current step
            raise
        self.last = dict(results.tables)
        reply = Reply(lines=[f"note: {note}" for note in results.notes])
        for name, table in results.tables.items():
            from pxq.render.stacks import is_stack_table

            if is_stack_table(table) and table.num_rows:
                reply.flamegraphs[name] = self._flamegraph(name, table)
            else:
                reply.tables[name] = table
        return reply

    def _flamegraph(self, name: str, table: pa.Table) -> Flamegraph:
        from pxq.render import render

        if self._output_dir is None:
            self._output_dir = Path(tempfile.mkdtemp(prefix="pxq-repl-"))
        path = self._output_dir / f"{_file_name(name)}.svg"
        count = 1
        while path.exists():  # an earlier result of the same name (a script run twice) stays
            count += 1
            path = self._output_dir / f"{_file_name(name)}-{count}.svg"
        render({name: table}, "svg", str(path))
        return Flamegraph(str(path), hottest_stacks(table, name))

    # ------------------------------------------------------------------ commands

    def command(self, line: str) -> Reply:
        try:
            words = shlex.split(line)
        except ValueError as exc:
            raise UsageError(f"{line.split()[0]}: {exc}") from None
        name, args = words[0], words[1:]
        handler = getattr(self, "cmd_" + name[1:], None) if name in COMMANDS else None
        if handler is None:
            near = closest(name, COMMANDS)
            hint = f" (did you mean {near[0]}?)" if near else ""
            raise UsageError(f"unknown command {name!r}{hint}; :help lists them")
        reply: Reply = handler(args)
        return reply

    def cmd_help(self, _args: list[str]) -> Reply:
        width = max(map(len, COMMANDS))
        return Reply(lines=[HELP, *(f"  {c:<{width}}  {doc}" for c, doc in COMMANDS.items())])

    def cmd_quit(self, _args: list[str]) -> Reply:
        self.left = True
        return Reply(leave=True)

    def cmd_source(self, args: list[str]) -> Reply:
        if not args:
            return Reply(lines=[self.source.describe()])
        if len(args) != 1:
            if len(args) == 2 and args[0] == "agent":
                new: SessionSource = AgentSource(args[1])
            else:
                raise UsageError(":source takes one argument: a capture directory, live, or agent [HOST:PORT]")
        elif args[0] == "agent":
            new = AgentSource(_local_agent_address())
        elif args[0] == "live":
            if self.live_source is None:
                raise UsageError("live capture is not available in this session")
            new = self.live_source()
        else:
            new = CaptureSource(args[0])
        try:
            compiler, _ = self._compiled(new.now_ns(), self.history)
        except BaseException:
            new.close()
            raise
        old, self.source, self.compiler = self.source, new, compiler
        old.close()
        return Reply(lines=[f"source: {new.describe()}"])

    def cmd_tables(self, _args: list[str]) -> Reply:
        width = max(map(len, CATALOG))
        lines = []
        for name in sorted(CATALOG):
            rows = self.source.rows(name)
            held = "" if rows is None else f"{rows:,} rows"
            lines.append(f"{name:<{width}}  {held:>14}  {CATALOG[name].doc.split('. ')[0]}")
        return Reply(lines=lines)

    def cmd_schema(self, args: list[str]) -> Reply:
        if len(args) != 1:
            raise UsageError(":schema takes one table name; :tables lists them")
        schema = CATALOG.get(args[0])
        if schema is None:
            near = closest(args[0], CATALOG)
            hint = f" (did you mean {near[0]}?)" if near else ""
            raise UsageError(f"unknown table {args[0]!r}{hint}; :tables lists them")
        width = max(len(c.name) for c in schema.columns)
        lines = [f"{schema.name}: {schema.doc}"]
        lines += [f"  {c.name:<{width}}  {c.type!s:<8}  {c.semantic!s:<18}  {c.doc}" for c in schema.columns]
        return Reply(lines=lines)

    def script_text(self) -> str:
        """The session as a PxL script: the prelude, then every statement that compiled, the shown
        expressions as displays."""
        parts = [PRELUDE]
        for item, name, text in self.history:
            if isinstance(item, ast.Import) and item.module == "px" and item.alias == "px":
                continue  # the prelude has it
            parts.append(f"px.display({text}, {name!r})" if name else text)
        return "\n".join(parts) + "\n"

    def _compile_script(self, text: str, filename: str) -> Compiled:
        from pxq.api import compile_script
        from pxq.library import Script

        return compile_script(Script(Path(filename).stem, text, filename), now_ns=self.source.now_ns())

    def cmd_explain(self, _args: list[str]) -> Reply:
        from pxq.plan.format import format_graph
        from pxq.plan.split import split

        compiled = self._compile_script(self.script_text(), FILENAME)
        plan = split(compiled.optimized)
        lines = ["== plan as compiled ==", format_graph(compiled.graph), "", "== optimized plan =="]
        lines += [format_graph(compiled.optimized), "", "== probe manifest ==", plan.manifest.to_text()]
        return Reply(lines=lines)

    def cmd_save(self, args: list[str]) -> Reply:
        if len(args) != 1:
            raise UsageError(":save takes one file name, e.g. :save session.pxl")
        text = self.script_text()
        self._compile_script(text, args[0])  # the script must run as saved: said now, not at `pxq run`
        try:
            Path(args[0]).write_text(text, encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"{args[0]}: cannot write: {exc.strerror or exc}") from None
        statements = sum(1 for item, _, _ in self.history if not isinstance(item, ast.Pragma))
        return Reply(lines=[f"saved {args[0]}: {statements} statements; run it with `pxq run {args[0]}`"])

    def cmd_out(self, args: list[str]) -> Reply:
        from pxq.render import FORMATS, render, written_lines

        if len(args) != 2:
            raise UsageError(f":out takes a format and a file, e.g. :out csv result/ (formats: {', '.join(FORMATS)})")
        if not self.last:
            raise UsageError("nothing shown yet: :out writes the last result")
        fmt, out = args
        written = render(self.last, fmt, out)
        return Reply(lines=[line.removeprefix("pxq: ") for line in written_lines(self.last, written)])

    def cmd_run(self, args: list[str]) -> Reply:
        from pxq.api import compile_script
        from pxq.cli.main import parse_script_args
        from pxq.library import load_script

        if not args:
            raise UsageError(":run takes a script (bundled name, .pxl file or folder) and its --arguments")
        script = load_script(args[0])
        script_args, _ = parse_script_args(args[1:])
        compiled = compile_script(script, args=script_args, now_ns=self.source.now_ns())
        notes = self.source.prepare(_tables_read(compiled.graph.displays))
        if self.source.live:
            compiled = compile_script(script, args=script_args, now_ns=self.source.now_ns())
        reply = self._execute(compiled.graph)
        reply.lines[:0] = notes
        return reply

    def close(self) -> None:
        self.source.close()


def _tables_read(displays: Sequence[n.Display]) -> set[str]:
    return {node.table for node in n.relations_postorder(tuple(displays)) if isinstance(node, n.Source)}


def _file_name(display: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in display) or "display"


def hottest_stacks(table: pa.Table, title: str = "", limit: int = HOTTEST_STACKS) -> list[str]:
    """The ``limit`` stacks with the most samples: share, samples, and the innermost frames."""
    from pxq.render.stacks import StackSamples

    record = StackSamples.from_table(table, title=title)
    total = record.total or 1
    order = np.argsort(-record.counts, kind="stable")[:limit]
    lines = []
    for i in order:
        frames = record.stack(int(i), rooted=False)
        group = record.stack(int(i))[: len(record.stack(int(i))) - len(frames)]
        shown = " <- ".join(reversed(frames[-4:])) + (" <- ..." if len(frames) > 4 else "")
        where = f"  [{', '.join(group)}]" if group else ""
        lines.append(f"{100 * record.counts[i] / total:5.1f}%  {int(record.counts[i]):>8,}  {shown}{where}")
    return lines
