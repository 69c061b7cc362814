/*
 * rank/model.c — the ranking model: hashed embedding tables feeding a tower
 * (DNN, or DCNv2 = cross network v2 stacked with an MLP), its forward and
 * backward passes, and the model bundle (write atomically, open with
 * errors that name the file).
 *
 * Tower input x0 [B, D]: each sparse feature's pooled embedding bag, then
 * each dense feature's standardized value, in config order.
 * DCNv2 (Wang et al. 2021, "DCN V2", eq. 1, stacked structure §3.2):
 *   x_{l+1} = x0 ⊙ (W_l x_l + b_l) + x_l,  l = 0..L-1
 *   h = ReLU MLP(x_L);  logit = w_out · h + b_out;  pCTR = sigmoid(logit)
 * DNN: the same with L = 0.
 * Dense parameter names match a torch state_dict:
 *   cross.{l}.weight [D,D], cross.{l}.bias [D], mlp.{i}.weight [h_i, h_{i-1}],
 *   mlp.{i}.bias, out.weight [1, h_last], out.bias [1].
 */
#define _GNU_SOURCE
#include "internal.h"

#include <cblas.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---------------------------------------------------------------- layout */

static void add_param(rk_model *m, const char *name, int64_t r, int64_t c) {
    rk_param_desc *p = &m->pd[m->n_params++];
    snprintf(p->name, sizeof p->name, "%s", name);
    p->ndim = c ? 2 : 1;
    p->shape[0] = r;
    p->shape[1] = c;
    p->n = (size_t)r * (size_t)(c ? c : 1);
    p->off = m->n_floats;
    m->n_floats += p->n;
}

rk_status rk_model_layout(rk_model *m, rk_err *err) {
    const rk_model_cfg *c = &m->cfg;
    rk_free(m->pd);
    m->pd = rk_calloc((size_t)(2 * c->tower.n_cross + 2 * c->tower.n_hidden + 4), sizeof *m->pd);
    if (!m->pd) return rk_fail(err, RK_ENOMEM, "model: out of memory for the parameter layout");
    m->D = 0;
    m->max_dim = 1;
    for (int i = 0; i < c->n_features; i++) {
        m->col[i] = m->D;
        if (c->features[i].kind == RK_FEAT_SPARSE) {
            m->D += c->features[i].dim;
            if (c->features[i].dim > m->max_dim) m->max_dim = c->features[i].dim;
        } else {
            m->D += 1;
        }
    }
    m->n_params = 0;
    m->n_floats = 0;
    char nm[32];
    for (int l = 0; l < c->tower.n_cross; l++) {
        snprintf(nm, sizeof nm, "cross.%d.weight", l);
        add_param(m, nm, m->D, m->D);
        snprintf(nm, sizeof nm, "cross.%d.bias", l);
        add_param(m, nm, m->D, 0);
    }
    int prev = m->D;
    for (int i = 0; i < c->tower.n_hidden; i++) {
        snprintf(nm, sizeof nm, "mlp.%d.weight", i);
        add_param(m, nm, c->tower.hidden[i], prev);
        snprintf(nm, sizeof nm, "mlp.%d.bias", i);
        add_param(m, nm, c->tower.hidden[i], 0);
        prev = c->tower.hidden[i];
    }
    add_param(m, "out.weight", 1, prev);
    add_param(m, "out.bias", 1, 0);
    m->n_fm = 0;
    if (c->tower.type == RK_TOWER_DEEPFM) {
        add_param(m, "fm.linear.weight", 1, m->D);
        add_param(m, "fm.linear.bias", 1, 0);
        for (int i = 0; i < c->n_features; i++)
            if (c->features[i].kind == RK_FEAT_SPARSE) {
                m->fm_cols[m->n_fm++] = m->col[i];
                m->fm_k = c->features[i].dim;
            }
    }
    return RK_OK;
}

void rk_param_ptrs_free(rk_param_ptrs *p) {
    rk_free(p->mem);
    memset(p, 0, sizeof *p);
}

rk_status rk_model_point(const rk_model *m, float *base, rk_param_ptrs *p, rk_err *err) {
    const rk_tower_cfg *t = &m->cfg.tower;
    if (!p->mem) {
        p->mem = rk_calloc((size_t)(2 * t->n_cross + 2 * t->n_hidden + 1), sizeof(float *));
        if (!p->mem) return rk_fail(err, RK_ENOMEM, "model: out of memory");
    }
    float **mem = p->mem;
    memset(p, 0, sizeof *p);
    p->mem = mem;
    p->cW = mem, mem += t->n_cross;
    p->cb = mem, mem += t->n_cross;
    p->mW = mem, mem += t->n_hidden;
    p->mb = mem;
    int k = 0;
    for (int l = 0; l < m->cfg.tower.n_cross; l++) {
        p->cW[l] = base + m->pd[k++].off;
        p->cb[l] = base + m->pd[k++].off;
    }
    for (int i = 0; i < m->cfg.tower.n_hidden; i++) {
        p->mW[i] = base + m->pd[k++].off;
        p->mb[i] = base + m->pd[k++].off;
    }
    p->oW = base + m->pd[k++].off;
    p->ob = base + m->pd[k++].off;
    if (m->cfg.tower.type == RK_TOWER_DEEPFM) {
        p->fW = base + m->pd[k++].off;
        p->fb = base + m->pd[k++].off;
    }
    return RK_OK;
}

/* The model's per-feature and per-member arrays, sized from m->cfg. */
static rk_status model_arrays(rk_model *m, rk_err *err) {
    size_t nf = (size_t)m->cfg.n_features + 1, nm = (size_t)m->cfg.n_members + 1;
    m->col = rk_calloc(nf, sizeof *m->col);
    m->fm_cols = rk_calloc(nf, sizeof *m->fm_cols);
    m->tables = rk_calloc(nf, sizeof *m->tables);
    m->store_table = rk_calloc(nf, sizeof *m->store_table);
    m->sid_items = rk_calloc(nf, sizeof *m->sid_items);
    m->sid_cb = rk_calloc(nf, sizeof *m->sid_cb);
    m->member = rk_calloc(nm, sizeof *m->member);
    if (!m->col || !m->fm_cols || !m->tables || !m->store_table || !m->sid_items || !m->sid_cb || !m->member)
        return rk_fail(err, RK_ENOMEM, "model: out of memory for %d features", m->cfg.n_features);
    return RK_OK;
}

/* Rows of one update for the RAM copy, already through the table's codec. */
struct rk_ram_update {
    struct rk_ram_update *next;
    int f;
    size_t n;
    uint64_t *rows;               /* [n] */
    float *vals;                  /* [n, dim] */
};

static void free_updates(struct rk_ram_update *u) {
    while (u) {
        struct rk_ram_update *nx = u->next;
        rk_free(u);
        u = nx;
    }
}

static rk_status model_alloc(const rk_model_cfg *cfg, rk_model **out, rk_err *err) {
    *out = NULL;
    rk_model *m = rk_calloc(1, sizeof *m);
    if (!m) return rk_fail(err, RK_ENOMEM, "model: out of memory");
    pthread_rwlock_init(&m->ram_mu, NULL);
    rk_status s = rk_model_cfg_copy(&m->cfg, cfg, err);
    if (s) {
        pthread_rwlock_destroy(&m->ram_mu);
        rk_free(m);
        return s;
    }
    if ((s = model_arrays(m, err)) == RK_OK && cfg->n_members == 0)
        s = rk_model_layout(m, err); /* an ensemble's parameters live in its members */
    if (s == RK_OK && !(m->params = rk_calloc(m->n_floats ? m->n_floats : 1, sizeof(float))))
        s = rk_fail(err, RK_ENOMEM, "model: out of memory for %zu parameters", m->n_floats);
    if (s == RK_OK && cfg->n_members == 0) s = rk_model_point(m, m->params, &m->p, err);
    if (s) {
        rk_model_destroy(m);
        return s;
    }
    snprintf(m->version, sizeof m->version, "%s/%s", cfg->name, cfg->version[0] ? cfg->version : "unversioned");
    *out = m;
    return RK_OK;
}

