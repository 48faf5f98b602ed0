"""Process identity from /proc: what a ``upid`` stands for, and who owns a socket.

Everything here tolerates processes that vanish between two reads: a function that cannot read
what it needs returns None (or skips that process) instead of raising.
"""

from __future__ import annotations

import os
import re
import socket
import struct
from pathlib import Path

PROC = Path("/proc")

# Container ids are 64 hex digits in the cgroup path: docker (/docker/<id>, docker-<id>.scope),
# containerd (cri-containerd-<id>.scope, /kubepods/.../<id>), cri-o (crio-<id>.scope).
_CONTAINER_ID = re.compile(r"(?:^|-)([0-9a-f]{64})(?:\.scope)?$")


def make_upid(pid: int, start_ticks: int, asid: int = 0) -> str:
    """Pixie's unique process id as pxq stores it: ``"<asid>:<pid>:<start_ticks>"``."""
    return f"{asid}:{pid}:{start_ticks}"


def parse_stat(text: str) -> dict | None:
    """Fields of a /proc/<pid>/stat line: comm, state, ppid, start_ticks (field 22).

    ``comm`` sits in parentheses and may itself hold spaces and parentheses, so the fields are
    counted from the last ')'.
    """
    open_paren, close_paren = text.find("("), text.rfind(")")
    if open_paren < 0 or close_paren < open_paren:
        return None
    rest = text[close_paren + 1 :].split()
    # rest[0] is field 3 (state), so field N is rest[N - 3].
    if len(rest) < 20:
        return None
    try:
        return {
            "pid": int(text[:open_paren]),
            "comm": text[open_paren + 1 : close_paren],
            "state": rest[0],
            "ppid": int(rest[1]),
            "start_ticks": int(rest[19]),
        }
    except ValueError:
        return None


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace")
    except OSError:  # gone, or not ours to read
        return None


def container_id(cgroup_text: str) -> str:
    """The container id in a /proc/<pid>/cgroup text, or "" for a process on the plain host."""
    for line in cgroup_text.split("\n"):  # not splitlines(): a cgroup name may hold U+2028, ...
        path = line.split(":", 2)[-1]
        for part in reversed(path.split("/")):
            found = _CONTAINER_ID.search(part)
            if found:
                return found.group(1)
    return ""


def process_info(pid: int) -> dict | None:
    """What pxq records about a process: pid, comm, cmdline, exe, start_ticks, container_id, pod,
    namespace. None when the process does not exist (or vanished while being read)."""
    base = PROC / str(pid)
    stat_text = _read(base / "stat")
    stat = parse_stat(stat_text) if stat_text is not None else None
    if stat is None:
        return None
    cmdline = _read(base / "cmdline")
    if cmdline is None:
        return None
    try:
        exe = os.readlink(base / "exe")
    except OSError:  # kernel threads, other users' processes, or gone
        exe = ""
    return {
        "pid": pid,
        "comm": stat["comm"],
        # No command line (a kernel thread, a zombie): the name in brackets, as ps shows it.
        "cmdline": cmdline.rstrip("\0").replace("\0", " ") or f"[{stat['comm']}]",
        "exe": exe,
        "start_ticks": stat["start_ticks"],
        "container_id": container_id(_read(base / "cgroup") or ""),
        # Pod and namespace come from Kubernetes metadata, which a plain host has none of.
        "pod": "",
        "namespace": "",
    }


# /proc/<pid>/stat's start time is in clock ticks (USER_HZ) since boot.
CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
_NS_PER_TICK = 1_000_000_000 // CLOCK_TICKS_PER_S
# Two BPF programs stamp the same fork microseconds apart: starts closer than this are one process.
_SAME_START_NS = 1_000_000


def boot_ns_to_ticks(boot_ns: int) -> int:
    """A CLOCK_BOOTTIME time in /proc's start_ticks unit, rounded down as the kernel's
    nsec_to_clock_t does (fs/proc/array.c)."""
    return boot_ns // _NS_PER_TICK


def _argv_text(argv: bytes) -> str:
    return argv.rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")


