/*
 * tests/fuzz/rank_request_eq.h — are two decoded RankRequests the same?
 * Every field the service reads, compared by value (strings by content,
 * floats by bits); unknown fields are not compared (protobuf-c keeps them,
 * rankd's decoder drops them). Used by tests/fuzz/fuzz_decode.c and
 * tests/test_serve.c to hold serve/decode.c to protobuf-c's unpack.
 * rk_rank_request_diff: NULL when equal, else the first field that differs;
 * rk_decode_both: both decoders on one input.
 */
#ifndef RK_RANK_REQUEST_EQ_H
#define RK_RANK_REQUEST_EQ_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "rank.pb-c.h"

/* An allocator for rk_rank_request_decode: malloc'd blocks, all freed by
 * rk_blocks_free. */
typedef struct {
    void **p;
    size_t n, cap;
} rk_blocks;

static void *rk_blocks_alloc(void *data, size_t n) {
    rk_blocks *b = data;
    if (b->n == b->cap) {
        size_t cap = b->cap ? 2 * b->cap : 64;
        void **np = realloc(b->p, cap * sizeof *np);
        if (!np) return NULL;
        b->p = np, b->cap = cap;
    }
    void *m = malloc(n);
    if (m) b->p[b->n++] = m;
    return m;
}

static void rk_blocks_nofree(void *data, void *p) { (void)data, (void)p; }

static void rk_blocks_free(rk_blocks *b) {
    for (size_t i = 0; i < b->n; i++) free(b->p[i]);
    free(b->p);
    b->p = NULL, b->n = b->cap = 0;
}

static int rk_eq_str(const char *a, const char *b) { return a == b || (a && b && !strcmp(a, b)); }

static int rk_eq_strs(char *const *a, size_t na, char *const *b, size_t nb) {
    if (na != nb) return 0;
    for (size_t i = 0; i < na; i++)
        if (!rk_eq_str(a[i], b[i])) return 0;
    return 1;
}

static int rk_eq_bytes(const ProtobufCBinaryData *a, const ProtobufCBinaryData *b) {
    return a->len == b->len && (a->len == 0 || !memcmp(a->data, b->data, a->len));
}

static int rk_eq_feats(size_t ns_a, Rankd__V1__SparseFeature *const *sa, size_t ns_b,
                       Rankd__V1__SparseFeature *const *sb, size_t nd_a, Rankd__V1__DenseFeature *const *da,
                       size_t nd_b, Rankd__V1__DenseFeature *const *db) {
    if (ns_a != ns_b || nd_a != nd_b) return 0;
    for (size_t j = 0; j < ns_a; j++)
        if (!rk_eq_str(sa[j]->name, sb[j]->name) ||
            !rk_eq_strs(sa[j]->values, sa[j]->n_values, sb[j]->values, sb[j]->n_values))
            return 0;
    for (size_t j = 0; j < nd_a; j++)
        if (!rk_eq_str(da[j]->name, db[j]->name) || memcmp(&da[j]->value, &db[j]->value, sizeof(float)))
            return 0;
    return 1;
}

static const char *rk_rank_request_diff(const Rankd__V1__RankRequest *a, const Rankd__V1__RankRequest *b) {
    if (!rk_eq_str(a->request_id, b->request_id)) return "request_id";
    if (!rk_eq_str(a->model_name, b->model_name)) return "model_name";
    if (!rk_eq_str(a->model_version, b->model_version)) return "model_version";
    if (a->return_tower_scores != b->return_tower_scores) return "return_tower_scores";
    if (a->return_timing != b->return_timing) return "return_timing";
    if (!a->user != !b->user) return "user (set or not)";
    if (a->user) {
        const Rankd__V1__User *u = a->user, *v = b->user;
        if (!rk_eq_str(u->user_id, v->user_id)) return "user.user_id";
        if (!rk_eq_strs(u->recent_item_ids, u->n_recent_item_ids, v->recent_item_ids, v->n_recent_item_ids))
            return "user.recent_item_ids";
        if (!rk_eq_feats(u->n_sparse, u->sparse, v->n_sparse, v->sparse, u->n_dense, u->dense, v->n_dense, v->dense))
            return "user.sparse/dense";
    }
    if (a->n_candidates != b->n_candidates) return "n_candidates";
    for (size_t i = 0; i < a->n_candidates; i++) {
        const Rankd__V1__Candidate *c = a->candidates[i], *d = b->candidates[i];
        if (!rk_eq_str(c->ad_id, d->ad_id)) return "candidates[].ad_id";
        if (!rk_eq_feats(c->n_sparse, c->sparse, d->n_sparse, d->sparse, c->n_dense, c->dense, d->n_dense, d->dense))
            return "candidates[].sparse/dense";
        if (c->n_content_embedding != d->n_content_embedding ||
            (c->n_content_embedding &&
             memcmp(c->content_embedding, d->content_embedding, c->n_content_embedding * sizeof(float))))
            return "candidates[].content_embedding";
        if (!rk_eq_bytes(&c->content_text, &d->content_text)) return "candidates[].content_text";
        if (!rk_eq_bytes(&c->content_image, &d->content_image)) return "candidates[].content_image";
    }
    return NULL;
}

/* Decode b[n] with rankd's decoder and with the reference (rk_pb_check,
 * then protobuf-c's unpack). 0 when they agree (*accepted: both accept and
 * built the same request), -1 when they do not, why[cap] saying how. */
static int rk_decode_both(const uint8_t *b, size_t n, int *accepted, char *why, size_t cap) {
    rk_blocks bl = {0};
    ProtobufCAllocator a = {rk_blocks_alloc, rk_blocks_nofree, &bl};
    Rankd__V1__RankRequest *mine = NULL, *ref = NULL;
    int rc = rk_rank_request_decode(b, n, &a, &mine), ret = 0;
    char msg[256];
    if (!rk_pb_check(&rankd__v1__rank_request__descriptor, b, n, msg, sizeof msg))
        ref = rankd__v1__rank_request__unpack(NULL, n, b);
    *accepted = rc == 0 && ref;
    const char *d = rc == 0 && ref ? rk_rank_request_diff(mine, ref) : NULL;
    if ((rc == 0) != (ref != NULL)) {
        snprintf(why, cap, "rankd's decoder %s, the reference %s (%s)", rc ? "refuses" : "accepts",
                 ref ? "accepts" : "refuses", msg);
        ret = -1;
    } else if (d) {
        snprintf(why, cap, "decoded requests differ in %s", d);
        ret = -1;
    }
    if (ref) rankd__v1__rank_request__free_unpacked(ref, NULL);
    rk_blocks_free(&bl);
    return ret;
}

#endif /* RK_RANK_REQUEST_EQ_H */