rk_status rk_model_create(const rk_model_cfg *cfg, rk_model **out, rk_err *err) {
    *out = NULL;
    if (cfg->n_features <= 0) return rk_fail(err, RK_EINVAL, "model: no features");
    rk_model *m;
    rk_status s = model_alloc(cfg, &m, err);
    if (s) return s;
    if (cfg->n_members > 0) {
        m->n_members = cfg->n_members;
        m->log_tau = logf(cfg->fusion.tau);
        for (int i = 0; i < cfg->n_members; i++) {
            rk_model_cfg mc;
            if ((s = rk_member_cfg_derive(cfg, i, &mc, err)) == RK_OK) {
                s = rk_model_create(&mc, &m->member[i], err);
                rk_model_cfg_free(&mc);
            }
            if (s) {
                rk_model_destroy(m);
                return rk_err_prefix(err, "member '%s'", cfg->members[i].name);
            }
        }
        *out = m;
        return RK_OK;
    }
    rk_rng rng;
    rk_rng_seed(&rng, cfg->train.seed);
    /* torch.nn.Linear's default init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias. */
    for (int p = 0; p < m->n_params; p++) {
        const rk_param_desc *d = &m->pd[p];
        int64_t fan_in = d->ndim == 2 ? d->shape[1] : m->pd[p - 1].shape[1];
        double bound = 1.0 / sqrt((double)fan_in);
        for (size_t i = 0; i < d->n; i++) m->params[d->off + i] = (float)((2 * rk_rng_uniform(&rng) - 1) * bound);
    }
    for (int f = 0; f < cfg->n_features; f++) {
        const rk_feature *ft = &cfg->features[f];
        if (ft->kind != RK_FEAT_SPARSE) continue;
        size_t n = (size_t)ft->table_size * (size_t)ft->dim;
        m->tables[f] = rk_malloc(n * sizeof(float));
        if (!m->tables[f]) {
            rk_model_destroy(m);
            return rk_fail(err, RK_ENOMEM, "model: out of memory for table '%s' (%zu floats)", ft->name, n);
        }
        for (size_t i = 0; i < n; i++) m->tables[f][i] = (float)(rk_rng_normal(&rng) * cfg->train.init_std_embed);
    }
    *out = m;
    return RK_OK;
}

void rk_model_destroy(rk_model *m) {
    if (!m) return;
    for (int i = 0; m->member && i < m->n_members; i++) rk_model_destroy(m->member[i]);
    /* the per-feature arrays are allocated one by one: any may be missing
     * after an allocation failure (model_arrays) */
    for (int f = 0; f < m->cfg.n_features; f++) {
        if (m->tables) rk_free(m->tables[f]);
        if (m->sid_items) rk_sid_items_destroy(m->sid_items[f]);
        if (m->sid_cb) rk_sid_codebook_free(&m->sid_cb[f]);
    }
    rk_store_close(m->store);
    rk_free(m->params);
    rk_free(m->packed);
    rk_param_ptrs_free(&m->pk);
    rk_param_ptrs_free(&m->p);
    rk_free(m->pd);
    rk_free(m->col);
    rk_free(m->fm_cols);
    rk_free(m->tables);
    rk_free(m->store_table);
    rk_free(m->sid_items);
    rk_free(m->sid_cb);
    rk_free(m->member);
    rk_model_cfg_free(&m->cfg);
    free_updates(atomic_exchange(&m->ram_pending, NULL));
    free_updates(atomic_exchange(&m->ram_done, NULL));
    pthread_rwlock_destroy(&m->ram_mu);
    rk_free(m);
}

/* RocksDB's IDENTITY (a UUID made when the store was created) of
 * dir/tables into buf; 0, or -1 when unreadable. */
static int read_tables_identity(const char *dir, char *buf, size_t cap) {
    char path[4096];
    snprintf(path, sizeof path, "%s/tables/IDENTITY", dir);
    char *t = NULL;
    size_t n = 0;
    if (rk_read_file(path, &t, &n, NULL) != RK_OK) return -1;
    size_t k = strcspn(t, "\r\n");
    int ok = k > 0 && k < cap;
    if (ok) {
        memcpy(buf, t, k);
        buf[k] = 0;
    }
    rk_free(t);
    return ok ? 0 : -1;
}

/* Copy every row of every store-backed table into RAM (m->tables), so
 * rk_model_fill_x0 pools from memory, as in training, instead of reading
 * RocksDB per request. The pooling op is the same on both paths (the store
 * path gathers the unique rows, then runs rk_embedding_bag_forward on them),
 * so scores are bit-identical. Nothing is loaded when the tables together
 * (an ensemble's members included) exceed max_bytes. */
static size_t ram_bytes(const rk_model *m) {
    size_t n = 0;
    for (int i = 0; i < m->n_members; i++) n += ram_bytes(m->member[i]);
    if (!m->store) return n;
    for (int f = 0; f < m->cfg.n_features; f++)
        if (m->cfg.features[f].kind == RK_FEAT_SPARSE && !m->tables[f])
            n += (size_t)m->cfg.features[f].table_size * (size_t)m->cfg.features[f].dim * sizeof(float);
    return n;
}

/* Rows [from, to) of table f into t by lookups (a missing row reads as the
 * table's default row). */
static rk_status ram_get(rk_model *m, int f, float *t, uint64_t from, uint64_t to, rk_err *err) {
    enum { CHUNK = 512 };
    uint64_t keys[CHUNK];
    const size_t dim = (size_t)m->cfg.features[f].dim;
    for (uint64_t r0 = from; r0 < to; r0 += CHUNK) {
        size_t k = to - r0 < CHUNK ? (size_t)(to - r0) : CHUNK;
        for (size_t i = 0; i < k; i++) keys[i] = r0 + i;
        rk_status s = rk_store_get(m->store, m->store_table[f], keys, k, t + r0 * dim, NULL, err);
        if (s) return s;
    }
    return RK_OK;
}

/* The scan that fills a RAM table: rows arrive in key order; the rows
 * between stored ones get the default row. */
typedef struct {
    rk_model *m;
    int f;
    float *t;
    uint64_t next, rows;
    rk_status st;
    rk_err *err;
} ram_fill;

static int ram_fill_row(void *ctx, uint64_t key, const float *row) {
    ram_fill *r = ctx;
    const size_t dim = (size_t)r->m->cfg.features[r->f].dim;
    if (key >= r->rows) return 0; /* never read: ids past table_size get the default row */
    if (key > r->next && (r->st = ram_get(r->m, r->f, r->t, r->next, key, r->err))) return 1;
    memcpy(r->t + key * dim, row, dim * sizeof(float));
    r->next = key + 1;
    return 0;
}

/* Table f into RAM by one sequential scan (no row-cache fill, no lookup per
 * row: a version load copies every table this way off the request path,
 * bench-swap), or by lookups where the store cannot scan (a Redis tier). */
static rk_status ram_table(rk_model *m, int f, float *t, rk_err *err) {
    ram_fill r = {m, f, t, 0, m->cfg.features[f].table_size, RK_OK, err};
    rk_err scan_err = {0};
    rk_status s = rk_store_scan(m->store, m->store_table[f], ram_fill_row, &r, &scan_err);
    if (r.st) return r.st;
    if (s) return ram_get(m, f, t, 0, r.rows, err); /* reports a real fault itself */
    return ram_get(m, f, t, r.next, r.rows, err);
}

static rk_status load_ram(rk_model *m, rk_err *err) {
    for (int i = 0; i < m->n_members; i++) {
        rk_status s = load_ram(m->member[i], err);
        if (s) return s;
    }
    if (!m->store) return RK_OK;
    for (int f = 0; f < m->cfg.n_features; f++) {
        const rk_feature *ft = &m->cfg.features[f];
        if (ft->kind != RK_FEAT_SPARSE || m->tables[f]) continue;
        float *t = rk_malloc((size_t)ft->table_size * (size_t)ft->dim * sizeof(float));
        if (!t) return rk_fail(err, RK_ENOMEM, "table '%s': out of memory for %llu rows", ft->name,
                               (unsigned long long)ft->table_size);
        rk_status s = ram_table(m, f, t, err);
        if (s) {
            rk_free(t);
            return rk_err_prefix(err, "table '%s'", ft->name);
        }
        m->tables[f] = t;
    }
    return RK_OK;
}

rk_status rk_model_tables_to_ram(rk_model *m, size_t max_bytes, size_t *bytes, rk_err *err) {
    size_t need = ram_bytes(m);
    if (bytes) *bytes = 0;
    if (need > max_bytes) return RK_OK;
    rk_status s = load_ram(m, err);
    if (s == RK_OK && bytes) *bytes = need;
    return s;
}

/* Write every pending update into the RAM tables, oldest first, under the
 * write lock (taken by the scoring thread that finds them, at its own
 * priority). Pops and writes under the lock: two threads draining at once
 * write their lists in push order. */
static void ram_drain(rk_model *m) {
    pthread_rwlock_wrlock(&m->ram_mu);
    struct rk_ram_update *u = atomic_exchange(&m->ram_pending, NULL), *old = NULL;
    while (u) { /* newest first -> oldest first */
        struct rk_ram_update *nx = u->next;
        u->next = old;
        old = u;
        u = nx;
    }
    for (u = old; u; u = u->next) {
        const int dim = m->cfg.features[u->f].dim;
        for (size_t i = 0; i < u->n; i++)
            memcpy(m->tables[u->f] + u->rows[i] * (size_t)dim, u->vals + i * (size_t)dim, (size_t)dim * sizeof(float));
    }
    pthread_rwlock_unlock(&m->ram_mu);
    if (!old) return;
    for (u = old; u->next; u = u->next) {
    }
    u->next = atomic_load(&m->ram_done); /* hand them back to their allocator's thread */
    while (!atomic_compare_exchange_weak(&m->ram_done, &u->next, old)) {
    }
}


