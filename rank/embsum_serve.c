/*
 * rank/embsum_serve.c — one ranking request against an EmbSum bundle: the
 * request-time rules of serving (rank/embsum.h, rk_embsum_bundle_rank), the
 * batched matching both `rank embsum score` and rankd use, and the bundle a
 * model bundle carries for rankd (rk_embsum_attach_open / rk_embsum_fill).
 *
 *   UPE: the stored row of the user; an unknown user with recent_item_ids
 *        the bundle knows gets a UPE computed now (their session texts
 *        from items.tsv, encoded, pooled, poly-attention: the offline path);
 *        otherwise the documented default, the mean of the stored UPEs. A
 *        request with neither a user_id nor recent_item_ids, or with an
 *        empty recent item id, is refused (the field named).
 *   CPE: the stored rows of every known candidate in one store multi-get
 *        (its RAM row cache, as embedding rows); an ad the bundle does not
 *        know but sent with content_text gets its CPE now from the
 *        encoder's token states (the offline path), the deadline checked
 *        before each text; without text it is an error naming the candidate.
 *   Matching: the m x k products of every candidate in one fused pass over
 *        the CPE rows, pooled per candidate (nn.h, rk_match_batch); pCTR =
 *        sigmoid(a·y + b). A
 *        non-finite score is an error, never a NaN answer.
 */
#define _GNU_SOURCE
#include "rank.h"
#include "embed.h"
#include "embsum_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int parse_id(const char *s, int64_t *out) {
    char *end;
    if (!s || !*s || *s == '-' || *s == '+') return 0;
    long long v = strtoll(s, &end, 10);
    if (*end) return 0;
    *out = v;
    return 1;
}

/* The request scratch for n candidates (kept: steady state allocates nothing). */
static rk_status reserve(rk_embsum_bundle *b, int n, rk_err *err) {
    const rk_embsum *e = b->e;
    const size_t kd = (size_t)e->cfg.k * e->d;
    if (!b->upe && !(b->upe = rk_malloc((size_t)e->cfg.m * e->d * sizeof(float))))
        return rk_fail(err, RK_ENOMEM, "embsum: out of memory");
    if (n <= b->cap) return RK_OK;
    rk_free(b->cpe_all), rk_free(b->prod), rk_free(b->score), rk_free(b->keys), rk_free(b->unknown);
    b->cpe_all = rk_malloc((size_t)n * kd * sizeof(float));
    b->prod = rk_malloc((size_t)n * e->cfg.k * e->cfg.m * sizeof(float));
    b->score = rk_malloc((size_t)n * sizeof(float));
    b->keys = rk_malloc((size_t)n * sizeof *b->keys);
    b->unknown = rk_malloc((size_t)n * sizeof *b->unknown);
    b->cap = b->cpe_all && b->prod && b->score && b->keys && b->unknown ? n : 0;
    return b->cap ? RK_OK : rk_fail(err, RK_ENOMEM, "candidates: out of memory for %d", n);
}

/* Scores of the n candidates whose CPE rows are in b->cpe_all against
 * b->upe: raw into b->score (and score), pCTR into pctr (either may be NULL). */
static rk_status match_all(rk_embsum_bundle *b, int n, float *pctr, float *score, rk_err *err) {
    const rk_embsum *e = b->e;
    rk_match_batch(b->score, b->prod, b->upe, b->cpe_all, n, e->cfg.m, e->cfg.k, e->d, e->cfg.pool, e->cfg.tau);
    for (int i = 0; i < n; i++) {
        float y = b->score[i], p = rk_embsum_pctr(e, y);
        if (!isfinite(y) || !isfinite(p)) return rk_fail(err, RK_ENUMERIC, "candidates[%d]: the score is not finite", i);
        if (score) score[i] = y;
        if (pctr) pctr[i] = p;
    }
    return RK_OK;
}

rk_status rk_embsum_bundle_score(rk_embsum_bundle *b, int64_t user_id, const int64_t *item_ids, int n, float *pctr,
                                 float *score, rk_err *err) {
    if (n < 0) return rk_fail(err, RK_EINVAL, "items: negative count");
    rk_status s = reserve(b, n, err);
    if (s == RK_OK) s = rk_embsum_bundle_upe(b, user_id, b->upe, err);
    if (s == RK_OK) s = rk_embsum_bundle_cpe(b, item_ids, n, b->cpe_all, err);
    return s == RK_OK ? match_all(b, n, pctr, score, err) : s;
}

