"""speedscope's JSON file format (https://www.speedscope.app/file-format-schema.json).

One ``shared.frames`` list (each distinct frame once: ``{"name"}``, plus ``file``/``line`` for
Python frames ``func (file.py:12)``) and one ``sampled`` profile per group (e.g. per process when
the display has ``upid`` or ``cmdline``; the group's values name the profile and are not frames):
``samples`` are frame-index stacks, root first, ``weights`` their sample counts, ``unit`` "none".
speedscope shows them in its Left Heavy and Sandwich views (the samples carry no time order).

The samples array is written by Arrow string kernels, not ``json.dumps`` per stack, so 100k stacks
serialize in a fraction of a second.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pxq.render.stacks import FrameKind, StackSamples, StackWriter, python_frame

SCHEMA = "https://www.speedscope.app/file-format-schema.json"


def _exporter() -> str:
    try:
        from importlib.metadata import version

        return f"pxq@{version('pxq')}"
    except Exception:  # not installed (running from a source tree)
        return "pxq"


def _frames(record: StackSamples) -> tuple[list[dict], np.ndarray]:
    """speedscope frames for every code frame, and each frame id's index among them (-1 for group labels)."""
    keep = record.code_frames
    index = np.full(len(record.kinds), -1, dtype=np.int64)
    index[keep] = np.arange(len(keep))
    names, kinds = record.name_list, record.kinds.tolist()
    frames = []
    for f in keep.tolist():
        name = names[f]
        parts = python_frame(name) if kinds[f] == FrameKind.PYTHON else None
        frames.append({"name": parts[0], "file": parts[1], "line": parts[2]} if parts else {"name": name})
    return frames, index


def _samples_json(offsets: np.ndarray, indices: np.ndarray) -> str:
    """``[[0,1,2],[0,3]]`` for the CSR stacks, built with Arrow kernels."""
    if len(offsets) <= 1:
        return "[]"
    values = pa.array(indices).cast(pa.string())
    lists = pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), values)
    rows = pc.binary_join_element_wise("[", pc.binary_join(lists, ","), "]", "")
    return "[" + ",".join(rows.to_pylist()) + "]"


def speedscope_json(record: StackSamples, *, name: str | None = None) -> str:
    """The speedscope document of ``record`` as JSON text."""
    frames, index = _frames(record)
    profiles = []
    for group, members in record.by_group():
        offsets, ids = record.group_stacks(members)
        counts = record.counts[members]
        head = {
            "type": "sampled",
            "name": group.name if group.labels else (record.title or "all"),
            "unit": "none",
            "startValue": 0,
            "endValue": int(counts.sum()),
        }
        weights = "[" + ",".join(map(str, counts.tolist())) + "]"
        profiles.append(
            json.dumps(head, ensure_ascii=False)[:-1]
            + f',"samples":{_samples_json(offsets, index[ids])},"weights":{weights}}}'
        )
    if not profiles:  # speedscope wants at least one profile
        profiles.append(
            json.dumps(
                {
                    "type": "sampled",
                    "name": record.title or "all",
                    "unit": "none",
                    "startValue": 0,
                    "endValue": 0,
                    "samples": [],
                    "weights": [],
                }
            )
        )
    document = {
        "$schema": SCHEMA,
        "shared": {"frames": frames},
        "name": name or record.title or "pxq profile",
        "activeProfileIndex": 0,
        "exporter": _exporter(),
    }
    text = json.dumps(document, ensure_ascii=False)
    return text[:-1] + ',"profiles":[' + ",".join(profiles) + "]}"


class SpeedscopeWriter(StackWriter):
    name = "speedscope"
    extension = "speedscope.json"

    def write_record(self, record, stream) -> None:
        stream.write(speedscope_json(record).encode("utf-8"))
