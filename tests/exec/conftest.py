from __future__ import annotations

import pytest

from pxq.replay import open_capture
from pxq.testing.synthetic import write_synthetic_capture

START_NS = 1_764_115_200_000_000_000
SPAN_NS = 300_000_000_000


@pytest.fixture(scope="session")
def synthetic_capture(tmp_path_factory):
    """A capture directory of 5,000 generated http_events rows (with some nulls)."""
    directory = tmp_path_factory.mktemp("synthetic_capture")
    return open_capture(
        write_synthetic_capture(directory, 5000, seed=7, start_ns=START_NS, span_ns=SPAN_NS, null_fraction=0.05)
    )


@pytest.fixture(scope="session")
def http_frame(synthetic_capture):
    """The same rows as a pandas DataFrame (the reference computations use it)."""
    return synthetic_capture.scan("http_events").to_pandas()
