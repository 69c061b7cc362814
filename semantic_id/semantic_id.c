/*
 * semantic_id/semantic_id.c — RQ-KMeans codebooks, greedy residual
 * encoding, codebook quality, token rows of every parameterization, and
 * item records (item id -> codes).
 *
 * RQ-KMeans. Level l runs k-means on the residuals r_l of the previous
 * levels (papers.md §1(b) Eq. 2, with k-means centroids in place of the
 * RQ-VAE's learned codebooks; TIGER initialises its RQ-VAE codebooks the
 * same way, §2.2). Lloyd's assignment step is one sgemm S = R V^T per
 * iteration; d(i,k) = ||r_i||^2 - 2 S_ik + ||v_k||^2. The update step sums
 * in double. A centroid that loses all its points is moved onto the point
 * currently farthest from its own centroid (the standard repair; it also
 * lowers the objective), so every level uses all K codes when n >= K
 * distinct points exist.
 *
 * Encoding (the codes that are stored and served) never uses sgemm: one
 * fixed-order double loop per (level, centroid), so an embedding encoded
 * offline and the same embedding encoded at request time get the same
 * codes bit for bit, whatever OpenBLAS' thread count or kernel.
 *
 * Token rows: all tokens of papers.md Table 1 are polynomials in K with
 * code coefficients; they are evaluated by Horner's rule modulo H with a
 * 128-bit product, which equals the exact token mod H (no 64-bit overflow
 * for any K, L; §1(i).4, §6.2).
 */
#include "semantic_id.h"

#include <cblas.h>
#include <float.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---------------------------------------------------------------- k-means */

static double sqdist(const float *a, const float *b, int dim) {
    double s = 0;
    for (int d = 0; d < dim; d++) {
        double t = (double)a[d] - (double)b[d];
        s += t * t;
    }
    return s;
}

/* k-means++ seeding of K centres from r[n, dim] into c[K, dim]. */
static rk_status kmeanspp(const float *r, size_t n, int dim, int K, rk_rng *rng, float *c, double *mind,
                          rk_err *err) {
    (void)err;
    size_t first = (size_t)rk_rng_below(rng, n);
    memcpy(c, r + first * (size_t)dim, (size_t)dim * sizeof(float));
    for (size_t i = 0; i < n; i++) mind[i] = sqdist(r + i * (size_t)dim, c, dim);
    for (int k = 1; k < K; k++) {
        double tot = 0;
        for (size_t i = 0; i < n; i++) tot += mind[i];
        size_t pick;
        if (tot <= 0) {
            pick = (size_t)rk_rng_below(rng, n); /* all points coincide with centres */
        } else {
            double u = rk_rng_uniform(rng) * tot, acc = 0;
            pick = n - 1;
            for (size_t i = 0; i < n; i++) {
                acc += mind[i];
                if (acc > u && mind[i] > 0) {
                    pick = i;
                    break;
                }
            }
        }
        float *ck = c + (size_t)k * dim;
        memcpy(ck, r + pick * (size_t)dim, (size_t)dim * sizeof(float));
        for (size_t i = 0; i < n; i++) {
            double d = sqdist(r + i * (size_t)dim, ck, dim);
            if (d < mind[i]) mind[i] = d;
        }
    }
    return RK_OK;
}

/* Rows per sgemm chunk in the assignment step (bounds the [chunk, K] buffer). */
#define ASSIGN_CHUNK 2048

/* Assign r[n] to the nearest of c[K]; returns the number of changed labels.
 * dist[i] = squared distance to the chosen centre. */
