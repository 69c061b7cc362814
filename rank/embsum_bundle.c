/*
 * rank/embsum_bundle.c — the EmbSum bundle (layout: rank/embsum.h): offline
 * precompute of every user's UPE and every item's CPE into the store's
 * keyed tables "upe" and "cpe", the parameters and config beside them, and
 * the read side (`rank embsum score`, rankd) that scores from the store.
 *
 * Written into DIR.tmp-PID (files fsynced, the store through
 * rk_store_write_keyed) and renamed into place, so a half-written bundle is
 * never loadable; a version string "embsum/<seed>-<unix time>" names it.
 */
#define _GNU_SOURCE
#include "rank.h"
#include "embsum_internal.h"
#include "store.h"
#include "internal.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <dirent.h>
#include <sys/stat.h>

static const char *const PNAMES[] = {"Cu", "Wau", "Ci", "Wai", "Pu", "Wg", "bg", "cal"};

/* Parameter i of e: pointer, rank-2 shape. */
static float *param_at(const rk_embsum *e, int i, int64_t sh[2]) {
    const rk_embsum_cfg *c = &e->cfg;
    const int d = e->d;
    switch (i) {
    case 0: sh[0] = c->m, sh[1] = c->dc; return e->p.Cu;
    case 1: sh[0] = d, sh[1] = c->dc; return e->p.Wau;
    case 2: sh[0] = c->k, sh[1] = c->dc; return e->p.Ci;
    case 3: sh[0] = d, sh[1] = c->dc; return e->p.Wai;
    case 4: sh[0] = d, sh[1] = d; return e->p.Pu;
    case 5: sh[0] = d, sh[1] = d; return e->p.Wg;
    case 6: sh[0] = 1, sh[1] = d; return e->p.bg;
    default: sh[0] = 1, sh[1] = 2; return e->p.cal;
    }
}

static json_t *cfg_json(const rk_embsum_cfg *c) {
    return json_pack("{si si si si si si ss sf ss si sf si si si sf sf si sI}", "m", c->m, "k", c->k, "dc", c->dc,
                     "g", c->g, "p", c->p, "item_tokens", c->item_tokens, "pool", rk_match_pool_name(c->pool), "tau",
                     (double)c->tau, "session_pool", rk_session_pool_name(c->session_pool), "global", c->global,
                     "lambda", (double)c->lambda, "negatives", c->negatives, "epochs", c->epochs, "batch", c->batch,
                     "lr", (double)c->lr, "nce_scale", (double)c->nce_scale, "max_pos_per_user", c->max_pos_per_user,
                     "seed", (json_int_t)c->seed);
}

static rk_status cfg_from_json(json_t *j, const char *path, rk_embsum_cfg *c, rk_err *err) {
    static const char *const ints[] = {"m", "k", "dc", "g", "p", "item_tokens", "global", "negatives", "epochs", "batch", "max_pos_per_user"};
    int *const iv[] = {&c->m, &c->k, &c->dc, &c->g, &c->p, &c->item_tokens, &c->global, &c->negatives, &c->epochs, &c->batch, &c->max_pos_per_user};
    static const char *const reals[] = {"tau", "lambda", "lr", "nce_scale"};
    float *const rv[] = {&c->tau, &c->lambda, &c->lr, &c->nce_scale};
    for (size_t i = 0; i < sizeof ints / sizeof *ints; i++) {
        json_t *v = json_object_get(j, ints[i]);
        if (!json_is_integer(v)) return rk_fail(err, RK_EFORMAT, "%s: config.%s: missing or not an integer", path, ints[i]);
        *iv[i] = (int)json_integer_value(v);
    }
    for (size_t i = 0; i < sizeof reals / sizeof *reals; i++) {
        json_t *v = json_object_get(j, reals[i]);
        if (!json_is_number(v)) return rk_fail(err, RK_EFORMAT, "%s: config.%s: missing or not a number", path, reals[i]);
        *rv[i] = (float)json_number_value(v);
    }
    json_t *seed = json_object_get(j, "seed");
    c->seed = json_is_integer(seed) ? (uint64_t)json_integer_value(seed) : 0;
    const char *pool = json_string_value(json_object_get(j, "pool")), *sp = json_string_value(json_object_get(j, "session_pool"));
    rk_status s = rk_match_pool_parse(pool ? pool : "", &c->pool, err);
    if (s == RK_OK) s = rk_session_pool_parse(sp ? sp : "", &c->session_pool, err);
    if (s == RK_OK) s = rk_embsum_cfg_check(c, err);
    return s != RK_OK ? rk_err_prefix(err, "%s: config", path) : RK_OK;
}

