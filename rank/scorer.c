/*
 * rank/scorer.c — per-thread scoring context used by the server and by
 * anything scoring raw feature values. Values are staged per feature, in
 * insertion order within each row (a value for every row once, as row 0's,
 * until the feature's first value for some rows only: unshare), then laid out
 * as CSR bags with a stable counting sort at run time, so a row's bag holds
 * its values in the order they were added (the order pooling sums them,
 * which keeps served and offline scores identical).
 * All memory is allocated at create time; begin/add/run never allocate.
 */
#include "internal.h"

#include <math.h>
#include <string.h>

struct rk_scorer {
    const rk_model *m;
    int max_rows, max_per_row, n_rows;
    size_t cap_values; /* the widest feature's */
    int n_features;
    rk_batch b;
    /* per feature [n_features]; a sparse feature's staging holds max_rows x
     * its per-row cap (max_values when it caps a hashed feature below
     * max_values_per_row, else max_values_per_row) */
    uint32_t **st_row;
    uint64_t **st_key;
    size_t *st_n;
    uint32_t **cnt;  /* [max_rows] table rows staged per batch row */
    uint32_t **vcnt; /* [max_rows] values per row of semantic-ID features
                      * (each gives G rows; max_values counts values) */
    int n_models;                       /* 1, or the ensemble's members */
    const rk_model **models;            /* [n_models] */
    rk_work *w;                         /* [n_models] */
    uint8_t *same;                      /* [n_features] every value staged for all rows at once (a
                                         * request's user side): every row's bag is the same, pooled once,
                                         * and its values are staged once, as row 0's (unshare) */
    rk_tower_dev **td;                  /* [n_models] towers on a GPU (rk_scorer_set_device), else NULL */
    float *mp, *mw;                     /* ensemble: member pCTR and weight [max_rows, M] */
    float *fp;                          /* ensemble: one row's member pCTRs [M] */
    double *fw;                         /* ensemble: one row's fusion weights [M] */
    rk_embed_scratch *scr;
    uint64_t sid_unknown;   /* values of code-based features without records (empty bag / OOV row) */
    uint64_t sid_assigned;  /* items given codes at request time from their content embedding */
    float *sid_resid;       /* [widest codebook dim] residual of request-time encoding */
};

static rk_status stage_rows(rk_scorer *s, int row, int feature, const uint64_t *keys, int g, rk_err *err);

/* Before a value goes to some rows only: a feature that so far had every
 * value for every row (same) holds them staged once, as row 0's; copy them
 * to rows 1.. (in order, so each row's bag keeps the order of its adds)
 * and clear same (one row: only the flag). At most n_rows x row 0's
 * count: within the buffers. */
static void unshare_copy(rk_scorer *s, int f) {
    s->same[f] = 0;
    const size_t n0 = s->st_n[f];
    for (int r = 1; r < s->n_rows; r++) {
        for (size_t k = 0; k < n0; k++) {
            s->st_row[f][(size_t)r * n0 + k] = (uint32_t)r;
            s->st_key[f][(size_t)r * n0 + k] = s->st_key[f][k];
        }
        s->cnt[f][r] = s->cnt[f][0];
        s->vcnt[f][r] = s->vcnt[f][0];
    }
    s->st_n[f] = n0 * (size_t)s->n_rows;
}
static inline void unshare(rk_scorer *s, int f) { /* called per candidate value: the check inlined */
    if (s->same[f]) unshare_copy(s, f);
}

/* Staged table rows one batch row may hold for feature ft: a hashed
 * feature whose max_values is below max_values_per_row never keeps more
 * (values past max_values are dropped before staging), so its buffers are
 * sized for max_values only; a model of many single-valued features then
 * needs max_rows values per feature, not max_rows x max_values_per_row. */
static int row_cap(const rk_scorer *s, const rk_feature *ft) {
    if (ft->kind != RK_FEAT_SPARSE) return 0;
    if (ft->param == RK_PARAM_HASH && ft->max_values > 0 && ft->max_values < s->max_per_row) return ft->max_values;
    return s->max_per_row;
}

