"""SVG flamegraph, speedscope and pprof writers, each read back by an independent reader."""

from __future__ import annotations

import gzip
import json
import re
import xml.etree.ElementTree as ET
from collections import Counter

import pyarrow as pa
import pytest
from hypothesis import given, settings, strategies as st

from pxq.render import FORMATS, WRITERS, render
from pxq.render.flamegraph_svg import flamegraph_svg, layout, notebook_flamegraph
from pxq.render.folded import folded_text
from pxq.render.pprof import pprof_bytes, varint, varints
from pxq.render.speedscope import SCHEMA, speedscope_json
from pxq.render.stacks import PERIOD_KEY, StackSamples

SVG = "{http://www.w3.org/2000/svg}"
FOLDED = """\
main;run;parse 30
main;run;parse;memcpy 10
main;run;handle (app/server.py:42);do_syscall_64_[k] 25
main;run;handle (app/server.py:42) 15
main;gc 5
main;libc.so.6+0x2a1c9;[unknown] 14
main;tiny 1
"""


def record(text: str = FOLDED, **kw) -> StackSamples:
    return StackSamples.from_folded(text, **kw)


def test_stack_formats_are_registered():
    for fmt in ("folded", "svg", "icicle", "speedscope", "pprof"):
        assert fmt in FORMATS and WRITERS[fmt].name == fmt


# ---------------------------------------------------------------------- layout


def _tree_nodes(rec: StackSamples) -> dict[tuple[str, ...], tuple[int, int]]:
    """Reference layout: path → (samples before it, samples under it), by walking a nested dict tree.

    A frame's own samples (stacks ending there) come first, then its children in frame order."""
    tree: dict = {"": 0, None: 0}
    for i in range(len(rec)):
        node = tree
        for frame in rec.stack(i):
            node = node.setdefault(frame, {"": 0, None: 0})
            node[""] += int(rec.counts[i])
        node[None] += int(rec.counts[i])
    out = {}
    todo = [((), tree, 0)]
    while todo:
        path, node, start = todo.pop()
        start += node[None]
        for name in sorted((k for k in node if k), key=lambda k: (k + ";").encode()):
            out[path + (name,)] = (start, node[name][""])
            todo.append((path + (name,), node[name], start))
            start += node[name][""]
    return out


def _layout_nodes(rec: StackSamples) -> dict[tuple[str, ...], tuple[int, int]]:
    lay = layout(rec)
    names = rec.name_list
    # A node's path: the frames of the first stack it covers, down to its depth.
    before = [0]
    for c in rec.counts.tolist():
        before.append(before[-1] + c)
    out = {}
    for f, d, s, w in zip(lay.frame.tolist(), lay.depth.tolist(), lay.start.tolist(), lay.width.tolist()):
        if f < 0:
            assert (d, s, w) == (0, 0, rec.total)
            continue
        first = before.index(s)
        path = rec.stack(first)[:d]
        assert path[-1] == names[f]
        out[path] = (s, w)
    return out


def test_layout_matches_a_tree_walk():
    rec = record()
    assert _layout_nodes(rec) == _tree_nodes(rec)


def test_layout_of_deep_stacks_is_not_recursive():
    deep = ";".join(f"f{i % 7}" for i in range(5000))
    rec = record(f"{deep} 3\n{deep};leaf 2\nroot 1\n")
    lay = layout(rec)
    assert lay.depth.max() == 5001 and len(lay.frame) == 1 + 5001 + 1


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.lists(st.sampled_from(["a", "b", "a b", "a!", "c"]), min_size=1, max_size=6), st.integers(1, 50)),
        min_size=1,
        max_size=30,
    )
)
def test_layout_property(stacks):
    rec = record("".join(f"{';'.join(f)} {n}\n" for f, n in stacks))
    assert _layout_nodes(rec) == _tree_nodes(rec)


# ---------------------------------------------------------------------- svg


