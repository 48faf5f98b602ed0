"""Human-readable text for single values, by semantic type (terminal tables, notebooks).

Numbers keep one decimal after scaling: ``12.3 ms``, ``1.2 KiB``. Percent values are fractions
(0.123 → ``12.3%``), as in Pixie. Times carry their zone as a UTC offset, with milliseconds:
``2025-11-26 10:01:02.123 +05:30`` in the local zone (``TZ`` respected) or ``... +00:00`` in UTC.
"""

from __future__ import annotations

import datetime as dt
import json
import math

from rich.cells import cell_len

_DURATION_STEPS = ((1_000, "ns", 1), (1_000_000, "µs", 1_000), (1_000_000_000, "ms", 1_000_000))
_BYTE_UNITS = ("KiB", "MiB", "GiB", "TiB", "PiB", "EiB")


def duration(ns: float) -> str:
    """Nanoseconds as ``850 ns``, ``12.3 µs``, ``12.3 ms``, ``1.2 s``, ``2.5 min``, ``1.5 h``."""
    magnitude = abs(ns)
    if magnitude < 1_000:
        return f"{ns:.0f} ns" if isinstance(ns, float) else f"{ns} ns"
    for limit, unit, scale in _DURATION_STEPS[1:]:
        if magnitude < limit:
            return f"{ns / scale:.1f} {unit}"
    seconds = ns / 1e9
    if abs(seconds) < 60:
        return f"{seconds:.1f} s"
    if abs(seconds) < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def size(count: float) -> str:
    """A byte count as ``512 B``, ``1.2 KiB``, ``3.4 MiB``..."""
    value = float(count)
    if abs(value) < 1024:
        return f"{count:.0f} B" if isinstance(count, float) else f"{count} B"
    for unit in _BYTE_UNITS:
        value /= 1024
        if abs(value) < 1024 or unit == _BYTE_UNITS[-1]:
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")


def percent(fraction: float) -> str:
    return f"{fraction * 100:.1f}%"


def utc_offset(offset: dt.timedelta | None) -> str:
    """A UTC offset as ``+05:30`` / ``-03:00`` / ``+00:00`` (seconds kept when a zone has them)."""
    total = int((offset or dt.timedelta(0)).total_seconds())
    sign = "-" if total < 0 else "+"
    hours, rest = divmod(abs(total), 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{sign}{hours:02d}:{minutes:02d}" + (f":{seconds:02d}" if seconds else "")


def timestamp(ns: int, zone: dt.tzinfo | None = None) -> str:
    """Nanoseconds since the epoch as ``2025-11-26 10:01:02.123 +05:30``: in ``zone``, or in the
    local zone (the ``TZ`` environment variable, else the system's) when ``zone`` is None. The
    offset is the one in force at that instant, so times across a DST change stay unambiguous."""
    seconds, rest = divmod(int(ns), 1_000_000_000)
    try:
        moment = dt.datetime.fromtimestamp(seconds, dt.UTC).astimezone(zone)
    except (OverflowError, OSError, ValueError):
        return str(ns)
    return f"{moment:%Y-%m-%d %H:%M:%S}.{rest // 1_000_000:03d} {utc_offset(moment.utcoffset())}"


def number(value: float) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value) or math.isinf(value):
        return str(value)
    return f"{value:.6g}" if abs(value) < 1e15 else f"{value:.4e}"


def one_line(text: str) -> str:
    """Control characters (newlines, tabs...) as visible escapes so a cell stays on one line."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else json.dumps(ch)[1:-1] for ch in text)


def cut(text: str, width: int, *, keep_end: bool = False) -> str:
    """``text`` cut to at most ``width`` terminal cells with an ellipsis (at the start when
    ``keep_end``); wide characters (CJK, emoji) count two cells, as the terminal draws them."""
    if cell_len(text) <= width:
        return text
    if width <= 1:
        return "…"[:width]
    room = width - 1
    chars = reversed(text) if keep_end else iter(text)
    kept, used = [], 0
    for ch in chars:
        used += cell_len(ch)
        if used > room:
            break
        kept.append(ch)
    return "…" + "".join(reversed(kept)) if keep_end else "".join(kept) + "…"
