"""A recording TCP proxy: real traffic in, ``http_events`` rows out, no kernel involved.

This is **not** eBPF. Until pxq's socket tracer lands, it is how pxq turns live traffic into
``http_events``: clients talk to the proxy on a free loopback port, the proxy forwards every byte
to the server (nginx) and back unchanged, and feeds each direction, stamped with
``time.time_ns()`` as it arrives, to the same HTTP/1.x stitcher the socket tracer will use
(:class:`pxq.agent.protocols.http1.Http1Stitcher`).

Rows are written from the server's point of view, as the socket tracer would write them for nginx:

* ``trace_role`` = 2 (server);
* ``upid``: the nginx worker that served the connection. The proxy finds the socket nginx
  accepted (local = nginx's listen address, remote = the proxy's upstream-side address) in
  ``/proc/net/tcp`` and the worker that holds it among the master's children (``/proc/<pid>/fd``).
  The lookup starts as soon as the upstream connection is up and polls until nginx has accepted
  it. Should it fail (the connection ended first), the master's upid is used and
  ``errors["upid_fallback_to_master"]`` counts it;
* ``local_addr``/``local_port``: nginx's listen address;
* ``remote_addr``/``remote_port``: the client as the proxy sees it (the socket tracer would see
  the proxy's upstream-side port instead: the proxy stands in for the client's address);
* latency: from the request's first byte reaching the proxy to the response's last byte reaching
  it, so it includes nginx, the backend and one loopback hop each way.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import pyarrow as pa

from pxq.agent.procinfo import child_pids, make_upid as _make_upid, process_info, socket_owner, tcp_socket_inode
from pxq.agent.protocols.http1 import (
    DEFAULT_BODY_LIMIT,
    Http1Stitcher,
    HttpTransaction,
    http_events_schema,
    transactions_to_arrow,
)
from pxq.testing.ports import LOOPBACK

TRACE_ROLE_SERVER = 2
READ_SIZE = 64 * 1024
STOP_GRACE_SECONDS = 5.0
LOOKUP_ATTEMPTS = 500
LOOKUP_INTERVAL_SECONDS = 0.002


@dataclass
class ProxiedConnection:
    """One client connection through the proxy and what was recorded on it."""

    client: tuple[str, int]
    upstream_local: tuple[str, int] | None = None
    upid: str = ""
    transactions: list[HttpTransaction] = field(default_factory=list)
    # (direction, ts_ns, bytes) per chunk read, direction "req" or "resp"; kept only when the
    # proxy was asked to (record_raw=True), to make parser fixtures from real traffic.
    chunks: list[tuple[str, int, bytes]] = field(default_factory=list)
    closed: bool = False


class RecordingProxy:
    """Forward 127.0.0.1:<port> to ``upstream_port`` and record HTTP/1.x transactions.

    Use as a context manager (or ``start()``/``stop()``); it runs its own asyncio loop in a
    thread. ``server_pid`` is the pid of the server's master process (nginx) or of the server
    itself: the worker serving each connection is looked up among its children.
    """

    def __init__(
        self,
        upstream_port: int,
        server_pid: int,
        *,
        upstream_host: str = LOOPBACK,
        body_limit: int = DEFAULT_BODY_LIMIT,
        record_raw: bool = False,
        asid: int = 0,
    ) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.server_pid = server_pid
        self.body_limit = body_limit
        self.record_raw = record_raw
        self.asid = asid
        self.errors: Counter[str] = Counter()
        self.connections: list[ProxiedConnection] = []
        self.port = 0
        self._processes: dict[str, dict] = {}
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None
        self._tasks: set[asyncio.Task] = set()

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> RecordingProxy:
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._server = loop.run_until_complete(asyncio.start_server(self._handle, LOOPBACK, 0))
                self.port = self._server.sockets[0].getsockname()[1]
            except BaseException as exc:  # reported to start()'s caller
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name="pxq-recording-proxy", daemon=True)
        self._thread.start()
        ready.wait(10)
        if failure or not self.port:
            raise RuntimeError(f"the recording proxy did not start: {failure[0] if failure else 'timeout'}")
        return self

    def stop(self) -> None:
        """Stop listening, give open connections a moment to finish, then cut them."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or not thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(STOP_GRACE_SECONDS + 5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=STOP_GRACE_SECONDS)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    def __enter__(self) -> RecordingProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- results ----------------------------------------------------------------------------
    def http_events(self) -> pa.Table:
        """All transactions recorded so far, as ``http_events`` rows ordered by ``time_``."""
        with self._lock:
            tables = [
                transactions_to_arrow(
                    list(c.transactions),
                    upid=c.upid,
                    remote_addr=c.client[0],
                    remote_port=c.client[1],
                    local_addr=self.upstream[0],
                    local_port=self.upstream[1],
                    trace_role=TRACE_ROLE_SERVER,
                )
                for c in self.connections
                if c.transactions
            ]
        if not tables:
            return http_events_schema().empty_table()
        table = pa.concat_tables(tables)
        return table.sort_by("time_")

    def processes(self) -> dict[str, dict]:
        """upid -> process_info of every server process that rows name."""
        with self._lock:
            return dict(self._processes)

    # -- per connection ---------------------------------------------------------------------
    async def _handle(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        peer = cwriter.get_extra_info("peername")
        conn = ProxiedConnection(client=(peer[0], peer[1]))
        with self._lock:
            self.connections.append(conn)
        stitcher = Http1Stitcher(body_limit=self.body_limit)
        uwriter: asyncio.StreamWriter | None = None
        lookup: asyncio.Future | None = None
        try:
            try:
                ureader, uwriter = await asyncio.open_connection(*self.upstream)
            except OSError:
                self.errors["upstream_connect_failed"] += 1
                return
            local = uwriter.get_extra_info("sockname")
            conn.upstream_local = (local[0], local[1])

            lookup = asyncio.ensure_future(self._find_server_process(conn))
            pumps = [
                asyncio.ensure_future(self._pump(creader, uwriter, conn, "req", stitcher.feed_request)),
                asyncio.ensure_future(self._pump(ureader, cwriter, conn, "resp", stitcher.feed_response)),
            ]
            try:
                await asyncio.wait(pumps, return_when=asyncio.FIRST_EXCEPTION)
            finally:
                for pump in pumps:
                    pump.cancel()
                for outcome in await asyncio.gather(*pumps, return_exceptions=True):
                    if isinstance(outcome, OSError):  # reset by a peer
                        self.errors["connection_reset"] += 1
        finally:
            if lookup is not None and not lookup.done():
                lookup.cancel()
                await asyncio.gather(lookup, return_exceptions=True)
            if not conn.upid:
                self.errors["upid_fallback_to_master"] += 1
                self._set_upid(conn, self.server_pid)
            done = stitcher.close(time.time_ns())
            with self._lock:
                conn.transactions.extend(done)
                conn.closed = True
                for reason, n in stitcher.errors.items():
                    self.errors[f"http_{reason}"] += n
            for writer in (cwriter, uwriter):
                if writer is not None:
                    writer.close()
                    with contextlib.suppress(Exception):
                        await writer.wait_closed()
            self._tasks.discard(task)

    async def _pump(self, reader, writer, conn: ProxiedConnection, direction: str, feed) -> None:
        """Copy one direction until EOF, feeding each chunk to the stitcher first."""
        while True:
            data = await reader.read(READ_SIZE)
            if not data:
                break
            ts = time.time_ns()
            done = feed(data, ts)
            with self._lock:
                conn.transactions.extend(done)
                if self.record_raw:
                    conn.chunks.append((direction, ts, data))
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            with contextlib.suppress(OSError):
                writer.write_eof()

    async def _find_server_process(self, conn: ProxiedConnection) -> None:
        """Find the server process holding the accepted end of this connection.

        nginx accepts within a millisecond or so, and a short connection may be closed again
        soon after, so this polls from the moment the upstream connection is up."""
        assert conn.upstream_local is not None
        candidates = child_pids(self.server_pid) + [self.server_pid]
        for _ in range(LOOKUP_ATTEMPTS):
            inode = tcp_socket_inode(local=self.upstream, remote=conn.upstream_local)
            pid = socket_owner(inode, candidates) if inode is not None else None
            if pid is not None:
                self._set_upid(conn, pid)
                return
            await asyncio.sleep(LOOKUP_INTERVAL_SECONDS)

    def _set_upid(self, conn: ProxiedConnection, pid: int) -> None:
        info = process_info(pid)
        if info is None:
            self.errors["server_process_gone"] += 1
            conn.upid = _make_upid(pid, 0, self.asid)
            return
        conn.upid = _make_upid(pid, info["start_ticks"], self.asid)
        with self._lock:
            self._processes.setdefault(conn.upid, info)
