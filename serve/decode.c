/*
 * serve/decode.c — rankd's own decoder of a RankRequest: the wire bytes
 * straight into the protobuf-c structs the service reads, for requests that
 * are valid.
 *
 * protobuf-c stays the reference. rk_rank_request_decode accepts exactly
 * the inputs that rk_pb_check passes and rankd__v1__rank_request__unpack
 * decodes, and builds the same tree (unknown fields are skipped, not kept):
 * tags of at most 5 bytes numbered 1..2^29-1, varints of at most 10 bytes,
 * length prefixes of at most 5 bytes and at most INT_MAX, wire types 0, 1,
 * 2 and 5 only, each known field in its own wire type (repeated floats
 * packed or not, a packed run a multiple of 4 bytes), no NUL inside a
 * string, a singular message (user) at most once, the last of a repeated
 * singular scalar or string winning, a bool in any wire type, true when any
 * byte of its value has a low bit set (protobuf-c 1.4 does not check a
 * bool's wire type). Anything else returns -1 and the caller runs the
 * reference path (rk_pb_check, then unpack), which names the problem: the
 * error texts are protobuf-c's and rk_pb_check's by construction.
 * tests/fuzz/fuzz_decode.c checks both decoders against each other. Fields
 * are read with pbwire.h, as service.c's direct path reads them.
 *
 * Each message is walked twice: a scan of its own tags (nested messages
 * skipped by length) that counts its repeated fields, then the fill, so
 * every array is allocated once at its size. Allocations go through the
 * caller's allocator (the service's per-request arena); candidates and
 * their sub-messages are allocated as arrays, not one by one.
 *
 * The request's bytes are copied once (one allocation, COPY_PAD bytes more
 * than buf) and every string and bytes field points into that copy: a string is
 * NUL-terminated in place by writing the NUL over the byte that follows it,
 * which is the first byte of the next field's tag (or the extra byte at the
 * end). That byte is written only after the fill pass has read the tag (the
 * "pending" terminator below): scans run ahead of fills and nothing is read
 * twice behind the fill, so no byte is read after it was overwritten. No
 * string is allocated or copied one by one. buf need not outlive the
 * decoded request.
 */
#include <limits.h>
#include <stdint.h>
#include <string.h>

#include "internal.h"
#include "pbwire.h"
#include "rank.pb-c.h"

typedef struct {
    ProtobufCAllocator *a;
    int oom;       /* an allocation failed */
    uint8_t *pend; /* where the last string read ends: its NUL, written once the next tag is read */
} dec;

/* The fields of one message, for its fill pass after its scan: kept as
 * the scan read them when there are at most FBUF (no field is read twice),
 * else read again from the bytes (n = -1). */
#define FBUF 16
typedef struct {
    pbw_field f[FBUF];
    int n, i;             /* fields kept (-1: more), next one to fill */
    const uint8_t *p, *end;
    pbw_field cur;           /* n = -1: the field read last */
} msg_it;

/* The scan of [p, end): every field checked, counted by number into cnt[k]
 * for k < ncnt; a field numbered emb (0: none) is a content_embedding, its
 * floats counted into *ne (emb_count). */
static int emb_count(const pbw_field *f, size_t *n);
__attribute__((always_inline)) static inline int it_scan(msg_it *it, const uint8_t *p, const uint8_t *end, size_t *cnt, uint32_t ncnt, uint32_t emb,
                   size_t *ne) {
    it->n = 0, it->i = 0, it->p = p, it->end = end;
    while (p < end) {
        pbw_field *w = it->n >= 0 && it->n < FBUF ? &it->f[it->n] : &it->cur;
        if (pbw_next(&p, end, w)) return -1;
        if (w->num < ncnt) cnt[w->num]++;
        if (w->num == emb && emb_count(w, ne)) return -1;
        if (it->n >= 0) it->n = it->n < FBUF ? it->n + 1 : -1;
    }
    return 0;
}

/* The next field of the fill pass (NULL at the end). The last string's
 * terminator is written now: its byte, this field's first, was read. */