static rk_status scorer_arrays(rk_scorer *s, rk_err *err) {
    size_t nf = (size_t)s->n_features + 1, nm = (size_t)s->n_models;
    s->st_row = rk_calloc(nf, sizeof *s->st_row);
    s->st_key = rk_calloc(nf, sizeof *s->st_key);
    s->st_n = rk_calloc(nf, sizeof *s->st_n);
    s->cnt = rk_calloc(nf, sizeof *s->cnt);
    s->vcnt = rk_calloc(nf, sizeof *s->vcnt);
    s->models = rk_calloc(nm, sizeof *s->models);
    s->w = rk_calloc(nm, sizeof *s->w);
    s->td = rk_calloc(nm, sizeof *s->td);
    s->same = rk_calloc(nf, sizeof *s->same);
    if (!s->st_row || !s->st_key || !s->st_n || !s->cnt || !s->vcnt || !s->models || !s->w || !s->td || !s->same)
        return rk_fail(err, RK_ENOMEM, "scorer: out of memory for %d features", s->n_features);
    return RK_OK;
}

void rk_scorer_destroy(rk_scorer *s) {
    if (!s) return;
    for (int f = 0; s->st_row && s->st_key && s->cnt && s->vcnt && f < s->n_features; f++) {
        rk_free(s->st_row[f]);
        rk_free(s->st_key[f]);
        rk_free(s->cnt[f]);
        rk_free(s->vcnt[f]);
    }
    rk_free(s->st_row);
    rk_free(s->st_key);
    rk_free(s->st_n);
    rk_free(s->cnt);
    rk_free(s->vcnt);
    rk_batch_free(&s->b);
    for (int i = 0; s->w && i < s->n_models; i++) rk_work_free(&s->w[i]);
    rk_free(s->w);
    for (int i = 0; s->td && i < s->n_models; i++) rk_tower_dev_destroy(s->td[i]);
    rk_free(s->td);
    rk_free(s->same);
    rk_free(s->models);
    rk_free(s->mp);
    rk_free(s->mw);
    rk_free(s->fp);
    rk_free(s->fw);
    rk_embed_scratch_destroy(s->scr);
    rk_free(s->sid_resid);
    rk_free(s);
}

