"""pyarrow's pandas probe, settled for a process that makes no DataFrame (``pxq run``).

pyarrow's first ``pa.array``/``pa.scalar`` call imports pandas, only to learn whether its argument
is a pandas object (its pandas shim, pyarrow/pandas-shim.pxi): half a second or more of `pxq run`'s
start, for a command that never makes a DataFrame. :func:`settle_pandas_probe` answers that first
probe with pandas refused; pyarrow then probes no more, and whatever really converts to or from
pandas (``Table.to_pandas``) still imports it, as the shim tries again for those
(tests/cli/test_cli_no_pandas.py checks both)."""

from __future__ import annotations

import sys
from typing import Any


class _RefusePandas:
    """A meta path finder refusing pandas, for the moment of :func:`settle_pandas_probe`."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "pandas" or name.startswith("pandas."):
            raise ModuleNotFoundError(f"{name}: refused to settle pyarrow's pandas probe", name=name)


def settle_pandas_probe() -> None:
    """Let pyarrow's pandas probe find no pandas, once, unless pandas is in the process already."""
    if "pandas" in sys.modules:
        return
    import pyarrow as pa

    refuse = _RefusePandas()
    sys.meta_path.insert(0, refuse)
    try:
        pa.array([])
    finally:
        sys.meta_path.remove(refuse)
