/*
 * serve/rows.c — RankRequests from TSV rows: the one path from a data file
 * to requests, shared by `rank query`, rank-bench and the tests.
 *
 * A file is read once through core's rk_read_text (a BOM dropped, CRLF
 * lines, a NUL refused naming row and column), each of the model's features
 * is mapped to the header column of its name, sparse cells are split on '|'
 * and dense cells parsed (errors name file, row and column). A request is
 * then one rk_malloc block over any rows: the user side from the first row,
 * candidate i from row i, the model's aliases (user.user_id,
 * user.recent_item_ids, candidates[i].ad_id) where declared and
 * single-valued (recent_item_ids: any number of values).
 */
#include <stdalign.h>
#include <stdint.h>
#include <string.h>

#include "serve.h"
#include "rank.pb-c.h"

typedef struct {
    size_t first; /* index of the cell's first value in vals */
    uint32_t n;   /* values (dense: 1, "" when missing) */
} rk_cell;

struct rk_req_rows {
    const rk_model_cfg *cfg;
    char *buf;      /* the file's text, split in place */
    char **vals;    /* every cell's values, in row-major cell order */
    size_t n_vals, cap_vals;
    rk_cell *cell;  /* [n_rows * n_features] */
    float *dense;   /* [n_rows * n_features]: a dense cell's value */
    long *line;     /* [n_rows]: the row's line in the file (header: 1) */
    size_t n_rows;
    int alias_user, alias_hist, alias_ad;
    int n_user_sparse, n_user_dense, n_item_sparse, n_item_dense;
};

void rk_req_rows_destroy(rk_req_rows *t) {
    if (!t) return;
    rk_free(t->buf);
    rk_free(t->vals);
    rk_free(t->cell);
    rk_free(t->dense);
    rk_free(t->line);
    rk_free(t);
}

size_t rk_req_rows_count(const rk_req_rows *t) { return t->n_rows; }
long rk_req_rows_line(const rk_req_rows *t, size_t r) { return t->line[r]; }

char *const *rk_req_rows_values(const rk_req_rows *t, size_t r, int f, size_t *n) {
    const rk_cell *c = &t->cell[r * (size_t)t->cfg->n_features + (size_t)f];
    *n = c->n;
    return t->vals + c->first;
}

/* Append s's '|'-separated pieces (empty ones too: the server skips them,
 * as the offline reader does) to t->vals, splitting s in place. */
static rk_status add_values(rk_req_rows *t, char *s, int split, rk_cell *c) {
    c->first = t->n_vals;
    c->n = 0;
    for (;;) {
        if (t->n_vals == t->cap_vals) {
            size_t nc = t->cap_vals ? 2 * t->cap_vals : 1024;
            char **nv = rk_realloc(t->vals, nc * sizeof *nv);
            if (!nv) return RK_ENOMEM;
            t->vals = nv;
            t->cap_vals = nc;
        }
        t->vals[t->n_vals++] = s;
        c->n++;
        char *bar = split ? strchr(s, '|') : NULL;
        if (!bar) return RK_OK;
        *bar = 0;
        s = bar + 1;
    }
}

/* Each feature's column in the header line hdr (a repeated name: the first). */
static rk_status map_header(const char *path, const rk_model_cfg *cfg, char *hdr, int nh, char **fields, int *col,
                            rk_err *err) {
    rk_strmap *m = rk_strmap_create((size_t)nh);
    if (!m) return rk_fail(err, RK_ENOMEM, "%s: out of memory", path);
    rk_split_tabs(hdr, fields, nh);
    rk_status st = RK_OK;
    for (int h = 0; h < nh && st == RK_OK; h++)
        if (rk_strmap_put(m, fields[h], strlen(fields[h]), h) == RK_ENOMEM) st = rk_fail(err, RK_ENOMEM, "%s: out of memory", path);
    for (int f = 0; f < cfg->n_features && st == RK_OK; f++) {
        col[f] = rk_strmap_get(m, cfg->features[f].column, strlen(cfg->features[f].column));
        if (col[f] < 0)
            st = rk_fail(err, RK_EFORMAT, "%s row 1: no column '%s' (feature '%s')", path, cfg->features[f].column,
                         cfg->features[f].name);
    }
    rk_strmap_destroy(m);
    return st;
}

