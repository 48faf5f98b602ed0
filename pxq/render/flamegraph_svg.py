"""A self-contained interactive SVG flamegraph (or icicle graph) of a ``StackSamples`` record.

No network and no external files: the script (``flamegraph.js``, shipped in the package) and the
styles are embedded. Click a frame to zoom into it (its ancestors stay, dimmed, full width), click
the root or "Reset Zoom" (Esc) to go back; "Search" (Ctrl-F) takes a regular expression (a plain
substring when it is not a valid one), turns matched frames magenta and shows the share of samples
under them. Every frame has a tooltip: name, sample count and percentage of all samples. Colours
tell the frame kind (native, kernel, Python, unknown/truncated, grouping root frames), with hue
varying by name so neighbouring frames are distinguishable and a function keeps its colour.

The layout is computed here, vectorized over all stacks one depth level at a time (never
recursive, so stack depth does not matter): stacks come sorted root first from the record, the
common-prefix length of each stack with the previous one tells where a frame starts at each depth.
Frames narrower than ``min_width`` pixels (0.1 by default, as flamegraph.pl) are left out, and so
are their children; zooming shows only the frames that were drawn, and the matched percentage of a
search counts drawn frames only.

Also here: ``diff_flamegraph_svg(before, after)`` (a differential flamegraph, red grew / blue
shrank) and ``notebook_flamegraph(frame)`` (what ``%%pxq`` shows for a stack table).
"""

from __future__ import annotations

import html
import re
import zlib
from dataclasses import dataclass
from importlib import resources

import numpy as np

from pxq.render.stacks import (
    STACK_COLUMN,
    FrameKind,
    StackSamples,
    StackWriter,
    align,
    is_stack_table,
    prefix_sums,
)

WIDTH = 1200
FRAME_HEIGHT = 16
FONT_SIZE = 12
MIN_WIDTH = 0.1
XPAD = 10
TOP = 64
BOTTOM = 34
HIGHLIGHT = "#e600e6"
ROOT_COLOUR = "#c8c8c8"
KIND_NAMES = {
    FrameKind.NATIVE: "native",
    FrameKind.KERNEL: "kernel",
    FrameKind.PYTHON: "Python",
    FrameKind.UNKNOWN: "unknown/truncated",
    FrameKind.GROUP: "process/group",
}
# Per kind: base RGB and how far each channel varies with the name's hash (0..1 per channel).
_PALETTE = {
    FrameKind.NATIVE: ((205, 0, 0), (50, 230, 55)),  # flamegraph.pl's "hot": red to yellow
    FrameKind.KERNEL: ((95, 150, 215), (55, 50, 40)),  # blue
    FrameKind.PYTHON: ((60, 180, 70), (60, 50, 50)),  # green
    FrameKind.UNKNOWN: ((170, 170, 170), (40, 40, 40)),  # grey
    FrameKind.GROUP: ((195, 180, 235), (30, 30, 20)),  # lavender
}
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


@dataclass(frozen=True)
class Layout:
    """Every frame rectangle of a flamegraph, in samples; node 0 is the root ("all")."""

    frame: np.ndarray  # int32 frame id, -1 for the root
    depth: np.ndarray  # int32, 0 for the root
    start: np.ndarray  # int64, samples before this frame
    width: np.ndarray  # int64, samples under this frame
    first: np.ndarray  # int64, the stacks under this frame are first..last-1 (record order)
    last: np.ndarray


def common_prefix_lengths(record: StackSamples) -> np.ndarray:
    """For each stack, how many leading frames it shares with the previous stack (0 for the first)."""
    off, ids, lens = record.offsets, record.frame_ids, record.lengths
    lcp = np.zeros(len(record), dtype=np.int64)
    alive = np.arange(1, len(record))
    depth = 0
    while alive.size:
        alive = alive[(lens[alive - 1] > depth) & (lens[alive] > depth)]
        alive = alive[ids[off[alive - 1] + depth] == ids[off[alive] + depth]]
        lcp[alive] += 1
        depth += 1
    return lcp


