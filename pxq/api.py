"""The stages strung together, for the CLI, notebooks and Python callers."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from pxq.errors import ScriptError, Source as ScriptSource
from pxq.exec.execute import DataSource, Results, execute
from pxq.library import Script, load_script
from pxq.plan.compile import compile as compile_module
from pxq.plan.nodes import Graph
from pxq.plan.optimize import optimize

# A live run's window when none is given, as the CLI's ``pxq run --for``.
DEFAULT_LIVE_DURATION = "10s"


@dataclass(frozen=True)
class Compiled:
    script: Script
    graph: Graph  # as compiled
    optimized: Graph  # after the optimizer rules


def compile_script(script: Script, *, args: dict[str, Any] | None = None, now_ns: int | None = None) -> Compiled:
    from pxq.lang import parse

    source = ScriptSource(script.text, script.filename)
    try:
        module = parse(script.text, script.filename)
        graph = compile_module(
            module,
            now_ns=now_ns if now_ns is not None else time.time_ns(),
            args=args,
            name=script.name,
            vis=script.vis,
            source=source,
        )
    except ScriptError as exc:
        raise exc.with_source(source) from None
    return Compiled(script, graph, optimize(graph))


def open_source(source: str | DataSource) -> DataSource:
    if isinstance(source, str):
        from pxq.replay import open_capture

        return open_capture(source)
    return source


def run_script(
    script: Script | str, *, args: dict[str, Any] | None = None, source: str | DataSource
) -> tuple[Compiled, Results]:
    """Compile ``script`` with ``now`` = the source's end time (replays are reproducible), run it."""
    if isinstance(script, str):
        script = load_script(script)
    data = open_source(source)
    now_ns = getattr(data, "end_time_ns", None)
    compiled = compile_script(script, args=args, now_ns=now_ns)
    return compiled, execute(compiled.optimized, data)


def run_live(
    script: Script | str, *, args: dict[str, Any] | None = None, duration_s: float, on_progress=None, options=None
) -> tuple[Compiled, Results, Any]:
    """Collect live for ``duration_s`` with the embedded agent, then run the script over it.

    The script is compiled once to learn what to collect (its ProbeManifest) and again with
    ``now`` = the end of the capture window, so relative times cover what was collected.
    """
    from pxq.agent.embedded import AgentOptions, EmbeddedAgent
    from pxq.plan.split import split

    if isinstance(script, str):
        script = load_script(script)
    first = compile_script(script, args=args)
    agent = EmbeddedAgent(split(first.optimized).manifest, options or AgentOptions())
    store = agent.run(duration_s, on_progress)
    compiled = compile_script(script, args=args, now_ns=store.end_time_ns)
    return compiled, execute(compiled.optimized, store), store


def run_tables(
    script: Script | str,
    args: dict[str, Any] | None = None,
    source: str | DataSource | None = None,
    *,
    duration: str | float = DEFAULT_LIVE_DURATION,
    on_progress=None,
) -> Results:
    """What :func:`run` computes, as Arrow tables (their fields keep pxq's semantic types)."""
    if source is None:  # a typo in the window is said before anything slow
        from pxq.plan.times import parse_duration

        duration_s = parse_duration(str(duration))
    script_obj = _script_object(script)
    if source is None:
        _, results, _ = run_live(script_obj, args=args, duration_s=duration_s, on_progress=on_progress)
        return results
    _, results = run_script(script_obj, args=args, source=source)
    return results