__attribute__((always_inline)) static inline const pbw_field *it_next(dec *d, msg_it *it) {
    const pbw_field *f;
    if (it->n >= 0) {
        if (it->i == it->n) return NULL;
        f = &it->f[it->i++];
    } else {
        if (it->p >= it->end) return NULL;
        pbw_next(&it->p, it->end, &it->cur); /* checked by the scan */
        f = &it->cur;
    }
    if (d->pend) {
        *d->pend = 0;
        d->pend = NULL;
    }
    return f;
}

static void *dalloc(dec *d, size_t n) {
    void *p = d->a->alloc(d->a->allocator_data, n ? n : 1);
    if (!p) d->oom = 1;
    return p;
}

/* Is there a NUL in s[0, n)? s lies in the request's copy, which is
 * followed by COPY_PAD readable bytes: a string under 16 bytes (most
 * names and values) is read as two words, its bytes beyond n masked. */
#define COPY_PAD 16
static inline int has_nul(const uint8_t *s, size_t n) {
    if (n >= 16) return memchr(s, 0, n) != NULL;
    uint64_t a, b;
    memcpy(&a, s, 8);
    memcpy(&b, s + 8, 8);
    size_t nb = n > 8 ? n - 8 : 0;
    if (n < 8) a |= ~0ull << (8 * n);
    if (nb < 8) b |= ~0ull << (8 * nb);
    const uint64_t lo = 0x0101010101010101ull, hi = 0x8080808080808080ull;
    return (((a - lo) & ~a) | ((b - lo) & ~b)) & hi ? 1 : 0;
}

/* A string field: wire type 2, no NUL inside; the string in place in the
 * request's copy, its terminator pending (see the top of the file). */
__attribute__((always_inline)) static inline int get_str(dec *d, const pbw_field *f, char **out) {
    if (f->wt != 2 || has_nul(f->data, f->len)) return -1;
    *out = (char *)f->data;
    d->pend = (uint8_t *)f->data + f->len;
    return 0;
}

static int get_float(const pbw_field *f, float *out) {
    if (f->wt != 5) return -1;
    memcpy(out, f->data, 4); /* little-endian wire, as protobuf-c assumes on this host */
    return 0;
}

/* An array of n elements (NULL when n is 0, as protobuf-c leaves repeated
 * fields); NULL and d->oom on failure. n is at most the message's length. */
static void *alloc_n(dec *d, size_t n, size_t size) { return n ? dalloc(d, n * size) : NULL; }

static int sparse_msg(dec *d, const uint8_t *p, const uint8_t *end, Rankd__V1__SparseFeature *m) {
    *m = (Rankd__V1__SparseFeature)RANKD__V1__SPARSE_FEATURE__INIT; /* inline: one per candidate */
    msg_it it;
    size_t cnt[3] = {0};
    if (it_scan(&it, p, end, cnt, 3, 0, NULL)) return -1;
    m->values = alloc_n(d, cnt[2], sizeof *m->values);
    if (d->oom) return -1;
    for (const pbw_field *f; (f = it_next(d, &it));) {
        if (f->num == 1 && get_str(d, f, &m->name)) return -1;
        if (f->num == 2 && get_str(d, f, &m->values[m->n_values++])) return -1;
    }
    return 0;
}

static int dense_msg(const uint8_t *p, const uint8_t *end, Rankd__V1__DenseFeature *m, dec *d) {
    *m = (Rankd__V1__DenseFeature)RANKD__V1__DENSE_FEATURE__INIT;
    pbw_field f;
    while (p < end) { /* one pass: the fill and its own scan */
        if (pbw_next(&p, end, &f)) return -1;
        if (d->pend) {
            *d->pend = 0;
            d->pend = NULL;
        }
        if (f.num == 1 && get_str(d, &f, &m->name)) return -1;
        if (f.num == 2 && get_float(&f, &m->value)) return -1;
    }
    return 0;
}

/* The sparse (field 2) and dense (field 3) lists of a User or Candidate:
 * arrays of ns / nd structs behind their pointer arrays, in one block. */
