/*
 * serve/repository.c — the model repository (rankd --model-repository DIR)
 * and what every version passes before it takes traffic.
 *
 * Layout (TF Serving's): DIR/<model name>/<version>/ is a bundle, <version>
 * a decimal number; a higher number is newer. A scan lists the versions on
 * disk, picks the wanted ones by the version policy (the latest N, or a set
 * of specific numbers), loads the wanted versions not served yet
 * (rk_server_load_version: open, schema check, warm-up, then traffic) and
 * then unloads the served versions no longer wanted (drained first). A
 * version that fails is refused with a logged reason and remembered (by
 * directory and model.json mtime) so a poll does not retry it every time;
 * a SIGHUP scan (retry = 1) does. While a model has no wanted version that
 * loaded, its old versions keep serving whatever the policy says; that
 * includes a served version whose directory was removed with nothing else
 * to switch to (a warning, once, says so: unloading it would leave the
 * model's callers with nothing). A model whose directory disappears is
 * unloaded.
 *
 * Polling: one thread scans every poll_s seconds; rk_repo_scan may also be
 * called from any thread (scans are serialized).
 *
 * Warm-up (rk_warmup) and the schema check (rk_schema_check) are also used
 * by rk_server_reload for the single --model case.
 */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "internal.h"
#include "rank.pb-c.h"

/* ---------------------------------------------------------------- warm-up */

/* req packed and answered by each of the n services. */
static rk_status warmup_send(rk_service **svc, int n, const Rankd__V1__RankRequest *req, rk_err *err) {
    size_t len = rankd__v1__rank_request__get_packed_size(req);
    uint8_t *buf = rk_malloc(len);
    rk_status st = buf ? RK_OK : rk_fail(err, RK_ENOMEM, "warm-up: out of memory");
    if (buf) rankd__v1__rank_request__pack(req, buf);
    for (int i = 0; i < n && st == RK_OK; i++) {
        const uint8_t *resp;
        size_t rlen;
        rk_err e = {0};
        rk_service_set_deadline(svc[i], 0, NULL, NULL);
        int code = rk_service_handle(svc[i], buf, len, rk_now(), &resp, &rlen, &e);
        if (code) st = rk_fail(err, RK_EINVAL, "warm-up request failed (gRPC status %d): %s", code, e.msg);
    }
    rk_free(buf);
    return st;
}