rk_status rk_model_apply_updates(rk_model *m, const char *member, const char *table, const uint64_t *rows,
                                 size_t n_rows, const float *values, size_t n_values, rk_err *err) {
    rk_model *t = m;
    if (m->n_members > 0) {
        if (!member || !member[0])
            return rk_fail(err, RK_EINVAL, "member: required, the model is an ensemble of %d members (e.g. '%s')",
                           m->n_members, m->cfg.members[0].name);
        t = NULL;
        for (int i = 0; i < m->n_members; i++)
            if (!strcmp(m->cfg.members[i].name, member)) t = m->member[i];
        if (!t) return rk_fail(err, RK_ENOTFOUND, "member: no member '%s' in this model", member);
    } else if (member && member[0]) {
        return rk_fail(err, RK_ENOTFOUND, "member: '%s' given, but the model is not an ensemble", member);
    }
    int f = table ? rk_model_cfg_find(&t->cfg, table) : -1;
    if (f >= 0 && t->cfg.features[f].kind != RK_FEAT_SPARSE) f = -1;
    if (f < 0) return rk_fail(err, RK_ENOTFOUND, "table: no embedding table '%s'", table ? table : "");
    if (!t->store || !t->updatable)
        return rk_fail(err, RK_EINVAL, "table '%s': the bundle's tables are open read-only (updates need a writable open)",
                       table);
    const int dim = t->cfg.features[f].dim;
    if (n_rows == 0) return rk_fail(err, RK_EINVAL, "rows: empty");
    if (n_values != n_rows * (size_t)dim)
        return rk_fail(err, RK_EINVAL, "values: expected rows x dim = %zu x %d = %zu floats, got %zu", n_rows, dim,
                       n_rows * (size_t)dim, n_values);
    /* the request's own faults, named by field (the store's would carry its path) */
    if (rk_store_check_update(t->store, t->store_table[f], rows, n_rows, values, err))
        return rk_err_prefix(err, "table '%s'", table);
    free_updates(atomic_exchange(&t->ram_done, NULL));
    struct rk_ram_update *u = NULL;
    if (t->tables[f]) {
        /* The RAM copy gets what the store will serve: the row through the
         * table's codec, so RAM and RocksDB lookups stay bit-identical.
         * Made before the store write: out of memory writes nothing. */
        rk_table_info ti;
        rk_store_table_info(t->store, t->store_table[f], &ti);
        unsigned char enc[1024 * 4 + 8]; /* dim <= 1024 (config.c) */
        RK_ASSERT(ti.row_bytes <= sizeof enc);
        u = rk_malloc(sizeof *u + n_rows * sizeof(uint64_t) + n_rows * (size_t)dim * sizeof(float));
        if (!u) return rk_fail(err, RK_ENOMEM, "table '%s': out of memory for %zu updated rows", table, n_rows);
        u->f = f;
        u->n = n_rows;
        u->rows = (uint64_t *)(u + 1);
        u->vals = (float *)(u->rows + n_rows);
        memcpy(u->rows, rows, n_rows * sizeof(uint64_t));
        for (size_t i = 0; i < n_rows; i++) {
            rk_codec_encode(ti.codec, values + i * (size_t)dim, dim, enc);
            rk_codec_decode(ti.codec, enc, dim, u->vals + i * (size_t)dim);
        }
    }
    rk_status s = rk_store_apply(t->store, t->store_table[f], rows, n_rows, values, err);
    if (s) {
        rk_free(u);
        return rk_err_prefix(err, "table '%s'", table);
    }
    if (u) { /* visible to every lookup that starts from now on (rk_model_fill_x0_ex) */
        u->next = atomic_load(&t->ram_pending);
        while (!atomic_compare_exchange_weak(&t->ram_pending, &u->next, u)) {
        }
    }
    return RK_OK;
}

const char *rk_model_dir(const rk_model *m) { return m->dir; }

const rk_model_cfg *rk_model_config(const rk_model *m) { return &m->cfg; }
int rk_model_n_members(const rk_model *m) { return m->n_members; }
const char *rk_model_member_name(const rk_model *m, int i) {
    return i >= 0 && i < m->n_members ? m->cfg.members[i].name : NULL;
}
double rk_model_tau(const rk_model *m) { return m->n_members ? exp((double)m->log_tau) : 0; }
const char *rk_model_version(const rk_model *m) { return m->version; }

void rk_model_cache_stats(const rk_model *m, uint64_t out[3]) {
    out[0] = out[1] = out[2] = 0;
    for (int i = -1; i < m->n_members; i++) {
        const rk_model *x = i < 0 ? m : m->member[i];
        if (!x->store) continue;
        rk_store_stats st;
        rk_store_stats_get(x->store, -1, &st);
        out[0] += st.cache_hits;
        out[1] += st.cache_misses;
        out[2] += st.cache_evictions;
    }
}

/* ---------------------------------------------------------------- bundle */

/* The semantic-ID records and codebooks of an opened single-model bundle:
 * model.json's "sid" section names, per feature, the store table, K, the
 * version and the codebooks file. */
static rk_status open_sid(rk_model *m, const char *dir, rk_err *err) {
    int need = 0;
    for (int f = 0; f < m->cfg.n_features; f++)
        need |= m->cfg.features[f].kind == RK_FEAT_SPARSE && m->cfg.features[f].param != RK_PARAM_HASH;
    if (!need) return RK_OK;
    char path[4096];
    snprintf(path, sizeof path, "%s/model.json", dir);
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    if (!root) return rk_fail(err, RK_EFORMAT, "%s: %s", path, je.text);
    json_t *sids = json_object_get(root, "sid");
    rk_status s = RK_OK;
    rk_store *opened = NULL;
    for (int f = 0; s == RK_OK && f < m->cfg.n_features; f++) {
        rk_feature *ft = &m->cfg.features[f];
        if (ft->kind != RK_FEAT_SPARSE || ft->param == RK_PARAM_HASH) continue;
        json_t *e = NULL;
        for (size_t i = 0; i < json_array_size(sids); i++) {
            json_t *x = json_array_get(sids, i);
            if (json_is_string(json_object_get(x, "feature")) &&
                !strcmp(json_string_value(json_object_get(x, "feature")), ft->name))
                e = x;
        }
        json_t *kj = e ? json_object_get(e, "codes") : NULL;
        if (!kj || !json_is_integer(kj) || json_integer_value(kj) < 2 || json_integer_value(kj) > (1 << 24)) {
            s = rk_fail(err, RK_EFORMAT, "%s: sid entry of feature '%s' (param %s) missing or without \"codes\"", path,
                        ft->name, rk_sid_param_name(ft->param));
            break;
        }
        const char *ver = json_string_value(json_object_get(e, "version"));
        snprintf(path, sizeof path, "%s/tables", dir);
        if (!opened && !rk_is_dir(path)) { /* a thin bundle: the records are read whole, at open */
            s = rk_fail(err, RK_EINVAL, "model bundle %s: feature '%s' uses semantic IDs (param %s), whose records need "
                                        "the bundle's local tables/; a thin bundle serves hashed features only",
                        dir, ft->name, rk_sid_param_name(ft->param));
            break;
        }
        if (!opened) {
            rk_store_opts o = RK_STORE_OPTS_DEFAULT;
            o.cache_bytes = 0;
            o.verify = 0; /* m->store's open of the same tables/ verified them */
            if ((s = rk_store_open_ex(path, NULL, NULL, 0, &o, &opened, err))) break;
        }
        if ((s = rk_sid_load_from_store(opened, ft, (int)json_integer_value(kj), ver, &m->sid_items[f], err)) ||
            (s = rk_sid_check_feature(ft, m->sid_items[f], err))) {
            rk_err_prefix(err, "model bundle %s", dir);
            break;
        }
        ft->items = m->sid_items[f];
        const char *cbn = json_string_value(json_object_get(e, "codebooks"));
        if (cbn) {
            snprintf(path, sizeof path, "%s/%s", dir, cbn);
            if ((s = rk_sid_codebook_load(path, &m->sid_cb[f], err))) break;
            if (m->sid_cb[f].levels != rk_sid_items_levels(ft->items) || m->sid_cb[f].codes != rk_sid_items_K(ft->items))
                s = rk_fail(err, RK_EFORMAT, "%s: codebooks L=%d K=%d, the records L=%d K=%d", path, m->sid_cb[f].levels,
                            m->sid_cb[f].codes, rk_sid_items_levels(ft->items), rk_sid_items_K(ft->items));
        }
    }
    rk_store_close(opened);
    json_decref(root);
    return s;
}

rk_status rk_model_open(const char *dir, rk_model **out, rk_err *err) { return rk_model_open_ex(dir, 0, out, err); }

/* Open the store of m's sparse features at path (tables/), or with
 * remote (a thin bundle's "rk/IDENTITY") from the process's Redis tier. */
static rk_status open_tables(rk_model *m, const char *path, const char *remote, int writable, rk_err *err) {
    const rk_model_cfg *cfg = &m->cfg;
    const char **names = rk_malloc(((size_t)cfg->n_features + 1) * sizeof *names);
    int *dims = rk_malloc(((size_t)cfg->n_features + 1) * sizeof *dims), n = 0;
    if (!names || !dims) {
        rk_free(names);
        rk_free(dims);
        return rk_fail(err, RK_ENOMEM, "model: out of memory");
    }
    for (int f = 0; f < cfg->n_features; f++) {
        if (cfg->features[f].kind != RK_FEAT_SPARSE) continue;
        m->store_table[f] = n;
        names[n] = cfg->features[f].name;
        dims[n++] = cfg->features[f].dim;
    }
    rk_store_opts so = RK_STORE_OPTS_DEFAULT;
    /* With a Redis tier, updates go to the cluster; the local tables stay read-only (replicas share them). */
    so.writable = writable != 0 && !rk_store_tier();
    rk_status s = remote ? rk_store_open_redis(rk_store_tier(), remote, names, dims, n, &so, &m->store, err)
                         : rk_store_open_ex(path, names, dims, n, &so, &m->store, err);
    rk_free(names);
    rk_free(dims);
    return s;
}

