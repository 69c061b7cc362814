/*
 * rank/dataset.c — read a TSV of examples (header line of column names,
 * tab-separated fields, '|' between the values of a multi-valued field)
 * and featurize it for a model config: sparse values hashed to table rows,
 * dense values transformed and standardized, label parsed (0 or 1).
 * Errors name the file, row (1-based, header = row 1) and column.
 */
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Where each feature's column is in the file, and room for one row's
 * fields (the header's column count; any number of columns). */
typedef struct {
    int *col_of;    /* [n_features] */
    int label_col;
    int n_cols;
    char **fields;  /* [n_cols + 1] */
} colmap;

static void colmap_free(colmap *cm) {
    rk_free(cm->col_of);
    rk_free(cm->fields);
    memset(cm, 0, sizeof *cm);
}

/* A feature must not read the label, nor a column that schema.json beside
 * the file marks "label_derived" (rank data movielens: `rating`, from
 * which the label is computed): the model would learn the answer. */
static rk_status check_leaks(const char *path, const rk_model_cfg *cfg, rk_err *err) {
    for (int f = 0; f < cfg->n_features; f++)
        if (!strcmp(cfg->features[f].column, cfg->label_column))
            return rk_fail(err, RK_EINVAL, "config '%s': feature '%s' reads the label column '%s'", cfg->name, cfg->features[f].name,
                           cfg->label_column);
    char schema[1024];
    const char *sl = strrchr(path, '/');
    snprintf(schema, sizeof schema, "%.*sschema.json", sl ? (int)(sl - path + 1) : 0, path);
    json_t *root = json_load_file(schema, 0, NULL);
    if (!root) return RK_OK; /* no (readable) schema: nothing known */
    json_t *cols = json_object_get(root, "columns"), *c;
    size_t i;
    rk_status s = RK_OK;
    json_array_foreach(cols, i, c) {
        const char *name = json_string_value(json_object_get(c, "name"));
        if (!name || !json_is_true(json_object_get(c, "label_derived"))) continue;
        for (int f = 0; f < cfg->n_features && s == RK_OK; f++)
            if (!strcmp(cfg->features[f].column, name))
                s = rk_fail(err, RK_EINVAL,
                            "config '%s': feature '%s' reads column '%s' of %s, which %s marks as derived from the label "
                            "(label_derived): it would leak the label",
                            cfg->name, cfg->features[f].name, name, path, schema);
    }
    json_decref(root);
    return s;
}

/* Header names -> columns through a hash map (rk_strmap), so a file of
 * thousands of columns maps in linear time. */
static rk_status map_names(const char *path, char **fields, int n, const rk_model_cfg *cfg, colmap *cm, int need_label,
                           rk_err *err) {
    rk_strmap *by = rk_strmap_create((size_t)n);
    if (!by) return rk_fail(err, RK_ENOMEM, "%s: out of memory for %d columns", path, n);
    rk_status s = RK_OK;
    for (int i = 0; i < n && s == RK_OK; i++) {
        rk_status p = rk_strmap_put(by, fields[i], strlen(fields[i]), i);
        if (p == RK_EEXIST)
            s = rk_fail(err, RK_EFORMAT, "%s row 1: column '%.64s' appears twice (columns %d and %d)", path, fields[i],
                        rk_strmap_get(by, fields[i], strlen(fields[i])) + 1, i + 1);
        else if (p)
            s = rk_fail(err, RK_ENOMEM, "%s: out of memory for %d columns", path, n);
    }
    cm->label_col = s ? -1 : rk_strmap_get(by, cfg->label_column, strlen(cfg->label_column));
    if (s == RK_OK && need_label && cm->label_col < 0)
        s = rk_fail(err, RK_EFORMAT, "%s row 1: no label column '%s' in the header", path, cfg->label_column);
    for (int f = 0; s == RK_OK && f < cfg->n_features; f++) {
        cm->col_of[f] = rk_strmap_get(by, cfg->features[f].column, strlen(cfg->features[f].column));
        if (cm->col_of[f] < 0)
            s = rk_fail(err, RK_EFORMAT, "%s row 1: no column '%s' (feature '%s') in the header", path,
                        cfg->features[f].column, cfg->features[f].name);
    }
    rk_strmap_destroy(by);
    return s;
}

static rk_status map_header(const char *path, char *line, const rk_model_cfg *cfg, colmap *cm, int need_label, rk_err *err) {
    memset(cm, 0, sizeof *cm);
    if (!strncmp(line, "\xef\xbb\xbf", 3)) line += 3; /* a UTF-8 byte-order mark is not part of the first name */
    int n = 1;
    for (const char *p = line; (p = strchr(p, '\t')); p++) n++;
    cm->n_cols = n;
    cm->fields = rk_malloc(((size_t)n + 1) * sizeof *cm->fields);
    cm->col_of = rk_malloc(((size_t)cfg->n_features + 1) * sizeof *cm->col_of);
    if (!cm->fields || !cm->col_of) return rk_fail(err, RK_ENOMEM, "%s: out of memory for %d columns", path, n);
    rk_split_tabs(line, cm->fields, n);
    rk_status s = map_names(path, cm->fields, n, cfg, cm, need_label, err);
    return s ? s : check_leaks(path, cfg, err);
}

static rk_status grow(void **p, size_t *cap, size_t need, size_t elem, rk_err *err) {
    if (need <= *cap) return RK_OK;
    size_t c = *cap ? *cap : 1024;
    while (c < need) c *= 2;
    void *q = rk_realloc(*p, c * elem);
    if (!q) return rk_fail(err, RK_ENOMEM, "dataset: out of memory");
    *p = q;
    *cap = c;
    return RK_OK;
}

static rk_status parse_double(const char *s, double *out) {
    char *end;
    if (!*s) return RK_EINVAL;
    *out = strtod(s, &end);
    return *end ? RK_EINVAL : RK_OK;
}

rk_status rk_dataset_fit_dense(const char *path, rk_model_cfg *cfg, rk_err *err) {
    char *buf;
    rk_status s = rk_read_text(path, &buf, NULL, err);
    if (s) return s;
    char *cur = buf, *line = rk_next_line(&cur);
    colmap cm;
    if (!line) {
        rk_free(buf);
        return rk_fail(err, RK_EFORMAT, "%s: empty file", path);
    }
    double *sum = rk_calloc(3 * ((size_t)cfg->n_features + 1), sizeof(double)), *sq = NULL, *cnt = NULL;
    if ((s = map_header(path, line, cfg, &cm, 0, err)) || !sum) {
        if (!s) s = rk_fail(err, RK_ENOMEM, "%s: out of memory", path);
        colmap_free(&cm);
        rk_free(sum);
        rk_free(buf);
        return s;
    }
    sq = sum + cfg->n_features + 1;
    cnt = sq + cfg->n_features + 1;
    char **fields = cm.fields;
    long row = 1;
    while ((line = rk_next_line(&cur))) {
        row++;
        if (!line[0]) continue;
        int n = rk_split_tabs(line, fields, cm.n_cols);
        if (n != cm.n_cols) {
            s = rk_fail(err, RK_EFORMAT, "%s row %ld: %d fields, the header has %d", path, row, n, cm.n_cols);
            colmap_free(&cm);
            rk_free(sum);
            rk_free(buf);
            return s;
        }
        for (int f = 0; f < cfg->n_features; f++) {
            rk_feature *ft = &cfg->features[f];
            if (ft->kind != RK_FEAT_DENSE) continue;
            const char *v = fields[cm.col_of[f]];
            if (!*v) continue;
            double x;
            if (parse_double(v, &x) || !isfinite(x) || fabs(x) > RK_DENSE_MAX_ABS || rk_dense_log1p(ft, x, &x)) {
                rk_status st = rk_fail(err, RK_EFORMAT, "%s row %ld, column %s: %s, got '%.40s'", path, row, ft->column,
                                       parse_double(v, &x) ? "expected a finite number within +-1e+09"
                                                           : rk_dense_why(ft, x), v);
                colmap_free(&cm);
                rk_free(sum);
                rk_free(buf); /* v points into buf: format the message first */
                return st;
            }
            sum[f] += x;
            sq[f] += x * x;
            cnt[f]++;
        }
    }
    rk_free(buf);
    colmap_free(&cm);
    for (int f = 0; f < cfg->n_features; f++) {
        rk_feature *ft = &cfg->features[f];
        if (ft->kind != RK_FEAT_DENSE) continue;
        if (cnt[f] == 0) {
            ft->mean = 0;
            ft->std = 1;
            continue;
        }
        double mean = sum[f] / (double)cnt[f];
        double var = sq[f] / (double)cnt[f] - mean * mean;
        ft->mean = mean;
        ft->std = var > 1e-12 ? sqrt(var) : 1.0;
    }
    rk_free(sum);
    return RK_OK;
}

void rk_dataset_free(rk_dataset *d) { rk_batch_free(&d->b); }

rk_status rk_dataset_load(const char *path, const rk_model_cfg *cfg, rk_dataset *d, rk_err *err) {
    memset(d, 0, sizeof *d);
    snprintf(d->path, sizeof d->path, "%s", path);
    char *buf;
    size_t len;
    rk_status s = rk_read_text(path, &buf, &len, err);
    if (s) return s;
    size_t approx_rows = 16;
    for (size_t i = 0; i < len; i++) approx_rows += buf[i] == '\n';
    char *cur = buf, *line = rk_next_line(&cur);
    colmap cm;
    if (!line) {
        rk_free(buf);
        return rk_fail(err, RK_EFORMAT, "%s: empty file", path);
    }
    if ((s = map_header(path, line, cfg, &cm, 0, err))) {
        colmap_free(&cm);
        rk_free(buf);
        return s;
    }
    rk_batch *b = &d->b;
    if ((s = rk_batch_alloc(b, cfg, (int)approx_rows, 1024, err))) {
        colmap_free(&cm);
        rk_free(buf);
        return s;
    }
    for (int f = 0; f < cfg->n_features; f++)
        if (cfg->features[f].kind == RK_FEAT_SPARSE && cfg->features[f].param != RK_PARAM_HASH && !cfg->features[f].items) {
            s = rk_fail(err, RK_EINVAL, "%s: feature '%s' (param %s) has no item records attached (model.json \"sid\")", path,
                        cfg->features[f].name, rk_sid_param_name(cfg->features[f].param));
            colmap_free(&cm);
            rk_free(buf);
            rk_batch_free(b);
            return s;
        }
    size_t *no_codes = rk_calloc((size_t)cfg->n_features + 1, sizeof *no_codes);
    char **fields = cm.fields;
    if (!no_codes) {
        s = rk_fail(err, RK_ENOMEM, "%s: out of memory", path);
        goto fail;
    }
    long row = 1;
    int r = 0;
    rk_progress pg;
    rk_progress_start(&pg, "load", "rows", approx_rows > 17 ? approx_rows - 17 : 0); /* newlines less the header's */
    while ((line = rk_next_line(&cur))) {
        row++;
        if (!line[0]) continue;
        int n = rk_split_tabs(line, fields, cm.n_cols);
        if (n != cm.n_cols) {
            s = rk_fail(err, RK_EFORMAT, "%s row %ld: %d fields, the header has %d", path, row, n, cm.n_cols);
            goto fail;
        }
        const char *lv = cm.label_col >= 0 ? fields[cm.label_col] : "0";
        if (!strcmp(lv, "1") || !strcmp(lv, "1.0")) b->labels[r] = 1;
        else if (!strcmp(lv, "0") || !strcmp(lv, "0.0")) b->labels[r] = 0;
        else {
            s = rk_fail(err, RK_EFORMAT, "%s row %ld, column %s: expected 0 or 1, got '%.40s'", path, row, cfg->label_column, lv);
            goto fail;
        }
        for (int f = 0; f < cfg->n_features; f++) {
            const rk_feature *ft = &cfg->features[f];
            char *v = fields[cm.col_of[f]];
            if (ft->kind == RK_FEAT_DENSE) {
                float out = 0;
                if (*v) {
                    double x;
                    if (parse_double(v, &x) || rk_dense_value(ft, x, &out)) {
                        s = rk_fail(err, RK_EFORMAT, "%s row %ld, column %s: %s, got '%.40s'", path, row, ft->column,
                                    parse_double(v, &x) ? "expected a finite number within +-1e+09" : rk_dense_why(ft, x), v);
                        goto fail;
                    }
                }
                b->dense[(size_t)r * b->n_features + f] = out;
                continue;
            }
            uint32_t k = b->offsets[f][r];
            int taken = 0;
            char *p = v;
            while (*p && (ft->max_values == 0 || taken < ft->max_values)) {
                char *bar = strchr(p, '|');
                size_t L = bar ? (size_t)(bar - p) : strlen(p);
                if (L) {
                    if ((s = grow((void **)&b->rows[f], &b->cap_values[f], (size_t)k + RK_SID_MAX_LEVELS, sizeof(uint64_t), err)))
                        goto fail;
                    int64_t id;
                    if (ft->param != RK_PARAM_HASH && !rk_sid_parse_id(p, L, &id)) {
                        s = rk_fail(err, RK_EFORMAT,
                                    "%s row %ld, column %s: feature '%s' (param %s) expects integer item ids "
                                    "(canonical decimal int64), got '%.*s'",
                                    path, row, ft->column, ft->name, rk_sid_param_name(ft->param), (int)(L > 40 ? 40 : L), p);
                        goto fail;
                    }
                    int unknown;
                    k += (uint32_t)rk_value_rows(ft, p, L, b->rows[f] + k, &unknown);
                    no_codes[f] += (size_t)unknown;
                    taken++;
                }
                if (!bar) break;
                p = bar + 1;
            }
            b->offsets[f][r + 1] = k;
        }
        r++;
        rk_progress_add(&pg, 1);
    }
    b->n_rows = r;
    d->has_labels = cm.label_col >= 0;
    if (r == 0) {
        s = rk_fail(err, RK_EFORMAT, "%s: no examples after the header", path);
        goto fail;
    }
    pg.total = (uint64_t)r; /* blank lines and a last line without '\n' made the estimate off by a few */
    if (approx_rows > 100000) rk_progress_finish(&pg);
    for (int f = 0; f < cfg->n_features; f++)
        if (no_codes[f])
            rk_info("%s: feature '%s' (param %s): %zu values are items without records (%s)", path, cfg->features[f].name,
                    rk_sid_param_name(cfg->features[f].param), no_codes[f],
                    cfg->features[f].param == RK_PARAM_INDIVIDUAL ? "OOV row" : "empty bag");
    rk_free(no_codes);
    colmap_free(&cm);
    rk_free(buf);
    return RK_OK;
fail:
    rk_free(no_codes);
    colmap_free(&cm);
    rk_free(buf);
    rk_dataset_free(d);
    return s;
}
