"""The `pxq` command line."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import traceback

from pxq.agent.protocols.interface import SECRET_MARKER
from pxq.errors import PxqError, UsageError

EPILOG = """\
examples:
  pxq scripts                                   list the bundled scripts
  pxq run http_data                             capture live for 10s, then show the requests
  pxq run http_data --for 30s -- --num_head=50  a longer window, more rows
  pxq capture --out capture/ --for 30s          record http_events for later replay
  pxq run http_data --from capture/             replay a capture directory
  pxq run http_data --from capture/ -- --num_head=20 --start_time=-1m
  pxq run ./my.pxl --from capture/ -o json      any script file, any output format
  pxq run http_data --from capture/ --utc       times in UTC (default: the local zone; both show the offset)
  pxq run http_data --from capture/ -o csv      plain CSV on stdout (pipe it, or --out DIR for files)
  pxq run http_data -- --help                   the script's own arguments
  pxq explain service_stats                     parse + plan + probe manifest, attaches nothing
  pxq explain http_data --bpf                   the eBPF program the agent would load
  pxq tables http_events                        columns of a table
  pxq repl --from capture/                      an interactive PxL session over a capture (live without --from)
  pxq agent serve                               collect all along, answer `pxq run` at once (Arrow Flight, loopback)
  pxq run http_data -- --start_time=-5m         with a local agent running: its last 5 minutes, at once
  pxq agent status                              the agent's collectors, tables, drops, CPU and RSS

output: the table fits the terminal (COLUMNS, else its width), hiding whole columns, least needed
(bodies, headers, JSON) first, named in a footer; piped with COLUMNS unset, nothing is cut.

exit codes: 0 ok, 1 data or execution error, 2 script or usage error, 3 the agent cannot collect here,
  70 internal error, 130 Ctrl-C (SIGINT), 143 SIGTERM; a live window they end early still shows
  or writes the rows collected until then
