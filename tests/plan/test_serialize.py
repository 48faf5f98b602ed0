"""Plans as data (pxq.plan.serialize): every plan pxq makes survives JSON and back, node for node
and shared part for shared part, and runs to the same tables; a bad document is a PlanFormatError
naming the JSON path of what is wrong.

"Equal" is checked here without the serializer: plan nodes compare by identity (a DataFrame used
twice is one node), so ``same_plan`` walks both plans side by side over the dataclass fields of
each node, and requires the sharing to match too (one node in one plan is one node in the other).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import struct
import tempfile
from functools import cache
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import assume, given, settings, strategies as st

import pxq.plan.expr as expr_module
import pxq.plan.nodes as nodes_module
from pxq.errors import PxqError
from pxq.exec.execute import execute, execute_fragments
from pxq.lang import parse
from pxq.library import bundled_scripts
from pxq.plan.compile import compile
from pxq.plan.expr import ColumnRef, Expr, FuncCall, Literal, postorder
from pxq.plan.nodes import Display, Field, Graph, Map, Relation, Schema, Source
from pxq.plan.optimize import optimize
from pxq.plan.serialize import EXPR_FIELDS, NODE_FIELDS, PlanFormatError, from_dict, from_json, to_dict, to_json
from pxq.plan.split import SplitPlan, split
from pxq.replay import open_capture
from pxq.tables import CATALOG
from pxq.testing.synthetic import write_synthetic_capture
from pxq.types import DataType, SemanticType
from tests.plan.test_plan_properties import scripts  # the plan generator of the pandas property
from tests.snapshot import assert_snapshot

HERE = Path(__file__).parent
START_NS, SPAN_NS = 1_764_115_200_000_000_000, 300_000_000_000


@cache
def capture():
    directory = Path(tempfile.mkdtemp(prefix="pxq-serialize-"))
    write_synthetic_capture(directory, 400, seed=3, start_ns=START_NS, span_ns=SPAN_NS, null_fraction=0.05)
    return open_capture(directory)


def _compiles(name: str, text: str, vis) -> bool:
    try:
        compile(parse(text, f"{name}.pxl"), now_ns=START_NS + SPAN_NS, name=name, vis=vis)
    except PxqError:  # a syntax example, or a script that needs arguments
        return False
    return True


def _cases():
    cases = [(f"bundled/{s.name}", s.text, s.vis) for s in bundled_scripts()]
    cases += [(f"plan-corpus/{p.stem}", p.read_text(), None) for p in sorted((HERE / "corpus").glob("*.pxl"))]
    # The parser's corpus holds syntax examples too; the scripts among it that compile count.
    lang = [
        (f"lang-corpus/{p.stem}", p.read_text(), None) for p in sorted((HERE.parent / "lang" / "corpus").glob("*.pxl"))
    ]
    cases += [case for case in lang if _compiles(*case)]
    return cases


CASES = _cases()


# ---------------------------------------------------------------------------------------------
# Structural comparison, independent of the serializer.


def same_plan(a_roots, b_roots) -> None:
    """Assert two plans are the same: same node classes and fields (expressions by their ``==``,
    which compares structure), inputs pairwise, and the same sharing of nodes."""
    pairs = list(zip(a_roots, b_roots, strict=True))
    matched: dict[int, int] = {}
    matched_back: dict[int, int] = {}
    while pairs:
        a, b = pairs.pop()
        if id(a) in matched or id(b) in matched_back:
            assert matched.get(id(a)) == id(b) and matched_back.get(id(b)) == id(a), (
                f"sharing differs at {type(a).__name__}"
            )
            continue
        matched[id(a)], matched_back[id(b)] = id(b), id(a)
        assert type(a) is type(b), (type(a), type(b))
        assert a.schema == b.schema
        for f in dataclasses.fields(a):
            x, y = getattr(a, f.name), getattr(b, f.name)
            if isinstance(x, Relation):
                pairs.append((x, y))
            elif isinstance(x, tuple) and x and all(isinstance(v, Relation) for v in x):
                pairs.extend(zip(x, y, strict=True))
            else:
                assert x == y, (type(a).__name__, f.name, x, y)


def same_graph(a: Graph, b: Graph) -> None:
    assert (a.now_ns, a.settings) == (b.now_ns, b.settings)
    same_plan(a.displays, b.displays)


def same_expression_sharing(a: Expr, b: Expr) -> None:
    """The two expressions have the same number of distinct nodes (sharing kept, not unfolded)."""
    assert len(list(postorder(a))) == len(list(postorder(b)))


def canonical(table: pa.Table) -> list:
    rows = table.to_pylist()
    return sorted(rows, key=lambda r: [(v is None, str(v)) for v in r.values()])


def same_results(a: dict[str, pa.Table], b: dict[str, pa.Table], text: str) -> None:
    assert list(a) == list(b)
    # head() after a join: which rows come first is unspecified (see test_optimizer_equivalence).
    unordered_head = "head" in text and "merge" in text
    for name, table in a.items():
        assert table.schema.equals(b[name].schema, check_metadata=True), name
        if unordered_head:
            assert table.num_rows == b[name].num_rows, name
        else:
            assert canonical(table) == canonical(b[name]), name


def round_trip(plan):
    text = to_json(plan)
    back = from_json(text)
    assert to_json(back) == text  # the form is canonical: reading and writing again changes nothing
    return back


# ---------------------------------------------------------------------------------------------
# Every script's plan, unoptimized, optimized and split.


def check_script(text: str, name: str | None = None, vis=None) -> None:
    source = capture()
    graph = compile(parse(text), now_ns=source.end_time_ns, name=name, vis=vis)
    for plan in (graph, optimize(graph)):
        back = round_trip(plan)
        same_graph(plan, back)
        same_results(execute(plan, source).tables, execute(back, source).tables, text)

    optimized = optimize(graph)
    plan = split(optimized)
    back = round_trip(plan)
    assert isinstance(back, SplitPlan)
    same_plan(plan.agent_fragments, back.agent_fragments)
    same_graph(plan.merge, back.merge)
    assert back.manifest == plan.manifest
    # What each side gets on its own: the agents their fragments, the merger its graph.
    agents_only = round_trip(plan.agent_fragments)
    same_plan(plan.agent_fragments, agents_only)
    merge_only = round_trip(plan.merge)
    same_graph(plan.merge, merge_only)

    fragments = execute_fragments(plan.agent_fragments, optimized, source)
    fragments_back = execute_fragments(agents_only, optimized, source)
    merged = execute(plan.merge, source, fragment_inputs=fragments).tables
    merged_back = execute(merge_only, source, fragment_inputs=fragments_back).tables
    same_results(merged, merged_back, text)
    same_results(execute(optimized, source).tables, merged_back, text)


@pytest.mark.parametrize("name,text,vis", CASES, ids=[c[0] for c in CASES])
def test_script_plans_round_trip(name, text, vis):
    check_script(text, name.split("/")[1], vis)


def test_every_bundled_script_and_the_lang_corpus_are_covered():
    ids = {c[0] for c in CASES}
    assert {f"bundled/{s.name}" for s in bundled_scripts()} <= ids
    assert sum(1 for i in ids if i.startswith("lang-corpus/")) >= 5  # the compiling part is not empty


def test_single_relation_round_trips():
    graph = compile(parse((HERE / "corpus" / "two_tables.pxl").read_text()), now_ns=START_NS)
    for display in graph.displays:
        back = round_trip(display.input)
        same_plan((display.input,), (back,))


def test_layouts_name_every_field_of_every_node_and_expression_class():
    """A field added to a node or expression class must be added to the JSON form too."""
    relations = {
        cls
        for _, cls in inspect.getmembers(nodes_module, inspect.isclass)
        if issubclass(cls, Relation) and cls is not Relation
    }
    assert set(NODE_FIELDS) == relations
    for cls, layout in NODE_FIELDS.items():
        assert [name for name, _ in layout] == [f.name for f in dataclasses.fields(cls)], cls
    expressions = {
        cls for _, cls in inspect.getmembers(expr_module, inspect.isclass) if issubclass(cls, Expr) and cls is not Expr
    }
    assert set(EXPR_FIELDS) == expressions
    for cls, names in EXPR_FIELDS.items():
        assert list(names) == [f.name for f in dataclasses.fields(cls)], cls


# ---------------------------------------------------------------------------------------------
# Sharing and depth.


def test_shared_expressions_stay_shared_and_small():
    lines = [
        "import px",
        "df = px.DataFrame(table='http_events', select=['latency'])",
        "x = df.latency - df.latency",
    ]  # zero, so that doubling it 40 times cannot overflow
    lines += ["x = x + x"] * 40  # as a tree: 2**41 leaves
    lines += ["df.x = x", "px.display(df, 'out')"]
    text = "\n".join(lines) + "\n"
    graph = compile(parse(text), now_ns=START_NS + SPAN_NS)
    document = to_json(graph)
    assert len(document) < 40_000
    back = from_json(document)
    same_graph(graph, back)
    (original,) = [e for n in graph.nodes() if isinstance(n, Map) for _, e in n.assignments]
    (restored,) = [e for n in back.nodes() if isinstance(n, Map) for _, e in n.assignments]
    same_expression_sharing(original, restored)
    assert restored.args[0] is restored.args[1]
    check_script(text)


def test_shared_nodes_stay_shared():
    text = """import px
