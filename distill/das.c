/*
 * distill/das.c — ExFM's data augmentation system (papers.md §3(a).2): the
 * teacher's prediction for each example, computed once per unique example
 * id across verticals and logged beside the examples in a RocksDB column
 * family ("das_teacher", key = example id, value = [teacher logit, teacher
 * version + 1] fp32) through store/. Students read only this log.
 */
#include "distill.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "store.h"

#define DAS_TABLE "das_teacher"
#define DAS_BATCH 4096

struct rk_das {
    rk_store *store;
    uint64_t n;
    float *buf;      /* [DAS_BATCH, 2] */
    uint64_t *keys;  /* [DAS_BATCH] */
};

void rk_das_close(rk_das *d) {
    if (!d) return;
    rk_store_close(d->store);
    rk_free(d->buf);
    rk_free(d->keys);
    rk_free(d);
}

rk_status rk_das_create(const char *dir, uint64_t n_examples, rk_das **out, rk_err *err) {
    *out = NULL;
    if (n_examples == 0) return rk_fail(err, RK_EINVAL, "DAS log %s: no examples", dir);
    /* The store is published with every row [0, 0] = "not logged", then
     * opened writable for the per-chunk log batches. */
    float *zeros = rk_calloc(n_examples * 2, sizeof(float));
    if (!zeros) return rk_fail(err, RK_ENOMEM, "DAS log %s: out of memory for %llu rows", dir, (unsigned long long)n_examples);
    rk_table_spec spec = {DAS_TABLE, 2, n_examples, zeros};
    rk_status s = rk_store_write(dir, &spec, 1, err);
    rk_free(zeros);
    if (s) return rk_err_prefix(err, "DAS log");
    rk_das *d = rk_calloc(1, sizeof *d);
    if (!d) return rk_fail(err, RK_ENOMEM, "DAS log: out of memory");
    d->n = n_examples;
    d->buf = rk_malloc(DAS_BATCH * 2 * sizeof(float));
    d->keys = rk_malloc(DAS_BATCH * sizeof(uint64_t));
    if (!d->buf || !d->keys) {
        rk_das_close(d);
        return rk_fail(err, RK_ENOMEM, "DAS log: out of memory");
    }
    rk_store_opts o = RK_STORE_OPTS_DEFAULT;
    o.writable = 1;
    o.cache_bytes = 0;
    const char *names[1] = {DAS_TABLE};
    int dims[1] = {2};
    if ((s = rk_store_open_ex(dir, names, dims, 1, &o, &d->store, err))) {
        rk_das_close(d);
        return rk_err_prefix(err, "DAS log");
    }
    *out = d;
    return RK_OK;
}

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

rk_status rk_das_get(rk_das *d, const uint32_t *ids, size_t n, float *logit, int *version, rk_err *err) {
    for (size_t i0 = 0; i0 < n; i0 += DAS_BATCH) {
        size_t m = n - i0 < DAS_BATCH ? n - i0 : DAS_BATCH;
        for (size_t i = 0; i < m; i++) {
            if (ids[i0 + i] >= d->n)
                return rk_fail(err, RK_EINVAL, "DAS log: example id %u out of range [0, %llu)", ids[i0 + i], (unsigned long long)d->n);
            d->keys[i] = ids[i0 + i];
        }
        rk_status s = rk_store_get(d->store, 0, d->keys, m, d->buf, NULL, err);
        if (s) return rk_err_prefix(err, "DAS log");
        for (size_t i = 0; i < m; i++) {
            int logged = d->buf[2 * i + 1] > 0.5f;
            logit[i0 + i] = logged ? d->buf[2 * i] : NAN;
            if (version) version[i0 + i] = logged ? (int)lrintf(d->buf[2 * i + 1]) - 1 : -1;
        }
    }
    return RK_OK;
}

rk_status rk_das_log(rk_das *d, const uint32_t *ids, size_t n, rk_das_score_fn score, void *ctx, int version,
                     size_t *n_scored, rk_err *err) {
    if (n_scored) *n_scored = 0;
    if (version < 0) return rk_fail(err, RK_EINVAL, "DAS log: teacher version must be >= 0, got %d", version);
    if (!n) return RK_OK;
    uint32_t *u = rk_malloc(n * sizeof(uint32_t));
    float *lg = rk_malloc(DAS_BATCH * sizeof(float));
    rk_status s = RK_OK;
    if (!u || !lg) {
        s = rk_fail(err, RK_ENOMEM, "DAS log: out of memory for %zu ids", n);
        goto done;
    }
    memcpy(u, ids, n * sizeof(uint32_t));
    qsort(u, n, sizeof(uint32_t), cmp_u32);
    size_t nu = 0;
    for (size_t i = 0; i < n; i++)
        if (i == 0 || u[i] != u[nu - 1]) u[nu++] = u[i];
    if (u[nu - 1] >= d->n) {
        s = rk_fail(err, RK_EINVAL, "DAS log: example id %u out of range [0, %llu)", u[nu - 1], (unsigned long long)d->n);
        goto done;
    }
    /* drop ids already logged (by an earlier call) */
    size_t k = 0;
    for (size_t i0 = 0; i0 < nu; i0 += DAS_BATCH) {
        size_t m = nu - i0 < DAS_BATCH ? nu - i0 : DAS_BATCH;
        if ((s = rk_das_get(d, u + i0, m, lg, NULL, err))) goto done;
        for (size_t i = 0; i < m; i++)
            if (isnan(lg[i])) u[k++] = u[i0 + i];
    }
    for (size_t i0 = 0; i0 < k; i0 += DAS_BATCH) {
        int m = (int)(k - i0 < DAS_BATCH ? k - i0 : DAS_BATCH);
        if ((s = score(ctx, u + i0, m, lg, err))) goto done;
        for (int i = 0; i < m; i++) {
            if (!isfinite(lg[i]) || fabsf(lg[i]) > RK_STORE_MAX_ABS) {
                s = rk_fail(err, RK_ENUMERIC, "DAS log: teacher logit of example %u is %g (not finite or too large)", u[i0 + i],
                            lg[i]);
                goto done;
            }
            d->keys[i] = u[i0 + i];
            d->buf[2 * i] = lg[i];
            d->buf[2 * i + 1] = (float)version + 1;
        }
        if ((s = rk_store_apply(d->store, 0, d->keys, (size_t)m, d->buf, err))) {
            rk_err_prefix(err, "DAS log");
            goto done;
        }
    }
    if (n_scored) *n_scored = k;
done:
    rk_free(u);
    rk_free(lg);
    return s;
}
