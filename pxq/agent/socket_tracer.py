"""The socket tracer collector: load ``bpf/socket_trace.c``, drain its ring buffer, and hand the
events to the connection tracker, which produces the protocol tables' rows (``http_events``,
``dns_events``, ...). TCP streams and UDP datagrams (each with its peer address) both come in.

::

    tracer = SocketTracer(pids={1234}, body_limit=1024)
    tracer.start()                      # compile, load, attach (BpfError with the reason if not)
    while capturing:
        n = tracer.poll(100)            # events handled in this poll (for a progress line)
    tracer.stop()                       # drain what is left, finish open connections, detach
    table = tracer.drain()              # pyarrow.Table with http_events' exact schema
    tracer.drops()                      # {"ringbuf_full": 0, "truncated": 0, ..., "unmatched": 0}

The ring buffer is read straight from its memory mapping (:class:`RingReader`), one C call per
batch (``ring_take`` in ``pxq/agent/_native.c``) that walks the records and has each taken there
and then: an event of an HTTP/1 connection in its steady state by the connection tracker's C path,
read in place (no Python object made for the event), any other event decoded into a SockEvent and
handed to the tracker's Python path, in ring buffer order (``fused_walk = False``: every record
decoded first, ``ring_read``, then handed over in a list). The layout comes from
:class:`EventHeader`, which the program is compiled against (``_Static_assert`` per field) and
which the C walk's layout is checked against at import, so the reader and
``bpf/socket_trace.h`` cannot silently disagree.

Kernel-side options (``-D`` flags, see ``bpf/socket_trace.c``): MAX_DATA bytes per event (16 KiB;
a call moving more is split into several events), COPY_LIMIT bytes copied per call (what the
parsers use: the 64 KiB head allowance plus the body limit, see :func:`copy_limit_for`; the rest
of the call is one filler event, bytes counted but not copied, which the parser skips inside a
body), MAX_STEPS events+iovecs walked per call (128; a walk that ends short of COPY_LIMIT is
counted as ``truncated``, its rest is a filler too), MAX_IOV iovec entries (64), MAX_MMSG messages
per sendmmsg/recvmmsg (8), RING_PAGES ring buffer size (2048 pages = 8 MiB). ``sendfile`` and
``splice`` to or from a traced TCP socket are fillers as a whole: their bytes never pass through
user memory.

Ignoring processes: pxq's own process is never traced (SELF_PID), nor the helpers it starts
(py-spy; :mod:`pxq.agent.own_processes`), nor what they fork. ``ignore_pids``, ``ignore_comms``
and ``ignore_cgroups`` (:class:`SocketTracerOptions`; ``px.set("socket_tracer.ignore_pids",
"12,34")``, ``"socket_tracer.ignore_comms"`` with process names as /proc/<pid>/comm shows them,
``"socket_tracer.ignore_cgroups"`` with cgroup v2 paths or ids, each comma-separated) leave out
more: those processes and their children (running at start, or forked later), the processes
running a program of such a name (at start, or from their exec on), and the tasks in such a
cgroup (that cgroup itself, not the ones below it). Nothing of theirs reaches the ring buffer:
with a pid filter an ignored pid is skipped at each call's entry by the filter's own lookup;
otherwise, and for cgroups, where a call turns out to be an inet socket's (most calls are not, and
each rule costs a lookup per call it is checked on).

x86-64 only: the program takes a call's data at the ``sock:sock_send_length``/``sock_recv_length``
tracepoints and reads which call it is, and its arguments, from the task's saved user registers
(x86-64 syscall numbers and register layout); opens, closes and a few calls that need their exit
use their own ``syscalls:`` tracepoints. No program runs on every syscall of the host (see
``bpf/socket_trace.c``).
"""

from __future__ import annotations

import contextlib
import ctypes as ct
import mmap
import os
import platform
import select
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import pyarrow as pa

from pxq.agent import own_processes
from pxq.agent.bpf_program import (
    BpfError,
    BpfProgram,
    build_program,
    counter_names,
    header_constants,
    layout_asserts,
    load_with_maps,
    possible_cpus,
)
from pxq.agent.conn_stats import DEFAULT_INTERVAL_S, ConnStats, listening_ports
from pxq.agent.conn_tracker import (
    Connection,
    ConnTracker,
    SockEvent,
    monotonic_to_epoch_offset,
    socket_endpoints,
)
from pxq.agent.native import EVENT_FIELDS, EVENT_SIZE, ring_read, ring_take
from pxq.agent.procinfo import ProcessIdentities
from pxq.agent.protocols.http1.rows import HttpRows
from pxq.agent.protocols.registry import DEFAULT_BODY_LIMIT, MAX_HEAD_BYTES, PROTOCOLS, SUPPORTED_PROTOCOLS

