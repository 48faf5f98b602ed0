/* The socket tracer's event record, shared by bpf/socket_trace.c (kernel side) and
 * pxq/agent/socket_tracer.py (the reader).
 *
 * One record type for every event: a fixed header followed, for data events, by data_len bytes.
 * The reader mirrors the header with a ctypes Structure; the loader compiles a _Static_assert
 * for every field offset and the total size of that Structure into the program, so a header
 * and a reader that disagree fail at compile time instead of decoding garbage.
 *
 * The reader also takes the PXQ_EV_*, PXQ_F_*, PXQ_SYS_*, PXQ_ROLE_*, PXQ_DIR_* and PXQ_DROP_*
 * numbers from the #defines below (one per line, "#define NAME number"): keep that form.
 */
#ifndef PXQ_SOCKET_TRACE_H
#define PXQ_SOCKET_TRACE_H

/* Event kinds. */
#define PXQ_EV_DATA 1      /* bytes sent or received on a traced TCP or UDP socket */
#define PXQ_EV_OPEN 2      /* connect() (client) or accept()/accept4() (server) succeeded */
#define PXQ_EV_CLOSE 3     /* close() of a socket fd the tracer knows */
#define PXQ_EV_PROC_EXIT 4 /* a traced process exited (its fds closed without close()) */
#define PXQ_EV_PROC_INFO 5 /* who a process is, before its first OPEN/DATA: see struct pxq_proc_info */

/* Flags. */
#define PXQ_F_TUPLE 1     /* family/laddr/lport/raddr/rport hold the socket's 4-tuple */
#define PXQ_F_REMOTE 2    /* family/raddr/rport hold the peer from connect()/accept() */
#define PXQ_F_FILLER 4    /* data event without bytes: size bytes at pos moved unseen (sendfile,
                             splice, or the part of a call beyond COPY_LIMIT) */
#define PXQ_F_DATAGRAM 8  /* data of one UDP datagram (its events never join another's):
                             family/raddr/rport hold its peer (family 0: not known); size is the
                             datagram's length in its first event, pos its place in the socket's
                             byte count */

/* Direction of a data event. */
#define PXQ_DIR_EGRESS 0  /* sent by the traced process */
#define PXQ_DIR_INGRESS 1 /* received by the traced process */

/* Role of the traced process on a connection (Pixie's trace_role). */
#define PXQ_ROLE_UNKNOWN 0
#define PXQ_ROLE_CLIENT 1
#define PXQ_ROLE_SERVER 2

/* The syscall an event came from. */
#define PXQ_SYS_READ 1
#define PXQ_SYS_WRITE 2
#define PXQ_SYS_READV 3
#define PXQ_SYS_WRITEV 4
#define PXQ_SYS_SENDTO 5
#define PXQ_SYS_RECVFROM 6
#define PXQ_SYS_SENDMSG 7
#define PXQ_SYS_RECVMSG 8
#define PXQ_SYS_SENDMMSG 9
#define PXQ_SYS_RECVMMSG 10
#define PXQ_SYS_CONNECT 11
#define PXQ_SYS_ACCEPT 12
#define PXQ_SYS_ACCEPT4 13
#define PXQ_SYS_CLOSE 14
#define PXQ_SYS_SENDFILE 15
#define PXQ_SYS_SPLICE 16

/* Drop reasons: indexes of the kernel's drop counter array. */
#define PXQ_DROP_RINGBUF_FULL 0   /* ring buffer output/reserve failed: the reader fell behind */
#define PXQ_DROP_TRUNCATED 1      /* the copy walk ran out of steps before COPY_LIMIT (the rest is
                                     sent as a filler) */
#define PXQ_DROP_IOV_TOO_LONG 2   /* more iovec entries (or mmsg messages) than walked */
#define PXQ_DROP_READ_FAILED 3    /* bpf_probe_read_user failed (page not resident) */
#define PXQ_DROP_CONN_TABLE_FULL 4 /* the connection map refused a new entry */
#define PXQ_DROP_COUNT 5

struct pxq_sock_event {
    __u64 ts_ns;     /* bpf_ktime_get_ns() (CLOCK_MONOTONIC) when the call moved its bytes */
    __u64 pos;       /* DATA: stream offset of data[0] in this direction of the connection;
                        CLOSE: bytes the connection sent in all (disabled or not) */
    __u64 size;      /* DATA: bytes the whole call moved (>= data_len); with PXQ_F_FILLER: the
                        bytes this event stands for (from pos on); CLOSE: bytes it received */
    __u32 pid;       /* process id (the kernel's tgid) */
    __s32 fd;
    __u32 gen;       /* connection generation: new for every connection on a (tgid, fd) */
    __u32 data_len;  /* bytes following the header */
    __u16 kind;      /* PXQ_EV_* */
    __u16 flags;     /* PXQ_F_* */
    __u8 direction;  /* PXQ_DIR_* */
    __u8 role;       /* PXQ_ROLE_*, as the kernel knows it */
    __u16 family;    /* AF_INET (2) or AF_INET6 (10) when PXQ_F_TUPLE or PXQ_F_REMOTE */
    __u16 lport;     /* host byte order */
    __u16 rport;     /* host byte order */
    __u16 syscall;   /* PXQ_SYS_* */
    __u16 reserved;
    __u8 laddr[16];  /* IPv4 in the first 4 bytes, network order */
    __u8 raddr[16];
};

/* A PXQ_EV_PROC_INFO event: the header (pid = the tgid; pos = the process's start in
 * CLOCK_BOOTTIME ns, taken when the tracer saw it fork, 0 when it started before the tracer
 * attached; data_len = PXQ_PROC_COMM_LEN + the argv bytes held) followed by this record. Sent once
 * per process, at its first connection the tracer sees (and again after an exec), so that a
 * process which is gone before user space reads /proc (a curl) keeps its name. */
#define PXQ_PROC_COMM_LEN 16
#define PXQ_PROC_ARGS_MAX 256 /* argv bytes kept from exec (NUL-separated, cut beyond this) */
struct pxq_proc_info {
    char comm[PXQ_PROC_COMM_LEN]; /* the process's comm at exec (or fork), else the thread's */
    __u8 args[PXQ_PROC_ARGS_MAX];  /* argv as exec left it on the new stack; empty if no exec seen */
};

#endif /* PXQ_SOCKET_TRACE_H */
