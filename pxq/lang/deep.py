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
from functools import wraps

# 1 GiB of address space; only the pages a walk touches are ever backed by memory.
STACK_BYTES = 1 << 30
RECURSION_LIMIT = 400_000

_lock = threading.Lock()
_running = 0  # deep threads running now
_saved_limit = 0
_local = threading.local()


def run_deep(function, *args, **kwargs):
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
        try:
            previous = threading.stack_size(STACK_BYTES)
        except (ValueError, RuntimeError):  # a platform without settable stacks
            previous = None
        if previous is not None:
            try:
                worker = threading.Thread(target=target, name="pxq-deep", daemon=True)
                worker.start()
            except RuntimeError:  # no address space for such a stack (ulimit -v)
                worker = None
            finally:
                threading.stack_size(previous)
        if worker is None:
            _running -= 1
            if _running == 0:
                sys.setrecursionlimit(_saved_limit)
    if worker is None:  # runs in place, within the ordinary recursion limit
        return function(*args, **kwargs)
    try:
        worker.join()
    finally:
        with _lock:
            _running -= 1
            if _running == 0:
                sys.setrecursionlimit(_saved_limit)
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]


def deep(function):
    """Decorator: every call of ``function`` runs through ``run_deep``."""

    @wraps(function)
    def wrapper(*args, **kwargs):
        return run_deep(function, *args, **kwargs)

    return wrapper
