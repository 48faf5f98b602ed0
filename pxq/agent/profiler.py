"""The CPU profiler collector: ``stack_traces.beta`` rows from ``bpf/profile.c`` (perf-event
sampling, one record per sample), unwound and symbolized in user space (:mod:`pxq.agent.unwind`,
:mod:`pxq.agent.symbols`), with the Python frames of CPython processes walked in BPF and merged in
(:mod:`pxq.agent.python`); py-spy (:mod:`pxq.agent.pyspy`) only for a Python the walker cannot read.

::

    profiler = Profiler(ProfilerOptions(sample_hz=99, pids=frozenset({1234})))
    profiler.start()                    # compile, load, attach (BpfError with the reason if not)
    while capturing:
        profiler.poll(100)              # takes samples, snapshots new processes; unwinds every 1 s
    profiler.stop()                     # last read, py-spy's last segments (fallback), detach
    table = profiler.drain()            # pyarrow.Table with stack_traces.beta's exact schema
    profiler.drops()                    # lost: {"samples_lost": 0, "notify_lost": 0, ...}
    profiler.incomplete()               # kept: {"truncated_user_stack": 12, "unwind_copy_short": 3, ...}

Kernel side: a software CPU_CLOCK perf event on every CPU at ``sample_hz`` (there is no hardware
PMU here); each sample is one ring-buffer record (``struct pxq_profile_sample``): its time,
process, thread and comm, the kernel stack, the user registers (ip, sp, bp) and a copy of up to
``stack_copy_bytes`` of the user stack from sp: perf's ``--call-graph dwarf`` approach, chosen over
unwind tables in BPF maps (the OpenTelemetry profiler's) because bcc here cannot read kernel structs
and the copy is cheap (see :mod:`pxq.agent.unwind` and bench/bench_profiler_accuracy.py). The idle
task and pxq itself are never sampled; with a pid filter only those processes are. The first
sample of a process (and its exec) is also announced through a small ring buffer, so
:meth:`Profiler.poll` snapshots its memory map and opens its files within one poll: symbols and
unwind tables then resolve even if it exits before the next read.

Reading (every ``drain_interval_s``, and at stop): each sample is unwound with its binaries'
``.eh_frame`` (frame pointers only where a file has no CFI), symbolized and folded. One row per
sample, with the sample's own time (``time_``), count 1: time filters and per-time-bin flamegraphs
see when each sample was taken. That costs little at profiling rates: ~35 us per row to build the
table, and the store keeps repeated stack texts dictionary-encoded. Sample records are sent without
a ring-buffer wakeup and taken at each poll: a wakeup per sample ran the agent right after each
sample, and the sampled task then got more samples than its CPU time said.

Python frames (``python`` not ``off``): at a process's first sample (or when asked for by pid,
before sampling starts) a CPython process (``python*`` executable or libpython mapped) is attached
by :class:`pxq.agent.python.resolver.PythonStacks`: if its version is known (3.8-3.13) and
``_PyRuntime`` is found (``.symtab`` or ``.dynsym``), its offsets go into ``python_offsets`` and
its threads' ``PyThreadState`` into ``python_threads``, and bpf/profile.c walks the sampled
thread's frames into the record's extra section (``struct python_frames``: code object,
instruction, entry flag, stamp per frame; no strings). New threads: a sample whose thread is not
in the map counts ``python_thread_miss``, carries no Python frame (``python_thread_unknown``,
marked) and, once until the agent looks, sends a ``PXQ_PROF_NEW_THREAD`` notice; the agent
re-reads the thread list at that poll (within ~100 ms); a thread with no thread state at all (a C
library's own thread) makes it look again at most once per poll, a few preads each time. A Python
met before its dynamic loader mapped libpython (at its exec: ``python_starting``) is not decided yet
(mode ``starting``, samples ``python_not_ready``): it is attached again at each poll, and its memory
map snapshotted again once it runs (likewise a static interpreter registered before it had a
thread). Each poll
names the new records' code objects while the process surely lives (an LRU per process, checked by
the stamp), so a process that exits before the read keeps its names. At the read the frames go
where ``_PyEval_EvalFrameDefault`` stands in the unwound native stack
(:func:`pxq.agent.python.merge.merge_stacks`): one row per sample with kernel, native and Python
frames, ``function (file:line)``. A partial Python part (walk truncated or unreadable, frames and
eval calls that do not pair, a code object that cannot be named) is kept, marked ``truncated`` and
counted by reason.

A Python the walker cannot read (``python_version_unknown``, ``python_not_found``: e.g. a static
interpreter stripped of ``.dynsym`` as well as ``.symtab``, where nothing locates ``_PyRuntime``;
``python_map_full``: MAX_PYTHON_PIDS Pythons registered already;
counted per process by :meth:`Profiler.python_fallbacks`, named with what attaching said in
:meth:`Profiler.warnings`, one line per reason, which ``pxq run`` prints): py-spy samples it when installed
(processes asked for by pid at once; on a whole-host run once it is busy, see below), and from
then on its eBPF samples are not kept (``python_samples_via_pyspy``): one sampler per process,
never both. Without py-spy (or when py-spy failed to attach to it three times in a row: it cannot
read it either) its eBPF samples are kept with native frames only, marked and counted
``python_unsupported``. A fully stripped interpreter still gets native frames only where its
``.eh_frame`` (never stripped) unwinds, named ``module+0xoffset``.

Rows: ``stack_trace`` is folded root first: user frames, then kernel frames (``name_[k]``). A
sample whose user registers could not be read shows ``[lost user stack]``, a failed kernel stack
``[lost kernel stack]_[k]`` (the sample still counts). ``stack_trace_id`` is a stable 64-bit hash
of the folded text. ``sampler`` is ``ebpf`` or ``py-spy``; ``truncated`` marks user stacks that
do not reach the outermost frame (the CFI's undefined return address at ``_start``/``clone3``, or
a known process or thread entry, see :func:`pxq.agent.symbols.stack_is_truncated`).

Counters, cumulative. Losses (:meth:`Profiler.drops`): ``samples_lost`` (the samples ring buffer
was full), ``notify_lost`` (a new-process record), plus py-spy's (``pyspy_missing``,
``pyspy_attach_failed``, ``pyspy_sample_errors``, ``pyspy_killed``). Samples kept with an
incomplete stack (:meth:`Profiler.incomplete`; ``INCOMPLETE_REASONS`` of the table store):
``truncated_user_stack`` (every sample whose user stack is cut short; renderers put a
``[truncated]`` frame at its root; :meth:`Profiler.truncated_by_process` has them per upid), and
why: ``unwind_copy_short`` (the stack is deeper than the copy), ``unwind_no_cfi``,
``unwind_bad_cfa``, ``unwind_cfa_expression``, ``unwind_unmapped``, ``unwind_max_depth`` (see
:mod:`pxq.agent.unwind.unwinder`), ``unwind_frame_pointers`` (reached the outermost frame, but
through code without CFI by frame pointers, which may skip frames), ``unwind_process_gone`` (exited before it could be
snapshotted), ``user_regs_lost`` (a sample in the kernel whose user registers could not be
read), ``user_copy_failed`` (not one byte of stack readable at sp); and ``kernel_stack_lost``;
the Python ones: ``python_truncated``, ``python_read_failed``, ``python_thread_miss`` (kernel) and
``python_thread_unknown``, ``python_frames_unplaced``, ``eval_frames_unmatched``,
``python_code_unknown``, ``python_not_ready`` (sampled before its maps were filled),
``python_unsupported``. Lost: ``python_samples_via_pyspy`` (left to py-spy, see above).

Options (``px.set('perf_profiler.KEY', value)`` or ``#px:set perf_profiler.KEY=value``):
``sample_hz`` (99), ``python`` (``auto``: Python frames from the BPF walker, py-spy for the
Pythons it cannot read when py-spy is installed; ``on``: the same, but fail when py-spy is
missing; ``off``: no Python frames), ``drain_interval_s`` (1.0),
``pyspy_segment_s`` (10), ``pyspy_min_cpu`` (0.05), ``stack_copy_bytes`` (16384, a power of two
from 4096 to 65536: the user stack copied per sample).

py-spy costs about 2 % of a CPU per sampled process at 99 Hz, idle or not. Fallback processes
asked for by pid get it from the start; on a whole-host run only those that used at least
``pyspy_min_cpu`` of a CPU in one read (5 %) get it, from that read on (their eBPF samples before
that are kept, marked ``python_unsupported``).
"""