def layout(record: StackSamples, weights: np.ndarray | None = None) -> Layout:
    """The frames of the flamegraph of ``record``: each distinct (prefix, frame) is one node.

    Widths are the stacks' counts, or ``weights`` (one per stack) when given.
    At depth ``d`` the stacks longer than ``d`` are scanned in order; a frame starts where a stack
    shares at most ``d`` frames with the previous one, and spans the stacks up to the next start.
    """
    off, ids, lens = record.offsets, record.frame_ids, record.lengths
    before = prefix_sums(record.counts if weights is None else weights)
    lcp = common_prefix_lengths(record)
    frames, depths, starts, widths = [np.array([-1])], [np.array([0])], [np.array([0])], [before[-1:]]
    firsts, lasts = [np.array([0])], [np.array([len(record)])]
    active = np.arange(len(record))
    depth = 0
    while True:
        active = active[lens[active] > depth]
        if not active.size:
            break
        begins = np.flatnonzero(np.concatenate(([True], lcp[active[1:]] <= depth)))
        first = active[begins]
        last = active[np.append(begins[1:], len(active)) - 1] + 1
        frames.append(ids[off[first] + depth])
        depths.append(np.full(len(first), depth + 1))
        starts.append(before[first])
        widths.append(before[last] - before[first])
        firsts.append(first)
        lasts.append(last)
        depth += 1
    return Layout(
        np.concatenate(frames).astype(np.int32),
        np.concatenate(depths).astype(np.int32),
        np.concatenate(starts).astype(np.int64),
        np.concatenate(widths).astype(np.int64),
        np.concatenate(firsts).astype(np.int64),
        np.concatenate(lasts).astype(np.int64),
    )


def frame_colours(record: StackSamples, frame_ids: np.ndarray) -> dict[int, str]:
    """``#rrggbb`` of each given frame: the kind's palette, varied by a hash of the name."""
    names = record.name_list
    colours = {}
    for f in np.unique(frame_ids).tolist():
        if f < 0:
            colours[f] = ROOT_COLOUR
            continue
        h = zlib.crc32(names[f].encode("utf-8", "replace"))
        (r, g, b), (dr, dg, db) = _PALETTE[FrameKind(record.kinds[f])]
        v = ((h & 0xFF) / 255, ((h >> 8) & 0xFF) / 255, ((h >> 16) & 0xFF) / 255)
        if record.kinds[f] == FrameKind.UNKNOWN:  # greys stay grey
            v = (v[0], v[0], v[0])
        colours[f] = "#%02x%02x%02x" % (int(r + dr * v[2]), int(g + dg * v[0]), int(b + db * v[1]))
    return colours


def xml_text(text: str) -> str:
    return _NOT_XML.sub("\ufffd", html.escape(text, quote=False))


