"""pprof: a gzipped ``perftools.profiles.Profile`` protobuf (google/pprof ``proto/profile.proto``),
what ``go tool pprof``, Pyroscope and Parca read.

- ``sample_type``: ``samples/count``, plus ``cpu/nanoseconds`` (= count × period) when the sampling
  period is known (``StackSamples.period_ns``); then ``period_type`` cpu/nanoseconds and ``period``.
- one ``Sample`` per distinct stack: ``location_id`` leaf first, its values, and one string label
  per grouping column (e.g. ``upid``, ``cmdline``: ``pprof -tagroot=upid`` puts them back as roots);
- one ``Location`` per distinct frame, with one ``Line`` → ``Function``; a Python frame
  ``func (file.py:12)`` is function ``func`` in file ``file.py`` at line 12, so pprof's per-line and
  per-function views both work; every location points at one ``Mapping`` marked as symbolized;
- ``string_table`` starts with ""; ``time_nanos``/``duration_nanos`` when the table had times.

Encoded by hand (protobuf's wire format is a dozen lines for the subset used here) so rendering
needs no protobuf runtime; the samples, the bulk of the file, are encoded with numpy. The tests
decode the output with the ``protobuf`` library from a descriptor of profile.proto, as a second,
independent implementation.
"""

from __future__ import annotations

import functools
import gzip

import numpy as np

from pxq.render.stacks import FrameKind, StackSamples, StackWriter, gather_rows, prefix_sums, python_frame

# Field numbers of profile.proto.
PROFILE_SAMPLE_TYPE, PROFILE_SAMPLE, PROFILE_MAPPING, PROFILE_LOCATION, PROFILE_FUNCTION = 1, 2, 3, 4, 5
PROFILE_STRING_TABLE, PROFILE_TIME_NANOS, PROFILE_DURATION_NANOS, PROFILE_PERIOD_TYPE = 6, 9, 10, 11
PROFILE_PERIOD, PROFILE_COMMENT = 12, 13

_LEN, _VARINT = 2, 0


# ---------------------------------------------------------------------- wire format


_SMALL = [bytes((i,)) for i in range(128)]


def varint(n: int) -> bytes:
    """Base-128 varint; negative int64 values as their 10-byte two's complement."""
    if 0 <= n < 128:
        return _SMALL[n]
    n &= (1 << 64) - 1
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


@functools.cache
def key(field: int, wire: int) -> bytes:
    return varint(field << 3 | wire)


def int_field(field: int, value: int) -> bytes:
    """A varint field; proto3 leaves zero values out."""
    return key(field, _VARINT) + varint(value) if value else b""


def bytes_field(field: int, data: bytes) -> bytes:
    return key(field, _LEN) + varint(len(data)) + data


