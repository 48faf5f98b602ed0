"""What Tab offers at the cursor, from the session: table names in ``px.DataFrame(table='...``,
a DataFrame's columns after ``df.`` and in ``df['...`` (its schema after the statements so far),
``px.`` functions with their signatures, the session's names, commands, and script names for
``:run``. :func:`candidates` is plain (testable); :class:`PxlCompleter` hands it to prompt_toolkit.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document

from pxq.repl.session import COMMANDS, ReplSession

_TABLE_ARG = re.compile(r"""px\.DataFrame\(\s*(?:table\s*=\s*)?(['"])(\w*)$""")
_SUBSCRIPT = re.compile(r"""\b([A-Za-z_]\w*)\[\s*(['"])(\w*)$""")
_ATTRIBUTE = re.compile(r"""\b([A-Za-z_]\w*)\.(\w*)$""")
_NAME = re.compile(r"""(?<![\w.'"])([A-Za-z_]\w*)$""")


@dataclass(frozen=True)
class Candidate:
    text: str  # replaces the ``replaces`` characters before the cursor
    replaces: int
    meta: str = ""


def _matching(prefix: str, names: Iterable[tuple[str, str]]) -> list[Candidate]:
    return [Candidate(name, len(prefix), meta) for name, meta in names if name.startswith(prefix)]


def _px_functions() -> list[tuple[str, str]]:
    from pxq.funcs.registry import AGGREGATES, SCALARS
    from pxq.plan.compile import PX_STRING_TYPES, SPECIAL_FUNCTIONS

    out = [(name, fn.signature()) for name, fn in SCALARS.items()]
    out += [(name, f"aggregate: {fn.signature()}") for name, fn in AGGREGATES.items()]
    out += [(name, "px." + name) for name in SPECIAL_FUNCTIONS + PX_STRING_TYPES]
    return sorted(set(out), key=lambda item: item[0].lower())


def _tables() -> list[tuple[str, str]]:
    from pxq.tables import CATALOG

    return [(name, CATALOG[name].doc.split(". ")[0]) for name in sorted(CATALOG)]


def _command_candidates(before: str) -> list[Candidate]:
    words = before.split()
    if len(words) == 1 and not before.endswith(" "):
        return _matching(words[0], ((c, doc) for c, doc in COMMANDS.items()))
    command = words[0]
    prefix = "" if before.endswith(" ") else words[-1]
    position = len(words) - (0 if before.endswith(" ") else 1)  # the argument being typed, 1-based
    if position != 1:
        return []
    if command == ":run":
        from pxq.library import bundled_scripts

        return _matching(prefix, ((s.name, s.summary) for s in bundled_scripts()))
    if command == ":schema":
        return _matching(prefix, _tables())
    if command == ":out":
        from pxq.render import FORMATS

        return _matching(prefix, ((f, "output format") for f in FORMATS))
    if command == ":source":
        return _matching(prefix, [("live", "live capture: a rolling window of what the probes collect")])
    return []


def candidates(session: ReplSession, before: str) -> list[Candidate]:
    """The completions of the text ``before`` the cursor (the whole input up to it)."""
    if before.lstrip().startswith(":"):
        return _command_candidates(before.lstrip())
    line = before.rsplit("\n", 1)[-1]
    match = _TABLE_ARG.search(line)
    if match:
        return _matching(match.group(2), _tables())
    match = _SUBSCRIPT.search(line)
    if match:
        subscripted = session.compiler.columns_of(match.group(1)) or ()
        return _matching(match.group(3), ((c, "column") for c in subscripted))
    match = _ATTRIBUTE.search(line)
    if match:
        owner, prefix = match.groups()
        if owner == "px":
            return _matching(prefix, _px_functions())
        columns = session.compiler.columns_of(owner)
        if columns is None:
            return []
        from pxq.plan.compile import DATAFRAME_METHODS

        return _matching(prefix, [*((c, "column") for c in columns), *((m, "method") for m in DATAFRAME_METHODS)])
    match = _NAME.search(line)
    if match:
        globals_ = ((name, "") for name in session.compiler.names if not name.startswith("_"))
        return _matching(match.group(1), globals_)
    return []


class PxlCompleter(Completer):
    def __init__(self, session: ReplSession):
        self.session = session

    def get_completions(self, document: Document, complete_event: CompleteEvent) -> Iterator[Completion]:
        for c in candidates(self.session, document.text_before_cursor):
            yield Completion(c.text, start_position=-c.replaces, display_meta=c.meta)
