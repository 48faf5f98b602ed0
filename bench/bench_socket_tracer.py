"""The socket tracer's cost and completeness on real nginx traffic (issue 3's benchmarks).

Everything runs on this machine, in one run, on 127.0.0.1 free ports: Debian's nginx (two
workers, keep-alive, static files; :func:`pxq.testing.workload.nginx_server`), wrk, and a paced
keep-alive HTTP client written in C that this bench compiles (wrk2 is not packaged; the client
sends request ``i`` at ``start + i / rate`` over a pool of connections, one request in flight per
connection, and logs what it got back). The agent is the embedded agent
(:class:`pxq.agent.embedded.EmbeddedAgent`, socket tracer with pids = nginx's master and
workers, polling and moving rows into its table store) in a process of its own, as ``pxq run``
would be; it is started (BPF compiled and attached) before each traced run and ended with SIGINT
(the Ctrl-C path) after it.

1. Throughput: ``wrk -t2 -c16`` on a small static file: untraced, traced by the agent, with the
   tracer's kernel side only (its program attached, its records skipped unread: what tracing
   costs the traced processes without the agent's CPU), and with its probes only (the same raw
   tracepoints and tracepoints, empty programs: what the kernel's hooks cost before any work), in
   rotating order per round; the figure is the median of the per-round traced/untraced ratios
   (target >= 0.95). wrk, nginx and the agent share the machine's CPUs, so on a small machine
   every CPU-second the agent spends is one nginx does not get.
2. Completeness: 20,000 requests at 2,000 req/s (GET and HEAD of three static files, one of them
   over the 1 KiB body limit, each with a unique ``?i=N``) against the rows the agent captured:
   method, path, status, response body size and body prefix must match (target >= 99.9 %). The
   agent's CPU time per 10,000 captured transactions (getrusage of the agent process, from the
   end of its start-up to the end of its stop; target <= 0.1 s) and its RSS (peak during the
   capture, VmHWM reset after start-up; target <= 250 MB; and the peak during start-up, when
   LLVM compiles the BPF program) come from this run.
3. Drop onset: one agent while the paced client steps its rate up; per step the events per
   second reaching the ring buffer and taken by the agent, its CPU, and every drop counter that
   moved. The last step is wrk unpaced (as fast as nginx goes on this machine). Then every row
   captured through all steps, drops included, is checked against what its request asked for:
   a response paired with another request's is a defect (must be 0).
4. Cost at a fixed rate (what a user pays below saturation): the paced client at 2,000 and 5,000
   req/s, untraced and traced (the agent as above) alternating in rounds: the host's CPU while
   the client ran, traced ÷ untraced, as every task's run time by the scheduler's clock
   (/proc/<pid>/task/<tid>/schedstat; target <= 1.15 at 5,000 req/s) and as /proc/stat's busy
   time (all CPUs; sampled at the timer tick on this kernel, so a paced workload's short runs
   are missed or over-counted: printed, not judged; a round where the host was >= 90 % busy is
   left out of it), the client's p50 and p99
   latency (from each request's due time, from its own log) traced ÷ untraced (target p99 <=
   1.2), and the agent's CPU per 10,000 transactions
   (target <= 0.1 s); beside the host's CPU, nginx's + the client's + the agent's own CPU
   (/proc/<pid>/stat, getrusage), the same ratio without other processes' noise; medians over
   the rounds with their spread, beside the saturated wrk ratio. With ``--profile``, also the
   agent's CPU per 10,000 transactions by part (:class:`CpuSplit`: the ring walk, the events
   freed, the tracker, rows to Arrow, the table store, polling, the loop, the GC, the rest).
   With ``--baseline TREE``, that checkout's agent is a third condition in every round, rotating,
   its ratios over the same round's untraced run printed beside.
4b. Where the traced CPU goes, at the same fixed rates: untraced, the kernel side only (its programs attached, records
   skipped unread: what tracing costs without the agent) and traced alternating, with BPF
   run-time counting on (BPF_ENABLE_STATS), a table of the medians and of each one's difference
   per request: the host's busy CPU, nginx's, the client's and the agent's user and system CPU,
   the BPF programs' own run time (run_time_ns of each program, in the syscalls of whichever
   process made them: the raw sys_enter/sys_exit programs run for every syscall of the host),
   context switches (the host's and each process's), irq_work interrupts (how a ring buffer
   wakes its reader), rescheduling IPIs, and page faults. ``--baseline TREE`` adds the agent of
   another pxq checkout (main) as a third condition, rotating with the two others.
5. Kernel cost per call: a TCP ping-pong inside one process, its own CPU per socket call
   (the BPF programs run in its calls' context) untraced, with the probes only and with the
   kernel side only, in rotating order (with ``--baseline TREE``, that checkout's kernel side
   too); the differences are what the hooks and the programs cost, and each program's run time
   per call (and per run of it) says where the programs' part goes. ``--calls-shape`` picks the
   calls: write/read (default), send/recv (nginx's reads are recv), writev of 2 iovecs and recv
   (nginx's responses: headers, then body), or that and a recv finding nothing after each message
   (writev-again: nginx's read on a keep-alive connection); ``--calls-size`` the bytes per call.

The machine is shared and small (the figures it depends on are printed with the load average):
only ratios measured side by side are compared with targets.

    .venv/bin/python bench/bench_socket_tracer.py [--quick] [--only fixed|decompose|calls|...]
        [--baseline ../main] [--strict] [--profile] [--calls-shape write|send|writev|...] [--calls-size N]

Needs root, bcc, nginx, wrk and gcc. Prints the figures; with --strict, exits 1 when a target is
missed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import mmap
import os
import re
import resource
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

TARGET_THROUGHPUT = 0.95
TARGET_COMPLETE = 0.999
TARGET_CPU_PER_10K = 0.1
TARGET_HOST_CPU = 1.15  # host CPU traced / untraced at 5,000 req/s
TARGET_P99 = 1.2  # client p99 latency traced / untraced at a fixed rate
TARGET_DROP_ONSET = 150_000  # events/s the agent takes before the first drop
FIXED_RATES = (2_000, 5_000)
HOST_SATURATED = 0.9  # share of all CPUs busy above which a window's host CPU ratio means nothing
TARGET_RSS_MB = 250
AGENT_START_TIMEOUT = 120.0
PROFILE = False  # --profile: the agent processes measure their CPU by part (CpuSplit)

# Served by pxq.testing.workload's nginx under /static/ (GET and HEAD), in request order i % 3.
FILES = ("hello.txt", "index.html", "big.json")

CLIENT_C = r"""
/* Paced keep-alive HTTP/1.1 client: request i is due at start + i/rate and goes out on a free
 * connection of the pool (one request in flight per connection). Request i: HEAD when
 * i % 10 == 9, else GET, of /static/FILES[i % 3]?i=<i>. Logs "i method path status body_bytes
 * latency_us" per response (LOG "-": no log; the latency counts from the time the request was
 * due, not sent, so a client held up by a busy machine shows it, as wrk2 does) and prints one
 * summary line.
 *
 * The free list holds each idle connection exactly once: a connection is pushed when its
 * response is complete or its send failed, never when the server closes it while idle (it is
 * on the list already; pushing it again would overrun the list and hand one socket to two
 * requests). A response saying "Connection: close" gets its connection replaced before reuse. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static const char *FILES[] = {"hello.txt", "index.html", "big.json"};
#define BUF 65536
struct conn {
    int fd; long req; int head; int close_after; double due;
    char buf[BUF]; size_t len; long hdr; long clen; int status;
};
static struct sockaddr_in addr;
static int ep;
static struct conn *conns;
static long reconnects;
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }

static int dial(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) { perror("connect"); exit(2); }
    fcntl(fd, F_SETFL, O_NONBLOCK);
    return fd;
}

static void attach(int c) {
    conns[c].fd = dial();
    struct epoll_event e = {.events = EPOLLIN, .data.u32 = c};
    epoll_ctl(ep, EPOLL_CTL_ADD, conns[c].fd, &e);
}

/* A fresh socket for connection c; the caller decides whether c goes onto the free list. */
static void redial(int c) {
    epoll_ctl(ep, EPOLL_CTL_DEL, conns[c].fd, NULL);
    close(conns[c].fd);
    attach(c);
    conns[c].req = -1;
    reconnects++;
}

int main(int argc, char **argv) {
    if (argc != 7) { fprintf(stderr, "usage: %s HOST PORT RATE COUNT CONNS LOG|-\n", argv[0]); return 2; }
    double rate = atof(argv[3]);
    long count = atol(argv[4]);
    int nconn = atoi(argv[5]);
    FILE *log = strcmp(argv[6], "-") ? fopen(argv[6], "w") : NULL;
    addr.sin_family = AF_INET;
    addr.sin_port = htons(atoi(argv[2]));
    inet_pton(AF_INET, argv[1], &addr.sin_addr);
    char host[64];
    snprintf(host, sizeof host, "%s:%s", argv[1], argv[2]);
    ep = epoll_create1(0);
    conns = calloc(nconn, sizeof *conns);
    int *free_ = malloc(nconn * sizeof *free_), nfree = 0;
    for (int c = 0; c < nconn; c++) {
        attach(c);
        conns[c].req = -1;
        free_[nfree++] = c;
    }
    long next = 0, done = 0, errors = 0;
    double max_late = 0, t0 = now(), deadline = t0 + count / rate + 30;
    char req[512];
    struct epoll_event evs[256];
    while (done + errors < count && now() < deadline) {
        double t = now();
        while (next < count && nfree > 0 && t0 + next / rate <= t) {
            int c = free_[--nfree];
            struct conn *k = &conns[c];
            int head = next % 10 == 9;
            int n = snprintf(req, sizeof req,
                             "%s /static/%s?i=%ld HTTP/1.1\r\nHost: %s\r\nUser-Agent: pxq-bench\r\n\r\n",
                             head ? "HEAD" : "GET", FILES[next % 3], next, host);
            double late = t - (t0 + next / rate);
            if (late > max_late) max_late = late;
            k->due = t0 + next / rate;
            k->req = next++; k->head = head; k->len = 0; k->hdr = -1; k->clen = 0; k->status = 0; k->close_after = 0;
            if (send(k->fd, req, n, MSG_NOSIGNAL) != n) { errors++; redial(c); free_[nfree++] = c; }
        }
        int timeout = 200;
        if (next < count && nfree > 0) {
            double wait = t0 + next / rate - now();
            timeout = wait <= 0 ? 0 : (int)(wait * 1000) + 1;
            if (timeout > 200) timeout = 200;
        }
        int n = epoll_wait(ep, evs, 256, timeout);
        for (int i = 0; i < n; i++) {
            int c = evs[i].data.u32;
            struct conn *k = &conns[c];
            for (;;) {
                ssize_t r = read(k->fd, k->buf + k->len, BUF - 1 - k->len);
                if (r < 0 && (errno == EAGAIN || errno == EINTR)) break;
                if (r <= 0 || k->req < 0) {  /* closed by the server, or bytes nobody asked for */
                    int busy = k->req >= 0;  /* idle: it is on the free list already */
                    if (busy) errors++;
                    redial(c);
                    if (busy) free_[nfree++] = c;
                    break;
                }
                k->len += r;
                k->buf[k->len] = 0;
                if (k->hdr < 0) {
                    char *end = strstr(k->buf, "\r\n\r\n");
                    if (!end) continue;
                    k->hdr = end + 4 - k->buf;
                    k->status = atoi(k->buf + 9);
                    char *cl = strcasestr(k->buf, "\r\nContent-Length:");
                    k->clen = cl && cl < end ? atol(cl + 17) : 0;
                    char *cc = strcasestr(k->buf, "\r\nConnection: close");
                    k->close_after = cc && cc < end;
                }
                long body = k->head ? 0 : k->clen;
                if ((long)k->len >= k->hdr + body) {
                    if (log) fprintf(log, "%ld %s /static/%s?i=%ld %d %ld %.0f\n", k->req, k->head ? "HEAD" : "GET",
                                     FILES[k->req % 3], k->req, k->status, (long)k->len - k->hdr,
                                     (now() - k->due) * 1e6);
                    done++;
                    if (k->close_after) redial(c);
                    k->req = -1;
                    free_[nfree++] = c;
                    break;
                }
            }
        }
    }
    double elapsed = now() - t0;
    if (log) fclose(log);
    printf("sent %ld done %ld errors %ld reconnects %ld elapsed %.4f max_late_ms %.2f\n",
           next, done, errors, reconnects, elapsed, max_late * 1000);
    for (int c = 0; c < nconn; c++) close(conns[c].fd);
    close(ep);
    free(conns);
    free(free_);
    return 0;
}
"""


PINGPONG_C = r"""
/* TCP ping-pong on loopback inside one process: per round trip write, read, write, read of SIZE
 * bytes (4 socket calls). Waits for a line on stdin, runs N round trips, prints the process's own
 * CPU-seconds (user, system) and the wall time: the BPF programs run in its calls' context.
 * SIZE 0: 4 getppid() calls per round trip instead (the cost of hooks on a call that is no
 * socket's: every process of the host pays it). SIZE < 0: -SIZE bytes with send() and recv()
 * (the sendto and recvfrom syscalls, as nginx's reads) instead of write() and read(). A third
 * argument "writev": SIZE bytes sent with writev() of 2 iovecs (a 256-byte head, or SIZE / 2 when
 * smaller, and the rest: nginx's responses, headers then body) and received with recv();
 * "writev-again": the same, and after each message a recv(MSG_DONTWAIT) that finds nothing
 * (EAGAIN), as nginx's read on a keep-alive connection after each response (6 calls). */