def _frames(svg: str) -> list[dict]:
    root = ET.fromstring(svg.encode())
    group = next(g for g in root.iter(f"{SVG}g") if g.get("id") == "frames")
    out = []
    for g in group.findall(f"{SVG}g"):
        rect = g.find(f"{SVG}rect")
        text = g.find(f"{SVG}text")
        out.append(
            {
                "title": g.find(f"{SVG}title").text,
                "x": float(rect.get("x")),
                "y": float(rect.get("y")),
                "width": float(rect.get("width")),
                "fill": rect.get("fill"),
                "label": text.text if text is not None else None,
            }
        )
    return out


def test_svg_is_well_formed_with_frames_tooltips_and_script():
    svg = flamegraph_svg(record(), title="CPU <profile> & more")
    root = ET.fromstring(svg.encode())
    assert root.tag == f"{SVG}svg" and root.get("width") == "1200"
    texts = {t.get("id"): "".join(t.itertext()) for t in root.iter(f"{SVG}text") if t.get("id")}
    assert texts["title"] == "CPU <profile> & more"
    assert texts["search"] == "Search" and texts["unzoom"] == "Reset Zoom"
    frames = _frames(svg)
    titles = {f["title"] for f in frames}
    assert "all (100 samples, 100.00%)" in titles
    assert ["main", "run", "parse"][-1] + " (40 samples, 40.00%)" in titles
    assert "handle (app/server.py:42) (40 samples, 40.00%)" in titles
    assert "do_syscall_64_[k] (25 samples, 25.00%)" in titles
    assert "tiny (1 sample, 1.00%)" in titles
    script = "".join(s.text for s in root.iter(f"{SVG}script"))
    for needle in ("function zoom", "function unzoom", "function search", "RegExp", "Matched: ", "addEventListener"):
        assert needle in script
    assert "http://" not in script.replace("http://www.w3.org/2000/svg", "")  # no network
    # Colours by kind: kernel blue, Python green, unknown grey, native warm.
    fills = {f["title"].split(" (")[0]: f["fill"] for f in frames}

    def rgb(name):
        h = fills[name]
        return int(h[1:3], 16), int(h[3:5], 16), int(h[5:7], 16)

    r, g, b = rgb("do_syscall_64_[k]")
    assert b > r and b > g
    r, g, b = rgb("handle")
    assert g > r and g > b
    r, g, b = rgb("[unknown]")
    assert max(r, g, b) - min(r, g, b) < 10
    r, g, b = rgb("parse")
    assert r > b and r >= g
    legend = "".join(next(e for e in root.iter(f"{SVG}g") if e.get("id") == "legend").itertext())
    assert legend == "nativekernelPythonunknown/truncated"


def test_svg_hides_frames_narrower_than_min_width():
    rec = record("a;b 100000\na;c 1\n")
    names = {f["title"].split(" (")[0] for f in _frames(flamegraph_svg(rec))}
    assert names == {"all", "a", "b"}
    names = {f["title"].split(" (")[0] for f in _frames(flamegraph_svg(rec, min_width=0))}
    assert names == {"all", "a", "b", "c"}


def test_svg_labels_fit_their_frames():
    frames = _frames(flamegraph_svg(record("a_very_long_function_name_indeed;x 1\nshort 99\n"), width=400))
    labels = {f["title"].split(" (")[0]: f["label"] for f in frames}
    assert labels["short"] == "short"
    assert labels["a_very_long_function_name_indeed"] is None  # 3.8 px: no room for text
    for f in frames:
        if f["label"]:
            assert len(f["label"]) * 12 * 0.59 <= f["width"]


def test_icicle_inverts_y():
    rec = record()

    def depth_y(svg):
        ys = {}
        for f in _frames(svg):
            ys.setdefault(f["title"].split(" (")[0], f["y"])
        return ys

    flame, icicle = depth_y(flamegraph_svg(rec)), depth_y(flamegraph_svg(rec, inverted=True))
    assert flame["all"] > flame["main"] > flame["run"] > flame["parse"] > flame["memcpy"]
    assert icicle["all"] < icicle["main"] < icicle["run"] < icicle["parse"] < icicle["memcpy"]
    assert 'class="icicle"' in flamegraph_svg(rec, inverted=True)


