/*
 * embed/embed.c — batched, deduplicated embedding-bag lookups from the store.
 *
 * Dedup uses an open-addressing hash table (linear probing, power-of-two
 * capacity >= 2x keys) in scratch memory, cleared per call only over the
 * slots it used. The unique rows are fetched in one rk_store_get call into a
 * compact [n_unique, d] buffer and each value is remapped to its slot there;
 * pooling then runs the shared embedding-bag op on the compact buffer.
 */
#include "embed.h"

#include <string.h>

struct rk_embed_scratch {
    size_t max_keys;
    int max_dim;
    size_t ht_cap;            /* power of two */
    uint64_t *ht_key;         /* [ht_cap] */
    uint32_t *ht_val;         /* [ht_cap], 0 = empty, else slot+1 */
    uint32_t *ht_used;        /* [max_keys] slots touched, for clearing */
    uint64_t *uniq;           /* [max_keys] */
    uint64_t *local;          /* [max_keys] remapped indices */
    float *rowbuf;            /* [max_keys, max_dim] */
};

rk_status rk_embed_scratch_create(size_t max_keys, int max_dim, rk_embed_scratch **out, rk_err *err) {
    *out = NULL;
    if (max_keys == 0 || max_dim <= 0) return rk_fail(err, RK_EINVAL, "embed scratch: max_keys and max_dim must be > 0");
    rk_embed_scratch *s = rk_calloc(1, sizeof *s);
    if (!s) return rk_fail(err, RK_ENOMEM, "embed scratch: out of memory");
    s->max_keys = max_keys;
    s->max_dim = max_dim;
    size_t cap = 16;
    while (cap < 2 * max_keys) cap <<= 1;
    s->ht_cap = cap;
    s->ht_key = rk_malloc(cap * sizeof *s->ht_key);
    s->ht_val = rk_calloc(cap, sizeof *s->ht_val);
    s->ht_used = rk_malloc(max_keys * sizeof *s->ht_used);
    s->uniq = rk_malloc(max_keys * sizeof *s->uniq);
    s->local = rk_malloc(max_keys * sizeof *s->local);
    s->rowbuf = rk_malloc(max_keys * (size_t)max_dim * sizeof *s->rowbuf);
    if (!s->ht_key || !s->ht_val || !s->ht_used || !s->uniq || !s->local || !s->rowbuf) {
        rk_embed_scratch_destroy(s);
        return rk_fail(err, RK_ENOMEM, "embed scratch: out of memory for %zu keys x %d floats", max_keys, max_dim);
    }
    *out = s;
    return RK_OK;
}

void rk_embed_scratch_destroy(rk_embed_scratch *s) {
    if (!s) return;
    rk_free(s->ht_key);
    rk_free(s->ht_val);
    rk_free(s->ht_used);
    rk_free(s->uniq);
    rk_free(s->local);
    rk_free(s->rowbuf);
    rk_free(s);
}

static inline uint64_t mix(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return x;
}

rk_status rk_embed_bag_store(rk_store *st, int t, int d, const uint32_t *offsets, const uint64_t *rows, int B,
                             rk_bag_mode mode, float *out, size_t out_stride, rk_embed_scratch *scr,
                             size_t *n_unique, rk_err *err) {
    size_t n = offsets[B];
    if (n > scr->max_keys) return rk_fail(err, RK_ETOOBIG, "embedding lookup: %zu values exceed the scratch size %zu", n, scr->max_keys);
    if (d > scr->max_dim) return rk_fail(err, RK_EINTERNAL, "embedding lookup: dim %d exceeds scratch dim %d", d, scr->max_dim);
    size_t nu = 0, mask = scr->ht_cap - 1;
    for (size_t i = 0; i < n; i++) {
        uint64_t k = rows[i];
        size_t h = mix(k) & mask;
        for (;;) {
            uint32_t v = scr->ht_val[h];
            if (v == 0) {
                scr->ht_key[h] = k;
                scr->ht_val[h] = (uint32_t)(nu + 1);
                scr->ht_used[nu] = (uint32_t)h;
                scr->uniq[nu] = k;
                scr->local[i] = nu;
                nu++;
                break;
            }
            if (scr->ht_key[h] == k) {
                scr->local[i] = v - 1;
                break;
            }
            h = (h + 1) & mask;
        }
    }
    for (size_t i = 0; i < nu; i++) scr->ht_val[scr->ht_used[i]] = 0;
    if (n_unique) *n_unique = nu;
    rk_status s = rk_store_get(st, t, scr->uniq, nu, scr->rowbuf, NULL, err);
    if (s != RK_OK) return s;
    rk_embedding_bag_forward(out, out_stride, scr->rowbuf, offsets, scr->local, B, d, mode);
    return RK_OK;
}
