/* pxq socket tracer: TCP and UDP payloads and connection life cycle from syscall and sock tracepoints.
 *
 * This kernel has no kprobes, and bcc compiles against headers older than the kernel, so every
 * value used here is a tracepoint field (args->..., laid out from tracefs at run time), a raw
 * tracepoint argument, the syscall's saved user registers (struct pt_regs, whose x86-64 layout is
 * ABI), a helper result, or user memory. No other kernel struct is ever dereferenced; the struct
 * sock pointer that the sock tracepoints report is used only as an opaque map key.
 *
 *   sock:sock_send_length    fired inside sock_sendmsg/sock_recvmsg, in the calling task, after
 *   sock:sock_recv_length    the bytes moved (the count is the tracepoint's ret): the socket's
 *                            sk key, family and protocol; the call's number and arguments (fd,
 *                            buffer / iovec / msghdr, sockaddr) from the task's saved user
 *                            registers (loaded from bpf_task_pt_regs' pointer: orig_ax, di, si,
 *                            dx, r8, cs). TCP and UDP over IPv4/IPv6 only: copy the first
 *                            COPY_LIMIT bytes the call moved into ring buffer events of at most
 *                            MAX_DATA bytes each (one buffer, or up to FEW_IOV iovecs, that fit
 *                            one event: copied straight; else walking iovecs and messages step
 *                            by step); the rest of the call is one filler event
 *                            (PXQ_F_FILLER: its stream offset and byte count, no bytes). A UDP
 *                            datagram's events are PXQ_F_DATAGRAM with its peer: sendto/recvfrom's
 *                            sockaddr (the 5th argument, r8), msghdr.msg_name, each mmsghdr's own
 *                            (one datagram per message), else the socket's connect() (udp_peers)
 *   syscalls:sys_exit_recvfrom, _recvmsg (UDP), _recvmmsg, _sendmmsg: these calls' data goes out
 *                            at their exit (the sock tracepoint notes the call in `active`): the
 *                            kernel writes a datagram's sender to user memory after sock_recvmsg
 *                            returns, and an mmsg call's message lengths after each message.
 *                            They run for every such call of every process: while no thread has
 *                            a call noted (notes_held), one array load ends them
 *   sock:inet_sock_set_state SYN_SENT in connect(): the fd is TCP; ESTABLISHED: sk -> 4-tuple;
 *                            CLOSE: forget it
 *   sendfile64, splice       a filler event with the byte count only: the bytes never pass
 *                            through user memory. splice/sendfile into a socket run sock_sendmsg
 *                            (one filler per sock_sendmsg); splice out of one runs
 *                            tcp_splice_read, which no sock tracepoint sees: at sys_exit_splice
 *                            the input fd counts when the tracer knows it as a TCP connection
 *   sys_exit_connect/accept/accept4  OPEN events (client/server role) with a new connection
 *                            generation; a connect() that is not TCP's remembers its inet peer
 *   sys_enter_close, sched_process_exit  CLOSE / PROC_EXIT events (a close looks its fd up
 *                            before deleting anything: a hash delete takes a bucket lock)
 *   sched_process_fork       (FILTER_PIDS) a child of a traced process is traced too
 *   task_newtask, process_exec a process's start time (at fork) and comm and argv (at exec), sent
 *                            once as a PROC_INFO event before its first connection's events
 *
 * Why no program runs on every syscall: up to 2026-12-07 the calls were taken at the raw
 * sys_enter/sys_exit tracepoints (cheaper per traced call than syscalls: tracepoints, which format
 * a perf record of the call before their program runs), so two programs ran on every syscall of
 * every task of the host (11.5 per HTTP request host-wide with nginx traced). Now the data calls
 * are taken where the kernel says they are a socket's, and the syscalls: tracepoints left are
 * those of rare calls or of calls whose data needs their exit: only their own calls run their
 * programs. What stays host-wide is the syscall slow path that any syscalls: tracepoint turns on
 * for every task (bench phase 5b, empty programs, minimum of rotating rounds: getppid +55 ns with
 * these hooks, +177 ns with the raw ones). Calls are matched by x86-64 number; compat tasks and
 * kernel threads (no 64-bit user frame) are skipped, and opens and closes never carry data. A
 * limit: a sock_sendmsg that a kernel client runs inside a process's data call (a write() to a
 * file on NFS) looks like that call's, on that call's fd.
 *
 * Nothing is traced until user space sets ready[0], once every probe is attached (see `ready`).
 *
 * A connection is (tgid, fd, generation). A new generation starts at connect/accept, at the first
 * data of a socket opened before the tracer attached, and when an fd's data comes from another
 * socket than before (a close the tracer did not see: dup2, close_range, exec).
 *
 * Why a copy limit: the parsers use a message's head (at most 64 KiB, MAX_HEADER_BYTES in
 * pxq/agent/protocols/http1/stitcher.py) and the first body_limit bytes of its body; copying more of a big
 * transfer only fills the ring buffer, and other connections then lose their events to it. The
 * filler keeps the stream offsets exact, so the parser skips the body it stands for and the
 * next message is intact.
 *
 * Compile-time options (-D): MAX_DATA (power of two), MAX_STEPS, COPY_LIMIT (bytes copied per
 * call, at most MAX_STEPS * MAX_DATA), MAX_IOV, FEW_IOV, MAX_MMSG, RING_PAGES, NCPU (possible CPUs),
 * SELF_PID (never traced), FILTER_PIDS (1: only tgids in allowed_pids), PROCS_SIZE (processes
 * whose identity is remembered), IGNORE_PIDS / IGNORE_COMMS / IGNORE_CGROUPS (1: consult
 * ignored_pids / ignored_comms / ignored_cgroups; each costs a lookup, so each is compiled in only
 * when asked for).
 */
#include "socket_trace.h"

#ifndef MAX_DATA
#define MAX_DATA 16384
#endif
#ifndef MAX_STEPS
#define MAX_STEPS 128
#endif
#ifndef COPY_LIMIT
#define COPY_LIMIT (65536 + 1024)
#endif
#ifndef MAX_IOV
#define MAX_IOV 64
#endif
#ifndef FEW_IOV
#define FEW_IOV 4 /* iovecs copied without the walk when their bytes fit one event */
#endif
#ifndef MAX_MMSG
#define MAX_MMSG 8
#endif
#ifndef RING_PAGES
#define RING_PAGES 2048
#endif
#ifndef NCPU
#define NCPU 64
#endif
#ifndef SELF_PID
#define SELF_PID 0
#endif
#ifndef FILTER_PIDS
#define FILTER_PIDS 0
#endif
#ifndef PROCS_SIZE
#define PROCS_SIZE 8192
#endif
#ifndef IGNORE_PIDS
#define IGNORE_PIDS 0 /* 1: ignored tgids (see ignore_pid), and the processes they fork, are never traced */
#endif
#ifndef IGNORE_COMMS
#define IGNORE_COMMS 0 /* 1: a program exec'd under a name in ignored_comms is ignored from then on */
#endif
#if IGNORE_COMMS && !IGNORE_PIDS
#error "IGNORE_COMMS needs IGNORE_PIDS (a process running an ignored name is an ignored pid)"
#endif
#ifndef IGNORE_CGROUPS
#define IGNORE_CGROUPS 0 /* 1: tasks whose cgroup v2 id is in ignored_cgroups are never traced */
#endif
#ifndef TRACE_CGROUPS
#define TRACE_CGROUPS 0 /* 1: only tasks whose cgroup v2 id is in traced_cgroups are traced (one pod/node) */
#endif

#define PXQ_AF_INET 2
#define PXQ_AF_INET6 10
#define PXQ_IPPROTO_TCP 6
#define PXQ_IPPROTO_UDP 17
#define PXQ_AF_UNSPEC 0
#define PXQ_EINPROGRESS 115
#define PXQ_TCP_ESTABLISHED 1
#define PXQ_TCP_SYN_SENT 2
#define PXQ_TCP_CLOSE 7
#define PXQ_MSG_PEEK 2

/* x86-64 syscall numbers (arch/x86/entry/syscalls/syscall_64.tbl). */
#define NR_READ 0
#define NR_WRITE 1
#define NR_CLOSE 3
#define NR_READV 19
#define NR_WRITEV 20
#define NR_SENDFILE 40
#define NR_CONNECT 42
#define NR_ACCEPT 43
#define NR_SENDTO 44
#define NR_RECVFROM 45
#define NR_SENDMSG 46
#define NR_RECVMSG 47
#define NR_SPLICE 275
#define NR_ACCEPT4 288
#define NR_RECVMMSG 299
#define NR_SENDMMSG 307

