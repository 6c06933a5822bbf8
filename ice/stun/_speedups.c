/*
 * Optional C accelerator for the STUN codec (ice/stun/message.py, ice/stun/integrity.py).
 *
 * Two hot spots, nothing else:
 *   scan(data, legacy)  -> (mtype, transaction_id, index, mi, mi256, fp)
 *       the framing walk of RFC 8489 section 5/14 plus the FINGERPRINT check (section 14.7), exactly as
 *       message._scan_py does it (a property test compares the two on random and mutated input);
 *   HmacKey(key).sha1(data) / .sha256(data)
 *       HMAC (RFC 2104) with the ipad/opad states computed once per key, on OpenSSL's SHA-1/SHA-256;
 *   seal(mtype, transaction_id, body, key, fingerprint)
 *       header, MESSAGE-INTEGRITY and FINGERPRINT around encoded attributes, as Message.encode adds them;
 *   ice_check(data, prefix, key, remote)
 *       an ICE agent's plain incoming check, verified and read in one pass, and its answer (None: the general
 *       path decides);
 *   ice_answer(data, key)
 *       the mapped address of the plain success response to an agent's check, verified (None: the general path).
 *
 * Errors raise the exception class registered with set_error() (StunParseError), with the same messages as
 * the Python implementation. The pure-Python code stays the reference; ICELAB_PURE_PYTHON=1 disables this.
 *
 * And batched UDP I/O for the asyncio driver (ice/aio/udp.py holds the pure-Python equivalents):
 *   recv_batch(sock, max, size) -> [((host, port), data), ...]
 *       up to max datagrams in one recvmmsg(2) on a non-blocking socket ([] when none is queued);
 *   send_batch(sock, items, start, gso=True) -> index after the last one sent
 *       items[i][0] the destination (host, port), or None for a connected socket's peer, items[i][1] the bytes (a
 *       Transmit fits), in sendmmsg(2) calls; stops at the first datagram the kernel refused (EAGAIN included),
 *       whose index it returns, so the caller sends that one on its own path and learns the error there; and
 *       before the first item whose third field (a Transmit's source) differs from items[start]'s. Runs of
 *       datagrams to one destination go as one GSO message where the socket allows it (see below).
 */
#define PY_SSIZE_T_CLEAN
#define OPENSSL_SUPPRESS_DEPRECATED
#include <Python.h>
#include <structmember.h>
#include <openssl/sha.h>
#include <string.h>
#include <zlib.h>
#include <arpa/inet.h>
#ifdef __linux__
#include <errno.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <sys/socket.h>
#endif

static PyObject *parse_error = NULL;
static uint32_t crc32_ieee(const unsigned char *p, Py_ssize_t n) {
    return (uint32_t)crc32(0L, p, (uInt)n);  /* zlib's CRC-32, as Python's zlib.crc32 */
}

static inline unsigned rd16(const unsigned char *p) { return ((unsigned)p[0] << 8) | p[1]; }
static inline uint32_t rd32(const unsigned char *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static PyObject *fail(const char *msg) {
    PyErr_SetString(parse_error ? parse_error : PyExc_ValueError, msg);
    return NULL;
}

#define T_MI 0x0008
#define T_MI256 0x001C
#define T_FP 0x8028

static PyObject *scan(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "scan(data: bytes, legacy: bool)");
        return NULL;
    }
    const unsigned char *d = (const unsigned char *)PyBytes_AS_STRING(args[0]);
    Py_ssize_t n = PyBytes_GET_SIZE(args[0]);
    int legacy = PyObject_IsTrue(args[1]);
    if (n < 20) return fail("shorter than the 20-byte STUN header");
    unsigned mtype = rd16(d), length = rd16(d + 2);
    uint32_t cookie = rd32(d + 4);
    if (mtype & 0xC000) return fail("the two most significant bits of a STUN message must be zero");
    if (cookie != 0x2112A442u && !legacy) return fail("wrong magic cookie (not an RFC 5389/8489 message)");
    if ((Py_ssize_t)length + 20 != n) {
        PyErr_Format(parse_error ? parse_error : PyExc_ValueError,
                     "header says %u bytes of attributes, datagram has %zd", length, n - 20);
        return NULL;
    }
    if (length & 3) return fail("message length is not a multiple of 4");

    PyObject *index = PyList_New(0);
    if (!index) return NULL;
    PyObject *first = PyDict_New();
    if (!first) { Py_DECREF(index); return NULL; }
    Py_ssize_t pos = 20, mi = -1, mi256 = -1, fp = -1;
    /* Ordinary attributes until the first trailer attribute (positions stay multiples of 4 below n). */
    while (pos < n) {
        unsigned t = rd16(d + pos), alen = rd16(d + pos + 2);
        if (t == T_MI || t == T_MI256 || t == T_FP) break;
        PyObject *entry = PyTuple_New(3);
        if (!entry) goto error;
        PyObject *code = PyLong_FromLong((long)t);
        PyTuple_SET_ITEM(entry, 0, code);
        PyTuple_SET_ITEM(entry, 1, PyLong_FromSsize_t(pos + 4));
        PyTuple_SET_ITEM(entry, 2, PyLong_FromLong((long)alen));
        if (!code || !PyTuple_GET_ITEM(entry, 1) || !PyTuple_GET_ITEM(entry, 2) || PyList_Append(index, entry) < 0
            || PyDict_SetDefault(first, code, entry) == NULL) {
            Py_DECREF(entry);
            goto error;
        }
        Py_DECREF(entry);
        pos += 4 + alen + ((4 - (alen & 3)) & 3);
    }
    /* The trailer: MESSAGE-INTEGRITY, MESSAGE-INTEGRITY-SHA256, FINGERPRINT (RFC 8489 sections 14.5-14.7). */
    while (pos < n) {
        unsigned t = rd16(d + pos), alen = rd16(d + pos + 2);
        if (pos + 4 + (Py_ssize_t)alen > n) break;
        if (fp >= 0) { fail("FINGERPRINT must be the last attribute"); goto error; }
        if (t == T_FP) {
            if (alen != 4) { fail("FINGERPRINT must be 4 bytes"); goto error; }
            fp = pos;
        } else if (mi256 >= 0) {
            /* ignored after MESSAGE-INTEGRITY-SHA256 */
        } else if (t == T_MI256) {
            if (alen < 16 || alen > 32 || (alen & 3)) {
                fail("MESSAGE-INTEGRITY-SHA256 must be 16..32 bytes, a multiple of 4");
                goto error;
            }
            mi256 = pos;
        } else if (mi >= 0) {
            /* ignored after MESSAGE-INTEGRITY */
        } else if (t == T_MI) {
            if (alen != 20) { fail("MESSAGE-INTEGRITY must be 20 bytes"); goto error; }
            mi = pos;
        }
        pos += 4 + alen + ((4 - (alen & 3)) & 3);
    }
    if (pos != n) { fail("an attribute overruns the message"); goto error; }
    if (fp >= 0 && (crc32_ieee(d, fp) ^ 0x5354554Eu) != rd32(d + fp + 4)) {
        fail("FINGERPRINT does not match");
        goto error;
    }
    PyObject *tid = cookie == 0x2112A442u ? PyBytes_FromStringAndSize((const char *)d + 8, 12)
                                          : PyBytes_FromStringAndSize((const char *)d + 4, 16);
    if (!tid) goto error;
    PyObject *result = PyTuple_New(7);
    if (!result) { Py_DECREF(tid); goto error; }
    PyTuple_SET_ITEM(result, 0, PyLong_FromLong((long)mtype));
    PyTuple_SET_ITEM(result, 1, tid);
    PyTuple_SET_ITEM(result, 2, index);
    PyTuple_SET_ITEM(result, 3, first);
    PyTuple_SET_ITEM(result, 4, PyLong_FromSsize_t(mi));
    PyTuple_SET_ITEM(result, 5, PyLong_FromSsize_t(mi256));
    PyTuple_SET_ITEM(result, 6, PyLong_FromSsize_t(fp));
    for (int i = 0; i < 7; i++) {
        if (!PyTuple_GET_ITEM(result, i)) { Py_DECREF(result); return NULL; }
    }
    return result;
error:
    Py_DECREF(index);
    Py_DECREF(first);
    return NULL;
}