from __future__ import annotations

import contextlib
import ctypes as ct
import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pyarrow as pa

from pxq.agent.bpf_program import (
    BpfError,
    BpfProgram,
    build_program,
    counter_names,
    header_constants,
    layout_asserts,
    load,
    possible_cpus,
)
from pxq.agent.procinfo import ProcessIdentities, make_upid
from pxq.agent.pyspy import DEFAULT_SEGMENT_S, SAMPLER as PYSPY_SAMPLER, PySpySampler
from pxq.agent.python.bpf_records import PY_MAX_FRAMES, PythonOffsets, python_frames_struct
from pxq.agent.python.code import PyFrame
from pxq.agent.python.merge import NativeFrame
from pxq.agent.python.process import TRANSIENT_REASONS
from pxq.agent.python.resolver import PythonStacks
from pxq.agent.symbols import KERNEL_SUFFIX, Symbolizer
from pxq.agent.table_store import INCOMPLETE_REASONS
from pxq.agent.unwind.unwinder import OUTERMOST, STOP_REASONS, Registers
from pxq.tables import CATALOG

PROGRAM_FILE = "profile.c"
HEADER_FILE = "profile.h"
TABLE = "stack_traces.beta"
EBPF_SAMPLER = "ebpf"
LOST_USER = "[lost user stack]"
LOST_KERNEL = "[lost kernel stack]" + KERNEL_SUFFIX
NO_STACK = "[unknown]"
PYTHON_MODES = ("auto", "on", "off")
MAX_NAMED_FALLBACKS = 5  # processes named per warnings() line


_CONSTANTS = header_constants(HEADER_FILE)
KERNEL_DEPTH = _CONSTANTS["PXQ_PROF_KERNEL_DEPTH"]


class Sample(ct.Structure):
    """``struct pxq_profile_sample`` of ``bpf/profile.h`` (checked at compile time): the header of
    a sample record; the extra section and the user stack copy follow it."""

    _fields_ = [
        ("time_boot_ns", ct.c_uint64),
        ("tgid", ct.c_uint32),
        ("tid", ct.c_uint32),
        ("cpu", ct.c_uint32),
        ("flags", ct.c_uint32),
        ("user_ip", ct.c_uint64),
        ("user_sp", ct.c_uint64),
        ("user_bp", ct.c_uint64),
        ("kernel_stack_bytes", ct.c_int32),
        ("user_stack_bytes", ct.c_uint32),
        ("user_stack_offset", ct.c_uint32),
        ("extra_bytes", ct.c_uint32),
        ("comm", ct.c_char * 16),
        ("kernel_stack", ct.c_uint64 * KERNEL_DEPTH),
    ]


class NewPid(ct.Structure):
    """``struct pxq_profile_new_pid`` of ``bpf/profile.h`` (checked at compile time)."""

    _fields_ = [
        ("tgid", ct.c_uint32),
        ("reason", ct.c_uint32),
        ("start_boot_ns", ct.c_uint64),
        ("comm", ct.c_char * 16),
    ]


