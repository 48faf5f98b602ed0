"""Live capture end to end: `pxq run` and `pxq capture` with the embedded agent, real servers and
clients on loopback, and the same rows from a replay of the capture as from the live table store."""

from __future__ import annotations

import http.client
import json
import queue
import re
import subprocess
import threading
import time
from pathlib import Path

import pytest

from pxq.testing.kernel import require_bpf
from pxq.testing.workload import python_backend
from tests.cli_support import assert_no_traceback, run_pxq, start_pxq as start_pxq_process

pytestmark = pytest.mark.kernel


class Pxq:
    """A pxq process whose stdout and stderr are each drained by a thread of their own (never
    communicate() while another reader consumes a pipe: that can block both processes)."""

    def __init__(self, *args: str, **popen):
        self.proc = start_pxq_process(*args, **popen)
        self.lines: queue.Queue[str] = queue.Queue()
        self.stdout: list[str] = []
        self.readers = [
            threading.Thread(target=lambda: [self.lines.put(line) for line in self.proc.stderr], daemon=True),
            threading.Thread(target=lambda: self.stdout.append(self.proc.stdout.read()), daemon=True),
        ]
        for reader in self.readers:
            reader.start()


def start_pxq(*args: str, **popen) -> Pxq:
    return Pxq(*args, **popen)