PROGRAM_FILE = "socket_trace.c"
HEADER_FILE = "socket_trace.h"
# The machines bpf/socket_trace.c is written for (syscall numbers, pt_regs and iovec layouts).
X86_64 = ("x86_64", "AMD64")
# allowed_pids values (PXQ_PID_* in bpf/socket_trace.c); bpf_update_elem's "only if absent" flag.
PID_TRACED, PID_IGNORED = 1, 2
BPF_NOEXIST = 1
# Bytes of a process name the kernel keeps (TASK_COMM_LEN 16, with its NUL).
COMM_LEN = 15
# poll() takes events at most this often (ms); see SocketTracer.poll.
BATCH_INTERVAL_MS = 50
# The agent's collector lets a quiet ring buffer gather for this long (ms) before taking its
# events: what fewer, larger batches save (waking up, a cold cache for each batch's parsing) is most
# of the agent's CPU at a thousand transactions a second. "Quiet": less than QUIET_RING_SHARE of the
# ring buffer is waiting; more is taken at the next BATCH_INTERVAL_MS, as without the extension.
# One 8th (1 MiB of the default 8 MiB): nginx at 5,000 req/s fills it in about 250 ms, so its
# events come in 4 batches a second, not 16 (one 32nd: 256 KiB), and the agent spent 0.157-0.173
# s of CPU per 10,000 transactions instead of 0.180-0.190 (one 4th: no better). The ring buffer
# still holds 7 MiB more, checked every BATCH_INTERVAL_MS.
QUIET_BATCH_INTERVAL_MS = 250
QUIET_RING_SHARE = 8
# While quiet, the ring buffer is looked at this often (ms) at most: each look is a wake-up (some
# 50 us of the agent's CPU, most of its cost per poll at a low rate). Looks come sooner when the
# ring buffer fills fast (see SocketTracer._wait_quietly); a surge starting just after a look at a
# nearly empty ring buffer has the 7 MiB above the quiet share to fill before the next one: 56
# MiB/s, about 110,000 HTTP events/s of nginx's small responses.
# An empty ring buffer (nothing since the last batch) is not looked at: the kernel wakes its
# reader at the first record (SocketTracer._wait_quietly).
QUIET_LOOK_INTERVAL_MS = 125
# Looks at a ring buffer filling fast are at least this far apart (s): a batch is due by then.
MIN_LOOK_S = 0.01
# Events handled per batch at most: an agent behind (a full ring buffer holds ~50,000 DNS events)
# takes its backlog in several batches, without waiting between them, so that the rows of each
# become Arrow (the collector drains between polls) before the next batch's events and rows are
# Python objects: that peak was most of the agent's RSS under overload.
MAX_BATCH_EVENTS = 8192


class EventHeader(ct.Structure):
    """``struct pxq_sock_event`` of ``bpf/socket_trace.h`` (checked at compile time)."""

    _fields_ = [
        ("ts_ns", ct.c_uint64),
        ("pos", ct.c_uint64),
        ("size", ct.c_uint64),
        ("pid", ct.c_uint32),
        ("fd", ct.c_int32),
        ("gen", ct.c_uint32),
        ("data_len", ct.c_uint32),
        ("kind", ct.c_uint16),
        ("flags", ct.c_uint16),
        ("direction", ct.c_uint8),
        ("role", ct.c_uint8),
        ("family", ct.c_uint16),
        ("lport", ct.c_uint16),
        ("rport", ct.c_uint16),
        ("syscall", ct.c_uint16),
        ("reserved", ct.c_uint16),
        ("laddr", ct.c_uint8 * 16),
        ("raddr", ct.c_uint8 * 16),
    ]


_STRUCT_CODES = {
    ct.c_uint8: "B", ct.c_uint16: "H", ct.c_uint32: "I", ct.c_uint64: "Q",
    ct.c_int8: "b", ct.c_int16: "h", ct.c_int32: "i", ct.c_int64: "q",
}  # fmt: skip


def struct_format(structure: type[ct.Structure]) -> str:
    """A ``struct`` module format for a ctypes Structure of integers and byte arrays, with the
    padding bytes made explicit (so it decodes the same bytes the C compiler laid out)."""
    fmt, at = "<", 0
    for name, ctype in structure._fields_:
        offset = getattr(structure, name).offset
        if offset > at:
            fmt += f"{offset - at}x"
        if issubclass(ctype, ct.Array):
            fmt += f"{ct.sizeof(ctype)}s"
        else:
            fmt += _STRUCT_CODES[ctype]
        at = offset + ct.sizeof(ctype)
    if ct.sizeof(structure) > at:
        fmt += f"{ct.sizeof(structure) - at}x"
    assert struct.calcsize(fmt) == ct.sizeof(structure), (fmt, ct.sizeof(structure))
    return fmt


_HEADER = struct.Struct(struct_format(EventHeader))
assert tuple(name for name, _ in EventHeader._fields_) == SockEvent._fields[:-1], "SockEvent follows the header"

_LAYOUT = tuple((n, getattr(EventHeader, n).offset, getattr(EventHeader, n).size) for n, _ in EventHeader._fields_)
assert _LAYOUT == EVENT_FIELDS, "the C ring walk (pxq/agent/_native.c) decodes the header EventHeader describes"


