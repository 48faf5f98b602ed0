"""The neutral stack record (``StackSamples``) and the folded writer."""

from __future__ import annotations

from collections import Counter

import pyarrow as pa
import pytest
from hypothesis import example, given, settings, strategies as st

from pxq.errors import UsageError
from pxq.render import render
from pxq.render.folded import folded_text
from pxq.render.stacks import PERIOD_KEY, FrameKind, StackSamples, count_column, is_stack_table, stack_column
from pxq.types import FIELD_SEMANTIC_KEY

FOLDED = """\
main;run;parse 3
main;run 2
main 1
main;run;parse 4
main b;x 1
main!;z 5
"""


def test_folded_merges_duplicates_and_sorts_root_first():
    record = StackSamples.from_folded(FOLDED)
    assert record.total == 16 and len(record) == 5
    # Bytewise order of the frames with ';' ending each: "main b;" < "main!;" < "main;" < "main;run;" ...
    assert folded_text(record) == "main b;x 1\nmain!;z 5\nmain 1\nmain;run 2\nmain;run;parse 7\n"


def test_folded_text_skips_blank_and_comment_lines_and_rejects_garbage():
    assert folded_text(StackSamples.from_folded("# header\n\na;b 2\r\n")) == "a;b 2\n"
    with pytest.raises(UsageError, match="line 2"):
        StackSamples.from_folded("a 1\na;b lots\n")


def test_empty_record():
    record = StackSamples.from_folded("")
    assert len(record) == 0 and record.total == 0 and record.max_depth == 0 and folded_text(record) == ""


@pytest.mark.parametrize(
    "name, kind",
    [
        ("do_syscall_64_[k]", FrameKind.KERNEL),
        ("[k] tcp_sendmsg", FrameKind.KERNEL),
        ("vfs_read ([kernel.kallsyms])", FrameKind.KERNEL),
        ("handle (app/server.py:123)", FrameKind.PYTHON),
        ("<module> (/usr/lib/python3.11/runpy.py:88)", FrameKind.PYTHON),
        ("_find_and_load (<frozen importlib._bootstrap>:1007)", FrameKind.PYTHON),
        ("f(int) (x)", FrameKind.NATIVE),
        ("[lost user stack]", FrameKind.UNKNOWN),
        ("[anon]+0x1f20", FrameKind.NATIVE),
        ("main", FrameKind.NATIVE),
        ("std::vector<int>::push_back(int const&)", FrameKind.NATIVE),
        ("libc.so.6+0x2a1c9", FrameKind.NATIVE),
        ("[unknown]", FrameKind.UNKNOWN),
        ("[truncated]", FrameKind.UNKNOWN),
        ("0x7f3a12bc9d00", FrameKind.UNKNOWN),
        ("", FrameKind.UNKNOWN),
    ],
)
def test_frame_kinds(name, kind):
    record = StackSamples.from_folded(f"root;{name} 1\n")
    ids = dict(zip(record.name_list, record.kinds.tolist()))
    assert ids[name] == kind


def test_stack_and_count_columns():
    t = pa.table(
        {
            "time_": pa.array([1, 2], pa.timestamp("ns")),
            "stack_trace_id": [7, 8],
            "stack_trace": ["a;b", "a"],
            "samples": [3, 4],
        }
    )
    assert stack_column(t) == "stack_trace" and count_column(t, exclude=("stack_trace",)) == "samples"
    record = StackSamples.from_table(t)
    assert record.total == 7 and record.start_ns == 1 and record.end_ns == 2
    # No count column at all: each row is one sample.
    one = StackSamples.from_table(t.select(["stack_trace", "stack_trace_id"]))
    assert one.total == 2 and not is_stack_table(t.select(["stack_trace"]))
    # A differently named stack column marked STACK_TRACE.
    marked = pa.schema(
        [pa.field("frames", pa.string(), metadata={FIELD_SEMANTIC_KEY: b"stack_trace"}), pa.field("count", pa.int64())]
    )
    assert stack_column(pa.table({"frames": ["x;y"], "count": [5]}, schema=marked)) == "frames"


