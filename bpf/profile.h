/* The CPU profiler's shared layout: bpf/profile.c (kernel side) and pxq/agent/profiler.py (reader).
 *
 * The reader mirrors each struct with a ctypes Structure; the loader compiles a _Static_assert for
 * every field offset and the total size of that Structure into the program, so a header and a
 * reader that disagree fail at compile time instead of decoding garbage.
 *
 * The reader also takes the PXQ_PROF_* numbers from the #defines below (one per line,
 * "#define NAME number"): keep that form.
 */
#ifndef PXQ_PROFILE_H
#define PXQ_PROFILE_H

#define PXQ_PROF_COMM_LEN 16
#define PXQ_PROF_KERNEL_DEPTH 127 /* kernel frames kept per sample (the kernel's own maximum) */

/* One CPU sample, as sent through the `samples` ring buffer (perf's --call-graph dwarf approach):
 *
 *   struct pxq_profile_sample    this header, with the kernel stack (bpf_get_stack, leaf first)
 *   extra section                at offset sizeof(header), when the program walks Python frames
 *                                (-DPYTHON_FRAMES=1): struct python_frames (bpf/python_stack.h);
 *                                extra_bytes says whether it holds this sample's frames (its size)
 *                                or not (0: not a registered Python process)
 *   user stack copy              user_stack_bytes at offset user_stack_offset: the bytes of the
 *                                user stack from user_sp upwards, as mapped (a copy near the top of
 *                                the stack is shorter than asked); the record ends there
 *
 * The agent unwinds the user stack from (user_ip, user_sp, user_bp) and that copy with the
 * binaries' .eh_frame (pxq/agent/unwind/). */
struct pxq_profile_sample {
    u64 time_boot_ns; /* bpf_ktime_get_boot_ns() at the sample */
    u32 tgid;
    u32 tid;
    u32 cpu;
    u32 flags;        /* PXQ_PROF_SAMPLE_* */
    u64 user_ip;      /* user registers: at the interruption, or where the task entered the kernel */
    u64 user_sp;
    u64 user_bp;
    s32 kernel_stack_bytes; /* bytes of kernel_stack filled, or bpf_get_stack's error (< 0) */
    u32 user_stack_bytes;   /* bytes of user stack copied */
    u32 user_stack_offset;  /* where the copy starts in the record */
    u32 extra_bytes;        /* bytes of the extra section */
    char comm[PXQ_PROF_COMM_LEN];
    u64 kernel_stack[PXQ_PROF_KERNEL_DEPTH];
};

#define PXQ_PROF_SAMPLE_KERNEL_MODE 1 /* the sample interrupted the kernel (kernel_stack holds it) */
#define PXQ_PROF_SAMPLE_USER_REGS 2   /* user_ip/sp/bp hold the user registers */
#define PXQ_PROF_SAMPLE_NO_USER 4     /* no user context at all: a kernel thread */

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
#define PXQ_PROF_NEW_THREAD 3 /* a registered Python process ran a thread not in python_threads */

/* Counters (indexes of the per-CPU stats array). */
#define PXQ_PROF_STAT_SAMPLES 0           /* samples of profiled processes */
#define PXQ_PROF_STAT_SAMPLES_LOST 1      /* the samples ring buffer was full: sample lost */
#define PXQ_PROF_STAT_KERNEL_STACK_LOST 2 /* bpf_get_stack failed for the kernel stack */
#define PXQ_PROF_STAT_USER_REGS_LOST 3    /* kernel-mode sample whose user registers could not be read */
#define PXQ_PROF_STAT_USER_COPY_FAILED 4  /* not one byte of the user stack could be read at sp */
#define PXQ_PROF_STAT_NOTIFY_LOST 5       /* new-process record lost (ring buffer full) */
#define PXQ_PROF_STAT_PYTHON_THREAD_MISS 6 /* sample of a Python process's thread with no known PyThreadState */
#define PXQ_PROF_STAT_COUNT 7

#endif /* PXQ_PROFILE_H */
