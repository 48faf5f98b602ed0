/* pxq's C fast path for the socket tracer's two hottest byte loops (issue 14, "Socket tracer cost").
 *
 * ring_read: the BPF ring buffer's record walk (RingReader.read in pxq/agent/socket_tracer.py).
 * frame_message: the HTTP/1 plain-message framing (Http1Stitcher._plain_messages in
 * pxq/agent/protocols/http1/stitcher.py): one message of the common shape made into the
 * stitcher's _Message, or None for llhttp; frame_plain: the same framing, its parts as values.
 *
 * http1_batch: the connection tracker's steady state of an HTTP/1 connection (ConnTracker.handle_batch
 * in pxq/agent/conn_tracker.py): one C call per run of events, rows written as HttpRows.add does.
 *
 * ring_take: ring_read and http1_batch in one walk (ConnTracker.handle_records, RingReader.take):
 * the steady state's events read in place from the ring buffer, no SockEvent made for them.
 *
 * These were pure-Python loops of a few bytes calls per item; here they are one C call per batch
 * (ring) or per message (HTTP). Built by tools/build_native.py (tools/setup.sh, the hatch build
 * hook); loaded through pxq/agent/native.py, which checks the build matches this source.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h> /* T_OBJECT_EX: how a __slots__ member is stored */

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifndef PXQ_NATIVE_SOURCE_SHA256
#error "build with -DPXQ_NATIVE_SOURCE_SHA256=... (tools/build_native.py does)"
#endif

/* ---------------------------------------------------------------------------------------------
 * The ring buffer walk.
 *
 * struct pxq_sock_event of bpf/socket_trace.h; EVENT_FIELDS exports its layout so that
 * socket_tracer.py checks it against EventHeader (which the BPF program is compiled against).
 */
struct pxq_sock_event {
    uint64_t ts_ns, pos, size;
    uint32_t pid;
    int32_t fd;
    uint32_t gen, data_len;
    uint16_t kind, flags;
    uint8_t direction, role;
    uint16_t family, lport, rport, syscall, reserved;
    uint8_t laddr[16], raddr[16];
};

#define EVENT_FIELD_COUNT 19 /* the header's 18 fields and the data: SockEvent */
#define RING_BUSY (1u << 31)
#define RING_DISCARD (1u << 30)
#define RING_HEADER 8u

static PyObject *zero_address; /* bytes(16): the address of almost every data event (not sent) */

/* An address field: the shared zero_address when it is all zeros. */
static PyObject *
address(const uint8_t *raw)
{
    static const uint8_t zeros[16];
    if (memcmp(raw, zeros, 16) == 0)
        return Py_NewRef(zero_address);
    return PyBytes_FromStringAndSize((const char *)raw, 16);
}

/* The pid of the walk's previous event, whose int object the next event of the process shares. */
struct walk_cache {
    uint32_t pid;
    PyObject *pid_obj;
};

static PyObject *
make_event(PyTypeObject *type, const unsigned char *rec, Py_ssize_t data_len, struct walk_cache *cache)
{
    struct pxq_sock_event h;
    memcpy(&h, rec, sizeof h);
    if (cache->pid_obj == NULL || cache->pid != h.pid) {
        Py_XDECREF(cache->pid_obj);
        cache->pid = h.pid;
        cache->pid_obj = PyLong_FromUnsignedLong(h.pid);
        if (cache->pid_obj == NULL)
            return NULL;
    }
    /* A tuple subclass without __dict__ (a NamedTuple): tuple.__new__(SockEvent, ...) without
     * the argument tuple. */
    PyObject *ev = type->tp_alloc(type, EVENT_FIELD_COUNT);
    if (ev == NULL)
        return NULL;
    PyObject *items[EVENT_FIELD_COUNT] = {
        PyLong_FromUnsignedLongLong(h.ts_ns),
        PyLong_FromUnsignedLongLong(h.pos),
        PyLong_FromUnsignedLongLong(h.size),
        Py_NewRef(cache->pid_obj),
        PyLong_FromLong(h.fd),
        PyLong_FromUnsignedLong(h.gen),
        PyLong_FromUnsignedLong(h.data_len),
        PyLong_FromLong(h.kind),
        PyLong_FromLong(h.flags),
        PyLong_FromLong(h.direction),
        PyLong_FromLong(h.role),
        PyLong_FromLong(h.family),
        PyLong_FromLong(h.lport),
        PyLong_FromLong(h.rport),
        PyLong_FromLong(h.syscall),
        PyLong_FromLong(h.reserved),
        address(h.laddr),
        address(h.raddr),
        PyBytes_FromStringAndSize((const char *)rec + sizeof h, data_len),
    };
    int failed = 0;
    for (int i = 0; i < EVENT_FIELD_COUNT; i++) {
        if (items[i] == NULL)
            failed = 1;
        PyTuple_SET_ITEM(ev, i, items[i]); /* NULL items are fine for the tuple's dealloc */
    }
    if (failed) {
        Py_DECREF(ev);
        return NULL;
    }
    return ev;
}

/* What is done with each record of a walk: 0, or -1 on a Python error (the walk stops there). */
typedef int (*record_fn)(void *ctx, const unsigned char *event, Py_ssize_t data_len);

/* Walk a BPF ring buffer's committed records (see ring_read_doc), calling ``on_record`` for each
 * one holding an event header, ``limit`` at most, and store the new consumer position. On a Python
 * error the failed record is read again (``consume_failed`` 0) or counted read (1: it was acted on).
 * -1 (a Python error set) or 0, with the records taken and malformed. */
static int
walk_ring(Py_buffer *prod_buf, Py_buffer *cons_buf, Py_ssize_t data_at, Py_ssize_t size, Py_ssize_t limit,
          record_fn on_record, void *ctx, int consume_failed, Py_ssize_t *taken_out, Py_ssize_t *malformed_out)
{
    if (size <= 0 || (size & (size - 1)) || data_at < 8 || data_at % 8 ||
        prod_buf->len < data_at + 2 * size || cons_buf->len < 8 || ((uintptr_t)prod_buf->buf % 8) ||
        ((uintptr_t)cons_buf->buf % 8)) {
        PyErr_SetString(PyExc_ValueError,
                        "ring_read: the data area (a power of two, mapped twice from data_at >= 8) must fit in "
                        "the producer buffer, the positions 8-byte aligned");
        return -1;
    }
    const unsigned char *base = (const unsigned char *)prod_buf->buf;
    uint64_t *cons_pos = (uint64_t *)cons_buf->buf;
    const uint64_t mask = (uint64_t)size - 1;
    /* The kernel writes the producer position with release semantics after a record's header
     * (busy bit set) and commits by clearing the busy bit with release semantics: acquire loads
     * here (plain loads on x86-64), and a release store of the consumer position. */
    uint64_t cons = __atomic_load_n(cons_pos, __ATOMIC_ACQUIRE);
    const uint64_t prod = __atomic_load_n((const uint64_t *)base, __ATOMIC_ACQUIRE);
    Py_ssize_t taken = 0, malformed = 0;
    int status = 0;
    if (prod > cons && prod - cons > (uint64_t)size) {
        /* More pending than the ring holds: positions no kernel writes. Skip to the producer. */
        malformed++;
        cons = prod;
    }
    while (cons < prod && taken < limit) {
        const unsigned char *rec = base + data_at + (cons & mask);
        uint32_t word = __atomic_load_n((const uint32_t *)rec, __ATOMIC_ACQUIRE);
        if (word & RING_BUSY)
            break; /* still being written: it and the records after it wait for the next read */
        uint64_t len = word & ~(RING_BUSY | RING_DISCARD);
        uint64_t next = cons + ((len + RING_HEADER + 7) & ~(uint64_t)7);
        if (next > prod || next < cons) {
            /* A committed record ends before the producer position: this one is not a record. */
            malformed++;
            cons = prod;
            break;
        }
        if (!(word & RING_DISCARD)) {
            if (len < sizeof(struct pxq_sock_event)) {
                malformed++;
            } else {
                /* the record stays in place (unconsumed) while on_record reads it */
                if (on_record(ctx, rec + RING_HEADER, (Py_ssize_t)(len - sizeof(struct pxq_sock_event))) < 0) {
                    if (consume_failed)
                        cons = next;
                    status = -1;
                    break;
                }
                taken++;
            }
        }
        cons = next;
    }
    __atomic_store_n(cons_pos, cons, __ATOMIC_RELEASE);
    *taken_out = taken;
    *malformed_out = malformed;
    return status;
}

struct read_ctx {
    PyTypeObject *type;
    PyObject *out;
    struct walk_cache cache;
};

static int
append_event(void *ctx_, const unsigned char *event, Py_ssize_t data_len)
{
    struct read_ctx *ctx = ctx_;
    PyObject *ev = make_event(ctx->type, event, data_len, &ctx->cache);
    if (ev == NULL || PyList_Append(ctx->out, ev) < 0) {
        Py_XDECREF(ev);
        return -1;
    }
    Py_DECREF(ev);
    return 0;
}

PyDoc_STRVAR(ring_read_doc,
"ring_read(producer, consumer, data_at, size, limit, out, event_type) -> (taken, malformed)\n\n"
"Walk a BPF ring buffer's committed records (kernel/bpf/ringbuf.c's layout): ``producer`` is the\n"
"read-only mapping whose first 8 bytes are the producer position and whose data area, mapped\n"
"twice in a row, starts at ``data_at``; ``consumer`` the writable page whose first 8 bytes are\n"
"the consumer position. Appends an ``event_type`` (SockEvent) to ``out`` for each record, at most\n"
"``limit``, skipping discarded ones, stopping at one still being written, and stores the new\n"
"consumer position. A record too short for the event header is consumed and counted as\n"
"malformed; one whose length runs past the producer position, or positions further apart than\n"
"the ring's size (never written by a kernel), end the walk with everything pending consumed,\n"
"also counted.");

static PyObject *
ring_read(PyObject *self, PyObject *args)
{
    Py_buffer prod_buf, cons_buf;
    Py_ssize_t data_at, size, limit;
    PyObject *out, *type_obj;
    if (!PyArg_ParseTuple(args, "y*w*nnnO!O!:ring_read", &prod_buf, &cons_buf, &data_at, &size, &limit,
                          &PyList_Type, &out, &PyType_Type, &type_obj))
        return NULL;
    PyObject *result = NULL;
    struct read_ctx ctx = {(PyTypeObject *)type_obj, out, {0, NULL}};
    Py_ssize_t taken, malformed;
    if (!PyType_IsSubtype(ctx.type, &PyTuple_Type))
        PyErr_SetString(PyExc_TypeError, "event_type must be a tuple subclass (SockEvent)");
    else if (walk_ring(&prod_buf, &cons_buf, data_at, size, limit, append_event, &ctx, 0, &taken, &malformed) == 0)
        result = Py_BuildValue("(nn)", taken, malformed);
    Py_XDECREF(ctx.cache.pid_obj);
    PyBuffer_Release(&prod_buf);
    PyBuffer_Release(&cons_buf);
    return result;
}

