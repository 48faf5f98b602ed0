"""The registry fills itself: a fresh interpreter that imports one module of pxq.funcs (whichever it
is, in whichever order) sees every function, with no load_builtins() call anywhere."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.funcs.funcs_support import AGGREGATES, SCALARS

ROOT = Path(__file__).parent.parent.parent
PIXIE_AGGREGATES = {"count", "sum", "mean", "min", "max", "any", "quantiles"}


@pytest.mark.parametrize(
    "first_import",
    [
        "from pxq.funcs.registry import SCALARS, AGGREGATES",
        "import pxq.funcs._math; from pxq.funcs.registry import SCALARS, AGGREGATES",
        "from pxq.exec.aggregate import AGGREGATES; from pxq.exec.expressions import SCALARS",
        "from pxq.plan.constants import SCALARS; from pxq.funcs.registry import AGGREGATES",
    ],
)
def test_first_import_fills_the_registry(first_import: str) -> None:
    code = f"{first_import}\nimport json; print(json.dumps([sorted(SCALARS), sorted(AGGREGATES)]))"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True, cwd=ROOT)
    scalars, aggregates = json.loads(out.stdout)
    assert aggregates == sorted(PIXIE_AGGREGATES)
    assert scalars == sorted(SCALARS) and "add" in SCALARS and len(SCALARS) > 50
    assert set(AGGREGATES) == PIXIE_AGGREGATES
