/*
 * api/api.c — librankd's public C API (include/rank.h) over the modules.
 *
 * A thin layer: a rankd_model wraps an rk_model opened read-only, a
 * rankd_batch wraps an rk_scorer plus the bookkeeping the public calls need
 * (which features each side has set, the last scores). Features are
 * resolved by name with rk_model_cfg_find and checked against the side and
 * kind the public call names; values go to the scorer exactly as rankd's
 * Ranker service sends them (a user value hashed once for every row, ""
 * skipped, max_values truncation in the scorer), so the pCTRs are those of
 * `rank score` and rankd. No internal struct crosses the header: sizes of
 * everything here come from the model at run time.
 *
 * Status codes are rk_status's values (checked at compile time below), so
 * an rk_err converts to a rankd_error by copying.
 */
#include <math.h>
#include <string.h>

#include "core.h"
#include "rank.h"
#include "../include/rank.h"

#define RK_API_CHECK(a, b) _Static_assert((int)(a) == (int)(b), #a " != " #b)
RK_API_CHECK(RK_OK, RANKD_OK);
RK_API_CHECK(RK_EINVAL, RANKD_EINVAL);
RK_API_CHECK(RK_EIO, RANKD_EIO);
RK_API_CHECK(RK_ENOMEM, RANKD_ENOMEM);
RK_API_CHECK(RK_ENOTFOUND, RANKD_ENOTFOUND);
RK_API_CHECK(RK_EFORMAT, RANKD_EFORMAT);
RK_API_CHECK(RK_EVERSION, RANKD_EVERSION);
RK_API_CHECK(RK_ESHAPE, RANKD_ESHAPE);
RK_API_CHECK(RK_ETOOBIG, RANKD_ETOOBIG);
RK_API_CHECK(RK_EEXIST, RANKD_EEXIST);
RK_API_CHECK(RK_EINTERNAL, RANKD_EINTERNAL);
RK_API_CHECK(RK_EDEADLINE, RANKD_EDEADLINE);
RK_API_CHECK(RK_ENUMERIC, RANKD_ENUMERIC);
RK_API_CHECK(RK_ECANCELED, RANKD_ECANCELED);
_Static_assert(sizeof(((rankd_error *)0)->message) == sizeof(((rk_err *)0)->msg), "message size");

#define RK_API_MAX_LIMIT 1000000

struct rankd_options {
    int max_candidates;
    int max_values_per_row;
    size_t ram_tables_mb;
};

struct rankd_model {
    rk_model *m;
    const rk_model_cfg *cfg;
    struct rankd_options o;
};

struct rankd_batch {
    const rankd_model *pm;
    rk_scorer *s;
    int n;             /* candidates of the current request (0: none begun) */
    int scored;        /* rankd_batch_score succeeded since the last begin */
    char failed[160];  /* the first failed set since the last begin ("" = none) */
    int n_features;
    unsigned char *set; /* [(1 + max_candidates) * n_features]: row 0 user, 1 + i candidate i */
    float *pctr;       /* [max_candidates]: the last scores */
};

static const struct rankd_options opts_default = {1000, 256, 0};

/* rk_err -> rankd_error (same codes, same message buffer size). */
static rankd_status pub(const rk_err *e, rankd_error *err) {
    if (err) {
        err->code = (rankd_status)e->code;
        memcpy(err->message, e->msg, sizeof err->message);
        err->message[sizeof err->message - 1] = 0;
    }
    return (rankd_status)e->code;
}

/* rk_fail into a rankd_error. */
#define PUB_FAIL(err, code, ...)                                                                   \
    do {                                                                                           \
        rk_err e_ = {0};                                                                           \
        rk_fail(&e_, (code), __VA_ARGS__);                                                         \
        return pub(&e_, (err));                                                                    \
    } while (0)

static rankd_status ok(rankd_error *err) {
    if (err) {
        err->code = RANKD_OK;
        err->message[0] = 0;
    }
    return RANKD_OK;
}

/* ---------------------------------------------------------------- version, status */

RANKD_API const char *rankd_version(void) { return RANKD_VERSION; }
RANKD_API int rankd_version_num(void) { return RANKD_VERSION_NUM; }
RANKD_API const char *rankd_status_str(rankd_status s) { return rk_status_str((rk_status)s); }

/* ---------------------------------------------------------------- options */

RANKD_API rankd_options *rankd_options_create(void) {
    rankd_options *o = rk_malloc(sizeof *o);
    if (o) *o = opts_default;
    return o;
}

RANKD_API void rankd_options_destroy(rankd_options *o) { rk_free(o); }

static rankd_status set_limit(int *dst, const char *what, int n, rankd_error *err) {
    if (n < 1 || n > RK_API_MAX_LIMIT)
        PUB_FAIL(err, RK_EINVAL, "%s: %d is outside 1..%d", what, n, RK_API_MAX_LIMIT);
    *dst = n;
    return ok(err);
}

