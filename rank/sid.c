/*
 * rank/sid.c — semantic-ID parameterizations of sparse features inside the
 * model: the rows of one feature value (random hashing, individual
 * embedding, or the token rows of the item's semantic-ID codes), the item
 * records and codebooks a feature needs (loaded at training time from the
 * records file named in model.json, carried in the bundle), and their
 * place in the bundle:
 *
 *   tables/  column family "sid.<feature>": key = item id (int64 as the
 *            8-byte big-endian key of a keyed table), value = the item's L
 *            codes as float32 (exact below 2^24), default row all -1
 *   sid.<feature>.safetensors   the codebooks [L, K, D] used to assign codes
 *            at request time to items the records do not know
 *   model.json features[].param / ngram / sid, and sid_version (the content
 *            embedding's version of the records)
 *
 * Item ids are canonical decimal int64 (rk_sid_parse_id): training and
 * scoring files refuse any other spelling (rank/dataset.c); at serving time
 * an ad_id that is not one is an item no records know. Items without codes
 * (unknown id) get no rows: an empty bag, so the feature contributes the
 * zero vector, and are counted. Under "individual" they get the OOV row
 * table_size - 1.
 */
#define _GNU_SOURCE /* qsort_r */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int rk_sid_parse_id(const char *v, size_t len, int64_t *out) {
    /* canonical decimal only: an optional '-', no sign '+', no spaces, no
     * leading zeros, no "-0", within int64; so one id has one spelling */
    char buf[32];
    if (len == 0 || len >= sizeof buf) return 0;
    size_t i = v[0] == '-';
    if (i == len) return 0;
    for (size_t k = i; k < len; k++)
        if (v[k] < '0' || v[k] > '9') return 0;
    if (v[i] == '0' && (len - i > 1 || i)) return 0;
    memcpy(buf, v, len);
    buf[len] = 0;
    char *end;
    errno = 0;
    long long x = strtoll(buf, &end, 10);
    if (*end || errno) return 0;
    *out = x;
    return 1;
}

int rk_codes_rows(const rk_feature *ft, const uint32_t *codes, uint64_t *out) {
    const rk_sid_items *it = ft->items;
    return rk_sid_rows(ft->param, codes, rk_sid_items_levels(it), (uint32_t)rk_sid_items_K(it), ft->ngram,
                       ft->table_size, out);
}

int rk_value_rows(const rk_feature *ft, const char *value, size_t len, uint64_t *out, int *unknown) {
    *unknown = 0;
    if (ft->param == RK_PARAM_HASH) {
        out[0] = rk_feature_row(ft->name, value, len, ft->table_size);
        return 1;
    }
    RK_ASSERT(ft->items);
    int64_t id;
    long pos = rk_sid_parse_id(value, len, &id) ? rk_sid_items_find(ft->items, id) : -1;
    if (pos < 0) *unknown = 1;
    if (ft->param == RK_PARAM_INDIVIDUAL) {
        out[0] = pos < 0 ? ft->table_size - 1 : (uint64_t)pos;
        return 1;
    }
    if (pos < 0) return 0;
    return rk_codes_rows(ft, rk_sid_items_codes(ft->items) + (size_t)pos * rk_sid_items_levels(ft->items), out);
}

rk_status rk_sid_check_feature(const rk_feature *ft, const rk_sid_items *it, rk_err *err) {
    int L = rk_sid_items_levels(it);
    if (ft->param == RK_PARAM_INDIVIDUAL && ft->table_size < rk_sid_items_count(it) + 1)
        return rk_fail(err, RK_EINVAL,
                       "feature '%s': param individual needs table_size >= %zu (one row per item + the OOV row), "
                       "got %llu",
                       ft->name, rk_sid_items_count(it) + 1, (unsigned long long)ft->table_size);
    if (rk_sid_param_uses_codes(ft->param) && rk_sid_param_rows(ft->param, L, ft->ngram) == 0) {
        if (ft->param == RK_PARAM_PREFIX_NGRAM)
            return rk_fail(err, RK_EINVAL, "feature '%s': \"ngram\": %d does not fit the %d levels of the records %s (1..%d)",
                           ft->name, ft->ngram, L, ft->sid, L);
        return rk_fail(err, RK_EINVAL, "feature '%s': \"param\": \"%s\" needs records of at least %d levels, %s has %d",
                       ft->name, rk_sid_param_name(ft->param), ft->param == RK_PARAM_TRIGRAM ? 3 : ft->param == RK_PARAM_FOURGRAM ? 4 : 2,
                       ft->sid, L);
    }
    return RK_OK;
}

