/*
 * core/safetensors.c — reader and writer for the safetensors format
 * (https://github.com/huggingface/safetensors, format described in its README):
 *   [u64 little-endian N][N bytes JSON header][data]
 * The header maps tensor names to {"dtype","shape","data_offsets":[begin,end]}
 * (offsets relative to the start of the data section) plus an optional
 * "__metadata__" string map. rankd stores float32 ("F32") tensors, and
 * int64 ("I64") ones for ids (the text encoder's output).
 *
 * The reader checks everything a corrupt or truncated file can get wrong:
 * header length past the file, JSON that does not parse, unknown dtype,
 * offsets outside the data section or inconsistent with the shape.
 */
#include "core.h"

#include <jansson.h>
#define XXH_STATIC_LINKING_ONLY /* XXH64_state_t on the stack */
#include <xxhash.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------- writer */

typedef struct {
    char *name;
    const void *data;
    int i64; /* 0: F32, 1: I64 */
    int ndim;
    int64_t shape[4];
    size_t n;
} st_tensor;

struct rk_st_writer {
    st_tensor *t;
    size_t n, cap;
    json_t *meta;
};

rk_status rk_st_writer_create(rk_st_writer **out, rk_err *err) {
    rk_st_writer *w = rk_calloc(1, sizeof *w);
    if (!w) return rk_fail(err, RK_ENOMEM, "safetensors writer: out of memory");
    w->meta = json_object();
    if (!w->meta) {
        rk_free(w);
        return rk_fail(err, RK_ENOMEM, "safetensors writer: out of memory");
    }
    *out = w;
    return RK_OK;
}

static rk_status add_tensor(rk_st_writer *w, const char *name, const void *data, int i64, int ndim,
                            const int64_t *shape, rk_err *err) {
    if (ndim < 0 || ndim > 4) return rk_fail(err, RK_EINVAL, "tensor '%s': ndim %d not in 0..4", name, ndim);
    if (!strcmp(name, "__metadata__")) return rk_fail(err, RK_EINVAL, "tensor name '__metadata__' is reserved");
    for (size_t i = 0; i < w->n; i++)
        if (!strcmp(w->t[i].name, name)) return rk_fail(err, RK_EEXIST, "tensor '%s' added twice", name);
    if (w->n == w->cap) {
        size_t cap = w->cap ? w->cap * 2 : 16;
        st_tensor *t = rk_realloc(w->t, cap * sizeof *t);
        if (!t) return rk_fail(err, RK_ENOMEM, "safetensors writer: out of memory");
        w->t = t;
        w->cap = cap;
    }
    st_tensor *t = &w->t[w->n];
    t->name = rk_strdup(name);
    if (!t->name) return rk_fail(err, RK_ENOMEM, "safetensors writer: out of memory");
    t->data = data;
    t->i64 = i64;
    t->ndim = ndim;
    t->n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) {
            rk_free(t->name);
            return rk_fail(err, RK_EINVAL, "tensor '%s': negative dimension", name);
        }
        t->shape[i] = shape[i];
        t->n *= (size_t)shape[i];
    }
    w->n++;
    return RK_OK;
}

rk_status rk_st_writer_add_f32(rk_st_writer *w, const char *name, const float *data, int ndim,
                               const int64_t *shape, rk_err *err) {
    return add_tensor(w, name, data, 0, ndim, shape, err);
}

rk_status rk_st_writer_add_i64(rk_st_writer *w, const char *name, const int64_t *data, int ndim,
                               const int64_t *shape, rk_err *err) {
    return add_tensor(w, name, data, 1, ndim, shape, err);
}

rk_status rk_st_writer_add_meta(rk_st_writer *w, const char *key, const char *value, rk_err *err) {
    if (json_object_set_new(w->meta, key, json_string(value)) != 0)
        return rk_fail(err, RK_EINVAL, "safetensors metadata '%s': not valid UTF-8", key);
    return RK_OK;
}