rk_status rk_model_open_ex(const char *dir, int writable, rk_model **out, rk_err *err) {
    *out = NULL;
    char path[4096];
    if (!rk_is_dir(dir)) return rk_fail(err, RK_ENOTFOUND, "model bundle %s: not a directory", dir);
    /* Resolve symlinks once: RocksDB opens table files lazily by path, and a
     * publisher may repoint a "current" link to the next version meanwhile. */
    char real[PATH_MAX];
    if (realpath(dir, real)) dir = real;
    snprintf(path, sizeof path, "%s/model.json", dir);
    char *text;
    rk_status s = rk_read_file(path, &text, NULL, err);
    if (s) return s == RK_ENOTFOUND ? rk_fail(err, RK_ENOTFOUND, "model bundle %s: missing file model.json", dir) : s;
    rk_model_cfg pcfg;
    s = rk_model_cfg_parse(text, &pcfg, err);
    rk_free(text);
    if (s) return rk_err_prefix(err, "%s", path);
    rk_model *m;
    s = model_alloc(&pcfg, &m, err);
    rk_model_cfg_free(&pcfg);
    if (s) return s;
    const rk_model_cfg cfg = m->cfg; /* a view: the model owns the arrays */
    snprintf(m->dir, sizeof m->dir, "%s", dir);
    if (cfg.n_members > 0) {
        m->n_members = cfg.n_members;
        m->log_tau = logf(cfg.fusion.tau);
        for (int i = 0; i < cfg.n_members; i++) {
            snprintf(path, sizeof path, "%s/members/%s", dir, cfg.members[i].name);
            rk_model_cfg want;
            if ((s = rk_member_cfg_derive(&cfg, i, &want, err)) == RK_OK &&
                (s = rk_model_open_ex(path, writable, &m->member[i], err)))
                rk_model_cfg_free(&want);
            if (s) {
                rk_model_destroy(m);
                return s;
            }
            const rk_model_cfg *got = &m->member[i]->cfg;
            int same = got->n_features == want.n_features && got->tower.type == want.tower.type &&
                       got->tower.n_cross == want.tower.n_cross && got->tower.n_hidden == want.tower.n_hidden;
            for (int f = 0; same && f < want.n_features; f++) {
                const rk_feature *a = &got->features[f], *b = &want.features[f];
                same = !strcmp(a->name, b->name) && a->kind == b->kind && a->side == b->side && a->table_size == b->table_size &&
                       a->dim == b->dim && a->pool == b->pool && a->max_values == b->max_values;
            }
            rk_model_cfg_free(&want);
            if (!same) {
                s = rk_fail(err, RK_EFORMAT, "model bundle %s: member '%s' does not match the ensemble's features or tower in model.json",
                            dir, cfg.members[i].name);
                rk_model_destroy(m); /* after the message: cfg's arrays are m's */
                return s;
            }
        }
        /* semantic IDs: the ensemble featurizes once, with member 0's records */
        for (int f = 0; f < cfg.n_features; f++) m->cfg.features[f].items = m->member[0]->cfg.features[f].items;
        *out = m;
        return RK_OK;
    }
    snprintf(path, sizeof path, "%s/dense.safetensors", dir);
    if (!rk_path_exists(path)) {
        rk_model_destroy(m);
        return rk_fail(err, RK_ENOTFOUND, "model bundle %s: missing file dense.safetensors", dir);
    }
    rk_st_file *st;
    if ((s = rk_st_open(path, &st, err))) {
        rk_model_destroy(m);
        return s;
    }
    for (int p = 0; p < m->n_params && s == RK_OK; p++)
        s = rk_st_read_f32(st, m->pd[p].name, m->params + m->pd[p].off, m->pd[p].ndim, m->pd[p].shape, err);
    char dense_ident[64] = ""; /* absent in bundles saved before it existed: no check */
    const char *di = rk_st_meta(st, "tables_identity");
    if (di) snprintf(dense_ident, sizeof dense_ident, "%s", di);
    rk_st_close(st);
    for (size_t i = 0; s == RK_OK && i < m->n_floats; i++)
        if (!isfinite(m->params[i])) s = rk_fail(err, RK_ENUMERIC, "%s: parameter %zu is not finite", path, i);
    if (s) {
        rk_model_destroy(m);
        return s;
    }
    snprintf(path, sizeof path, "%s/tables", dir);
    /* A thin bundle (no tables/) serves its version from the Redis tier:
     * dense.safetensors names the tables' identity, the version's prefix. */
    char remote[80] = "";
    if (!rk_is_dir(path) && rk_store_tier() && dense_ident[0]) snprintf(remote, sizeof remote, "rk/%s", dense_ident);
    if (!rk_is_dir(path) && !remote[0]) {
        rk_model_destroy(m);
        return rk_fail(err, RK_ENOTFOUND, "model bundle %s: missing directory tables/%s", dir,
                       !rk_store_tier() ? " (a thin bundle, whose tables live in a Redis Cluster, needs rankd --redis-cluster)"
                                        : " (and dense.safetensors names no tables identity to find them in the Redis Cluster)");
    }
    if ((s = open_tables(m, path, remote[0] ? remote : NULL, writable, err))) {
        rk_model_destroy(m);
        return s;
    }
    /* model.json and tables/ must describe the same tables: a table_size
     * other than the store's rows would hash ids onto rows the store does
     * not have (or never reach some it has) and serve different scores. */
    for (int f = 0; f < cfg.n_features; f++) {
        if (cfg.features[f].kind != RK_FEAT_SPARSE) continue;
        rk_table_info ti;
        rk_store_table_info(m->store, m->store_table[f], &ti);
        if (ti.rows != cfg.features[f].table_size) {
            s = rk_fail(err, RK_EFORMAT,
                        "model bundle %s: feature '%s': model.json says table_size %llu, tables/ holds %llu rows",
                        dir, cfg.features[f].name, (unsigned long long)cfg.features[f].table_size,
                        (unsigned long long)ti.rows);
            rk_model_destroy(m);
            return s;
        }
    }
    char tables_ident[64];
    if (dense_ident[0] && !remote[0] && (read_tables_identity(dir, tables_ident, sizeof tables_ident) ||
                           strcmp(dense_ident, tables_ident))) {
        s = rk_fail(err, RK_EFORMAT,
                    "model bundle %s: dense.safetensors was saved with tables/ %s, but tables/IDENTITY is %s: "
                    "files of different bundles",
                    dir, dense_ident, tables_ident[0] ? tables_ident : "unreadable");
        rk_model_destroy(m);
        return s;
    }
    if ((s = open_sid(m, dir, err))) {
        rk_model_destroy(m);
        return s;
    }
    if ((s = rk_model_pack(m, err))) {
        rk_model_destroy(m);
        return s;
    }
    m->updatable = writable != 0;
    *out = m;
    return RK_OK;
}

/* dense.safetensors and tables/ of a single model into dir; adds "tables"
 * and "dense" to the model.json object root. */
/* write_single's per-table arrays, sized from the feature count. */
typedef struct {
    rk_table_spec *specs;   /* [2 n_features] */
    rk_table_opts *topts;   /* [2 n_features] */
    const uint64_t **keys;  /* [2 n_features] */
    uint64_t **own_keys;    /* [n_features] */
    float **own_data;       /* [n_features] */
    char (*sid_names)[RK_NAME_MAX + 8]; /* [n_features] */
} write_bufs;

static rk_status write_single_in(const rk_model *m, const char *dir, json_t *root, rk_codec codec, write_bufs *wb,
                                 rk_err *err);

static rk_status write_single(const rk_model *m, const char *dir, json_t *root, rk_codec codec, rk_err *err) {
    size_t nf = (size_t)m->cfg.n_features + 1;
    write_bufs wb = {rk_calloc(2 * nf, sizeof *wb.specs), rk_calloc(2 * nf, sizeof *wb.topts),
                     rk_calloc(2 * nf, sizeof *wb.keys),  rk_calloc(nf, sizeof *wb.own_keys),
                     rk_calloc(nf, sizeof *wb.own_data),  rk_calloc(nf, sizeof *wb.sid_names)};
    rk_status s = RK_OK;
    if (!wb.specs || !wb.topts || !wb.keys || !wb.own_keys || !wb.own_data || !wb.sid_names)
        s = rk_fail(err, RK_ENOMEM, "model bundle %s: out of memory", dir);
    if (s == RK_OK) s = write_single_in(m, dir, root, codec, &wb, err);
    for (int f = 0; wb.own_keys && wb.own_data && f < m->cfg.n_features; f++) {
        rk_free(wb.own_keys[f]);
        rk_free(wb.own_data[f]);
    }
    rk_free(wb.specs);
    rk_free(wb.topts);
    rk_free(wb.keys);
    rk_free(wb.own_keys);
    rk_free(wb.own_data);
    rk_free(wb.sid_names);
    return s;
}