RANKD_API rankd_status rankd_options_set_max_candidates(rankd_options *o, int n, rankd_error *err) {
    if (!o) PUB_FAIL(err, RK_EINVAL, "max_candidates: options is NULL");
    return set_limit(&o->max_candidates, "max_candidates", n, err);
}

RANKD_API rankd_status rankd_options_set_max_values_per_row(rankd_options *o, int n, rankd_error *err) {
    if (!o) PUB_FAIL(err, RK_EINVAL, "max_values_per_row: options is NULL");
    return set_limit(&o->max_values_per_row, "max_values_per_row", n, err);
}

RANKD_API rankd_status rankd_options_set_ram_tables_mb(rankd_options *o, size_t mb, rankd_error *err) {
    if (!o) PUB_FAIL(err, RK_EINVAL, "ram_tables_mb: options is NULL");
    if (mb > ((size_t)1 << 40))
        PUB_FAIL(err, RK_EINVAL, "ram_tables_mb: %zu is over the maximum of %zu", mb, (size_t)1 << 40);
    o->ram_tables_mb = mb;
    return ok(err);
}

/* ---------------------------------------------------------------- model */

RANKD_API rankd_status rankd_model_open(const char *dir, const rankd_options *opts, rankd_model **out,
                                        rankd_error *err) {
    if (!out) PUB_FAIL(err, RK_EINVAL, "model open: out is NULL");
    *out = NULL;
    if (!dir || !dir[0]) PUB_FAIL(err, RK_EINVAL, "model open: no bundle directory given");
    rankd_model *pm = rk_calloc(1, sizeof *pm);
    if (!pm) PUB_FAIL(err, RK_ENOMEM, "model open: out of memory");
    pm->o = opts ? *opts : opts_default;
    rk_err e = {0};
    rk_status st = rk_model_open(dir, &pm->m, &e);
    size_t bytes = 0;
    if (!st && pm->o.ram_tables_mb)
        st = rk_model_tables_to_ram(pm->m, pm->o.ram_tables_mb << 20, &bytes, &e);
    if (st) {
        rk_model_destroy(pm->m);
        rk_free(pm);
        return pub(&e, err);
    }
    pm->cfg = rk_model_config(pm->m);
    *out = pm;
    return ok(err);
}

RANKD_API void rankd_model_close(rankd_model *m) {
    if (!m) return;
    rk_model_destroy(m->m);
    rk_free(m);
}

RANKD_API const char *rankd_model_version(const rankd_model *m) { return m ? rk_model_version(m->m) : NULL; }

RANKD_API int rankd_model_n_features(const rankd_model *m) { return m ? m->cfg->n_features : -1; }

static const rk_feature *feature_at(const rankd_model *m, int i) {
    return m && i >= 0 && i < m->cfg->n_features ? &m->cfg->features[i] : NULL;
}

RANKD_API const char *rankd_feature_name(const rankd_model *m, int i) {
    const rk_feature *f = feature_at(m, i);
    return f ? f->name : NULL;
}

RANKD_API rankd_side rankd_feature_side(const rankd_model *m, int i) {
    const rk_feature *f = feature_at(m, i);
    return !f ? RANKD_SIDE_INVALID : f->side == RK_SIDE_USER ? RANKD_SIDE_USER : RANKD_SIDE_CANDIDATE;
}

RANKD_API rankd_kind rankd_feature_kind(const rankd_model *m, int i) {
    const rk_feature *f = feature_at(m, i);
    return !f ? RANKD_KIND_INVALID : f->kind == RK_FEAT_SPARSE ? RANKD_KIND_SPARSE : RANKD_KIND_DENSE;
}

RANKD_API int rankd_feature_dim(const rankd_model *m, int i) {
    const rk_feature *f = feature_at(m, i);
    return !f ? -1 : f->kind == RK_FEAT_SPARSE ? f->dim : 1;
}

RANKD_API int rankd_model_find_feature(const rankd_model *m, const char *name) {
    return m && name ? rk_model_cfg_find(m->cfg, name) : -1;
}

RANKD_API int rankd_model_n_members(const rankd_model *m) { return m ? rk_model_n_members(m->m) : -1; }

RANKD_API const char *rankd_model_member_name(const rankd_model *m, int i) {
    return m ? rk_model_member_name(m->m, i) : NULL;
}

/* ---------------------------------------------------------------- batch */

