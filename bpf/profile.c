/* pxq's CPU profiler: a software CPU_CLOCK perf event on every CPU runs on_sample; each sample is
 * one record through the `samples` ring buffer (struct pxq_profile_sample of profile.h): when, which
 * thread, the kernel stack (bpf_get_stack), the user registers and a bounded copy of the user
 * stack from sp. User space unwinds that copy with the binaries' .eh_frame and symbolizes
 * (pxq/agent/profiler.py, pxq/agent/unwind/, pxq/agent/symbols/): perf's --call-graph dwarf
 * approach, which needs no frame pointers and no unwind tables in the kernel.
 *
 * User registers: from the perf context when the sample interrupted user mode; when it
 * interrupted the kernel, the task's saved user registers through bpf_task_pt_regs(
 * bpf_get_current_task_btf()) (BTF-typed helpers: no struct layout from the 6.1 headers).
 *
 * The user stack is copied page by page: bpf_probe_read_user fails as a whole when any byte is
 * unmapped, and near the top of a stack fewer than STACK_COPY_BYTES are mapped above sp. The copy
 * stops at the first page that cannot be read; the record is sent only as long as what was copied.
 *
 * Only helpers, pt_regs and the perf event context are read: this program is compiled against
 * kernel headers that may be older than the running kernel, so kernel structs are never read.
 *
 * -D flags: SELF_PID (never sampled), FILTER_PIDS (1: only tgids in allowed_pids), MAX_PIDS
 * (allowed_pids size), STACK_COPY_BYTES (a power of two, 4096..65536), SAMPLE_PAGES (samples ring
 * buffer pages), PYTHON_FRAMES (1: walk the Python frames of registered processes into the extra
 * section), MAX_PYTHON_PIDS, MAX_PYTHON_THREADS (their map sizes), MAX_CPUS (possible CPUs),
 * SEEN_SIZE (processes remembered for new-process records), NOTIFY_PAGES (its ring buffer pages).
 *
 * Python frames (PYTHON_FRAMES): user space registers each CPython process it can read (version
 * known, _PyRuntime found: pxq/agent/python/) with its version's offsets in python_offsets and
 * every thread's PyThreadState in python_threads (tid -> address). A sample of a registered
 * process carries struct python_frames (bpf/python_stack.h) in the extra section, walked from its
 * thread's state. A thread not (yet) in python_threads gives an empty record flagged
 * PY_FLAG_NO_THREAD, counts python_thread_miss, and, the first time since user space last looked
 * (python_missed), a PXQ_PROF_NEW_THREAD notice: user space re-reads the thread list at once.
 *
 * task:task_newtask remembers when each new process started (the kernel stamps its start_boottime
 * in copy_process just before, on the same clock), so that a process gone before user space reads
 * /proc keeps its start time, and with the comm of its first sample, its name.
 */
#include <uapi/linux/bpf_perf_event.h>
#include <uapi/linux/ptrace.h>

#include "profile.h"

#ifndef SELF_PID
#define SELF_PID 0
#endif
#ifndef FILTER_PIDS
#define FILTER_PIDS 0
#endif
#ifndef MAX_PIDS
#define MAX_PIDS 4096
#endif
#ifndef SEEN_SIZE
#define SEEN_SIZE 16384
#endif
#ifndef NOTIFY_PAGES
#define NOTIFY_PAGES 16
#endif

#ifndef STACK_COPY_BYTES
#define STACK_COPY_BYTES 16384
#endif
#ifndef SAMPLE_PAGES
#define SAMPLE_PAGES 1024
#endif
#ifndef PYTHON_FRAMES
#define PYTHON_FRAMES 0
#endif
#ifndef MAX_PYTHON_PIDS
#define MAX_PYTHON_PIDS 1024
#endif
#ifndef MAX_PYTHON_THREADS
#define MAX_PYTHON_THREADS 16384
#endif
#if PYTHON_FRAMES
#include "python_stack.h"
#define EXTRA_BYTES sizeof(struct python_frames)
#else
#define EXTRA_BYTES 0
#endif
#ifndef MAX_CPUS
#define MAX_CPUS 256
#endif

#define PXQ_CLONE_THREAD 0x00010000
#define PXQ_PAGE 4096
#define PXQ_STACK_PAGES (STACK_COPY_BYTES / PXQ_PAGE)

/* The record as built: header, extra section, user stack; the stack array has two pages to spare
 * so that the verifier sees every chunk (offset < STACK_COPY_BYTES, size < two pages) inside it. */
struct pxq_profile_scratch {
    struct pxq_profile_sample head;
#if PYTHON_FRAMES
    struct python_frames python;
#endif
    u8 stack[STACK_COPY_BYTES + 2 * PXQ_PAGE];
};