static size_t assign(const float *r, const double *rnorm, size_t n, int dim, const float *c, int K, float *S,
                     double *cnorm, uint32_t *lab, double *dist) {
    for (int k = 0; k < K; k++) {
        double s = 0;
        for (int d = 0; d < dim; d++) s += (double)c[(size_t)k * dim + d] * c[(size_t)k * dim + d];
        cnorm[k] = s;
    }
    size_t changed = 0;
    for (size_t i0 = 0; i0 < n; i0 += ASSIGN_CHUNK) {
        int m = (int)(n - i0 < ASSIGN_CHUNK ? n - i0 : ASSIGN_CHUNK);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, K, dim, 1.0f, r + i0 * (size_t)dim, dim, c, dim, 0.0f,
                    S, K);
        for (int i = 0; i < m; i++) {
            const float *si = S + (size_t)i * K;
            double best = DBL_MAX;
            uint32_t bk = 0;
            for (int k = 0; k < K; k++) {
                double d = rnorm[i0 + i] - 2.0 * si[k] + cnorm[k];
                if (d < best) {
                    best = d;
                    bk = (uint32_t)k;
                }
            }
            if (lab[i0 + i] != bk) changed++;
            lab[i0 + i] = bk;
            dist[i0 + i] = best > 0 ? best : 0;
        }
    }
    return changed;
}

/* Update step with empty-cluster repair; returns the number of repairs. */
static int update(const float *r, size_t n, int dim, int K, const uint32_t *lab, const double *dist, float *c,
                  double *sum, size_t *cnt, uint8_t *taken) {
    memset(sum, 0, (size_t)K * dim * sizeof(double));
    memset(cnt, 0, (size_t)K * sizeof(size_t));
    for (size_t i = 0; i < n; i++) {
        cnt[lab[i]]++;
        double *sk = sum + (size_t)lab[i] * dim;
        const float *ri = r + i * (size_t)dim;
        for (int d = 0; d < dim; d++) sk[d] += ri[d];
    }
    int repairs = 0;
    memset(taken, 0, n);
    for (int k = 0; k < K; k++) {
        float *ck = c + (size_t)k * dim;
        if (cnt[k]) {
            for (int d = 0; d < dim; d++) ck[d] = (float)(sum[(size_t)k * dim + d] / (double)cnt[k]);
            continue;
        }
        /* empty: move onto the farthest point not used by an earlier repair */
        size_t far = n;
        double fd = -1;
        for (size_t i = 0; i < n; i++)
            if (!taken[i] && dist[i] > fd) {
                fd = dist[i];
                far = i;
            }
        if (far == n) continue;
        taken[far] = 1;
        memcpy(ck, r + far * (size_t)dim, (size_t)dim * sizeof(float));
        repairs++;
    }
    return repairs;
}

void rk_sid_codebook_free(rk_sid_codebook *cb) {
    if (!cb) return;
    rk_free(cb->centroids);
    memset(cb, 0, sizeof *cb);
}

