"""Locate files shipped beside the code: the grammar, the script library, BPF programs.

In a source checkout (editable install) they sit at the repository's top level; in a wheel they
are copied under ``pxq/_data`` (see pyproject.toml).
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    """Return the directory ``grammar``, ``scripts`` or ``bpf``, wherever pxq was installed from."""
    for candidate in (_PACKAGE_DIR / "_data" / name, _PACKAGE_DIR.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"pxq installation is missing its {name!r} directory")