/* The calling task's saved user registers from r8 on (struct pt_regs from offset 72,
 * arch/x86/include/asm/ptrace.h; ABI: the offsets are those of user_regs_struct), as
 * bpf_task_pt_regs finds them (read_user_regs loads the ones used). Inside a syscall (at a sock
 * tracepoint, or a syscalls: exit) they hold what the call was entered with: the number in
 * orig_ax, the arguments in di, si, dx, r10, r8 (a syscall does not write them back; only ax gets
 * the result). */
#define PT_REGS_R8_OFF 72
struct user_regs {
    u64 r8;      /* 5th argument: sendto's dest_addr, recvfrom's src_addr */
    u64 ax;
    u64 cx;
    u64 dx;      /* 3rd argument */
    u64 si;      /* 2nd argument */
    u64 di;      /* 1st argument */
    u64 orig_ax; /* the syscall number */
    u64 ip;
    u64 cs;
};
#define USER_CS 0x33   /* a 64-bit user task's code segment (kernel threads: 0, no user frame) */
#define USER32_CS 0x23 /* a compat (32-bit) task: its syscall numbers are i386's */

/* Layouts of the user-space structs walked (x86-64 ABI). */
#define IOVEC_SIZE 16        /* struct iovec { void *iov_base; size_t iov_len; } */
#define MSGHDR_IOV_OFF 16    /* struct user_msghdr: msg_iov */
#define MSGHDR_IOVLEN_OFF 24 /* struct user_msghdr: msg_iovlen */
#define MMSGHDR_SIZE 64      /* struct mmsghdr { struct user_msghdr msg_hdr; unsigned msg_len; } */
#define MMSGHDR_LEN_OFF 56
#define MSGHDR_NAME_OFF 0    /* struct user_msghdr: msg_name (the peer's sockaddr, or NULL) */
/* struct sockaddr_in / sockaddr_in6: family, then the port (network order), then the address. */
#define SOCKADDR_PORT_OFF 2
#define SOCKADDR_IN_ADDR_OFF 4
#define SOCKADDR_IN6_ADDR_OFF 8

/* Copy modes of the exit walk. */
#define MODE_BUF 0
#define MODE_IOV 1
#define MODE_MMSG 2

/* A call (from the registers and a sock tracepoint), or one in flight on a thread (`active`;
 * syscall 0: none; the entry stays, to be reused). */
struct active_t {
    u64 buf;   /* buffer, iovec array, msghdr, mmsghdr array or sockaddr */
    u64 vlen;  /* iovec count (readv/writev) or message count (sendmmsg/recvmmsg) */
    u64 sk;    /* from the sock tracepoints: opaque key, never dereferenced */
    u64 addr;  /* sendto/recvfrom: the sockaddr argument (the peer of a UDP datagram), or 0 */
    s32 fd;    /* splice: fd_out (a socket when sock_send_length fires); fd_in is in vlen */
    u16 syscall;
    u16 family;
    u16 protocol;
    u8 is_sock;
    u8 peek;
};

/* A socket fd the tracer has seen open or carry data. */
struct conn_t {
    u64 pos_egress;  /* bytes sent so far */
    u64 pos_ingress; /* bytes received so far */
    u64 sk;          /* the socket's key once known (0 after accept, until its first data) */
    u32 gen;
    u8 role;
    u8 tuple_sent;
    u16 reserved;
};

/* The peer a UDP socket was connect()ed to: the address of its calls that name none (write,
 * send, read, recv on a connected socket, as dig and glibc's resolver use). */
struct udp_peer_t {
    u16 family;
    u16 port; /* host order */
    u32 reserved;
    u8 addr[16];
};

/* A TCP socket's endpoints, from inet_sock_set_state (ports in host order). */
struct tuple_t {
    u16 family;
    u16 lport;
    u16 rport;
    u16 reserved;
    u8 laddr[16];
    u8 raddr[16];
};

/* Where the exit walk is. It lives in map memory, not in registers: the verifier then sees the
 * same (unknown) values at the top of every loop step, prunes the paths one step took, and
 * checks the walk in time linear in MAX_STEPS instead of exponential. */
struct walk_t {
    u64 remaining; /* bytes of the call not yet staged */
    u64 fill;      /* bytes staged in data[] */
    u64 sent;      /* bytes already sent in events */
    u64 pos;       /* stream offset of the call's first byte */
    u64 seg_base;  /* current contiguous user buffer */
    u64 seg_len;
    u64 iov;       /* iovec array of the current message */
    u64 iov_cnt;
    u64 iov_idx;
    u64 mmsg;      /* mmsghdr array (sendmmsg/recvmmsg) */
    u64 msg_cnt;
    u64 msg_idx;
    u64 msg_left;  /* bytes of the current message not yet walked */
    u64 mode;
};

/* Per-CPU staging area for a data event: the header, then room for a copy of up to MAX_DATA
 * bytes at any offset below MAX_DATA (the bound the verifier can prove). */
struct scratch_t {
    struct walk_t w;
    struct pxq_sock_event ev;
    u8 data[3 * MAX_DATA];
};

BPF_RINGBUF_OUTPUT(events, RING_PAGES);
BPF_ARRAY(drops, u64, PXQ_DROP_COUNT);
BPF_ARRAY(gen_counter, u64, 1);
BPF_ARRAY(scratch, struct scratch_t, NCPU);
BPF_HASH(allowed_pids, u32, u8, 65536);
/* A call in flight whose work waits for its exit (see taken_at_exit, splice, a TCP connect), in
 * the thread's own task storage: found from the current task in a few loads, where a hash map
 * keyed by thread id costs a hash and a bucket walk (measured in bench phase 5). Freed with the
 * task, so a thread that dies inside a call (exit_group while blocked in recvfrom) leaves nothing
 * behind. The task pointer is only handed to the helper, never dereferenced. */
BPF_TASK_STORAGE(active, struct active_t);
/* [0] = how many threads have a call noted in `active` (syscall != 0), so that a syscall exit
 * (sys_exit_recvfrom runs for every recvfrom of every process) sees "none anywhere" in one array
 * load, without the task storage lookup. Raised when a note is made, lowered when one is taken;
 * a thread that died between the two (freed with its note) leaves it too high: such exits then
 * look in task storage as before, never too low. */
BPF_ARRAY(notes_held, u64, 1);
BPF_TABLE("lru_hash", u64, struct conn_t, conns, 65536);
BPF_TABLE("lru_hash", u64, struct tuple_t, tuples, 65536);
/* (tgid << 32 | fd) -> the peer of a connected UDP (or other non-TCP inet) socket. */
BPF_TABLE("lru_hash", u64, struct udp_peer_t, udp_peers, 65536);
/* (tgid << 32 | fd) -> generation that user space wants no data from (not a protocol it parses). */
BPF_HASH(disabled, u64, u32, 65536);
/* [0] = 1 once user space has every probe attached; nothing is traced before. bcc attaches the
 * probes one by one, verifying each program on the way (the receive side's tracepoint can be
 * live up to a second before the send side's). Tracing while only some are
 * attached sees one direction of a connection without the other: a server's requests without
 * their responses, which pair every later response with the wrong request. */
BPF_ARRAY(ready, u32, 1);
/* What the user (or pxq, for its own helper processes) asked never to trace. A pid is ignored
 * when user space says so, when an ignored process forks it (task_newtask), or when it execs a
 * program named in ignored_comms; no longer at its exit (the pid may be reused). With FILTER_PIDS
 * an ignored pid is PXQ_PID_IGNORED in allowed_pids (one lookup per call decides both), else it is
 * in ignored_pids. A cgroup is matched exactly: a task in a cgroup below an ignored one is traced. */
#define PXQ_PID_TRACED 1
#define PXQ_PID_IGNORED 2
struct comm_key_t {
    char comm[16];
};
#if !FILTER_PIDS
BPF_HASH(ignored_pids, u32, u8, 65536);
#endif
BPF_HASH(ignored_comms, struct comm_key_t, u8, 256);
BPF_HASH(ignored_cgroups, u64, u8, 1024);
BPF_HASH(traced_cgroups, u64, u8, 1024);

