/*
 * embed/embed.h — the whole interface of rankd's embedding module.
 *
 * Feature hashing (the random-hashing baseline: row = xxh64(name "\x1f"
 * value) mod H, via core's rk_feature_row) and embedding bags whose rows
 * come from the store: for one table and one batch, the rows of every bag
 * are deduplicated, fetched in one batched store call, and pooled with
 * nn's rk_embedding_bag_forward — the same op training uses on RAM tables,
 * so a served pooled vector is bit-identical to the trained one.
 */
#ifndef RK_EMBED_H
#define RK_EMBED_H

#include <stddef.h>
#include <stdint.h>

#include "core.h"
#include "nn.h"
#include "store.h"

/* Per-thread scratch for pooled lookups of up to max_keys values per call
 * and rows of up to max_dim floats. Allocated once (create/destroy); a call
 * never allocates. */
typedef struct rk_embed_scratch rk_embed_scratch;
rk_status rk_embed_scratch_create(size_t max_keys, int max_dim, rk_embed_scratch **out, rk_err *err);
void rk_embed_scratch_destroy(rk_embed_scratch *s);

/* Pooled embedding bag over store table t (dimension d):
 *   out[b, 0:d] (row stride out_stride) = pool of rows[offsets[b]..offsets[b+1])
 * offsets: [B+1]; total values offsets[B] <= max_keys else RK_ETOOBIG.
 * *n_unique (may be NULL) receives the number of distinct rows fetched. */
rk_status rk_embed_bag_store(rk_store *st, int t, int d, const uint32_t *offsets, const uint64_t *rows,
                             int B, rk_bag_mode mode, float *out, size_t out_stride,
                             rk_embed_scratch *scr, size_t *n_unique, rk_err *err);

#endif /* RK_EMBED_H */