/* ---------------------------------------------------------------- save */

static rk_status write_params(const rk_embsum *e, const char *path, const char *enc_id, const float *default_upe,
                              rk_err *err) {
    rk_st_writer *w = NULL;
    rk_status s = rk_st_writer_create(&w, err);
    int64_t dsh[2] = {e->cfg.m, e->d};
    if (s == RK_OK && default_upe) s = rk_st_writer_add_f32(w, "default_upe", default_upe, 2, dsh, err);
    for (int i = 0; i < 8 && s == RK_OK; i++) {
        int64_t sh[2];
        const float *p = param_at(e, i, sh);
        s = rk_st_writer_add_f32(w, PNAMES[i], p, 2, sh, err);
    }
    if (s == RK_OK) s = rk_st_writer_add_meta(w, "encoder", enc_id ? enc_id : "", err);
    if (s == RK_OK) s = rk_st_writer_write(w, path, err);
    rk_st_writer_destroy(w);
    return s;
}

/* items.tsv: id <TAB> session text <TAB> content text, for UPE from
 * recent_item_ids and CPE at request time (rank/embsum_serve.c). */
static rk_status write_item_texts(const rk_embsum_data *d, const char *dir, rk_err *err) {
    size_t bytes = 0;
    for (int i = 0; i < d->n_items; i++) bytes += strlen(d->item_short[i]) + strlen(d->item_text[i]) + 32;
    char *buf = rk_malloc(bytes + 1), *w = buf, path[4300];
    if (!buf) return rk_fail(err, RK_ENOMEM, "items.tsv: out of memory");
    for (int i = 0; i < d->n_items; i++) {
        w += sprintf(w, "%lld\t", (long long)d->item_id[i]);
        for (const char *t = d->item_short[i]; *t; t++) *w++ = *t == '\t' || *t == '\n' ? ' ' : *t;
        *w++ = '\t';
        for (const char *t = d->item_text[i]; *t; t++) *w++ = *t == '\t' || *t == '\n' ? ' ' : *t;
        *w++ = '\n';
    }
    snprintf(path, sizeof path, "%s/items.tsv", dir);
    rk_status s = rk_write_file(path, buf, (size_t)(w - buf), err);
    rk_free(buf);
    return s;
}

/* May DIR be written? Absent, or (with overwrite) an EmbSum bundle: --force
 * once removed any directory named by --out, the data directory included.
 * Temporaries of writers that died (DIR.tmp-PID, DIR.old-PID) are swept
 * first, DIR.old-PID put back when DIR is missing. */
static rk_status check_target(const char *dir, int overwrite, rk_err *err) {
    rk_sweep_dead_writers(dir, 1, "embsum bundle");
    if (!rk_path_exists(dir)) return RK_OK;
    if (!overwrite) return rk_fail(err, RK_EEXIST, "%s: exists (overwrite it with --force)", dir);
    char p[4200];
    snprintf(p, sizeof p, "%s/embsum.json", dir);
    if (!rk_is_dir(dir) || !rk_path_exists(p))
        return rk_fail(err, RK_EEXIST, "%s: exists and is not an EmbSum bundle (no embsum.json); --force replaces only one",
                       dir);
    return RK_OK;
}

/* Rename the complete bundle tmp to dir: an old bundle is moved aside to
 * DIR.old-PID first and removed after, so DIR always names a whole bundle
 * (a crash in between leaves DIR.old-PID, which the next save restores). */