rk_status rk_sid_train(const float *x, size_t n, int dim, int levels, int K, const rk_sid_train_opts *o,
                       rk_sid_codebook *out, rk_err *err) {
    memset(out, 0, sizeof *out);
    rk_sid_train_opts def = RK_SID_TRAIN_OPTS_DEFAULT;
    if (!o) o = &def;
    if (levels < 1 || levels > RK_SID_MAX_LEVELS)
        return rk_fail(err, RK_EINVAL, "sid: levels %d outside 1..%d", levels, RK_SID_MAX_LEVELS);
    if (K < 2) return rk_fail(err, RK_EINVAL, "sid: codes per level %d, need at least 2", K);
    if (dim < 1) return rk_fail(err, RK_EINVAL, "sid: embedding dim %d", dim);
    if (n < (size_t)K) return rk_fail(err, RK_EINVAL, "sid: %zu embeddings, need at least K = %d", n, K);
    if (o->max_iters < 1) return rk_fail(err, RK_EINVAL, "sid: max_iters %d, need at least 1", o->max_iters);
    for (size_t i = 0; i < n; i++)
        for (int d = 0; d < dim; d++)
            if (!isfinite(x[i * (size_t)dim + d]))
                return rk_fail(err, RK_ENUMERIC, "sid: embedding row %zu column %d is not finite", i, d);

    size_t nd = n * (size_t)dim;
    float *r = rk_malloc(nd * sizeof(float));
    float *cent = rk_calloc((size_t)levels * K * dim, sizeof(float));
    float *S = rk_malloc((size_t)ASSIGN_CHUNK * K * sizeof(float));
    double *rnorm = rk_malloc(n * sizeof(double)), *dist = rk_malloc(n * sizeof(double));
    double *cnorm = rk_malloc((size_t)K * sizeof(double)), *sum = rk_malloc((size_t)K * dim * sizeof(double));
    size_t *cnt = rk_malloc((size_t)K * sizeof(size_t));
    uint32_t *lab = rk_malloc(n * sizeof(uint32_t));
    uint8_t *taken = rk_malloc(n);
    rk_status st = RK_OK;
    if (!r || !cent || !S || !rnorm || !dist || !cnorm || !sum || !cnt || !lab || !taken) {
        st = rk_fail(err, RK_ENOMEM, "sid: out of memory for %zu x %d embeddings, K = %d", n, dim, K);
        goto done;
    }
    memcpy(r, x, nd * sizeof(float));
    rk_rng rng;
    rk_rng_seed(&rng, o->seed);
    for (int l = 0; l < levels; l++) {
        float *c = cent + (size_t)l * K * dim;
        kmeanspp(r, n, dim, K, &rng, c, dist, err);
        for (size_t i = 0; i < n; i++) {
            double s = 0;
            for (int d = 0; d < dim; d++) s += (double)r[i * (size_t)dim + d] * r[i * (size_t)dim + d];
            rnorm[i] = s;
            lab[i] = UINT32_MAX;
        }
        int it = 0, repairs = 0;
        size_t changed = 0;
        for (it = 0; it < o->max_iters; it++) {
            changed = assign(r, rnorm, n, dim, c, K, S, cnorm, lab, dist);
            if (changed == 0 && repairs == 0) break;
            repairs = update(r, n, dim, K, lab, dist, c, sum, cnt, taken);
        }
        if (!o->quiet)
            rk_info("sid: level %d/%d: %d Lloyd iterations, %zu labels changed in the last", l + 1, levels, it,
                    changed);
        /* residuals for the next level, from the final assignment */
        changed = assign(r, rnorm, n, dim, c, K, S, cnorm, lab, dist);
        for (size_t i = 0; i < n; i++) {
            const float *ck = c + (size_t)lab[i] * dim;
            for (int d = 0; d < dim; d++) r[i * (size_t)dim + d] -= ck[d];
        }
    }
    out->levels = levels;
    out->codes = K;
    out->dim = dim;
    out->centroids = cent;
    cent = NULL;
done:
    rk_free(r);
    rk_free(cent);
    rk_free(S);
    rk_free(rnorm);
    rk_free(dist);
    rk_free(cnorm);
    rk_free(sum);
    rk_free(cnt);
    rk_free(lab);
    rk_free(taken);
    return st;
}

rk_status rk_sid_encode_one(const rk_sid_codebook *cb, const float *x, uint32_t *codes_out, float *resid,
                            rk_err *err) {
    int dim = cb->dim, K = cb->codes;
    for (int d = 0; d < dim; d++)
        if (!isfinite(x[d])) return rk_fail(err, RK_ENUMERIC, "sid: embedding column %d is not finite", d);
    /* residual in double on the stack in chunks would need dim bounds; keep
     * it in float like the stored centroids, updated in a fixed order */
    float rbuf[1024];
    float *r = resid ? resid : rbuf;
    if (!resid && dim > 1024) return rk_fail(err, RK_EINVAL, "sid: dim %d > 1024 needs a resid buffer", dim);
    memcpy(r, x, (size_t)dim * sizeof(float));
    for (int l = 0; l < cb->levels; l++) {
        const float *c = cb->centroids + (size_t)l * K * dim;
        double best = DBL_MAX;
        uint32_t bk = 0;
        for (int k = 0; k < K; k++) {
            double dd = sqdist(r, c + (size_t)k * dim, dim);
            if (dd < best) {
                best = dd;
                bk = (uint32_t)k;
            }
        }
        codes_out[l] = bk;
        const float *ck = c + (size_t)bk * dim;
        for (int d = 0; d < dim; d++) r[d] -= ck[d];
    }
    return RK_OK;
}