#include <sys/uio.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
int main(int argc, char **argv) {
    if (argc != 3 && argc != 4) {
        fprintf(stderr, "usage: %s ROUND_TRIPS SIZE [writev|writev-again]\n", argv[0]);
        return 2;
    }
    long n = atol(argv[1]);
    int size = atoi(argv[2]), use_recv = size < 0, use_writev = argc == 4;
    int read_again = argc == 4 && strcmp(argv[3], "writev-again") == 0;
    if (use_recv) size = -size;
    if (use_writev) use_recv = 1;
    if (size > 65536) return 2;
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET}; a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(l, (struct sockaddr *)&a, sizeof a); listen(l, 1);
    socklen_t len = sizeof a; getsockname(l, (struct sockaddr *)&a, &len);
    int c = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(c, (struct sockaddr *)&a, sizeof a)) { perror("connect"); return 1; }
    int s = accept(l, NULL, NULL), one = 1;
    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    char *buf = calloc(1, size ? size : 1), line[16];
    for (int i = 0; i < size; i++) buf[i] = 'a' + i % 26;
    printf("READY\n"); fflush(stdout);
    if (!fgets(line, sizeof line, stdin)) return 1;
    struct rusage r0, r1; struct timespec t0, t1;
    getrusage(RUSAGE_SELF, &r0); clock_gettime(CLOCK_MONOTONIC, &t0);
    for (long i = 0; i < n && size == 0; i++)
        for (int k = 0; k < 4; k++) syscall(SYS_getppid);
    int head = size < 512 ? size / 2 : 256;
    struct iovec iov[2] = {{buf, head}, {buf + head, size - head}};
    for (long i = 0; i < n && size > 0 && use_writev; i++) {
        if (writev(c, iov, 2) != size) return 2;
        for (int got = 0; got < size;) { int k = recv(s, buf, size - got, 0); if (k <= 0) return 3; got += k; }
        if (read_again && recv(s, buf, size, MSG_DONTWAIT) != -1) return 4;
        if (writev(s, iov, 2) != size) return 2;
        for (int got = 0; got < size;) { int k = recv(c, buf, size - got, 0); if (k <= 0) return 3; got += k; }
        if (read_again && recv(c, buf, size, MSG_DONTWAIT) != -1) return 4;
    }
    for (long i = 0; i < n && size > 0 && use_recv && !use_writev; i++) {
        if (send(c, buf, size, 0) != size) return 2;
        for (int got = 0; got < size;) { int k = recv(s, buf, size - got, 0); if (k <= 0) return 3; got += k; }
        if (send(s, buf, size, 0) != size) return 2;
        for (int got = 0; got < size;) { int k = recv(c, buf, size - got, 0); if (k <= 0) return 3; got += k; }
    }
    for (long i = 0; i < n && size > 0 && !use_recv; i++) {
        if (write(c, buf, size) != size) return 2;
        for (int got = 0; got < size;) { int k = read(s, buf, size - got); if (k <= 0) return 3; got += k; }
        if (write(s, buf, size) != size) return 2;
        for (int got = 0; got < size;) { int k = read(c, buf, size - got); if (k <= 0) return 3; got += k; }
    }
    getrusage(RUSAGE_SELF, &r1); clock_gettime(CLOCK_MONOTONIC, &t1);
    double u = (r1.ru_utime.tv_sec - r0.ru_utime.tv_sec) + (r1.ru_utime.tv_usec - r0.ru_utime.tv_usec) * 1e-6;
    double sy = (r1.ru_stime.tv_sec - r0.ru_stime.tv_sec) + (r1.ru_stime.tv_usec - r0.ru_stime.tv_usec) * 1e-6;
    printf("%.6f %.6f %.6f\n", u, sy, (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9);
    return 0;
}
"""


# -- the agent process ---------------------------------------------------------------------------
def _proc_status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0


def _cpu_s() -> tuple[float, float]:
    """(user, system) CPU seconds of this process, all threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


def _fdinfo(fd: int) -> dict[str, str]:
    text = Path(f"/proc/self/fdinfo/{fd}").read_text()
    return {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in text.splitlines() if ":" in line)}


_LOADED_PROGRAMS: list[tuple[str, int]] = []  # (function name, fd): see _record_bpf_programs


def _record_bpf_programs() -> None:
    """Note every BPF program this process loads through bcc from now on (bench-only: a wrapper
    around ``BPF.load_func``, which bcc's autoloaded TRACEPOINT_PROBEs go through too)."""
    try:
        from bcc import BPF
    except ImportError:
        return
    original = BPF.load_func

    def load_func(self, func_name, prog_type, *args, **kwargs):
        fn = original(self, func_name, prog_type, *args, **kwargs)
        _LOADED_PROGRAMS.append((fn.name.decode() if isinstance(fn.name, bytes) else str(fn.name), fn.fd))
        return fn

    BPF.load_func = load_func


def _bpf_run_times(programs: list[tuple[str, int]]) -> dict[str, list[int]]:
    """name -> [run_time_ns, run_cnt] (kernel.bpf_stats on: see :func:`bpf_stats_on`)."""
    out = {}
    for name, fd in programs:
        with contextlib.suppress(OSError):
            info = _fdinfo(fd)
            out[name] = [int(info.get("run_time_ns", 0)), int(info.get("run_cnt", 0))]
    return out


def _rusage_counts(who: int) -> dict[str, float]:
    usage = resource.getrusage(who)
    return {"user": usage.ru_utime, "sys": usage.ru_stime, "minflt": usage.ru_minflt,
            "majflt": usage.ru_majflt, "csw": usage.ru_nvcsw + usage.ru_nivcsw}  # fmt: skip