static PyObject *crc32_py(PyObject *self, PyObject *arg) {  /* for the equivalence tests */
    Py_buffer b;
    if (PyObject_GetBuffer(arg, &b, PyBUF_SIMPLE) < 0) return NULL;
    uint32_t c = crc32_ieee((const unsigned char *)b.buf, b.len);
    PyBuffer_Release(&b);
    return PyLong_FromUnsignedLong(c);
}

/* ------------------------------------------------------------------------------------------- get(): decode */
/*
 * get(first, raw, transaction_id, cls) decodes the first attribute of class cls without running Python code
 * for the common value kinds, building the slotted dataclass instance directly (its fields are member
 * descriptors, whose offsets are read once at register() time). Kinds it does not know, and IPv6 addresses,
 * return NotImplemented so the Python decoder (the reference) handles them.
 */
enum { K_U32 = 1, K_U64 = 2, K_FLAG = 3, K_TEXT = 4, K_XOR_ADDR = 5 };

typedef struct {
    int kind;
    long code;
    Py_ssize_t off1, off2, max_len;
} Kind;

static PyObject *kinds = NULL; /* dict: class -> capsule(Kind) */

static Py_ssize_t member_offset(PyObject *cls, const char *name) {
    PyObject *d = PyObject_GetAttrString(cls, name);
    if (!d) return -1;
    if (!Py_IS_TYPE(d, &PyMemberDescr_Type)) {
        Py_DECREF(d);
        PyErr_Format(PyExc_TypeError, "%s is not a slot", name);
        return -1;
    }
    Py_ssize_t off = ((PyMemberDescrObject *)d)->d_member->offset;
    Py_DECREF(d);
    return off;
}

/* register(cls, kind, code, field1 or None, field2 or None, max_len) */
static PyObject *register_kind(PyObject *self, PyObject *args) {
    PyObject *cls, *f1, *f2;
    int kind;
    long code;
    Py_ssize_t max_len;
    if (!PyArg_ParseTuple(args, "OilOOn", &cls, &kind, &code, &f1, &f2, &max_len)) return NULL;
    if (!PyType_Check(cls)) { PyErr_SetString(PyExc_TypeError, "cls must be a type"); return NULL; }
    Kind *k = PyMem_Malloc(sizeof(Kind));
    if (!k) return PyErr_NoMemory();
    k->kind = kind; k->code = code; k->max_len = max_len; k->off1 = k->off2 = -1;
    if (f1 != Py_None && (k->off1 = member_offset(cls, PyUnicode_AsUTF8(f1))) < 0) { PyMem_Free(k); return NULL; }
    if (f2 != Py_None && (k->off2 = member_offset(cls, PyUnicode_AsUTF8(f2))) < 0) { PyMem_Free(k); return NULL; }
    PyObject *cap = PyCapsule_New(k, NULL, NULL);
    if (!cap) { PyMem_Free(k); return NULL; }
    if (!kinds && !(kinds = PyDict_New())) { Py_DECREF(cap); return NULL; }
    int rc = PyDict_SetItem(kinds, cls, cap);
    Py_DECREF(cap);
    if (rc < 0) return NULL;
    Py_RETURN_NONE;
}

static PyObject *new_instance(PyTypeObject *t, Kind *k, PyObject *v1, PyObject *v2) {
    PyObject *obj = t->tp_alloc(t, 0);
    if (!obj) { Py_XDECREF(v1); Py_XDECREF(v2); return NULL; }
    if (k->off1 >= 0) *(PyObject **)((char *)obj + k->off1) = v1;
    if (k->off2 >= 0) *(PyObject **)((char *)obj + k->off2) = v2;
    return obj;
}

static PyObject *get(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4 || !PyDict_Check(args[0]) || !PyBytes_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "get(first: dict, raw: bytes, transaction_id: bytes, cls)");
        return NULL;
    }
    PyObject *cap = kinds ? PyDict_GetItemWithError(kinds, args[3]) : NULL;
    if (!cap) {
        if (PyErr_Occurred()) return NULL;
        Py_RETURN_NOTIMPLEMENTED;
    }
    Kind *k = PyCapsule_GetPointer(cap, NULL);
    PyObject *code = PyLong_FromLong(k->code);
    if (!code) return NULL;
    PyObject *entry = PyDict_GetItemWithError(args[0], code);
    Py_DECREF(code);
    if (!entry) {
        if (PyErr_Occurred()) return NULL;
        Py_RETURN_NONE;
    }
    Py_ssize_t off = PyLong_AsSsize_t(PyTuple_GET_ITEM(entry, 1));
    Py_ssize_t len = PyLong_AsSsize_t(PyTuple_GET_ITEM(entry, 2));
    const unsigned char *d = (const unsigned char *)PyBytes_AS_STRING(args[1]);
    if (off < 0 || len < 0 || off + len > PyBytes_GET_SIZE(args[1])) Py_RETURN_NOTIMPLEMENTED;
    d += off;
    PyTypeObject *t = (PyTypeObject *)args[3];
    switch (k->kind) {
    case K_U32:
        if (len != 4) Py_RETURN_NOTIMPLEMENTED; /* the Python decoder raises the precise error */
        return new_instance(t, k, PyLong_FromUnsignedLong(rd32(d)), NULL);
    case K_U64:
        if (len != 8) Py_RETURN_NOTIMPLEMENTED;
        return new_instance(t, k, PyLong_FromUnsignedLongLong(((unsigned long long)rd32(d) << 32) | rd32(d + 4)),
                            NULL);
    case K_FLAG:
        if (len != 0) Py_RETURN_NOTIMPLEMENTED;
        return new_instance(t, k, NULL, NULL);
    case K_TEXT: {
        if (len > k->max_len) Py_RETURN_NOTIMPLEMENTED;
        PyObject *text = PyUnicode_DecodeUTF8((const char *)d, len, "strict");
        if (!text) {
            PyErr_Clear();
            Py_RETURN_NOTIMPLEMENTED;
        }
        return new_instance(t, k, text, NULL);
    }
    case K_XOR_ADDR: {
        if (len != 8 || d[1] != 1) Py_RETURN_NOTIMPLEMENTED; /* IPv4 only; IPv6 goes through Python */
        uint32_t ip = rd32(d + 4) ^ 0x2112A442u;
        PyObject *host = PyUnicode_FromFormat("%u.%u.%u.%u", (ip >> 24) & 0xFF, (ip >> 16) & 0xFF,
                                              (ip >> 8) & 0xFF, ip & 0xFF);
        if (!host) return NULL;
        PyObject *port = PyLong_FromLong((long)(rd16(d + 2) ^ 0x2112));
        if (!port) { Py_DECREF(host); return NULL; }
        return new_instance(t, k, host, port);
    }
    }
    Py_RETURN_NOTIMPLEMENTED;
}

/* ---------------------------------------------------------------------------------------------- HmacKey */

typedef struct {
    PyObject_HEAD
    SHA_CTX i1, o1;
    SHA256_CTX i256, o256;
} HmacKey;

static int HmacKey_init(HmacKey *self, PyObject *args, PyObject *kw) {
    Py_buffer key;
    if (!PyArg_ParseTuple(args, "y*", &key)) return -1;
    unsigned char k1[64] = {0}, k256[64] = {0}, pad[64];
    if (key.len > 64) {
        SHA1((const unsigned char *)key.buf, key.len, k1);
        SHA256((const unsigned char *)key.buf, key.len, k256);
    } else {
        memcpy(k1, key.buf, key.len);
        memcpy(k256, key.buf, key.len);
    }
    PyBuffer_Release(&key);
    for (int i = 0; i < 64; i++) pad[i] = k1[i] ^ 0x36;
    SHA1_Init(&self->i1); SHA1_Update(&self->i1, pad, 64);
    for (int i = 0; i < 64; i++) pad[i] = k1[i] ^ 0x5C;
    SHA1_Init(&self->o1); SHA1_Update(&self->o1, pad, 64);
    for (int i = 0; i < 64; i++) pad[i] = k256[i] ^ 0x36;
    SHA256_Init(&self->i256); SHA256_Update(&self->i256, pad, 64);
    for (int i = 0; i < 64; i++) pad[i] = k256[i] ^ 0x5C;
    SHA256_Init(&self->o256); SHA256_Update(&self->o256, pad, 64);
    return 0;
}

/* HMAC-SHA1 under key of a then b (b may be empty): the two halves of a STUN message whose length field the
 * caller rewrote (a: the header's first four bytes, b: the rest) or one buffer (b_len 0). */
