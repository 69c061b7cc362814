/*
 * rank/embsum_serve.c — one ranking request against an EmbSum bundle: the
 * request-time rules of serving (rank/embsum.h, rk_embsum_bundle_rank).
 *
 *   UPE: the stored row of the user; an unknown user with recent_item_ids
 *        the bundle knows gets a UPE computed now (their session texts
 *        from items.tsv, encoded, pooled, poly-attention: the offline path);
 *        otherwise the documented default, the mean of the stored UPEs.
 *   CPE: the stored row of each candidate (one batched store lookup); an
 *        ad the bundle does not know but sent with content_text gets its
 *        CPE now from the encoder's token states (the offline path), the
 *        deadline checked before each text; without text it is an error
 *        naming the candidate.
 *   pCTR = sigmoid(a · pool(UPE·CPEᵀ) + b); a non-finite score is an
 *        error, never a NaN answer.
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

/* CPE of candidate i: stored, else from content_text. */
static rk_status cpe_of(rk_embsum_bundle *b, rk_text_encoder *enc, const rk_embsum_request *r, int i, float *cpe,
                        float *tok, rk_err *err) {
    const rk_embsum_candidate *c = &r->cand[i];
    int64_t id;
    if (parse_id(c->ad_id, &id) && rk_embsum_find(b->item_id, b->n_items, id) >= 0)
        return rk_embsum_bundle_cpe(b, &id, 1, cpe, err);
    if (!c->content_len)
        return rk_fail(err, RK_ENOTFOUND, "candidates[%d].ad_id: '%.64s' is not in the bundle and has no content_text", i,
                       c->ad_id ? c->ad_id : "");
    if (c->content_len > RK_EMBSUM_MAX_TEXT_BYTES)
        return rk_fail(err, RK_EINVAL, "candidates[%d].content_text: %zu bytes, at most %d", i, c->content_len,
                       RK_EMBSUM_MAX_TEXT_BYTES);
    if (!enc) return rk_fail(err, RK_EINVAL, "candidates[%d].content_text: no text encoder to encode it", i);
    if (r->deadline > 0 && rk_now() > r->deadline)
        return rk_fail(err, RK_EDEADLINE, "candidates[%d].content_text: deadline exceeded before encoding", i);
    int32_t off[2];
    const char *t = c->content_text;
    rk_status s = rk_text_encoder_encode_tokens(enc, &t, &c->content_len, 1, b->e->cfg.item_tokens, tok,
                                                (size_t)b->e->cfg.item_tokens, off, err);
    if (s == RK_OK) {
        rk_l2_normalize(tok, off[1], b->e->d, 1e-12f);
        s = rk_embsum_cpe(b->e, tok, off[1], cpe, b->w, err);
    }
    return s == RK_OK ? s : rk_err_prefix(err, "candidates[%d].content_text", i);
}

rk_status rk_embsum_bundle_rank(rk_embsum_bundle *b, rk_text_encoder *enc, const rk_embsum_request *r, float *pctr,
                                rk_upe_source *src, rk_err *err) {
    const rk_embsum *e = b->e;
    const size_t md = (size_t)e->cfg.m * e->d, kd = (size_t)e->cfg.k * e->d;
    if (enc && rk_text_encoder_dim(enc) != e->d)
        return rk_fail(err, RK_ESHAPE, "encoder: dim %d, the bundle's is %d", rk_text_encoder_dim(enc), e->d);
    if (r->n_cand < 0) return rk_fail(err, RK_EINVAL, "candidates: negative count");
    float *upe = rk_malloc(md * sizeof(float)), *cpe = rk_malloc(kd * sizeof(float));
    float *tok = rk_malloc((size_t)e->cfg.item_tokens * e->d * sizeof(float));
    rk_status s = upe && cpe && tok ? RK_OK : rk_fail(err, RK_ENOMEM, "out of memory");
    int64_t uid;
    rk_upe_source from = RK_UPE_DEFAULT;
    if (s == RK_OK && parse_id(r->user_id, &uid)) {
        rk_err tmp = {0};
        rk_status g = rk_embsum_bundle_upe(b, uid, upe, &tmp);
        if (g == RK_OK) from = RK_UPE_STORED;
        else if (g != RK_ENOTFOUND) s = rk_fail(err, g, "user.user_id: %s", tmp.msg);
    }
    if (s == RK_OK && from == RK_UPE_DEFAULT) {
        int used = 0;
        s = upe_from_recent(b, enc, r, upe, &used, err);
        if (s == RK_OK && used) from = RK_UPE_RECENT;
        else if (s == RK_OK) memcpy(upe, b->default_upe, md * sizeof(float));
    }
    for (int i = 0; i < r->n_cand && s == RK_OK; i++) {
        if ((s = cpe_of(b, enc, r, i, cpe, tok, err)) != RK_OK) break;
        float y = rk_embsum_score(e, upe, cpe, b->w);
        pctr[i] = rk_embsum_pctr(e, y);
        if (!isfinite(y) || !isfinite(pctr[i]))
            s = rk_fail(err, RK_ENUMERIC, "candidates[%d]: the score is not finite", i);
    }
    if (src) *src = from;
    rk_free(upe), rk_free(cpe), rk_free(tok);
    return s;
}
