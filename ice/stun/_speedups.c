/*
 * Optional C accelerator for the STUN codec (ice/stun/message.py, ice/stun/integrity.py).
 *
 * Two hot spots, nothing else:
 *   scan(data, legacy)  -> (mtype, transaction_id, index, mi, mi256, fp)
 *       the framing walk of RFC 8489 section 5/14 plus the FINGERPRINT check (section 14.7), exactly as
 *       message._scan_py does it (a property test compares the two on random and mutated input);
 *   HmacKey(key).sha1(data) / .sha256(data)
 *       HMAC (RFC 2104) with the ipad/opad states computed once per key, on OpenSSL's SHA-1/SHA-256.
 *
 * Errors raise the exception class registered with set_error() (StunParseError), with the same messages as
 * the Python implementation. The pure-Python code stays the reference; ICELAB_PURE_PYTHON=1 disables this.
 */
#define PY_SSIZE_T_CLEAN
#define OPENSSL_SUPPRESS_DEPRECATED
#include <Python.h>
#include <openssl/sha.h>
#include <string.h>
#include <zlib.h>

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

static PyObject *HmacKey_sha1(HmacKey *self, PyObject *arg) {
    Py_buffer b;
    if (PyObject_GetBuffer(arg, &b, PyBUF_SIMPLE) < 0) return NULL;
    unsigned char inner[SHA_DIGEST_LENGTH], out[SHA_DIGEST_LENGTH];
    SHA_CTX c = self->i1;
    SHA1_Update(&c, b.buf, b.len);
    PyBuffer_Release(&b);
    SHA1_Final(inner, &c);
    c = self->o1;
    SHA1_Update(&c, inner, sizeof inner);
    SHA1_Final(out, &c);
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
    unsigned adj = (unsigned)(pos + 4 + alen - 20);
    unsigned char hdr[4] = {d[0], d[1], (unsigned char)(adj >> 8), (unsigned char)adj};
    unsigned char inner[32], out[32];
    unsigned dlen;
    if (sha256) {
        SHA256_CTX c = self->i256;
        SHA256_Update(&c, hdr, 4);
        SHA256_Update(&c, d + 4, pos - 4);
        SHA256_Final(inner, &c);
        c = self->o256;
        SHA256_Update(&c, inner, 32);
        SHA256_Final(out, &c);
        dlen = (unsigned)alen;
        if (dlen > 32) Py_RETURN_FALSE;
    } else {
        SHA_CTX c = self->i1;
        SHA1_Update(&c, hdr, 4);
        SHA1_Update(&c, d + 4, pos - 4);
        SHA1_Final(inner, &c);
        c = self->o1;
        SHA1_Update(&c, inner, 20);
        SHA1_Final(out, &c);
        dlen = 20;
        if (alen != 20) Py_RETURN_FALSE;
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

static PyMethodDef HmacKey_methods[] = {
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

static PyObject *set_error(PyObject *self, PyObject *cls) {
    Py_XINCREF(cls);
    Py_XSETREF(parse_error, cls);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"scan", (PyCFunction)(void (*)(void))scan, METH_FASTCALL, "Walk a STUN message's framing (see module doc)."},
    {"crc32", crc32_py, METH_O, "CRC-32 (IEEE 802.3), as zlib.crc32."},
    {"set_error", set_error, METH_O, "Register the exception class raised for malformed input."},
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