def wait_for_line(pxq: Pxq, log: list[str], wanted, what: str, timeout: float = 60) -> None:
    """Read pxq's stderr lines into ``log`` until one satisfies ``wanted`` (a condition, not a
    guessed time); fails saying ``what`` never came, or that pxq exited first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = pxq.lines.get(timeout=0.5)
        except queue.Empty:
            assert pxq.proc.poll() is None, f"pxq exited early: {''.join(log)}"
            continue
        log.append(line)
        if wanted(line):
            return
    raise AssertionError(f"pxq never {what}: {''.join(log)}")


def wait_attached(pxq: Pxq, log: list[str], timeout: float = 60) -> None:
    wait_for_line(pxq, log, lambda line: "probes attached" in line, "attached", timeout)


def send_requests(port: int, tag: str, n: int) -> list[tuple[str, int]]:
    """n keep-alive GETs with unique paths (every 4th a 404), returning (path, status)."""
    sent = []
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    for i in range(n):
        path = f"/missing?{tag}={i}" if i % 4 == 3 else f"/api/items?{tag}={i}"
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        sent.append((path, response.status))
    conn.close()
    return sent


def finish(pxq: Pxq, log: list[str]) -> str:
    pxq.proc.wait(timeout=120)
    for reader in pxq.readers:
        reader.join(timeout=30)
    while not pxq.lines.empty():
        log.append(pxq.lines.get())
    assert_no_traceback("".join(log))
    assert pxq.proc.returncode == 0, "".join(log)
    return "".join(pxq.stdout)


def test_pxq_run_http_data_live_shows_both_ends():
    require_bpf()
    with python_backend() as backend:
        pxq = start_pxq("run", "http_data", "--for", "5s", "-o", "json", "--", "--num_head=10000")
        log: list[str] = []
        wait_attached(pxq, log)
        sent = send_requests(backend.port, "live", 12)
        out = finish(pxq, log)
    rows = [json.loads(line) for line in out.splitlines() if line.strip()]
    by_path: dict[str, list[dict]] = {}
    for row in rows:
        by_path.setdefault(row["req_path"], []).append(row)
    for path, status in sent:
        seen = by_path.get(path, [])
        # Both ends are on this host and traced: the backend (server) and this test (client).
        assert len(seen) == 2, (path, seen)
        assert {r["resp_status"] for r in seen} == {status}
        assert all(r["req_method"] == "GET" and r["latency"] > 0 for r in seen)
        servers = [r for r in seen if r["destination"].startswith("python")]
        assert len(servers) == 1, seen
    # Host-wide, other processes' transactions that straddle the window are counted as
    # unmatched (rightly); the kernel must not have lost any event at this rate.
    assert "ringbuf_full" not in "".join(log)
    # The last progress line says how long the window was, and when the queue was taken.
    assert re.search(r"^pxq: captured 5\.\ds \(done at \d+\.\ds\)  events ", "".join(log), re.M), log


def test_pxq_capture_then_replay(tmp_path):
    require_bpf()
    with python_backend() as backend:
        pxq = start_pxq("capture", "--out", str(tmp_path / "cap"), "--for", "4s", "--pid", str(backend.pid))
        log: list[str] = []
        wait_attached(pxq, log)
        sent = send_requests(backend.port, "cap", 8)
        finish(pxq, log)
    assert "wrote" in "".join(log)
    replay = run_pxq("run", "http_request_stats", "--from", str(tmp_path / "cap"), "-o", "json", check=True)
    rows = [json.loads(line) for line in replay.stdout.splitlines()]
    requested = {path for path, _ in sent}
    counted = {r["req_path"]: r["requests"] for r in rows}
    # Only the backend was traced (--pid), so each request appears once, server side.
    assert {p: counted.get(p) for p in requested} == {p: 1 for p in requested}
    meta = json.loads((tmp_path / "cap" / "capture.json").read_text())
    assert any(p["pid"] == backend.pid for p in meta["processes"].values())


def test_live_store_and_its_capture_give_the_same_rows(tmp_path):
    """What `pxq run` shows live equals what `pxq run --from` shows for the same capture."""
    require_bpf()
    from pxq.agent.embedded import EmbeddedAgent
    from pxq.api import compile_script
    from pxq.exec.execute import execute
    from pxq.library import load_script
    from pxq.plan.split import split
    from pxq.replay import open_capture

    script = load_script("http_data")
    with python_backend() as backend:
        manifest = split(compile_script(script, args={"num_head": "1000"}).optimized).manifest
        agent = EmbeddedAgent(manifest)
        done: list = []
        attached = threading.Event()  # the first progress report comes once the probes are live
        worker = threading.Thread(target=lambda: done.append(agent.run(4.0, lambda _: attached.set())))
        worker.start()
        assert attached.wait(timeout=60), "the agent never attached"
        send_requests(backend.port, "same", 6)
        worker.join(timeout=60)
    (store,) = done
    compiled = compile_script(script, args={"num_head": "1000"}, now_ns=store.end_time_ns)
    live = execute(compiled.optimized, store).tables["http_data"]
    store.write_capture(tmp_path / "cap")
    replayed = execute(compiled.optimized, open_capture(tmp_path / "cap")).tables["http_data"]
    assert live.num_rows >= 6
    assert live.equals(replayed)


def test_pid_argument_that_does_not_exist_or_exits_is_said():
    """`-- --pid=N`: a pid with no process is said before the probes attach; a process that exits
    during the window is said after it; the run still shows what it has (exit 0)."""
    require_bpf()
    from tests.agent.test_pid_watch import SLEEP, _unused_pid

    missing = _unused_pid()
    proc = run_pxq("run", "cpu_flamegraph", "--for", "1s", "-o", "json", "--", f"--pid={missing}", check=True)
    lines = proc.stderr.split("\n")
    warning = f"pxq: warning: no running process with pid {missing}: nothing is collected from it (is the pid right?)"
    assert warning in lines and lines.index(warning) < next(
        i for i, line in enumerate(lines) if "probes attached" in line
    )
    with subprocess.Popen([SLEEP, "60"]) as short:
        try:
            pxq = start_pxq("run", "cpu_flamegraph", "--for", "3s", "-o", "json", "--", f"--pid={short.pid}")
            log: list[str] = []
            wait_attached(pxq, log)
        finally:
            short.kill()  # inside the window, once collection runs
        finish(pxq, log)
    stderr = "".join(log)
    assert re.search(
        rf"^pxq: warning: pid {short.pid} exited before the window ended \(gone about [0-9.]+s into "
        r"[0-9.]+s\); what it did until then is shown$",
        stderr,
        re.M,
    ), stderr
    assert "no running process" not in stderr


NAMES_PXL = """\
import px
df = px.DataFrame('http_events')
df.pid = df.ctx['pid']
df.cmd = df.ctx['cmd']
df.comm = df.ctx['comm']
px.display(df[['upid', 'pid', 'cmd', 'comm', 'req_path', 'trace_role']], 'names')
"""


def _run_and_read_start(argv: list[str]) -> tuple[int, int | None]:
    """Run ``argv`` to its end; its pid and the start time /proc showed while it ran (None if it
    ended before /proc could be read)."""
    proc = subprocess.Popen(argv)
    try:
        ticks = int(Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except OSError:
        ticks = None
    assert proc.wait(timeout=30) == 0
    return proc.pid, ticks


def test_a_short_lived_curl_is_named_in_rows_and_in_the_process_table(tmp_path):
    """A real curl lives for milliseconds: the capture's process table and the rows' metadata
    still say who it was (comm, command line, start time), as the kernel knew it."""
    require_bpf()
    with python_backend() as backend:
        pxq = start_pxq("capture", "--out", str(tmp_path / "cap"), "--for", "4s")  # every process
        log: list[str] = []
        wait_attached(pxq, log)
        runs = []
        for i in range(3):
            argv = ["/usr/bin/curl", "-s", "-o", "/dev/null", f"{backend.base_url}/api/items?curl={i}"]
            pid, ticks = _run_and_read_start(argv)
            runs.append((pid, ticks, argv, f"/api/items?curl={i}"))
        finish(pxq, log)
    script = tmp_path / "names.pxl"
    script.write_text(NAMES_PXL)
    out = run_pxq("run", str(script), "--from", str(tmp_path / "cap"), "-o", "json", check=True).stdout
    rows = [json.loads(line) for line in out.splitlines() if line.strip()]
    processes = json.loads((tmp_path / "cap" / "capture.json").read_text())["processes"]
    for pid, ticks, argv, path in runs:
        mine = [r for r in rows if r["pid"] == pid]
        assert [(r["req_path"], r["trace_role"], r["comm"], r["cmd"]) for r in mine] == [
            (path, 1, "curl", " ".join(argv))
        ], mine
        upid = mine[0]["upid"]
        if ticks is not None:  # the kernel's start can be one tick later (see ProcessIdentities)
            assert upid in (f"0:{pid}:{ticks}", f"0:{pid}:{ticks + 1}")
        assert (processes[upid]["pid"], processes[upid]["comm"], processes[upid]["cmdline"]) == (
            pid,
            "curl",
            " ".join(argv),
        )


# -- pxq.run without a source: a live window, as `pxq run` -------------------------------------
def _client_report(client) -> list[dict]:
    """The sock_apps client's own view of what it sent: one {path, status, size} per request."""
    assert client.proc.wait(timeout=60) == 0, f"client {client.proc.args} failed"
    return [json.loads(line) for line in client.proc.stdout.read().splitlines()]