rk_status rk_warmup(const rk_model *m, rk_service **svc, int n, int max_candidates, rk_err *err) {
    const rk_model_cfg *c = rk_model_config(m);
    /* max_candidates candidates: every buffer a request of the service's
     * usual path can reach (scorer scratch, reply; the decode arena where
     * the model takes the tree path) is touched here, on the loading thread,
     * not by the first calls after the switch (bench-swap: 33-72 minor
     * faults on the worker per swap with 16) */
    size_t nc = max_candidates < 1 ? 1 : (size_t)max_candidates;
    size_t nf = (size_t)c->n_features + 1;
    /* one allocation for the candidates, the per-feature messages and the pointer lists */
    size_t bytes = nc * (sizeof(Rankd__V1__Candidate) + sizeof(Rankd__V1__Candidate *)) +
                   nf * (sizeof(Rankd__V1__SparseFeature) + sizeof(Rankd__V1__DenseFeature) +
                         2 * sizeof(Rankd__V1__SparseFeature *) + 2 * sizeof(Rankd__V1__DenseFeature *));
    char *mem = rk_malloc(bytes);
    if (!mem) return rk_fail(err, RK_ENOMEM, "warm-up: out of memory for %d features", c->n_features);
    Rankd__V1__Candidate *cand = (Rankd__V1__Candidate *)mem, **cp = (Rankd__V1__Candidate **)(cand + nc);
    Rankd__V1__SparseFeature *sp = (Rankd__V1__SparseFeature *)(cp + nc);
    Rankd__V1__DenseFeature *de = (Rankd__V1__DenseFeature *)(sp + nf);
    Rankd__V1__SparseFeature **usp = (Rankd__V1__SparseFeature **)(de + nf), **isp = usp + nf;
    Rankd__V1__DenseFeature **ude = (Rankd__V1__DenseFeature **)(isp + nf), **ide = ude + nf;
    size_t nus = 0, nis = 0, nud = 0, nid = 0;
    char *val[1] = {"0"};
    /* a model with an EmbSum bundle: rankd computes its input; user "0"
     * (unknown: the default UPE) and the bundle's first item */
    const rk_embsum_bundle *es = rk_service_embsum(svc[0]);
    char es_item[24] = "";
    if (es) snprintf(es_item, sizeof es_item, "%lld", (long long)rk_embsum_bundle_item(es, 0));
    for (int f = 0; f < c->n_features; f++) {
        const rk_feature *ft = &c->features[f];
        int user = ft->side == RK_SIDE_USER;
        if (es && (!strcmp(ft->name, RK_EMBSUM_FEATURE) || !strcmp(ft->name, c->alias_user_id) ||
                   !strcmp(ft->name, c->alias_ad_id)))
            continue; /* set through user_id / ad_id below */
        if (ft->kind == RK_FEAT_DENSE) {
            rankd__v1__dense_feature__init(&de[f]);
            de[f].name = (char *)ft->name;
            if (user) ude[nud++] = &de[f];
            else ide[nid++] = &de[f];
        } else if (ft->param == RK_PARAM_HASH) { /* item-id parameterizations want real ids */
            rankd__v1__sparse_feature__init(&sp[f]);
            sp[f].name = (char *)ft->name;
            sp[f].n_values = 1;
            sp[f].values = val;
            if (user) usp[nus++] = &sp[f];
            else isp[nis++] = &sp[f];
        }
    }
    Rankd__V1__User u = RANKD__V1__USER__INIT;
    u.n_sparse = nus;
    u.sparse = usp;
    u.n_dense = nud;
    u.dense = ude;
    for (size_t i = 0; i < nc; i++) {
        rankd__v1__candidate__init(&cand[i]);
        cand[i].n_sparse = nis;
        cand[i].sparse = isp;
        cand[i].n_dense = nid;
        cand[i].dense = ide;
        if (es) cand[i].ad_id = es_item;
        cp[i] = &cand[i];
    }
    Rankd__V1__RankRequest req = RANKD__V1__RANK_REQUEST__INIT;
    req.request_id = "warm-up";
    if (es) u.user_id = "0";
    req.user = &u;
    req.candidates = cp;
    /* a request of every candidate can exceed a small --max-message-bytes
     * (request or reply): then 16, which every version must answer */
    rk_status st = RK_OK;
    for (int k = 0; k < 2; k++) {
        req.n_candidates = k ? (nc < 16 ? nc : 16) : nc;
        st = warmup_send(svc, n, &req, err);
        if (st == RK_OK || nc <= 16) break;
    }
    rk_free(mem);
    return st;
}

/* ---------------------------------------------------------------- schema */

static const char *side_name(rk_side s) { return s == RK_SIDE_USER ? "user" : "item"; }
static const char *kind_name(rk_feat_kind k) { return k == RK_FEAT_DENSE ? "dense" : "sparse"; }

rk_status rk_schema_check(const rk_model *served, const rk_model *next, rk_err *err) {
    const rk_model_cfg *a = rk_model_config(served), *b = rk_model_config(next);
    for (int f = 0; f < a->n_features; f++) {
        const rk_feature *x = &a->features[f];
        int k = rk_model_cfg_find(b, x->name);
        if (k < 0)
            return rk_fail(err, RK_EINVAL,
                           "incompatible feature schema: feature '%s' (%s, %s) of the served version is "
                           "missing, requests that send it would fail",
                           x->name, side_name(x->side), kind_name(x->kind));
        const rk_feature *y = &b->features[k];
        if (y->side != x->side || y->kind != x->kind)
            return rk_fail(err, RK_EINVAL,
                           "incompatible feature schema: feature '%s' is %s %s, the served version's is %s %s",
                           x->name, side_name(y->side), kind_name(y->kind), side_name(x->side),
                           kind_name(x->kind));
    }
    const char *an[3] = {a->alias_user_id, a->alias_recent_items, a->alias_ad_id};
    const char *bn[3] = {b->alias_user_id, b->alias_recent_items, b->alias_ad_id};
    static const char *field[3] = {"user.user_id", "user.recent_item_ids", "candidates[].ad_id"};
    for (int i = 0; i < 3; i++)
        if (strcmp(an[i], bn[i]))
            return rk_fail(err, RK_EINVAL,
                           "incompatible feature schema: %s fills feature '%s', the served version's '%s'",
                           field[i], bn[i], an[i]);
    return RK_OK;
}

