"""The REPL's terminal side: prompt_toolkit's line editor (PxL highlighting with pygments' Python
lexer, Tab completion from the session, multi-line input, history in the user's state directory)
around a :class:`pxq.repl.session.ReplSession`, and the printing of its replies.

Ctrl-C at the prompt clears the line; during a query it cancels the query and the session goes
on. Ctrl-D (or ``:quit``) leaves.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from pxq.repl.session import ReplSession, Reply, needs_more

if TYPE_CHECKING:
    import datetime as dt

    from prompt_toolkit.history import History
    from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
    from rich.console import Console


def prompt_text(session: ReplSession) -> str:
    """``pxl [N]> ``: N numbers the input, as the ``outN`` its DataFrame expression shows."""
    return f"pxl [{session.inputs + 1}]> "


CONTINUATION = "...  "
INDENT = "    "


def state_dir() -> Path:
    """``$XDG_STATE_HOME/pxq``, else ``~/.local/state/pxq`` (the XDG base directory default)."""
    base = os.environ.get("XDG_STATE_HOME", "").strip()
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".local" / "state"
    return root / "pxq"


def history_path() -> Path:
    return state_dir() / "history"


def _history() -> History:
    from prompt_toolkit.history import FileHistory, InMemoryHistory

    path = history_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(exist_ok=True)
    except OSError as exc:
        print(f"pxq: history not kept: {path}: {exc.strerror or exc}", file=sys.stderr)
        return InMemoryHistory()
    return FileHistory(str(path))


def _key_bindings() -> KeyBindings:
    from prompt_toolkit.key_binding import KeyBindings

    bindings = KeyBindings()

    @bindings.add("enter")
    def _enter(event: KeyPressEvent) -> None:
        buffer = event.current_buffer
        state = buffer.complete_state
        if state is not None and state.current_completion is not None:
            buffer.apply_completion(state.current_completion)  # Enter in the menu takes the choice
            return
        if needs_more(buffer.text):
            line = buffer.document.current_line
            indent = line[: len(line) - len(line.lstrip())]
            if line.rstrip().endswith(":"):
                indent += INDENT
            buffer.insert_text("\n" + indent)
            return
        buffer.validate_and_handle()

    return bindings


def show(reply: Reply, *, console: Console, max_rows: int, zone: dt.tzinfo | None = None) -> None:
    """Print a reply: text, terminal tables, flamegraph paths with the hottest stacks; errors on stderr."""
    from pxq.render import render

    for line in reply.lines:
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    if reply.tables:
        render(reply.tables, "table", console=console, max_rows=max_rows, zone=zone)
    for name, flame in reply.flamegraphs.items():
        console.print(f"{name}: flamegraph written to {flame.path}", markup=False, highlight=False)
        console.print("hottest stacks (share, samples, innermost frame first):", markup=False, highlight=False)
        for line in flame.summary:
            console.print("  " + line, markup=False, highlight=False)
    if reply.error:
        print(reply.error, file=sys.stderr, flush=True)


def run_piped(session: ReplSession, lines: Iterable[str], *, max_rows: int, zone: dt.tzinfo | None = None) -> int:
    """Inputs read from a pipe, not a terminal (``pxq repl --from DIR < session.txt``): lines are
    grouped into inputs as Enter would (an open bracket or a def continues); no prompt, no history.
    1 when an input failed (each is still tried), else 0."""
    from rich.console import Console

    console = Console()
    failed = False
    pending: list[str] = []

    def submit() -> None:
        nonlocal failed
        text = "\n".join(pending)
        pending.clear()
        reply = session.submit(text)
        failed = failed or reply.error is not None
        show(reply, console=console, max_rows=max_rows, zone=zone)

    try:
        for line in lines:
            pending.append(line.rstrip("\n"))
            if not needs_more("\n".join(pending)):
                submit()
                if session.left:
                    break
        if pending and not session.left:
            submit()
    finally:
        session.close()
    return 1 if failed else 0


def run_repl(session: ReplSession, *, max_rows: int = 20, zone: dt.tzinfo | None = None) -> int:
    """Read, run and print until Ctrl-D or :quit; 0."""
    from prompt_toolkit import PromptSession
    from prompt_toolkit.lexers import PygmentsLexer
    from pygments.lexers.python import PythonLexer
    from rich.console import Console

    from pxq.errors import PxqError
    from pxq.repl.completion import PxlCompleter

    console = Console()
    prompt: PromptSession[str] = PromptSession(
        history=_history(),
        lexer=PygmentsLexer(PythonLexer),
        completer=PxlCompleter(session),
        complete_while_typing=False,
        multiline=True,
        key_bindings=_key_bindings(),
        prompt_continuation=lambda width, _line, _soft: CONTINUATION.rjust(width),
    )
    console.print(
        f"pxq repl: {session.source.describe()}\n:help for commands, Tab completes, Ctrl-D leaves",
        markup=False,
        highlight=False,
    )
    try:
        while True:
            try:
                text = prompt.prompt(prompt_text(session))
            except KeyboardInterrupt:
                continue  # Ctrl-C at the prompt: a fresh line
            except EOFError:
                break
            try:
                reply = session.submit(text)
            except KeyboardInterrupt:
                print("pxq: cancelled", file=sys.stderr, flush=True)
                continue
            except Exception as exc:  # noqa: BLE001 - a bug in pxq is said; the session goes on
                first = (str(exc).strip().split("\n", 1) or [""])[0][:300]
                print(f"pxq: internal error: {type(exc).__name__}: {first}", file=sys.stderr, flush=True)
                continue
            try:
                show(reply, console=console, max_rows=max_rows, zone=zone)
            except KeyboardInterrupt:
                print("pxq: cancelled", file=sys.stderr, flush=True)
            except PxqError as exc:
                print(f"pxq: {exc}", file=sys.stderr, flush=True)
            if reply.leave:
                break
    finally:
        session.close()
    return 0
