"""Whether this machine can run eBPF programs, for tests marked ``kernel``.

Kernel tests never skip silently: without root or a working bcc they fail with the reason, unless
``PXQ_ALLOW_NO_BPF=1`` is set (a developer machine without eBPF), in which case they skip with
that same reason.
"""

from __future__ import annotations

import os

ALLOW_NO_BPF_ENV = "PXQ_ALLOW_NO_BPF"


def bpf_unavailable_reason() -> str | None:
    """Why eBPF tests cannot run here, or None when they can: the agent's own check (root or
    CAP_BPF+CAP_PERFMON, bcc importable, tracefs mounted)."""
    from pxq.agent.bpf_program import bpf_unavailable_reason as agent_reason

    return agent_reason()


def require_bpf() -> None:
    """Fail the calling test when eBPF is unavailable (skip instead under PXQ_ALLOW_NO_BPF=1)."""
    import pytest

    reason = bpf_unavailable_reason()
    if reason is None:
        return
    if os.environ.get(ALLOW_NO_BPF_ENV) == "1":
        pytest.skip(f"{reason} ({ALLOW_NO_BPF_ENV}=1)")
    pytest.fail(f"{reason} (set {ALLOW_NO_BPF_ENV}=1 to skip kernel tests on a machine without eBPF)", pytrace=False)