/* ---------------------------------------------------------------- scan */

#define MAX_GONE 16
#define MAX_REFUSED 64
#define MAX_FOUND 64 /* versions looked at per model */

struct rk_repo {
    rk_server *srv;
    char dir[PATH_MAX];
    int latest;
    long long specific[RK_REPO_MAX_SPECIFIC];
    int n_specific;
    pthread_mutex_t mu;            /* one scan at a time; guards refused[] */
    struct {
        char dir[PATH_MAX];
        struct timespec mtime;     /* of model.json when it was refused */
    } refused[MAX_REFUSED];
    int n_refused, refused_next;
    char gone[MAX_GONE][160];      /* "model/version" served with its directory removed, warned once */
    int n_gone;
    /* polling */
    int poll_s;
    pthread_t thread;
    int thread_started, stop;
    pthread_mutex_t pmu;
    pthread_cond_t pcv;
};

/* A version directory's name: decimal digits, no leading zero ("007" would
 * be version 7 but opened as DIR/model/7). */
static int is_number(const char *s, long long *out) {
    if (!*s || strlen(s) > 18 || (s[0] == '0' && s[1])) return 0;
    for (const char *p = s; *p; p++)
        if (*p < '0' || *p > '9') return 0;
    *out = atoll(s);
    return 1;
}

static int is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static struct timespec json_mtime(const char *dir) {
    char p[PATH_MAX + 16];
    struct stat st;
    snprintf(p, sizeof p, "%s/model.json", dir);
    struct timespec z = {0, 0};
    return stat(p, &st) == 0 ? st.st_mtim : z;
}

static int was_refused(rk_repo *r, const char *dir) {
    struct timespec t = json_mtime(dir);
    for (int i = 0; i < r->n_refused; i++)
        if (!strcmp(r->refused[i].dir, dir))
            return r->refused[i].mtime.tv_sec == t.tv_sec && r->refused[i].mtime.tv_nsec == t.tv_nsec;
    return 0;
}

static void remember_refused(rk_repo *r, const char *dir) {
    int i = 0;
    while (i < r->n_refused && strcmp(r->refused[i].dir, dir)) i++;
    if (i == r->n_refused) {
        if (r->n_refused < MAX_REFUSED) i = r->n_refused++;
        else i = r->refused_next++ % MAX_REFUSED;
    }
    snprintf(r->refused[i].dir, sizeof r->refused[i].dir, "%s", dir);
    r->refused[i].mtime = json_mtime(dir);
}

