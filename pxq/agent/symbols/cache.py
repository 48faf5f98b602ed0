"""Bounded caches of resolved frames."""

from __future__ import annotations

# Resolved (file, address) -> frame text, per file; cleared when it grows past this.
MAX_CACHED_FRAMES = 65536


def remember(cache: dict, key, value):
    """``cache[key] = value``, the cache emptied first when it holds MAX_CACHED_FRAMES entries."""
    if len(cache) >= MAX_CACHED_FRAMES:
        cache.clear()
    cache[key] = value
    return value