static rk_status publish(const char *tmp, const char *dir, rk_err *err) {
    char old[4200] = "", parent[4200];
    if (rk_path_exists(dir)) {
        snprintf(old, sizeof old, "%s.old-%d", dir, (int)getpid());
        rk_rm_rf(old, NULL);
        if (rename(dir, old)) return rk_fail(err, RK_EIO, "%s: cannot move the old bundle aside: %s", dir, strerror(errno));
    }
    if (rename(tmp, dir)) {
        int e = errno;
        if (old[0]) (void)rename(old, dir);
        return rk_fail(err, RK_EIO, "%s: cannot rename into place: %s", dir, strerror(e));
    }
    if (old[0]) rk_rm_rf(old, NULL);
    rk_path_parent(dir, parent, sizeof parent);
    return rk_fsync_dir(parent, err);
}

rk_status rk_embsum_save(const rk_embsum *e, const rk_embsum_data *d, const char *dir, const char *codec,
                         const char *enc_id, const char *metrics_json, int overwrite, rk_embsum_report *rep,
                         rk_err *err) {
    rk_codec cd;
    rk_status s = rk_codec_parse(codec, &cd, err);
    if (s != RK_OK) return s;
    if ((s = check_target(dir, overwrite, err)) != RK_OK) return s;
    const rk_embsum_cfg *c = &e->cfg;
    const int D = e->d;
    const size_t md = (size_t)c->m * D, kd = (size_t)c->k * D;
    char tmp[4200], path[4300];
    snprintf(tmp, sizeof tmp, "%s.tmp-%d", dir, (int)getpid());
    rk_rm_rf(tmp, NULL);
    float *upe = rk_malloc(((size_t)d->n_users + 1) * md * sizeof(float));
    float *cpe = rk_malloc((size_t)d->n_items * kd * sizeof(float));
    uint64_t *ukeys = rk_malloc(((size_t)d->n_users + 1) * sizeof *ukeys), *ikeys = rk_malloc((size_t)d->n_items * sizeof *ikeys);
    rk_embsum_work *w = NULL;
    json_t *j = NULL;
    if (!upe || !cpe || !ukeys || !ikeys) { s = rk_fail(err, RK_ENOMEM, "embsum save: out of memory"); goto out; }
    int max_nt = 1;
    for (int i = 0; i < d->n_items; i++)
        if (d->tok_off[i + 1] - d->tok_off[i] > max_nt) max_nt = d->tok_off[i + 1] - d->tok_off[i];
    if ((s = rk_embsum_work_create(e, max_nt, &w, err)) != RK_OK) goto out;
    /* CPE of every item, UPE of every user with a history before the test period */
    double t0 = rk_now();
    for (int i = 0; i < d->n_items && s == RK_OK; i++) {
        ikeys[i] = (uint64_t)d->item_id[i];
        if (d->item_id[i] < 0) s = rk_fail(err, RK_EINVAL, "items.csv: movieId %lld: keys must be >= 0", (long long)d->item_id[i]);
        else s = rk_embsum_cpe(e, d->tok + (size_t)d->tok_off[i] * D, d->tok_off[i + 1] - d->tok_off[i], cpe + (size_t)i * kd, w, err);
    }
    double t1 = rk_now();
    size_t nu = 0;
    for (int u = 0; u < d->n_users && s == RK_OK; u++) {
        int ns;
        const float *sess = rk_embsum_sessions(d, RK_SPLIT_TEST, u, c->session_pool, &ns);
        if (!ns) continue;
        if (d->user_id[u] < 0) { s = rk_fail(err, RK_EINVAL, "user_id %lld: keys must be >= 0", (long long)d->user_id[u]); break; }
        ukeys[nu] = (uint64_t)d->user_id[u];
        s = rk_embsum_upe(e, sess, ns, upe + nu * md, w, err);
        nu++;
    }
    double t2 = rk_now();
    if (s != RK_OK) goto out;
    if (!nu) { s = rk_fail(err, RK_EINVAL, "embsum save: no user has a history"); goto out; }
    if (rep) rep->cpe_items_per_s = d->n_items / fmax(t1 - t0, 1e-9), rep->upe_users_per_s = nu / fmax(t2 - t1, 1e-9);
    if ((s = rk_mkdir_p(tmp, err)) != RK_OK) goto out;
    snprintf(path, sizeof path, "%s/tables", tmp);
    rk_table_spec spec[2] = {{"upe", (int)md, nu, upe}, {"cpe", (int)kd, (uint64_t)d->n_items, cpe}};
    const uint64_t *keys[2] = {ukeys, ikeys};
    rk_table_opts topt[2] = {{cd, NULL}, {cd, NULL}};
    if ((s = rk_store_write_keyed(path, spec, keys, 2, topt, err)) != RK_OK) goto out;
    /* the default UPE of users with neither a stored UPE nor known recent items: the mean UPE */
    float *dflt = rk_calloc(md, sizeof(float));
    if (!dflt) { s = rk_fail(err, RK_ENOMEM, "embsum save: out of memory"); goto out; }
    for (size_t u = 0; u < nu; u++)
        for (size_t j = 0; j < md; j++) dflt[j] += upe[u * md + j] / (float)nu;
    snprintf(path, sizeof path, "%s/embsum.safetensors", tmp);
    s = write_params(e, path, enc_id, dflt, err);
    rk_free(dflt);
    if (s != RK_OK) goto out;
    if ((s = write_item_texts(d, tmp, err)) != RK_OK) goto out;
    char version[128];
    snprintf(version, sizeof version, "embsum/%llu-%lld", (unsigned long long)c->seed, (long long)time(NULL));
    json_t *metrics = metrics_json ? json_loads(metrics_json, 0, NULL) : json_object();
    j = json_pack("{si ss ss so si ss s{s{sI si ss} s{sI si ss}} so}", "format_version", RK_EMBSUM_FORMAT_VERSION, "kind",
                  "embsum", "version", version, "config", cfg_json(c), "dim", D, "encoder", enc_id ? enc_id : "", "tables",
                  "upe", "rows", (json_int_t)nu, "dim", (int)md, "codec", rk_codec_name(cd), "cpe", "rows",
                  (json_int_t)d->n_items, "dim", (int)kd, "codec", rk_codec_name(cd), "metrics",
                  metrics ? metrics : json_object());
    if (!j) { s = rk_fail(err, RK_EINTERNAL, "embsum.json: cannot build"); goto out; }
    char *txt = json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS);
    snprintf(path, sizeof path, "%s/embsum.json", tmp);
    s = txt ? rk_write_file(path, txt, strlen(txt), err) : rk_fail(err, RK_ENOMEM, "embsum.json: out of memory");
    free(txt);
    if (s == RK_OK) s = rk_fsync_dir(tmp, err);
    if (s == RK_OK) s = publish(tmp, dir, err);
