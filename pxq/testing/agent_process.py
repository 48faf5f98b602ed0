"""A node agent (``pxq agent serve``) in a child process, for tests and benchmarks: started with
its own state directory, waited for until it answers over Flight, stopped with SIGTERM."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class AgentProcess:
    """``pxq agent serve ARGS --state-dir DIR --listen 127.0.0.1:0``; :attr:`address` once it answers."""

    def __init__(
        self,
        *args: str,
        state_dir: str | os.PathLike[str],
        env: dict[str, str] | None = None,
        credentials: dict[str, str] | None = None,  # what wait_ready presents (an agent with TLS/token)
        prefix: list[str] | None = None,  # e.g. nsenter into a network namespace (must exec: same pid)
    ):
        self.credentials = credentials
        self.state_dir = Path(state_dir)
        self.state_path = self.state_dir / "agent.json"
        command = [sys.executable, "-m", "pxq.cli.main", "agent", "serve", "--state-dir", str(self.state_dir)]
        if not any(a.startswith("--listen") for a in args):
            command += ["--listen", "127.0.0.1:0"]
        self.proc = subprocess.Popen(
            [*(prefix or []), *command, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(os.environ) if env is None else env,
        )
        self.address = ""
        self.stderr = ""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, timeout_s: float = 60.0) -> str:
        """Wait until the agent wrote its state file and answers; its address."""
        from pxq.agent.flight import agent_answers

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.stderr = self.proc.stderr.read() if self.proc.stderr else ""
                raise AssertionError(f"the agent exited {self.proc.returncode} before answering:\n{self.stderr}")
            try:
                state = json.loads(self.state_path.read_text())
            except (OSError, ValueError):
                state = None
            if (
                state
                and state.get("pid") == self.proc.pid
                and agent_answers(state["address"], 1.0, self.credentials) is not None
            ):
                self.address = state["address"]
                return self.address
            time.sleep(0.05)
        self.stop()
        raise AssertionError(f"the agent did not answer within {timeout_s:g}s:\n{self.stderr}")

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM, then its exit code (SIGKILL after ``timeout_s``: a failure the caller sees)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stderr and not self.proc.stderr.closed:
            self.stderr += self.proc.stderr.read()
            self.proc.stderr.close()
        if self.proc.stdout and not self.proc.stdout.closed:
            self.proc.stdout.close()
        return self.proc.returncode


@contextlib.contextmanager
def running_agent(*args: str, state_dir: str | os.PathLike[str], timeout_s: float = 60.0) -> Iterator[Any]:
    agent = AgentProcess(*args, state_dir=state_dir)
    try:
        agent.wait_ready(timeout_s)
        yield agent
    finally:
        agent.stop()
