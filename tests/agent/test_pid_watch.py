"""The processes a script restricts collection to (``--pid``): a pid with no running process is
said before anything is attached, one that exits during the window is said after it. Real
processes, no eBPF needed (the agent's live path is in test_live_run.py)."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from pxq.agent.collector import AgentError, AgentOptions
from pxq.agent.embedded import EmbeddedAgent, PidWatch
from pxq.plan.manifest import manifest_for_tables

SLEEP = "/bin/sleep"


def _manifest(*pids: int):
    return manifest_for_tables(["stack_traces.beta"], now_ns=time.time_ns(), pids=pids)


def _unused_pid() -> int:
    """A pid no process has now (the highest allowed pid, below any the kernel has handed out here)."""
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    for pid in range(pid_max - 1, 1, -1):
        try:
            os.stat(f"/proc/{pid}/stat")
        except FileNotFoundError:
            return pid
    raise AssertionError("no free pid")


def test_missing_pid_is_said_at_once():
    warnings: list[str] = []
    missing = _unused_pid()
    with subprocess.Popen([SLEEP, "30"]) as alive:
        try:
            watch = PidWatch(_manifest(alive.pid, missing), warnings.append)
        finally:
            alive.kill()
    assert warnings == [f"no running process with pid {missing}: nothing is collected from it (is the pid right?)"]
    assert list(watch.alive) == [alive.pid]


def test_pid_that_exits_during_the_window_is_said_after_it():
    warnings: list[str] = []
    with subprocess.Popen([SLEEP, "0.2"]) as short, subprocess.Popen([SLEEP, "30"]) as long:
        try:
            watch = PidWatch(_manifest(short.pid, long.pid), warnings.append)
            assert warnings == []
            watch.check(0.1)
            assert watch.exited == {}
            # Wait until it has exited, without reaping it: a zombie has exited too.
            os.waitid(os.P_PID, short.pid, os.WEXITED | os.WNOWAIT)
            watch.check(0.3)  # within CHECK_INTERVAL_S of the last check: not looked at yet
            assert watch.exited == {}
            watch.check(0.7)
            watch.report(1.5)
        finally:
            long.kill()
    assert watch.exited == {short.pid: 0.7}
    assert warnings == [
        f"pid {short.pid} exited before the window ended (gone about 0.7s into 1.5s); what it did until then is shown"
    ]


def test_checks_during_the_window_poll_pidfds_instead_of_reading_proc(monkeypatch):
    """Twice a second during the window: an exit is seen through the process's pidfd (zombie or
    reaped), without reading /proc/<pid>/stat of every watched process."""
    import pxq.agent.embedded as embedded

    warnings: list[str] = []
    with subprocess.Popen([SLEEP, "0.2"]) as short, subprocess.Popen([SLEEP, "30"]) as long:
        try:
            watch = PidWatch(_manifest(short.pid, long.pid), warnings.append)
            read: list[int] = []
            real = embedded._running_identity
            monkeypatch.setattr(embedded, "_running_identity", lambda pid: read.append(pid) or real(pid))
            watch.check(0.1)
            assert watch.exited == {}
            os.waitid(os.P_PID, short.pid, os.WEXITED | os.WNOWAIT)  # a zombie now
            watch.check(0.7)
            assert watch.exited == {short.pid: 0.7}
            assert read == []
            watch.report(1.5)  # the window's last check reads /proc as well
            assert read == [long.pid]
        finally:
            long.kill()
    assert watch.exited == {short.pid: 0.7}


def test_pid_reused_by_another_process_counts_as_exited(monkeypatch):
    import pxq.agent.embedded as embedded

    warnings: list[str] = []
    with subprocess.Popen([SLEEP, "30"]) as proc:
        try:
            watch = PidWatch(_manifest(proc.pid), warnings.append)
            started = watch.alive[proc.pid]
            monkeypatch.setattr(embedded, "_running_identity", lambda pid: str(int(started) + 1))
            watch.report(2.0)
        finally:
            proc.kill()
    assert warnings and warnings[0].startswith(f"pid {proc.pid} exited")


def test_agent_says_missing_pid_before_checking_the_kernel(monkeypatch):
    """The warning comes first, even where collection then cannot start at all."""
    import pxq.agent.loop as loop

    def no_bpf():
        raise AgentError("no eBPF here")

    monkeypatch.setattr(loop, "check_environment", no_bpf)
    warnings: list[str] = []
    missing = _unused_pid()
    agent = EmbeddedAgent(_manifest(missing), AgentOptions(on_warning=warnings.append))
    with pytest.raises(AgentError):
        agent.run(1.0)
    assert warnings == [f"no running process with pid {missing}: nothing is collected from it (is the pid right?)"]


@pytest.mark.kernel
def test_capture_says_when_a_pid_and_its_descendants_made_no_traffic(tmp_path):
    """`pxq capture --pid` of a quiet process tree (a shell whose two children sleep), and of a
    quiet process without children: after the window, one line for each (through the CLI)."""
    from pxq.testing.kernel import require_bpf
    from tests.cli_support import run_pxq

    require_bpf()
    with subprocess.Popen(["/bin/sh", "-c", f"{SLEEP} 60 & {SLEEP} 60 & wait"]) as tree, \
            subprocess.Popen([SLEEP, "60"]) as alone:  # fmt: skip
        try:
            deadline = time.monotonic() + 10
            while len(_children(tree.pid)) < 2 and time.monotonic() < deadline:
                time.sleep(0.01)  # the shell starts its children
            assert len(_children(tree.pid)) == 2
            out = run_pxq("capture", "--out", str(tmp_path / "cap"), "--for", "1s",
                          "--pid", str(tree.pid), "--pid", str(alone.pid))  # fmt: skip
        finally:
            for child in _children(tree.pid):
                os.kill(child, 9)
            tree.kill()
            alone.kill()
    assert out.returncode == 0, out.stderr
    warnings = [line for line in out.stderr.splitlines() if line.startswith("pxq: warning:")]
    window = r"during the 1\.[0-9]s window: nothing was collected from"
    assert len(warnings) == 2, out.stderr
    tree_line = rf"pxq: warning: pid {tree.pid} and its 2 descendant processes made no TCP traffic {window} them"
    alone_line = rf"pxq: warning: pid {alone.pid} made no TCP traffic {window} it"
    assert sorted(bool(re.fullmatch(tree_line, w)) for w in warnings) == [False, True], warnings
    assert sorted(bool(re.fullmatch(alone_line, w)) for w in warnings) == [False, True], warnings


def test_traffic_of_any_process_in_a_pid_tree_counts_for_it():
    """A pid is quiet only when none of its descendants (running at start or at the end) was
    seen; a process seen that is in no known tree (forked and gone) counts for the only pid."""
    with subprocess.Popen(["/bin/sh", "-c", f"{SLEEP} 60 & wait"]) as tree:
        try:
            deadline = time.monotonic() + 10
            while not _children(tree.pid) and time.monotonic() < deadline:
                time.sleep(0.01)
            (child,) = _children(tree.pid)
            for seen, expect_warning in (
                ({child}, False),
                ({tree.pid}, False),
                ({_unused_pid()}, False),
                (set(), True),
            ):
                warnings: list[str] = []
                watch = PidWatch(_manifest(tree.pid), warnings.append)
                assert watch.descendants() == {child}
                watch.report_quiet(seen, 2.0, "TCP traffic")
                assert bool(warnings) == expect_warning, (seen, warnings)
            assert warnings == [
                f"pid {tree.pid} and its 1 descendant process made no TCP traffic during the 2.0s "
                "window: nothing was collected from them"
            ]
        finally:
            for pid in _children(tree.pid):
                os.kill(pid, 9)
            tree.kill()


def _children(pid: int) -> list[int]:
    from pxq.agent.procinfo import child_pids

    return child_pids(pid)