def test_pixie_perf_flamegraph_shape_groups_into_root_frames():
    t = pa.table(
        {
            "node": ["n1", "n1", "n1"],
            "namespace": ["default", "default", ""],
            "pod": ["default/web-0", "default/web-0", ""],
            "container": ["web", "web", ""],
            "cmdline": ["python app.py", "python app.py", "sshd"],
            "stack_trace_id": [1, 2, 3],
            "stack_trace": ["main;serve", "main;serve", "main;poll_[k]"],
            "count": [10, 5, 1],
            "percent": [62.5, 31.25, 6.25],
        }
    )
    record = StackSamples.from_table(t, title="flamegraph")
    assert record.group_columns == ("node", "namespace", "pod", "container", "cmdline")
    stacks = {record.stack(i): int(record.counts[i]) for i in range(len(record))}
    assert stacks == {
        (
            "node: n1",
            "namespace: default",
            "pod: default/web-0",
            "container: web",
            "cmdline: python app.py",
            "main",
            "serve",
        ): 15,
        ("node: n1", "cmdline: sshd", "main", "poll_[k]"): 1,  # empty values make no frame
    }
    kinds = dict(zip(record.name_list, record.kinds.tolist()))
    assert kinds["pod: default/web-0"] == FrameKind.GROUP and kinds["main"] == FrameKind.NATIVE
    assert [record.stack(i, rooted=False) for i in range(len(record))] == [("main", "poll_[k]"), ("main", "serve")]
    merged = StackSamples.from_table(t, group_by=())
    assert folded_text(merged) == "main;poll_[k] 1\nmain;serve 15\n"
    with pytest.raises(UsageError, match="'pid'.*columns are"):
        StackSamples.from_table(t, group_by=["pid"])


def test_raw_stack_traces_table_groups_by_process():
    t = pa.table(
        {
            "time_": pa.array([5, 9, 7], pa.timestamp("ns")),
            "upid": ["0:10:1", "0:11:1", "0:10:1"],
            "stack_trace_id": [1, 1, 1],
            "stack_trace": ["main;f", "main;f", "main;f"],
            "count": [1, 2, 3],
        }
    )
    record = StackSamples.from_table(t)
    assert folded_text(record) == "upid: 0:10:1;main;f 4\nupid: 0:11:1;main;f 2\n"
    assert [g.name for g, _ in record.by_group()] == ["upid: 0:10:1", "upid: 0:11:1"]


def test_null_empty_and_control_characters():
    t = pa.table({"stack_trace": ["a;b\nc", None, "", "a;b\tc"], "count": [1, 2, 3, None]})
    record = StackSamples.from_table(t)
    assert folded_text(record) == "[unknown] 5\na;b c 1\n"


def test_negative_counts_are_refused():
    with pytest.raises(UsageError, match="negative"):
        StackSamples.from_table(pa.table({"stack_trace": ["a"], "count": [-1]}), title="d")


def test_period_from_schema_metadata():
    t = pa.table({"stack_trace": ["a"], "count": [2]}).replace_schema_metadata({PERIOD_KEY: b"10101010"})
    assert StackSamples.from_table(t).period_ns == 10101010


def test_group_stacks_drop_the_labels():
    t = pa.table({"pid": ["1", "2"], "stack_trace": ["a;b;c", "d"], "count": [1, 1]})
    record = StackSamples.from_table(t)
    offsets, ids = record.group_stacks(record.group_of.argsort())
    names = record.name_list
    assert [tuple(names[f] for f in ids[offsets[i] : offsets[i + 1]]) for i in range(2)] == [("a", "b", "c"), ("d",)]


# ---------------------------------------------------------------------- render(): folded


def test_render_folded_to_stdout(capsys):
    table = pa.table({"stack_trace": ["a;b", "a;b", "c"], "count": [1, 2, 3]})
    render({"cpu": table}, "folded")
    assert capsys.readouterr().out == "a;b 3\nc 3\n"
    render({"cpu": table, "o;ther": table.slice(2)}, "folded")
    assert capsys.readouterr().out == "cpu;a;b 3\ncpu;c 3\no,ther;c 3\n"