def kernel_only_child(pids: list[int]) -> int:
    """The socket tracer's kernel side alone: its program attached for ``pids``, and its ring buffer
    emptied every 50 ms without reading a record (the consumer position set to the producer's,
    through the map's memory mapping). What tracing costs the traced processes, without the
    agent's own CPU. Same protocol as :func:`agent_child`, without rows."""
    from pxq.agent.socket_tracer import SocketTracer

    stop, snapshots = [], []
    signal.signal(signal.SIGINT, lambda *_: stop.append(True))
    signal.signal(signal.SIGUSR1, lambda *_: snapshots.append(True))
    tracer = SocketTracer(pids=pids).start()
    programs = [(name.decode(), fn.fd) for name, fn in tracer._bpf.funcs.items()]
    ring_fd = tracer._tables["events"].map_fd  # bench-only: the ring buffer map, skipped unread
    consumer_page = mmap.mmap(ring_fd, mmap.PAGESIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    producer_page = mmap.mmap(ring_fd, mmap.PAGESIZE, mmap.MAP_SHARED, mmap.PROT_READ, offset=mmap.PAGESIZE)
    consumer, producer = memoryview(consumer_page).cast("Q"), memoryview(producer_page).cast("Q")
    base = sum(_cpu_s())
    print(
        json.dumps({"kind": "ready", "rss": _proc_status("VmRSS"), "startup_peak": _proc_status("VmHWM")}), flush=True
    )
    skipped, interval = 0, 0.05
    ring_bytes = tracer.options.ring_pages * mmap.PAGESIZE
    while not stop:
        time.sleep(interval)
        prod = producer[0]
        pending = prod - consumer[0]
        skipped += pending
        consumer[0] = prod  # one 8-byte store
        if pending > ring_bytes // 4:  # big calls at full speed (phase 5's 1.5 KB writevs): skip sooner
            interval = max(0.001, interval / 8)
        if snapshots:  # the same snapshot line as the agent's (decompose's counters)
            snapshots.clear()
            print(json.dumps({"kind": "snapshot", "rusage": _rusage_counts(resource.RUSAGE_SELF),
                              "bpf": _bpf_run_times(programs)}), flush=True)  # fmt: skip
    drops = tracer.kernel_drops()
    run_times = _bpf_run_times(programs)
    consumer.release()
    producer.release()
    consumer_page.close()
    producer_page.close()
    tracer.stop()
    print(json.dumps({"kind": "final", "cpu": sum(_cpu_s()) - base, "bytes": skipped, "rows": 0, "events": 0,
                      "drops": drops, "bpf": run_times}), flush=True)  # fmt: skip
    return 0


# Hook sets that phase 5b ("hooks") attaches with empty programs. "raw syscalls" is what
# bpf/socket_trace.c attached up to 2026-12-07 (raw sys_enter/sys_exit: a program on every syscall
# of the host); "sock data" what it attaches since (a call's data at the sock tracepoints, its
# fd and buffers from the task's user registers; opens, closes, UDP receives' peers, mmsg and
# splice at their own syscalls: tracepoints, which run only for their calls but set the syscall
# slow path on every task); the others isolate parts of that cost.
_SOCK_AND_SCHED = (
    "TRACEPOINT_PROBE(sock, sock_send_length)",
    "TRACEPOINT_PROBE(sock, sock_recv_length)",
    "TRACEPOINT_PROBE(sock, inet_sock_set_state)",
    "TRACEPOINT_PROBE(task, task_newtask)",
    "TRACEPOINT_PROBE(sched, sched_process_exec)",
    "TRACEPOINT_PROBE(sched, sched_process_exit)",
    "TRACEPOINT_PROBE(sched, sched_process_fork)",
)
_SYSCALL_TPS = tuple(
    f"TRACEPOINT_PROBE(syscalls, {name})"
    for name in (
        "sys_enter_close",
        "sys_exit_connect",
        "sys_exit_accept",
        "sys_exit_accept4",
        "sys_exit_splice",
        "sys_exit_recvfrom",
        "sys_exit_recvmsg",
        "sys_exit_recvmmsg",
        "sys_exit_sendmmsg",
    )  # fmt: skip
)
HOOK_SETS: dict[str, tuple[str, ...]] = {
    "raw syscalls": ("RAW_TRACEPOINT_PROBE(sys_enter)", "RAW_TRACEPOINT_PROBE(sys_exit)") + _SOCK_AND_SCHED,
    "sock data": _SOCK_AND_SCHED + _SYSCALL_TPS,
    "sock only": _SOCK_AND_SCHED,
    "sys_enter_close alone": ("TRACEPOINT_PROBE(syscalls, sys_enter_close)",),
}


def probes_only_child(probe_set: str | None = None) -> int:
    """The socket tracer's probes with empty programs: every raw tracepoint and tracepoint that
    ``bpf/socket_trace.c`` attaches to (or those of ``HOOK_SETS[probe_set]``), each running
    ``return 0``. What the kernel's hooks cost before the program does any work (the floor any
    in-kernel change can reach). Same protocol as :func:`agent_child`, without rows."""
    from pxq.agent.bpf_program import BpfProgram, bpf_source, load

    stop = []
    signal.signal(signal.SIGINT, lambda *_: stop.append(True))
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    probes = (
        list(HOOK_SETS[probe_set])
        if probe_set
        else re.findall(r"^((?:RAW_)?TRACEPOINT_PROBE\([^)]*\))", bpf_source("socket_trace.c"), re.M)
    )
    bpf = load(BpfProgram("socket_trace.c probes, empty", "\n".join(f"{p} {{ return 0; }}" for p in probes), ()))
    base = sum(_cpu_s())
    print(json.dumps({"kind": "ready", "rss": _proc_status("VmRSS"), "startup_peak": _proc_status("VmHWM"),
                      "probes": len(probes)}), flush=True)  # fmt: skip
    while not stop:
        time.sleep(0.05)
    bpf.cleanup()
    print(json.dumps({"kind": "final", "cpu": sum(_cpu_s()) - base, "bytes": 0, "rows": 0, "events": 0, "drops": {}}),
          flush=True)  # fmt: skip
    return 0


# -- where the agent's CPU goes (--profile) ------------------------------------------------------
# (part, module, attribute path) of the agent's code whose CPU time --profile measures: each
# call's thread CPU time, less that of the parts called inside it (so each part is exclusive).
PROFILED_PARTS = (
    ("ring walk", "pxq.agent.socket_tracer", "RingReader.read"),
    ("ring wait", "pxq.agent.socket_tracer", "RingReader.wait"),
    # the ring walk fused with the HTTP/1 steady state (SocketTracer.fused_walk): both in C
    ("ring walk + HTTP/1 steady state", "pxq.agent.conn_tracker", "ConnTracker.handle_records"),
    ("tracker", "pxq.agent.conn_tracker", "ConnTracker.take_event"),
    ("tracker", "pxq.agent.conn_tracker", "ConnTracker.handle_batch"),
    ("tracker", "pxq.agent.conn_tracker", "ConnTracker.end_batch"),
    ("tracker", "pxq.agent.conn_tracker", "ConnTracker.report_conn_stats"),
    ("rows to Arrow", "pxq.agent.conn_tracker", "ConnTracker.take_tables"),
    ("table store", "pxq.agent.table_store", "TableStore.append"),
    ("process identities", "pxq.agent.loop", "_remember_processes"),
    ("drop counters", "pxq.agent.socket_tracer_collector", "SocketTracerCollector.drops"),
    ("batch hand-over", "pxq.agent.socket_tracer", "SocketTracer._take"),
    ("poll (sleeps, ring checks)", "pxq.agent.socket_tracer", "SocketTracer.poll"),
    ("progress, pid check", "pxq.agent.loop", "AgentLoop.progress"),
    ("progress, pid check", "pxq.agent.embedded", "PidWatch.check"),
    ("loop (rest of a step)", "pxq.agent.loop", "AgentLoop.step"),
)


class CpuSplit:
    """The agent child's CPU time by part (:data:`PROFILED_PARTS`, and the cyclic garbage
    collector's runs, through ``gc.callbacks``), cumulative, in seconds. The wrappers cost two
    clock reads per call of a part: a few dozen calls per second."""

    def __init__(self) -> None:
        import gc
        import importlib

        self.seconds: dict[str, float] = {}
        self._stack: list[float] = []  # per call in progress: CPU time of the parts inside it
        self._wrapped: list[tuple[object, str, object]] = []  # (owner, name, original), for close()
        for part, module, path in PROFILED_PARTS:
            owner = importlib.import_module(module)
            *outer, name = path.split(".")
            for attr in outer:
                owner = getattr(owner, attr)
            if not hasattr(owner, name):
                continue  # a part of another tree's agent (--baseline) only
            original = owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)
            self._wrapped.append((owner, name, original))
            setattr(owner, name, self._timed(part, getattr(owner, name)))
        self._gc_start = 0.0
        gc.callbacks.append(self._on_gc)

    def close(self) -> None:
        """Put the parts' own functions back (in the agent child, the process ends instead)."""
        import gc

        for owner, name, original in reversed(self._wrapped):
            setattr(owner, name, original)
        self._wrapped.clear()
        gc.callbacks.remove(self._on_gc)

    def _timed(self, part: str, function):
        stack, seconds, clock = self._stack, self.seconds, time.thread_time

        def timed(*args, **kwargs):
            start = clock()
            stack.append(0.0)
            try:
                return function(*args, **kwargs)
            finally:
                took = clock() - start
                inner = stack.pop()
                seconds[part] = seconds.get(part, 0.0) + took - inner
                if stack:
                    stack[-1] += took

        timed.__wrapped__ = function
        return timed

    def _on_gc(self, phase: str, _info: dict) -> None:
        if phase == "start":
            self._gc_start = time.thread_time()
        else:
            took = time.thread_time() - self._gc_start
            self.seconds["garbage collector"] = self.seconds.get("garbage collector", 0.0) + took
            if self._stack:
                self._stack[-1] += took


def agent_child(pids: list[int], out: str | None, profile: bool = False) -> int:
    """The embedded agent tracing ``pids``: prints a JSON line when it is ready (start-up done),
    one on SIGUSR1 (a snapshot), and a final one after SIGINT ended it (the rows go to ``out``).
    ``profile``: each line also has the agent's CPU by part so far (:class:`CpuSplit`)."""
    from pxq.agent.embedded import EmbeddedAgent
    from pxq.agent.loop import Progress
    from pxq.plan.manifest import CollectorRequest, ProbeManifest, TableRequest

    request = CollectorRequest("socket_tracer", ("http_events",), tuple(pids), ("http",))
    table = TableRequest("http_events", "socket_tracer", (), None, None, tuple(pids))
    manifest = ProbeManifest(time.time_ns(), (table,), (request,))
    state = {"base_cpu": (0.0, 0.0), "ready": False, "snapshot": False, "stop": False, "last": None, "startup_peak": 0,
             "programs": []}  # fmt: skip

    def on_usr1(*_):
        state["snapshot"] = True

    def on_int(*_):  # ends the window from the agent loop's own code, where Ctrl-C is handled
        state["stop"] = True

    def report(kind: str, p: Progress) -> None:
        print(json.dumps({
            "kind": kind, "t": time.monotonic(), "events": p.events, "rows": p.rows.get("http_events", 0),
            "drops": p.drop_counts.get("http_events", {}), "cpu": sum(_cpu_s()) - sum(state["base_cpu"]),
            "sys": _cpu_s()[1] - state["base_cpu"][1],
            "rss": _proc_status("VmRSS"), "hwm": _proc_status("VmHWM"), "startup_peak": state["startup_peak"],
            "rusage": _rusage_counts(resource.RUSAGE_SELF), "bpf": _bpf_run_times(state["programs"]),
            "split": dict(split.seconds) if split else None,
        }), flush=True)  # fmt: skip

    def on_progress(p: Progress) -> None:
        state["last"] = p
        if not state["ready"]:
            state["ready"] = True
            state["startup_peak"] = _proc_status("VmHWM")  # start-up: imports, BPF compilation, attach
            with contextlib.suppress(OSError):  # reset VmHWM: the peak from here on
                Path("/proc/self/clear_refs").write_text("5")
            state["programs"] = list(_LOADED_PROGRAMS)
            state["base_cpu"] = _cpu_s()
            report("ready", p)
        if state["snapshot"]:
            state["snapshot"] = False
            report("snapshot", p)
        if state["stop"]:
            state["stop"] = False
            raise KeyboardInterrupt

    signal.signal(signal.SIGUSR1, on_usr1)
    signal.signal(signal.SIGINT, on_int)
    _record_bpf_programs()
    split = CpuSplit() if profile else None
    store = EmbeddedAgent(manifest).run(3600.0, on_progress=on_progress)
    report("final", state["last"])
    if out:
        import pyarrow.parquet as pq

        pq.write_table(store.table("http_events"), out)
    return 0


@dataclass
class Agent:
    """The agent process, from the bench's side."""

    proc: subprocess.Popen
    ready: dict
    out: str | None
    lines: list[dict] = field(default_factory=list)

    @classmethod
    def start(
        cls, pids: list[int], out: str | None = None, mode: str = "agent", tree: str | None = None,
        probe_set: str | None = None,
    ) -> Agent:  # fmt: skip
        """``mode``: "agent" (the embedded agent), "kernel-only" or "probes-only"; ``tree``: a pxq
        checkout whose package (and bpf/ programs) the agent runs, instead of this one's;
        ``probe_set``: probes-only with the hooks of ``HOOK_SETS[probe_set]``. With :data:`PROFILE`
        set (``--profile``) the agent measures its CPU by part (:class:`CpuSplit`)."""
        cmd = [sys.executable, __file__, f"--{mode}-child", ",".join(map(str, pids))] + (["--out", out] if out else [])
        cmd += ["--probe-set", probe_set] if probe_set else []
        cmd += ["--profile"] if PROFILE and mode == "agent" else []
        env = {**os.environ, "PYTHONPATH": tree} if tree else None
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True, env=env)
        agent = cls(proc, {}, out)
        try:
            agent.ready = agent._line(AGENT_START_TIMEOUT)
        except BaseException:
            agent.kill()
            raise
        return agent

    def _line(self, timeout: float) -> dict:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            raise RuntimeError(f"the agent process said nothing for {timeout:g}s (exit {self.proc.poll()})")
        return json.loads(line)

    def snapshot(self) -> dict:
        self.proc.send_signal(signal.SIGUSR1)
        return self._line(30.0)

    def finish(self) -> dict:
        """End the capture (SIGINT, as Ctrl-C); the final counters."""
        self.proc.send_signal(signal.SIGINT)
        final = self._line(120.0)
        self.proc.wait(timeout=60)
        self.proc.stdout.close()
        return final

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc.stdout.close()