rk_status rk_scorer_create(const rk_model *m, int max_rows, int max_values_per_row, rk_scorer **out, rk_err *err) {
    *out = NULL;
    if (max_rows <= 0 || max_values_per_row <= 0)
        return rk_fail(err, RK_EINVAL, "scorer: max_rows and max_values_per_row must be > 0");
    for (int i = 0; i < (m->n_members ? m->n_members : 1); i++)
        if (!(m->n_members ? m->member[i] : m)->store)
            return rk_fail(err, RK_EINVAL, "scorer: the model must be opened from a bundle");
    rk_scorer *s = rk_calloc(1, sizeof *s);
    if (!s) return rk_fail(err, RK_ENOMEM, "scorer: out of memory");
    s->m = m;
    s->n_models = m->n_members ? m->n_members : 1;
    s->n_features = m->cfg.n_features;
    s->max_rows = max_rows;
    s->max_per_row = max_values_per_row;
    rk_status st = scorer_arrays(s, err);
    int max_dim = 1;
    for (int i = 0; st == RK_OK && i < s->n_models; i++) {
        s->models[i] = m->n_members ? m->member[i] : m;
        if (s->models[i]->max_dim > max_dim) max_dim = s->models[i]->max_dim;
    }
    size_t *caps = st ? NULL : rk_calloc((size_t)s->n_features + 1, sizeof *caps);
    if (st == RK_OK && !caps) st = rk_fail(err, RK_ENOMEM, "scorer: out of memory");
    for (int f = 0; st == RK_OK && f < s->n_features; f++) {
        caps[f] = (size_t)max_rows * (size_t)row_cap(s, &m->cfg.features[f]);
        if (caps[f] > s->cap_values) s->cap_values = caps[f];
    }
    if (st == RK_OK) st = rk_batch_alloc_caps(&s->b, &m->cfg, max_rows, caps, err);
    for (int i = 0; st == RK_OK && i < s->n_models; i++) st = rk_work_init(&s->w[i], s->models[i], max_rows, 0, err);
    /* at least one key: a model of dense inputs only (an exported EmbSum model) has no sparse values */
    if (st == RK_OK) st = rk_embed_scratch_create(s->cap_values ? s->cap_values : 1, max_dim, &s->scr, err);
    int cb_dim = 1;
    const rk_model *cbm = m->n_members ? m->member[0] : m; /* an ensemble's codebooks: member 0's */
    for (int f = 0; f < m->cfg.n_features; f++)
        if (cbm->sid_cb[f].dim > cb_dim) cb_dim = cbm->sid_cb[f].dim;
    if (st == RK_OK && !(s->sid_resid = rk_malloc((size_t)cb_dim * sizeof(float))))
        st = rk_fail(err, RK_ENOMEM, "scorer: out of memory");
    if (st == RK_OK && m->n_members) {
        s->mp = rk_malloc((size_t)max_rows * (size_t)m->n_members * sizeof(float));
        s->mw = rk_malloc((size_t)max_rows * (size_t)m->n_members * sizeof(float));
        s->fp = rk_malloc((size_t)m->n_members * sizeof(float));
        s->fw = rk_malloc((size_t)m->n_members * sizeof(double));
        if (!s->mp || !s->mw || !s->fp || !s->fw) st = rk_fail(err, RK_ENOMEM, "scorer: out of memory");
    }
    for (int f = 0; st == RK_OK && f < m->cfg.n_features; f++) {
        if (m->cfg.features[f].kind != RK_FEAT_SPARSE) continue;
        s->st_row[f] = rk_malloc(caps[f] * sizeof(uint32_t));
        s->st_key[f] = rk_malloc(caps[f] * sizeof(uint64_t));
        s->cnt[f] = rk_calloc((size_t)max_rows, sizeof(uint32_t));
        s->vcnt[f] = rk_calloc((size_t)max_rows, sizeof(uint32_t));
        if (!s->st_row[f] || !s->st_key[f] || !s->cnt[f] || !s->vcnt[f])
            st = rk_fail(err, RK_ENOMEM, "scorer: out of memory");
    }
    rk_free(caps);
    if (st) {
        rk_scorer_destroy(s);
        return st;
    }
    *out = s;
    return RK_OK;
}

rk_status rk_scorer_begin(rk_scorer *s, int n_rows, rk_err *err) {
    if (n_rows <= 0) return rk_fail(err, RK_EINVAL, "batch: no rows");
    if (n_rows > s->max_rows) return rk_fail(err, RK_ETOOBIG, "batch: %d rows exceed the maximum of %d", n_rows, s->max_rows);
    s->n_rows = n_rows;
    for (int f = 0; f < s->m->cfg.n_features; f++) {
        s->st_n[f] = 0;
        s->same[f] = 1;
        if (s->cnt[f]) memset(s->cnt[f], 0, (size_t)n_rows * sizeof(uint32_t));
        if (s->vcnt[f]) memset(s->vcnt[f], 0, (size_t)n_rows * sizeof(uint32_t));
    }
    memset(s->b.dense, 0, (size_t)n_rows * (size_t)s->m->cfg.n_features * sizeof(float));
    return RK_OK;
}

rk_status rk_scorer_add_sparse(rk_scorer *s, int row, int feature, const char *value, size_t len, rk_err *err) {
    const rk_model_cfg *c = &s->m->cfg;
    if (row < 0 || row >= s->n_rows) return rk_fail(err, RK_EINVAL, "row %d outside the batch of %d", row, s->n_rows);
    if (feature < 0 || feature >= c->n_features || c->features[feature].kind != RK_FEAT_SPARSE)
        return rk_fail(err, RK_EINVAL, "feature %d is not a sparse feature", feature);
    const rk_feature *ft = &c->features[feature];
    unshare(s, feature);
    uint32_t used = ft->param == RK_PARAM_HASH ? s->cnt[feature][row] : s->vcnt[feature][row];
    if (ft->max_values && used >= (uint32_t)ft->max_values) return RK_OK; /* truncated, as in training */
    if (s->cnt[feature][row] >= (uint32_t)s->max_per_row)
        return rk_fail(err, RK_ETOOBIG, "feature '%s': more than %d values in one row", ft->name, s->max_per_row);
    uint64_t keys[RK_SID_MAX_LEVELS];
    int unknown, g = rk_value_rows(ft, value, len, keys, &unknown);
    s->sid_unknown += (uint64_t)unknown;
    return stage_rows(s, row, feature, keys, g, err);
}

