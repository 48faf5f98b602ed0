"""Keeping pandas out of processes that make no DataFrame.

pyarrow's first ``pa.array``/``pa.scalar`` call imports pandas, only to learn whether its argument
is a pandas object (its pandas shim, pyarrow/pandas-shim.pxi): half a second or more of `pxq run`'s
start, and about 30 MB of RSS in the always-on node agent, neither of which makes a DataFrame.

- :func:`settle_pandas_probe` (``pxq run``/``explain``/``capture``) answers that first probe with
  pandas refused; pyarrow then probes no more, and whatever really converts to or from pandas
  (``Table.to_pandas``) still imports it, as the shim tries again for those
  (tests/cli/test_cli_no_pandas.py checks both).
- :func:`keep_pandas_out` (``pxq agent serve``) refuses pandas for the life of the process: the
  agent's executor, Flight, Parquet and scheduled scripts work on Arrow only
  (tests/agent/test_agent_no_pandas.py)."""

from __future__ import annotations

import sys
from typing import Any


class RefusePandas:
    """A meta path finder refusing pandas and its submodules, saying why."""

    def __init__(self, why: str) -> None:
        self.why = why

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "pandas" or name.startswith("pandas."):
            raise ModuleNotFoundError(f"{name}: {self.why}", name=name)


def settle_pandas_probe() -> None:
    """Let pyarrow's pandas probe find no pandas, once, unless pandas is in the process already."""
    if "pandas" in sys.modules:
        return
    import pyarrow as pa

    refuse = RefusePandas("refused to settle pyarrow's pandas probe")
    sys.meta_path.insert(0, refuse)
    try:
        pa.array([])
    finally:
        sys.meta_path.remove(refuse)


def keep_pandas_out() -> None:
    """For ``pxq agent serve``, before anything imports pyarrow's dataset module or makes an array:
    pandas refused from now on (idempotent)."""
    if "pandas" not in sys.modules and not any(isinstance(f, RefusePandas) for f in sys.meta_path):
        sys.meta_path.insert(0, RefusePandas("kept out of the node agent (it never uses pandas)"))
