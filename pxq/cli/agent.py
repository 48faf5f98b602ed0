"""``pxq agent serve``, ``pxq agent status`` and ``pxq agent certs``: the node agent's command line."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from typing import Any

from pxq.errors import UsageError


def add_agent_parser(sub: Any) -> None:
    from pxq.agent.defaults import DEFAULT_LISTEN, DEFAULT_PROFILER_HZ, DEFAULT_RETENTION_S, DEFAULT_TABLE_BUDGET_MB

    agent = sub.add_parser(
        "agent",
        help="the node agent: collect all along, answer queries at once over Arrow Flight",
        description="The node agent keeps each table's recent history and answers `pxq run` at once.",
    )
    agent_sub = agent.add_subparsers(dest="agent_command", metavar="SUBCOMMAND")
    serve = agent_sub.add_parser(
        "serve",
        help="run the agent until SIGTERM/SIGINT",
        description="Run the collectors continuously, keep each table's recent history (a time retention and "
        "a byte budget per table; evictions counted) and serve it over Arrow Flight on loopback. Its address is "
        "written to STATE_DIR/agent.json (default /run/pxq for root, ~/.local/state/pxq otherwise, or "
        "$PXQ_STATE_DIR), where a local `pxq run` finds it.",
    )
    serve.add_argument("--config", metavar="FILE", help="a TOML config file (flags override it)")
    serve.add_argument(
        "--listen",
        metavar="HOST:PORT",
        help=f"where to serve (default {DEFAULT_LISTEN}; off loopback only with --tls-cert/--tls-key and "
        "--client-ca and/or --token-file)",
    )
    serve.add_argument("--tls-cert", metavar="FILE", help="the agent's TLS certificate (PEM): serve over TLS")
    serve.add_argument("--tls-key", metavar="FILE", help="the private key of --tls-cert (PEM)")
    serve.add_argument(
        "--client-ca", metavar="FILE", help="mutual TLS: accept only clients with a certificate signed by this CA"
    )
    serve.add_argument(
        "--token-file",
        metavar="FILE",
        help="accept only calls carrying this file's bearer token (a file, never a command-line value)",
    )
    serve.add_argument("--state-dir", metavar="DIR", help="where agent.json is written")
    serve.add_argument(
        "--asid", type=int, metavar="N", help="agent short id in upids, 1..2^32-1 (default: derived from the host name)"
    )
    serve.add_argument(
        "--from",
        dest="replay",
        metavar="DIR",
        help="serve a capture directory instead of collecting (no kernel needed)",
    )
    serve.add_argument(
        "--retention", metavar="DURATION", help=f"history kept per table (default {DEFAULT_RETENTION_S / 60:g}m)"
    )
    serve.add_argument(
        "--table-budget-mb",
        type=float,
        metavar="MB",
        help=f"bytes kept per table, oldest evicted first (default {DEFAULT_TABLE_BUDGET_MB})",
    )
    serve.add_argument(
        "--profiler-hz",
        type=int,
        dest="sample_hz",
        metavar="HZ",
        help=f"CPU profiler rate (default {DEFAULT_PROFILER_HZ})",
    )
    serve.add_argument("--spill-dir", metavar="DIR", help="also write each table's rows as Parquet files here")
    serve.add_argument("--spill-max-bytes", type=int, metavar="BYTES", help="the spill directory's cap (default 1 GiB)")
    serve.add_argument("--spill-window", metavar="DURATION", help="the time window of each spill file (default 1m)")
    serve.add_argument(
        "--on-demand",
        choices=("refuse", "attach"),
        help="a query needing a collector that is off: refuse it (default) or attach it for the query's window",
    )
    serve.add_argument("--body-limit", type=int, metavar="BYTES", help="bytes of each body kept")
    serve.add_argument("--keep-secrets", action="store_true", default=None, help="keep credentials in rows (risky)")
    for name in ("socket_tracer", "perf_profiler"):
        flag = name.replace("_", "-")
        group = serve.add_mutually_exclusive_group()
        group.add_argument(f"--{flag}", dest=f"c_{name}", action="store_true", default=None, help=f"run the {name}")
        group.add_argument(f"--no-{flag}", dest=f"c_{name}", action="store_false", help=f"do not run the {name}")
    status = agent_sub.add_parser(
        "status",
        help="the agent's collectors, probes, tables, drops, CPU and RSS",
        description="Ask a running agent (the local one, or --agent) how it is doing.",
    )
    status.add_argument("--agent", metavar="HOST:PORT", help="the agent's address (default: the local agent's file)")
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    add_credential_flags(status)
    certs = agent_sub.add_parser(
        "certs",
        help="make a CA, a server and a client certificate and a token for agents off loopback",
        description="Write ca.crt/ca.key, server.crt/server.key (for the --hosts names and addresses), "
        "client.crt/client.key and agent.token into DIR, with keys and token readable by their owner only. "
        "The agent: --tls-cert server.crt --tls-key server.key --client-ca ca.crt [--token-file agent.token]; "
        "a client: --agent-ca ca.crt --agent-cert client.crt --agent-key client.key [--agent-token-file agent.token].",
    )
    certs.add_argument("directory", metavar="DIR", help="where to write them (created if absent)")
    certs.add_argument(
        "--hosts",
        default="localhost,127.0.0.1,::1",
        metavar="A,B,...",
        help="the agent's DNS names and IP addresses, as clients address it (default localhost,127.0.0.1,::1)",
    )
    certs.add_argument("--days", type=int, default=365, metavar="N", help="validity in days (default 365)")
    certs.add_argument("--force", action="store_true", help="replace files already in DIR")


def add_credential_flags(parser: Any) -> None:
    """The client's credentials for an agent (``pxq run``, ``pxq agent status``)."""
    group = parser.add_argument_group("agent credentials (see `pxq agent certs`)")
    group.add_argument(
        "--agent-ca", metavar="FILE", help="the CA that signed the agent's certificate: connect with TLS"
    )
    group.add_argument("--agent-cert", metavar="FILE", help="this client's certificate, for an agent with mutual TLS")
    group.add_argument("--agent-key", metavar="FILE", help="the private key of --agent-cert")
    group.add_argument("--agent-token-file", metavar="FILE", help="a file holding the agent's bearer token")