rk_status rk_st_writer_write(rk_st_writer *w, const char *path, rk_err *err) {
    json_t *h = json_object();
    if (!h) return rk_fail(err, RK_ENOMEM, "safetensors writer: out of memory");
    json_object_del(w->meta, RK_ST_CHECKSUM_KEY); /* a writer reused after a write */
    json_object_del(w->meta, RK_ST_DATA_CHECKSUM_KEY);
    json_object_set(h, "__metadata__", w->meta);
    size_t off = 0;
    for (size_t i = 0; i < w->n; i++) {
        st_tensor *t = &w->t[i];
        json_t *e = json_object(), *shape = json_array(), *offs = json_array();
        for (int d = 0; d < t->ndim; d++) json_array_append_new(shape, json_integer(t->shape[d]));
        size_t nb = t->n * (t->i64 ? 8 : 4);
        json_array_append_new(offs, json_integer((json_int_t)off));
        json_array_append_new(offs, json_integer((json_int_t)(off + nb)));
        json_object_set_new(e, "dtype", json_string(t->i64 ? "I64" : "F32"));
        json_object_set_new(e, "shape", shape);
        json_object_set_new(e, "data_offsets", offs);
        json_object_set_new(h, t->name, e);
        off += nb;
    }
    {
        /* xxh64 of the header (as below, without this key) and the data, so
         * that a reader detects any byte changed after writing */
        char *hc = json_dumps(h, JSON_COMPACT | JSON_SORT_KEYS);
        if (!hc) {
            json_decref(h);
            return rk_fail(err, RK_ENOMEM, "safetensors writer: out of memory");
        }
        XXH64_state_t st;
        XXH64_reset(&st, 0);
        XXH64_update(&st, hc, strlen(hc));
        free(hc);
        for (size_t i = 0; i < w->n; i++) XXH64_update(&st, w->t[i].data, w->t[i].n * (w->t[i].i64 ? 8 : 4));
        char hex[17];
        snprintf(hex, sizeof hex, "%016llx", (unsigned long long)XXH64_digest(&st));
        json_object_set_new(w->meta, RK_ST_CHECKSUM_KEY, json_string(hex));
    }
    char *hs = json_dumps(h, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(h);
    if (!hs) return rk_fail(err, RK_ENOMEM, "safetensors writer: out of memory");
    size_t hl = strlen(hs);
    size_t pad = (8 - hl % 8) % 8; /* align the data section to 8 bytes */
    size_t hlen = hl + pad;
    size_t total = 8 + hlen + off;
    unsigned char *buf = rk_malloc(total);
    if (!buf) {
        free(hs);
        return rk_fail(err, RK_ENOMEM, "safetensors writer: out of memory (%zu bytes)", total);
    }
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)((uint64_t)hlen >> (8 * i));
    memcpy(buf + 8, hs, hl);
    memset(buf + 8 + hl, ' ', pad);
    free(hs);
    unsigned char *p = buf + 8 + hlen;
    for (size_t i = 0; i < w->n; i++) {
        size_t nb = w->t[i].n * (w->t[i].i64 ? 8 : 4);
        memcpy(p, w->t[i].data, nb); /* host is little-endian (x86-64, arm64) */
        p += nb;
    }
    rk_status s = rk_write_file_atomic(path, buf, total, err); /* never a half file under path */
    rk_free(buf);
    return s;
}

void rk_st_writer_destroy(rk_st_writer *w) {
    if (!w) return;
    for (size_t i = 0; i < w->n; i++) rk_free(w->t[i].name);
    rk_free(w->t);
    json_decref(w->meta);
    rk_free(w);
}

/* ------------------------------------------------------------- reader */

typedef struct {
    const char *name; /* points into header json (kept alive) */
    int f32, i64;
    char dtype[16];
    int ndim;
    int64_t shape[4];
    size_t begin, end;
} st_entry;

struct rk_st_file {
    char *buf;
    size_t len;
    const unsigned char *data;
    size_t data_len;
    json_t *header;
    st_entry *e;
    size_t n;
    char path[512];
};

void rk_st_close(rk_st_file *f) {
    if (!f) return;
    rk_free(f->buf);
    json_decref(f->header);
    rk_free(f->e);
    rk_free(f);
}