def run(
    script: str,
    args: dict[str, Any] | None = None,
    source: str | DataSource | None = None,
    *,
    duration: str | float = DEFAULT_LIVE_DURATION,
    on_progress=None,
):
    """Run a PxL script (bundled name, file, folder or PxL text) and return pandas DataFrames.

    ``source``: a capture directory (or a DataSource) to replay; without one, pxq collects live
    for ``duration`` (``"10s"``, ``"1.5s"``, ``"2m"`` or seconds, as ``pxq run --for``) with the
    embedded agent, which needs root and eBPF (an AgentError says why not, as the CLI does).
    Ctrl-C (interrupting the kernel) ends the window early and keeps what was collected.

    >>> pxq.run("http_data", args={"num_head": 10}, source="capture/")  # doctest: +SKIP
    {'http_data': <pandas.DataFrame ...>}
    """
    results = run_tables(script, args, source, duration=duration, on_progress=on_progress)
    return {name: table.to_pandas() for name, table in results.tables.items()}


class Session:
    """A live session: the embedded agent keeps the last ``window`` of ``tables`` in the
    background (:mod:`pxq.agent.live_window`), and every :meth:`run` queries it at once, without
    collecting for a window first. Needs root and eBPF, as a live :func:`run`.

    >>> with pxq.Session(["http_events"], window="5m") as live:  # doctest: +SKIP
    ...     live.run("http_data")  # the last 5 minutes (or since start), now
    """

    def __init__(
        self,
        tables: list[str] | tuple[str, ...] = ("http_events",),
        *,
        window: str | float = "5m",
        pids: list[int] | tuple[int, ...] | None = None,
        options=None,
    ):
        from pxq.agent.live_window import LiveWindow
        from pxq.plan.times import parse_duration

        window_s = float(window) if isinstance(window, (int, float)) else parse_duration(str(window))
        self.window = LiveWindow(tables, window_s=window_s, pids=pids, options=options)

    @property
    def tables(self) -> tuple[str, ...]:
        return self.window.tables

    @property
    def running(self) -> bool:
        return self.window.running

    def start(self) -> Session:
        self.window.start()
        return self

    def stop(self) -> None:
        self.window.stop()

    def __enter__(self) -> Session:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def run_tables(self, script: Script | str, args: dict[str, Any] | None = None) -> Results:
        """:meth:`run` as Arrow tables."""
        script_obj = _script_object(script)
        if isinstance(script_obj, str):
            script_obj = load_script(script_obj)
        self._check_collected(script_obj, args)
        return run_script(script_obj, args=args, source=self.window.snapshot())[1]

    def run(self, script: Script | str, args: dict[str, Any] | None = None):
        """Run a script (as :func:`run`) over the window as it is now: {display name: DataFrame}."""
        return {name: table.to_pandas() for name, table in self.run_tables(script, args).tables.items()}

    def _check_collected(self, script: Script, args: dict[str, Any] | None) -> None:
        """A table the session does not collect would read as empty: say so instead."""
        from pxq.errors import UsageError
        from pxq.plan.split import split

        read = {request.table for request in split(compile_script(script, args=args).optimized).manifest.tables}
        missing = sorted(read - set(self.tables))
        if missing:
            raise UsageError(
                f"the live session does not collect {', '.join(missing)} (it collects {', '.join(self.tables)}): "
                f"start it again with --tables {','.join([*self.tables, *missing])}, or replay a capture with --from"
            )


def run_agents(
    script: Script | str,
    agents: list[str] | str,
    args: dict[str, Any] | None = None,
    *,
    timeout_s: float = 10.0,
) -> Results:
    """Run ``script`` over many node agents (addresses "HOST:PORT", or the path of a cluster file):
    a :class:`pxq.broker.fleet.FleetResults`, whose ``partial``/``missing`` say which agents failed
    or did not answer within ``timeout_s`` and are not in the result."""
    from pxq.broker.fleet import agents_of_addresses, load_cluster, run_fleet

    fleet = load_cluster(agents) if isinstance(agents, str) else agents_of_addresses(list(agents))
    return run_fleet(script, fleet, args=args, timeout_s=timeout_s)[1]


def _script_object(script: Script | str) -> Script | str:
    """PxL text as a Script; a Script, or the name of a bundled script, file or folder, as it is."""
    if isinstance(script, str) and ("\n" in script or "import px" in script):
        return Script("script", script, "<script>")
    return script
