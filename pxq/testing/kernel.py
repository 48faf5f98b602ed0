"""Whether this machine can run eBPF programs, for tests marked ``kernel``.

Kernel tests never skip silently: without root or a working bcc they fail with the reason, unless
``PXQ_ALLOW_NO_BPF=1`` is set (a developer machine without eBPF), in which case they skip with
that same reason.
"""

from __future__ import annotations

import os

ALLOW_NO_BPF_ENV = "PXQ_ALLOW_NO_BPF"


def bpf_unavailable_reason() -> str | None:
    """Why eBPF tests cannot run here, or None when they can (root and bcc importable)."""
    if os.geteuid() != 0:
        return "eBPF needs root (CAP_BPF/CAP_PERFMON); run the tests as root (tools/test.sh)"
    try:
        import bcc  # noqa: F401
    except Exception as exc:  # ImportError, or libbcc failing to load
        return f"bcc is not importable ({type(exc).__name__}: {exc}); run tools/setup.sh"
    if not os.path.ismount("/sys/kernel/tracing"):
        return "tracefs is not mounted at /sys/kernel/tracing; run tools/setup.sh"
    return None


def require_bpf() -> None:
    """Fail the calling test when eBPF is unavailable (skip instead under PXQ_ALLOW_NO_BPF=1)."""
    import pytest

    reason = bpf_unavailable_reason()
    if reason is None:
        return
    if os.environ.get(ALLOW_NO_BPF_ENV) == "1":
        pytest.skip(f"{reason} ({ALLOW_NO_BPF_ENV}=1)")
    pytest.fail(f"{reason} (set {ALLOW_NO_BPF_ENV}=1 to skip kernel tests on a machine without eBPF)", pytrace=False)