RANKD_API rankd_status rankd_batch_create(const rankd_model *m, rankd_batch **out, rankd_error *err) {
    if (!out) PUB_FAIL(err, RK_EINVAL, "batch create: out is NULL");
    *out = NULL;
    if (!m) PUB_FAIL(err, RK_EINVAL, "batch create: model is NULL");
    rankd_batch *b = rk_calloc(1, sizeof *b);
    rk_err e = {0};
    rk_status st = RK_ENOMEM;
    if (!b) PUB_FAIL(err, RK_ENOMEM, "batch create: out of memory");
    b->pm = m;
    b->n_features = m->cfg->n_features;
    size_t rows = (size_t)m->o.max_candidates;
    b->set = rk_calloc((rows + 1) * (size_t)b->n_features + 1, 1);
    b->pctr = rk_calloc(rows, sizeof *b->pctr);
    if (!b->set || !b->pctr) rk_fail(&e, RK_ENOMEM, "batch create: out of memory for %zu candidates", rows);
    else st = rk_scorer_create(m->m, m->o.max_candidates, m->o.max_values_per_row, &b->s, &e);
    if (st) {
        rankd_batch_destroy(b);
        return pub(&e, err);
    }
    *out = b;
    return ok(err);
}

RANKD_API void rankd_batch_destroy(rankd_batch *b) {
    if (!b) return;
    rk_scorer_destroy(b->s);
    rk_free(b->set);
    rk_free(b->pctr);
    rk_free(b);
}

RANKD_API rankd_status rankd_batch_begin(rankd_batch *b, int n_candidates, rankd_error *err) {
    if (!b) PUB_FAIL(err, RK_EINVAL, "batch begin: batch is NULL");
    b->n = 0;
    b->scored = 0;
    b->failed[0] = 0;
    rk_err e = {0};
    if (n_candidates <= 0) PUB_FAIL(err, RK_EINVAL, "candidates: %d, need at least 1", n_candidates);
    if (n_candidates > b->pm->o.max_candidates)
        PUB_FAIL(err, RK_ETOOBIG, "candidates: %d exceed the maximum of %d (rankd_options_set_max_candidates)",
                 n_candidates, b->pm->o.max_candidates);
    if (rk_scorer_begin(b->s, n_candidates, &e)) return pub(&e, err);
    memset(b->set, 0, (size_t)(n_candidates + 1) * (size_t)b->n_features);
    b->n = n_candidates;
    return ok(err);
}

/* The feature named name for a call on `where` (row -1: the user, else
 * candidate row): begun, known, of this side and kind, not yet set.
 * Returns its index or a negative status after filling err. */
static int resolve(rankd_batch *b, int row, const char *name, rk_feat_kind kind, rankd_error *err) {
    char where[32];
    if (row < 0) snprintf(where, sizeof where, "user");
    else snprintf(where, sizeof where, "candidates[%d]", row);
    if (!b) PUB_FAIL(err, RK_EINVAL, "%s: batch is NULL", where);
    if (b->n == 0) PUB_FAIL(err, RK_EINVAL, "%s: no request begun (rankd_batch_begin)", where);
    if (b->scored) PUB_FAIL(err, RK_EINVAL, "%s: the request is already scored (begin a new one)", where);
    if (row >= b->n) PUB_FAIL(err, RK_EINVAL, "%s: outside the request's %d candidates", where, b->n);
    if (!name) PUB_FAIL(err, RK_EINVAL, "%s: feature name is NULL", where);
    int f = rk_model_cfg_find(b->pm->cfg, name);
    if (f < 0) PUB_FAIL(err, RK_EINVAL, "%s: unknown feature '%.64s'", where, name);
    const rk_feature *ft = &b->pm->cfg->features[f];
    rk_side side = row < 0 ? RK_SIDE_USER : RK_SIDE_ITEM;
    if (ft->side != side)
        PUB_FAIL(err, RK_EINVAL, "%s: '%s' is a %s feature", where, ft->name,
                 ft->side == RK_SIDE_USER ? "user" : "candidate");
    if (ft->kind != kind)
        PUB_FAIL(err, RK_EINVAL, "%s: '%s' is a %s feature", where, ft->name,
                 ft->kind == RK_FEAT_DENSE ? "dense" : "sparse");
    unsigned char *seen = &b->set[(size_t)(row + 1) * (size_t)b->n_features + (size_t)f];
    if (*seen) PUB_FAIL(err, RK_EINVAL, "%s: '%s' is already set in this request", where, ft->name);
    *seen = 1;
    return f;
}

/* Sparse values of feature f to rows [r0, r1). */
static rankd_status add_sparse(rankd_batch *b, int row, const char *name, const char *const *values,
                               size_t n_values, rankd_error *err) {
    int f = resolve(b, row, name, RK_FEAT_SPARSE, err);
    if (f < 0) return (rankd_status)f;
    int r0 = row < 0 ? 0 : row, r1 = row < 0 ? b->n : row + 1;
    if (n_values && !values) PUB_FAIL(err, RK_EINVAL, "feature '%s': values is NULL", name);
    for (size_t k = 0; k < n_values; k++) {
        if (!values[k]) PUB_FAIL(err, RK_EINVAL, "feature '%s': values[%zu] is NULL", name, k);
        size_t len = strlen(values[k]);
        if (!len) continue;
        rk_err e = {0};
        if (rk_scorer_add_sparse_rows(b->s, r0, r1, f, values[k], len, &e)) return pub(&e, err);
    }
    return ok(err);
}

