/* pxq's C fast path for the socket tracer's two hottest byte loops (issue 14, "Socket tracer cost").
 *
 * ring_read: the BPF ring buffer's record walk (RingReader.read in pxq/agent/socket_tracer.py).
 * frame_message: the HTTP/1 plain-message framing (Http1Stitcher._plain_messages in
 * pxq/agent/protocols/http1/stitcher.py): one message of the common shape made into the
 * stitcher's _Message, or None for llhttp; frame_plain: the same framing, its parts as values.
 *
 * Both were pure-Python loops of a few bytes calls per item; here they are one C call per batch
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
    struct walk_cache cache = {0, NULL}; /* before any goto done */
    PyTypeObject *type = (PyTypeObject *)type_obj;
    if (!PyType_IsSubtype(type, &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "event_type must be a tuple subclass (SockEvent)");
        goto done;
    }
    if (size <= 0 || (size & (size - 1)) || data_at < 8 || data_at % 8 ||
        prod_buf.len < data_at + 2 * size || cons_buf.len < 8 || ((uintptr_t)prod_buf.buf % 8) ||
        ((uintptr_t)cons_buf.buf % 8)) {
        PyErr_SetString(PyExc_ValueError,
                        "ring_read: the data area (a power of two, mapped twice from data_at >= 8) must fit in "
                        "the producer buffer, the positions 8-byte aligned");
        goto done;
    }
    const unsigned char *base = (const unsigned char *)prod_buf.buf;
    uint64_t *cons_pos = (uint64_t *)cons_buf.buf;
    const uint64_t mask = (uint64_t)size - 1;
    /* The kernel writes the producer position with release semantics after a record's header
     * (busy bit set) and commits by clearing the busy bit with release semantics: acquire loads
     * here (plain loads on x86-64), and a release store of the consumer position. */
    uint64_t cons = __atomic_load_n(cons_pos, __ATOMIC_ACQUIRE);
    const uint64_t prod = __atomic_load_n((const uint64_t *)base, __ATOMIC_ACQUIRE);
    Py_ssize_t taken = 0, malformed = 0;
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
                PyObject *ev =
                    make_event(type, rec + RING_HEADER, (Py_ssize_t)(len - sizeof(struct pxq_sock_event)), &cache);
                if (ev == NULL || PyList_Append(out, ev) < 0) {
                    Py_XDECREF(ev);
                    __atomic_store_n(cons_pos, cons, __ATOMIC_RELEASE); /* this record is read again */
                    goto done;
                }
                Py_DECREF(ev);
                taken++;
            }
        }
        cons = next;
    }
    __atomic_store_n(cons_pos, cons, __ATOMIC_RELEASE);
    result = Py_BuildValue("(nn)", taken, malformed);
done:
    Py_XDECREF(cache.pid_obj);
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

PyDoc_STRVAR(set_message_type_doc,
"set_message_type(cls): the class frame_message makes; its __slots__ must be the ones _native.c fills.");