def varints(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vectorized varints: the bytes of all ``values`` back to back (uint8) and each one's length."""
    v = np.asarray(values, dtype=np.int64).astype(np.uint64)
    lengths = np.ones(len(v), dtype=np.int64)
    rest = v >> np.uint64(7)
    while rest.any():
        lengths += rest > 0
        rest >>= np.uint64(7)
    starts = prefix_sums(lengths)[:-1]
    out = np.empty(int(lengths.sum()), dtype=np.uint8)
    for k in range(int(lengths.max()) if len(v) else 0):
        sel = np.flatnonzero(lengths > k)
        byte = (v[sel] >> np.uint64(7 * k)) & np.uint64(0x7F)
        byte |= np.where(lengths[sel] > k + 1, np.uint64(0x80), np.uint64(0))
        out[starts[sel] + k] = byte.astype(np.uint8)
    return out, lengths


def _per_row(lengths: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Sum of ``lengths`` over each CSR row ``offsets[i]:offsets[i+1]``."""
    csum = prefix_sums(lengths)
    return csum[offsets[1:]] - csum[offsets[:-1]]


def interleave(segments: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate, row by row, several per-row byte segments ``(flat bytes, length per row)``.

    Row ``i`` of the result is segment 0's row ``i``, then segment 1's row ``i``, ...
    """
    rows = len(segments[0][1])
    totals = np.zeros(rows, dtype=np.int64)
    for _, lengths in segments:
        totals += lengths
    out = np.empty(int(totals.sum()), dtype=np.uint8)
    at = prefix_sums(totals)[:-1]
    for flat, lengths in segments:
        out[gather_rows(at, lengths)[1]] = flat
        at = at + lengths
    return out, totals


def _constant(byte: int, rows: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full(rows, byte, dtype=np.uint8), np.ones(rows, dtype=np.int64)


def _length_delimited(field: int, body: tuple[np.ndarray, np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Segments of ``field`` as a length-delimited field around the per-row ``body``."""
    rows = len(body[1])
    return [_constant(field << 3 | _LEN, rows), varints(body[1]), body]


# ---------------------------------------------------------------------- the profile


class _Strings:
    def __init__(self) -> None:
        self.index: dict[str, int] = {"": 0}

    def __call__(self, text: str) -> int:
        return self.index.setdefault(text, len(self.index))

    def encode(self) -> bytes:
        return b"".join(bytes_field(PROFILE_STRING_TABLE, s.encode("utf-8")) for s in self.index)


def _value_type(strings: _Strings, type_: str, unit: str) -> bytes:
    return int_field(1, strings(type_)) + int_field(2, strings(unit))


def _samples(record: StackSamples, location_of: np.ndarray, group_labels: list[bytes]) -> bytes:
    """Every Sample message as profile field 2, vectorized over the stacks."""
    rows = len(record)
    if rows == 0:
        return b""
    # Location ids leaf first, without the group-label frames.
    starts = record.offsets[:-1] + record.root_depths
    ends = record.offsets[1:]
    lengths = ends - starts
    loc_offsets = prefix_sums(lengths)
    position = np.arange(loc_offsets[-1]) - np.repeat(loc_offsets[:-1], lengths)
    frames = record.frame_ids[np.repeat(ends - 1, lengths) - position]
    loc_bytes, loc_lengths = varints(location_of[frames])
    locations = (loc_bytes, _per_row(loc_lengths, loc_offsets))
    values = [record.counts]
    if record.period_ns:
        values.append(record.counts * record.period_ns)
    value_bytes, value_lengths = varints(np.column_stack(values).ravel())
    packed_values = (value_bytes, _per_row(value_lengths, np.arange(rows + 1) * len(values)))
    # Labels: the group's precomputed Label fields, gathered per sample.
    label_flat = np.frombuffer(b"".join(group_labels), dtype=np.uint8)
    label_len = np.array([len(b) for b in group_labels], dtype=np.int64)
    label_start = prefix_sums(label_len)[:-1]
    sample_label_len = label_len[record.group_of]
    labels = (label_flat[gather_rows(label_start[record.group_of], sample_label_len)[1]], sample_label_len)
    body = interleave([*_length_delimited(1, locations), *_length_delimited(2, packed_values), labels])
    out, _ = interleave(_length_delimited(PROFILE_SAMPLE, body))
    return out.tobytes()


def pprof_profile(record: StackSamples) -> bytes:
    """The uncompressed ``Profile`` message of ``record``."""
    strings = _Strings()
    parts = [bytes_field(PROFILE_SAMPLE_TYPE, _value_type(strings, "samples", "count"))]
    if record.period_ns:
        parts.append(bytes_field(PROFILE_SAMPLE_TYPE, _value_type(strings, "cpu", "nanoseconds")))
    # Functions (by name and file) and one location per frame; group-label frames get none.
    names = record.name_list
    location_of = np.zeros(len(names), dtype=np.int64)
    functions: dict[tuple[str, str], int] = {}
    locations = []
    kinds = record.kinds.tolist()
    for f in record.code_frames.tolist():
        py = python_frame(names[f]) if kinds[f] == FrameKind.PYTHON else None
        func, file, line = py if py else (names[f], "", 0)
        function_id = functions.setdefault((func, file), len(functions) + 1)
        location_id = len(locations) + 1
        location_of[f] = location_id
        line_msg = int_field(1, function_id) + int_field(2, line)
        locations.append(
            bytes_field(PROFILE_LOCATION, int_field(1, location_id) + int_field(2, 1) + bytes_field(4, line_msg))
        )
    group_labels = [
        b"".join(
            bytes_field(3, int_field(1, strings(column)) + int_field(2, strings(value)))
            for column, value in group.values
            if value != ""
        )
        for group in record.groups
    ]
    parts.append(_samples(record, location_of, group_labels))
    mapping = (
        int_field(1, 1)
        + int_field(5, strings(record.title or "pxq"))
        + int_field(7, 1)
        + int_field(8, 1)
        + int_field(9, 1)
    )
    parts.append(bytes_field(PROFILE_MAPPING, mapping))
    parts.extend(locations)
    for (func, file), function_id in functions.items():
        body = int_field(1, function_id) + int_field(2, strings(func)) + int_field(3, strings(func))
        parts.append(bytes_field(PROFILE_FUNCTION, body + int_field(4, strings(file))))
    if record.start_ns is not None:
        parts.append(int_field(PROFILE_TIME_NANOS, record.start_ns))
        parts.append(int_field(PROFILE_DURATION_NANOS, (record.end_ns or record.start_ns) - record.start_ns))
    if record.period_ns:
        parts.append(bytes_field(PROFILE_PERIOD_TYPE, _value_type(strings, "cpu", "nanoseconds")))
        parts.append(int_field(PROFILE_PERIOD, record.period_ns))
    if record.title:
        parts.append(int_field(PROFILE_COMMENT, strings(f"pxq display {record.title}")))
    return b"".join(parts) + strings.encode()


def pprof_bytes(record: StackSamples) -> bytes:
    """The gzipped profile, reproducible (no timestamp in the gzip header)."""
    return gzip.compress(pprof_profile(record), compresslevel=6, mtime=0)


class PprofWriter(StackWriter):
    name = "pprof"
    extension = "pb.gz"

    def write_record(self, record, stream) -> None:
        stream.write(pprof_bytes(record))
