"""C++ (and Rust legacy) symbol names made readable by libstdc++'s ``__cxa_demangle`` (loaded on first use)."""

from __future__ import annotations

import ctypes
import ctypes.util
from typing import Any, Literal

# (__cxa_demangle, free) once loaded; False when libstdc++ cannot be loaded.
_cxa_demangle: tuple[Any, Any] | Literal[False] | None = None


def demangle(name: str) -> str:
    """C++ (and Rust legacy) ``_Z`` names demangled by libstdc++'s ``__cxa_demangle``; others as-is."""
    global _cxa_demangle
    if not name.startswith("_Z"):
        return name
    if _cxa_demangle is None:
        try:
            lib = ctypes.CDLL(ctypes.util.find_library("stdc++") or "libstdc++.so.6")
            fn = lib.__cxa_demangle
            fn.restype = ctypes.c_void_p
            fn.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.POINTER(ctypes.c_int)]
            free = ctypes.CDLL(None).free
            free.argtypes = [ctypes.c_void_p]
            _cxa_demangle = (fn, free)
        except (OSError, AttributeError):
            _cxa_demangle = False
    if not _cxa_demangle:
        return name
    fn, free = _cxa_demangle
    status = ctypes.c_int(0)
    out = fn(name.encode(), None, None, ctypes.byref(status))
    if not out:
        return name
    try:
        return ctypes.string_at(out).decode(errors="replace") if status.value == 0 else name
    finally:
        free(out)
