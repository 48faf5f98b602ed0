"""The eBPF programs a manifest makes the agent load, as text (for `pxq explain --bpf`)."""

from __future__ import annotations

from pxq.plan.manifest import ProbeManifest


def generated_programs(manifest: ProbeManifest) -> list[tuple[str, str]]:
    """(collector name, program text with its -D flags) for each eBPF collector in ``manifest``."""
    from pxq.agent.collectors import COLLECTORS

    return [
        (request.name, COLLECTORS[request.name].program(request))
        for request in manifest.collectors
        if request.name in COLLECTORS
    ]