def test_render_stack_formats_to_files_and_directories(tmp_path):
    table = pa.table({"stack_trace": ["a;b"], "count": [4]})
    render({"cpu": table}, "folded", str(tmp_path / "one.folded"))
    assert (tmp_path / "one.folded").read_text() == "a;b 4\n"
    render({"cpu": table, "io": table}, "folded", str(tmp_path / "many"))
    assert sorted(p.name for p in (tmp_path / "many").iterdir()) == ["cpu.folded", "io.folded"]
    (tmp_path / "dir").mkdir()
    render({"cpu": table}, "svg", str(tmp_path / "dir"))
    render({"cpu": table}, "speedscope", str(tmp_path / "dir"))
    render({"cpu": table}, "pprof", str(tmp_path / "dir/"))
    assert sorted(p.name for p in (tmp_path / "dir").iterdir()) == ["cpu.pb.gz", "cpu.speedscope.json", "cpu.svg"]
    render({"cpu": table}, "svg", str(tmp_path / "new" / "deeper" / "flame.svg"))
    assert (tmp_path / "new" / "deeper" / "flame.svg").read_text().startswith("<?xml")


@pytest.mark.parametrize("fmt", ["folded", "svg", "icicle", "speedscope", "pprof"])
def test_display_without_stacks_is_a_usage_error(fmt, tmp_path):
    results = {"cpu": pa.table({"stack_trace": ["a"], "count": [1]}), "http": pa.table({"req_path": ["/"], "n": [1]})}
    with pytest.raises(UsageError) as info:
        render(results, fmt, str(tmp_path / "out"))
    message = str(info.value)
    assert "'http'" in message and "req_path, n" in message and "stack_trace" in message
    assert not (tmp_path / "out").exists()  # nothing written before every display checked out


@pytest.mark.parametrize("fmt", ["svg", "speedscope", "pprof"])
def test_file_formats_need_out(fmt):
    with pytest.raises(UsageError, match="--out PATH"):
        render({"cpu": pa.table({"stack_trace": ["a"], "count": [1]})}, fmt)


# ---------------------------------------------------------------------- properties

frame_names = st.text(st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters=";"), max_size=6)
stack_lists = st.lists(st.tuples(st.lists(frame_names, min_size=1, max_size=8), st.integers(1, 10**6)), max_size=40)


def _expected_folded(stacks) -> str:
    merged: Counter = Counter()
    for frames, count in stacks:
        merged[";".join(frames)] += count
    return "".join(f"{s} {n}\n" for s, n in sorted(merged.items(), key=lambda kv: (kv[0] + ";").encode()))


def _clean(stacks):
    """What a folded line can carry: no empty stack (it reads as '[unknown]'), no trailing blanks."""
    out = []
    for frames, count in stacks:
        text = ";".join(frames)
        if text.strip() and text == text.rstrip() and not text.startswith("#"):
            out.append((frames, count))
    return out


@settings(max_examples=150, deadline=None)
@given(stack_lists)
# Found by hypothesis: frame names holding a Unicode line break other than "\n" split a line in two.
@example([(["a\u2028b"], 1)])
@example([(["x\u2029", "y"], 7), (["\u2028"], 2), (["x\u2029", "y"], 1)])
def test_folded_round_trip(stacks):
    stacks = _clean(stacks)
    text = "".join(f"{';'.join(frames)} {count}\n" for frames, count in stacks)
    record = StackSamples.from_folded(text)
    assert folded_text(record) == _expected_folded(stacks)
    assert folded_text(StackSamples.from_folded(folded_text(record))) == folded_text(record)
    assert record.total == sum(c for _, c in stacks)


