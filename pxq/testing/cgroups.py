"""Cgroup v2 directories of a test's own (needs root): made, and removed after with their
processes moved back to the root cgroup first (a cgroup with processes in it cannot be removed)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from pxq.testing.retry import remove_until_deadline


def remove_cgroup(path: Path) -> None:
    """Move ``path``'s processes to the root cgroup and remove it; a process exiting meanwhile
    keeps the directory busy for a moment, so the removal is retried for up to 10 s."""
    from pxq.agent.socket_tracer import cgroup_v2_root

    if not path.exists():
        return
    root_procs = cgroup_v2_root() / "cgroup.procs"
    for pid in (path / "cgroup.procs").read_text().split():
        with contextlib.suppress(OSError):  # the process is gone
            root_procs.write_text(pid)
    remove_until_deadline(path.rmdir, timeout=10, interval=0.05)


@contextlib.contextmanager
def temporary_cgroup(name: str) -> Iterator[Path]:
    """A cgroup v2 directory ``name`` under the root, removed on exit (see :func:`remove_cgroup`)."""
    from pxq.agent.socket_tracer import cgroup_v2_root

    path = cgroup_v2_root() / name
    path.mkdir()
    try:
        yield path
    finally:
        remove_cgroup(path)