out:
    if (s != RK_OK) rk_rm_rf(tmp, NULL);
    json_decref(j);
    rk_embsum_work_destroy(w);
    rk_free(upe), rk_free(cpe), rk_free(ukeys), rk_free(ikeys);
    return s;
}

/* ---------------------------------------------------------------- load */

static rk_status load_json(const char *dir, json_t **out, rk_err *err) {
    char path[4200];
    snprintf(path, sizeof path, "%s/embsum.json", dir);
    json_error_t je;
    if (!rk_path_exists(path)) return rk_fail(err, RK_ENOTFOUND, "%s: No such file or directory", path);
    json_t *j = json_load_file(path, 0, &je);
    if (!j) return rk_fail(err, RK_EFORMAT, "%s: line %d: %s", path, je.line, je.text);
    json_t *fv = json_object_get(j, "format_version");
    const char *kind = json_string_value(json_object_get(j, "kind"));
    if (!json_is_integer(fv) || json_integer_value(fv) != RK_EMBSUM_FORMAT_VERSION || !kind || strcmp(kind, "embsum")) {
        json_decref(j);
        return rk_fail(err, RK_EVERSION, "%s: not an EmbSum bundle of format_version %d", path, RK_EMBSUM_FORMAT_VERSION);
    }
    *out = j;
    return RK_OK;
}

