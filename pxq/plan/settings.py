"""The query settings pxq reads (``#px:set key=value`` pragmas and ``px.set(key, value)``): which
keys exist and which values their readers take, so that a bad value is refused where the script
writes it instead of failing mid-run. Readers: pxq.exec.execute, pxq.agent.profiler and
pxq.agent.socket_tracer_collector.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from pxq.errors import closest
from pxq.plan.limits import shown


def _whole_number(low: int, high: int, *, float_syntax: bool = False) -> Callable[[str], bool]:
    """Text its reader takes as an integer in [low, high]: int(text), or int(float(text))."""

    def check(text: str) -> bool:
        text = text.strip()
        if len(text) > 40:
            return False
        value: float  # an int, or a float read from float syntax
        try:
            value = int(text)
        except ValueError:
            if not float_syntax:
                return False
            try:
                value = float(text)
            except ValueError:
                return False
        return (isinstance(value, int) or (math.isfinite(value) and value.is_integer())) and low <= value <= high

    return check


def _number(low: float, high: float = math.inf) -> Callable[[str], bool]:
    def check(text: str) -> bool:
        try:
            value = float(text)
        except ValueError:
            return False
        return math.isfinite(value) and low <= value <= high

    return check


# Each setting: how to check a value, and what to tell the user it takes.
SETTINGS: dict[str, tuple[Callable[[str], bool], str]] = {
    "max_output_rows_per_table": (_whole_number(0, 2**63 - 1), "a whole number of rows, 0 or more"),
    "perf_profiler.sample_hz": (
        _whole_number(1, 10_000, float_syntax=True),
        "a whole number of samples per second, 1 to 10000",
    ),
    "perf_profiler.python": (lambda text: text.strip().lower() in ("auto", "on", "off"), "auto, on or off"),
    "perf_profiler.drain_interval_s": (_number(0.001, 3600.0), "seconds between drains, 0.001 to 3600"),
    "perf_profiler.pyspy_segment_s": (
        _whole_number(1, 3600, float_syntax=True),
        "a whole number of seconds, 1 to 3600",
    ),
    "perf_profiler.pyspy_min_cpu": (_number(0.0), "a share of one CPU, 0 or more (0.05 is 5 %)"),
    "perf_profiler.stack_copy_bytes": (
        lambda text: text.strip().isascii() and text.strip().isdigit() and int(text) in {4096 << i for i in range(5)},
        "a power of two of bytes, 4096 to 65536",
    ),
    "socket_tracer.body_limit": (_whole_number(0, 2**31 - 1), "a whole number of bytes, 0 or more"),
    "socket_tracer.conn_stats_interval_s": (_number(0.01, 3600.0), "seconds between conn_stats reports, 0.01 to 3600"),
    "socket_tracer.ignore_pids": (
        lambda text: all(p.strip().isdigit() for p in text.split(",")),
        "process ids separated by commas (12,34)",
    ),
    "socket_tracer.ignore_comms": (
        lambda text: all(0 < len(n.strip().encode()) <= 15 for n in text.split(",")),
        "process names as /proc/<pid>/comm shows them (1 to 15 bytes), separated by commas",
    ),
    "socket_tracer.ignore_cgroups": (
        lambda text: all(c.strip() for c in text.split(",")),
        "cgroup v2 paths (/system.slice/x.service) or ids, separated by commas",
    ),
    "socket_tracer.traced_cgroups": (
        lambda text: all(c.strip() for c in text.split(",")),
        "cgroup v2 paths (/system.slice/x.service) or ids, separated by commas",
    ),
}
_SETTING_COLLECTORS = {key.split(".", 1)[0] for key in SETTINGS if "." in key}


def setting_problem(key: str, text: str) -> tuple[str, str] | None:
    """Why ``key=text`` cannot be used, as (message, hint), or None when it can. Keys of a
    collector pxq has settings for must be among them (a typo would be ignored silently); other
    keys are Pixie's, which pxq does not read."""
    known = SETTINGS.get(key)
    if known is None:
        collector = key.split(".", 1)[0]
        if "." in key and collector in _SETTING_COLLECTORS:
            names = [k for k in SETTINGS if k.startswith(collector + ".")]
            near = closest(key, names)
            return (
                f"unknown setting {key!r}",
                (f"did you mean {near[0]!r}? " if near else "") + "settings: " + ", ".join(names),
            )
        return None
    check, expected = known
    if not check(text):
        return f"invalid value for setting {key}: {shown(text)}", f"{key} takes {expected}"
    return None
