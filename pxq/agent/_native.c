/* pxq's C fast path for the socket tracer's two hottest byte loops (issue 14, "Socket tracer cost").
 *
 * ring_read: the BPF ring buffer's record walk (RingReader.read in pxq/agent/socket_tracer.py).
 * frame_plain: the HTTP/1 plain-message framing (Http1Stitcher._plain_messages in
 * pxq/agent/protocols/http1/stitcher.py): one message of the common shape, or None for llhttp.
 *
 * Both were pure-Python loops of a few bytes calls per item; here they are one C call per batch
 * (ring) or per message (HTTP). Built by tools/build_native.py (tools/setup.sh, the hatch build
 * hook); loaded through pxq/agent/native.py, which checks the build matches this source.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

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

static PyObject *
make_event(PyTypeObject *type, const unsigned char *rec, Py_ssize_t data_len)
{
    struct pxq_sock_event h;
    memcpy(&h, rec, sizeof h);
    /* A tuple subclass without __dict__ (a NamedTuple): tuple.__new__(SockEvent, ...) without
     * the argument tuple. */
    PyObject *ev = type->tp_alloc(type, EVENT_FIELD_COUNT);
    if (ev == NULL)
        return NULL;
    PyObject *items[EVENT_FIELD_COUNT] = {
        PyLong_FromUnsignedLongLong(h.ts_ns),
        PyLong_FromUnsignedLongLong(h.pos),
        PyLong_FromUnsignedLongLong(h.size),
        PyLong_FromUnsignedLong(h.pid),
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
        PyBytes_FromStringAndSize((const char *)h.laddr, 16),
        PyBytes_FromStringAndSize((const char *)h.raddr, 16),
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
                PyObject *ev = make_event(type, rec + RING_HEADER, (Py_ssize_t)(len - sizeof(struct pxq_sock_event)));
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

/* Does [p, p+n) equal the lower-case ``word`` in any case? */
static int
equals_lower(const unsigned char *p, Py_ssize_t n, const char *word)
{
    Py_ssize_t len = (Py_ssize_t)strlen(word);
    if (n != len)
        return 0;
    for (Py_ssize_t i = 0; i < n; i++)
        if (ascii_lower(p[i]) != (unsigned char)word[i])
            return 0;
    return 1;
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

/* The header lines [p, block_end) (each with its CRLF) as a list of (name, value) pairs into
 * *pairs, and the Content-Length (-1: none) into *length. Returns 1 when plain, 0 when not
 * (*pairs is then NULL), -1 on a Python error. */
static int
plain_headers(const unsigned char *p, const unsigned char *block_end, PyObject **pairs, long long *length)
{
    *length = -1;
    *pairs = PyList_New(0);
    if (*pairs == NULL)
        return -1;
    while (p < block_end) {
        const unsigned char *name = p;
        while (p < block_end && (char_class[*p] & CHAR_TOKEN))
            p++;
        if (p == name || p >= block_end || *p != ':')
            goto not_plain;
        Py_ssize_t name_len = p - name;
        p++;
        while (p < block_end && (*p == ' ' || *p == '\t'))
            p++;
        const unsigned char *value = p;
        while (p < block_end && (*p == '\t' || (*p >= ' ' && *p <= '~')))
            p++;
        if (block_end - p < 2 || p[0] != '\r' || p[1] != '\n')
            goto not_plain;
        Py_ssize_t value_len = p - value;
        p += 2;
        if (equals_lower(name, name_len, "transfer-encoding") || equals_lower(name, name_len, "content-encoding") ||
            equals_lower(name, name_len, "upgrade"))
            goto not_plain;
        if (equals_lower(name, name_len, "connection") && !equals_lower(value, value_len, "keep-alive"))
            goto not_plain; /* close (llhttp refuses bytes after it), upgrade, or a list of options */
        if (equals_lower(name, name_len, "content-length")) {
            if (*length >= 0 || value_len == 0 || value_len > 15)
                goto not_plain;
            long long n = 0;
            for (Py_ssize_t i = 0; i < value_len; i++) {
                if (value[i] < '0' || value[i] > '9')
                    goto not_plain;
                n = n * 10 + (value[i] - '0');
            }
            *length = n;
        }
        PyObject *pair = Py_BuildValue("(y#y#)", (const char *)name, name_len, (const char *)value, value_len);
        if (pair == NULL || PyList_Append(*pairs, pair) < 0) {
            Py_XDECREF(pair);
            Py_CLEAR(*pairs);
            return -1;
        }
        Py_DECREF(pair);
    }
    return 1;
not_plain:
    Py_CLEAR(*pairs);
    return 0;
}

PyDoc_STRVAR(frame_plain_doc,
"frame_plain(data, at, is_request) -> None or (method|status, target|reason, pairs, block, length, body_at)\n\n"
"The plain HTTP/1.1 message head starting at ``data[at]`` (see the shape in pxq/agent/_native.c):\n"
"the method (a bytes object) and the request target, or the status code (an int) and the reason;\n"
"the header lines as a list of (name, value) bytes pairs and as sent (``block``, each line with its\n"
"CRLF); the Content-Length (-1: none); and where the body starts. None when the head is not\n"
"complete in ``data`` or not plain: llhttp frames it.");

static PyObject *
frame_plain(PyObject *self, PyObject *args)
{
    Py_buffer buf;
    Py_ssize_t at;
    int is_request;
    if (!PyArg_ParseTuple(args, "y*np:frame_plain", &buf, &at, &is_request))
        return NULL;
    PyObject *result = NULL;
    const unsigned char *data = (const unsigned char *)buf.buf;
    const unsigned char *end = data + buf.len;
    if (at < 0 || at > buf.len) {
        PyErr_SetString(PyExc_IndexError, "frame_plain: at is outside data");
        goto done;
    }
    const unsigned char *head_end = find_head_end(data + at, end);
    if (head_end == NULL) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    const unsigned char *block_end = head_end + 2; /* the last header line's CRLF included */
    const unsigned char *first, *block;
    Py_ssize_t first_len;
    int code;
    if (is_request)
        block = plain_request_line(data + at, block_end, &code, &first, &first_len);
    else
        block = plain_status_line(data + at, block_end, &code, &first, &first_len);
    if (block == NULL) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    PyObject *pairs;
    long long length;
    int plain = plain_headers(block, block_end, &pairs, &length);
    if (plain < 0)
        goto done;
    if (plain == 0) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    PyObject *start = is_request ? Py_NewRef(method_objects[code]) : PyLong_FromLong(code);
    if (start == NULL) {
        Py_DECREF(pairs);
        goto done;
    }
    result = Py_BuildValue("(Ny#Ny#Ln)", start, (const char *)first, first_len, pairs, (const char *)block,
                           (Py_ssize_t)(block_end - block), length, (Py_ssize_t)(head_end + 4 - data));
done:
    PyBuffer_Release(&buf);
    return result;
}

/* --------------------------------------------------------------------------------------------- */

static PyMethodDef native_methods[] = {
    {"ring_read", ring_read, METH_VARARGS, ring_read_doc},
    {"frame_plain", frame_plain, METH_VARARGS, frame_plain_doc},
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