/* ---------------------------------------------------------------------------------------------
 * HTTP/1 plain-message framing.
 *
 * A message is plain when every part of it is of this common, unambiguous shape (anything else is
 * llhttp's to frame, exactly as before the fast path existed):
 *   request line: (GET|HEAD|POST|PUT|DELETE|PATCH|OPTIONS) SP /target SP HTTP/1.1 CRLF, the
 *     target of RFC 3986 path/query characters (no '#', no obs-text);
 *   status line: HTTP/1.1 SP [2-5]DD SP reason CRLF, the reason visible characters in words
 *     separated by single spaces;
 *   header lines: token ":" [ \t]* value CRLF, the value of [\t -~] (llhttp strips its leading
 *     blanks and keeps the rest); no Transfer-Encoding, Content-Encoding or Upgrade, Connection
 *     only "keep-alive" (any case), at most one Content-Length of 1 to 15 digits.
 */

enum { CHAR_TOKEN = 1, CHAR_TARGET = 2 };
static unsigned char char_class[256];

static void
init_char_classes(void)
{
    const char *token = "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    const char *target = "-._~:/?[]@!$&'()*+,;=%0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    for (const char *c = token; *c; c++)
        char_class[(unsigned char)*c] |= CHAR_TOKEN;
    for (const char *c = target; *c; c++)
        char_class[(unsigned char)*c] |= CHAR_TARGET;
}

static const char *const PLAIN_METHODS[] = {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"};
#define PLAIN_METHOD_COUNT 7
#define HEAD_METHOD 1 /* its index in PLAIN_METHODS */
static PyObject *method_objects[PLAIN_METHOD_COUNT]; /* shared bytes objects, one per method */

static int
ascii_lower(unsigned char c)
{
    return c >= 'A' && c <= 'Z' ? c + 32 : c;
}

/* The first "\r\n\r\n" in [from, end), or NULL. */
static const unsigned char *
find_head_end(const unsigned char *from, const unsigned char *end)
{
    const unsigned char *p = from;
    while (end - p >= 4) {
        p = memchr(p, '\r', (size_t)(end - p - 3));
        if (p == NULL)
            return NULL;
        if (p[1] == '\n' && p[2] == '\r' && p[3] == '\n')
            return p;
        p++;
    }
    return NULL;
}

/* A request line at p (ending before limit): the method's index and the target's bounds;
 * returns the position after its CRLF, or NULL when it is not plain. */
static const unsigned char *
plain_request_line(const unsigned char *p, const unsigned char *limit, int *method,
                   const unsigned char **target, Py_ssize_t *target_len)
{
    for (int m = 0; m < PLAIN_METHOD_COUNT; m++) {
        size_t n = strlen(PLAIN_METHODS[m]);
        if ((size_t)(limit - p) > n && memcmp(p, PLAIN_METHODS[m], n) == 0 && p[n] == ' ') {
            *method = m;
            p += n + 1;
            if (p >= limit || *p != '/')
                return NULL;
            const unsigned char *t = p;
            while (p < limit && (char_class[*p] & CHAR_TARGET))
                p++;
            static const char tail[] = " HTTP/1.1\r\n";
            if ((size_t)(limit - p) < sizeof tail - 1 || memcmp(p, tail, sizeof tail - 1) != 0)
                return NULL;
            *target = t;
            *target_len = p - t;
            return p + sizeof tail - 1;
        }
    }
    return NULL;
}

/* A status line at p: the status code and the reason's bounds; the position after its CRLF or
 * NULL. */
static const unsigned char *
plain_status_line(const unsigned char *p, const unsigned char *limit, int *status,
                  const unsigned char **reason, Py_ssize_t *reason_len)
{
    static const char version[] = "HTTP/1.1 ";
    if (limit - p < (Py_ssize_t)sizeof version - 1 + 4 || memcmp(p, version, sizeof version - 1) != 0)
        return NULL;
    p += sizeof version - 1;
    if (p[0] < '2' || p[0] > '5' || p[1] < '0' || p[1] > '9' || p[2] < '0' || p[2] > '9' || p[3] != ' ')
        return NULL;
    *status = (p[0] - '0') * 100 + (p[1] - '0') * 10 + (p[2] - '0');
    p += 4;
    const unsigned char *r = p;
    /* words of [!-~] separated by single spaces, at least one character */
    int after_space = 1;
    while (p < limit && *p != '\r') {
        if (*p == ' ') {
            if (after_space)
                return NULL;
            after_space = 1;
        } else if (*p >= '!' && *p <= '~') {
            after_space = 0;
        } else {
            return NULL;
        }
        p++;
    }
    if (after_space || limit - p < 2 || p[1] != '\n')
        return NULL; /* empty, or ends with a space, or no CRLF */
    *reason = r;
    *reason_len = p - r;
    return p + 2;
}

/* Does [p, p+n) equal ``word`` (lower case, ``len`` bytes) in any case? */
#define EQUALS_LOWER(p, n, word) equals_lower_n((p), (n), (word), sizeof(word) - 1)
static int
equals_lower_n(const unsigned char *p, Py_ssize_t n, const char *word, Py_ssize_t len)
{
    if (n != len)
        return 0;
    for (Py_ssize_t i = 0; i < n; i++)
        if (ascii_lower(p[i]) != (unsigned char)word[i])
            return 0;
    return 1;
}

/* Check the header lines [p, block_end) (each with its CRLF): 1 when plain (their count in
 * *count, the Content-Length or -1 in *length), 0 when not. */
static int
check_headers(const unsigned char *p, const unsigned char *block_end, Py_ssize_t *count, long long *length)
{
    *length = -1;
    *count = 0;
    while (p < block_end) {
        const unsigned char *name = p;
        while (p < block_end && (char_class[*p] & CHAR_TOKEN))
            p++;
        if (p == name || p >= block_end || *p != ':')
            return 0;
        Py_ssize_t name_len = p - name;
        p++;
        while (p < block_end && (*p == ' ' || *p == '\t'))
            p++;
        const unsigned char *value = p;
        while (p < block_end && (*p == '\t' || (*p >= ' ' && *p <= '~')))
            p++;
        if (block_end - p < 2 || p[0] != '\r' || p[1] != '\n')
            return 0;
        Py_ssize_t value_len = p - value;
        p += 2;
        ++*count;
        if (EQUALS_LOWER(name, name_len, "transfer-encoding") || EQUALS_LOWER(name, name_len, "content-encoding") ||
            EQUALS_LOWER(name, name_len, "upgrade"))
            return 0;
        if (EQUALS_LOWER(name, name_len, "connection") && !EQUALS_LOWER(value, value_len, "keep-alive"))
            return 0; /* close (llhttp refuses bytes after it), upgrade, or a list of options */
        if (EQUALS_LOWER(name, name_len, "content-length")) {
            if (*length >= 0 || value_len == 0 || value_len > 15)
                return 0;
            long long n = 0;
            for (Py_ssize_t i = 0; i < value_len; i++) {
                if (value[i] < '0' || value[i] > '9')
                    return 0;
                n = n * 10 + (value[i] - '0');
            }
            *length = n;
        }
    }
    return 1;
}

/* The (name, value) pairs of ``count`` header lines checked plain by check_headers, as a tuple. */
static PyObject *
header_pairs(const unsigned char *p, const unsigned char *block_end, Py_ssize_t count)
{
    PyObject *pairs = PyTuple_New(count);
    if (pairs == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < count; i++) {
        const unsigned char *name = p;
        while (*p != ':')
            p++;
        const unsigned char *name_end = p++;
        while (*p == ' ' || *p == '\t')
            p++;
        const unsigned char *value = p;
        while (*p != '\r')
            p++;
        PyObject *pair = PyTuple_New(2);
        if (pair == NULL) {
            Py_DECREF(pairs);
            return NULL;
        }
        PyTuple_SET_ITEM(pairs, i, pair);
        PyObject *n = PyBytes_FromStringAndSize((const char *)name, name_end - name);
        PyTuple_SET_ITEM(pair, 0, n);
        PyObject *v = n == NULL ? NULL : PyBytes_FromStringAndSize((const char *)value, p - value);
        PyTuple_SET_ITEM(pair, 1, v);
        if (v == NULL) {
            Py_DECREF(pairs);
            return NULL;
        }
        p += 2;
    }
    (void)block_end;
    return pairs;
}

/* Header blocks seen (their bytes) -> their pairs and Content-Length, or "not plain": a service's
 * messages repeat their header blocks, and a hit costs a hash and a compare instead of the
 * objects of every header. Direct-mapped (a colliding block replaces the one there), so bounded:
 * BLOCK_CACHE_SLOTS blocks of BLOCK_CACHE_MAX bytes at most. Blocks that might hold a credential
 * (see might_hold_credential) are never kept: the cache would hold the secret past its message. */
#define BLOCK_CACHE_SLOTS 2048
#define BLOCK_CACHE_MAX 1024
struct block_entry {
    PyObject *block; /* the header lines as sent (bytes); NULL: an empty slot */
    PyObject *pairs; /* tuple of (name, value); NULL: not plain */
    long long length;
};
static struct block_entry block_cache[BLOCK_CACHE_SLOTS];

static uint64_t
hash_block(const unsigned char *p, size_t n)
{
    uint64_t h = 0x9E3779B97F4A7C15ull ^ n, w;
    for (; n >= 8; p += 8, n -= 8) {
        memcpy(&w, p, 8);
        h = (h ^ w) * 0xff51afd7ed558ccdull;
        h ^= h >> 32;
    }
    w = 0;
    memcpy(&w, p, n);
    h = (h ^ w) * 0xc4ceb9fe1a85ec53ull;
    return h ^ (h >> 29);
}

/* Does the block name Authorization, Proxy-Authorization, Cookie or Set-Cookie (or hold those
 * words anywhere, in any case)? */
static int
might_hold_credential(const unsigned char *p, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        int c = ascii_lower(p[i]);
        if (c == 'a' && n - i >= 13 && EQUALS_LOWER(p + i, 13, "authorization"))
            return 1;
        if (c == 'c' && n - i >= 6 && EQUALS_LOWER(p + i, 6, "cookie"))
            return 1;
    }
    return 0;
}

/* The pairs of header lines [p, block_end) (a new reference to a tuple; Py_None when not plain)
 * with their Content-Length in *length and the block's bytes in *block_obj (new references). */
