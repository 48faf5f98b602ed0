/* The CPU profiler's shared layout: bpf/profile.c (kernel side) and pxq/agent/profiler.py (reader).
 *
 * The reader mirrors each struct with a ctypes Structure; the loader compiles a _Static_assert for
 * every field offset and the total size of that Structure into the program, so a header and a
 * reader that disagree fail at compile time instead of decoding garbage.
 *
 * The reader also takes the PXQ_PROF_STAT_* numbers from the #defines below (one per line,
 * "#define NAME number"): keep that form.
 */
#ifndef PXQ_PROFILE_H
#define PXQ_PROFILE_H

#define PXQ_PROF_COMM_LEN 16

/* Key of the in-kernel sample counts: one process, one user stack, one kernel stack, one comm.
 * A stack id < 0 is the error get_stackid returned (-EFAULT: there is no such stack, e.g. no
 * kernel stack for a sample taken in user mode; -EEXIST/-ENOMEM: the stack was lost). */
struct pxq_profile_key {
    u32 tgid;
    s32 user_stack_id;
    s32 kernel_stack_id;
    u32 generation; /* which stack map (stacks0/stacks1) the ids refer to */
    char comm[PXQ_PROF_COMM_LEN];
};

/* Ring buffer record: a process user space should snapshot (memory map, files, for symbols)
 * while it most likely still runs: its first sample, or it exec'd a new program. It also says who
 * the process is, for when it is gone before user space reads /proc. */
struct pxq_profile_new_pid {
    u32 tgid;
    u32 reason;        /* PXQ_PROF_NEW_* */
    u64 start_boot_ns; /* CLOCK_BOOTTIME when the profiler saw it fork; 0: it started before */
    char comm[PXQ_PROF_COMM_LEN]; /* the sampled (or exec'ing) thread's comm */
};

#define PXQ_PROF_NEW_SAMPLE 1 /* first sample of a process this program had not seen */
#define PXQ_PROF_NEW_EXEC 2   /* a sampled process exec'd: its memory map changed */

/* Counters (indexes of the per-CPU stats array). */
#define PXQ_PROF_STAT_SAMPLES 0            /* samples of profiled processes */
#define PXQ_PROF_STAT_USER_STACK_LOST 1    /* user stack id failed (-EEXIST collision, -ENOMEM) */
#define PXQ_PROF_STAT_KERNEL_STACK_LOST 2  /* kernel stack id failed (-EEXIST collision, -ENOMEM) */
#define PXQ_PROF_STAT_COUNTS_FULL 3        /* the counts map refused a new key: sample lost */
#define PXQ_PROF_STAT_NOTIFY_LOST 4        /* new-process record lost (ring buffer full) */
#define PXQ_PROF_STAT_COUNT 5

#endif /* PXQ_PROFILE_H */