df = px.DataFrame(table='http_events', select=['time_', 'req_path', 'latency'])
px.display(df, 'a')
px.display(df.append(df), 'b')
"""
    graph = compile(parse(text), now_ns=START_NS + SPAN_NS)
    back = round_trip(graph)
    same_graph(graph, back)
    assert len(back.nodes()) == len(graph.nodes())
    union = back.displays[1].input
    assert union.parts[0] is union.parts[1] is back.displays[0].input


def test_a_long_script_round_trips_without_recursion():
    lines = ["import px", "df = px.DataFrame(table='http_events', select=['latency'])", "df.c = df.latency"]
    lines += [f"df.c = df.c + {i}" for i in range(3000)]  # 3,000 nodes, each reading the one before
    lines += ["px.display(df, 'out')"]
    graph = compile(parse("\n".join(lines) + "\n"), now_ns=START_NS + SPAN_NS)
    assert len(graph.nodes()) > 3000
    same_graph(graph, round_trip(graph))


# ---------------------------------------------------------------------------------------------
# Values.

HTTP = CATALOG["http_events"]
TABLE_SCHEMA = Schema(tuple(Field(c.name, c.type, c.semantic) for c in HTTP.columns))


def _graph_of(values: dict[str, Literal]) -> Graph:
    source = Source("http_events", TABLE_SCHEMA, ("time_", "latency"))
    return Graph((Display(Map(source, tuple(values.items())), "out"),), START_NS + SPAN_NS)


def _float_bits(value: float) -> bytes:
    return struct.pack("<d", value)


FLOATS = [0.0, -0.0, 1.5, 0.1, 1e16, 2.0**-1074, 1.7976931348623157e308, -2.5e-300, math.inf, -math.inf]
INTS = [0, -1, 2**53, 2**53 + 1, -(2**53) - 1, 2**63 - 1, -(2**63), 1_764_115_500_000_000_123]
STRINGS = [
    "",
    "plain",
    "é ß 漢字",
    "𝄞 emoji 🙂",
    "nul\x00byte",
    "line\u2028sep",
    'quote"back\\slash',
    "\ud800 lone surrogate",
    "\udfff",
    "\x7f\x1f tab\t",
]


def test_literal_values_round_trip_exactly():
    values: dict[str, Literal] = {}
    for i, v in enumerate(INTS):
        values[f"i{i}"] = Literal(v, DataType.INT64)
    for i, v in enumerate(FLOATS):
        values[f"f{i}"] = Literal(v, DataType.FLOAT64)
    for i, v in enumerate(STRINGS):
        values[f"s{i}"] = Literal(v, DataType.STRING)
    values["time"] = Literal(1_764_115_500_123_456_789, DataType.TIME64NS, SemanticType.TIME)
    values["duration"] = Literal(90 * 10**9 + 1, DataType.INT64, SemanticType.DURATION_NS)
    values["upid"] = Literal("0:1017:500001", DataType.UINT128, SemanticType.UPID)
    values["true"], values["false"] = Literal(True, DataType.BOOLEAN), Literal(False, DataType.BOOLEAN)
    for data_type in DataType:
        values[f"null_{data_type.value}"] = Literal(None, data_type)
    values["int_list"] = Literal((1, 2**63 - 1, None), DataType.INT64)
    values["str_list"] = Literal(("a", "漢", None), DataType.STRING)
    values["nan"] = Literal(math.nan, DataType.FLOAT64)
    graph = _graph_of(values)
    text = to_json(graph)
    assert text.isascii()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON token {c}"))
    back = from_json(text)
    (restored_map,) = [n for n in back.nodes() if isinstance(n, Map)]
    restored = dict(restored_map.assignments)
    for name, original in values.items():
        got = restored[name]
        assert (got.type, got.semantic) == (original.type, original.semantic), name
        assert type(got.value) is type(original.value), name
        if isinstance(original.value, float):
            # Bits, so that -0.0 stays negative; NaN is any NaN (Python's NaN is not equal to itself).
            assert (
                math.isnan(got.value)
                if math.isnan(original.value)
                else _float_bits(got.value) == _float_bits(original.value)
            ), name
        else:
            assert got.value == original.value, name
    without_nan = dict(values)
    del without_nan["nan"]
    same_graph(_graph_of(without_nan), round_trip(_graph_of(without_nan)))


def test_every_type_and_semantic_type_round_trips():
    fields = tuple(Field(f"c_{t.value}_{s.value}", t, s) for t in DataType for s in SemanticType)
    schema = Schema(fields)
    refs = tuple((f"r_{f.name}", ColumnRef(f.name, f.type, f.semantic)) for f in fields)
    source = Source("custom", schema, schema.names)
    graph = Graph((Display(Map(source, refs), "out"),), START_NS)
    same_graph(graph, round_trip(graph))


def test_spans_are_kept():
    """Spans do not take part in expression equality, but run-time errors cite their line."""
    graph = compile(parse((HERE / "corpus" / "strings_and_json.pxl").read_text()), now_ns=START_NS)
    back = round_trip(graph)

    def spans(g):
        return [
            e.span
            for n in g.nodes()
            if isinstance(n, Map)
            for _, root in n.assignments
            for e in postorder(root)
            if isinstance(e, FuncCall)
        ]

    assert spans(back) == spans(graph)
    assert any(s is not None for s in spans(graph))


# ---------------------------------------------------------------------------------------------
# A stable artifact: one split plan's JSON.


def test_split_plan_json_snapshot():
    text = (HERE / "corpus" / "merge_and_append.pxl").read_text()
    now_ns = 1_764_115_500_000_000_000
    plan = split(optimize(compile(parse(text, "merge_and_append.pxl"), now_ns=now_ns, name="merge_and_append")))
    assert_snapshot(HERE / "snapshots" / "merge_and_append.split.json", to_json(plan, indent=1))


# ---------------------------------------------------------------------------------------------
# Bad documents.


@cache
def _base_text() -> str:
    text = (HERE / "corpus" / "groupby_quantiles.pxl").read_text()
    return to_json(compile(parse(text), now_ns=START_NS))


def _base() -> dict:
    return json.loads(_base_text())


def _first(doc: dict, table: str, kind: str) -> int:
    return next(i for i, entry in enumerate(doc[table]) if entry["kind"] == kind)


def _set(table: str, kind: str, key: str, value):
    def mutate(doc):
        doc[table][_first(doc, table, kind)][key] = value
        return doc

    return mutate


def _where(table: str, kind: str, suffix: str = ""):
    return lambda doc: f"$.{table}[{_first(doc, table, kind)}]{suffix}"


def _del(table: str, kind: str, key: str):
    def mutate(doc):
        del doc[table][_first(doc, table, kind)][key]
        return doc

    return mutate


def _literal(value, data_type="INT64"):
    def mutate(doc):
        i = _first(doc, "expressions", "literal")
        doc["expressions"][i].update(value=value, type=data_type)
        return doc

    return mutate


def _top(key, value):
    def mutate(doc):
        doc[key] = value
        return doc

    return mutate


def _forward_input(doc):
    i = _first(doc, "nodes", "agg")
    doc["nodes"][i]["input"] = i
    return doc


def _unknown_column(doc):
    i = _first(doc, "nodes", "agg")
    doc["nodes"][i]["keys"] = ["no_such_column"]
    return doc


def _display_is_not_a_display(doc):
    doc["displays"] = [0]
    return doc


def _unknown_aggregate(doc):
    i = _first(doc, "nodes", "agg")
    doc["nodes"][i]["aggregates"][0]["function"] = "median_of_medians"
    return doc


def _text(text):
    return lambda doc: text


def _call_named(doc: dict, name: str) -> int:
    return next(i for i, e in enumerate(doc["expressions"]) if e["kind"] == "call" and e["name"] == name)


def _on_call(name: str, **changes):
    def mutate(doc):
        doc["expressions"][_call_named(doc, name)].update(changes)
        return doc

    return mutate


def _call_path(name: str, suffix: str):
    return lambda doc: f"$.expressions[{_call_named(doc, name)}]{suffix}"


def _column_named(doc: dict, name: str) -> int:
    return next(i for i, e in enumerate(doc["expressions"]) if e["kind"] == "column" and e["name"] == name)


def _retype_column(name: str, data_type: str):
    def mutate(doc):
        doc["expressions"][_column_named(doc, name)]["type"] = data_type
        return doc

    return mutate


def _retype_aggregate(doc):
    doc["nodes"][_first(doc, "nodes", "agg")]["aggregates"][0]["type"] = "STRING"
    return doc


def _split_base() -> dict:
    text = (HERE / "corpus" / "groupby_quantiles.pxl").read_text()
    return to_dict(split(optimize(compile(parse(text), now_ns=START_NS))))


def _split(mutate):
    """The mutation applied to the split form of the same plan."""
    return lambda doc: mutate(_split_base())


def _fragment_input_path(suffix: str):
    return lambda doc: f"$.nodes[{_first(_split_base(), 'nodes', 'fragment_input')}]{suffix}"


def _fragment_index(value):
    def mutate(doc):
        doc["nodes"][_first(doc, "nodes", "fragment_input")]["index"] = value
        return doc

    return mutate


def _fragment_columns(doc):
    """The merge input reads a schema that differs from its fragment's in one semantic type."""
    node = doc["nodes"][_first(doc, "nodes", "fragment_input")]
    schema = json.loads(json.dumps(doc["schemas"][node["input_schema"]]))
    schema[0]["semantic"] = "none" if schema[0]["semantic"] != "none" else "time"
    doc["schemas"].append(schema)
    node["input_schema"] = len(doc["schemas"]) - 1
    return doc