@contextlib.contextmanager
def agent(
    pids: list[int], out: str | None = None, mode: str = "agent", tree: str | None = None, probe_set: str | None = None
):
    a = Agent.start(pids, out, mode, tree, probe_set)
    try:
        yield a
    finally:
        if a.proc.poll() is None:
            a.kill()


# -- load ----------------------------------------------------------------------------------------
def build_client(directory: str, cflags: tuple[str, ...] = ("-O2",)) -> Path:
    """Compile the paced client into ``directory`` (``cflags``: e.g. ``-fsanitize=address -g``)."""
    source = Path(directory) / "paced.c"
    source.write_text(CLIENT_C)
    binary = Path(directory) / "paced"
    subprocess.run(["gcc", *cflags, "-Wall", "-Werror", "-o", str(binary), str(source)], check=True)
    return binary


@dataclass
class ClientRun:
    sent: int
    done: int
    errors: int
    elapsed: float
    max_late_ms: float
    reconnects: int = 0

    @property
    def rate(self) -> float:
        return self.done / self.elapsed if self.elapsed else 0.0


def paced(client: Path, port: int, rate: float, count: int, conns: int, log: str = "-") -> ClientRun:
    out = subprocess.run(
        [str(client), "127.0.0.1", str(port), str(rate), str(count), str(conns), log],
        capture_output=True,
        text=True,
        timeout=count / rate + 60,
        check=True,
    ).stdout
    words = out.split()
    fields = dict(zip(words[::2], words[1::2]))
    return ClientRun(
        int(fields["sent"]),
        int(fields["done"]),
        int(fields["errors"]),
        float(fields["elapsed"]),
        float(fields["max_late_ms"]),
        int(fields["reconnects"]),
    )


def wrk(port: int, seconds: float, threads: int = 2, conns: int = 16) -> tuple[float, int]:
    """(requests per second, requests) of one wrk run on the small static file."""
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{conns}", f"-d{seconds:g}s", f"http://127.0.0.1:{port}/static/hello.txt"],
                         capture_output=True, text=True, timeout=seconds + 60, check=True).stdout  # fmt: skip
    rps = float(re.search(r"Requests/sec:\s*([\d.]+)", out).group(1))
    n = int(re.search(r"(\d+) requests in", out).group(1))
    if "Non-2xx" in out or "Socket errors" in out:
        print(
            "  wrk: " + " | ".join(line.strip() for line in out.splitlines() if "errors" in line or "Non-2xx" in line)
        )
    return rps, n


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def nginx_pids(nginx, expected_workers: int = 2) -> list[int]:
    """nginx's master and its workers (pxq.testing.workload starts two). The master listens before
    it forks them: a worker missing here would serve its share of the requests untraced."""
    deadline = time.monotonic() + 10
    workers = nginx.worker_pids()
    while len(workers) < expected_workers and time.monotonic() < deadline:
        time.sleep(0.05)
        workers = nginx.worker_pids()
    if len(workers) < expected_workers:
        raise RuntimeError(f"nginx has {len(workers)} workers, not {expected_workers}:\n{nginx.error_log()}")
    return [nginx.master_pid, *workers]


# -- 1. throughput -------------------------------------------------------------------------------
def throughput(port: int, pids: list[int], seconds: float, rounds: int) -> dict:
    print(f"\n== 1. nginx keep-alive throughput under wrk -t2 -c16 -d{seconds:g}s, /static/hello.txt ({load()})")
    print("  each round runs wrk untraced, traced by the agent, with the kernel side only (the program")
    print("  attached, its records skipped unread) and with the probes only (the same hooks, empty")
    print("  programs), in rotating order")
    wrk(port, 1.0)  # warm-up: nginx's page cache, connections
    conditions = ("untraced", "traced", "kernel only", "probes only")
    modes = {"traced": "agent", "kernel only": "kernel-only", "probes only": "probes-only"}
    rates: dict[str, list[float]] = {c: [] for c in conditions}
    ratios: dict[str, list[float]] = {c: [] for c in conditions[1:]}
    captured, agent_cpu = [], []
    for i in range(rounds):
        got, notes = {}, []
        shift = i % len(conditions)
        for condition in conditions[shift:] + conditions[:shift]:
            if condition == "untraced":
                got[condition] = wrk(port, seconds)
                continue
            with agent(pids, mode=modes[condition]) as a:
                got[condition] = wrk(port, seconds)
                final = a.finish()
            drops = {k: v for k, v in final["drops"].items() if v}
            if condition == "traced":
                captured.append(final["rows"] / got[condition][1])
                agent_cpu.append(final["cpu"])
                notes.append(
                    f"agent: {final['events']:,} events, {final['rows']:,} transactions ({100 * captured[-1]:.1f} %), "
                    f"{final['cpu']:.2f} CPU-s (until it caught up), drops {drops or 'none'}"
                )
            elif condition == "kernel only":
                notes.append(
                    f"kernel only: {final['bytes'] / seconds / 1e6:.0f} MB/s through the ring, drops {drops or 'none'}"
                )
        for c in conditions:
            rates[c].append(got[c][0])
        for c in conditions[1:]:
            ratios[c].append(got[c][0] / got["untraced"][0])
        print(
            f"  round {i + 1}: untraced {got['untraced'][0]:,.0f} req/s, "
            + ", ".join(f"{c} {got[c][0]:,.0f} ({ratios[c][-1]:.3f})" for c in conditions[1:]),
            flush=True,
        )
        for note in notes:
            print(f"    {note}")
    medians = {c: statistics.median(r) for c, r in ratios.items()}
    print(
        f"  traced/untraced: median {medians['traced']:.3f} of {rounds} rounds (target >= {TARGET_THROUGHPUT}); "
        f"kernel side only: {medians['kernel only']:.3f}; probes only: {medians['probes only']:.3f} ({load()})"
    )
    return {
        "ratio": medians["traced"],
        "kernel_ratio": medians["kernel only"],
        "probes_ratio": medians["probes only"],
        "untraced": statistics.median(rates["untraced"]),
        "traced": statistics.median(rates["traced"]),
        "captured": statistics.median(captured),
        "agent_cpu": statistics.median(agent_cpu),
        "seconds": seconds,
    }


# -- 2. completeness, CPU, RSS -------------------------------------------------------------------
def completeness(client: Path, nginx, pids: list[int], count: int, rate: float, work: str) -> dict:
    print(f"\n== 2. completeness: {count:,} requests at {rate:,.0f} req/s, 8 keep-alive connections ({load()})")
    log, out = f"{work}/client.log", f"{work}/rows.parquet"
    with agent(pids, out) as a:
        before = a.ready
        run = paced(client, nginx.port, rate, count, 8, log)
        time.sleep(0.3)  # the last responses' events into the agent
        final = a.finish()
    import pyarrow.parquet as pq

    rows = pq.read_table(out, columns=["req_method", "req_path", "resp_status", "resp_body_size", "resp_body",
                                       "trace_role", "latency"]).to_pylist()  # fmt: skip
    www = nginx.workdir / "www" / "static"
    bodies = {name: (www / name).read_bytes() for name in FILES}
    sent = {}
    for line in Path(log).read_text().splitlines():
        i, method, path, status, size, _latency_us = line.split()
        sent[path] = (method, int(status), int(size), int(i))
    by_path: dict[str, list[dict]] = {}
    for r in rows:
        if r["trace_role"] == 2:
            by_path.setdefault(r["req_path"], []).append(r)
    correct, wrong = 0, []
    for path, (method, status, size, i) in sent.items():
        got = by_path.get(path, [])
        body = b"" if method == "HEAD" else bodies[FILES[i % 3]]
        ok = (
            len(got) == 1
            and (got[0]["req_method"], got[0]["resp_status"], got[0]["resp_body_size"]) == (method, status, size)
            and got[0]["resp_body"] == body[:1024].decode()
            and size == len(body)
            and got[0]["latency"] > 0
        )
        if ok:
            correct += 1
        elif len(wrong) < 5:
            wrong.append(
                (path, (method, status, size), [(g["req_method"], g["resp_status"], g["resp_body_size"]) for g in got])
            )
    unexpected = sum(len(v) for p, v in by_path.items() if p not in sent)
    share = correct / count
    ok_status = sum(1 for v in sent.values() if v[1] == 200)
    cpu, transactions = final["cpu"], final["rows"]
    cpu_10k = cpu / transactions * 10_000 if transactions else float("inf")
    drops = {k: v for k, v in final["drops"].items() if v}
    print(
        f"  client: {run.done:,} answered ({ok_status:,} with 200) in {run.elapsed:.2f}s = {run.rate:,.0f} req/s, "
        f"{run.errors} errors, worst lateness {run.max_late_ms:.1f} ms"
    )
    print(
        f"  agent: {transactions:,} transactions, {final['events'] - before['events']:,} events, "
        f"drops {drops or 'none'}"
    )
    print(
        f"  captured with correct method, path, status, body size and body prefix: {correct:,}/{count:,} = "
        f"{100 * share:.3f} % (target >= {100 * TARGET_COMPLETE:.1f} %); rows for paths never sent: {unexpected}"
    )
    for path, want, got in wrong:
        print(f"    e.g. {path}: sent {want}, captured {got}")
    print(
        f"  agent CPU: {cpu:.2f} s for {transactions:,} transactions = {cpu_10k:.3f} s per 10,000 "
        f"(target <= {TARGET_CPU_PER_10K}); {100 * cpu / run.elapsed:.0f} % of one CPU while the client ran"
    )
    print(
        f"  agent RSS: peak {final['hwm'] / 1e6:.0f} MB during the capture, {final['rss'] / 1e6:.0f} MB at the end, "
        f"{before['rss'] / 1e6:.0f} MB when started; peak during start-up (BPF compilation) "
        f"{before['startup_peak'] / 1e6:.0f} MB (target <= {TARGET_RSS_MB} MB) ({load()})"
    )
    return {
        "share": share,
        "cpu_10k": cpu_10k,
        "hwm_mb": final["hwm"] / 1e6,
        "startup_mb": before["startup_peak"] / 1e6,
        "transactions": transactions,
        "cpu": cpu,
        "drops": drops,
    }


# -- 3. drop onset -------------------------------------------------------------------------------
def mispaired_rows(rows_file: str, www: Path) -> tuple[int, int, list]:
    """Server rows whose response is not the one their request asks for: request ``i`` of the
    paced client is HEAD (i % 10 == 9) or GET of FILES[i % 3]; wrk GETs hello.txt. Returns
    (rows checked, rows wrong, a few examples)."""
    import pyarrow.parquet as pq

    bodies = {name: (www / name).read_bytes() for name in FILES}
    checked, wrong, examples = 0, 0, []
    for r in pq.read_table(rows_file, columns=["req_method", "req_path", "resp_status", "resp_body_size", "resp_body",
                                               "trace_role"]).to_pylist():  # fmt: skip
        match = re.fullmatch(r"/static/([\w.]+)(?:\?i=(\d+))?", r["req_path"])
        if r["trace_role"] != 2 or not match:
            continue
        i = match.group(2)
        method = "HEAD" if i is not None and int(i) % 10 == 9 else "GET"
        name = FILES[int(i) % 3] if i is not None else "hello.txt"
        body = b"" if method == "HEAD" else bodies[name]
        checked += 1
        got = (r["req_method"], match.group(1), r["resp_status"], r["resp_body_size"], r["resp_body"])
        if got != (method, name, 200, len(body), body[:1024].decode()):
            wrong += 1
            if len(examples) < 3:
                examples.append((r["req_path"], got[:4]))
    return checked, wrong, examples


