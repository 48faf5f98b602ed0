"""``pxq repl`` in a real pseudo-terminal (pexpect): typing, Tab, errors, Ctrl-C, :save, Ctrl-D,
read back from what the terminal is sent (escape sequences taken out, cursor moves as spaces)."""

from __future__ import annotations

import json
import os
import re
import termios
import time
from pathlib import Path

import pandas as pd
import pexpect
import pyarrow.parquet as pq
import pytest

from pxq.tables import CATALOG
from pxq.testing.synthetic import write_synthetic_capture
from tests.cli_support import assert_no_traceback, pxq_command, run_pxq

_CURSOR_FORWARD = re.compile(r"\x1b\[(\d*)C")
_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[()][0-9A-B]|\x1b[=>]|\r")


def screen_text(raw: str) -> str:
    """The terminal's output as text: a cursor move right is the spaces it skips."""
    raw = _CURSOR_FORWARD.sub(lambda m: " " * int(m.group(1) or 1), raw)
    return _ESCAPES.sub("", raw)


class Terminal:
    """``pxq repl ARGS`` in a pty of 50 x 160 cells."""

    def __init__(self, *args: str, state: Path):
        env = dict(os.environ, XDG_STATE_HOME=str(state), TERM="xterm", COLUMNS="160")
        env["PROMPT_TOOLKIT_NO_CPR"] = "1"  # pexpect does not answer cursor position requests
        command = pxq_command("repl", *args)
        self.child = pexpect.spawn(
            command[0],
            command[1:],
            env=env,
            encoding="utf-8",
            dimensions=(50, 160),
        )
        self.raw = ""
        self.read_to = 0  # what wait_for has matched up to, in screen_text(raw)

    def wait_for(self, pattern: str, timeout: float = 60) -> re.Match[str]:
        """The first match of ``pattern`` in what the terminal showed since the last match."""
        compiled = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            text = screen_text(self.raw)
            found = compiled.search(text, self.read_to)
            if found:
                self.read_to = found.end()
                return found
            if time.monotonic() > deadline or not self.child.isalive() and not self._read(0.05):
                raise AssertionError(f"{pattern!r} not on the screen; it shows:\n{text[self.read_to :][-3000:]}")
            self._read(0.2)

    def seen(self, pattern: str, timeout: float) -> re.Match[str] | None:
        """Like :meth:`wait_for`, None when ``pattern`` did not show within ``timeout``."""
        try:
            return self.wait_for(pattern, timeout)
        except AssertionError:
            return None

    def _read(self, timeout: float) -> bool:
        try:
            self.raw += self.child.read_nonblocking(65536, timeout=timeout)
            return True
        except (pexpect.TIMEOUT, pexpect.EOF):
            return False

    def prompt(self, number: int) -> None:
        """Until the prompt of input ``number`` shows (the line editor redraws the current one as
        keys are typed: the number tells a new prompt from those)."""
        self.wait_for(rf"pxl \[{number}\]> ")

    def type(self, text: str) -> None:
        self.child.send(text)

    def enter(self, line: str) -> None:
        self.child.send(line + "\r")

    def leave(self) -> int:
        self.child.sendcontrol("d")
        self.child.expect(pexpect.EOF, timeout=30)
        self.raw += self.child.before
        self.child.close()
        assert_no_traceback(screen_text(self.raw), "pxq repl")
        return int(self.child.exitstatus)


@pytest.fixture(scope="module")
def capture(tmp_path_factory) -> Path:
    return Path(write_synthetic_capture(tmp_path_factory.mktemp("cap") / "c", 300, seed=5, null_fraction=0.05))


def test_tab_completion_errors_multiline_and_history(capture, tmp_path):
    term = Terminal("--from", str(capture), state=tmp_path / "state")
    term.wait_for(r"http_events \(300 rows\)")
    term.prompt(1)
    term.type("df = px.DataFrame(table='http_ev")
    term.type("\t")  # one table matches: Tab completes it in place
    term.wait_for(r"table='http_events")
    term.enter("')")
    term.prompt(2)
    term.type("df.resp_")
    term.type("\t")  # several columns match: a menu lists them
    expected = [c.name for c in CATALOG["http_events"].columns if c.name.startswith("resp_")]
    menu_start, menu_end = term.read_to, term.read_to
    for name in expected:  # in any order on the screen
        term.read_to = menu_start
        menu_end = max(menu_end, term.wait_for(rf"{name}\s+column").end())
    term.read_to = menu_end
    term.type("\x1b")  # Escape closes the menu
    term.type("\x15")  # Ctrl-U clears the line
    term.enter("df = df[df.latency > ]")
    error = term.wait_for(r"<repl>:2:(\d+): error: [^\n]*\n\s+df = df\[df.latency > \]\n(\s*)\^")
    assert error.group(2).count(" ") - 4 == int(error.group(1)) - 1  # the caret under the column said
    term.prompt(3)
    term.enter("df.head(3)")
    term.wait_for(r"out3 \(3 rows\)")
    term.prompt(4)
    term.enter("def few(n):")  # a def continues on the next line, indented
    term.wait_for(r"\.\.\.")
    term.enter("return df.head(n)")
    term.enter("")
    term.prompt(5)
    term.enter("few(2)")
    term.wait_for(r"out5 \(2 rows\)")
    term.prompt(6)
    assert term.leave() == 0
    history = (tmp_path / "state" / "pxq" / "history").read_text()
    assert "+df.head(3)" in history and "+few(2)" in history