class RingReader:
    """A BPF ring buffer map read from user space through its memory mapping, as libbpf's
    ``ring_buffer__consume`` does it, but handing the records to Python in one call per batch
    instead of one ctypes callback per record.

    The layout is kernel ABI (``kernel/bpf/ringbuf.c``): at offset 0 one page holding the
    consumer position (written by the reader), then one page holding the producer position and,
    after it, the data area mapped twice in a row, so that a record that wraps around the end
    reads as one piece. Every record starts with an 8-byte header: its length (bit 31: still
    being written, bit 30: discarded) and a page offset; records are 8-byte aligned.

    The walk is C (``ring_read`` in pxq/agent/_native.c: one call per batch, one SockEvent built
    per record without Python's per-field work): it loads the positions and each record's length
    with acquire semantics and stores the consumer position with one release store, what the
    kernel expects. (Python's ``struct.pack_into`` would zero the word before writing it, and a
    producer seeing the consumer position at 0 for that instant finds the ring "full".)
    :meth:`pending` reads the positions through ``memoryview.cast("Q")``: one load each.
    """

    def __init__(self, map_fd: int, size: int) -> None:
        if size <= 0 or size & (size - 1):
            raise ValueError(f"a ring buffer's size is a power of two, not {size}")
        page = mmap.PAGESIZE
        self._mask = size - 1
        self._data_at = page  # where the data area starts in the producer mapping
        self._consumer = mmap.mmap(map_fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        try:
            self._producer = mmap.mmap(map_fd, page + 2 * size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)
        except Exception:
            self._consumer.close()
            raise
        self.size = size
        # Records a kernel never writes (shorter than the event header, running past the producer
        # position): consumed and counted here, never decoded (see ring_read in _native.c).
        self.malformed = 0
        self._consumer_pos = memoryview(self._consumer)[:8].cast("Q")
        self._producer_pos = memoryview(self._producer)[:8].cast("Q")
        self._poller = select.poll()
        self._poller.register(map_fd, select.POLLIN)

    def read(self, out: list, header: struct.Struct, limit: int = 1 << 62) -> int:
        """Append a SockEvent to ``out`` for each record committed now, ``limit`` at most;
        returns how many. ``header``: the event header's layout (the C walk's, checked at import)."""
        if header.size != EVENT_SIZE:
            raise ValueError(f"the ring walk decodes {EVENT_SIZE}-byte event headers, not {header.size}")
        taken, malformed = ring_read(self._producer, self._consumer, self._data_at, self.size, limit, out, SockEvent)
        self.malformed += malformed
        return taken

    def take(
        self,
        limit: int,
        conns: dict[tuple[int, int, int], Connection],
        rows: HttpRows | None,
        clock_offset_ns: int,
        handle: Callable[[SockEvent], None],
    ) -> tuple[int, int, int, int, int]:
        """Read the records committed now, ``limit`` at most, and have them taken there and then:
        a ConnTracker's HTTP/1 steady state in C from the ring buffer's own memory, every other
        event made a SockEvent and handed to ``handle`` (``ring_take`` in pxq/agent/_native.c; a
        :data:`~pxq.agent.conn_tracker.RecordWalk` for ConnTracker.handle_records). Returns
        (records, events taken in C, their bytes, transactions, latest timestamp taken in C)."""
        records, malformed, taken, nbytes, transactions, max_ts = ring_take(
            self._producer, self._consumer, self._data_at, self.size, limit, SockEvent, conns, rows,
            clock_offset_ns, handle,
        )  # fmt: skip
        self.malformed += malformed
        return records, taken, nbytes, transactions, max_ts

    def pending(self) -> int:
        """Bytes the kernel has written (or is writing) that were not read yet."""
        return int(self._producer_pos[0] - self._consumer_pos[0])

    def wait(self, timeout_ms: int) -> bool:
        """Sleep until the kernel says there are records (or ``timeout_ms`` passed)."""
        return bool(self._poller.poll(timeout_ms))

    def close(self) -> None:
        self._consumer_pos.release()
        self._producer_pos.release()
        self._consumer.close()
        self._producer.close()


def copy_limit_for(body_limit: int, max_data: int, max_steps: int) -> int:
    """Bytes the kernel copies of one call: a head (MAX_HEAD_BYTES, what the registry's parsers
    keep at most while looking for its end) and the first ``body_limit`` bytes of a body after
    it; never more than the copy walk can carry (``max_steps`` events of ``max_data`` bytes)."""
    return min(MAX_HEAD_BYTES + body_limit, max_data * max_steps)


_CONSTANTS = header_constants(HEADER_FILE)
DROP_REASONS = counter_names(_CONSTANTS, "PXQ_DROP_")  # kernel drop counter names, by index


@dataclass(frozen=True)
class SocketTracerOptions:
    """What the kernel program is compiled with (see the module docstring)."""

    pids: frozenset[int] | None = None  # None (or empty): every process
    max_data: int = 16384
    max_steps: int = 128
    copy_limit: int = 0  # bytes copied per call; 0: copy_limit_for(DEFAULT_BODY_LIMIT)
    max_iov: int = 64
    max_mmsg: int = 8
    ring_pages: int = 2048
    self_pid: int = field(default_factory=os.getpid)
    # Never traced (see "Ignoring processes" in the module docstring): these processes and what
    # they fork; processes running a program of one of these names (/proc/<pid>/comm); tasks in
    # one of these cgroups (cgroup v2 ids: the inode number of the cgroup's directory).
    ignore_pids: frozenset[int] = frozenset()
    ignore_comms: frozenset[str] = frozenset()
    ignore_cgroups: frozenset[int] = frozenset()
    # Only tasks in one of these cgroups (exactly, as ignore_cgroups) are traced: an agent
    # collecting one pod's or one container's traffic. Empty: every cgroup.
    trace_cgroups: frozenset[int] = frozenset()

    def defines(self) -> dict[str, int]:
        if self.max_data & (self.max_data - 1) or not 64 <= self.max_data <= 16384:
            raise ValueError(f"max_data must be a power of two in [64, 16384], not {self.max_data}")
        if self.ring_pages & (self.ring_pages - 1):
            raise ValueError(f"ring_pages must be a power of two, not {self.ring_pages}")
        for name in self.ignore_comms:
            if not 0 < len(name.encode()) <= COMM_LEN:
                raise ValueError(
                    f"a process name to ignore is 1 to {COMM_LEN} bytes (as in /proc/<pid>/comm): {name!r}"
                )
        copy_limit = self.copy_limit or copy_limit_for(DEFAULT_BODY_LIMIT, self.max_data, self.max_steps)
        if not 0 < copy_limit <= self.max_data * self.max_steps:
            raise ValueError(
                f"copy_limit must be in [1, max_data * max_steps = {self.max_data * self.max_steps}], not {copy_limit}"
            )
        return {
            "MAX_DATA": self.max_data,
            "MAX_STEPS": self.max_steps,
            "COPY_LIMIT": copy_limit,
            "MAX_IOV": self.max_iov,
            "MAX_MMSG": self.max_mmsg,
            "RING_PAGES": self.ring_pages,
            "NCPU": possible_cpus(),
            "SELF_PID": self.self_pid,
            "FILTER_PIDS": 1 if self.pids else 0,
            "IGNORE_PIDS": 1,  # always: pxq's own helper processes (pxq.agent.own_processes)
            "IGNORE_COMMS": 1 if self.ignore_comms else 0,
            "IGNORE_CGROUPS": 1 if self.ignore_cgroups else 0,
            "TRACE_CGROUPS": 1 if self.trace_cgroups else 0,
        }


def cgroup_v2_root() -> Path:
    """Where the cgroup v2 hierarchy is mounted (/sys/fs/cgroup, or /sys/fs/cgroup/unified on a
    hybrid system)."""
    for line in Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        if len(fields) > 2 and fields[2] == "cgroup2":
            return Path(fields[1].replace("\\040", " "))
    raise BpfError(
        "no cgroup v2 hierarchy is mounted: cgroups to ignore need one (mount -t cgroup2 none /sys/fs/cgroup)"
    )


def cgroup_id(spec: str | int, what: str = "to ignore") -> int:
    """A cgroup v2 id (what ``bpf_get_current_cgroup_id`` returns: the inode number of the cgroup's
    directory) from an id, a directory path, or a path relative to the cgroup v2 mount
    (``/system.slice/nginx.service`` as /proc/<pid>/cgroup's ``0::`` line shows it)."""
    if isinstance(spec, int) or spec.strip().isdigit():
        return int(spec)
    path = Path(spec.strip())
    root = cgroup_v2_root()
    if not path.is_relative_to(root):
        path = root / str(path).lstrip("/")
    try:
        if not path.is_dir():
            raise FileNotFoundError(path)
        return path.stat().st_ino
    except OSError:
        raise BpfError(f"cgroup {what} not found: {spec!r} (looked for the directory {path})") from None


def _option_list(request, key: str) -> list[str]:
    text = request.option(key) if hasattr(request, "option") else None
    return [item.strip() for item in str(text).split(",") if item.strip()] if text else []


def options_from_manifest(request) -> SocketTracerOptions:
    """Kernel options for a ``ProbeManifest`` collector request: its pid filter, and the
    ``socket_tracer.ignore_pids`` / ``ignore_comms`` / ``ignore_cgroups`` settings (``px.set``,
    comma-separated)."""
    pids = getattr(request, "pids", None)
    return SocketTracerOptions(
        pids=frozenset(pids) if pids else None,
        ignore_pids=frozenset(int(p) for p in _option_list(request, "ignore_pids")),
        ignore_comms=frozenset(_option_list(request, "ignore_comms")),
        ignore_cgroups=frozenset(cgroup_id(c) for c in _option_list(request, "ignore_cgroups")),
        trace_cgroups=frozenset(cgroup_id(c, "to trace") for c in _option_list(request, "traced_cgroups")),
    )


def processes_named(names: Iterable[str]) -> set[int]:
    """The running processes whose name (/proc/<pid>/comm) is one of ``names``."""
    wanted, found = set(names), set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().rstrip("\n") in wanted:
                    found.add(int(entry.name))
    return found


def build_socket_tracer(options: SocketTracerOptions) -> BpfProgram:
    if options.pids:
        notes = [f"allowed_pids map, written at start: {', '.join(map(str, sorted(options.pids)))}"]
    else:
        notes = ["every process is traced (no pid filter); pxq itself never is (SELF_PID)"]
    notes.append(
        "ignored_pids map: pxq's helper processes"
        + "".join(f", {p}" for p in sorted(options.ignore_pids))
        + (f", processes named {', '.join(sorted(options.ignore_comms))}" if options.ignore_comms else "")
        + " and what they fork"
    )
    if options.ignore_cgroups:
        notes.append(f"ignored_cgroups map: {', '.join(map(str, sorted(options.ignore_cgroups)))}")
    if options.trace_cgroups:
        notes.append(
            f"traced_cgroups map (only these are traced): {', '.join(map(str, sorted(options.trace_cgroups)))}"
        )
    return build_program(PROGRAM_FILE, options.defines(), layout_asserts("pxq_sock_event", EventHeader), tuple(notes))


def socket_tracer_program(
    manifest_options: SocketTracerOptions | object | None = None,
    *,
    pids: Iterable[int] | None = None,
    protocols: Iterable[str] = SUPPORTED_PROTOCOLS,
) -> str:
    """The BPF program the socket tracer would load, with its ``-D`` flags (``pxq explain --bpf``).

    ``manifest_options``: :class:`SocketTracerOptions`, a ``ProbeManifest`` collector request
    (anything with ``pids``), or None; or give ``pids`` (and ``protocols``) directly, as
    :class:`SocketTracer` takes them.
    """
    check_protocols(protocols)
    if isinstance(manifest_options, SocketTracerOptions):
        options = manifest_options
    elif manifest_options is not None:
        options = options_from_manifest(manifest_options)
    else:
        options = SocketTracerOptions(pids=frozenset(pids) if pids else None)
    return build_socket_tracer(options).explain()


def check_protocols(protocols: Iterable[str]) -> tuple[str, ...]:
    """``protocols`` as a tuple; :class:`BpfError` for one the socket tracer cannot parse."""
    protocols = tuple(protocols)
    unknown = [p for p in protocols if p not in SUPPORTED_PROTOCOLS]
    if unknown:
        raise BpfError(f"the socket tracer parses {', '.join(SUPPORTED_PROTOCOLS)} only, not {', '.join(unknown)}")
    return protocols


class SocketTracer:
    """HTTP/1.x transactions of the traced processes, from socket syscalls (see module doc)."""

    def __init__(
        self,
        pids: Iterable[int] | None = None,
        protocols: Iterable[str] = SUPPORTED_PROTOCOLS,
        body_limit: int = DEFAULT_BODY_LIMIT,
        *,
        options: SocketTracerOptions | None = None,
        conn_stats: bool = False,
        conn_stats_interval_s: float = DEFAULT_INTERVAL_S,
        keep_secrets: bool = False,
    ) -> None:
        """``conn_stats``: also keep the ``conn_stats`` table (reported every
        ``conn_stats_interval_s``). ``keep_secrets``: keep credentials in the rows (see
        :class:`pxq.agent.protocols.interface.ParseOptions`); only by the user's explicit choice."""
        self.protocols = check_protocols(protocols)
        pid_set = frozenset(pids) if pids else None
        self.options = replace(options or SocketTracerOptions(), pids=pid_set)
        if not self.options.copy_limit:  # copy what the parser keeps of a message, no more
            limit = copy_limit_for(body_limit, self.options.max_data, self.options.max_steps)
            self.options = replace(self.options, copy_limit=limit)
        self.program = build_socket_tracer(self.options)
        self._bpf = None
        self._ring: RingReader | None = None
        # Records taken by the tracker as the walk reads them (RingReader.take): no SockEvent made
        # for an HTTP/1 connection's steady state. False: every record read into a SockEvent first,
        # then handed over in a list (ring_read + handle_batch; tests reading the events set it).
        self.fused_walk = True
        self._conn_stats = (
            ConnStats(
                self._kernel_counts,
                int(conn_stats_interval_s * 1e9),
                endpoints=socket_endpoints,
                listening=listening_ports,
            )  # fmt: skip
            if conn_stats
            else None
        )
        self._tracker = ConnTracker(
            protocols=[PROTOCOLS[p] for p in self.protocols],
            body_limit=body_limit,
            keep_secrets=keep_secrets,
            disable=self._disable,
            forget=self._forget,
            conn_stats=self._conn_stats,
        )
        self._tables: dict[str, object] = {}
        self._kernel_drops = dict.fromkeys(DROP_REASONS, 0)
        self.batch_interval_ms = BATCH_INTERVAL_MS
        # 0: every poll takes what is there (at most every batch_interval_ms); else see poll().
        self.quiet_batch_interval_ms = 0
        self._backlog = False  # the last read stopped at MAX_BATCH_EVENTS: more is waiting
        self._fill_rate = 0.0  # bytes/s the ring buffer filled at while the last batch was awaited
        self._last_poll = 0.0
        self._unsubscribe: Callable[[], None] = lambda: None  # from own_processes, while running
        self.polls = 0
        self.last_poll_events = 0

    # -- life cycle -------------------------------------------------------------------------
    def start(self) -> SocketTracer:
        """Compile, load and attach; raises :class:`BpfError` saying why when that fails."""
        if self._bpf is not None:
            return self
        if platform.machine() not in X86_64:
            raise BpfError(
                f"the socket tracer reads syscall numbers and registers as x86-64 lays them out "
                f"(bpf/socket_trace.c); this machine is {platform.machine()}"
            )
        bpf, tables = load_with_maps(self.program, ("events", "drops", "allowed_pids", "disabled", "conns"),
                                     self.options.pids)  # fmt: skip
        self._bpf = bpf
        self._tables.update(tables)
        try:
            self._tracker.clock_offset_ns = monotonic_to_epoch_offset()
            if self._conn_stats is not None:
                self._conn_stats.clock_offset_ns = self._tracker.clock_offset_ns
                self._conn_stats.last_report_ns = time.monotonic_ns()
            ring = self._tables["events"]
            self._ring = RingReader(ring.map_fd, ring.max_entries)
            self._ignore(bpf)
            # Every probe is attached now: start tracing (see `ready` in bpf/socket_trace.c).
            bpf[b"ready"][ct.c_int(0)] = ct.c_uint32(1)
        except Exception:
            self._close_ring()
            bpf.cleanup()
            self._bpf = None
            self._tables.clear()
            raise
        return self

    def _ignore(self, bpf) -> None:
        """Fill the ignore maps: the processes running now (the kernel adds what they fork, and
        what execs an ignored name, from here on), the names and the cgroups; and follow pxq's
        own helpers started from now on."""
        from pxq.agent.loop import running_descendants  # loop imports the collectors: not at module level

        opts = self.options
        pids = (
            set(opts.ignore_pids)
            | own_processes.pids()
            | (processes_named(opts.ignore_comms) if opts.ignore_comms else set())
        )
        # With a pid filter an ignored pid is PXQ_PID_IGNORED in allowed_pids (see bpf/socket_trace.c).
        ignored = bpf[b"allowed_pids"] if opts.pids else bpf[b"ignored_pids"]

        def ignore(pids: Iterable[int]) -> None:
            for pid in pids:
                ignored[ct.c_uint32(pid)] = ct.c_uint8(PID_IGNORED)

        ignore(pids | running_descendants(pids))
        if opts.ignore_comms:
            comms = bpf[b"ignored_comms"]
            for name in opts.ignore_comms:
                key = comms.Key()
                key.comm = name.encode()
                comms[key] = ct.c_uint8(1)
        if opts.ignore_cgroups:
            cgroups = bpf[b"ignored_cgroups"]
            for cgroup in opts.ignore_cgroups:
                cgroups[ct.c_uint64(cgroup)] = ct.c_uint8(1)
        if opts.trace_cgroups:
            traced = bpf[b"traced_cgroups"]
            for cgroup in opts.trace_cgroups:
                traced[ct.c_uint64(cgroup)] = ct.c_uint8(1)
        self._unsubscribe = own_processes.subscribe(lambda pid: ignore([pid]))

    def add_pids(self, pids: Iterable[int]) -> None:
        """Trace these processes too (only when the tracer was started with a pid set)."""
        if not self.options.pids:
            return  # every process is traced already
        allowed = self._tables.get("allowed_pids")
        if allowed is None:
            return
        from bcc.libbcc import lib  # bcc is importable once the program is loaded

        traced = ct.c_uint8(PID_TRACED)
        for pid in pids:
            key = ct.c_uint32(pid)
            # Only where absent: an ignored pid (PID_IGNORED, maybe set by the kernel) stays ignored.
            lib.bpf_update_elem(allowed.map_fd, ct.byref(key), ct.byref(traced), BPF_NOEXIST)

    def pids_seen(self) -> set[int]:
        """The processes whose TCP connections the tracer saw (any protocol)."""
        return set(self._tracker.pids_seen)

    def close_window(self) -> None:
        """Trace no new calls from now on (the ``ready`` gate closes); calls already in flight
        still report, and what the ring buffer holds is still taken by :meth:`poll` and
        :meth:`stop`. An agent behind under load then finishes the window's events without
        taking more from after it."""
        if self._bpf is not None:
            self._bpf[b"ready"][ct.c_int(0)] = ct.c_uint32(0)

    def stop(self) -> None:
        """Take the events still in the ring buffer, finish every open connection, detach."""
        if self._bpf is None:
            return
        try:
            self.close_window()
            self._end_batch(self._take())
            while self._backlog:
                self._end_batch(self._take())
            self.kernel_drops()
            # The window's last conn_stats report, while the kernel still holds the totals.
            self._tracker.report_conn_stats(time.monotonic_ns())
            self._tracker.close_all()
        finally:
            self._unsubscribe()
            self._close_ring()
            self._bpf.cleanup()
            self._bpf = None
            self._tables.clear()

    def _close_ring(self) -> None:
        if self._ring is not None:
            self._ring.close()
            self._ring = None

    def __enter__(self) -> SocketTracer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._bpf is not None

    # -- collecting -------------------------------------------------------------------------
    def poll(self, timeout_ms: int = 100) -> int:
        """Wait up to ``timeout_ms`` for events and handle those there (MAX_BATCH_EVENTS at most:
        a backlog's next batch is taken at the next poll, without waiting); returns how many.

        Events are taken in batches at most every ``batch_interval_ms`` (50 ms): waking up for
        every few events costs more than the events themselves, and the ring buffer holds
        far more than that interval's worth.

        With ``quiet_batch_interval_ms`` set (the agent's collector does), a batch waits that long
        while the ring buffer stays quiet (see QUIET_RING_SHARE), looked at every
        QUIET_LOOK_INTERVAL_MS; a poll whose ``timeout_ms`` ends before then takes nothing and
        returns 0 (``poll(0)`` always takes what is there). See :meth:`_wait_quietly` for when it
        wakes up.
        """
        if self._bpf is None:
            raise RuntimeError("SocketTracer.poll() before start()")
        now = time.monotonic()
        until = now + timeout_ms / 1000
        ring = self._ring
        if self.quiet_batch_interval_ms and timeout_ms > 0 and ring is not None and not self._backlog:
            now = self._wait_quietly(ring, now, until)
            if now < 0:
                return 0
        else:
            wait = min(self._last_poll + self.batch_interval_ms / 1000 - now, timeout_ms / 1000)
            if wait > 0 and not self._backlog:
                time.sleep(wait)
                now = time.monotonic()
        self._last_poll = time.monotonic()
        taken = self._take()
        if not taken:
            left = int((until - now) * 1000)
            if left >= 1 and ring is not None and ring.wait(left):
                self._last_poll = time.monotonic()
                taken = self._take()
        handled = self._end_batch(taken)
        if self._conn_stats is not None:
            now = time.monotonic_ns()
            if self._conn_stats.due(now):
                self._tracker.report_conn_stats(now)
        return handled

    def _wait_quietly(self, ring: RingReader, now: float, until: float) -> float:
        """Sleep until a batch is due: the ring buffer holds its quiet share at a look, or the
        quiet interval since the last batch has passed. Returns the time then, or -1 when
        ``until`` came first.

        Each wake-up costs the agent some 50-100 us of CPU (most of its cost per poll at a low
        rate), so it wakes only when something may be due. The first look comes the batch interval
        after the last batch; each later one when the ring buffer should hold its quiet share at
        the rate it has filled since the last batch, at most QUIET_LOOK_INTERVAL_MS later (the
        surge guarantee above), and at the quiet interval's end. (Looking a fixed
        QUIET_LOOK_INTERVAL_MS after a quiet batch let the 8 MiB fill between two looks at 96,000
        events/s, both ends of nginx traced, while the agent used 0.3 of a CPU: drops began there
        instead of at 128,000 events/s.) While nothing at all has come since the last batch, it
        sleeps on the ring buffer itself until ``until``: the kernel wakes a reader when a record
        lands in an empty ring buffer, and that record's batch is then due a quiet interval later
        at the latest, looked at as usual meanwhile."""
        last = self._last_poll
        quiet_until = last + max(self.quiet_batch_interval_ms, self.batch_interval_ms) / 1000
        quiet_bytes = ring.size // QUIET_RING_SHARE
        look_s = QUIET_LOOK_INTERVAL_MS / 1000
        # The first look: when the quiet share should be there at the rate of the last wait, the
        # batch interval at the latest (a fast-filling ring buffer is taken in smaller batches,
        # before a scheduling delay of the agent can let it run full).
        first = self.batch_interval_ms / 1000
        if self._fill_rate > 0:
            first = min(first, max(MIN_LOOK_S, quiet_bytes / self._fill_rate))
        look = last + first
        idle = self.last_poll_events == 0
        while True:
            if now >= look:
                pending = ring.pending()
                if pending >= quiet_bytes:
                    self._fill_rate = pending / max(now - last, MIN_LOOK_S)
                    return now
                to_share = (quiet_bytes - pending) * (now - last) / pending if pending else look_s
                look = now + min(look_s, max(MIN_LOOK_S, to_share))
            if now >= quiet_until:
                self._fill_rate = ring.pending() / max(now - last, MIN_LOOK_S)
                return now
            if now >= until:
                return -1.0
            if idle and not ring.pending():
                woken = ring.wait(max(1, int((until - now) * 1000)))  # by the first record, or at until
                now = time.monotonic()
                if woken:  # that record's batch is due a quiet interval after it came, at the latest
                    idle = False
                    quiet_until = max(quiet_until, now + self.quiet_batch_interval_ms / 1000)
                    look = now + self.batch_interval_ms / 1000
                continue
            time.sleep(min(look, quiet_until, until) - now)
            now = time.monotonic()

    def _take(self) -> int:
        """Take and handle what the ring buffer holds now (MAX_BATCH_EVENTS records at most);
        returns how many records."""
        ring = self._ring
        if ring is None:
            return 0
        if self.fused_walk:
            taken = self._tracker.handle_records(partial(ring.take, MAX_BATCH_EVENTS))
        else:
            batch: list[SockEvent] = []
            taken = ring.read(batch, _HEADER, MAX_BATCH_EVENTS)
            self._tracker.handle_batch(batch)
        self._backlog = taken >= MAX_BATCH_EVENTS
        return taken

    def _end_batch(self, taken: int) -> int:
        """One batch of ``taken`` records is done (ConnTracker.end_batch)."""
        self._tracker.end_batch()
        self.polls += 1
        self.last_poll_events = taken
        return taken

    def drain(self) -> pa.Table:
        """``http_events`` rows completed since the last drain (the catalog's exact schema): the
        table of the first protocol traced (``http`` unless ``protocols`` said otherwise); the
        other protocols' rows stay for :meth:`drain_tables`."""
        return self._tracker.rows[self.protocols[0]].table()

    def drain_tables(self) -> dict[str, pa.Table]:
        """Each traced protocol's rows completed since the last drain, by table name."""
        return self._tracker.take_tables()

    def use_identities(self, identities: ProcessIdentities) -> None:
        """Decide process identities (upids) in ``identities``, shared with other collectors."""
        self._tracker.identities = identities

    def processes(self) -> dict[str, dict]:
        """upid -> identity (comm, cmdline, ...) of every process seen, decided at first sight."""
        return self._tracker.identities.by_upid

    def pending(self) -> int:
        """Transactions completed and not drained yet."""
        return self._tracker.pending()

    def kernel_drops(self) -> dict[str, int]:
        """The kernel's drop counters (cumulative), by reason."""
        table = self._tables.get("drops")
        if table is not None:  # after stop(), the last counts read
            self._kernel_drops = {name: int(table[ct.c_int(i)].value) for i, name in enumerate(DROP_REASONS)}
        return dict(self._kernel_drops)

    def drops(self) -> dict[str, int]:
        """Everything lost so far, by reason: the kernel's counters (ringbuf_full, truncated,
        iov_too_long, read_failed, conn_table_full) and user space's (data_gap, buffer_overflow,
        late_event, conn_evicted, parse_error, unmatched, out_of_step_after_loss,
        unconfirmed_after_loss)."""
        out = self.kernel_drops()
        out.update(self._tracker.drop_counts())
        return out

    def stats(self) -> dict[str, int]:
        """events, bytes (copied), filler_bytes (counted, not copied), transactions, connections
        (seen), open_connections, polls, last_poll_events, http_connections, other_connections."""
        counts = self._tracker.counts
        return {
            "events": counts["events"],
            "bytes": counts["bytes"],
            "filler_bytes": counts["filler_bytes"],
            "transactions": counts["transactions"],
            "connections": counts["connections"],
            "open_connections": len(self._tracker.conns),
            "http_connections": counts["http_connections"],
            "other_connections": counts["other_connections"],
            "polls": self.polls,
            "last_poll_events": self.last_poll_events,
        }

    def open_connections(self, pid: int | None = None) -> int:
        """Connections being tracked now (of one process, or all)."""
        return sum(1 for conn in self._tracker.conns.values() if pid is None or conn.pid == pid)

    def http_errors(self) -> dict[str, int]:
        """The HTTP parser's detailed error counts (reason -> count)."""
        return dict(self._tracker.error_counts("http"))

    # -- kernel maps ------------------------------------------------------------------------
    @staticmethod
    def _key(pid: int, fd: int) -> ct.c_uint64:
        return ct.c_uint64((pid << 32) | (fd & 0xFFFFFFFF))

    def _disable(self, pid: int, fd: int, gen: int) -> None:
        table = self._tables.get("disabled")
        if table is not None:
            # bcc raises a plain Exception when the map is full: the bytes keep coming, and are ignored
            with contextlib.suppress(Exception):
                table[self._key(pid, fd)] = ct.c_uint32(gen)

    def _kernel_counts(self, pid: int, fd: int, gen: int) -> tuple[int, int] | None:
        """(bytes sent, bytes received) of a connection so far, as the kernel counted them."""
        conns = self._tables.get("conns")
        if conns is None:
            return None
        try:
            entry = conns[self._key(pid, fd)]
        except KeyError:
            return None
        if entry.gen != gen:
            return None  # the fd holds a newer connection
        return int(entry.pos_egress), int(entry.pos_ingress)

    def _forget(self, pid: int, fd: int, gen: int) -> None:
        conns = self._tables.get("conns")
        if conns is None:
            return
        key = self._key(pid, fd)
        try:
            if conns[key].gen != gen:
                return  # the fd holds a newer connection already
            del conns[key]
        except KeyError:
            return
        with contextlib.suppress(KeyError):
            del self._tables["disabled"][key]
