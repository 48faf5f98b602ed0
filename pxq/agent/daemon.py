"""The node agent (``pxq agent serve``): the collectors running all along, each table's recent
history kept in the table store, served over Arrow Flight (:mod:`pxq.agent.flight`).

It reuses the REPL's rolling window (:class:`pxq.agent.live_window.LiveWindow`: the agent loop
in a background thread, rows older than the retention dropped as it goes) with every table of the
collectors switched on, plus a per-table byte budget in the store. ``--from DIR`` serves a
replay capture instead (no collectors, no kernel: tests and demos).

Configuration: a TOML file (``--config``), each key also a flag; the flags win::

    listen = "127.0.0.1:7100"        # off loopback only with TLS and client authentication ([security])
    asid = 17                         # agent short id in upids (default: derived from the host name)
    state_dir = "/run/pxq"           # where agent.json says the address to local `pxq run`
    spill_dir = "/var/lib/pxq/spill"  # optional: each table's rows also written as Parquet (pxq/agent/spill.py)
    spill_max_bytes = 1073741824      # the directory's cap: the oldest windows are deleted (counted)
    spill_window = "1m"               # one file per table, window and flush
    spill_flush = "10s"               # how often new rows are written
    on_demand = "refuse"              # a query needing a collector that is off: "refuse", or "attach" it
    on_demand_max = "20s"             # for the query's window (at most this long), detached afterwards
    on_demand_attach_max = "120s"     # a collector's start longer than this fails the query (at most 120s)

    [collectors]                      # true/false each
    socket_tracer = true              # every protocol pxq parses (http, pgsql, mysql, redis, dns) + conn_stats
    perf_profiler = true              # CPU stacks at [profiler] sample_hz
    process_stats = false             # not collected live by this pxq yet: true is refused
    proc_events = false               # (exec/exit) likewise

    [profiler]
    sample_hz = 19                    # a continuous profiler's low rate (Parca, OTel: 19 Hz)

    [retention]
    window = "15m"                    # rows older than this are evicted (counted: `pxq agent status`)
    table_budget_mb = 64              # each table's byte cap; the oldest rows go first (counted)

    [socket_tracer]
    body_limit = 1024
    keep_secrets = false
    traced_cgroups = []               # cgroup v2 paths or ids: only their tasks are traced (a pod)

    [security]                        # optional on loopback; off loopback: TLS + client_ca and/or token_file
    tls_cert = "/etc/pxq/server.crt"  # (see pxq.agent.security; `pxq agent certs DIR` makes them)
    tls_key = "/etc/pxq/server.key"
    client_ca = "/etc/pxq/ca.crt"     # mutual TLS: clients present a certificate signed by this CA
    token_file = "/etc/pxq/agent.token"  # every call carries `authorization: Bearer <token>`

    [[schedule]]                      # scripts run every interval on the store (pxq/agent/schedule.py)
    script = "http_data"
    every = "60s"
"""

from __future__ import annotations

import itertools
import json
import os
import resource
import socket
import sys
import threading
import time
import tomllib
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from pxq.agent.defaults import (
    DEFAULT_BODY_LIMIT,
    DEFAULT_LISTEN,
    DEFAULT_PORT,
    DEFAULT_PROFILER_HZ,
    DEFAULT_RETENTION_S,
    DEFAULT_TABLE_BUDGET_MB,
    ON_DEMAND_ATTACH_S,
)
from pxq.agent.security import ServerSecurity, is_loopback
from pxq.agent.table_store import split_losses
from pxq.errors import UsageError

STATUS_TABLE = "agent_status"
STATUS_INTERVAL_S = 10.0
STATE_FILE = "agent.json"
DEFAULT_SPILL_MAX_BYTES = 1024**3
DEFAULT_SPILL_WINDOW_S = 60.0
DEFAULT_SPILL_FLUSH_S = 10.0
ON_DEMAND = ("refuse", "attach")
# An on-demand collection (its start and its window) lasts this long at most; clients wait that
# plus their own call timeout.
DEFAULT_ON_DEMAND_MAX_S = 20.0
# Collectors the agent can attach for one query (process_stats and proc_events cannot run live yet).
ATTACHABLE = ("socket_tracer", "perf_profiler")
# Collectors a config may name, and whether this pxq can run each live.
KNOWN_COLLECTORS = ("socket_tracer", "perf_profiler", "process_stats", "proc_events")
_DEFAULT_ON = {"socket_tracer": True, "perf_profiler": True, "process_stats": False, "proc_events": False}


def default_state_dir() -> Path:
    """Where the agent writes its address and a local ``pxq run`` looks for it: $PXQ_STATE_DIR, else
    /run/pxq for root, else $XDG_STATE_HOME/pxq (~/.local/state/pxq)."""
    env = os.environ.get("PXQ_STATE_DIR")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/run/pxq")
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "pxq"