def test_save_then_pxq_run_gives_what_pandas_computes(capture, tmp_path):
    saved = tmp_path / "mine.pxl"
    term = Terminal("--from", str(capture), state=tmp_path / "state")
    term.prompt(1)
    term.enter("df = px.DataFrame(table='http_events')")
    term.prompt(2)
    term.enter("df = df[df.resp_status >= 500]")
    term.prompt(3)
    term.enter("df.groupby(['req_method', 'resp_status']).agg(requests=('latency', px.count))")
    term.wait_for(r"out3 \(\d+ rows\)")
    term.prompt(4)
    term.enter(f":save {saved}")
    term.wait_for(rf"saved {re.escape(str(saved))}")
    term.prompt(4)  # a command is no numbered input
    assert term.leave() == 0
    proc = run_pxq("run", str(saved), "--from", str(capture), "-o", "json", check=True)
    got = pd.DataFrame([json.loads(line) for line in proc.stdout.splitlines()]).drop(columns="_table")
    frame = pq.read_table(capture / "http_events.parquet").to_pandas()
    expected = frame[frame.resp_status >= 500].groupby(["req_method", "resp_status"]).size()
    expected = expected.rename("requests").reset_index()
    keys = ["req_method", "resp_status"]
    pd.testing.assert_frame_equal(
        got.sort_values(keys).reset_index(drop=True),
        expected.sort_values(keys).reset_index(drop=True),
        check_dtype=False,
    )


def wait_for_cooked_mode(term: Terminal, timeout: float = 30) -> None:
    """Until the pty turns Ctrl-C into SIGINT again (ISIG on): the line editor reads raw keys,
    a query runs with the terminal as the shell left it."""
    deadline = time.monotonic() + timeout
    while not termios.tcgetattr(term.child.child_fd)[3] & termios.ISIG:
        assert time.monotonic() < deadline, "the terminal stayed in raw mode"
        time.sleep(0.01)


# CPU time (clock ticks, 1/100 s) the REPL spends past what typing costs: the query is running.
QUERY_RUNNING_TICKS = 30


def cpu_ticks(pid: int) -> int:
    """User + system CPU time of process ``pid`` (all its threads) in clock ticks, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime: the 14th and 15th fields


@pytest.fixture(scope="module")
def big_capture(tmp_path_factory) -> Path:
    return Path(write_synthetic_capture(tmp_path_factory.mktemp("big") / "c", 500_000, seed=6))


def test_ctrl_c_cancels_a_running_query_and_the_session_goes_on(big_capture, tmp_path):
    term = Terminal("--from", str(big_capture), state=tmp_path / "state")
    term.prompt(1)
    term.enter("df = px.DataFrame(table='http_events')")
    term.prompt(2)
    term.enter("df.a = px.replace('[0-9]', df.req_headers, 'x')")
    term.prompt(3)
    term.enter("df.b = px.replace('[a-z]+', df.resp_headers, 'y')")
    term.prompt(4)
    before = cpu_ticks(term.child.pid)
    term.enter("df.groupby(['a', 'b', 'req_path']).agg(n=('latency', px.count))")  # seconds over 500,000 rows
    wait_for_cooked_mode(term)  # the editor handed the terminal back: Ctrl-C is SIGINT again
    deadline = time.monotonic() + 60
    while cpu_ticks(term.child.pid) - before < QUERY_RUNNING_TICKS:  # the query is computing
        assert "out4 (" not in screen_text(term.raw) and time.monotonic() < deadline, "the query never ran"
        term.seen(r"$^", timeout=0.05)  # read the screen meanwhile
    term.child.sendintr()
    term.wait_for(r"pxq: cancelled")
    term.prompt(5)
    assert "out4 (" not in screen_text(term.raw)  # the cancelled query showed nothing
    term.enter("df.head(2)")
    term.wait_for(r"out5 \(2 rows\)")
    term.prompt(6)
    assert term.leave() == 0