/* One record per CPU; a plain array indexed by CPU, not a per-CPU array, whose values may not
 * exceed 32 KiB. Perf-event programs do not nest on one CPU, so each CPU's slot has one writer. */
BPF_ARRAY(scratch, struct pxq_profile_scratch, MAX_CPUS);
BPF_RINGBUF_OUTPUT(samples, SAMPLE_PAGES);
BPF_HASH(allowed_pids, u32, u8, MAX_PIDS);
BPF_HASH(seen_pids, u32, u8, SEEN_SIZE);
BPF_PERCPU_ARRAY(stats, u64, PXQ_PROF_STAT_COUNT);
BPF_RINGBUF_OUTPUT(new_pids, NOTIFY_PAGES);
BPF_TABLE("lru_hash", u32, u64, started, SEEN_SIZE); /* tgid -> CLOCK_BOOTTIME ns at its fork */
#if PYTHON_FRAMES
BPF_HASH(python_offsets, u32, struct pxq_python_offsets, MAX_PYTHON_PIDS); /* tgid -> its CPython's offsets */
BPF_HASH(python_threads, u32, u64, MAX_PYTHON_THREADS);                     /* tid -> PyThreadState* */
BPF_HASH(python_missed, u32, u64, MAX_PYTHON_PIDS); /* tgid -> samples of unknown threads since user space looked */
#endif

static __always_inline void stat_add(u32 index) {
    u64 *value = stats.lookup(&index);
    if (value)
        (*value)++;
}

static __always_inline void notify(u32 tgid, u32 reason) {
    struct pxq_profile_new_pid *record = new_pids.ringbuf_reserve(sizeof(struct pxq_profile_new_pid));
    if (!record) {
        stat_add(PXQ_PROF_STAT_NOTIFY_LOST);
        return;
    }
    record->tgid = tgid;
    record->reason = reason;
    u64 *start = started.lookup(&tgid);
    record->start_boot_ns = start ? *start : 0;
    bpf_get_current_comm(record->comm, sizeof(record->comm));
    new_pids.ringbuf_submit(record, 0);
}

/* A new process (not a thread): when it started. */
TRACEPOINT_PROBE(task, task_newtask) {
    if (args->clone_flags & PXQ_CLONE_THREAD)
        return 0;
    u32 child = args->pid;
    u64 now = bpf_ktime_get_boot_ns();
    started.update(&child, &now);
    return 0;
}

static __always_inline void notify_new(u32 tgid) {
    if (seen_pids.lookup(&tgid))
        return;
    u8 one = 1;
    if (seen_pids.insert(&tgid, &one) != 0)
        return; /* another CPU was first, or the map is full (user space still finds it at drain) */
    notify(tgid, PXQ_PROF_NEW_SAMPLE);
}

/* A sampled process exec'd: its old memory map is gone, user space must look again. */
TRACEPOINT_PROBE(sched, sched_process_exec) {
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    if (seen_pids.lookup(&tgid))
        notify(tgid, PXQ_PROF_NEW_EXEC);
    return 0;
}

/* The user registers of the current task: the perf context's when the sample hit user mode, else
 * the ones saved at its kernel entry. Returns PXQ_PROF_SAMPLE_* flags. */
static __always_inline u32 user_registers(struct bpf_perf_event_data *ctx, struct pxq_profile_sample *head) {
    if (ctx->regs.cs & 3) {
        head->user_ip = ctx->regs.ip;
        head->user_sp = ctx->regs.sp;
        head->user_bp = ctx->regs.bp;
        return PXQ_PROF_SAMPLE_USER_REGS;
    }
    struct pt_regs regs;
    long at = bpf_task_pt_regs(bpf_get_current_task_btf());
    if (!at || bpf_probe_read_kernel(&regs, sizeof(regs), (void *)at) != 0) {
        stat_add(PXQ_PROF_STAT_USER_REGS_LOST);
        return PXQ_PROF_SAMPLE_KERNEL_MODE;
    }
    if (!(regs.cs & 3) || regs.sp == 0) /* a kernel thread: no user context */
        return PXQ_PROF_SAMPLE_KERNEL_MODE | PXQ_PROF_SAMPLE_NO_USER;
    head->user_ip = regs.ip;
    head->user_sp = regs.sp;
    head->user_bp = regs.bp;
    return PXQ_PROF_SAMPLE_KERNEL_MODE | PXQ_PROF_SAMPLE_USER_REGS;
}