"""


def _split_script_args(argv: list[str]) -> tuple[list[str], list[str]]:
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1 :]
    return argv, []


def _set_once(args: dict[str, str], key: str, value: str) -> None:
    if key in args:
        raise UsageError(f"script argument --{key} given twice ({args[key]!r} and {value!r})")
    args[key] = value


def parse_script_args(raw: list[str]) -> tuple[dict[str, str], bool]:
    """`--name=value` / `--name value` pairs after `--`; returns (args, wants_help)."""
    args: dict[str, str] = {}
    wants_help = False
    i = 0
    while i < len(raw):
        item = raw[i]
        if item in ("-h", "--help"):
            wants_help = True
        elif item.startswith("--") and "=" in item:
            key, value = item[2:].split("=", 1)
            _set_once(args, key, value)
        elif item.startswith("--") and i + 1 < len(raw):
            _set_once(args, item[2:], raw[i + 1])
            i += 1
        else:
            raise UsageError(f"script arguments look like --name=value, got {item!r}")
        i += 1
    return args, wants_help


KEEP_SECRETS_HELP = (
    "keep credentials in live capture (HTTP Authorization, Proxy-Authorization, Cookie and Set-Cookie "
    f"values, database passwords and AUTH arguments); by default each is replaced by {SECRET_MARKER!r}. "
    "RISK: with it, secrets end up in the output and in any capture written, readable by whoever "
    "reads those"
)


def build_parser() -> argparse.ArgumentParser:
    from pxq.agent.defaults import DEFAULT_BODY_LIMIT
    from pxq.render import FORMATS

    parser = argparse.ArgumentParser(
        prog="pxq",
        description="Query what your host is doing with PxL scripts: HTTP traces and CPU stacks, as tables.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    parser.add_argument(
        "--debug", action="store_true", help="on an internal error, print the Python traceback (also: PXQ_DEBUG=1)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="run a script and show its displays",
        description="Run a PxL script (bundled name, .pxl file or script folder). "
        "Script arguments go after `--`; `-- --help` lists them.",
    )
    run.add_argument("script", help="bundled script name, .pxl file or folder with a .pxl and vis.json")
    run.add_argument(
        "--from",
        dest="source",
        metavar="DIR",
        help="replay a capture directory (<table>.parquet + capture.json) instead of live capture",
    )
    run.add_argument(
        "--for",
        dest="duration",
        default="10s",
        metavar="DURATION",
        help="live capture window, e.g. 10s, 1.5s, 2m30s, 90 (seconds); at most 24h "
        "(default 10s; Ctrl-C or SIGTERM ends it early)",
    )
    run.add_argument(
        "--body-limit",
        type=int,
        default=DEFAULT_BODY_LIMIT,
        metavar="BYTES",
        help=f"bytes of each request/response body kept in live capture (default {DEFAULT_BODY_LIMIT})",
    )
    run.add_argument("--keep-secrets", action="store_true", help=KEEP_SECRETS_HELP)
    run.add_argument(
        "--agent",
        action="append",
        dest="agents",
        metavar="HOST:PORT",
        help="answer from a running agent's history (`pxq agent serve`); by default the local agent is used "
        "when its state file exists and it answers, else pxq collects embedded. Give it several times to "
        "query several agents at once (as --cluster)",
    )
    run.add_argument(
        "--cluster",
        metavar="FILE",
        help='query every agent a cluster file lists (TOML: [[agent]] name, address = "HOST:PORT"); '
        "agents that fail or miss --timeout are left out and the result is marked partial",
    )
    run.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="with several agents: how long to wait for them (each round: clocks, then results; default 10)",
    )
    run.add_argument("--no-agent", action="store_true", help="collect embedded even when a local agent runs")
    from pxq.cli.agent import add_credential_flags

    add_credential_flags(run)
    run.add_argument(
        "-o",
        "--output",
        default="table",
        choices=FORMATS,
        metavar="FORMAT",
        help=f"output format: {', '.join(FORMATS)} (default: table)",
    )
    run.add_argument(
        "--out",
        metavar="PATH",
        help="where to write: a file (json, folded, svg, icicle, speedscope, pprof, html) or a directory "
        "(csv, parquet, or several displays); stderr says which files were written",
    )
    run.add_argument(
        "--max-rows",
        type=int,
        default=100,
        metavar="N",
        help="rows shown per display in the terminal table (default 100)",
    )
    run.add_argument(
        "--utc",
        action="store_true",
        help="show times in UTC (default: the local zone, TZ respected); every time shows its "
        "UTC offset. CSV, JSON and Parquet always hold UTC",
    )

    explain = sub.add_parser(
        "explain",
        help="show the plan and probe manifest; attaches nothing",
        description="Parse and compile a script, print its plan before and after "
        "optimization and the probe manifest the agent would receive.",
    )
    explain.add_argument("script")
    explain.add_argument("--from", dest="source", metavar="DIR", help="resolve times against this capture")
    explain.add_argument("--verbose", action="store_true", help="show the plan after every optimizer rule")
    explain.add_argument("--json", action="store_true", help="print the probe manifest as JSON only")
    explain.add_argument(
        "--bpf", action="store_true", help="print the eBPF programs the agent would load (with their -D flags) and exit"
    )

    from pxq.cli.agent import add_agent_parser

    add_agent_parser(sub)

    capture = sub.add_parser(
        "capture",
        help="record tables live into a capture directory for later replay",
        description="Collect tables with the embedded agent and write them as a "
        "capture directory that `pxq run --from` replays.",
    )
    capture.add_argument("--out", required=True, metavar="DIR", help="capture directory to write")
    capture.add_argument(
        "--for",
        dest="duration",
        default="30s",
        metavar="DURATION",
        help="how long to record, e.g. 30s, 2m30s; at most 24h (default 30s; Ctrl-C or SIGTERM ends it early)",
    )
    capture.add_argument(
        "--tables", default="http_events", metavar="T1,T2", help="tables to record (default http_events)"
    )
    capture.add_argument(
        "--pid",
        type=int,
        action="append",
        metavar="PID",
        help="record only these processes and their descendants, running or forked "
        "during the window (e.g. nginx's master pid covers its workers; repeatable); a pid "
        "whose processes made no TCP traffic is named on stderr",
    )
    capture.add_argument("--body-limit", type=int, default=DEFAULT_BODY_LIMIT, metavar="BYTES")
    capture.add_argument("--keep-secrets", action="store_true", help=KEEP_SECRETS_HELP)

    repl = sub.add_parser(
        "repl",
        help="an interactive PxL session (Tab completion, history, :help)",
        description="Type PxL statements one at a time; each DataFrame expression or px.display shows "
        "at once. Without --from, queries read a rolling window of live capture (root and eBPF). "
        "Commands: :source, :tables, :schema, :explain, :run, :save, :out, :help. With stdin not a terminal, "
        "its lines are the inputs (exit status 1 when one failed).",
    )
    repl.add_argument("--from", dest="source", metavar="DIR", help="query a capture directory instead of live capture")
    repl.add_argument(
        "--window",
        default="5m",
        metavar="DURATION",
        help="live: how much of the recent past the rolling window keeps (default 5m)",
    )
    repl.add_argument("--body-limit", type=int, default=DEFAULT_BODY_LIMIT, metavar="BYTES")
    repl.add_argument("--keep-secrets", action="store_true", help=KEEP_SECRETS_HELP)
    repl.add_argument("--max-rows", type=int, default=20, metavar="N", help="rows shown per result (default 20)")
    repl.add_argument("--utc", action="store_true", help="show times in UTC (default: the local zone)")

    sub.add_parser("scripts", help="list the bundled scripts")
    tables = sub.add_parser("tables", help="list the tables, or one table's columns")
    tables.add_argument("table", nargs="?")
    sub.add_parser("funcs", help="list the px.* functions and aggregates with their signatures")
    return parser


def cmd_scripts(_args) -> int:
    from rich.console import Console
    from rich.table import Table

    from pxq.library import bundled_scripts

    table = Table(box=None, show_header=True, header_style="bold")
    table.add_column("script")
    table.add_column("what it shows")
    for script in bundled_scripts():
        table.add_row(script.name, script.summary)
    Console(width=_width()).print(table)
    return 0


def _width() -> int:
    """The terminal's width (or COLUMNS); piped with COLUMNS unset, no limit (lines are not wrapped)."""
    from pxq.render.table import UNBOUNDED_WIDTH, terminal_width

    return terminal_width() or UNBOUNDED_WIDTH