rk_status rk_sid_encode(const rk_sid_codebook *cb, const float *x, size_t n, uint32_t *codes, rk_err *err) {
    float *r = rk_malloc((size_t)cb->dim * sizeof(float));
    if (!r) return rk_fail(err, RK_ENOMEM, "sid: out of memory");
    rk_status st = RK_OK;
    for (size_t i = 0; i < n && !st; i++)
        if ((st = rk_sid_encode_one(cb, x + i * (size_t)cb->dim, codes + i * (size_t)cb->levels, r, err)))
            rk_err_prefix(err, "row %zu", i);
    rk_free(r);
    return st;
}

static int cmp_tuple_L;
static const uint32_t *cmp_tuple_codes;
static int cmp_tuple(const void *a, const void *b) {
    const uint32_t *x = cmp_tuple_codes + *(const size_t *)a * (size_t)cmp_tuple_L;
    const uint32_t *y = cmp_tuple_codes + *(const size_t *)b * (size_t)cmp_tuple_L;
    for (int l = 0; l < cmp_tuple_L; l++)
        if (x[l] != y[l]) return x[l] < y[l] ? -1 : 1;
    return 0;
}

rk_status rk_sid_compute_stats(const rk_sid_codebook *cb, const float *x, size_t n, const uint32_t *codes,
                               rk_sid_stats *out, rk_err *err) {
    memset(out, 0, sizeof *out);
    int L = cb->levels, K = cb->codes, dim = cb->dim;
    if (n == 0) return rk_fail(err, RK_EINVAL, "sid stats: no embeddings");
    float *r = rk_malloc((size_t)dim * sizeof(float));
    uint8_t *used = rk_calloc((size_t)L * K, 1);
    size_t *order = rk_malloc(n * sizeof(size_t));
    if (!r || !used || !order) {
        rk_free(r);
        rk_free(used);
        rk_free(order);
        return rk_fail(err, RK_ENOMEM, "sid stats: out of memory");
    }
    double norm = 0;
    for (size_t i = 0; i < n; i++) {
        const float *xi = x + i * (size_t)dim;
        memcpy(r, xi, (size_t)dim * sizeof(float));
        for (int d = 0; d < dim; d++) norm += (double)xi[d] * xi[d];
        for (int l = 0; l < L; l++) {
            uint32_t c = codes[i * (size_t)L + l];
            RK_ASSERT(c < (uint32_t)K);
            used[(size_t)l * K + c] = 1;
            const float *v = cb->centroids + ((size_t)l * K + c) * dim;
            double e = 0;
            for (int d = 0; d < dim; d++) {
                r[d] -= v[d];
                e += (double)r[d] * r[d];
            }
            out->recon_mse[l] += e;
        }
    }
    norm /= (double)n;
    for (int l = 0; l < L; l++) {
        out->recon_mse[l] /= (double)n;
        out->rel_error[l] = norm > 0 ? out->recon_mse[l] / norm : 0;
        size_t u = 0;
        for (int k = 0; k < K; k++) u += used[(size_t)l * K + k];
        out->utilisation[l] = (double)u / (double)K;
    }
    for (size_t i = 0; i < n; i++) order[i] = i;
    cmp_tuple_L = L;
    cmp_tuple_codes = codes;
    qsort(order, n, sizeof(size_t), cmp_tuple);
    size_t collided = 0;
    for (size_t i = 0; i < n;) {
        size_t j = i + 1;
        while (j < n && cmp_tuple(&order[i], &order[j]) == 0) j++;
        out->n_unique++;
        if (j - i > 1) collided += j - i;
        i = j;
    }
    out->collision_rate = (double)collided / (double)n;
    rk_free(r);
    rk_free(used);
    rk_free(order);
    return RK_OK;
}

