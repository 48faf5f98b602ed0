#!/usr/bin/env bash
# Set up this machine for pxq: Debian packages, kernel headers for bcc, tracefs, and the
# project's virtualenv (.venv/) with bcc linked in. Idempotent: a second run only checks.
#
# Runs as root on Debian 12 (bookworm). The reason for each step is in the comment above it.
#
# Environment:
#   PXQ_PYTHON=/path/to/python3   interpreter for the venv (default: the first python3 >= 3.11 on PATH)
#   PXQ_ALLOW_NO_BPF=1            a failing final BPF check warns instead of failing (machines
#                                 without eBPF; the kernel tests then skip with the same reason)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
START=$(date +%s.%N)

log() { echo "setup: $*" >&2; }
die() { echo "setup: ERROR: $*" >&2; exit 1; }
need_root() { [ "$(id -u)" = 0 ] || die "$1 needs root; run: sudo bash tools/setup.sh"; }

# --- 1. Debian packages --------------------------------------------------------------------
# python3-bpfcc/libbpfcc: bcc's Python bindings and libbcc (clang inside); bpfcc-tools: bcc's
# tools; linux-headers-amd64: the headers bcc compiles against; nginx-light, curl, wrk: the real
# traffic for tests and the demo; tmux: the real terminal the table tests draw in; iproute2 (ss)
# and procps (ps) for debugging test servers. postgresql-15 (with pgbench), mariadb-server and
# -client, redis-server and redis-tools (redis-cli, redis-benchmark), dnsmasq and bind9-dnsutils
# (dig): the real database and DNS servers and clients the protocol tests, benchmarks and the demo
# start on loopback ports of their own (the packages' own services are kept from starting).
# chromium: the real browser, run headless, that the HTML report tests load pages in.
# gdb: its unwinder and DWARF reader are the independent reference of the Python frame tests.
# gcc, python3-dev: pxq's C extension (pxq/agent/_native.c) is compiled at install.
# systemd: systemd-analyze verifies the agent's unit file (deploy/systemd) in the deployment tests.
APT_PACKAGES=(python3-bpfcc libbpfcc bpfcc-tools linux-headers-amd64 curl wrk tmux ca-certificates iproute2 procps
    postgresql-15 postgresql-client-15 mariadb-server mariadb-client redis-server redis-tools dnsmasq bind9-dnsutils
    chromium gdb systemd gcc python3-dev)

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

missing=()
for p in "${APT_PACKAGES[@]}"; do
    installed "$p" || missing+=("$p")
done
# Any Debian nginx flavour will do; nginx-light is the smallest.
if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
    missing+=(nginx-light)
fi

