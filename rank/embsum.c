/*
 * rank/embsum.c — the EmbSum model (rank/embsum.h; papers.md §4, §6.6):
 * parameters, UPE / CPE forward passes, training by NCE with a hand-written
 * backward, calibration, ranking metrics.
 *
 * Forward for one user and one candidate:
 *   sess[ns,d]  session vectors;  gvec = Wg · mean(sess) + bg   (global user vector)
 *   H_u = [sess; gvec]            (without gvec when cfg.global = 0)
 *   UPE = poly_attention(H_u; Cu, Wau) · Puᵀ        [m, d]
 *   CPE = poly_attention(tok; Ci, Wai)              [k, d]
 *   y   = pool(UPE · CPEᵀ)        (nn/poly.c)
 *   pCTR = sigmoid(a y + b)
 * Training loss per positive with K negatives (scores y_0 .. y_K):
 *   L = -log softmax(s·y)_0 + λ (1 - cos(gvec, summary))
 * with s = nce_scale. Pu and Wg start as the identity, bg at 0, so an
 * untrained model already ranks by attention-weighted encoder similarity.
 * Adam (nn.h) on every parameter but the calibration, which is fitted
 * afterwards by Newton's method on the training pairs' BCE.
 */
#define _GNU_SOURCE
#include "rank.h"
#include "embed.h"
#include "embsum_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- config */

