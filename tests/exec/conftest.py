from __future__ import annotations

import pytest

from pxq.testing.synthetic import open_synthetic_capture


@pytest.fixture(scope="session")
def synthetic_capture(tmp_path_factory):
    """A capture directory of 5,000 generated http_events rows (with some nulls)."""
    return open_synthetic_capture(tmp_path_factory.mktemp("synthetic_capture"), 5000, seed=7)


@pytest.fixture(scope="session")
def http_frame(synthetic_capture):
    """The same rows as a pandas DataFrame (the reference computations use it)."""
    return synthetic_capture.scan("http_events").to_pandas()
