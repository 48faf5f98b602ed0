"""The time texts a user writes: PxL's times in scripts ('-5m', '2026-11-26 04:00:00 +0000') and the
duration of a capture window (``--for 2m30s``). Both take PxL's units (``TIME_UNITS_NS``).
"""

from __future__ import annotations

import datetime as dt
import math
import re

from pxq.errors import UsageError
from pxq.plan.limits import fits_int64
from pxq.types import TIME_UNITS_NS as TIME_UNITS_NS  # defined beside the types: px functions use it too

RELATIVE_TIME = re.compile(r"^\s*(-?\d+)\s*(ns|us|µs|ms|s|m|h|d)\s*$")


def parse_time(text: str, now_ns: int) -> int:
    """A PxL time string as nanoseconds: relative ('-5m') against ``now_ns``, or absolute.

    Raises ValueError for text that is not a time and OverflowError for a time outside
    timestamp[ns] (see ``pxq.plan.limits``).
    """
    match = RELATIVE_TIME.match(text)
    if match:
        # more digits than any int64 has: out of range (and int() refuses more than 4300)
        if len(match.group(1).lstrip("-0")) > 19:
            raise OverflowError(text)
        return _in_time_range(now_ns + int(match.group(1)) * TIME_UNITS_NS[match.group(2)], text)
    cleaned = text.strip()
    for fmt in (
        "%Y-%m-%d %H:%M:%S.%f %z",
        "%Y-%m-%d %H:%M:%S %z",
        "%Y-%m-%d %H:%M:%S.%f",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M:%S.%f%z",
        "%Y-%m-%dT%H:%M:%S%z",
        "%Y-%m-%dT%H:%M:%S.%f",
        "%Y-%m-%dT%H:%M:%S",
    ):
        try:
            stamp = dt.datetime.strptime(cleaned.replace("Z", "+0000"), fmt)
        except ValueError:
            continue
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=dt.UTC)
        delta = stamp - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
        return _in_time_range((delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000, text)
    raise ValueError("not a relative or absolute time")


def _in_time_range(ns: int, text: str) -> int:
    if not fits_int64(ns):
        raise OverflowError(text)
    return ns


# One part of a duration: a number and its unit ("1.5s", "2m", "500ms").
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?|\.\d+)(ns|us|µs|ms|s|m|h|d)")
_PLAIN_SECONDS = re.compile(r"\d+(?:\.\d+)?|\.\d+")
# A capture window longer than a day is a typo (the table store keeps a bounded window anyway).
MAX_WINDOW_S = 24 * 3600.0


def parse_duration(text: str) -> float:
    """A capture window as seconds: ``10s``, ``1.5s``, ``1h2m``, ``2m30s``, ``500ms`` or a number
    of seconds (``90``). Zero, negative, NaN/inf and windows over a day are usage errors."""
    cleaned = text.strip().lower().replace(" ", "")
    example = "use e.g. 10s, 1.5s, 2m30s, 500ms or a number of seconds"
    if cleaned.startswith("-"):
        raise UsageError(f"invalid duration {text!r}: a capture window must be positive ({example})")
    if _PLAIN_SECONDS.fullmatch(cleaned):
        seconds = float(cleaned)
    else:
        parts = list(_DURATION_PART.finditer(cleaned))
        if not cleaned or "".join(m.group(0) for m in parts) != cleaned:
            raise UsageError(f"invalid duration {text!r}: {example}")
        seconds = sum(float(m.group(1)) * TIME_UNITS_NS[m.group(2)] / 1e9 for m in parts)
    if not math.isfinite(seconds) or seconds <= 0:
        raise UsageError(f"invalid duration {text!r}: a capture window must be positive ({example})")
    if seconds > MAX_WINDOW_S:
        raise UsageError(
            f"invalid duration {text!r}: at most 24h (capture in several windows, or replay a capture with --from)"
        )
    return seconds