static rankd_status set_dense(rankd_batch *b, int row, const char *name, double value, rankd_error *err) {
    int f = resolve(b, row, name, RK_FEAT_DENSE, err);
    if (f < 0) return (rankd_status)f;
    if (!isfinite(value) || fabs(value) > RK_DENSE_MAX_ABS)
        PUB_FAIL(err, RK_ENUMERIC, "feature '%s': value %g is not finite or beyond +-%g", name, value,
                 RK_DENSE_MAX_ABS);
    int r0 = row < 0 ? 0 : row, r1 = row < 0 ? b->n : row + 1;
    for (int r = r0; r < r1; r++) {
        rk_err e = {0};
        if (rk_scorer_set_dense(b->s, r, f, (float)value, &e)) return pub(&e, err);
    }
    return ok(err);
}

/* A set's status; a failure is remembered (the first one) so that
 * rankd_batch_score refuses the request instead of scoring what is left. */
static rankd_status note(rankd_batch *b, rankd_status st, const rankd_error *e, rankd_error *err) {
    if (st != RANKD_OK && b && b->n > 0 && !b->scored && !b->failed[0])
        snprintf(b->failed, sizeof b->failed, "%s", e->message);
    if (err) *err = *e;
    return st;
}

RANKD_API rankd_status rankd_batch_user_sparse(rankd_batch *b, const char *feature, const char *const *values,
                                               size_t n_values, rankd_error *err) {
    rankd_error e;
    return note(b, add_sparse(b, -1, feature, values, n_values, &e), &e, err);
}

RANKD_API rankd_status rankd_batch_user_dense(rankd_batch *b, const char *feature, double value,
                                              rankd_error *err) {
    rankd_error e;
    return note(b, set_dense(b, -1, feature, value, &e), &e, err);
}

static rankd_status check_candidate(int i, rankd_error *err) {
    if (i < 0) PUB_FAIL(err, RK_EINVAL, "candidates[%d]: negative index", i);
    return RANKD_OK;
}

RANKD_API rankd_status rankd_batch_candidate_sparse(rankd_batch *b, int i, const char *feature,
                                                    const char *const *values, size_t n_values,
                                                    rankd_error *err) {
    rankd_error e;
    rankd_status st = check_candidate(i, &e);
    return note(b, st ? st : add_sparse(b, i, feature, values, n_values, &e), &e, err);
}

RANKD_API rankd_status rankd_batch_candidate_dense(rankd_batch *b, int i, const char *feature, double value,
                                                   rankd_error *err) {
    rankd_error e;
    rankd_status st = check_candidate(i, &e);
    return note(b, st ? st : set_dense(b, i, feature, value, &e), &e, err);
}

RANKD_API rankd_status rankd_batch_score(rankd_batch *b, float *pctr, rankd_error *err) {
    if (!b || !pctr) PUB_FAIL(err, RK_EINVAL, "score: %s is NULL", b ? "pctr" : "batch");
    if (b->n == 0) PUB_FAIL(err, RK_EINVAL, "score: no request begun (rankd_batch_begin)");
    if (b->scored) PUB_FAIL(err, RK_EINVAL, "score: the request is already scored (begin a new one)");
    if (b->failed[0])
        PUB_FAIL(err, RK_EINVAL, "score: a set failed in this request (%s); begin it again", b->failed);
    rk_err e = {0};
    if (rk_scorer_run(b->s, b->pctr, NULL, NULL, &e)) return pub(&e, err);
    memcpy(pctr, b->pctr, (size_t)b->n * sizeof *pctr);
    b->scored = 1;
    return ok(err);
}

RANKD_API rankd_status rankd_batch_member_scores(const rankd_batch *b, int i, float *pctr, float *weight,
                                                 rankd_error *err) {
    if (!b || !b->scored) PUB_FAIL(err, RK_EINVAL, "member scores: no scored request");
    if (i < 0 || i >= b->n) PUB_FAIL(err, RK_EINVAL, "member scores: candidate %d outside the request's %d", i, b->n);
    if (rk_model_n_members(b->pm->m) > 0) {
        rk_err e = {0};
        if (rk_scorer_member_scores(b->s, i, pctr, weight, &e)) return pub(&e, err);
        return ok(err);
    }
    if (pctr) pctr[0] = b->pctr[i];
    if (weight) weight[0] = 1.0f;
    return ok(err);
}