static PyObject *
plain_block(const unsigned char *p, const unsigned char *block_end, long long *length, PyObject **block_obj)
{
    Py_ssize_t n = block_end - p, count;
    struct block_entry *entry = NULL;
    *block_obj = NULL;
    if (n <= BLOCK_CACHE_MAX) {
        entry = &block_cache[hash_block(p, (size_t)n) & (BLOCK_CACHE_SLOTS - 1)];
        if (entry->block != NULL && PyBytes_GET_SIZE(entry->block) == n &&
            memcmp(PyBytes_AS_STRING(entry->block), p, (size_t)n) == 0) {
            *length = entry->length;
            if (entry->pairs == NULL)
                return Py_NewRef(Py_None);
            *block_obj = Py_NewRef(entry->block);
            return Py_NewRef(entry->pairs);
        }
        if (might_hold_credential(p, n))
            entry = NULL;
    }
    int plain = check_headers(p, block_end, &count, length);
    PyObject *pairs = plain ? header_pairs(p, block_end, count) : Py_NewRef(Py_None);
    if (pairs == NULL)
        return NULL;
    if (plain || entry != NULL) {
        *block_obj = PyBytes_FromStringAndSize((const char *)p, n);
        if (*block_obj == NULL) {
            Py_DECREF(pairs);
            return NULL;
        }
    }
    if (entry != NULL) {
        Py_XSETREF(entry->pairs, plain ? Py_NewRef(pairs) : NULL);
        Py_XSETREF(entry->block, Py_NewRef(*block_obj));
        entry->length = *length;
    }
    if (!plain)
        Py_CLEAR(*block_obj);
    return pairs;
}

PyDoc_STRVAR(frame_plain_doc,
"frame_plain(data, at, is_request) -> None or (method|status, target|reason, pairs, block, length, body_at)\n\n"
"The plain HTTP/1.1 message head starting at ``data[at]`` (see the shape in pxq/agent/_native.c):\n"
"the method (a bytes object) and the request target, or the status code (an int) and the reason;\n"
"the header lines as a new list of (name, value) bytes pairs and as sent (``block``, each line\n"
"with its CRLF); the Content-Length (-1: none); and where the body starts. None when the head is\n"
"not complete in ``data`` or not plain: llhttp frames it.");

/* A plain message head framed: the start line's parts, the header pairs (a tuple) and block. */
struct plain_head {
    int code; /* the method's index (a request) or the status code (a response) */
    const unsigned char *first; /* the request target or the reason */
    Py_ssize_t first_len;
    PyObject *pairs; /* new references */
    PyObject *block;
    long long length; /* Content-Length, -1: none */
    Py_ssize_t body_at;
};

/* Frame the plain head at data[at]: 1 (``head`` filled, its objects new references), 0 (not plain
 * or not complete), -1 (a Python error). */
static int
frame_head(const unsigned char *data, Py_ssize_t len, Py_ssize_t at, int is_request, struct plain_head *head)
{
    const unsigned char *head_end = find_head_end(data + at, data + len);
    if (head_end == NULL)
        return 0;
    const unsigned char *block_end = head_end + 2; /* the last header line's CRLF included */
    const unsigned char *block;
    if (is_request)
        block = plain_request_line(data + at, block_end, &head->code, &head->first, &head->first_len);
    else
        block = plain_status_line(data + at, block_end, &head->code, &head->first, &head->first_len);
    if (block == NULL)
        return 0;
    head->pairs = plain_block(block, block_end, &head->length, &head->block);
    if (head->pairs == NULL)
        return -1;
    if (head->pairs == Py_None) {
        Py_CLEAR(head->pairs);
        return 0;
    }
    head->body_at = head_end + 4 - data;
    return 1;
}

/* A new list holding the items of tuple ``pairs`` (a message's own, which llhttp's path appends to). */
static PyObject *
pair_list(PyObject *pairs)
{
    Py_ssize_t count = PyTuple_GET_SIZE(pairs);
    PyObject *list = PyList_New(count);
    if (list != NULL)
        for (Py_ssize_t i = 0; i < count; i++)
            PyList_SET_ITEM(list, i, Py_NewRef(PyTuple_GET_ITEM(pairs, i)));
    return list;
}

static PyObject *
frame_plain(PyObject *self, PyObject *args)
{
    Py_buffer buf;
    Py_ssize_t at;
    int is_request;
    if (!PyArg_ParseTuple(args, "y*np:frame_plain", &buf, &at, &is_request))
        return NULL;
    PyObject *result = NULL;
    struct plain_head head;
    if (at < 0 || at > buf.len) {
        PyErr_SetString(PyExc_IndexError, "frame_plain: at is outside data");
        goto done;
    }
    int framed = frame_head((const unsigned char *)buf.buf, buf.len, at, is_request, &head);
    if (framed <= 0) {
        result = framed == 0 ? Py_NewRef(Py_None) : NULL;
        goto done;
    }
    result = PyTuple_New(6);
    if (result != NULL) {
        PyObject *items[6] = {
            is_request ? Py_NewRef(method_objects[head.code]) : PyLong_FromLong(head.code),
            PyBytes_FromStringAndSize((const char *)head.first, head.first_len),
            pair_list(head.pairs),
            Py_NewRef(head.block),
            PyLong_FromLongLong(head.length),
            PyLong_FromSsize_t(head.body_at),
        };
        int failed = 0;
        for (int i = 0; i < 6; i++) {
            PyTuple_SET_ITEM(result, i, items[i]);
            failed |= items[i] == NULL;
        }
        if (failed)
            Py_CLEAR(result); /* the items made go with it */
    }
    Py_DECREF(head.pairs);
    Py_DECREF(head.block);
done:
    PyBuffer_Release(&buf);
    return result;
}

/* The stitcher's message class (_Message in pxq/agent/protocols/http1/stitcher.py), whose slots
 * frame_message fills directly: set once by set_message_type, which checks the slots are these. */
static const char *const MESSAGE_SLOTS[] = {
    "body_limit", "start_ns", "end_ns", "epoch", "valid_start", "url", "reason", "header_pairs", "body",
    "body_size", "method", "status", "version", "headers_done", "complete", "broken", "marker_at", "uncaptured",
    "uncaptured_end", "decoder", "raw_headers",
};
enum {
    M_BODY_LIMIT, M_START_NS, M_END_NS, M_EPOCH, M_VALID_START, M_URL, M_REASON, M_HEADER_PAIRS, M_BODY,
    M_BODY_SIZE, M_METHOD, M_STATUS, M_VERSION, M_HEADERS_DONE, M_COMPLETE, M_BROKEN, M_MARKER_AT, M_UNCAPTURED,
    M_UNCAPTURED_END, M_DECODER, M_RAW_HEADERS, MESSAGE_SLOT_COUNT
};
static PyTypeObject *message_type;
static Py_ssize_t message_offsets[MESSAGE_SLOT_COUNT];
static PyObject *version_1_1; /* (1, 1) */

/* The offsets of the __slots__ members ``names`` of class ``cls`` in its instances (0 and -1 with a
 * TypeError when one is not such a slot). */
static int
slot_offsets(PyObject *cls, const char *const *names, int count, Py_ssize_t *offsets)
{
    for (int i = 0; i < count; i++) {
        /* by the interned name (the class dict's own key): the interpreter's type cache keeps the
         * name it was asked with, a new string each time otherwise */
        PyObject *name = PyUnicode_InternFromString(names[i]);
        if (name == NULL)
            return -1;
        PyObject *descr = PyObject_GetAttr(cls, name);
        Py_DECREF(name);
        if (descr == NULL)
            return -1;
        int is_slot = Py_IS_TYPE(descr, &PyMemberDescr_Type) &&
                      ((PyMemberDescrObject *)descr)->d_member->type == T_OBJECT_EX;
        offsets[i] = is_slot ? ((PyMemberDescrObject *)descr)->d_member->offset : 0;
        Py_DECREF(descr);
        if (!is_slot) {
            PyErr_Format(PyExc_TypeError, "%s.%s is not a slot (pxq/agent/_native.c fills it as one)",
                         ((PyTypeObject *)cls)->tp_name, names[i]);
            return -1;
        }
    }
    return 0;
}

PyDoc_STRVAR(set_message_type_doc,
"set_message_type(cls): the class frame_message makes; its __slots__ must be the ones _native.c fills.");

static PyObject *
set_message_type(PyObject *self, PyObject *cls)
{
    if (!PyType_Check(cls)) {
        PyErr_SetString(PyExc_TypeError, "set_message_type takes a class");
        return NULL;
    }
    PyObject *slots_name = PyUnicode_InternFromString("__slots__");
    if (slots_name == NULL)
        return NULL;
    PyObject *slots = PyObject_GetAttr(cls, slots_name);
    Py_DECREF(slots_name);
    if (slots == NULL)
        return NULL;
    Py_ssize_t n = PySequence_Size(slots);
    Py_DECREF(slots);
    if (n != MESSAGE_SLOT_COUNT) {
        PyErr_Format(PyExc_TypeError, "%s has %zd slots, pxq/agent/_native.c fills %d: update MESSAGE_SLOTS there",
                     ((PyTypeObject *)cls)->tp_name, n, MESSAGE_SLOT_COUNT);
        return NULL;
    }
    Py_ssize_t offsets[MESSAGE_SLOT_COUNT];
    if (slot_offsets(cls, MESSAGE_SLOTS, MESSAGE_SLOT_COUNT, offsets) < 0)
        return NULL;
    memcpy(message_offsets, offsets, sizeof offsets);
    Py_XSETREF(message_type, (PyTypeObject *)Py_NewRef(cls));
    Py_RETURN_NONE;
}

PyDoc_STRVAR(frame_message_doc,
"frame_message(data, at, is_request, answers, body_limit, ts_ns, epoch) -> None or (message, next_at)\n\n"
"The plain message at ``data[at]`` (see frame_plain), complete with its body in ``data``, as the\n"
"message class given to set_message_type, its slots as llhttp's callbacks would leave them\n"
"(complete, header pairs, the first ``body_limit`` body bytes, start and end at ``ts_ns``);\n"
"``next_at``: where the bytes after it start. ``answers`` (responses): 0 for an ordinary request\n"
"or none waiting, 1 for HEAD (the answer ends with its header block), 2 for CONNECT (None: a tunnel\n"
"may start). None for a response without Content-Length (close-delimited) or with status 204 or\n"
"304 (llhttp's rules), and whenever frame_plain would give None.");

/* Frame the plain message at data[at], complete with its body in data (see frame_message's rules):
 * 1 (``head`` filled, its objects new references; *length the body's length), 0 (not plain, or not
 * complete: llhttp's), -1 (a Python error). */
static int
frame_complete(const unsigned char *data, Py_ssize_t len, Py_ssize_t at, int is_request, int answers,
               struct plain_head *head, long long *length_out)
{
    int framed = frame_head(data, len, at, is_request, head);
    if (framed <= 0)
        return framed;
    long long length = head->length;
    if (is_request) {
        if (length < 0)
            length = 0; /* a request without Content-Length has no body */
    } else if (answers == 2) {
        goto not_plain; /* an answer to CONNECT: a tunnel may start */
    } else if (answers == 1) {
        length = 0; /* any answer to HEAD ends with its header block */
    } else if (length < 0 || head->code == 204 || head->code == 304) {
        goto not_plain; /* close-delimited, or framed by llhttp's rules for 204/304 */
    }
    if (length > len - head->body_at)
        goto not_plain; /* its body goes on in a later chunk */
    *length_out = length;
    return 1;
not_plain:
    Py_CLEAR(head->pairs);
    Py_CLEAR(head->block);
    return 0;
}

