"""The node agent over Arrow Flight: the server (:class:`AgentFlightServer`, run by ``pxq agent
serve``) and the client (:class:`AgentClient`, used by ``pxq run --agent`` and ``pxq agent status``).

A query is one ``DoGet`` per agent fragment of a split plan (:mod:`pxq.plan.split`). Its ticket is
JSON data, never code or PxL text::

    {"format": "pxq-agent-query", "version": 1,
     "fragment": <a pxq.plan.serialize "fragments" document with one root>,
     "now_ns": int, "settings": [[key, value], ...],      # px.now() and #px:set of the script
     "start_ns": int | null, "end_ns": int | null,       # the time range the agent may read
     "limit": int | null}                                # rows the merge side reads at most (head)

The agent reads the plan back checked (``PlanFormatError`` with the JSON path of a bad element),
accepts only per-row nodes (Source, Filter, Map, Project) and, as the root only, a group-by (Agg)
that it runs as a partial aggregation (per-group states, :mod:`pxq.broker.partial`, merged by the
broker), checks every table and column against what it holds, runs the fragment on its store with
the executor and streams record batches. The
stream's schema metadata carries what the client needs to finish as in embedded mode: the loss
counters of the tables read (``pxq.drops``), the identity of every process (``pxq.processes``, for
``px.upid_to_*`` on the merge side), the host, the data's end and which agent process answered
(``pxq.agent``: its id, pid and start time, so a client notices an agent restarted since it asked
for the clock without another call).

Actions: ``info`` (the agent's clock, tables and collectors, to plan against) and ``status``
(``pxq agent status``), each a JSON body.

Every failure of a query reaches the client as a ``FlightServerError`` with pxq's message; the
server goes on serving.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.flight as flight

from pxq.agent.defaults import ON_DEMAND_ATTACH_S
from pxq.errors import PxqError

TICKET_FORMAT = "pxq-agent-query"
TICKET_VERSION = 1
BATCH_ROWS = 65_536
CHUNK_ROWS = 16_384  # source rows per step when only the first rows are wanted (a head)
_AGENT_NODE_KINDS = ("source", "filter", "map", "project", "agg")
META_DROPS = b"pxq.drops"
META_PROCESSES = b"pxq.processes"
META_HOST = b"pxq.host"
META_END = b"pxq.end_time_ns"
META_AGENT = b"pxq.agent"  # which agent process ran the query: JSON {agent_id, pid, started_ns}
CONNECT_TIMEOUT_S = 2.0


class AgentQueryError(PxqError):
    """The agent refused or failed a query: its message, as the agent said it."""

    exit_code = 1


class AgentAuthError(AgentQueryError):
    """The agent did not accept this client: no or wrong credentials, TLS on one side only, a
    certificate from another CA."""

    exit_code = 3


class AgentUnavailableError(AgentQueryError):
    """No agent answers at the address (nothing listens, or it did not answer in time)."""

    exit_code = 3


class AgentGaveUpError(AgentUnavailableError):
    """The client stopped waiting for an agent collecting on demand for the query (the message
    says how long and why that long)."""


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _client_error(address: str, exc: BaseException) -> AgentQueryError:
    if isinstance(exc, (flight.FlightUnavailableError, flight.FlightTimedOutError)):
        detail = "connection refused" if "Connection refused" in str(exc) else _flight_message(exc)
        return AgentUnavailableError(f"no agent answers at {address} ({detail}); is `pxq agent serve` running?")
    return AgentQueryError(f"agent {address}: {_flight_message(exc)}")


# ---------------------------------------------------------------------------------------------
# Tickets.


def make_ticket(
    fragment: Any,
    *,
    now_ns: int,
    settings: tuple[tuple[str, str], ...] = (),
    start_ns=None,
    end_ns=None,
    limit: int | None = None,
) -> bytes:
    from pxq.plan.serialize import to_dict

    return json.dumps(
        {
            "format": TICKET_FORMAT,
            "version": TICKET_VERSION,
            "fragment": to_dict((fragment,)),
            "now_ns": now_ns,
            "settings": [[k, v] for k, v in settings],
            "start_ns": start_ns,
            "end_ns": end_ns,
            "limit": limit,
        },
        ensure_ascii=True,
        allow_nan=False,
    ).encode()


def read_ticket(raw: bytes, tables: dict[str, str]) -> dict[str, Any]:
    """The ticket's query, checked: the fragment plan (a Relation), now_ns, settings and range.
    ``tables``: what the agent holds (table -> collector). PlanFormatError for anything else."""
    from pxq.plan.serialize import PlanFormatError, from_dict
    from pxq.tables import CATALOG

    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PlanFormatError("$", f"the ticket is not a JSON query document ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != TICKET_FORMAT:
        raise PlanFormatError("$.format", f"expected {TICKET_FORMAT!r}: this ticket is not a pxq agent query")
    if doc.get("version") != TICKET_VERSION or type(doc.get("version")) is not int:
        raise PlanFormatError(
            "$.version", f"version {doc.get('version')!r} is not one this agent reads ({TICKET_VERSION})"
        )
    known = {"format", "version", "fragment", "now_ns", "settings", "start_ns", "end_ns", "limit"}
    for key in doc:
        if key not in known:
            raise PlanFormatError(f"$.{key}", "unknown field of a query ticket")
    now_ns = doc.get("now_ns")
    if type(now_ns) is not int:
        raise PlanFormatError("$.now_ns", f"expected an integer (ns), got {now_ns!r}")
    for key in ("start_ns", "end_ns"):
        if doc.get(key) is not None and type(doc.get(key)) is not int:
            raise PlanFormatError(f"$.{key}", f"expected an integer (ns) or null, got {doc.get(key)!r}")
    limit = doc.get("limit")
    if limit is not None and (type(limit) is not int or limit < 0):
        raise PlanFormatError("$.limit", f"expected a row count (an integer >= 0) or null, got {limit!r}")
    settings = doc.get("settings", [])
    if not isinstance(settings, list) or not all(
        isinstance(s, list) and len(s) == 2 and all(isinstance(x, str) for x in s) for s in settings
    ):
        raise PlanFormatError("$.settings", "expected a list of [key, value] string pairs")
    plan_doc = doc.get("fragment")
    if not isinstance(plan_doc, dict):
        raise PlanFormatError("$.fragment", "expected a plan document (kind 'fragments')")
    if plan_doc.get("kind") != "fragments":
        raise PlanFormatError("$.fragment.kind", f"expected 'fragments', got {plan_doc.get('kind')!r}")
    # Before reading the plan: only per-row work runs on an agent, on tables and columns it holds.
    nodes = plan_doc.get("nodes")
    schemas = plan_doc.get("schemas")
    if isinstance(nodes, list) and isinstance(schemas, list):
        for i, entry in enumerate(nodes):
            kind = entry.get("kind") if isinstance(entry, dict) else None
            if kind not in _AGENT_NODE_KINDS:
                raise PlanFormatError(
                    f"$.fragment.nodes[{i}].kind",
                    f"an agent runs only {', '.join(_AGENT_NODE_KINDS)} nodes, not {kind!r}",
                )
            if kind != "source":
                continue
            table = entry.get("table")
            if table not in tables:
                holds = ", ".join(sorted(tables)) or "nothing"
                why = (
                    f"its collector {CATALOG[table].collector} is not running here"
                    if isinstance(table, str) and table in CATALOG
                    else "no such table"
                )
                raise PlanFormatError(
                    f"$.fragment.nodes[{i}].table",
                    f"this agent does not hold table {table!r} ({why}; it holds {holds})",
                )
            position = entry.get("table_schema")
            if type(position) is int and 0 <= position < len(schemas) and isinstance(schemas[position], list):
                have = {f.name: f.type.value for f in CATALOG[table].columns}
                for j, column in enumerate(schemas[position]):
                    name = column.get("name") if isinstance(column, dict) else None
                    if name not in have:
                        raise PlanFormatError(
                            f"$.fragment.schemas[{position}][{j}].name",
                            f"table {table!r} on this agent has no column {name!r}",
                        )
                    if column.get("type") != have[name]:
                        raise PlanFormatError(
                            f"$.fragment.schemas[{position}][{j}].type",
                            f"column {table}.{name} is {have[name]} on this agent, not {column.get('type')!r}",
                        )
    try:
        roots = from_dict(plan_doc)
    except PlanFormatError as exc:
        raise PlanFormatError("$.fragment" + exc.path[1:], str(exc).split(": ", 1)[1]) from None
    assert isinstance(roots, tuple)
    if len(roots) != 1:
        raise PlanFormatError("$.fragment.roots", f"a query ticket names one fragment, not {len(roots)}")
    _check_partial_agg(roots[0], limit)
    return {
        "fragment": roots[0],
        "now_ns": now_ns,
        "settings": tuple((k, v) for k, v in settings),
        "start_ns": doc.get("start_ns"),
        "end_ns": doc.get("end_ns"),
        "limit": limit,
    }


def _check_partial_agg(fragment: Any, limit: int | None) -> None:
    """A group-by runs on an agent only as the fragment's root (a partial aggregation, whose
    states the broker merges), over per-row nodes, and never with a row limit (groups are not rows)."""
    from pxq.broker.partial import splittable
    from pxq.plan.nodes import Agg, relations_postorder
    from pxq.plan.serialize import PlanFormatError

    below = fragment.input if isinstance(fragment, Agg) else fragment
    if any(isinstance(n, Agg) for n in relations_postorder((below,))):
        raise PlanFormatError("$.fragment.roots", "an agent runs a group-by (agg) only as the fragment's root")
    if isinstance(fragment, Agg):
        if not splittable(fragment):
            raise PlanFormatError("$.fragment.roots", "this group-by has an aggregate with no partial form")
        if limit is not None:
            raise PlanFormatError("$.limit", "a row limit does not apply to a partial aggregation")


# ---------------------------------------------------------------------------------------------
# The server.


class _Bounded:
    """``source`` read only within [start_ns, end_ns) (the ticket's range)."""

    def __init__(self, source: Any, start_ns: int | None, end_ns: int | None):
        self._source = source
        self.host = source.host
        self.processes = source.processes
        self.end_time_ns = getattr(source, "end_time_ns", None)
        self.supports_dictionary_strings = getattr(source, "supports_dictionary_strings", False)
        self._start, self._end = start_ns, end_ns

    def _range(self, start_ns, end_ns):
        if self._start is not None:
            start_ns = self._start if start_ns is None else max(start_ns, self._start)
        if self._end is not None:
            end_ns = self._end if end_ns is None else min(end_ns, self._end)
        return start_ns, end_ns

    def scan(self, table, columns=None, start_ns=None, end_ns=None, **options):
        return self._source.scan(table, columns, *self._range(start_ns, end_ns), **options)

    def chunks(self, table, columns=None, start_ns=None, end_ns=None, **options) -> Iterator[pa.Table]:
        """The scan's rows in order, a chunk at a time: read as asked for where the source can
        (the live store), else sliced from one scan (a capture)."""
        start_ns, end_ns = self._range(start_ns, end_ns)
        scan_chunks = getattr(self._source, "scan_chunks", None)
        if scan_chunks is not None:
            yield from scan_chunks(table, columns, start_ns, end_ns, rows=CHUNK_ROWS, **options)
            return
        data = self._source.scan(table, columns, start_ns, end_ns, **options)
        for offset in range(0, max(data.num_rows, 1), CHUNK_ROWS):
            yield data.slice(offset, CHUNK_ROWS)


class _Chunks:
    """The fragment's one Source read a chunk per run (see :func:`_first_rows`)."""

    def __init__(self, source: _Bounded):
        self._source = source
        self.host, self.processes = source.host, source.processes
        self.end_time_ns = source.end_time_ns
        self.supports_dictionary_strings = source.supports_dictionary_strings
        self._chunks: Iterator[pa.Table] | None = None
        self._last: pa.Table | None = None
        self.done = False

    def scan(self, table, columns=None, start_ns=None, end_ns=None, **options):
        if self._chunks is None:
            self._chunks = self._source.chunks(table, columns, start_ns, end_ns, **options)
        part = next(self._chunks, None)
        if part is None:
            self.done = True
            assert self._last is not None  # chunks() gives at least one, maybe empty
            return self._last.slice(0, 0)
        self._last = part
        return part


def _first_rows(fragment: Any, graph: Any, source: Any, limit: int) -> pa.Table:
    """The fragment's first ``limit`` rows, computed chunk by chunk of its Source's rows until
    there are enough: exact, since an agent fragment's steps (Filter, Map, Project) work row by
    row and keep row order, so the first rows of the whole are the first rows of the chunks."""
    from pxq.exec.execute import execute_fragments

    chunks = _Chunks(source)
    parts: list[pa.Table] = []
    rows = 0
    while not parts or (rows < limit and not chunks.done):
        (part,) = execute_fragments((fragment,), graph, chunks)
        parts.append(part)
        rows += part.num_rows
    parts = [p.cast(parts[0].schema) if p.schema != parts[0].schema else p for p in parts]
    return pa.concat_tables(parts).slice(0, limit)


def _tables_read(fragment: Any) -> list[str]:
    from pxq.plan.nodes import Source, relations_postorder

    return sorted({n.table for n in relations_postorder((fragment,)) if isinstance(n, Source)})


def answered_by(table: pa.Table) -> dict[str, Any] | None:
    """The identity of the agent process that ran the query (``pxq.agent`` of its answer), or None
    from an agent that does not stamp its answers."""
    raw = (table.schema.metadata or {}).get(META_AGENT)
    return json.loads(raw) if raw else None


def same_process(info: dict[str, Any], identity: dict[str, Any]) -> bool:
    """Whether ``identity`` (an answer's stamp) is the process that gave ``info`` (its clock)."""
    return (identity.get("pid"), identity.get("started_ns")) == (info.get("pid"), info.get("started_ns"))


def restarted_error(info: dict[str, Any], identity: dict[str, Any]) -> AgentQueryError:
    return AgentQueryError(
        f"restarted during the query (agent pid {info.get('pid')}, then {identity.get('pid')}): "
        "its rows from before the restart are not in its answer (a spill directory keeps them)"
    )


class AgentFlightServer(flight.FlightServerBase):
    """Serves an :class:`pxq.agent.daemon.AgentDaemon`'s tables (see the module docstring)."""

    def __init__(self, daemon: Any, location: str | None = None):
        """Listens at ``location`` (default: the daemon's configured address), with the TLS,
        client certificates and token of the daemon's ``security`` settings (refused calls are
        counted in its ``query_errors``: ``no_token``, ``wrong_token``)."""
        from pxq.agent.daemon import parse_address

        security = daemon.config.security
        if location is None:
            host, port = parse_address(daemon.config.listen, "listen address")
            location = f"{'grpc+tls' if security.tls else 'grpc+tcp'}://{_url_host(host)}:{port}"
        super().__init__(location, **security.server_options(on_refusal=daemon.count_refusal))
        self.daemon = daemon
        # What a query runs, imported now rather than by the first query (over half a second).
        import pxq.broker.partial  # noqa: F401
        import pxq.exec.execute  # noqa: F401
        import pxq.plan.serialize  # noqa: F401

        # Stamped on every answer: a restarted agent is another pid and start time.
        self.identity = {"agent_id": daemon.agent_id, "pid": os.getpid(), "started_ns": daemon.started_ns}

    def _fail(self, reason: str, exc: object) -> flight.FlightServerError:
        self.daemon.query_errors[reason] = self.daemon.query_errors.get(reason, 0) + 1
        return flight.FlightServerError(str(exc))

    def do_get(self, context: Any, ticket: flight.Ticket) -> flight.FlightDataStream:
        from pxq.broker.partial import partial_aggregate
        from pxq.exec.execute import conform, execute_fragments
        from pxq.plan.nodes import Agg, Graph
        from pxq.plan.serialize import PlanFormatError

        self.daemon.queries += 1
        try:
            info = self.daemon.info()  # tables it may attach a collector for count as held (on_demand)
            query = read_ticket(ticket.ticket, {**info.get("attachable", {}), **info["tables"]})
        except PlanFormatError as exc:
            raise self._fail("bad_ticket", exc) from None
        fragment = query["fragment"]
        try:
            if "agent_status" in _tables_read(fragment):
                self.daemon.record_status()  # the agent as it is now, besides its history
            if self.daemon.failure() is not None:
                raise AgentQueryError(f"the agent's collection stopped: {self.daemon.failure()}")
            source = self.daemon.on_demand_source(fragment, query["now_ns"], query["settings"]) or self.daemon.source()
            bounded = _Bounded(source, query["start_ns"], query["end_ns"])
            graph = Graph((), query["now_ns"], query["settings"])
            if isinstance(fragment, Agg):  # states per group, merged by the broker
                (rows,) = execute_fragments((fragment.input,), graph, bounded)
                table = partial_aggregate(rows, fragment)
            elif query["limit"] is None:
                (table,) = execute_fragments((fragment,), graph, bounded)
                table = conform(table, fragment.schema)
            else:
                table = conform(_first_rows(fragment, graph, bounded, query["limit"]), fragment.schema)
        except PxqError as exc:
            raise self._fail("query_failed", exc) from None
        except Exception as exc:  # noqa: BLE001 - a bug must reach the client as a message, the agent go on
            raise self._fail("internal_error", f"internal error in the agent: {type(exc).__name__}: {exc}") from None
        tables = _tables_read(fragment)
        drops = {t: dict(source.drops.get(t, {})) for t in tables} if hasattr(source, "drops") else {}
        metadata = {
            META_DROPS: json.dumps(drops).encode(),
            META_PROCESSES: json.dumps(source.processes).encode(),
            META_HOST: (source.host or "").encode(),
            META_END: str(getattr(source, "end_time_ns", None) or query["now_ns"]).encode(),
            META_AGENT: json.dumps(self.identity).encode(),
        }
        schema = table.schema.with_metadata(metadata)
        table = table.replace_schema_metadata(metadata)

        def batches() -> Iterator[pa.RecordBatch]:
            # Batch by batch: a client that goes away stops the stream (gRPC's write fails) and the
            # agent goes on serving others.
            try:
                yield from table.to_batches(max_chunksize=BATCH_ROWS)
            finally:
                # A query's copies (the scan, the fragment's columns) are freed now; hand the
                # allocator's cached pages back, or an always-on agent's RSS creeps up per query.
                pa.default_memory_pool().release_unused()

        return flight.GeneratorStream(schema, batches())

    def list_actions(self, context: Any) -> list[tuple[str, str]]:
        return [
            ("info", "the agent's clock, tables and collectors (JSON)"),
            ("status", "pxq agent status (JSON)"),
            ("processes", "upid -> process identity (JSON)"),
        ]

    def do_action(self, context: Any, action: flight.Action) -> Iterator[flight.Result]:
        if action.type == "info":
            # The bound of an on-demand collection, so a client waits as long as it may take.
            body = {**self.daemon.info(), "on_demand_max_s": self.daemon.config.on_demand_max_s}
        elif action.type == "status":
            body = self.daemon.status()
        elif action.type == "processes":
            body = self.daemon.source().processes
        else:
            raise flight.FlightServerError(f"unknown action {action.type!r} (known: info, status, processes)")
        return iter([flight.Result(json.dumps(body).encode())])


# ---------------------------------------------------------------------------------------------
# The client.


class AgentClient:
    """A connection to one agent at ``address`` (HOST:PORT). ``credentials``: what to present to
    an agent that asks for it (:class:`pxq.agent.security.ClientCredentials`: keys ``ca``, ``cert``,
    ``key``, ``token_file``, paths); with ``ca`` the connection uses TLS."""

    def __init__(
        self,
        address: str,
        *,
        timeout_s: float = 30.0,
        credentials: Mapping[str, str] | None = None,
        attach_allowance_s: float = ON_DEMAND_ATTACH_S,
    ):
        """``timeout_s``: how long a call may take; a query the agent answers by collecting on
        demand may take the agent's ``on_demand_max`` and ``attach_allowance_s`` more."""
        from pxq.agent.daemon import parse_address
        from pxq.agent.security import ClientCredentials

        host, port = parse_address(address, "agent address")
        self.address = address
        self.timeout_s, self.attach_allowance_s = timeout_s, attach_allowance_s
        self._host, self._port = host, port
        self.credentials = ClientCredentials.from_mapping(credentials, where=f"agent {address} credentials")
        self.credentials.check_for(host, address)
        # gRPC logs each failed TLS handshake at info level on stderr; this client says why itself
        # (:meth:`_error`). Read when gRPC starts in this process: a pure client's first connection.
        os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
        scheme = "grpc+tls" if self.credentials.tls else "grpc+tcp"
        self._headers = self.credentials.headers()  # the token, read once (before connecting: its errors first)
        self._client = flight.connect(f"{scheme}://{_url_host(host)}:{port}", **self.credentials.connect_options())
        # Buffers aligned as Acero wants them (the merge side groups and joins what arrives).
        self._options = flight.FlightCallOptions(
            timeout=timeout_s,
            read_options=pa.ipc.IpcReadOptions(ensure_alignment=pa.ipc.Alignment.DataTypeSpecific),
            headers=self._headers,
        )

    def _error(self, exc: BaseException) -> AgentQueryError:
        """``exc`` as a message naming why: the agent's refusal of our credentials, or (gRPC says
        only "unavailable" when TLS does not work out) what a handshake of our own finds."""
        from pxq.agent.security import diagnose

        if isinstance(exc, flight.FlightUnauthenticatedError):
            return AgentAuthError(f"agent {self.address} refused the call: {_flight_message(exc)}")
        # Not for a timeout (a slow or stopped agent: our handshake would only wait as long again)
        # nor for a refused connection (nothing listens).
        refused_tcp = "Connection refused" in str(exc)
        if (isinstance(exc, flight.FlightUnavailableError) and not refused_tcp) or "handshake" in str(exc).lower():
            reason = diagnose(self._host, self._port, self.credentials, timeout_s=1.0)
            if reason is not None:
                return AgentAuthError(f"agent {self.address} did not accept the connection: {reason}")
        return _client_error(self.address, exc)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> AgentClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _action(self, name: str, timeout_s: float | None = None) -> dict[str, Any]:
        options = flight.FlightCallOptions(timeout=timeout_s, headers=self._headers) if timeout_s else self._options
        try:
            results = list(self._client.do_action(flight.Action(name, b""), options=options))
        except flight.FlightError as exc:
            raise self._error(exc) from None
        return json.loads(results[0].body.to_pybytes())

    def info(self, timeout_s: float | None = None) -> dict[str, Any]:
        return self._action("info", timeout_s)

    def status(self) -> dict[str, Any]:
        return self._action("status")

    def processes(self) -> dict[str, dict]:
        """The identity of every process the agent's rows name (upid -> identity)."""
        return self._action("processes")

    def get(self, ticket: bytes, *, on_demand: OnDemand | None = None) -> pa.Table:
        """The table of one query ticket (its schema metadata: drops, processes, host, end).
        ``on_demand``: the agent collects for this query first (:func:`on_demand_wait`): the call
        may take that much longer, and giving up says so."""
        options = self._options
        if on_demand is not None:
            options = flight.FlightCallOptions(
                timeout=self.timeout_s + on_demand.wait_s,
                read_options=self._options.read_options,
                headers=self._headers,
            )
        try:
            return self._client.do_get(flight.Ticket(ticket), options=options).read_all()
        except flight.FlightTimedOutError as exc:
            if on_demand is None:
                raise self._error(exc) from None
            raise AgentGaveUpError(
                f"agent {self.address} did not answer within {self.timeout_s + on_demand.wait_s:g} s, gave up: "
                f"the query has it attach {', '.join(on_demand.collectors)} on demand, which it bounds by "
                f"on_demand_max = {on_demand.max_s:g} s (the window), allowed {self.attach_allowance_s:g} s more "
                f"for attaching and {self.timeout_s:g} s for the query; `pxq agent status` shows its on-demand "
                "collections (an overloaded agent attaches slowly)"
            ) from None
        except flight.FlightError as exc:
            raise self._error(exc) from None

    def run(self, script: Any, *, args: dict[str, Any] | None = None) -> tuple[Any, Any, dict[str, dict[str, int]]]:
        """Compile ``script`` against the agent's clock, run its agent fragments on the agent and
        the merge fragment here: (Compiled, Results, drops of the tables read)."""
        from pxq.api import compile_script
        from pxq.exec.execute import execute
        from pxq.plan.split import split

        info = self.info()
        compiled = compile_script(script, args=args, now_ns=info["now_ns"])
        plan = split(compiled.optimized)
        check_collected(plan.manifest, info, self.address)
        inputs = []
        drops: dict[str, dict[str, int]] = {}
        processes: dict[str, dict] = {}
        host = info.get("host", "")
        limits = fragment_limits(plan.merge)
        on_demand = on_demand_wait(plan.manifest, info, self.attach_allowance_s)
        for index, fragment in enumerate(plan.agent_fragments):
            table = self.get(
                make_ticket(
                    fragment,
                    now_ns=compiled.optimized.now_ns,
                    settings=compiled.optimized.settings,
                    limit=limits.get(index),
                ),
                on_demand=on_demand,
            )
            stamp = answered_by(table)
            if stamp is not None and not same_process(info, stamp):  # its earlier rows are gone
                raise restarted_error(info, stamp)
            meta = table.schema.metadata or {}
            for name, counters in json.loads(meta.get(META_DROPS, b"{}")).items():
                drops[name] = counters
            processes.update(json.loads(meta.get(META_PROCESSES, b"{}")))
            host = meta.get(META_HOST, host.encode()).decode()
            inputs.append(table.replace_schema_metadata(None))
        merged = _Merged(host, processes, info["now_ns"])
        results = execute(plan.merge, merged, fragment_inputs=tuple(inputs))
        results.notes[:0] = settings_notes(plan.manifest, info, self.address)
        return compiled, results, drops


class _Merged:
    """The merge side's DataSource: no tables (the fragments brought them), the agent's processes."""

    def __init__(self, host: str, processes: dict[str, dict], end_time_ns: int):
        self.host, self.processes, self.end_time_ns = host, processes, end_time_ns

    def scan(self, table, *_args, **_kwargs):
        raise AgentQueryError(f"the merge side cannot read table {table!r}: it runs on the agent")


def fragment_limits(merge: Any) -> dict[int, int]:
    """Per agent fragment, how many of its rows the merge side can read at most: when every node
    reading it is a head (Limit), the largest n; otherwise it needs all (left out)."""
    from pxq.plan.nodes import FragmentInput, Limit

    readers: dict[int, list[Any]] = {}
    for node in merge.nodes():
        for child in node.inputs:
            if isinstance(child, FragmentInput):
                readers.setdefault(child.index, []).append(node)
    return {
        index: max(node.n for node in nodes)
        for index, nodes in readers.items()
        if all(isinstance(node, Limit) for node in nodes)
    }


def check_collected(manifest: Any, info: dict[str, Any], address: str) -> None:
    """A clear refusal when the script reads a table the agent does not collect, naming its collector."""
    from pxq.agent.collector import AgentError
    from pxq.tables import CATALOG

    held = info.get("tables", {})
    attachable = info.get("attachable", {})  # the agent collects these for the query's window
    missing = [r.table for r in manifest.tables if r.table not in held and r.table not in attachable]
    if missing:
        collectors = sorted({CATALOG[t].collector for t in missing if t in CATALOG})
        on_demand = (
            ' or set on_demand = "attach" there to have it attached for the query\'s window,'
            if info.get("on_demand", "refuse") == "refuse" and info.get("mode") != "replay"
            else ""
        )
        raise AgentError(
            f"agent {address} does not collect {', '.join(missing)} (collector {', '.join(collectors)} is not "
            f"running there; it holds {', '.join(sorted(held)) or 'nothing'}): switch it on in the agent's "
            f"config,{on_demand} or run without the agent (--from DIR, or embedded with --no-agent)"
        )


@dataclass(frozen=True)
class OnDemand:
    """A query an agent answers after collecting for it: which collectors, its bound and how much
    longer than usual a client waits (``on_demand_max`` plus the attach allowance)."""

    collectors: tuple[str, ...]
    max_s: float
    wait_s: float


def on_demand_wait(manifest: Any, info: dict[str, Any], attach_allowance_s: float) -> OnDemand | None:
    """Whether the agent of ``info`` attaches a collector for this query (``on_demand = "attach"``,
    live: a table of a collector it does not run, or a collector at other settings, as
    :meth:`pxq.agent.daemon.AgentDaemon.on_demand_source` decides), and then how long to wait for
    it: the agent's ``on_demand_max`` (learned from its info) plus ``attach_allowance_s``."""
    from pxq.agent.daemon import ATTACHABLE, DEFAULT_ON_DEMAND_MAX_S

    if info.get("on_demand") != "attach" or info.get("mode") != "live":
        return None
    held = info.get("tables", {})
    running = info.get("collector_options", {})
    collectors = [
        request.name
        for request in manifest.collectors
        if request.name in ATTACHABLE
        and (
            any(t not in held for t in request.tables)
            or any(str(running.get(request.name, {}).get(k, v)) != str(v) for k, v in request.options)
        )
    ]
    if not collectors:
        return None
    max_s = float(info.get("on_demand_max_s", DEFAULT_ON_DEMAND_MAX_S))
    return OnDemand(tuple(collectors), max_s, max_s + attach_allowance_s)


def settings_notes(manifest: Any, info: dict[str, Any], address: str) -> list[str]:
    """Collector settings the script asks for that differ from what the agent runs with (its
    history was collected as it was configured): said, not refused."""
    running = info.get("collector_options", {})
    notes = []
    for request in manifest.collectors:
        for key, wanted in request.options:
            have = running.get(request.name, {}).get(key)
            if have is not None and str(have) != str(wanted) and info.get("on_demand") == "attach":
                notes.append(
                    f"the script sets {request.name}.{key}={wanted}: agent {address} attached {request.name} "
                    f"with {key}={wanted} for the query's window (its history has {key}={have})"
                )
            elif have is not None and str(have) != str(wanted):
                notes.append(
                    f"the script sets {request.name}.{key}={wanted}, but agent {address} collects with "
                    f"{key}={have}: its history is what is shown"
                )
    return notes


def _flight_message(exc: BaseException) -> str:
    """The server's message without gRPC's decorations."""
    text = str(exc)
    for marker in (". Detail:", ". gRPC client debug context:"):
        if marker in text:
            text = text.split(marker, 1)[0]
    return re.sub(r"^Flight returned [a-z ]+ error, with message: ", "", text).strip()


def agent_answers(
    address: str, timeout_s: float = CONNECT_TIMEOUT_S, credentials: Mapping[str, str] | None = None
) -> dict[str, Any] | None:
    """The agent's info when an agent answers at ``address`` within ``timeout_s``, else None."""
    try:
        with AgentClient(address, credentials=credentials) as client:
            return client.info(timeout_s=timeout_s)
    except (PxqError, flight.FlightError, OSError):
        return None


def wait_for_agent(address: str, timeout_s: float, credentials: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Poll until an agent answers at ``address`` (tests, scripts); raise after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        info = agent_answers(address, timeout_s=1.0, credentials=credentials)
        if info is not None:
            return info
        if time.monotonic() > deadline:
            raise AgentQueryError(f"no agent answered at {address} within {timeout_s:g}s")
        time.sleep(0.05)


class AgentDataSource:
    """A running agent as the executor's DataSource (the REPL's ``:source agent``): each scan is one
    query ticket holding just the table's Source node (columns and time range; never code), and a
    filter the executor pushes into the scan (an Arrow expression, which is not plan data) is
    applied here. ``processes`` and ``end_time_ns`` are the agent's as of creation (one per query)."""

    supports_dictionary_strings = False

    def __init__(self, client: AgentClient):
        self.client = client
        info = client.info()
        self.host = info.get("host", "")
        self.tables: dict[str, str] = dict(info.get("tables", {}))
        self.end_time_ns: int = info["now_ns"]
        self.processes: dict[str, dict] = client.processes()
        self.drops: dict[str, dict[str, int]] = {}

    def scan(self, table, columns=None, start_ns=None, end_ns=None, *, filter=None, filter_columns=()):  # noqa: A002
        from pxq.plan.compile import table_schema
        from pxq.plan.nodes import Source
        from pxq.tables import CATALOG

        schema = table_schema(CATALOG[table])
        if table not in self.tables:  # empty, as a capture's missing table (the REPL said so)
            empty = CATALOG[table].arrow_schema().empty_table()
            return empty if columns is None else empty.select(list(columns))
        wanted = schema.names if columns is None else [c for c in schema.names if c in {*columns, *filter_columns}]
        source = Source(table, schema, tuple(wanted), start_ns, end_ns)
        data = self.client.get(make_ticket(source, now_ns=self.end_time_ns))
        for name, counters in json.loads((data.schema.metadata or {}).get(META_DROPS, b"{}")).items():
            self.drops[name] = counters
        data = data.replace_schema_metadata(None)
        if filter is not None:
            data = data.filter(filter)
        return data if columns is None else data.select(list(columns))
