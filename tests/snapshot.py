"""Snapshot assertions: compare text with a file kept next to the tests.

``assert_snapshot(path, text)`` fails with a diff when ``text`` differs from the file at ``path``
(or the file is missing). Run with ``PXQ_UPDATE_SNAPSHOTS=1`` to (re)write snapshot files, then
review the change with ``git diff``.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

UPDATE_ENV = "PXQ_UPDATE_SNAPSHOTS"


def assert_snapshot(path: str | os.PathLike, text: str) -> None:
    path = Path(path)
    if os.environ.get(UPDATE_ENV) == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return
    if not path.exists():
        raise AssertionError(f"snapshot {path} is missing: run the tests with {UPDATE_ENV}=1 to create it")
    expected = path.read_text(encoding="utf-8")
    if text != expected:
        diff = "".join(
            difflib.unified_diff(
                expected.splitlines(keepends=True), text.splitlines(keepends=True), str(path), "actual"
            )
        )
        raise AssertionError(f"snapshot {path} differs (update with {UPDATE_ENV}=1):\n{diff}")