static rk_status write_single_in(const rk_model *m, const char *dir, json_t *root, rk_codec codec, write_bufs *wb,
                                 rk_err *err) {
    char path[4096];
    rk_status s = RK_OK;
    /* tables/ */
    rk_table_spec *specs = wb->specs;
    rk_table_opts *topts = wb->topts;
    int n = 0;
    for (int f = 0; f < m->cfg.n_features; f++) {
        const rk_feature *ft = &m->cfg.features[f];
        if (ft->kind != RK_FEAT_SPARSE) continue;
        specs[n].name = ft->name;
        specs[n].dim = ft->dim;
        specs[n].rows = ft->table_size;
        specs[n].data = m->tables[f];
        topts[n].codec = codec;
        n++;
    }
    /* semantic-ID item records: keyed tables "sid.<feature>" (rank/sid.c) */
    const uint64_t **keys = wb->keys;
    uint64_t **own_keys = wb->own_keys;
    float **own_data = wb->own_data;
    char (*sid_names)[RK_NAME_MAX + 8] = wb->sid_names;
    static const float no_codes[RK_SID_MAX_LEVELS] = {-1, -1, -1, -1, -1, -1, -1, -1};
    int n_emb = n;
    json_t *sids = json_array();
    for (int f = 0; s == RK_OK && f < m->cfg.n_features; f++) {
        const rk_feature *ft = &m->cfg.features[f];
        if (ft->kind != RK_FEAT_SPARSE || ft->param == RK_PARAM_HASH) continue;
        if (!ft->items) {
            s = rk_fail(err, RK_EINVAL, "model bundle %s: feature '%s' (param %s) has no item records", dir, ft->name,
                        rk_sid_param_name(ft->param));
            break;
        }
        if ((s = rk_sid_table_data(ft->items, &own_keys[f], &own_data[f], err))) break;
        rk_sid_table_name(ft, sid_names[f], sizeof sid_names[f]);
        specs[n].name = sid_names[f];
        specs[n].dim = rk_sid_items_levels(ft->items);
        specs[n].rows = rk_sid_items_count(ft->items);
        specs[n].data = own_data[f];
        topts[n].codec = RK_CODEC_FP32; /* codes are integers < 2^24: exact */
        topts[n].oov_row = no_codes;
        keys[n] = own_keys[f];
        n++;
        const rk_sid_codebook *cb = &m->sid_cb[f];
        json_t *o = json_object();
        json_object_set_new(o, "feature", json_string(ft->name));
        json_object_set_new(o, "table", json_string(sid_names[f]));
        json_object_set_new(o, "items", json_integer((json_int_t)rk_sid_items_count(ft->items)));
        json_object_set_new(o, "levels", json_integer(rk_sid_items_levels(ft->items)));
        json_object_set_new(o, "codes", json_integer(rk_sid_items_K(ft->items)));
        json_object_set_new(o, "version", json_string(rk_sid_items_version(ft->items)));
        if (cb->levels) {
            char cbname[RK_NAME_MAX + 32];
            snprintf(cbname, sizeof cbname, "sid.%s.safetensors", ft->name);
            snprintf(path, sizeof path, "%s/%s", dir, cbname);
            s = rk_sid_codebook_save(cb, path, rk_sid_items_version(ft->items), err);
            json_object_set_new(o, "codebooks", json_string(cbname));
        }
        json_array_append_new(sids, o);
    }
    snprintf(path, sizeof path, "%s/tables", dir);
    if (s == RK_OK) s = rk_store_write_keyed(path, specs, keys, n, topts, err);
    if (s) {
        json_decref(sids);
        return s;
    }
    /* dense.safetensors (after tables/, whose identity it records) */
    rk_st_writer *w;
    if ((s = rk_st_writer_create(&w, err))) {
        json_decref(sids);
        return s;
    }
    for (int p = 0; p < m->n_params && s == RK_OK; p++)
        s = rk_st_writer_add_f32(w, m->pd[p].name, m->params + m->pd[p].off, m->pd[p].ndim, m->pd[p].shape, err);
    if (s == RK_OK) s = rk_st_writer_add_meta(w, "format", "rankd", err);
    /* pair dense.safetensors with these tables/: RocksDB's IDENTITY of the
     * store just written, checked when the bundle is opened */
    char ident[64];
    if (s == RK_OK && read_tables_identity(dir, ident, sizeof ident) == 0)
        s = rk_st_writer_add_meta(w, "tables_identity", ident, err);
    snprintf(path, sizeof path, "%s/dense.safetensors", dir);
    if (s == RK_OK) s = rk_st_writer_write(w, path, err);
    rk_st_writer_destroy(w);
    if (s) {
        json_decref(sids);
        return s;
    }
    if (json_array_size(sids)) json_object_set_new(root, "sid", sids);
    else json_decref(sids);
    n = n_emb;
    json_t *tabs = json_array();
    for (int i = 0; i < n; i++) {
        json_t *o = json_object();
        json_object_set_new(o, "name", json_string(specs[i].name));
        json_object_set_new(o, "rows", json_integer((json_int_t)specs[i].rows));
        json_object_set_new(o, "dim", json_integer(specs[i].dim));
        json_object_set_new(o, "codec", json_string(rk_codec_name(codec)));
        int fi = rk_model_cfg_find(&m->cfg, specs[i].name);
        json_object_set_new(o, "parameterization",
                            json_string(rk_sid_param_name(fi >= 0 ? m->cfg.features[fi].param : RK_PARAM_HASH)));
        json_object_set_new(o, "column_family", json_string(specs[i].name));
        json_array_append_new(tabs, o);
    }
    json_object_set_new(root, "tables", tabs);
    json_t *dense = json_array();
    for (int p = 0; p < m->n_params; p++) {
        json_t *o = json_object(), *sh = json_array();
        for (int d = 0; d < m->pd[p].ndim; d++) json_array_append_new(sh, json_integer(m->pd[p].shape[d]));
        json_object_set_new(o, "name", json_string(m->pd[p].name));
        json_object_set_new(o, "shape", sh);
        json_array_append_new(dense, o);
    }
    json_object_set_new(root, "dense", dense);
    return RK_OK;
}

/* Everything of a bundle into the (temporary) directory dir; model.json last. */
static rk_status write_contents(const rk_model *m, const char *dir, const char *metrics_json, const char *codec_name,
                                rk_codec codec, rk_err *err) {
    char path[4096];
    rk_status s = RK_OK;
    json_t *root = rk_cfg_to_json(&m->cfg);
    if (m->n_members > 0) {
        json_object_set_new(json_object_get(root, "ensemble"), "tau", json_real(exp((double)m->log_tau)));
        snprintf(path, sizeof path, "%s/members", dir);
        s = rk_mkdir_p(path, err);
        for (int i = 0; s == RK_OK && i < m->n_members; i++) {
            snprintf(path, sizeof path, "%s/members/%s", dir, m->cfg.members[i].name);
            s = rk_model_save_codec(m->member[i], path, NULL, 0, codec_name, err);
        }
    } else {
        s = write_single(m, dir, root, codec, err);
    }
    if (s == RK_OK && metrics_json) {
        json_t *mj = json_loads(metrics_json, 0, NULL);
        if (mj) json_object_set_new(root, "metrics", mj);
    }
    if (s == RK_OK) {
        char *text = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17));
        if (!text) {
            s = rk_fail(err, RK_ENOMEM, "model bundle: out of memory");
        } else {
            snprintf(path, sizeof path, "%s/model.json", dir);
            s = rk_write_file(path, text, strlen(text), err);
            free(text);
        }
    }
    json_decref(root);
    return s;
}

rk_status rk_model_save(const rk_model *m, const char *dir, const char *metrics_json, int overwrite, rk_err *err) {
    return rk_model_save_codec(m, dir, metrics_json, overwrite, "fp32", err);
}