def test_api_run_without_a_source_collects_live():
    """pxq.run(script, duration=...) with no source runs the embedded agent for that window; the
    server's rows are exactly what the client says it requested and received."""
    require_bpf()
    import pxq
    from tests.agent.test_socket_tracer import Client, http_server

    with http_server() as (server, port):
        client = Client(port, "basic")
        script = (
            "import px\n"
            "df = px.DataFrame(table='http_events', start_time='-1m')\n"
            f"df = df[px.upid_to_pid(df.upid) == {server.pid}]\n"
            "px.display(df[['req_path', 'resp_status', 'resp_body_size', 'trace_role']], 'server')\n"
        )
        attached = threading.Event()  # the first progress report comes once the probes are live
        done: list = []
        worker = threading.Thread(
            target=lambda: done.append(pxq.run(script, duration="6s", on_progress=lambda _: attached.set()))
        )
        worker.start()
        try:
            assert attached.wait(timeout=60), "the agent never attached"
            client.go()
            sent = _client_report(client)
        finally:
            client.kill()
            worker.join(timeout=60)
    (frames,) = done
    assert list(frames) == ["server"]
    rows = frames["server"].to_dict("records")
    assert [(r["req_path"], r["resp_status"], r["resp_body_size"], r["trace_role"]) for r in rows] == [
        (s["path"], s["status"], s["size"], 2) for s in sent
    ]
    assert len(sent) == 4  # the basic scenario: /hello, /missing, /slow, /upload