/* element size in bytes of a safetensors dtype, 0 when unknown */
static size_t st_dtype_size(const char *dt) {
    static const struct { const char *n; size_t sz; } t[] = {
        {"F64", 8}, {"I64", 8}, {"U64", 8}, {"F32", 4}, {"I32", 4}, {"U32", 4}, {"F16", 2}, {"BF16", 2},
        {"I16", 2}, {"U16", 2}, {"I8", 1}, {"U8", 1}, {"BOOL", 1},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        if (!strcmp(dt, t[i].n)) return t[i].sz;
    return 0;
}

/* Tensors may not share bytes: sort the entries by offset, then each must
 * begin at or after the end of the one before. */
static int by_begin(const void *a, const void *b) {
    const st_entry *x = *(st_entry *const *)a, *y = *(st_entry *const *)b;
    return x->begin < y->begin ? -1 : x->begin > y->begin ? 1 : (x->end > y->end) - (x->end < y->end);
}

static rk_status check_overlaps(const rk_st_file *f, rk_err *err) {
    if (f->n < 2) return RK_OK;
    st_entry **o = rk_malloc(f->n * sizeof *o);
    if (!o) return rk_fail(err, RK_ENOMEM, "%s: out of memory", f->path);
    for (size_t i = 0; i < f->n; i++) o[i] = &f->e[i];
    qsort(o, f->n, sizeof *o, by_begin);
    rk_status s = RK_OK;
    for (size_t i = 1; i < f->n && !s; i++)
        if (o[i]->begin < o[i - 1]->end && o[i]->end > o[i]->begin)
            s = rk_fail(err, RK_EFORMAT, "%s: corrupt safetensors: tensors '%s' [%zu, %zu) and '%s' [%zu, %zu) overlap",
                        f->path, o[i - 1]->name, o[i - 1]->begin, o[i - 1]->end, o[i]->name, o[i]->begin, o[i]->end);
    rk_free(o);
    return s;
}

/* RK_ST_CHECKSUM_KEY: xxh64 of the canonical header without that key, then
 * the data (what the writer hashed). Files of older rankd writers carry
 * RK_ST_DATA_CHECKSUM_KEY (the data alone) instead: checked as such. */
static rk_status check_checksum(const rk_st_file *f, rk_err *err) {
    json_t *m = json_object_get(f->header, "__metadata__");
    json_t *whole = m ? json_object_get(m, RK_ST_CHECKSUM_KEY) : NULL;
    json_t *data = m ? json_object_get(m, RK_ST_DATA_CHECKSUM_KEY) : NULL;
    char hex[17];
    if (json_is_string(whole)) {
        json_t *c = json_deep_copy(f->header);
        json_object_del(json_object_get(c, "__metadata__"), RK_ST_CHECKSUM_KEY);
        char *hc = c ? json_dumps(c, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
        json_decref(c);
        if (!hc) return rk_fail(err, RK_ENOMEM, "%s: out of memory", f->path);
        XXH64_state_t st;
        XXH64_reset(&st, 0);
        XXH64_update(&st, hc, strlen(hc));
        free(hc);
        XXH64_update(&st, f->data, f->data_len);
        snprintf(hex, sizeof hex, "%016llx", (unsigned long long)XXH64_digest(&st));
        if (strcmp(hex, json_string_value(whole)))
            return rk_fail(err, RK_EFORMAT, "%s: corrupt safetensors: checksum of header and data %s, the header says %s "
                           "(changed after writing)", f->path, hex, json_string_value(whole));
    } else if (json_is_string(data)) {
        snprintf(hex, sizeof hex, "%016llx", (unsigned long long)XXH64(f->data, f->data_len, 0));
        if (strcmp(hex, json_string_value(data)))
            return rk_fail(err, RK_EFORMAT, "%s: corrupt safetensors: data checksum %s, the header says %s (changed after "
                           "writing)", f->path, hex, json_string_value(data));
    }
    return RK_OK;
}

rk_status rk_st_open(const char *path, rk_st_file **out, rk_err *err) {
    *out = NULL;
    rk_st_file *f = rk_calloc(1, sizeof *f);
    if (!f) return rk_fail(err, RK_ENOMEM, "%s: out of memory", path);
    snprintf(f->path, sizeof f->path, "%s", path);
    rk_status s = rk_read_file(path, &f->buf, &f->len, err);
    if (s != RK_OK) goto fail;
    if (f->len < 8) {
        s = rk_fail(err, RK_EFORMAT, "%s: corrupt safetensors header: file is %zu bytes, shorter than the 8-byte length prefix", path, f->len);
        goto fail;
    }
    uint64_t hlen = 0;
    for (int i = 0; i < 8; i++) hlen |= (uint64_t)(unsigned char)f->buf[i] << (8 * i);
    if (hlen > f->len - 8 || hlen > (100u << 20)) {
        s = rk_fail(err, RK_EFORMAT, "%s: corrupt safetensors header: header length %llu exceeds file size %zu", path,
                    (unsigned long long)hlen, f->len);
        goto fail;
    }
    json_error_t je;
    f->header = json_loadb(f->buf + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &je);
    if (!f->header || !json_is_object(f->header)) {
        s = rk_fail(err, RK_EFORMAT, "%s: corrupt safetensors header: JSON %s at byte %d", path,
                    f->header ? "is not an object" : je.text, f->header ? 0 : je.position);
        goto fail;
    }
    f->data = (const unsigned char *)f->buf + 8 + hlen;
    f->data_len = f->len - 8 - (size_t)hlen;
    size_t cnt = json_object_size(f->header);
    f->e = rk_calloc(cnt ? cnt : 1, sizeof *f->e);
    if (!f->e) {
        s = rk_fail(err, RK_ENOMEM, "%s: out of memory", path);
        goto fail;
    }
    const char *key;
    json_t *val;
    json_object_foreach(f->header, key, val) {
        if (!strcmp(key, "__metadata__")) continue;
        st_entry *e = &f->e[f->n];
        e->name = key;
        json_t *dt = json_object_get(val, "dtype"), *sh = json_object_get(val, "shape"),
               *of = json_object_get(val, "data_offsets");
        if (!json_is_string(dt) || !json_is_array(sh) || !json_is_array(of) || json_array_size(of) != 2 ||
            json_array_size(sh) > 4) {
            s = rk_fail(err, RK_EFORMAT, "%s: corrupt safetensors header: entry '%s' lacks dtype/shape/data_offsets", path, key);
            goto fail;
        }
        snprintf(e->dtype, sizeof e->dtype, "%s", json_string_value(dt));
        e->f32 = !strcmp(e->dtype, "F32");
        e->i64 = !strcmp(e->dtype, "I64");
        e->ndim = (int)json_array_size(sh);
        size_t numel = 1;
        for (int d = 0; d < e->ndim; d++) {
            json_t *x = json_array_get(sh, (size_t)d);
            if (!json_is_integer(x) || json_integer_value(x) < 0) {
                s = rk_fail(err, RK_EFORMAT, "%s: corrupt safetensors header: entry '%s' has a bad shape", path, key);
                goto fail;
            }
            e->shape[d] = json_integer_value(x);
            /* a hostile header can make the product wrap to a small number that then
             * matches data_offsets: refuse any dimension or product past SIZE_MAX / 8 */
            if ((uint64_t)e->shape[d] > SIZE_MAX / 8 ||
                (e->shape[d] != 0 && numel > (SIZE_MAX / 8) / (size_t)e->shape[d])) {
                s = rk_fail(err, RK_EFORMAT,
                            "%s: corrupt safetensors header: entry '%s' shape dimension %d is %lld, the element count overflows",
                            path, key, d, (long long)e->shape[d]);
                goto fail;
            }
            numel *= (size_t)e->shape[d];
        }
        json_t *b = json_array_get(of, 0), *en = json_array_get(of, 1);
        if (!json_is_integer(b) || !json_is_integer(en) || json_integer_value(b) < 0 ||
            json_integer_value(en) < json_integer_value(b) || (size_t)json_integer_value(en) > f->data_len) {
            s = rk_fail(err, RK_EFORMAT, "%s: corrupt safetensors: entry '%s' data_offsets outside the %zu-byte data section", path, key,
                        f->data_len);
            goto fail;
        }
        e->begin = (size_t)json_integer_value(b);
        e->end = (size_t)json_integer_value(en);
        size_t esz = st_dtype_size(e->dtype);
        if (esz && !e->f32 && !e->i64 && e->end - e->begin != numel * esz) {
            s = rk_fail(err, RK_EFORMAT, "%s: corrupt safetensors: entry '%s' has %zu bytes for %zu elements of %s", path, key,
                        e->end - e->begin, numel, e->dtype);
            goto fail;
        }
        if (e->f32 && e->end - e->begin != numel * 4) {
            s = rk_fail(err, RK_EFORMAT, "%s: corrupt safetensors: entry '%s' has %zu bytes for %zu floats", path, key,
                        e->end - e->begin, numel);
            goto fail;
        }
        if (e->i64 && e->end - e->begin != numel * 8) {
            s = rk_fail(err, RK_EFORMAT, "%s: corrupt safetensors: entry '%s' has %zu bytes for %zu int64", path, key,
                        e->end - e->begin, numel);
            goto fail;
        }
        f->n++;
    }
    if ((s = check_overlaps(f, err))) goto fail;
    /* last: structural errors (truncation, bad offsets) get their own message first */
    if ((s = check_checksum(f, err))) goto fail;
    *out = f;
    return RK_OK;
fail:
    rk_st_close(f);
    return s;
}

size_t rk_st_count(const rk_st_file *f) { return f->n; }
const char *rk_st_name(const rk_st_file *f, size_t i) { return i < f->n ? f->e[i].name : NULL; }

const char *rk_st_meta(const rk_st_file *f, const char *key) {
    json_t *m = json_object_get(f->header, "__metadata__");
    json_t *v = m ? json_object_get(m, key) : NULL;
    return json_is_string(v) ? json_string_value(v) : NULL;
}

static const st_entry *find(const rk_st_file *f, const char *name) {
    for (size_t i = 0; i < f->n; i++)
        if (!strcmp(f->e[i].name, name)) return &f->e[i];
    return NULL;
}

rk_status rk_st_get_f32(const rk_st_file *f, const char *name, const float **data, int *ndim,
                        int64_t shape[4], rk_err *err) {
    const st_entry *e = find(f, name);
    if (!e) return rk_fail(err, RK_ENOTFOUND, "%s: tensor '%s' missing", f->path, name);
    if (!e->f32) return rk_fail(err, RK_EFORMAT, "%s: tensor '%s' has dtype %s, expected F32", f->path, name, e->dtype);
    *data = (const float *)(const void *)(f->data + e->begin);
    *ndim = e->ndim;
    for (int i = 0; i < 4; i++) shape[i] = i < e->ndim ? e->shape[i] : 0;
    return RK_OK;
}

static void fmt_shape(char *buf, size_t n, int ndim, const int64_t *s) {
    size_t o = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < ndim && o < n; i++) o += (size_t)snprintf(buf + o, n - o, "%s%lld", i ? "," : "", (long long)s[i]);
    if (o < n) snprintf(buf + o, n - o, "]");
}

rk_status rk_st_read_f32(const rk_st_file *f, const char *name, float *dst, int want_ndim, const int64_t *want,
                         rk_err *err) {
    const float *data;
    int nd;
    int64_t sh[4];
    rk_status s = rk_st_get_f32(f, name, &data, &nd, sh, err);
    if (s != RK_OK) return s;
    int ok = nd == want_ndim;
    size_t numel = 1;
    for (int i = 0; ok && i < nd; i++) {
        ok = sh[i] == want[i];
        numel *= (size_t)sh[i];
    }
    if (!ok) {
        char a[64], b[64];
        fmt_shape(a, sizeof a, nd, sh);
        fmt_shape(b, sizeof b, want_ndim, want);
        return rk_fail(err, RK_ESHAPE, "%s: tensor '%s' has shape %s, the reader expects %s", f->path, name, a, b);
    }
    memcpy(dst, data, numel * 4);
    return RK_OK;
}

rk_status rk_st_shape(const rk_st_file *f, const char *name, int *ndim, int64_t shape[4], rk_err *err) {
    const st_entry *e = find(f, name);
    if (!e) return rk_fail(err, RK_ENOTFOUND, "%s: tensor '%s' missing", f->path, name);
    *ndim = e->ndim;
    for (int d = 0; d < 4; d++) shape[d] = d < e->ndim ? e->shape[d] : 0;
    return RK_OK;
}

rk_status rk_st_read_i64(const rk_st_file *f, const char *name, int64_t *dst, size_t n, rk_err *err) {
    const st_entry *e = find(f, name);
    if (!e) return rk_fail(err, RK_ENOTFOUND, "%s: tensor '%s' missing", f->path, name);
    if (!e->i64) return rk_fail(err, RK_EFORMAT, "%s: tensor '%s' has dtype %s, expected I64", f->path, name, e->dtype);
    if (e->end - e->begin != n * 8)
        return rk_fail(err, RK_ESHAPE, "%s: tensor '%s' has %zu values, the reader expects %zu", f->path, name,
                       (e->end - e->begin) / 8, n);
    memcpy(dst, f->data + e->begin, n * 8);
    return RK_OK;
}
