"""The script library: bundled scripts by name, script files, and Pixie-style script folders
(one ``.pxl`` plus an optional ``vis.json``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pxq.errors import UsageError, closest
from pxq.resources import data_dir


@dataclass(frozen=True)
class Script:
    name: str
    text: str
    filename: str
    vis: dict | None = None

    @property
    def summary(self) -> str:
        """The first line of the script's docstring (parsed cheaply, without compiling)."""
        from pxq.lang import parse

        try:
            doc = parse(self.text, self.filename).docstring or ""
        except Exception:
            return "(does not parse)"
        for line in doc.strip().splitlines():
            if line.strip():
                return line.strip()
        return ""


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read script: {exc}") from None


def _load_folder(folder: Path, name: str) -> Script:
    scripts = sorted(folder.glob("*.pxl"))
    if len(scripts) != 1:
        found = ", ".join(p.name for p in scripts) or "none"
        raise UsageError(f"{folder}: a script folder needs exactly one .pxl file (found: {found})")
    vis = None
    vis_path = folder / "vis.json"
    if vis_path.exists():
        try:
            vis = json.loads(_read(vis_path))
        except json.JSONDecodeError as exc:
            raise UsageError(f"{vis_path}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}") from None
        if not isinstance(vis, dict):
            raise UsageError(f"{vis_path}: expected a JSON object")
    return Script(name, _read(scripts[0]), str(scripts[0]), vis)


def bundled_names() -> list[str]:
    root = data_dir("scripts")
    return sorted(p.name for p in root.iterdir() if p.is_dir() and any(p.glob("*.pxl")))


def bundled_scripts() -> list[Script]:
    root = data_dir("scripts")
    return [_load_folder(root / name, name) for name in bundled_names()]


def load_script(ref: str) -> Script:
    """A bundled script name (``http_data``, ``px/http_data``), a .pxl file or a script folder."""
    path = Path(ref)
    if path.is_file():
        return Script(path.stem, _read(path), str(path))
    if path.is_dir():
        return _load_folder(path, path.name)
    name = ref[3:] if ref.startswith("px/") else ref
    if "/" not in name and name in bundled_names():
        return _load_folder(data_dir("scripts") / name, name)
    names = bundled_names()
    near = closest(name, names)
    hint = f" (did you mean {near[0]}?)" if near else ""
    raise UsageError(
        f"unknown script {ref!r}{hint}: not a file, a folder or a bundled script; bundled scripts: {', '.join(names)}"
    )