def _as_nobody(tmp_path: Path) -> tuple[list[str], str]:
    """This checkout's pxq run as the user nobody: (a python command, an executable for run_pxq).
    The interpreter is the venv's base one when that user can run it, else Debian's of the same
    version; pxq's dependencies come from this venv via PYTHONPATH. The user keeps one capability,
    CAP_DAC_READ_SEARCH, so that wherever the checkout lies it can read it."""
    import os
    import shlex
    import sys
    import sysconfig

    from pxq.cli import main as cli

    root = str(Path(__file__).resolve().parents[2])
    drop = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        # Reading (only) past directory permissions: a checkout in a 0700 directory (mktemp -d) is
        # still importable; nobody still lacks CAP_BPF/CAP_PERFMON, so pxq is not root to itself.
        "--inh-caps=+dac_read_search",
        "--ambient-caps=+dac_read_search",
        "env",
        f"PYTHONPATH={root}{os.pathsep}{sysconfig.get_paths()['purelib']}",
        "HOME=/tmp",
    ]
    tried = []
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    for python in (getattr(sys, "_base_executable", sys.executable), f"/usr/bin/python{version}"):
        probe = subprocess.run(
            [*drop, python, "-c", "import pxq.api, pyarrow, pandas"], capture_output=True, text=True, cwd="/tmp"
        )
        if probe.returncode == 0:
            wrapper = tmp_path / "pxq-as-nobody"
            wrapper.write_text(f'#!/bin/sh\nexec {shlex.join([*drop, python, "-m", cli.__name__])} "$@"\n')
            wrapper.chmod(0o755)
            return [*drop, python], str(wrapper)
        tried.append(f"{python}: {probe.stderr.strip()[-200:]}")
    pytest.fail("no interpreter the user nobody can run pxq with: " + "; ".join(tried), pytrace=False)


def test_api_run_without_a_source_says_why_it_cannot_like_the_cli(tmp_path):
    """Not root: pxq.run with no source raises the CLI's own AgentError text (exit 3 there)."""
    require_bpf()  # root, to start the unprivileged processes below
    python, pxq_as_nobody = _as_nobody(tmp_path)
    cli = run_pxq("run", "http_data", "--for", "1s", executable=pxq_as_nobody, cwd="/tmp", timeout=60)
    assert cli.returncode == 3, cli.stderr
    api = subprocess.run(
        [
            *python,
            "-c",
            "import pxq\n"
            "from pxq.agent.collector import AgentError\n"
            "try:\n    pxq.run('http_data', duration='1s')\n"
            "except AgentError as exc:\n    print(f'pxq: {exc}')\n",
        ],
        capture_output=True,
        text=True,
        cwd="/tmp",
        timeout=60,
    )
    assert api.returncode == 0, api.stderr
    assert api.stdout == cli.stderr
    assert "needs root" in cli.stderr


# -- SIGTERM ends a live window like Ctrl-C ----------------------------------------------------
def wait_for_rows(pxq: Pxq, log: list[str], table: str, at_least: int, timeout: float = 60) -> None:
    """Until a progress line counts ``at_least`` rows of ``table`` (lines come every 5 s off a tty)."""

    def counted(line: str) -> bool:
        seen = re.search(rf"  {table} ([\d,]+)  ", line)
        return bool(seen) and int(seen.group(1).replace(",", "")) >= at_least

    wait_for_line(pxq, log, counted, f"counted {at_least} {table} rows", timeout)


def end_with(pxq: Pxq, log: list[str], signum: int) -> tuple[int, str, str]:
    """Send ``signum``; (exit status, stdout, stderr) once pxq has ended."""
    import signal

    pxq.proc.send_signal(signum)
    pxq.proc.wait(timeout=120)
    for reader in pxq.readers:
        reader.join(timeout=30)
    while not pxq.lines.empty():
        log.append(pxq.lines.get())
    stderr = "".join(log)
    assert_no_traceback(stderr)
    assert f"pxq: {signal.Signals(signum).name} ended the window early" in stderr, stderr
    return pxq.proc.returncode, "".join(pxq.stdout), stderr


def assert_both_ends(rows: list[dict], sent: list[tuple[str, int]]) -> None:
    by_path: dict[str, list[dict]] = {}
    for row in rows:
        by_path.setdefault(row["req_path"], []).append(row)
    for path, status in sent:
        seen = by_path.get(path, [])
        assert len(seen) == 2, (path, seen)  # the backend (server) and this test (client)
        assert {r["resp_status"] for r in seen} == {status}


