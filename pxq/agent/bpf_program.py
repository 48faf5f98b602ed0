"""Load pxq's BPF C programs (``bpf/*.c``) with bcc, and show exactly what gets loaded.

A :class:`BpfProgram` is the program text with its local ``#include "..."`` files inlined, plus the
``-D`` flags it is compiled with; :meth:`BpfProgram.explain` prints both (what ``pxq explain
--bpf`` shows, like the ``--ebpf`` flag of bcc's tools). :func:`layout_asserts` turns a ctypes
Structure into ``_Static_assert`` lines, so that a C event struct and the Python reader that
decodes it cannot drift apart: the program stops compiling instead.

:func:`load` checks the machine first and turns bcc's failures into :class:`BpfError` messages
that say what to do: not root, tracefs missing, kernel headers missing, a compile or verifier
error (with clang's or the verifier's own words).
"""

from __future__ import annotations

import contextlib
import ctypes as ct
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pxq.errors import PxqError
from pxq.resources import data_dir

TRACEFS = Path("/sys/kernel/tracing")
CAP_PERFMON = 38
CAP_BPF = 39

SETUP_HINT = "run tools/setup.sh as root (it links kernel headers for bcc and mounts tracefs)"
HEADERS_HINT = (
    "bcc compiles against kernel headers: link Debian's linux-headers as /lib/modules/$(uname -r)/build "
    "and .../source (tools/setup.sh does this)"
)

_INCLUDE = re.compile(r'^#include "([^"]+)"[ \t]*$', re.M)
_DEFINE = re.compile(r"^#define (PXQ_[A-Z0-9_]+) (-?\d+)\b", re.M)

_CTYPES_C = {
    ct.c_uint8: "unsigned char",
    ct.c_int8: "signed char",
    ct.c_uint16: "unsigned short",
    ct.c_int16: "short",
    ct.c_uint32: "unsigned int",
    ct.c_int32: "int",
    ct.c_uint64: "unsigned long long",
    ct.c_int64: "long long",
}


class BpfError(PxqError):
    """eBPF cannot be used here, or a program failed to compile, load or attach."""

    exit_code = 3


@dataclass(frozen=True)
class BpfProgram:
    """A BPF C program as bcc will compile it."""

    name: str
    text: str
    cflags: tuple[str, ...]
    notes: tuple[str, ...] = ()  # what else the loader does, e.g. map entries written at start

    def explain(self) -> str:
        """The program with its compile flags (and notes), as C comments on top."""
        flags = " ".join(self.cflags) or "(none)"
        notes = "".join(f"// {note}\n" for note in self.notes)
        return f"// {self.name}\n// bcc cflags: {flags}\n{notes}{self.text}"


def bpf_source(filename: str) -> str:
    """The text of ``bpf/<filename>`` with its local includes (``#include "x.h"``) inlined."""
    base = data_dir("bpf")

    def inline(match: re.Match) -> str:
        name = match.group(1)
        return f"/* ---- {name} ---- */\n{(base / name).read_text()}/* ---- end of {name} ---- */"

    return _INCLUDE.sub(inline, (base / filename).read_text())


def header_constants(filename: str) -> dict[str, int]:
    """The ``#define PXQ_NAME number`` constants of ``bpf/<filename>``."""
    text = (data_dir("bpf") / filename).read_text()
    return {name: int(value) for name, value in _DEFINE.findall(text)}


def counter_names(constants: dict[str, int], prefix: str) -> tuple[str, ...]:
    """Names of the ``<prefix>NAME number`` constants (say ``PXQ_DROP_``), lower-cased without the
    prefix, in index order; ``<prefix>COUNT`` must say how many there are."""
    names = sorted(
        (value, name) for name, value in constants.items() if name.startswith(prefix) and name != f"{prefix}COUNT"
    )
    if [value for value, _ in names] != list(range(constants[f"{prefix}COUNT"])):
        raise ValueError(f"{prefix}* constants are not the indexes 0..{prefix}COUNT-1")
    return tuple(name.removeprefix(prefix).lower() for _, name in names)