static void hmac_sha1(const HmacKey *key, const void *a, size_t a_len, const void *b, size_t b_len,
                      unsigned char out[SHA_DIGEST_LENGTH]) {
    unsigned char inner[SHA_DIGEST_LENGTH];
    SHA_CTX c = key->i1;
    SHA1_Update(&c, a, a_len);
    if (b_len) SHA1_Update(&c, b, b_len);
    SHA1_Final(inner, &c);
    c = key->o1;
    SHA1_Update(&c, inner, sizeof inner);
    SHA1_Final(out, &c);
}

static PyObject *HmacKey_sha1(HmacKey *self, PyObject *arg) {
    Py_buffer b;
    if (PyObject_GetBuffer(arg, &b, PyBUF_SIMPLE) < 0) return NULL;
    unsigned char out[SHA_DIGEST_LENGTH];
    hmac_sha1(self, b.buf, (size_t)b.len, NULL, 0, out);
    PyBuffer_Release(&b);
    return PyBytes_FromStringAndSize((const char *)out, sizeof out);
}

static PyObject *HmacKey_sha256(HmacKey *self, PyObject *arg) {
    Py_buffer b;
    if (PyObject_GetBuffer(arg, &b, PyBUF_SIMPLE) < 0) return NULL;
    unsigned char inner[SHA256_DIGEST_LENGTH], out[SHA256_DIGEST_LENGTH];
    SHA256_CTX c = self->i256;
    SHA256_Update(&c, b.buf, b.len);
    PyBuffer_Release(&b);
    SHA256_Final(inner, &c);
    c = self->o256;
    SHA256_Update(&c, inner, sizeof inner);
    SHA256_Final(out, &c);
    return PyBytes_FromStringAndSize((const char *)out, sizeof out);
}

/* Does the 20-byte MESSAGE-INTEGRITY at pos of message d verify under key (RFC 8489 section 14.5: the HMAC covers
 * the message up to the attribute, with the length field counting to its end)? Constant-time comparison. */
static int sha1_integrity_ok(const HmacKey *key, const unsigned char *d, Py_ssize_t pos) {
    unsigned adj = (unsigned)(pos + 24 - 20);
    unsigned char hdr[4] = {d[0], d[1], (unsigned char)(adj >> 8), (unsigned char)adj};
    unsigned char out[SHA_DIGEST_LENGTH], diff = 0;
    hmac_sha1(key, hdr, 4, d + 4, (size_t)(pos - 4), out);
    for (int i = 0; i < SHA_DIGEST_LENGTH; i++) diff |= out[i] ^ d[pos + 4 + i];
    return diff == 0;
}

/* check_sha1(raw, pos): MESSAGE-INTEGRITY at pos verifies? (length field adjusted to end at the attribute) */
static PyObject *HmacKey_check(HmacKey *self, PyObject *const *args, Py_ssize_t nargs, int sha256) {
    if (nargs != 2 || !PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "check(raw: bytes, pos: int)");
        return NULL;
    }
    const unsigned char *d = (const unsigned char *)PyBytes_AS_STRING(args[0]);
    Py_ssize_t n = PyBytes_GET_SIZE(args[0]);
    Py_ssize_t pos = PyLong_AsSsize_t(args[1]);
    if (pos == -1 && PyErr_Occurred()) return NULL;
    if (pos < 20 || pos + 4 > n) Py_RETURN_FALSE;
    Py_ssize_t alen = rd16(d + pos + 2);
    if (pos + 4 + alen > n) Py_RETURN_FALSE;
    if (!sha256) return PyBool_FromLong(alen == 20 && sha1_integrity_ok(self, d, pos));
    unsigned adj = (unsigned)(pos + 4 + alen - 20);
    unsigned char hdr[4] = {d[0], d[1], (unsigned char)(adj >> 8), (unsigned char)adj};
    unsigned char inner[32], out[32];
    unsigned dlen;
    {
        SHA256_CTX c = self->i256;
        SHA256_Update(&c, hdr, 4);
        SHA256_Update(&c, d + 4, pos - 4);
        SHA256_Final(inner, &c);
        c = self->o256;
        SHA256_Update(&c, inner, 32);
        SHA256_Final(out, &c);
        dlen = (unsigned)alen;
        if (dlen > 32) Py_RETURN_FALSE;
    }
    unsigned char diff = 0;  /* constant time */
    for (unsigned i = 0; i < dlen; i++) diff |= out[i] ^ d[pos + 4 + i];
    return PyBool_FromLong(diff == 0);
}

static PyObject *HmacKey_check_sha1(HmacKey *self, PyObject *const *args, Py_ssize_t nargs) {
    return HmacKey_check(self, args, nargs, 0);
}

static PyObject *HmacKey_check_sha256(HmacKey *self, PyObject *const *args, Py_ssize_t nargs) {
    return HmacKey_check(self, args, nargs, 1);
}

/* The pad states never change after __init__: a copy (copy.copy, copy.deepcopy) is the key itself. */
static PyObject *HmacKey_copy(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    Py_INCREF(self);
    return self;
}

static PyMethodDef HmacKey_methods[] = {
    {"__copy__", (PyCFunction)(void (*)(void))HmacKey_copy, METH_FASTCALL, "The key itself (it is immutable)."},
    {"__deepcopy__", (PyCFunction)(void (*)(void))HmacKey_copy, METH_FASTCALL, "The key itself (it is immutable)."},
    {"check_sha1", (PyCFunction)(void (*)(void))HmacKey_check_sha1, METH_FASTCALL,
     "Verify the MESSAGE-INTEGRITY attribute at offset pos of a STUN message."},
    {"check_sha256", (PyCFunction)(void (*)(void))HmacKey_check_sha256, METH_FASTCALL,
     "Verify the MESSAGE-INTEGRITY-SHA256 attribute at offset pos of a STUN message."},
    {"sha1", (PyCFunction)HmacKey_sha1, METH_O, "HMAC-SHA1 of data (RFC 2104)."},
    {"sha256", (PyCFunction)HmacKey_sha256, METH_O, "HMAC-SHA256 of data (RFC 2104)."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject HmacKeyType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ice.stun._speedups.HmacKey",
    .tp_basicsize = sizeof(HmacKey),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "HMAC key with precomputed SHA-1 and SHA-256 pad states.",
    .tp_methods = HmacKey_methods,
    .tp_init = (initproc)HmacKey_init,
    .tp_new = PyType_GenericNew,
};

/* seal(mtype, transaction_id, body, key, fingerprint) -> bytes
 *     a STUN message (RFC 8489 section 5) from its type, 12-byte transaction ID and encoded attributes, with
 *     MESSAGE-INTEGRITY (section 14.5: HMAC-SHA1 under key, an HmacKey) unless key is None, then FINGERPRINT
 *     (section 14.7) when fingerprint is true: what message.Message.encode builds for that case, in one call. */
static PyObject *seal(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 5 || !PyBytes_Check(args[1]) || PyBytes_GET_SIZE(args[1]) != 12 || !PyBytes_Check(args[2])
            || (args[3] != Py_None && !PyObject_TypeCheck(args[3], &HmacKeyType))) {
        PyErr_SetString(PyExc_TypeError,
                        "seal(mtype: int, transaction_id: 12 bytes, body: bytes, key: HmacKey | None, fingerprint)");
        return NULL;
    }
    long mtype = PyLong_AsLong(args[0]);
    if (mtype == -1 && PyErr_Occurred()) return NULL;
    int fingerprint = PyObject_IsTrue(args[4]);
    if (fingerprint < 0) return NULL;
    HmacKey *key = args[3] == Py_None ? NULL : (HmacKey *)args[3];
    Py_ssize_t blen = PyBytes_GET_SIZE(args[2]);
    Py_ssize_t size = 20 + blen + (key ? 24 : 0) + (fingerprint ? 8 : 0);
    if (mtype < 0 || mtype > 0x3FFF || size - 20 > 0xFFFF) {
        PyErr_SetString(PyExc_ValueError, "seal: a message type over 14 bits or a body over 64 KiB");
        return NULL;
    }
    PyObject *msg = PyBytes_FromStringAndSize(NULL, size);
    if (!msg) return NULL;
    unsigned char *m = (unsigned char *)PyBytes_AS_STRING(msg);
    static const unsigned char cookie[4] = {0x21, 0x12, 0xA4, 0x42};
    m[0] = (unsigned char)(mtype >> 8);
    m[1] = (unsigned char)mtype;
    memcpy(m + 4, cookie, 4);
    memcpy(m + 8, PyBytes_AS_STRING(args[1]), 12);
    memcpy(m + 20, PyBytes_AS_STRING(args[2]), (size_t)blen);
    Py_ssize_t at = 20 + blen;
    if (key) {  /* the length counts up to MESSAGE-INTEGRITY's end (section 14.5) */
        unsigned len = (unsigned)(at + 24 - 20);
        m[2] = (unsigned char)(len >> 8);
        m[3] = (unsigned char)len;
        static const unsigned char mi[4] = {0x00, 0x08, 0x00, 0x14};
        hmac_sha1(key, m, (size_t)at, NULL, 0, m + at + 4);
        memcpy(m + at, mi, 4);
        at += 24;
    }
    if (fingerprint) {  /* the length counts FINGERPRINT too (section 14.7) */
        unsigned len = (unsigned)(at + 8 - 20);
        m[2] = (unsigned char)(len >> 8);
        m[3] = (unsigned char)len;
        uint32_t fp = crc32_ieee(m, at) ^ 0x5354554Eu;
        const unsigned char tlv[8] = {0x80, 0x28, 0x00, 0x04, (unsigned char)(fp >> 24), (unsigned char)(fp >> 16),
                                      (unsigned char)(fp >> 8), (unsigned char)fp};
        memcpy(m + at, tlv, 8);
        at += 8;
    }
    m[2] = (unsigned char)((at - 20) >> 8);
    m[3] = (unsigned char)(at - 20);
    return msg;
}