/* ---------------------------------------------------------------- files */

rk_status rk_sid_codebook_save(const rk_sid_codebook *cb, const char *path, const char *version, rk_err *err) {
    rk_st_writer *w;
    rk_status st = rk_st_writer_create(&w, err);
    if (st) return st;
    int64_t shape[3] = {cb->levels, cb->codes, cb->dim};
    char lv[16], kv[16];
    snprintf(lv, sizeof lv, "%d", cb->levels);
    snprintf(kv, sizeof kv, "%d", cb->codes);
    if (!(st = rk_st_writer_add_f32(w, "codebooks", cb->centroids, 3, shape, err)) &&
        !(st = rk_st_writer_add_meta(w, "rankd.sid.levels", lv, err)) &&
        !(st = rk_st_writer_add_meta(w, "rankd.sid.codes", kv, err)) &&
        !(st = rk_st_writer_add_meta(w, "rankd.sid.version", version ? version : "", err)))
        st = rk_st_writer_write(w, path, err); /* atomic: rk_write_file_atomic */
    rk_st_writer_destroy(w);
    return st;
}

static rk_status load_codebook_from(const rk_st_file *f, const char *path, rk_sid_codebook *out, rk_err *err) {
    const float *data;
    int ndim;
    int64_t shape[4];
    rk_status st = rk_st_get_f32(f, "codebooks", &data, &ndim, shape, err);
    if (st) return st; /* the message names the file */
    if (ndim != 3) return rk_fail(err, RK_EFORMAT, "%s: tensor 'codebooks' has %d dims, expected 3 [L, K, D]", path, ndim);
    if (shape[0] < 1 || shape[0] > RK_SID_MAX_LEVELS || shape[1] < 2 || shape[1] > (1 << 24) || shape[2] < 1)
        return rk_fail(err, RK_EFORMAT, "%s: tensor 'codebooks' shape [%lld, %lld, %lld] out of range", path,
                       (long long)shape[0], (long long)shape[1], (long long)shape[2]);
    size_t n = (size_t)(shape[0] * shape[1] * shape[2]);
    float *c = rk_malloc(n * sizeof(float));
    if (!c) return rk_fail(err, RK_ENOMEM, "%s: out of memory", path);
    memcpy(c, data, n * sizeof(float)); /* data may be unaligned: memcpy */
    for (size_t i = 0; i < n; i++)
        if (!isfinite(c[i])) {
            rk_free(c);
            return rk_fail(err, RK_EFORMAT, "%s: codebooks value %zu is not finite", path, i);
        }
    out->levels = (int)shape[0];
    out->codes = (int)shape[1];
    out->dim = (int)shape[2];
    out->centroids = c;
    return RK_OK;
}

rk_status rk_sid_codebook_load(const char *path, rk_sid_codebook *out, rk_err *err) {
    memset(out, 0, sizeof *out);
    rk_st_file *f;
    rk_status st = rk_st_open(path, &f, err);
    if (st) return st;
    st = load_codebook_from(f, path, out, err);
    rk_st_close(f);
    return st;
}

/* ---------------------------------------------------------------- token rows */

static const char *const param_names[RK_PARAM_COUNT] = {"hash",        "individual",   "trigram", "fourgram",
                                                        "all_bigrams", "prefix_ngram", "unigram"};

const char *rk_sid_param_name(rk_sid_param p) {
    return (unsigned)p < RK_PARAM_COUNT ? param_names[p] : "?";
}

rk_status rk_sid_param_parse(const char *name, rk_sid_param *out, rk_err *err) {
    for (int i = 0; i < RK_PARAM_COUNT; i++)
        if (!strcmp(name, param_names[i])) {
            *out = (rk_sid_param)i;
            return RK_OK;
        }
    return rk_fail(err, RK_EINVAL,
                   "unknown parameterization '%.64s' (hash, individual, trigram, fourgram, all_bigrams, prefix_ngram, "
                   "unigram)",
                   name);
}

