"""The agent's memory allocators keep what its drains free, for the next drain, instead of handing
it back to the kernel at once: memory handed back and touched again is faulted in and zeroed by
the kernel anew, a whole 2 MiB huge page at a time where transparent huge pages are on ("always").

Measured (nginx at 5,000 req/s, the embedded agent, ``perf record -g`` of the agent): with Arrow's
default pool (mimalloc, which gives freed memory back within milliseconds) 16-43 % of the agent's
samples were the kernel zeroing pages (``clear_page_erms`` under page faults of mimalloc, of
bytearray growth and of memcpy into new buffers); with the system pool and the C library's
thresholds below, 2.5 %, and the agent's CPU per 10,000 transactions 0.049 -> 0.036 s.

What is kept is given back at most every RELEASE_INTERVAL_S by the agent loop
(``MemoryPool.release_unused``, which for the system pool is glibc's ``malloc_trim``) and when
the loop stops: the agent's RSS stays near its busiest drain's between those, as before.
"""

from __future__ import annotations

import ctypes
import platform

import pyarrow as pa

# glibc's mallopt parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# Blocks below this come from the heap (kept when freed), not from a mapping of their own
# (unmapped when freed): glibc's largest threshold on 64-bit (HEAP_MAX_SIZE / 2). A drain's
# columns (a few MiB each at 5,000 transactions a second) are below it.
MMAP_THRESHOLD_BYTES = 32 << 20
# Free memory at the heap's top is kept up to this much when a block is freed (the loop's periodic
# malloc_trim gives it back). Setting either threshold stops glibc adapting them itself.
TRIM_THRESHOLD_BYTES = 256 << 20


def keep_freed_memory() -> dict[str, bool]:
    """Have Arrow allocate from the C library (its system pool) and glibc keep freed blocks (the
    thresholds above), for this whole process. Returns what was set: {"arrow_system_pool",
    "glibc_thresholds"} (False where not possible: not glibc, no system pool)."""
    done = {"arrow_system_pool": False, "glibc_thresholds": False}
    if "system" in pa.supported_memory_backends():
        if pa.default_memory_pool().backend_name != "system":
            pa.set_memory_pool(pa.system_memory_pool())
        done["arrow_system_pool"] = True
    if platform.libc_ver()[0] == "glibc":
        mallopt = ctypes.CDLL(None).mallopt
        mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        done["glibc_thresholds"] = bool(
            mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
        )
    return done