/* ice_check(data, prefix, key, remote) -> (transaction_id, priority, controlling, controlled, use_candidate,
 *                                          answer) | None
 *     An ICE connectivity check (RFC 8445 section 7.1) as the agent accepts it, in one pass: a Binding request
 *     whose attributes are only USERNAME (starting with prefix, "ufrag:", ASCII), PRIORITY, ICE-CONTROLLING or
 *     ICE-CONTROLLED, USE-CANDIDATE and comprehension-optional ones, then MESSAGE-INTEGRITY that verifies under
 *     key (an HmacKey) and optionally a matching FINGERPRINT last. controlling/controlled are the tie-breakers
 *     (None when absent); answer is the success response for remote, the (host, port) it came from (RFC 8445
 *     section 7.3.1: XOR-MAPPED-ADDRESS, MESSAGE-INTEGRITY under the same key, FINGERPRINT), None for an IPv6
 *     remote. None for anything else -- a wrong password, a missing PRIORITY, an attribute the agent must answer
 *     420 for, malformed framing -- which the agent then handles on its general path (parse() and its error
 *     answers), so this only ever decides the common case, never a different outcome. */
#define T_USERNAME 0x0006
#define T_PRIORITY 0x0024
#define T_USE_CANDIDATE 0x0025
#define T_ICE_CONTROLLED 0x8029
#define T_ICE_CONTROLLING 0x802A
#define T_XOR_MAPPED_ADDRESS 0x0020

static uint64_t rd64(const unsigned char *p) { return ((uint64_t)rd32(p) << 32) | rd32(p + 4); }

/* A Binding success response to transaction tid for an IPv4 (host, port): XOR-MAPPED-ADDRESS (RFC 8489 section
 * 14.2), MESSAGE-INTEGRITY under key, FINGERPRINT; None (a new reference) when host is not an IPv4 address. */
static PyObject *success_answer(const unsigned char *tid, PyObject *host, PyObject *pnum, HmacKey *key) {
    struct in_addr ip;
    const char *text = PyUnicode_Check(host) ? PyUnicode_AsUTF8(host) : NULL;
    long port = PyLong_Check(pnum) ? PyLong_AsLong(pnum) : -1;
    if (!text || inet_pton(AF_INET, text, &ip) != 1 || port < 0 || port > 0xFFFF) {
        PyErr_Clear();
        return Py_NewRef(Py_None);
    }
    PyObject *msg = PyBytes_FromStringAndSize(NULL, 64);
    if (!msg) return NULL;
    unsigned char *m = (unsigned char *)PyBytes_AS_STRING(msg);
    uint32_t xa = ntohl(ip.s_addr) ^ 0x2112A442u;
    unsigned xport = (unsigned)port ^ 0x2112;
    const unsigned char head[32] = {0x01, 0x01, 0x00, 0x24, 0x21, 0x12, 0xA4, 0x42, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                    0, 0, 0x00, 0x20, 0x00, 0x08, 0x00, 0x01, (unsigned char)(xport >> 8),
                                    (unsigned char)xport, (unsigned char)(xa >> 24), (unsigned char)(xa >> 16),
                                    (unsigned char)(xa >> 8), (unsigned char)xa};
    memcpy(m, head, 32);
    memcpy(m + 8, tid, 12);
    static const unsigned char mi[4] = {0x00, 0x08, 0x00, 0x14};
    hmac_sha1(key, m, 32, NULL, 0, m + 36);  /* the length counts up to MESSAGE-INTEGRITY's end: 36 */
    memcpy(m + 32, mi, 4);
    m[3] = 0x2C;  /* and FINGERPRINT's: 44 */
    uint32_t fp = crc32_ieee(m, 56) ^ 0x5354554Eu;
    const unsigned char tlv[8] = {0x80, 0x28, 0x00, 0x04, (unsigned char)(fp >> 24), (unsigned char)(fp >> 16),
                                  (unsigned char)(fp >> 8), (unsigned char)fp};
    memcpy(m + 56, tlv, 8);
    return msg;
}

/* The attributes before MESSAGE-INTEGRITY, by type, of a message plain_message() accepts: at most one position
 * (the value's offset, the first of each type counts) per type an agent reads. */
typedef struct {
    Py_ssize_t user, ulen, prio, cing, ced, xma;
    int use;
} Plain;

/* Is d (n bytes) a plain message of type mtype for an ICE agent's fast paths: the magic cookie; attributes the
 * agent reads (USERNAME, PRIORITY, USE-CANDIDATE, ICE-CONTROLLING, ICE-CONTROLLED with their sizes, an IPv4
 * XOR-MAPPED-ADDRESS) or comprehension-optional ones; MESSAGE-INTEGRITY verifying under key (RFC 8489 section
 * 14.5); at most a matching FINGERPRINT after it (section 14.7)? Fills p; 0 for anything else (the general path). */
static int plain_message(const unsigned char *d, Py_ssize_t n, unsigned mtype, const HmacKey *key, Plain *p) {
    *p = (Plain){-1, 0, -1, -1, -1, -1, 0};
    if (n < 20 || rd16(d) != mtype || rd32(d + 4) != 0x2112A442u || rd16(d + 2) + 20 != n || (n & 3)) return 0;
    Py_ssize_t pos = 20, mi = -1;
    while (pos + 4 <= n) {
        unsigned t = rd16(d + pos), alen = rd16(d + pos + 2);
        Py_ssize_t at = pos + 4;
        if (at + (Py_ssize_t)alen > n) return 0;
        if (t == T_MI) {
            if (alen != 20) return 0;
            mi = pos;
            pos += 24;
            break;
        }
        switch (t) {
        case T_USERNAME:
            if (p->user < 0) { p->user = at; p->ulen = alen; }
            break;
        case T_PRIORITY:
            if (alen != 4) return 0;
            if (p->prio < 0) p->prio = at;
            break;
        case T_USE_CANDIDATE:
            if (alen != 0) return 0;
            p->use = 1;
            break;
        case T_ICE_CONTROLLING:
            if (alen != 8) return 0;
            if (p->cing < 0) p->cing = at;
            break;
        case T_ICE_CONTROLLED:
            if (alen != 8) return 0;
            if (p->ced < 0) p->ced = at;
            break;
        case T_XOR_MAPPED_ADDRESS:
            if (alen != 8 || d[at + 1] != 1) return 0;  /* IPv6 (or malformed): the general path */
            if (p->xma < 0) p->xma = at;
            break;
        default:
            if (t < 0x8000 || t == T_FP || t == T_MI256) return 0;  /* the general path decides */
        }
        pos = at + alen + ((4 - (alen & 3)) & 3);
    }
    if (mi < 0) return 0;
    if (pos != n && (pos + 8 != n || rd16(d + pos) != T_FP || rd16(d + pos + 2) != 4
                     || (crc32_ieee(d, pos) ^ 0x5354554Eu) != rd32(d + pos + 4)))
        return 0;
    return sha1_integrity_ok(key, d, mi);
}

