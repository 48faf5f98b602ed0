"""Hatch build hook: compile pxq's C extension (pxq/agent/_native.c, the socket tracer's ring walk
and HTTP/1 plain framing) with tools/build_native.py, for the wheel and for the editable install
(``pip install -e .``, which tools/setup.sh runs: the extension is built next to its source)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


class NativeBuildHook(BuildHookInterface):  # type: ignore[type-arg]
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel":
            return
        spec = importlib.util.spec_from_file_location("build_native", Path(self.root) / "tools" / "build_native.py")
        assert spec is not None and spec.loader is not None
        builder = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(builder)
        built = builder.build(sys.executable)
        build_data["pure_python"] = False
        build_data["infer_tag"] = True
        if version != "editable":  # the editable install finds it in the source tree
            build_data["force_include"][str(built)] = f"pxq/agent/{built.name}"
