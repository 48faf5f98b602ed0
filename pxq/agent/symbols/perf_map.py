"""JIT code named by its runtime in ``/tmp/perf-PID.map`` (the Linux perf convention V8, the JVM
with perf-map-agent, and CPython 3.12's ``-X perf`` follow)."""

from __future__ import annotations


def parse_perf_map(text: str) -> list[tuple[int, int, str]]:
    """``/tmp/perf-PID.map`` lines ``START SIZE NAME`` (hex) as sorted (start, size, name)."""
    out = []
    for line in text.split("\n"):  # not splitlines(): a JIT symbol may hold \x1c, U+2028, ...
        parts = line.split(None, 2)
        if len(parts) == 3:
            try:
                out.append((int(parts[0], 16), int(parts[1], 16), parts[2]))
            except ValueError:
                continue
    out.sort()
    return out