static PyObject *ice_check(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4 || !PyBytes_Check(args[0]) || !PyBytes_Check(args[1])
            || !PyObject_TypeCheck(args[2], &HmacKeyType) || !PyTuple_Check(args[3]) || PyTuple_GET_SIZE(args[3]) < 2) {
        PyErr_SetString(PyExc_TypeError, "ice_check(data: bytes, prefix: bytes, key: HmacKey, remote: (host, port))");
        return NULL;
    }
    const unsigned char *d = (const unsigned char *)PyBytes_AS_STRING(args[0]);
    const char *prefix = PyBytes_AS_STRING(args[1]);
    Py_ssize_t plen = PyBytes_GET_SIZE(args[1]);
    HmacKey *key = (HmacKey *)args[2];
    Plain p;
    if (!plain_message(d, PyBytes_GET_SIZE(args[0]), 0x0001, key, &p) || p.xma >= 0 || p.user < 0 || p.prio < 0
            || p.ulen < plen || p.ulen > 509 || memcmp(d + p.user, prefix, (size_t)plen) != 0)
        Py_RETURN_NONE;
    for (Py_ssize_t i = 0; i < p.ulen; i++) {
        if (d[p.user + i] & 0x80) Py_RETURN_NONE;  /* not ASCII: the general path decodes (or rejects) it */
    }
    PyObject *answer = success_answer(d + 8, PyTuple_GET_ITEM(args[3], 0), PyTuple_GET_ITEM(args[3], 1), key);
    if (!answer) return NULL;
    PyObject *controlling = p.cing >= 0 ? PyLong_FromUnsignedLongLong(rd64(d + p.cing)) : Py_NewRef(Py_None);
    PyObject *controlled = p.ced >= 0 ? PyLong_FromUnsignedLongLong(rd64(d + p.ced)) : Py_NewRef(Py_None);
    PyObject *result = NULL;
    if (controlling && controlled)
        result = Py_BuildValue("(y#kOOOO)", (const char *)d + 8, (Py_ssize_t)12, (unsigned long)rd32(d + p.prio),
                               controlling, controlled, p.use ? Py_True : Py_False, answer);
    Py_XDECREF(controlling);
    Py_XDECREF(controlled);
    Py_DECREF(answer);
    return result;
}

/* ice_answer(data, key) -> (host, port) | None
 *     The success response to an ICE check (RFC 8445 section 7.2.5) as the agent accepts it, in one pass: a Binding
 *     success response whose attributes are an IPv4 XOR-MAPPED-ADDRESS (the first one counts) and
 *     comprehension-optional ones, then MESSAGE-INTEGRITY that verifies under key (the peer's password, an HmacKey)
 *     and optionally a matching FINGERPRINT last; the mapped address. None for anything else (an IPv6 or missing
 *     mapped address, another comprehension-required attribute, a wrong password, malformed framing): the agent's
 *     general path decides those, so this never gives a different outcome, only a shorter way to the same one. */
static PyObject *ice_answer(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyBytes_Check(args[0]) || !PyObject_TypeCheck(args[1], &HmacKeyType)) {
        PyErr_SetString(PyExc_TypeError, "ice_answer(data: bytes, key: HmacKey)");
        return NULL;
    }
    const unsigned char *d = (const unsigned char *)PyBytes_AS_STRING(args[0]);
    Plain p;
    if (!plain_message(d, PyBytes_GET_SIZE(args[0]), 0x0101, (HmacKey *)args[1], &p) || p.xma < 0 || p.user >= 0
            || p.prio >= 0 || p.use || p.cing >= 0 || p.ced >= 0)
        Py_RETURN_NONE;  /* a check's attributes in a response: not the plain case */
    uint32_t ip = rd32(d + p.xma + 4) ^ 0x2112A442u;
    return Py_BuildValue("(Nl)", PyUnicode_FromFormat("%u.%u.%u.%u", (ip >> 24) & 0xFF, (ip >> 16) & 0xFF,
                                                      (ip >> 8) & 0xFF, ip & 0xFF),
                         (long)(rd16(d + p.xma + 2) ^ 0x2112));
}

/* ------------------------------------------------------------------------------------- batched UDP I/O */
#ifdef __linux__
/*
 * One recvmmsg(2) or sendmmsg(2) moves a batch of datagrams where recvfrom/sendto move one: the syscall cost is
 * paid once per batch (the asyncio driver, ice/aio/driver.py, and the bench load generators use these). The GIL
 * stays held (the calls never block: MSG_DONTWAIT), which also guards the module's buffers and caches below.
 */
#define IO_MAX 1024 /* UIO_MAXIOV: the most messages one call takes */

static struct mmsghdr io_msgs[IO_MAX];
static struct iovec io_iov[IO_MAX];
static struct sockaddr_storage io_names[IO_MAX];
static unsigned char *io_buf = NULL;
static size_t io_cap = 0;

/* (host, port) tuples of recent source addresses: a server hears the same few remotes over and over. */
#define ADDR_CACHE 64
static struct { struct sockaddr_storage sa; PyObject *tuple; } addr_cache[ADDR_CACHE];

static int same_sockaddr(const struct sockaddr_storage *a, const struct sockaddr_storage *b) {
    if (a->ss_family != b->ss_family) return 0;
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
    return x->sin6_port == y->sin6_port && x->sin6_scope_id == y->sin6_scope_id
           && memcmp(&x->sin6_addr, &y->sin6_addr, sizeof x->sin6_addr) == 0;
}

/* The (host, port) of a sockaddr, the host as Python's recvfrom spells it (IPv6 with %scope when it has one). */
static PyObject *addr_tuple(const struct sockaddr_storage *sa) {
    unsigned h;
    if (sa->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const void *)sa;
        h = a->sin_port ^ a->sin_addr.s_addr;
    } else if (sa->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const void *)sa;
        uint32_t tail;
        memcpy(&tail, (const unsigned char *)&a->sin6_addr + 12, 4);
        h = a->sin6_port ^ tail;
    } else {
        Py_RETURN_NONE;
    }
    h = (h ^ (h >> 16) ^ (h >> 8)) % ADDR_CACHE;
    if (addr_cache[h].tuple && same_sockaddr(&addr_cache[h].sa, sa)) {
        Py_INCREF(addr_cache[h].tuple);
        return addr_cache[h].tuple;
    }
    char host[INET6_ADDRSTRLEN + IF_NAMESIZE + 2];
    unsigned port;
    if (sa->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const void *)sa;
        inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
        port = ntohs(a->sin_port);
    } else {
        const struct sockaddr_in6 *a = (const void *)sa;
        inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
        port = ntohs(a->sin6_port);
        if (a->sin6_scope_id) {
            size_t len = strlen(host);
            host[len] = '%';
            if (!if_indextoname(a->sin6_scope_id, host + len + 1))
                snprintf(host + len + 1, sizeof host - len - 1, "%u", (unsigned)a->sin6_scope_id);
        }
    }
    PyObject *text = PyUnicode_FromString(host);
    if (!text) return NULL;
    PyObject *num = PyLong_FromLong((long)port);
    if (!num) { Py_DECREF(text); return NULL; }
    PyObject *t = PyTuple_New(2);
    if (!t) { Py_DECREF(text); Py_DECREF(num); return NULL; }
    PyTuple_SET_ITEM(t, 0, text);
    PyTuple_SET_ITEM(t, 1, num);
    addr_cache[h].sa = *sa;
    Py_INCREF(t);
    Py_XSETREF(addr_cache[h].tuple, t);
    return t;
}

/* recv_batch(sock, max, size) -> [((host, port), data), ...]: see the module comment. */
/* The receive buffer, grown to max datagrams of size bytes, with the first page of every slot written once, so
 * the page a small datagram lands in is mapped before one has to wait for it (the first read after a socket is
 * added, not a page fault), and the rest of a 64 KiB slot only when a datagram that large arrives. */
static int reserve(Py_ssize_t max, Py_ssize_t size) {
    if ((size_t)(max * size) <= io_cap) return 0;
    unsigned char *grown = PyMem_RawRealloc(io_buf, (size_t)(max * size));
    if (!grown) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < max; i++) memset(grown + i * size, 0, (size_t)(size < 4096 ? size : 4096));
    io_buf = grown;
    io_cap = (size_t)(max * size);
    return 0;
}