/* Stage g rows of one value of a sparse feature for row. */
static rk_status stage_rows(rk_scorer *s, int row, int feature, const uint64_t *keys, int g, rk_err *err) {
    const rk_feature *ft = &s->m->cfg.features[feature];
    if (s->cnt[feature][row] + (uint32_t)g > (uint32_t)s->max_per_row)
        return rk_fail(err, RK_ETOOBIG, "feature '%s': more than %d values in one row", ft->name, s->max_per_row);
    for (int i = 0; i < g; i++) {
        size_t k = s->st_n[feature]++;
        s->st_row[feature][k] = (uint32_t)row;
        s->st_key[feature][k] = keys[i];
    }
    s->cnt[feature][row] += (uint32_t)g;
    s->vcnt[feature][row]++;
    return RK_OK;
}

rk_status rk_scorer_add_sparse_rows(rk_scorer *s, int r0, int r1, int feature, const char *value, size_t len,
                                    rk_err *err) {
    const rk_model_cfg *c = &s->m->cfg;
    if (r0 < 0 || r1 > s->n_rows || r0 >= r1)
        return rk_fail(err, RK_EINVAL, "rows [%d, %d) outside the batch of %d", r0, r1, s->n_rows);
    if (feature < 0 || feature >= c->n_features || c->features[feature].kind != RK_FEAT_SPARSE)
        return rk_fail(err, RK_EINVAL, "feature %d is not a sparse feature", feature);
    const rk_feature *ft = &c->features[feature];
    if (r0 != 0 || r1 != s->n_rows) unshare(s, feature);
    if (s->same[feature]) r1 = r0 + 1; /* every row: staged once, as row 0's */
    if (ft->param != RK_PARAM_HASH) { /* G rows per value: stage them row by row */
        uint64_t keys[RK_SID_MAX_LEVELS];
        int unknown, g = rk_value_rows(ft, value, len, keys, &unknown); /* once for every row */
        s->sid_unknown += (uint64_t)unknown;
        for (int row = r0; row < r1; row++) {
            if (ft->max_values && s->vcnt[feature][row] >= (uint32_t)ft->max_values) continue; /* as in training */
            rk_status st = stage_rows(s, row, feature, keys, g, err);
            if (st) return st;
        }
        return RK_OK;
    }
    uint64_t key = rk_feature_row(ft->name, value, len, ft->table_size); /* once for every row */
    uint32_t *cnt = s->cnt[feature];
    for (int row = r0; row < r1; row++) {
        if (ft->max_values && cnt[row] >= (uint32_t)ft->max_values) continue; /* truncated, as in training */
        if (cnt[row] >= (uint32_t)s->max_per_row)
            return rk_fail(err, RK_ETOOBIG, "feature '%s': more than %d values in one row", ft->name, s->max_per_row);
        size_t k = s->st_n[feature]++;
        s->st_row[feature][k] = (uint32_t)row;
        s->st_key[feature][k] = key;
        cnt[row]++;
    }
    return RK_OK;
}

