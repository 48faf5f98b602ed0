"""Native stack unwinding in the agent, without frame pointers: perf's ``--call-graph dwarf``
approach. The kernel sends each sample's user registers (ip, sp, bp) and a bounded copy of the
user stack from sp (``bpf/profile.c``); here each binary's call-frame information is read
with pyelftools (:mod:`pxq.agent.unwind.cfi`): through ``.eh_frame_hdr``'s sorted index, each FDE
decoded when an address in it is first met (libc or libpython3.11 load in ~0.1 s; decoding every
FDE up front took 2-4 s each), else every FDE of ``.eh_frame`` or ``.debug_frame`` into sorted
numpy arrays; tables are kept per build id and size (:mod:`pxq.agent.unwind.cache`, bounded by
the heap bytes they hold); ``.eh_frame`` is read from a read-only mapping of the file, not copied. Each sample is
then unwound frame by frame against the copy (:mod:`pxq.agent.unwind.unwinder`).

::

    table = load_unwind_table(open("/lib/x86_64-linux-gnu/libc.so.6", "rb"))
    row = table.row(vaddr)                  # the CFI rule in force at an ELF virtual address
    result = unwind(regs, stack, locate, copy_full)   # return addresses, leaf first, and why it stopped

Why in the agent and not in BPF (the OpenTelemetry profiler's approach): bcc programs here cannot
read kernel structs (6.1 headers on a 6.18 kernel) and a BPF unwinder needs per-binary tables in
maps and tail calls per frame. Measured (bench/bench_profiler_accuracy.py, 2 loaded CPUs, 99 Hz):
the BPF program spends 11-14 us per sample of the target (registers, kernel stack, 16 KiB copy,
ring buffer), the target loses 0.3 % of its throughput (median of 5 pairs), and the agent spends
0.05-0.06 s of CPU per 1,000 samples unwinding, symbolizing and folding them.
"""

from __future__ import annotations

from pxq.agent.unwind.cfi import (
    IndexedUnwindTable,
    UnwindRow,
    UnwindTable,
    load_unwind_table,
    parse_unwind_table,
    unwind_table_of_fd,
)
from pxq.agent.unwind.unwinder import STOP_REASONS, Registers, UnwindResult, unwind

__all__ = [
    "STOP_REASONS",
    "IndexedUnwindTable",
    "load_unwind_table",
    "Registers",
    "UnwindResult",
    "UnwindRow",
    "UnwindTable",
    "parse_unwind_table",
    "unwind",
    "unwind_table_of_fd",
]