int rk_sid_param_uses_codes(rk_sid_param p) { return p >= RK_PARAM_TRIGRAM && p < RK_PARAM_COUNT; }

int rk_sid_param_rows(rk_sid_param p, int L, int ngram) {
    switch (p) {
    case RK_PARAM_HASH:
    case RK_PARAM_INDIVIDUAL: return 1;
    case RK_PARAM_TRIGRAM: return L >= 3 ? 1 : 0;
    case RK_PARAM_FOURGRAM: return L >= 4 ? 1 : 0;
    case RK_PARAM_ALL_BIGRAMS: return L >= 2 ? L - 1 : 0;
    case RK_PARAM_PREFIX_NGRAM:
        if (ngram == 0) ngram = L;
        return ngram >= 1 && ngram <= L ? ngram : 0;
    case RK_PARAM_UNIGRAM: return L >= 1 ? L : 0;
    }
    return 0;
}

uint64_t rk_sid_mulmod(uint64_t a, uint64_t b, uint64_t m) {
    return (uint64_t)(((unsigned __int128)a * b) % m);
}

/* (t * K + c) mod H for t < H */
static uint64_t horner(uint64_t t, uint32_t K, uint32_t c, uint64_t H) {
    return (uint64_t)(((unsigned __int128)t * K + c) % H);
}

int rk_sid_rows(rk_sid_param p, const uint32_t *c, int L, uint32_t K, int ngram, uint64_t H, uint64_t *rows) {
    RK_ASSERT(H > 0);
    int G = rk_sid_param_rows(p, L, ngram);
    if (G == 0 || !rk_sid_param_uses_codes(p)) return 0;
    switch (p) {
    case RK_PARAM_TRIGRAM:
    case RK_PARAM_FOURGRAM: {
        int g = p == RK_PARAM_TRIGRAM ? 3 : 4;
        uint64_t t = 0;
        for (int i = 0; i < g; i++) t = horner(t, K, c[i], H);
        rows[0] = t;
        break;
    }
    case RK_PARAM_ALL_BIGRAMS:
        /* K^2 (i-1) + K c_i + c_{i+1}: Horner over the digits (i-1, c_i, c_{i+1}) */
        for (int i = 0; i < L - 1; i++) {
            uint64_t t = (uint64_t)i % H;
            t = horner(t, K, c[i], H);
            rows[i] = horner(t, K, c[i + 1], H);
        }
        break;
    case RK_PARAM_PREFIX_NGRAM: {
        /* t_0 = H-1 (= -1 mod H); t_i = (K (t_{i-1} + 1) + c_i) mod H */
        uint64_t t = H - 1;
        for (int i = 0; i < G; i++) {
            uint64_t t1 = t + 1 == H ? 0 : t + 1;
            t = horner(t1, K, c[i], H);
            rows[i] = t;
        }
        break;
    }
    case RK_PARAM_UNIGRAM:
        for (int l = 0; l < L; l++) rows[l] = horner((uint64_t)l % H, K, c[l], H);
        break;
    default: return 0;
    }
    return G;
}

/* ---------------------------------------------------------------- item records */

struct rk_sid_items {
    size_t n;
    int L, K;
    char version[RK_SID_VERSION_MAX];
    int64_t *ids;
    uint32_t *codes;
    size_t cap;      /* index slots, power of two */
    int64_t *slot;   /* position + 1, 0 = empty */
};

static uint64_t id_hash(int64_t id) { return rk_hash64(&id, sizeof id, 0x5ede1d); }