/* Row fields[] (line line) -> cells of row t->n_rows. */
static rk_status add_row(rk_req_rows *t, const char *path, long line, char **fields, const int *col, rk_err *err) {
    const rk_model_cfg *cfg = t->cfg;
    size_t r = t->n_rows, nf = (size_t)cfg->n_features;
    for (int f = 0; f < cfg->n_features; f++) {
        const rk_feature *ft = &cfg->features[f];
        char *v = fields[col[f]];
        int dense = ft->kind == RK_FEAT_DENSE;
        if (add_values(t, v, !dense, &t->cell[r * nf + (size_t)f])) return rk_fail(err, RK_ENOMEM, "%s: out of memory", path);
        double x = 0;
        rk_err pe = {0};
        if (dense && *v && rk_parse_double(ft->column, v, -RK_DENSE_MAX_ABS, RK_DENSE_MAX_ABS, &x, &pe))
            return rk_fail(err, RK_EFORMAT, "%s row %ld, column %s: expected a finite number within +-1e+09, got '%.40s'",
                           path, line, ft->column, v);
        t->dense[r * nf + (size_t)f] = (float)x;
    }
    t->line[r] = line;
    t->n_rows++;
    return RK_OK;
}

/* The rows after the header at *cur, nh fields each. */
static rk_status read_body(rk_req_rows *t, const char *path, char *cur, int nh, char **fields, const int *col,
                           rk_err *err) {
    size_t cap = 1, nf = (size_t)t->cfg->n_features;
    for (const char *q = cur; *q; q++) cap += *q == '\n';
    t->cell = rk_calloc(cap * nf + 1, sizeof *t->cell);
    t->dense = rk_calloc(cap * nf + 1, sizeof *t->dense);
    t->line = rk_calloc(cap, sizeof *t->line);
    if (!t->cell || !t->dense || !t->line) return rk_fail(err, RK_ENOMEM, "%s: out of memory for %zu rows", path, cap);
    long line = 1;
    char *q;
    while ((q = rk_next_line(&cur))) {
        line++;
        if (!*q) continue;
        int n = rk_split_tabs(q, fields, nh);
        if (n != nh) return rk_fail(err, RK_EFORMAT, "%s row %ld: %d fields, the header has %d", path, line, n, nh);
        rk_status st = add_row(t, path, line, fields, col, err);
        if (st) return st;
    }
    if (t->n_rows == 0) return rk_fail(err, RK_EFORMAT, "%s: no rows after the header", path);
    return RK_OK;
}

static void count_sides(rk_req_rows *t) {
    const rk_model_cfg *cfg = t->cfg;
    t->alias_user = cfg->alias_user_id[0] ? rk_model_cfg_find(cfg, cfg->alias_user_id) : -1;
    t->alias_hist = cfg->alias_recent_items[0] ? rk_model_cfg_find(cfg, cfg->alias_recent_items) : -1;
    t->alias_ad = cfg->alias_ad_id[0] ? rk_model_cfg_find(cfg, cfg->alias_ad_id) : -1;
    for (int f = 0; f < cfg->n_features; f++) {
        const rk_feature *ft = &cfg->features[f];
        int sparse = ft->kind == RK_FEAT_SPARSE;
        if (ft->side == RK_SIDE_USER) ++*(sparse ? &t->n_user_sparse : &t->n_user_dense);
        else ++*(sparse ? &t->n_item_sparse : &t->n_item_dense);
    }
}

rk_status rk_req_rows_read(const char *path, const rk_model_cfg *cfg, rk_req_rows **out, rk_err *err) {
    *out = NULL;
    rk_req_rows *t = rk_calloc(1, sizeof *t);
    if (!t) return rk_fail(err, RK_ENOMEM, "%s: out of memory", path);
    t->cfg = cfg;
    count_sides(t);
    char **fields = NULL;
    int *col = NULL;
    size_t len;
    rk_status st = rk_read_text(path, &t->buf, &len, err);
    char *cur = t->buf, *hdr = st ? NULL : rk_next_line(&cur);
    if (st == RK_OK && !hdr) st = rk_fail(err, RK_EFORMAT, "%s: no header line", path);
    int nh = 1;
    for (const char *q = hdr; st == RK_OK && (q = strchr(q, '\t')); q++) nh++;
    if (st == RK_OK) {
        fields = rk_malloc(((size_t)nh + 1) * sizeof *fields);
        col = rk_malloc(((size_t)cfg->n_features + 1) * sizeof *col);
        if (!fields || !col) st = rk_fail(err, RK_ENOMEM, "%s: out of memory", path);
    }
    if (st == RK_OK) st = map_header(path, cfg, hdr, nh, fields, col, err);
    if (st == RK_OK) st = read_body(t, path, cur, nh, fields, col, err);
    rk_free(fields);
    rk_free(col);
    if (st) rk_req_rows_destroy(t);
    else *out = t;
    return st;
}

/* ---------------------------------------------------------------- requests */

/* Bump allocation inside one block (sizes rounded to max_align_t). */
typedef struct {
    unsigned char *p;
    size_t used;
} rk_block;
static size_t rk_round(size_t n) { return (n + alignof(max_align_t) - 1) & ~(alignof(max_align_t) - 1); }
static void *take(rk_block *b, size_t n) {
    void *p = b->p + b->used;
    b->used += rk_round(n);
    return p;
}

/* The block's size for n candidates: the messages, and sparse / dense
 * pointer lists with room for every feature (a caller may append). */
