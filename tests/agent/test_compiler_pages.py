"""The agent's RSS after start-up: the BPF compiler's code (libLLVM, libclang) brought in by the
compile is handed back (:func:`pxq.agent.bpf_program.release_compiler_pages`), also when another
process maps the same library pages (another agent on the host): MADV_PAGEOUT alone skips those.
Measured from /proc/<pid>/smaps of a fresh process (the kernel's view, not pxq's)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from pxq.testing.kernel import require_bpf

# A process that compiles a small BPF program (bcc, as the agent does), then says so.
_COMPILE = textwrap.dedent(
    """
    import sys
    from bcc import BPF

    bpf = BPF(text=b"int probe_%s(void *ctx) { return 0; }")
    print("compiled", flush=True)
    sys.stdin.read()  # holds the mappings until the test is done
    """
)

_MEASURE = textwrap.dedent(
    """
    import re
    from bcc import BPF
    from pxq.agent.bpf_program import release_compiler_pages

    def compiler_code_kb():
        # Resident kB of the compiler libraries' mappings that hold no private page: their code,
        # as in the library files (the relocated data is private: it has to stay).
        total, mapping = 0, None
        for line in open("/proc/self/smaps"):
            fields = line.split()
            if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
                mapping = {"lib": len(fields) >= 6 and re.search(r"/lib(LLVM|clang)", fields[5]), "perms": fields[1]}
            elif mapping and mapping["lib"] and fields[0] in ("Rss:", "Anonymous:"):
                mapping[fields[0]] = int(fields[1])
                if fields[0] == "Anonymous:" and not mapping["Anonymous:"] and "w" not in mapping["perms"]:
                    total += mapping["Rss:"]
        return total

    bpf = BPF(text=b"int probe_measured(void *ctx) { return 0; }")
    before = compiler_code_kb()
    release_compiler_pages()
    after = compiler_code_kb()
    again = BPF(text=b"int probe_again(void *ctx) { return 1; }")  # the compiler still works
    print(before, after, again.load_func(b"probe_again", BPF.KPROBE).fd > 0)
    """
)


@pytest.mark.kernel
def test_compiler_code_leaves_the_rss_even_when_another_process_maps_it():
    require_bpf()
    holder = subprocess.Popen([sys.executable, "-c", _COMPILE % "holder"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "compiled"  # its pages of the libraries are mapped
        out = subprocess.run([sys.executable, "-c", _MEASURE], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        before, after, works = out.stdout.split()
        assert int(before) > 20_000  # the compile brought tens of MB of compiler code in
        assert int(after) < 1_000, f"{after} kB of compiler code still resident (was {before} kB)"
        assert works == "True"
    finally:
        holder.kill()
        holder.wait()