/* UPE from the user's recent items (most recent first) known to items.tsv. */
static rk_status upe_from_recent(rk_embsum_bundle *b, rk_text_encoder *enc, const rk_embsum_request *r, float *upe,
                                 int *used, rk_err *err) {
    const rk_embsum *e = b->e;
    const int gp = e->cfg.g * e->cfg.p, D = e->d;
    int32_t hist[64 * 64];
    int L = 0;
    *used = 0;
    for (int i = 0; i < r->n_recent && L < gp; i++) {
        int64_t id;
        int k = parse_id(r->recent_item_ids[i], &id) ? rk_embsum_find(b->item_id, b->n_items, id) : -1;
        if (k >= 0) hist[L++] = k;
    }
    if (!L || !enc) return RK_OK;
    for (int i = 0; i < L / 2; i++) { /* oldest first */
        int32_t t = hist[i];
        hist[i] = hist[L - 1 - i], hist[L - 1 - i] = t;
    }
    const int ns = (L + e->cfg.p - 1) / e->cfg.p;
    char *texts[64] = {0};
    float *first = rk_malloc((size_t)ns * D * sizeof(float)), *mean = rk_malloc((size_t)ns * D * sizeof(float));
    rk_status s = first && mean ? RK_OK : rk_fail(err, RK_ENOMEM, "user.recent_item_ids: out of memory");
    for (int j = 0; j < ns && s == RK_OK; j++) { /* the same chunking as rank/embsum_data.c */
        int hi = L - (ns - 1 - j) * e->cfg.p, lo = hi - e->cfg.p < 0 ? 0 : hi - e->cfg.p;
        size_t bytes = 1;
        for (int i = lo; i < hi; i++) bytes += strlen(b->item_short[hist[i]]) + 2;
        char *t = texts[j] = rk_malloc(bytes), *w = t;
        if (!t) { s = rk_fail(err, RK_ENOMEM, "user.recent_item_ids: out of memory"); break; }
        for (int i = lo; i < hi; i++) w += sprintf(w, i > lo ? ". %s" : "%s", b->item_short[hist[i]]);
    }
    if (s == RK_OK && r->deadline > 0 && rk_now() > r->deadline)
        s = rk_fail(err, RK_EDEADLINE, "user.recent_item_ids: deadline exceeded before encoding the history");
    if (s == RK_OK) s = rk_embsum_session_vectors(enc, (const char *const *)texts, ns, first, mean, err);
    if (s == RK_OK)
        s = rk_embsum_upe(e, e->cfg.session_pool == RK_SESSION_FIRST ? first : mean, ns, upe, b->w, err);
    if (s != RK_OK) rk_err_prefix(err, "user.recent_item_ids");
    for (int j = 0; j < ns; j++) rk_free(texts[j]);
    rk_free(first), rk_free(mean);
    if (s == RK_OK) *used = 1;
    return s;
}

/* b->upe for the request's user: stored, from recent items, or the default. */
static rk_status choose_upe(rk_embsum_bundle *b, rk_text_encoder *enc, const rk_embsum_request *r, rk_upe_source *from,
                            rk_err *err) {
    const int has_uid = r->user_id && r->user_id[0];
    for (int i = 0; i < r->n_recent; i++)
        if (!r->recent_item_ids[i] || !r->recent_item_ids[i][0])
            return rk_fail(err, RK_EINVAL, "user.recent_item_ids[%d]: empty", i);
    if (!has_uid && r->n_recent <= 0)
        return rk_fail(err, RK_EINVAL, "user: no user_id and no recent_item_ids (an EmbSum model needs the user or their history)");
    int64_t uid;
    if (has_uid && parse_id(r->user_id, &uid)) {
        rk_err tmp = {0};
        rk_status g = rk_embsum_bundle_upe(b, uid, b->upe, &tmp);
        if (g == RK_OK) return *from = RK_UPE_STORED, RK_OK;
        if (g != RK_ENOTFOUND) return rk_fail(err, g, "user.user_id: %s", tmp.msg);
    }
    int used = 0;
    rk_status s = upe_from_recent(b, enc, r, b->upe, &used, err);
    if (s != RK_OK) return s;
    *from = used ? RK_UPE_RECENT : RK_UPE_DEFAULT;
    if (!used) memcpy(b->upe, b->default_upe, (size_t)b->e->cfg.m * b->e->d * sizeof(float));
    return RK_OK;
}

/* The CPE row of an unknown candidate i from its content_text. */
static rk_status cpe_from_text(rk_embsum_bundle *b, rk_text_encoder *enc, const rk_embsum_request *r, int i, float *cpe,
                               rk_err *err) {
    const rk_embsum_candidate *c = &r->cand[i];
    if (r->deadline > 0 && rk_now() > r->deadline)
        return rk_fail(err, RK_EDEADLINE, "candidates[%d].content_text: deadline exceeded before encoding", i);
    int32_t off[2];
    const char *t = c->content_text;
    float *tok = b->w->H; /* [max_n >= item_tokens, d]: free between UPE computations */
    rk_status s = rk_text_encoder_encode_tokens(enc, &t, &c->content_len, 1, b->e->cfg.item_tokens, tok,
                                                (size_t)b->e->cfg.item_tokens, off, err);
    if (s == RK_OK) {
        rk_l2_normalize(tok, off[1], b->e->d, 1e-12f);
        s = rk_embsum_cpe(b->e, tok, off[1], cpe, b->w, err);
    }
    return s == RK_OK ? s : rk_err_prefix(err, "candidates[%d].content_text", i);
}