def test_svg_escapes_names():
    svg = flamegraph_svg(record("std::map<int, char*>::find;a&b \"q\" 'x' 3\n"))
    titles = [f["title"] for f in _frames(svg)]
    assert "std::map<int, char*>::find (3 samples, 100.00%)" in titles
    assert "a&b \"q\" 'x' (3 samples, 100.00%)" in titles


def test_empty_svg_is_still_a_document():
    frames = _frames(flamegraph_svg(record("")))
    assert [f["title"] for f in frames] == ["all (0 samples, 0.00%)"]


# ---------------------------------------------------------------------- speedscope

# The required fields of speedscope's file-format-schema.json (FileFormat.File, Frame, SampledProfile).
REQUIRED = {
    "file": {"$schema": str, "shared": dict, "profiles": list},
    "frame": {"name": str},
    "sampled": {
        "type": str,
        "name": str,
        "unit": str,
        "startValue": (int, float),
        "endValue": (int, float),
        "samples": list,
        "weights": list,
    },
}
UNITS = {"none", "nanoseconds", "microseconds", "milliseconds", "seconds", "bytes"}


def check_speedscope(doc: dict) -> None:
    for key, kind in REQUIRED["file"].items():
        assert isinstance(doc[key], kind), key
    assert doc["$schema"] == SCHEMA
    frames = doc["shared"]["frames"]
    assert isinstance(frames, list)
    for frame in frames:
        for key, kind in REQUIRED["frame"].items():
            assert isinstance(frame[key], kind)
        assert set(frame) <= {"name", "file", "line", "col"}
        assert isinstance(frame.get("file", ""), str) and isinstance(frame.get("line", 0), int)
    assert doc["profiles"], "speedscope needs a profile"
    for profile in doc["profiles"]:
        for key, kind in REQUIRED["sampled"].items():
            assert isinstance(profile[key], kind), key
        assert profile["type"] == "sampled" and profile["unit"] in UNITS
        assert len(profile["samples"]) == len(profile["weights"])
        assert profile["endValue"] >= profile["startValue"]
        for stack in profile["samples"]:
            assert all(isinstance(i, int) and 0 <= i < len(frames) for i in stack)
    assert 0 <= doc.get("activeProfileIndex", 0) < len(doc["profiles"])


def _speedscope_stacks(doc: dict) -> Counter:
    names = [f"{f['name']} ({f['file']}:{f['line']})" if "file" in f else f["name"] for f in doc["shared"]["frames"]]
    out: Counter = Counter()
    for profile in doc["profiles"]:
        for stack, weight in zip(profile["samples"], profile["weights"]):
            out[(profile["name"], ";".join(names[i] for i in stack))] += weight
    return out


def test_speedscope_structure_and_shared_frames():
    doc = json.loads(speedscope_json(record(title="cpu")))
    check_speedscope(doc)
    names = [f["name"] for f in doc["shared"]["frames"]]
    assert len(names) == len(set(names)) and sorted(names) == sorted(
        [
            "main",
            "run",
            "parse",
            "memcpy",
            "handle",
            "do_syscall_64_[k]",
            "gc",
            "libc.so.6+0x2a1c9",
            "[unknown]",
            "tiny",
        ]
    )
    assert {"name": "handle", "file": "app/server.py", "line": 42} in doc["shared"]["frames"]
    (profile,) = doc["profiles"]
    assert profile["name"] == "cpu" and sum(profile["weights"]) == 100 == profile["endValue"]
    assert _speedscope_stacks(doc) == Counter(
        {
            ("cpu", s): n
            for s, n in (line.rsplit(" ", 1) for line in folded_text(record()).splitlines())
            for n in [int(n)]
        }
    )


