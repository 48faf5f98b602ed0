"""One error hierarchy for pxq, and positioned diagnostics rendered like bpftrace/rustc:

my_script.pxl:3:14: error: unknown column 'latncy' in http_events
    df = df[df.latncy > 10]
               ^^^^^^
hint: did you mean 'latency'? columns: time_, upid, ...
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Span:
    """A region of the source text: 1-based lines and columns, end exclusive; offsets 0-based."""

    line: int
    column: int
    end_line: int
    end_column: int
    start_pos: int = 0
    end_pos: int = 0

    def __str__(self) -> str:
        return f"{self.line}:{self.column}"


@dataclass(frozen=True)
class Source:
    """The text a span points into, with the name to print in front of line:col."""

    text: str
    filename: str = "<script>"

    def line(self, number: int) -> str:
        # Only '\n' ends a line, as for the parser's positions (splitlines also splits at \f etc.).
        lines = self.text.split("\n")
        return lines[number - 1] if 0 < number <= len(lines) else ""


@dataclass(frozen=True)
class Diagnostic:
    message: str
    span: Span | None = None
    hint: str | None = None
    code: str = "error"
    notes: tuple[str, ...] = ()

    def render(self, source: Source | None) -> str:
        filename = source.filename if source else "<script>"
        if self.span is None:
            head = f"{filename}: {self.code}: {self.message}"
            parts = [head]
        else:
            head = f"{filename}:{self.span.line}:{self.span.column}: {self.code}: {self.message}"
            parts = [head]
            if source is not None:
                text = source.line(self.span.line)
                if text:
                    parts.append("    " + text.rstrip("\n"))
                    end = self.span.end_column if self.span.end_line == self.span.line else len(text) + 1
                    width = max(1, end - self.span.column)
                    parts.append("    " + " " * (self.span.column - 1) + "^" * width)
        parts.extend(f"note: {note}" for note in self.notes)
        if self.hint:
            parts.append(f"hint: {self.hint}")
        return "\n".join(parts)


class PxqError(Exception):
    """Base of every error pxq reports to a user (never shown with a traceback)."""

    exit_code = 1


class ScriptError(PxqError):
    """A problem in a PxL script, with positioned diagnostics."""

    exit_code = 2

    def __init__(self, diagnostics: list[Diagnostic] | Diagnostic, source: Source | None = None):
        if isinstance(diagnostics, Diagnostic):
            diagnostics = [diagnostics]
        self.diagnostics = list(diagnostics)
        self.source = source
        super().__init__(self.render())

    def with_source(self, source: Source) -> ScriptError:
        return self if self.source is not None else type(self)(self.diagnostics, source)

    def render(self) -> str:
        return "\n".join(d.render(self.source) for d in self.diagnostics)


class PxqSyntaxError(ScriptError):
    """The script does not parse, or uses Python that PxL does not accept."""


class CompileError(ScriptError):
    """The script parses but does not make sense: unknown table, column, function, wrong args."""


class UsageError(PxqError):
    """Bad command-line usage: unknown script, output format, missing argument."""

    exit_code = 2


class DataError(PxqError):
    """A capture file is missing, unreadable, corrupt or has impossible column types."""

    exit_code = 1


class ExecutionError(PxqError):
    """The plan failed while running over data (e.g. a regex that does not compile)."""

    exit_code = 1


def closest(name: str, candidates, n: int = 3) -> list[str]:
    """The candidates that look most like ``name`` (for 'did you mean' hints)."""
    import difflib

    return difflib.get_close_matches(name, list(candidates), n=n, cutoff=0.6)


class ResourceLimitError(ExecutionError):
    """The query would need more memory than its limit (``PXQ_MAX_MEMORY_MB`` or
    ``#px:set max_memory_mb=N``), e.g. a join whose output explodes."""
