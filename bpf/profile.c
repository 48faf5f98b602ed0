/* pxq's CPU profiler: a software CPU_CLOCK perf event on every CPU runs on_sample; each sample's
 * (process, user stack id, kernel stack id, comm) is counted in a hash map in the kernel, the
 * stacks themselves kept once each in a stack-trace map. User space reads and clears them
 * periodically and symbolizes the addresses (pxq/agent/profiler.py, pxq/agent/symbols/).
 *
 * Two generations: samples take their stack ids from the stack map control[0] names (stacks0 or
 * stacks1) and carry that generation in their key. User space flips control[0], then reads and
 * deletes the other generation's keys and stacks, so clearing a stack id never races with a new
 * sample that still refers to it.
 *
 * Only helpers, pt_regs and the perf event context are read: this program is compiled against
 * kernel headers that may be older than the running kernel, so kernel structs are never read.
 *
 * -D flags: COUNTS_SIZE (keys, both generations), STACKS_SIZE (stacks per generation), SELF_PID
 * (never sampled), FILTER_PIDS (1: only tgids in allowed_pids), MAX_PIDS (allowed_pids size),
 * SEEN_SIZE (processes remembered for new-process records), NOTIFY_PAGES (ring buffer pages).
 *
 * task:task_newtask remembers when each new process started (the kernel stamps its start_boottime
 * in copy_process just before, on the same clock), so that a process gone before user space reads
 * /proc keeps its start time, and with the comm of its first sample, its name.
 */
#include <uapi/linux/bpf_perf_event.h>
#include <uapi/linux/ptrace.h>

#include "profile.h"

#ifndef COUNTS_SIZE
#define COUNTS_SIZE 20480
#endif
#ifndef STACKS_SIZE
#define STACKS_SIZE 16384
#endif
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

#define PXQ_EFAULT 14
#define PXQ_CLONE_THREAD 0x00010000

BPF_ARRAY(control, u32, 1);
BPF_HASH(counts, struct pxq_profile_key, u64, COUNTS_SIZE);
BPF_STACK_TRACE(stacks0, STACKS_SIZE);
BPF_STACK_TRACE(stacks1, STACKS_SIZE);
BPF_HASH(allowed_pids, u32, u8, MAX_PIDS);
BPF_HASH(seen_pids, u32, u8, SEEN_SIZE);
BPF_PERCPU_ARRAY(stats, u64, PXQ_PROF_STAT_COUNT);
BPF_RINGBUF_OUTPUT(new_pids, NOTIFY_PAGES);
BPF_TABLE("lru_hash", u32, u64, started, SEEN_SIZE); /* tgid -> CLOCK_BOOTTIME ns at its fork */

static __always_inline void stat_add(u32 index) {
    u64 *value = stats.lookup(&index);
    if (value)
        (*value)++;
}

/* -EFAULT means "no such stack" (a user-mode sample has no kernel stack, a kernel thread no user
 * stack): normal. Any other error lost a stack that existed. */
static __always_inline void count_stack_errors(struct pxq_profile_key *key) {
    if (key->user_stack_id < 0 && key->user_stack_id != -PXQ_EFAULT)
        stat_add(PXQ_PROF_STAT_USER_STACK_LOST);
    if (key->kernel_stack_id < 0 && key->kernel_stack_id != -PXQ_EFAULT)
        stat_add(PXQ_PROF_STAT_KERNEL_STACK_LOST);
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

int on_sample(struct bpf_perf_event_data *ctx) {
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    if (tgid == 0 || tgid == SELF_PID) /* the idle task, pxq itself */
        return 0;
#if FILTER_PIDS
    if (!allowed_pids.lookup(&tgid))
        return 0;
#endif
    stat_add(PXQ_PROF_STAT_SAMPLES);
    notify_new(tgid);

    struct pxq_profile_key key;
    __builtin_memset(&key, 0, sizeof(key)); /* hash keys compare every byte */
    key.tgid = tgid;
    bpf_get_current_comm(&key.comm, sizeof(key.comm));

    u32 zero = 0;
    u32 *generation = control.lookup(&zero);
    if (generation && *generation) {
        key.generation = 1;
        key.user_stack_id = stacks1.get_stackid(&ctx->regs, BPF_F_USER_STACK);
        key.kernel_stack_id = stacks1.get_stackid(&ctx->regs, 0);
    } else {
        key.user_stack_id = stacks0.get_stackid(&ctx->regs, BPF_F_USER_STACK);
        key.kernel_stack_id = stacks0.get_stackid(&ctx->regs, 0);
    }
    count_stack_errors(&key);

    u64 *count = counts.lookup(&key);
    if (count) {
        __sync_fetch_and_add(count, 1);
        return 0;
    }
    u64 one = 1;
    if (counts.insert(&key, &one) == 0)
        return 0;
    count = counts.lookup(&key); /* another CPU inserted it meanwhile */
    if (count)
        __sync_fetch_and_add(count, 1);
    else
        stat_add(PXQ_PROF_STAT_COUNTS_FULL);
    return 0;
}