/* How many of a body's ``length`` bytes a message keeps. */
static Py_ssize_t
kept_body(long long length, Py_ssize_t body_limit)
{
    return length == 0 || body_limit <= 0 ? 0 : (length < body_limit ? (Py_ssize_t)length : body_limit);
}

/* The framed message ``head`` (see frame_complete) as a new message_type object, its slots as
 * llhttp's callbacks would leave them; NULL on a Python error. */
static PyObject *
make_message(const unsigned char *data, const struct plain_head *head, long long length, int is_request,
             PyObject *body_limit_obj, Py_ssize_t body_limit, PyObject *ts_obj, PyObject *epoch_obj)
{
    PyObject *msg = message_type->tp_alloc(message_type, 0);
    if (msg == NULL)
        return NULL;
    Py_ssize_t kept = kept_body(length, body_limit);
    PyObject *values[MESSAGE_SLOT_COUNT] = {
        [M_BODY_LIMIT] = Py_NewRef(body_limit_obj),
        [M_START_NS] = Py_NewRef(ts_obj),
        [M_END_NS] = Py_NewRef(ts_obj),
        [M_EPOCH] = Py_NewRef(epoch_obj),
        [M_VALID_START] = Py_NewRef(Py_True),
        [M_URL] = is_request ? PyBytes_FromStringAndSize((const char *)head->first, head->first_len)
                             : PyBytes_FromStringAndSize(NULL, 0),
        [M_REASON] = is_request ? PyBytes_FromStringAndSize(NULL, 0)
                                : PyBytes_FromStringAndSize((const char *)head->first, head->first_len),
        [M_HEADER_PAIRS] = pair_list(head->pairs),
        [M_BODY] = PyBytes_FromStringAndSize((const char *)data + head->body_at, kept),
        [M_BODY_SIZE] = PyLong_FromLongLong(length),
        [M_METHOD] = is_request ? Py_NewRef(method_objects[head->code]) : PyBytes_FromStringAndSize(NULL, 0),
        [M_STATUS] = PyLong_FromLong(is_request ? 0 : head->code),
        [M_VERSION] = Py_NewRef(version_1_1),
        [M_HEADERS_DONE] = Py_NewRef(Py_True),
        [M_COMPLETE] = Py_NewRef(Py_True),
        [M_BROKEN] = Py_NewRef(Py_False),
        [M_MARKER_AT] = PyLong_FromLong(-1),
        [M_UNCAPTURED] = PyLong_FromLong(0),
        [M_UNCAPTURED_END] = PyLong_FromLong(0),
        [M_DECODER] = Py_NewRef(length ? Py_False : Py_None), /* False: a body without Content-Encoding */
        [M_RAW_HEADERS] = Py_NewRef(head->block),
    };
    int failed = 0;
    for (int i = 0; i < MESSAGE_SLOT_COUNT; i++) {
        *(PyObject **)((char *)msg + message_offsets[i]) = values[i]; /* NULL: unset, fine to free */
        failed |= values[i] == NULL;
    }
    if (failed)
        Py_CLEAR(msg);
    return msg;
}

static PyObject *
frame_message(PyObject *self, PyObject *args)
{
    Py_buffer buf;
    Py_ssize_t at, body_limit;
    int is_request, answers;
    PyObject *body_limit_obj, *ts_obj, *epoch_obj;
    if (!PyArg_ParseTuple(args, "y*npiO!O!O!:frame_message", &buf, &at, &is_request, &answers, &PyLong_Type,
                          &body_limit_obj, &PyLong_Type, &ts_obj, &PyLong_Type, &epoch_obj))
        return NULL;
    PyObject *result = NULL, *msg = NULL;
    struct plain_head head = {0};
    if (message_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "frame_message before set_message_type");
        goto done;
    }
    if (at < 0 || at > buf.len) {
        PyErr_SetString(PyExc_IndexError, "frame_message: at is outside data");
        goto done;
    }
    body_limit = PyLong_AsSsize_t(body_limit_obj);
    if (body_limit == -1 && PyErr_Occurred())
        goto done;
    const unsigned char *data = (const unsigned char *)buf.buf;
    long long length = 0;
    int framed = frame_complete(data, buf.len, at, is_request, answers, &head, &length);
    if (framed <= 0) {
        result = framed == 0 ? Py_NewRef(Py_None) : NULL;
        goto done;
    }
    msg = make_message(data, &head, length, is_request, body_limit_obj, body_limit, ts_obj, epoch_obj);
    if (msg != NULL)
        result = Py_BuildValue("(On)", msg, head.body_at + (Py_ssize_t)length);
done:
    Py_XDECREF(msg);
    Py_XDECREF(head.pairs);
    Py_XDECREF(head.block);
    PyBuffer_Release(&buf);
    return result;
}

PyDoc_STRVAR(plain_block_cache_doc, "plain_block_cache() -> list of the header blocks frame_plain keeps (for tests)");

static PyObject *
plain_block_cache(PyObject *self, PyObject *unused)
{
    PyObject *blocks = PyList_New(0);
    for (int i = 0; blocks != NULL && i < BLOCK_CACHE_SLOTS; i++)
        if (block_cache[i].block != NULL && PyList_Append(blocks, block_cache[i].block) < 0)
            Py_CLEAR(blocks);
    return blocks;
}

PyDoc_STRVAR(clear_plain_block_cache_doc, "clear_plain_block_cache(): forget the header blocks frame_plain keeps");

static PyObject *
clear_plain_block_cache(PyObject *self, PyObject *unused)
{
    for (int i = 0; i < BLOCK_CACHE_SLOTS; i++) {
        Py_CLEAR(block_cache[i].block);
        Py_CLEAR(block_cache[i].pairs);
    }
    Py_RETURN_NONE;
}

/* ---------------------------------------------------------------------------------------------
 * The HTTP/1 steady state of the connection tracker, one C call per run of events.
 *
 * ConnTracker.handle_batch (pxq/agent/conn_tracker.py) hands http1_batch its events; it takes
 * each event that is the next bytes of an HTTP/1 connection being parsed, in order, nothing held
 * (the tracker's fast path), whose bytes are whole plain messages (frame_complete) that change
 * the stitcher's state only in the common way: requests queued while no response waits; each
 * response answering the oldest request, complete, plain, begun no later than the response and
 * with no later request begun before the response ended (in step), an answer to HEAD ending with
 * its head as _plain_messages frames it (the stitcher's count of such requests kept); and whose
 * rows need nothing HttpRows.add would do in Python (header blocks already in its cache by their
 * raw lines, ASCII texts). It leaves the tracker, the stitcher, its directions and the row buffer
 * exactly as the Python path (ConnTracker._feed, Http1Stitcher._feed, _plain_messages, _stitch,
 * _response_complete, HttpRows.add) would. It checks all of that before changing anything and
 * stops at the first event it does not take, which the Python path then takes: CONNECT, 1xx/204/304,
 * chunked or close-delimited bodies, a message cut by its chunk, pipelining, answers without
 * requests, connections restarted and still on probation, credentials, non-ASCII, any other
 * protocol or event.
 */
#define SLOT(obj, offset) (*(PyObject **)((char *)(obj) + (offset)))

static const char *const CONN_SLOTS[] = {
    "state", "stream", "stitcher", "restarted", "role", "has_tuple", "addr_checked", "fed_ns", "last_ns",
    "transactions", "upid", "raddr", "laddr", "rport", "lport", "held", "out_of_step_ns",
};
enum {
    C_STATE, C_STREAM, C_STITCHER, C_RESTARTED, C_ROLE, C_HAS_TUPLE, C_ADDR_CHECKED, C_FED_NS, C_LAST_NS,
    C_TRANSACTIONS, C_UPID, C_RADDR, C_LADDR, C_RPORT, C_LPORT, C_HELD, C_OUT_OF_STEP_NS, CONN_SLOT_COUNT
};
static const char *const STREAM_SLOTS[] = {"expect", "held_bytes"};
enum { D_EXPECT, D_HELD_BYTES, STREAM_SLOT_COUNT };
static const char *const STITCHER_SLOTS[] = {
    "body_limit", "_requests", "_responses", "_header_only_requests", "_done", "_req", "_resp", "_upgrade_wait",
    "upgraded", "_closed", "out_of_step", "exchanges", "sequential", "plain",
};
enum {
    S_BODY_LIMIT, S_REQUESTS, S_RESPONSES, S_HEADER_ONLY, S_DONE, S_REQ, S_RESP, S_UPGRADE_WAIT, S_UPGRADED,
    S_CLOSED, S_OUT_OF_STEP, S_EXCHANGES, S_SEQUENTIAL, S_PLAIN, STITCHER_SLOT_COUNT
};
static const char *const DIRECTION_SLOTS[] = {
    "current", "ts_ns", "epoch", "completed", "pending", "pending_ts", "carry_len", "begin_ts", "resyncing",
    "keep_alive",
};
enum {
    W_CURRENT, W_TS_NS, W_EPOCH, W_COMPLETED, W_PENDING, W_PENDING_TS, W_CARRY_LEN, W_BEGIN_TS, W_RESYNCING,
    W_KEEP_ALIVE, DIRECTION_SLOT_COUNT
};

static struct {
    PyTypeObject *conn, *stream, *stitcher, *direction;
    Py_ssize_t conn_at[CONN_SLOT_COUNT], stream_at[STREAM_SLOT_COUNT], stitcher_at[STITCHER_SLOT_COUNT],
        direction_at[DIRECTION_SLOT_COUNT];
    PyObject *parsing; /* the tracker's PARSING state (the same str object) */
    long ev_data, egress, ingress, role_client;
    PyObject *append, *popleft, *strings, *numbers, *raw_blocks, *connections, *rows; /* attribute names */
    /* collections.deque (the stitcher's queue of requests) and its methods, called directly: a
     * method looked up by name per call cost more than the rest of queueing a request */
    PyTypeObject *deque;
    PyObject *deque_append, *deque_popleft;
} http1;

PyDoc_STRVAR(set_http1_classes_doc,
"set_http1_classes(connection, data_stream, stitcher, direction, parsing, ev_data, egress, ingress,\n"
"role_client): the classes (with the __slots__ _native.c reads and writes) and constants\n"
"http1_batch works with: conn_tracker's Connection, data_stream's DataStream, http1's\n"
"Http1Stitcher and _Direction, the PARSING state and the kernel's constants.");