def parse_address(text: str, what: str = "address") -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` too) as (host, port); a UsageError saying what is wrong."""
    host, sep, port_text = text.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise UsageError(f"{what} {text!r} is not HOST:PORT (e.g. 127.0.0.1:{DEFAULT_PORT})")
    return host, int(port_text)


@dataclass(frozen=True)
class DaemonConfig:
    listen: str = DEFAULT_LISTEN
    state_dir: str | None = None  # None: default_state_dir()
    collectors: dict[str, bool] = field(default_factory=lambda: dict(_DEFAULT_ON))
    sample_hz: int = DEFAULT_PROFILER_HZ
    retention_s: float = DEFAULT_RETENTION_S
    table_budget_mb: float = DEFAULT_TABLE_BUDGET_MB
    body_limit: int = DEFAULT_BODY_LIMIT
    keep_secrets: bool = False
    replay: str | None = None  # serve this capture directory instead of collecting
    asid: int | None = None  # None: derived from the host name (derive_asid)
    traced_cgroups: tuple[str, ...] = ()  # only these cgroups' tasks are traced (empty: all)
    spill_dir: str | None = None
    spill_max_bytes: int = DEFAULT_SPILL_MAX_BYTES
    spill_window_s: float = DEFAULT_SPILL_WINDOW_S
    spill_flush_s: float = DEFAULT_SPILL_FLUSH_S
    schedule: tuple[Any, ...] = ()  # ScheduledScript entries (pxq/agent/schedule.py)
    on_demand: str = "refuse"
    on_demand_max_s: float = DEFAULT_ON_DEMAND_MAX_S
    on_demand_attach_max_s: float = ON_DEMAND_ATTACH_S
    tls_cert: str | None = None  # [security]: see pxq.agent.security
    tls_key: str | None = None
    client_ca: str | None = None
    token_file: str | None = None

    @property
    def security(self) -> ServerSecurity:
        return ServerSecurity(self.tls_cert, self.tls_key, self.client_ca, self.token_file)

    @property
    def agent_asid(self) -> int:
        return derive_asid(socket.gethostname()) if self.asid is None else self.asid

    @property
    def state_path(self) -> Path:
        return (Path(self.state_dir) if self.state_dir else default_state_dir()) / STATE_FILE

    def enabled(self) -> list[str]:
        return [name for name in KNOWN_COLLECTORS if self.collectors.get(name)]

    def check(self) -> None:
        host, _port = parse_address(self.listen, "listen address")
        self.security.check(host)  # off loopback: TLS and client certificates or a token, else refused
        if not self.retention_s > 0:
            raise UsageError(f"retention window must be longer than 0 s, not {self.retention_s:g}")
        if not self.table_budget_mb > 0:
            raise UsageError(f"table_budget_mb must be more than 0, not {self.table_budget_mb:g}")
        if self.asid is not None and not 1 <= self.asid <= MAX_ASID:
            raise UsageError(f"asid must be 1..{MAX_ASID} (0 is the embedded mode's), not {self.asid}")
        if not 1 <= self.sample_hz <= 10_000:
            raise UsageError(f"profiler sample_hz must be 1..10000, not {self.sample_hz}")
        if not self.spill_max_bytes > 0:
            raise UsageError(f"spill_max_bytes must be more than 0, not {self.spill_max_bytes}")
        if not 1 <= self.spill_window_s <= 86_400:
            raise UsageError(f"spill_window must be 1s..1d, not {self.spill_window_s:g}s")
        if not 0 < self.spill_flush_s <= 3600:
            raise UsageError(
                f"the spill flush interval must be more than 0 s and at most 1h, not {self.spill_flush_s:g}"
            )
        if self.schedule and self.spill_dir is None:
            raise UsageError(
                "scheduled scripts write their results to the spill directory: set spill_dir "
                "(pxq has no px.export to send them elsewhere)"
            )
        if self.on_demand not in ON_DEMAND:
            raise UsageError(f"on_demand must be one of {', '.join(ON_DEMAND)}, not {self.on_demand!r}")
        if not 1 <= self.on_demand_max_s <= 600:
            raise UsageError(f"on_demand_max must be 1s..10m, not {self.on_demand_max_s:g}s")
        if not 1 <= self.on_demand_attach_max_s <= ON_DEMAND_ATTACH_S:
            # Clients wait ON_DEMAND_ATTACH_S for a start: a longer one would outlast them.
            raise UsageError(
                f"on_demand_attach_max must be 1s..{ON_DEMAND_ATTACH_S:g}s (what clients wait for a start), "
                f"not {self.on_demand_attach_max_s:g}s"
            )
        if self.replay is None:
            missing = [n for n in self.enabled() if n in ("process_stats", "proc_events")]
            if missing:
                raise UsageError(
                    f"collector {', '.join(missing)} cannot run live in this pxq yet; switch "
                    f"{'it' if len(missing) == 1 else 'them'} off ([collectors] {missing[0]} = false)"
                )
            if not self.enabled():
                raise UsageError("every collector is switched off: the agent would hold nothing")


MAX_ASID = 2**32 - 1  # Pixie's asid is a uint32


def derive_asid(host: str) -> int:
    """A stable agent short id from the host name (never 0, the embedded mode's): two hosts of
    one cluster collide with odds 1 in 4 billion; set ``asid`` in the config to be sure."""
    return zlib.crc32(host.encode()) % MAX_ASID + 1


def load_config(path: str | None, overrides: dict[str, Any]) -> DaemonConfig:
    """The config file's settings (if given), then ``overrides`` (flags given, None left out)."""
    from pxq.plan.times import parse_duration

    values: dict[str, Any] = {}
    collectors = dict(_DEFAULT_ON)
    if path is not None:
        try:
            with open(path, "rb") as handle:
                doc = tomllib.load(handle)
        except OSError as exc:
            raise UsageError(f"cannot read the agent config {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise UsageError(f"agent config {path}: {exc}") from None
        values, collectors = _from_toml(doc, path, collectors)
    for key, value in overrides.items():
        if value is None:
            continue
        if key == "collectors":
            collectors.update(value)
        elif key == "retention":
            values["retention_s"] = parse_duration(str(value))
        elif key in ("spill_window", "on_demand_max", "on_demand_attach_max"):
            values[f"{key}_s"] = parse_duration(str(value))
        else:
            values[key] = value
    return DaemonConfig(collectors=collectors, **values)


def _from_toml(doc: dict[str, Any], path: str, collectors: dict[str, bool]) -> tuple[dict[str, Any], dict[str, bool]]:
    from pxq.plan.times import parse_duration

    def fail(where: str, message: str) -> UsageError:
        return UsageError(f"agent config {path}: {where}: {message}")

    def typed(section: dict[str, Any], key: str, kinds: tuple[type, ...], where: str) -> Any:
        value = section[key]
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            names = " or ".join(k.__name__ for k in kinds)
            raise fail(f"{where}.{key}" if where else key, f"expected {names}, got {value!r}")
        return value

    known = {
        "listen", "state_dir", "collectors", "profiler", "retention", "socket_tracer", "replay", "security",
        "spill_dir", "spill_max_bytes", "spill_window", "spill_flush", "on_demand", "on_demand_max", "schedule",
        "asid", "on_demand_attach_max",
    }  # fmt: skip
    for key in doc:
        if key not in known:
            raise fail(key, f"unknown setting (known: {', '.join(sorted(known))})")
    values: dict[str, Any] = {}
    for key in ("listen", "state_dir", "replay", "spill_dir", "on_demand"):
        if key in doc:
            values[key] = typed(doc, key, (str,), "")
    if "asid" in doc:
        values["asid"] = typed(doc, "asid", (int,), "")
    if "spill_max_bytes" in doc:
        values["spill_max_bytes"] = typed(doc, "spill_max_bytes", (int,), "")
    for key in ("spill_window", "spill_flush", "on_demand_max", "on_demand_attach_max"):
        if key in doc:
            try:
                values[f"{key}_s"] = parse_duration(str(typed(doc, key, (str, int, float), "")))
            except UsageError as exc:
                raise fail(key, str(exc)) from None
    if "schedule" in doc:
        from pxq.agent.schedule import parse_schedule

        values["schedule"] = parse_schedule(doc["schedule"], f"agent config {path}")
    sections = {
        "collectors": KNOWN_COLLECTORS,
        "profiler": ("sample_hz",),
        "retention": ("window", "table_budget_mb"),
        "socket_tracer": ("body_limit", "keep_secrets", "traced_cgroups"),
        "security": _SECURITY_KEYS,
    }
    for name, keys in sections.items():
        section = doc.get(name, {})
        if not isinstance(section, dict):
            raise fail(name, "expected a [section] table")
        for key in section:
            if key not in keys:
                raise fail(f"{name}.{key}", f"unknown setting (known: {', '.join(keys)})")
    for key in doc.get("collectors", {}):
        collectors[key] = typed(doc["collectors"], key, (bool,), "collectors")
    if "sample_hz" in doc.get("profiler", {}):
        values["sample_hz"] = typed(doc["profiler"], "sample_hz", (int,), "profiler")
    retention = doc.get("retention", {})
    if "window" in retention:
        window = typed(retention, "window", (str, int, float), "retention")
        try:
            values["retention_s"] = parse_duration(str(window))
        except Exception as exc:  # noqa: BLE001 - parse_duration's own message, placed in the file
            raise fail("retention.window", str(exc)) from None
    if "table_budget_mb" in retention:
        values["table_budget_mb"] = typed(retention, "table_budget_mb", (int, float), "retention")
    tracer = doc.get("socket_tracer", {})
    if "body_limit" in tracer:
        values["body_limit"] = typed(tracer, "body_limit", (int,), "socket_tracer")
    if "keep_secrets" in tracer:
        values["keep_secrets"] = typed(tracer, "keep_secrets", (bool,), "socket_tracer")
    if "traced_cgroups" in tracer:
        cgroups = typed(tracer, "traced_cgroups", (list,), "socket_tracer")
        if not all(isinstance(c, (str, int)) and not isinstance(c, bool) and str(c).strip() for c in cgroups):
            raise fail("socket_tracer.traced_cgroups", "expected a list of cgroup v2 paths or ids")
        values["traced_cgroups"] = tuple(str(c) for c in cgroups)
    security = doc.get("security", {})
    for key in _SECURITY_KEYS:
        if key in security:
            # Relative paths: from the config file's directory (where a deployment keeps them).
            path_text = typed(security, key, (str,), "security")
            values[key] = str(Path(path).parent / Path(path_text).expanduser())
    return values, collectors


_SECURITY_KEYS = ("tls_cert", "tls_key", "client_ca", "token_file")


# ---------------------------------------------------------------------------------------------
# What the agent serves: its store (live) or a capture, read as of one moment.


class StoreView:
    """A DataSource over the agent's live store as of now, bounded to ``[begin_ns, end_ns)``:
    scans read the store directly (thread-safe) rather than copying the whole history per query."""

    supports_dictionary_strings = False

    def __init__(self, store: Any, begin_ns: int, end_ns: int):
        self.store = store
        self.host = store.host
        self.processes = dict(store.processes)
        self.drops = {table: dict(counters) for table, counters in store.drops.items()}
        self.start_time_ns = begin_ns
        self.end_time_ns = end_ns

    def scan(self, table, columns=None, start_ns=None, end_ns=None, *, filter=None, filter_columns=()) -> pa.Table:  # noqa: A002 - the DataSource protocol's name
        start = self.start_time_ns if start_ns is None else max(start_ns, self.start_time_ns)
        data = self.store.scan(table, columns=None, start_ns=start, end_ns=end_ns, filter=filter)
        return data if columns is None else data.select(list(columns))

    def scan_chunks(
        self, table, columns=None, start_ns=None, end_ns=None, *, filter=None, filter_columns=(), rows=16_384
    ):  # noqa: A002
        """:meth:`scan`'s rows in order, about ``rows`` at a time, read from the store's batches as
        they are asked for (a head stops early instead of copying the whole history)."""
        from pxq.tables import CATALOG

        schema = CATALOG[table].arrow_schema()
        start = self.start_time_ns if start_ns is None else max(start_ns, self.start_time_ns)
        group: list[pa.Table] = []
        pending = 0
        yielded = False
        for batch in itertools.chain(self.store.batches(table), [None]):
            if batch is not None:
                group.append(batch)
                pending += batch.num_rows
                if pending < rows:
                    continue
            if not group and yielded:
                break
            data = (
                pa.concat_tables([b if b.schema == schema else b.cast(schema) for b in group])
                if group
                else schema.empty_table()
            )
            group, pending = [], 0
            times = data.column("time_").cast(pa.int64())
            keep = pc.greater_equal(times, start)
            if end_ns is not None:
                keep = pc.and_(keep, pc.less(times, end_ns))
            data = data.filter(keep)
            if filter is not None:
                data = data.filter(filter)
            yielded = True
            yield data if columns is None else data.select(list(columns))


class _BoundedStart:
    """An on-demand ``AgentLoop``'s start in a thread of its own, waited for at most a bound: bcc
    compiles in-process and cannot be interrupted, so a start past the bound is left to end in its
    thread, which then stops what it started and calls ``on_abandoned_end``."""

    def __init__(self, loop: Any, on_abandoned_end: Any):
        self.loop = loop
        self.on_abandoned_end = on_abandoned_end
        self.error: BaseException | None = None
        self._ended = threading.Event()
        self._guard = threading.Lock()  # the start ending and the waiter giving up: one wins
        self._abandoned = False

    def within(self, bound_s: float) -> bool:
        """True once the loop has started; False (abandoned) past ``bound_s``; its error if it failed."""
        threading.Thread(target=self._run, name="pxq-agent-on-demand-start", daemon=True).start()
        self._ended.wait(bound_s)
        with self._guard:
            if not self._ended.is_set():
                self._abandoned = True
                return False
        if self.error is not None:
            raise self.error
        return True

    def _run(self) -> None:
        try:
            self.loop.start()
        except BaseException as exc:  # noqa: BLE001 - raised in the waiting thread, or dropped with the query
            self.error = exc
        with self._guard:
            self._ended.set()
            abandoned = self._abandoned
        if abandoned:
            try:
                self.loop.close()
            finally:
                self.on_abandoned_end(self.error)


class AgentDaemon:
    """Collects (or replays) and answers: see the module docstring. ``start`` then ``stop``."""

    def __init__(self, config: DaemonConfig):
        config.check()
        self.config = config
        self.started_ns = time.time_ns()
        self.window: Any = None  # LiveWindow when collecting
        self.capture: Any = None  # Capture when replaying
        self.agent_id = f"{socket.gethostname()}:{os.getpid()}:{self.started_ns}"
        self.queries = 0
        self.query_errors: dict[str, int] = {}  # by reason: bad_ticket, query_failed, no_token, wrong_token...
        self.address = ""  # where it serves (set once listening)
        # The agent_status table (Pixie's GetAgentStatus shape): its own store, written by the
        # daemon's thread only, so neither the collectors' store nor a capture is touched.
        from pxq.agent.table_store import TableStore

        self.status_store = TableStore(host=socket.gethostname())
        self._status_lock = threading.Lock()
        self.spiller: Any = None  # pxq.agent.spill.Spiller when spill_dir is set
        self.scheduler: Any = None  # pxq.agent.schedule.Scheduler when scripts are scheduled
        self._halt = threading.Event()
        self._threads: list[threading.Thread] = []
        # start_timeouts: starts given up past on_demand_attach_max (each a failed query);
        # given_up_start: how the last of them ended (in the background, its collectors then stopped).
        self.on_demand: dict[str, Any] = {
            "attached": 0, "start_timeouts": 0, "active": [], "last": None, "given_up_start": None,
        }  # fmt: skip
        self._on_demand_lock = threading.Lock()  # one on-demand collection at a time

    # -- collecting

    def tables(self) -> list[str]:
        """The tables this agent holds (collects, or its capture has)."""
        if self.capture is not None:
            return [*self.capture.table_names(), STATUS_TABLE]
        return [*self.collected_tables(), STATUS_TABLE]

    def collected_tables(self) -> list[str]:
        from pxq.agent.collectors import COLLECTORS

        return [t for name in self.config.enabled() for t in COLLECTORS[name].tables]

    def collector_of(self, table: str) -> str:
        from pxq.tables import CATALOG

        return CATALOG[table].collector if table in CATALOG else "?"

    def start(self) -> AgentDaemon:
        # Refused before anything starts: a spill directory that cannot be used, a script that
        # cannot be loaded.
        if self.config.spill_dir is not None:
            from pxq.agent.spill import Spiller

            try:
                self.spiller = Spiller(
                    Path(self.config.spill_dir),
                    self.config.spill_max_bytes,
                    self.config.spill_window_s,
                    host=socket.gethostname(),
                )
            except OSError as exc:
                raise UsageError(
                    f"cannot use the spill directory {self.config.spill_dir}: {exc.strerror or exc}"
                ) from None
        if self.config.schedule:
            from pxq.agent.schedule import Scheduler

            self.scheduler = Scheduler(self.config.schedule, self.source, self.now_ns, self.spiller)
        if self.config.replay is not None:
            from pxq.replay import open_capture

            self.capture = open_capture(self.config.replay)
            self._start_housekeeping()
            return self
        from pxq.agent.collector import AgentOptions
        from pxq.agent.live_window import LiveWindow

        options = AgentOptions(
            body_limit=self.config.body_limit,
            keep_secrets=self.config.keep_secrets,
            table_budget_bytes=int(self.config.table_budget_mb * 1024 * 1024),
            # History kept for minutes under a tighter RSS target: every batch compressed as it
            # comes (holding the newest raw saves no CPU when every row is compressed anyway).
            raw_held_bytes=0,
            asid=self.config.agent_asid,
        )
        self.window = LiveWindow(
            self.collected_tables(),
            window_s=self.config.retention_s,
            options=options,
            collector_options={
                "perf_profiler": (("sample_hz", str(self.config.sample_hz)),),
                "socket_tracer": (("traced_cgroups", ",".join(self.config.traced_cgroups)),)
                if self.config.traced_cgroups
                else (),
            },
        ).start()
        self._start_housekeeping()
        return self

    def _start_housekeeping(self) -> None:
        """The spill's and the scheduler's threads (each its own: a slow script delays no flush),
        and the one handing freed heap back to the system."""
        self._thread("pxq-agent-memory", STATUS_INTERVAL_S, _release_freed_heap)
        if self.spiller is not None and self.capture is None:  # a replayed capture is on disk already
            self._thread("pxq-agent-spill", self.config.spill_flush_s, self.flush_spill)
        if self.scheduler is not None:
            self._thread("pxq-agent-schedule", 0.2, self.scheduler.run_due)

    def _thread(self, name: str, every_s: float, work: Any) -> None:
        def run() -> None:
            while not self._halt.wait(every_s):
                try:
                    work()
                except Exception as exc:  # noqa: BLE001 - said, and the agent (and this thread) go on
                    print(f"pxq: agent: {name}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)

        thread = threading.Thread(target=run, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def flush_spill(self) -> int:
        """Write the rows collected since the last flush to the spill directory (the rows written)."""
        if self.spiller is None or self.window is None:
            return 0
        return self.spiller.flush(self.window.store, self.collected_tables())

    def count_refusal(self, reason: str) -> None:
        """A call refused for its credentials (counted under a lock: gRPC calls this from its threads)."""
        with self._status_lock:
            self.query_errors[reason] = self.query_errors.get(reason, 0) + 1

    def failure(self) -> BaseException | None:
        """The collector thread's failure, if it stopped on one."""
        return getattr(self.window, "_failure", None) if self.window is not None else None

    def stop(self) -> None:
        self._halt.set()
        for thread in self._threads:
            thread.join(60.0)
        self._threads.clear()
        if self.window is not None:
            self.window.stop()
            self.flush_spill()  # what the collectors held at the end too

    # -- reading

    def now_ns(self) -> int:
        """``px.now()`` for a query: the capture's end when replaying, else the clock."""
        return self.capture.end_time_ns if self.capture is not None else time.time_ns()

    def source(self) -> Any:
        """A DataSource for one query, as of now (agent_status read from the agent's own rows)."""
        if self.capture is not None:
            return _WithStoreTables(self.capture, self.status_store, {STATUS_TABLE})
        now = time.time_ns()
        begin = max(self.window.started_ns or now, now - int(self.window.window_s * 1e9))
        return _WithStoreTables(StoreView(self.window.store, begin, now), self.status_store, {STATUS_TABLE})

    def record_status(self) -> None:
        """Append one agent_status row (every STATUS_INTERVAL_S, and before a query reading it)."""
        import pyarrow as pa

        from pxq.agent.procinfo import process_info, upid_of
        from pxq.tables import CATALOG

        status = self.status()
        lost = sum(sum(split_losses(counters)[0].values()) for counters in status["drops"].values())
        asid = self.config.agent_asid
        upid = upid_of(os.getpid(), asid) or f"{asid}:{os.getpid()}:0"
        if upid not in self.status_store.processes:  # px.upid_to_* on the agent's own row
            self.status_store.processes[upid] = process_info(os.getpid()) or {"pid": os.getpid()}
        row = {
            "time_": time.time_ns(),
            "upid": upid,
            "agent_id": self.agent_id,
            "asid": asid,
            "hostname": socket.gethostname(),
            "ip_address": self.address.rpartition(":")[0],
            "agent_state": "AGENT_STATE_HEALTHY" if status["state"] == "running" else "AGENT_STATE_UNRESPONSIVE",
            "create_time": self.started_ns,
            "last_heartbeat_ns": 0,
            "cpu_utime_ns": int(status["cpu_user_s"] * 1e9),
            "cpu_ktime_ns": int(status["cpu_system_s"] * 1e9),
            "rss_bytes": status["rss_bytes"],
            "table_rows": sum(t["rows"] for name, t in status["tables"].items() if name != STATUS_TABLE),
            "table_bytes": sum(t["bytes"] or 0 for name, t in status["tables"].items() if name != STATUS_TABLE),
            "events_lost": lost,
            "rows_evicted": sum(t["evicted_retention"] for t in status["tables"].values()),
            "drops": json.dumps(status["drops"], sort_keys=True),
        }
        schema = CATALOG[STATUS_TABLE].arrow_schema()
        with self._status_lock:
            self.status_store.append(STATUS_TABLE, pa.Table.from_pylist([row], schema=schema))
            self.status_store.drop_before(time.time_ns() - int(self.config.retention_s * 1e9))

    def info(self) -> dict[str, Any]:
        """What a client needs before planning: the clock, the tables and who fills them."""
        source = self.source()
        return {
            "agent_id": self.agent_id,
            "asid": self.config.agent_asid,
            "host": source.host,
            "pid": os.getpid(),
            "mode": "replay" if self.capture is not None else "live",
            "now_ns": self.now_ns(),
            "started_ns": self.started_ns,
            "history_from_ns": source.start_time_ns,
            "tables": {t: self.collector_of(t) for t in self.tables()},
            "collectors": self.config.enabled() if self.capture is None else [],
            "collector_options": {"perf_profiler": {"sample_hz": self.config.sample_hz}}
            if self.capture is None
            else {},
            "on_demand": self.config.on_demand,
            "attachable": self.attachable(),
        }

    def on_demand_source(self, fragment: Any, now_ns: int, settings: tuple[tuple[str, str], ...]) -> Any | None:
        """A query fragment that needs a collector this agent is not running as asked (a table of a
        collector switched off, or a running collector at other settings: a profiler for a pid at a
        higher rate): with ``on_demand = "attach"``, that collector is attached for the query's
        window (the script's start time to now; the whole collection, the collector's start
        included, within ``on_demand_max``, as the client waits; a start past
        ``on_demand_attach_max`` fails the query, see ``_BoundedStart``), then detached, and
        the query reads its rows (a DataSource: those tables from the collection, the others from
        the store). None when nothing is missing or the agent refuses: a missing table was refused
        already (the client's check_collected, read_ticket here), other settings are said as a note
        and the history is read."""
        from dataclasses import replace

        from pxq.agent.collector import AgentError, AgentOptions
        from pxq.agent.collectors import check_collectable
        from pxq.agent.loop import AgentLoop
        from pxq.plan.manifest import build_manifest
        from pxq.plan.nodes import Display, Graph

        if self.config.on_demand != "attach" or self.capture is not None:
            return None
        manifest = build_manifest(Graph((Display(fragment, "on_demand"),), now_ns, settings))
        running = self.info()["collector_options"]
        held = set(self.collected_tables())
        needed = [
            request
            for request in manifest.collectors
            if request.name in ATTACHABLE
            and (
                any(t not in held for t in request.tables)
                or any(
                    str(running.get(request.name, {}).get(key, value)) != str(value) for key, value in request.options
                )
            )
        ]
        if not needed:
            return None
        names = {r.name for r in needed}
        tables = tuple(t for t in manifest.tables if t.collector in names)
        starts = [t.start_ns for t in tables if t.start_ns is not None]
        window_s = (now_ns - min(starts)) / 1e9 if starts else self.config.on_demand_max_s
        window_s = min(max(window_s, 1.0), self.config.on_demand_max_s)
        sub = replace(manifest, tables=tables, collectors=tuple(needed))
        options = AgentOptions(body_limit=self.config.body_limit, keep_secrets=self.config.keep_secrets)
        # A collection holds the lock for its start, its window and its stop at most.
        lock_wait_s = self.config.on_demand_attach_max_s + self.config.on_demand_max_s + 10
        if not self._on_demand_lock.acquire(timeout=lock_wait_s):
            raise AgentError(
                f"another on-demand collection ({', '.join(self.on_demand['active'])}) has held the collectors "
                f"for more than {lock_wait_s:g} s; `pxq agent status` shows it"
            )
        release = True  # False once a start past its bound is left to release the lock when it ends
        try:
            what = [
                f"{r.name}" + "".join(f" {k}={v}" for k, v in r.options) + (f" pids {list(r.pids)}" if r.pids else "")
                for r in needed
            ]
            self.on_demand["active"] = what
            check_collectable(sub)
            loop = AgentLoop(sub, options)
            began = time.monotonic()
            try:
                # Compiling the collector's program: seconds, more on a busy machine; never past the bound.
                if not _BoundedStart(loop, self._abandoned_start_ended).within(self.config.on_demand_attach_max_s):
                    release = False
                    self.on_demand["start_timeouts"] += 1
                    raise AgentError(
                        f"could not attach {', '.join(what)} on demand: its start (compiling and attaching its "
                        f"BPF program) took more than on_demand_attach_max = {self.config.on_demand_attach_max_s:g} s, "
                        "so the agent gave the query up (it detaches the collector once its start ends; "
                        "`pxq agent status` shows it); an overloaded agent starts collectors slowly: try again, "
                        "or run the collector all along ([collectors] in the agent's config)"
                    )
                # The whole collection within on_demand_max, its start included: the client waits.
                window_s = min(window_s, max(1.0, self.config.on_demand_max_s - (time.monotonic() - began)))
                attached = time.monotonic()
                deadline = attached + window_s
                while time.monotonic() < deadline:
                    loop.step()
                loop.stop()
                attached_s = time.monotonic() - attached  # the window and the last reads
            finally:
                if release:
                    loop.close()
                    self.on_demand["active"] = []
            store = loop.store
            self.on_demand["attached"] += 1
            self.on_demand["last"] = {
                "collectors": what,
                "window_s": window_s,
                "attached_s": round(attached_s, 3),
                "start_s": round(attached - began, 3),
                "ended_ns": time.time_ns(),
            }
        finally:
            if release:
                self._on_demand_lock.release()
        return _WithStoreTables(self.source(), store, {t.table for t in tables})

    def _abandoned_start_ended(self, error: BaseException | None) -> None:
        """A start given up past on_demand_attach_max has ended (and its collectors are stopped)."""
        self.on_demand["given_up_start"] = {
            "collectors": self.on_demand["active"],
            "error": None if error is None else f"{type(error).__name__}: {error}",
            "ended_ns": time.time_ns(),
        }
        self.on_demand["active"] = []
        self._on_demand_lock.release()

    def attachable(self) -> dict[str, str]:
        """Tables a query may have collected for its window (on_demand = "attach", live only)."""
        from pxq.agent.collectors import COLLECTORS

        if self.config.on_demand != "attach" or self.capture is not None:
            return {}
        held = set(self.collected_tables())
        return {t: name for name in ATTACHABLE for t in COLLECTORS[name].tables if t not in held}

    def status(self) -> dict[str, Any]:
        """``pxq agent status``: collectors, probes, tables, drops by reason, CPU and RSS."""
        usage = resource.getrusage(resource.RUSAGE_SELF)
        tables: dict[str, dict[str, Any]] = {}
        drops: dict[str, dict[str, int]] = {}
        probes: list[str] = []
        if self.capture is not None:
            for name in self.capture.table_names():
                data = self.capture.scan(name, ["time_"])
                tables[name] = {"rows": data.num_rows, "bytes": None, "evicted_retention": 0}
            drops = {t: dict(c) for t, c in self.capture.drops.items()}
        else:
            store = self.window.store
            for name in self.tables():
                tables[name] = {
                    "rows": store.rows(name),
                    "bytes": store.size_bytes(name),
                    "evicted_retention": self.window.evicted.get(name, 0),
                }
            drops = {t: dict(c) for t, c in store.drops.items()}
            loop = getattr(self.window, "_loop", None)
            for collector in getattr(loop, "running", ()):
                probes.extend(_probes_of(collector))
        tables[STATUS_TABLE] = {
            "rows": self.status_store.rows(STATUS_TABLE),
            "bytes": self.status_store.size_bytes(STATUS_TABLE),
            "evicted_retention": 0,
        }
        return {
            **self.info(),
            "state": "failed" if self.failure() is not None else "running",
            "failure": None if self.failure() is None else str(self.failure()),
            "collectors": {name: ("on" if self.config.collectors.get(name) else "off") for name in KNOWN_COLLECTORS}
            if self.capture is None
            else {"replay": self.config.replay},
            "profiler_sample_hz": self.config.sample_hz,
            "security": self.config.security.describe(),
            "retention_s": self.config.retention_s,
            "table_budget_bytes": int(self.config.table_budget_mb * 1024 * 1024),
            "probes": probes,
            "tables": tables,
            "drops": drops,
            "queries": self.queries,
            "query_errors": dict(self.query_errors),
            "spill": None if self.spiller is None else self.spiller.status(),
            "scheduled": {} if self.scheduler is None else self.scheduler.status(),
            "on_demand_collections": {**self.on_demand, "active": list(self.on_demand["active"])},
            "cpu_user_s": usage.ru_utime,
            "cpu_system_s": usage.ru_stime,
            "rss_bytes": _rss_bytes(),
            # What the history takes in memory (batches held compressed), beside the budgets' count.
            "store_held_bytes": self.window.store.held_bytes() if self.window is not None else None,
        }

    # -- the state file

    def write_state(self, address: str) -> Path:
        path = self.config.state_path
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"address": address, "pid": os.getpid(), "agent_id": self.agent_id}) + "\n")
        tmp.replace(path)  # a reader never sees half a file
        return path

    def remove_state(self) -> None:
        path = self.config.state_path
        try:
            if json.loads(path.read_text()).get("pid") == os.getpid():
                path.unlink()
        except (OSError, ValueError):
            pass


class _WithStoreTables:
    """``source`` with ``tables`` read from ``store`` instead: the agent's own agent_status table,
    or the tables of an on-demand collection."""

    def __init__(self, source: Any, store: Any, tables: set[str]):
        self._source = source
        self._store = store
        self._tables = tables
        self.host = source.host
        self.processes = {**source.processes, **store.processes}
        self.drops = getattr(source, "drops", {})
        self.start_time_ns = getattr(source, "start_time_ns", None)
        self.end_time_ns = getattr(source, "end_time_ns", None)
        self.supports_dictionary_strings = getattr(source, "supports_dictionary_strings", False)

    def scan(self, table, columns=None, start_ns=None, end_ns=None, **options) -> pa.Table:
        if table in self._tables:
            options.pop("dictionary_strings", None)
            return self._store.scan(table, columns, start_ns, end_ns, **options)
        return self._source.scan(table, columns, start_ns, end_ns, **options)

    def __getattr__(self, name: str) -> Any:
        if name == "scan_chunks" and hasattr(self._source, "scan_chunks"):
            source_chunks = self._source.scan_chunks

            def chunks(table, *args, **options):
                if table in self._tables:
                    options.pop("rows", None)  # a chunk size: the store's scan reads them whole
                    return iter([self.scan(table, *args, **options)])
                return source_chunks(table, *args, **options)

            return chunks
        raise AttributeError(name)


def _release_freed_heap() -> None:
    """malloc_trim(3): an always-on agent frees much in its threads (the profiler's parsed ELF and
    CFI data, each poll's rows once compressed, each query's copies); glibc keeps those pages
    unless asked (about 10 MB of RSS under load, bench/bench_agent_steady.py)."""
    import contextlib
    import ctypes

    with contextlib.suppress(OSError, AttributeError):  # not glibc
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _probes_of(collector: Any) -> list[str]:
    """The attach points a running collector's bcc program holds (tracepoints, raw tracepoints,
    perf events), read from bcc's own bookkeeping."""
    name = getattr(collector, "name", type(collector).__name__)
    out = []
    for holder in (getattr(collector, "tracer", None), getattr(collector, "profiler", None), collector):
        bpf = getattr(holder, "_bpf", None)
        if bpf is None:
            continue
        for key in getattr(bpf, "tracepoint_fds", {}) or {}:
            out.append(f"{name}: tracepoint {_text(key)}")
        for key in getattr(bpf, "raw_tracepoint_fds", {}) or {}:
            out.append(f"{name}: raw tracepoint {_text(key)}")
        for key, per_cpu in (getattr(bpf, "open_perf_events", {}) or {}).items():
            kind = _PERF_EVENTS.get(key, f"type {key[0]} config {key[1]}" if isinstance(key, tuple) else str(key))
            out.append(f"{name}: perf event {kind} on {len(per_cpu)} CPUs")
        break
    return out or [f"{name}: running"]


# (perf_event_attr.type, .config) as perf names them.
_PERF_EVENTS = {(1, 0): "software cpu-clock", (1, 1): "software task-clock", (0, 0): "hardware cpu-cycles"}


def _text(key: Any) -> str:
    return key.decode() if isinstance(key, bytes) else str(key)


def _rss_bytes() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def read_state(state_dir: str | Path | None = None) -> dict[str, Any] | None:
    """The local agent's state file (None when absent or unreadable)."""
    path = (Path(state_dir) if state_dir else default_state_dir()) / STATE_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("address"), str):
        return None
    data["path"] = str(path)
    return data


__all__ = [
    "AgentDaemon",
    "DaemonConfig",
    "StoreView",
    "default_state_dir",
    "is_loopback",
    "load_config",
    "parse_address",
    "read_state",
]