@settings(max_examples=100, deadline=None)
@given(stack_lists, st.lists(st.sampled_from(["p1", "p2", ""]), min_size=40, max_size=40))
def test_grouped_record_keeps_every_sample_of_every_group(stacks, pids):
    stacks = [(f, c) for f, c in stacks if ";".join(f)]
    table = pa.table(
        {
            "pid": pa.array(pids[: len(stacks)], pa.string()),
            "stack_trace": pa.array([";".join(f) for f, _ in stacks], pa.string()),
            "count": pa.array([c for _, c in stacks], pa.int64()),
        }
    )
    record = StackSamples.from_table(table)
    assert record.total == sum(c for _, c in stacks)
    per_group = Counter()
    for group, members in record.by_group():
        per_group[dict(group.values).get("pid", "")] += int(record.counts[members].sum())
    expected = Counter()
    for pid, (_, c) in zip(pids, stacks):
        expected[pid] += c
    assert per_group == +expected


def test_huge_counts_sum_exactly():
    big = 2**60 + 1
    record = StackSamples.from_table(pa.table({"stack_trace": ["a", "a", "b"], "count": [big, 2, 3]}))
    assert folded_text(record) == f"a {big + 2}\nb 3\n"


def test_the_two_samplers_of_a_process_stay_apart():
    t = pa.table(
        {
            "upid": ["0:7:1", "0:7:1"],
            "stack_trace": ["main;work", "<module> (app.py:3);work (app.py:9)"],
            "count": [5, 4],
            "sampler": ["ebpf", "py-spy"],
            "truncated": [False, False],
        }
    )
    assert folded_text(StackSamples.from_table(t)) == (
        "upid: 0:7:1;sampler: ebpf;main;work 5\nupid: 0:7:1;sampler: py-spy;<module> (app.py:3);work (app.py:9) 4\n"
    )


# -- truncated stacks: a marker frame at the root side -------------------------------------------
def _profile_rows(truncated) -> pa.Table:
    """Rows as the profiler writes them: a process, a folded stack root first, a count, and whether
    the user stack was cut short (it did not reach the process's entry)."""
    return pa.table(
        {
            "upid": ["0:7:99", "0:7:99", "0:7:99", "0:8:50"],
            "stack_trace": ["spin_leaf", "_start;main;outer_loop;spin_leaf", "spin_leaf;do_syscall_64_[k]", "main;f"],
            "count": [5, 3, 2, 4],
            "truncated": pa.array(truncated, pa.bool_()),
        }
    )


def test_truncated_stacks_get_a_marker_frame_in_folded_output():
    table = _profile_rows([True, False, True, None])  # null: not known to be cut
    assert folded_text(StackSamples.from_table(table)) == (
        "upid: 0:7:99;[truncated];spin_leaf 5\n"
        "upid: 0:7:99;[truncated];spin_leaf;do_syscall_64_[k] 2\n"
        "upid: 0:7:99;_start;main;outer_loop;spin_leaf 3\n"
        "upid: 0:8:50;main;f 4\n"
    )
    # Without grouping, the cut stacks share one [truncated] root: what is missing is their callers.
    assert folded_text(StackSamples.from_table(table, group_by=())) == (
        "[truncated];spin_leaf 5\n"
        "[truncated];spin_leaf;do_syscall_64_[k] 2\n"
        "_start;main;outer_loop;spin_leaf 3\n"
        "main;f 4\n"
    )
    # No truncated column (Pixie's perf_flamegraph columns): stacks as they are.
    assert folded_text(StackSamples.from_table(table.drop(["truncated"]), group_by=())) == (
        "_start;main;outer_loop;spin_leaf 3\nmain;f 4\nspin_leaf 5\nspin_leaf;do_syscall_64_[k] 2\n"
    )


def test_the_folded_writer_marks_truncated_stacks(capsysbinary):
    render({"flame": _profile_rows([True, False, False, False])}, "folded")
    out = capsysbinary.readouterr().out.decode()
    assert out.splitlines()[0] == "upid: 0:7:99;[truncated];spin_leaf 5"
    assert "upid: 0:7:99;spin_leaf;do_syscall_64_[k] 2" in out.splitlines()


def test_the_marker_frame_is_unknown_kind():
    record = StackSamples.from_table(_profile_rows([True, True, True, True]), group_by=())
    kinds = dict(zip(record.name_list, record.kinds))
    assert kinds["[truncated]"] == FrameKind.UNKNOWN and kinds["spin_leaf"] == FrameKind.NATIVE