#if IGNORE_PIDS
static __always_inline void ignore_pid(u32 tgid) {
    u8 ignored = PXQ_PID_IGNORED;
#if FILTER_PIDS
    allowed_pids.update(&tgid, &ignored);
#else
    ignored_pids.update(&tgid, &ignored);
#endif
}

static __always_inline int pid_ignored(u32 tgid) {
#if FILTER_PIDS
    u8 *state = allowed_pids.lookup(&tgid);
    return state && *state == PXQ_PID_IGNORED;
#else
    return ignored_pids.lookup(&tgid) != 0;
#endif
}
#endif

static __always_inline void notes_held_add(s64 delta) {
    int zero = 0;
    u64 *n = notes_held.lookup(&zero);
    if (n)
        __sync_fetch_and_add(n, (u64)delta);
}

/* No thread has a call noted (see notes_held): a syscall exit has nothing to take. */
static __always_inline int no_notes_held(void) {
    int zero = 0;
    u64 *n = notes_held.lookup(&zero);
    return n && *n == 0;
}

/* The thread's noted call (ap->syscall != 0) is done with: marked so, and counted off notes_held. */
static __always_inline void drop_note(struct active_t *ap) {
    ap->syscall = 0;
    notes_held_add(-1);
}

/* The current thread's `active` entry (created empty when `create` and missing); 0 when none. */
static __always_inline struct active_t *current_active(int create) {
    struct task_struct *task = (struct task_struct *)bpf_get_current_task_btf();
    return active.task_storage_get(task, 0, create ? BPF_LOCAL_STORAGE_GET_F_CREATE : 0);
}

static __always_inline void count_drop(u32 reason) {
    u64 *n = drops.lookup(&reason);
    if (n)
        __sync_fetch_and_add(n, 1);
}

/* Every event starts here (a data call, an open, close, process exit): nothing before `ready`. */
static __always_inline int pid_allowed(u32 tgid) {
    if (tgid == SELF_PID)
        return 0;
    int zero = 0;
    u32 *on = ready.lookup(&zero);
    if (!on || !*on)
        return 0;
#if FILTER_PIDS
    u8 *state = allowed_pids.lookup(&tgid); /* also says whether it is ignored */
    if (!state || *state != PXQ_PID_TRACED)
        return 0;
#endif
    return 1;
}

/* The ignore rules that the pid filter's lookup does not decide already (no pid filter: the
 * ignored pids; always: the cgroups), checked only where a call turned out to be an inet socket's,
 * and at process events, not on every call: most calls of most processes are not a socket's, and
 * each rule costs a lookup (a cgroup a helper call too). Whatever reaches the ring buffer passes
 * here first. tgid is always the current task's. */
static __always_inline int ignored_late(u32 tgid) {
#if IGNORE_PIDS && !FILTER_PIDS
    if (ignored_pids.lookup(&tgid))
        return 1;
#endif
#if IGNORE_CGROUPS || TRACE_CGROUPS
    u64 cgroup = bpf_get_current_cgroup_id();
#endif
#if IGNORE_CGROUPS
    if (ignored_cgroups.lookup(&cgroup))
        return 1;
#endif
#if TRACE_CGROUPS
    if (!traced_cgroups.lookup(&cgroup))
        return 1;
#endif
    return 0;
}

static __always_inline u32 next_gen(void) {
    int zero = 0;
    u64 *g = gen_counter.lookup(&zero);
    if (!g)
        return 0;
    return (u32)(__sync_fetch_and_add(g, 1) + 1);
}

static __always_inline u64 conn_key(u32 tgid, s32 fd) {
    return ((u64)tgid << 32) | (u32)fd;
}

static __always_inline u16 swap16(u16 v) {
    return (u16)((v << 8) | (v >> 8));
}

static __always_inline int is_egress(u16 sys) {
    return sys == PXQ_SYS_WRITE || sys == PXQ_SYS_WRITEV || sys == PXQ_SYS_SENDTO ||
           sys == PXQ_SYS_SENDMSG || sys == PXQ_SYS_SENDMMSG || sys == PXQ_SYS_SENDFILE;
}

/* Calls whose bytes never pass through user memory: only their count is known. */
static __always_inline int is_counted_only(u16 sys) {
    return sys == PXQ_SYS_SENDFILE || sys == PXQ_SYS_SPLICE;
}

/* ---- entry: remember the call -------------------------------------------------------------- */

/* PXQ_SYS_* for an x86-64 syscall number; 0 for every other call. */
static __always_inline u16 traced_syscall(u64 nr) {
    switch (nr) {
    case NR_READ: return PXQ_SYS_READ;
    case NR_WRITE: return PXQ_SYS_WRITE;
    case NR_READV: return PXQ_SYS_READV;
    case NR_WRITEV: return PXQ_SYS_WRITEV;
    case NR_SENDTO: return PXQ_SYS_SENDTO;
    case NR_RECVFROM: return PXQ_SYS_RECVFROM;
    case NR_SENDMSG: return PXQ_SYS_SENDMSG;
    case NR_RECVMSG: return PXQ_SYS_RECVMSG;
    case NR_SENDMMSG: return PXQ_SYS_SENDMMSG;
    case NR_RECVMMSG: return PXQ_SYS_RECVMMSG;
    case NR_SENDFILE: return PXQ_SYS_SENDFILE;
    case NR_SPLICE: return PXQ_SYS_SPLICE;
    case NR_CONNECT: return PXQ_SYS_CONNECT;
    case NR_ACCEPT: return PXQ_SYS_ACCEPT;
    case NR_ACCEPT4: return PXQ_SYS_ACCEPT4;
    case NR_CLOSE: return PXQ_SYS_CLOSE;
    }
    return 0;
}

static __always_inline int is_open_call(u16 sys) {
    return sys == PXQ_SYS_CONNECT || sys == PXQ_SYS_ACCEPT || sys == PXQ_SYS_ACCEPT4;
}

/* A small event: the header only, zeroed, stamped with who and when. */
static __always_inline struct pxq_sock_event *reserve_small(u16 kind, u32 tgid, s32 fd) {
    struct pxq_sock_event *e = events.ringbuf_reserve(sizeof(struct pxq_sock_event));
    if (!e) {
        count_drop(PXQ_DROP_RINGBUF_FULL);
        return 0;
    }
    __builtin_memset(e, 0, sizeof(*e));
    e->ts_ns = bpf_ktime_get_ns();
    e->kind = kind;
    e->pid = tgid;
    e->fd = fd;
    return e;
}

/* close(fd): the end of the connection on (tgid, fd), if the tracer knows one there. */
static __always_inline int enter_close(u64 id, s32 fd) {
    u32 tgid = id >> 32;
    if (fd < 0)
        return 0;
    u64 key = conn_key(tgid, fd);
    /* Lookups before deletes: most closes (files, pipes, TCP sockets) have no udp_peers or
     * disabled entry, and a lookup takes no lock where a hash delete takes its bucket's. A UDP
     * socket connected but not (yet) carrying data has no conns entry: its peer goes here too. */
    if (udp_peers.lookup(&key))
        udp_peers.delete(&key);
    struct conn_t *c = conns.lookup(&key);
    if (!c)
        return 0;
    u32 gen = c->gen;
    u8 role = c->role;
    u64 sent = c->pos_egress, recv = c->pos_ingress;
    conns.delete(&key);
    if (disabled.lookup(&key))
        disabled.delete(&key);
    struct pxq_sock_event *e = reserve_small(PXQ_EV_CLOSE, tgid, fd);
    if (!e)
        return 0;
    e->gen = gen;
    e->role = role;
    e->pos = sent; /* the connection's totals, also of bytes never sent as events (conn_stats) */
    e->size = recv;
    e->syscall = PXQ_SYS_CLOSE;
    events.ringbuf_submit(e, 0);
    return 0;
}

/* The calling task's user registers; -1 when it has none a 64-bit syscall set (a kernel thread,
 * whose sends are no process's calls, or a compat task, whose numbers are i386's). */