def layout_asserts(c_struct: str, structure: type[ct.Structure]) -> str:
    """``_Static_assert`` lines pinning ``struct <c_struct>`` to the layout of a ctypes Structure:
    total size, and every field's offset and size."""
    lines = [
        f"/* {c_struct} must match the reader's ctypes {structure.__name__} ({ct.sizeof(structure)} bytes). */",
        f"_Static_assert(sizeof(struct {c_struct}) == {ct.sizeof(structure)},"
        f' "{c_struct}: size differs from the reader");',
    ]
    for name, *_ in structure._fields_:
        field = getattr(structure, name)
        lines.append(
            f"_Static_assert(__builtin_offsetof(struct {c_struct}, {name}) == {field.offset} && "
            f"sizeof(((struct {c_struct} *)0)->{name}) == {field.size}, "
            f'"{c_struct}.{name}: offset or size differs from the reader");'
        )
    return "\n".join(lines) + "\n"


def build_program(
    filename: str, defines: dict[str, int | str], extra: str = "", notes: tuple[str, ...] = ()
) -> BpfProgram:
    """``bpf/<filename>`` with ``extra`` text appended, to be compiled with ``-DNAME=value``."""
    text = bpf_source(filename)
    if extra:
        text = f"{text}\n{extra}"
    cflags = tuple(f"-D{name}={value}" for name, value in defines.items())
    return BpfProgram(filename, text, cflags, notes)


def possible_cpus() -> int:
    """How many CPU ids the kernel may use (``/sys/devices/system/cpu/possible``, e.g. ``0-3``)."""
    try:
        text = Path("/sys/devices/system/cpu/possible").read_text().strip()
    except OSError:
        return os.cpu_count() or 1
    highest = 0
    for part in text.split(","):
        highest = max(highest, int(part.split("-")[-1]))
    return highest + 1


def _effective_caps() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    except (OSError, ValueError):
        pass
    return 0


def bpf_unavailable_reason() -> str | None:
    """Why this process cannot load tracing BPF programs, or None when it can."""
    if os.geteuid() != 0:
        caps = _effective_caps()
        if not (caps >> CAP_BPF & 1 and caps >> CAP_PERFMON & 1):
            return "tracing with eBPF needs root (or CAP_BPF and CAP_PERFMON): run pxq with sudo"
    try:
        import bcc  # noqa: F401
    except Exception as exc:  # ImportError, or libbcc.so failing to load
        return f"bcc is not importable ({type(exc).__name__}: {exc}); {SETUP_HINT}"
    if not (TRACEFS / "events" / "syscalls").is_dir():
        return f"tracefs is not mounted at {TRACEFS} (mount -t tracefs nodev {TRACEFS}); {SETUP_HINT}"
    return None


@contextlib.contextmanager
def _captured_stderr():
    """Collect what libbcc (clang, the verifier) writes to file descriptor 2 meanwhile."""
    out: list[str] = []
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        saved = os.dup(2)
        os.dup2(tmp.fileno(), 2)
        try:
            yield out
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            out.append(tmp.read().decode(errors="replace"))


def _tail(text: str, lines: int = 40) -> str:
    kept = [line for line in text.strip().splitlines() if line.strip()]
    if len(kept) > lines:
        kept = ["..."] + kept[-lines:]
    return "\n".join(kept)


def _explain_failure(program: BpfProgram, exc: Exception, log: str) -> BpfError:
    message = str(exc).split("\n", 1)[0]
    if "Unable to find kernel headers" in log or "kconfig.h" in log or "/build): No such file" in log:
        return BpfError(f"{program.name}: bcc found no kernel headers.\n{_tail(log)}\nhint: {HEADERS_HINT}")
    if "Failed to compile" in message:
        return BpfError(f"{program.name} did not compile:\n{_tail(log)}\nhint: {HEADERS_HINT}")
    if "attach" in message and "tracepoint" in message:
        return BpfError(f"{program.name}: {message}\nhint: is tracefs mounted at {TRACEFS}? {SETUP_HINT}")
    if "Failed to load" in message:
        return BpfError(f"{program.name}: the kernel refused the program: {message}\n{_tail(log)}")
    return BpfError(f"{program.name}: {message}\n{_tail(log)}")