STAT_NAMES = counter_names(_CONSTANTS, "PXQ_PROF_STAT_")
NEW_EXEC = _CONSTANTS["PXQ_PROF_NEW_EXEC"]
NEW_THREAD = _CONSTANTS["PXQ_PROF_NEW_THREAD"]
PYTHON_RECORD_BYTES = ct.sizeof(python_frames_struct(PY_MAX_FRAMES))
# How a Python process is sampled (Profiler.python_modes): the BPF walker's frames merged into the
# eBPF samples; py-spy alone (a Python the walker cannot read, py-spy installed: its eBPF samples
# are not kept); or native frames only (neither), marked python_unsupported. "starting": met before
# its libpython was mapped, not decided yet (attached again at each poll).
PYTHON_WALKER, PYTHON_PYSPY, PYTHON_NATIVE, PYTHON_STARTING = "walker", "py-spy", "native", "starting"
# Per-sample reasons a merged stack is partial (marked truncated, counted in incomplete()).
PYTHON_SAMPLE_REASONS = (
    "python_truncated",
    "python_read_failed",
    "python_thread_unknown",
    "python_frames_unplaced",
    "eval_frames_unmatched",
    "python_code_unknown",
    "python_not_ready",
    "python_unsupported",
)
SAMPLE_USER_REGS = _CONSTANTS["PXQ_PROF_SAMPLE_USER_REGS"]
SAMPLE_NO_USER = _CONSTANTS["PXQ_PROF_SAMPLE_NO_USER"]
PAGE = 4096
# Why a user stack was cut short, beside truncated_user_stack (see the module docstring).
UNWIND_COUNTERS = tuple(f"unwind_{reason}" for reason in STOP_REASONS if reason != OUTERMOST) + (
    "unwind_frame_pointers",
    "unwind_process_gone",
)


@dataclass
class PythonFallback:
    """A Python process whose frames the BPF walker cannot read: why (a python_fallbacks() reason and
    what attaching it said) and what samples it instead (PYTHON_PYSPY or PYTHON_NATIVE)."""

    pid: int
    reason: str
    detail: str
    sampler: str


@dataclass(frozen=True)
class ProfilerOptions:
    """What the profiler samples and how (see the module docstring)."""

    sample_hz: int = 99
    pids: frozenset[int] | None = None  # None (or empty): every process
    python: str = "auto"
    drain_interval_s: float = 1.0
    pyspy_segment_s: int = DEFAULT_SEGMENT_S
    pyspy_min_cpu: float = 0.05
    stack_copy_bytes: int = 16384
    self_pid: int = field(default_factory=os.getpid)

    def __post_init__(self) -> None:
        if not 1 <= self.sample_hz <= 10000:
            raise ValueError(f"sample_hz must be between 1 and 10000, not {self.sample_hz}")
        if self.python not in PYTHON_MODES:
            raise ValueError(f"python must be one of {', '.join(PYTHON_MODES)}, not {self.python!r}")
        copy = self.stack_copy_bytes
        if not (PAGE <= copy <= 16 * PAGE and copy & (copy - 1) == 0):
            raise ValueError(f"stack_copy_bytes must be a power of two from 4096 to 65536, not {copy}")

    def sample_pages(self) -> int:
        """Ring buffer pages for about 2 s of samples on every CPU (a read may take that long
        while it parses a large binary's unwind tables), a power of two, 64 to 16384."""
        record = ct.sizeof(Sample) + self.stack_copy_bytes + (0 if self.python == "off" else PYTHON_RECORD_BYTES)
        want = 2 * self.sample_hz * possible_cpus() * record // PAGE
        pages = 64
        while pages < want and pages < 16384:
            pages *= 2
        return pages

    def defines(self) -> dict[str, int]:
        return {
            "SELF_PID": self.self_pid,
            "FILTER_PIDS": 1 if self.pids else 0,
            "MAX_PIDS": max(64, len(self.pids or ()) * 2),
            "STACK_COPY_BYTES": self.stack_copy_bytes,
            "PYTHON_FRAMES": 0 if self.python == "off" else 1,
            "SAMPLE_PAGES": self.sample_pages(),
            "MAX_CPUS": possible_cpus(),
        }


# How each setting a script may give (``perf_profiler.KEY``) reads; one it does not give keeps
# ProfilerOptions' default.
_SETTING_READERS = {
    "sample_hz": lambda text: int(float(text)),
    "python": lambda text: str(text).lower(),
    "drain_interval_s": float,
    "pyspy_segment_s": lambda text: int(float(text)),
    "pyspy_min_cpu": float,
    "stack_copy_bytes": int,
}


def options_from_request(request) -> ProfilerOptions:
    """ProfilerOptions for a ``ProbeManifest`` collector request: its pid filter and settings."""
    option = getattr(request, "option", lambda _key, default=None: default)
    pids = getattr(request, "pids", None)
    try:
        given = {key: read(option(key)) for key, read in _SETTING_READERS.items() if option(key) is not None}
        return ProfilerOptions(pids=frozenset(pids) if pids else None, **given)
    except ValueError as exc:
        raise BpfError(f"perf_profiler: {exc}") from None


def build_profiler(options: ProfilerOptions) -> BpfProgram:
    asserts = layout_asserts("pxq_profile_sample", Sample) + layout_asserts("pxq_profile_new_pid", NewPid)
    if options.python != "off":  # the extra section and the per-process offsets, as the reader decodes them
        asserts += layout_asserts("python_frames", python_frames_struct(PY_MAX_FRAMES))
        asserts += layout_asserts("pxq_python_offsets", PythonOffsets)
    attach = f"attach: on_sample on a software CPU_CLOCK perf event, sample_freq={options.sample_hz} Hz, every CPU"
    pids = f"allowed_pids: {', '.join(map(str, sorted(options.pids)))}" if options.pids else "every process"
    copy = f"user stack copied per sample: up to {options.stack_copy_bytes} bytes from sp"
    python = (
        "Python frames: off"
        if options.python == "off"
        else f"Python frames: walked for registered CPython processes, up to {PY_MAX_FRAMES} per sample"
    )
    return build_program(PROGRAM_FILE, options.defines(), asserts, notes=(attach, pids, copy, python))