static __always_inline int read_user_regs(struct user_regs *r) {
    /* Loads straight from the pointer the helper returns (the verifier knows it as the kernel's
     * struct pt_regs, checks each load against the kernel's own BTF and makes it a fault-safe
     * load): the fields used, without a bpf_probe_read_kernel call copying all 72 bytes. */
    u64 base = (u64)bpf_task_pt_regs((struct task_struct *)bpf_get_current_task_btf());
    if (!base)
        return -1;
    struct user_regs *regs = (struct user_regs *)(base + PT_REGS_R8_OFF);
    r->cs = regs->cs;
    if (r->cs != USER_CS)
        return -1;
    r->r8 = regs->r8;
    r->dx = regs->dx;
    r->si = regs->si;
    r->di = regs->di;
    r->orig_ax = regs->orig_ax;
    return 0;
}

/* The call `sys` as its registers name it: fd, buffer / iovec array / msghdr / mmsghdr array,
 * count, sockaddr. */
static __always_inline void call_from_regs(struct active_t *a, u16 sys, struct user_regs *r) {
    a->syscall = sys;
    a->fd = (s32)r->di;
    a->buf = r->si;
    a->vlen = 0;
    a->addr = 0;
    switch (sys) {
    case PXQ_SYS_READV:
    case PXQ_SYS_WRITEV:
    case PXQ_SYS_SENDMMSG:
    case PXQ_SYS_RECVMMSG:
        a->vlen = r->dx; /* iovec or message count */
        break;
    case PXQ_SYS_SENDFILE:
        a->buf = 0; /* out_fd is the first argument */
        break;
    case PXQ_SYS_SPLICE:
        a->fd = (s32)r->dx; /* fd_out (a socket when sock_send_length fires); fd_in in vlen */
        a->buf = 0;
        a->vlen = (u64)(u32)r->di;
        break;
    case PXQ_SYS_SENDTO:
    case PXQ_SYS_RECVFROM:
        a->addr = r->r8; /* the 5th argument: the datagram's peer */
        break;
    }
}

/* The call in flight on a socket the sock tracepoint named (sk: an opaque key, never read). */
static __always_inline void socket_call_from_regs(struct active_t *a, u16 sys, struct user_regs *r, u64 sk,
                                                  u16 family, u16 protocol) {
    call_from_regs(a, sys, r);
    a->is_sock = 1;
    a->sk = sk;
    a->family = family;
    a->protocol = protocol;
}

/* Calls whose data waits for their syscall exit instead of going out at the sock tracepoint: a
 * UDP recvfrom/recvmsg (the kernel writes the sender's address to user memory after
 * sock_recvmsg returns), and sendmmsg/recvmmsg (one sock_*msg per message; each message's length
 * is in user memory only after it). */
static __always_inline int taken_at_exit(u16 sys, u16 protocol) {
    return sys == PXQ_SYS_SENDMMSG || sys == PXQ_SYS_RECVMMSG ||
           (protocol == PXQ_IPPROTO_UDP && (sys == PXQ_SYS_RECVFROM || sys == PXQ_SYS_RECVMSG));
}

TRACEPOINT_PROBE(sock, inet_sock_set_state) {
    if (args->protocol != PXQ_IPPROTO_TCP)
        return 0;
    u64 sk = (u64)args->skaddr;
    if (args->newstate == PXQ_TCP_SYN_SENT) {
        /* tcp_v4_connect/tcp_v6_connect run in the connecting thread: in a connect() call, a TCP
         * connect, whose exit (sys_exit_connect) finds the socket here. */
        struct user_regs r = {};
        if (!pid_allowed(bpf_get_current_pid_tgid() >> 32) || read_user_regs(&r) != 0 || r.orig_ax != NR_CONNECT)
            return 0;
        struct active_t *a = current_active(1);
        if (a) {
            if (!a->syscall)
                notes_held_add(1);
            a->syscall = PXQ_SYS_CONNECT;
            a->is_sock = 1;
            a->sk = sk;
            a->family = args->family;
            a->protocol = PXQ_IPPROTO_TCP;
            a->peek = 0;
        }
    } else if (args->newstate == PXQ_TCP_ESTABLISHED) {
        struct tuple_t t = {};
        t.family = args->family;
        t.lport = args->sport;
        t.rport = args->dport;
        if (args->family == PXQ_AF_INET6) {
            __builtin_memcpy(t.laddr, args->saddr_v6, 16);
            __builtin_memcpy(t.raddr, args->daddr_v6, 16);
        } else {
            __builtin_memcpy(t.laddr, args->saddr, 4);
            __builtin_memcpy(t.raddr, args->daddr, 4);
        }
        tuples.update(&sk, &t);
    } else if (args->newstate == PXQ_TCP_CLOSE) {
        tuples.delete(&sk);
    }
    return 0;
}

/* ---- process identity ---------------------------------------------------------------------- */

/* Who a process is, for a PROC_INFO event: user space prefers /proc, but a short-lived client
 * (curl) is often gone before user space reads it. Filled at fork (start time: the kernel stamps
 * the new task's start_boottime in copy_process just before task_newtask fires, on the same
 * clock) and at exec (comm and argv), or at the first connection (the thread's comm) for a
 * process that started before the tracer. Only tracepoint fields, helpers, pt_regs and user
 * memory are read. */
#define PXQ_CLONE_THREAD 0x00010000
#define PT_REGS_CS_OFF 136
#define PT_REGS_SP_OFF 152
#define MAX_ARGC 65536

struct proc_t {
    u64 start_ns;  /* CLOCK_BOOTTIME at fork; 0: not seen forking */
    u32 args_len;  /* bytes of info.args held */
    u8 announced;  /* a PROC_INFO event went out since the last fork or exec */
    u8 reserved[3];
    struct pxq_proc_info info;
};

struct proc_info_event {
    struct pxq_sock_event ev;
    struct pxq_proc_info info;
};

BPF_TABLE("lru_hash", u32, struct proc_t, procs, PROCS_SIZE);
BPF_PERCPU_ARRAY(proc_blank, struct proc_t, 1); /* never written: the all-zero entry to insert */

/* procs[tgid], inserted empty when missing; 0 when the map refuses. */
static __always_inline struct proc_t *proc_entry(u32 tgid, int fresh) {
    struct proc_t *p = procs.lookup(&tgid);
    if (p && !fresh)
        return p;
    int zero = 0;
    struct proc_t *blank = proc_blank.lookup(&zero);
    if (!blank)
        return 0;
    procs.update(&tgid, blank);
    return procs.lookup(&tgid);
}

/* A new process (not a thread) of a traced parent (or of pxq itself, which is never traced but
 * whose children may be): remember when it started. */
TRACEPOINT_PROBE(task, task_newtask) {
    if (args->clone_flags & PXQ_CLONE_THREAD)
        return 0;
    u32 parent = bpf_get_current_pid_tgid() >> 32;
#if IGNORE_PIDS
    if (pid_ignored(parent)) {
        ignore_pid((u32)args->pid);
        return 0;
    }
#endif
    if (parent != SELF_PID && (!pid_allowed(parent) || ignored_late(parent)))
        return 0;
    struct proc_t *p = proc_entry((u32)args->pid, 1); /* whatever this pid was before is gone */
    if (!p)
        return 0;
    p->start_ns = bpf_ktime_get_boot_ns();
    bpf_probe_read_kernel(p->info.comm, sizeof(p->info.comm), args->comm);
    return 0;
}

/* A successful execve/execveat, about to return to the new program (sched_process_exec fires
 * once the new image is set up): its comm is set, and its stack holds (x86-64 ELF ABI) argc,
 * argv[0..argc-1], NULL, envp[0], ...; the argv strings lie back to back from argv[0] up to
 * envp[0]'s first string. The user registers come from bpf_task_pt_regs (the pointer is only
 * handed to helpers); a tracepoint here, not a syscall exit, which no program hooks for execs. */