def test_speedscope_one_profile_per_process():
    t = pa.table(
        {"upid": ["0:1:1", "0:2:2", "0:1:1"], "stack_trace": ["main;a", "main;b", "main;a"], "count": [1, 2, 3]}
    )
    doc = json.loads(speedscope_json(StackSamples.from_table(t, title="cpu")))
    check_speedscope(doc)
    assert [(p["name"], p["weights"]) for p in doc["profiles"]] == [("upid: 0:1:1", [4]), ("upid: 0:2:2", [2])]
    assert [f["name"] for f in doc["shared"]["frames"]].count("main") == 1  # shared across profiles
    assert _speedscope_stacks(doc) == Counter({("upid: 0:1:1", "main;a"): 4, ("upid: 0:2:2", "main;b"): 2})


def test_empty_speedscope_still_has_a_profile():
    doc = json.loads(speedscope_json(record("")))
    check_speedscope(doc)


# ---------------------------------------------------------------------- pprof


@pytest.fixture(scope="module")
def Profile():
    # An independent decoder: the protobuf library (a test dependency), not pxq's own encoder.
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    F = descriptor_pb2.FieldDescriptorProto
    i64, u64, boolean, string, msg = F.TYPE_INT64, F.TYPE_UINT64, F.TYPE_BOOL, F.TYPE_STRING, F.TYPE_MESSAGE
    one, many = F.LABEL_OPTIONAL, F.LABEL_REPEATED
    # perftools.profiles, transcribed from google/pprof proto/profile.proto.
    messages = {
        "Profile": [
            ("sample_type", 1, msg, many, "ValueType"),
            ("sample", 2, msg, many, "Sample"),
            ("mapping", 3, msg, many, "Mapping"),
            ("location", 4, msg, many, "Location"),
            ("function", 5, msg, many, "Function"),
            ("string_table", 6, string, many, None),
            ("drop_frames", 7, i64, one, None),
            ("keep_frames", 8, i64, one, None),
            ("time_nanos", 9, i64, one, None),
            ("duration_nanos", 10, i64, one, None),
            ("period_type", 11, msg, one, "ValueType"),
            ("period", 12, i64, one, None),
            ("comment", 13, i64, many, None),
            ("default_sample_type", 14, i64, one, None),
        ],
        "ValueType": [("type", 1, i64, one, None), ("unit", 2, i64, one, None)],
        "Sample": [
            ("location_id", 1, u64, many, None),
            ("value", 2, i64, many, None),
            ("label", 3, msg, many, "Label"),
        ],
        "Label": [
            ("key", 1, i64, one, None),
            ("str", 2, i64, one, None),
            ("num", 3, i64, one, None),
            ("num_unit", 4, i64, one, None),
        ],
        "Mapping": [
            ("id", 1, u64, one, None),
            ("memory_start", 2, u64, one, None),
            ("memory_limit", 3, u64, one, None),
            ("file_offset", 4, u64, one, None),
            ("filename", 5, i64, one, None),
            ("build_id", 6, i64, one, None),
            ("has_functions", 7, boolean, one, None),
            ("has_filenames", 8, boolean, one, None),
            ("has_line_numbers", 9, boolean, one, None),
            ("has_inline_frames", 10, boolean, one, None),
        ],
        "Location": [
            ("id", 1, u64, one, None),
            ("mapping_id", 2, u64, one, None),
            ("address", 3, u64, one, None),
            ("line", 4, msg, many, "Line"),
            ("is_folded", 5, boolean, one, None),
        ],
        "Line": [("function_id", 1, u64, one, None), ("line", 2, i64, one, None)],
        "Function": [
            ("id", 1, u64, one, None),
            ("name", 2, i64, one, None),
            ("system_name", 3, i64, one, None),
            ("filename", 4, i64, one, None),
            ("start_line", 5, i64, one, None),
        ],
    }
    proto = descriptor_pb2.FileDescriptorProto(
        name="pxq_tests_profile.proto", package="perftools.profiles", syntax="proto3"
    )
    for name, fields in messages.items():
        message = proto.message_type.add(name=name)
        for field_name, number, field_type, label, type_name in fields:
            field = message.field.add(name=field_name, number=number, type=field_type, label=label)
            if type_name:
                field.type_name = f".perftools.profiles.{type_name}"
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("perftools.profiles.Profile"))