def _label(name: str, width_px: float) -> str:
    chars = int((width_px - 6) // (FONT_SIZE * 0.59))
    if chars < 3:
        return ""
    return name if len(name) <= chars else name[: chars - 2] + ".."


def _script() -> str:
    return resources.files("pxq.render").joinpath("flamegraph.js").read_text(encoding="utf-8")


def flamegraph_svg(
    record: StackSamples,
    *,
    title: str | None = None,
    inverted: bool = False,
    width: int = WIDTH,
    min_width: float = MIN_WIDTH,
) -> str:
    """The SVG document of ``record``. ``inverted`` draws an icicle graph (root at the top)."""
    lay = layout(record)
    keep = _drawn(lay, width, min_width)
    by_frame = frame_colours(record, lay.frame[keep])
    fills = [by_frame[f] for f in lay.frame[keep].tolist()]
    drawn = lay.frame[keep]
    kinds = sorted({FrameKind(k) for k in record.kinds[drawn[drawn >= 0]].tolist()})
    stats = f"{record.total:,} samples, {len(record):,} distinct stacks, {len(keep):,} frames drawn"
    return _document(
        record, lay, keep, fills, None, title=title, inverted=inverted, width=width, legend=_legend(kinds), stats=stats
    )


def diff_flamegraph_svg(
    before: StackSamples,
    after: StackSamples,
    *,
    title: str | None = None,
    normalize: bool = True,
    inverted: bool = False,
    width: int = WIDTH,
    min_width: float = MIN_WIDTH,
) -> str:
    """A differential flamegraph (flamegraph.pl's difffolded style): frames sized by ``after``,
    red where their share of samples grew since ``before``, blue where it shrank, deeper for
    bigger changes. With ``normalize`` (the default) shares are compared, so captures of
    different lengths compare fairly; otherwise raw sample counts.

    Stacks seen only in ``before`` have no width here; they still count in their ancestors'
    before-totals.
    """
    union, was, now = align(before, after)
    lay = layout(union, weights=now)
    keep = _drawn(lay, width, min_width)
    prefix = prefix_sums(was)
    b = (prefix[lay.last] - prefix[lay.first])[keep]
    a = lay.width[keep]
    a_total, b_total = max(int(now.sum()), 1), max(int(was.sum()), 1)
    if normalize:
        delta = a / a_total - b / b_total
    else:
        delta = (a - b).astype(np.float64)
    scale = float(np.abs(delta).max()) or 1.0
    fills = [_diff_colour(d / scale) for d in delta.tolist()]
    names = union.name_list
    tips = []
    for frame, n, m, d in zip(lay.frame[keep].tolist(), a.tolist(), b.tolist(), delta.tolist()):
        name = "all" if frame < 0 else names[frame]
        change = f"{100 * d:+.2f} points" if normalize else f"{int(d):+,} samples"
        tips.append(
            f"{name} ({n:,} sample{'' if n == 1 else 's'}, {100 * n / a_total:.2f}%; "
            f"before {m:,}, {100 * m / b_total:.2f}%; {change})"
        )
    stats = f"{int(now.sum()):,} samples after, {int(was.sum()):,} before; red: grew, blue: shrank" + (
        " (share of samples)" if normalize else ""
    )
    return _document(
        union,
        lay,
        keep,
        fills,
        tips,
        title=title or "Differential Flame Graph",
        inverted=inverted,
        width=width,
        legend="",
        stats=stats,
    )


def _diff_colour(ratio: float) -> str:
    """Light grey for no change, to red (+1) or blue (-1), light enough for black labels."""
    c = int(225 - 135 * min(abs(ratio), 1.0))
    if ratio > 0:
        return "#ff%02x%02x" % (c, c)
    if ratio < 0:
        return "#%02x%02xff" % (c, c)
    return "#e1e1e1"


def _drawn(lay: Layout, width: int, min_width: float) -> np.ndarray:
    """Indices of the nodes at least ``min_width`` pixels wide (the root always)."""
    total = max(int(lay.width[0]), 1)
    keep = np.flatnonzero(lay.width * ((width - 2 * XPAD) / total) >= min_width)
    return keep if len(keep) and keep[0] == 0 else np.concatenate(([0], keep)).astype(np.int64)


def _document(record, lay, keep, fills, tips, *, title, inverted, width, legend, stats) -> str:
    total = max(int(lay.width[0]), 1)
    px_per_sample = (width - 2 * XPAD) / total
    levels = int(lay.depth[keep].max()) + 1
    height = TOP + levels * FRAME_HEIGHT + BOTTOM
    y0 = TOP if inverted else height - BOTTOM - FRAME_HEIGHT
    names = record.name_list
    root = title or record.title or ("Icicle Graph" if inverted else "Flame Graph")
    xs = (XPAD + lay.start[keep] * px_per_sample).tolist()
    ws = (lay.width[keep] * px_per_sample).tolist()
    ys = (y0 + lay.depth[keep] * FRAME_HEIGHT if inverted else y0 - lay.depth[keep] * FRAME_HEIGHT).tolist()
    escaped: dict[int, str] = {}
    rows = []
    for i, (frame, x, w, y, n) in enumerate(zip(lay.frame[keep].tolist(), xs, ws, ys, lay.width[keep].tolist())):
        name = "all" if frame < 0 else names[frame]
        if tips is not None:
            tip = xml_text(tips[i])
        else:
            if frame not in escaped:
                escaped[frame] = xml_text(name)
            tip = f"{escaped[frame]} ({n:,} sample{'' if n == 1 else 's'}, {100 * n / total:.2f}%)"
        label = _label(name, w)
        text = f'<text x="{x + 3:.2f}" y="{y + FRAME_HEIGHT - 4}">{xml_text(label)}</text>' if label else ""
        rows.append(
            f'<g><title>{tip}</title><rect x="{x:.2f}" y="{y}" width="{w:.2f}" '
            f'height="{FRAME_HEIGHT - 1}" fill="{fills[i]}"/>{text}</g>\n'
        )
    config = (
        f"var C = {{inv: {int(inverted)}, fh: {FRAME_HEIGHT}, y0: {y0}, xpad: {XPAD}, width: {width}, "
        f'total: {total}, font: {FONT_SIZE}, hl: "{HIGHLIGHT}"}};\n'
    )
    script = (config + _script()).replace("]]>", "]]]]><![CDATA[>")
    return (
        '<?xml version="1.0" encoding="UTF-8" standalone="no"?>\n'
        f'<svg version="1.1" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" class="{"icicle" if inverted else "flame"}">\n'
        "<style>text{font-family:Verdana,Helvetica,sans-serif;font-size:%dpx;fill:#000}"
        "#title{font-size:17px;text-anchor:middle}#stats{fill:#555;text-anchor:middle}"
        ".btn{cursor:pointer;fill:#0645ad}.hide{display:none}#frames g{cursor:pointer}"
        "#frames rect{rx:2px;ry:2px}#frames .parent{opacity:0.5}#matched{text-anchor:end}"
        "#frames g:hover rect{stroke:#000;stroke-width:0.5}</style>\n"
        % FONT_SIZE
        + '<defs><linearGradient id="bg" x1="0" y1="0" x2="0" y2="1">'
        '<stop stop-color="#eeeeee" offset="5%"/><stop stop-color="#eeeeb0" offset="95%"/></linearGradient></defs>\n'
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="url(#bg)"/>\n'
        f'<text id="title" x="{width / 2:.0f}" y="22">{xml_text(root)}</text>\n'
        f'<text id="stats" x="{width / 2:.0f}" y="40">{xml_text(stats)}</text>\n'
        f'<text id="unzoom" class="btn hide" x="{XPAD}" y="22">Reset Zoom</text>\n'
        f'<text id="search" class="btn" x="{width - XPAD - 100}" y="22">Search</text>\n'
        f'<text id="details" x="{XPAD}" y="{height - 12}"> </text>\n'
        f'<text id="matched" x="{width - XPAD}" y="{height - 12}"> </text>\n'
        + legend
        + '<g id="frames">\n'
        + "".join(rows)
        + "</g>\n"
        f'<script type="text/ecmascript"><![CDATA[\n{script}]]></script>\n'
        "</svg>\n"
    )


def _legend(kinds: list[FrameKind]) -> str:
    parts, x = [], XPAD
    for kind in kinds:
        (r, g, b), (dr, dg, db) = _PALETTE[kind]
        colour = "#%02x%02x%02x" % (int(r + dr / 2), int(g + dg / 2), int(b + db / 2))
        parts.append(
            f'<rect x="{x}" y="48" width="10" height="10" fill="{colour}"/>'
            f'<text x="{x + 14}" y="57">{KIND_NAMES[kind]}</text>'
        )
        x += 30 + 8 * len(KIND_NAMES[kind])
    return '<g id="legend">' + "".join(parts) + "</g>\n"


class SvgWriter(StackWriter):
    name = "svg"
    extension = "svg"
    inverted = False

    def write_record(self, record, stream) -> None:
        stream.write(flamegraph_svg(record, inverted=self.inverted).encode("utf-8"))


class IcicleWriter(SvgWriter):
    name = "icicle"
    inverted = True


def notebook_flamegraph(frame, title: str = ""):
    """An object Jupyter shows as the interactive flamegraph when ``frame`` (a pandas DataFrame or
    an Arrow table) is a stack table, else None. The SVG sits in an iframe so its script runs."""
    import pyarrow as pa

    if isinstance(frame, pa.Table):
        table = frame
    elif STACK_COLUMN not in getattr(frame, "columns", ()):
        return None
    else:
        try:
            table = pa.Table.from_pandas(frame, preserve_index=False)
        except (pa.ArrowException, TypeError, ValueError):
            return None
    if not is_stack_table(table):
        return None
    svg = flamegraph_svg(StackSamples.from_table(table, title=title))
    height = int(re.search(r'height="(\d+)"', svg).group(1)) + 8
    return _InlineHtml(
        f'<iframe srcdoc="{html.escape(svg, quote=True)}" width="100%" height="{height}" '
        'style="border:0" title="flamegraph"></iframe>'
    )


class _InlineHtml:
    def __init__(self, text: str) -> None:
        self.text = text

    def _repr_html_(self) -> str:
        return self.text