typedef struct {
    Rankd__V1__SparseFeature *sv;
    Rankd__V1__DenseFeature *dv;
} feat_store;

static void feat_alloc(dec *d, size_t ns, size_t nd, Rankd__V1__SparseFeature ***sp, Rankd__V1__DenseFeature ***dp,
                       feat_store *fs) {
    *sp = NULL, *dp = NULL, fs->sv = NULL, fs->dv = NULL;
    if (!ns && !nd) return;
    /* pointers first (8-byte aligned), then the structs (of pointers and sizes) */
    unsigned char *b = dalloc(d, (ns + nd) * sizeof(void *) + ns * sizeof *fs->sv + nd * sizeof *fs->dv);
    if (!b) return;
    if (ns) *sp = (Rankd__V1__SparseFeature **)b;
    b += ns * sizeof(void *);
    if (nd) *dp = (Rankd__V1__DenseFeature **)b;
    b += nd * sizeof(void *);
    if (ns) fs->sv = (Rankd__V1__SparseFeature *)b;
    b += ns * sizeof *fs->sv;
    if (nd) fs->dv = (Rankd__V1__DenseFeature *)b;
}

static int add_sparse(dec *d, const pbw_field *f, feat_store *fs, Rankd__V1__SparseFeature **arr, size_t *n) {
    if (f->wt != 2) return -1;
    Rankd__V1__SparseFeature *m = &fs->sv[*n];
    if (sparse_msg(d, f->data, f->data + f->len, m)) return -1;
    arr[(*n)++] = m;
    return 0;
}

static int add_dense(dec *d, const pbw_field *f, feat_store *fs, Rankd__V1__DenseFeature **arr, size_t *n) {
    if (f->wt != 2) return -1;
    Rankd__V1__DenseFeature *m = &fs->dv[*n];
    if (dense_msg(f->data, f->data + f->len, m, d)) return -1;
    arr[(*n)++] = m;
    return 0;
}

static int user_msg(dec *d, const uint8_t *p, const uint8_t *end, Rankd__V1__User *m) {
    rankd__v1__user__init(m);
    msg_it it;
    size_t cnt[5] = {0}; /* by field number: 2 sparse, 3 dense, 4 recent_item_ids */
    if (it_scan(&it, p, end, cnt, 5, 0, NULL)) return -1;
    feat_store fs;
    feat_alloc(d, cnt[2], cnt[3], &m->sparse, &m->dense, &fs);
    m->recent_item_ids = alloc_n(d, cnt[4], sizeof *m->recent_item_ids);
    if (d->oom) return -1;
    for (const pbw_field *f; (f = it_next(d, &it));) {
        int bad = 0;
        switch (f->num) {
        case 1: bad = get_str(d, f, &m->user_id); break;
        case 2: bad = add_sparse(d, f, &fs, m->sparse, &m->n_sparse); break;
        case 3: bad = add_dense(d, f, &fs, m->dense, &m->n_dense); break;
        case 4: bad = get_str(d, f, &m->recent_item_ids[m->n_recent_item_ids++]); break;
        default: break; /* unknown: skipped */
        }
        if (bad) return -1;
    }
    return 0;
}

/* content_embedding: one float (wire type 5) or a packed run (2). */
static int emb_count(const pbw_field *f, size_t *n) {
    if (f->wt == 5) *n += 1;
    else if (f->wt == 2 && f->len % 4 == 0) *n += f->len / 4;
    else return -1;
    return 0;
}