static PyObject *
set_http1_classes(PyObject *self, PyObject *args)
{
    PyObject *conn, *stream, *stitcher, *direction, *parsing;
    long ev_data, egress, ingress, role_client;
    if (!PyArg_ParseTuple(args, "O!O!O!O!Ullll:set_http1_classes", &PyType_Type, &conn, &PyType_Type, &stream,
                          &PyType_Type, &stitcher, &PyType_Type, &direction, &parsing, &ev_data, &egress,
                          &ingress, &role_client))
        return NULL;
    if (message_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "set_http1_classes before set_message_type");
        return NULL;
    }
    Py_ssize_t conn_at[CONN_SLOT_COUNT], stream_at[STREAM_SLOT_COUNT], stitcher_at[STITCHER_SLOT_COUNT],
        direction_at[DIRECTION_SLOT_COUNT];
    if (slot_offsets(conn, CONN_SLOTS, CONN_SLOT_COUNT, conn_at) < 0 ||
        slot_offsets(stream, STREAM_SLOTS, STREAM_SLOT_COUNT, stream_at) < 0 ||
        slot_offsets(stitcher, STITCHER_SLOTS, STITCHER_SLOT_COUNT, stitcher_at) < 0 ||
        slot_offsets(direction, DIRECTION_SLOTS, DIRECTION_SLOT_COUNT, direction_at) < 0)
        return NULL;
    if (http1.append == NULL) {
        const char *names[] = {"append", "popleft", "_strings", "_numbers", "_raw_blocks", "_connections", "rows"};
        PyObject **slots[] = {&http1.append,      &http1.popleft,     &http1.strings, &http1.numbers,
                              &http1.raw_blocks, &http1.connections, &http1.rows};
        for (int i = 0; i < 7; i++)
            if ((*slots[i] = PyUnicode_InternFromString(names[i])) == NULL)
                return NULL;
    }
    if (http1.deque == NULL) {
        PyObject *collections = PyImport_ImportModule("collections");
        PyObject *deque = collections == NULL ? NULL : PyObject_GetAttrString(collections, "deque");
        Py_XDECREF(collections);
        if (deque == NULL)
            return NULL;
        if (!PyType_Check(deque)) {
            Py_DECREF(deque);
            PyErr_SetString(PyExc_TypeError, "collections.deque is not a class");
            return NULL;
        }
        PyObject *append = PyObject_GetAttr(deque, http1.append);
        PyObject *popleft = append == NULL ? NULL : PyObject_GetAttr(deque, http1.popleft);
        if (popleft == NULL) {
            Py_XDECREF(append);
            Py_DECREF(deque);
            return NULL;
        }
        http1.deque = (PyTypeObject *)deque;
        http1.deque_append = append;
        http1.deque_popleft = popleft;
    }
    memcpy(http1.conn_at, conn_at, sizeof conn_at);
    memcpy(http1.stream_at, stream_at, sizeof stream_at);
    memcpy(http1.stitcher_at, stitcher_at, sizeof stitcher_at);
    memcpy(http1.direction_at, direction_at, sizeof direction_at);
    Py_XSETREF(http1.conn, (PyTypeObject *)Py_NewRef(conn));
    Py_XSETREF(http1.stream, (PyTypeObject *)Py_NewRef(stream));
    Py_XSETREF(http1.stitcher, (PyTypeObject *)Py_NewRef(stitcher));
    Py_XSETREF(http1.direction, (PyTypeObject *)Py_NewRef(direction));
    Py_XSETREF(http1.parsing, Py_NewRef(parsing));
    http1.ev_data = ev_data;
    http1.egress = egress;
    http1.ingress = ingress;
    http1.role_client = role_client;
    Py_RETURN_NONE;
}

/* The row buffer's parts, looked up once per http1_batch call (HttpRows._reset replaces them only
 * in HttpRows.table, which no event of the call runs). */
struct rows_parts {
    PyObject *rows;
    PyObject *strings[7]; /* borrowed from the _strings tuple */
    PyObject *strings_tuple, *numbers, *raw_blocks, *connections;
    long long added; /* rows written */
};

#define MAX_MESSAGES 16 /* per event; more: the Python path */

/* What one http1_batch call looked up already: no Python code runs during the call, so the
 * tracker's dict of connections and each connection's columns stay as they were. Direct-mapped. */
#define CALL_CACHE_SLOTS 64
struct call_cache {
    uint64_t conns_valid, numbers_valid; /* which slots hold something of this call (one bit each) */
    struct {
        long long pid, fd, gen;
        PyObject *conn; /* borrowed from the tracker's conns; NULL: empty */
    } conns[CALL_CACHE_SLOTS];
    struct {
        PyObject *conn; /* borrowed; NULL: empty */
        long long number; /* its HttpRows.connection number */
    } numbers[CALL_CACHE_SLOTS];
};

static unsigned
cache_slot(uint64_t h)
{
    h *= 0x9E3779B97F4A7C15ull;
    return (unsigned)(h >> 58) & (CALL_CACHE_SLOTS - 1);
}

/* A message framed in an event's bytes. */
struct framed {
    struct plain_head head;
    long long length;
};

/* An int (a Python int in a slot) as a long long; 0 with *ok cleared when it is not one that fits. */
/* always inlined: some thirty calls per transaction, most of them a compare and a load */
static inline __attribute__((always_inline)) long long
slot_int(PyObject *value, int *ok)
{
    if (value == NULL || !PyLong_CheckExact(value)) {
        *ok = 0;
        return 0;
    }
#if PY_VERSION_HEX >= 0x030C0000
    if (PyUnstable_Long_IsCompact((PyLongObject *)value))
        return (long long)PyUnstable_Long_CompactValue((PyLongObject *)value);
#else
    Py_ssize_t size = Py_SIZE(value);
    const digit *digits = ((PyLongObject *)value)->ob_digit;
    if (size >= -1 && size <= 1) /* one digit at most (CPython's int layout): most of them */
        return (long long)size * (long long)digits[0];
    if (size == 2) /* under 2**60: a timestamp or a stream position */
        return (long long)(((uint64_t)digits[1] << PyLong_SHIFT) | digits[0]);
#endif
    int overflow;
    long long v = PyLong_AsLongLongAndOverflow(value, &overflow);
    if (overflow || (v == -1 && PyErr_Occurred())) {
        PyErr_Clear();
        *ok = 0;
    }
    return v;
}

/* Set an object slot to a new int; -1 on a Python error. */
static int
set_int_slot(PyObject *obj, Py_ssize_t offset, long long value)
{
    PyObject *v = PyLong_FromLongLong(value);
    if (v == NULL)
        return -1;
    Py_XSETREF(SLOT(obj, offset), v);
    return 0;
}

static int
is_ascii(const unsigned char *p, Py_ssize_t n)
{
    uint64_t high = 0, word[4];
    Py_ssize_t i = 0;
    for (; i + 32 <= n; i += 32) { /* a body's kilobyte: four words a step */
        memcpy(word, p + i, 32);
        high |= word[0] | word[1] | word[2] | word[3];
    }
    for (; i + 8 <= n; i += 8) {
        memcpy(word, p + i, 8);
        high |= word[0];
    }
    for (; i < n; i++)
        high |= p[i];
    return (high & 0x8080808080808080ull) == 0;
}

static int
ascii_bytes(PyObject *b)
{
    return PyBytes_CheckExact(b) && is_ascii((const unsigned char *)PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b));
}

/* Append n bytes to a bytearray; -1 on a Python error. Its room doubles when it runs out (a
 * bytearray grows by an eighth, copying a column of megabytes some forty times while it fills). */
static int
bytearray_append(PyObject *array, const void *p, Py_ssize_t n)
{
    Py_ssize_t at = PyByteArray_GET_SIZE(array);
    if (n == 0)
        return 0;
    if (at + n >= ((PyByteArrayObject *)array)->ob_alloc && at >= 4096 && at <= PY_SSIZE_T_MAX / 4) {
        /* grown to twice, then cut to size: a cut by less than half keeps the room */
        if (PyByteArray_Resize(array, 2 * (at + n)) < 0)
            return -1;
    }
    if (PyByteArray_Resize(array, at + n) < 0)
        return -1;
    memcpy(PyByteArray_AS_STRING(array) + at, p, (size_t)n);
    return 0;
}

/* A (JSON text, is_json) entry of HttpRows._raw_blocks for these raw header lines (borrowed), or
 * NULL when there is none (HttpRows._header_block makes it, in Python). */
static PyObject *
cached_block(PyObject *raw_blocks, PyObject *raw)
{
    PyObject *entry = PyDict_GetItemWithError(raw_blocks, raw);
    if (entry == NULL || !PyTuple_CheckExact(entry) || PyTuple_GET_SIZE(entry) != 2 ||
        !PyBytes_CheckExact(PyTuple_GET_ITEM(entry, 0)) || !PyBool_Check(PyTuple_GET_ITEM(entry, 1)))
        return NULL;
    return entry;
}

/* HttpRows.connection(...) of a connection: its number in the row buffer's ``_connections`` (a new
 * one when its columns are new); -1 on a Python error. */
static long long
connection_number(PyObject *connections, PyObject *conn)
{
    const Py_ssize_t *ca = http1.conn_at;
    PyObject *columns[6] = {SLOT(conn, ca[C_UPID]), SLOT(conn, ca[C_RADDR]), SLOT(conn, ca[C_LADDR]),
                            SLOT(conn, ca[C_RPORT]), SLOT(conn, ca[C_LPORT]), SLOT(conn, ca[C_ROLE])};
    for (int i = 0; i < 6; i++)
        if (columns[i] == NULL) {
            PyErr_SetString(PyExc_AttributeError, "a connection's columns are not all set");
            return -1;
        }
    PyObject *key = PyTuple_Pack(6, columns[0], columns[1], columns[2], columns[3], columns[4], columns[5]);
    if (key == NULL)
        return -1;
    PyObject *number_obj = PyDict_GetItemWithError(connections, key);
    if (number_obj == NULL && !PyErr_Occurred()) {
        number_obj = PyLong_FromSsize_t(PyDict_GET_SIZE(connections));
        if (number_obj != NULL && PyDict_SetItem(connections, key, number_obj) < 0)
            Py_CLEAR(number_obj);
        Py_XDECREF(number_obj); /* the dict keeps it */
    }
    Py_DECREF(key);
    if (number_obj == NULL)
        return -1;
    return PyLong_AsLongLong(number_obj);
}

/* The request side of a pair a response event completes: what the row reads of it. */
struct waiting_request {
    PyObject *msg; /* borrowed from the stitcher's _requests */
    long long start_ns, body_size;
    PyObject *json; /* its header block's JSON text (borrowed) */
    PyObject *resp_entry; /* the (JSON text, is_json) of its response's header block (borrowed) */
};

/* The row buffer's parts, looked up at the call's first response (a call that takes no response,
 * the usual one of an event of another protocol, needs none); -1 on a Python error. */
static int
rows_ready(struct rows_parts *rows)
{
    if (rows->strings_tuple != NULL)
        return 0;
    PyObject *parts[4];
    PyObject *names[4] = {http1.strings, http1.numbers, http1.raw_blocks, http1.connections};
    for (int i = 0; i < 4; i++) {
        parts[i] = PyObject_GetAttr(rows->rows, names[i]);
        if (parts[i] == NULL) {
            for (int k = 0; k < i; k++)
                Py_DECREF(parts[k]);
            return -1;
        }
    }
    rows->strings_tuple = parts[0];
    rows->numbers = parts[1];
    rows->raw_blocks = parts[2];
    rows->connections = parts[3];
    int ok = PyTuple_CheckExact(rows->strings_tuple) && PyTuple_GET_SIZE(rows->strings_tuple) == 7 &&
             PyByteArray_CheckExact(rows->numbers) && PyDict_CheckExact(rows->raw_blocks) &&
             PyDict_CheckExact(rows->connections);
    for (int k = 0; ok && k < 7; k++) {
        rows->strings[k] = PyTuple_GET_ITEM(rows->strings_tuple, k);
        ok = PyByteArray_CheckExact(rows->strings[k]);
    }
    if (!ok) {
        PyErr_SetString(PyExc_TypeError, "http1_batch: rows is not an HttpRows");
        return -1;
    }
    return 0;
}