rk_status rk_embsum_load(const char *dir, rk_embsum **out, char *enc_id, size_t enc_id_cap, rk_err *err) {
    *out = NULL;
    json_t *j = NULL;
    rk_st_file *f = NULL;
    rk_embsum *e = NULL;
    char path[4200];
    rk_status s = load_json(dir, &j, err);
    if (s != RK_OK) return s;
    rk_embsum_cfg c = RK_EMBSUM_CFG_DEFAULT;
    snprintf(path, sizeof path, "%s/embsum.json", dir);
    json_t *dim = json_object_get(j, "dim");
    if ((s = cfg_from_json(json_object_get(j, "config"), path, &c, err)) != RK_OK) goto out;
    if (!json_is_integer(dim)) { s = rk_fail(err, RK_EFORMAT, "%s: dim: missing", path); goto out; }
    if ((s = rk_embsum_create(&c, (int)json_integer_value(dim), &e, err)) != RK_OK) goto out;
    snprintf(path, sizeof path, "%s/embsum.safetensors", dir);
    if ((s = rk_st_open(path, &f, err)) != RK_OK) goto out;
    for (int i = 0; i < 8 && s == RK_OK; i++) {
        int64_t sh[2];
        float *p = param_at(e, i, sh);
        s = rk_st_read_f32(f, PNAMES[i], p, 2, sh, err);
    }
    for (size_t i = 0; s == RK_OK && i < e->n_floats; i++)
        if (!isfinite(e->params[i])) s = rk_fail(err, RK_ENUMERIC, "%s: a parameter is not finite", path);
    if (s == RK_OK && enc_id) {
        const char *id = rk_st_meta(f, "encoder");
        snprintf(enc_id, enc_id_cap, "%s", id ? id : "");
    }
out:
    rk_st_close(f);
    json_decref(j);
    if (s != RK_OK) rk_embsum_destroy(e);
    else *out = e;
    return s;
}

/* ---------------------------------------------------------------- bundle reading */

/* items.tsv into b (ids ascending, as written). */
static rk_status load_item_texts(rk_embsum_bundle *b, const char *dir, rk_err *err) {
    char path[4200];
    size_t len;
    snprintf(path, sizeof path, "%s/items.tsv", dir);
    rk_status s = rk_read_file(path, &b->text_buf, &len, err);
    if (s != RK_OK) return s;
    size_t n = 0;
    for (size_t i = 0; i < len; i++) n += b->text_buf[i] == '\n';
    b->item_id = rk_malloc((n + 1) * sizeof *b->item_id);
    b->item_short = rk_malloc((n + 1) * sizeof *b->item_short);
    b->item_text = rk_malloc((n + 1) * sizeof *b->item_text);
    if (!b->item_id || !b->item_short || !b->item_text) return rk_fail(err, RK_ENOMEM, "items.tsv: out of memory");
    char *p = b->text_buf;
    for (size_t r = 0; r < n; r++) {
        char *nl = strchr(p, '\n'), *t1 = strchr(p, '\t'), *t2 = t1 ? strchr(t1 + 1, '\t') : NULL, *end;
        if (!nl || !t2 || t2 > nl) return rk_fail(err, RK_EFORMAT, "%s row %zu: expected id<TAB>text<TAB>text", path, r + 1);
        *nl = *t1 = *t2 = 0;
        b->item_id[r] = strtoll(p, &end, 10);
        if (*end || (r && b->item_id[r] <= b->item_id[r - 1]))
            return rk_fail(err, RK_EFORMAT, "%s row %zu, column id: '%.30s' is not an ascending integer", path, r + 1, p);
        b->item_short[r] = t1 + 1, b->item_text[r] = t2 + 1;
        p = nl + 1;
    }
    b->n_items = (int)n;
    return RK_OK;
}

/* embsum.json's tables.{upe,cpe}.{rows,dim,codec} against the store that
 * was opened (an edited or mixed-up bundle is refused, never served with a
 * codec or size it does not have). */
