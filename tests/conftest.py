"""Session-wide fixtures with real servers and real traffic, for every test suite.

* ``nginx_workload``: Debian's nginx on a free 127.0.0.1 port in front of the Python test backend
  (see ``pxq.testing.workload``), started once per session and stopped at its end.
* ``http_capture_dir``: a replayable capture directory (``http_events`` + ``capture.json``)
  recorded once per session from real loopback traffic through pxq's recording proxy
  (``pxq.testing.make_capture``). Treat it as read-only: other suites share it.

Tests that cannot fail at random: hypothesis runs the "ci" profile (derandomized: the same examples
on every run) when the environment sets CI, else the "dev" profile (random search, failures saved
in the local example database); HYPOTHESIS_PROFILE picks one by name. Failing examples found are
kept as explicit ``@example`` cases next to their property.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    derandomize=True,
    database=None,
    print_blob=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("dev", print_blob=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev"))

# A node agent running on the developer's machine must not answer the tests' `pxq run`s (a local
# agent is the default source when its state file exists), and the REPL tests must not write the
# user's history: both state directories point into a directory of this test session.
_SESSION_STATE = tempfile.mkdtemp(prefix="pxq-test-state-")
os.environ.setdefault("PXQ_STATE_DIR", os.path.join(_SESSION_STATE, "agent"))
os.environ.setdefault("XDG_STATE_HOME", os.path.join(_SESSION_STATE, "xdg"))


# The session fixtures below start nginx and the Python backend: tests that use them are marked
# `servers` (as tests that start servers themselves are, by hand), so `-m "not servers"` leaves them out.
SERVER_FIXTURES = frozenset({"nginx_workload", "http_capture", "http_capture_dir"})


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items):
    """Run test files in path order whatever a plugin did to the order (pytest-randomly, ...): a
    stable sort, so the order within a file stays as collected and the default order is unchanged."""
    items.sort(key=lambda item: Path(item.path).parts)


def pytest_itemcollected(item):
    # Here, not in pytest_collection_modifyitems above: that one runs last, after `-m` has deselected.
    if SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
        item.add_marker(pytest.mark.servers)


# How much traffic the shared capture holds: every step of the client mix several times over.
CAPTURE_REQUESTS = 44
CAPTURE_SECONDS = 60.0


@pytest.fixture(scope="session")
def nginx_workload():
    from pxq.testing.workload import nginx_workload as start

    with start() as workload:
        yield workload


@pytest.fixture(scope="session")
def http_capture(tmp_path_factory):
    """The summary of the shared capture (see ``pxq.testing.make_capture.CaptureSummary``)."""
    from pxq.testing.make_capture import make_capture

    return make_capture(tmp_path_factory.mktemp("http-capture"), CAPTURE_REQUESTS, CAPTURE_SECONDS)


@pytest.fixture(scope="session")
def http_capture_dir(http_capture):
    return http_capture.directory