rk_status rk_model_save_codec(const rk_model *m, const char *dir, const char *metrics_json, int overwrite,
                              const char *codec_name, rk_err *err) {
    rk_codec codec;
    if (rk_codec_parse(codec_name, &codec, err)) return rk_err_prefix(err, "model bundle %s", dir);
    rk_sweep_dead_writers(dir, 1, "model bundle");
    if (rk_path_exists(dir) && !overwrite)
        return rk_fail(err, RK_EEXIST, "model bundle %s: already exists (pass --force to replace it)", dir);
    for (int f = 0; m->n_members == 0 && f < m->cfg.n_features; f++)
        if (m->cfg.features[f].kind == RK_FEAT_SPARSE && !m->tables[f])
            return rk_fail(err, RK_EINVAL, "model bundle %s: table '%s' is not in memory", dir, m->cfg.features[f].name);
    for (int i = 0; i < m->n_members; i++)
        for (int f = 0; f < m->cfg.n_features; f++)
            if (m->member[i]->cfg.features[f].kind == RK_FEAT_SPARSE && !m->member[i]->tables[f])
                return rk_fail(err, RK_EINVAL, "model bundle %s: member '%s' table '%s' is not in memory", dir,
                               m->cfg.members[i].name, m->cfg.features[f].name);
    char tmp[4096], old[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp-%ld", dir, (long)getpid());
    rk_status s = rk_rm_rf(tmp, err);
    if (s) return s;
    if ((s = rk_mkdir_p(tmp, err))) return s;
    if ((s = write_contents(m, tmp, metrics_json, codec_name, codec, err))) goto fail;
    if ((s = rk_fsync_dir(tmp, err))) goto fail;
    /* Publish: move any old bundle aside, rename the new one in, delete the old. */
    old[0] = 0;
    if (rk_path_exists(dir)) {
        snprintf(old, sizeof old, "%s.old-%ld", dir, (long)getpid());
        if ((s = rk_rm_rf(old, err))) goto fail;
        if (rename(dir, old) != 0) {
            s = rk_fail(err, RK_EIO, "model bundle %s: cannot move the old bundle aside: %s", dir, strerror(errno));
            goto fail;
        }
    }
    if (rename(tmp, dir) != 0) {
        s = rk_fail(err, RK_EIO, "model bundle %s: cannot rename %s into place: %s", dir, tmp, strerror(errno));
        if (old[0]) (void)rename(old, dir);
        goto fail;
    }
    if (old[0]) (void)rk_rm_rf(old, NULL);
    {
        char parent[4096];
        rk_path_parent(dir, parent, sizeof parent);
        (void)rk_fsync_dir(parent, NULL);
    }
    return RK_OK;
fail:
    (void)rk_rm_rf(tmp, NULL);
    return s;
}

rk_status rk_model_convert(const char *in_dir, const char *out_dir, const char *codec, int overwrite, rk_err *err) {
    rk_codec c;
    if (rk_codec_parse(codec, &c, err)) return rk_err_prefix(err, "model bundle %s", out_dir);
    char path[4096];
    snprintf(path, sizeof path, "%s/model.json", in_dir);
    char *metrics = NULL, *text = NULL;
    rk_model *m;
    rk_status s = rk_model_open(in_dir, &m, err);
    if (s) return s;
    if (rk_read_file(path, &text, NULL, NULL) == RK_OK) {
        json_t *root = json_loads(text, 0, NULL);
        json_t *mj = root ? json_object_get(root, "metrics") : NULL;
        if (mj) metrics = json_dumps(mj, JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17));
        json_decref(root);
        rk_free(text);
    }
    /* every table (an ensemble's members too) decoded to float32 in RAM */
    s = load_ram(m, err);
    if (s == RK_OK) s = rk_model_save_codec(m, out_dir, metrics, overwrite, codec, err);
    free(metrics);
    rk_model_destroy(m);
    return s;
}

/* ---------------------------------------------------------------- batch */

rk_status rk_batch_alloc_caps(rk_batch *b, const rk_model_cfg *c, int cap_rows, const size_t *caps, rk_err *err) {
    memset(b, 0, sizeof *b);
    b->cap_rows = cap_rows;
    b->n_features = c->n_features;
    size_t nf = (size_t)c->n_features + 1;
    b->offsets = rk_calloc(nf, sizeof *b->offsets);
    b->rows = rk_calloc(nf, sizeof *b->rows);
    b->cap_values = rk_calloc(nf, sizeof *b->cap_values);
    b->dense = rk_calloc((size_t)cap_rows * (size_t)c->n_features, sizeof(float));
    b->labels = rk_calloc((size_t)cap_rows, sizeof(float));
    int ok = b->offsets && b->rows && b->cap_values && b->dense && b->labels;
    for (int f = 0; ok && f < c->n_features; f++) {
        if (c->features[f].kind != RK_FEAT_SPARSE) continue;
        b->offsets[f] = rk_calloc((size_t)cap_rows + 1, sizeof(uint32_t));
        b->rows[f] = rk_malloc((caps[f] ? caps[f] : 1) * sizeof(uint64_t));
        b->cap_values[f] = caps[f];
        ok = b->offsets[f] && b->rows[f];
    }
    if (!ok) {
        rk_batch_free(b);
        return rk_fail(err, RK_ENOMEM, "batch: out of memory for %d rows of %d features", cap_rows, c->n_features);
    }
    return RK_OK;
}

rk_status rk_batch_alloc(rk_batch *b, const rk_model_cfg *c, int cap_rows, size_t values_per_feature, rk_err *err) {
    size_t *caps = rk_malloc(((size_t)c->n_features + 1) * sizeof *caps);
    if (!caps) {
        memset(b, 0, sizeof *b);
        return rk_fail(err, RK_ENOMEM, "batch: out of memory");
    }
    for (int f = 0; f < c->n_features; f++) caps[f] = values_per_feature;
    rk_status s = rk_batch_alloc_caps(b, c, cap_rows, caps, err);
    rk_free(caps);
    return s;
}

void rk_batch_free(rk_batch *b) {
    for (int f = 0; b->offsets && b->rows && f < b->n_features; f++) {
        rk_free(b->offsets[f]);
        rk_free(b->rows[f]);
    }
    rk_free(b->offsets);
    rk_free(b->rows);
    rk_free(b->cap_values);
    rk_free(b->dense);
    rk_free(b->labels);
    memset(b, 0, sizeof *b);
}

/* ---------------------------------------------------------------- work */

rk_status rk_work_init(rk_work *w, const rk_model *m, int cap, int backward, rk_err *err) {
    memset(w, 0, sizeof *w);
    w->cap = cap;
    const rk_tower_cfg *t = &m->cfg.tower;
    size_t B = (size_t)cap, D = (size_t)m->D, maxh = D;
    for (int i = 0; i < t->n_hidden; i++)
        if ((size_t)t->hidden[i] > maxh) maxh = (size_t)t->hidden[i];
    size_t n = B * D * (1 + 2 * (size_t)t->n_cross) + 3 * B + maxh;
    for (int i = 0; i < t->n_hidden; i++) n += B * (size_t)t->hidden[i];
    if (backward) n += B + 2 * B * maxh + 3 * B * D;
    w->mem = rk_malloc(n * sizeof(float));
    w->ptrs = rk_calloc((size_t)(2 * t->n_cross + 1 + t->n_hidden), sizeof(float *));
    if (!w->mem || !w->ptrs) {
        rk_work_free(w);
        return rk_fail(err, RK_ENOMEM, "work buffers: out of memory for %d rows", cap);
    }
    w->xs = w->ptrs;
    w->us = w->ptrs + t->n_cross + 1;
    w->act = w->us + t->n_cross;
    float *p = w->mem;
    w->x0 = p, p += B * D;
    w->xs[0] = w->x0;
    for (int l = 0; l < t->n_cross; l++) {
        w->xs[l + 1] = p, p += B * D;
        w->us[l] = p, p += B * D;
    }
    for (int i = 0; i < t->n_hidden; i++) w->act[i] = p, p += B * (size_t)t->hidden[i];
    w->logit = p, p += B;
    w->fm = p, p += 2 * B;
    w->pre = p, p += maxh;
    if (backward) {
        w->dlogit = p, p += B;
        w->da = p, p += B * maxh;
        w->db_ = p, p += B * maxh;
        w->dx0 = p, p += B * D;
        w->dxl = p, p += B * D;
        w->scratch = p, p += B * D;
    }
    return RK_OK;
}

void rk_work_free(rk_work *w) {
    rk_free(w->mem);
    rk_free(w->ptrs);
    memset(w, 0, sizeof *w);
}

/* ---------------------------------------------------------------- forward / backward */

rk_status rk_model_fill_x0(const rk_model *m, const rk_batch *b, rk_work *w, rk_embed_scratch *scr, rk_err *err) {
    return rk_model_fill_x0_ex(m, b, w, scr, NULL, err);
}

rk_status rk_model_fill_x0_ex(const rk_model *m, const rk_batch *b, rk_work *w, rk_embed_scratch *scr,
                              const uint8_t *same, rk_err *err) {
    const int B = b->n_rows, D = m->D;
    for (int f = 0; f < m->cfg.n_features; f++) {
        const rk_feature *ft = &m->cfg.features[f];
        float *out = w->x0 + m->col[f];
        /* a bag every row shares: pooled once (rows 0's bag), then copied */
        int nb = ft->kind == RK_FEAT_SPARSE && same && same[f] ? 1 : B;
        if (ft->kind == RK_FEAT_DENSE) {
            for (int r = 0; r < B; r++) out[(size_t)r * D] = b->dense[(size_t)r * b->n_features + f];
        } else if (m->tables[f]) {
            /* An updatable model's RAM rows change under rk_model_apply_updates. */
            if (m->updatable && atomic_load(&m->ram_pending)) ram_drain((rk_model *)m);
            if (m->updatable) pthread_rwlock_rdlock((pthread_rwlock_t *)&m->ram_mu);
            rk_embedding_bag_forward(out, (size_t)D, m->tables[f], b->offsets[f], b->rows[f], nb, ft->dim, ft->pool);
            if (m->updatable) pthread_rwlock_unlock((pthread_rwlock_t *)&m->ram_mu);
        } else {
            RK_ASSERT(m->store && scr);
            rk_status s = rk_embed_bag_store(m->store, m->store_table[f], ft->dim, b->offsets[f], b->rows[f], nb,
                                             ft->pool, out, (size_t)D, scr, NULL, err);
            if (s) return rk_err_prefix(err, "feature '%s'", ft->name);
        }
        if (ft->kind == RK_FEAT_SPARSE)
            for (int r = nb; r < B; r++) memcpy(out + (size_t)r * D, out, (size_t)ft->dim * sizeof *out);
    }
    return RK_OK;
}