static rk_status check_tables(const char *dir, json_t *j, const rk_store *st, rk_err *err) {
    static const char *const names[2] = {"upe", "cpe"};
    for (int t = 0; t < 2; t++) {
        json_t *tj = json_object_get(json_object_get(j, "tables"), names[t]);
        json_t *rows = json_object_get(tj, "rows"), *dim = json_object_get(tj, "dim");
        const char *codec = json_string_value(json_object_get(tj, "codec"));
        rk_table_info ti;
        rk_store_table_info(st, t, &ti);
        if (!json_is_integer(rows) || (uint64_t)json_integer_value(rows) != ti.rows)
            return rk_fail(err, RK_EFORMAT, "%s/embsum.json tables.%s.rows: not the %llu rows of the store", dir, names[t],
                           (unsigned long long)ti.rows);
        if (!json_is_integer(dim) || json_integer_value(dim) != ti.dim)
            return rk_fail(err, RK_EFORMAT, "%s/embsum.json tables.%s.dim: not the store's %d", dir, names[t], ti.dim);
        if (!codec || strcmp(codec, rk_codec_name(ti.codec)))
            return rk_fail(err, RK_EFORMAT, "%s/embsum.json tables.%s.codec: '%s', but the store's is %s", dir, names[t],
                           codec ? codec : "(missing)", rk_codec_name(ti.codec));
    }
    return RK_OK;
}

rk_status rk_embsum_bundle_open(const char *dir, rk_embsum_bundle **out, rk_err *err) {
    *out = NULL;
    rk_embsum_bundle *b = rk_calloc(1, sizeof *b);
    if (!b) return rk_fail(err, RK_ENOMEM, "embsum bundle: out of memory");
    json_t *j = NULL;
    rk_status s = rk_embsum_load(dir, &b->e, NULL, 0, err);
    if (s == RK_OK) s = load_json(dir, &j, err);
    if (s == RK_OK) {
        const char *v = json_string_value(json_object_get(j, "version"));
        json_t *t = json_object_get(json_object_get(json_object_get(j, "tables"), "upe"), "codec");
        snprintf(b->version, sizeof b->version, "%s", v ? v : "");
        snprintf(b->codec, sizeof b->codec, "%s", json_string_value(t) ? json_string_value(t) : "");
        char path[4200];
        snprintf(path, sizeof path, "%s/tables", dir);
        const char *names[2] = {"upe", "cpe"};
        int dims[2] = {b->e->cfg.m * b->e->d, b->e->cfg.k * b->e->d};
        rk_store_opts o = RK_STORE_OPTS_DEFAULT;
        s = rk_store_open_ex(path, names, dims, 2, &o, &b->st, err);
        if (s == RK_OK) s = check_tables(dir, j, b->st, err);
    }
    if (s == RK_OK) s = rk_embsum_work_create(b->e, b->e->cfg.item_tokens, &b->w, err);
    if (s == RK_OK) s = load_item_texts(b, dir, err);
    if (s == RK_OK) {
        char path[4200];
        rk_st_file *f = NULL;
        int64_t sh[2] = {b->e->cfg.m, b->e->d};
        snprintf(path, sizeof path, "%s/embsum.safetensors", dir);
        b->default_upe = rk_malloc((size_t)sh[0] * sh[1] * sizeof(float));
        s = b->default_upe ? rk_st_open(path, &f, err) : rk_fail(err, RK_ENOMEM, "out of memory");
        if (s == RK_OK) s = rk_st_read_f32(f, "default_upe", b->default_upe, 2, sh, err);
        rk_st_close(f);
    }
    json_decref(j);
    if (s != RK_OK) {
        rk_embsum_bundle_close(b);
        return s;
    }
    *out = b;
    return RK_OK;
}

void rk_embsum_bundle_close(rk_embsum_bundle *b) {
    if (!b) return;
    rk_embsum_work_destroy(b->w);
    rk_free(b->text_buf), rk_free(b->item_id), rk_free(b->item_short), rk_free(b->item_text), rk_free(b->default_upe);
    rk_free(b->upe), rk_free(b->cpe_all), rk_free(b->prod), rk_free(b->score), rk_free(b->keys), rk_free(b->unknown);
    rk_store_close(b->st);
    rk_embsum_destroy(b->e);
    rk_free(b);
}