@pytest.mark.parametrize("to_file", [False, True], ids=["stdout", "out_file"])
def test_sigterm_ends_a_live_run_with_its_rows_and_exit_143(tmp_path, to_file):
    """`timeout` or a service manager sends SIGTERM: the window ends as with Ctrl-C, the rows so far
    are shown (or written with --out), and the exit status is 128 + 15."""
    import signal

    require_bpf()
    out = tmp_path / "rows.json"
    with python_backend() as backend:
        pxq = start_pxq(
            "run",
            "http_data",
            "--for",
            "120s",
            "-o",
            "json",
            *(["--out", str(out)] if to_file else []),
            "--",
            "--num_head=10000",
        )
        log: list[str] = []
        wait_attached(pxq, log)
        sent = send_requests(backend.port, "term", 12)
        wait_for_rows(pxq, log, "http_events", 2 * len(sent))
        status, stdout, stderr = end_with(pxq, log, signal.SIGTERM)
    assert status == 143, stderr
    assert re.search(r"^pxq: captured \d+\.\ds ", stderr, re.M), stderr  # well before the 120 s
    text = out.read_text() if to_file else stdout
    assert_both_ends([json.loads(line) for line in text.splitlines() if line.strip()], sent)
    if to_file:
        assert stdout == ""


def test_ctrl_c_ends_a_live_capture_with_its_rows_and_exit_130(tmp_path):
    """Ctrl-C (SIGINT) during `pxq capture`: the capture is written and replays, and the status
    says the window was cut short."""
    import signal

    require_bpf()
    with python_backend() as backend:
        # As from a terminal: a test run in the background may have SIGINT ignored, which children inherit.
        pxq = start_pxq(
            "capture",
            "--out",
            str(tmp_path / "cap"),
            "--for",
            "120s",
            "--pid",
            str(backend.pid),
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        log: list[str] = []
        wait_attached(pxq, log)
        sent = send_requests(backend.port, "int", 8)
        wait_for_rows(pxq, log, "http_events", len(sent))
        status, _, stderr = end_with(pxq, log, signal.SIGINT)
    assert status == 130, stderr
    replay = run_pxq("run", "http_request_stats", "--from", str(tmp_path / "cap"), "-o", "json", check=True)
    counted = {r["req_path"]: r["requests"] for r in map(json.loads, replay.stdout.splitlines())}
    assert {path: counted.get(path) for path, _ in sent} == {path: 1 for path, _ in sent}


def test_notebook_cell_without_from_collects_live(tmp_path):
    """`%%pxq --for 3s` in a real Jupyter kernel: a live window (progress on stderr), then one
    output; the server's rows are a gap-free run of the requests this test kept sending."""
    require_bpf()
    from tests.agent.test_socket_tracer import http_server
    from tests.cli.test_notebook_kernel import execute, parse_html

    with http_server() as (server, port):
        stop = threading.Event()
        sent: list[str] = []

        def keep_requesting() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            while not stop.is_set():
                path = f"/hello?i={len(sent)}"
                conn.request("GET", path)
                conn.getresponse().read()
                sent.append(path)
                time.sleep(0.05)  # about 60 in the window: all shown (a display shows its first 100)
            conn.close()

        client = threading.Thread(target=keep_requesting)
        client.start()
        try:
            cells = execute(
                [
                    "%load_ext pxq",
                    "%%pxq --for 3s\nimport px\n"
                    "df = px.DataFrame(table='http_events', start_time='-1m')\n"
                    f"df = df[px.upid_to_pid(df.upid) == {server.pid}]\n"
                    "px.display(df[['req_path', 'resp_status', 'latency']], 'live')\n",
                ],
                tmp_path,
            )
        finally:
            stop.set()
            client.join(timeout=30)
    outputs = cells[1].outputs
    assert [o.output_type for o in outputs if o.output_type != "stream"] == ["execute_result"]
    stderr = "".join(o.text for o in outputs if o.output_type == "stream" and o.name == "stderr")
    assert "pxq: probes attached, collecting for 3s" in stderr, stderr
    shown = parse_html(outputs[-1].data["text/html"])
    (table,) = shown.tables
    assert table[0] == ["req_path", "resp_status", "latency"]
    paths = [row[0] for row in table[1:]]
    assert shown.headings == [f"live ({len(paths)} rows)"] and len(paths) >= 20, (shown.headings, stderr)
    first = sent.index(paths[0])
    assert paths == sent[first : first + len(paths)]
    assert all(row[1] == "200" and row[2].endswith((" µs", " ms")) for row in table[1:])
