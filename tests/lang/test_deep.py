"""pxq.lang.deep: stages that recurse over a script run on a deep stack, invisibly to callers."""

from __future__ import annotations

import contextvars
import sys
import threading

import pytest

from pxq.lang import parse, unparse
from pxq.lang.deep import RECURSION_LIMIT, run_deep

COLOUR: contextvars.ContextVar[str] = contextvars.ContextVar("colour", default="none")


def depth(n: int) -> int:
    return 0 if n == 0 else 1 + depth(n - 1)


def test_recursion_far_past_the_default_limit_runs_and_the_limit_comes_back():
    before = sys.getrecursionlimit()
    assert run_deep(depth, 50_000) == 50_000
    assert sys.getrecursionlimit() == before
    with pytest.raises(RecursionError):
        depth(before + 10)  # the caller's own thread keeps the ordinary limit


def test_errors_results_and_context_reach_the_caller():
    def fails():
        raise KeyError("inside")

    with pytest.raises(KeyError, match="inside"):
        run_deep(fails)
    token = COLOUR.set("blue")
    try:
        assert run_deep(COLOUR.get) == "blue"
    finally:
        COLOUR.reset(token)
    # a deep stage calling another runs it in place, on the same thread
    assert run_deep(lambda: run_deep(threading.get_ident) == threading.get_ident())
    assert run_deep(threading.get_ident) != threading.get_ident()
    assert RECURSION_LIMIT > 100_000


def test_a_sum_of_5000_terms_parses_and_reads_back():
    text = "x = " + " + ".join(f"a{i}" for i in range(5000)) + "\n"
    assert unparse(parse(text)) == text


def test_a_capped_address_space_gets_a_smaller_deep_stack(monkeypatch):
    # Found by the fuzzer, whose workers run under RLIMIT_AS = 4 GiB: no 1 GiB stack could start,
    # so the stage ran in place and a nested script ended in RecursionError. A stack too large
    # for any address space stands in for the cap here.
    import pxq.lang.deep as deep_module

    monkeypatch.setattr(deep_module, "STACK_BYTES", 1 << 46)
    assert run_deep(depth, 20_000) == 20_000


def test_in_place_a_too_deep_walk_is_a_clear_error(monkeypatch):
    import pxq.lang.deep as deep_module
    from pxq.errors import ResourceLimitError

    monkeypatch.setattr(deep_module, "STACK_BYTES", 1 << 46)
    monkeypatch.setattr(deep_module, "FALLBACK_STACK_BYTES", ())
    with pytest.raises(ResourceLimitError, match="nests too deeply"):
        run_deep(depth, 50_000)
