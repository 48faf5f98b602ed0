"""Python frames for the CPU profiler from py-spy: the fallback for a Python the BPF walker
(bpf/python_stack.h, :mod:`pxq.agent.python`) cannot read, an unknown version or no
``_PyRuntime`` symbol. Every other CPython gets its Python frames merged into its eBPF samples
(:mod:`pxq.agent.profiler`), and py-spy never runs for it.

py-spy reads the interpreter's own frame objects from outside the process, and gives
``function (file:line)`` frames.

How it runs: for every profiled Python process the walker cannot read (executable ``python*``, or
``libpython*`` mapped; see :attr:`pxq.agent.symbols.ProcessMaps.is_python`) and, on a whole-host
run, busy enough to matter (see :mod:`pxq.agent.profiler`), one
``py-spy record --pid PID --rate HZ --format raw --nonblocking --duration SEG -o FILE``
child, restarted segment after segment while the process lives; :meth:`PySpySampler.stop` ends the
current segments with SIGINT (py-spy writes its file on Ctrl-C). A process that is not Python is
never touched. ``record`` was measured against repeated ``py-spy dump``: on a CPU-bound target at
99 Hz, ``record --nonblocking`` used about 20 ms of CPU per second of sampling (0.2 ms per
sample), one ``dump`` about 8.5 ms (so ~0.85 s of CPU per second at 99 Hz, forty times more);
``--nonblocking`` never pauses the target (at the price of an occasional inconsistent stack).

Design choice: py-spy's stacks are their own rows (``sampler = "py-spy"``), not joined with the
eBPF rows (``sampler = "ebpf"``) of the same process; the profiler then drops that process's eBPF
samples (counted), so that its CPU is counted once.

* A join would need to pair each py-spy sample with the eBPF sample taken at the same instant
  on the same thread. py-spy's outputs are aggregated without timestamps (its chrometrace output
  has them, but the kernel side counts stacks in a map precisely so that it does not ship every
  sample), the two samplers tick on different clocks, and a thread moves between Python, C and
  the kernel within a tick. Pairing by proportion instead would invent stacks that never ran.
* Separate rows are each exactly what one sampler saw. The cost, for these fallback processes
  only: no single stack runs from a Python function through C into the kernel.

The two samplers do not count the same thing: an eBPF sample is taken only while a thread is on
a CPU; py-spy samples on the wall clock every thread it does not consider idle, and a thread
waiting for a CPU is not idle. On a loaded machine a busy Python thread gets more py-spy samples
than eBPF samples (measured: 989 against 511 over 10 s, with two CPUs shared by four busy
processes). Compare shapes across samplers, not counts.

Between two segments py-spy re-attaches (about 0.2 s without samples), so segments are long
(10 s by default); a window shorter than a segment is one segment ended by :meth:`stop`. When the
target exits, py-spy writes what it has and exits 0; a target that exits before py-spy attached
is counted (``pyspy_attach_failed``), as is every sampling error py-spy reports. A live target py-spy
failed to attach to three times in a row (one it cannot read) is given up (:meth:`PySpySampler.given_up`):
the profiler then keeps its eBPF samples, native frames only. Without a
py-spy executable nothing runs: each Python process that would have been sampled is counted as
``pyspy_missing``.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from pxq.agent import own_processes

SAMPLER = "py-spy"
DEFAULT_SEGMENT_S = 10
STOP_TIMEOUT_S = 10.0
# py-spy is not started again for a target it failed to attach to this many times in a row (one that
# it cannot read, e.g. an interpreter without symbols): restarting it every poll would cost a CPU.
MAX_ATTACH_FAILURES = 3
_SUMMARY = re.compile(r"Samples: (\d+) Errors: (\d+)")


def find_pyspy() -> str | None:
    """The py-spy executable: on PATH, or beside this Python (a virtualenv not activated)."""
    found = shutil.which("py-spy")
    if found:
        return found
    candidate = Path(sys.executable).parent / "py-spy"
    return str(candidate) if os.access(candidate, os.X_OK) else None


def parse_collapsed(text: str) -> dict[str, int]:
    """py-spy's ``--format raw`` output (``frame;frame;... COUNT`` per line, root first) as
    {folded stack: count}; lines that do not end in a count are skipped."""
    out: dict[str, int] = {}
    for line in text.split("\n"):  # not splitlines(): a file name may hold U+2028, \x0c, ...
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdecimal():  # isdigit() admits "²", which int() refuses
            continue
        out[stack] = out.get(stack, 0) + int(count)
    return out


@dataclass
class _Segment:
    process: subprocess.Popen
    output: Path
    log: Path
    started: float


@dataclass
class _Target:
    pid: int
    upid: str
    segment: _Segment | None = None
    done: bool = False
    segments: int = 0
    attach_failures: int = 0  # segments in a row that failed to attach (the target alive)
    error: str = ""  # py-spy's last error line for this target


@dataclass
class PySpySampler:
    """py-spy recorders for a set of Python processes; rows come out of :meth:`take`."""

    rate_hz: int  # the profiler's sample_hz
    segment_s: int = DEFAULT_SEGMENT_S
    executable: str | None = field(default_factory=find_pyspy)

    def __post_init__(self) -> None:
        self.targets: dict[int, _Target] = {}
        self.counters = {"pyspy_missing": 0, "pyspy_attach_failed": 0, "pyspy_sample_errors": 0, "pyspy_killed": 0}
        self.samples = 0
        self.last_error = ""
        self._rows: list[tuple[int, str, str, int]] = []
        self._dir: str | None = None

    @property
    def available(self) -> bool:
        return self.executable is not None

    def add(self, pid: int, upid: str) -> None:
        """Sample this Python process from now on (once per upid)."""
        known = self.targets.get(pid)
        if known is not None and known.upid == upid:
            return
        if known is not None:  # the pid belongs to a new process now
            self._finish(known, interrupt=True)
        target = _Target(pid, upid)
        self.targets[pid] = target
        if not self.available:
            self.counters["pyspy_missing"] += 1
            target.done = True
            return
        self._start(target)

    def _start(self, target: _Target) -> None:
        if self._dir is None:
            self._dir = tempfile.mkdtemp(prefix="pxq-pyspy-")
        target.segments += 1
        stem = Path(self._dir) / f"{target.pid}-{target.segments}"
        output, log = stem.with_suffix(".txt"), stem.with_suffix(".log")
        with open(log, "wb") as log_file:
            process = subprocess.Popen(
                [
                    self.executable,
                    "record",
                    "--pid",
                    str(target.pid),
                    "--rate",
                    str(self.rate_hz),
                    "--format",
                    "raw",
                    "--nonblocking",
                    "--duration",
                    str(int(self.segment_s)),
                    "-o",
                    str(output),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # the terminal's Ctrl-C is pxq's to handle, not py-spy's
            )
        own_processes.add(process.pid)  # the socket tracer leaves it alone
        target.segment = _Segment(process, output, log, time.monotonic())

    def poll(self) -> int:
        """Collect finished segments and start the next ones; returns samples collected."""
        before = self.samples
        for target in self.targets.values():
            segment = target.segment
            if segment is None or segment.process.poll() is None:
                continue
            self._collect(target)
            if _alive(target.pid) and not target.done and target.attach_failures < MAX_ATTACH_FAILURES:
                self._start(target)
            else:
                target.done = True
        return self.samples - before

    def _collect(self, target: _Target) -> None:
        segment, target.segment = target.segment, None
        code = segment.process.wait()
        try:
            log = segment.log.read_text(errors="replace")
        except OSError:
            log = ""
        summary = _SUMMARY.search(log)
        if summary:
            self.counters["pyspy_sample_errors"] += int(summary.group(2))
        try:
            stacks = parse_collapsed(segment.output.read_text(errors="replace"))
        except OSError:
            stacks = {}
        if not stacks and code != 0:
            if code < 0:  # killed (by stop()'s timeout, or by someone else)
                self.counters["pyspy_killed"] += 1
            else:
                self.counters["pyspy_attach_failed"] += 1
                target.attach_failures += 1
            lines = [line for line in log.splitlines() if line.startswith("Error")]
            target.error = lines[0] if lines else f"exit code {code}"
            self.last_error = f"py-spy --pid {target.pid}: {target.error}"
        elif stacks:
            target.attach_failures = 0
        now = time.time_ns()
        for stack, count in stacks.items():
            self._rows.append((now, target.upid, stack, count))
            self.samples += count
        for path in (segment.output, segment.log):
            with contextlib.suppress(OSError):
                path.unlink()

    def _finish(self, target: _Target, interrupt: bool) -> None:
        segment = target.segment
        target.done = True
        if segment is None:
            return
        if segment.process.poll() is None and interrupt:
            with contextlib.suppress(ProcessLookupError):
                segment.process.send_signal(signal.SIGINT)
        try:
            segment.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            segment.process.kill()
            segment.process.wait()
        self._collect(target)

    def given_up(self) -> dict[int, _Target]:
        """pid -> target, for the live targets py-spy failed to attach to MAX_ATTACH_FAILURES times in a row:
        nothing samples them here any more."""
        return {
            pid: target
            for pid, target in self.targets.items()
            if target.attach_failures >= MAX_ATTACH_FAILURES and target.segment is None and _alive(pid)
        }

    def take(self) -> list[tuple[int, str, str, int]]:
        """(time_ns, upid, folded stack, count) rows collected since the last take."""
        rows, self._rows = self._rows, []
        return rows

    def stop(self) -> None:
        """End every running segment (SIGINT: py-spy writes what it sampled) and collect it."""
        running = [t for t in self.targets.values() if t.segment is not None and t.segment.process.poll() is None]
        for target in running:  # signal all first, so they stop together
            with contextlib.suppress(ProcessLookupError):
                target.segment.process.send_signal(signal.SIGINT)
        for target in list(self.targets.values()):
            self._finish(target, interrupt=False)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
