"""The socket tracer as a collector of the agent (:mod:`pxq.agent.collectors`): builds a
:class:`pxq.agent.socket_tracer.SocketTracer` from the manifest's request and hands its rows and
drop counters over in batches."""

from __future__ import annotations

import time

import pyarrow as pa

from pxq.agent.collector import AgentError, AgentOptions
from pxq.agent.conn_stats import DEFAULT_INTERVAL_S
from pxq.agent.procinfo import ProcessIdentities
from pxq.agent.protocols.registry import protocol_tables
from pxq.plan.manifest import CollectorRequest

# The socket tracer's transactions become Arrow rows (and its drop counters are read) about this
# often, or once this many are waiting: building a table has a fixed cost, and reading the
# kernel's counters is a few map lookups each.
DRAIN_INTERVAL_S = 1.0
DRAIN_ROWS = 5_000  # (a row waiting is a dozen Python objects; in Arrow, compressed, a few bytes)
# The table of connection counters it fills besides the protocols' tables.
CONN_STATS = "conn_stats"


class SocketTracerCollector:
    """The protocol tables (http_events, ...) and conn_stats from the eBPF socket tracer
    (bpf/socket_trace.c)."""

    name = "socket_tracer"
    protocols = protocol_tables()  # protocol -> its table, from the protocol registry

    def __init__(self, request: CollectorRequest, options: AgentOptions):
        unsupported = [p for p in request.protocols if p not in self.protocols]
        if unsupported:
            raise AgentError(
                f"the socket tracer does not parse {', '.join(unsupported)} yet "
                f"(it parses: {', '.join(self.protocols)}); replay a capture with --from"
            )
        from pxq.agent.socket_tracer import QUIET_BATCH_INTERVAL_MS, SocketTracer

        conn_stats = CONN_STATS in request.tables
        self.tables = tuple(self.protocols[p] for p in request.protocols) + ((CONN_STATS,) if conn_stats else ())
        body_limit = int(request.option("body_limit", options.body_limit))
        from pxq.agent.socket_tracer import options_from_manifest

        self.tracer = SocketTracer(
            pids=set(request.pids) if request.pids is not None else None,
            options=options_from_manifest(request),  # ignore_pids, ignore_comms, ignore_cgroups
            protocols=tuple(request.protocols),  # none for conn_stats alone: no connection is parsed
            body_limit=body_limit,
            conn_stats=conn_stats,
            conn_stats_interval_s=float(request.option("conn_stats_interval_s", DEFAULT_INTERVAL_S)),
            keep_secrets=options.keep_secrets,
        )
        self.tracer.quiet_batch_interval_ms = QUIET_BATCH_INTERVAL_MS  # fewer, larger batches when quiet
        self._last_drain = 0.0
        self._drops: dict[str, dict[str, int]] | None = None  # as of the last drain

    @staticmethod
    def program(request: CollectorRequest) -> str:
        """The program the tracer would load for ``request``, with its -D flags (``pxq explain --bpf``)."""
        from pxq.agent.socket_tracer import check_protocols, options_from_manifest, socket_tracer_program

        check_protocols(request.protocols)
        return socket_tracer_program(options_from_manifest(request))

    def start(self) -> None:
        self.tracer.start()

    def add_pids(self, pids: set[int]) -> None:
        """Trace these processes too (the running descendants of the pids asked for)."""
        self.tracer.add_pids(pids)

    def pids_seen(self) -> set[int]:
        """The processes whose TCP traffic the tracer saw."""
        return self.tracer.pids_seen()

    # What pids_seen() says a process made, for PidWatch's warning.
    seen_what = "TCP traffic"

    def poll(self, timeout_ms: int) -> int:
        return self.tracer.poll(timeout_ms)

    def close_window(self) -> None:
        self.tracer.close_window()

    def drain(self) -> dict[str, pa.Table]:
        now = time.monotonic()
        pending = self.tracer.pending()
        if self.tracer.running and now - self._last_drain < DRAIN_INTERVAL_S and pending < DRAIN_ROWS:
            return {}
        self._last_drain = now
        self._drops = None
        if self.tracer.running and not pending:
            return {}  # no empty tables built (a fraction of a ms each, every second of an idle agent)
        return self.tracer.drain_tables()

    def drops(self) -> dict[str, dict[str, int]]:
        if self._drops is None or not self.tracer.running:
            counters = self.tracer.drops()
            self._drops = {table: dict(counters) for table in self.tables}
        return self._drops

    def stop(self) -> None:
        self.tracer.stop()

    def use_identities(self, identities: ProcessIdentities) -> None:
        self.tracer.use_identities(identities)
