"""The value ranges PxL shares with Arrow and Pixie: int64 integers and timestamp[ns] times.

Integers inside expressions are int64 (arithmetic wraps, as in Pixie's C++); a time is int64
nanoseconds since the Unix epoch, so the times a plan can hold run from 1677-09-21 00:12:43 to
2262-04-11 23:47:16 UTC. Literals, script arguments and time bounds are checked against these
ranges where the script gives them, so nothing downstream meets a value Arrow cannot hold.
"""

from __future__ import annotations

import datetime as dt

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
INT64_RANGE = "-9223372036854775808 .. 9223372036854775807"

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def fits_int64(value: int) -> bool:
    return INT64_MIN <= value <= INT64_MAX


def format_time_ns(ns: int) -> str:
    """``ns`` since the epoch as 'YYYY-MM-DD HH:MM:SS.nnnnnnnnnZ', for any int64 (and beyond).

    Computed with timedelta arithmetic, not the C library's gmtime, which fails (OSError,
    OverflowError) far from 1970 on some platforms.
    """
    seconds, nanos = divmod(ns, 1_000_000_000)
    try:
        stamp = _EPOCH + dt.timedelta(seconds=seconds)
    except OverflowError:  # beyond year 1..9999: no calendar form, show the number
        return f"{ns}ns"
    return f"{stamp:%Y-%m-%d %H:%M:%S}.{nanos:09d}Z"


TIME_FIRST = format_time_ns(INT64_MIN)[:19]  # 1677-09-21 00:12:43
TIME_LAST = format_time_ns(INT64_MAX)[:19]  # 2262-04-11 23:47:16


def shown(raw: object) -> str:
    """``raw`` for a message, shortened: it may be a 5,000-digit number."""
    text = repr(raw) if not isinstance(raw, int) or abs(raw) < 10**30 else f"an integer of {raw.bit_length()} bits"
    return text if len(text) <= 60 else text[:40] + f"... ({len(text)} characters)"