/* Copy up to STACK_COPY_BYTES of user stack from sp, page by page, until a page cannot be read. */
static __always_inline u32 copy_user_stack(struct pxq_profile_scratch *s, u64 sp) {
    u32 copied = 0;
#pragma unroll
    for (int i = 0; i <= PXQ_STACK_PAGES; i++) {
        if (copied >= STACK_COPY_BYTES)
            break;
        u64 at = sp + copied;
        u32 size = PXQ_PAGE - (u32)(at & (PXQ_PAGE - 1));
        if (size > STACK_COPY_BYTES - copied)
            size = STACK_COPY_BYTES - copied;
        u32 offset = copied & (STACK_COPY_BYTES - 1);
        /* Hide size's history from clang, so that the mask below stays: it is the bound the
         * verifier sees (the min() above is lost to it). */
        asm volatile("" : "+r"(size));
        size &= 2 * PXQ_PAGE - 1;
        if (size == 0 || size > PXQ_PAGE)
            break;
        if (bpf_probe_read_user(&s->stack[offset], size, (void *)at) != 0)
            break;
        copied += size;
    }
    return copied;
}

#if PYTHON_FRAMES
/* The Python frames of the sampled thread into s->python; returns the extra section's size (0: not
 * a registered Python process, the section is left out of the count but still in the record). */
static __always_inline u32 python_frames(struct pxq_profile_scratch *s, u32 tgid, u32 tid) {
    struct pxq_python_offsets *off = python_offsets.lookup(&tgid);
    if (!off)
        return 0;
    u64 *tstate = python_threads.lookup(&tid);
    if (!tstate) {
        s->python.count = 0;
        s->python.flags = PY_FLAG_NO_THREAD;
        stat_add(PXQ_PROF_STAT_PYTHON_THREAD_MISS);
        u64 one = 1;
        if (python_missed.insert(&tgid, &one) == 0) /* the first miss since user space looked */
            notify(tgid, PXQ_PROF_NEW_THREAD);
        return sizeof(struct python_frames);
    }
    pxq_python_walk(*tstate, off, &s->python);
    return sizeof(struct python_frames);
}
#endif

int on_sample(struct bpf_perf_event_data *ctx) {
    u64 pid_tgid = bpf_get_current_pid_tgid();
    u32 tgid = pid_tgid >> 32;
    if (tgid == 0 || tgid == SELF_PID) /* the idle task, pxq itself */
        return 0;
#if FILTER_PIDS
    if (!allowed_pids.lookup(&tgid))
        return 0;
#endif
    stat_add(PXQ_PROF_STAT_SAMPLES);
    notify_new(tgid);

    u32 cpu = bpf_get_smp_processor_id();
    struct pxq_profile_scratch *s = scratch.lookup(&cpu);
    if (!s)
        return 0;
    struct pxq_profile_sample *head = &s->head;
    head->time_boot_ns = bpf_ktime_get_boot_ns();
    head->tgid = tgid;
    head->tid = (u32)pid_tgid;
    head->cpu = cpu;
    head->user_ip = head->user_sp = head->user_bp = 0;
    head->extra_bytes = 0;
    head->user_stack_offset = sizeof(struct pxq_profile_sample) + EXTRA_BYTES;
#if PYTHON_FRAMES
    head->extra_bytes = python_frames(s, tgid, (u32)pid_tgid);
#endif
    bpf_get_current_comm(&head->comm, sizeof(head->comm));

    u32 flags = user_registers(ctx, head);
    if (flags & PXQ_PROF_SAMPLE_KERNEL_MODE) {
        head->kernel_stack_bytes = bpf_get_stack(ctx, head->kernel_stack, sizeof(head->kernel_stack), 0);
        if (head->kernel_stack_bytes < 0)
            stat_add(PXQ_PROF_STAT_KERNEL_STACK_LOST);
    } else {
        head->kernel_stack_bytes = 0;
    }
    u32 copied = 0;
    if (flags & PXQ_PROF_SAMPLE_USER_REGS) {
        copied = copy_user_stack(s, head->user_sp);
        if (copied == 0)
            stat_add(PXQ_PROF_STAT_USER_COPY_FAILED);
    }
    head->flags = flags;
    head->user_stack_bytes = copied;

    u64 size = sizeof(struct pxq_profile_sample) + EXTRA_BYTES + (copied & (2 * STACK_COPY_BYTES - 1));
    if (size > sizeof(struct pxq_profile_scratch))
        return 0;
    /* No wakeup: the agent takes the records when it polls (every 100 ms). A wakeup per sample
     * would make the agent run right after each sample, taking CPU from the sampled task between
     * samples; the task would then be sampled more often than its CPU time says. */
    if (samples.ringbuf_output(s, size, BPF_RB_NO_WAKEUP) != 0)
        stat_add(PXQ_PROF_STAT_SAMPLES_LOST);
    return 0;
}
