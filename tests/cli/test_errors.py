"""Never a traceback: an exception that escapes a stage is one line on stderr with its own exit code,
``--debug`` (or PXQ_DEBUG=1) shows the traceback; durations typed by a user are read or refused
with one line; every test that runs the CLI goes through tests/cli_support.py."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import pytest

import pxq.api
from pxq.agent.embedded import Interrupted, WindowSignals
from pxq.cli.main import EXIT_INTERNAL
from pxq.errors import UsageError
from pxq.plan.times import parse_duration
from pxq.testing.synthetic import write_synthetic_capture
from tests.cli_support import run_main, run_pxq

TESTS = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def capture(tmp_path_factory) -> str:
    return write_synthetic_capture(tmp_path_factory.mktemp("errors_capture"), 50, seed=5)


REAL_EXECUTE = pxq.api.execute


def _failing_execute(exc: BaseException):
    def execute(plan, source, *args, **kwargs):
        REAL_EXECUTE(plan, source, *args, **kwargs)  # the real stage runs, then fails as a bug would
        raise exc

    return execute


def test_internal_error_is_one_line_with_its_own_exit_code(capsys, capture, monkeypatch):
    monkeypatch.setattr(pxq.api, "execute", _failing_execute(LookupError("no such column\nsecond line")))
    code, out, err = run_main(capsys, "run", "http_data", "--from", capture)
    assert code == EXIT_INTERNAL == 70
    assert out == ""
    assert err.splitlines() == ["pxq: internal error: LookupError: no such column (run with --debug for the traceback)"]


@pytest.mark.parametrize("how", ["flag", "flag after the command", "env"])
def test_debug_shows_the_traceback(capsys, capture, monkeypatch, how):
    monkeypatch.setattr(pxq.api, "execute", _failing_execute(ZeroDivisionError("division by zero")))
    args = ["run", "http_data", "--from", capture]
    if how == "flag":
        args.insert(0, "--debug")
    elif how == "flag after the command":
        args.append("--debug")
    else:
        monkeypatch.setenv("PXQ_DEBUG", "1")
    code, _, err = run_main(capsys, *args, expect_traceback=True)
    assert code == EXIT_INTERNAL
    assert "in execute" in err  # the frame that raised is named
    assert err.splitlines()[-1] == "pxq: internal error: ZeroDivisionError: division by zero"


def test_memory_error_and_interrupt_have_their_own_lines(capsys, capture, monkeypatch):
    monkeypatch.setattr(pxq.api, "execute", _failing_execute(MemoryError()))
    code, _, err = run_main(capsys, "run", "http_data", "--from", capture)
    assert code == 1 and len(err.splitlines()) == 1 and err.startswith("pxq: out of memory")
    monkeypatch.setattr(pxq.api, "execute", _failing_execute(KeyboardInterrupt()))
    code, _, err = run_main(capsys, "run", "http_data", "--from", capture)
    assert (code, err) == (130, "pxq: interrupted\n")
    monkeypatch.setattr(pxq.api, "execute", _failing_execute(Interrupted(signal.SIGTERM)))
    code, _, err = run_main(capsys, "run", "http_data", "--from", capture)
    assert (code, err) == (143, "pxq: interrupted by SIGTERM\n")  # 128 + 15, as a shell reports it


def test_help_lists_the_exit_codes_of_a_cut_short_window():
    text = " ".join(run_pxq("--help", check=True).stdout.split())
    assert "130 Ctrl-C (SIGINT), 143 SIGTERM; a live window they end early still shows or writes the rows" in text


def test_sigterm_during_a_window_interrupts_like_ctrl_c_and_is_remembered():
    """SIGTERM inside WindowSignals raises Interrupted (a KeyboardInterrupt, which ends the agent's
    window); the signal is remembered for the exit status; the previous handler comes back after."""
    before = signal.getsignal(signal.SIGTERM)
    with WindowSignals() as window, pytest.raises(KeyboardInterrupt) as caught:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler runs between bytecodes; the sleep is interrupted at once
    assert isinstance(caught.value, Interrupted) and caught.value.signum == signal.SIGTERM
    assert window.received == signal.SIGTERM and window.ended_window
    assert signal.getsignal(signal.SIGTERM) is before


def test_script_errors_keep_their_exit_code_and_show_no_traceback(capsys, capture, tmp_path):
    script = tmp_path / "bad.pxl"
    script.write_text("import px\npx.display(px.DataFrame(table='http_events').nope)\n")
    code, _, err = run_main(capsys, "run", str(script), "--from", capture)
    assert code == 2 and "internal error" not in err and "nope" in err


def test_help_lists_debug():
    out = run_pxq("--help", check=True).stdout
    assert "--debug" in out and "PXQ_DEBUG" in out


# ---------------------------------------------------------------------- --for


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("10s", 10.0),
        ("1.5s", 1.5),
        ("1h2m", 3720.0),
        ("90", 90.0),
        ("2m30s", 150.0),
        ("500ms", 0.5),
        (".5s", 0.5),
        ("1m 30s", 90.0),
        ("250us", 0.00025),
        ("1d", 86400.0),
        ("86400", 86400.0),
        ("2H", 7200.0),
    ],
)
def test_durations_users_type(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds, rel=1e-12)


@pytest.mark.parametrize(
    "text",
    [
        "-1s",
        "0s",
        "0",
        "0.0",
        "25h",
        "86401",
        "nan",
        "inf",
        "-inf",
        "1e3",
        "",
        "1x",
        "s",
        "1.s",
        "10 seconds",
        "1m-30s",
    ],
)
def test_durations_refused_with_one_line(text):
    with pytest.raises(UsageError, match=r"invalid duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    "command",
    [
        ["run", "http_data", "--for", "-1s"],
        ["capture", "--out", "x", "--for", "-1s"],
        ["run", "http_data", "--for", "0s"],
        ["run", "http_data", "--for=48h"],
    ],
)
def test_bad_for_is_pxqs_own_one_line_error(capsys, command):
    code, out, err = run_main(capsys, *command)
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith("pxq: invalid duration"), err


def test_for_is_checked_with_from_too(capsys, capture):
    code, _, err = run_main(capsys, "run", "http_data", "--from", capture, "--for", "0s")
    assert code == 2 and err.startswith("pxq: invalid duration '0s'")


# ---------------------------------------------------------------------- one way to run the CLI

# What starting the pxq CLI looks like, outside tests/cli_support.py.
DIRECT_CLI = re.compile(r'with_name\("pxq"\)|pxq\.cli\.main|\[PXQ\b')


def test_every_cli_run_in_the_tests_goes_through_cli_support():
    offenders = []
    for path in sorted(TESTS.rglob("*.py")):
        if path.name in ("cli_support.py", Path(__file__).name):
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").split("\n"), 1):
            if DIRECT_CLI.search(line):
                offenders.append(f"{path.relative_to(TESTS)}:{number}: {line.strip()}")
    assert not offenders, "run the CLI with tests.cli_support (run_pxq, start_pxq, run_main):\n" + "\n".join(offenders)


def test_an_exception_in_a_thread_is_one_line(capsys, capture, monkeypatch):
    import threading

    before = threading.excepthook

    def execute(plan, source, *args, **kwargs):
        worker = threading.Thread(target=lambda: 1 / 0, name="reader")
        worker.start()
        worker.join()
        return REAL_EXECUTE(plan, source, *args, **kwargs)

    monkeypatch.setattr(pxq.api, "execute", execute)
    code, _, err = run_main(capsys, "run", "http_data", "--from", capture, "-o", "json")
    assert code == 0
    assert err.splitlines()[0] == (
        "pxq: internal error in thread reader: ZeroDivisionError: division by zero (run with --debug for the traceback)"
    )
    assert threading.excepthook is before  # put back for whoever called main() in-process


# ---------------------------------------------------------------------- script arguments


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--num_head=99999999999999999999"],
            "pxq: --num_head expects int, got '99999999999999999999', which is out of range for a 64-bit integer "
            "(-9223372036854775808 .. 9223372036854775807)",
        ),
        (
            ["--num_head=-9223372036854775809"],
            "pxq: --num_head expects int, got '-9223372036854775809', which is out of range for a 64-bit integer "
            "(-9223372036854775808 .. 9223372036854775807)",
        ),
        (["--num_head=5", "--num_head", "6"], "pxq: script argument --num_head given twice ('5' and '6')"),
    ],
)
def test_bad_script_arguments_are_one_line(capsys, capture, args, message):
    code, _, err = run_main(capsys, "run", "http_data", "--from", capture, "--", *args)
    assert (code, err) == (2, message + "\n")


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e999"])
def test_float_script_argument_must_be_finite(capsys, capture, tmp_path, value):
    script = tmp_path / "f.pxl"
    script.write_text(
        "import px\ndef f(x: float = 1.0):\n    df = px.DataFrame(table='http_events')\n"
        "    df.y = df.latency * x\n    return df\n"
    )
    code, _, err = run_main(capsys, "run", str(script), "--from", capture, "--", f"--x={value}")
    assert (code, err) == (2, f"pxq: --x expects a finite number, got '{value}'\n")


def test_largest_64_bit_integer_is_accepted(capsys, capture):
    code, out, _ = run_main(
        capsys, "run", "http_data", "--from", capture, "-o", "json", "--", f"--num_head={2**63 - 1}"
    )
    assert code == 0 and len(out.strip().split("\n")) == 50


def test_sigterm_after_the_window_closed_lets_the_rows_be_shown():
    """Once the agent reports its final progress every row is collected: SIGTERM is noted (for the
    exit status) but does not interrupt compiling and running the script over them."""
    from pxq.agent.loop import Progress

    reported: list = []
    with WindowSignals() as window:
        watch = window.watch(reported.append)
        watch(Progress(1.0, 10, {}, 0))
        assert not window.window_closed
        watch(Progress(2.0, 20, {}, 0, final=True, window_s=2.0))
        os.kill(os.getpid(), signal.SIGTERM)  # Python runs the handler before the next line: it raises nothing
        assert window.received == signal.SIGTERM
    assert window.received == signal.SIGTERM and window.window_closed and not window.ended_window
    assert [p.events for p in reported] == [10, 20]