def profiler_program(request=None) -> str:
    """The BPF program the profiler would load, with its ``-D`` flags (``pxq explain --bpf``)."""
    options = (
        request
        if isinstance(request, ProfilerOptions)
        else (options_from_request(request) if request is not None else ProfilerOptions())
    )
    return build_profiler(options).explain()


def stack_trace_id(folded: str) -> int:
    """A stable signed 64-bit id of a folded stack (the same text gives the same id everywhere)."""
    return int.from_bytes(hashlib.blake2b(folded.encode(), digest_size=8).digest(), "little", signed=True)


def rows_to_table(rows: list[tuple[int, str, str, int, str, bool]]) -> pa.Table:
    """``stack_traces.beta`` from (time_ns, upid, folded stack, count, sampler, truncated) rows."""
    schema = CATALOG[TABLE].arrow_schema()
    if not rows:
        return schema.empty_table()
    times, upids, stacks, counts, samplers, truncated = zip(*rows)
    ids: dict[str, int] = {}  # one sample per row: the same stacks come back again and again
    columns = {
        "time_": pa.array(times, pa.int64()).cast(schema.field("time_").type),
        "upid": upids,
        "stack_trace_id": [ids[s] if s in ids else ids.setdefault(s, stack_trace_id(s)) for s in stacks],
        "stack_trace": stacks,
        "count": counts,
        "sampler": samplers,
        "truncated": truncated,
    }
    return pa.table([pa.array(columns[f.name], f.type) for f in schema], schema=schema)


