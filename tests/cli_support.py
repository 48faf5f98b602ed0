"""The one way tests run the pxq CLI: in a subprocess (``run_pxq``, ``start_pxq``) or in-process
(``run_main``). Every path checks that pxq never printed a Python traceback, whatever its exit code:
a traceback means an exception escaped, which is a bug even when the run was meant to fail."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

TRACEBACK = "Traceback (most recent call last)"
# The console script installed next to the test interpreter (what a user runs).
PXQ = str(Path(sys.executable).with_name("pxq"))


def assert_no_traceback(stderr: str, what: str = "pxq") -> None:
    assert TRACEBACK not in stderr, f"{what} printed a traceback:\n{stderr}"


def pxq_command(*args: str, executable: str | None = None) -> list[str]:
    if executable is None and not Path(PXQ).exists():  # pxq not installed as a script here
        return [sys.executable, "-m", "pxq.cli.main", *map(str, args)]
    return [executable or PXQ, *map(str, args)]


def pxq_shell_line(*args: str, set_env: dict[str, str] | None = None, unset_env: tuple[str, ...] = ()) -> str:
    """``pxq ARGS`` as one shell command line, for a terminal a test drives (tmux runs it in a real
    pty): ``set_env`` entries are set and ``unset_env`` names removed through env(1); the rest of
    the environment is the terminal's. stderr goes with stdout to the screen, as for a user."""
    prefix = ["env", *(f"-u{name}" for name in unset_env), *(f"{k}={v}" for k, v in (set_env or {}).items())]
    return shlex.join([*prefix, *pxq_command(*args)])


def run_pxq(
    *args: str,
    check: bool = False,
    env: dict | None = None,
    timeout: float = 120,
    executable: str | None = None,
    **kwargs,
) -> subprocess.CompletedProcess:
    """``pxq ARGS`` to completion; stdout and stderr as text. ``check``: the exit code must be 0.
    ``env`` defaults to this process's environment (PYTHONPATH included, so the checkout under test
    is the pxq that runs)."""
    proc = subprocess.run(
        pxq_command(*args, executable=executable),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ) if env is None else env,
        **kwargs,
    )
    assert_no_traceback(proc.stderr, f"pxq {' '.join(map(str, args))}")
    if check:
        assert proc.returncode == 0, f"pxq {' '.join(map(str, args))} exited {proc.returncode}:\n{proc.stderr}"
    return proc


def start_pxq(*args: str, env: dict | None = None, **kwargs) -> subprocess.Popen:
    """``pxq ARGS`` started with piped stdout and stderr (text); whoever reads stderr passes it to
    ``assert_no_traceback`` once the process has ended."""
    return subprocess.Popen(
        pxq_command(*args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ) if env is None else env,
        **kwargs,
    )


def run_main(capsys, *args: str, expect_traceback: bool = False) -> tuple[int, str, str]:
    """``pxq.cli.main.main(ARGS)`` in this process: (exit code, stdout, stderr). A traceback on
    stderr fails the test unless ``expect_traceback`` (``--debug``), which then requires one."""
    from pxq.cli.main import main

    try:
        code = main([str(a) for a in args])
    except SystemExit as exit_:  # argparse: --help, usage errors
        code = exit_.code if isinstance(exit_.code, int) else 1
    out, err = capsys.readouterr()
    if expect_traceback:
        assert TRACEBACK in err, f"main({list(args)}) printed no traceback:\n{err}"
    else:
        assert_no_traceback(err, f"main({list(args)})")
    return code, out, err
