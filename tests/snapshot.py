"""Golden-file assertions shared by the test suites.

``assert_snapshot(path, text)`` compares ``text`` with the file at ``path`` and fails with a
unified diff when they differ. Run with ``PXQ_UPDATE_SNAPSHOTS=1`` to (re)write the files
instead; review the diff in git before committing them.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import pytest

UPDATE_ENV = "PXQ_UPDATE_SNAPSHOTS"


def updating() -> bool:
    return os.environ.get(UPDATE_ENV, "") not in ("", "0")


def assert_snapshot(path: Path, text: str) -> None:
    """Assert ``text`` equals the snapshot at ``path`` (a final newline is added to both)."""
    path = Path(path)
    if not text.endswith("\n"):
        text += "\n"
    if updating():
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
        return
    if not path.exists():
        pytest.fail(f"snapshot {path} does not exist; run with {UPDATE_ENV}=1 to create it", pytrace=False)
    expected = path.read_text(encoding="utf-8")
    if expected != text:
        diff = difflib.unified_diff(
            expected.splitlines(keepends=True),
            text.splitlines(keepends=True),
            fromfile=f"{path} (snapshot)",
            tofile=f"{path} (actual)",
        )
        pytest.fail(f"snapshot {path} differs (run with {UPDATE_ENV}=1 to accept):\n" + "".join(diff), pytrace=False)
