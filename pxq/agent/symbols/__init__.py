"""Symbolization of sampled stacks in user space: kernel frames from ``/proc/kallsyms``, user
frames from the ELF symbol tables of the files a process had mapped.

::

    symbolizer = Symbolizer()
    symbolizer.snapshot(pid)          # when a pid is first seen: read its maps, open its ELF files
    ...                               # the process may exit now
    frames, truncated = symbolizer.user_stack(pid, addresses)   # leaf first in, root first out
    kframes = symbolizer.kernel_stack(addresses)                # "do_syscall_64_[k]", ...

One module per source, as bpftrace's ``src/symbols/`` and bcc's ``bcc_elf``/``bcc_proc``/
``bcc_perf_map`` are split: ``kernel`` (kallsyms), ``elf`` (ELF files and their MiniDebugInfo),
``debuginfo`` (separate debug files), ``proc`` (``/proc/PID/maps`` and ``stat``, the process
snapshot), ``perf_map`` (JIT maps), ``demangling`` (C++ names), ``cache`` (one parsed file per
device and inode, with its resolved frames), ``table`` (the sorted symbol table the sources fill),
``frames`` (frame text and truncation), and ``symbolizer`` (:class:`Symbolizer`, which uses them
all). This package re-exports what the rest of pxq imports.

Frame text:

* a known function: its (demangled) name, ``main``; kernel functions get ``_[k]`` appended, as in
  bcc's ``profile -f`` and Pixie (``do_syscall_64_[k]``);
* an address in a mapped file without a symbol for it: ``module+0xOFFSET`` with the file's base
  name and the ELF virtual address (what ``addr2line -e FILE`` and ``nm`` take), e.g.
  ``libc.so.6+0x2724a``;
* anonymous or JIT memory: ``[anon]+0xOFFSET`` from the mapping's start (``[heap]+0x..``,
  ``[anon:name]+0x..`` for named ones; ``/tmp/perf-PID.map`` names JIT functions when it exists);
* an address in no mapping at all (a broken frame chain): ``[unknown]``. Never a bare address.

Surviving the process: :meth:`Symbolizer.snapshot` reads ``/proc/PID/maps`` and opens every
executable file mapping through ``/proc/PID/map_files/`` (the exact file, even if it was deleted
or lives in another mount namespace) while the process runs. Symbol tables are parsed on first
use, from that open file, once per file (keyed by device and inode, shared by every process that
maps it). The file is then kept mapped read-only: its string table stays there (names decoded on
lookup, pages dropped from RSS after each read; a file truncated in place gives no name rather
than SIGBUS), and what parsed files hold in the heap is bounded
(:class:`~pxq.agent.symbols.cache.ParsedFiles`, least recently used first out, parsed back from the
mapping when next needed; ``Symbolizer.cache_stats()``). So a sample taken just before its process
exited still resolves at the next drain.

Symbol tables: ``.symtab``, else ``.dynsym``; a file without ``.symtab`` is completed from its
separate debug file (``/usr/lib/debug/.build-id/xx/yyyy.debug``, e.g. Debian's ``libc6-dbg``)
or its MiniDebugInfo (``.gnu_debugdata``). Parsing is numpy over the raw symbol table, so a file
with 100k symbols costs milliseconds. The vDSO is symbolized from pxq's own copy of it.

Truncated stacks: the kernel walks user stacks by frame pointers. Code built without them
(``-fomit-frame-pointer``, the default at ``-O2``; most distribution Pythons) yields one frame, or
a chain that wanders into garbage. :func:`stack_is_truncated` calls a user stack complete only when
its outermost frame is a known process or thread entry (``_start``, ``__libc_start_main``,
``__libc_start_call_main``, ``clone``/``clone3``, ``start_thread``, Go's ``runtime.goexit``, ...)
and every frame lies in a mapping. Where libc itself has no symbols (no debug file installed),
its entry functions cannot be recognized and those stacks are reported truncated too: wrongly
flagged is better than silently wrong.
"""

from __future__ import annotations

from pxq.agent.proc_maps import Mapping, parse_maps
from pxq.agent.symbols.debuginfo import read_elf_file
from pxq.agent.symbols.demangling import demangle
from pxq.agent.symbols.elf import ElfInfo, parse_elf
from pxq.agent.symbols.frames import KERNEL_SUFFIX, UserFrame, module_offset, stack_is_truncated
from pxq.agent.symbols.kernel import KernelSymbols, parse_kallsyms
from pxq.agent.symbols.perf_map import parse_perf_map
from pxq.agent.symbols.proc import ProcessMaps
from pxq.agent.symbols.symbolizer import Symbolizer

__all__ = [
    "KERNEL_SUFFIX",
    "ElfInfo",
    "KernelSymbols",
    "Mapping",
    "ProcessMaps",
    "Symbolizer",
    "UserFrame",
    "demangle",
    "module_offset",
    "parse_elf",
    "parse_kallsyms",
    "parse_maps",
    "parse_perf_map",
    "read_elf_file",
    "stack_is_truncated",
]