rk_status rk_sid_items_create(const int64_t *ids, const uint32_t *codes, size_t n, int L, int K,
                              const char *version, rk_sid_items **out, rk_err *err) {
    *out = NULL;
    if (L < 1 || L > RK_SID_MAX_LEVELS || K < 2)
        return rk_fail(err, RK_EINVAL, "sid items: levels %d (1..%d) or codes %d (>= 2) out of range", L,
                       RK_SID_MAX_LEVELS, K);
    for (size_t i = 0; i < n * (size_t)L; i++)
        if (codes[i] >= (uint32_t)K)
            return rk_fail(err, RK_EINVAL, "sid items: item %zu level %zu: code %u >= K = %d", i / L, i % L, codes[i], K);
    rk_sid_items *it = rk_calloc(1, sizeof *it);
    if (!it) return rk_fail(err, RK_ENOMEM, "sid items: out of memory");
    it->n = n;
    it->L = L;
    it->K = K;
    snprintf(it->version, sizeof it->version, "%s", version ? version : "");
    it->cap = 16;
    while (it->cap < 2 * n) it->cap *= 2;
    it->ids = rk_malloc((n ? n : 1) * sizeof(int64_t));
    it->codes = rk_malloc((n ? n : 1) * (size_t)L * sizeof(uint32_t));
    it->slot = rk_calloc(it->cap, sizeof(int64_t));
    if (!it->ids || !it->codes || !it->slot) {
        rk_sid_items_destroy(it);
        return rk_fail(err, RK_ENOMEM, "sid items: out of memory for %zu items", n);
    }
    memcpy(it->ids, ids, n * sizeof(int64_t));
    memcpy(it->codes, codes, n * (size_t)L * sizeof(uint32_t));
    for (size_t i = 0; i < n; i++) {
        size_t h = id_hash(ids[i]) & (it->cap - 1);
        while (it->slot[h]) {
            if (it->ids[it->slot[h] - 1] == ids[i]) {
                rk_sid_items_destroy(it);
                return rk_fail(err, RK_EINVAL, "sid items: item id %lld appears twice (row %zu)", (long long)ids[i], i);
            }
            h = (h + 1) & (it->cap - 1);
        }
        it->slot[h] = (int64_t)i + 1;
    }
    *out = it;
    return RK_OK;
}

void rk_sid_items_destroy(rk_sid_items *it) {
    if (!it) return;
    rk_free(it->ids);
    rk_free(it->codes);
    rk_free(it->slot);
    rk_free(it);
}

size_t rk_sid_items_count(const rk_sid_items *it) { return it->n; }
int rk_sid_items_levels(const rk_sid_items *it) { return it->L; }
int rk_sid_items_K(const rk_sid_items *it) { return it->K; }
const char *rk_sid_items_version(const rk_sid_items *it) { return it->version; }
const int64_t *rk_sid_items_ids(const rk_sid_items *it) { return it->ids; }
const uint32_t *rk_sid_items_codes(const rk_sid_items *it) { return it->codes; }

long rk_sid_items_find(const rk_sid_items *it, int64_t id) {
    size_t h = id_hash(id) & (it->cap - 1);
    while (it->slot[h]) {
        if (it->ids[it->slot[h] - 1] == id) return (long)(it->slot[h] - 1);
        h = (h + 1) & (it->cap - 1);
    }
    return -1;
}

