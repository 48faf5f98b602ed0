"""What every collector is to the agent: the :class:`Collector` interface, the options the agent
hands the collectors (:class:`AgentOptions`), and the error saying the agent cannot collect here.

The collectors themselves are listed in :mod:`pxq.agent.collectors`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import pyarrow as pa

from pxq.agent.defaults import DEFAULT_BODY_LIMIT
from pxq.agent.table_store import DEFAULT_BUDGET_BYTES, RAW_HELD_BYTES
from pxq.errors import PxqError


class AgentError(PxqError):
    """The agent cannot collect here (privileges, kernel set-up, a collector that does not exist)."""

    exit_code = 3


class Collector(Protocol):
    name: str

    def start(self) -> None: ...
    def poll(self, timeout_ms: int) -> int: ...
    def close_window(self) -> None: ...
    def drain(self) -> dict[str, pa.Table]: ...
    def drops(self) -> dict[str, dict[str, int]]: ...
    def stop(self) -> None: ...

    # Optional: ``use_identities(identities)``, to name processes in a ProcessIdentities shared
    # by all collectors of a run (what the kernel said about a process already gone included);
    # ``add_pids(pids)``, to collect from processes found after start (a watched pid's children);
    # ``pids_seen()`` and ``seen_what``, the processes it saw something from, and what.


def warn_on_stderr(message: str, stream=sys.stderr) -> None:
    """A warning line (clearing a progress line being redrawn in place on a terminal first)."""
    stream.write(("\r\033[K" if stream.isatty() else "") + f"pxq: warning: {message}\n")
    stream.flush()


@dataclass(frozen=True)
class AgentOptions:
    body_limit: int = DEFAULT_BODY_LIMIT
    budget_bytes: int = DEFAULT_BUDGET_BYTES
    table_budget_bytes: int | None = None  # each table's cap as well (``pxq agent serve``)
    raw_held_bytes: int = RAW_HELD_BYTES  # the store's newest batches held uncompressed up to this
    # Keep credentials (HTTP Authorization/Cookie values, database passwords) in the rows instead
    # of SECRET_MARKER: they then end up in outputs and captures. Only by the user's explicit choice.
    keep_secrets: bool = False
    # The agent short id in every upid (Pixie's asid): 0 for embedded runs (one host); a node
    # agent's own (``pxq agent serve``), so upids of two nodes never collide.
    asid: int = 0
    # Where the agent says what the user should know but that does not stop collection
    # (a --pid that does not exist or exits during the window).
    on_warning: Callable[[str], None] = warn_on_stderr