/* Store keys of the candidates; the unknown ones (checked here, before any
 * work) listed in b->unknown[*nu]. */
static rk_status candidate_keys(rk_embsum_bundle *b, rk_text_encoder *enc, const rk_embsum_request *r, int *nu,
                                rk_err *err) {
    *nu = 0;
    for (int i = 0; i < r->n_cand; i++) {
        const rk_embsum_candidate *c = &r->cand[i];
        int64_t id;
        if (parse_id(c->ad_id, &id) && rk_embsum_find(b->item_id, b->n_items, id) >= 0) {
            b->keys[i] = (uint64_t)id;
            continue;
        }
        if (!c->content_len)
            return rk_fail(err, RK_ENOTFOUND, "candidates[%d].ad_id: '%.64s' is not in the bundle and has no content_text",
                           i, c->ad_id ? c->ad_id : "");
        if (c->content_len > RK_EMBSUM_MAX_TEXT_BYTES)
            return rk_fail(err, RK_EINVAL, "candidates[%d].content_text: %zu bytes, at most %d", i, c->content_len,
                           RK_EMBSUM_MAX_TEXT_BYTES);
        if (!enc) return rk_fail(err, RK_EINVAL, "candidates[%d].content_text: no text encoder to encode it", i);
        b->keys[i] = (uint64_t)b->item_id[0]; /* a stored row, overwritten by the request-time CPE */
        b->unknown[(*nu)++] = i;
    }
    return RK_OK;
}

rk_status rk_embsum_bundle_rank(rk_embsum_bundle *b, rk_text_encoder *enc, const rk_embsum_request *r, float *pctr,
                                float *score, rk_embsum_rank_info *info, rk_err *err) {
    const rk_embsum *e = b->e;
    const size_t kd = (size_t)e->cfg.k * e->d;
    rk_embsum_rank_info in = {RK_UPE_DEFAULT, 0};
    if (enc && rk_text_encoder_dim(enc) != e->d)
        return rk_fail(err, RK_ESHAPE, "encoder: dim %d, the bundle's is %d", rk_text_encoder_dim(enc), e->d);
    if (r->n_cand < 0) return rk_fail(err, RK_EINVAL, "candidates: negative count");
    if (!b->n_items) return rk_fail(err, RK_EFORMAT, "embsum bundle: no items");
    int nu = 0;
    size_t missing = 0;
    rk_status s = reserve(b, r->n_cand, err);
    if (s == RK_OK) s = candidate_keys(b, enc, r, &nu, err);
    if (s == RK_OK) s = choose_upe(b, enc, r, &in.upe, err);
    if (s == RK_OK) s = rk_store_get(b->st, 1, b->keys, (size_t)r->n_cand, b->cpe_all, &missing, err);
    if (s == RK_OK && missing)
        s = rk_fail(err, RK_EFORMAT, "embsum bundle: items.tsv lists %zu candidate(s) the cpe table lacks", missing);
    for (int j = 0; j < nu && s == RK_OK; j++, in.n_encoded++)
        s = cpe_from_text(b, enc, r, b->unknown[j], b->cpe_all + (size_t)b->unknown[j] * kd, err);
    if (s == RK_OK) s = match_all(b, r->n_cand, pctr, score, err);
    if (info) *info = in;
    return s;
}

/* ---------------------------------------------------------------- rankd */

rk_status rk_embsum_attach_open(const rk_model *m, rk_embsum_bundle **out, int *feature, rk_err *err) {
    *out = NULL;
    *feature = -1;
    char dir[4200];
    snprintf(dir, sizeof dir, "%s/embsum", rk_model_dir(m));
    if (!rk_path_exists(dir)) return RK_OK;
    const rk_model_cfg *c = rk_model_config(m);
    int f = rk_model_cfg_find(c, RK_EMBSUM_FEATURE);
    if (f < 0 || c->features[f].kind != RK_FEAT_DENSE || c->features[f].side != RK_SIDE_ITEM)
        return rk_fail(err, RK_EINVAL, "%s: the model has no dense item feature '%s' for the EmbSum score", dir,
                       RK_EMBSUM_FEATURE);
    rk_status s = rk_embsum_bundle_open(dir, out, err);
    if (s == RK_OK) *feature = f;
    return s == RK_OK ? s : rk_err_prefix(err, "model bundle %s", rk_model_dir(m));
}

rk_status rk_embsum_fill(rk_embsum_bundle *b, int feature, rk_text_encoder *enc, const rk_embsum_request *r,
                         rk_scorer *sc, rk_embsum_rank_info *info, rk_err *err) {
    rk_status s = rk_embsum_bundle_rank(b, enc, r, NULL, NULL, info, err);
    for (int i = 0; i < r->n_cand && s == RK_OK; i++)
        if ((s = rk_scorer_set_dense(sc, i, feature, b->score[i], err)) != RK_OK)
            rk_err_prefix(err, "candidates[%d]: the EmbSum score", i);
    return s;
}
