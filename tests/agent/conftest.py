"""Fixtures shared by the agent's tests.

* ``http_events_capture``: a capture directory of synthetic http_events (pxq.testing.synthetic), for
  the tests that serve it with ``pxq agent serve --from`` (tests/agent/test_agent_security*.py).
  Read-only: the session shares it.
* ``http_events_req_paths``: what a client reading that whole table must get, from pandas over the
  capture's Parquet file (not through pxq).
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pxq.testing.synthetic import write_synthetic_capture


@pytest.fixture(scope="session")
def http_events_capture(tmp_path_factory) -> Path:
    """500 rows over five minutes, 5 % of the values null."""
    directory = tmp_path_factory.mktemp("agent-http-capture")
    return Path(write_synthetic_capture(directory, 500, seed=11, null_fraction=0.05, host="agent-host"))


@pytest.fixture(scope="session")
def http_events_req_paths(http_events_capture: Path) -> list[str]:
    """Every row's req_path, sorted, a null as "<null>"."""
    frame = pq.read_table(http_events_capture / "http_events.parquet").to_pandas()
    return sorted(frame["req_path"].fillna("<null>"))