def decode_pprof(Profile, data: bytes):
    assert data[:2] == b"\x1f\x8b"  # gzip
    return Profile.FromString(gzip.decompress(data))


def pprof_stacks(p) -> Counter:
    """(labels, folded root-first stack with Python frames re-joined) → first sample value."""
    s = p.string_table
    functions = {f.id: f for f in p.function}
    locations = {}
    for loc in p.location:
        assert loc.id != 0 and len(loc.line) == 1 and loc.mapping_id == p.mapping[0].id
        f = functions[loc.line[0].function_id]
        name = s[f.name]
        assert name == s[f.system_name]
        locations[loc.id] = f"{name} ({s[f.filename]}:{loc.line[0].line})" if s[f.filename] else name
    out: Counter = Counter()
    for sample in p.sample:
        assert len(sample.value) == len(p.sample_type)
        labels = tuple(sorted((s[lab.key], s[lab.str]) for lab in sample.label))
        out[(labels, ";".join(locations[i] for i in reversed(sample.location_id)))] += sample.value[0]
    return out


def test_pprof_decodes_with_protobuf(Profile):
    p = decode_pprof(Profile, pprof_bytes(record(title="cpu")))
    s = p.string_table
    assert s[0] == "" and [(s[t.type], s[t.unit]) for t in p.sample_type] == [("samples", "count")]
    assert p.period == 0 and len(p.mapping) == 1 and p.mapping[0].has_functions
    assert sum(x.value[0] for x in p.sample) == 100 and len(p.sample) == 7
    stacks = pprof_stacks(p)
    assert stacks[((), "main;run;handle (app/server.py:42);do_syscall_64_[k]")] == 25
    assert stacks[((), "main;run;parse;memcpy")] == 10
    # Leaf first: the first location of the memcpy sample is memcpy.
    memcpy = next(x for x in p.sample if x.value[0] == 10)
    first = next(loc for loc in p.location if loc.id == memcpy.location_id[0])
    assert s[next(f for f in p.function if f.id == first.line[0].function_id).name] == "memcpy"
    assert "pxq display cpu" in [s[c] for c in p.comment]


def test_pprof_period_labels_and_times(Profile):
    t = pa.table(
        {
            "time_": pa.array([1_000, 3_000, 2_000], pa.timestamp("ns")),
            "upid": ["0:1:1", "0:2:2", "0:1:1"],
            "stack_trace": ["main;a", "main;b", "main;a"],
            "count": [1, 2, 3],
        }
    )
    t = t.replace_schema_metadata({PERIOD_KEY: b"10101010"})
    p = decode_pprof(Profile, pprof_bytes(StackSamples.from_table(t, title="cpu")))
    s = p.string_table
    assert [(s[v.type], s[v.unit]) for v in p.sample_type] == [("samples", "count"), ("cpu", "nanoseconds")]
    assert (s[p.period_type.type], s[p.period_type.unit], p.period) == ("cpu", "nanoseconds", 10101010)
    assert sorted(tuple(x.value) for x in p.sample) == [(2, 20202020), (4, 40404040)]
    assert p.time_nanos == 1_000 and p.duration_nanos == 2_000
    assert pprof_stacks(p) == Counter({((("upid", "0:1:1"),), "main;a"): 4, ((("upid", "0:2:2"),), "main;b"): 2})