TRACEPOINT_PROBE(sched, sched_process_exec) {
    u64 regs = (u64)bpf_task_pt_regs((struct task_struct *)bpf_get_current_task_btf());
    if (!regs)
        return 0;
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
#if IGNORE_COMMS
    struct comm_key_t name = {};
    bpf_get_current_comm(name.comm, sizeof(name.comm));
    if (ignored_comms.lookup(&name)) {
        ignore_pid(tgid);
        return 0;
    }
#endif
    if (!pid_allowed(tgid) || ignored_late(tgid))
        return 0;
    u64 cs = 0, sp = 0;
    if (bpf_probe_read_kernel(&cs, sizeof(cs), (void *)(regs + PT_REGS_CS_OFF)) != 0 || cs == USER32_CS)
        return 0;
    if (bpf_probe_read_kernel(&sp, sizeof(sp), (void *)(regs + PT_REGS_SP_OFF)) != 0)
        return 0;
    struct proc_t *p = proc_entry(tgid, 0);
    if (!p)
        return 0;
    p->announced = 0; /* a new program: say who it is again at its next connection */
    p->args_len = 0;
    bpf_get_current_comm(p->info.comm, sizeof(p->info.comm));
    u64 argc = 0, first = 0, env = 0;
    bpf_probe_read_user(&argc, sizeof(argc), (void *)sp);
    bpf_probe_read_user(&first, sizeof(first), (void *)(sp + 8));
    if (argc == 0 || argc > MAX_ARGC || first == 0)
        return 0;
    bpf_probe_read_user(&env, sizeof(env), (void *)(sp + 8 * (argc + 2)));
    if (env > first) {
        u64 len = env - first;
        if (len > PXQ_PROC_ARGS_MAX)
            len = PXQ_PROC_ARGS_MAX;
        if (bpf_probe_read_user(p->info.args, len, (void *)first) == 0)
            p->args_len = (u32)len;
    } else {
        /* No environment to bound argv: argv[0] alone. */
        long n = bpf_probe_read_user_str(p->info.args, sizeof(p->info.args), (void *)first);
        if (n > 0)
            p->args_len = (u32)n;
    }
    return 0;
}

/* Before the first event of a connection: a PROC_INFO event for its process, once. */
static __always_inline void announce_process(u32 tgid) {
    struct proc_t *p = proc_entry(tgid, 0);
    if (!p || p->announced)
        return;
    if (!p->info.comm[0])
        bpf_get_current_comm(p->info.comm, sizeof(p->info.comm)); /* started before the tracer */
    struct proc_info_event *e = events.ringbuf_reserve(sizeof(struct proc_info_event));
    if (!e) {
        count_drop(PXQ_DROP_RINGBUF_FULL);
        return; /* the next connection tries again */
    }
    p->announced = 1;
    __builtin_memset(&e->ev, 0, sizeof(e->ev));
    e->ev.ts_ns = bpf_ktime_get_ns();
    e->ev.kind = PXQ_EV_PROC_INFO;
    e->ev.pid = tgid;
    e->ev.fd = -1;
    e->ev.pos = p->start_ns;
    u32 n = p->args_len;
    if (n > PXQ_PROC_ARGS_MAX)
        n = PXQ_PROC_ARGS_MAX;
    e->ev.data_len = PXQ_PROC_COMM_LEN + n;
    bpf_probe_read_kernel(&e->info, sizeof(e->info), &p->info);
    events.ringbuf_submit(e, 0);
}

/* ---- a data call: copy what moved ---------------------------------------------------------- */

/* Send the staged header plus `fill` data bytes. */
static __always_inline void emit_staged(struct scratch_t *sc, u64 pos, u64 fill) {
    sc->ev.pos = pos;
    sc->ev.data_len = (u32)fill;
    u64 len = sizeof(struct pxq_sock_event) + (fill & (2 * MAX_DATA - 1));
    if (events.ringbuf_output(&sc->ev, len, 0) != 0)
        count_drop(PXQ_DROP_RINGBUF_FULL);
}

/* One step of the walk: load the next message or iovec, or copy one piece of the current
 * buffer into the staged event (and send the event when full). Returns 0 when the walk ends. */
static __always_inline int walk_step(struct scratch_t *sc) {
    volatile struct walk_t *w = &sc->w;
    if (w->remaining == 0)
        return 0;
    if (w->seg_len == 0) {
        if (w->mode == MODE_BUF)
            return 0;
        if (w->mode == MODE_MMSG && (w->msg_left == 0 || w->iov_idx >= w->iov_cnt)) {
            u64 idx = w->msg_idx;
            if (idx >= w->msg_cnt || idx >= MAX_MMSG)
                return 0;
            u64 m = w->mmsg + idx * MMSGHDR_SIZE;
            u64 v[2] = {0, 0};
            u32 mlen = 0;
            bpf_probe_read_user(v, sizeof(v), (void *)(m + MSGHDR_IOV_OFF));
            bpf_probe_read_user(&mlen, sizeof(mlen), (void *)(m + MMSGHDR_LEN_OFF));
            w->iov = v[0];
            w->iov_cnt = v[1];
            w->msg_left = mlen;
            w->iov_idx = 0;
            w->msg_idx = idx + 1;
            return 1;
        }
        u64 idx = w->iov_idx;
        if (idx >= w->iov_cnt)
            return 0;
        if (idx >= MAX_IOV) {
            count_drop(PXQ_DROP_IOV_TOO_LONG);
            return 0;
        }
        u64 vec[2] = {0, 0};
        if (bpf_probe_read_user(vec, sizeof(vec), (void *)(w->iov + idx * IOVEC_SIZE)) != 0) {
            count_drop(PXQ_DROP_READ_FAILED);
            return 0;
        }
        u64 len = vec[1];
        u64 rem = w->remaining;
        if (len > rem)
            len = rem;
        if (w->mode == MODE_MMSG) {
            u64 left = w->msg_left;
            if (len > left)
                len = left;
            w->msg_left = left - len;
        }
        w->iov_idx = idx + 1;
        w->seg_base = vec[0];
        w->seg_len = len;
        return 1;
    }
    u64 fill = w->fill & (MAX_DATA - 1);
    u64 n = MAX_DATA - fill;
    u64 seg_len = w->seg_len;
    if (n > seg_len)
        n = seg_len;
    u64 left = w->remaining; /* the copy limit can end the walk inside a buffer */
    if (n > left)
        n = left;
    n &= (2 * MAX_DATA - 1);
    u64 base = w->seg_base;
    if (bpf_probe_read_user(&sc->data[fill], n, (void *)base) != 0) {
        count_drop(PXQ_DROP_READ_FAILED);
        return 0;
    }
    fill += n;
    w->seg_base = base + n;
    w->seg_len = seg_len - n;
    u64 rem = w->remaining - n;
    w->remaining = rem;
    if (fill >= MAX_DATA || rem == 0) {
        u64 sent = w->sent;
        emit_staged(sc, w->pos + sent, fill);
        w->sent = sent + fill;
        fill = 0;
    }
    w->fill = fill;
    return 1;
}

/* The calling thread's call noted in `active` (*ap), copied into *a and marked done. */
static __always_inline void take_active(struct active_t *ap, struct active_t *a) {
    *a = *ap;
    drop_note(ap);
}

/* A datagram's peer into the event: from the sockaddr at user address `sa` (sendto's dest_addr,
 * recvfrom's src_addr as the kernel filled it, a msghdr's msg_name), else from the socket's
 * connect() (udp_peers), else none (family 0). */
static __always_inline void set_datagram_peer(struct pxq_sock_event *ev, u64 sa, u64 key) {
    ev->flags = PXQ_F_DATAGRAM;
    ev->family = 0;
    ev->rport = 0;
    ev->lport = 0; /* not known without reading kernel structs: user space looks it up in /proc */
    __builtin_memset(ev->raddr, 0, 16);
    __builtin_memset(ev->laddr, 0, 16);
    u16 family = 0, port = 0;
    if (sa)
        bpf_probe_read_user(&family, sizeof(family), (void *)sa);
    if (family == PXQ_AF_INET || family == PXQ_AF_INET6) {
        bpf_probe_read_user(&port, sizeof(port), (void *)(sa + SOCKADDR_PORT_OFF));
        ev->family = family;
        ev->rport = swap16(port);
        if (family == PXQ_AF_INET)
            bpf_probe_read_user(ev->raddr, 4, (void *)(sa + SOCKADDR_IN_ADDR_OFF));
        else
            bpf_probe_read_user(ev->raddr, 16, (void *)(sa + SOCKADDR_IN6_ADDR_OFF));
        return;
    }
    struct udp_peer_t *p = udp_peers.lookup(&key);
    if (p) {
        ev->family = p->family;
        ev->rport = p->port;
        __builtin_memcpy(ev->raddr, p->addr, 16);
    }
}

/* sendmmsg/recvmmsg on a UDP socket: each message is its own datagram with its own peer (its
 * msg_name). Each gets one event with the head of its first iovec (up to MAX_DATA bytes; DNS
 * messages are far smaller) and, when that is not all of it, a filler for the rest. One message
 * per step; like walk_step, the step keeps its place in map memory (w->msg_idx, w->pos), so that
 * the verifier sees the same unknown values at the top of every step and prunes. */
