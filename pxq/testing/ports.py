"""Loopback ports for test servers, and the start loop the servers in pxq.testing.servers share."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port on ``host`` that nothing listens on right now (the kernel picks it).

    Another process may take it before the caller binds it; callers that cannot bind port 0
    themselves (nginx, redis-server, postgres) retry on "address in use": :func:`serve_on_free_port`.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_for_port(port: int, host: str = LOOPBACK, timeout: float = 10.0, alive=None) -> bool:
    """Poll until something accepts TCP connections on ``host:port``; False after ``timeout``
    seconds or as soon as ``alive()`` (when given) returns False."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            return False
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


TCP_LISTEN = "0A"  # the st column of /proc/net/tcp for a listening socket


def listening_inodes(pid: int, port: int) -> set[int]:
    """The inodes of the TCP sockets listening on ``port`` in the network namespace of ``pid``
    (/proc/PID/net/tcp and tcp6; any local address)."""
    inodes = set()
    for name in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/net/{name}").read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == TCP_LISTEN and int(fields[1].rpartition(":")[2], 16) == port:
                    inodes.add(int(fields[9]))
    return inodes


def listens(pid: int, port: int) -> bool:
    """Whether process ``pid`` itself holds a socket listening on TCP ``port``: a connection that
    succeeds may reach another process that took the port first."""
    inodes = listening_inodes(pid, port)
    if not inodes:
        return False
    with contextlib.suppress(OSError):  # the process is gone
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:[") and int(target[8:-1]) in inodes:
                    return True
    return False


def wait_until_listening(proc: subprocess.Popen, port: int, host: str = LOOPBACK, timeout: float = 10.0) -> bool:
    """Poll until ``proc`` itself listens on ``port`` and accepts connections on ``host:port``;
    False after ``timeout`` seconds or as soon as it has exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if listens(proc.pid, port):
            return wait_for_port(port, host, max(deadline - time.monotonic(), 0.1), alive=lambda: proc.poll() is None)
        time.sleep(0.02)
    return False


@contextlib.contextmanager
def serve_on_free_port(
    name: str,
    start: Callable[[int], subprocess.Popen],
    stop: Callable[[subprocess.Popen], None],
    failure_log: Callable[[], str],
    error: type[Exception],
    *,
    attempts: int = 3,
    timeout: float = 10.0,
    port_lost: tuple[str, ...] = ("Address already in use",),
) -> Iterator[tuple[subprocess.Popen, int]]:
    """Start a server with ``start(port)`` on a free loopback port and wait until it listens there
    itself; yield its process and the port; ``stop`` it on exit. A start that lost the port to
    another process (its ``failure_log()`` says one of ``port_lost``) is tried again on another
    port, up to ``attempts`` times; any other failure raises ``error`` with that log."""
    proc: subprocess.Popen | None = None
    log = ""
    try:
        for _ in range(attempts):
            port = free_port()
            proc = start(port)
            if wait_until_listening(proc, port, timeout=timeout):
                yield proc, port
                return
            stop(proc)
            log = failure_log()
            if not any(words in log for words in port_lost):  # a real failure, not a lost port race
                raise error(f"{name} did not start on {LOOPBACK}:{port}:\n{log}")
        raise error(f"{name} could not bind a free loopback port in {attempts} attempts:\n{log}")
    finally:
        if proc is not None:
            stop(proc)
