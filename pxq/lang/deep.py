"""Run a pipeline stage on a thread with a deep stack, for the walks that recurse over a script.

Plan walks and expression walks in pxq are iterative (a plan is as deep as its script is long),
but some walks follow the syntax tree recursively: Lark's tree transformer, the compiler's
evaluation of nested expressions, unparse, and a few optimizer rules. Their depth grows with
how deeply an expression nests, and a chain ``a + b + c + ...`` nests once per operator, so
Python's default limit of 1,000 frames would cap the length of a sum. The stages that run such
walks (``parse``, ``compile``, each optimizer rule's ``transform``, ``execute``, ``unparse``)
call ``run_deep``, which runs them on a thread whose stack holds ``STACK_BYTES`` with the
recursion limit raised to ``RECURSION_LIMIT`` while such a thread runs. Stages called from a
deep thread run in place. The parser refuses expressions nested deeper than
``pxq.lang.parse.MAX_DEPTH``, which keeps every walk well inside these bounds.
"""

from __future__ import annotations

import contextvars
import sys
import threading
from collections.abc import Callable
from functools import wraps
from typing import ParamSpec, TypeVar, cast

from pxq.errors import ResourceLimitError

# 1 GiB of address space; only the pages a walk touches are ever backed by memory.
STACK_BYTES = 1 << 30
RECURSION_LIMIT = 400_000  # for a 1 GiB stack; smaller stacks get a proportional share
# Smaller stacks tried in turn where the address space is capped (ulimit -v), each with the
# recursion limit scaled to it; 256 MiB still holds the parser's deepest nesting.
FALLBACK_STACK_BYTES = (1 << 28, 1 << 26)

_lock = threading.Lock()
_running = 0  # deep threads running now
_saved_limit = 0
_local = threading.local()

P = ParamSpec("P")
R = TypeVar("R")


def run_deep(function: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """``function(*args, **kwargs)`` on a deep-stack thread (in place when already on one)."""
    if getattr(_local, "deep", False):
        return function(*args, **kwargs)
    context = contextvars.copy_context()  # the caller's context variables, as a call would see them
    outcome: dict[str, object] = {}

    def target() -> None:
        _local.deep = True
        try:
            outcome["value"] = context.run(function, *args, **kwargs)
        except BaseException as exc:  # re-raised in the caller
            outcome["error"] = exc

    global _running, _saved_limit
    with _lock:
        if _running == 0:  # raised before the thread starts, restored when the last one ends
            _saved_limit = sys.getrecursionlimit()
            sys.setrecursionlimit(max(_saved_limit, RECURSION_LIMIT))
        _running += 1
        worker: threading.Thread | None = None
        for stack_bytes in (STACK_BYTES, *FALLBACK_STACK_BYTES):
            try:
                previous = threading.stack_size(stack_bytes)
            except (ValueError, RuntimeError):  # a platform without settable stacks
                break
            try:
                if _running == 1:  # alone: the limit fits this stack (else it stays as set for others)
                    sys.setrecursionlimit(max(_saved_limit, min(RECURSION_LIMIT, RECURSION_LIMIT * stack_bytes >> 30)))
                worker = threading.Thread(target=target, name="pxq-deep", daemon=True)
                worker.start()
                break
            except RuntimeError:  # no address space for such a stack (ulimit -v): try a smaller one
                worker = None
            finally:
                threading.stack_size(previous)
        if worker is None:
            _running -= 1
            if _running == 0:
                sys.setrecursionlimit(_saved_limit)
    if worker is None:  # runs in place, within the ordinary recursion limit
        try:
            return function(*args, **kwargs)
        except RecursionError:
            raise ResourceLimitError(
                "the script nests too deeply for the stack pxq could get here (no thread with a larger "
                "stack could start: is the address space capped with ulimit -v?)"
            ) from None
    try:
        worker.join()
    finally:
        with _lock:
            _running -= 1
            if _running == 0:
                sys.setrecursionlimit(_saved_limit)
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return cast(R, outcome["value"])


def deep(function: Callable[P, R]) -> Callable[P, R]:
    """Decorator: every call of ``function`` runs through ``run_deep``."""

    @wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        return run_deep(function, *args, **kwargs)

    return wrapper