/* recv_reserve(max, size): make recv_batch's buffer ready for max datagrams of size bytes now. */
static PyObject *recv_reserve(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "recv_reserve(max: int, size: int)");
        return NULL;
    }
    Py_ssize_t max = PyLong_AsSsize_t(args[0]), size = PyLong_AsSsize_t(args[1]);
    if (PyErr_Occurred()) return NULL;
    if (max < 1 || max > IO_MAX || size < 1 || size > 65536) {
        PyErr_SetString(PyExc_ValueError, "recv_reserve: max must be 1..1024 and size 1..65536");
        return NULL;
    }
    if (reserve(max, size) < 0) return NULL;
    Py_RETURN_NONE;
}

static PyObject *recv_batch(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "recv_batch(sock, max: int, size: int)");
        return NULL;
    }
    int fd = PyObject_AsFileDescriptor(args[0]);
    if (fd < 0) return NULL;
    Py_ssize_t max = PyLong_AsSsize_t(args[1]), size = PyLong_AsSsize_t(args[2]);
    if (PyErr_Occurred()) return NULL;
    if (max < 1 || max > IO_MAX || size < 1 || size > 65536) {
        PyErr_SetString(PyExc_ValueError, "recv_batch: max must be 1..1024 and size 1..65536");
        return NULL;
    }
    if (reserve(max, size) < 0) return NULL;
    for (Py_ssize_t i = 0; i < max; i++) {
        io_iov[i].iov_base = io_buf + i * size;
        io_iov[i].iov_len = (size_t)size;
        memset(&io_msgs[i].msg_hdr, 0, sizeof io_msgs[i].msg_hdr);
        io_names[i].ss_family = AF_UNSPEC;  /* a datagram without a source address gets None */
        io_msgs[i].msg_hdr.msg_name = &io_names[i];
        io_msgs[i].msg_hdr.msg_namelen = sizeof io_names[i];
        io_msgs[i].msg_hdr.msg_iov = &io_iov[i];
        io_msgs[i].msg_hdr.msg_iovlen = 1;
    }
    int got = recvmmsg(fd, io_msgs, (unsigned)max, MSG_DONTWAIT, NULL);
    if (got < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return PyList_New(0);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    PyObject *out = PyList_New(got);
    if (!out) return NULL;
    for (int i = 0; i < got; i++) {
        size_t len = io_msgs[i].msg_len < (unsigned)size ? io_msgs[i].msg_len : (size_t)size;
        PyObject *data = PyBytes_FromStringAndSize((const char *)io_iov[i].iov_base, (Py_ssize_t)len);
        PyObject *addr = data ? addr_tuple(&io_names[i]) : NULL;
        PyObject *item = addr ? PyTuple_New(2) : NULL;
        if (!item) {
            Py_XDECREF(data);
            Py_XDECREF(addr);
            Py_DECREF(out);
            return NULL;
        }
        PyTuple_SET_ITEM(item, 0, addr);
        PyTuple_SET_ITEM(item, 1, data);
        PyList_SET_ITEM(out, i, item);
    }
    return out;
}

/* The sockaddr of (host, port) for a socket of family fam; 0 when it is not a numeric address of that family (or
 * not a 2-tuple): the caller then sends that datagram on Python's path, which resolves or raises as sendto does. */
static PyObject *send_host = NULL;  /* a one-entry cache, by identity (it holds a reference, so no reuse) */
static long send_port = -1;
static struct sockaddr_storage send_sa;
static socklen_t send_salen;

static socklen_t to_sockaddr(PyObject *addr, int fam, struct sockaddr_storage *out) {
    if (!PyTuple_CheckExact(addr) || PyTuple_GET_SIZE(addr) != 2) return 0;
    PyObject *host = PyTuple_GET_ITEM(addr, 0), *pnum = PyTuple_GET_ITEM(addr, 1);
    if (!PyUnicode_CheckExact(host) || !PyLong_CheckExact(pnum)) return 0;
    long port = PyLong_AsLong(pnum);
    if (port < 0 || port > 65535) { PyErr_Clear(); return 0; }
    if (host == send_host && port == send_port && send_sa.ss_family == fam) {
        *out = send_sa;
        return send_salen;
    }
    const char *text = PyUnicode_AsUTF8(host);
    if (!text) { PyErr_Clear(); return 0; }
    socklen_t len;
    memset(out, 0, sizeof *out);
    if (fam == AF_INET) {
        struct sockaddr_in *a = (void *)out;
        if (inet_pton(AF_INET, text, &a->sin_addr) != 1) return 0;
        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t)port);
        len = sizeof *a;
    } else if (fam == AF_INET6) {
        struct sockaddr_in6 *a = (void *)out;
        char buf[INET6_ADDRSTRLEN + IF_NAMESIZE + 2];
        const char *pct = strchr(text, '%');
        if (pct) {
            size_t n = (size_t)(pct - text);
            if (n >= INET6_ADDRSTRLEN) return 0;
            memcpy(buf, text, n);
            buf[n] = 0;
            a->sin6_scope_id = if_nametoindex(pct + 1);
            if (!a->sin6_scope_id) return 0;
            text = buf;
        }
        if (inet_pton(AF_INET6, text, &a->sin6_addr) != 1) return 0;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t)port);
        len = sizeof *a;
    } else {
        return 0;
    }
    Py_INCREF(host);
    Py_XSETREF(send_host, host);
    send_port = port;
    send_sa = *out;
    send_salen = len;
    return len;
}

/*
 * UDP generic segmentation offload (Linux 4.18+, UDP_SEGMENT): consecutive datagrams to the same destination, all
 * of one size but the last (which may be shorter), go as ONE message whose iovec holds them all; the kernel cuts it
 * back into those datagrams (in the NIC, or in software), so the receiver gets exactly what separate sends would
 * have given it, for the cost of one trip down the stack. A socket that refuses it (no checksum offload, a path
 * MTU below the segment size...) is remembered and sent to without it.
 */
#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#define GSO_SEGMENTS 64     /* UDP_MAX_SEGMENTS of older kernels */
#define GSO_BYTES 65000     /* below the 64 KiB of one IP packet with its headers */
#define GSO_FDS 4096
static unsigned char gso_refused[GSO_FDS];
static unsigned msg_items[IO_MAX], msg_seg[IO_MAX];
static union { char buf[CMSG_SPACE(sizeof(uint16_t))]; struct cmsghdr align; } io_ctl[IO_MAX];

static int gso_error(int e) { return e == EINVAL || e == EIO || e == EMSGSIZE || e == ENOPROTOOPT || e == EOPNOTSUPP; }