rk_status rk_sid_items_save(const rk_sid_items *it, const rk_sid_codebook *cb, const char *path, rk_err *err) {
    int64_t *c64 = rk_malloc((it->n ? it->n : 1) * (size_t)it->L * sizeof(int64_t));
    if (!c64) return rk_fail(err, RK_ENOMEM, "%s: out of memory", path);
    for (size_t i = 0; i < it->n * (size_t)it->L; i++) c64[i] = it->codes[i];
    rk_st_writer *w;
    rk_status st = rk_st_writer_create(&w, err);
    if (st) {
        rk_free(c64);
        return st;
    }
    int64_t s1[1] = {(int64_t)it->n}, s2[2] = {(int64_t)it->n, it->L};
    char lv[16], kv[16];
    snprintf(lv, sizeof lv, "%d", it->L);
    snprintf(kv, sizeof kv, "%d", it->K);
    st = rk_st_writer_add_i64(w, "ids", it->ids, 1, s1, err);
    if (!st) st = rk_st_writer_add_i64(w, "codes", c64, 2, s2, err);
    if (!st && cb) {
        if (cb->levels != it->L || cb->codes != it->K)
            st = rk_fail(err, RK_ESHAPE, "%s: codebook L=%d K=%d but records L=%d K=%d", path, cb->levels, cb->codes,
                         it->L, it->K);
        else {
            int64_t s3[3] = {cb->levels, cb->codes, cb->dim};
            st = rk_st_writer_add_f32(w, "codebooks", cb->centroids, 3, s3, err);
        }
    }
    if (!st) st = rk_st_writer_add_meta(w, "rankd.sid.levels", lv, err);
    if (!st) st = rk_st_writer_add_meta(w, "rankd.sid.codes", kv, err);
    if (!st) st = rk_st_writer_add_meta(w, "rankd.sid.version", it->version, err);
    if (!st) st = rk_st_writer_write(w, path, err); /* atomic: rk_write_file_atomic */
    rk_st_writer_destroy(w);
    rk_free(c64);
    return st;
}

rk_status rk_sid_items_load(const char *path, rk_sid_items **out, rk_err *err) {
    *out = NULL;
    rk_st_file *f;
    rk_status st = rk_st_open(path, &f, err);
    if (st) return st;
    const char *lv = rk_st_meta(f, "rankd.sid.levels"), *kv = rk_st_meta(f, "rankd.sid.codes");
    const char *ver = rk_st_meta(f, "rankd.sid.version");
    int64_t *ids = NULL, *c64 = NULL;
    uint32_t *codes = NULL;
    if (!lv || !kv) {
        st = rk_fail(err, RK_EFORMAT, "%s: not an item-records file (no rankd.sid.levels / rankd.sid.codes metadata)",
                     path);
        goto done;
    }
    int L = atoi(lv), K = atoi(kv);
    if (L < 1 || L > RK_SID_MAX_LEVELS || K < 2) {
        st = rk_fail(err, RK_EFORMAT, "%s: levels '%s' or codes '%s' out of range", path, lv, kv);
        goto done;
    }
    size_t n = 0;
    {
        int nd;
        int64_t shape[4];
        if ((st = rk_st_shape(f, "ids", &nd, shape, err))) goto done;
        if (nd != 1 || shape[0] < 0) {
            st = rk_fail(err, RK_EFORMAT, "%s: tensor 'ids' must be 1-D [n]", path);
            goto done;
        }
        n = (size_t)shape[0];
    }
    ids = rk_malloc((n ? n : 1) * sizeof(int64_t));
    c64 = rk_malloc((n ? n : 1) * (size_t)L * sizeof(int64_t));
    codes = rk_malloc((n ? n : 1) * (size_t)L * sizeof(uint32_t));
    if (!ids || !c64 || !codes) {
        st = rk_fail(err, RK_ENOMEM, "%s: out of memory", path);
        goto done;
    }
    if ((st = rk_st_read_i64(f, "ids", ids, n, err)) || (st = rk_st_read_i64(f, "codes", c64, n * (size_t)L, err)))
        goto done; /* the message names the file */
    for (size_t i = 0; i < n * (size_t)L; i++) {
        if (c64[i] < 0 || c64[i] >= K) {
            st = rk_fail(err, RK_EFORMAT, "%s: item row %zu (id %lld) level %zu: code %lld outside [0, %d)", path,
                         i / L, (long long)ids[i / L], i % L, (long long)c64[i], K);
            goto done;
        }
        codes[i] = (uint32_t)c64[i];
    }
    st = rk_sid_items_create(ids, codes, n, L, K, ver, out, err);
    if (st) {
        st = RK_EFORMAT;
        if (err) err->code = st;
        rk_err_prefix(err, "%s", path);
    }
done:
    rk_free(ids);
    rk_free(c64);
    rk_free(codes);
    rk_st_close(f);
    return st;
}
