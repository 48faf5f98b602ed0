"""The collector registry (pxq/agent/collectors.py) agrees with the catalog, and is what
`pxq explain --bpf` and the agent both go through. No kernel needed."""

from __future__ import annotations

import pytest

from pxq.agent.collector import AgentError, AgentOptions
from pxq.agent.collectors import COLLECTORS, build_collector, check_collectable
from pxq.agent.programs import generated_programs
from pxq.plan.manifest import CollectorRequest, ProbeManifest
from pxq.tables import CATALOG, COLLECTORS as CATALOG_COLLECTORS


def test_every_collector_fills_only_tables_the_catalog_gives_it():
    for name, spec in COLLECTORS.items():
        assert name == spec.name and name in CATALOG_COLLECTORS
        assert spec.tables, name
        for table in spec.tables:
            assert CATALOG[table].collector == name, (table, name)


def test_the_live_tables_are_the_protocol_tables_conn_stats_and_stack_traces():
    from pxq.agent.protocols.registry import protocol_tables

    live = {t for spec in COLLECTORS.values() for t in spec.tables}
    assert live == {*protocol_tables().values(), "conn_stats", "stack_traces.beta"}
    assert {"http_events", "dns_events", "pgsql_events", "redis_events", "mysql_events"} <= live


def test_explain_prints_one_program_per_ebpf_collector_of_the_manifest_in_its_order():
    manifest = ProbeManifest(
        0,
        (),
        (
            CollectorRequest("perf_profiler", ("stack_traces.beta",), (42,)),
            CollectorRequest("socket_tracer", ("http_events",), (7, 3), protocols=("http",)),
            CollectorRequest("process_stats", ("process_stats",), None),  # not collected live: no program
        ),
    )
    programs = generated_programs(manifest)
    assert [name for name, _ in programs] == ["perf_profiler", "socket_tracer"]
    profiler, tracer = (text for _, text in programs)
    assert profiler.startswith("// profile.c\n") and "// allowed_pids: 42" in profiler
    assert tracer.startswith("// socket_trace.c\n") and "written at start: 3, 7" in tracer


def test_a_collector_is_built_from_its_request_without_starting():
    request = CollectorRequest("perf_profiler", ("stack_traces.beta",), (42,), options=(("sample_hz", "49"),))
    collector = build_collector(request, AgentOptions())
    assert collector.name == "perf_profiler"
    assert collector.profiler.options.sample_hz == 49 and collector.profiler.options.pids == frozenset({42})


@pytest.mark.parametrize(
    "request_, message",
    [
        (CollectorRequest("process_stats", ("process_stats",), None), "collector process_stats is not implemented"),
        (
            CollectorRequest("socket_tracer", ("http_events", "proc_exit_events"), None, ("http",)),
            "cannot collect proc_exit_events live yet (collector socket_tracer does not produce it)",
        ),
    ],
)
def test_a_table_no_collector_fills_live_is_refused(request_, message):
    with pytest.raises(AgentError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_collectable(ProbeManifest(0, (), (request_,)))


def test_every_part_that_takes_a_body_limit_has_the_same_default(capsys):
    """Pixie keeps 1024 bytes of a body; the flag's help, the agent, the tracer and the parser agree."""
    import inspect

    from pxq.agent.conn_tracker import ConnTracker
    from pxq.agent.protocols.http1 import Http1Stitcher
    from pxq.agent.socket_tracer import SocketTracer
    from tests.cli_support import run_main

    code, out, _ = run_main(capsys, "run", "--help")
    assert code == 0 and "body kept in live capture (default 1024)" in " ".join(out.split())
    assert AgentOptions().body_limit == Http1Stitcher().body_limit == 1024
    for cls in (SocketTracer, ConnTracker):
        assert inspect.signature(cls).parameters["body_limit"].default == 1024, cls


def test_a_profiler_request_without_settings_gets_the_profiler_defaults():
    from pxq.agent.profiler import ProfilerOptions, options_from_request

    request = CollectorRequest("perf_profiler", ("stack_traces.beta",), None)
    options = options_from_request(request)
    assert options == ProfilerOptions(self_pid=options.self_pid)
    # The documented defaults (the profiler's module docstring, Pixie's 99 Hz sampler).
    assert (
        options.sample_hz,
        options.python,
        options.drain_interval_s,
        options.pyspy_segment_s,
        options.pyspy_min_cpu,
        options.stack_copy_bytes,
    ) == (99, "auto", 1.0, 10, 0.05, 16384)