def credentials_from_args(args: argparse.Namespace) -> dict[str, str] | None:
    """The ``AgentClient`` credentials the flags give (None: none given)."""
    values = {
        key: getattr(args, f"agent_{key}", None)
        for key in ("ca", "cert", "key", "token_file")
        if getattr(args, f"agent_{key}", None)
    }
    return values or None


def cmd_agent(args: argparse.Namespace) -> int:
    if args.agent_command == "serve":
        return cmd_serve(args)
    if args.agent_command == "status":
        return cmd_status(args)
    if args.agent_command == "certs":
        return cmd_certs(args)
    raise UsageError("pxq agent needs a subcommand: serve, status or certs")


def cmd_serve(args: argparse.Namespace) -> int:
    from pxq.agent.daemon import STATUS_INTERVAL_S, AgentDaemon, load_config, parse_address
    from pxq.pandas_guard import keep_pandas_out

    keep_pandas_out()  # about 30 MB of RSS the agent has no use for
    from pxq.agent.flight import AgentFlightServer

    collectors = {
        name: getattr(args, f"c_{name}")
        for name in ("socket_tracer", "perf_profiler")
        if getattr(args, f"c_{name}") is not None
    }
    config = load_config(
        args.config,
        {
            "listen": args.listen,
            "state_dir": args.state_dir,
            "replay": args.replay,
            "asid": args.asid,
            "retention": args.retention,
            "table_budget_mb": args.table_budget_mb,
            "sample_hz": args.sample_hz,
            "body_limit": args.body_limit,
            "keep_secrets": args.keep_secrets,
            "collectors": collectors or None,
            "spill_dir": args.spill_dir,
            "spill_max_bytes": args.spill_max_bytes,
            "spill_window": args.spill_window,
            "on_demand": args.on_demand,
            "tls_cert": args.tls_cert,
            "tls_key": args.tls_key,
            "client_ca": args.client_ca,
            "token_file": args.token_file,
        },
    )
    daemon = AgentDaemon(config)  # checks the config: a refusal before anything starts
    stop = threading.Event()
    received: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        received.append(signum)
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    server = None
    try:
        daemon.start()
        if stop.is_set():
            return 128 + received[0]
        host, _port = parse_address(config.listen)
        server = AgentFlightServer(daemon)
        address = daemon.address = f"[{host}]:{server.port}" if ":" in host else f"{host}:{server.port}"
        daemon.record_status()
        path = daemon.write_state(address)
        what = f"replaying {config.replay}" if config.replay else f"collecting {', '.join(config.enabled())}"
        print(
            f"pxq: agent serving on {address} ({what}; {config.security.describe()}); address in {path}",
            file=sys.stderr,
            flush=True,
        )
        next_status = time.monotonic() + STATUS_INTERVAL_S
        while not stop.wait(1.0):
            if time.monotonic() >= next_status:
                daemon.record_status()
                next_status += STATUS_INTERVAL_S
            failure = daemon.failure()
            if failure is not None:
                print(f"pxq: agent: collection stopped: {failure}", file=sys.stderr)
                return 3
    finally:
        daemon.remove_state()
        if server is not None:
            server.shutdown()
        daemon.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    name = signal.Signals(received[0]).name if received else "signal"
    print(f"pxq: agent stopped ({name})", file=sys.stderr)
    return 0


def local_agent_address(explicit: str | None) -> tuple[str | None, str]:
    """(address, where it came from): ``explicit``, else the local agent's state file's."""
    from pxq.agent.daemon import read_state

    if explicit:
        return explicit, "--agent"
    state = read_state()
    if state is None:
        return None, ""
    return state["address"], state["path"]


def cmd_status(args: argparse.Namespace) -> int:
    from pxq.agent.daemon import default_state_dir
    from pxq.agent.flight import AgentClient

    address, _where = local_agent_address(args.agent)
    if address is None:
        raise UsageError(f"no local agent ({default_state_dir() / 'agent.json'} is absent): give --agent HOST:PORT")
    with AgentClient(address, timeout_s=10.0, credentials=credentials_from_args(args)) as client:
        status = client.status()
    if args.json:
        print(json.dumps(status, indent=2, sort_keys=True))
        return 0
    print(format_status(status))
    return 0