def test_varints_match_the_scalar_encoder():
    values = [0, 1, 127, 128, 300, 2**31, 2**56 + 5, 2**63 - 1]
    flat, lengths = varints(values)
    assert flat.tobytes() == b"".join(varint(v) for v in values)
    assert lengths.tolist() == [len(varint(v)) for v in values]
    assert varint(-1) == b"\xff" * 9 + b"\x01"


# ---------------------------------------------------------------------- every writer keeps every sample

stacks_strategy = st.lists(
    st.tuples(
        st.sampled_from(["", "p1", "p2"]),
        st.lists(
            st.sampled_from(["main", "run", "f (a.py:3)", "g_[k]", "[unknown]", "x y", "é"]), min_size=1, max_size=7
        ),
        st.integers(1, 10**6),
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=60, deadline=None)
@given(stacks_strategy)
def test_totals_are_preserved_by_every_writer(Profile, stacks):
    table = pa.table(
        {
            "pid": [p for p, _, _ in stacks],
            "stack_trace": [";".join(f) for _, f, _ in stacks],
            "count": pa.array([c for _, _, c in stacks], pa.int64()),
        }
    )
    total = sum(c for _, _, c in stacks)
    rec = StackSamples.from_table(table, title="t")
    assert rec.total == total
    folded = folded_text(rec)
    assert sum(int(line.rsplit(" ", 1)[1]) for line in folded.splitlines()) == total
    doc = json.loads(speedscope_json(rec))
    check_speedscope(doc)
    assert sum(sum(p["weights"]) for p in doc["profiles"]) == total
    p = decode_pprof(Profile, pprof_bytes(rec))
    assert sum(x.value[0] for x in p.sample) == total
    pp = pprof_stacks(p)
    expected: Counter = Counter()
    for pid, frames, count in stacks:
        expected[((("pid", pid),) if pid else (), ";".join(frames))] += count
    assert pp == expected
    frames = _frames(flamegraph_svg(rec))
    root = frames[0]["title"]
    assert root.startswith(f"all ({total:,} sample")
    # Every frame at least 0.1 px wide is drawn, with its name and count in the tooltip.
    lay = layout(rec)
    wide = [
        (rec.name_list[f] if f >= 0 else "all", w)
        for f, w in zip(lay.frame.tolist(), lay.width.tolist())
        if w * 1180 / total >= 0.1
    ]
    assert sorted(f["title"].rsplit(" (", 1)[0] for f in frames) == sorted(name for name, _ in wide)
    assert sum(int(f["title"].rsplit(" (", 1)[1].split()[0].replace(",", "")) for f in frames) == sum(
        w for _, w in wide
    )


# ---------------------------------------------------------------------- notebook


def test_notebook_shows_stack_tables_as_an_inline_flamegraph():
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"stack_trace": ["main;a", "main;b"], "count": [3, 1]})
    view = notebook_flamegraph(frame, "cpu")
    page = view._repr_html_()
    assert page.startswith("<iframe srcdoc=") and "function zoom" in page and "&lt;svg" in page
    assert notebook_flamegraph(pd.DataFrame({"req_path": ["/"], "n": [1]})) is None
    assert notebook_flamegraph(pd.DataFrame({"stack_trace": ["a"]})) is None  # no count column
    assert notebook_flamegraph(pa.table({"stack_trace": ["a"], "count": [1]})) is not None


def test_notebook_magic_shows_the_flamegraph(monkeypatch):
    """A %%pxq cell's value shows a stack table as the flamegraph and any other display as a table."""
    pytest.importorskip("IPython")
    from IPython.core.interactiveshell import InteractiveShell

    import pxq.notebook

    tables = {"cpu": pa.table({"stack_trace": ["main;a"], "count": [3]}), "rows": pa.table({"n": [1]})}
    monkeypatch.setattr(pxq.notebook, "run_cell_charted", lambda line, cell: (tables, None, True))
    shell = InteractiveShell.instance()
    try:
        pxq.notebook.load_ipython_extension(shell)
        result = shell.run_cell_magic("pxq", "--from x", "import px\n")
    finally:
        InteractiveShell.clear_instance()
    assert list(result) == ["cpu", "rows"]
    assert result["cpu"].to_dict("list") == {"stack_trace": ["main;a"], "count": [3]}
    page = result._repr_mimebundle_()["text/html"]
    assert page.count("<iframe srcdoc=") == 1 and "function zoom" in page
    assert page.index("<h4>cpu (1 row)</h4>") < page.index("<iframe") < page.index("<h4>rows (1 row)</h4>")
    assert page.count("<table") == 1  # the rows display; the stack table is the flamegraph