def cmd_tables(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from pxq.tables import CATALOG

    console = Console(width=_width())
    if args.table:
        schema = CATALOG.get(args.table)
        if schema is None:
            raise UsageError(f"unknown table {args.table!r}; tables: {', '.join(sorted(CATALOG))}")
        console.print(f"[bold]{schema.name}[/bold]: {schema.doc} (collector: {schema.collector})")
        out = Table(box=None, header_style="bold")
        for col in ("column", "type", "semantic", "meaning"):
            out.add_column(col)
        for c in schema.columns:
            out.add_row(c.name, str(c.type), str(c.semantic), c.doc)
        console.print(out)
        return 0
    out = Table(box=None, header_style="bold")
    out.add_column("table")
    out.add_column("collector")
    out.add_column("what it holds")
    for name in sorted(CATALOG):
        out.add_row(name, CATALOG[name].collector, CATALOG[name].doc)
    console.print(out)
    return 0


def cmd_funcs(_args) -> int:
    from pxq.funcs.registry import AGGREGATES, SCALARS

    for name in sorted(SCALARS, key=str.lower):
        print(f"{SCALARS[name].signature()}\n    {SCALARS[name].doc}")
    for name in sorted(AGGREGATES):
        print(f"{AGGREGATES[name].signature()}\n    {AGGREGATES[name].doc}")
    return 0


def _script_help(script) -> int:
    from pxq.errors import ScriptError, Source
    from pxq.lang import parse
    from pxq.plan.script_args import plan_script

    try:
        plan = plan_script(parse(script.text, script.filename), script.name, script.vis)
    except ScriptError as exc:
        raise exc.with_source(Source(script.text, script.filename)) from None
    print(f"arguments of {script.name} (pass them after `--`):")
    if not plan.params:
        print("  (none)")
    for p in plan.params:
        default = f" (default: {p.default!r})" if p.has_default else " (required)"
        doc = f"  {p.doc}" if p.doc else ""
        print(f"  --{p.name}={p.type.__name__.upper()}{default}{doc}")
    return 0


def _report_drops(drops: dict[str, dict[str, int]], tables, stream=sys.stderr) -> None:
    """Say, per table read, how many events were lost and why, and apart from those, how many rows
    were kept but are incomplete (stacks cut short): results are only as good as this."""
    from pxq.agent.table_store import split_losses

    for table in tables:
        for kind, counters in zip(("lost", "kept but incomplete"), split_losses(drops.get(table) or {})):
            if counters:
                detail = ", ".join(f"{reason}={count:,}" for reason, count in sorted(counters.items()))
                print(f"pxq: {table}: {kind}: {detail}", file=stream)


def _tables_read(compiled) -> list[str]:
    from pxq.plan.nodes import Source

    return sorted({n.table for n in compiled.optimized.nodes() if isinstance(n, Source)})


def cmd_run(args, script_argv: list[str]) -> int:
    import datetime

    from pxq.api import run_live, run_script
    from pxq.cli.agent import agent_for_run
    from pxq.library import load_script
    from pxq.plan.times import parse_duration
    from pxq.render import render, written_lines

    zone = datetime.UTC if args.utc else None  # None: the local zone

    duration = parse_duration(args.duration)  # checked with --from too: a typo is said, not ignored
    args.agent = args.agents[0] if args.agents and len(args.agents) == 1 else None
    fleet = bool(args.cluster) or len(args.agents or ()) > 1
    chosen = [flag for flag, given in (("--agent", args.agents), ("--cluster", args.cluster)) if given]
    if chosen and (args.source or args.no_agent):
        raise UsageError(
            f"{chosen[0]} and {'--from' if args.source else '--no-agent'} both choose where rows come from: give one"
        )
    if len(chosen) == 2:
        raise UsageError("--agent and --cluster both choose the agents: list them all in the cluster file")
    if not args.timeout > 0:
        raise UsageError(f"--timeout must be a positive number of seconds, not {args.timeout:g}")
    script = load_script(args.script)
    vis = None
    if args.output == "html":  # widgets calling undefined functions become messages; the rest still run
        from pxq.render.charts import checked_script

        script, vis = checked_script(script)
    script_args, wants_help = parse_script_args(script_argv)
    if wants_help:
        return _script_help(script)
    window = None  # live only: the signal that ended the window early, if one did
    if args.source:
        from pxq.replay import open_capture

        capture = open_capture(args.source)
        compiled, results = run_script(script, args=script_args, source=capture)
        drops = capture.drops
    elif fleet:
        from pxq.broker.fleet import agents_of_addresses, load_cluster, run_fleet
        from pxq.cli.agent import credentials_from_args

        agents = (
            load_cluster(args.cluster)
            if args.cluster
            else agents_of_addresses(args.agents, credentials_from_args(args))
        )
        compiled, results, drops = run_fleet(script, agents, args=script_args, timeout_s=args.timeout)
        for name, why in results.missing.items():
            results.notes.insert(0, f"partial result: agent {name} is missing ({why})")
    elif (agent := agent_for_run(args)) is not None:
        from pxq.agent.flight import AgentClient
        from pxq.cli.agent import credentials_from_args

        with AgentClient(agent, credentials=credentials_from_args(args)) as client:
            compiled, results, drops = client.run(script, args=script_args)
    else:
        from pxq.agent.embedded import AgentOptions, WindowSignals
        from pxq.cli.progress import progress_printer

        with WindowSignals() as window:
            compiled, results, store = run_live(
                script,
                args=script_args,
                duration_s=duration,
                on_progress=window.watch(progress_printer(duration)),
                options=AgentOptions(body_limit=args.body_limit, keep_secrets=args.keep_secrets),
            )
        if sys.stderr.isatty():
            sys.stderr.write("\n")
        drops = store.drops
    written = render(
        results.tables,
        args.output,
        args.out,
        max_rows=args.max_rows,
        zone=zone,
        vis=vis,
        title=f"pxq run {script.name}",
    )
    for line in written_lines(results.tables, written):
        print(line, file=sys.stderr)
    _report_drops(drops, _tables_read(compiled))
    for note in results.notes:
        print(f"pxq: {note}", file=sys.stderr)
    return _cut_short_status(window)


def _cut_short_status(window) -> int:
    """0, or for a live window a signal ended early 128 + the signal (the shell's convention)."""
    if window is None or window.received is None:
        return 0
    name = signal.Signals(window.received).name
    print(
        f"pxq: {name} ended the window early: the rows are those collected until then"
        if window.ended_window
        else f"pxq: {name} came after the window: all its rows are shown",
        file=sys.stderr,
    )
    return 128 + window.received


def cmd_capture(args) -> int:
    import time

    from pxq.agent.embedded import AgentOptions, EmbeddedAgent, WindowSignals
    from pxq.cli.progress import progress_printer
    from pxq.plan.manifest import manifest_for_tables
    from pxq.plan.times import parse_duration
    from pxq.tables import CATALOG

    tables = [t.strip() for t in args.tables.split(",") if t.strip()]
    unknown = [t for t in tables if t not in CATALOG]
    if unknown:
        raise UsageError(f"unknown table {unknown[0]!r}; tables: {', '.join(sorted(CATALOG))}")
    duration = parse_duration(args.duration)
    manifest = manifest_for_tables(tables, now_ns=time.time_ns(), pids=tuple(args.pid) if args.pid else None)
    with WindowSignals() as window:
        store = EmbeddedAgent(manifest, AgentOptions(body_limit=args.body_limit, keep_secrets=args.keep_secrets)).run(
            duration, window.watch(progress_printer(duration))
        )
    if sys.stderr.isatty():
        sys.stderr.write("\n")
    store.write_capture(args.out, tables)
    rows = ", ".join(f"{t} {store.rows(t):,} rows" for t in tables)
    print(f"pxq: wrote {args.out}: {rows}", file=sys.stderr)
    _report_drops(store.drops, tables)
    return _cut_short_status(window)


def cmd_repl(args) -> int:
    import datetime

    from pxq.agent.embedded import AgentOptions
    from pxq.plan.times import parse_duration
    from pxq.repl.session import CaptureSource, ReplSession
    from pxq.repl.terminal import run_repl

    window_s = parse_duration(args.window)
    options = AgentOptions(body_limit=args.body_limit, keep_secrets=args.keep_secrets)

    def live_source():
        from pxq.agent.live_window import LiveWindow
        from pxq.agent.loop import check_environment

        check_environment()  # say at once when eBPF cannot work here, with the fix
        return LiveWindow(window_s=window_s, options=options)

    source = CaptureSource(args.source) if args.source else live_source()
    session = ReplSession(source, live_source=live_source)
    zone = datetime.UTC if args.utc else None
    if not sys.stdin.isatty():
        from pxq.repl.terminal import run_piped

        return run_piped(session, sys.stdin, max_rows=args.max_rows, zone=zone)
    return run_repl(session, max_rows=args.max_rows, zone=zone)


def cmd_explain(args, script_argv: list[str]) -> int:
    from pxq.api import compile_script, open_source
    from pxq.library import load_script
    from pxq.plan.format import format_graph
    from pxq.plan.optimize import optimize
    from pxq.plan.split import split

    script = load_script(args.script)
    script_args, _ = parse_script_args(script_argv)
    now_ns = open_source(args.source).end_time_ns if args.source else None
    compiled = compile_script(script, args=script_args, now_ns=now_ns)
    plan = split(compiled.optimized)
    if args.bpf:
        from pxq.agent.programs import generated_programs

        for name, text in generated_programs(plan.manifest):
            print(f"// ===== {name} =====")
            print(text)
        return 0
    if args.json:
        print(plan.manifest.to_json())
        return 0
    print("== plan as compiled ==")
    print(format_graph(compiled.graph))
    if args.verbose:
        trace: list = []
        optimize(compiled.graph, trace=trace)
        for name, graph in trace:
            print(f"\n== after rule {name} ==")
            print(format_graph(graph))
    print("\n== optimized plan ==")
    print(format_graph(compiled.optimized))
    print("\n== where each part runs ==")
    print(format_placement(plan))
    print("\n== probe manifest ==")
    print(plan.manifest.to_text())
    fleet_plan = split(compiled.optimized, partial_aggs=True)
    if fleet_plan.agent_fragments != plan.agent_fragments:  # a group-by runs partly on the agents
        print("\n== where each part runs over many agents (--cluster, or --agent given more than once) ==")
        print(format_placement(fleet_plan))
    return 0


def format_placement(plan) -> str:
    """Which fragment runs on the agent (next to the data) and which here (the merge)."""
    from pxq.plan.format import format_graph
    from pxq.plan.nodes import Display, Graph

    lines = []
    from pxq.plan.nodes import Agg

    for i, fragment in enumerate(plan.agent_fragments):
        if isinstance(fragment, Agg):
            states = ", ".join(f"{a.output}: px.{a.function} state" for a in fragment.aggregates)
            lines.append(
                f"-- agent fragment {i} (runs on every agent up to a partial aggregation: per group {states}; "
                "the broker merges the agents' states into the Agg's result) --"
            )
        else:
            lines.append(f"-- agent fragment {i} (runs on the agent: embedded here, or the node agent over Flight) --")
        lines.append(format_graph(Graph((Display(fragment, f"fragment {i}"),), plan.merge.now_ns)))
    lines.append("-- merge fragment (runs in this pxq, over the agent fragments' rows) --")
    lines.append(format_graph(plan.merge))
    return "\n".join(lines)


# Exit codes: 0 ok, 1 data or execution error, 2 script or usage error, 3 agent cannot collect here,
# 70 an internal error (a bug in pxq: EX_SOFTWARE of sysexits.h), 128 + the signal when interrupted
# (130 SIGINT, 143 SIGTERM).
EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 128 + signal.SIGINT
EXIT_OUT_OF_MEMORY = 1
# Options whose value may start with "-" (argparse would take "--for -1s" for two options).
_VALUE_OPTIONS = ("--for",)


def _debug_wanted(own: list[str]) -> tuple[list[str], bool]:
    """``--debug`` anywhere before ``--`` (or PXQ_DEBUG=1) shows tracebacks; removed from the argv."""
    env = os.environ.get("PXQ_DEBUG", "").strip().lower() not in ("", "0", "false", "no", "off")
    return [a for a in own if a != "--debug"], env or "--debug" in own


def _join_option_values(own: list[str]) -> list[str]:
    """``--for -1s`` as ``--for=-1s``, so that pxq (not argparse) says what is wrong with the value."""
    out: list[str] = []
    i = 0
    while i < len(own):
        if own[i] in _VALUE_OPTIONS and i + 1 < len(own):
            out.append(f"{own[i]}={own[i + 1]}")
            i += 2
        else:
            out.append(own[i])
            i += 1
    return out


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    line = text.split("\n", 1)[0] if text else ""
    return line if len(line) <= 300 else line[:297] + "..."


def _silence_stdout() -> None:
    """After a broken pipe (``pxq ... | head``), point stdout at /dev/null so the interpreter's
    final flush does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def _report_thread_errors(debug: bool):
    """An exception that ends a helper thread (a collector's reader, ...) is said in one line too;
    returns the hook it replaced (main() puts it back, for in-process callers)."""
    import threading

    previous = threading.excepthook

    def hook(info) -> None:
        if debug:
            traceback.print_exception(info.exc_type, info.exc_value, info.exc_traceback)
        if info.exc_type is not SystemExit:
            name = info.thread.name if info.thread else "?"
            print(
                f"pxq: internal error in thread {name}: {info.exc_type.__name__}: {_first_line(info.exc_value)}"
                + ("" if debug else " (run with --debug for the traceback)"),
                file=sys.stderr,
            )

    threading.excepthook = hook
    return previous


# Commands that make no DataFrame: pyarrow's pandas probe is settled for them (pxq.pandas_guard).
_WITHOUT_PANDAS = ("run", "explain", "capture")


def _dispatch(args, parser, script_argv: list[str]) -> int:
    if args.version:
        from pxq import __version__

        print(f"pxq {__version__}")
        return 0
    if args.command == "run":
        return cmd_run(args, script_argv)
    if args.command == "explain":
        return cmd_explain(args, script_argv)
    if args.command == "capture":
        return cmd_capture(args)
    if args.command == "repl":
        return cmd_repl(args)
    if args.command == "agent":
        from pxq.cli.agent import cmd_agent

        return cmd_agent(args)
    if args.command == "scripts":
        return cmd_scripts(args)
    if args.command == "tables":
        return cmd_tables(args)
    if args.command == "funcs":
        return cmd_funcs(args)
    parser.print_help()
    return 2


def main(argv: list[str] | None = None) -> int:
    """Run one pxq command. Every failure ends as one line on stderr and an exit code: errors in
    the script or its input as the project's errors; anything else is a bug in pxq, said as an
    internal error (``--debug`` or PXQ_DEBUG=1 shows the traceback)."""
    own, script_argv = _split_script_args(list(sys.argv[1:] if argv is None else argv))
    own, debug = _debug_wanted(own)
    import threading

    previous_hook = _report_thread_errors(debug)
    try:
        # argv None: pxq is this process's program (not a caller's library), so pyarrow's pandas
        # probe may be settled for the whole process.
        return _main(own, script_argv, debug, whole_process=argv is None)
    finally:
        threading.excepthook = previous_hook


def _main(own: list[str], script_argv: list[str], debug: bool, whole_process: bool = False) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(_join_option_values(own))
        if whole_process and args.command in _WITHOUT_PANDAS:
            from pxq.pandas_guard import settle_pandas_probe

            settle_pandas_probe()
        return _dispatch(args, parser, script_argv)
    except PxqError as exc:
        if debug:
            traceback.print_exc()
        print(f"pxq: {exc}" if not hasattr(exc, "diagnostics") else str(exc), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        if debug:
            traceback.print_exc()
        signum = getattr(exc, "signum", None)  # SIGTERM as well as Ctrl-C during a live run (WindowSignals)
        print("pxq: interrupted" + (f" by {exc}" if signum not in (None, signal.SIGINT) else ""), file=sys.stderr)
        return EXIT_INTERRUPTED if signum is None else 128 + signum
    except BrokenPipeError:
        _silence_stdout()
        return 0
    except MemoryError:
        if debug:
            traceback.print_exc()
        print(
            "pxq: out of memory: the script's tables do not fit; narrow the window (start_time, --for) "
            "or filter earlier",
            file=sys.stderr,
        )
        return EXIT_OUT_OF_MEMORY
    except SystemExit:
        raise  # argparse's own usage errors and --help
    except Exception as exc:  # noqa: BLE001 - the one place a bug in pxq is turned into a message
        if debug:
            traceback.print_exc()
        print(
            f"pxq: internal error: {type(exc).__name__}: {_first_line(exc)}"
            + ("" if debug else " (run with --debug for the traceback)"),
            file=sys.stderr,
        )
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