def format_status(status: dict[str, Any]) -> str:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=120, record=True, file=open("/dev/null", "w"))  # noqa: SIM115 - rendered to text
    lines = [
        f"agent {status['agent_id']} on {status['host']} (pid {status['pid']}, {status['mode']}): {status['state']}"
        + (f": {status['failure']}" if status.get("failure") else ""),
        "collectors: " + ", ".join(f"{k} {v}" for k, v in status["collectors"].items()),
        f"retention {status['retention_s']:g}s, per-table budget {status['table_budget_bytes'] / 2**20:g} MiB, "
        f"profiler {status['profiler_sample_hz']} Hz, clients: {status.get('security', 'plaintext')}",
        f"cpu {status['cpu_user_s'] + status['cpu_system_s']:.2f}s (user {status['cpu_user_s']:.2f}, "
        f"system {status['cpu_system_s']:.2f}), rss {status['rss_bytes'] / 2**20:.1f} MiB",
        f"queries {status['queries']}"
        + (
            ", errors " + ", ".join(f"{k}={v}" for k, v in sorted(status["query_errors"].items()))
            if status["query_errors"]
            else ""
        ),
    ]
    if status.get("probes"):
        lines.append("probes: " + "; ".join(status["probes"]))
    if status.get("spill"):
        spill = status["spill"]
        lines.append(
            f"spill {spill['dir']}: {spill['files']:,} files, {spill['bytes']:,} of {spill['max_bytes']:,} bytes; "
            f"windows deleted {spill['windows_deleted']:,}, disk full {spill['disk_full']:,}, "
            f"write errors {spill['write_errors']:,}"
            + (f" (last: {spill['last_error']})" if spill["last_error"] else "")
        )
    for name, runs in (status.get("scheduled") or {}).items():
        lines.append(
            f"scheduled {name} ({runs['script']} every {runs['every_s']:g}s): {runs['runs']:,} runs, "
            f"{runs['failures']:,} failed" + (f" (last: {runs['last_error']})" if runs["last_error"] else "")
        )
    table = Table(box=None, header_style="bold")
    for column in ("table", "rows", "bytes", "evicted (retention)", "drops by reason"):
        table.add_column(column)
    for name, info in status["tables"].items():
        drops = status["drops"].get(name, {})
        table.add_row(
            name,
            f"{info['rows']:,}",
            "-" if info["bytes"] is None else f"{info['bytes']:,}",
            f"{info['evicted_retention']:,}",
            ", ".join(f"{k}={v:,}" for k, v in sorted(drops.items()) if v) or "-",
        )
    console.print(table)
    return "\n".join(lines) + "\n" + console.export_text().rstrip()


def agent_for_run(args: argparse.Namespace) -> str | None:
    """The agent ``pxq run`` answers from: --agent's, else the local agent's when its state file
    exists and it answers (said in one line on stderr either way); None: collect embedded."""
    if args.agent:
        return args.agent
    if args.no_agent:
        return None
    import pyarrow.flight as flight

    from pxq.agent.daemon import read_state
    from pxq.agent.flight import CONNECT_TIMEOUT_S, AgentAuthError, AgentClient, AgentQueryError

    state = read_state()
    if state is None:
        return None
    try:
        with AgentClient(state["address"], credentials=credentials_from_args(args)) as client:
            client.info(timeout_s=CONNECT_TIMEOUT_S)
    except AgentAuthError as exc:  # it answers, but wants credentials this run did not give
        print(
            f"pxq: the local agent ({state['path']}) did not accept this client: {exc}; collecting embedded "
            "instead (its credentials: --agent-ca, --agent-cert, --agent-key, --agent-token-file)",
            file=sys.stderr,
        )
        return None
    except (AgentQueryError, flight.FlightError, OSError):
        print(
            f"pxq: the local agent ({state['path']}) does not answer at {state['address']}: "
            "collecting embedded instead",
            file=sys.stderr,
        )
        return None
    print(f"pxq: answering from the local agent at {state['address']} (--no-agent collects embedded)", file=sys.stderr)
    return state["address"]


def cmd_certs(args: argparse.Namespace) -> int:
    from pxq.agent.security import make_certs, parse_hosts

    files = make_certs(args.directory, parse_hosts(args.hosts), days=args.days, force=args.force)
    directory = files["ca.crt"].parent
    print(f"pxq: wrote {', '.join(files)} in {directory} (keys and token: owner-only, 0600)", file=sys.stderr)
    print(
        f"agent:  pxq agent serve --listen HOST:7100 --tls-cert {files['server.crt']} --tls-key "
        f"{files['server.key']} --client-ca {files['ca.crt']} --token-file {files['agent.token']}\n"
        f"client: pxq run SCRIPT --agent HOST:7100 --agent-ca {files['ca.crt']} --agent-cert {files['client.crt']} "
        f"--agent-key {files['client.key']} --agent-token-file {files['agent.token']}"
    )
    return 0