def drop_onset(
    client: Path, port: int, pids: list[int], rates: list[int], seconds: float, wrk_seconds: float, www: Path, work: str
) -> dict:
    print(
        f"\n== 3. where drops begin: the paced client's rate stepped up ({seconds:g}s per step, 32 connections), "
        f"then wrk unpaced ({load()})"
    )
    print("  req/s offered by the client and achieved; events/s reaching the ring buffer (taken by the agent")
    print("  plus those the kernel could not queue), taken, and transactions/s; the agent's CPU-seconds per")
    print("  second of the step (including catching up after it)")
    print(
        f"  {'offered':>8} {'achieved':>9} {'events/s':>9} {'taken/s':>9} {'tx/s':>8} {'agent CPU':>9}"
        "  drops in this step"
    )
    onset = None
    table = []
    out = f"{work}/overload.parquet"
    with agent(pids, out) as a:
        prev = a.snapshot()
        steps = [(r, None) for r in rates] + [(None, wrk_seconds)]
        for rate, wrk_s in steps:
            t0 = time.monotonic()
            if rate is not None:
                run = paced(client, port, rate, int(rate * seconds), 32)
                achieved, label = run.rate, f"{rate:,}"
            else:
                rps, _ = wrk(port, wrk_s)
                achieved, label = rps, "wrk"
            elapsed = time.monotonic() - t0
            time.sleep(1.2)  # the agent catches up and moves its rows (about every second)
            snap = a.snapshot()
            moved = {k: v - prev["drops"].get(k, 0) for k, v in snap["drops"].items() if v - prev["drops"].get(k, 0)}
            taken = (snap["events"] - prev["events"]) / elapsed
            events = taken + moved.get("ringbuf_full", 0) / elapsed
            txs = (snap["rows"] - prev["rows"]) / elapsed
            cpu = (snap["cpu"] - prev["cpu"]) / elapsed
            prev = snap
            table.append((label, achieved, events, txs, cpu, moved))
            print(
                f"  {label:>8} {achieved:>9,.0f} {events:>9,.0f} {taken:>9,.0f} {txs:>8,.0f} {cpu:>9.2f}  "
                f"{', '.join(f'{k}={v:,}' for k, v in sorted(moved.items())) or '-'}",
                flush=True,
            )
            if moved and onset is None:
                onset = (label, events, moved)
        final = a.finish()
    total = {k: v for k, v in final["drops"].items() if v}
    if onset:
        print(f"  drops begin at offered {onset[0]} (~{onset[1]:,.0f} events/s)")
    else:
        print(f"  no drops up to {table[-1][2]:,.0f} events/s (the fastest step)")
    print(f"  drop counters at the end: {total or 'all zero'} ({load()})")
    checked, wrong, examples = mispaired_rows(out, www)
    print(
        f"  rows captured through all steps, drops included: {checked:,}; with a response that is not their "
        f"request's: {wrong:,}"
    )
    for path, got in examples:
        print(f"    e.g. {path}: captured {got}")
    return {
        "onset": onset,
        "max_events": max(row[2] for row in table),
        "table": table,
        "checked": checked,
        "mispaired": wrong,
    }


# -- 4. cost at a fixed rate ---------------------------------------------------------------------
def host_cpu_jiffies() -> tuple[int, int]:
    """(busy, total) clock ticks of all CPUs since boot, from /proc/stat's ``cpu`` line: every
    process, the kernel and interrupts; busy is all but idle and iowait."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def all_tasks_cpu_ns() -> dict[str, int]:
    """CPU-nanoseconds each task alive now has run, by its /proc/<pid>/task/<tid> path (each
    thread's schedstat, the scheduler's own nanoseconds). /proc/stat's figures are sampled at the
    timer tick on this kernel (TICK_CPU_ACCOUNTING): a paced task that wakes just after a tick and
    sleeps before the next is never seen busy, so short windows of a periodic workload are under-
    or over-counted. See :func:`tasks_cpu_s` for a window's."""
    out = {}
    for stat in Path("/proc").glob("[0-9]*/task/[0-9]*/schedstat"):
        with contextlib.suppress(OSError, ValueError, IndexError):  # the task ended while we looked
            out[str(stat.parent)] = int(stat.read_text().split(None, 1)[0])
    return out


def tasks_cpu_s(before: dict[str, int], after: dict[str, int]) -> float:
    """CPU-seconds the tasks ran between two :func:`all_tasks_cpu_ns` snapshots: what each task
    alive at the end ran since the first (all of it, for a task started since). A task that exits
    inside the window is missed, except children this process waits for (added by the caller);
    summing each snapshot instead took the whole run time of such a task off the window's, and a
    busy task of another user exiting made the figure negative (a ratio of -2.4, "ok" against
    its target)."""
    return sum(ns - before.get(task, 0) for task, ns in after.items()) / 1e9


def quantile(values: list[float], q: float) -> float:
    """The q-quantile by the nearest-rank method (the latency convention wrk and HdrHistogram use)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def process_cpu_s(pids: list[int]) -> float:
    """User + system CPU-seconds of the processes ``pids`` (/proc/<pid>/stat), kernel work done in
    their syscalls (the BPF programs included) among it."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15 of proc(5)
    return total / os.sysconf("SC_CLK_TCK")


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def host_ratio_text(r: dict) -> str:
    if r["host_cpu"] is None:
        return f"not measured: the host was saturated by other processes in every round (>= {HOST_SATURATED:.0%} busy)"
    low, high = r["host_cpu_spread"]
    return f"{r['host_cpu']:.3f} (spread {low:.3f}-{high:.3f}, {r['host_rounds']} unsaturated rounds)"


@dataclass
class FixedRun:
    host_cpu_s: float  # busy CPU-seconds of the whole host while the client ran
    host_share: float  # host_cpu_s / (the window's seconds x CPUs): near 1, the host was saturated
    workload_cpu_s: float  # nginx's, the client's and the agent's CPU-seconds in the same window
    tasks_cpu_s: float  # every task's run time in the same window (scheduler clock; see tasks_cpu_s)
    p50_us: float
    p99_us: float
    achieved: float
    errors: int
    agent_cpu_s: float = 0.0  # the agent's CPU for this run's transactions (catching up included)
    transactions: int = 0
    drops: dict = field(default_factory=dict)
    agent_split: dict = field(default_factory=dict)  # --profile: agent_cpu_s by part (CpuSplit)


def fixed_rate_run(
    client: Path, port: int, pids: list[int], rate: int, seconds: float, log: str, a: Agent | None
) -> FixedRun:
    before_agent = a.snapshot() if a else None
    busy0, total0 = host_cpu_jiffies()
    children0 = children_cpu_s()
    own0 = process_cpu_s(pids) + children0
    tasks0 = all_tasks_cpu_ns()
    run = paced(client, port, rate, int(rate * seconds), 16, log)
    tasks1 = all_tasks_cpu_ns()
    busy1, total1 = host_cpu_jiffies()
    children1 = children_cpu_s()
    own1 = process_cpu_s(pids) + children1
    agent_in_window = a.snapshot()["cpu"] - before_agent["cpu"] if a and before_agent else 0.0
    latencies = [float(line.split()[5]) for line in Path(log).read_text().splitlines()]
    result = FixedRun(
        (busy1 - busy0) / os.sysconf("SC_CLK_TCK"),
        (busy1 - busy0) / max(1, total1 - total0),
        own1 - own0 + agent_in_window,
        tasks_cpu_s(tasks0, tasks1) + children1 - children0,
        quantile(latencies, 0.5),
        quantile(latencies, 0.99),
        run.rate,
        run.errors + run.sent - run.done,
    )
    if a and before_agent:
        time.sleep(1.2)  # the agent catches up and moves its rows (about every second)
        after = a.snapshot()
        result.agent_cpu_s = after["cpu"] - before_agent["cpu"]
        result.transactions = after["rows"] - before_agent["rows"]
        result.drops = {
            k: v - before_agent["drops"].get(k, 0)
            for k, v in after["drops"].items()
            if v - before_agent["drops"].get(k, 0)
        }
        if after.get("split") is not None:
            before = before_agent["split"]
            result.agent_split = {part: s - before.get(part, 0.0) for part, s in after["split"].items()}
            result.agent_split["other (outside the parts)"] = result.agent_cpu_s - sum(result.agent_split.values())
    return result


