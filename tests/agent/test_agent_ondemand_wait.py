"""How long a client waits for a query the agent answers by collecting on demand: the agent's
``on_demand_max`` (learned from its ``info``) plus an allowance for attaching the collector, on top
of the call's own timeout; giving up says why. Live agents on the running kernel (marked
``kernel``): the on-demand profiler attaches for the query's window. Other helpers trace this host
concurrently: the profile is restricted to this test's own spinning process. No wall-clock
assertions: a client with a call timeout shorter than the collection gets its answer, and one
facing a stopped agent gives up with the bound it used."""

from __future__ import annotations

import collections
import contextlib
import errno
import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pxq.agent.flight import AgentClient, AgentGaveUpError, AgentQueryError, OnDemand, on_demand_wait
from pxq.api import _script_object
from pxq.testing.agent_process import AgentProcess, running_agent
from pxq.testing.kernel import require_bpf
from pxq.testing.retry import wait_for
from tests.agent.ondemand_info import HELD, agent_info, profile_manifest
from tests.agent.test_agent_ondemand_live import PROFILE_SCRIPT, _spinner


def test_the_wait_follows_the_agents_on_demand_max_only_when_it_collects_for_the_query():
    manifest = profile_manifest((("sample_hz", "99"),))
    assert on_demand_wait(manifest, agent_info(), 30.0) == OnDemand(("perf_profiler",), 7.0, 37.0)
    assert on_demand_wait(manifest, agent_info(on_demand_max_s=300.0), 30.0) == OnDemand(
        ("perf_profiler",), 300.0, 330.0
    )
    # A running profiler at another rate is attached again at the script's rate.
    running = agent_info(tables={**HELD, "stack_traces.beta": "perf_profiler"}, attachable={})
    assert on_demand_wait(manifest, running, 30.0) == OnDemand(("perf_profiler",), 7.0, 37.0)
    # Nothing to collect: the profiler runs at the rate asked, the agent refuses, or replays.
    assert on_demand_wait(profile_manifest((("sample_hz", "19"),)), running, 30.0) is None
    assert on_demand_wait(manifest, agent_info(on_demand="refuse"), 30.0) is None
    assert on_demand_wait(manifest, agent_info(mode="replay"), 30.0) is None


def _spinning_profile(seconds: int) -> tuple[subprocess.Popen, str]:
    spin = _spinner()
    return spin, PROFILE_SCRIPT.format(seconds=seconds, pid=spin.pid)


@pytest.mark.kernel
def test_a_client_waits_for_an_on_demand_collection_longer_than_its_call_timeout(tmp_path):
    """The collection takes the query's window (4 s) plus attaching the profiler; the client's
    calls time out after 2 s, but this one waits the agent's on_demand_max (learned) and the
    attach allowance more, so it gets the samples."""
    require_bpf()
    config = tmp_path / "agent.toml"
    config.write_text('on_demand = "attach"\non_demand_max = "12s"\n')
    spin, script = _spinning_profile(4)
    try:
        with (
            running_agent("--no-perf-profiler", "--config", str(config), state_dir=tmp_path, timeout_s=180) as agent,
            AgentClient(agent.address, timeout_s=2.0) as client,
        ):
            assert client.info()["on_demand_max_s"] == 12.0
            _, results, _ = client.run(_script_object(script))
            last = client.status()["on_demand_collections"]["last"]
    finally:
        spin.kill()
        spin.wait()
    assert results.tables["samples"].num_rows == 1
    # The agent's own account: attaching and collecting outlasted the client's call timeout
    # (the window is 4 s, or at least 1 s after an attach of 8 s or more).
    assert last["start_s"] + last["attached_s"] > 2.0
    assert results.tables["samples"].column("samples")[0].as_py() > 0


@pytest.mark.kernel
def test_a_client_gives_up_on_an_agent_stuck_in_an_on_demand_query_saying_what_it_waited_for(tmp_path, monkeypatch):
    """A stopped agent never answers: the client waits its call timeout, the agent's (short)
    on_demand_max and its attach allowance, then names the collector and the bounds."""
    require_bpf()
    config = tmp_path / "agent.toml"
    config.write_text('on_demand = "attach"\non_demand_max = "2s"\n')
    spin, script = _spinning_profile(4)
    real_get = AgentClient.get
    try:
        with running_agent("--no-perf-profiler", "--config", str(config), state_dir=tmp_path, timeout_s=180) as agent:

            def get_from_a_stopped_agent(self, ticket, **options):
                os.kill(agent.pid, signal.SIGSTOP)
                return real_get(self, ticket, **options)

            monkeypatch.setattr(AgentClient, "get", get_from_a_stopped_agent)
            try:
                with (
                    AgentClient(agent.address, timeout_s=1.0, attach_allowance_s=1.5) as client,
                    pytest.raises(AgentGaveUpError) as caught,
                ):
                    client.run(_script_object(script))
            finally:
                os.kill(agent.pid, signal.SIGCONT)
    finally:
        spin.kill()
        spin.wait()
    message = str(caught.value)
    assert f"agent {agent.address} did not answer within 4.5 s, gave up" in message
    assert "attach perf_profiler on demand, which it bounds by on_demand_max = 2 s" in message
    assert "allowed 1.5 s more for attaching and 1 s for the query" in message