rk_status rk_embsum_cfg_check(const rk_embsum_cfg *c, rk_err *err) {
#define RANGE(f, lo, hi)                                                                       \
    if (!(c->f >= (lo) && c->f <= (hi)))                                                       \
        return rk_fail(err, RK_EINVAL, #f ": %g is outside %g..%g", (double)c->f, (double)(lo), (double)(hi));
    RANGE(m, 1, RK_EMBSUM_MAX_CODES);
    RANGE(k, 1, RK_EMBSUM_MAX_CODES);
    RANGE(dc, 1, 1024);
    RANGE(g, 1, 64);
    RANGE(p, 1, 64);
    RANGE(item_tokens, 2, 512);
    RANGE(tau, 1e-3, 1e3);
    RANGE(lambda, 0, 1e3);
    RANGE(negatives, 1, RK_EMBSUM_MAX_NEG);
    RANGE(epochs, 0, 1000);
    RANGE(batch, 1, 1 << 20);
    RANGE(lr, 1e-7, 1);
    RANGE(nce_scale, 1e-3, 1e3);
    RANGE(max_pos_per_user, 1, 1 << 30);
#undef RANGE
    if (c->pool != RK_MATCH_SOFTMAX && c->pool != RK_MATCH_MAX && c->pool != RK_MATCH_MEAN)
        return rk_fail(err, RK_EINVAL, "pool: unknown value %d", (int)c->pool);
    if (c->session_pool != RK_SESSION_MEAN && c->session_pool != RK_SESSION_FIRST)
        return rk_fail(err, RK_EINVAL, "session_pool: unknown value %d", (int)c->session_pool);
    return RK_OK;
}

const char *rk_match_pool_name(rk_match_pool p) { return p == RK_MATCH_MAX ? "max" : p == RK_MATCH_MEAN ? "mean" : "softmax"; }
rk_status rk_match_pool_parse(const char *s, rk_match_pool *out, rk_err *err) {
    if (!strcmp(s, "softmax")) *out = RK_MATCH_SOFTMAX;
    else if (!strcmp(s, "max")) *out = RK_MATCH_MAX;
    else if (!strcmp(s, "mean")) *out = RK_MATCH_MEAN;
    else return rk_fail(err, RK_EINVAL, "pool: '%s' is not softmax, max or mean", s);
    return RK_OK;
}
const char *rk_session_pool_name(rk_session_pool p) { return p == RK_SESSION_FIRST ? "first" : "mean"; }
rk_status rk_session_pool_parse(const char *s, rk_session_pool *out, rk_err *err) {
    if (!strcmp(s, "mean")) *out = RK_SESSION_MEAN;
    else if (!strcmp(s, "first")) *out = RK_SESSION_FIRST;
    else return rk_fail(err, RK_EINVAL, "session_pool: '%s' is not mean or first", s);
    return RK_OK;
}

/* ---------------------------------------------------------------- parameters */

void rk_embsum_point(const rk_embsum_cfg *c, int d, float *base, rk_embsum_ptrs *p, size_t *n_floats) {
    size_t o = 0;
#define TAKE(f, n) p->f = base ? base + o : NULL, o += (size_t)(n)
    TAKE(Cu, c->m * c->dc);
    TAKE(Wau, (size_t)d * c->dc);
    TAKE(Ci, c->k * c->dc);
    TAKE(Wai, (size_t)d * c->dc);
    TAKE(Pu, (size_t)d * d);
    TAKE(Wg, (size_t)d * d);
    TAKE(bg, d);
    TAKE(cal, 2);
#undef TAKE
    *n_floats = o;
}

rk_status rk_embsum_create(const rk_embsum_cfg *c, int d, rk_embsum **out, rk_err *err) {
    *out = NULL;
    rk_status s = rk_embsum_cfg_check(c, err);
    if (s != RK_OK) return s;
    if (d < 1 || d > 4096) return rk_fail(err, RK_EINVAL, "dim: %d is outside 1..4096", d);
    rk_embsum *e = rk_calloc(1, sizeof *e);
    if (!e) return rk_fail(err, RK_ENOMEM, "embsum: out of memory");
    e->cfg = *c;
    e->d = d;
    rk_embsum_point(c, d, NULL, &e->p, &e->n_floats);
    e->params = rk_calloc(e->n_floats, sizeof(float));
    if (!e->params) {
        rk_free(e);
        return rk_fail(err, RK_ENOMEM, "embsum: out of memory");
    }
    rk_embsum_point(c, d, e->params, &e->p, &e->n_floats);
    rk_rng r;
    rk_rng_seed(&r, c->seed);
    const double sc = 1.0 / sqrt((double)c->dc), sd = 1.0 / sqrt((double)d);
    for (int i = 0; i < c->m * c->dc; i++) e->p.Cu[i] = (float)(rk_rng_normal(&r) * sc);
    for (size_t i = 0; i < (size_t)d * c->dc; i++) e->p.Wau[i] = (float)(rk_rng_normal(&r) * sd);
    for (int i = 0; i < c->k * c->dc; i++) e->p.Ci[i] = (float)(rk_rng_normal(&r) * sc);
    for (size_t i = 0; i < (size_t)d * c->dc; i++) e->p.Wai[i] = (float)(rk_rng_normal(&r) * sd);
    for (int i = 0; i < d; i++) e->p.Pu[(size_t)i * d + i] = e->p.Wg[(size_t)i * d + i] = 1.0f;
    e->p.cal[0] = 1.0f;
    *out = e;
    return RK_OK;
}

void rk_embsum_destroy(rk_embsum *e) {
    if (!e) return;
    rk_free(e->params);
    rk_free(e);
}
const rk_embsum_cfg *rk_embsum_config(const rk_embsum *e) { return &e->cfg; }
int rk_embsum_dim(const rk_embsum *e) { return e->d; }

rk_status rk_embsum_work_create(const rk_embsum *e, int max_n, rk_embsum_work **out, rk_err *err) {
    *out = NULL;
    rk_embsum_work *w = rk_calloc(1, sizeof *w);
    if (!w) return rk_fail(err, RK_ENOMEM, "embsum work: out of memory");
    const int M = RK_EMBSUM_MAX_CODES, D = e->d;
    if (max_n < e->cfg.g + 1) max_n = e->cfg.g + 1;
    w->max_n = max_n, w->d = D;
    w->H = rk_malloc((size_t)max_n * D * sizeof(float));
    w->E = rk_malloc((size_t)M * D * sizeof(float));
    w->A = rk_malloc((size_t)M * max_n * sizeof(float));
    w->Z = rk_malloc((size_t)max_n * e->cfg.dc * sizeof(float));
    w->S = rk_malloc((size_t)M * M * sizeof(float));
    w->W = rk_malloc((size_t)M * M * sizeof(float));
    if (!w->H || !w->E || !w->A || !w->Z || !w->S || !w->W) {
        rk_embsum_work_destroy(w);
        return rk_fail(err, RK_ENOMEM, "embsum work: out of memory");
    }
    *out = w;
    return RK_OK;
}

void rk_embsum_work_destroy(rk_embsum_work *w) {
    if (!w) return;
    rk_free(w->H), rk_free(w->E), rk_free(w->A), rk_free(w->Z), rk_free(w->S), rk_free(w->W);
    rk_free(w);
}

/* ---------------------------------------------------------------- forward */

/* H_u = [sess; gvec] into H[n,d]; returns n. mean[d] receives mean(sess). */
static int user_inputs(const rk_embsum *e, const float *sess, int ns, float *H, float *mean) {
    const int D = e->d;
    memcpy(H, sess, (size_t)ns * D * sizeof(float));
    if (!e->cfg.global) return ns;
    int32_t off[2] = {0, ns};
    rk_mean_pool_forward(mean, sess, off, 1, D);
    rk_linear_forward(H + (size_t)ns * D, mean, e->p.Wg, e->p.bg, 1, D, D);
    return ns + 1;
}

rk_status rk_embsum_upe(const rk_embsum *e, const float *sess, int ns, float *upe, rk_embsum_work *w, rk_err *err) {
    if (ns < 1) return rk_fail(err, RK_EINVAL, "history: no sessions");
    if (ns + 1 > w->max_n) return rk_fail(err, RK_ETOOBIG, "history: %d sessions, at most %d", ns, w->max_n - 1);
    const int D = e->d;
    float mean[4096];
    int n = user_inputs(e, sess, ns, w->H, mean);
    rk_poly_attention_forward(w->E, w->A, w->Z, w->H, e->p.Cu, e->p.Wau, n, D, e->cfg.m, e->cfg.dc);
    rk_linear_forward(upe, w->E, e->p.Pu, NULL, e->cfg.m, D, D);
    return RK_OK;
}

rk_status rk_embsum_cpe(const rk_embsum *e, const float *tok, int nt, float *cpe, rk_embsum_work *w, rk_err *err) {
    if (nt < 1) return rk_fail(err, RK_EINVAL, "content: no tokens");
    if (nt > w->max_n) return rk_fail(err, RK_ETOOBIG, "content: %d tokens, at most %d", nt, w->max_n);
    rk_poly_attention_forward(cpe, w->A, w->Z, tok, e->p.Ci, e->p.Wai, nt, e->d, e->cfg.k, e->cfg.dc);
    return RK_OK;
}

float rk_embsum_score(const rk_embsum *e, const float *upe, const float *cpe, rk_embsum_work *w) {
    return rk_match_forward(w->S, w->W, upe, cpe, e->cfg.m, e->cfg.k, e->d, e->cfg.pool, e->cfg.tau);
}

float rk_embsum_pctr(const rk_embsum *e, float score) { return rk_sigmoid(e->p.cal[0] * score + e->p.cal[1]); }

/* ---------------------------------------------------------------- encoder inputs */

rk_status rk_embsum_item_states(rk_text_encoder *enc, const char *const *texts, int n, int item_tokens, float *states,
                                int32_t *offsets, rk_err *err) {
    const int D = rk_text_encoder_dim(enc);
    rk_status s = rk_text_encoder_encode_tokens(enc, texts, NULL, n, item_tokens, states, (size_t)n * item_tokens,
                                                offsets, err);
    if (s != RK_OK) return s;
    rk_l2_normalize(states, offsets[n], D, 1e-12f);
    return RK_OK;
}

rk_status rk_embsum_session_vectors(rk_text_encoder *enc, const char *const *texts, int n, float *first, float *mean,
                                    rk_err *err) {
    const int D = rk_text_encoder_dim(enc), L = rk_text_encoder_max_len(enc);
    float *st = rk_malloc((size_t)L * D * sizeof(float));
    if (!st) return rk_fail(err, RK_ENOMEM, "session vectors: out of memory");
    rk_status s = RK_OK;
    for (int i = 0; i < n && s == RK_OK; i++) { /* one text at a time: a session is up to L tokens */
        int32_t off[2];
        s = rk_text_encoder_encode_tokens(enc, texts + i, NULL, 1, 0, st, (size_t)L, off, err);
        if (s != RK_OK) {
            rk_err_prefix(err, "session %d", i);
            break;
        }
        if (first) {
            memcpy(first + (size_t)i * D, st, (size_t)D * sizeof(float));
            rk_l2_normalize(first + (size_t)i * D, 1, D, 1e-12f);
        }
        if (mean) {
            rk_mean_pool_forward(mean + (size_t)i * D, st, off, 1, D);
            rk_l2_normalize(mean + (size_t)i * D, 1, D, 1e-12f);
        }
    }
    rk_free(st);
    return s;
}

/* ---------------------------------------------------------------- metrics */

typedef struct {
    float y;
    uint8_t lab;
} scored;

static int cmp_scored_desc(const void *a, const void *b) {
    float x = ((const scored *)a)->y, y = ((const scored *)b)->y;
    return (x < y) - (x > y);
}

/* MIND's evaluation (its scoring script): AUC of the impression (ties half),
 * MRR = Σ_pos 1/rank / #pos, nDCG@k = DCG@k / ideal DCG@k with gain 2^y - 1
 * and discount log2(rank + 1). */
void rk_rank_metrics_add(const float *y, const uint8_t *lab, int n, double *auc, double *mrr, double *ndcg5,
                         double *ndcg10) {
    scored *v = rk_malloc((size_t)n * sizeof *v);
    RK_ASSERT(v);
    int np = 0;
    for (int i = 0; i < n; i++) v[i] = (scored){y[i], lab[i]}, np += lab[i];
    qsort(v, (size_t)n, sizeof *v, cmp_scored_desc);
    /* AUC: pairs (pos, neg) with pos above, ties half; walk groups of equal score */
    double wins = 0, negs_below = 0;
    for (int i = n; i > 0;) {
        int j = i;
        while (j > 0 && v[j - 1].y == v[i - 1].y) j--;
        int gp = 0, gn = 0;
        for (int t = j; t < i; t++) gp += v[t].lab, gn += !v[t].lab;
        wins += gp * negs_below + 0.5 * gp * gn;
        negs_below += gn;
        i = j;
    }
    int nn = n - np;
    *auc = np && nn ? wins / ((double)np * nn) : 0.5;
    double rr = 0, dcg5 = 0, dcg10 = 0, i5 = 0, i10 = 0;
    for (int r = 0; r < n; r++) {
        if (v[r].lab) rr += 1.0 / (r + 1);
        double disc = 1.0 / log2(r + 2.0);
        if (r < 5) dcg5 += v[r].lab * disc, i5 += (r < np) * disc;
        if (r < 10) dcg10 += v[r].lab * disc, i10 += (r < np) * disc;
    }
    *mrr = np ? rr / np : 0;
    *ndcg5 = i5 > 0 ? dcg5 / i5 : 0;
    *ndcg10 = i10 > 0 ? dcg10 / i10 : 0;
    rk_free(v);
}

/* A user spans several genres when no single genre covers half of their history. */
static int multi_genre(const rk_embsum_data *d, int s, int u) {
    const rk_embsum_split *x = &d->sp[s];
    int L = x->hist_off[u + 1] - x->hist_off[u], best = 0;
    for (int g = 0; g < d->n_genres; g++) {
        int c = 0;
        for (int i = 0; i < L; i++) c += (d->item_genres[x->hist[x->hist_off[u] + i]] >> g) & 1;
        if (c > best) best = c;
    }
    return L > 0 && 2 * best < L;
}

typedef float (*score_fn)(void *ctx, int u, int item);

/* Metrics of split s with score(ctx, user, item). */
static rk_status eval_split(const rk_embsum_data *d, int s, score_fn fn, void *ctx, rk_rank_metrics *out, rk_err *err) {
    const rk_embsum_split *x = &d->sp[s];
    memset(out, 0, sizeof *out);
    size_t np_all = (size_t)x->pos_off[d->n_users], rows = np_all * (1 + RK_EMBSUM_EVAL_NEG);
    float *pool_y = rk_malloc((rows + 1) * sizeof(float));
    float *lab_f = rk_malloc((rows + 1) * sizeof(float));
    uint8_t *lab = rk_malloc(rows + 1);
    if (!pool_y || !lab || !lab_f) {
        rk_free(pool_y), rk_free(lab), rk_free(lab_f);
        return rk_fail(err, RK_ENOMEM, "evaluation: out of memory");
    }
    size_t o = 0;
    int n_single = 0;
    for (int u = 0; u < d->n_users; u++) {
        int np = x->pos_off[u + 1] - x->pos_off[u];
        if (!np) continue;
        int n = np * (1 + RK_EMBSUM_EVAL_NEG);
        for (int i = 0; i < n; i++) {
            int item = i < np ? x->pos[x->pos_off[u] + i] : x->neg[(size_t)x->pos_off[u] * RK_EMBSUM_EVAL_NEG + i - np];
            pool_y[o + i] = fn(ctx, u, item);
            lab[o + i] = i < np;
            lab_f[o + i] = (float)(i < np);
        }
        double auc, mrr, n5, n10;
        rk_rank_metrics_add(pool_y + o, lab + o, n, &auc, &mrr, &n5, &n10);
        out->n_impressions++;
        out->auc += auc, out->mrr += mrr, out->ndcg5 += n5, out->ndcg10 += n10;
        if (multi_genre(d, s, u)) out->n_multi++, out->auc_multi += auc, out->ndcg10_multi += n10;
        else n_single++, out->auc_single_genre += auc;
        o += (size_t)n;
    }
    if (out->n_impressions) {
        double k = out->n_impressions;
        out->auc /= k, out->mrr /= k, out->ndcg5 /= k, out->ndcg10 /= k;
    }
    if (out->n_multi) out->auc_multi /= out->n_multi, out->ndcg10_multi /= out->n_multi;
    if (n_single) out->auc_single_genre /= n_single;
    /* pooled AUC through rank's metrics (scores squashed to (0,1) monotonically) */
    for (size_t i = 0; i < o; i++) pool_y[i] = 0.5f + atanf(pool_y[i]) / 3.2f;
    rk_metrics m;
    rk_status st = o ? rk_metrics_compute(pool_y, lab_f, o, &m, err) : RK_OK;
    out->pooled_auc = o && st == RK_OK ? m.auc : NAN;
    rk_free(pool_y), rk_free(lab), rk_free(lab_f);
    return st;
}

/* ---------------------------------------------------------------- evaluation of a model */

typedef struct {
    const rk_embsum *e;
    const rk_embsum_data *d;
    int split;
    float *cpe;     /* [n_items, k*d] */
    float *upe;     /* [n_users, m*d] */
    uint8_t *has_upe;
    rk_embsum_work *w;
} model_eval;

static float model_score(void *ctx, int u, int item) {
    model_eval *me = ctx;
    const rk_embsum *e = me->e;
    return rk_embsum_score(e, me->upe + (size_t)u * e->cfg.m * e->d, me->cpe + (size_t)item * e->cfg.k * e->d, me->w);
}

static int max_item_tokens(const rk_embsum_data *d) {
    int mx = 1;
    for (int i = 0; i < d->n_items; i++)
        if (d->tok_off[i + 1] - d->tok_off[i] > mx) mx = d->tok_off[i + 1] - d->tok_off[i];
    return mx;
}

/* CPE of every item and UPE of every user with a history in split s. */
static rk_status precompute(model_eval *me, double *cpe_s, double *upe_s, int *n_upe, rk_err *err) {
    const rk_embsum *e = me->e;
    const rk_embsum_data *d = me->d;
    const size_t kd = (size_t)e->cfg.k * e->d, md = (size_t)e->cfg.m * e->d;
    me->cpe = rk_malloc((size_t)d->n_items * kd * sizeof(float));
    me->upe = rk_malloc((size_t)d->n_users * md * sizeof(float));
    me->has_upe = rk_calloc((size_t)d->n_users, 1);
    if (!me->cpe || !me->upe || !me->has_upe) return rk_fail(err, RK_ENOMEM, "precompute: out of memory");
    rk_status s = rk_embsum_work_create(e, max_item_tokens(d), &me->w, err);
    if (s != RK_OK) return s;
    double t0 = rk_now();
    for (int i = 0; i < d->n_items && s == RK_OK; i++)
        s = rk_embsum_cpe(e, d->tok + (size_t)d->tok_off[i] * d->d, d->tok_off[i + 1] - d->tok_off[i],
                          me->cpe + (size_t)i * kd, me->w, err);
    double t1 = rk_now();
    int nu = 0;
    for (int u = 0; u < d->n_users && s == RK_OK; u++) {
        int ns;
        const float *sess = rk_embsum_sessions(d, me->split, u, e->cfg.session_pool, &ns);
        if (!ns) continue;
        s = rk_embsum_upe(e, sess, ns, me->upe + (size_t)u * md, me->w, err);
        me->has_upe[u] = 1;
        nu++;
    }
    double t2 = rk_now();
    if (cpe_s) *cpe_s = d->n_items / fmax(t1 - t0, 1e-9);
    if (upe_s) *upe_s = nu / fmax(t2 - t1, 1e-9);
    if (n_upe) *n_upe = nu;
    return s;
}

static void model_eval_free(model_eval *me) {
    rk_free(me->cpe), rk_free(me->upe), rk_free(me->has_upe);
    rk_embsum_work_destroy(me->w);
}

rk_status rk_embsum_evaluate(const rk_embsum *e, const rk_embsum_data *d, int split, rk_rank_metrics *out, rk_err *err) {
    model_eval me = {e, d, split, NULL, NULL, NULL, NULL};
    rk_status s = precompute(&me, NULL, NULL, NULL, err);
    if (s == RK_OK) s = eval_split(d, split, model_score, &me, out, err);
    model_eval_free(&me);
    return s;
}

rk_status rk_embsum_score_impressions(const rk_embsum *e, const rk_embsum_data *d, float *score, size_t n, rk_err *err) {
    if (n != rk_embsum_data_n_impression_rows(d)) return rk_fail(err, RK_EINVAL, "impressions: %zu scores for %zu rows", n, rk_embsum_data_n_impression_rows(d));
    size_t o = 0;
    for (int s = RK_SPLIT_VALID; s <= RK_SPLIT_TEST; s++) {
        model_eval me = {e, d, s, NULL, NULL, NULL, NULL};
        rk_status st = precompute(&me, NULL, NULL, NULL, err);
        const rk_embsum_split *x = &d->sp[s];
        for (int u = 0; st == RK_OK && u < d->n_users; u++) {
            int np = x->pos_off[u + 1] - x->pos_off[u];
            for (int i = 0; i < np * (1 + RK_EMBSUM_EVAL_NEG); i++)
                score[o++] = model_score(&me, u, i < np ? x->pos[x->pos_off[u] + i]
                                                        : x->neg[(size_t)x->pos_off[u] * RK_EMBSUM_EVAL_NEG + i - np]);
        }
        model_eval_free(&me);
        if (st != RK_OK) return st;
    }
    return RK_OK;
}

/* Baseline (c): mean of the history's sentence vectors · the candidate's. */
typedef struct {
    const rk_embsum_data *d;
    int split;
    float *uvec;
} mean_eval;

static float mean_score(void *ctx, int u, int item) {
    mean_eval *me = ctx;
    const int D = me->d->d;
    const float *a = me->uvec + (size_t)u * D, *b = me->d->item_vec + (size_t)item * D;
    double s = 0;
    for (int j = 0; j < D; j++) s += (double)a[j] * b[j];
    return (float)s;
}

rk_status rk_embsum_eval_meanpool(const rk_embsum_data *d, int split, rk_rank_metrics *out, rk_err *err) {
    const int D = d->d;
    const rk_embsum_split *x = &d->sp[split];
    mean_eval me = {d, split, rk_calloc((size_t)d->n_users * D, sizeof(float))};
    if (!me.uvec) return rk_fail(err, RK_ENOMEM, "meanpool: out of memory");
    for (int u = 0; u < d->n_users; u++) {
        int L = x->hist_off[u + 1] - x->hist_off[u];
        for (int i = 0; i < L; i++) {
            const float *v = d->item_vec + (size_t)x->hist[x->hist_off[u] + i] * D;
            for (int j = 0; j < D; j++) me.uvec[(size_t)u * D + j] += v[j] / L;
        }
    }
    rk_status s = eval_split(d, split, mean_score, &me, out, err);
    rk_free(me.uvec);
    return s;
}

/* ---------------------------------------------------------------- training */

typedef struct {
    int max_nt, K;
    rk_embsum_work *w;       /* forward scratch (user side) */
    float *grad, *am, *av;   /* gradients and Adam state, n_floats each */
    rk_embsum_ptrs g;
    /* user side */
    float *Hu, *Eu, *Au, *Zu, *upe, *dupe, *dEu, *dHu, *mean;
    /* candidates */
    float *cpe, *Ai, *Zi, *S, *W, *dcpe;
    float y[RK_EMBSUM_MAX_NEG + 1];
    float *scratch, *dS;
    float *mem;
} trainer;

static rk_status trainer_init(trainer *t, const rk_embsum *e, int max_nt, rk_err *err) {
    const int D = e->d, M = e->cfg.m, K = e->cfg.k, DC = e->cfg.dc, C = e->cfg.negatives + 1, NU = e->cfg.g + 1;
    const int NMAX = max_nt > NU ? max_nt : NU;
    t->max_nt = max_nt, t->K = e->cfg.negatives;
    size_t need = 3 * e->n_floats + (size_t)NU * D * 2 + (size_t)M * D * 4 + (size_t)M * NU + (size_t)NU * DC + D +
                  (size_t)C * (K * D * 2 + (size_t)K * max_nt + (size_t)max_nt * DC + 2 * M * K) +
                  (size_t)RK_EMBSUM_MAX_CODES * NMAX + (size_t)NMAX * DC + (size_t)M * K;
    t->mem = rk_calloc(need, sizeof(float));
    if (!t->mem) return rk_fail(err, RK_ENOMEM, "embsum training: out of memory");
    float *p = t->mem;
#define GIVE(f, n) t->f = p, p += (n)
    GIVE(grad, e->n_floats);
    GIVE(am, e->n_floats);
    GIVE(av, e->n_floats);
    GIVE(Hu, (size_t)NU * D);
    GIVE(dHu, (size_t)NU * D);
    GIVE(Eu, (size_t)M * D);
    GIVE(upe, (size_t)M * D);
    GIVE(dupe, (size_t)M * D);
    GIVE(dEu, (size_t)M * D);
    GIVE(Au, (size_t)M * NU);
    GIVE(Zu, (size_t)NU * DC);
    GIVE(mean, D);
    GIVE(cpe, (size_t)C * K * D);
    GIVE(dcpe, (size_t)C * K * D);
    GIVE(Ai, (size_t)C * K * max_nt);
    GIVE(Zi, (size_t)C * max_nt * DC);
    GIVE(S, (size_t)C * M * K);
    GIVE(W, (size_t)C * M * K);
    GIVE(scratch, (size_t)RK_EMBSUM_MAX_CODES * NMAX + (size_t)NMAX * DC);
    GIVE(dS, (size_t)M * K);
#undef GIVE
    size_t nf;
    rk_embsum_point(&e->cfg, D, t->grad, &t->g, &nf);
    return RK_OK;
}

/* One example: user u (sessions sess[ns]), candidates items[0..C) (0 = the
 * positive). Accumulates gradients; returns the loss. */
static double train_example(trainer *t, const rk_embsum *e, const rk_embsum_data *d, const float *sess, int ns,
                            const float *summary, const int32_t *items, int C) {
    const int D = e->d, M = e->cfg.m, K = e->cfg.k, DC = e->cfg.dc;
    const rk_embsum_cfg *c = &e->cfg;
    /* user forward */
    int n = user_inputs(e, sess, ns, t->Hu, t->mean);
    rk_poly_attention_forward(t->Eu, t->Au, t->Zu, t->Hu, e->p.Cu, e->p.Wau, n, D, M, DC);
    rk_linear_forward(t->upe, t->Eu, e->p.Pu, NULL, M, D, D);
    /* candidates forward */
    double mx = -INFINITY;
    for (int j = 0; j < C; j++) {
        const float *tok = d->tok + (size_t)d->tok_off[items[j]] * D;
        int nt = d->tok_off[items[j] + 1] - d->tok_off[items[j]];
        rk_poly_attention_forward(t->cpe + (size_t)j * K * D, t->Ai + (size_t)j * K * t->max_nt,
                                  t->Zi + (size_t)j * t->max_nt * DC, tok, e->p.Ci, e->p.Wai, nt, D, K, DC);
        t->y[j] = rk_match_forward(t->S + (size_t)j * M * K, t->W + (size_t)j * M * K, t->upe,
                                   t->cpe + (size_t)j * K * D, M, K, D, c->pool, c->tau);
        if (c->nce_scale * t->y[j] > mx) mx = c->nce_scale * t->y[j];
    }
    double z = 0;
    for (int j = 0; j < C; j++) z += exp(c->nce_scale * t->y[j] - mx);
    double loss = -(c->nce_scale * t->y[0] - mx - log(z));
    /* backward: dL/dy_j = s (softmax_j - [j == 0]) */
    memset(t->dupe, 0, (size_t)M * D * sizeof(float));
    for (int j = 0; j < C; j++) {
        float dy = (float)(c->nce_scale * (exp(c->nce_scale * t->y[j] - mx) / z - (j == 0)));
        float *dc = t->dcpe + (size_t)j * K * D;
        memset(dc, 0, (size_t)K * D * sizeof(float));
        rk_match_backward(t->dupe, dc, dy, t->y[j], t->S + (size_t)j * M * K, t->W + (size_t)j * M * K, t->upe,
                          t->cpe + (size_t)j * K * D, M, K, D, c->pool, c->tau, t->dS);
        const float *tok = d->tok + (size_t)d->tok_off[items[j]] * D;
        int nt = d->tok_off[items[j] + 1] - d->tok_off[items[j]];
        rk_poly_attention_backward(NULL, t->g.Ci, t->g.Wai, dc, tok, e->p.Ci, e->p.Wai, t->Ai + (size_t)j * K * t->max_nt,
                                   t->Zi + (size_t)j * t->max_nt * DC, nt, D, K, DC, t->scratch);
    }
    rk_linear_backward(t->dEu, t->g.Pu, NULL, t->dupe, t->Eu, e->p.Pu, M, D, D);
    rk_poly_attention_backward(c->global ? t->dHu : NULL, t->g.Cu, t->g.Wau, t->dEu, t->Hu, e->p.Cu, e->p.Wau, t->Au,
                               t->Zu, n, D, M, DC, t->scratch);
    if (!c->global) return loss;
    float *dg = t->dHu + (size_t)ns * D;
    const float *gv = t->Hu + (size_t)ns * D;
    if (summary && c->lambda > 0) { /* λ (1 - cos(g, s)) */
        double gg = 0, ss = 0, gs = 0;
        for (int j = 0; j < D; j++) gg += (double)gv[j] * gv[j], ss += (double)summary[j] * summary[j], gs += (double)gv[j] * summary[j];
        double ng = sqrt(fmax(gg, 1e-24)), nsm = sqrt(fmax(ss, 1e-24)), cs = gs / (ng * nsm);
        loss += c->lambda * (1 - cs);
        for (int j = 0; j < D; j++) dg[j] -= (float)(c->lambda * (summary[j] / (ng * nsm) - cs * gv[j] / gg));
    }
    rk_linear_backward(NULL, t->g.Wg, t->g.bg, dg, t->mean, e->p.Wg, 1, D, D);
    return loss;
}

static int32_t sample_neg(const rk_embsum_data *d, int u, rk_rng *r, const int32_t *taken, int n_taken) {
    for (;;) {
        int32_t it = (int32_t)rk_rng_below(r, (uint64_t)d->n_items);
        const int32_t *rt = d->rated + d->rated_off[u];
        int lo = 0, hi = d->rated_off[u + 1] - d->rated_off[u] - 1, dup = 0;
        while (lo <= hi && !dup) {
            int mid = (lo + hi) / 2;
            if (rt[mid] == it) dup = 1;
            else if (rt[mid] < it) lo = mid + 1;
            else hi = mid - 1;
        }
        for (int j = 0; j < n_taken && !dup; j++) dup = taken[j] == it;
        if (!dup) return it;
    }
}

typedef struct {
    int32_t u, pos;
} example;

/* This epoch's examples: per user at most max_pos_per_user positives (a
 * seeded sample), then a seeded shuffle. */
static size_t epoch_examples(const rk_embsum_data *d, const rk_embsum_cfg *c, rk_rng *r, example *ex) {
    const rk_embsum_split *x = &d->sp[RK_SPLIT_TRAIN];
    size_t n = 0;
    for (int u = 0; u < d->n_users; u++) {
        int np = x->pos_off[u + 1] - x->pos_off[u];
        size_t first = n;
        for (int i = 0; i < np; i++) {
            if (n - first < (size_t)c->max_pos_per_user) ex[n++] = (example){u, x->pos[x->pos_off[u] + i]};
            else { /* reservoir sampling */
                uint64_t j = rk_rng_below(r, (uint64_t)i + 1);
                if (j < (uint64_t)c->max_pos_per_user) ex[first + j] = (example){u, x->pos[x->pos_off[u] + i]};
            }
        }
    }
    for (size_t i = n; i > 1; i--) {
        size_t j = rk_rng_below(r, i);
        example tmp = ex[i - 1];
        ex[i - 1] = ex[j], ex[j] = tmp;
    }
    return n;
}

/* Calibration: a, b minimizing the summed BCE of sigmoid(a y + b) on scored
 * pairs + (a² + b²)/2 (a ridge that keeps a finite when the pairs are
 * separable; negligible beside thousands of pairs), Newton in float64. */
static void fit_calibration(float *cal, const float *y, const uint8_t *lab, size_t n) {
    double a = 1, b = 0;
    for (int it = 0; it < 50; it++) {
        double ga = a, gb = b, haa = 1, hab = 0, hbb = 1;
        for (size_t i = 0; i < n; i++) {
            double p = 1 / (1 + exp(-(a * y[i] + b))), r = p - lab[i], w = p * (1 - p);
            ga += r * y[i], gb += r;
            haa += w * y[i] * y[i], hab += w * y[i], hbb += w;
        }
        double det = haa * hbb - hab * hab;
        if (!(det > 0)) break;
        double da = (hbb * ga - hab * gb) / det, db = (haa * gb - hab * ga) / det;
        a -= da, b -= db;
        if (fabs(da) + fabs(db) < 1e-10) break;
    }
    cal[0] = (float)a, cal[1] = (float)b;
}

static rk_status calibrate(rk_embsum *e, const rk_embsum_data *d, rk_rng *r, rk_err *err) {
    const rk_embsum_split *x = &d->sp[RK_SPLIT_TRAIN];
    const int C = e->cfg.negatives + 1;
    size_t n = (size_t)x->pos_off[d->n_users] * C;
    float *y = rk_malloc((n + 1) * sizeof *y);
    uint8_t *lab = rk_malloc(n + 1);
    model_eval me = {e, d, RK_SPLIT_TRAIN, NULL, NULL, NULL, NULL};
    rk_status s = y && lab ? precompute(&me, NULL, NULL, NULL, err) : rk_fail(err, RK_ENOMEM, "calibration: out of memory");
    size_t o = 0;
    for (int u = 0; s == RK_OK && u < d->n_users; u++)
        for (int i = x->pos_off[u]; i < x->pos_off[u + 1]; i++) {
            int32_t taken[RK_EMBSUM_MAX_NEG + 1];
            taken[0] = x->pos[i];
            for (int j = 1; j < C; j++) taken[j] = sample_neg(d, u, r, taken, j);
            for (int j = 0; j < C; j++) y[o] = model_score(&me, u, taken[j]), lab[o++] = j == 0;
        }
    if (s == RK_OK) fit_calibration(e->p.cal, y, lab, o);
    model_eval_free(&me);
    rk_free(y), rk_free(lab);
    return s;
}

rk_status rk_embsum_train(const rk_embsum_cfg *c, const rk_embsum_data *d, int quiet, rk_embsum **out,
                          rk_embsum_report *rep, rk_err *err) {
    *out = NULL;
    memset(rep, 0, sizeof *rep);
    rk_embsum *e;
    rk_status s = rk_embsum_create(c, d->d, &e, err);
    if (s != RK_OK) return s;
    trainer t = {0};
    const rk_embsum_split *x = &d->sp[RK_SPLIT_TRAIN];
    example *ex = rk_malloc(((size_t)x->pos_off[d->n_users] + 1) * sizeof *ex);
    if (!ex) s = rk_fail(err, RK_ENOMEM, "embsum training: out of memory");
    if (s == RK_OK) s = trainer_init(&t, e, max_item_tokens(d), err);
    rk_rng r;
    rk_rng_seed(&r, c->seed ^ 0x9e3779b97f4a7c15ull);
    double t0 = rk_now(), loss_sum = 0;
    long step = 0;
    size_t done = 0;
    for (int ep = 0; s == RK_OK && ep < c->epochs; ep++) {
        size_t n = epoch_examples(d, c, &r, ex);
        rk_progress pr;
        char label[64];
        snprintf(label, sizeof label, "embsum epoch %d/%d", ep + 1, c->epochs);
        if (!quiet) rk_progress_start(&pr, label, "ex", n);
        loss_sum = 0;
        for (size_t b0 = 0; b0 < n; b0 += (size_t)c->batch) {
            size_t b1 = b0 + (size_t)c->batch < n ? b0 + (size_t)c->batch : n;
            memset(t.grad, 0, e->n_floats * sizeof(float));
            for (size_t i = b0; i < b1; i++) {
                int32_t items[RK_EMBSUM_MAX_NEG + 1];
                items[0] = ex[i].pos;
                for (int j = 1; j <= c->negatives; j++) items[j] = sample_neg(d, ex[i].u, &r, items, j);
                int ns;
                const float *sess = rk_embsum_sessions(d, RK_SPLIT_TRAIN, ex[i].u, c->session_pool, &ns);
                const float *sum = d->summary && d->has_summary[ex[i].u] ? d->summary + (size_t)ex[i].u * d->d : NULL;
                loss_sum += train_example(&t, e, d, sess, ns, sum, items, c->negatives + 1);
            }
            const float inv = 1.0f / (float)(b1 - b0);
            for (size_t i = 0; i < e->n_floats; i++) t.grad[i] *= inv;
            t.g.cal[0] = t.g.cal[1] = 0;
            rk_adam_step(e->params, t.grad, t.am, t.av, e->n_floats, c->lr, 0.9f, 0.999f, 1e-8f, ++step);
            if (!quiet) rk_progress_add(&pr, b1 - b0);
        }
        if (!quiet) rk_progress_finish(&pr);
        done += n;
        rep->epochs_run = ep + 1;
        rep->final_loss = n ? loss_sum / n : 0;
        if (!isfinite(rep->final_loss)) s = rk_fail(err, RK_ENUMERIC, "embsum training: loss is not finite at epoch %d", ep + 1);
    }
    rep->train_s = rk_now() - t0;
    rep->n_train_examples = (int)done;
    rep->examples_per_s = done / fmax(rep->train_s, 1e-9);
    if (s == RK_OK) s = calibrate(e, d, &r, err);
    if (s == RK_OK) s = rk_embsum_evaluate(e, d, RK_SPLIT_VALID, &rep->valid, err);
    if (s == RK_OK) s = rk_embsum_evaluate(e, d, RK_SPLIT_TEST, &rep->test, err);
    rk_free(t.mem);
    rk_embsum_work_destroy(t.w);
    rk_free(ex);
    if (s != RK_OK) {
        rk_embsum_destroy(e);
        return s;
    }
    *out = e;
    return RK_OK;
}

rk_status rk_embsum_score_pairs(const rk_embsum *e, const rk_embsum_data *d, const int *split, const int64_t *user,
                                const int64_t *item, size_t n, float *score, rk_err *err) {
    model_eval me[3] = {{e, d, 0, NULL, NULL, NULL, NULL}, {e, d, 1, NULL, NULL, NULL, NULL}, {e, d, 2, NULL, NULL, NULL, NULL}};
    int ready[3] = {0, 0, 0};
    rk_status s = RK_OK;
    for (size_t i = 0; i < n && s == RK_OK; i++) {
        int sp = split[i];
        if (sp < 0 || sp > 2) { s = rk_fail(err, RK_EINVAL, "pair %zu, column split: %d is not train, valid or test", i + 1, sp); break; }
        int u = rk_embsum_find(d->user_id, d->n_users, user[i]), it = rk_embsum_find(d->item_id, d->n_items, item[i]);
        if (u < 0) { s = rk_fail(err, RK_ENOTFOUND, "pair %zu, column user_id: user %lld is not in the data", i + 1, (long long)user[i]); break; }
        if (it < 0) { s = rk_fail(err, RK_ENOTFOUND, "pair %zu, column movie_id: item %lld is not in items.csv", i + 1, (long long)item[i]); break; }
        if (!ready[sp]) {
            if ((s = precompute(&me[sp], NULL, NULL, NULL, err)) != RK_OK) break;
            ready[sp] = 1;
        }
        /* a user without a history in the period: score 0 (documented default) */
        score[i] = me[sp].has_upe[u] ? model_score(&me[sp], u, it) : 0.0f;
    }
    for (int k = 0; k < 3; k++) model_eval_free(&me[k]);
    return s;
}

double rk_embsum_example_loss(const rk_embsum *e, const rk_embsum_data *d, int split, int u, const int32_t *items,
                              int C, float *grad) {
    trainer t = {0};
    if (trainer_init(&t, e, max_item_tokens(d), NULL) != RK_OK) return NAN;
    int ns;
    const float *sess = rk_embsum_sessions(d, split, u, e->cfg.session_pool, &ns);
    const float *sum = d->summary && d->has_summary[u] ? d->summary + (size_t)u * d->d : NULL;
    double loss = train_example(&t, e, d, sess, ns, sum, items, C);
    if (grad) memcpy(grad, t.grad, e->n_floats * sizeof(float));
    rk_free(t.mem);
    return loss;
}
