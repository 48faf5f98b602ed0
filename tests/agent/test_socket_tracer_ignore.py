"""Processes the socket tracer leaves alone: pxq's own helpers (pxq.agent.own_processes), and
what the user asks to ignore by pid, by process name or by cgroup (``ignore_pids``,
``ignore_comms``, ``ignore_cgroups``; ``px.set("socket_tracer.ignore_...")``).

Each live test runs one sock_apps server and two clients of the same scenario, ignores one
client, and checks the rows against the clients' own reports: the kept client's requests appear
on both sides, the ignored client's only on the (traced) server's side, none from its own pid.
Rows are filtered to this test's pids (other tests trace concurrently)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pxq.agent import own_processes
from pxq.agent.bpf_program import BpfError
from pxq.agent.socket_tracer import SocketTracer, SocketTracerOptions, cgroup_id, cgroup_v2_root, options_from_manifest
from pxq.plan.manifest import CollectorRequest
from pxq.plan.settings import setting_problem
from pxq.testing.cgroups import temporary_cgroup
from pxq.testing.kernel import require_bpf
from tests.agent.test_socket_tracer import APPS, Client, _readline, finish_capture, http_server, rows_of

SCENARIO_REQUESTS = 4  # sock_apps' "basic" scenario: its client reports one line per request


def _paths(rows: list[dict]) -> list[str]:
    return sorted(r["req_path"] for r in rows)


class NamedClient(Client):
    """sock_apps' client run through a symlink to Python named ``name``: the kernel names a
    process after the file it execs (its comm), so this client's comm is ``name``."""

    def __init__(self, port: int, scenario: str, python: Path) -> None:
        self.proc = subprocess.Popen(
            [str(python), str(APPS), "client", "--host", "127.0.0.1", "--port", str(port), "--scenario", scenario],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert _readline(self.proc).strip() == "READY"
        self.results = []


class ForkingClient(Client):
    """sock_apps' client as the child of a Python parent that forks it only when told to
    (:meth:`spawn`): the parent's pid is known before, the client's after the tracer started."""

    WRAPPER = "import subprocess, sys; sys.stdin.readline(); sys.exit(subprocess.run(sys.argv[1:]).returncode)"

    def __init__(self, port: int, scenario: str) -> None:
        client = [
            sys.executable,
            str(APPS),
            "client",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--scenario",
            scenario,
        ]
        self.proc = subprocess.Popen(
            [sys.executable, "-c", self.WRAPPER, *client], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        self.results = []
        self.child_pid = 0

    def spawn(self) -> None:
        self.proc.stdin.write("spawn\n")
        self.proc.stdin.flush()
        assert _readline(self.proc).strip() == "READY"
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        assert len(children) == 1, children
        self.child_pid = int(children[0])


def run_two_clients(tracer: SocketTracer, kept: Client, ignored: Client, before_go=None):
    tracer.start()
    try:
        if before_go:
            before_go()
        kept.go()
        ignored.go()
        kept.finish(tracer)
        ignored.finish(tracer)
        return finish_capture(tracer)
    finally:
        tracer.stop()
        kept.kill()
        ignored.kill()


def check_ignored(table, server_pid: int, kept: Client, ignored: Client) -> None:
    assert len(kept.results) == len(ignored.results) == SCENARIO_REQUESTS
    expected = sorted(r["path"] for r in kept.results)
    assert _paths(rows_of(table, kept.pid, 1)) == expected
    assert rows_of(table, ignored.pid, 1) == [] and rows_of(table, ignored.pid, 2) == []
    assert not any(u.startswith(f"0:{ignored.pid}:") for u in table.column("upid").to_pylist())
    # The server is traced: both clients' requests are among its rows.
    assert _paths(rows_of(table, server_pid, 2)) == sorted(expected + [r["path"] for r in ignored.results])


@pytest.mark.kernel
def test_ignore_pids_leaves_that_client_out():
    require_bpf()
    with http_server() as (server, port):
        kept, ignored = Client(port, "basic"), Client(port, "basic")
        options = SocketTracerOptions(ignore_pids=frozenset({ignored.pid}))
        tracer = SocketTracer(pids={server.pid, kept.pid, ignored.pid}, options=options)
        table = run_two_clients(tracer, kept, ignored)
        check_ignored(table, server.pid, kept, ignored)


@pytest.mark.kernel
def test_ignored_pid_stays_ignored_when_added_as_a_descendant_later():
    """The agent adds the running descendants of the pids asked for as it finds them (add_pids):
    an ignored one among them stays ignored."""
    require_bpf()
    with http_server() as (server, port):
        kept, ignored = Client(port, "basic"), Client(port, "basic")
        options = SocketTracerOptions(ignore_pids=frozenset({ignored.pid}))
        tracer = SocketTracer(pids={server.pid, kept.pid}, options=options)
        table = run_two_clients(tracer, kept, ignored, before_go=lambda: tracer.add_pids([ignored.pid]))
        check_ignored(table, server.pid, kept, ignored)


@pytest.mark.kernel
@pytest.mark.parametrize("pid_filter", [True, False])
def test_a_child_forked_by_an_ignored_process_is_ignored(pid_filter):
    require_bpf()
    with http_server() as (server, port):
        kept, parent = Client(port, "basic"), ForkingClient(port, "basic")
        options = SocketTracerOptions(ignore_pids=frozenset({parent.proc.pid}))
        # With the filter the parent is asked for too: what it forks would be followed, were it not ignored.
        pids = {server.pid, kept.pid, parent.proc.pid} if pid_filter else None
        tracer = SocketTracer(pids=pids, options=options)
        table = run_two_clients(tracer, kept, parent, before_go=parent.spawn)
        assert parent.child_pid
        assert not any(u.startswith(f"0:{parent.child_pid}:") for u in table.column("upid").to_pylist())
        check_ignored(table, server.pid, kept, parent)


@pytest.mark.kernel
def test_ignore_comms_at_exec_with_every_process_traced(tmp_path):
    """No pid filter: the ignored name is matched by the kernel when the client execs it, after
    the tracer started (no /proc scan can have seen it)."""
    require_bpf()
    name = f"pxqign{os.getpid() % 100000}"
    python = tmp_path / name
    python.symlink_to(sys.executable)
    tracer = SocketTracer(options=SocketTracerOptions(ignore_comms=frozenset({name})))
    with http_server() as (server, port):
        tracer.start()
        try:
            kept, ignored = Client(port, "basic"), NamedClient(port, "basic", python)
            assert Path(f"/proc/{ignored.pid}/comm").read_text().strip() == name
            kept.go()
            ignored.go()
            kept.finish(tracer)
            ignored.finish(tracer)
            table = finish_capture(tracer)
        finally:
            tracer.stop()
    check_ignored(table, server.pid, kept, ignored)


@pytest.mark.kernel
def test_ignore_comms_of_a_process_running_at_start(tmp_path):
    require_bpf()
    name = f"pxqold{os.getpid() % 100000}"
    python = tmp_path / name
    python.symlink_to(sys.executable)
    with http_server() as (server, port):
        kept, ignored = Client(port, "basic"), NamedClient(port, "basic", python)
        options = SocketTracerOptions(ignore_comms=frozenset({name}))
        tracer = SocketTracer(pids={server.pid, kept.pid, ignored.pid}, options=options)
        table = run_two_clients(tracer, kept, ignored)
        check_ignored(table, server.pid, kept, ignored)


@pytest.mark.kernel
def test_ignore_cgroups_leaves_that_cgroups_process_out():
    require_bpf()
    with temporary_cgroup(f"pxq-test-ignore-{os.getpid()}") as cgroup, http_server() as (server, port):
        kept, ignored = Client(port, "basic"), Client(port, "basic")
        (cgroup / "cgroup.procs").write_text(str(ignored.pid))
        assert Path(f"/proc/{ignored.pid}/cgroup").read_text().splitlines()[-1].endswith(cgroup.name)
        assert cgroup_id(str(cgroup)) == cgroup_id("/" + cgroup.name) == cgroup.stat().st_ino
        options = SocketTracerOptions(ignore_cgroups=frozenset({cgroup_id(str(cgroup))}))
        tracer = SocketTracer(pids={server.pid, kept.pid, ignored.pid}, options=options)
        table = run_two_clients(tracer, kept, ignored)
        check_ignored(table, server.pid, kept, ignored)


@pytest.mark.kernel
@pytest.mark.parametrize("when", ["before start", "while running"])
def test_pxq_helper_processes_are_never_traced(when):
    """A helper pxq starts (py-spy registers itself in own_processes) is left out, whether it was
    registered before the tracer started or while it runs; without a pid filter too."""
    require_bpf()
    with http_server() as (server, port):
        kept, helper = Client(port, "basic"), Client(port, "basic")
        if when == "before start":
            own_processes.add(helper.pid)
        tracer = SocketTracer()
        table = run_two_clients(
            tracer, kept, helper, before_go=(lambda: own_processes.add(helper.pid)) if when == "while running" else None
        )
        check_ignored(table, server.pid, kept, helper)


# -- options, settings (no kernel) ------------------------------------------------------------
def test_ignore_options_compile_in_only_what_is_asked():
    plain = SocketTracerOptions().defines()
    assert (plain["IGNORE_PIDS"], plain["IGNORE_COMMS"], plain["IGNORE_CGROUPS"]) == (1, 0, 0)
    both = SocketTracerOptions(ignore_comms=frozenset({"nginx"}), ignore_cgroups=frozenset({42})).defines()
    assert (both["IGNORE_COMMS"], both["IGNORE_CGROUPS"]) == (1, 1)
    with pytest.raises(ValueError, match="1 to 15 bytes"):
        SocketTracerOptions(ignore_comms=frozenset({"a-name-longer-than-15"})).defines()


def test_ignore_settings_from_the_manifest(tmp_path):
    root = cgroup_v2_root()
    request = CollectorRequest(
        "socket_tracer",
        ("http_events",),
        None,
        ("http",),
        (("ignore_pids", "12, 34"), ("ignore_comms", "nginx,redis-server"), ("ignore_cgroups", f"/,{root}, 7")),
    )
    options = options_from_manifest(request)
    assert options.ignore_pids == {12, 34}
    assert options.ignore_comms == {"nginx", "redis-server"}
    assert options.ignore_cgroups == {root.stat().st_ino, 7}
    missing = CollectorRequest("socket_tracer", ("http_events",), None, ("http",), (("ignore_cgroups", "/nope-x"),))
    with pytest.raises(BpfError, match="cgroup to ignore not found: '/nope-x'"):
        options_from_manifest(missing)


@pytest.mark.parametrize(
    ("key", "value", "ok"),
    [
        ("socket_tracer.ignore_pids", "12,34", True),
        ("socket_tracer.ignore_pids", "12,nginx", False),
        ("socket_tracer.ignore_comms", "nginx, postgres", True),
        ("socket_tracer.ignore_comms", "nginx,,x", False),
        ("socket_tracer.ignore_comms", "a-name-longer-than-15", False),
        ("socket_tracer.ignore_cgroups", "/system.slice/a.service,12", True),
        ("socket_tracer.ignore_cgroups", "", False),
    ],
)
def test_ignore_settings_are_checked(key, value, ok):
    assert (setting_problem(key, value) is None) == ok


def test_pyspy_recorders_register_as_pxq_helpers():
    """The profiler's py-spy recorders are pxq's helpers: the socket tracer leaves them out."""
    from pxq.agent.pyspy import PySpySampler, find_pyspy

    assert find_pyspy() is not None, "py-spy is a dependency of pxq (pyproject.toml): the venv lacks it"
    target = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    sampler = PySpySampler(rate_hz=10, segment_s=5)
    try:
        sampler.add(target.pid, f"0:{target.pid}:0")
        segment = sampler.targets[target.pid].segment
        assert segment is not None
        assert segment.process.pid in own_processes.pids()
    finally:
        sampler.stop()
        target.kill()
        target.wait(timeout=10)
    assert segment.process.pid not in own_processes.pids()  # reaped: its pid may be reused
