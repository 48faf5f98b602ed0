"""A live session across notebook cells: pxq.agent.live_window's rolling window, pxq.Session and
``%pxq_session``. The live tests trace the test backend only (by pid), send it requests with paths
of their own, and wait for conditions (rows seen, rows gone), never for guessed times."""

from __future__ import annotations

import errno
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import pxq.api
from pxq.agent.live_window import LiveWindow
from pxq.agent.table_store import TableStore
from pxq.api import Session
from pxq.errors import UsageError
from pxq.testing.synthetic import write_synthetic_capture

WAIT_S = 60.0


@pytest.fixture
def shell():
    from IPython.core.interactiveshell import InteractiveShell

    ipython = InteractiveShell.instance()
    ipython.run_line_magic("load_ext", "pxq")
    yield ipython
    ipython.run_line_magic("pxq_session", "stop")
    InteractiveShell.clear_instance()


# -- without the kernel ------------------------------------------------------------------------


def test_the_rolling_store_forgets_whole_batches_older_than_the_cut(tmp_path):
    events = pq.read_table(write_synthetic_capture(tmp_path, 90, seed=3) + "/http_events.parquet")
    events = events.sort_by("time_")
    batches = [events.slice(0, 30), events.slice(30, 30), events.slice(60, 30)]
    store = TableStore()
    for batch in batches:
        store.append("http_events", batch)
    times = [b.column("time_").cast(pa.int64()).to_pylist() for b in batches]
    store.drop_before(times[1][0])  # the first batch ends before the cut; the second straddles nothing
    assert store.rows("http_events") == 60
    assert store.table("http_events").column("time_").cast(pa.int64()).to_pylist() == times[1] + times[2]
    store.drop_before(times[2][-1] + 1)  # everything is older: nothing is kept (a quiet table shows no stale rows)
    assert store.table("http_events").column("time_").cast(pa.int64()).to_pylist() == []


def test_a_script_reading_a_table_the_session_does_not_collect_is_told_so():
    session = Session(["http_events"], window="1m")
    with pytest.raises(UsageError) as caught:
        session.run_tables("import px\npx.display(px.DataFrame(table='pgsql_events'))\n")
    assert str(caught.value) == (
        "the live session does not collect pgsql_events (it collects http_events): "
        "start it again with --tables http_events,pgsql_events, or replay a capture with --from"
    )


def test_pxq_exports_the_session():
    import pxq

    assert pxq.Session is Session
    with pytest.raises(AttributeError):
        pxq.Sesion  # noqa: B018 - a misspelt name is an AttributeError, not None


def test_live_window_mistakes_are_usage_errors_before_any_probe():
    with pytest.raises(UsageError, match="needs at least one table"):
        LiveWindow(window_s=60).start()
    with pytest.raises(UsageError, match="unknown table 'nope'"):
        LiveWindow(window_s=60).prepare({"nope"})
    with pytest.raises(UsageError, match="longer than 0 s"):
        LiveWindow(["http_events"], window_s=0)
    window = LiveWindow(window_s=60)  # the REPL's: tables come with its queries
    assert window.describe() == "live capture (a rolling window of 60s): nothing collected yet"
    assert window.rows("http_events") is None and not window.running
    window.stop()
    with pytest.raises(UsageError, match="the live window was stopped"):
        window.prepare({"http_events"})


def test_a_session_not_started_says_so():
    with pytest.raises(UsageError, match="has not been started"):
        Session(["http_events"]).run_tables("import px\npx.display(px.DataFrame(table='http_events'))\n")


@pytest.mark.parametrize(
    ("line", "said"),
    [
        ("start --tables nope", "unknown table 'nope'; tables: "),
        ("start --for-window 0s", "invalid duration '0s': a capture window must be positive"),
        ("start --for-window soon", "invalid duration 'soon'"),
        ("restart", "%pxq_session: argument action: invalid choice: 'restart'"),
        ("stop", "pxq: no live session runs (start one with `%pxq_session start`)"),
        ("", "pxq: no live session runs (start one with `%pxq_session start`)"),
    ],
)
def test_session_magic_mistakes_are_one_line(shell, capsys, line, said):
    assert shell.run_line_magic("pxq_session", line) is None
    out = capsys.readouterr().out
    assert out.startswith(said) and out.count("\n") == 1 and "Traceback" not in out


# -- live ------------------------------------------------------------------------------------


def get_paths(base_url: str, paths: list[str]) -> None:
    for path in paths:
        try:
            urllib.request.urlopen(base_url + path, timeout=10).read()
        except urllib.error.HTTPError as exc:  # the backend answers unknown paths with 404: still a request
            exc.read()


def served_paths(frame: pd.DataFrame) -> set[str]:
    return set(frame.req_path)


def wait_until(condition: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"never: {what}")


def snapshot_paths(window: LiveWindow) -> set[str]:
    table = window.snapshot().scan("http_events", ["req_path", "trace_role"], None, None)
    return set(table.filter(pa.compute.equal(table.column("trace_role"), 2)).column("req_path").to_pylist())


@pytest.fixture
def backend():
    from pxq.testing.kernel import require_bpf
    from pxq.testing.workload import python_backend

    require_bpf()
    with python_backend() as server:
        yield server


def unique_paths(label: str, n: int) -> list[str]:
    tag = uuid.uuid4().hex[:8]
    return [f"/live/{label}/{tag}/{i}" for i in range(n)]