rk_status rk_scorer_set_dense(rk_scorer *s, int row, int feature, float raw, rk_err *err) {
    const rk_model_cfg *c = &s->m->cfg;
    if (row < 0 || row >= s->n_rows) return rk_fail(err, RK_EINVAL, "row %d outside the batch of %d", row, s->n_rows);
    if (feature < 0 || feature >= c->n_features || c->features[feature].kind != RK_FEAT_DENSE)
        return rk_fail(err, RK_EINVAL, "feature %d is not a dense feature", feature);
    float v;
    if (rk_dense_value(&c->features[feature], raw, &v))
        return rk_fail(err, RK_ENUMERIC, "feature '%s': value %g: %s", c->features[feature].name, raw,
                       rk_dense_why(&c->features[feature], raw));
    s->b.dense[(size_t)row * c->n_features + feature] = v;
    return RK_OK;
}

rk_status rk_scorer_set_device(rk_scorer *s, rk_device *dev, rk_err *err) {
    rk_tower_dev **td = rk_calloc((size_t)s->n_models, sizeof *td);
    if (!td) return rk_fail(err, RK_ENOMEM, "scorer: out of memory");
    rk_status st = RK_OK;
    for (int i = 0; dev && i < s->n_models && st == RK_OK; i++)
        st = rk_tower_dev_create(s->models[i], dev, s->max_rows, &td[i], err);
    for (int i = 0; i < s->n_models; i++) {
        rk_tower_dev *keep = st ? s->td[i] : td[i];
        rk_tower_dev_destroy(st ? td[i] : s->td[i]);
        s->td[i] = keep;
    }
    rk_free(td);
    return st;
}

rk_status rk_scorer_run(rk_scorer *s, float *pctr, double *lookup_us, double *model_us, rk_err *err) {
    const rk_model *m = s->m;
    rk_batch *b = &s->b;
    const int B = s->n_rows;
    b->n_rows = B;
    /* CSR bags; a same feature's rows 1.. stay empty: only row 0's bag is
     * pooled (rk_model_fill_x0_ex), then copied to every row */
    for (int f = 0; f < m->cfg.n_features; f++) {
        if (m->cfg.features[f].kind != RK_FEAT_SPARSE) continue;
        uint32_t *off = b->offsets[f];
        off[0] = 0;
        for (int r = 0; r < B; r++) off[r + 1] = off[r] + s->cnt[f][r];
        /* stable placement: reuse cnt as the per-row cursor */
        for (int r = 0; r < B; r++) s->cnt[f][r] = off[r];
        for (size_t k = 0; k < s->st_n[f]; k++) b->rows[f][s->cnt[f][s->st_row[f][k]]++] = s->st_key[f][k];
        for (int r = 0; r < B; r++) s->cnt[f][r] -= off[r];
    }
    double t0 = rk_now(), lookup = 0;
    const int M = m->n_members;
    double tau = M ? exp((double)m->log_tau) : 0;
    for (int i = 0; i < s->n_models; i++) {
        double a = rk_now();
        rk_status st = rk_model_fill_x0_ex(s->models[i], b, &s->w[i], s->scr, s->same, err);
        if (st) return st;
        lookup += rk_now() - a;
        if (s->td[i]) {
            st = rk_tower_dev_forward(s->td[i], s->w[i].x0, B, s->w[i].logit, err);
            if (st) return st;
        } else {
            rk_model_forward(s->models[i], &s->w[i], B);
        }
    }
    for (int r = 0; r < B; r++) {
        if (M == 0) {
            pctr[r] = rk_sigmoid(s->w[0].logit[r]);
        } else {
            float *p = s->fp;
            double *w = s->fw;
            for (int i = 0; i < M; i++) {
                p[i] = rk_sigmoid(s->w[i].logit[r]);
                if (!isfinite(p[i]))
                    return rk_fail(err, RK_ENUMERIC, "candidate %d: member '%s' pCTR is not finite", r, m->cfg.members[i].name);
            }
            pctr[r] = (float)rk_fuse(m->cfg.fusion.type, p, M, tau, w);
            for (int i = 0; i < M; i++) {
                s->mp[(size_t)r * M + i] = p[i];
                s->mw[(size_t)r * M + i] = (float)w[i];
            }
        }
        if (!isfinite(pctr[r])) return rk_fail(err, RK_ENUMERIC, "candidate %d: pCTR is not finite", r);
    }
    double t1 = t0 + lookup;
    double t2 = rk_now();
    if (lookup_us) *lookup_us = (t1 - t0) * 1e6;
    if (model_us) *model_us = (t2 - t1) * 1e6;
    return RK_OK;
}

