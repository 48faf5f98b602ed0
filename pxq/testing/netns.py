"""A "node" on this machine for live multi-agent tests: its own network namespace (a veth pair to
the host, its own ``10.77.N.0/24``: the host side ``.1``, the node side ``.2``) and its own cgroup
v2 directory. Processes started with :meth:`Node.spawn` run in the namespace (``nsenter --net``:
only the network namespace changes, so /sys, the cgroup tree and tracefs stay the host's) and in
the cgroup from before their first instruction (the child joins it before it execs).

Needs root. Every name starts with the given prefix, so cleanup only ever touches this test's
own namespaces, links and cgroups; :func:`network_node` removes them in ``finally``."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pxq.testing.cgroups import remove_cgroup


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


@dataclass(frozen=True)
class Node:
    name: str  # the namespace's name (ip netns) and the cgroup directory's
    host_ip: str  # the host's end of the veth pair
    ip: str  # the node's own address (its end of the veth pair): where its agent listens
    cgroup: Path

    @property
    def prefix(self) -> list[str]:
        """A command prefix that runs the rest in this node's network namespace (same pid)."""
        return ["nsenter", f"--net=/run/netns/{self.name}"]

    def _join_cgroup(self) -> None:  # runs in the child between fork and exec
        (self.cgroup / "cgroup.procs").write_text("0")

    def spawn(self, argv: Sequence[str], **popen: Any) -> subprocess.Popen[str]:
        """``argv`` in this node's namespace and cgroup (its pid is the Popen's: nsenter execs)."""
        return subprocess.Popen([*self.prefix, *argv], preexec_fn=self._join_cgroup, text=True, **popen)

    def pids(self) -> set[int]:
        return {int(pid) for pid in (self.cgroup / "cgroup.procs").read_text().split()}


@contextlib.contextmanager
def network_node(prefix: str, index: int, subnet: int) -> Iterator[Node]:
    """Node ``prefix-PID-index`` (namespace and cgroup; the veth ends ``prefix-index{h,n}``, as
    interface names are short): ``10.77.<subnet>.1`` on the host side, ``.2`` in the namespace,
    loopback up there too; all removed afterwards, even on failure."""
    from pxq.agent.socket_tracer import cgroup_v2_root

    if os.geteuid() != 0:
        raise PermissionError("network namespaces and cgroups need root")
    name = f"{prefix}-{os.getpid()}-{index}"
    host_link, node_link = f"{prefix}-{index}h", f"{prefix}-{index}n"
    if len(host_link) > 15:  # IFNAMSIZ - 1
        raise ValueError(f"interface name {host_link!r} is longer than 15 characters: use a shorter prefix")
    host_ip, node_ip = f"10.77.{subnet}.1", f"10.77.{subnet}.2"
    taken = _ip("-o", "addr", "show").stdout
    if f" 10.77.{subnet}." in taken:
        raise RuntimeError(f"10.77.{subnet}.0/24 is already used on this host:\n{taken}")
    root = cgroup_v2_root()
    cgroup = root / name
    try:
        _ip("netns", "add", name)
        _ip("link", "add", host_link, "type", "veth", "peer", "name", node_link, "netns", name)
        _ip("addr", "add", f"{host_ip}/24", "dev", host_link)
        _ip("link", "set", host_link, "up")
        inside = ("netns", "exec", name, "ip")
        _ip(*inside, "addr", "add", f"{node_ip}/24", "dev", node_link)
        _ip(*inside, "link", "set", node_link, "up")
        _ip(*inside, "link", "set", "lo", "up")
        cgroup.mkdir()
        yield Node(name, host_ip, node_ip, cgroup)
    finally:
        try:
            remove_cgroup(cgroup)
        finally:
            _ip("netns", "del", name, check=False)  # takes the veth pair with it
            _ip("link", "del", host_link, check=False)