/* What a response answering requests[i] (a deque of messages) answers, as frame_message's
 * ``answers`` when the stitcher counts requests answered by a head alone: 1 for a HEAD request
 * whose headers were parsed, 2 for CONNECT, 0 for any other request; -1 when requests[i] is not
 * a message (a Python error set, or none: not this path's). */
static int
header_only_answer(PyObject *requests, Py_ssize_t i)
{
    PyObject *req = PySequence_GetItem(requests, i);
    if (req == NULL)
        return -1;
    Py_DECREF(req); /* the deque keeps it */
    if (!Py_IS_TYPE(req, message_type))
        return -1;
    PyObject *method = SLOT(req, message_offsets[M_METHOD]);
    if (SLOT(req, message_offsets[M_HEADERS_DONE]) != Py_True || method == NULL || !PyBytes_CheckExact(method))
        return 0;
    Py_ssize_t n = PyBytes_GET_SIZE(method);
    const char *m = PyBytes_AS_STRING(method);
    if (n == 4 && memcmp(m, "HEAD", 4) == 0)
        return 1;
    if (n == 7 && memcmp(m, "CONNECT", 7) == 0)
        return 2;
    return 0;
}

/* One event as take_view reads it: from a SockEvent (http1_batch) or straight from a ring buffer
 * record (ring_take), whose bytes are then read in place, never copied into a bytes object. */
struct event_view {
    long long ts, pos, pid, fd, gen, data_len, kind, flags, d;
    const unsigned char *data;
    Py_ssize_t len;
    PyObject *ev;     /* the SockEvent, or NULL (a ring record) */
    PyObject *ts_obj; /* the timestamp as an int: the SockEvent's (borrowed), else made at need (owned) */
};

/* The view of a SockEvent; 0 when ``ev`` is not one this path takes (nothing set). */
static int
view_of_event(PyObject *ev, struct event_view *v)
{
    if (!PyTuple_Check(ev) || PyTuple_GET_SIZE(ev) != EVENT_FIELD_COUNT)
        return 0;
    int ok = 1;
    PyObject *data_obj = PyTuple_GET_ITEM(ev, 18);
    v->kind = slot_int(PyTuple_GET_ITEM(ev, 7), &ok);
    v->flags = slot_int(PyTuple_GET_ITEM(ev, 8), &ok);
    v->ts = slot_int(PyTuple_GET_ITEM(ev, 0), &ok);
    v->pos = slot_int(PyTuple_GET_ITEM(ev, 1), &ok);
    v->data_len = slot_int(PyTuple_GET_ITEM(ev, 6), &ok);
    v->d = slot_int(PyTuple_GET_ITEM(ev, 9), &ok);
    v->pid = slot_int(PyTuple_GET_ITEM(ev, 3), &ok);
    v->fd = slot_int(PyTuple_GET_ITEM(ev, 4), &ok);
    v->gen = slot_int(PyTuple_GET_ITEM(ev, 5), &ok);
    if (!ok || !PyBytes_CheckExact(data_obj))
        return 0;
    v->data = (const unsigned char *)PyBytes_AS_STRING(data_obj);
    v->len = PyBytes_GET_SIZE(data_obj);
    v->ev = ev;
    v->ts_obj = PyTuple_GET_ITEM(ev, 0);
    return 1;
}

/* The view of a ring buffer record's event (``rec``: its header, then ``len`` bytes of data). */
static void
view_of_record(const unsigned char *rec, Py_ssize_t len, struct event_view *v)
{
    struct pxq_sock_event h;
    memcpy(&h, rec, sizeof h);
    v->ts = (long long)h.ts_ns;
    v->pos = (long long)h.pos;
    v->pid = h.pid;
    v->fd = h.fd;
    v->gen = h.gen;
    v->data_len = h.data_len;
    v->kind = h.kind;
    v->flags = h.flags;
    v->d = h.direction;
    v->data = rec + sizeof h;
    v->len = len;
    v->ev = NULL;
    v->ts_obj = NULL;
}

/* The view's timestamp as an int (made once for a ring record); NULL on a Python error. */
static PyObject *
view_ts(struct event_view *v)
{
    if (v->ts_obj == NULL)
        v->ts_obj = PyLong_FromLongLong(v->ts);
    return v->ts_obj;
}

/* The tracker's key of the view's connection: (pid, fd, gen). */
static PyObject *
view_key(const struct event_view *v)
{
    if (v->ev != NULL)
        return PyTuple_Pack(3, PyTuple_GET_ITEM(v->ev, 3), PyTuple_GET_ITEM(v->ev, 4), PyTuple_GET_ITEM(v->ev, 5));
    return Py_BuildValue("(LLL)", v->pid, v->fd, v->gen);
}

/* Take one event, as ConnTracker.handle_batch's fast path and the Python stitcher and rows would:
 * 1 (taken), 0 (not this path's: nothing changed), -1 (a Python error). */
