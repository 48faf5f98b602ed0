"""Scheduled scripts of the node agent (Pixie's retention scripts): each ``[[schedule]]`` entry of
the agent's config is a PxL script the agent runs on its own store every interval, its output
tables written to the spill directory::

    [[schedule]]
    script = "http_data"          # a bundled script's name or a script file/folder
    every = "60s"
    args = {start_time = "-1m"}   # the script's arguments (optional)
    name = "http_minutely"        # optional: the script's name; the folder of its output
    output = "spill"              # the only output: pxq has no px.export

Each run compiles the script with ``px.now()`` = the agent's clock, runs it over the agent's
store (as a query over Flight would) and writes each output table to
``<spill_dir>/_scheduled/<name>/<table>/<stamp>Z-<seq>.parquet`` (:mod:`pxq.agent.spill`). A run
that fails (a script error, a runtime error, a write error) is logged and counted in the agent's
status; the agent and the other scripts go on. A script that cannot be loaded at all (no such
file or bundled name) is a config error: the agent refuses to start, saying which entry.
"""

from __future__ import annotations

import re
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pxq.errors import PxqError, UsageError

OUTPUTS = ("spill",)
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
SCHEDULE_KEYS = ("script", "every", "args", "name", "output")
MIN_EVERY_S = 1.0


@dataclass(frozen=True)
class ScheduledScript:
    name: str
    script: str  # as the config gives it: a bundled name or a path
    every_s: float
    args: tuple[tuple[str, Any], ...] = ()
    output: str = "spill"


def parse_schedule(entries: Any, where: str) -> tuple[ScheduledScript, ...]:
    """``[[schedule]]`` entries as ScheduledScripts; a UsageError naming the entry and key."""
    from pxq.plan.times import parse_duration

    if not isinstance(entries, list):
        raise UsageError(f"{where}: schedule: expected [[schedule]] entries (an array of tables)")
    out: list[ScheduledScript] = []
    for i, entry in enumerate(entries):
        at = f"{where}: schedule[{i}]"
        if not isinstance(entry, dict):
            raise UsageError(f"{at}: expected a table with script and every")
        for key in entry:
            if key not in SCHEDULE_KEYS:
                raise UsageError(f"{at}.{key}: unknown setting (known: {', '.join(SCHEDULE_KEYS)})")
        for key in ("script", "every"):
            if key not in entry:
                raise UsageError(f'{at}: missing {key} (e.g. script = "http_data", every = "60s")')
        script = entry["script"]
        if not isinstance(script, str) or not script.strip():
            raise UsageError(f"{at}.script: expected a script name or path, got {script!r}")
        try:
            every_s = parse_duration(str(entry["every"]))
        except PxqError as exc:
            raise UsageError(f"{at}.every: {exc}") from None
        if every_s < MIN_EVERY_S:
            raise UsageError(f"{at}.every: at least {MIN_EVERY_S:g}s, not {entry['every']!r}")
        args = entry.get("args", {})
        if not isinstance(args, dict) or not all(isinstance(v, (str, int, float, bool)) for v in args.values()):
            raise UsageError(f"{at}.args: expected a table of script arguments (strings, numbers, booleans)")
        output = entry.get("output", "spill")
        if output not in OUTPUTS:
            raise UsageError(
                f"{at}.output: {output!r} is not one of {', '.join(OUTPUTS)} (pxq has no px.export: results go "
                "to the spill directory)"
            )
        name = entry.get("name", _default_name(script))
        if not isinstance(name, str) or not _NAME.match(name):
            raise UsageError(f"{at}.name: {name!r} must be letters, digits, '_', '-', '.' (it names a folder)")
        if any(s.name == name for s in out):
            raise UsageError(f"{at}.name: {name!r} is used by an earlier entry: give each a name")
        out.append(ScheduledScript(name, script, every_s, tuple(sorted(args.items())), output))
    return tuple(out)


def _default_name(script: str) -> str:
    base = script.rstrip("/").rsplit("/", 1)[-1]
    base = base[: -len(".pxl")] if base.endswith(".pxl") else base
    return re.sub(r"[^A-Za-z0-9_.-]", "_", base) or "script"


@dataclass
class _Runs:
    runs: int = 0
    failures: int = 0
    rows_written: int = 0
    last_run_ns: int | None = None
    last_error: str | None = None


@dataclass
class Scheduler:
    """Runs ``entries`` on ``source()`` (as of ``now_ns()``) when due, writing to ``spiller``."""

    entries: tuple[ScheduledScript, ...]
    source: Callable[[], Any]
    now_ns: Callable[[], int]
    spiller: Any
    log: Callable[[str], None] = field(default=lambda line: print(f"pxq: agent: {line}", file=sys.stderr, flush=True))

    def __post_init__(self) -> None:
        from pxq.library import load_script

        self.scripts: dict[str, Any] = {}
        for entry in self.entries:
            try:
                self.scripts[entry.name] = load_script(entry.script)
            except PxqError as exc:
                raise UsageError(f"scheduled script {entry.name!r}: {exc}") from None
        self.runs = {entry.name: _Runs() for entry in self.entries}
        self._due = {entry.name: time.monotonic() + entry.every_s for entry in self.entries}
        self._lock = threading.Lock()

    def run_due(self) -> None:
        """Run every entry whose time has come (each at most once per call)."""
        now = time.monotonic()
        for entry in self.entries:
            if now >= self._due[entry.name]:
                # The next run is due an interval after this one was: a slow run does not pile up.
                self._due[entry.name] = max(self._due[entry.name] + entry.every_s, now)
                self.run_once(entry)

    def seconds_to_next(self) -> float:
        return max(0.0, min(self._due.values(), default=time.monotonic() + 60) - time.monotonic())

    def run_once(self, entry: ScheduledScript) -> bool:
        """One run of ``entry``; False when it failed (logged and counted)."""
        from pxq.api import compile_script
        from pxq.exec.execute import execute

        counters = self.runs[entry.name]
        started = time.time_ns()
        try:
            compiled = compile_script(self.scripts[entry.name], args=dict(entry.args), now_ns=self.now_ns())
            results = execute(compiled.optimized, self.source())
            rows = 0
            for table_name, table in results.tables.items():
                subdir = f"_scheduled/{entry.name}/{re.sub(r'[^A-Za-z0-9_.-]', '_', table_name)}"
                if self.spiller.write(subdir, started, table) is None:
                    raise OSError(f"cannot write its output {table_name!r}: {self.spiller.counters.last_error}")
                rows += table.num_rows
        except Exception as exc:  # noqa: BLE001 - any failure of one run is said and counted, the agent goes on
            message = str(exc) if isinstance(exc, (PxqError, OSError)) else f"{type(exc).__name__}: {exc}"
            with self._lock:
                counters.runs += 1
                counters.failures += 1
                counters.last_run_ns = started
                counters.last_error = message
            self.log(f"scheduled script {entry.name!r} failed (run {counters.runs}): {message}")
            return False
        with self._lock:
            counters.runs += 1
            counters.rows_written += rows
            counters.last_run_ns = started
        return True

    def status(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {
                entry.name: {"script": entry.script, "every_s": entry.every_s, **vars(self.runs[entry.name])}
                for entry in self.entries
            }


__all__ = ["ScheduledScript", "Scheduler", "parse_schedule"]
