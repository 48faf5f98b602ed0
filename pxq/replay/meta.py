"""``capture.json``: what a capture directory says about itself, validated on write and on read.

    {"host": str, "start_time_ns": int, "end_time_ns": int,
     "processes": {"<upid>": {"pid": int, "comm": str, "cmdline": str, "exe": str,
                              "container_id": str, "pod": str, "namespace": str}},
     "drops": {"<table>": {"<reason>": int}},            # optional
     "time_range_ns": {"<table>": [int, int]}}           # optional: each table's min and max time_

More keys are allowed and kept. In a process entry only ``pid`` is required; the string fields
default to "".
"""

from __future__ import annotations

from typing import Any

META_FILE = "capture.json"
# Each table's smallest and largest time_ as written; a time read outside them means a damaged file.
TIME_RANGE_KEY = "time_range_ns"
PROCESS_STRING_FIELDS = ("comm", "cmdline", "exe", "container_id", "pod", "namespace")


class MetaProblem(ValueError):
    """One line saying what is wrong with capture.json's content."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, for one-line error reports."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _require(meta: dict, key: str, check, expected: str) -> Any:
    if key not in meta:
        raise MetaProblem(f"missing key {key!r}")
    value = meta[key]
    if not check(value):
        raise MetaProblem(f"{key!r} must be {expected}, not {_type_name(value)}")
    return value


def normalize_process(upid: Any, entry: Any) -> dict:
    if not isinstance(upid, str):
        raise MetaProblem(f"process key {upid!r} must be a upid string")
    if not isinstance(entry, dict):
        raise MetaProblem(f"process {upid!r} must be an object, not {_type_name(entry)}")
    if not _is_int(entry.get("pid")):
        raise MetaProblem(f"process {upid!r}: 'pid' must be an integer, not {_type_name(entry.get('pid'))}")
    out = dict(entry)
    for key in PROCESS_STRING_FIELDS:
        value = out.setdefault(key, "")
        if not isinstance(value, str):
            raise MetaProblem(f"process {upid!r}: {key!r} must be a string, not {_type_name(value)}")
    return out


def normalize_drops(drops: Any) -> dict[str, dict[str, int]]:
    if drops is None:
        return {}
    if not isinstance(drops, dict):
        raise MetaProblem(f"'drops' must be an object, not {_type_name(drops)}")
    out: dict[str, dict[str, int]] = {}
    for table, counters in drops.items():
        if not isinstance(counters, dict):
            raise MetaProblem(f"drops for {table!r} must be an object, not {_type_name(counters)}")
        for reason, count in counters.items():
            if not _is_int(count) or count < 0:
                raise MetaProblem(f"drops[{table!r}][{reason!r}] must be a non-negative integer, not {count!r}")
        out[str(table)] = {str(k): v for k, v in counters.items()}
    return out


def normalize_time_ranges(ranges: Any) -> dict[str, list[int]]:
    if ranges is None:
        return {}
    if not isinstance(ranges, dict):
        raise MetaProblem(f"{TIME_RANGE_KEY!r} must be an object, not {_type_name(ranges)}")
    for table, bounds in ranges.items():
        if not (
            isinstance(bounds, list) and len(bounds) == 2 and all(_is_int(b) for b in bounds) and bounds[0] <= bounds[1]
        ):
            raise MetaProblem(f"{TIME_RANGE_KEY}[{table!r}] must be [smallest, largest] integers, not {bounds!r}")
    return {str(table): list(bounds) for table, bounds in ranges.items()}


def normalize_meta(meta: Any) -> dict:
    """A validated copy of capture.json's content, with defaults filled in; raises MetaProblem."""
    if not isinstance(meta, dict):
        raise MetaProblem(f"top level must be an object, not {_type_name(meta)}")
    out = dict(meta)
    _require(meta, "host", lambda v: isinstance(v, str), "a string")
    start = _require(meta, "start_time_ns", _is_int, "an integer")
    end = _require(meta, "end_time_ns", _is_int, "an integer")
    if end < start:
        raise MetaProblem(f"'end_time_ns' ({end}) is before 'start_time_ns' ({start})")
    processes = _require(meta, "processes", lambda v: isinstance(v, dict), "an object")
    out["processes"] = {upid: normalize_process(upid, entry) for upid, entry in processes.items()}
    out["drops"] = normalize_drops(meta.get("drops"))
    out[TIME_RANGE_KEY] = normalize_time_ranges(meta.get(TIME_RANGE_KEY))
    return out
