"""The layout table (pxq/agent/python/versions.py) against the DWARF of each installed libpython, as gdb reads
it: every offset the walkers use, field by field (the table was read this way; this keeps edits honest)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from pxq.agent.python.versions import LAYOUTS, NO_FIELD, PythonLayout
from tests.agent.python_targets import VERSIONS, interpreter, missing


def _expressions(version: tuple[int, int]) -> dict[str, str]:
    frame = "struct _frame" if version < (3, 11) else "struct _PyInterpreterFrame"
    expressions = {
        "runtime_interpreters_head": "&((_PyRuntimeState*)0)->interpreters.head",
        "interp_threads_head": "&((struct _is*)0)->" + ("threads.head" if version >= (3, 11) else "tstate_head"),
        "interp_next": "&((struct _is*)0)->next",
        "tstate_next": "&((struct _ts*)0)->next",
        "tstate_thread_id": "&((struct _ts*)0)->thread_id",
        "tstate_frame": "&((struct _ts*)0)->"
        + ("frame" if version < (3, 11) else "cframe" if version < (3, 13) else "current_frame"),
        "frame_code": f"&(({frame}*)0)->" + ("f_executable" if version >= (3, 13) else "f_code"),
        "frame_previous": f"&(({frame}*)0)->" + ("f_back" if version < (3, 11) else "previous"),
        "frame_instr": f"&(({frame}*)0)->"
        + ("f_lasti" if version < (3, 11) else "instr_ptr" if version >= (3, 13) else "prev_instr"),
        "code_filename": "&((PyCodeObject*)0)->co_filename",
        "code_name": "&((PyCodeObject*)0)->co_name",
        "code_firstlineno": "&((PyCodeObject*)0)->co_firstlineno",
        "code_linetable": "&((PyCodeObject*)0)->" + ("co_lnotab" if version < (3, 10) else "co_linetable"),
        "ascii_data": "sizeof(PyASCIIObject)",
        "compact_data": "sizeof(PyCompactUnicodeObject)",
        "bytes_size": "&((PyBytesObject*)0)->ob_base.ob_size",
        "bytes_data": "&((PyBytesObject*)0)->ob_sval",
        "object_type": "&((PyObject*)0)->ob_type",
    }
    if version >= (3, 11):
        expressions |= {
            "tstate_native_thread_id": "&((struct _ts*)0)->native_thread_id",
            "frame_owner": f"&(({frame}*)0)->owner",
            "code_qualname": "&((PyCodeObject*)0)->co_qualname",
            "code_adaptive": "&((PyCodeObject*)0)->co_code_adaptive",
        }
    if version in ((3, 11), (3, 12)):
        expressions["cframe_current_frame"] = "&((_PyCFrame*)0)->current_frame"
    if version == (3, 11):
        expressions["frame_is_entry"] = f"&(({frame}*)0)->is_entry"
    return expressions


@pytest.mark.parametrize("version", VERSIONS)
def test_layout_matches_the_dwarf_of_the_build(version: str) -> None:
    if shutil.which("gdb") is None:
        missing("gdb is not installed")
    major_minor = tuple(int(part) for part in version.split(".")[:2])
    layout: PythonLayout = LAYOUTS[major_minor]  # type: ignore[index]
    library = Path(interpreter(version)).parents[1] / "lib" / f"libpython{major_minor[0]}.{major_minor[1]}.so.1.0"
    expressions = _expressions(major_minor)  # type: ignore[arg-type]
    command = ["gdb", "-nx", "-batch", str(library)]
    for expression in expressions.values():
        command += ["-ex", f"print (long){expression}"]
    output = subprocess.run(command, capture_output=True, text=True, timeout=120).stdout
    values = [int(match) for match in re.findall(r"^\$\d+ = (\d+)$", output, re.M)]
    assert len(values) == len(expressions), output
    assert {name: getattr(layout, name) for name in expressions} == dict(zip(expressions, values))
    # Fields the table says the version lacks are the ones not asked of gdb.
    unasked = {"tstate_native_thread_id", "frame_owner", "code_qualname", "code_adaptive", "cframe_current_frame"}
    for name in unasked - set(expressions):
        assert getattr(layout, name) == NO_FIELD