@pytest.mark.kernel
@pytest.mark.servers
def test_the_window_rolls_and_snapshots_stay_frozen(backend):
    window = LiveWindow(["http_events"], window_s=3.0, pids=[backend.pid])
    with window:
        first = unique_paths("a", 5)
        get_paths(backend.base_url, first)
        wait_until(lambda: set(first) <= snapshot_paths(window), "the first requests in the window")
        frozen = window.snapshot()
        assert frozen.end_time_ns - frozen.start_time_ns <= 3e9
        # Older than the window: gone from later snapshots, with the collectors still running.
        wait_until(lambda: not set(first) & snapshot_paths(window), "the first requests leaving the window")
        second = unique_paths("b", 5)
        get_paths(backend.base_url, second)
        wait_until(lambda: set(second) <= snapshot_paths(window), "the second requests in the window")
        assert not set(first) & snapshot_paths(window)
        # A snapshot is what the window held when it was taken.
        held = frozen.scan("http_events", ["req_path"], None, None).column("req_path").to_pylist()
        assert set(first) <= set(held) and not set(second) & set(held)
    assert not window.running
    assert set(second) <= snapshot_paths(window)  # after stop: the window as it was


@pytest.mark.kernel
@pytest.mark.servers
def test_session_api_queries_the_window_at_once(backend):
    script = (
        "import px\ndf = px.DataFrame(table='http_events')\n"
        "px.display(df[df.trace_role == 2][['req_path', 'resp_status']], 'served')\n"
    )
    with Session(["http_events"], window="5m", pids=[backend.pid]) as live:
        sent = unique_paths("api", 4)
        get_paths(backend.base_url, sent)
        wait_until(lambda: set(sent) <= served_paths(live.run(script)["served"]), "the requests in a query")
        served = live.run(script)["served"]
        assert sorted(served[served.req_path.isin(sent)].req_path) == sorted(sent)
        assert set(served[served.req_path.isin(sent)].resp_status) == {404}  # the backend's answer to them
    assert not live.running


@pytest.mark.kernel
@pytest.mark.servers
def test_pxq_session_magic_feeds_later_cells(shell, backend, capsys, monkeypatch):
    shell.run_line_magic("pxq_session", f"start --tables http_events --pid {backend.pid} --for-window 5m")
    assert capsys.readouterr().out == "pxq: live session collecting http_events, keeping the last 5m\n"
    cell = "import px\ndf = px.DataFrame(table='http_events')\npx.display(df[df.trace_role == 2], 'served')\n"
    sent = unique_paths("magic", 3)
    get_paths(backend.base_url, sent)

    # A cell queries the session's window: it never starts a collection of its own (a cell
    # without a session collects for --for through pxq.api.run_live).
    def no_collection_of_its_own(*_args, **_kwargs):
        raise AssertionError("a %%pxq cell started its own live collection while a session runs")

    monkeypatch.setattr(pxq.api, "run_live", no_collection_of_its_own)

    def cell_sees_them() -> bool:
        frame = shell.run_cell_magic("pxq", "", cell)
        return set(sent) <= set(frame.req_path)

    wait_until(cell_sees_them, "a %%pxq cell seeing the requests")
    # A mistake in a cell is said, and the session goes on.
    assert shell.run_cell_magic("pxq", "", "import px\npx.display(px.DataFrame(table='http_events')\n") is None
    assert capsys.readouterr().out.startswith("<cell>:3:")
    assert shell.run_cell_magic("pxq", "", "import px\npx.display(px.DataFrame(table='nope'))\n") is None
    assert "unknown table 'nope'" in capsys.readouterr().out
    assert set(sent) <= set(shell.run_cell_magic("pxq", "", cell).req_path)
    assert shell.run_cell_magic("pxq", "--for 2s", cell) is None
    assert "--for has no effect while the live session runs" in capsys.readouterr().out
    shell.run_line_magic("pxq_session", "")
    status = capsys.readouterr().out
    assert status.startswith("pxq: live session: http_events ") and "(keeps 300s)" in status
    shell.run_line_magic("pxq_session", "start")
    assert "a live session runs already (http_events)" in capsys.readouterr().out
    shell.run_line_magic("pxq_session", "stop")
    assert capsys.readouterr().out == "pxq: live session stopped\n"


@pytest.mark.kernel
@pytest.mark.servers
def test_a_failed_collector_thread_is_said_by_the_next_cell_not_hidden_by_a_collection_of_its_own(
    shell, backend, capsys, monkeypatch
):
    # The failure is injected where a collector's read would fail (an OSError out of
    # AgentLoop.step, in the collector thread); everything else is the real agent.
    from pxq.agent.loop import AgentLoop

    shell.run_line_magic("pxq_session", f"start --tables http_events --pid {backend.pid} --for-window 5m")
    capsys.readouterr()

    def failing_step(loop: AgentLoop, timeout_ms: int = 100) -> None:
        raise OSError(errno.EIO, "the ring buffer could not be read")

    monkeypatch.setattr(AgentLoop, "step", failing_step)

    def no_collection_of_its_own(*_args, **_kwargs):
        raise AssertionError("a %%pxq cell started its own live collection while a session runs")

    monkeypatch.setattr(pxq.api, "run_live", no_collection_of_its_own)
    cell = "import px\npx.display(px.DataFrame(table='http_events'), 'events')\n"

    def cell_says_the_failure() -> bool:
        shown = shell.run_cell_magic("pxq", "", cell)
        out = capsys.readouterr().out
        return shown is None and out == "live collection stopped: [Errno 5] the ring buffer could not be read\n"

    wait_until(cell_says_the_failure, "a cell saying the collector thread failed")
    assert cell_says_the_failure()  # every later cell too, until the session is stopped
    shell.run_line_magic("pxq_session", "stop")
    assert capsys.readouterr().out == "pxq: live session stopped\n"