def fixed_rate(client: Path, port: int, pids: list[int], seconds: float, rounds: int, work: str,
               baseline: str | None = None) -> dict:  # fmt: skip
    """What tracing costs at a rate below saturation, as a user would see it: the host's CPU (all
    processes, /proc/stat) and the client's latency, traced ÷ untraced, the two alternating in
    each round (which goes first alternates too); the agent is started before and ended after
    each traced run, outside the measured window. With ``baseline`` (a pxq checkout), that tree's
    agent runs as a third condition in every round, rotating with the two others, and its ratios
    over the same round's untraced run are printed beside: two trees compared side by side, as
    separate runs an hour apart on a shared machine cannot be."""
    print(
        f"\n== 4. cost at a fixed rate: the paced client at {', '.join(f'{r:,}' for r in FIXED_RATES)} req/s for "
        f"{seconds:g}s, 16 keep-alive connections, untraced and traced alternating, {rounds} rounds ({load()})"
    )
    print("  host CPU: busy CPU-seconds of the whole machine while the client ran; latency: from each request's")
    print("  due time to its response's last byte (the client's log); agent CPU per 10,000 transactions. Beside")
    print("  the host's CPU, the CPU of nginx, the client and the agent alone (/proc/<pid>/stat, getrusage): the")
    print("  same cost without the noise of other processes on a shared machine")
    results = {}
    log = f"{work}/fixed.log"
    for rate in FIXED_RATES:
        paced(client, port, rate, rate // 2, 16)  # warm-up: connections, nginx's caches
        conditions = ["untraced", "traced"] + (["baseline"] if baseline else [])
        runs: dict[str, list[FixedRun]] = {c: [] for c in conditions}
        cpu_ratios, own_ratios, task_ratios, p50_ratios, p99_ratios = [], [], [], [], []
        base_ratios: dict[str, list[float]] = {"tasks": [], "p99": [], "cpu_10k": []}
        for i in range(rounds):
            shift = i % len(conditions)
            got = {}
            for condition in conditions[shift:] + conditions[:shift]:
                if condition == "untraced":
                    got[condition] = fixed_rate_run(client, port, pids, rate, seconds, log, None)
                else:
                    with agent(pids, tree=baseline if condition == "baseline" else None) as a:
                        got[condition] = fixed_rate_run(client, port, pids, rate, seconds, log, a)
                        a.finish()
                runs[condition].append(got[condition])
            u, t = got["untraced"], got["traced"]
            if baseline:
                b = got["baseline"]
                base_ratios["tasks"].append(b.tasks_cpu_s / u.tasks_cpu_s)
                base_ratios["p99"].append(b.p99_us / u.p99_us)
                if b.transactions:
                    base_ratios["cpu_10k"].append(b.agent_cpu_s / b.transactions * 10_000)
                print(f"  {rate:,} req/s round {i + 1} baseline: all tasks {u.tasks_cpu_s:.2f} -> "
                      f"{b.tasks_cpu_s:.2f} s "
                      f"({base_ratios['tasks'][-1]:.3f}); p99 {u.p99_us:.0f} -> {b.p99_us:.0f} us "
                      f"({base_ratios['p99'][-1]:.2f}); agent {b.agent_cpu_s:.2f} CPU-s for {b.transactions:,} "
                      f"transactions; drops {b.drops or 'none'}", flush=True)  # fmt: skip
            # A host kept busy by other processes leaves no idle time for tracing to take: the ratio
            # of a saturated window says nothing, and is left out.
            saturated = max(u.host_share, t.host_share) >= HOST_SATURATED
            if not saturated:
                cpu_ratios.append(t.host_cpu_s / u.host_cpu_s)
            own_ratios.append(t.workload_cpu_s / u.workload_cpu_s)
            task_ratios.append(t.tasks_cpu_s / u.tasks_cpu_s)
            p50_ratios.append(t.p50_us / u.p50_us)
            p99_ratios.append(t.p99_us / u.p99_us)
            per_10k = t.agent_cpu_s / t.transactions * 10_000 if t.transactions else float("inf")
            print(
                f"  {rate:,} req/s round {i + 1}: host CPU {u.host_cpu_s:.2f} -> {t.host_cpu_s:.2f} s "
                f"({t.host_cpu_s / u.host_cpu_s:.3f}{', host saturated: left out' if saturated else ''}), "
                f"nginx+client+agent {u.workload_cpu_s:.2f} -> {t.workload_cpu_s:.2f} s "
                f"({own_ratios[-1]:.3f}), all tasks {u.tasks_cpu_s:.2f} -> {t.tasks_cpu_s:.2f} s "
                f"({task_ratios[-1]:.3f}); p50 {u.p50_us:.0f} -> {t.p50_us:.0f} us ({p50_ratios[-1]:.2f}); "
                f"p99 {u.p99_us:.0f} -> {t.p99_us:.0f} us ({p99_ratios[-1]:.2f}); agent {t.agent_cpu_s:.2f} CPU-s "
                f"for {t.transactions:,} transactions ({per_10k:.3f} s per 10k); achieved {u.achieved:,.0f} / "
                f"{t.achieved:,.0f} req/s; errors {u.errors}/{t.errors}; drops {t.drops or 'none'}",
                flush=True,
            )
        traced = runs["traced"]
        per_10k_all = [r.agent_cpu_s / r.transactions * 10_000 for r in traced if r.transactions]
        if any(r.agent_split for r in traced):
            print_split(rate, [r for r in traced if r.agent_split and r.transactions])
        results[rate] = {
            "host_cpu": statistics.median(cpu_ratios) if cpu_ratios else None,
            "host_cpu_spread": (min(cpu_ratios), max(cpu_ratios)) if cpu_ratios else None,
            "host_rounds": len(cpu_ratios),
            "workload_cpu": statistics.median(own_ratios),
            "workload_cpu_spread": (min(own_ratios), max(own_ratios)),
            "tasks_cpu": statistics.median(task_ratios),
            "tasks_cpu_spread": (min(task_ratios), max(task_ratios)),
            "p50": statistics.median(p50_ratios),
            "p99": statistics.median(p99_ratios),
            "p99_spread": (min(p99_ratios), max(p99_ratios)),
            "p99_us": (
                statistics.median(r.p99_us for r in runs["untraced"]),
                statistics.median(r.p99_us for r in traced),
            ),
            "cpu_10k": statistics.median(per_10k_all) if per_10k_all else float("inf"),
            "untraced_cpu_s": statistics.median(r.host_cpu_s for r in runs["untraced"]),
            "traced_cpu_s": statistics.median(r.host_cpu_s for r in traced),
        }
        r = results[rate]
        print(
            f"  {rate:,} req/s medians: host CPU traced/untraced {host_ratio_text(r)}, nginx+client+agent CPU "
            f"{r['workload_cpu']:.3f} (spread {r['workload_cpu_spread'][0]:.3f}-{r['workload_cpu_spread'][1]:.3f}), "
            f"all tasks' run time {r['tasks_cpu']:.3f} "
            f"(spread {r['tasks_cpu_spread'][0]:.3f}-{r['tasks_cpu_spread'][1]:.3f}), p50 {r['p50']:.2f}, "
            f"p99 {r['p99']:.2f} (spread {r['p99_spread'][0]:.2f}-{r['p99_spread'][1]:.2f}), "
            f"agent CPU {r['cpu_10k']:.3f} s per 10k transactions ({load()})"
        )
        if baseline and base_ratios["tasks"]:
            r["baseline"] = {k: statistics.median(v) for k, v in base_ratios.items() if v}
            r["baseline"]["tasks_cpu_spread"] = (min(base_ratios["tasks"]), max(base_ratios["tasks"]))
            b = r["baseline"]
            print(
                f"  {rate:,} req/s baseline ({baseline}) medians, same rounds: all tasks' run time "
                f"{b['tasks']:.3f} (spread {b['tasks_cpu_spread'][0]:.3f}-{b['tasks_cpu_spread'][1]:.3f}), "
                f"p99 {b['p99']:.2f}, agent CPU {b.get('cpu_10k', float('inf')):.3f} s per 10k transactions"
            )
    return results


def print_split(rate: int, runs: list[FixedRun]) -> None:
    """--profile: the agent's CPU per 10,000 transactions by part, median over ``runs`` (spread)."""
    parts = sorted({part for r in runs for part in r.agent_split},
                   key=lambda part: -statistics.median(r.agent_split.get(part, 0.0) for r in runs))  # fmt: skip
    print(f"  {rate:,} req/s, the agent's CPU by part, ms per 10,000 transactions (median over {len(runs)} rounds,")
    print("  spread; each part's own time, without the parts it calls):")
    for part in parts:
        per_10k = [r.agent_split.get(part, 0.0) / r.transactions * 1e7 for r in runs]
        print(f"    {part:34} {statistics.median(per_10k):7.1f} ({min(per_10k):.1f}-{max(per_10k):.1f})")
    total = [r.agent_cpu_s / r.transactions * 1e7 for r in runs]
    print(f"    {'total (getrusage)':34} {statistics.median(total):7.1f} ({min(total):.1f}-{max(total):.1f})")


# -- 4b. where the traced CPU goes ---------------------------------------------------------------
BPF_ENABLE_STATS, BPF_STATS_RUN_TIME, SYS_BPF = 32, 0, 321  # include/uapi/linux/bpf.h; x86-64 bpf(2)


@contextlib.contextmanager
def bpf_stats_on():
    """BPF programs' run_time_ns/run_cnt counted while the block runs: the BPF_ENABLE_STATS fd
    (counted while any holder keeps one open; unlike writing kernel.bpf_stats_enabled, it cannot
    switch the counting off under another user of it)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    attr = ctypes.create_string_buffer(ctypes.c_uint32(BPF_STATS_RUN_TIME).value.to_bytes(4, "little"), 128)
    fd = libc.syscall(SYS_BPF, BPF_ENABLE_STATS, attr, 128)
    try:
        yield fd >= 0 or Path("/proc/sys/kernel/bpf_stats_enabled").read_text().strip() == "1"
    finally:
        if fd >= 0:
            os.close(fd)


def _interrupts(name: str) -> int:
    """All CPUs' count of the /proc/interrupts line ``name`` (IWI: irq_work, what wakes a ring buffer's
    reader; RES: rescheduling IPIs)."""
    for line in Path("/proc/interrupts").read_text().splitlines():
        words = line.split()
        if words and words[0] == f"{name}:":
            return sum(int(w) for w in words[1:] if w.isdigit())
    return 0


def _host_ctxt() -> int:
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("ctxt "):
            return int(line.split()[1])
    return 0


def _processes_counts(pids: list[int]) -> dict[str, float]:
    """user/sys CPU-s, minor faults and context switches (all threads) of ``pids``."""
    tick = os.sysconf("SC_CLK_TCK")
    out = dict.fromkeys(("user", "sys", "minflt", "majflt", "csw"), 0.0)
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            out["minflt"] += int(fields[7])
            out["majflt"] += int(fields[9])
            out["user"] += int(fields[11]) / tick
            out["sys"] += int(fields[12]) / tick
            for task in Path(f"/proc/{pid}/task").iterdir():
                for line in (task / "status").read_text().splitlines():
                    if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")):
                        out["csw"] += int(line.split()[1])
    return out


def _counters(pids: list[int], a: Agent | None) -> dict[str, float]:
    busy, _total = host_cpu_jiffies()
    out = {"host_cpu": busy / os.sysconf("SC_CLK_TCK"), "host_csw": _host_ctxt(), "irq_work": _interrupts("IWI"),
           "resched_ipi": _interrupts("RES")}  # fmt: skip
    out.update({f"nginx_{k}": v for k, v in _processes_counts(pids).items()})
    out.update({f"client_{k}": v for k, v in _rusage_counts(resource.RUSAGE_CHILDREN).items()})
    if a is not None:
        snap = a.snapshot()
        out.update({f"agent_{k}": v for k, v in snap["rusage"].items()})
        for name, (run_ns, count) in snap.get("bpf", {}).items():
            out[f"bpf_ns:{name}"] = run_ns
            out[f"bpf_cnt:{name}"] = count
    return out


def decompose(client: Path, port: int, pids: list[int], seconds: float, rounds: int, work: str,
              baseline: str | None = None) -> dict:  # fmt: skip
    """Where the traced run's extra CPU goes, at each fixed rate: the BPF programs' own run time
    (run_time_ns, in the traced processes' syscalls), nginx's and the client's CPU besides, the
    agent's CPU, context switches (each process's, the host's), irq_work interrupts (a ring buffer
    wake-up) and page faults; untraced and traced alternating (with ``baseline``, a second traced
    condition runs the agent of that pxq checkout: main against this branch, side by side)."""
    conditions = ["untraced", "kernel only", "traced"] + (["baseline"] if baseline else [])
    print(f"\n== 4b. where the CPU goes: the paced client for {seconds:g}s, {', '.join(conditions)} rotating, "
          f"{rounds} rounds, BPF run time counted (BPF_ENABLE_STATS){f'; baseline = {baseline}' if baseline else ''} "
          f"({load()})")  # fmt: skip
    out = {}
    log = f"{work}/decompose.log"
    with bpf_stats_on() as counting:
        if not counting:
            print("  (BPF run time not counted: BPF_ENABLE_STATS refused)")
        for rate in FIXED_RATES:
            paced(client, port, rate, rate // 2, 16)  # warm-up
            deltas: dict[str, list[dict[str, float]]] = {c: [] for c in conditions}
            latency: dict[str, list[float]] = {c: [] for c in conditions}
            for i in range(rounds):
                shift = i % len(conditions)
                for condition in conditions[shift:] + conditions[:shift]:
                    with contextlib.ExitStack() as stack:
                        a = None
                        if condition != "untraced":
                            tree = baseline if condition == "baseline" else None
                            mode = "kernel-only" if condition == "kernel only" else "agent"
                            a = stack.enter_context(agent(pids, mode=mode, tree=tree))
                        before = _counters(pids, a)
                        paced(client, port, rate, int(rate * seconds), 16, log)
                        after = _counters(pids, a)
                        if a is not None:
                            a.finish()
                    deltas[condition].append({k: after[k] - before.get(k, 0) for k in after})
                    latencies = [float(line.split()[5]) for line in Path(log).read_text().splitlines()]
                    latency[condition].append(quantile(latencies, 0.99))
            out[rate] = _decomposition_table(rate, int(rate * seconds), deltas, latency)
    return out


def _decomposition_table(rate: int, requests: int, deltas: dict, latency: dict) -> dict:
    """Print medians per condition, and per request over untraced."""
    conditions = list(deltas)

    def med(condition: str, key: str) -> float:
        return statistics.median(d.get(key, 0) for d in deltas[condition])

    def bpf_names(condition: str) -> list[str]:
        return sorted({k.split(":", 1)[1] for d in deltas[condition] for k in d if k.startswith("bpf_ns:")})

    rows = [  # (label, key, unit: CPU-seconds are shown per request in us, counts as they are)
        ("host busy CPU", "host_cpu", 1e6), ("nginx user CPU", "nginx_user", 1e6),
        ("nginx system CPU", "nginx_sys", 1e6), ("client user CPU", "client_user", 1e6),
        ("client system CPU", "client_sys", 1e6), ("agent user CPU", "agent_user", 1e6),
        ("agent system CPU", "agent_sys", 1e6), ("host context switches", "host_csw", 1),
        ("nginx context switches", "nginx_csw", 1), ("client context switches", "client_csw", 1),
        ("agent context switches", "agent_csw", 1), ("irq_work interrupts (IWI)", "irq_work", 1),
        ("rescheduling IPIs (RES)", "resched_ipi", 1), ("nginx minor faults", "nginx_minflt", 1),
        ("client minor faults", "client_minflt", 1), ("agent minor faults", "agent_minflt", 1),
    ]  # fmt: skip
    print(f"  {rate:,} req/s, {requests:,} requests per run; medians; 'per req' = (traced - untraced) / requests,"
          " CPU in us")  # fmt: skip
    header = (
        f"  {'':34}"
        + "".join(f"{c:>14}" for c in conditions)
        + "".join(f"{c + ' per req':>20}" for c in conditions[1:])
    )
    print(header)
    result: dict[str, dict[str, float]] = {}
    for label, key, unit in rows:
        values = {c: med(c, key) for c in conditions}
        per_req = {c: (values[c] - values["untraced"]) / requests * unit for c in conditions[1:]}
        result[key] = {**values, **{f"{c}_per_req": v for c, v in per_req.items()}}
        fmt = "{:>14.3f}" if unit != 1 else "{:>14,.0f}"
        print(f"  {label:34}" + "".join(fmt.format(values[c]) for c in conditions)
              + "".join(f"{per_req[c]:>20.3f}" for c in conditions[1:]))  # fmt: skip
    for condition in conditions[1:]:
        total_ns = 0.0
        for name in bpf_names(condition):
            run_ns, count = med(condition, f"bpf_ns:{name}"), med(condition, f"bpf_cnt:{name}")
            total_ns += run_ns
            print(f"  BPF {name:46} ({condition}): {run_ns / 1e9:.4f} s over {count:,.0f} runs "
                  f"({run_ns / max(count, 1):.0f} ns per run, {run_ns / requests / 1e3:.2f} us per request)"
                  )  # fmt: skip
        result[f"bpf_total_{condition}"] = {"s": total_ns / 1e9, "per_req_us": total_ns / requests / 1e3}
        print(
            f"  BPF programs in all ({condition}): {total_ns / 1e9:.4f} s, "
            f"{total_ns / requests / 1e3:.2f} us per request"
        )
    print("  client p99 latency: " + ", ".join(f"{c} {statistics.median(latency[c]):,.0f} us" for c in conditions))
    result["p99_us"] = {c: statistics.median(latency[c]) for c in conditions}
    return result


# -- 5. kernel cost per call ---------------------------------------------------------------------
def build_pingpong(directory: str) -> Path:
    source = Path(directory) / "pingpong.c"
    source.write_text(PINGPONG_C)
    binary = Path(directory) / "pingpong"
    subprocess.run(["gcc", "-O2", "-Wall", "-Wno-stringop-overflow", "-o", str(binary), str(source)], check=True)
    return binary


# Phase 5's call shapes: (the ping-pong's arguments after ROUND_TRIPS and SIZE, what its calls
# are, how many a round trip makes)
CALL_SHAPES = {
    "write": ((), "write/read", 4),
    "send": ((), "send/recv", 4),  # SIZE negated: the sendto and recvfrom syscalls
    "writev": (("writev",), "writev of 2 iovecs/recv", 4),  # nginx's responses and reads
    # and nginx's read on a keep-alive connection after each response, which finds nothing
    "writev-again": (("writev-again",), "writev of 2 iovecs/recv/recv finding nothing", 6),
}


def per_call_cost(
    pingpong: Path, rounds: int, round_trips: int, size: int = 64, baseline: str | None = None, shape: str = "write"
) -> dict:
    """What the kernel side costs the traced process per socket call, without the agent: a TCP
    ping-pong inside one process (write, read, write, read of ``size`` bytes per round trip; or
    the calls of ``shape``, see CALL_SHAPES), its own CPU-seconds per call (the BPF programs run in
    its calls' context), untraced, with the tracer's probes only (empty programs) and with its
    kernel side only (records skipped unread), in rotating order."""
    extra, calls, per_trip = CALL_SHAPES[shape]
    arguments = [str(round_trips), str(-size if shape == "send" else size), *extra]
    print(
        f"\n== 5. kernel cost per socket call: {round_trips:,} TCP round trips of {size} bytes in one process "
        f"({per_trip} calls each: {calls}), its own CPU per call, {rounds} rounds ({load()})"
    )
    conditions = ("untraced", "probes only", "kernel only") + (("baseline kernel only",) if baseline else ())
    modes = {"probes only": "probes-only", "kernel only": "kernel-only", "baseline kernel only": "kernel-only"}
    per_call: dict[str, list[float]] = {c: [] for c in conditions}
    # kernel only: each BPF program's run time per socket call, by condition
    program_ns: dict[str, dict[str, list[float]]] = {}
    run_ns_each: dict[str, dict[str, list[float]]] = {}  # the same, per run of the program
    for i in range(rounds):
        shift = i % len(conditions)
        for condition in conditions[shift:] + conditions[:shift]:
            proc = subprocess.Popen([str(pingpong), *arguments], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, text=True)  # fmt: skip
            try:
                if proc.stdout.readline().strip() != "READY":
                    raise RuntimeError(f"the ping-pong did not start (exit {proc.poll()})")
                with contextlib.ExitStack() as stack:
                    tree = baseline if condition.startswith("baseline") else None
                    a = (
                        stack.enter_context(agent([proc.pid], mode=modes[condition], tree=tree))
                        if condition in modes
                        else None
                    )
                    proc.stdin.write("go\n")
                    proc.stdin.flush()
                    user, system, _wall = map(float, proc.stdout.readline().split())
                    final = a.finish() if a else {}
            finally:
                if proc.poll() is None:
                    proc.kill()
                proc.wait(timeout=10)
            per_call[condition].append((user + system) / (per_trip * round_trips) * 1e9)
            for name, (run_ns, count) in final.get("bpf", {}).items():
                program_ns.setdefault(condition, {}).setdefault(name, []).append(run_ns / (per_trip * round_trips))
                if count:
                    run_ns_each.setdefault(condition, {}).setdefault(name, []).append(run_ns / count)
            drops = {k: v for k, v in final.get("drops", {}).items() if v}
            print(f"  round {i + 1} {condition}: {per_call[condition][-1]:,.0f} ns per call"
                  + (f", drops {drops}" if drops else ""), flush=True)  # fmt: skip
    medians = {c: statistics.median(v) for c, v in per_call.items()}
    spread = {c: (min(v), max(v)) for c, v in per_call.items()}
    for c in conditions:
        print(
            f"  {c}: {medians[c]:,.0f} ns per call (spread {spread[c][0]:,.0f}-{spread[c][1]:,.0f}), "
            f"{medians[c] - medians['untraced']:+,.0f} over untraced"
        )
    for condition, by_program in program_ns.items():
        total = [sum(v) for v in zip(*by_program.values())]
        print(f"  {condition}: the programs' own run time per socket call (BPF_ENABLE_STATS; the ping-pong's calls"
              f" and other processes' syscalls meanwhile): {statistics.median(total):.0f} ns"
              f" (spread {min(total):.0f}-{max(total):.0f})")  # fmt: skip
        for name, values in sorted(by_program.items(), key=lambda kv: -statistics.median(kv[1])):
            if statistics.median(values) >= 1:
                each = run_ns_each.get(condition, {}).get(name) or [0.0]
                print(f"    {name:44} {statistics.median(values):6.0f} ns (spread {min(values):.0f}-{max(values):.0f})"
                      f", {statistics.median(each):.0f} ns a run")  # fmt: skip
    programs = {c: {name: statistics.median(v) for name, v in p.items()} for c, p in program_ns.items()}
    return {"medians": medians, "spread": spread, "programs": programs}


def hook_sets_cost(pingpong: Path, rounds: int, round_trips: int, size: int = 64, baseline: str | None = None) -> dict:
    """CPU per call of the ping-pong's socket calls (write/read, send/recv) and of a call that is
    no socket's (getppid), untraced, with each hook set's empty programs attached
    (``HOOK_SETS``), and with the whole kernel side (this tree's, and ``baseline``'s) tracing the
    ping-pongs (the bench's children), in rotating order."""
    print(
        f"\n== 5b. hook sets, empty programs: {round_trips:,} x 4 calls per run, its own CPU per call, "
        f"{rounds} rounds ({load()})"
    )
    # condition -> (agent mode, probe set, tree)
    modes: dict[str, tuple[str, str | None, str | None]] = {n: ("probes-only", n, None) for n in HOOK_SETS}
    modes["kernel side"] = ("kernel-only", None, None)
    if baseline:
        modes["baseline kernel side"] = ("kernel-only", None, baseline)
    conditions = ("untraced",) + tuple(modes)
    # workload -> (the ping-pong's SIZE argument, round trips): getppid is ~15x cheaper, run it 10x more
    workloads = {
        "socket call": (size, round_trips),
        "getppid": (0, 10 * round_trips),
        "recv call": (-size, round_trips),
    }
    per_call: dict[tuple[str, str], list[float]] = {(w, c): [] for w in workloads for c in conditions}
    for i in range(rounds):
        shift = i % len(conditions)
        for condition in conditions[shift:] + conditions[:shift]:
            with contextlib.ExitStack() as stack:
                if condition != "untraced":
                    mode, probe_set, tree = modes[condition]
                    stack.enter_context(agent([os.getpid()], mode=mode, tree=tree, probe_set=probe_set))
                for workload, (arg, trips) in workloads.items():
                    proc = subprocess.Popen([str(pingpong), str(trips), str(arg)], stdin=subprocess.PIPE,
                                            stdout=subprocess.PIPE, text=True)  # fmt: skip
                    try:
                        if proc.stdout.readline().strip() != "READY":
                            raise RuntimeError(f"the ping-pong did not start (exit {proc.poll()})")
                        proc.stdin.write("go\n")
                        proc.stdin.flush()
                        user, system, _wall = map(float, proc.stdout.readline().split())
                    finally:
                        if proc.poll() is None:
                            proc.kill()
                        proc.wait(timeout=10)
                    per_call[workload, condition].append((user + system) / (4 * trips) * 1e9)
            print(f"  round {i + 1} {condition}: " + ", ".join(
                f"{w} {per_call[w, condition][-1]:,.0f} ns" for w in workloads), flush=True)  # fmt: skip
    # Other tracers on the host (another pxq's raw sys_enter) slow every task's syscalls while they
    # are attached: the minimum of the rounds is the figure without them, the median beside it.
    medians = {f"{w}, {c}": statistics.median(v) for (w, c), v in per_call.items()}
    for w in workloads:
        base, floor = statistics.median(per_call[w, "untraced"]), min(per_call[w, "untraced"])
        for c in conditions:
            v = per_call[w, c]
            mid = statistics.median(v)
            print(f"  {w:12} {c:22} min {min(v):7,.0f} ns ({min(v) - floor:+5,.0f} over untraced), median"
                  f" {mid:7,.0f} ({mid - base:+5,.0f}), max {max(v):,.0f}")  # fmt: skip
    return {"medians": medians, "minima": {f"{w}, {c}": min(v) for (w, c), v in per_call.items()}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs (fewer rounds, steps and requests)")
    parser.add_argument("--agent-child", metavar="PIDS", help=argparse.SUPPRESS)
    parser.add_argument("--kernel-only-child", metavar="PIDS", help=argparse.SUPPRESS)
    parser.add_argument("--probes-only-child", metavar="PIDS", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--probe-set", choices=sorted(HOOK_SETS), help=argparse.SUPPRESS)
    parser.add_argument(
        "--profile", action="store_true", help="4: also the agent's CPU by part (ring walk, tracker, table store, ...)"
    )
    parser.add_argument(
        "--only",
        choices=("throughput", "completeness", "drops", "fixed", "decompose", "calls", "hooks"),
        help="run one section (hooks: 5's hook sets compared, not run by default)",
    )
    parser.add_argument(
        "--baseline", metavar="TREE", help="4, 4b, 5: also run this pxq checkout's agent or kernel side, rotating"
    )
    parser.add_argument(
        "--calls-shape", choices=sorted(CALL_SHAPES), default="write", help="5: the ping-pong's calls (default write)"
    )
    parser.add_argument("--calls-size", type=int, default=64, help="5: bytes per call (default 64)")
    parser.add_argument(
        "--strict", action="store_true", help="exit 1 when a target is missed (the bench is for figures)"
    )
    opts = parser.parse_args()
    if opts.agent_child:
        return agent_child([int(p) for p in opts.agent_child.split(",")], opts.out, opts.profile)
    if opts.kernel_only_child:
        return kernel_only_child([int(p) for p in opts.kernel_only_child.split(",")])
    if opts.probes_only_child:
        return probes_only_child(opts.probe_set)
    if os.geteuid() != 0:
        print("needs root (eBPF)", file=sys.stderr)
        return 2
    from pxq.testing.ports import free_port
    from pxq.testing.workload import nginx_server

    global PROFILE
    PROFILE = opts.profile
    if opts.only == "hooks":
        with tempfile.TemporaryDirectory(prefix="pxq-bench-") as work:
            rounds = 3 if opts.quick else 7
            hook_sets_cost(build_pingpong(work), rounds, 30_000 if opts.quick else 100_000, baseline=opts.baseline)
        return 0

    quick = opts.quick
    rounds, wrk_s = (2, 3.0) if quick else (4, 5.0)
    count, rate = (6_000, 2_000) if quick else (20_000, 2_000)
    rates = (
        [2_000, 8_000, 16_000, 32_000, 64_000]
        if quick
        else [2_000, 4_000, 8_000, 12_000, 16_000, 24_000, 32_000, 40_000, 64_000]
    )
    step_s = 2.0 if quick else 3.0
    fixed_s, fixed_rounds = (3.0, 2) if quick else (6.0, 4)
    print(f"pxq socket tracer bench{' (--quick)' if quick else ''}: {os.cpu_count()} CPUs, {load()}")
    results = {}
    with tempfile.TemporaryDirectory(prefix="pxq-bench-") as work:
        client = build_client(work)
        with nginx_server(free_port()) as nginx:  # static files only: the upstream is never used
            pids = nginx_pids(nginx)
            print(f"nginx {nginx.base_url}, pids {pids}")
            if opts.only in (None, "throughput"):
                results["throughput"] = throughput(nginx.port, pids, wrk_s, rounds)
            if opts.only in (None, "completeness"):
                results["complete"] = completeness(client, nginx, pids, count, rate, work)
            if opts.only in (None, "drops"):
                results["drops"] = drop_onset(
                    client, nginx.port, pids, rates, step_s, wrk_s, nginx.workdir / "www" / "static", work
                )
            if opts.only in (None, "fixed"):
                results["fixed"] = fixed_rate(client, nginx.port, pids, fixed_s, fixed_rounds, work, opts.baseline)
            if opts.only in (None, "decompose"):
                results["decompose"] = decompose(client, nginx.port, pids, fixed_s, fixed_rounds, work, opts.baseline)
        if opts.only in (None, "calls"):
            with bpf_stats_on():
                results["calls"] = per_call_cost(
                    build_pingpong(work),
                    fixed_rounds + 1,
                    30_000 if quick else 100_000,
                    size=opts.calls_size,
                    baseline=opts.baseline,
                    shape=opts.calls_shape,
                )
    print(f"\n== summary ({load()})")
    ok = True

    def line(name: str, value: str, good: bool | None) -> None:
        nonlocal ok
        mark = "" if good is None else ("  ok" if good else "  MISSED")
        ok = ok and good is not False
        print(f"  {name:44} {value}{mark}")

    if "throughput" in results:
        t = results["throughput"]
        line(
            "throughput traced/untraced (median ratio)",
            f"{t['ratio']:.3f} (target >= {TARGET_THROUGHPUT}; {t['untraced']:,.0f} vs {t['traced']:,.0f} req/s)",
            t["ratio"] >= TARGET_THROUGHPUT,
        )
        line("  kernel side only/untraced (median ratio)", f"{t['kernel_ratio']:.3f}", None)
        line("  probes only (empty programs)/untraced", f"{t['probes_ratio']:.3f}", None)
        line(
            "  agent under wrk: transactions captured, CPU",
            f"{100 * t['captured']:.1f} %, {t['agent_cpu']:.2f} CPU-s per {t['seconds']:g}s run (medians)",
            None,
        )
    if "complete" in results:
        c = results["complete"]
        line(
            f"completeness at {rate:,} req/s",
            f"{100 * c['share']:.3f} % (target >= {100 * TARGET_COMPLETE:.1f} %)",
            c["share"] >= TARGET_COMPLETE,
        )
        line(
            "agent CPU per 10,000 transactions",
            f"{c['cpu_10k']:.3f} s (target <= {TARGET_CPU_PER_10K})",
            c["cpu_10k"] <= TARGET_CPU_PER_10K,
        )
        line(
            "agent RSS peak during capture",
            f"{c['hwm_mb']:.0f} MB (target <= {TARGET_RSS_MB})",
            c["hwm_mb"] <= TARGET_RSS_MB,
        )
        line(
            "agent RSS peak during start-up (compiling)", f"{c['startup_mb']:.0f} MB", c["startup_mb"] <= TARGET_RSS_MB
        )
    if "drops" in results:
        d = results["drops"]
        if d["onset"]:
            label, events, moved = d["onset"]
            line(
                "drops begin at",
                f"offered {label} req/s, ~{events:,.0f} events/s: "
                + ", ".join(f"{k}={v:,}" for k, v in sorted(moved.items())),
                None,
            )
            line(f"  drop onset above {TARGET_DROP_ONSET:,} events/s", f"{events:,.0f}", events > TARGET_DROP_ONSET)
        else:
            line(
                "drops begin at",
                f"none up to {d['max_events']:,.0f} events/s (target: none up to {TARGET_DROP_ONSET:,})",
                True if d["max_events"] >= TARGET_DROP_ONSET else None,
            )
        line(
            "rows paired wrongly, through the drops",
            f"{d['mispaired']:,} of {d['checked']:,} (must be 0)",
            d["mispaired"] == 0,
        )
    if "fixed" in results:
        for rate, r in results["fixed"].items():
            line(
                f"host CPU traced/untraced at {rate:,} req/s",
                f"{host_ratio_text(r)} ({r['untraced_cpu_s']:.2f} vs {r['traced_cpu_s']:.2f} CPU-s;"
                " /proc/stat, sampled at the timer tick: see every task's run time below)",
                None,
            )
            line(
                f"  nginx+client+agent CPU traced/untraced at {rate:,}",
                f"{r['workload_cpu']:.3f} (spread {r['workload_cpu_spread'][0]:.3f}-{r['workload_cpu_spread'][1]:.3f};"
                " the same cost without the other processes of a shared machine)",
                None,
            )
            line(
                f"  every task's run time traced/untraced at {rate:,}",
                f"{r['tasks_cpu']:.3f} (spread {r['tasks_cpu_spread'][0]:.3f}-{r['tasks_cpu_spread'][1]:.3f};"
                " the whole host by the scheduler's clock, not /proc/stat's tick samples)"
                + (f" (target <= {TARGET_HOST_CPU})" if rate == 5_000 else ""),
                r["tasks_cpu"] <= TARGET_HOST_CPU if rate == 5_000 else None,
            )
            line(
                f"  p99 latency traced/untraced at {rate:,} req/s",
                f"{r['p99']:.2f} ({r['p99_us'][0]:.0f} vs {r['p99_us'][1]:.0f} us; spread "
                f"{r['p99_spread'][0]:.2f}-{r['p99_spread'][1]:.2f}; p50 {r['p50']:.2f}) (target <= {TARGET_P99})",
                r["p99"] <= TARGET_P99,
            )
            line(
                f"  agent CPU per 10,000 transactions at {rate:,}",
                f"{r['cpu_10k']:.3f} s (target <= {TARGET_CPU_PER_10K})",
                r["cpu_10k"] <= TARGET_CPU_PER_10K,
            )
        if "throughput" in results:
            line("  beside: saturated wrk traced/untraced", f"{results['throughput']['ratio']:.3f}", None)
    if "calls" in results:
        m = results["calls"]["medians"]
        line(
            "kernel CPU per traced socket call",
            f"{m['kernel only'] - m['untraced']:+,.0f} ns over untraced ({m['untraced']:,.0f} ns); "
            f"of it the hooks alone (empty programs) {m['probes only'] - m['untraced']:+,.0f} ns",
            None,
        )
    if not ok:
        print("  some targets were missed" + ("" if opts.strict else " (exit status 0 without --strict)"))
    return 1 if opts.strict and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
