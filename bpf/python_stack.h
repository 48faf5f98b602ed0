/* Python frames walked in BPF from a PyThreadState user pointer (pxq/agent/python/).
 *
 * The caller looks the thread state up by thread id in a `tid -> PyThreadState*` hash that user space fills
 * (pxq/agent/python/process.py: PythonProcess.thread_states), and the offsets of the process's CPython in a
 * per-process config (pxq/agent/python/versions.py: PythonLayout, packed by bpf_offsets()). Only user memory
 * is read (bpf_probe_read_user): no kernel struct field, whose offsets the 6.1 headers get wrong on this kernel.
 *
 * What each frame records follows the OpenTelemetry profiler (support/ebpf/python_tracer.ebpf.c): the code
 * object address, the raw instruction (f_lasti before 3.11, prev_instr / instr_ptr from 3.11), whether the frame
 * is the first one run by its _PyEval_EvalFrameDefault call, and a stamp of the code object (its name pointer
 * >> 4 xor its first line: pxq/agent/python/code.py code_stamp) so that user space, symbolizing later, can tell
 * a reused code object address from the one sampled. No strings are copied.
 *
 * Include after the bcc/vmlinux headers; define PY_MAX_FRAMES (a power of two) before including to change it.
 * The loop is a plain bounded loop (kernel 6.18 verifies it without unrolling). Measured on this kernel with
 * the uprobe program of tests/agent/test_python_bpf.py: the verifier processes about 750 instructions per
 * frame slot (PY_MAX_FRAMES 16: 12,958; 64: 49,469; 128: 95,604; 256: 188,040, of the 1,000,000 limit), and
 * compile + load takes 0.95 s at 64 and 1.33 s at 128. The record lives in a per-CPU array: at 24 bytes a
 * frame it does not fit the 512-byte BPF stack. Cost per walk (bpf_ktime_get_ns around it, CPU-clock samples of
 * tests/agent/programs/py_ratio.py, 4 frames deep, this loaded 2-CPU VM): median 4.0 us (3.8), 4.4 us (3.11),
 * 5.4 us (3.12), 4.9 us (3.13), p90 5.0-6.9 us: about 1 us a frame, 0.05% of one CPU at 99 Hz for 4 frames.
 */
#ifndef PXQ_PYTHON_STACK_H
#define PXQ_PYTHON_STACK_H

#ifndef PY_MAX_FRAMES
#define PY_MAX_FRAMES 64
#endif
/* Walk steps: a frame each, plus the 3.12+ shim frames (one per eval call) that are skipped, not recorded. */
#define PY_MAX_WALK_STEPS (2 * PY_MAX_FRAMES)

#define PY_FLAG_TRUNCATED 1   /* more frames than PY_MAX_FRAMES (or walk steps) */
#define PY_FLAG_READ_FAILED 2 /* a pointer led to unreadable memory: garbage, or the thread moved on */
#define PY_FLAG_NO_THREAD 4   /* set by the caller: the thread's PyThreadState is not known (not walked) */
#define PY_FLAG_NO_FIELD (-1)
#define PY_FRAME_OWNED_BY_CSTACK 3 /* 3.12+ Include/internal/pycore_frame.h */

/* Offsets of one CPython version (bytes; PY_FLAG_NO_FIELD when the version lacks the field). */
struct pxq_python_offsets {
    s32 tstate_frame;         /* PyThreadState.frame (<=3.10), .cframe (3.11, 3.12), .current_frame (3.13) */
    s32 cframe_current_frame; /* _PyCFrame.current_frame, or PY_FLAG_NO_FIELD */
    s32 frame_code;           /* f_code / f_executable */
    s32 frame_previous;       /* f_back / previous */
    s32 frame_instr;          /* f_lasti (s32) or prev_instr / instr_ptr (pointer) */
    s32 frame_is_entry;       /* 3.11 */
    s32 frame_owner;          /* 3.12+: shim frames are skipped (3.11's owner has no CSTACK value) */
    s32 code_name;            /* co_qualname (3.11+) or co_name: for the stamp */
    s32 code_firstlineno;
    u32 instr_is_pointer;
};