/* send_batch(sock, items, start, gso=True) -> the index after the last datagram sent: see the module comment. */
static PyObject *send_batch(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs < 3 || nargs > 4 || !PyList_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "send_batch(sock, items: list, start: int, gso: bool = True)");
        return NULL;
    }
    int allow_gso = nargs < 4 ? 1 : PyObject_IsTrue(args[3]);
    if (allow_gso < 0) return NULL;
    int fd = PyObject_AsFileDescriptor(args[0]);
    if (fd < 0) return NULL;
    PyObject *items = args[1];
    Py_ssize_t i = PyLong_AsSsize_t(args[2]);
    if (i == -1 && PyErr_Occurred()) return NULL;
    Py_ssize_t n = PyList_GET_SIZE(items);
    if (i < 0) i = 0;
    struct sockaddr_storage own;
    socklen_t ownlen = sizeof own;
    if (i < n && getsockname(fd, (struct sockaddr *)&own, &ownlen) < 0) return PyErr_SetFromErrno(PyExc_OSError);
    PyObject *source = NULL;  /* items[start][2], when the items have a third field */
    if (i < n) {
        PyObject *first = PyList_GET_ITEM(items, i);
        if (PyTuple_Check(first) && PyTuple_GET_SIZE(first) >= 3) source = PyTuple_GET_ITEM(first, 2);
    }
    int gso = allow_gso && (fd >= GSO_FDS || !gso_refused[fd]);
    while (i < n) {
        unsigned k = 0, used = 0;
        size_t total = 0;
        int open = 0;  /* message k - 1 takes more segments */
        for (; used < IO_MAX && i + (Py_ssize_t)used < n; used++) {
            PyObject *item = PyList_GET_ITEM(items, i + (Py_ssize_t)used);
            if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) < 2) break;
            if (source && PyTuple_GET_SIZE(item) >= 3 && PyTuple_GET_ITEM(item, 2) != source) {
                int same = PyObject_RichCompareBool(PyTuple_GET_ITEM(item, 2), source, Py_EQ);
                if (same < 0) return NULL;
                if (!same) { n = i + (Py_ssize_t)used; break; }  /* another source: the end of this run */
            }
            PyObject *data = PyTuple_GET_ITEM(item, 1);
            if (!PyBytes_Check(data)) break;
            PyObject *dest = PyTuple_GET_ITEM(item, 0);
            struct sockaddr_storage sa;
            socklen_t len = dest == Py_None ? 0 : to_sockaddr(dest, own.ss_family, &sa);
            if (!len && dest != Py_None) break;
            size_t dlen = (size_t)PyBytes_GET_SIZE(data);
            io_iov[used].iov_base = PyBytes_AS_STRING(data);
            io_iov[used].iov_len = dlen;
            if (open && io_msgs[k - 1].msg_hdr.msg_namelen == len
                && (len == 0 || same_sockaddr(&io_names[k - 1], &sa)) && dlen > 0 && dlen <= msg_seg[k - 1]
                && msg_items[k - 1] < GSO_SEGMENTS && total + dlen <= GSO_BYTES) {
                msg_items[k - 1]++;
                io_msgs[k - 1].msg_hdr.msg_iovlen++;
                total += dlen;
                if (dlen < msg_seg[k - 1]) open = 0;  /* only the last segment may be shorter */
                continue;
            }
            if (len) io_names[k] = sa;
            memset(&io_msgs[k].msg_hdr, 0, sizeof io_msgs[k].msg_hdr);
            io_msgs[k].msg_hdr.msg_name = len ? &io_names[k] : NULL;  /* None: the connected peer */
            io_msgs[k].msg_hdr.msg_namelen = len;
            io_msgs[k].msg_hdr.msg_iov = &io_iov[used];
            io_msgs[k].msg_hdr.msg_iovlen = 1;
            msg_items[k] = 1;
            msg_seg[k] = (unsigned)dlen;
            total = dlen;
            open = gso && dlen > 0 && dlen <= GSO_BYTES / 2;
            k++;
        }
        if (k == 0) break;
        for (unsigned m = 0; m < k; m++) {
            if (msg_items[m] < 2) continue;
            struct msghdr *h = &io_msgs[m].msg_hdr;
            h->msg_control = io_ctl[m].buf;
            h->msg_controllen = sizeof io_ctl[m].buf;
            struct cmsghdr *c = CMSG_FIRSTHDR(h);
            c->cmsg_level = SOL_UDP;
            c->cmsg_type = UDP_SEGMENT;
            c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
            uint16_t seg = (uint16_t)msg_seg[m];
            memcpy(CMSG_DATA(c), &seg, sizeof seg);
        }
        int sent = sendmmsg(fd, io_msgs, k, MSG_DONTWAIT);
        if (sent < 0) {
            if (errno == EINTR) continue;
            if (msg_items[0] > 1 && gso_error(errno)) {  /* this socket does not take GSO: send them one by one */
                if (fd < GSO_FDS) gso_refused[fd] = 1;
                gso = 0;
                continue;
            }
            break;
        }
        for (int m = 0; m < sent; m++) i += msg_items[m];
        if ((unsigned)sent < k) {
            if (msg_items[sent] > 1) { gso = 0; continue; }  /* its error is lost: retry it without GSO */
            break;
        }
    }
    return PyLong_FromSsize_t(i);
}
#endif

/* ------------------------------------------------------------------------------------- server fast paths */
/*
 * The servers' per-datagram hot loops over a received batch, each the same as a pure-Python reference next to its
 * caller (a property test compares them): they take datagrams from batch[start:] while each is one they can answer
 * alone, append a Transmit per answer to out, and return the index of the first one they cannot (the caller hands
 * it to the general path, then calls again after it: the order of the answers is the order of the datagrams).
 *
 *   binding_answers(batch, start, local, length, tail, fingerprint, out)   ice/stun/server.py _binding_answers_py
 *       a bare Binding request over IPv4 -> its success response (RFC 8489 section 6.3.1 and 14.7);
 *   channel_relay(batch, start, routes, now, to_client, out)               ice/turn/server.py _channel_relay_py
 *       ChannelData on a bound channel, client -> peer (RFC 8656 section 12.6), and a peer's datagram on a
 *       channel, peer -> client (section 12.7), through the TURN server's route table.
 */
static PyTypeObject *transmit_type = NULL;

static PyObject *set_transmit(PyObject *self, PyObject *cls) {
    if (!PyType_Check(cls) || !PyType_IsSubtype((PyTypeObject *)cls, &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "set_transmit(cls): a tuple subclass (Transmit)");
        return NULL;
    }
    Py_INCREF(cls);
    Py_XSETREF(transmit_type, (PyTypeObject *)cls);
    Py_RETURN_NONE;
}

/* Transmit(remote, data, local); steals data. */
static int emit(PyObject *out, PyObject *remote, PyObject *data, PyObject *local) {
    if (!data) return -1;
    PyObject *t = transmit_type->tp_alloc(transmit_type, 3);
    if (!t) { Py_DECREF(data); return -1; }
    Py_INCREF(remote);
    Py_INCREF(local);
    PyTuple_SET_ITEM(t, 0, remote);
    PyTuple_SET_ITEM(t, 1, data);
    PyTuple_SET_ITEM(t, 2, local);
    int rc = PyList_Append(out, t);
    Py_DECREF(t);
    return rc;
}

static int batch_item(PyObject *batch, Py_ssize_t i, PyObject **remote, PyObject **data) {
    PyObject *item = PyList_GET_ITEM(batch, i);
    if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 2) return 0;
    *remote = PyTuple_GET_ITEM(item, 0);
    *data = PyTuple_GET_ITEM(item, 1);
    return PyBytes_Check(*data) && PyTuple_Check(*remote) && PyTuple_GET_SIZE(*remote) >= 2;
}

static PyObject *binding_answers(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 7 || !PyList_Check(args[0]) || !PyBytes_Check(args[4]) || !PyList_Check(args[6])) {
        PyErr_SetString(PyExc_TypeError,
                        "binding_answers(batch: list, start, local, length, tail: bytes, fingerprint, out: list)");
        return NULL;
    }
    if (!transmit_type) { PyErr_SetString(PyExc_RuntimeError, "set_transmit() first"); return NULL; }
    PyObject *batch = args[0], *local = args[2], *tail = args[4], *out = args[6];
    Py_ssize_t i = PyLong_AsSsize_t(args[1]);
    long length = PyLong_AsLong(args[3]);
    int fingerprint = PyObject_IsTrue(args[5]);
    if (PyErr_Occurred() || fingerprint < 0) return NULL;
    Py_ssize_t tlen = PyBytes_GET_SIZE(tail);
    if (i < 0 || length < 0 || length > 0xFFFF || tlen > 0xFFFF) {
        PyErr_SetString(PyExc_ValueError, "binding_answers: bad start, length or tail");
        return NULL;
    }
    static const unsigned char head[8] = {0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42};
    Py_ssize_t n = PyList_GET_SIZE(batch);
    for (; i < n; i++) {
        PyObject *remote, *data;
        if (!batch_item(batch, i, &remote, &data)) break;
        const unsigned char *d = (const unsigned char *)PyBytes_AS_STRING(data);
        if (PyBytes_GET_SIZE(data) != 20 || memcmp(d, head, 8) != 0) break;
        PyObject *host = PyTuple_GET_ITEM(remote, 0), *pnum = PyTuple_GET_ITEM(remote, 1);
        if (!PyUnicode_Check(host) || !PyLong_Check(pnum)) break;
        const char *text = PyUnicode_AsUTF8(host);
        struct in_addr ip;
        if (!text || inet_pton(AF_INET, text, &ip) != 1) { PyErr_Clear(); break; }
        long port = PyLong_AsLong(pnum);
        if (port < 0 || port > 0xFFFF) { PyErr_Clear(); break; }
        Py_ssize_t size = 44 + tlen + (fingerprint ? 8 : 0);
        PyObject *msg = PyBytes_FromStringAndSize(NULL, size);
        if (!msg) return NULL;
        unsigned char *m = (unsigned char *)PyBytes_AS_STRING(msg);
        uint32_t a = ntohl(ip.s_addr);
        m[0] = 0x01; m[1] = 0x01; m[2] = (unsigned char)(length >> 8); m[3] = (unsigned char)length;
        memcpy(m + 4, head + 4, 4);
        memcpy(m + 8, d + 8, 12);
        /* XOR-MAPPED-ADDRESS (RFC 8489 section 14.2), then MAPPED-ADDRESS (section 14.1) */
        unsigned xport = (unsigned)port ^ 0x2112;
        uint32_t xa = a ^ 0x2112A442u;
        const unsigned char xma[12] = {0x00, 0x20, 0x00, 0x08, 0x00, 0x01, (unsigned char)(xport >> 8),
                                       (unsigned char)xport, (unsigned char)(xa >> 24), (unsigned char)(xa >> 16),
                                       (unsigned char)(xa >> 8), (unsigned char)xa};
        const unsigned char ma[8] = {0x00, 0x01, 0x00, 0x08, 0x00, 0x01, (unsigned char)(port >> 8),
                                     (unsigned char)port};
        memcpy(m + 20, xma, 12);
        memcpy(m + 32, ma, 8);
        memcpy(m + 40, &ip.s_addr, 4);
        memcpy(m + 44, PyBytes_AS_STRING(tail), (size_t)tlen);
        if (fingerprint) {
            Py_ssize_t at = 44 + tlen;
            uint32_t fp = crc32_ieee(m, at) ^ 0x5354554Eu;
            const unsigned char tlv[8] = {0x80, 0x28, 0x00, 0x04, (unsigned char)(fp >> 24), (unsigned char)(fp >> 16),
                                          (unsigned char)(fp >> 8), (unsigned char)fp};
            memcpy(m + at, tlv, 8);
        }
        if (emit(out, remote, msg, local) < 0) return NULL;
    }
    return PyLong_FromSsize_t(i);
}