def test_render_svg_file_round_trip(tmp_path):
    table = pa.table({"stack_trace": ["main;a", "main;b"], "count": [3, 1]})
    render({"cpu": table}, "svg", str(tmp_path / "cpu.svg"))
    text = (tmp_path / "cpu.svg").read_text()
    assert re.search(r"<title>a \(3 samples, 75\.00%\)</title>", text)
    ET.fromstring(text.encode())


# ---------------------------------------------------------------------- differential


def test_diff_folded_and_svg():
    from pxq.render.flamegraph_svg import diff_flamegraph_svg
    from pxq.render.folded import diff_folded_text

    before = record("main;a 10\nmain;b 10\nmain;gone 5\n")
    after = record("main;a 30\nmain;b 5\nmain;new 5\n")
    assert diff_folded_text(before, after) == "main;a 10 30\nmain;b 10 5\nmain;gone 5 0\nmain;new 0 5\n"
    frames = {f["title"].split(" (")[0]: f for f in _frames(diff_flamegraph_svg(before, after))}
    assert set(frames) == {"all", "main", "a", "b", "new"}  # 'gone' has no width after
    assert frames["a"]["title"] == "a (30 samples, 75.00%; before 10, 40.00%; +35.00 points)"
    assert frames["a"]["fill"] == "#ff5a5a" and frames["b"]["fill"].endswith("ff")  # grew red, shrank blue
    assert frames["main"]["fill"] == "#e1e1e1"
    raw = {f["title"].split(" (")[0]: f["title"] for f in _frames(diff_flamegraph_svg(before, after, normalize=False))}
    assert raw["main"] == "main (40 samples, 100.00%; before 25, 100.00%; +15 samples)"


def test_a_frame_named_like_a_group_label_is_still_code(Profile):
    t = pa.table({"pid": ["1", "2"], "stack_trace": ["main", "pid: 1;main"], "count": [1, 2]})
    rec = StackSamples.from_table(t)
    doc = json.loads(speedscope_json(rec))
    check_speedscope(doc)
    assert _speedscope_stacks(doc) == Counter({("pid: 1", "main"): 1, ("pid: 2", "pid: 1;main"): 2})
    p = decode_pprof(Profile, pprof_bytes(rec))
    assert pprof_stacks(p) == Counter({((("pid", "1"),), "main"): 1, ((("pid", "2"),), "pid: 1;main"): 2})


def test_svg_shows_truncated_stacks_under_one_marker_frame():
    table = pa.table(
        {"stack_trace": ["spin_leaf", "main;f", "spin_leaf;g"], "count": [6, 3, 1], "truncated": [True, False, True]}
    )
    frames = _frames(flamegraph_svg(StackSamples.from_table(table)))
    titles = {f["title"] for f in frames}
    assert "[truncated] (7 samples, 70.00%)" in titles  # 6 + 1 of 10: one root for both cut stacks
    assert "main (3 samples, 30.00%)" in titles
    marker = next(f for f in frames if f["title"].startswith("[truncated] "))
    leaf = next(f for f in frames if f["title"].startswith("spin_leaf "))
    assert leaf["y"] < marker["y"]  # a flame graph grows upwards: the marker is under (root side)
    r, g, b = (int(marker["fill"][i : i + 2], 16) for i in (1, 3, 5))
    assert max(r, g, b) - min(r, g, b) < 10  # grey, like [unknown]
