"""pxq.agent.procinfo against real processes in /proc."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from pxq.agent.procinfo import (
    child_pids,
    container_id,
    make_upid,
    parse_stat,
    process_info,
    socket_owner,
    tcp_socket_inode,
    upid_of,
)

SLEEP = "/bin/sleep"


@pytest.fixture
def weird_child(tmp_path):
    """A real process whose comm holds spaces and parentheses (a renamed link to sleep)."""
    link = tmp_path / "a b) (c"
    link.symlink_to(SLEEP)
    proc = subprocess.Popen([str(link), "30"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def _proc_field(pid: int, name: str) -> str:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(name + ":"):
            return line.split(":", 1)[1].strip()
    raise KeyError(name)


def test_process_info_of_this_process():
    info = process_info(os.getpid())
    assert info is not None
    assert info["pid"] == os.getpid()
    assert info["comm"] == _proc_field(os.getpid(), "Name")
    assert info["exe"] == os.path.realpath(sys.executable)
    assert "pytest" in info["cmdline"] and "\0" not in info["cmdline"]
    assert info["start_ticks"] > 0
    assert (info["pod"], info["namespace"]) == ("", "")
    assert isinstance(info["container_id"], str)


def test_comm_with_spaces_and_parentheses(weird_child):
    info = process_info(weird_child.pid)
    assert info is not None
    assert info["comm"] == "a b) (c"
    assert info["exe"] == os.path.realpath(SLEEP)
    assert info["cmdline"].endswith("a b) (c 30")
    stat = parse_stat(open(f"/proc/{weird_child.pid}/stat").read())
    assert stat is not None and stat["ppid"] == os.getpid()  # fields after comm line up
    # The child started after this process, in clock ticks since boot.
    assert info["start_ticks"] >= process_info(os.getpid())["start_ticks"]
    assert upid_of(weird_child.pid) == make_upid(weird_child.pid, info["start_ticks"])
    assert weird_child.pid in child_pids(os.getpid())


def test_vanished_process_gives_none():
    proc = subprocess.Popen([SLEEP, "0"])
    proc.wait()
    assert process_info(proc.pid) is None
    assert upid_of(proc.pid) is None


def test_parse_stat_counts_fields_from_the_last_parenthesis():
    rest = " ".join(["S", "1"] + ["0"] * 17 + ["12345"] + ["0"] * 10)
    stat = parse_stat(f"77 (x) (y z)) {rest}")
    assert stat == {"pid": 77, "comm": "x) (y z)", "state": "S", "ppid": 1, "start_ticks": 12345}
    assert parse_stat("garbage") is None
    assert parse_stat("1 (short) S 1") is None


def test_make_upid():
    assert make_upid(1234, 5678) == "0:1234:5678"
    assert make_upid(1, 2, asid=7) == "7:1:2"


@pytest.mark.parametrize(
    "cgroup, expected",
    [
        ("0::/init.scope\n", ""),
        ("0::/\n", ""),
        ("0::/system.slice/docker-" + "a" * 64 + ".scope\n", "a" * 64),
        ("12:pids:/docker/" + "b" * 64 + "\n11:cpu:/docker/" + "b" * 64 + "\n", "b" * 64),
        ("0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1a2b.slice/cri-containerd-" + "c" * 64 + ".scope\n", "c" * 64),
        ("0::/kubepods/burstable/pod5f3e/" + "d" * 64 + "\n", "d" * 64),
        ("0::/machine.slice/crio-" + "e" * 64 + ".scope\n", "e" * 64),
        ("0::/user.slice/" + "f" * 63 + "\n", ""),
    ],
)
def test_container_id(cgroup, expected):
    assert container_id(cgroup) == expected


def test_socket_owner_finds_the_accepting_process():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    client = socket.create_connection(server.getsockname())
    accepted, _ = server.accept()
    try:
        inode = tcp_socket_inode(local=server.getsockname(), remote=client.getsockname())
        assert inode is not None
        assert socket_owner(inode, [os.getpid()]) == os.getpid()
        assert socket_owner(inode, [1]) is None
        assert tcp_socket_inode(local=("127.0.0.1", 1), remote=("127.0.0.1", 2)) is None
    finally:
        for s in (accepted, client, server):
            s.close()


def test_child_pids_sees_a_new_child_and_forgets_it():
    proc = subprocess.Popen([SLEEP, "30"])
    try:
        assert proc.pid in child_pids(os.getpid())
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 5
    while proc.pid in child_pids(os.getpid()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.pid not in child_pids(os.getpid())