void rk_model_unpack(rk_model *m) {
    rk_free(m->packed);
    m->packed = NULL;
    rk_param_ptrs_free(&m->pk);
}

/* Pack (or size, when base is NULL) every weight matrix; returns the floats. */
static size_t pack_all(rk_model *m, float *base) {
    const rk_tower_cfg *t = &m->cfg.tower;
    size_t off = 0;
#define RK_PACK(dst, W, N, K)                                               \
    do {                                                                    \
        if (base) {                                                         \
            dst = base + off;                                               \
            rk_gemm_pack(dst, W, N, K);                                     \
        }                                                                   \
        off += rk_gemm_packed_floats(K, N);                                 \
    } while (0)
    for (int l = 0; l < t->n_cross; l++) RK_PACK(m->pk.cW[l], m->p.cW[l], m->D, m->D);
    int prev = m->D;
    for (int i = 0; i < t->n_hidden; i++) {
        RK_PACK(m->pk.mW[i], m->p.mW[i], t->hidden[i], prev);
        prev = t->hidden[i];
    }
    RK_PACK(m->pk.oW, m->p.oW, 1, prev);
    if (t->type == RK_TOWER_DEEPFM) RK_PACK(m->pk.fW, m->p.fW, 1, m->D);
#undef RK_PACK
    return off;
}

rk_status rk_model_pack(rk_model *m, rk_err *err) {
    if (m->n_members) return RK_OK; /* members are packed when opened */
    rk_model_unpack(m);
    m->user_prefix = 0;
    for (int f = 0; f < m->cfg.n_features && m->cfg.features[f].side == RK_SIDE_USER; f++)
        m->user_prefix = m->col[f] + (m->cfg.features[f].kind == RK_FEAT_SPARSE ? m->cfg.features[f].dim : 1);
    size_t n = pack_all(m, NULL);
    /* pk's per-layer arrays (pointing into params until pack_all repoints the matrices) */
    rk_status s = rk_model_point(m, m->params, &m->pk, err);
    if (s) return s;
    if (!(m->packed = rk_malloc((n ? n : 1) * sizeof(float))))
        return rk_fail(err, RK_ENOMEM, "model: out of memory for %zu packed weights", n);
    pack_all(m, m->packed);
    return RK_OK;
}

/* Columns [0, k) of x0 the same in every row (a request's user side)? */
static int shared_prefix(const float *x0, int B, int D, int k) {
    if (B < 2 || k <= 0) return 0;
    for (int r = 1; r < B; r++)
        if (memcmp(x0, x0 + (size_t)r * D, (size_t)k * sizeof *x0)) return 0;
    return 1;
}

/* The first layer over x0: when every row shares the user-side prefix of
 * x0, that part of the product is computed once (bit-identical). */
static void first_layer(const rk_model *m, rk_work *w, float *y, const float *Wp, const float *b, int B, int N,
                        rk_epilogue ep, const float *x0, const float *xl) {
    const int D = m->D, k1 = m->user_prefix;
    if (!shared_prefix(w->x0, B, D, k1)) {
        rk_gemm_forward(y, w->x0, Wp, b, B, D, N, ep, x0, xl);
        return;
    }
    rk_gemm_prefix_sums(w->pre, w->x0, Wp, D, N, k1);
    rk_gemm_forward_from(y, w->x0, Wp, b, B, D, N, ep, x0, xl, k1, w->pre);
}

/* Inference tower over packed weights: each layer one rk_gemm_forward with
 * its epilogue fused (cross layer, bias + ReLU, bias). */
static void forward_packed(const rk_model *m, rk_work *w, int B) {
    const rk_tower_cfg *t = &m->cfg.tower;
    const int D = m->D;
    for (int l = 0; l < t->n_cross; l++) {
        if (l == 0)
            first_layer(m, w, w->xs[1], m->pk.cW[0], m->p.cb[0], B, D, RK_EPI_CROSS, w->x0, w->x0);
        else
            rk_gemm_forward(w->xs[l + 1], w->xs[l], m->pk.cW[l], m->p.cb[l], B, D, D, RK_EPI_CROSS, w->x0, w->xs[l]);
    }
    const float *h = w->xs[t->n_cross];
    int prev = D;
    for (int i = 0; i < t->n_hidden; i++) {
        if (i == 0 && t->n_cross == 0) {
            first_layer(m, w, w->act[0], m->pk.mW[0], m->p.mb[0], B, t->hidden[0], RK_EPI_BIAS_RELU, NULL, NULL);
            h = w->act[0];
            prev = t->hidden[0];
            continue;
        }
        rk_gemm_forward(w->act[i], h, m->pk.mW[i], m->p.mb[i], B, prev, t->hidden[i], RK_EPI_BIAS_RELU, NULL, NULL);
        h = w->act[i];
        prev = t->hidden[i];
    }
    rk_gemm_forward(w->logit, h, m->pk.oW, m->p.ob, B, prev, 1, RK_EPI_BIAS, NULL, NULL);
    if (t->type == RK_TOWER_DEEPFM) {
        float *fm1 = w->fm, *fm2 = w->fm + B;
        rk_gemm_forward(fm1, w->x0, m->pk.fW, m->p.fb, B, D, 1, RK_EPI_BIAS, NULL, NULL);
        rk_fm_forward(fm2, w->x0, (size_t)D, m->fm_cols, m->n_fm, m->fm_k, B);
        for (int b = 0; b < B; b++) w->logit[b] += fm1[b] + fm2[b];
    }
}

void rk_model_forward(const rk_model *m, rk_work *w, int B) {
    if (m->packed) {
        forward_packed(m, w, B);
        return;
    }
    const rk_tower_cfg *t = &m->cfg.tower;
    const int D = m->D;
    for (int l = 0; l < t->n_cross; l++)
        rk_cross_forward(w->xs[l + 1], w->us[l], w->x0, w->xs[l], m->p.cW[l], m->p.cb[l], B, D);
    const float *h = w->xs[t->n_cross];
    int prev = D;
    for (int i = 0; i < t->n_hidden; i++) {
        rk_linear_forward(w->act[i], h, m->p.mW[i], m->p.mb[i], B, prev, t->hidden[i]);
        rk_relu_forward(w->act[i], w->act[i], (size_t)B * (size_t)t->hidden[i]);
        if (w->dropout > 0) { /* inverted dropout: a dropped unit is 0, which relu_backward's mask also drops */
            const float keep = 1.0f - w->dropout, scale = 1.0f / keep;
            for (size_t k = 0; k < (size_t)B * (size_t)t->hidden[i]; k++)
                w->act[i][k] = rk_rng_uniform(&w->drop_rng) < keep ? w->act[i][k] * scale : 0.0f;
        }
        h = w->act[i];
        prev = t->hidden[i];
    }
    rk_linear_forward(w->logit, h, m->p.oW, m->p.ob, B, prev, 1);
    if (t->type == RK_TOWER_DEEPFM) {
        /* logit += w_fm . x0 + b_fm + FM second-order term (DeepFM, Guo et al. 2017, eq. 1-2) */
        float *fm1 = w->fm, *fm2 = w->fm + B;
        rk_linear_forward(fm1, w->x0, m->p.fW, m->p.fb, B, D, 1);
        rk_fm_forward(fm2, w->x0, (size_t)D, m->fm_cols, m->n_fm, m->fm_k, B);
        for (int b = 0; b < B; b++) w->logit[b] += fm1[b] + fm2[b];
    }
}