def load(program: BpfProgram):
    """Compile, load and attach (bcc attaches TRACEPOINT_PROBEs itself) ``program``."""
    reason = bpf_unavailable_reason()
    if reason is not None:
        raise BpfError(reason)
    from bcc import BPF

    with _captured_stderr() as log:
        try:
            bpf = BPF(text=program.text.encode(), cflags=list(program.cflags))
        except Exception as exc:  # bcc raises bare Exception for every failure
            failure = exc
        else:
            failure = None
    if failure is not None:
        raise _explain_failure(program, failure, "".join(log)) from failure
    _release_compiler_memory()
    return bpf


def allow_pids(table, pids) -> None:
    """Add ``pids`` to a ``u32 -> u8`` pid-set map (the ``allowed_pids`` of a FILTER_PIDS program)."""
    for pid in sorted(pids):
        table[ct.c_uint32(pid)] = ct.c_uint8(1)


def load_with_maps(program: BpfProgram, names: tuple[str, ...], pids=None, pid_map: str = "allowed_pids"):
    """:func:`load` the program and look up its maps ``names``; write ``pids`` into ``pid_map``.
    Returns ``(bpf, {name: table})``; on any failure the program is detached again."""
    bpf = load(program)
    try:
        tables = {name: bpf[name.encode()] for name in names}
        if pids:
            allow_pids(tables.get(pid_map) or bpf[pid_map.encode()], pids)
    except Exception:
        bpf.cleanup()
        raise
    return bpf, tables


def _release_compiler_memory() -> None:
    """Hand the heap clang/LLVM used while compiling back to the system (about 20 MB RSS)."""
    with contextlib.suppress(OSError, AttributeError):
        ct.CDLL("libc.so.6").malloc_trim(0)


# madvise(2) advice: reclaim these pages now (Linux >= 5.4); drop this process's mappings of them.
MADV_PAGEOUT, MADV_DONTNEED = 21, 4
# The BPF compiler's code, mapped from these libraries (through bcc).
_COMPILER_LIBRARIES = re.compile(r"/lib(LLVM|clang)[^/]*\.so")


def release_compiler_pages() -> int:
    """Hand back the pages of the BPF compiler's code (libLLVM, libclang: about 80 MB of RSS)
    that compiling the collectors' programs brought in; nothing runs that code again until the
    next compile. A read-only mapping holding no private copy of a page (every page as in the
    library file: its code, not the relocated data) is dropped from this process (MADV_DONTNEED):
    MADV_PAGEOUT alone skips a page another process maps too (another agent, any LLVM user), and
    such a page stayed in this process's RSS. The others are only reclaimed (MADV_PAGEOUT). A page
    needed again is read back from the library file either way. Returns the bytes advised (0 where
    it is not supported)."""
    try:
        madvise = ct.CDLL(None, use_errno=True).madvise
        madvise.argtypes = [ct.c_void_p, ct.c_size_t, ct.c_int]
        smaps = Path("/proc/self/smaps").read_text()
    except (OSError, AttributeError):
        return 0
    advised = 0
    # The compiler library mapping being read: [start, end, no private page so far].
    mapping: list | None = None
    for line in smaps.split("\n"):  # not splitlines(): a path may hold U+2028, \x0c, ...
        fields = line.split()
        if len(fields) >= 5 and "-" in fields[0] and ":" not in fields[0]:  # a mapping's first line
            start, end = (int(x, 16) for x in fields[0].split("-"))
            found = len(fields) >= 6 and _COMPILER_LIBRARIES.search(fields[5])
            mapping = [start, end, "w" not in fields[1]] if found else None
        elif mapping is not None and fields[:1] == ["Anonymous:"]:  # private copies of pages
            mapping[2] = mapping[2] and fields[1] == "0"
        elif mapping is not None and fields[:1] == ["Swap:"]:  # (after Anonymous:) swapped-out ones
            start, end, clean = mapping
            advice = MADV_DONTNEED if clean and fields[1] == "0" else MADV_PAGEOUT
            if madvise(start, end - start, advice) == 0:
                advised += end - start
            mapping = None
    return advised