class Profiler:
    """CPU stack samples of the profiled processes (see the module docstring)."""

    def __init__(self, options: ProfilerOptions | None = None):
        self.options = options or ProfilerOptions()
        self.program = build_profiler(self.options)
        self.symbolizer = Symbolizer(unwind=True)
        self.pyspy: PySpySampler | None = None
        self.python: PythonStacks | None = None
        if self.options.python != "off":
            self.python = PythonStacks()
            self.pyspy = PySpySampler(rate_hz=self.options.sample_hz, segment_s=self.options.pyspy_segment_s)
        self.python_modes: dict[int, str] = {}  # pid -> PYTHON_* (how its Python frames are taken)
        self._python_tids: dict[int, set[int]] = {}  # pid -> its tids in the python_threads map
        self._python_uninitialised: set[int] = set()  # walker pids with no thread state yet (just exec'd)
        self._python_fallbacks: dict[str, int] = {}  # why the walker could not read a process -> processes
        self.python_fallback_processes: dict[str, PythonFallback] = {}  # upid -> why, how it was sampled
        self._warmed = 0  # self._records[:_warmed] had their code objects named (see _warm_python)
        self._native_names: dict[tuple, tuple[list[str], bool]] = {}
        self._bpf = None
        self._tables: dict[str, object] = {}
        self._last_read = 0.0
        self._previous_read = 0.0
        self._notices: list[tuple[int, int, int, str]] = []  # (tgid, reason, start_boot_ns, comm)
        self._records: list[bytes] = []  # sample records taken from the ring buffer, not yet read
        self.identities = ProcessIdentities()  # the agent may share one between its collectors
        self._rows: list[tuple[int, str, str, int, str, bool]] = []
        self._kernel_stats = dict.fromkeys(STAT_NAMES, 0)
        self._user_counts = dict.fromkeys(("truncated_user_stack", *UNWIND_COUNTERS), 0)
        self._python_counts = dict.fromkeys((*PYTHON_SAMPLE_REASONS, "python_samples_via_pyspy"), 0)
        self._truncated: dict[str, int] = {}
        self._upids: dict[int, str] = {}
        self._gone: set[int] = set()  # processes found exited at the last read
        self.samples = 0
        self.reads = 0
        self.last_read_s = 0.0
        self.read_cpu_s = 0.0  # CPU time spent reading (unwinding, symbolizing, folding)

    # -- life cycle -------------------------------------------------------------------------
    def start(self) -> Profiler:
        """Compile, load and attach; raises :class:`BpfError` saying why when that fails."""
        if self._bpf is not None:
            return self
        if self.options.python == "on" and (self.pyspy is None or not self.pyspy.available):
            raise BpfError(
                "perf_profiler.python=on, but py-spy (the fallback for Pythons the BPF walker cannot read) "
                "is not installed (pip install py-spy), or set perf_profiler.python=auto"
            )
        from bcc import PerfSWConfig, PerfType

        self._bpf = bpf = load(self.program)
        try:
            names = ["samples", "allowed_pids", "seen_pids", "stats", "new_pids"]
            if self.python is not None:
                names += ["python_offsets", "python_threads", "python_missed"]
            for name in names:
                self._tables[name] = bpf[name.encode()]
            allowed = self._tables["allowed_pids"]
            for pid in sorted(self.options.pids or ()):
                allowed[ct.c_uint32(pid)] = ct.c_uint8(1)
                self._notices.append((pid, 0, 0, ""))  # snapshot now, start py-spy if it is Python
            notices, records = self._notices, self._records

            def on_record(_ctx, data, _size):
                record = ct.cast(data, ct.POINTER(NewPid)).contents
                notices.append((record.tgid, record.reason, record.start_boot_ns, record.comm.decode(errors="replace")))
                return 0

            def on_sample(_ctx, data, size):
                records.append(ct.string_at(data, size))  # decoded in batches at the read
                return 0

            self._on_record, self._on_sample = on_record, on_sample
            self._tables["new_pids"].open_ring_buffer(on_record)
            self._tables["samples"].open_ring_buffer(on_sample)
            self._handle_notices()
            bpf.attach_perf_event(
                ev_type=PerfType.SOFTWARE,
                ev_config=PerfSWConfig.CPU_CLOCK,
                fn_name=b"on_sample",
                sample_freq=self.options.sample_hz,
                cpu=-1,
            )
            _ = self.symbolizer.kernel.table  # parse kallsyms now (~0.2 s), not in the first read
        except Exception as exc:
            bpf.cleanup()
            self._bpf = None
            self._tables.clear()
            if isinstance(exc, BpfError):
                raise
            raise BpfError(f"{PROGRAM_FILE}: attaching the CPU_CLOCK perf event failed: {exc}") from exc
        self._last_read = self._previous_read = time.monotonic()
        return self

    def stop(self) -> None:
        """Read what the kernel still holds, end py-spy's segments, detach."""
        if self._bpf is None:
            return
        try:
            self._bpf.ring_buffer_consume()
            self._handle_notices()
            self._retry_starting_pythons()
            self._warm_python()
            self._read_samples()
        finally:
            self._bpf.cleanup()
            self._bpf = None
            self._tables.clear()
            if self.pyspy is not None:
                self.pyspy.stop()
                self._take_pyspy()
            self.symbolizer.close()
            if self.python is not None:
                self.python.close()

    # -- collecting -------------------------------------------------------------------------
    def poll(self, timeout_ms: int = 100) -> int:
        """Wait up to ``timeout_ms`` for samples and new processes, snapshot the new processes;
        unwind and fold the samples taken when ``drain_interval_s`` has passed. Returns new
        processes plus samples read."""
        bpf = self._bpf
        if bpf is None:
            raise RuntimeError("Profiler.poll() before start()")
        bpf.ring_buffer_poll(max(0, int(timeout_ms)))  # wakes for new processes only
        bpf.ring_buffer_consume()  # samples are sent without a wakeup (see profile.c)
        handled = self._handle_notices()
        self._retry_starting_pythons()
        self._warm_python()
        if time.monotonic() - self._last_read >= self.options.drain_interval_s:
            handled += self._read_samples()
        if self.pyspy is not None:
            handled += self.pyspy.poll()
            self._take_pyspy()
            self._keep_samples_pyspy_cannot_take()
        return handled

    def _handle_notices(self) -> int:
        notices, self._notices[:] = self._notices[:], []
        for pid, reason, start_boot_ns, comm in notices:
            if reason == NEW_THREAD:
                self._refresh_python_threads(pid)
                continue
            if reason == NEW_EXEC:
                self._forget_python(pid)
            if reason == NEW_EXEC or pid not in self.symbolizer.processes:
                snap = self.symbolizer.snapshot(pid)
            else:
                snap = self.symbolizer.processes[pid]
            # Named now, from /proc or (gone already) from the kernel; kernel threads have no
            # memory map to snapshot, but a name and a start time.
            self._upids[pid] = self.identities.identify(
                pid, comm=comm, start_boot_ns=start_boot_ns, exec_seen=reason == NEW_EXEC
            )
            if snap is None:
                continue
            self._register_python(pid)
        return len(notices)

    # -- Python frames ----------------------------------------------------------------------
    def _register_python(self, pid: int) -> None:
        """Decide once how a Python process's frames are taken: the BPF walker (its offsets and
        thread states put in the maps), else py-spy when the process was asked for by pid (on a
        whole-host run, once it is busy: see _read_samples), else native frames only. A Python met
        before its libpython is mapped (python_starting) waits, tried again at each poll."""
        snap = self.symbolizer.processes.get(pid)
        python = self.python
        if python is None or snap is None or not snap.is_python or pid == self.options.self_pid:
            return
        if pid in self.python_modes:
            return
        if not python.is_python(pid) and python.why_not(pid) in TRANSIENT_REASONS:
            self.python_modes[pid] = PYTHON_STARTING
            return
        self._use_walker_or_fall_back(pid)

    def _retry_starting_pythons(self) -> None:
        """Attach again the Pythons that were starting (their libpython not mapped yet)."""
        if self.python is None:
            return
        for pid in [pid for pid, mode in self.python_modes.items() if mode == PYTHON_STARTING]:
            attached = self.python.retry(pid)
            if attached or self.python.why_not(pid) not in TRANSIENT_REASONS:
                del self.python_modes[pid]
                if attached:  # its loader has mapped libpython since the snapshot: take it again
                    self.symbolizer.snapshot(pid)
                self._use_walker_or_fall_back(pid)

    def _use_walker_or_fall_back(self, pid: int) -> None:
        """Put an attached Python in the walker's maps; for one that cannot be, count why and fall back."""
        python = self.python
        assert python is not None
        offsets = python.bpf_config(pid)
        if offsets is None:
            reason = python.why_not(pid) or "python_not_found"
            self._python_fallback(pid, reason, python.failure_message(pid) or reason)
            if self.options.pids:
                self._fall_back_to_pyspy(pid)
            return
        if not _update(self._tables["python_offsets"], ct.c_uint32(pid), offsets):
            # The map is full (MAX_PYTHON_PIDS Pythons registered at once): native frames for this one.
            self._python_fallback(pid, "python_map_full", "the BPF map of Python processes is full")
            return
        self.python_modes[pid] = PYTHON_WALKER
        self._refresh_python_threads(pid)
        if not self._python_tids.get(pid):
            self._python_uninitialised.add(pid)

    def _python_fallback(self, pid: int, reason: str, detail: str) -> None:
        """pid's Python frames cannot come from the walker: counted by reason, remembered for warnings()."""
        self._python_fallbacks[reason] = self._python_fallbacks.get(reason, 0) + 1
        self.python_modes[pid] = PYTHON_NATIVE
        self.python_fallback_processes[self._upid(pid)] = PythonFallback(pid, reason, detail, PYTHON_NATIVE)

    def _refresh_python_threads(self, pid: int) -> None:
        """Bring python_threads up to date with pid's thread states (new threads, ended ones), and let
        the kernel announce the next unknown thread again (python_missed)."""
        python, threads = self.python, self._tables.get("python_threads")
        if python is None or threads is None or self.python_modes.get(pid) != PYTHON_WALKER:
            return
        added, removed = python.refresh_threads(pid)
        tids = self._python_tids.setdefault(pid, set())
        for state in removed:
            if state.tid and state.tid in tids and state.tid not in {a.tid for a in added}:
                _delete(threads, ct.c_uint32(state.tid))
                tids.discard(state.tid)
        for state in added:
            # tid 0: its kernel thread id is not known yet (a thread starting). A full map leaves the
            # thread out: its samples count python_thread_miss.
            if state.tid and _update(threads, ct.c_uint32(state.tid), ct.c_uint64(state.address)):
                tids.add(state.tid)
        if tids and pid in self._python_uninitialised:
            # Registered before its interpreter ran (at its exec): its loader has mapped the libraries
            # since the snapshot, and unwinding into them (libc's start code) needs them.
            self._python_uninitialised.discard(pid)
            self.symbolizer.snapshot(pid)
        _delete(self._tables["python_missed"], ct.c_uint32(pid))

    def _forget_python(self, pid: int) -> None:
        """pid exited or exec'd: its maps entries, its walker state."""
        mode = self.python_modes.pop(pid, None)
        self._python_uninitialised.discard(pid)
        if mode is None or self.python is None:
            return
        self.python.forget(pid)
        threads = self._tables.get("python_threads")
        for tid in self._python_tids.pop(pid, ()):
            if threads is not None:
                _delete(threads, ct.c_uint32(tid))
        for name in ("python_offsets", "python_missed"):
            if name in self._tables:
                _delete(self._tables[name], ct.c_uint32(pid))

    def _fall_back_to_pyspy(self, pid: int) -> None:
        """Have py-spy sample a Python the walker cannot read (once); its eBPF samples are then not
        kept (counted as python_samples_via_pyspy), so that its CPU is counted once."""
        snap = self.symbolizer.processes.get(pid)
        if (
            self.pyspy is None
            or not self.pyspy.available
            or snap is None
            or self.python_modes.get(pid) != PYTHON_NATIVE
        ):
            return
        upid = self._upids.get(pid) or make_upid(pid, snap.start_ticks)
        tried = self.pyspy.given_up().get(pid)
        if tried is not None and tried.upid == upid:  # py-spy cannot read it: its eBPF samples stay
            return
        self.python_modes[pid] = PYTHON_PYSPY
        self.pyspy.add(pid, upid)
        fallback = self.python_fallback_processes.get(upid)
        if fallback is not None:
            fallback.sampler = PYTHON_PYSPY

    def _keep_samples_pyspy_cannot_take(self) -> None:
        """A Python py-spy cannot attach to (it gave up): its eBPF samples are kept from now on, native
        frames only, else nothing would count its CPU."""
        assert self.pyspy is not None
        for pid, target in self.pyspy.given_up().items():
            if self.python_modes.get(pid) != PYTHON_PYSPY or self._upids.get(pid) != target.upid:
                continue
            self.python_modes[pid] = PYTHON_NATIVE
            fallback = self.python_fallback_processes.get(target.upid)
            if fallback is not None:
                fallback.sampler = PYTHON_NATIVE
                fallback.detail += f" (py-spy could not read it either: {target.error})"

    def _warm_python(self) -> None:
        """Name the code objects of the records taken since the last poll, while their processes
        most likely still run (the read, up to drain_interval_s later, may find them gone)."""
        python, header = self.python, ct.sizeof(Sample)
        if python is None:
            return
        for record in self._records[self._warmed :]:
            if len(record) < header + PYTHON_RECORD_BYTES:
                continue
            sample = Sample.from_buffer_copy(record, 0)
            if sample.extra_bytes:
                python.warm(sample.tgid, record[header : header + PYTHON_RECORD_BYTES])
        self._warmed = len(self._records)

    def _take_pyspy(self) -> None:
        for time_ns, upid, stack, count in self.pyspy.take():
            self._rows.append((time_ns, upid, stack, count, PYSPY_SAMPLER, False))

    def _read_samples(self) -> int:
        """Unwind, symbolize and fold the samples taken since the last read: one row each."""
        begin, begin_cpu = time.monotonic(), time.process_time()
        self._last_read = begin
        records, self._records[:] = self._records[:], []
        self._warmed = 0
        boot_to_wall = time.time_ns() - time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        header = ct.sizeof(Sample)
        folded: dict[tuple, tuple[str, bool, tuple[str, ...]]] = {}  # (pid, user, kernel, python) -> parts
        self._native_names = {}  # (pid, user addresses) -> (names root first, truncated), for this read
        per_pid: dict[int, int] = {}
        for record in records:
            if len(record) < header:
                continue
            sample = Sample.from_buffer_copy(record, 0)
            pid = sample.tgid
            mode = self.python_modes.get(pid)
            if mode == PYTHON_PYSPY:  # py-spy samples this process: its CPU is counted there, once
                self._python_counts["python_samples_via_pyspy"] += 1
                continue
            user, truncated, reason = self._user_part(pid, sample, record)
            kernel = self._kernel_part(sample)
            python = None
            if mode is not None:
                python = record[header : header + PYTHON_RECORD_BYTES] if sample.extra_bytes else mode
            key = (pid, user, kernel, python)
            parts = folded.get(key)
            if parts is None:
                parts = folded[key] = self._fold(pid, user, kernel, python)
            text, symbolic_truncated, python_reasons = parts
            for python_reason in python_reasons:
                self._python_counts[python_reason] += 1
            truncated = truncated or symbolic_truncated
            upid = self._upid(pid, sample.comm)
            if truncated:
                self._truncated[upid] = self._truncated.get(upid, 0) + 1
                self._user_counts["truncated_user_stack"] += 1
                if reason is not None:
                    self._user_counts[f"unwind_{reason}"] += 1
            self._rows.append((sample.time_boot_ns + boot_to_wall, upid, text, 1, EBPF_SAMPLER, truncated))
            per_pid[pid] = per_pid.get(pid, 0) + 1
        total = sum(per_pid.values())
        if not self.options.pids:  # whole host: py-spy only for Python processes that use CPU
            busy = self.options.pyspy_min_cpu * self.options.sample_hz * max(begin - self._previous_read, 1e-3)
            for pid, count in per_pid.items():
                if count >= busy:
                    self._fall_back_to_pyspy(pid)
        self._previous_read = begin
        self._forget_exited(set(per_pid))
        self.samples += total
        self.reads += 1
        self.kernel_stats()
        self.last_read_s = time.monotonic() - begin
        self.read_cpu_s += time.process_time() - begin_cpu
        return total

    def _user_part(self, pid: int, sample: Sample, record: bytes) -> tuple[tuple[int, ...] | str, bool, str | None]:
        """The user stack of a sample: its addresses leaf first (the callers' as ``return address
        - 1``, inside the call), or a marker text; whether it is cut short, and why."""
        if sample.flags & SAMPLE_NO_USER:
            return (), False, None  # a kernel thread
        if not sample.flags & SAMPLE_USER_REGS:
            return LOST_USER, True, None  # counted by the kernel: user_regs_lost
        start = sample.user_stack_offset
        stack = record[start : start + sample.user_stack_bytes]
        regs = Registers(sample.user_ip, sample.user_sp, sample.user_bp)
        result = self.symbolizer.unwind(pid, regs, stack, len(stack) >= self.options.stack_copy_bytes)
        if result is None:
            return (sample.user_ip,), True, "process_gone"
        addresses = (result.addresses[0], *(a - 1 for a in result.addresses[1:]))
        if result.complete:
            return addresses, False, None
        return addresses, True, "frame_pointers" if result.reason == OUTERMOST else result.reason

    @staticmethod
    def _kernel_part(sample: Sample) -> tuple[int, ...] | str:
        size = sample.kernel_stack_bytes
        if size < 0:
            return LOST_KERNEL
        return tuple(sample.kernel_stack[: min(size // 8, KERNEL_DEPTH)])

    def _fold(self, pid: int, user, kernel, python: bytes | str | None = None) -> tuple[str, bool, tuple[str, ...]]:
        """The folded text of a stack (root first), whether it looks cut short, and why its Python
        part is partial. ``python``: the sample's struct python_frames, or the process's mode when
        the sample has none (walker: taken before its maps were filled), None for no Python."""
        truncated = False
        reasons: tuple[str, ...] = ()
        if isinstance(user, str):
            user_frames = [user]
        elif user:
            native = self._native_names.get((pid, user))
            if native is None:  # Python samples differ by their Python part: the native one repeats
                native = self._native_names[(pid, user)] = self.symbolizer.user_stack(pid, list(user))
            user_frames, truncated = native
            if python is not None:
                user_frames, reasons = self._merge_python(pid, list(user), user_frames, python)
        else:
            user_frames = []
        kernel_frames = [kernel] if isinstance(kernel, str) else self.symbolizer.kernel_stack(list(kernel))
        return ";".join(user_frames + kernel_frames) or NO_STACK, truncated or bool(reasons), reasons

    def _merge_python(
        self, pid: int, user: list[int], native_names: list[str], python: bytes | str
    ) -> tuple[list[str], tuple[str, ...]]:
        """Native frames (root first) with the sample's Python frames where _PyEval_EvalFrameDefault
        stands (pxq.agent.python.merge), and the reasons the result is partial."""
        if isinstance(python, str):
            ready = python in (PYTHON_WALKER, PYTHON_STARTING)  # its Python frames were (or will be) walked
            return native_names, ("python_not_ready" if ready else "python_unsupported",)
        assert self.python is not None
        # The merge wants return addresses as the unwinder gave them (user holds them less one).
        raw = [user[0], *(address + 1 for address in user[1:])]
        names = dict(zip(raw, reversed(native_names)))
        resolved = self.python.resolve(pid, raw, python)
        frames = [
            names[frame.address] if isinstance(frame, NativeFrame) else _python_text(frame)
            for frame in reversed(resolved.frames)
        ]
        return frames, tuple(resolved.reasons)

    def _upid(self, pid: int, comm: bytes = b"") -> str:
        upid = self._upids.get(pid)
        if upid is None:  # its new-process record was lost: /proc now, else the sample's comm
            if pid not in self.symbolizer.processes:
                self.symbolizer.snapshot(pid)
            upid = self._upids[pid] = self.identities.identify(pid, comm=comm.decode(errors="replace"))
        return upid

    def use_identities(self, identities: ProcessIdentities) -> None:
        """Decide process identities (upids) in ``identities``, shared with other collectors."""
        self.identities = identities

    def processes(self) -> dict[str, dict]:
        """upid -> identity (comm, cmdline, ...) of every process sampled, decided at first sight."""
        return self.identities.by_upid

    def _forget_exited(self, sampled: set[int]) -> None:
        """Drop snapshots of processes that are gone, and let the kernel announce their pids again
        when reused. A process found gone is forgotten one read later, when it is still not in
        the counts: its last samples may sit in the generation being filled right now."""
        seen = self._tables.get("seen_pids")
        gone = set()
        for pid in [p for p in self.symbolizer.processes if p not in sampled]:
            if self.symbolizer.is_current(pid):
                continue
            if pid not in self._gone:
                gone.add(pid)
                continue
            self.symbolizer.forget(pid)
            self._forget_python(pid)
            self._upids.pop(pid, None)
            if seen is not None:
                _delete(seen, ct.c_uint32(pid))
        self._gone = gone

    def drain(self) -> pa.Table:
        """``stack_traces.beta`` rows read since the last drain (the catalog's exact schema)."""
        rows, self._rows = self._rows, []
        return rows_to_table(rows)

    # -- counters ---------------------------------------------------------------------------
    def kernel_stats(self) -> dict[str, int]:
        """The kernel's counters (cumulative, summed over CPUs): samples and losses."""
        table = self._tables.get("stats")
        if table is not None:  # after stop(), the last counts read
            self._kernel_stats = {name: int(sum(table[ct.c_int(i)])) for i, name in enumerate(STAT_NAMES)}
        return dict(self._kernel_stats)

    def _counters(self) -> dict[str, int]:
        out = {k: v for k, v in self.kernel_stats().items() if k != "samples"}
        out.update(self._user_counts)
        if self.python is not None:
            out.update(self._python_counts)
        if self.pyspy is not None:
            out.update(self.pyspy.counters)
        return out

    def drops(self) -> dict[str, int]:
        """Samples (or records) lost, by reason (see the module docstring); cumulative."""
        return {k: v for k, v in self._counters().items() if k not in INCOMPLETE_REASONS}

    def incomplete(self) -> dict[str, int]:
        """Samples kept whose stack is incomplete, by reason (see the module docstring); cumulative."""
        return {k: v for k, v in self._counters().items() if k in INCOMPLETE_REASONS}

    def truncated_by_process(self) -> dict[str, int]:
        """Samples with a truncated user stack, per upid."""
        return dict(self._truncated)

    def stats(self) -> dict[str, int | float]:
        return {
            "samples": self.samples,
            "kernel_samples": self._kernel_stats.get("samples", 0),
            "reads": self.reads,
            "last_read_s": self.last_read_s,
            "processes": len(self.symbolizer.processes),
            "pyspy_samples": self.pyspy.samples if self.pyspy is not None else 0,
            "python_walker": list(self.python_modes.values()).count(PYTHON_WALKER),
            "python_pyspy": list(self.python_modes.values()).count(PYTHON_PYSPY),
            "python_native": list(self.python_modes.values()).count(PYTHON_NATIVE),
            "python_starting": list(self.python_modes.values()).count(PYTHON_STARTING),
        }

    def python_fallbacks(self) -> dict[str, int]:
        """Python processes the walker could not read, by reason (python_version_unknown,
        python_not_found, ...): each fell back to py-spy or to native frames."""
        return dict(self._python_fallbacks)

    def warnings(self) -> list[str]:
        """One line per reason and sampler: which Python processes the walker could not read, why,
        and what sampled them instead (py-spy, or native frames only)."""
        groups: dict[tuple[str, str], list[tuple[str, PythonFallback]]] = {}
        for upid, fallback in self.python_fallback_processes.items():
            if fallback.reason == "process_exited":  # gone before it could be read: nothing sampled it after
                continue
            groups.setdefault((fallback.reason, fallback.sampler), []).append((upid, fallback))
        lines = []
        for (reason, sampler), members in sorted(groups.items()):
            how = "sampled by py-spy" if sampler == PYTHON_PYSPY else "native frames only"
            named = [f"{self._process_name(upid, fallback.pid)}: {fallback.detail}" for upid, fallback in members]
            more = f"; and {len(named) - MAX_NAMED_FALLBACKS} more" if len(named) > MAX_NAMED_FALLBACKS else ""
            lines.append(
                f"perf_profiler: {len(members)} Python process{'es' if len(members) > 1 else ''} not readable by "
                f"the BPF walker ({reason}), {how}: {'; '.join(named[:MAX_NAMED_FALLBACKS])}{more}"
            )
        return lines

    def _process_name(self, upid: str, pid: int) -> str:
        comm = (self.identities.by_upid.get(upid) or {}).get("comm")
        return f"pid {pid} ({comm})" if comm else f"pid {pid}"


def _python_text(frame: PyFrame) -> str:
    """A Python frame as py-spy writes it: ``function (file:line)``."""
    where = frame.filename if frame.line is None else f"{frame.filename}:{frame.line}"
    return f"{frame.qualname} ({where})"


def _update(table, key, value) -> bool:
    """Set ``key`` in a BPF map; False when the kernel refuses (the map is full)."""
    try:
        table[key] = value
    except Exception:  # bcc raises a bare Exception("Could not update table: ...")
        return False
    return True


def _delete(table, key) -> None:
    """Delete ``key`` from a BPF map, if it is (still) there."""
    with contextlib.suppress(KeyError):
        del table[key]


class PerfProfilerCollector:
    """``stack_traces.beta`` for the agent (``pxq.agent.collectors.COLLECTORS``)."""

    name = "perf_profiler"

    def __init__(self, request, on_warning: Callable[[str], None] | None = None):
        self.profiler = Profiler(options_from_request(request))
        self.on_warning = on_warning

    def start(self) -> None:
        self.profiler.start()

    def poll(self, timeout_ms: int) -> int:
        return self.profiler.poll(timeout_ms)

    def close_window(self) -> None:
        pass  # stop() follows at once and reads the kernel's counts within milliseconds

    def drain(self) -> dict[str, pa.Table]:
        return {TABLE: self.profiler.drain()}

    def drops(self) -> dict[str, dict[str, int]]:
        # The table store keeps both kinds under their names; reports tell them apart.
        return {TABLE: {**self.profiler.drops(), **self.profiler.incomplete()}}

    def stop(self) -> None:
        self.profiler.stop()
        if self.on_warning is not None:  # which Pythons py-spy sampled (or none did), and why
            for line in self.profiler.warnings():
                self.on_warning(line)

    def use_identities(self, identities: ProcessIdentities) -> None:
        self.profiler.use_identities(identities)


__all__ = [
    "PerfProfilerCollector",
    "Profiler",
    "ProfilerOptions",
    "Sample",
    "NewPid",
    "build_profiler",
    "options_from_request",
    "profiler_program",
    "rows_to_table",
    "stack_trace_id",
]