static PyObject *channel_relay(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 6 || !PyList_Check(args[0]) || !PyDict_Check(args[2]) || !PyList_Check(args[5])) {
        PyErr_SetString(PyExc_TypeError, "channel_relay(batch: list, start, routes: dict, now, to_client, out: list)");
        return NULL;
    }
    if (!transmit_type) { PyErr_SetString(PyExc_RuntimeError, "set_transmit() first"); return NULL; }
    PyObject *batch = args[0], *routes = args[2], *out = args[5];
    Py_ssize_t i = PyLong_AsSsize_t(args[1]);
    double now = PyFloat_AsDouble(args[3]);
    int to_client = PyObject_IsTrue(args[4]);
    if (PyErr_Occurred() || to_client < 0) return NULL;
    if (i < 0) i = 0;
    Py_ssize_t n = PyList_GET_SIZE(batch);
    for (; i < n; i++) {
        PyObject *remote, *data;
        if (!batch_item(batch, i, &remote, &data)) break;
        const unsigned char *d = (const unsigned char *)PyBytes_AS_STRING(data);
        Py_ssize_t len = PyBytes_GET_SIZE(data);
        PyObject *route;
        if (to_client) {
            /* peer -> client: routes[peer] = (valid_until, channel, client, server) */
            if (len > 0xFFFF) break;
            route = PyDict_GetItemWithError(routes, remote);
        } else {
            /* client -> peer: routes[(client, channel)] = (valid_until, peer, relayed) */
            if (len < 4 || d[0] < 0x40 || d[0] > 0x7F || (Py_ssize_t)rd16(d + 2) > len - 4) break;
            PyObject *number = PyLong_FromLong((long)rd16(d));
            if (!number) return NULL;
            PyObject *key = PyTuple_Pack(2, remote, number);
            Py_DECREF(number);
            if (!key) return NULL;
            route = PyDict_GetItemWithError(routes, key);
            Py_DECREF(key);
        }
        if (!route) {
            if (PyErr_Occurred()) return NULL;
            break;
        }
        if (!PyTuple_Check(route) || PyTuple_GET_SIZE(route) != (to_client ? 4 : 3)) break;
        double until = PyFloat_AsDouble(PyTuple_GET_ITEM(route, 0));
        if (until == -1.0 && PyErr_Occurred()) return NULL;
        if (!(until > now)) break;
        if (to_client) {
            long number = PyLong_AsLong(PyTuple_GET_ITEM(route, 1));
            if (number == -1 && PyErr_Occurred()) return NULL;
            PyObject *framed = PyBytes_FromStringAndSize(NULL, len + 4);
            if (!framed) return NULL;
            unsigned char *f = (unsigned char *)PyBytes_AS_STRING(framed);
            f[0] = (unsigned char)(number >> 8); f[1] = (unsigned char)number;
            f[2] = (unsigned char)(len >> 8); f[3] = (unsigned char)len;
            memcpy(f + 4, d, (size_t)len);  /* no padding over UDP (RFC 8656 section 12.5) */
            if (emit(out, PyTuple_GET_ITEM(route, 2), framed, PyTuple_GET_ITEM(route, 3)) < 0) return NULL;
        } else {
            PyObject *payload = PyBytes_FromStringAndSize((const char *)d + 4, (Py_ssize_t)rd16(d + 2));
            if (emit(out, PyTuple_GET_ITEM(route, 1), payload, PyTuple_GET_ITEM(route, 2)) < 0) return NULL;
        }
    }
    return PyLong_FromSsize_t(i);
}

static PyObject *set_error(PyObject *self, PyObject *cls) {
    Py_XINCREF(cls);
    Py_XSETREF(parse_error, cls);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"scan", (PyCFunction)(void (*)(void))scan, METH_FASTCALL, "Walk a STUN message's framing (see module doc)."},
    {"crc32", crc32_py, METH_O, "CRC-32 (IEEE 802.3), as zlib.crc32."},
    {"get", (PyCFunction)(void (*)(void))get, METH_FASTCALL, "Decode the first attribute of a class (see above)."},
    {"register", register_kind, METH_VARARGS, "Register a class's value kind and slot names for get()."},
    {"set_error", set_error, METH_O, "Register the exception class raised for malformed input."},
    {"set_transmit", set_transmit, METH_O, "Register the Transmit class the server fast paths emit."},
    {"ice_check", (PyCFunction)(void (*)(void))ice_check, METH_FASTCALL,
     "An ICE check's transaction ID, PRIORITY, tie-breakers, USE-CANDIDATE and answer; None: not the plain case."},
    {"ice_answer", (PyCFunction)(void (*)(void))ice_answer, METH_FASTCALL,
     "The mapped address of an ICE check's success response, verified; None: not the plain case."},
    {"seal", (PyCFunction)(void (*)(void))seal, METH_FASTCALL,
     "A STUN message from type, transaction ID and attributes, with MESSAGE-INTEGRITY and FINGERPRINT."},
    {"binding_answers", (PyCFunction)(void (*)(void))binding_answers, METH_FASTCALL,
     "Answer bare IPv4 Binding requests of a batch (see the server fast paths above)."},
    {"channel_relay", (PyCFunction)(void (*)(void))channel_relay, METH_FASTCALL,
     "Relay the ChannelData of a batch on known routes (see the server fast paths above)."},
#ifdef __linux__
    {"recv_batch", (PyCFunction)(void (*)(void))recv_batch, METH_FASTCALL,
     "Up to max datagrams from a non-blocking UDP socket in one recvmmsg: [((host, port), data), ...]."},
    {"recv_reserve", (PyCFunction)(void (*)(void))recv_reserve, METH_FASTCALL,
     "Make recv_batch's buffer ready for max datagrams of size bytes (mapped now, not on the first read)."},
    {"send_batch", (PyCFunction)(void (*)(void))send_batch, METH_FASTCALL,
     "Send items[start:] ((host, port), data, ...) with sendmmsg (and GSO); the index after the last one sent."},
#endif
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_speedups", NULL, -1, methods};

PyMODINIT_FUNC PyInit__speedups(void) {
    if (PyType_Ready(&HmacKeyType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    Py_INCREF(&HmacKeyType);
    if (PyModule_AddObject(m, "HmacKey", (PyObject *)&HmacKeyType) < 0) {
        Py_DECREF(&HmacKeyType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