def _schema_type(doc):
    doc["schemas"][0][0]["type"] = "INT128"
    return doc


BAD = {
    # name: (mutation of a good document (or the text to read), expected path, words in the message)
    "not json": (_text('{"format": "pxq-plan",'), "$", "not JSON"),
    "not an object": (_text("[1, 2]"), "$", "expected an object, got an array"),
    "nan token": (_text('{"format": "pxq-plan", "x": NaN}'), "$", "not strict JSON: NaN"),
    "nested too deeply": (_text("[" * 200_000 + "]" * 200_000), "$", "nested too deeply"),
    "integer too long to read": (
        _text('{"format": "pxq-plan", "version": ' + "1" * 5000 + "}"),
        "$",
        "a number of 5000 digits",
    ),
    "not utf-8": (_text(b'{"format": "\xff"}'), "$", "not UTF-8"),
    "other format": (_top("format", "pxq-manifest"), "$.format", "not a pxq plan document"),
    "newer version": (_top("version", 2), "$.version", "version 2 is not one this pxq reads"),
    "version true": (_top("version", True), "$.version", "version True is not one this pxq reads"),
    "version 1.0": (_top("version", 1.0), "$.version", "version 1.0 is not one this pxq reads"),
    "no version": (lambda doc: {k: v for k, v in doc.items() if k != "version"}, "$.version", "None"),
    "unknown document kind": (_top("kind", "program"), "$.kind", "unknown document kind 'program'"),
    "unknown top-level field": (_top("extra", 1), "$.extra", "unknown field"),
    "unknown node kind": (
        _set("nodes", "agg", "kind", "window"),
        _where("nodes", "agg", ".kind"),
        "unknown node kind 'window'",
    ),
    "unknown expression kind": (
        _set("expressions", "call", "kind", "lambda"),
        _where("expressions", "call", ".kind"),
        "unknown expression kind 'lambda'",
    ),
    "unknown function": (
        _set("expressions", "call", "name", "no_such_fn"),
        _where("expressions", "call", ".name"),
        "unknown function 'no_such_fn'",
    ),
    "unknown aggregate": (
        _unknown_aggregate,
        _where("nodes", "agg", ".aggregates[0].function"),
        "unknown aggregate 'median_of_medians'",
    ),
    "unknown data type": (
        _set("expressions", "column", "type", "INT32"),
        _where("expressions", "column", ".type"),
        "unknown DataType 'INT32'",
    ),
    "unknown semantic type": (
        _set("expressions", "column", "semantic", "furlongs"),
        _where("expressions", "column", ".semantic"),
        "unknown SemanticType",
    ),
    "missing field": (_del("nodes", "agg", "input"), _where("nodes", "agg"), "missing 'input'"),
    "unknown field": (_set("nodes", "agg", "bogus", 1), _where("nodes", "agg", ".bogus"), "unknown field"),
    "wrong json type": (
        _set("nodes", "source", "columns", "time_"),
        _where("nodes", "source", ".columns"),
        "expected an array, got a string",
    ),
    "boolean for integer": (_top("now_ns", True), "$.now_ns", "expected an integer, got a boolean"),
    "forward reference": (_forward_input, _where("nodes", "agg", ".input"), "not among the"),
    "dangling expression": (
        _set("nodes", "map", "assignments", [["p99", 10**6]]),
        _where("nodes", "map", ".assignments[0][1]"),
        "expression 1000000 is not among",
    ),
    "node check fails": (_unknown_column, _where("nodes", "agg"), "unknown group-by column 'no_such_column'"),
    "display is not a display": (_display_is_not_a_display, "$.displays[0]", "is a source, not a display"),
    "literal of another type": (
        _literal("ten"),
        _where("expressions", "literal", ".value"),
        'a INT64 literal cannot hold "ten"',
    ),
    "literal beyond int64": (
        _literal(2**63),
        _where("expressions", "literal", ".value"),
        "does not fit a 64-bit integer",
    ),
    "integer for a float": (_literal(3, "FLOAT64"), _where("expressions", "literal", ".value"), "cannot hold 3"),
    "bad non-finite float": (
        _literal({"float": "huge"}, "FLOAT64"),
        _where("expressions", "literal", ".value.float"),
        "unknown non-finite float 'huge'",
    ),
    "call returns another type": (
        _on_call("greaterThanEqual", type="STRING"),
        _call_path("greaterThanEqual", ".type"),
        "px.greaterThanEqual of (INT64, INT64) returns BOOLEAN, not STRING",
    ),
    "call with too few arguments": (
        _on_call("pluck_float64", args=[3]),
        _call_path("pluck_float64", ".args"),
        "px.pluck_float64 takes 2 arguments, got 1",
    ),
    "argument of another type": (
        _retype_column("q", "INT64"),
        _call_path("pluck_float64", ".args[0]"),
        "of px.pluck_float64 cannot be INT64",
    ),
    "column read as another type": (
        _retype_column("resp_status", "FLOAT64"),
        _where("nodes", "map", ".assignments"),
        "column 'resp_status' is INT64, but an expression reads it as FLOAT64",
    ),
    "aggregate of another type": (
        _retype_aggregate,
        _where("nodes", "agg", ".aggregates[0].type"),
        "returns INT64, not STRING",
    ),
    "no such agent fragment": (
        _split(_fragment_index(1)),
        _fragment_input_path(".index"),
        "there is no agent fragment 1",
    ),
    "negative fragment index": (_split(_fragment_index(-1)), _fragment_input_path(".index"), "cannot be negative"),
    "fragment columns differ": (
        _split(_fragment_columns),
        _fragment_input_path(".input_schema"),
        "agent fragment 0 gives",
    ),
    "unknown schema": (
        _set("nodes", "source", "table_schema", 7),
        _where("nodes", "source", ".table_schema"),
        "schema 7 is not among the 1 schemas",
    ),
    "bad schema field": (_schema_type, "$.schemas[0][0].type", "unknown DataType 'INT128'"),
    "nested list literal": (_literal([[1]]), _where("expressions", "literal", ".value[0]"), "cannot hold [1]"),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_documents_are_refused_with_their_path(case):
    mutate, where, words = BAD[case]
    document = mutate(_base())
    path = where(_base()) if callable(where) else where
    text = document if isinstance(document, (str, bytes)) else json.dumps(document)
    with pytest.raises(PlanFormatError) as caught:
        from_json(text)
    error = caught.value
    assert isinstance(error, PxqError)
    assert error.path == path, str(error)
    assert words in str(error)
    assert str(error).startswith(f"plan JSON at {path}: ")


def test_the_good_document_behind_the_bad_ones_reads():
    """The mutations above break a document that is otherwise read fine."""
    assert isinstance(from_dict(_base()), Graph)


# ---------------------------------------------------------------------------------------------
# Generated scripts (the plan generator of test_plan_properties).


@settings(max_examples=40, deadline=None)
@given(scripts())
def test_generated_plans_round_trip(script):
    assume("error" not in script.expected)
    check_script(script.text)


# ---------------------------------------------------------------------------------------------
# Any change to a good document is read or refused, never a traceback.


def _json_containers(inner):
    return st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**64), 2**64)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
    | st.sampled_from(["source", "call", "literal", "INT64", "none", "add", "latency"]),
    _json_containers,
    max_leaves=6,
)