static __always_inline int datagram_step(struct scratch_t *sc, u64 key) {
    volatile struct walk_t *w = &sc->w;
    u64 idx = w->msg_idx;
    if (idx >= w->msg_cnt || idx >= MAX_MMSG)
        return 0;
    w->msg_idx = idx + 1;
    u64 hdr = w->mmsg + idx * MMSGHDR_SIZE;
    u32 mlen = 0;
    u64 name = 0;
    u64 v[2] = {0, 0}; /* msg_iov, msg_iovlen */
    bpf_probe_read_user(&mlen, sizeof(mlen), (void *)(hdr + MMSGHDR_LEN_OFF));
    if (mlen == 0)
        return 1;
    bpf_probe_read_user(&name, sizeof(name), (void *)(hdr + MSGHDR_NAME_OFF));
    bpf_probe_read_user(v, sizeof(v), (void *)(hdr + MSGHDR_IOV_OFF));
    set_datagram_peer(&sc->ev, name, key);
    u64 vec[2] = {0, 0}; /* the first iovec: base, length */
    if (v[1] > 0)
        bpf_probe_read_user(vec, sizeof(vec), (void *)v[0]);
    u64 n = vec[1] < mlen ? vec[1] : mlen;
    if (n > MAX_DATA)
        n = MAX_DATA;
    if (n > COPY_LIMIT)
        n = COPY_LIMIT;
    u64 pos = w->pos;
    w->pos = pos + mlen;
    sc->ev.size = mlen;
    if (n > 0 && bpf_probe_read_user(sc->data, n & (2 * MAX_DATA - 1), (void *)vec[0]) != 0) {
        count_drop(PXQ_DROP_READ_FAILED);
        n = 0;
    }
    if (n > 0)
        emit_staged(sc, pos, n);
    if (n < mlen) {
        if (n < COPY_LIMIT)
            count_drop(PXQ_DROP_TRUNCATED);
        sc->ev.flags |= PXQ_F_FILLER;
        sc->ev.size = mlen - n;
        emit_staged(sc, pos + n, 0);
    }
    return 1;
}

/* A data call on an inet socket (*call: from the registers and the sock tracepoint) that moved
 * `ret` bytes (sendmmsg/recvmmsg: messages): count them, and copy what the parsers need. */
static __always_inline int exit_data(u64 id, struct active_t *call, long ret) {
    struct active_t a = *call;
    /* splice: into a socket when sock_sendmsg named one during the call. */
    u8 dir = is_egress(a.syscall) || a.syscall == PXQ_SYS_SPLICE ? PXQ_DIR_EGRESS : PXQ_DIR_INGRESS;
    if (a.syscall == PXQ_SYS_SPLICE && !a.is_sock && ret > 0) {
        /* Not into a socket: out of one? tcp_splice_read fires no sock tracepoint, so the input
         * fd counts when it is a TCP connection the tracer knows, under the socket it had. */
        s32 fd_in = (s32)(u32)a.vlen;
        u64 in_key = conn_key(id >> 32, fd_in);
        struct conn_t *in = conns.lookup(&in_key);
        if (!in)
            return 0;
        a.fd = fd_in;
        a.is_sock = 1;
        a.sk = in->sk;
        a.family = PXQ_AF_INET; /* conns holds TCP over IPv4/IPv6 only */
        a.protocol = PXQ_IPPROTO_TCP;
        dir = PXQ_DIR_INGRESS;
    }
    if (!a.is_sock || a.peek || ret <= 0)
        return 0;
    if ((a.family != PXQ_AF_INET && a.family != PXQ_AF_INET6) ||
        (a.protocol != PXQ_IPPROTO_TCP && a.protocol != PXQ_IPPROTO_UDP))
        return 0;
    u8 datagram = a.protocol == PXQ_IPPROTO_UDP;

    u32 tgid = id >> 32;
    if (ignored_late(tgid))
        return 0;
    u64 key = conn_key(tgid, a.fd);
    struct conn_t *c = conns.lookup(&key);
    if (c && c->sk == 0)
        c->sk = a.sk; /* accepted: the first data names its socket */
    if (!c || c->sk != a.sk) {
        /* A connection opened before the tracer attached (or whose open was missed), or the fd
         * now holds another socket (dup2, close_range, exec: a close the tracer did not see). */
        announce_process(tgid);
        struct conn_t fresh = {};
        fresh.gen = next_gen();
        fresh.sk = a.sk;
        if (conns.update(&key, &fresh) != 0) {
            count_drop(PXQ_DROP_CONN_TABLE_FULL);
            return 0;
        }
        c = conns.lookup(&key);
        if (!c)
            return 0;
    }
    u32 cpu = bpf_get_smp_processor_id();
    struct scratch_t *sc = scratch.lookup(&cpu);
    if (!sc)
        return 0;
    volatile struct walk_t *w = &sc->w;
    u64 total = (u64)ret;
    w->mode = MODE_BUF;
    w->seg_base = a.buf;
    w->seg_len = total;
    w->iov = 0;
    w->iov_cnt = 0;
    w->iov_idx = 0;
    w->mmsg = 0;
    w->msg_cnt = 0;
    w->msg_idx = 0;
    w->msg_left = 0;
    if (a.syscall == PXQ_SYS_READV || a.syscall == PXQ_SYS_WRITEV) {
        w->mode = MODE_IOV;
        w->iov = a.buf;
        w->iov_cnt = a.vlen;
        w->seg_len = 0;
    } else if (a.syscall == PXQ_SYS_SENDMSG || a.syscall == PXQ_SYS_RECVMSG) {
        u64 v[2] = {0, 0}; /* msg_iov, msg_iovlen */
        bpf_probe_read_user(v, sizeof(v), (void *)(a.buf + MSGHDR_IOV_OFF));
        w->mode = MODE_IOV;
        w->iov = v[0];
        w->iov_cnt = v[1];
        w->seg_len = 0;
    } else if (a.syscall == PXQ_SYS_SENDMMSG || a.syscall == PXQ_SYS_RECVMMSG) {
        /* ret counts messages; their byte counts are in each mmsghdr's msg_len. */
        u64 msgs = total;
        if (msgs > MAX_MMSG) {
            count_drop(PXQ_DROP_IOV_TOO_LONG);
            msgs = MAX_MMSG;
        }
        total = 0;
        for (int m = 0; m < MAX_MMSG; m++) {
            if (m >= msgs)
                break;
            u32 mlen = 0;
            bpf_probe_read_user(&mlen, sizeof(mlen), (void *)(a.buf + m * MMSGHDR_SIZE + MMSGHDR_LEN_OFF));
            total += mlen;
        }
        if (total == 0)
            return 0;
        w->mode = MODE_MMSG;
        w->mmsg = a.buf;
        w->msg_cnt = msgs;
        w->seg_len = 0;
    }

    u64 pos;
    if (dir == PXQ_DIR_EGRESS)
        pos = __sync_fetch_and_add(&c->pos_egress, total);
    else
        pos = __sync_fetch_and_add(&c->pos_ingress, total);
    /* A connection user space switched off (not a protocol it parses) still counts its bytes,
     * for conn_stats (read from this map, and sent with its CLOSE), but sends no events. */
    u32 *off = disabled.lookup(&key);
    if (off && *off == c->gen)
        return 0;
    w->remaining = total < COPY_LIMIT ? total : COPY_LIMIT;
    w->fill = 0;
    w->sent = 0;
    w->pos = pos;

    sc->ev.ts_ns = bpf_ktime_get_ns();
    sc->ev.size = total;
    sc->ev.pid = tgid;
    sc->ev.fd = a.fd;
    sc->ev.gen = c->gen;
    sc->ev.kind = PXQ_EV_DATA;
    sc->ev.flags = 0;
    sc->ev.direction = dir;
    sc->ev.role = c->role;
    sc->ev.syscall = a.syscall;
    sc->ev.reserved = 0;
    sc->ev.family = a.family;
    sc->ev.lport = 0;
    sc->ev.rport = 0;
    if (!c->tuple_sent) {
        struct tuple_t *t = tuples.lookup(&a.sk);
        if (t) {
            sc->ev.flags = PXQ_F_TUPLE;
            sc->ev.family = t->family;
            sc->ev.lport = t->lport;
            sc->ev.rport = t->rport;
            __builtin_memcpy(sc->ev.laddr, t->laddr, 16);
            __builtin_memcpy(sc->ev.raddr, t->raddr, 16);
            c->tuple_sent = 1;
        }
    }

    if (datagram) {
        if (w->mode == MODE_MMSG) {
            w->pos = pos;
#pragma clang loop unroll(disable)
            for (int step = 0; step < MAX_MMSG; step++) {
                if (!datagram_step(sc, key))
                    break;
            }
            return 0;
        }
        /* One datagram: its peer from the call (sendto/recvfrom's sockaddr, msghdr.msg_name),
         * else the socket's connect(). The walk below copies it like a TCP call's bytes. */
        u64 sa = a.addr;
        if (a.syscall == PXQ_SYS_SENDMSG || a.syscall == PXQ_SYS_RECVMSG)
            bpf_probe_read_user(&sa, sizeof(sa), (void *)(a.buf + MSGHDR_NAME_OFF));
        set_datagram_peer(&sc->ev, sa, key);
    }

    if (is_counted_only(a.syscall)) {
        /* The bytes went from a file or pipe inside the kernel: only their count is known. */
        sc->ev.flags |= PXQ_F_FILLER;
        emit_staged(sc, pos, 0);
        return 0;
    }

    u64 fill = 0, sent = 0;
    u64 iov_cnt = w->iov_cnt;
    u64 vecs[2 * FEW_IOV]; /* a few iovecs: base, length */
    if (w->mode == MODE_IOV && iov_cnt <= FEW_IOV && total <= MAX_DATA && total <= COPY_LIMIT &&
        bpf_probe_read_user(vecs, iov_cnt * IOVEC_SIZE, (void *)w->iov) == 0) {
        /* writev/readv/sendmsg/recvmsg of a few buffers whose bytes fit one event (nginx's
         * responses: headers, then body): the iovec array read at once, each buffer copied after
         * the last, without the walk's steps and their stores to map memory. A failed read ends
         * as the walk's would (counted; what was copied sent, the rest as a filler). An array that
         * cannot be read at once is left to the walk, which reads it iovec by iovec. */
#pragma unroll
        for (int i = 0; i < FEW_IOV; i++) {
            if (i >= iov_cnt || fill >= total)
                break;
            u64 len = vecs[2 * i + 1];
            if (len > total - fill)
                len = total - fill;
            if (len == 0)
                continue;
            u64 at = fill & (MAX_DATA - 1); /* fill < total <= MAX_DATA: the mask only tells the verifier */
            if (bpf_probe_read_user(&sc->data[at], len & (2 * MAX_DATA - 1), (void *)vecs[2 * i]) != 0) {
                count_drop(PXQ_DROP_READ_FAILED);
                break;
            }
            fill += len;
        }
    } else if (w->mode == MODE_BUF && total <= MAX_DATA && total <= COPY_LIMIT) {
        /* Most calls: one buffer that fits one event. Copied straight into the staging area and
         * sent, without the walk's steps and their stores to map memory. A failed read ends
         * as the walk's would: counted, and the call sent as a filler. */
        u64 n = total & (2 * MAX_DATA - 1);
        if (bpf_probe_read_user(sc->data, n, (void *)a.buf) == 0) {
            emit_staged(sc, pos, n);
            return 0;
        }
        count_drop(PXQ_DROP_READ_FAILED);
    } else {
#pragma clang loop unroll(disable)
        for (int step = 0; step < MAX_STEPS; step++) {
            if (!walk_step(sc))
                break;
        }
        fill = w->fill & (2 * MAX_DATA - 1);
        sent = w->sent;
    }
    if (fill > 0) {
        emit_staged(sc, pos + sent, fill);
        sent += fill;
    }
    if (sent < total) {
        if (sent < COPY_LIMIT)
            count_drop(PXQ_DROP_TRUNCATED); /* the walk stopped short of the copy limit */
        /* The rest of the call as one filler: its offset and count. */
        sc->ev.flags |= PXQ_F_FILLER;
        sc->ev.size = total - sent;
        emit_staged(sc, pos + sent, 0);
    }
    return 0;
}

