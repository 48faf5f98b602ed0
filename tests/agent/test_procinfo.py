"""pxq.agent.procinfo against real processes in /proc."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pxq.agent.procinfo import (
    ProcessIdentities,
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
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
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
    stat = parse_stat(Path(f"/proc/{weird_child.pid}/stat").read_text())
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
        (
            "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1a2b.slice/cri-containerd-"
            + "c" * 64
            + ".scope\n",
            "c" * 64,
        ),
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


# -- ProcessIdentities: /proc at first sight, else what the kernel said ------------------------
NS_PER_TICK = 1_000_000_000 // os.sysconf("SC_CLK_TCK")
PF_KTHREAD = 0x00200000  # include/linux/sched.h: the task is a kernel thread


def _start_ticks(pid: int) -> int:
    """Field 22 of /proc/<pid>/stat, counted after the comm's closing parenthesis."""
    return int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[19])


def _gone_pid() -> int:
    proc = subprocess.Popen([SLEEP, "0"])
    proc.wait()
    return proc.pid


@pytest.fixture
def sleeper():
    proc = subprocess.Popen([SLEEP, "30"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def test_a_live_process_is_named_from_proc(sleeper):
    ticks = _start_ticks(sleeper.pid)
    identities = ProcessIdentities()
    # The kernel stamps the fork within the tick /proc shows (or just after it).
    for stamp in (ticks * NS_PER_TICK + NS_PER_TICK // 2, (ticks + 1) * NS_PER_TICK + 1000):
        upid = ProcessIdentities().identify(sleeper.pid, comm="bash", start_boot_ns=stamp)
        assert upid == f"0:{sleeper.pid}:{ticks}"
    upid = identities.identify(sleeper.pid, comm="bash", start_boot_ns=ticks * NS_PER_TICK + 5)
    info = identities.by_upid[upid]
    assert (info["comm"], info["cmdline"], info["exe"]) == ("sleep", f"{SLEEP} 30", os.path.realpath(SLEEP))


def test_a_gone_process_is_named_from_the_kernel():
    pid = _gone_pid()
    identities = ProcessIdentities()
    start_ns = 123_456_789_012_345
    upid = identities.identify(pid, comm="curl", start_boot_ns=start_ns, argv=b"curl\0-s\0http://h/x?a=1\0")
    assert upid == f"0:{pid}:{start_ns * os.sysconf('SC_CLK_TCK') // 10**9}"
    assert identities.by_upid[upid] == {
        "pid": pid,
        "comm": "curl",
        "cmdline": "curl -s http://h/x?a=1",
        "exe": "",
        "start_ticks": start_ns * os.sysconf("SC_CLK_TCK") // 10**9,
        "container_id": "",
        "pod": "",
        "namespace": "",
    }
    # No exec seen (it forked from a process the tracer did not see exec): the name in brackets.
    other = ProcessIdentities()
    assert other.by_upid[other.identify(pid, comm="worker", start_boot_ns=start_ns)]["cmdline"] == "[worker]"
    # Nothing known at all: the old behaviour, start time 0 and no name.
    nothing = ProcessIdentities()
    upid = nothing.identify(pid)
    assert upid == f"0:{pid}:0" and nothing.by_upid[upid]["comm"] == ""


def test_a_zombie_keeps_the_command_line_the_kernel_read_at_exec():
    """Exited, not yet waited for: /proc still has its stat (comm, start) but no command line."""
    proc = subprocess.Popen([SLEEP, "0"])
    deadline = time.monotonic() + 10
    while _proc_field(proc.pid, "State")[0] != "Z" and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        assert _proc_field(proc.pid, "State")[0] == "Z"
        ticks = _start_ticks(proc.pid)
        identities = ProcessIdentities()
        upid = identities.identify(
            proc.pid, comm="sleep", start_boot_ns=ticks * NS_PER_TICK + 10, argv=SLEEP.encode() + b"\0" + b"0\0"
        )
        assert upid == f"0:{proc.pid}:{ticks}"
        assert (identities.by_upid[upid]["comm"], identities.by_upid[upid]["cmdline"]) == ("sleep", f"{SLEEP} 0")
    finally:
        proc.wait()


def test_a_reused_pid_is_not_the_process_the_kernel_meant(sleeper):
    """The kernel saw pid N start long before the process /proc now has under N: not the same."""
    ticks = _start_ticks(sleeper.pid)
    identities = ProcessIdentities()
    upid = identities.identify(sleeper.pid, comm="curl", start_boot_ns=(ticks - 500) * NS_PER_TICK)
    assert upid == f"0:{sleeper.pid}:{ticks - 500}"
    assert identities.by_upid[upid]["comm"] == "curl"


def test_one_process_has_one_upid_for_every_collector():
    """Two BPF programs stamp the same fork microseconds apart, here across a tick boundary: the
    process gets the upid decided first, in both."""
    pid = _gone_pid()
    identities = ProcessIdentities()
    boundary = 987_654 * NS_PER_TICK
    first = identities.identify(pid, comm="curl", start_boot_ns=boundary - 200_000)
    second = identities.identify(pid, comm="curl", start_boot_ns=boundary + 200_000)
    assert first == second == f"0:{pid}:{987_653}"
    # A process forked later under the same pid is another process.
    assert identities.identify(pid, comm="curl", start_boot_ns=boundary + 5 * NS_PER_TICK) == f"0:{pid}:{987_659}"


def test_an_exec_renames_the_process_under_the_same_upid():
    pid = _gone_pid()
    identities = ProcessIdentities()
    start_ns = 55_555 * NS_PER_TICK
    upid = identities.identify(pid, comm="python3", start_boot_ns=start_ns)
    assert identities.identify(pid, comm="spin_fp", start_boot_ns=start_ns, exec_seen=True) == upid
    assert (identities.by_upid[upid]["comm"], identities.by_upid[upid]["cmdline"]) == ("spin_fp", "[spin_fp]")
    # Without an exec, another thread's comm does not rename the process.
    identities.identify(pid, comm="worker-1", start_boot_ns=start_ns)
    assert identities.by_upid[upid]["comm"] == "spin_fp"


def _kernel_thread() -> int:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[6]) & PF_KTHREAD:  # field 9: flags
                return int(entry)
    raise AssertionError("no kernel thread in /proc")


def test_a_kernel_thread_is_shown_as_its_name_in_brackets_like_ps():
    pid = _kernel_thread()
    comm = Path(f"/proc/{pid}/comm").read_text().rstrip("\n")
    info = process_info(pid)
    assert (info["comm"], info["cmdline"], info["exe"]) == (comm, f"[{comm}]", "")
    ps = subprocess.run(["ps", "-o", "args=", "-p", str(pid)], capture_output=True, text=True, check=True)
    assert ps.stdout.strip() == info["cmdline"]


# -- the kernel's word, live: a real curl gone before the tracer reads its events ---------------
CURL = "/usr/bin/curl"


@pytest.mark.kernel
def test_a_curl_gone_before_the_tracer_reads_is_named_from_the_kernel():
    """The socket tracer takes its events only when polled: a curl that ran and was reaped before
    that is gone from /proc, and its rows still carry its name, command line and start time."""
    from pxq.agent.socket_tracer import SocketTracer
    from pxq.testing.kernel import require_bpf
    from pxq.testing.workload import python_backend

    require_bpf()
    with python_backend() as backend:
        backend_ticks = _start_ticks(backend.pid)
        tracer = SocketTracer(body_limit=1024).start()  # every process: curl's pid is not known yet
        try:
            url = f"{backend.base_url}/api/items?who=curl"
            argv = [CURL, "-s", "-o", "/dev/null", url]
            for _ in range(5):  # its start time is read from /proc while it runs (it may be quicker)
                curl = subprocess.Popen(argv)
                try:
                    ticks = _start_ticks(curl.pid)
                except OSError:
                    ticks = None
                assert curl.wait(timeout=30) == 0
                if ticks is not None:
                    break
            assert ticks is not None, "curl always exited before its start time could be read"
            assert not os.path.exists(f"/proc/{curl.pid}")  # reaped: /proc cannot name it
            rows: list[dict] = []
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not any(r["upid"].split(":")[1] == str(curl.pid) for r in rows):
                tracer.poll(100)
                rows += tracer.drain().to_pylist()
            processes = tracer.processes()
        finally:
            tracer.stop()
        rows += tracer.drain().to_pylist()
    mine = [r for r in rows if r["upid"].split(":")[1] == str(curl.pid)]
    assert [(r["req_path"], r["trace_role"]) for r in mine] == [("/api/items?who=curl", 1)]
    (upid,) = {r["upid"] for r in mine}
    # The kernel stamps the fork microseconds after the start /proc showed: across a tick
    # boundary its start_ticks is one more (documented in ProcessIdentities).
    assert upid in (f"0:{curl.pid}:{ticks}", f"0:{curl.pid}:{ticks + 1}")
    info = processes[upid]
    assert (info["comm"], info["cmdline"], info["start_ticks"]) == ("curl", " ".join(argv), int(upid.split(":")[2]))
    # Its server, alive throughout, is named from /proc.
    server = [r for r in rows if r["upid"].split(":")[1] == str(backend.pid)]
    assert [r["req_path"] for r in server] == ["/api/items?who=curl"]
    assert server[0]["upid"] == f"0:{backend.pid}:{backend_ticks}"
    assert processes[server[0]["upid"]]["cmdline"] == " ".join(backend.process.args)