static int cmp_desc(const void *a, const void *b) {
    long long x = *(const long long *)a, y = *(const long long *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

static int wanted(const rk_repo *r, const long long *found, int n_found, long long v) {
    if (r->n_specific) {
        for (int i = 0; i < r->n_specific; i++)
            if (r->specific[i] == v) return 1;
        return 0;
    }
    for (int i = 0; i < n_found && i < r->latest; i++)
        if (found[i] == v) return 1;
    return 0;
}

/* Warn once that model name's served version v has no directory left and
 * keeps serving; forget it again when it is back on disk (on = 1). */
static void note_gone(rk_repo *r, const char *name, const rk_served_version *v, int on) {
    char key[160];
    snprintf(key, sizeof key, "%s/%s", name, v->version);
    int i = 0;
    while (i < r->n_gone && strcmp(r->gone[i], key)) i++;
    if (on) {
        if (i < r->n_gone) memmove(r->gone[i], r->gone[i + 1], (size_t)(--r->n_gone - i) * sizeof r->gone[0]);
        return;
    }
    if (i < r->n_gone) return;
    rk_warn("model %s version %s: its directory is gone from the repository; still serving it (no other version of %s "
            "to switch to)", name, v->version, name);
    if (r->n_gone < MAX_GONE) snprintf(r->gone[r->n_gone++], sizeof r->gone[0], "%s", key);
}

/* Scan one model directory: load what is wanted and missing, then unload
 * what is served and no longer wanted (only once a wanted version serves). */
static void scan_model(rk_repo *r, const char *name, int retry, rk_repo_stats *rs) {
    char mdir[PATH_MAX];
    snprintf(mdir, sizeof mdir, "%s/%s", r->dir, name);
    long long found[MAX_FOUND];
    int n_found = 0;
    DIR *d = opendir(mdir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d)) && n_found < MAX_FOUND) {
        long long v;
        char vdir[PATH_MAX];
        snprintf(vdir, sizeof vdir, "%s/%s", mdir, e->d_name);
        if (is_number(e->d_name, &v) && is_dir(vdir)) found[n_found++] = v;
    }
    closedir(d);
    qsort(found, (size_t)n_found, sizeof found[0], cmp_desc);
    rk_served_version sv[64];
    int n_sv = rk_server_list(r->srv, sv, 64);
    if (n_sv > 64) n_sv = 64;
    int any_wanted_serving = 0;
    for (int i = 0; i < n_found; i++) {
        if (!wanted(r, found, n_found, found[i])) continue;
        char label[32], vdir[PATH_MAX];
        snprintf(label, sizeof label, "%lld", found[i]);
        snprintf(vdir, sizeof vdir, "%s/%s", mdir, label);
        int served = 0;
        for (int k = 0; k < n_sv; k++)
            if (!strcmp(sv[k].name, name) && sv[k].num == found[i]) served = 1;
        if (served) {
            any_wanted_serving = 1;
            continue;
        }
        if (!retry && was_refused(r, vdir)) continue;
        rk_err err = {0};
        double t0 = rk_now();
        if (rk_server_load_version(r->srv, name, label, found[i], vdir, &err)) {
            remember_refused(r, vdir);
            rs->refused++;
            rk_error("model %s version %s refused: %s", name, label, err.msg);
        } else {
            any_wanted_serving = 1;
            rs->loaded++;
            rk_info("model %s version %s loaded from %s (opened and warmed up in %.0f ms)", name, label, vdir,
                    (rk_now() - t0) * 1e3);
        }
    }
    for (int k = 0; k < n_sv; k++) {
        if (strcmp(sv[k].name, name) || sv[k].num < 0) continue;
        int on_disk = 0;
        for (int i = 0; i < n_found; i++) on_disk |= found[i] == sv[k].num;
        if (!any_wanted_serving) { /* the old versions keep serving */
            note_gone(r, name, &sv[k], on_disk);
            continue;
        }
        if (on_disk && wanted(r, found, n_found, sv[k].num)) continue;
        rk_err err = {0};
        if (rk_server_unload_version(r->srv, name, sv[k].version, &err) == RK_OK) {
            rs->unloaded++;
            rk_info("model %s version %s unloaded (%s)", name, sv[k].version,
                    on_disk ? "no longer wanted by the version policy" : "gone from the repository");
        }
    }
}