class HeaderGate:
    """This kernel's headers for bcc (``BCC_KERNEL_SOURCE``: Debian's build and source trees merged by
    symlinks) with ``include/linux/kconfig.h``, the header each of bcc's compiles opens first, a FIFO:
    a compile blocks opening it until the gate serves it the real file. While :meth:`serving`, every
    compile is served; otherwise it waits at the gate, as a start stuck in the compiler would."""

    KCONFIG = "include/linux/kconfig.h"

    def __init__(self, root: Path):
        release = os.uname().release
        linked = [Path(f"/lib/modules/{release}/{name}") for name in ("build", "source")]
        trees = list(dict.fromkeys(path.resolve() for path in linked if path.is_dir()))  # one tree, or both
        self.content = next(t / self.KCONFIG for t in trees if (t / self.KCONFIG).is_file()).read_bytes()
        self.root = root
        _merge_by_symlinks(root, trees)
        here = root
        for part in Path(self.KCONFIG).parent.parts:  # real directories down to the header
            here = here / part
            if here.is_symlink():
                target = here.resolve()
                here.unlink()
                here.mkdir()
                for entry in os.scandir(target):
                    (here / entry.name).symlink_to(entry.path)
        self.fifo = root / self.KCONFIG
        self.fifo.unlink()
        os.mkfifo(self.fifo)
        self.served = 0

    @contextlib.contextmanager
    def serving(self) -> Iterator[None]:
        stop = threading.Event()

        def serve() -> None:
            while not stop.is_set():
                try:
                    fd = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)
                except OSError as exc:
                    if exc.errno != errno.ENXIO:  # ENXIO: no compile has it open for reading
                        raise
                    stop.wait(0.01)
                    continue
                try:
                    os.set_blocking(fd, True)
                    os.write(fd, self.content)  # a few KB: within the pipe's buffer
                except BrokenPipeError:
                    pass
                finally:
                    os.close(fd)
                self.served += 1

        thread = threading.Thread(target=serve, name="header-gate", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()


def _merge_by_symlinks(destination: Path, trees: list[Path]) -> None:
    """``destination``: each entry of ``trees`` as a symlink, directories present in several merged."""
    destination.mkdir(parents=True)
    entries: dict[str, list[Path]] = {}
    for tree in trees:
        for entry in os.scandir(tree):
            entries.setdefault(entry.name, []).append(Path(entry.path))
    for name, paths in entries.items():
        if len(paths) > 1 and all(p.is_dir() for p in paths):
            _merge_by_symlinks(destination / name, paths)
        else:
            (destination / name).symlink_to(paths[0])


def _bpf_handles(pid: int) -> collections.Counter[str]:
    """The BPF programs, maps and perf events (attachments) process ``pid`` holds open, by kind."""
    kinds: collections.Counter[str] = collections.Counter()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):  # closed meanwhile
            target = os.readlink(fd)
            if target.startswith("anon_inode:") and ("bpf" in target or "perf_event" in target):
                kinds[target] += 1
    return kinds


@pytest.mark.kernel
def test_the_agent_gives_up_a_collector_start_past_its_bound_and_detaches_it_when_the_start_ends(tmp_path):
    """The on-demand profiler's start blocks in bcc's compiler (its first header is a FIFO no one
    writes): the agent fails the query once on_demand_attach_max (3 s) has passed, long before the
    client would give up (30 s + on_demand_max + 120 s), saying why, and counts it. When the
    compile goes on, the agent stops what it started and takes on-demand queries again (the next
    one's start is tried, not refused as busy: it waits at the gate too, and the agent still stops
    cleanly)."""
    require_bpf()
    gate = HeaderGate(tmp_path / "kernel")
    config = tmp_path / "agent.toml"
    config.write_text('on_demand = "attach"\non_demand_max = "5s"\non_demand_attach_max = "3s"\n')
    spin, script = _spinning_profile(2)
    agent = AgentProcess(
        "--no-perf-profiler",
        "--config",
        str(config),
        state_dir=tmp_path,
        env={**os.environ, "BCC_KERNEL_SOURCE": str(gate.root)},
    )
    try:
        with gate.serving():  # the socket tracer's compile at the agent's start
            agent.wait_ready(300)  # a loaded machine compiles slowly
        assert gate.served > 0
        handles_before = _bpf_handles(agent.pid)
        with AgentClient(agent.address, timeout_s=30.0) as client:
            with pytest.raises(AgentQueryError) as caught:
                client.run(_script_object(script))
            stuck = client.status()["on_demand_collections"]
            with gate.serving():
                wait_for(lambda: client.status()["on_demand_collections"]["active"] == [], 180, "the start ended", 0.2)
            handles_after_first = _bpf_handles(agent.pid)  # the profiler it went on to attach is detached
            # On-demand collection is free again: the next query's start is tried (and given up) in turn.
            with pytest.raises(AgentQueryError) as again:
                client.run(_script_object(script))
            after = client.status()
        # The agent stops while that start still waits at the gate: it exits all the same.
        assert agent.stop() == 0, agent.stderr
    finally:
        agent.stop()
        spin.kill()
        spin.wait()
    for error in (caught.value, again.value):
        message = str(error)
        assert not isinstance(error, AgentGaveUpError)  # the agent's answer, not the client's timeout
        assert f"could not attach perf_profiler sample_hz=99 pids [{spin.pid}] on demand" in message
        assert "took more than on_demand_attach_max = 3 s, so the agent gave the query up" in message
    assert [a.split()[0] for a in stuck["active"]] == ["perf_profiler"]  # its start was still running
    assert (stuck["start_timeouts"], stuck["attached"]) == (1, 0)
    assert stuck["given_up_start"] is None
    assert {**after["on_demand_collections"], "given_up_start": None} == {**stuck, "start_timeouts": 2}
    # The given-up start went on once the gate opened, attached the profiler, and was stopped.
    given_up = after["on_demand_collections"]["given_up_start"]
    assert given_up["error"] is None and given_up["collectors"] == stuck["active"]
    assert handles_after_first == handles_before
    assert after["state"] == "running"
    assert "Traceback" not in agent.stderr