void rk_model_backward(const rk_model *m, rk_work *w, int B, float *g) {
    const rk_tower_cfg *t = &m->cfg.tower;
    const int D = m->D;
    /* the gradient of a tensor sits at the tensor's offset in g */
#define GRAD(ptr) (g + ((ptr) - m->params))
    int nh = t->n_hidden;
    const float *hlast = nh ? w->act[nh - 1] : w->xs[t->n_cross];
    int prev = nh ? t->hidden[nh - 1] : D;
    /* da = d loss / d hlast */
    float *da = w->da, *dtmp = w->db_;
    rk_linear_backward(da, GRAD(m->p.oW), GRAD(m->p.ob), w->dlogit, hlast, m->p.oW, B, prev, 1);
    if (w->dh_extra) cblas_saxpy(B * prev, 1.0f, w->dh_extra, 1, da, 1);
    for (int i = nh - 1; i >= 0; i--) {
        int in = i ? t->hidden[i - 1] : D;
        const float *x = i ? w->act[i - 1] : w->xs[t->n_cross];
        if (w->dropout > 0) cblas_sscal(B * t->hidden[i], 1.0f / (1.0f - w->dropout), da, 1); /* the kept units' scale */
        rk_relu_backward(da, da, w->act[i], (size_t)B * (size_t)t->hidden[i]);
        float *dx = i ? dtmp : w->dxl;
        rk_linear_backward(dx, GRAD(m->p.mW[i]), GRAD(m->p.mb[i]), da, x, m->p.mW[i], B, in, t->hidden[i]);
        if (i) {
            float *sw = da;
            da = dtmp;
            dtmp = sw;
        }
    }
    if (nh == 0) memcpy(w->dxl, da, (size_t)B * (size_t)D * sizeof(float));
    /* w->dxl = d loss / d x_L; walk the cross layers back to x0. */
    memset(w->dx0, 0, (size_t)B * (size_t)D * sizeof(float));
    for (int l = t->n_cross - 1; l >= 0; l--)
        rk_cross_backward(w->dx0, w->dxl, GRAD(m->p.cW[l]), GRAD(m->p.cb[l]), w->dxl, w->x0, w->xs[l], w->us[l], m->p.cW[l], B, D, w->scratch);
    /* x_0 feeds layer 0 as x_l too: add that path. */
    cblas_saxpy(B * D, 1.0f, w->dxl, 1, w->dx0, 1);
    if (t->type == RK_TOWER_DEEPFM) {
        /* first-order term: dW += dlogit^T x0, dx0 += dlogit W (through scratch) */
        rk_linear_backward(w->scratch, GRAD(m->p.fW), GRAD(m->p.fb), w->dlogit, w->x0, m->p.fW, B, D, 1);
        cblas_saxpy(B * D, 1.0f, w->scratch, 1, w->dx0, 1);
        rk_fm_backward(w->dx0, w->dlogit, w->x0, (size_t)D, m->fm_cols, m->n_fm, m->fm_k, B);
    }
#undef GRAD
}

/* ---------------------------------------------------------------- the tower alone */

struct rk_tower_run {
    const rk_model *m;
    rk_work w;
};

rk_status rk_tower_run_create(const rk_model *m, int max_rows, rk_tower_run **out, rk_err *err) {
    *out = NULL;
    if (m->n_members) return rk_fail(err, RK_EINVAL, "tower: ensembles have one tower per member");
    if (max_rows <= 0) return rk_fail(err, RK_EINVAL, "tower: max_rows must be > 0, got %d", max_rows);
    rk_tower_run *t = rk_calloc(1, sizeof *t);
    if (!t) return rk_fail(err, RK_ENOMEM, "tower: out of memory");
    t->m = m;
    rk_status s = rk_work_init(&t->w, m, max_rows, 0, err);
    if (s) {
        rk_free(t);
        return s;
    }
    memset(t->w.x0, 0, (size_t)max_rows * (size_t)m->D * sizeof(float));
    *out = t;
    return RK_OK;
}

float *rk_tower_run_input(rk_tower_run *t) { return t->w.x0; }

const float *rk_tower_run_forward(rk_tower_run *t, int B) {
    RK_ASSERT(B > 0 && B <= t->w.cap);
    rk_model_forward(t->m, &t->w, B);
    return t->w.logit;
}

void rk_tower_run_destroy(rk_tower_run *t) {
    if (!t) return;
    rk_work_free(&t->w);
    rk_free(t);
}

/* ---------------------------------------------------------------- predict */

static rk_status predict_single(const rk_model *m, const rk_batch *b, rk_device *dev, float *pctr, rk_err *err);

rk_status rk_model_predict_members(const rk_model *m, const rk_batch *b, float *pctr, float *member_pctr,
                                   float *member_w, rk_err *err) {
    return rk_model_predict_dev(m, b, NULL, pctr, member_pctr, member_w, err);
}

rk_status rk_model_predict_dev(const rk_model *m, const rk_batch *b, rk_device *dev, float *pctr, float *member_pctr,
                               float *member_w, rk_err *err) {
    const int M = m->n_members, n = b->n_rows;
    if (M == 0) return predict_single(m, b, dev, pctr, err);
    float *mp = rk_malloc((size_t)n * (size_t)M * sizeof(float)), *p = rk_malloc((size_t)M * sizeof(float));
    double *w = rk_malloc((size_t)M * sizeof(double));
    if (!mp || !p || !w) {
        rk_free(mp);
        rk_free(p);
        rk_free(w);
        return rk_fail(err, RK_ENOMEM, "predict: out of memory");
    }
    rk_status s = RK_OK;
    for (int i = 0; i < M && s == RK_OK; i++) s = predict_single(m->member[i], b, dev, mp + (size_t)i * n, err);
    double tau = exp((double)m->log_tau);
    for (int r = 0; s == RK_OK && r < n; r++) {
        for (int i = 0; i < M; i++) {
            p[i] = mp[(size_t)i * n + r];
            if (!isfinite(p[i]) && s == RK_OK)
                s = rk_fail(err, RK_ENUMERIC, "row %d: member '%s' pCTR is not finite", r, m->cfg.members[i].name);
        }
        if (s) break;
        pctr[r] = (float)rk_fuse(m->cfg.fusion.type, p, M, tau, w);
        for (int i = 0; i < M; i++) {
            if (member_pctr) member_pctr[(size_t)r * M + i] = p[i];
            if (member_w) member_w[(size_t)r * M + i] = (float)w[i];
        }
    }
    rk_free(mp);
    rk_free(p);
    rk_free(w);
    return s;
}

rk_status rk_model_predict(const rk_model *m, const rk_batch *b, float *pctr, rk_err *err) {
    return rk_model_predict_dev(m, b, NULL, pctr, NULL, NULL, err);
}

/* One tower's pCTRs in chunks of 512 rows; the tower on dev when given
 * (embedding bags are pooled on the host either way). */
static rk_status predict_single(const rk_model *m, const rk_batch *b, rk_device *dev, float *pctr, rk_err *err) {
    const int chunk = 512;
    rk_work w;
    rk_status s = rk_work_init(&w, m, chunk, 0, err);
    if (s) return s;
    rk_tower_dev *td = NULL;
    if (dev && (s = rk_tower_dev_create(m, dev, chunk, &td, err)) != RK_OK) {
        rk_work_free(&w);
        return s;
    }
    /* scratch for the largest chunk's values of any feature; one offsets
     * buffer per feature reused by every chunk */
    rk_embed_scratch *scr = NULL;
    size_t maxv = 1;
    for (int f = 0; f < m->cfg.n_features; f++)
        for (int r0 = 0; b->offsets[f] && r0 < b->n_rows; r0 += chunk) {
            int r1 = b->n_rows - r0 < chunk ? b->n_rows : r0 + chunk;
            size_t v = b->offsets[f][r1] - b->offsets[f][r0];
            if (v > maxv) maxv = v;
        }
    uint32_t *offs = rk_malloc((size_t)m->cfg.n_features * (chunk + 1) * sizeof(uint32_t));
    rk_batch view = *b;
    view.offsets = rk_calloc((size_t)m->cfg.n_features + 1, sizeof *view.offsets);
    view.rows = rk_calloc((size_t)m->cfg.n_features + 1, sizeof *view.rows);
    if (!offs || !view.offsets || !view.rows) s = rk_fail(err, RK_ENOMEM, "predict: out of memory");
    if (s == RK_OK && m->store) s = rk_embed_scratch_create(maxv ? maxv : 1, m->max_dim ? m->max_dim : 1, &scr, err);
    rk_progress pg;
    int show = b->n_rows >= 100000;
    if (show) rk_progress_start(&pg, "score", "rows", (uint64_t)b->n_rows);
    for (int r0 = 0; s == RK_OK && r0 < b->n_rows; r0 += chunk) {
        int n = b->n_rows - r0 < chunk ? b->n_rows - r0 : chunk;
        /* A view of rows [r0, r0+n): offsets are absolute into rows[]. */
        view.n_rows = n;
        view.dense = b->dense + (size_t)r0 * b->n_features;
        for (int f = 0; f < m->cfg.n_features; f++) {
            if (!b->offsets[f]) continue;
            uint32_t base = b->offsets[f][r0], *o = offs + (size_t)f * (chunk + 1);
            for (int i = 0; i <= n; i++) o[i] = b->offsets[f][r0 + i] - base;
            view.offsets[f] = o;
            view.rows[f] = b->rows[f] + base;
        }
        s = rk_model_fill_x0(m, &view, &w, scr, err);
        if (s == RK_OK && td) s = rk_tower_dev_forward(td, w.x0, n, w.logit, err);
        else if (s == RK_OK) rk_model_forward(m, &w, n);
        if (s == RK_OK) {
            for (int i = 0; i < n && s == RK_OK; i++) {
                pctr[r0 + i] = rk_sigmoid(w.logit[i]);
                if (!isfinite(pctr[r0 + i])) s = rk_fail(err, RK_ENUMERIC, "row %d: pCTR is not finite", r0 + i);
            }
        }
        if (show) rk_progress_add(&pg, (uint64_t)n);
    }
    if (show && s == RK_OK) rk_progress_finish(&pg);
    rk_free(offs);
    rk_free(view.offsets);
    rk_free(view.rows);
    rk_embed_scratch_destroy(scr);
    rk_tower_dev_destroy(td);
    rk_work_free(&w);
    return s;
}