rk_status rk_cfg_sid_attach(rk_model_cfg *cfg, rk_sid_items **owned, rk_sid_codebook *cbs, rk_err *err) {
    for (int f = 0; f < cfg->n_features; f++) {
        owned[f] = NULL;
        memset(&cbs[f], 0, sizeof cbs[f]);
    }
    for (int f = 0; f < cfg->n_features; f++) {
        rk_feature *ft = &cfg->features[f];
        if (ft->kind != RK_FEAT_SPARSE || ft->param == RK_PARAM_HASH || ft->items) continue;
        rk_status s;
        if (!ft->sid[0]) {
            s = rk_fail(err, RK_EINVAL, "feature '%s': param %s needs \"sid\": the item-records file of rank sid build",
                        ft->name, rk_sid_param_name(ft->param));
            goto fail;
        }
        if ((s = rk_sid_items_load(ft->sid, &owned[f], err))) {
            rk_err_prefix(err, "feature '%s' sid", ft->name);
            goto fail;
        }
        if ((s = rk_sid_check_feature(ft, owned[f], err))) goto fail;
        rk_err e2;
        if (rk_sid_codebook_load(ft->sid, &cbs[f], &e2) == RK_OK &&
            (cbs[f].levels != rk_sid_items_levels(owned[f]) || cbs[f].codes != rk_sid_items_K(owned[f]))) {
            s = rk_fail(err, RK_EFORMAT, "%s: codebooks L=%d K=%d do not match the records' L=%d K=%d", ft->sid,
                        cbs[f].levels, cbs[f].codes, rk_sid_items_levels(owned[f]), rk_sid_items_K(owned[f]));
            goto fail;
        }
        ft->items = owned[f];
        continue;
    fail:
        for (int g = 0; g < cfg->n_features; g++) {
            rk_sid_items_destroy(owned[g]);
            owned[g] = NULL;
            rk_sid_codebook_free(&cbs[g]);
            if (cfg->features[g].param != RK_PARAM_HASH) cfg->features[g].items = NULL;
        }
        return s;
    }
    return RK_OK;
}

/* ---------------------------------------------------------------- bundle */

void rk_sid_table_name(const rk_feature *ft, char *buf, size_t cap) { snprintf(buf, cap, "sid.%s", ft->name); }

static int cmp_pos(const void *a, const void *b, void *ids) {
    int64_t x = ((const int64_t *)ids)[*(const size_t *)a], y = ((const int64_t *)ids)[*(const size_t *)b];
    return (uint64_t)x < (uint64_t)y ? -1 : (uint64_t)x > (uint64_t)y;
}

rk_status rk_sid_table_data(const rk_sid_items *it, uint64_t **keys_out, float **data_out, rk_err *err) {
    size_t n = rk_sid_items_count(it);
    int L = rk_sid_items_levels(it);
    size_t *order = rk_malloc((n ? n : 1) * sizeof(size_t));
    uint64_t *keys = rk_malloc((n ? n : 1) * sizeof(uint64_t));
    float *data = rk_malloc((n ? n : 1) * (size_t)L * sizeof(float));
    if (!order || !keys || !data) {
        rk_free(order);
        rk_free(keys);
        rk_free(data);
        return rk_fail(err, RK_ENOMEM, "sid records: out of memory for %zu items", n);
    }
    const int64_t *ids = rk_sid_items_ids(it);
    const uint32_t *codes = rk_sid_items_codes(it);
    for (size_t i = 0; i < n; i++) order[i] = i;
    qsort_r(order, n, sizeof(size_t), cmp_pos, (void *)ids);
    for (size_t i = 0; i < n; i++) {
        keys[i] = (uint64_t)ids[order[i]];
        for (int l = 0; l < L; l++) data[i * L + l] = (float)codes[order[i] * L + l];
    }
    rk_free(order);
    *keys_out = keys;
    *data_out = data;
    return RK_OK;
}

typedef struct {
    int L, K;
    size_t n, cap;
    int64_t *ids;
    uint32_t *codes;
    int bad;
    uint64_t bad_key;
} scan_ctx;

static int scan_row(void *vctx, uint64_t key, const float *row) {
    scan_ctx *c = vctx;
    if (c->n == c->cap) {
        size_t cap = c->cap ? 2 * c->cap : 1024;
        int64_t *ids = rk_realloc(c->ids, cap * sizeof(int64_t));
        if (ids) c->ids = ids;
        uint32_t *codes = rk_realloc(c->codes, cap * (size_t)c->L * sizeof(uint32_t));
        if (codes) c->codes = codes;
        if (!ids || !codes) {
            c->bad = 2;
            return 1;
        }
        c->cap = cap;
    }
    for (int l = 0; l < c->L; l++) {
        float v = row[l];
        if (!(v >= 0 && v < (float)c->K) || v != (float)(uint32_t)v) {
            c->bad = 1;
            c->bad_key = key;
            return 1;
        }
        c->codes[c->n * c->L + l] = (uint32_t)v;
    }
    c->ids[c->n++] = (int64_t)key;
    return 0;
}

rk_status rk_sid_load_from_store(rk_store *st, const rk_feature *ft, int K, const char *version,
                                 rk_sid_items **out, rk_err *err) {
    char name[RK_NAME_MAX + 8];
    rk_sid_table_name(ft, name, sizeof name);
    int t = rk_store_find(st, name);
    if (t < 0) return rk_fail(err, RK_ENOTFOUND, "table '%s' (the item records of feature '%s') missing", name, ft->name);
    rk_table_info ti;
    rk_store_table_info(st, t, &ti);
    scan_ctx c = {.L = ti.dim, .K = K};
    if (ti.dim < 1 || ti.dim > RK_SID_MAX_LEVELS)
        return rk_fail(err, RK_EFORMAT, "table '%s': dim %d is not a number of levels (1..%d)", name, ti.dim,
                       RK_SID_MAX_LEVELS);
    rk_status s = rk_store_scan(st, t, scan_row, &c, err);
    if (s == RK_OK && c.bad == 2) s = rk_fail(err, RK_ENOMEM, "table '%s': out of memory", name);
    if (s == RK_OK && c.bad == 1)
        s = rk_fail(err, RK_EFORMAT, "table '%s': item %lld has a code outside [0, %d)", name, (long long)c.bad_key, K);
    if (s == RK_OK) s = rk_sid_items_create(c.ids, c.codes, c.n, c.L, K, version, out, err);
    rk_free(c.ids);
    rk_free(c.codes);
    return s;
}