const rk_embsum *rk_embsum_bundle_model(const rk_embsum_bundle *b) { return b->e; }
const char *rk_embsum_bundle_version(const rk_embsum_bundle *b) { return b->version; }
const char *rk_embsum_bundle_codec(const rk_embsum_bundle *b) { return b->codec; }
int rk_embsum_bundle_n_items(const rk_embsum_bundle *b) { return b->n_items; }
int64_t rk_embsum_bundle_item(const rk_embsum_bundle *b, int i) { return i >= 0 && i < b->n_items ? b->item_id[i] : -1; }

rk_status rk_embsum_bundle_upe(rk_embsum_bundle *b, int64_t user_id, float *upe, rk_err *err) {
    if (user_id < 0) return rk_fail(err, RK_ENOTFOUND, "user_id %lld: no UPE in the bundle", (long long)user_id);
    uint64_t key = (uint64_t)user_id;
    size_t missing = 0;
    rk_status s = rk_store_get(b->st, 0, &key, 1, upe, &missing, err);
    if (s == RK_OK && missing) s = rk_fail(err, RK_ENOTFOUND, "user_id %lld: no UPE in the bundle", (long long)user_id);
    return s;
}

rk_status rk_embsum_bundle_cpe(rk_embsum_bundle *b, const int64_t *item_ids, int n, float *cpe, rk_err *err) {
    const size_t kd = (size_t)b->e->cfg.k * b->e->d;
    for (int i = 0; i < n; i++)
        if (item_ids[i] < 0) return rk_fail(err, RK_ENOTFOUND, "item %lld: no CPE in the bundle", (long long)item_ids[i]);
    /* one batched lookup (ids are non-negative: the store's keys) */
    size_t missing = 0;
    rk_status s = rk_store_get(b->st, 1, (const uint64_t *)item_ids, (size_t)n, cpe, &missing, err);
    if (s != RK_OK || !missing) return s;
    for (int i = 0; i < n; i++) { /* name the first unknown item */
        uint64_t key = (uint64_t)item_ids[i];
        size_t m1 = 0;
        if ((s = rk_store_get(b->st, 1, &key, 1, cpe + (size_t)i * kd, &m1, err)) != RK_OK) return s;
        if (m1) return rk_fail(err, RK_ENOTFOUND, "item %lld: no CPE in the bundle", (long long)item_ids[i]);
    }
    return RK_OK;
}

/* ---------------------------------------------------------------- export to rankd */

/* Copy the tree src (directories and regular files) to dst (must not exist). */
static rk_status copy_tree(const char *src, const char *dst, rk_err *err) {
    DIR *dh = opendir(src);
    if (!dh) return rk_fail(err, RK_EIO, "%s: cannot open the directory", src);
    rk_status s = rk_mkdir_p(dst, err);
    struct dirent *de;
    while (s == RK_OK && (de = readdir(dh))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
        char a[4400], b[4400];
        struct stat st;
        snprintf(a, sizeof a, "%s/%s", src, de->d_name);
        snprintf(b, sizeof b, "%s/%s", dst, de->d_name);
        if (lstat(a, &st)) s = rk_fail(err, RK_EIO, "%s: cannot stat", a);
        else if (S_ISDIR(st.st_mode)) s = copy_tree(a, b, err);
        else if (!S_ISREG(st.st_mode)) s = rk_fail(err, RK_EFORMAT, "%s: not a regular file", a);
        else {
            char *buf = NULL;
            size_t len;
            s = rk_read_file(a, &buf, &len, err);
            if (s == RK_OK) s = rk_write_file(b, buf, len, err);
            rk_free(buf);
        }
    }
    closedir(dh);
    return s == RK_OK ? rk_fsync_dir(dst, err) : s;
}

/* The calibration model: one dense item input (the score, unstandardized)
 * and a DNN tower without hidden layers, its output layer = (a, b). */