static int
take_view(struct event_view *v, PyObject *conns, struct rows_parts *rows, long long clock_offset_ns, long long *bytes,
          long long *transactions, long long *max_ts, struct call_cache *cache)
{
    int ok = 1;
    if (v->kind != http1.ev_data || v->flags != 0)
        return 0;
    const long long ts = v->ts, pos = v->pos, data_len = v->data_len, d = v->d, pid = v->pid, fd = v->fd,
                    gen = v->gen;
    if ((d != 0 && d != 1) || v->len == 0)
        return 0;
    unsigned at_slot = cache_slot((uint64_t)pid * 0x100000001b3ull ^ (uint64_t)fd * 0x9E37ull ^ (uint64_t)gen);
    PyObject *conn = cache->conns[at_slot].conn;
    if (!(cache->conns_valid >> at_slot & 1) || cache->conns[at_slot].pid != pid || cache->conns[at_slot].fd != fd ||
        cache->conns[at_slot].gen != gen) {
        PyObject *key = view_key(v);
        if (key == NULL)
            return -1;
        conn = PyDict_GetItemWithError(conns, key); /* borrowed */
        Py_DECREF(key);
        if (conn == NULL)
            return PyErr_Occurred() ? -1 : 0;
        cache->conns[at_slot].pid = pid;
        cache->conns[at_slot].fd = fd;
        cache->conns[at_slot].gen = gen;
        cache->conns[at_slot].conn = conn;
        cache->conns_valid |= 1ull << at_slot;
    }
    if (!Py_IS_TYPE(conn, http1.conn))
        return 0;
    const Py_ssize_t *ca = http1.conn_at;
    PyObject *stream = SLOT(conn, ca[C_STREAM]), *st = SLOT(conn, ca[C_STITCHER]);
    if (SLOT(conn, ca[C_STATE]) != http1.parsing || stream == NULL || !Py_IS_TYPE(stream, http1.stream) ||
        st == NULL || !Py_IS_TYPE(st, http1.stitcher))
        return 0;
    /* Restarted after a loss or picked up mid-stream: ConnTracker._stitched lets its pairs through
     * as _collect would once its probation is over (held None) and it was never out of step. */
    PyObject *restarted = SLOT(conn, ca[C_RESTARTED]);
    if (restarted != Py_False &&
        (restarted != Py_True || SLOT(conn, ca[C_HELD]) != Py_None || slot_int(SLOT(conn, ca[C_OUT_OF_STEP_NS]), &ok) != 0 || !ok))
        return 0;
    /* the tracker's fast path: in order, nothing held */
    PyObject *expect = SLOT(stream, http1.stream_at[D_EXPECT]), *fed = SLOT(conn, ca[C_FED_NS]);
    if (expect == NULL || !PyList_CheckExact(expect) || PyList_GET_SIZE(expect) != 2 || fed == NULL ||
        !PyList_CheckExact(fed) || PyList_GET_SIZE(fed) != 2)
        return 0;
    long long expected = slot_int(PyList_GET_ITEM(expect, d), &ok);
    long long held = slot_int(SLOT(stream, http1.stream_at[D_HELD_BYTES]), &ok);
    long long role = slot_int(SLOT(conn, ca[C_ROLE]), &ok);
    if (!ok || expected != pos || held != 0)
        return 0;
    /* the stitcher's plain path, with nothing out of the common */
    const Py_ssize_t *sa = http1.stitcher_at, *wa = http1.direction_at;
    int is_request = d == (role == http1.role_client ? http1.egress : http1.ingress);
    PyObject *requests = SLOT(st, sa[S_REQUESTS]), *responses = SLOT(st, sa[S_RESPONSES]),
             *done = SLOT(st, sa[S_DONE]), *side = SLOT(st, sa[is_request ? S_REQ : S_RESP]),
             *body_limit_obj = SLOT(st, sa[S_BODY_LIMIT]);
    if (SLOT(st, sa[S_CLOSED]) != Py_False || SLOT(st, sa[S_UPGRADED]) != Py_False ||
        SLOT(st, sa[S_UPGRADE_WAIT]) != Py_False || SLOT(st, sa[S_PLAIN]) != Py_True ||
        SLOT(st, sa[S_OUT_OF_STEP]) != Py_False ||
        requests == NULL || !Py_IS_TYPE(requests, http1.deque) || responses == NULL || done == NULL ||
        !PyList_CheckExact(done) ||
        PyList_GET_SIZE(done) != 0 || side == NULL || !Py_IS_TYPE(side, http1.direction) ||
        body_limit_obj == NULL || !PyLong_CheckExact(body_limit_obj))
        return 0;
    Py_ssize_t waiting_responses = PyObject_Size(responses), waiting = PyObject_Size(requests);
    if (waiting_responses < 0 || waiting < 0)
        return -1;
    PyObject *pending = SLOT(side, wa[W_PENDING]), *epoch_obj = SLOT(side, wa[W_EPOCH]);
    long long completed = slot_int(SLOT(side, wa[W_COMPLETED]), &ok);
    long long body_limit = slot_int(body_limit_obj, &ok);
    /* requests waiting whose answer ends with its head (HEAD, CONNECT): Http1Stitcher's count */
    long long header_only = slot_int(SLOT(st, sa[S_HEADER_ONLY]), &ok);
    if (!ok || header_only < 0 || waiting_responses != 0 || pending == NULL || !PyByteArray_CheckExact(pending) ||
        PyByteArray_GET_SIZE(pending) != 0 || SLOT(side, wa[W_CURRENT]) != Py_None ||
        SLOT(side, wa[W_KEEP_ALIVE]) != Py_True || SLOT(side, wa[W_RESYNCING]) != Py_False ||
        SLOT(side, wa[W_BEGIN_TS]) != Py_None || epoch_obj == NULL || !PyLong_CheckExact(epoch_obj) ||
        body_limit > PY_SSIZE_T_MAX || body_limit < -PY_SSIZE_T_MAX)
        return 0;
    if (!is_request && SLOT(conn, ca[C_HAS_TUPLE]) != Py_True && SLOT(conn, ca[C_ADDR_CHECKED]) != Py_True)
        return 0; /* its first rows: _collect looks its addresses up in /proc */
    if (!is_request && rows_ready(rows) < 0)
        return -1;

    /* Frame every message of the bytes, changing nothing yet. */
    const unsigned char *data = v->data;
    Py_ssize_t len = v->len, at = 0;
    struct framed msgs[MAX_MESSAGES];
    struct waiting_request reqs[MAX_MESSAGES];
    PyObject *made[MAX_MESSAGES] = {0};
    int count = 0, result = 0;
    while (at < len) {
        if (count == MAX_MESSAGES)
            goto release;
        struct framed *m = &msgs[count];
        m->head.pairs = m->head.block = NULL;
        int answers = 0;
        if (!is_request && count < waiting) {
            /* What this response answers, as _plain_messages decides it: by the request it pairs
             * with (the oldest waiting, requests[count] here: each one before it paired, which is
             * checked below) while the stitcher counts requests answered by a head alone. */
            int kind = header_only_answer(requests, count);
            if (kind < 0) {
                result = PyErr_Occurred() ? -1 : 0;
                goto release;
            }
            if (kind == 2)
                goto release; /* CONNECT: a tunnel may start (the Python path) */
            answers = header_only != 0 ? kind : 0; /* the count as a truth value, as in Python */
            header_only -= kind; /* _stitch: a HEAD request answered leaves the count */
        }
        int framed = frame_complete(data, len, at, is_request, answers, &m->head, &m->length);
        if (framed <= 0) {
            result = framed;
            goto release;
        }
        count++;
        at = m->head.body_at + (Py_ssize_t)m->length;
        if (is_request && m->head.code == HEAD_METHOD)
            header_only++; /* _plain_messages: a HEAD request counted */
    }
    PyObject *ts_obj = view_ts(v);
    if (ts_obj == NULL) {
        result = -1;
        goto release;
    }
    if (is_request) {
        for (int i = 0; i < count; i++) {
            made[i] = make_message(data, &msgs[i].head, msgs[i].length, 1, body_limit_obj, (Py_ssize_t)body_limit,
                                   ts_obj, epoch_obj);
            if (made[i] == NULL) {
                result = -1;
                goto release;
            }
        }
    } else {
        /* Each response answers the oldest request waiting (_response_complete, _stitch): it must be
         * there, complete, whole, begun no later than this, and no later one begun before this. */
        if (waiting < count)
            goto release;
        for (int i = 0; i <= count && i < waiting; i++) {
            PyObject *req = PySequence_GetItem(requests, i);
            if (req == NULL) {
                result = -1;
                goto release;
            }
            Py_DECREF(req); /* the deque keeps it */
            if (!Py_IS_TYPE(req, message_type))
                goto release;
            long long start = slot_int(SLOT(req, message_offsets[M_START_NS]), &ok);
            if (!ok || (i > 0 && start < ts))
                goto release; /* a request after the first began before an answer ended: pipelined */
            if (i == count)
                break;
            PyObject *method = SLOT(req, message_offsets[M_METHOD]), *raw = SLOT(req, message_offsets[M_RAW_HEADERS]);
            struct waiting_request *w = &reqs[i];
            w->msg = req;
            w->start_ns = start;
            w->body_size = slot_int(SLOT(req, message_offsets[M_BODY_SIZE]), &ok);
            if (!ok || start > ts || SLOT(req, message_offsets[M_COMPLETE]) != Py_True ||
                SLOT(req, message_offsets[M_BROKEN]) != Py_False || method == NULL || !ascii_bytes(method) ||
                (PyBytes_GET_SIZE(method) == 7 && memcmp(PyBytes_AS_STRING(method), "CONNECT", 7) == 0) ||
                raw == NULL || !PyBytes_CheckExact(raw) || !ascii_bytes(SLOT(req, message_offsets[M_URL])) ||
                !ascii_bytes(SLOT(req, message_offsets[M_BODY])))
                goto release;
            PyObject *entry = cached_block(rows->raw_blocks, raw);
            if (entry == NULL) {
                result = PyErr_Occurred() ? -1 : 0;
                goto release;
            }
            w->json = PyTuple_GET_ITEM(entry, 0);
            /* the response's part of the row */
            struct framed *m = &msgs[i];
            Py_ssize_t kept = kept_body(m->length, (Py_ssize_t)body_limit);
            w->resp_entry = is_ascii(data + m->head.body_at, kept) ? cached_block(rows->raw_blocks, m->head.block)
                                                                     : NULL;
            if (w->resp_entry == NULL) {
                result = PyErr_Occurred() ? -1 : 0;
                goto release;
            }
        }
        /* The rows (HttpRows.add_pairs): the allocations first, so that a failure changes nothing
         * the stitcher keeps. */
        unsigned number_slot = cache_slot((uint64_t)(uintptr_t)conn);
        long long number = cache->numbers[number_slot].number;
        if (!(cache->numbers_valid >> number_slot & 1) || cache->numbers[number_slot].conn != conn) {
            number = connection_number(rows->connections, conn);
            if (number < 0) {
                result = -1;
                goto release;
            }
            cache->numbers[number_slot].conn = conn;
            cache->numbers[number_slot].number = number;
            cache->numbers_valid |= 1ull << number_slot;
        }
        for (int i = 0; i < count; i++) {
            struct framed *m = &msgs[i];
            struct waiting_request *w = &reqs[i];
            PyObject *entry = w->resp_entry;
            PyObject *resp_json = PyTuple_GET_ITEM(entry, 0);
            PyObject *method = SLOT(w->msg, message_offsets[M_METHOD]), *url = SLOT(w->msg, message_offsets[M_URL]),
                     *req_body = SLOT(w->msg, message_offsets[M_BODY]);
            Py_ssize_t kept = kept_body(m->length, (Py_ssize_t)body_limit);
            const void *parts[7] = {
                PyBytes_AS_STRING(w->json), PyBytes_AS_STRING(method), PyBytes_AS_STRING(url),
                PyBytes_AS_STRING(req_body), PyBytes_AS_STRING(resp_json), m->head.first, data + m->head.body_at,
            };
            Py_ssize_t sizes[7] = {
                PyBytes_GET_SIZE(w->json), PyBytes_GET_SIZE(method), PyBytes_GET_SIZE(url),
                PyBytes_GET_SIZE(req_body), PyBytes_GET_SIZE(resp_json), m->head.first_len, kept,
            };
            long long end = ts + clock_offset_ns, start = w->start_ns + clock_offset_ns;
            int64_t row[16] = {
                number, end, 1, 1, PyTuple_GET_ITEM(entry, 1) == Py_True, w->body_size, m->head.code, m->length,
                end - start, sizes[0], sizes[1], sizes[2], sizes[3], sizes[4], sizes[5], sizes[6],
            };
            for (int k = 0; k < 7; k++)
                if (bytearray_append(rows->strings[k], parts[k], sizes[k]) < 0) {
                    result = -1;
                    goto release;
                }
            if (bytearray_append(rows->numbers, row, sizeof row) < 0) {
                result = -1;
                goto release;
            }
        }
        rows->added += count; /* HttpRows.rows, counted up when the call returns */
        /* the stitcher: each request answered leaves the queue (_stitch) */
        for (int i = 0; i < count; i++) {
            PyObject *gone = PyObject_Vectorcall(http1.deque_popleft, &requests, 1, NULL);
            if (gone == NULL) {
                result = -1;
                goto release;
            }
            Py_DECREF(gone);
        }
        long long exchanges = slot_int(SLOT(st, sa[S_EXCHANGES]), &ok);
        long long conn_transactions = slot_int(SLOT(conn, ca[C_TRANSACTIONS]), &ok);
        if (!ok || set_int_slot(st, sa[S_EXCHANGES], exchanges + count) < 0 ||
            set_int_slot(conn, ca[C_TRANSACTIONS], conn_transactions + count) < 0) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_TypeError, "a stitcher or connection counter is not an int");
            result = -1;
            goto release;
        }
        Py_XSETREF(SLOT(st, sa[S_SEQUENTIAL]), Py_NewRef(Py_True));
        *transactions += count;
    }
    if (is_request) {
        for (int i = 0; i < count; i++) {
            PyObject *append_args[2] = {requests, made[i]};
            PyObject *r = PyObject_Vectorcall(http1.deque_append, append_args, 2, NULL);
            if (r == NULL) {
                result = -1;
                goto release;
            }
            Py_DECREF(r);
        }
    }
    /* the direction (Http1Stitcher._feed), the connection and its stream (handle_batch, _feed) */
    if (set_int_slot(side, wa[W_COMPLETED], completed + count) < 0 || set_int_slot(side, wa[W_CARRY_LEN], 0) < 0 ||
        set_int_slot(st, sa[S_HEADER_ONLY], header_only) < 0) {
        result = -1;
        goto release;
    }
    Py_XSETREF(SLOT(side, wa[W_TS_NS]), Py_NewRef(ts_obj));
    Py_XSETREF(SLOT(side, wa[W_PENDING_TS]), Py_NewRef(ts_obj));
    PyObject *next = PyLong_FromLongLong(pos + data_len);
    if (next == NULL || PyList_SetItem(expect, d, next) < 0 || PyList_SetItem(fed, d, Py_NewRef(ts_obj)) < 0) {
        result = -1;
        goto release;
    }
    Py_XSETREF(SLOT(conn, ca[C_LAST_NS]), Py_NewRef(ts_obj));
    *bytes += data_len;
    if (ts > *max_ts)
        *max_ts = ts;
    result = 1;
release:
    for (int i = 0; i < count; i++) {
        Py_XDECREF(msgs[i].head.pairs);
        Py_XDECREF(msgs[i].head.block);
        Py_XDECREF(made[i]);
    }
    return result;
}

/* HttpRows.rows += added (keeping an exception already set); -1 on a Python error. */
static int
add_rows(PyObject *rows, long long added)
{
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    int ok = 1;
    PyObject *count = PyObject_GetAttr(rows, http1.rows);
    long long n = count == NULL ? 0 : slot_int(count, &ok);
    Py_XDECREF(count);
    PyObject *new_count = count == NULL || !ok ? NULL : PyLong_FromLongLong(n + added);
    int set = new_count == NULL ? -1 : PyObject_SetAttr(rows, http1.rows, new_count);
    Py_XDECREF(new_count);
    if (set < 0 && !PyErr_Occurred())
        PyErr_SetString(PyExc_TypeError, "HttpRows.rows is not an int");
    if (type != NULL) {
        PyErr_Clear();
        PyErr_Restore(type, value, traceback); /* the first error is the one to tell */
        return -1;
    }
    return set;
}