class ProcessIdentities:
    """The upid and identity of every process the collectors of one capture see, decided once per
    process and shared between them, so that one process has one upid in every table.

    At first sight /proc decides when it still has the process: its start_ticks, comm, cmdline,
    exe. A process already gone (a curl that ran for milliseconds) gets what the kernel told the
    collector: comm, argv from its exec, and its start from its fork in CLOCK_BOOTTIME ns, rounded
    down to clock ticks as /proc rounds it. The kernel stamps the fork a few microseconds after
    the start time /proc shows, so across a tick boundary (about 1 process in 2,000 at 100 Hz)
    the derived start_ticks is one more than /proc's would have been; the rule "/proc when
    reachable at first sight, else the kernel" makes that choice once, for every collector.
    """

    def __init__(self, asid: int = 0) -> None:
        self.asid = asid  # the agent short id in every upid made here (0: embedded)
        self._by_pid: dict[int, tuple[int, str]] = {}  # pid -> (kernel start ns or 0, upid)
        self.by_upid: dict[str, dict] = {}

    def identify(
        self,
        pid: int,
        *,
        comm: str = "",
        start_boot_ns: int = 0,
        argv: bytes = b"",
        exec_seen: bool = False,
        asid: int | None = None,
    ) -> str:
        """The upid of process ``pid`` as the kernel describes it (any of comm, start, argv may be
        unknown: "", 0, b""). ``exec_seen`` (or argv, which only an exec gives): ``comm`` is the
        program the process runs now, which replaces what an earlier call said."""
        known = self._by_pid.get(pid)
        if known is not None:
            known_start, upid = known
            if known_start == start_boot_ns or (
                known_start and start_boot_ns and abs(known_start - start_boot_ns) < _SAME_START_NS
            ):
                if exec_seen or argv:
                    self._refresh(upid, comm, argv)
                return upid
        kernel_ticks = boot_ns_to_ticks(start_boot_ns) if start_boot_ns else None
        info = process_info(pid)
        # The pid may have been reused since the kernel saw it: /proc's process is the one the
        # kernel meant when the starts agree (the kernel's stamp may fall one tick later).
        if (
            info is not None
            and kernel_ticks is not None
            and info["start_ticks"] not in (kernel_ticks, kernel_ticks - 1)
        ):
            info = None
        if info is None:
            info = {
                "pid": pid,
                "comm": comm,
                "cmdline": _argv_text(argv) or (f"[{comm}]" if comm else ""),
                "exe": "",
                "start_ticks": kernel_ticks or 0,
                "container_id": "",
                "pod": "",
                "namespace": "",
            }
        elif argv and info["cmdline"] == f"[{info['comm']}]":
            # An exited process waiting for its parent (a zombie) has no command line in /proc
            # any more; the kernel read it at exec.
            info = {**info, "cmdline": _argv_text(argv)}
        upid = make_upid(pid, info["start_ticks"], self.asid if asid is None else asid)
        self._by_pid[pid] = (start_boot_ns, upid)
        self.by_upid.setdefault(upid, info)
        return upid

    def _refresh(self, upid: str, comm: str, argv: bytes) -> None:
        """The process exec'd (maybe since it was identified): a new program, the same upid."""
        info = self.by_upid.get(upid)
        cmdline = _argv_text(argv) or (f"[{comm}]" if comm else "")
        if info is None or (comm in ("", info["comm"]) and cmdline in ("", info["cmdline"])):
            return
        fresh = process_info(info["pid"])
        if fresh is not None and fresh["start_ticks"] == info["start_ticks"]:
            self.by_upid[upid] = fresh
        else:
            self.by_upid[upid] = {
                **info,
                "comm": comm or info["comm"],
                "cmdline": cmdline or info["cmdline"],
                "exe": "",
            }


def upid_of(pid: int, asid: int = 0) -> str | None:
    """The upid of a live process, or None when it is gone."""
    stat_text = _read(PROC / str(pid) / "stat")
    stat = parse_stat(stat_text) if stat_text is not None else None
    return None if stat is None else make_upid(pid, stat["start_ticks"], asid)


def child_pids(ppid: int) -> list[int]:
    """Pids of the live children of ``ppid``."""
    children = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        text = _read(entry / "stat")
        stat = parse_stat(text) if text is not None else None
        if stat is not None and stat["ppid"] == ppid:
            children.append(stat["pid"])
    return sorted(children)


def _tcp4_hex(addr: str, port: int) -> str:
    """An IPv4 endpoint as /proc/net/tcp writes it: host-order hex of the address, ':', port."""
    (packed,) = struct.unpack("=I", socket.inet_aton(addr))
    return f"{packed:08X}:{port:04X}"


def tcp_socket_inode(local: tuple[str, int], remote: tuple[str, int]) -> int | None:
    """The inode of the IPv4 TCP socket with this local and remote endpoint, from /proc/net/tcp."""
    want_local, want_remote = _tcp4_hex(*local), _tcp4_hex(*remote)
    text = _read(PROC / "net" / "tcp") or ""
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) > 9 and fields[1] == want_local and fields[2] == want_remote:
            inode = int(fields[9])
            if inode:
                return inode
    return None


def socket_owner(inode: int, candidates: list[int]) -> int | None:
    """Which of ``candidates`` has socket ``inode`` open (first match), or None."""
    target = f"socket:[{inode}]"
    for pid in candidates:
        fd_dir = PROC / str(pid) / "fd"
        try:
            fds = list(fd_dir.iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(fd) == target:
                    return pid
            except OSError:
                continue
    return None