/* ---- connection life cycle ----------------------------------------------------------------- */

/* A successful connect() that was not TCP's: remember an inet peer for the socket's calls that
 * name none; AF_UNSPEC dissolves the association (connect(2)). Unix and other families are no
 * inet socket's peer and are not kept. */
static __always_inline void remember_udp_peer(u64 id, s32 fd, u64 sa) {
    u64 key = conn_key(id >> 32, fd);
    u16 family = 0xFFFF, port = 0;
    if (sa)
        bpf_probe_read_user(&family, sizeof(family), (void *)sa);
    if (family == PXQ_AF_UNSPEC) {
        udp_peers.delete(&key);
        return;
    }
    if (family != PXQ_AF_INET && family != PXQ_AF_INET6)
        return;
    struct udp_peer_t p = {};
    p.family = family;
    bpf_probe_read_user(&port, sizeof(port), (void *)(sa + SOCKADDR_PORT_OFF));
    p.port = swap16(port);
    if (family == PXQ_AF_INET)
        bpf_probe_read_user(p.addr, 4, (void *)(sa + SOCKADDR_IN_ADDR_OFF));
    else
        bpf_probe_read_user(p.addr, 16, (void *)(sa + SOCKADDR_IN6_ADDR_OFF));
    udp_peers.update(&key, &p);
}

/* connect() or accept(): a new connection on (tgid, fd), with the peer from user memory. */
static __always_inline int exit_open(u64 id, struct active_t *call, long ret) {
    struct active_t a = *call;
    u8 role;
    s32 fd;
    if (a.syscall == PXQ_SYS_CONNECT) {
        /* Only TCP connects reach SYN_SENT; a non-blocking one returns -EINPROGRESS. */
        if (!a.is_sock) {
            if (ret == 0)
                remember_udp_peer(id, a.fd, a.buf); /* not TCP: maybe a UDP socket's peer */
            return 0;
        }
        if (ret != 0 && ret != -PXQ_EINPROGRESS)
            return 0;
        role = PXQ_ROLE_CLIENT;
        fd = a.fd;
    } else {
        if (ret < 0)
            return 0;
        role = PXQ_ROLE_SERVER;
        fd = (s32)ret;
    }
    u16 family = 0, port = 0;
    if (a.buf)
        bpf_probe_read_user(&family, sizeof(family), (void *)a.buf);
    if (a.buf && family != PXQ_AF_INET && family != PXQ_AF_INET6)
        return 0; /* unix and other families: not traced */

    u32 tgid = id >> 32;
    if (ignored_late(tgid))
        return 0;
    announce_process(tgid);
    u64 key = conn_key(tgid, fd);
    struct conn_t c = {};
    c.gen = next_gen();
    c.role = role;
    c.sk = role == PXQ_ROLE_CLIENT ? a.sk : 0; /* connect: from SYN_SENT; accept: unknown yet */
    if (conns.update(&key, &c) != 0) {
        count_drop(PXQ_DROP_CONN_TABLE_FULL);
        return 0;
    }
    disabled.delete(&key);

    struct pxq_sock_event *e = reserve_small(PXQ_EV_OPEN, tgid, fd);
    if (!e)
        return 0;
    e->gen = c.gen;
    e->role = role;
    e->syscall = a.syscall;
    if (family == PXQ_AF_INET || family == PXQ_AF_INET6) {
        bpf_probe_read_user(&port, sizeof(port), (void *)(a.buf + 2));
        e->flags = PXQ_F_REMOTE;
        e->family = family;
        e->rport = swap16(port);
        if (family == PXQ_AF_INET)
            bpf_probe_read_user(e->raddr, 4, (void *)(a.buf + 4));
        else
            bpf_probe_read_user(e->raddr, 16, (void *)(a.buf + 8));
    }
    events.ringbuf_submit(e, 0);
    return 0;
}

/* ---- the data calls, at the sock tracepoints ------------------------------------------------ */

/* sock_sendmsg / sock_recvmsg in the calling task, after the bytes moved (`ret` of them), on an
 * inet TCP or UDP socket: which call it is and its arguments come from the task's registers. A
 * send or receive inside another call (an open's, a close's, io_uring's, a kernel thread's) is
 * not the task's own data and is left alone. */