def _containers(value, path=()):
    """(path, container) for every list and object inside ``value``."""
    if isinstance(value, (dict, list)):
        yield path, value
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            yield from _containers(item, (*path, key))


@st.composite
def damaged_documents(draw):
    doc = json.loads(_split_text() if draw(st.booleans()) else _base_text())
    for _ in range(draw(st.integers(1, 3))):
        containers = list(_containers(doc))
        _, container = draw(st.sampled_from(containers))
        if isinstance(container, dict):
            keys = list(container)
            action = draw(st.sampled_from(["replace", "delete", "add"] if keys else ["add"]))
            if action == "add":
                container[draw(st.text(max_size=6))] = draw(JSON_VALUES)
            elif action == "delete":
                del container[draw(st.sampled_from(keys))]
            else:
                container[draw(st.sampled_from(keys))] = draw(JSON_VALUES)
        elif container:
            index = draw(st.integers(0, len(container) - 1))
            action = draw(st.sampled_from(["replace", "delete", "number"]))
            if action == "delete":
                del container[index]
            elif action == "number":  # a nearby position: references that point elsewhere
                container[index] = draw(st.integers(-2, 40))
            else:
                container[index] = draw(JSON_VALUES)
    return doc


@cache
def _split_text() -> str:
    return json.dumps(_split_base())


@settings(max_examples=300, deadline=None)
@given(damaged_documents())
def test_damaged_documents_are_read_or_refused(doc):
    try:
        plan = from_dict(doc)
    except PlanFormatError as error:
        assert error.path.startswith("$")
        return
    # What is read is a plan that writes itself out again.
    assert from_json(to_json(plan)) is not None