struct python_frame {
    u64 code;
    u64 instr;
    u32 entry;
    u32 stamp; /* the "pad" of the integration brief: same layout, used for the code object stamp */
};

struct python_frames {
    u32 count;
    u32 flags;
    struct python_frame frame[PY_MAX_FRAMES];
};

static __always_inline int pxq_py_read(void *dst, u32 size, u64 address) {
    return bpf_probe_read_user(dst, size, (const void *)address);
}

/* Fills out with the frames of the thread whose PyThreadState is at tstate, innermost first. */
static __always_inline void pxq_python_walk(u64 tstate, const struct pxq_python_offsets *off,
                                            struct python_frames *out) {
    u64 frame = 0;
    out->count = 0;
    out->flags = 0;
    if (pxq_py_read(&frame, sizeof(frame), tstate + off->tstate_frame) < 0) {
        out->flags |= PY_FLAG_READ_FAILED;
        return;
    }
    if (off->cframe_current_frame != PY_FLAG_NO_FIELD && frame != 0 &&
        pxq_py_read(&frame, sizeof(frame), frame + off->cframe_current_frame) < 0) {
        out->flags |= PY_FLAG_READ_FAILED;
        return;
    }
    for (u32 step = 0; step < PY_MAX_WALK_STEPS; step++) {
        if (frame == 0)
            return;
        u32 n = out->count;
        if (off->frame_owner != PY_FLAG_NO_FIELD && off->frame_is_entry == PY_FLAG_NO_FIELD) {
            u8 owner = 0;
            if (pxq_py_read(&owner, sizeof(owner), frame + off->frame_owner) < 0)
                goto failed;
            if (owner == PY_FRAME_OWNED_BY_CSTACK) {
                /* The shim an eval call pushes: the frame recorded just before is that call's entry frame. */
                if (n > 0)
                    out->frame[(n - 1) & (PY_MAX_FRAMES - 1)].entry = 1;
                if (pxq_py_read(&frame, sizeof(frame), frame + off->frame_previous) < 0)
                    goto failed;
                continue;
            }
        }
        if (n >= PY_MAX_FRAMES) {
            out->flags |= PY_FLAG_TRUNCATED;
            return;
        }
        struct python_frame *slot = &out->frame[n & (PY_MAX_FRAMES - 1)];
        u64 code = 0, instr = 0, name = 0;
        s32 firstlineno = 0;
        if (pxq_py_read(&code, sizeof(code), frame + off->frame_code) < 0)
            goto failed;
        if (off->instr_is_pointer) {
            if (pxq_py_read(&instr, sizeof(instr), frame + off->frame_instr) < 0)
                goto failed;
        } else {
            u32 lasti = 0;
            if (pxq_py_read(&lasti, sizeof(lasti), frame + off->frame_instr) < 0)
                goto failed;
            instr = lasti;
        }
        u32 entry = off->instr_is_pointer ? 0 : 1; /* before 3.11 each frame has its own eval call */
        if (off->frame_is_entry != PY_FLAG_NO_FIELD) {
            u8 is_entry = 0;
            if (pxq_py_read(&is_entry, sizeof(is_entry), frame + off->frame_is_entry) < 0)
                goto failed;
            entry = is_entry != 0;
        }
        if (pxq_py_read(&name, sizeof(name), code + off->code_name) < 0 ||
            pxq_py_read(&firstlineno, sizeof(firstlineno), code + off->code_firstlineno) < 0)
            goto failed;
        slot->code = code;
        slot->instr = instr;
        slot->entry = entry;
        slot->stamp = (u32)((name >> 4) ^ (u64)(s64)firstlineno);
        out->count = n + 1;
        if (pxq_py_read(&frame, sizeof(frame), frame + off->frame_previous) < 0)
            goto failed;
    }
    if (frame != 0)
        out->flags |= PY_FLAG_TRUNCATED;
    return;
failed:
    out->flags |= PY_FLAG_READ_FAILED;
}

#endif /* PXQ_PYTHON_STACK_H */
