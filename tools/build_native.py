"""Compile pxq's C extension (pxq/agent/_native.c) next to its source, for the Python running
this (or ``--python``): ``pxq/agent/_native<EXT_SUFFIX>``, e.g. ``_native.cpython-311-x86_64-linux-gnu.so``.

    python tools/build_native.py            # tools/setup.sh runs this; a no-op when up to date
    python tools/build_native.py --force

Standard library only: the hatch build hook (hatch_build.py) imports it by path in its isolated
build environment. The source's SHA-256 is compiled in (``SOURCE_SHA256``); pxq/agent/native.py
refuses a build of another source, so an edited or merged _native.c is never run stale.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shlex
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "pxq" / "agent" / "_native.c"
# (tests/agent/test_native.py builds it again with -Werror and the sanitizers.)
CFLAGS = ("-O2", "-g", "-fPIC", "-shared", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter")


def source_digest(source: Path = SOURCE) -> str:
    return hashlib.sha256(source.read_bytes()).hexdigest()


def python_config(python: str) -> tuple[str, str]:
    """The include directory and extension suffix of interpreter ``python``."""
    if Path(python).resolve() == Path(sys.executable).resolve():
        return sysconfig.get_paths()["include"], sysconfig.get_config_var("EXT_SUFFIX")
    out = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['include']); "
         "print(sysconfig.get_config_var('EXT_SUFFIX'))"],
        check=True, capture_output=True, text=True,
    ).stdout.split("\n")  # fmt: skip
    return out[0], out[1]


def target_path(python: str = sys.executable, out_dir: Path | None = None) -> Path:
    return (out_dir or SOURCE.parent) / ("_native" + python_config(python)[1])


def build(
    python: str = sys.executable, out_dir: Path | None = None, extra_flags: tuple[str, ...] = (), force: bool = False
) -> Path:
    """Compile the extension for ``python`` into ``out_dir`` (default: next to the source);
    returns its path. Skipped when the file there is newer than the source (unless ``force``)."""
    include, suffix = python_config(python)
    target = (out_dir or SOURCE.parent) / ("_native" + suffix)
    if not force and not extra_flags and target.exists() and target.stat().st_mtime >= SOURCE.stat().st_mtime:
        return target
    header = Path(include) / "Python.h"
    if not header.exists():
        raise SystemExit(f"build_native: {header} is missing: install the Python development headers")
    cc = os.environ.get("CC", "cc")
    target.parent.mkdir(parents=True, exist_ok=True)
    # Into a temporary file, then renamed: a process that has the old build loaded keeps it intact.
    with tempfile.NamedTemporaryFile(dir=target.parent, prefix=".native-", suffix=".so", delete=False) as tmp:
        partial = Path(tmp.name)
    cmd = [
        *shlex.split(cc), *CFLAGS, *extra_flags, f"-I{include}",
        f'-DPXQ_NATIVE_SOURCE_SHA256="{source_digest()}"', str(SOURCE), "-o", str(partial),
    ]  # fmt: skip
    try:
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise SystemExit(f"build_native: {shlex.join(cmd)} failed:\n{result.stderr}")
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", default=sys.executable, help="the interpreter to build for")
    parser.add_argument("--force", action="store_true", help="rebuild even when up to date")
    args = parser.parse_args()
    print(build(args.python, force=args.force))


if __name__ == "__main__":
    main()