static PyObject *
set_message_type(PyObject *self, PyObject *cls)
{
    if (!PyType_Check(cls)) {
        PyErr_SetString(PyExc_TypeError, "set_message_type takes a class");
        return NULL;
    }
    PyObject *slots = PyObject_GetAttrString(cls, "__slots__");
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
    for (int i = 0; i < MESSAGE_SLOT_COUNT; i++) {
        PyObject *descr = PyObject_GetAttrString(cls, MESSAGE_SLOTS[i]);
        if (descr == NULL)
            return NULL;
        int is_slot = Py_IS_TYPE(descr, &PyMemberDescr_Type) &&
                      ((PyMemberDescrObject *)descr)->d_member->type == T_OBJECT_EX;
        offsets[i] = is_slot ? ((PyMemberDescrObject *)descr)->d_member->offset : 0;
        Py_DECREF(descr);
        if (!is_slot) {
            PyErr_Format(PyExc_TypeError, "%s.%s is not a slot (pxq/agent/_native.c fills it as one)",
                         ((PyTypeObject *)cls)->tp_name, MESSAGE_SLOTS[i]);
            return NULL;
        }
    }
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
    int framed = frame_head(data, buf.len, at, is_request, &head);
    if (framed < 0)
        goto done;
    long long length = head.length;
    if (framed == 0)
        goto not_plain;
    if (is_request) {
        if (length < 0)
            length = 0; /* a request without Content-Length has no body */
    } else if (answers == 2) {
        goto not_plain; /* an answer to CONNECT: a tunnel may start */
    } else if (answers == 1) {
        length = 0; /* any answer to HEAD ends with its header block */
    } else if (length < 0 || head.code == 204 || head.code == 304) {
        goto not_plain; /* close-delimited, or framed by llhttp's rules for 204/304 */
    }
    if (length > buf.len - head.body_at)
        goto not_plain; /* its body goes on in a later chunk */
    msg = message_type->tp_alloc(message_type, 0);
    if (msg == NULL)
        goto done;
    Py_ssize_t kept = length == 0 || body_limit <= 0 ? 0 : (length < body_limit ? (Py_ssize_t)length : body_limit);
    PyObject *values[MESSAGE_SLOT_COUNT] = {
        [M_BODY_LIMIT] = Py_NewRef(body_limit_obj),
        [M_START_NS] = Py_NewRef(ts_obj),
        [M_END_NS] = Py_NewRef(ts_obj),
        [M_EPOCH] = Py_NewRef(epoch_obj),
        [M_VALID_START] = Py_NewRef(Py_True),
        [M_URL] = is_request ? PyBytes_FromStringAndSize((const char *)head.first, head.first_len)
                             : PyBytes_FromStringAndSize(NULL, 0),
        [M_REASON] = is_request ? PyBytes_FromStringAndSize(NULL, 0)
                                : PyBytes_FromStringAndSize((const char *)head.first, head.first_len),
        [M_HEADER_PAIRS] = pair_list(head.pairs),
        [M_BODY] = PyBytes_FromStringAndSize((const char *)data + head.body_at, kept),
        [M_BODY_SIZE] = PyLong_FromLongLong(length),
        [M_METHOD] = is_request ? Py_NewRef(method_objects[head.code]) : PyBytes_FromStringAndSize(NULL, 0),
        [M_STATUS] = PyLong_FromLong(is_request ? 0 : head.code),
        [M_VERSION] = Py_NewRef(version_1_1),
        [M_HEADERS_DONE] = Py_NewRef(Py_True),
        [M_COMPLETE] = Py_NewRef(Py_True),
        [M_BROKEN] = Py_NewRef(Py_False),
        [M_MARKER_AT] = PyLong_FromLong(-1),
        [M_UNCAPTURED] = PyLong_FromLong(0),
        [M_UNCAPTURED_END] = PyLong_FromLong(0),
        [M_DECODER] = Py_NewRef(length ? Py_False : Py_None), /* False: a body without Content-Encoding */
        [M_RAW_HEADERS] = Py_NewRef(head.block),
    };
    int failed = 0;
    for (int i = 0; i < MESSAGE_SLOT_COUNT; i++) {
        *(PyObject **)((char *)msg + message_offsets[i]) = values[i]; /* NULL: unset, fine to free */
        failed |= values[i] == NULL;
    }
    if (failed)
        goto done;
    result = Py_BuildValue("(On)", msg, head.body_at + (Py_ssize_t)length);
    goto done;
not_plain:
    result = Py_NewRef(Py_None);
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

/* --------------------------------------------------------------------------------------------- */

static PyMethodDef native_methods[] = {
    {"ring_read", ring_read, METH_VARARGS, ring_read_doc},
    {"frame_plain", frame_plain, METH_VARARGS, frame_plain_doc},
    {"frame_message", frame_message, METH_VARARGS, frame_message_doc},
    {"set_message_type", set_message_type, METH_O, set_message_type_doc},
    {"plain_block_cache", plain_block_cache, METH_NOARGS, plain_block_cache_doc},
    {"clear_plain_block_cache", clear_plain_block_cache, METH_NOARGS, clear_plain_block_cache_doc},
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