if [ ${#missing[@]} -gt 0 ]; then
    need_root "installing ${missing[*]}"
    command -v apt-get >/dev/null || die "apt-get not found: pxq's set-up supports Debian 12 only"
    log "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Keep the packages' own services (nginx on port 80) from starting during the install:
    # pxq starts its own nginx on a free loopback port when it needs one.
    POLICY=/usr/sbin/policy-rc.d
    added_policy=0
    if [ ! -e "$POLICY" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$POLICY" && chmod +x "$POLICY" && added_policy=1
    fi
    trap '[ "$added_policy" = 1 ] && rm -f "$POLICY"' EXIT
    apt-get update -qq || die "apt-get update failed"
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
        || die "apt-get install ${missing[*]} failed"
    if [ "$added_policy" = 1 ]; then rm -f "$POLICY"; added_policy=0; fi
fi

# --- 2. Kernel headers for bcc -------------------------------------------------------------
# This kernel has no headers package; Debian's (older) headers, split into -amd64 and -common,
# let bcc compile tracepoint/uprobe/perf programs. BCC_KERNEL_SOURCE cannot express the split,
# so link both directories where bcc looks. [ -e ] follows links: a dangling one is replaced.
KDIR=/lib/modules/$(uname -r)
if [ ! -e "$KDIR/build" ] || [ ! -e "$KDIR/source" ]; then
    need_root "linking kernel headers into $KDIR"
    HDR=$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -n 1 || true)
    [ -n "$HDR" ] || die "no /usr/src/linux-headers-*-amd64 directory although linux-headers-amd64 is installed"
    COMMON=${HDR%-amd64}-common
    [ -d "$COMMON" ] || die "$COMMON missing (it should come with $(basename "$HDR"))"
    mkdir -p "$KDIR"
    [ -e "$KDIR/build" ] || ln -sfn "$HDR" "$KDIR/build"
    [ -e "$KDIR/source" ] || ln -sfn "$COMMON" "$KDIR/source"
    log "linked $KDIR/build -> $HDR and $KDIR/source -> $COMMON"
fi

# --- 3. tracefs ----------------------------------------------------------------------------
if ! mountpoint -q /sys/kernel/tracing; then
    need_root "mounting tracefs"
    mount -t tracefs nodev /sys/kernel/tracing || die "mount -t tracefs nodev /sys/kernel/tracing failed"
    log "mounted tracefs at /sys/kernel/tracing"
fi

# --- 4. The virtualenv ---------------------------------------------------------------------
python_ok() { "$1" -c 'import sys, venv; sys.exit(0 if sys.version_info >= (3, 11) else 1)' >/dev/null 2>&1; }

VENV=$ROOT/.venv
if [ ! -x "$VENV/bin/python" ] || ! python_ok "$VENV/bin/python"; then
    PY=${PXQ_PYTHON:-}
    if [ -z "$PY" ]; then
        for cand in python3 python3.13 python3.12 python3.11 /usr/bin/python3; do
            if command -v "$cand" >/dev/null 2>&1 && python_ok "$cand"; then PY=$cand; break; fi
        done
    fi
    [ -n "$PY" ] && python_ok "$PY" || die "no Python >= 3.11 with the venv module found (set PXQ_PYTHON)"
    log "creating $VENV with $("$PY" -c 'import sys; print(sys.executable, sys.version.split()[0])')"
    rm -rf "$VENV"
    "$PY" -m venv "$VENV" || die "$PY -m venv $VENV failed"
fi

# bcc: link only Debian's package into the venv (the PyPI project called "bcc" is unrelated).
SITE=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
BCC_SRC=/usr/lib/python3/dist-packages/bcc
[ -d "$BCC_SRC" ] || die "$BCC_SRC missing although python3-bpfcc is installed"
if [ -e "$SITE/bcc" ] && [ ! -L "$SITE/bcc" ]; then
    log "removing a PyPI 'bcc' from the venv (unrelated project that shadows Debian's bcc)"
    "$VENV/bin/python" -m pip uninstall -y -q bcc >/dev/null 2>&1 || true
    rm -rf "$SITE/bcc"
fi
if [ "$(readlink "$SITE/bcc" 2>/dev/null || true)" != "$BCC_SRC" ]; then
    ln -sfn "$BCC_SRC" "$SITE/bcc"
    log "linked $SITE/bcc -> $BCC_SRC"
fi

# pxq itself, editable, with the test extras; skipped while pyproject.toml is unchanged.
STAMP=$VENV/.pxq-setup-stamp
WANT=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$STAMP" 2>/dev/null || true)" != "$WANT" ] \
    || ! "$VENV/bin/python" -c 'import pxq, httptools, pytest' >/dev/null 2>&1; then
    log "pip install -e '.[test]' (a minute on a fresh machine)"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[test]' \
        || die "pip install -e '.[test]' failed"
    echo "$WANT" >"$STAMP"
fi
# pxq's modules byte-compiled: an editable install leaves them as source, and where
# PYTHONDONTWRITEBYTECODE is set no run writes a .pyc, so each run compiled them from source again
# (0.1-0.35 s of every `pxq run`). A .pyc is still read with that variable set; one whose source
# was edited since is ignored (that module compiled from source) until the next setup run.
"$VENV/bin/python" -m compileall -q pxq >/dev/null || die "python -m compileall pxq failed"

# pxq's C extension (pxq/agent/_native.c, the socket tracer's hot loops), next to its source: pip
# built it above, unless pyproject.toml was unchanged and the C source was not (then rebuilt here).
"$VENV/bin/python" tools/build_native.py >/dev/null || die "building pxq's C extension failed (see above)"

# --- 5. Checks -----------------------------------------------------------------------------
out=$("$VENV/bin/python" -c 'import bcc' 2>&1) || { echo "$out" >&2; die "the venv cannot import bcc (see above)"; }

# A tiny BPF program with one tracepoint: compiles with clang against the linked headers,
# loads into the kernel, attaches through tracefs. Any failure prints bcc's own words.
BPF_CHECK=$(cat <<'EOF'
import sys
try:
    from bcc import BPF
    b = BPF(text="TRACEPOINT_PROBE(syscalls, sys_enter_getppid) { return 0; }")
    b.cleanup()
except Exception as e:  # report bcc's exact reason
    print(f"{type(e).__name__}: {e}", file=sys.stderr)
    sys.exit(1)
EOF
)
bpf_problem=""
if [ "$(id -u)" != 0 ]; then
    bpf_problem="not root: eBPF programs need root (CAP_BPF/CAP_PERFMON)"
elif ! out=$("$VENV/bin/python" -c "$BPF_CHECK" 2>&1); then
    echo "$out" >&2
    bpf_problem="a one-tracepoint BPF program failed to compile, load or attach (bcc's output above)"
fi
if [ -n "$bpf_problem" ]; then
    [ "${PXQ_ALLOW_NO_BPF:-}" = 1 ] || die "$bpf_problem"
    log "WARNING (PXQ_ALLOW_NO_BPF=1): $bpf_problem"
fi

ELAPSED=$(awk -v s="$START" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
log "ready in ${ELAPSED} s: $VENV/bin/pxq; eBPF on $(uname -r): ${bpf_problem:+NOT }working"