static int cand_msg(dec *d, const uint8_t *p, const uint8_t *end, Rankd__V1__Candidate *m) {
    *m = (Rankd__V1__Candidate)RANKD__V1__CANDIDATE__INIT;
    msg_it it;
    size_t cnt[4] = {0}, ne = 0; /* by field number: 2 sparse, 3 dense */
    if (it_scan(&it, p, end, cnt, 4, 4, &ne)) return -1;
    feat_store fs;
    feat_alloc(d, cnt[2], cnt[3], &m->sparse, &m->dense, &fs);
    m->content_embedding = alloc_n(d, ne, sizeof *m->content_embedding);
    if (d->oom) return -1;
    for (const pbw_field *f; (f = it_next(d, &it));) {
        int bad = 0;
        switch (f->num) {
        case 1: bad = get_str(d, f, &m->ad_id); break;
        case 2: bad = add_sparse(d, f, &fs, m->sparse, &m->n_sparse); break;
        case 3: bad = add_dense(d, f, &fs, m->dense, &m->n_dense); break;
        case 4: /* wire type checked by emb_count */
            if (f->len) memcpy(m->content_embedding + m->n_content_embedding, f->data, f->len);
            m->n_content_embedding += f->len / 4;
            break;
        case 5:
        case 6: {
            ProtobufCBinaryData *b = f->num == 5 ? &m->content_text : &m->content_image;
            if (f->wt != 2) {
                bad = 1;
                break;
            }
            b->data = f->len ? (uint8_t *)f->data : NULL;
            b->len = f->len;
            break;
        }
        default: break;
        }
        if (bad) return -1;
    }
    return 0;
}

/* buf[len] copied through d's allocator, then COPY_PAD zero bytes (the
 * last string's NUL and has_nul's words past it); NULL when out of memory. */
static uint8_t *copy_in(dec *d, const uint8_t *buf, size_t len) {
    uint8_t *copy = len <= SIZE_MAX - COPY_PAD ? dalloc(d, len + COPY_PAD) : NULL;
    if (!copy) return NULL;
    if (len) memcpy(copy, buf, len);
    memset(copy + len, 0, COPY_PAD);
    return copy;
}

int rk_user_decode(const uint8_t *buf, size_t len, ProtobufCAllocator *a, Rankd__V1__User **out) {
    dec d = {a, 0, NULL};
    *out = NULL;
    uint8_t *copy = copy_in(&d, buf, len);
    Rankd__V1__User *m = dalloc(&d, sizeof *m);
    if (!copy || !m || user_msg(&d, copy, copy + len, m)) return -1;
    if (d.pend) *d.pend = 0; /* the last string ends the message */
    *out = m;
    return 0;
}

int rk_rank_request_decode(const uint8_t *buf, size_t len, ProtobufCAllocator *a, Rankd__V1__RankRequest **out) {
    dec d = {a, 0, NULL};
    *out = NULL;
    uint8_t *copy = copy_in(&d, buf, len);
    Rankd__V1__RankRequest *m = dalloc(&d, sizeof *m);
    if (!copy || !m) return -1;
    rankd__v1__rank_request__init(m);
    msg_it it;
    size_t cnt[6] = {0}; /* by field number: 4 user, 5 candidates */
    if (it_scan(&it, copy, copy + len, cnt, 6, 0, NULL)) return -1;
    if (cnt[4] > 1) return -1; /* user given twice: rk_pb_check names it */
    m->candidates = alloc_n(&d, cnt[5], sizeof *m->candidates);
    Rankd__V1__Candidate *cv = alloc_n(&d, cnt[5], sizeof *cv);
    m->user = alloc_n(&d, cnt[4], sizeof *m->user);
    if (d.oom) return -1;
    for (const pbw_field *f; (f = it_next(&d, &it));) {
        int bad = 0;
        switch (f->num) {
        case 1: bad = get_str(&d, f, &m->request_id); break;
        case 2: bad = get_str(&d, f, &m->model_name); break;
        case 3: bad = get_str(&d, f, &m->model_version); break;
        case 4: bad = f->wt != 2 || user_msg(&d, f->data, f->data + f->len, m->user); break;
        case 5:
            bad = f->wt != 2 || cand_msg(&d, f->data, f->data + f->len, &cv[m->n_candidates]);
            m->candidates[m->n_candidates] = &cv[m->n_candidates];
            m->n_candidates++;
            break;
        case 6: m->return_tower_scores = pbw_bool(f); break;
        case 7: m->return_timing = pbw_bool(f); break;
        default: break;
        }
        if (bad) return -1;
    }
    if (d.pend) *d.pend = 0; /* the last string ends the request: the byte after it */
    *out = m;
    return 0;
}