static size_t request_bytes(const rk_req_rows *t, size_t n) {
    size_t sf = rk_round(sizeof(Rankd__V1__SparseFeature)), df = rk_round(sizeof(Rankd__V1__DenseFeature));
    size_t lists = 2 * rk_round((size_t)t->cfg->n_features * sizeof(void *));
    size_t us = (size_t)t->n_user_sparse, ud = (size_t)t->n_user_dense;
    size_t is = (size_t)t->n_item_sparse, id = (size_t)t->n_item_dense;
    return rk_round(sizeof(Rankd__V1__RankRequest)) + rk_round(sizeof(Rankd__V1__User)) +
           rk_round(n * sizeof(void *)) + us * sf + ud * df + lists +
           n * (rk_round(sizeof(Rankd__V1__Candidate)) + is * sf + id * df + lists);
}

/* Feature f of row r as a named sparse or dense feature of a side (an
 * empty dense cell is left out: missing). */
static void add_feature(const rk_req_rows *t, rk_block *b, size_t r, int f, Rankd__V1__SparseFeature **sp,
                        size_t *n_sp, Rankd__V1__DenseFeature **ds, size_t *n_ds) {
    const rk_feature *ft = &t->cfg->features[f];
    size_t n;
    char *const *v = rk_req_rows_values(t, r, f, &n);
    if (ft->kind == RK_FEAT_DENSE) {
        if (!v[0][0]) return;
        Rankd__V1__DenseFeature *d = take(b, sizeof *d);
        rankd__v1__dense_feature__init(d);
        d->name = (char *)ft->name;
        d->value = t->dense[r * (size_t)t->cfg->n_features + (size_t)f];
        ds[(*n_ds)++] = d;
        return;
    }
    Rankd__V1__SparseFeature *s = take(b, sizeof *s);
    rankd__v1__sparse_feature__init(s);
    s->name = (char *)ft->name;
    s->values = (char **)v;
    s->n_values = n;
    sp[(*n_sp)++] = s;
}

static void fill_user(const rk_req_rows *t, rk_block *b, size_t r, int aliases, Rankd__V1__User *u) {
    rankd__v1__user__init(u);
    u->sparse = take(b, (size_t)t->cfg->n_features * sizeof *u->sparse);
    u->dense = take(b, (size_t)t->cfg->n_features * sizeof *u->dense);
    for (int f = 0; f < t->cfg->n_features; f++) {
        if (t->cfg->features[f].side != RK_SIDE_USER) continue;
        size_t n;
        char *const *v = rk_req_rows_values(t, r, f, &n);
        if (aliases && f == t->alias_user && n == 1) {
            u->user_id = v[0];
        } else if (aliases && f == t->alias_hist) {
            u->recent_item_ids = (char **)v;
            u->n_recent_item_ids = n;
        } else {
            add_feature(t, b, r, f, u->sparse, &u->n_sparse, u->dense, &u->n_dense);
        }
    }
}

static void fill_candidate(const rk_req_rows *t, rk_block *b, size_t r, int aliases, Rankd__V1__Candidate *c) {
    rankd__v1__candidate__init(c);
    c->sparse = take(b, (size_t)t->cfg->n_features * sizeof *c->sparse);
    c->dense = take(b, (size_t)t->cfg->n_features * sizeof *c->dense);
    for (int f = 0; f < t->cfg->n_features; f++) {
        if (t->cfg->features[f].side != RK_SIDE_ITEM) continue;
        size_t n;
        char *const *v = rk_req_rows_values(t, r, f, &n);
        if (aliases && f == t->alias_ad && n == 1) c->ad_id = v[0];
        else add_feature(t, b, r, f, c->sparse, &c->n_sparse, c->dense, &c->n_dense);
    }
}

struct Rankd__V1__RankRequest *rk_req_build(const rk_req_rows *t, const size_t *rows, size_t n, const rk_req_opts *o) {
    static const rk_req_opts none = {0};
    if (!o) o = &none;
    rk_block b = {rk_malloc(request_bytes(t, n)), 0};
    if (!b.p) return NULL;
    Rankd__V1__RankRequest *req = take(&b, sizeof *req);
    rankd__v1__rank_request__init(req);
    req->request_id = (char *)(o->request_id ? o->request_id : "");
    req->model_name = (char *)(o->model_name ? o->model_name : "");
    req->return_timing = o->return_timing != 0;
    req->user = take(&b, sizeof *req->user);
    fill_user(t, &b, rows[0], !o->no_aliases, req->user);
    req->n_candidates = n;
    req->candidates = take(&b, n * sizeof *req->candidates);
    for (size_t i = 0; i < n; i++) {
        req->candidates[i] = take(&b, sizeof *req->candidates[i]);
        fill_candidate(t, &b, rows[i], !o->no_aliases, req->candidates[i]);
    }
    return req;
}