static rk_status calibration_model(const rk_embsum *e, const char *name, const char *dir, rk_err *err) {
    char cfg_text[512], version[RK_NAME_MAX];
    snprintf(cfg_text, sizeof cfg_text,
             "{\"name\": \"%s\", \"features\": [{\"name\": \"%s\", \"kind\": \"dense\", \"side\": \"item\"}], "
             "\"tower\": {\"type\": \"dnn\", \"hidden\": []}}",
             name, RK_EMBSUM_FEATURE);
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(version, sizeof version, "%Y%m%dT%H%M%SZ", &tm);
    rk_model_cfg cfg;
    rk_model *m = NULL;
    rk_status s = rk_model_cfg_parse(cfg_text, &cfg, err);
    if (s != RK_OK) return rk_err_prefix(err, "--name");
    cfg.features[0].mean = 0, cfg.features[0].std = 1;
    snprintf(cfg.version, sizeof cfg.version, "%s", version);
    s = rk_model_create(&cfg, &m, err);
    for (int i = 0; s == RK_OK && i < m->n_params; i++) {
        float v = !strcmp(m->pd[i].name, "out.weight") ? e->p.cal[0] : !strcmp(m->pd[i].name, "out.bias") ? e->p.cal[1] : NAN;
        if (m->pd[i].n != 1 || isnan(v)) s = rk_fail(err, RK_EINTERNAL, "calibration model: unexpected parameter %s", m->pd[i].name);
        else m->params[m->pd[i].off] = v;
    }
    if (s == RK_OK) s = rk_model_save(m, dir, NULL, 0, err);
    rk_model_destroy(m);
    rk_model_cfg_free(&cfg);
    return s;
}

rk_status rk_embsum_export(const char *embsum_dir, const char *out_dir, const char *name, int export_model,
                           int overwrite, rk_err *err) {
    rk_embsum_bundle *b = NULL;
    rk_status s = rk_embsum_bundle_open(embsum_dir, &b, err); /* a loadable bundle only */
    if (s != RK_OK) return rk_err_prefix(err, "--embsum");
    char tmp[4300], dst[4300], model_json[4300];
    if (export_model) {
        snprintf(tmp, sizeof tmp, "%s.tmp-%d", out_dir, (int)getpid());
        snprintf(dst, sizeof dst, "%s", out_dir);
    } else {
        snprintf(tmp, sizeof tmp, "%s/embsum.tmp-%d", out_dir, (int)getpid());
        snprintf(dst, sizeof dst, "%s/embsum", out_dir);
        snprintf(model_json, sizeof model_json, "%s/model.json", out_dir);
        if (!rk_path_exists(model_json)) s = rk_fail(err, RK_ENOTFOUND, "--model %s: no model.json (not a model bundle)", out_dir);
    }
    if (s == RK_OK && rk_path_exists(dst) && !overwrite) s = rk_fail(err, RK_EEXIST, "%s: exists (overwrite it with --force)", dst);
    rk_rm_rf(tmp, NULL);
    char sub[4400];
    snprintf(sub, sizeof sub, "%s%s", tmp, export_model ? "/embsum" : "");
    if (s == RK_OK && export_model) s = calibration_model(b->e, name, tmp, err);
    if (s == RK_OK) s = copy_tree(embsum_dir, sub, err);
    if (s == RK_OK && !export_model) { /* the model must read the score */
        rk_model *m = NULL;
        if ((s = rk_model_open(out_dir, &m, err)) == RK_OK) {
            int f = rk_model_cfg_find(rk_model_config(m), RK_EMBSUM_FEATURE);
            const rk_feature *ft = f >= 0 ? &rk_model_config(m)->features[f] : NULL;
            if (!ft || ft->kind != RK_FEAT_DENSE || ft->side != RK_SIDE_ITEM)
                s = rk_fail(err, RK_EINVAL, "--model %s: no dense item feature '%s' to take the EmbSum score", out_dir,
                            RK_EMBSUM_FEATURE);
        }
        rk_model_destroy(m);
    }
    if (s == RK_OK && overwrite && rk_path_exists(dst)) s = rk_rm_rf(dst, err);
    if (s == RK_OK && rename(tmp, dst)) s = rk_fail(err, RK_EIO, "%s: cannot rename into place", dst);
    if (s != RK_OK) rk_rm_rf(tmp, NULL);
    rk_embsum_bundle_close(b);
    return s;
}