rk_status rk_repo_scan(rk_repo *r, int retry, rk_repo_stats *rs, rk_err *err) {
    rk_repo_stats local = {0};
    if (!rs) rs = &local;
    memset(rs, 0, sizeof *rs);
    pthread_mutex_lock(&r->mu);
    DIR *d = opendir(r->dir);
    if (!d) {
        pthread_mutex_unlock(&r->mu);
        return rk_fail(err, RK_ENOTFOUND, "model repository %s: %s", r->dir, strerror(errno));
    }
    char names[RK_REPO_MAX_MODELS][256];
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < RK_REPO_MAX_MODELS) {
        char p[PATH_MAX];
        if (e->d_name[0] == '.' || strlen(e->d_name) >= 128) continue;
        snprintf(p, sizeof p, "%s/%s", r->dir, e->d_name);
        if (is_dir(p)) snprintf(names[n++], sizeof names[0], "%s", e->d_name);
    }
    closedir(d);
    for (int i = 0; i < n; i++) scan_model(r, names[i], retry, rs);
    /* models whose directory is gone */
    rk_served_version sv[64];
    int n_sv = rk_server_list(r->srv, sv, 64);
    for (int k = 0; k < n_sv && k < 64; k++) {
        int present = 0;
        for (int i = 0; i < n; i++) present |= !strcmp(names[i], sv[k].name);
        rk_err e2 = {0};
        if (!present && sv[k].num >= 0 && rk_server_unload_version(r->srv, sv[k].name, sv[k].version, &e2) == RK_OK) {
            rs->unloaded++;
            rk_info("model %s version %s unloaded (gone from the repository)", sv[k].name, sv[k].version);
        }
    }
    pthread_mutex_unlock(&r->mu);
    return RK_OK;
}

static void *poll_main(void *arg) {
    rk_repo *r = arg;
    pthread_mutex_lock(&r->pmu);
    while (!r->stop) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += r->poll_s;
        pthread_cond_timedwait(&r->pcv, &r->pmu, &ts);
        if (r->stop) break;
        pthread_mutex_unlock(&r->pmu);
        rk_err err = {0};
        if (rk_repo_scan(r, 0, NULL, &err)) rk_error("repository poll: %s", err.msg);
        pthread_mutex_lock(&r->pmu);
    }
    pthread_mutex_unlock(&r->pmu);
    return NULL;
}

rk_status rk_repo_create(rk_server *s, const rk_repo_opts *o, rk_repo **out, rk_err *err) {
    *out = NULL;
    if (!o->dir || !is_dir(o->dir)) return rk_fail(err, RK_ENOTFOUND, "model repository %s: not a directory", o->dir ? o->dir : "(null)");
    if (o->n_specific < 0 || o->n_specific > RK_REPO_MAX_SPECIFIC)
        return rk_fail(err, RK_EINVAL, "version policy: at most %d specific versions", RK_REPO_MAX_SPECIFIC);
    if (!o->n_specific && (o->latest < 1 || o->latest > 8))
        return rk_fail(err, RK_EINVAL, "version policy: latest %d, must be 1..8", o->latest);
    if (o->poll_s < 0) return rk_fail(err, RK_EINVAL, "poll seconds: %d, must be >= 0", o->poll_s);
    rk_repo *r = rk_calloc(1, sizeof *r);
    if (!r) return rk_fail(err, RK_ENOMEM, "repository: out of memory");
    r->srv = s;
    snprintf(r->dir, sizeof r->dir, "%s", o->dir);
    r->latest = o->latest;
    r->n_specific = o->n_specific;
    memcpy(r->specific, o->specific, (size_t)o->n_specific * sizeof r->specific[0]);
    r->poll_s = o->poll_s;
    pthread_mutex_init(&r->mu, NULL);
    pthread_mutex_init(&r->pmu, NULL);
    pthread_cond_init(&r->pcv, NULL);
    *out = r;
    return RK_OK;
}

rk_status rk_repo_start_polling(rk_repo *r, rk_err *err) {
    if (r->poll_s <= 0 || r->thread_started) return RK_OK;
    if (pthread_create(&r->thread, NULL, poll_main, r))
        return rk_fail(err, RK_EINTERNAL, "repository: cannot start the polling thread");
    r->thread_started = 1;
    return RK_OK;
}

void rk_repo_destroy(rk_repo *r) {
    if (!r) return;
    if (r->thread_started) {
        pthread_mutex_lock(&r->pmu);
        r->stop = 1;
        pthread_cond_signal(&r->pcv);
        pthread_mutex_unlock(&r->pmu);
        pthread_join(r->thread, NULL);
    }
    pthread_mutex_destroy(&r->mu);
    pthread_mutex_destroy(&r->pmu);
    pthread_cond_destroy(&r->pcv);
    rk_free(r);
}