/* The end of a call's writing into the row buffer: HttpRows.rows counts the rows written
 * (add_rows) and the buffer's parts looked up are let go (rows_ready looks them up again when
 * needed); -1 on a Python error (one already set is kept). */
static int
rows_done(struct rows_parts *rows)
{
    int status = 0;
    if (rows->added) {
        status = add_rows(rows->rows, rows->added);
        rows->added = 0;
    }
    Py_CLEAR(rows->strings_tuple);
    Py_CLEAR(rows->numbers);
    Py_CLEAR(rows->raw_blocks);
    Py_CLEAR(rows->connections);
    return status;
}

PyDoc_STRVAR(http1_batch_doc,
"http1_batch(events, start, conns, rows, clock_offset_ns) -> (stop, taken, bytes, transactions, max_ts)\n\n"
"Take events[start:] in order while each is the steady state of an HTTP/1 connection being parsed\n"
"(see pxq/agent/_native.c), leaving the tracker's ``conns``, their stitchers and ``rows`` (the\n"
"HttpRows) as ConnTracker.handle_batch would. ``stop``: the index of the first event not taken\n"
"(len(events) when all were), for the Python path; ``taken``, ``bytes``: events and their data bytes\n"
"taken (the tracker counts them), ``transactions``: rows written, ``max_ts``: the latest timestamp\n"
"taken (0: none).");

static PyObject *
http1_batch(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    /* METH_FASTCALL: a call per run of events, and one per event of any other kind */
    if (nargs != 5 || !PyList_Check(args[0]) || !PyLong_Check(args[1]) || !PyDict_Check(args[2]) ||
        !PyLong_Check(args[4])) {
        PyErr_SetString(PyExc_TypeError, "http1_batch(events: list, start: int, conns: dict, rows, clock_offset_ns: int)");
        return NULL;
    }
    PyObject *events = args[0], *conns = args[2], *rows_obj = args[3];
    Py_ssize_t start = PyLong_AsSsize_t(args[1]);
    long long clock_offset_ns = PyLong_AsLongLong(args[4]);
    if (PyErr_Occurred())
        return NULL;
    if (http1.conn == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "http1_batch before set_http1_classes");
        return NULL;
    }
    struct rows_parts rows = {.rows = rows_obj};
    struct call_cache cache; /* its slots are valid by its bits only */
    cache.conns_valid = cache.numbers_valid = 0;
    long long bytes = 0, transactions = 0, max_ts = 0;
    Py_ssize_t i = start < 0 ? 0 : start, taken = 0;
    for (; i < PyList_GET_SIZE(events); i++) {
        PyObject *ev = Py_NewRef(PyList_GET_ITEM(events, i));
        struct event_view view;
        int took = view_of_event(ev, &view) ? take_view(&view, conns, &rows, clock_offset_ns, &bytes, &transactions,
                                                        &max_ts, &cache)
                                            : 0;
        Py_DECREF(ev);
        if (took <= 0)
            break; /* not this path's (0), or a Python error (-1, set) */
        taken++;
    }
    if (rows_done(&rows) < 0 || PyErr_Occurred())
        return NULL;
    return Py_BuildValue("(nnLLL)", i, taken, bytes, transactions, max_ts);
}

/* ---------------------------------------------------------------------------------------------
 * The ring walk and the HTTP/1 steady state fused: records read in place.
 */
struct take_ctx {
    PyObject *conns, *handle;
    long long clock_offset_ns;
    struct rows_parts rows;
    struct call_cache cache;
    PyTypeObject *type;
    struct walk_cache pid_cache;
    long long bytes, transactions, max_ts;
    Py_ssize_t fast_events;
};

/* Forget what a take_ctx looked up: Python code is about to run (and may change any of it). */
static int
take_ctx_forget(struct take_ctx *ctx)
{
    ctx->cache.conns_valid = ctx->cache.numbers_valid = 0;
    return rows_done(&ctx->rows);
}

static int
take_record(void *ctx_, const unsigned char *event, Py_ssize_t data_len)
{
    struct take_ctx *ctx = ctx_;
    struct event_view view;
    view_of_record(event, data_len, &view);
    int took = 0;
    if (ctx->rows.rows != Py_None)
        took = take_view(&view, ctx->conns, &ctx->rows, ctx->clock_offset_ns, &ctx->bytes, &ctx->transactions,
                         &ctx->max_ts, &ctx->cache);
    Py_XDECREF(view.ts_obj);
    if (took < 0)
        return -1;
    if (took) {
        ctx->fast_events++;
        return 0;
    }
    /* not the steady state's: the tracker's Python path takes it, as a SockEvent, now */
    if (take_ctx_forget(ctx) < 0)
        return -1;
    PyObject *ev = make_event(ctx->type, event, data_len, &ctx->pid_cache);
    if (ev == NULL)
        return -1;
    PyObject *r = PyObject_Vectorcall(ctx->handle, &ev, 1, NULL);
    Py_DECREF(ev);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

PyDoc_STRVAR(ring_take_doc,
"ring_take(producer, consumer, data_at, size, limit, event_type, conns, rows, clock_offset_ns, handle)\n"
"-> (records, malformed, fast_events, fast_bytes, transactions, max_ts)\n\n"
"ring_read and http1_batch in one walk: each record (``limit`` at most) is taken by the HTTP/1\n"
"steady state straight from the ring buffer's memory when it is one (no SockEvent made), and\n"
"otherwise made an ``event_type`` and handed to ``handle`` (the tracker's Python path) there and\n"
"then, so every event is taken in ring buffer order as by ring_read + http1_batch. ``rows`` None:\n"
"every record goes to ``handle``. A record whose taking raised is consumed (it was acted on).\n"
"``records``, ``malformed``: as ring_read's; the others as http1_batch's, for the records taken in C.");

static PyObject *
ring_take(PyObject *self, PyObject *args)
{
    Py_buffer prod_buf, cons_buf;
    Py_ssize_t data_at, size, limit;
    PyObject *type_obj, *conns, *rows_obj, *handle;
    long long clock_offset_ns;
    if (!PyArg_ParseTuple(args, "y*w*nnnO!O!OLO:ring_take", &prod_buf, &cons_buf, &data_at, &size, &limit,
                          &PyType_Type, &type_obj, &PyDict_Type, &conns, &rows_obj, &clock_offset_ns, &handle))
        return NULL;
    PyObject *result = NULL;
    struct take_ctx ctx = {.conns = conns, .handle = handle,
                           .clock_offset_ns = clock_offset_ns, .rows = {.rows = rows_obj},
                           .type = (PyTypeObject *)type_obj, .pid_cache = {0, NULL}};
    ctx.cache.conns_valid = ctx.cache.numbers_valid = 0;
    Py_ssize_t records = 0, malformed = 0;
    int status = -1;
    if (!PyType_IsSubtype(ctx.type, &PyTuple_Type))
        PyErr_SetString(PyExc_TypeError, "event_type must be a tuple subclass (SockEvent)");
    else if (!PyCallable_Check(handle))
        PyErr_SetString(PyExc_TypeError, "handle must be callable");
    else if (rows_obj != Py_None && http1.conn == NULL)
        PyErr_SetString(PyExc_RuntimeError, "ring_take before set_http1_classes");
    else
        status = walk_ring(&prod_buf, &cons_buf, data_at, size, limit, take_record, &ctx, 1, &records, &malformed);
    /* the rows written count in HttpRows.rows even when a later record raised */
    if (take_ctx_forget(&ctx) == 0 && status == 0)
        result = Py_BuildValue("(nnnLLL)", records, malformed, ctx.fast_events, ctx.bytes, ctx.transactions,
                               ctx.max_ts);
    Py_XDECREF(ctx.pid_cache.pid_obj);
    PyBuffer_Release(&prod_buf);
    PyBuffer_Release(&cons_buf);
    return result;
}

/* --------------------------------------------------------------------------------------------- */

static PyMethodDef native_methods[] = {
    {"ring_read", ring_read, METH_VARARGS, ring_read_doc},
    {"frame_plain", frame_plain, METH_VARARGS, frame_plain_doc},
    {"frame_message", frame_message, METH_VARARGS, frame_message_doc},
    {"set_message_type", set_message_type, METH_O, set_message_type_doc},
    {"plain_block_cache", plain_block_cache, METH_NOARGS, plain_block_cache_doc},
    {"clear_plain_block_cache", clear_plain_block_cache, METH_NOARGS, clear_plain_block_cache_doc},
    {"set_http1_classes", set_http1_classes, METH_VARARGS, set_http1_classes_doc},
    {"http1_batch", (PyCFunction)(void (*)(void))http1_batch, METH_FASTCALL, http1_batch_doc},
    {"ring_take", ring_take, METH_VARARGS, ring_take_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef native_module = {
    PyModuleDef_HEAD_INIT, "_native", "pxq's C fast path (see pxq/agent/_native.c)", -1, native_methods,
    NULL, NULL, NULL, NULL,
};

#define FIELD(name) Py_BuildValue("(snn)", #name, (Py_ssize_t)offsetof(struct pxq_sock_event, name), \
                                  (Py_ssize_t)sizeof(((struct pxq_sock_event *)0)->name))

PyMODINIT_FUNC
PyInit__native(void)
{
    init_char_classes();
    for (int m = 0; m < PLAIN_METHOD_COUNT; m++) {
        if (method_objects[m] == NULL) {
            method_objects[m] = PyBytes_FromString(PLAIN_METHODS[m]);
            if (method_objects[m] == NULL)
                return NULL;
        }
    }
    if (version_1_1 == NULL && (version_1_1 = Py_BuildValue("(ii)", 1, 1)) == NULL)
        return NULL;
    if (zero_address == NULL && (zero_address = PyBytes_FromStringAndSize(NULL, 16)) == NULL)
        return NULL;
    memset(PyBytes_AS_STRING(zero_address), 0, 16);
    PyObject *module = PyModule_Create(&native_module);
    if (module == NULL)
        return NULL;
    PyObject *fields = Py_BuildValue(
        "(NNNNNNNNNNNNNNNNNN)", FIELD(ts_ns), FIELD(pos), FIELD(size), FIELD(pid), FIELD(fd), FIELD(gen),
        FIELD(data_len), FIELD(kind), FIELD(flags), FIELD(direction), FIELD(role), FIELD(family), FIELD(lport),
        FIELD(rport), FIELD(syscall), FIELD(reserved), FIELD(laddr), FIELD(raddr));
    int failed = fields == NULL || PyModule_AddObjectRef(module, "EVENT_FIELDS", fields) < 0 ||
                 PyModule_AddIntConstant(module, "EVENT_SIZE", (long)sizeof(struct pxq_sock_event)) < 0 ||
                 PyModule_AddStringConstant(module, "SOURCE_SHA256", PXQ_NATIVE_SOURCE_SHA256) < 0;
    Py_XDECREF(fields);
    if (failed) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
