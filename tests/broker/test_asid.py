"""A node agent's asid reaches every upid its collectors make (they share one ProcessIdentities,
built by the agent loop from AgentOptions.asid); embedded runs keep 0."""

from __future__ import annotations

import os
from pathlib import Path

from pxq.agent.procinfo import ProcessIdentities


def test_identities_of_an_agent_carry_its_asid_and_embedded_ones_zero():
    # /proc/<pid>/stat's field 22 (starttime, clock ticks since boot), read here.
    start = int(Path(f"/proc/{os.getpid()}/stat").read_text().rsplit(")", 1)[1].split()[19])
    assert ProcessIdentities(asid=4242).identify(os.getpid()) == f"4242:{os.getpid()}:{start}"
    assert ProcessIdentities().identify(os.getpid()) == f"0:{os.getpid()}:{start}"
    gone = ProcessIdentities(asid=7).identify(2**22 + 12345, comm="curl")  # no such pid: the kernel's view
    assert gone.startswith(f"7:{2**22 + 12345}:")
