"""The grammar, scripts and BPF programs ship inside the wheel: an installed pxq works anywhere."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli_support import run_pxq

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_wheel_installs_and_runs_outside_the_source_tree(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = wheels.glob("pxq-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    # Dependencies come from the test venv's site-packages, so the check needs no downloads.
    site = subprocess.run(
        [sys.executable, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "--no-deps", str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    venv_site = next((venv / "lib").glob("python3*/site-packages"))
    (venv_site / "deps.pth").write_text(site + "\n")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    installed_pxq = str(venv / "bin" / "pxq")
    scripts = run_pxq("scripts", executable=installed_pxq, check=True, cwd=tmp_path, env=env)
    assert "http_data" in scripts.stdout and "service_stats" in scripts.stdout
    explain = run_pxq("explain", "http_data", executable=installed_pxq, check=True, cwd=tmp_path, env=env)
    assert "socket_tracer" in explain.stdout
    installed = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import pxq.resources as r; print(r.data_dir('grammar'))"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        check=True,
    ).stdout
    assert "site-packages/pxq/_data/grammar" in installed
