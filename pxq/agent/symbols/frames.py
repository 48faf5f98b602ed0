"""Frame text and truncated stacks: what a resolved address is printed as, and whether a user
stack reaches a process or thread entry."""

from __future__ import annotations

from dataclasses import dataclass

KERNEL_SUFFIX = "_[k]"
UNKNOWN = "[unknown]"

# Outermost frames of complete user stacks: process and thread entry points (glibc, musl, Go).
ENTRY_SYMBOLS = frozenset({
    "_start", "__start", "_start_c", "_dl_start_user",
    "__libc_start_main", "__libc_start_main_impl", "__libc_start_call_main", "libc_start_main_stage2",
    "start_thread", "thread_start", "clone", "__clone", "__GI___clone", "clone3", "__clone3", "__GI___clone3",
    "runtime.goexit", "runtime.goexit.abi0", "runtime.rt0_go", "runtime.rt0_go.abi0",
    "runtime.mstart", "runtime.mstart.abi0",
})  # fmt: skip


def module_offset(module: str, offset: int) -> str:
    """The text of a frame without a symbol: ``libc.so.6+0x2724a``, ``[anon]+0x40``."""
    return f"{module}+0x{offset:x}"


@dataclass(frozen=True, slots=True)
class UserFrame:
    text: str
    symbol: str | None  # function name when known
    mapped: bool  # the address lies in a mapping of the process


def stack_is_truncated(frames: list[UserFrame]) -> bool:
    """Whether a user stack (root first) looks cut short: not starting at a process or thread
    entry, or running through unmapped memory. An empty stack (kernel thread) is not truncated."""
    if not frames:
        return False
    if not all(f.mapped for f in frames):
        return True
    return frames[0].symbol not in ENTRY_SYMBOLS