rk_status rk_scorer_member_scores(const rk_scorer *s, int row, float *pctr, float *weight, rk_err *err) {
    const int M = s->m->n_members;
    if (M == 0) return rk_fail(err, RK_EINVAL, "member scores: the model is not an ensemble");
    if (row < 0 || row >= s->n_rows) return rk_fail(err, RK_EINVAL, "member scores: row %d outside the batch of %d", row, s->n_rows);
    for (int i = 0; i < M; i++) {
        if (pctr) pctr[i] = s->mp[(size_t)row * M + i];
        if (weight) weight[i] = s->mw[(size_t)row * M + i];
    }
    return RK_OK;
}

int rk_scorer_item_known(const rk_scorer *s, int feature, const char *value, size_t len) {
    const rk_model_cfg *c = &s->m->cfg;
    if (feature < 0 || feature >= c->n_features || c->features[feature].kind != RK_FEAT_SPARSE) return 0;
    const rk_feature *ft = &c->features[feature];
    if (ft->param == RK_PARAM_HASH) return 1;
    uint64_t keys[RK_SID_MAX_LEVELS];
    int unknown;
    rk_value_rows(ft, value, len, keys, &unknown);
    return !unknown;
}

rk_status rk_scorer_check_item_embedding(const rk_scorer *s, int feature, const float *emb, int dim, rk_err *err) {
    const rk_model_cfg *c = &s->m->cfg;
    if (feature < 0 || feature >= c->n_features || c->features[feature].kind != RK_FEAT_SPARSE)
        return rk_fail(err, RK_EINVAL, "feature %d is not a sparse feature", feature);
    const rk_feature *ft = &c->features[feature];
    const rk_sid_codebook *cb = &(s->m->n_members ? s->m->member[0] : s->m)->sid_cb[feature];
    if (!rk_sid_param_uses_codes(ft->param) || cb->levels == 0)
        return rk_fail(err, RK_EINVAL, "feature '%s' (param %s) has no semantic-ID codebooks in the bundle", ft->name,
                       rk_sid_param_name(ft->param));
    if (dim != cb->dim)
        return rk_fail(err, RK_ESHAPE, "content_embedding: %d values, the codebooks of feature '%s' expect %d", dim,
                       ft->name, cb->dim);
    for (int j = 0; j < dim; j++)
        if (!isfinite(emb[j]))
            return rk_fail(err, RK_ENUMERIC, "content_embedding: column %d is not finite (%g)", j, (double)emb[j]);
    return RK_OK;
}

rk_status rk_scorer_add_item_embedding(rk_scorer *s, int row, int feature, const float *emb, int dim, rk_err *err) {
    const rk_model_cfg *c = &s->m->cfg;
    if (row < 0 || row >= s->n_rows) return rk_fail(err, RK_EINVAL, "row %d outside the batch of %d", row, s->n_rows);
    rk_status cs = rk_scorer_check_item_embedding(s, feature, emb, dim, err);
    if (cs) return cs;
    const rk_feature *ft = &c->features[feature];
    const rk_sid_codebook *cb = &(s->m->n_members ? s->m->member[0] : s->m)->sid_cb[feature];
    uint32_t codes[RK_SID_MAX_LEVELS];
    rk_status st = rk_sid_encode_one(cb, emb, codes, s->sid_resid, err);
    if (st) return rk_err_prefix(err, "content_embedding");
    uint64_t keys[RK_SID_MAX_LEVELS];
    int g = rk_codes_rows(ft, codes, keys);
    unshare(s, feature);
    if ((st = stage_rows(s, row, feature, keys, g, err))) return st;
    s->sid_assigned++;
    return RK_OK;
}

void rk_scorer_sid_counters(const rk_scorer *s, uint64_t *unknown, uint64_t *assigned) {
    if (unknown) *unknown = s->sid_unknown;
    if (assigned) *assigned = s->sid_assigned;
}