static __always_inline int sock_call(u64 sk, u16 family, u16 protocol, long ret, int peek) {
    if ((family != PXQ_AF_INET && family != PXQ_AF_INET6) ||
        (protocol != PXQ_IPPROTO_TCP && protocol != PXQ_IPPROTO_UDP))
        return 0;
    /* Nothing moved (EAGAIN: nginx's read on a keep-alive connection after each response; EOF; an
     * error): no data here, and nothing to note for the exit, where the call returns no bytes
     * either (an mmsg call's or a splice's failing sock_*msg comes after those that moved bytes,
     * which noted the call, or ends the call with its error). */
    if (ret <= 0)
        return 0;
    u64 id = bpf_get_current_pid_tgid();
    if (!pid_allowed(id >> 32))
        return 0;
    struct user_regs r = {};
    if (read_user_regs(&r) != 0)
        return 0;
    u16 sys = traced_syscall(r.orig_ax);
    if (!sys || sys == PXQ_SYS_CLOSE || is_open_call(sys))
        return 0;
    if (taken_at_exit(sys, protocol) || sys == PXQ_SYS_SPLICE) {
        /* Noted for the call's exit (splice: that its bytes went into a socket, see exit_splice). */
        struct active_t *ap = current_active(1);
        if (!ap)
            return 0;
        if (ap->syscall != sys) { /* the call's first socket event */
            if (!ap->syscall)
                notes_held_add(1);
            struct active_t a = {};
            socket_call_from_regs(&a, sys, &r, sk, family, protocol);
            *ap = a;
        }
        if (peek)
            ap->peek = 1;
        if (sys != PXQ_SYS_SPLICE)
            return 0;
    }
    if (peek)
        return 0; /* MSG_PEEK: the same bytes come again */
    struct active_t a = {};
    socket_call_from_regs(&a, sys, &r, sk, family, protocol);
    return exit_data(id, &a, ret);
}

TRACEPOINT_PROBE(sock, sock_send_length) {
    return sock_call((u64)args->sk, args->family, args->protocol, args->ret, 0);
}

TRACEPOINT_PROBE(sock, sock_recv_length) {
    return sock_call((u64)args->sk, args->family, args->protocol, args->ret, args->flags & PXQ_MSG_PEEK);
}

/* ---- the calls that need their syscall's exit (syscalls: tracepoints: only their calls run
 * them, each formats a small perf record first) ------------------------------------------------ */

/* The exit of a call that sock_call left for it (taken_at_exit): its data, with the byte or
 * message count the call returns. Any other call's note is stale and is dropped. */
static __always_inline int exit_noted(u16 sys, long ret) {
    if (no_notes_held())
        return 0; /* the common case: no call of any thread waits for its exit */
    struct active_t *ap = current_active(0);
    if (!ap || !ap->syscall)
        return 0;
    struct active_t a;
    take_active(ap, &a);
    if (a.syscall != sys || a.peek || ret <= 0)
        return 0;
    return exit_data(bpf_get_current_pid_tgid(), &a, ret);
}

TRACEPOINT_PROBE(syscalls, sys_exit_recvfrom) {
    return exit_noted(PXQ_SYS_RECVFROM, args->ret);
}

TRACEPOINT_PROBE(syscalls, sys_exit_recvmsg) {
    return exit_noted(PXQ_SYS_RECVMSG, args->ret);
}

TRACEPOINT_PROBE(syscalls, sys_exit_recvmmsg) {
    return exit_noted(PXQ_SYS_RECVMMSG, args->ret);
}

TRACEPOINT_PROBE(syscalls, sys_exit_sendmmsg) {
    return exit_noted(PXQ_SYS_SENDMMSG, args->ret);
}

/* splice: into a socket, sock_call sent it (and noted so); out of one, tcp_splice_read fires no
 * sock tracepoint: exit_data counts the input fd when it is a TCP connection the tracer knows. */
TRACEPOINT_PROBE(syscalls, sys_exit_splice) {
    struct active_t *ap = current_active(0);
    if (ap && ap->syscall) {
        u16 noted = ap->syscall;
        drop_note(ap);
        if (noted == PXQ_SYS_SPLICE)
            return 0;
    }
    long ret = args->ret;
    u64 id = bpf_get_current_pid_tgid();
    struct user_regs r = {};
    if (ret <= 0 || !pid_allowed(id >> 32) || read_user_regs(&r) != 0)
        return 0;
    struct active_t a = {};
    call_from_regs(&a, PXQ_SYS_SPLICE, &r);
    return exit_data(id, &a, ret);
}

/* connect(): TCP when inet_sock_set_state saw SYN_SENT inside it (and noted the socket). */
TRACEPOINT_PROBE(syscalls, sys_exit_connect) {
    struct active_t a = {};
    struct active_t *ap = current_active(0);
    if (ap && ap->syscall) {
        if (ap->syscall == PXQ_SYS_CONNECT)
            a = *ap;
        drop_note(ap);
    }
    u64 id = bpf_get_current_pid_tgid();
    struct user_regs r = {};
    if (!pid_allowed(id >> 32) || read_user_regs(&r) != 0)
        return 0;
    a.syscall = PXQ_SYS_CONNECT;
    a.fd = (s32)r.di;
    a.buf = r.si; /* the peer's sockaddr */
    return exit_open(id, &a, args->ret);
}

static __always_inline int exit_accept(u16 sys, long ret) {
    u64 id = bpf_get_current_pid_tgid();
    struct user_regs r = {};
    if (!pid_allowed(id >> 32) || read_user_regs(&r) != 0)
        return 0;
    struct active_t a = {};
    a.syscall = sys;
    a.fd = (s32)r.di;
    a.buf = r.si; /* the peer's sockaddr as the kernel filled it, or NULL */
    return exit_open(id, &a, ret);
}

TRACEPOINT_PROBE(syscalls, sys_exit_accept) {
    return exit_accept(PXQ_SYS_ACCEPT, args->ret);
}

TRACEPOINT_PROBE(syscalls, sys_exit_accept4) {
    return exit_accept(PXQ_SYS_ACCEPT4, args->ret);
}

TRACEPOINT_PROBE(syscalls, sys_enter_close) {
    u64 id = bpf_get_current_pid_tgid();
    if (!pid_allowed(id >> 32))
        return 0;
    return enter_close(id, (s32)args->fd);
}

TRACEPOINT_PROBE(sched, sched_process_exit) {
    u64 id = bpf_get_current_pid_tgid();
    u32 tgid = id >> 32;
    if (tgid != (u32)id) {
#if FILTER_PIDS
        u32 tid = (u32)id;
        allowed_pids.delete(&tid); /* a thread sched_process_fork added (see there) */
#endif
        return 0; /* a thread other than the leader */
    }
#if IGNORE_PIDS
    if (pid_ignored(tgid)) { /* the pid may be reused by a process nobody asked to ignore */
#if FILTER_PIDS
        allowed_pids.delete(&tgid);
#else
        ignored_pids.delete(&tgid);
#endif
        return 0;
    }
#endif
    if (!pid_allowed(tgid) || ignored_late(tgid))
        return 0;
#if FILTER_PIDS
    allowed_pids.delete(&tgid); /* the pid may be reused by a process nobody asked for */
#endif
    struct pxq_sock_event *e = reserve_small(PXQ_EV_PROC_EXIT, tgid, -1);
    if (e)
        events.ringbuf_submit(e, 0);
    return 0;
}

#if FILTER_PIDS
/* --pid of a parent whose children do the work (nginx's master and its workers): a process forked
 * by a traced one is traced too, from its first call. Not gated on `ready`: a child forked while
 * the probes attach is one too. The tracepoint also fires for new threads, whose child_pid is a
 * thread id: in allowed_pids it is never looked up (calls are allowed by tgid) and its exit
 * removes it again (sched_process_exit). User space adds the children that exist at start. */
static __always_inline void follow_fork(u32 child) {
    u32 parent = bpf_get_current_pid_tgid() >> 32;
    u8 *state = allowed_pids.lookup(&parent);
    if (!state || *state != PXQ_PID_TRACED)
        return; /* an ignored parent's child is ignored already (task_newtask, which runs first) */
    u8 traced = PXQ_PID_TRACED;
    allowed_pids.update(&child, &traced);
}

TRACEPOINT_PROBE(sched, sched_process_fork) {
    follow_fork(args->child_pid);
    return 0;
}
#endif
